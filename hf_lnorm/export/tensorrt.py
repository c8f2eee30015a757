"""The TensorRT target: a graph TensorRT's ONNX parser accepts, and the engine where possible.

``hf-lnorm export --target tensorrt`` writes the plain ONNX export (no ONNX
Runtime fusions: those live in the ``com.microsoft`` domain, which TensorRT
does not parse) and checks it: standard ONNX ops only, opset >= 17 (so norms
are ``LayerNormalization`` nodes, which TensorRT maps to its own normalization
layer). Where the ``tensorrt`` Python package and a CUDA GPU are present the
engine is built (``model.plan``); otherwise one line says so and the
``trtexec`` command that builds it is printed.

Encoder-decoder exports (``lnorm-seq2seq``: ``encoder_model.onnx``, ``decoder_model.onnx``,
``decoder_with_past_model.onnx``) get the same check on every graph, and one ``trtexec``
command per graph whose dynamic-shape profile is read from that graph's own inputs
(``graph_profiles``: the decoders take ``encoder_hidden_states`` and ``past_key_values.*``,
whose sequence axes are dynamic too).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

logger = logging.getLogger("hf_lnorm")

MAX_BATCH = 8
MAX_SEQ = 512
OPT_SEQ = 128

Shape = Tuple[int, ...]
Profile = Tuple[Shape, Shape, Shape]


def _profile(shape: Union[Shape, Profile]) -> Profile:
    """(min, opt, max) shapes for one input; text inputs are (batch, sequence); a given profile is kept."""
    if shape and isinstance(shape[0], tuple):
        return shape
    if len(shape) == 2:
        return (1, 1), shape, (MAX_BATCH, MAX_SEQ)
    return (1,) + shape[1:], shape, (MAX_BATCH,) + shape[1:]


def graph_profiles(onnx_path: Union[str, Path], max_seq: int = MAX_SEQ) -> Dict[str, Profile]:
    """Per graph input, a (min, opt, max) profile read from its dimensions.

    Fixed dimensions stay as they are; ``batch_size`` runs 1..``MAX_BATCH`` (opt 1); every other named
    (dynamic) axis, a sequence length, runs 1..``max_seq`` (opt ``min(OPT_SEQ, max_seq)``), a
    ``past_*`` length to ``max_seq - 1`` (one new token still fits the position table).

    Args:
        onnx_path: the ONNX file.
        max_seq: the longest sequence (e.g. the model's ``max_position_embeddings``).
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    profiles = {}
    for value in graph.input:
        if value.name in inits:
            continue
        lo, opt, hi = [], [], []
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_value > 0:
                ranges = (dim.dim_value,) * 3
            elif dim.dim_param == "batch_size":
                ranges = (1, 1, MAX_BATCH)
            else:
                longest = max_seq - 1 if dim.dim_param.startswith("past") else max_seq
                ranges = (1, min(OPT_SEQ, longest), longest)
            for axis, size in zip((lo, opt, hi), ranges):
                axis.append(size)
        profiles[value.name] = (tuple(lo), tuple(opt), tuple(hi))
    return profiles


def trtexec_command(onnx_path: str, shapes: Dict[str, Union[Shape, Profile]], engine_path: str = "model.plan") -> str:
    """The ``trtexec`` command line that builds an fp16 engine with a dynamic-shape profile.

    Args:
        onnx_path: the ONNX file.
        shapes: per input, the optimal (representative) shape, or its (min, opt, max) profile.
        engine_path: where the engine is saved.

    Returns:
        A shell command string.
    """

    def fmt(which: int) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, _profile(s)[which]))}" for name, s in shapes.items())

    return (
        f"trtexec --onnx={onnx_path} --saveEngine={engine_path} --fp16 "
        f"--minShapes={fmt(0)} --optShapes={fmt(1)} --maxShapes={fmt(2)}"
    )


def tensorrt_unavailable_reason() -> str:
    """Empty string when an engine can be built here, else why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the 'tensorrt' Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return ""


def build_engine(onnx_path: Path, shapes: Dict[str, Union[Shape, Profile]], engine_path: Path, fp16: bool = True) -> Path:
    """Parse ``onnx_path`` with TensorRT's ONNX parser and serialize an engine (needs tensorrt + GPU).

    Raises:
        RuntimeError: the parser rejects the graph or the build fails (with the parser's errors).
    """
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # TensorRT < 10; implied from 10 on
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if fp16 and getattr(builder, "platform_has_fast_fp16", False):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, *_profile(shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path.name}")
    engine_path.write_bytes(bytes(serialized))
    return engine_path


def prepare_tensorrt(
    out_dir: Path,
    onnx_files: Sequence[str],
    shapes: Optional[Dict[str, Union[Shape, Profile]]] = None,
    max_seq: int = MAX_SEQ,
) -> List[str]:
    """Check the exported graph(s) for TensorRT and build the engine(s) where possible.

    Args:
        out_dir: the (staging) export directory.
        onnx_files: ONNX files in it (relative).
        shapes: representative input shapes for every file (see ``hf_lnorm.export.input_spec_for_trt``);
            ``None``: each graph's profile is read from its inputs (``graph_profiles``), as for the
            encoder-decoder graphs, which take different inputs.
        max_seq: the longest sequence of the read profiles.

    Returns:
        Lines for the user: the check result, then the engine paths, or one line saying why
            none was built and a ``trtexec`` command per graph.

    Raises:
        ValueError: a graph has non-standard ops or an opset below 17 (names them).
    """
    from .graph_inspect import standard_op_problems

    lines = []
    for name in onnx_files:
        problems = standard_op_problems(out_dir / name)
        if problems:
            raise ValueError(f"{name} is not TensorRT-ready: {'; '.join(problems)}")
    lines.append(f"TensorRT check: {', '.join(onnx_files)} use standard ONNX ops only (opset >= 17)")
    reason = tensorrt_unavailable_reason()
    if reason:
        several = len(onnx_files) > 1
        lines.append(f"TensorRT engine{'s' if several else ''} not built: {reason}. "
                     f"Build {'them' if several else 'it'} on a GPU machine with:")
    for name in onnx_files:
        engine = Path(name).with_suffix(".plan")
        graph_shapes = shapes if shapes is not None else graph_profiles(out_dir / name, max_seq)
        if reason:
            lines.append("  " + trtexec_command(name, graph_shapes, str(engine)))
        else:
            build_engine(out_dir / name, graph_shapes, out_dir / engine)
            lines.append(f"TensorRT engine built: {engine}")
    return lines
