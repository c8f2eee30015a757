"""Inspect exported ONNX graphs: op types, opset, and whether only standard ONNX ops are used.

Read by the exporter (``export/onnx.py``) and the TensorRT checks (``export/tensorrt.py``).

Examples:
    >>> import os, tempfile
    >>> import onnx
    >>> from onnx import TensorProto, helper
    >>> from hf_lnorm.export.graph_inspect import onnx_op_types, onnx_opset, standard_op_problems
    >>> node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1)
    >>> graph = helper.make_graph(
    ...     [node], "ln",
    ...     [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [2, 8]), ("scale", [8]), ("bias", [8]))],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    >>> path = os.path.join(tempfile.mkdtemp(), "ln.onnx")
    >>> onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    >>> onnx_op_types(path), onnx_opset(path), standard_op_problems(path)
    (Counter({'LayerNormalization': 1}), 17, [])
    >>> standard_op_problems(path, min_opset=18)
    ['opset 17 < 18']
    >>> os.remove(path); os.rmdir(os.path.dirname(path))
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import List, Union

__all__ = ["MIN_OPSET", "onnx_op_types", "onnx_opset", "standard_op_problems"]

MIN_OPSET = 17  # LayerNormalization is a standard op from opset 17 on


def onnx_op_types(path: Union[str, Path]) -> Counter:
    """Count the node types of an ONNX graph (subgraphs included) as ``"domain::Op"`` or bare ``"Op"``.

    Ops of the default domain are counted by their bare name
    (``"LayerNormalization"``), others with their domain
    (``"com.microsoft::SkipLayerNormalization"``). External weight data is not loaded.

    Args:
        path: an ``.onnx`` file.

    Returns:
        A ``Counter`` of op names (see the module example).

    Examples:
        ```python
        from hf_lnorm.export import onnx_op_types

        onnx_op_types("bert-onnx/model.onnx")["LayerNormalization"]  # one node per norm
        ```
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: Counter = Counter()

    def walk(graph):
        for node in graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            counts[key] += 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return counts


def onnx_opset(path: Union[str, Path]) -> int:
    """Default-domain opset version of an ONNX model.

    Args:
        path: an ``.onnx`` file.

    Returns:
        The version imported for the default (``""`` / ``ai.onnx``) domain, 0 when
            there is none (see the module example).

    Examples:
        ```python
        from hf_lnorm.export import onnx_opset

        assert onnx_opset("bert-onnx/model.onnx") >= 17
        ```
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def standard_op_problems(path: Union[str, Path], min_opset: int = MIN_OPSET) -> List[str]:
    """Why a graph is not "standard ONNX only" (empty list when it is).

    Checks that every node is in the default ONNX domain (no ``com.microsoft``
    contrib/fused ops, no custom domains) and that the opset is >= ``min_opset``.
    This is the check ``--target tensorrt`` runs on every graph.

    Args:
        path: an ``.onnx`` file.
        min_opset: the lowest acceptable default-domain opset (17: the first with
            ``LayerNormalization``).

    Returns:
        One line per problem (``"opset 16 < 17"``, ``"non-standard ops: ..."``);
            empty when the graph is standard ONNX only (see the module example).

    Examples:
        ```python
        from hf_lnorm.export import standard_op_problems

        problems = standard_op_problems("bert-onnx/model_opt.onnx")  # an ORT-fused graph
        # ['non-standard ops: com.microsoft::Attention, com.microsoft::SkipLayerNormalization, ...']
        ```
    """
    problems = []
    opset = onnx_opset(path)
    if opset < min_opset:
        problems.append(f"opset {opset} < {min_opset}")
    custom = sorted(k for k in onnx_op_types(path) if "::" in k)
    if custom:
        problems.append("non-standard ops: " + ", ".join(custom))
    return problems
