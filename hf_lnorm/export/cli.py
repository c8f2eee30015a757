"""``hf-lnorm export MODEL OUT``: ONNX export of a (patched) Hugging Face model or an hf_lnorm family.

    hf-lnorm export path/to/bert out/ --task question-answering
    hf-lnorm export path/to/bert out/ --target tensorrt --overwrite
    hf-lnorm export path/to/bert out/ --target openvino
    hf-lnorm export path/to/lnorm-seq2seq out/ --task text2text-generation-with-past --target tensorrt

On transformers 4.57 with optimum-onnx the export goes through Optimum's
exporter; on transformers 5.x through ``torch.onnx.export`` (dynamo). The
command prints which path it took, the op types of the graph and the largest
difference between ONNX Runtime and PyTorch on fresh inputs. An encoder-decoder
model (``lnorm-seq2seq``) writes ``encoder_model.onnx``, ``decoder_model.onnx`` and
``decoder_with_past_model.onnx``; ``--target tensorrt`` checks each of them and
prints one ``trtexec`` command per graph where no engine can be built here.
``--target openvino`` converts the ONNX file to OpenVINO IR (``openvino_model.xml``
and ``.bin``, float32 weights) in the same folder, the layout Optimum Intel's
``OVModelFor*`` classes load, and prints OpenVINO's largest difference from PyTorch.
"""

from __future__ import annotations

import argparse

from .._argtypes import int_at_least
from .onnx import DEFAULT_OPSET, TARGETS, TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hf-lnorm export``."""
    parser.add_argument("model", help="model directory or Hugging Face Hub id")
    parser.add_argument("output", help="output directory (must not exist unless --overwrite)")
    parser.add_argument("--task", choices=list(TASKS), default=None, help="export task (default: from the model's architecture)")
    parser.add_argument("--opset", type=int_at_least(17), default=DEFAULT_OPSET,
                        help=f"ONNX opset, >= 17 (LayerNormalization) (default: {DEFAULT_OPSET})")
    parser.add_argument("--target", choices=TARGETS, default="onnx",
                        help="onnx (default), tensorrt (standard ops only; engine where possible) or openvino "
                             "(OpenVINO IR openvino_model.xml/.bin beside the ONNX file, checked in f32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier hf-lnorm output there (never a folder hf-lnorm did not write)")
    parser.add_argument("--no-patch", action="store_true", help="export the model as loaded, without hf_lnorm.patch")
    parser.add_argument("--method", choices=("optimum", "torch.onnx-dynamo"), default=None, help="force an export path (default: Optimum when installed)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow remote code when loading the model")


def run(args) -> int:
    """Run the export and print a summary; usage errors raise ``UsageError`` (exit 2)."""
    from ..errors import UsageError
    from ..errors import UnsupportedArchitectureError
    from ..loading import ModelNotFoundError
    from ..outputs import OutputExistsError
    from .onnx import export

    try:
        result = export(
            args.model,
            args.output,
            task=args.task,
            opset=args.opset,
            target=args.target,
            overwrite=args.overwrite,
            method=args.method,
            patch=not args.no_patch,
            trust_remote_code=args.trust_remote_code,
        )
    except (ModelNotFoundError, OutputExistsError, UnsupportedArchitectureError, NotADirectoryError) as exc:
        raise UsageError(str(exc)) from None
    for note in result.notes:
        print(note)
    for name in result.onnx_files:
        ops = result.op_types[name]
        listing = ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))
        print(f"{name}: opset {result.opset}; ops: {listing}")
    if result.max_abs_err is not None:
        print(f"ONNX Runtime vs PyTorch (fp32, fresh inputs): max |err| {result.max_abs_err:.2e}")
    print(f"wrote {result.output_dir}")
    return 0
