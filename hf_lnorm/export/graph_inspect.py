"""Inspect exported ONNX graphs: op types, opset, and whether only standard ONNX ops are used.

Read by the exporter (``export/onnx.py``) and the TensorRT checks (``export/tensorrt.py``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import List, Union

__all__ = ["MIN_OPSET", "onnx_op_types", "onnx_opset", "standard_op_problems"]

MIN_OPSET = 17  # LayerNormalization is a standard op from opset 17 on


def onnx_op_types(path: Union[str, Path]) -> Counter:
    """Count the node types of an ONNX graph (subgraphs included) as ``"domain::Op"`` or bare ``"Op"``."""
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
    """Default-domain opset version of an ONNX model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def standard_op_problems(path: Union[str, Path], min_opset: int = MIN_OPSET) -> List[str]:
    """Why a graph is not "standard ONNX only" (empty list when it is).

    Checks that every node is in the default ONNX domain (no ``com.microsoft``
    contrib/fused ops, no custom domains) and that the opset is >= ``min_opset``.
    """
    problems = []
    opset = onnx_opset(path)
    if opset < min_opset:
        problems.append(f"opset {opset} < {min_opset}")
    custom = sorted(k for k in onnx_op_types(path) if "::" in k)
    if custom:
        problems.append("non-standard ops: " + ", ".join(custom))
    return problems
