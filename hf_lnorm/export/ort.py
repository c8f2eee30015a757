"""ONNX Runtime: transformer graph fusions, dynamic int8 and static (QDQ) int8 quantization.

``optimize_onnx`` runs ``onnxruntime.transformers.optimizer`` with the fusion
patterns that fit the model (LayerNorm, SkipLayerNorm, Attention, Gelu...).
The ORT optimizer returns model types it does not know unchanged, so
``ORT_MODEL_TYPES`` maps Hugging Face model types, hf_lnorm's families
included, to the ORT pattern set whose graph shape they share, and
``check_fusions`` verifies the fused-op counts against the layer count.

Example:
    >>> from hf_lnorm.export.ort import optimize_onnx, quantize_dynamic_int8
    >>> counts = optimize_onnx("out/model.onnx", "out/model_opt.onnx", config)  # doctest: +SKIP
    >>> quantize_dynamic_int8("out/model.onnx", "out/model_int8.onnx")         # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

logger = logging.getLogger("hf_lnorm")

PathLike = Union[str, Path]

# Hugging Face model_type -> ORT optimizer model type (its fusion pattern set).
ORT_MODEL_TYPES: Dict[str, str] = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "distilbert": "bert",
    "albert": "bert",
    "electra": "bert",
    "camembert": "bert",
    "mpnet": "bert",
    "deberta": "bert",
    "vit": "vit",
    "deit": "vit",
    "beit": "vit",
    "swin": "swin",
    "gpt2": "gpt2",
    "gpt_neo": "gpt2",
    "gptj": "gpt2",
    "bart": "bart",
    "mbart": "bart",
    "marian": "bart",
    "t5": "t5",
    "clip": "clip",
    # hf_lnorm families: GPT-2-shaped decoder (pre-norm LayerNorm blocks, GELU MLP)
    # and a BART-shaped encoder-decoder.
    "lnorm-gpt": "gpt2",
    "lnorm-seq2seq": "bart",
}

FUSED_OPS = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "Gelu",
    "FastGelu",
    "BiasGelu",
)


def _save_atomically(model, output_path: PathLike) -> None:
    """``onnx.save`` to a hidden temporary name beside ``output_path``, then rename: no half-written graph."""
    import onnx

    from .._json import staged_file

    with staged_file(output_path) as tmp:
        onnx.save(model, tmp)


def ort_model_type(model_type: str) -> str:
    """The ORT optimizer model type for a Hugging Face ``model_type``.

    Raises:
        ValueError: no mapping is known (names the type and the accepted ones).
    """
    if model_type in ORT_MODEL_TYPES:
        return ORT_MODEL_TYPES[model_type]
    raise ValueError(
        f"no ONNX Runtime fusion pattern set is known for model_type {model_type!r}; "
        f"accepted: {', '.join(sorted(ORT_MODEL_TYPES))}"
    )


def _config_value(config, *names, default=0):
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def count_ops(path_or_model) -> Dict[str, int]:
    """Op-type counts (all domains) of an ONNX file or ``ModelProto``."""
    import onnx

    model = onnx.load(str(path_or_model), load_external_data=False) if isinstance(path_or_model, (str, Path)) else path_or_model
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def optimize_onnx(
    onnx_path: PathLike,
    output_path: PathLike,
    config,
    model_type: Optional[str] = None,
    disable: Sequence[str] = (),
) -> Dict[str, int]:
    """Apply ONNX Runtime's transformer fusions and save the result.

    Args:
        onnx_path: the exported fp32 model.
        output_path: where the fused model goes.
        config: the model's ``PretrainedConfig`` (heads, hidden size, model_type).
        model_type: ORT optimizer type; default: ``ort_model_type(config.model_type)``.
        disable: fusion names to switch off (``"attention"``, ``"skip_layer_norm"``,
            ``"embed_layer_norm"``, ``"bias_gelu"``, ``"gelu"``, ``"layer_norm"``).
    Returns:
        Counts of the fused op types in the optimized graph (``FUSED_OPS``).
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    ort_type = model_type or ort_model_type(config.model_type)
    options = FusionOptions(ort_type)
    for name in disable:
        attr = f"enable_{name}"
        if not hasattr(options, attr):
            raise ValueError(f"unknown fusion {name!r} to disable")
        setattr(options, attr, False)
    num_heads = _config_value(config, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model")
    optimized = optimize_model(
        str(onnx_path),
        model_type=ort_type,
        num_heads=num_heads,
        hidden_size=hidden,
        optimization_options=options,
        opt_level=0,  # graph fusions in Python only; the session applies its own at load time
        use_gpu=False,
    )
    optimized.save_model_to_file(str(output_path))
    counts = count_ops(optimized.model)
    return {op: counts.get(op, 0) for op in FUSED_OPS}


def expected_fusions(ort_type: str, num_layers: int, attention: bool = True) -> Dict[str, int]:
    """Minimum fused-op counts for a ``num_layers`` transformer of the given ORT type.

    bert/vit: one Attention per layer, a SkipLayerNorm after each residual add
    (two per layer; ViT's pre-norm graph fuses one fewer), one Gelu-family op per
    layer. gpt2: one SkipLayerNorm per residual add that feeds a norm.

    Args:
        attention: expect fused Attention. ORT's attention patterns match the
            graphs of the TorchScript exporter (Optimum); the dynamo exporter's
            attention subgraph (transformers 5.x) is not matched by ORT 1.2x/1.3x.
    """
    if ort_type in ("bert",):
        out = {"Attention": num_layers, "SkipLayerNormalization": 2 * num_layers - 1, "gelu": num_layers}
    elif ort_type == "vit":
        out = {"Attention": num_layers, "SkipLayerNormalization": num_layers, "gelu": num_layers}
    else:
        out = None
    if out is not None:
        if not attention:
            out.pop("Attention")
        return out
    if ort_type == "gpt2":
        return {"SkipLayerNormalization": 2 * num_layers - 1, "gelu": num_layers}
    return {"LayerNormalization+SkipLayerNormalization": num_layers}


def check_fusions(counts: Mapping[str, int], expected: Mapping[str, int]) -> List[str]:
    """Problems (empty when every expected fused-op count is reached).

    ``"gelu"`` counts any of Gelu / FastGelu / BiasGelu; ``"A+B"`` counts the sum.
    """
    problems = []
    for key, need in expected.items():
        if key == "gelu":
            got = counts.get("Gelu", 0) + counts.get("FastGelu", 0) + counts.get("BiasGelu", 0)
        else:
            got = sum(counts.get(k, 0) for k in key.split("+"))
        if got < need:
            problems.append(f"{key}: {got} fused, expected >= {need}")
    return problems


# --------------------------------------------------------------------------- sessions


def session(path: PathLike, threads: Optional[int] = None):
    """A CPU ``InferenceSession`` with all graph optimizations on.

    Args:
        path: ONNX file.
        threads: intra-op threads; default: ORT's choice (all cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed_for(sess, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The subset of ``inputs`` the session takes, as int64 / float32 arrays."""
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"the ONNX model needs inputs {missing} that were not given (given: {sorted(inputs)})")
    return {n: np.asarray(inputs[n]) for n in names}


