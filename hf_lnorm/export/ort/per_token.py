"""Per-token dynamic int8 for ONNX Runtime on CPU: one activation scale per row, as hf_lnorm's quantized mode.

``quantize_per_token_int8`` rewrites an fp32 graph (plain or ORT-fused): every
tensor read by weight GEMMs is quantized once per row, and each reader becomes a
``MatMulIntegerToFloat`` with per-output-channel int8 weights. ORT-fused
``Attention`` nodes become three such GEMMs feeding ``MultiHeadAttention``, with a
known key-padding mask folded into one extra channel per head.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ._common import PathLike, _save_atomically
from .quantize import quantize_dynamic_int8, weight_qmax

__all__ = ["ATTENTION_MODES", "PER_TOKEN_NAME", "quantize_per_token_int8"]


PER_TOKEN_NAME = "hf_lnorm_pt"
ATTENTION_MODES = ("ort", "per-token", "fp32")
_MHA_ATTRIBUTES = {"num_heads", "mask_filter_value", "scale"}


def _per_token_quant_weight(w: np.ndarray, qmax: int = 127):
    """Per-output-channel symmetric int8 of a ``(K, N)`` MatMul weight: codes ``(K, N)`` in ``[-qmax, qmax]`` and
    scales ``(N,)``."""
    scale = np.maximum(np.abs(w).max(axis=0) / qmax, 1e-12).astype(np.float32)
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale


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
    activation scale is the ``(rows, 1)`` tensor ``s``. The weights are 7-bit
    (``|q| <= 63``) where ONNX Runtime's int8 kernels would saturate full-range
    ones (x86 CPUs without VNNI; ``weight_qmax``), else 8-bit. Readers of one tensor (Q, K and V of a block) share one
    quantization. Attention scores stay fp32 in every mode. The graph uses
    ``com.microsoft`` ops and is meant for ONNX Runtime's CPU provider, not for
    TensorRT.

    ORT-fused ``Attention`` nodes (input projection + attention in one op) are
    handled by ``attention``:

    * ``"ort"``: ORT's ``QAttention`` (its dynamic int8 of the Q/K/V projection,
      one scale per tensor) with ORT's masked attention core.
    * ``"per-token"`` (default): three per-token GEMMs (Q, K, V) feeding
      ``MultiHeadAttention``. A key-padding mask whose layout is known
      (``EmbedLayerNormalization``'s valid-token counts, or a ``(batch, seq)`` 0/1
      graph input) is folded into one extra channel per head: Q's is a constant 1
      (its bias), K's is 0 for a kept key and ``-1e4 / scale`` for a masked one, so
      masked keys get exactly zero weight and ``MultiHeadAttention`` runs without
      a mask, on its faster CPU path (``python scripts/ort_cpu_ops.py`` measures
      both). Other masks are passed to ``MultiHeadAttention`` as they are. A row
      whose keys are all masked differs from ORT's ``Attention`` (which then
      averages all values); a QA or classification input always has valid tokens.
    * ``"fp32"``: left as they are.

    Args:
        onnx_path: fp32 model, plain or ORT-fused (``optimize_onnx``), optionally
            smoothed first (``smooth_onnx``).
        output_path: where the int8 model goes (temporary name, then renamed).
        attention: ``"ort"``, ``"per-token"`` or ``"fp32"`` (above).
        min_out_features: MatMuls with fewer output features stay fp32 (a 2-logit
            QA head gains nothing from int8 and loses precision).
        exclude: ``fnmatch`` patterns of node names to leave in fp32.

    Returns:
        The counts of ``inputs`` (per-token quantized activations), ``matmul`` and
            ``attention`` (nodes made per-token int8), ``attention_mask_folded`` (of
            those, masks folded into K), ``attention_ort_int8``
            (``QAttention`` nodes), ``attention_kept_fp32`` (fused attention left in
            fp32: by request, or with attributes ``MultiHeadAttention`` lacks, e.g.
            causal masks).

    Raises:
        ValueError: ``min_out_features`` below 1, or an unknown ``attention`` mode.

    Examples:
        ```python
        from hf_lnorm.export.ort import optimize_onnx, quantize_per_token_int8

        optimize_onnx("bert-onnx/model.onnx", "bert-onnx/model_opt.onnx", config)
        counts = quantize_per_token_int8("bert-onnx/model_opt.onnx", "bert-onnx/model_pt.onnx")
        print(counts["matmul"], counts["attention"])
        ```

        The module example of ``hf_lnorm.export.ort`` runs it on a one-block graph.
    """
    import onnx
    from onnx import helper, numpy_helper

    if min_out_features < 1:
        raise ValueError(f"min_out_features must be at least 1, got {min_out_features}")
    if attention not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {attention!r}; accepted: {', '.join(ATTENTION_MODES)}")
    model = onnx.load(str(onnx_path))
    attention_ort = 0
    if attention == "ort" and any(n.op_type == "Attention" and n.domain == "com.microsoft" for n in model.graph.node):
        model = _with_qattention(model)
        attention_ort = sum(n.op_type == "QAttention" for n in model.graph.node)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    counts = {"inputs": 0, "matmul": 0, "attention": 0, "attention_mask_folded": 0, "attention_ort_int8": attention_ort,
              "attention_kept_fp32": 0}
    targets = _gemm_readers(graph, attention, min_out_features, exclude, counts)
    if targets:
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in _shared_constants().items())
    rewrite = _Rewrite(graph, opset, counts)
    position = {id(n): i for i, n in enumerate(graph.node)}
    before: Dict[int, List] = {}
    replaced: Dict[int, List] = {}
    for gi, (x, readers) in enumerate(targets.items()):
        prefix = f"{PER_TOKEN_NAME}{gi}_"
        first = min(readers, key=lambda n: position[id(n)])
        before[id(first)] = rewrite.quantize_rows(prefix, x, rewrite.inits[readers[0].input[1]].dims[0])
        counts["inputs"] += 1
        for j, node in enumerate(readers):
            replaced[id(node)] = rewrite.reader(prefix, j, node)
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


