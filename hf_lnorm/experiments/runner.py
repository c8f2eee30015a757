"""The experiment harness: ``hf-lnorm experiment NAME [--seeds N] [--quick] [--output DIR]``.

Each experiment is a module of this package named in ``EXPERIMENTS``. It defines

* ``NAME`` and ``DESCRIPTION`` (one line, shown by ``--list``), ``DEFAULT_SEEDS``;
* ``run(seeds, quick, log) -> dict`` with the keys ``settings`` (what was run), ``per_seed``
  (one record per model and seed: the curves or values measured) and ``summary`` (what the
  seeds say together);
* ``plot(result, path)``, which draws the result JSON into a PNG (it may raise ``ImportError``
  when matplotlib is missing);
* ``render_docs(result) -> str``, the Markdown page of the user's guide for a result JSON.

The harness writes ``NAME.json`` (the experiment's result plus ``provenance``) and ``NAME.png``
into a staged output folder (``hf_lnorm.outputs``), so a failed run leaves nothing behind and an
earlier output is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

from .._argtypes import positive_int
from .._json import write_json
from .._machine import provenance
from ..errors import UsageError
from ..outputs import OutputExistsError, check_output_dir, staged_output_dir

__all__ = ["EXPERIMENTS", "names", "load", "run_experiment", "add_arguments", "run"]

logger = logging.getLogger(__name__)

# name -> module. Add a module here to make it an experiment.
EXPERIMENTS: Dict[str, str] = {
    "grad_norms_init": "hf_lnorm.experiments.grad_norms_init",
    "warmup": "hf_lnorm.experiments.warmup",
    "fusion_norm": "hf_lnorm.experiments.fusion_norm",
    "critic_norm_rl": "hf_lnorm.experiments.critic_norm_rl",
    "norm_choice": "hf_lnorm.experiments.norm_choice",
    "depth": "hf_lnorm.experiments.depth",
}


def names() -> List[str]:
    """The accepted experiment names, sorted.

    Returns:
        The keys of ``EXPERIMENTS``.

    Examples:
        >>> from hf_lnorm.experiments import names
        >>> "grad_norms_init" in names()
        True
    """
    return sorted(EXPERIMENTS)


def load(name: str) -> ModuleType:
    """Import the module of experiment ``name``.

    Args:
        name: one of ``names()``.

    Returns:
        The experiment's module (``NAME``, ``DESCRIPTION``, ``DEFAULT_SEEDS``, ``run``, ``plot``, ``render_docs``).

    Raises:
        UsageError: ``name`` is not an experiment; the message lists the accepted names.

    Examples:
        >>> from hf_lnorm.experiments import load
        >>> load("grad_norms_init").NAME
        'grad_norms_init'
    """
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; accepted: {', '.join(names())}")
    return importlib.import_module(EXPERIMENTS[name])


def run_experiment(name: str, output: "os.PathLike[str] | str", seeds: Optional[int] = None, quick: bool = False,
                   overwrite: bool = False, plot: bool = True) -> Path:
    """Run experiment ``name`` and write ``NAME.json`` (and ``NAME.png``) into the folder ``output``.

    Args:
        name: one of ``names()``.
        output: the output folder; refused when it exists and was not written by hf-lnorm.
        seeds: how many seeds (0, 1, ...); default: the experiment's ``DEFAULT_SEEDS``, 1 with ``quick``.
        quick: the small version (about a minute on a laptop CPU) used to check that everything runs.
        overwrite: replace an earlier hf-lnorm output in ``output``.
        plot: draw ``NAME.png``; without matplotlib the plot is skipped with one warning.

    Returns:
        The path of the JSON written.

    Raises:
        UsageError: unknown ``name``, or ``output`` may not be written (it exists without ``--overwrite``,
            or is not an hf-lnorm output).
    """
    module = load(name)
    count = seeds if seeds is not None else (1 if quick else module.DEFAULT_SEEDS)
    if count < 1:
        raise UsageError(f"seeds={count} must be at least 1")
    writer = f"hf-lnorm experiment {name}"
    try:
        check_output_dir(output, overwrite)  # refused before any work, not after it
    except OutputExistsError as exc:  # UnsafeOutputError included
        raise UsageError(str(exc)) from None
    with staged_output_dir(output, overwrite=overwrite, writer=writer) as folder:
        started = time.perf_counter()
        result = module.run(seeds=count, quick=quick, log=logger.info)
        report = {"experiment": name, "description": module.DESCRIPTION, "seeds": count, "quick": quick,
                  **result, "wall_s": round(time.perf_counter() - started, 1), "provenance": provenance()}
        write_json(str(folder / f"{name}.json"), report)
        if plot:
            try:
                module.plot(report, folder / f"{name}.png")
            except ImportError as exc:
                logger.warning("hf-lnorm experiment: the plot was skipped (%s; pip install 'hf-lnorm[onnx]' "
                               "installs matplotlib); the JSON is written", exc)
    return Path(output) / f"{name}.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``hf-lnorm experiment``."""
    parser.add_argument("name", nargs="?", help=f"the experiment to run (accepted: {', '.join(names())})")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="number of seeds (default: the experiment's own, 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a small version that runs in about a minute on a CPU")
    parser.add_argument("--output", default=None, help="output folder (default: experiments-out/NAME)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier hf-lnorm output folder")
    parser.add_argument("--no-plot", action="store_true", help="write the JSON only")
    parser.add_argument("--render-docs", metavar="RESULT_JSON", default=None,
                        help="print the user's-guide page rendered from a result JSON of NAME, and exit")


def run(args: argparse.Namespace) -> int:
    """Run ``hf-lnorm experiment``; usage errors raise ``UsageError`` (exit 2)."""
    if args.list:
        for name in names():
            print(f"{name}: {load(name).DESCRIPTION}")
        return 0
    if args.name is None:
        raise UsageError(f"name an experiment (accepted: {', '.join(names())}) or pass --list")
    module = load(args.name)
    if args.render_docs is not None:
        try:
            with open(args.render_docs, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--render-docs {args.render_docs!r} is not a readable result JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("experiment") != args.name:
            found = data.get("experiment") if isinstance(data, dict) else None
            raise UsageError(f"--render-docs {args.render_docs!r} holds experiment {found!r}, not {args.name!r}")
        print(module.render_docs(data), end="")
        return 0
    output = args.output if args.output is not None else os.path.join("experiments-out", args.name)
    path = run_experiment(args.name, output, seeds=args.seeds, quick=args.quick, overwrite=args.overwrite,
                          plot=not args.no_plot)
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    for line in module.summary_lines(report):
        print(line)
    print(f"wrote {path}" + (f" and {path.with_suffix('.png')}" if path.with_suffix(".png").is_file() else ""))
    return 0
