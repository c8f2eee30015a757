"""ONNX Runtime's own int8 quantization: dynamic (``quantize_dynamic_int8``) and static QDQ (``quantize_static_int8``).

Both quantize each activation with one scale per tensor; ``per_token.py`` has
the per-row variant and ``smoothquant.py`` the SmoothQuant rewrite that helps
either.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ._common import PathLike

__all__ = ["FeedsReader", "quantize_dynamic_int8", "quantize_static_int8", "weight_qmax"]


@functools.lru_cache(maxsize=None)
def weight_qmax() -> int:
    """The largest int8 weight code ONNX Runtime's CPU kernels multiply exactly with uint8 activations here: 127 or 63.

    x86 CPUs without VNNI (AVX2 only) add u8 x s8 products pairwise in saturating int16, so an activation code of 255
    times a weight of 127 overflows and the result is silently wrong; weights of at most 63 in magnitude (7 bits,
    ONNX Runtime's ``reduce_range``) never overflow. Found once per process by running the worst case through
    ``MatMulIntegerToFloat`` and comparing with the exact product.

    Returns:
        127 where full-range weights are exact, else 63.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = 8, 64, 16
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (m, k)).astype(np.uint8)
    codes[0] = 255  # the worst case for int16 pair sums
    weights = rng.integers(-127, 128, (k, n)).astype(np.int8)
    weights[:, 0] = 127
    node = helper.make_node("MatMulIntegerToFloat", ["a", "w", "one", "one", "zp"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "qmax", [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                               numpy_helper.from_array(np.array(128, np.uint8), "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    got = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"a": codes})[0]
    exact = (codes.astype(np.int64) - 128) @ weights.astype(np.int64)
    return 127 if np.array_equal(got.astype(np.int64), exact) else 63


def quantize_dynamic_int8(
    onnx_path: PathLike,
    output_path: PathLike,
    per_channel: bool = True,
    reduce_range: Optional[bool] = None,
    op_types: Optional[Sequence[str]] = None,
) -> Path:
    """Dynamic int8: weights int8 ahead of time, activations quantized per call.

    Args:
        onnx_path: fp32 model (plain or ORT-fused).
        output_path: where the int8 model goes.
        per_channel: one weight scale per output channel (keeps accuracy on small models).
        reduce_range: 7-bit weights, for CPUs without VNNI where u8s8 products saturate; None (default): 7-bit
            exactly where ``weight_qmax()`` finds that they do.
        op_types: op types to quantize; default ORT's (MatMul, Attention, Gather...).

    Returns:
        ``output_path``.

    Examples:
        ```python
        from hf_lnorm.export.ort import quantize_dynamic_int8

        quantize_dynamic_int8("bert-onnx/model_opt.onnx", "bert-onnx/model_int8.onnx")
        ```

        The module example of ``hf_lnorm.export.ort`` runs it on a one-block graph.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if reduce_range is None:
        reduce_range = weight_qmax() < 127
    quantize_dynamic(
        str(onnx_path),
        str(output_path),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        op_types_to_quantize=list(op_types) if op_types else None,
        # contrib ops of a fused graph defeat shape inference; their outputs are fp32
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return Path(output_path)


class FeedsReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of input dicts.

    ``quantize_static_int8`` builds one from its ``calibration_feeds``; use it
    directly to pass calibration data to ONNX Runtime's own quantization calls.

    Args:
        feeds: input dicts (numpy arrays), one per calibration batch.
        input_names: keep only these keys of each dict (the graph's inputs); default: all.

    Examples:
        >>> import numpy as np
        >>> from hf_lnorm.export.ort import FeedsReader
        >>> reader = FeedsReader([{"x": np.zeros(2), "extra": 1}] * 2, input_names=["x"])
        >>> len(reader), sorted(reader.get_next())
        (2, ['x'])
        >>> reader.get_next() is not None, reader.get_next()
        (True, None)
        >>> reader.rewind(); reader.get_next() is not None
        True
    """

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]], input_names: Optional[Sequence[str]] = None):
        self._feeds = [dict(f) for f in feeds]
        if input_names is not None:
            self._feeds = [{k: v for k, v in f.items() if k in input_names} for f in self._feeds]
        self._it = iter(self._feeds)

    def get_next(self):
        """The next input dict, or None after the last one."""
        return next(self._it, None)

    def rewind(self):
        """Start again from the first input dict."""
        self._it = iter(self._feeds)

    def __len__(self):
        return len(self._feeds)


def quantize_static_int8(
    onnx_path: PathLike,
    output_path: PathLike,
    calibration_feeds: Sequence[Mapping[str, np.ndarray]],
    per_channel: bool = True,
    method: str = "minmax",
    op_types: Sequence[str] = ("MatMul",),
    reduce_range: Optional[bool] = None,
    weights_only: bool = True,
) -> Path:
    """Static int8 in QDQ format, activation ranges calibrated on real inputs.

    Args:
        onnx_path: fp32 model (the plain export: QDQ pairs are placed on standard ops).
        output_path: where the QDQ model goes.
        calibration_feeds: input dicts (numpy) run through the model to collect ranges.
        per_channel: per-output-channel weight scales.
        method: ``"minmax"``, ``"percentile"`` or ``"entropy"``.
        op_types: op types that get Q/DQ around them.
        reduce_range: 7-bit weights (see ``quantize_dynamic_int8``; None: where ``weight_qmax()`` needs them).
        weights_only: quantize only nodes with a constant (initializer) input, i.e. the
            Linear layers, not the activation x activation products of attention.

    Returns:
        ``output_path``.

    Raises:
        ValueError: unknown ``method`` or no calibration data.

    Examples:
        ```python
        from hf_lnorm.export.ort import quantize_static_int8

        feeds = [dict(tokenizer(q, c, return_tensors="np")) for q, c in calibration_pairs]
        quantize_static_int8("bert-onnx/model.onnx", "bert-onnx/model_qdq.onnx", feeds)
        ```

        The module example of ``hf_lnorm.export.ort`` runs it on a one-block graph.
    """
    import inspect

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; accepted: {', '.join(methods)}")
    if not calibration_feeds:
        raise ValueError("static quantization needs at least one calibration input")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = [i.name for i in graph.input]
    nodes = None
    if weights_only:
        consts = {t.name for t in graph.initializer}
        consts |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
        nodes = [n.name for n in graph.node if n.op_type in op_types and any(i in consts for i in n.input)]
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    kwargs = dict(
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        calibrate_method=methods[method],
        op_types_to_quantize=list(op_types),
        nodes_to_quantize=nodes,
        extra_options=extra,
    )
    if reduce_range is None:
        kwargs["reduce_range"] = weight_qmax() < 127
    if "calibration_providers" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_providers"] = ["CPUExecutionProvider"]
    quantize_static(str(onnx_path), str(output_path), FeedsReader(calibration_feeds, names), **kwargs)
    return Path(output_path)