def _with_qattention(model):
    """``model`` with its fused ``Attention`` nodes turned into ORT's ``QAttention`` (``attention="ort"``)."""
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        quantize_dynamic_int8(src, Path(tmp) / "qattention.onnx", op_types=["Attention"])
        return onnx.load(str(Path(tmp) / "qattention.onnx"))


def _uses(graph) -> Dict[str, int]:
    """How many node inputs read each tensor name."""
    uses: Dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    return uses


def _gemm_readers(graph, attention: str, min_out_features: int, exclude: Sequence[str], counts: Dict[str, int]) -> Dict[str, List]:
    """Per activation tensor, the weight GEMMs (``MatMul``, convertible ``Attention``) that read it and become int8.

    A reader qualifies when its second input is a 2-D initializer read by no
    other node. Fused attention left in fp32 is counted in ``attention_kept_fp32``.
    """
    inits = {t.name: t for t in graph.initializer}
    uses = _uses(graph)

    def const_weight(node) -> bool:
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        return w is not None and len(w.dims) == 2 and uses[node.input[1]] == 1 and node.input[0] not in inits

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
    return targets


def _shared_constants() -> Dict[str, np.ndarray]:
    """The constants every per-token group reads, by initializer name."""
    p0 = PER_TOKEN_NAME
    return {
        f"{p0}_inv127": np.array(1.0 / 127.0, np.float32), f"{p0}_tiny": np.array(1e-12, np.float32),
        f"{p0}_zp": np.array(128, np.uint8),
        f"{p0}_axis1": np.array([1], np.int64), f"{p0}_start": np.array([0], np.int64), f"{p0}_end": np.array([-1], np.int64),
    }


