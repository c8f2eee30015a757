"""The TensorRT target: a graph TensorRT's ONNX parser accepts, and the engine where possible.

``hf-lnorm export --target tensorrt`` writes the plain ONNX export (no ONNX
Runtime fusions: those live in the ``com.microsoft`` domain, which TensorRT
does not parse) and checks it: standard ONNX ops only, opset >= 17 (so norms
are ``LayerNormalization`` nodes, which TensorRT maps to its own normalization
layer). Where the ``tensorrt`` Python package and a CUDA GPU are present the
engine is built (``model.plan``); otherwise one line says so and the
``trtexec`` command that builds it is printed.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

logger = logging.getLogger("hf_lnorm")

MAX_BATCH = 8
MAX_SEQ = 512


def _profile(shape: Tuple[int, ...]) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    """(min, opt, max) shapes for one input; text inputs are (batch, sequence)."""
    if len(shape) == 2:
        return (1, 1), shape, (MAX_BATCH, MAX_SEQ)
    return (1,) + shape[1:], shape, (MAX_BATCH,) + shape[1:]


def trtexec_command(onnx_path: str, shapes: Dict[str, Tuple[int, ...]], engine_path: str = "model.plan") -> str:
    """The ``trtexec`` command line that builds an fp16 engine with a dynamic-shape profile.

    Args:
        onnx_path: the ONNX file.
        shapes: per input, the optimal (representative) shape.
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


def build_engine(onnx_path: Path, shapes: Dict[str, Tuple[int, ...]], engine_path: Path, fp16: bool = True) -> Path:
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


def prepare_tensorrt(out_dir: Path, onnx_files: Sequence[str], shapes: Dict[str, Tuple[int, ...]]) -> List[str]:
    """Check the exported graph(s) for TensorRT and build the engine where possible.

    Args:
        out_dir: the (staging) export directory.
        onnx_files: ONNX files in it (relative).
        shapes: representative input shapes (see ``hf_lnorm.export.input_spec_for_trt``).
    Returns:
        Lines for the user: the check result, then the engine path or why none was built
        and the ``trtexec`` command.
    Raises:
        ValueError: a graph has non-standard ops or an opset below 17 (names them).
    """
    from . import standard_op_problems

    lines = []
    for name in onnx_files:
        problems = standard_op_problems(out_dir / name)
        if problems:
            raise ValueError(f"{name} is not TensorRT-ready: {'; '.join(problems)}")
    lines.append(f"TensorRT check: {', '.join(onnx_files)} use standard ONNX ops only (opset >= 17)")
    reason = tensorrt_unavailable_reason()
    for name in onnx_files:
        engine = Path(name).with_suffix(".plan")
        if reason:
            lines.append(f"TensorRT engine not built: {reason}. Build it on a GPU machine with:")
            lines.append("  " + trtexec_command(name, shapes, str(engine)))
        else:
            build_engine(out_dir / name, shapes, out_dir / engine)
            lines.append(f"TensorRT engine built: {engine}")
    return lines