# --------------------------------------------------------------------------- quantization


def quantize_dynamic_int8(
    onnx_path: PathLike,
    output_path: PathLike,
    per_channel: bool = True,
    reduce_range: bool = False,
    op_types: Optional[Sequence[str]] = None,
) -> Path:
    """Dynamic int8: weights int8 ahead of time, activations quantized per call.

    Args:
        onnx_path: fp32 model (plain or ORT-fused).
        output_path: where the int8 model goes.
        per_channel: one weight scale per output channel (keeps accuracy on small models).
        reduce_range: 7-bit weights, for CPUs without VNNI where u8s8 products can saturate.
        op_types: op types to quantize; default ORT's (MatMul, Attention, Gather...).
    Returns:
        ``output_path``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

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

    Raises:
        ValueError: no calibration input.
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
    (``hf_lnorm.norms.quantized.smoothing_scales`` computes ``s``). The float
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
    """
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from ..norms.quantized import _check_alpha, smoothing_scales

    alpha = _check_alpha(alpha)
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


def unfuse_skip_layer_norm(onnx_path: PathLike, output_path: PathLike) -> int:
    """Rewrite every ``SkipLayerNormalization`` as ``Add`` + ``Add`` (bias) + ``LayerNormalization``.

    On the CPU provider ONNX Runtime's fused ``SkipLayerNormalization`` kernel is
    slower than the three standard ops it replaces (measured by
    ``scripts/ort_cpu_ops.py``: about 2.6x at 3072 x 384 fp32). The rewrite adds the
    skip first and the bias second, an order ORT's session-level fusion leaves
    alone (tested), and is exact up to float rounding. Nodes whose mean or
    inverse-std outputs are read are kept.

    Args:
        onnx_path: a graph with ``com.microsoft`` ``SkipLayerNormalization`` nodes (``optimize_onnx`` output).
        output_path: where the rewritten graph goes (temporary name, then renamed).
    Returns:
        The number of nodes rewritten.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes, count = [], 0
    for node in graph.node:
        stats = [o for o in list(node.output)[1:3] if o]
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft" or any(o in read for o in stats):
            nodes.append(node)
            continue
        eps = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
        x, skip, gamma = node.input[0], node.input[1], node.input[2]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        base = node.name or f"hf_lnorm_skipln_{count}"
        total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{base}_sum"
        partial = f"{base}_residual" if bias else total
        nodes.append(helper.make_node("Add", [x, skip], [partial], name=f"{base}_add"))
        if bias:
            nodes.append(helper.make_node("Add", [partial, bias], [total], name=f"{base}_bias"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []), [node.output[0]],
                                      name=f"{base}_norm", axis=-1, epsilon=eps))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    _save_atomically(model, output_path)
    return count


PER_TOKEN_NAME = "hf_lnorm_pt"
ATTENTION_MODES = ("ort", "per-token", "fp32")
_MHA_ATTRIBUTES = {"num_heads", "mask_filter_value", "scale"}


def _per_token_quant_weight(w: np.ndarray):
    """Per-output-channel symmetric int8 of a ``(K, N)`` MatMul weight: codes ``(K, N)`` and scales ``(N,)``."""
    scale = np.maximum(np.abs(w).max(axis=0) / 127.0, 1e-12).astype(np.float32)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


_MASKED_LOGIT = -1.0e4  # a masked key's scaled score: exp() of it underflows to exactly 0 in fp32 softmax


def _attention_scale(attrs: Mapping, size: int) -> float:
    """The score scale of a com.microsoft ``Attention`` node (its ``scale`` attribute, 0 or absent = 1/sqrt(head size))."""
    return float(attrs.get("scale") or 1.0 / np.sqrt(size))


def _mask_rank(graph, producers: Mapping, name: str) -> Optional[int]:
    """Rank of an ``Attention`` mask input when its layout is known: 1 for ``EmbedLayerNormalization``'s
    per-row valid-token count, 2 for a ``(batch, seq)`` 0/1 mask read from a graph input (maybe cast); else None.
    ``producers`` maps each tensor name to the node that writes it."""
    producer = producers.get(name)
    if producer is not None and producer.op_type == "EmbedLayerNormalization" and list(producer.output).index(name) == 1:
        return 1
    while producer is not None and producer.op_type == "Cast":
        name = producer.input[0]
        producer = producers.get(name)
    if producer is None:
        for value in graph.input:
            if value.name == name and value.type.tensor_type.HasField("shape"):
                rank = len(value.type.tensor_type.shape.dim)
                return rank if rank == 2 else None
    return None


def _with_head_channel(w: np.ndarray, b: Optional[np.ndarray], heads: int, value: float):
    """``(K, heads*size)`` weights and bias -> ``(K, heads*(size+1))``: one more output channel per head whose
    weights are 0 and whose bias is ``value``, so the GEMM writes ``value`` there for every token."""
    k, width = w.shape
    size = width // heads
    w_aug = np.zeros((k, heads, size + 1), np.float32)
    w_aug[:, :, :size] = w.reshape(k, heads, size)
    b_aug = np.full((heads, size + 1), value, np.float32)
    b_aug[:, :size] = 0.0 if b is None else b.reshape(heads, size)
    return w_aug.reshape(k, heads * (size + 1)), b_aug.reshape(-1)


def _mask_channel(prefix: str, mask: str, rank: int, lead: str, heads: int, size: int, scale: float):
    """Nodes computing the tensor added to K's per-head extra channel: ``_MASKED_LOGIT / scale`` for a masked
    key, 0 for a kept one (and 0 in every other channel). ``lead`` holds ``(batch, seq)``.
    Returns ``(nodes, initializers, output name)``."""
    from onnx import TensorProto, helper, numpy_helper

    onehot = np.zeros((heads, size + 1), np.float32)
    onehot[:, size] = 1.0
    consts = {"onehot": onehot, "fill": np.array(_MASKED_LOGIT / scale, np.float32), "zero": np.array(0.0, np.float32),
              "axes1": np.array([1], np.int64), "axes23": np.array([2, 3], np.int64), "one": np.array([1], np.int64),
              "width": np.array([heads * (size + 1)], np.int64), "z": np.array(0, np.int64), "step": np.array(1, np.int64)}
    inits = [numpy_helper.from_array(v, prefix + k) for k, v in consts.items()]
    n = lambda op, ins, out, **kw: helper.make_node(op, [prefix + i if i in consts else i for i in ins], [prefix + out], **kw)
    if rank == 1:  # valid-token count per row (right padding): key j is masked when j >= count
        nodes = [n("Gather", [lead, "one"], "seq", axis=0), n("Squeeze", [prefix + "seq"], "s"),
                 n("Range", ["z", prefix + "s", "step"], "pos"),
                 n("Cast", [mask], "count", to=TensorProto.INT64), n("Unsqueeze", [prefix + "count", "axes1"], "count2"),
                 n("GreaterOrEqual", [prefix + "pos", prefix + "count2"], "masked")]
    else:  # (batch, seq) 0/1: 0 = masked
        nodes = [n("Cast", [mask], "m64", to=TensorProto.INT64), n("Equal", [prefix + "m64", "z"], "masked")]
    nodes += [n("Where", [prefix + "masked", "fill", "zero"], "bias2"),  # (B, S)
              n("Unsqueeze", [prefix + "bias2", "axes23"], "bias4"),  # (B, S, 1, 1)
              n("Mul", [prefix + "bias4", "onehot"], "chan"),  # (B, S, heads, size + 1)
              n("Concat", [lead, "width"], "shape", axis=0),
              n("Reshape", [prefix + "chan", prefix + "shape"], "out")]
    return nodes, inits, prefix + "out"


def _attention_convertible(node) -> bool:
    """Whether a com.microsoft ``Attention`` node maps onto input-projection GEMMs + ``MultiHeadAttention``."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    extra = set(attrs) - _MHA_ATTRIBUTES
    return not extra and len(node.input) <= 4 and "num_heads" in attrs


