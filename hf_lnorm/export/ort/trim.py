"""``trim_padding_onnx``: an ONNX graph that skips each batch's trailing padding (see ``hf_lnorm.export.trimming``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np

from ..trimming import PAD_FILL
from ._common import PathLike, _save_atomically

TRIM_NAME = "hf_lnorm_trim"  # prefix of every tensor and node the rewrite adds


def trim_padding_onnx(model_path: PathLike, output_path: PathLike, seq_outputs: Sequence[str],
                      fill: float = PAD_FILL) -> Path:
    """Write a copy of an ONNX graph that computes only up to the last real token of each batch.

    The copy reads ``attention_mask``, finds the last position that holds a real token in any row (at least 1),
    slices every ``[batch, seq]`` graph input to that length before the original nodes read it, and pads each
    output in ``seq_outputs`` back to the input length with ``fill``. Inputs, outputs, their names and dynamic axes
    are the original's, so the file loads wherever the original did (Optimum's ``ORTModelFor*`` classes included);
    every operator added is a standard ONNX one (``ReduceMax``, ``Range``, ``Slice``, ``Pad``).

    For an encoder whose attention masks padded keys (BERT and its relatives), a float graph's outputs at real
    tokens are the original's up to float rounding. A dynamic-int8 graph computes its activation scales over the
    tensors it sees, so trimmed, it gives what the original gives on inputs cut to their longest row
    (``padding="longest"``). Nothing is gained on inputs without trailing padding.

    Args:
        model_path: the ONNX file (its external data, if any, is read in and written inline).
        output_path: where to write the copy (staged, then renamed into place).
        seq_outputs: the outputs whose second axis is the sequence (``start_logits``/``end_logits`` for question
            answering, ``logits`` for token classification); other outputs are left as they are.
        fill: the value written at the skipped positions of ``seq_outputs`` (default ``PAD_FILL``).

    Returns:
        ``output_path`` as a ``Path``.

    Raises:
        ValueError: no ``attention_mask`` input, an input that is not ``[batch, seq]``, a name in ``seq_outputs``
            that the graph does not output, or an output that is not a float tensor of rank 2 or more.

    Examples:
        >>> import os, shutil, tempfile
        >>> import numpy as np
        >>> import onnx
        >>> from onnx import TensorProto, helper
        >>> from hf_lnorm.export.ort import session, trim_padding_onnx
        >>> nodes = [helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        ...          helper.make_node("Mul", ["x", "m"], ["logits"])]  # a per-token model
        >>> graph = helper.make_graph(nodes, "g", [
        ...     helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"]),
        ...     helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        ...     [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq"])])
        >>> folder = tempfile.mkdtemp()
        >>> src = os.path.join(folder, "model.onnx")
        >>> onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
        >>> path = trim_padding_onnx(src, os.path.join(folder, "trimmed.onnx"), ["logits"])
        >>> feed = {"x": np.ones((2, 5), np.float32), "attention_mask": np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])}
        >>> session(path).run(None, feed)[0].tolist()  # computed on the first 3 positions only
        [[1.0, 1.0, 0.0, -10000.0, -10000.0], [1.0, 1.0, 1.0, -10000.0, -10000.0]]
        >>> shutil.rmtree(folder)
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise ValueError(f"trim_padding_onnx needs ONNX opset 11 or newer (Slice and Pad with tensor inputs); "
                         f"{Path(model_path).name} uses opset {opset}")
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    if "attention_mask" not in inputs:
        raise ValueError(f"trim_padding_onnx needs an attention_mask input; the graph takes {', '.join(inputs)}")
    for name, value in inputs.items():
        rank = len(value.type.tensor_type.shape.dim)
        if rank != 2:
            raise ValueError(f"trim_padding_onnx slices [batch, seq] inputs; input {name!r} has rank {rank}")
    outputs = {o.name: o for o in graph.output}
    unknown = [n for n in seq_outputs if n not in outputs]
    if unknown:
        raise ValueError(f"the graph has no output {unknown[0]!r}; its outputs: {', '.join(outputs)}")
    float_types = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}
    for name in seq_outputs:
        tensor = outputs[name].type.tensor_type
        if tensor.elem_type not in float_types or len(tensor.shape.dim) < 2:
            raise ValueError(f"trim_padding_onnx pads float outputs of rank 2 or more; output {name!r} is not one")

    p = TRIM_NAME + "_"
    consts = {"zero": [0], "one": [1], "axis1": [1]}
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), p + k) for k, v in consts.items())
    graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), p + "one_scalar"))

    def reduce_max(x: str, out: str, axis: int, keepdims: int) -> onnx.NodeProto:
        if opset >= 18:
            graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), out + "_axes"))
            return helper.make_node("ReduceMax", [x, out + "_axes"], [out], keepdims=keepdims, name=out)
        return helper.make_node("ReduceMax", [x], [out], axes=[axis], keepdims=keepdims, name=out)

    head: List[onnx.NodeProto] = [
        helper.make_node("Cast", ["attention_mask"], [p + "mask"], to=TensorProto.INT64, name=p + "mask"),
        reduce_max(p + "mask", p + "any", 0, 0),  # [seq]: 1 where any row holds a real token
        helper.make_node("Shape", [p + "mask"], [p + "shape"], name=p + "shape"),
        helper.make_node("Gather", [p + "shape", p + "axis1"], [p + "seq"], axis=0, name=p + "seq"),  # [1]
        helper.make_node("Squeeze", [p + "seq", p + "zero"] if opset >= 13 else [p + "seq"], [p + "seq_scalar"],
                         name=p + "seq_scalar", **({} if opset >= 13 else {"axes": [0]})),
        helper.make_node("Add", [p + "seq_scalar", p + "one_scalar"], [p + "stop"], name=p + "stop"),
        helper.make_node("Range", [p + "one_scalar", p + "stop", p + "one_scalar"], [p + "positions"],
                         name=p + "positions"),  # 1..seq
        helper.make_node("Min", [p + "any", p + "one"], [p + "real"], name=p + "real"),  # masks may hold 2s
        helper.make_node("Mul", [p + "real", p + "positions"], [p + "last"], name=p + "last"),
        reduce_max(p + "last", p + "last_max", 0, 1),  # [1]
        helper.make_node("Max", [p + "last_max", p + "one"], [p + "keep"], name=p + "keep"),  # at least 1
        helper.make_node("Sub", [p + "seq", p + "keep"], [p + "skipped"], name=p + "skipped"),
    ]
    renamed = {name: f"{p}{name}" for name in inputs}
    for name, sliced in renamed.items():
        head.append(helper.make_node("Slice", [name, p + "zero", p + "keep", p + "axis1"], [sliced], name=sliced))
    added = {n.name for n in head}

    def rewire(nodes) -> None:
        for node in nodes:
            if node.name in added:
                continue
            for i, source in enumerate(node.input):
                if source in renamed:
                    node.input[i] = renamed[source]
            for attr in node.attribute:  # subgraphs (If, Loop, Scan) see the sliced inputs too
                for sub in list(attr.g.node if attr.HasField("g") else []) + [n for g in attr.graphs for n in g.node]:
                    rewire([sub])

    rewire(graph.node)
    tail: List[onnx.NodeProto] = []
    for name in seq_outputs:
        tensor = outputs[name].type.tensor_type
        rank = len(tensor.shape.dim)
        inner = f"{p}{name}_untrimmed"
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.initializer.append(numpy_helper.from_array(np.zeros(rank + 1, np.int64), f"{p}{name}_pads_head"))
        graph.initializer.append(numpy_helper.from_array(np.zeros(rank - 2, np.int64), f"{p}{name}_pads_tail"))
        graph.initializer.append(numpy_helper.from_array(np.array(fill, float_types[tensor.elem_type]), f"{p}{name}_fill"))
        tail += [
            # pads: [0] * rank begins, then ends [0, skipped, 0, ...]
            helper.make_node("Concat", [f"{p}{name}_pads_head", p + "skipped", f"{p}{name}_pads_tail"],
                             [f"{p}{name}_pads"], axis=0, name=f"{p}{name}_pads"),
            helper.make_node("Pad", [inner, f"{p}{name}_pads", f"{p}{name}_fill"], [name], mode="constant",
                             name=f"{p}{name}_pad"),
        ]
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    _save_atomically(model, output_path)
    return Path(output_path)