class _Rewrite:
    """The nodes and initializers of the per-token rewrite of one graph (initializers are appended to it)."""

    def __init__(self, graph, opset: int, counts: Dict[str, int]):
        self.graph = graph
        self.opset = opset
        self.counts = counts
        self.inits = {t.name: t for t in graph.initializer}
        self.producers = {o: n for n in graph.node for o in n.output}
        self.mask_channels: Dict[str, str] = {}  # attention mask input -> its (B, S, heads * (size + 1)) K channel tensor
        self.qmax = weight_qmax()  # 63 where ORT's int8 kernels saturate full-range weights (no VNNI)

    def quantize_rows(self, p: str, x: str, k: int) -> List:
        """Nodes that quantize ``x`` (``(..., k)``) per row: uint8 codes ``p + "q"`` ``(M, k)``, scales ``p + "scol"``
        ``(M, 1)`` and the leading shape ``p + "lead"``."""
        from onnx import TensorProto, helper, numpy_helper

        p0 = PER_TOKEN_NAME
        self.graph.initializer.append(numpy_helper.from_array(np.array([-1, k], np.int64), p + "rows"))

        def row_reduce(op: str, out: str):
            if self.opset >= 18:
                return helper.make_node(op, [p + "x", f"{p0}_axis1"], [out], keepdims=0)
            return helper.make_node(op, [p + "x"], [out], axes=[1], keepdims=0)

        return [
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

    def int8_gemm(self, new: List, p: str, pre: str, w: np.ndarray, out: str) -> None:
        """Append to ``new`` the nodes of ``out = x @ w`` from the per-row codes of group ``p`` (weights named ``pre...``)."""
        from onnx import helper, numpy_helper

        q, scale = _per_token_quant_weight(w, self.qmax)
        self.graph.initializer.extend([numpy_helper.from_array(q, pre + "wq"), numpy_helper.from_array(scale, pre + "ws"),
                                       numpy_helper.from_array(np.array([w.shape[1]], np.int64), pre + "n")])
        new.extend([
            # (M, N) = (codes - 128) @ wq * (s_row x ws): the (M, 1) row scale as a_scale broadcasts against
            # the per-column weight scales inside the op (checked against numpy by the tests). No bias input:
            # with a (M, 1) a_scale, ORT 1.32 multiplies the bias by the row scale.
            helper.make_node("MatMulIntegerToFloat", [p + "q", pre + "wq", p + "scol", pre + "ws", f"{PER_TOKEN_NAME}_zp"],
                             [pre + "y"], domain="com.microsoft"),
            helper.make_node("Concat", [p + "lead", pre + "n"], [pre + "shape"], axis=0),
            helper.make_node("Reshape", [pre + "y", pre + "shape"], [out]),
        ])

    def reader(self, p: str, j: int, node) -> List:
        """The nodes replacing reader ``j`` (a ``MatMul`` or a fused ``Attention``) of group ``p``."""
        from onnx import numpy_helper

        weight = numpy_helper.to_array(self.inits[node.input[1]]).astype(np.float32)
        new: List = []
        if node.op_type == "MatMul":
            self.int8_gemm(new, p, f"{p}{j}_", weight, node.output[0])
            self.counts["matmul"] += 1
        else:
            self._attention(new, p, j, node, weight)
            self.counts["attention"] += 1
        return new

    def _attention(self, new: List, p: str, j: int, node, weight: np.ndarray) -> None:
        """Append the Q, K, V int8 GEMMs and the ``MultiHeadAttention`` that replace a fused ``Attention``."""
        from onnx import helper, numpy_helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        heads = int(attrs["num_heads"])
        width = weight.shape[1] // 3
        size = width // heads
        bias_name = node.input[2] if len(node.input) > 2 else ""
        mask = node.input[3] if len(node.input) > 3 else ""
        parts = [np.ascontiguousarray(weight[:, t * width:(t + 1) * width]) for t in range(3)]
        qkv = [f"{p}{j}{t}_out" for t in "qkv"]
        mask_rank = _mask_rank(self.graph, self.producers, mask) if mask else None
        if mask_rank in (1, 2) and (bias_name in self.inits or not bias_name):
            # The key-padding mask becomes one extra channel per head: Q has a constant 1 there (through
            # the bias), K the mask value (0 for a kept key, a large negative for a masked one), so q.k
            # carries the mask and MultiHeadAttention runs without a mask input: its fast CPU path.
            bias = (numpy_helper.to_array(self.inits[bias_name]).astype(np.float32) if bias_name
                    else np.zeros(3 * width, np.float32))
            if mask not in self.mask_channels:
                mask_nodes, mask_inits, self.mask_channels[mask] = _mask_channel(
                    f"{PER_TOKEN_NAME}_mask{len(self.mask_channels)}_", mask, mask_rank, p + "lead", heads, size,
                    _attention_scale(attrs, size))
                new.extend(mask_nodes)
                self.graph.initializer.extend(mask_inits)
            wq, bq = _with_head_channel(parts[0], bias[:width], heads, 1.0)
            wk, bk = _with_head_channel(parts[1], bias[width:2 * width], heads, 0.0)
            self.int8_gemm(new, p, f"{p}{j}q_", wq, qkv[0])
            self.int8_gemm(new, p, f"{p}{j}k_", wk, qkv[1] + "_unmasked")
            new.append(helper.make_node("Add", [qkv[1] + "_unmasked", self.mask_channels[mask]], [qkv[1]]))
            self.int8_gemm(new, p, f"{p}{j}v_", parts[2], qkv[2])
            self.graph.initializer.append(numpy_helper.from_array(np.concatenate([bq, bk, bias[2 * width:]]), f"{p}{j}_bias"))
            attrs = {"num_heads": heads, "scale": _attention_scale(attrs, size)}
            inputs = qkv + [f"{p}{j}_bias"]
            self.counts["attention_mask_folded"] += 1
        else:
            for t, (name, part) in enumerate(zip(qkv, "qkv")):
                self.int8_gemm(new, p, f"{p}{j}{part}_", parts[t], name)
            inputs = qkv + [bias_name, mask]
        new.append(helper.make_node("MultiHeadAttention", inputs, [node.output[0]], name=node.name,
                                    domain="com.microsoft", **attrs))
