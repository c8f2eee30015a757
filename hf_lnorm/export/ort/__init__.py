"""ONNX Runtime: transformer graph fusions, sessions, and int8 quantization (dynamic, static, per-token, SmoothQuant).

One module per concern; every public name is importable from here:

    fusions.py       ``optimize_onnx`` (ORT's transformer fusions), ``count_ops``, ``expected_fusions``,
                     ``check_fusions``, ``unfuse_skip_layer_norm``
    sessions.py      ``session`` (CPU ``InferenceSession``), ``feed_for``
    quantize.py      ORT's dynamic and static (QDQ) int8: ``quantize_dynamic_int8``, ``quantize_static_int8``
    smoothquant.py   ``activation_ranges``, ``smooth_onnx``
    per_token.py     ``quantize_per_token_int8``: one activation scale per row

Example:
    >>> from hf_lnorm.export.ort import optimize_onnx, quantize_dynamic_int8
    >>> counts = optimize_onnx("out/model.onnx", "out/model_opt.onnx", config)  # doctest: +SKIP
    >>> quantize_dynamic_int8("out/model.onnx", "out/model_int8.onnx")         # doctest: +SKIP
"""

from ._common import PathLike
from .fusions import (FUSED_OPS, ORT_MODEL_TYPES, check_fusions, count_ops, expected_fusions, optimize_onnx,
                      ort_model_type, unfuse_skip_layer_norm)
from .per_token import ATTENTION_MODES, PER_TOKEN_NAME, quantize_per_token_int8
from .quantize import FeedsReader, quantize_dynamic_int8, quantize_static_int8
from .sessions import feed_for, session
from .smoothquant import SMOOTH_OP_TYPES, activation_ranges, smooth_onnx

__all__ = [
    "ATTENTION_MODES",
    "FUSED_OPS",
    "FeedsReader",
    "ORT_MODEL_TYPES",
    "PER_TOKEN_NAME",
    "PathLike",
    "SMOOTH_OP_TYPES",
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
    "unfuse_skip_layer_norm",
]
