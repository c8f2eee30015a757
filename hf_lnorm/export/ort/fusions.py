"""ONNX Runtime's transformer graph fusions: apply them, count them, check them, and undo SkipLayerNorm.

``optimize_onnx`` runs ``onnxruntime.transformers.optimizer`` with the fusion
patterns that fit the model (LayerNorm, SkipLayerNorm, Attention, Gelu...).
The ORT optimizer returns model types it does not know unchanged, so
``ORT_MODEL_TYPES`` maps Hugging Face model types, hf_lnorm's families
included, to the ORT pattern set whose graph shape they share, and
``check_fusions`` verifies the fused-op counts against the layer count.
``unfuse_skip_layer_norm`` rewrites the fused ``SkipLayerNormalization`` back
into standard ops where those are faster (ORT's CPU provider).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from ._common import PathLike, _save_atomically

__all__ = ["FUSED_OPS", "ORT_MODEL_TYPES", "check_fusions", "count_ops", "expected_fusions", "optimize_onnx",
           "ort_model_type", "unfuse_skip_layer_norm"]

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




def ort_model_type(model_type: str) -> str:
    """The ORT optimizer model type for a Hugging Face ``model_type``.

    Args:
        model_type: ``config.model_type`` (``"bert"``, ``"gpt2"``, ``"lnorm-gpt"``, ...).

    Returns:
        The ORT pattern set (``"bert"``, ``"vit"``, ``"gpt2"``, ``"bart"``, ...), from ``ORT_MODEL_TYPES``.

    Raises:
        ValueError: no mapping is known (names the type and the accepted ones).

    Examples:
        >>> from hf_lnorm.export.ort import ort_model_type
        >>> ort_model_type("roberta"), ort_model_type("lnorm-gpt")
        ('bert', 'gpt2')
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
    """Op-type counts (all domains) of an ONNX file or ``ModelProto``.

    Only the top-level graph is counted and domains are dropped
    (``SkipLayerNormalization``, not ``com.microsoft::SkipLayerNormalization``);
    ``hf_lnorm.export.onnx_op_types`` keeps the domains and walks subgraphs.

    Args:
        path_or_model (str | pathlib.Path | onnx.ModelProto): an ``.onnx`` file or a loaded model.

    Returns:
        ``{op type: count}``.

    Examples:
        ```python
        from hf_lnorm.export.ort import count_ops

        count_ops("out/model_opt.onnx")["SkipLayerNormalization"]
        ```
    """
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

    Runs ``onnxruntime.transformers.optimizer.optimize_model`` on CPU with the
    pattern set of the model type (LayerNorm, SkipLayerNorm, Attention, Gelu...).
    The fused graph uses ``com.microsoft`` ops: it is for ONNX Runtime, not for
    TensorRT. Check the result with ``check_fusions(counts, expected_fusions(...))``.

    Args:
        onnx_path: the exported fp32 model.
        output_path: where the fused model goes.
        config (transformers.PretrainedConfig): the model's config (heads, hidden size, model_type).
        model_type: ORT optimizer type; default: ``ort_model_type(config.model_type)``.
        disable: fusion names to switch off (``"attention"``, ``"skip_layer_norm"``,
            ``"embed_layer_norm"``, ``"bias_gelu"``, ``"gelu"``, ``"layer_norm"``).

    Returns:
        Counts of the fused op types in the optimized graph (``FUSED_OPS``).

    Raises:
        ValueError: no ORT pattern set for ``config.model_type`` (see ``ort_model_type``),
            or an unknown fusion name in ``disable``.

    Examples:
        ```python
        from transformers import AutoConfig
        from hf_lnorm.export.ort import check_fusions, expected_fusions, optimize_onnx

        config = AutoConfig.from_pretrained("bert-onnx")
        counts = optimize_onnx("bert-onnx/model.onnx", "bert-onnx/model_opt.onnx", config)
        problems = check_fusions(counts, expected_fusions("bert", config.num_hidden_layers))
        ```
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
        ort_type: the ORT optimizer model type (``ort_model_type``).
        num_layers: the number of transformer layers.
        attention: expect fused Attention. ORT's attention patterns match the
            graphs of the TorchScript exporter (Optimum); the dynamo exporter's
            attention subgraph (transformers 5.x) is not matched by ORT 1.2x/1.3x.

    Returns:
        ``{op type: minimum count}`` in the key format of ``check_fusions``
            (``"gelu"`` for any Gelu-family op, ``"A+B"`` for a sum).

    Examples:
        >>> from hf_lnorm.export.ort import expected_fusions
        >>> expected_fusions("bert", 6)
        {'Attention': 6, 'SkipLayerNormalization': 11, 'gelu': 6}
        >>> expected_fusions("bert", 6, attention=False)
        {'SkipLayerNormalization': 11, 'gelu': 6}
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

    Args:
        counts: fused-op counts, as ``optimize_onnx`` returns them.
        expected: minimum counts, as ``expected_fusions`` returns them.

    Returns:
        One line per count below its minimum.

    Examples:
        >>> from hf_lnorm.export.ort import check_fusions
        >>> check_fusions({"Attention": 6, "SkipLayerNormalization": 11, "FastGelu": 6},
        ...               {"Attention": 6, "SkipLayerNormalization": 11, "gelu": 6})
        []
        >>> check_fusions({"Attention": 0, "SkipLayerNormalization": 11, "Gelu": 6}, {"Attention": 6})
        ['Attention: 0 fused, expected >= 6']
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

    Examples:
        >>> import os, shutil, tempfile
        >>> import onnx
        >>> from onnx import TensorProto, helper
        >>> from hf_lnorm.export.ort import count_ops, unfuse_skip_layer_norm
        >>> node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"],
        ...                         domain="com.microsoft", epsilon=1e-12)
        >>> inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
        ...           for n, s in (("x", [2, 8]), ("skip", [2, 8]), ("gamma", [8]), ("beta", [8]))]
        >>> graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
        >>> folder = tempfile.mkdtemp()
        >>> fused = os.path.join(folder, "fused.onnx")
        >>> onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
        ...                                                   helper.make_opsetid("com.microsoft", 1)]), fused)
        >>> unfuse_skip_layer_norm(fused, os.path.join(folder, "plain.onnx"))
        1
        >>> count_ops(os.path.join(folder, "plain.onnx"))
        {'Add': 1, 'LayerNormalization': 1}
        >>> shutil.rmtree(folder)
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
