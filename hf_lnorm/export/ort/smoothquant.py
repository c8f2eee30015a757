"""SmoothQuant on ONNX graphs: per-channel activation ranges and the exact float rewrite that moves them into weights."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ._common import PathLike, _save_atomically
from .sessions import feed_for

__all__ = ["SMOOTH_OP_TYPES", "activation_ranges", "smooth_onnx"]


SMOOTH_OP_TYPES = ("MatMul", "Attention")


def _smooth_targets(graph, op_types: Sequence[str]) -> Dict[str, List]:
    """Per input tensor, the ``op_types`` nodes reading it whose second input is a 2-D weight used by no other node."""
    inits = {t.name: t for t in graph.initializer}
    uses: Dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    targets: Dict[str, List] = {}
    for node in graph.node:
        if (node.op_type in op_types and len(node.input) > 1 and node.input[1] in inits
                and len(inits[node.input[1]].dims) == 2 and uses[node.input[1]] == 1 and node.input[0] not in inits):
            targets.setdefault(node.input[0], []).append(node)
    return targets


def activation_ranges(
    onnx_path: PathLike, calibration_feeds: Sequence[Mapping[str, np.ndarray]], op_types: Sequence[str] = SMOOTH_OP_TYPES
) -> Dict[str, np.ndarray]:
    """Per-channel max |x| (last axis) of every input ``smooth_onnx`` would smooth, over ``calibration_feeds``.

    The inputs measured are those of ``op_types`` nodes whose second input is a
    2-D weight no other node uses. The graph runs once per feed in ONNX Runtime
    (CPU) with those tensors added as outputs; the file is not changed.

    Args:
        onnx_path: fp32 model (plain or ORT-fused).
        calibration_feeds: input dicts (numpy), one per batch.
        op_types: consumer op types whose inputs are measured.

    Returns:
        ``{tensor name: per-channel max |x|}``; empty when nothing in the graph can be smoothed.

    Raises:
        ValueError: no calibration input.

    Examples:
        ```python
        from hf_lnorm.export.ort import activation_ranges, smooth_onnx

        ranges = activation_ranges("model.onnx", feeds)
        for alpha in (0.3, 0.5, 0.7):
            smooth_onnx("model.onnx", f"model_smooth_{alpha}.onnx", alpha=alpha, ranges=ranges)
        ```
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if not calibration_feeds:
        raise ValueError("measuring activation ranges needs at least one calibration input")
    model = onnx.load(str(onnx_path))
    targets = _smooth_targets(model.graph, op_types)
    if not targets:
        return {}
    outputs = {o.name for o in model.graph.output}
    for name in targets:
        if name not in outputs:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ranges: Dict[str, np.ndarray] = {}
    for feed in calibration_feeds:
        for name, value in zip(names, sess.run(None, feed_for(sess, feed))):
            if name in targets:
                a = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                ranges[name] = a if name not in ranges else np.maximum(ranges[name], a)
    return ranges


def smooth_onnx(
    onnx_path: PathLike,
    output_path: PathLike,
    calibration_feeds: Optional[Sequence[Mapping[str, np.ndarray]]] = None,
    alpha: float = 0.5,
    op_types: Sequence[str] = SMOOTH_OP_TYPES,
    ranges: Optional[Mapping[str, np.ndarray]] = None,
) -> int:
    """SmoothQuant on an ONNX graph: move activation outliers into the weights, exactly in float.

    ORT's int8 (dynamic and static) quantizes each activation with one scale per
    tensor, so a few large input channels (BERT's LayerNorm outputs have channels
    15-20x the median) spend most of the 255 levels. For every node in
    ``op_types`` whose second input is a constant 2-D weight ``W (K, N)``, the
    per-channel range ``a_k`` of its input ``X`` (``activation_ranges``) gives
    ``s_k = a_k**alpha / w_k**(1 - alpha)``, which is folded in: a ``Mul(X, 1/s)``
    node feeds the consumers and their weight rows are scaled by ``s``
    (``hf_lnorm.norms.int8.smoothing_scales`` computes ``s``). The float
    graph computes the same function; its int8 version loses less. Consumers of
    one input share one ``Mul`` and one ``s`` (``w_k`` is the max over them).
    Weights used by any other node are left alone.

    Args:
        onnx_path: fp32 model (plain or ORT-fused: ``Attention`` weights are ``(K, 3N)``).
        output_path: where the smoothed model goes (written to a temporary name, then renamed).
        calibration_feeds: input dicts (numpy) for the range measurement (not needed with ``ranges``).
        alpha: migration strength in [0, 1] (0: nothing moves to the weights).
        op_types: consumer op types to smooth.
        ranges: ``activation_ranges`` of this graph, to try several alphas without measuring again.

    Returns:
        The number of smoothed inputs (0: the file is a plain copy).

    Raises:
        ValueError: ``alpha`` outside [0, 1], or neither calibration input nor ``ranges``.

    Examples:
        ```python
        from hf_lnorm.export.ort import quantize_dynamic_int8, smooth_onnx

        smooth_onnx("model.onnx", "model_smooth.onnx", calibration_feeds=feeds, alpha=0.5)
        quantize_dynamic_int8("model_smooth.onnx", "model_smooth_int8.onnx")
        ```

        The module example of ``hf_lnorm.export.ort`` runs it on a one-block graph.
    """
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from ...norms.int8 import check_alpha, smoothing_scales

    alpha = check_alpha(alpha)
    if ranges is None:
        if not calibration_feeds:
            raise ValueError("smooth_onnx needs at least one calibration input (or ranges=activation_ranges(...))")
        ranges = activation_ranges(onnx_path, calibration_feeds, op_types)
    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    targets = {name: nodes for name, nodes in _smooth_targets(graph, op_types).items() if name in ranges}
    for index, (name, nodes) in enumerate(targets.items()):
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        w_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scales = smoothing_scales(torch.from_numpy(np.asarray(ranges[name])), torch.from_numpy(w_absmax), alpha).numpy()
        inv = numpy_helper.from_array((1.0 / scales).astype(np.float32), f"hf_lnorm_smooth_{index}_inv")
        graph.initializer.append(inv)
        smoothed = f"hf_lnorm_smooth_{index}_out"
        first = min(list(graph.node).index(n) for n in nodes)  # X exists before its first reader
        graph.node.insert(first, helper.make_node("Mul", [name, inv.name], [smoothed], name=f"hf_lnorm_smooth_{index}"))
        for node, w in zip(nodes, weights):
            node.input[0] = smoothed
            inits[node.input[1]].CopyFrom(numpy_helper.from_array((w * scales[:, None]).astype(w.dtype), node.input[1]))
    _save_atomically(model, output_path)
    return len(targets)
