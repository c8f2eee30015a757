"""ONNX Runtime: transformer graph fusions, sessions, and int8 quantization (dynamic, static, per-token, SmoothQuant).

One module per concern; every public name is importable from here:

    fusions.py       ``optimize_onnx`` (ORT's transformer fusions), ``count_ops``, ``expected_fusions``,
                     ``check_fusions``, ``unfuse_skip_layer_norm``
    sessions.py      ``session`` (CPU ``InferenceSession``), ``feed_for``
    quantize.py      ORT's dynamic and static (QDQ) int8: ``quantize_dynamic_int8``, ``quantize_static_int8``
    smoothquant.py   ``activation_ranges``, ``smooth_onnx``
    per_token.py     ``quantize_per_token_int8``: one activation scale per row
    trim.py          ``trim_padding_onnx``: a graph that skips each batch's trailing padding

Examples:
    On an export written by ``hf-lnorm export``:

    ```python
    from transformers import AutoConfig
    from hf_lnorm.export.ort import optimize_onnx, quantize_dynamic_int8

    config = AutoConfig.from_pretrained("out")
    counts = optimize_onnx("out/model.onnx", "out/model_opt.onnx", config)
    quantize_dynamic_int8("out/model.onnx", "out/model_int8.onnx")
    ```

    Every int8 route on a one-block graph (a LayerNorm feeding a MatMul):

    >>> import os, shutil, tempfile
    >>> import numpy as np
    >>> import onnx
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> from hf_lnorm.export.ort import (activation_ranges, count_ops, quantize_dynamic_int8,
    ...                                  quantize_per_token_int8, quantize_static_int8, session, smooth_onnx)
    >>> rng = np.random.default_rng(0)
    >>> weights = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in
    ...            (("gamma", np.ones(32)), ("beta", np.zeros(32)), ("w", rng.normal(size=(32, 64))))]
    >>> nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], axis=-1),
    ...          helper.make_node("MatMul", ["h", "w"], ["y"])]
    >>> graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
    ...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], weights)
    >>> folder = tempfile.mkdtemp()
    >>> fp32 = os.path.join(folder, "model.onnx")
    >>> onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fp32)
    >>> feeds = [{"x": rng.normal(size=(4, 32)).astype(np.float32)} for _ in range(2)]
    >>> {name: r.shape for name, r in activation_ranges(fp32, feeds).items()}  # the MatMul's input channels
    {'h': (32,)}
    >>> smooth_onnx(fp32, os.path.join(folder, "smooth.onnx"), feeds, alpha=0.5)
    1
    >>> quantize_dynamic_int8(fp32, os.path.join(folder, "dynamic.onnx")).name
    'dynamic.onnx'
    >>> count_ops(os.path.join(folder, "dynamic.onnx"))["MatMulInteger"]
    1
    >>> quantize_static_int8(fp32, os.path.join(folder, "qdq.onnx"), feeds).name
    'qdq.onnx'
    >>> quantize_per_token_int8(fp32, os.path.join(folder, "per_token.onnx"))["matmul"]
    1
    >>> y = session(os.path.join(folder, "per_token.onnx")).run(None, feeds[0])[0]
    >>> y_fp32 = session(fp32).run(None, feeds[0])[0]
    >>> bool(np.abs(y - y_fp32).max() < 0.05 * np.abs(y_fp32).max())
    True
    >>> shutil.rmtree(folder)
"""

from ._common import PathLike
from .fusions import (FUSED_OPS, ORT_MODEL_TYPES, check_fusions, count_ops, expected_fusions, optimize_onnx,
                      ort_model_type, unfuse_skip_layer_norm)
from .per_token import ATTENTION_MODES, PER_TOKEN_NAME, quantize_per_token_int8
from .quantize import FeedsReader, quantize_dynamic_int8, quantize_static_int8, weight_qmax
from .sessions import feed_for, session
from .smoothquant import SMOOTH_OP_TYPES, activation_ranges, smooth_onnx
from .trim import TRIM_NAME, trim_padding_onnx

__all__ = [
    "ATTENTION_MODES",
    "FUSED_OPS",
    "FeedsReader",
    "ORT_MODEL_TYPES",
    "PER_TOKEN_NAME",
    "PathLike",
    "SMOOTH_OP_TYPES",
    "TRIM_NAME",
    "activation_ranges",
    "check_fusions",
    "count_ops",
    "expected_fusions",
    "feed_for",
    "optimize_onnx",
    "ort_model_type",
    "quantize_dynamic_int8",
    "quantize_per_token_int8",
    "quantize_static_int8",
    "session",
    "smooth_onnx",
    "trim_padding_onnx",
    "unfuse_skip_layer_norm",
    "weight_qmax",
]
