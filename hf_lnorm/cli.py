"""The ``hf-lnorm`` command.

Subcommands live next to the code they drive; each module named in
``COMMANDS`` defines ``add_arguments(parser)`` and ``run(args) -> int``.
Usage errors exit 2, failures exit 1 with one clear line on stderr.

    hf-lnorm patch MODEL            list the norms of a model, patch them, check outputs
    hf-lnorm bench norms|quantized|generate|compile   benchmarks (table on stdout, --json)
    hf-lnorm export MODEL OUT       Optimum ONNX / torch.onnx export
    hf-lnorm optimize [MODEL]       the main job: patch, export, optimize, quantize, report
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from .errors import UsageError  # noqa: F401  (hf_lnorm.cli.UsageError is the documented name)

# name -> (module, help). Nested dicts are subcommand groups.
COMMANDS = {
    "patch": ("hf_lnorm.commands.patch", "Find, classify and patch the norm layers of a model; check outputs."),
    "bench": {
        "norms": ("hf_lnorm.benchmarks.norms", "Norm kernels against torch eager and a naive mean/var module."),
        "quantized": ("hf_lnorm.benchmarks.quantized", "Int8 norm + GEMM against fp32 and torch/torchao int8."),
        "generate": ("hf_lnorm.benchmarks.generate", "LNormGPT generate() tokens/s against GPT-2 of the same size."),
        "compile": ("hf_lnorm.benchmarks.compile", "Patched vs stock models, eager and under torch.compile."),
    },
    "export": ("hf_lnorm.export.cli", "Export a model to ONNX (Optimum, or torch.onnx on transformers 5.x)."),
    "optimize": ("hf_lnorm.export.optimize", "The main job: patch, export, optimize, quantize, evaluate, report."),
    "build-kernels": ("hf_lnorm.commands.build_kernels", "Compile the C++ CPU norm kernels now (else on first use)."),
    "experiment": ("hf_lnorm.experiments.runner", "Reproduce a published LayerNorm finding; write its JSON and plot."),
}


def _add(subparsers, name: str, spec) -> None:
    if isinstance(spec, dict):
        group = subparsers.add_parser(name, help=f"{name} subcommands", description=f"hf-lnorm {name} subcommands")
        inner = group.add_subparsers(dest=f"{name}_command", metavar="{" + ",".join(spec) + "}")
        inner.required = True
        for sub, subspec in spec.items():
            _add(inner, sub, subspec)
        return
    module_name, help_text = spec
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        parser.set_defaults(_unavailable=f"'{name}' is unavailable: {exc}")
        return
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-lnorm",
        description="LayerNorm done right across the Hugging Face stack.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    sub.required = True
    for name, spec in COMMANDS.items():
        _add(sub, name, spec)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 after printing a usage error, 0 after --help
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if getattr(args, "_unavailable", None):
        print(f"hf-lnorm: error: {args._unavailable}", file=sys.stderr)
        return 1
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"hf-lnorm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-lnorm: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # one clear line, not a traceback
        if args.verbose:
            raise
        print(f"hf-lnorm: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    # re-import so that exception classes are the ones subcommands raise
    from hf_lnorm.cli import main as _main

    sys.exit(_main())