def quantize_per_token_int8(
    onnx_path: PathLike,
    output_path: PathLike,
    attention: str = "per-token",
    min_out_features: int = 16,
    exclude: Sequence[str] = (),
) -> Dict[str, int]:
    """Dynamic int8 with one activation scale per token (row), for ONNX Runtime on CPU.

    ORT's own dynamic int8 (``quantize_dynamic_int8``) quantizes each activation
    with one scale for the whole tensor, so one token with a large value coarsens
    every other token's codes. This transform gives every row its own symmetric
    scale, as hf_lnorm's quantized mode does in PyTorch: for each tensor ``X``
    read by weight GEMMs it inserts ``s = max|X_row| / 127`` (``ReduceMax`` and
    ``ReduceMin`` over the row), ``QuantizeLinear`` per row to uint8 with zero point 128 (the
    u8 x s8 layout ORT's VNNI kernels take), and for each reader a
    ``MatMulIntegerToFloat`` with per-output-channel int8 weights whose
    activation scale is the ``(rows, 1)`` tensor ``s``. Readers of one tensor (Q, K and V of a block) share one
    quantization. Attention scores stay fp32 in every mode. The graph uses
    ``com.microsoft`` ops and is meant for ONNX Runtime's CPU provider, not for
    TensorRT.

    ORT-fused ``Attention`` nodes (input projection + attention in one op) are
    handled by ``attention``:

    ``"ort"``        ORT's ``QAttention`` (its dynamic int8 of the Q/K/V projection,
                     one scale per tensor) with ORT's masked attention core.
    ``"per-token"``  (default) three per-token GEMMs (Q, K, V) feeding ``MultiHeadAttention``.
                     A key-padding mask whose layout is known (``EmbedLayerNormalization``'s
                     valid-token counts, or a ``(batch, seq)`` 0/1 graph input) is folded
                     into one extra channel per head: Q's is a constant 1 (its bias),
                     K's is 0 for a kept key and ``-1e4 / scale`` for a masked one, so
                     masked keys get exactly zero weight and ``MultiHeadAttention`` runs
                     without a mask, on its fast CPU path (16.7 ms against 22.6 ms per
                     MiniLM layer at 8 x 384: ``scripts/ort_cpu_ops.py``). Other masks
                     are passed to ``MultiHeadAttention`` as they are. A row whose keys are
                     all masked differs from ORT's ``Attention`` (which then averages all
                     values); a QA or classification input always has valid tokens.
    ``"fp32"``       left as they are.

    Args:
        onnx_path: fp32 model, plain or ORT-fused (``optimize_onnx``), optionally
            smoothed first (``smooth_onnx``).
        output_path: where the int8 model goes (temporary name, then renamed).
        attention: ``"ort"``, ``"per-token"`` or ``"fp32"`` (above).
        min_out_features: MatMuls with fewer output features stay fp32 (a 2-logit
            QA head gains nothing from int8 and loses precision).
        exclude: ``fnmatch`` patterns of node names to leave in fp32.
    Returns:
        Counts: ``inputs`` (per-token quantized activations), ``matmul`` and
        ``attention`` (nodes made per-token int8), ``attention_mask_folded`` (of
        those, masks folded into K), ``attention_ort_int8``
        (``QAttention`` nodes), ``attention_kept_fp32`` (fused attention left in
        fp32: by request, or with attributes ``MultiHeadAttention`` lacks, e.g.
        causal masks).
    Raises:
        ValueError: ``min_out_features`` below 1, or an unknown ``attention`` mode.
    """
    import fnmatch

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if min_out_features < 1:
        raise ValueError(f"min_out_features must be at least 1, got {min_out_features}")
    if attention not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {attention!r}; accepted: {', '.join(ATTENTION_MODES)}")
    model = onnx.load(str(onnx_path))
    attention_ort = 0
    if attention == "ort" and any(n.op_type == "Attention" and n.domain == "com.microsoft" for n in model.graph.node):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "model.onnx"
            onnx.save(model, str(src))
            quantize_dynamic_int8(src, Path(tmp) / "qattention.onnx", op_types=["Attention"])
            model = onnx.load(str(Path(tmp) / "qattention.onnx"))
        attention_ort = sum(n.op_type == "QAttention" for n in model.graph.node)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    inits = {t.name: t for t in graph.initializer}
    uses: Dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    def const_weight(node) -> bool:
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        return w is not None and len(w.dims) == 2 and uses[node.input[1]] == 1 and node.input[0] not in inits

    counts = {"inputs": 0, "matmul": 0, "attention": 0, "attention_mask_folded": 0, "attention_ort_int8": attention_ort,
              "attention_kept_fp32": 0}
    mask_channels: Dict[str, str] = {}  # attention mask input -> its (B, S, heads * (size + 1)) K channel tensor
    producers = {o: n for n in graph.node for o in n.output}
    targets: Dict[str, List] = {}
    for node in graph.node:
        if any(fnmatch.fnmatchcase(node.name, pat) for pat in exclude):
            continue
        if node.op_type == "MatMul" and node.domain in ("", "ai.onnx") and const_weight(node):
            if inits[node.input[1]].dims[1] >= min_out_features:
                targets.setdefault(node.input[0], []).append(node)
        elif node.op_type == "Attention" and node.domain == "com.microsoft" and const_weight(node):
            if attention == "per-token" and _attention_convertible(node):
                targets.setdefault(node.input[0], []).append(node)
            else:
                counts["attention_kept_fp32"] += 1

    p0 = PER_TOKEN_NAME
    consts = {
        f"{p0}_inv127": np.array(1.0 / 127.0, np.float32), f"{p0}_tiny": np.array(1e-12, np.float32),
        f"{p0}_zp": np.array(128, np.uint8),
        f"{p0}_axis1": np.array([1], np.int64), f"{p0}_start": np.array([0], np.int64), f"{p0}_end": np.array([-1], np.int64),
    }
    if targets:
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    position = {id(n): i for i, n in enumerate(graph.node)}
    before: Dict[int, List] = {}
    replaced: Dict[int, List] = {}
    for gi, (x, readers) in enumerate(targets.items()):
        p = f"{p0}{gi}_"
        k = inits[readers[0].input[1]].dims[0]
        graph.initializer.append(numpy_helper.from_array(np.array([-1, k], np.int64), p + "rows"))
        def row_reduce(op: str, out: str):
            if opset >= 18:
                return helper.make_node(op, [p + "x", f"{p0}_axis1"], [out], keepdims=0)
            return helper.make_node(op, [p + "x"], [out], axes=[1], keepdims=0)

        before[id(min(readers, key=lambda n: position[id(n)]))] = [
            helper.make_node("Reshape", [x, p + "rows"], [p + "x"]),  # (M, K)
            row_reduce("ReduceMax", p + "hi"),  # max |x_row| = max(max x_row, -min x_row): two reads, no |x| copy
            row_reduce("ReduceMin", p + "lo"),
            helper.make_node("Neg", [p + "lo"], [p + "neglo"]),
            helper.make_node("Max", [p + "hi", p + "neglo"], [p + "amax"]),  # (M,)
            helper.make_node("Mul", [p + "amax", f"{p0}_inv127"], [p + "s0"]),
            helper.make_node("Max", [p + "s0", f"{p0}_tiny"], [p + "s"]),  # per-row scale
            helper.make_node("Shape", [p + "s"], [p + "m"]),
            helper.make_node("ConstantOfShape", [p + "m"], [p + "zps"], value=helper.make_tensor("zp", TensorProto.UINT8, [1], [128])),
            helper.make_node("QuantizeLinear", [p + "x", p + "s", p + "zps"], [p + "q"], axis=0),  # uint8 (M, K)
            helper.make_node("Unsqueeze", [p + "s", f"{p0}_axis1"], [p + "scol"]),  # (M, 1)
            helper.make_node("Shape", [x], [p + "shape"]),
            helper.make_node("Slice", [p + "shape", f"{p0}_start", f"{p0}_end"], [p + "lead"]),
        ]
        counts["inputs"] += 1
        for j, node in enumerate(readers):
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            new: List = []

            def int8_gemm(w: np.ndarray, out: str, tag: str) -> None:
                q, scale = _per_token_quant_weight(w)
                pre = f"{p}{j}{tag}_"
                graph.initializer.extend([numpy_helper.from_array(q, pre + "wq"), numpy_helper.from_array(scale, pre + "ws"),
                                          numpy_helper.from_array(np.array([w.shape[1]], np.int64), pre + "n")])
                new.extend([
                    # (M, N) = (codes - 128) @ wq * (s_row x ws): the (M, 1) row scale as a_scale broadcasts against
                    # the per-column weight scales inside the op (checked against numpy by the tests). No bias input:
                    # with a (M, 1) a_scale, ORT 1.32 multiplies the bias by the row scale.
                    helper.make_node("MatMulIntegerToFloat", [p + "q", pre + "wq", p + "scol", pre + "ws", f"{p0}_zp"],
                                     [pre + "y"], domain="com.microsoft"),
                    helper.make_node("Concat", [p + "lead", pre + "n"], [pre + "shape"], axis=0),
                    helper.make_node("Reshape", [pre + "y", pre + "shape"], [out]),
                ])

            if node.op_type == "MatMul":
                int8_gemm(weight, node.output[0], "")
                counts["matmul"] += 1
            else:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                heads = int(attrs["num_heads"])
                width = weight.shape[1] // 3
                size = width // heads
                bias_name = node.input[2] if len(node.input) > 2 else ""
                mask = node.input[3] if len(node.input) > 3 else ""
                parts = [np.ascontiguousarray(weight[:, t * width:(t + 1) * width]) for t in range(3)]
                qkv = [f"{p}{j}{t}_out" for t in "qkv"]
                mask_rank = _mask_rank(graph, producers, mask) if mask else None
                if mask_rank in (1, 2) and (bias_name in inits or not bias_name):
                    # The key-padding mask becomes one extra channel per head: Q has a constant 1 there (through
                    # the bias), K the mask value (0 for a kept key, a large negative for a masked one), so q.k
                    # carries the mask and MultiHeadAttention runs without a mask input: its fast CPU path.
                    bias = (numpy_helper.to_array(inits[bias_name]).astype(np.float32) if bias_name
                            else np.zeros(3 * width, np.float32))
                    if mask not in mask_channels:
                        mask_nodes, mask_inits, mask_channels[mask] = _mask_channel(
                            f"{p0}_mask{len(mask_channels)}_", mask, mask_rank, p + "lead", heads, size,
                            _attention_scale(attrs, size))
                        new.extend(mask_nodes)
                        graph.initializer.extend(mask_inits)
                    wq, bq = _with_head_channel(parts[0], bias[:width], heads, 1.0)
                    wk, bk = _with_head_channel(parts[1], bias[width:2 * width], heads, 0.0)
                    int8_gemm(wq, qkv[0], "q")
                    int8_gemm(wk, qkv[1] + "_unmasked", "k")
                    new.append(helper.make_node("Add", [qkv[1] + "_unmasked", mask_channels[mask]], [qkv[1]]))
                    int8_gemm(parts[2], qkv[2], "v")
                    graph.initializer.append(numpy_helper.from_array(np.concatenate([bq, bk, bias[2 * width:]]), f"{p}{j}_bias"))
                    attrs = {"num_heads": heads, "scale": _attention_scale(attrs, size)}
                    inputs = qkv + [f"{p}{j}_bias"]
                    counts["attention_mask_folded"] += 1
                else:
                    for t, (name, part) in enumerate(zip(qkv, "qkv")):
                        int8_gemm(parts[t], name, part)
                    inputs = qkv + [bias_name, mask]
                new.append(helper.make_node("MultiHeadAttention", inputs, [node.output[0]], name=node.name,
                                            domain="com.microsoft", **attrs))
                counts["attention"] += 1
            replaced[id(node)] = new
    nodes = []
    for node in graph.node:
        nodes.extend(before.get(id(node), []))
        nodes.extend(replaced.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _save_atomically(model, output_path)
    return counts


class FeedsReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of input dicts."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]], input_names: Optional[Sequence[str]] = None):
        self._feeds = [dict(f) for f in feeds]
        if input_names is not None:
            self._feeds = [{k: v for k, v in f.items() if k in input_names} for f in self._feeds]
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
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
    reduce_range: bool = False,
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
        reduce_range: 7-bit weights (see ``quantize_dynamic_int8``).
        weights_only: quantize only nodes with a constant (initializer) input, i.e. the
            Linear layers, not the activation x activation products of attention.
    Returns:
        ``output_path``.
    Raises:
        ValueError: unknown ``method`` or no calibration data.
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
    if "calibration_providers" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_providers"] = ["CPUExecutionProvider"]
    quantize_static(str(onnx_path), str(output_path), FeedsReader(calibration_feeds, names), **kwargs)
    return Path(output_path)
