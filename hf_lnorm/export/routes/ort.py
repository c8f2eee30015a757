"""ONNX Runtime routes of ``hf-lnorm optimize``: the fused fp32 graph and its int8 variants.

    ort-fp32             ORT's transformer fusions (the job's shared ``ctx.fused_onnx``)
    ort-int8             ORT's dynamic int8 of the fused graph
    ort-int8-smooth      SmoothQuant on the fused graph, then dynamic int8; alpha chosen on the calibration data
    ort-int8-per-token   hf_lnorm's per-token int8 (one activation scale per row)
    ort-int8-static      ORT's static QDQ int8 of the plain export, calibrated (MinMax, per-channel weights)
    ort-int8-trimmed, ort-int8-smooth-trimmed, ort-int8-per-token-trimmed
                         the three dynamic int8 graphs, each skipping the batch's trailing padding in the graph
                         (``trim_padding_onnx``; trimming is checked on the fp32 graph, and the build fails where
                         it changes the outputs at real tokens)

Each deploys ``model.onnx`` and ``config.json``: the folder loads with ``onnxruntime.InferenceSession`` and with
Optimum's ``ORTModelFor<Task>.from_pretrained`` (optimum-onnx). Timed sessions run with intra-op spinning off
(``hf_lnorm.export.ort.session(..., spinning=False)``) so that one runtime's idle workers do not take the cores
from the next.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .base import Built, Feed, Outputs, Route, RouteContext, Runner

__all__ = ["ROUTES", "SMOOTH_ALPHAS", "ort_runner", "quiet_ort_quantizer"]

SMOOTH_ALPHAS = (0.5, 0.75, 0.9)
_REQUIRES = ("onnxruntime", "onnx")
_HINT = 'pip install "hf-lnorm[onnx]"'


def ort_runner(path: Path, output_names: Sequence[str], threads: int) -> Runner:
    """A runner over an ONNX file: a CPU session with ``threads`` intra-op threads and spinning off."""
    from ..ort import feed_for, session

    sess = session(path, threads or None, spinning=False)
    names = [o.name for o in sess.get_outputs()]
    missing = [n for n in output_names if n not in names]
    if missing:
        raise ValueError(f"{Path(path).name} has no output {missing} (its outputs: {names})")
    index = [names.index(n) for n in output_names]

    def run(feed: Feed) -> Outputs:
        outs = sess.run(None, feed_for(sess, feed))
        return tuple(outs[i] for i in index)

    return run


class _OrtQuantizerAdvice(logging.Filter):
    """Drops the records below ERROR that come from ORT's quantizer modules."""

    def filter(self, record: logging.LogRecord) -> bool:
        quantizer = record.name.startswith(_ORT_QUANTIZER) or _ORT_QUANTIZER_DIR in record.pathname
        return record.levelno >= logging.ERROR or not quantizer


_ORT_QUANTIZER = "onnxruntime.quantization"
_ORT_QUANTIZER_DIR = os.path.join("onnxruntime", "quantization") + os.sep


class quiet_ort_quantizer:
    """Keep the job's progress bar clean of ORT's quantizer advice.

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


def _deploy_graph(ctx: RouteContext, graph: Path) -> Callable[[Path], None]:
    def deploy(path: Path) -> None:
        import onnx

        path.mkdir(parents=True, exist_ok=True)
        onnx.save(onnx.load(str(graph)), str(path / "model.onnx"))  # external data, if any, read in and saved inline
        ctx.model.config.save_pretrained(path)

    return deploy


_LOAD_HINT = 'onnxruntime.InferenceSession(PATH + "/model.onnx")'


def _built(ctx: RouteContext, graph: Path, notes: List[str], info: Optional[Dict] = None, int8: bool = True) -> Built:
    info = dict(info or {}, graph_bytes=graph.stat().st_size)
    if int8:
        from ..ort import weight_qmax

        info["weight_bits"] = 8 if weight_qmax() == 127 else 7
        if info["weight_bits"] == 7:
            notes = [notes[0] + "; 7-bit weights: ONNX Runtime's int8 kernels on this CPU (no VNNI) saturate "
                     "full-range ones", *notes[1:]]
    return Built(ort_runner(graph, ctx.output_names, ctx.threads), _deploy_graph(ctx, graph), _LOAD_HINT,
                 notes=notes, info=info)


def _fused(ctx: RouteContext) -> Path:
    if ctx.fused_onnx is None:
        raise ValueError("this route needs the job's fused ONNX graph (ctx.fused_onnx), which was not built")
    return Path(ctx.fused_onnx)


def _build_fp32(ctx: RouteContext) -> Built:
    return _built(ctx, _fused(ctx), ["ORT's transformer fusions, fp32"], int8=False)


def _build_int8(ctx: RouteContext) -> Built:
    from ..ort import quantize_dynamic_int8

    with quiet_ort_quantizer():
        path = quantize_dynamic_int8(_fused(ctx), ctx.workdir / "model.onnx")
    return _built(ctx, path, ["ORT dynamic int8 of the fused graph (int8 weights, per-tensor activation scales per run)"])


def _mean_abs_error(got: Outputs, ref: Outputs, mask: np.ndarray) -> float:
    errors = []
    for g, r in zip(got, ref):
        diff = np.abs(g - r)
        errors.append(diff[mask].mean() if diff.shape[:2] == mask.shape else diff.mean())
    return float(np.mean(errors))


def _run_all(run: Runner, feeds: Sequence[Feed]) -> Outputs:
    outs = [run(f) for f in feeds]
    return tuple(np.concatenate(parts) for parts in zip(*outs))


def _build_smooth(ctx: RouteContext) -> Built:
    """SmoothQuant, then dynamic int8. Without ``ctx.extra["smooth_alpha"]`` each of ``SMOOTH_ALPHAS`` is tried and
    the one whose int8 outputs are closest to the fp32 graph's on the calibration data (mean absolute error over
    real tokens) wins; the evaluation data is never used to choose. The search runs once per job: a later smooth
    route (``ort-int8-smooth-trimmed``) rebuilds the graph at the alpha chosen, with the same figures."""
    from ..ort import activation_ranges, quantize_dynamic_int8, smooth_onnx

    fused = _fused(ctx)
    if not ctx.calibration:
        raise ValueError("ort-int8-smooth needs calibration data (ctx.calibration is empty)")
    given = ctx.extra.get("smooth_alpha")
    key = ("ort.smooth-alpha", str(fused))
    if given is None and key in ctx.shared:  # chosen by an earlier route of this job (ort-int8-smooth-trimmed)
        return _smooth_with(ctx, fused, *ctx.shared[key])
    mask = np.concatenate([f["attention_mask"] for f in ctx.calibration]).astype(bool)
    ranges = activation_ranges(fused, ctx.calibration)  # the same for every alpha
    ref = _run_all(ort_runner(fused, ctx.output_names, ctx.threads), ctx.calibration)
    tried: List[Tuple[float, float]] = []
    best: Optional[Tuple[float, float, Path]] = None
    count = 0
    for i, alpha in enumerate(SMOOTH_ALPHAS if given is None else (given,)):
        smoothed = ctx.workdir / f"smooth_{i}.onnx"
        count = smooth_onnx(fused, smoothed, alpha=alpha, ranges=ranges)
        with quiet_ort_quantizer():
            int8 = quantize_dynamic_int8(smoothed, ctx.workdir / f"smooth_{i}_int8.onnx")
        smoothed.unlink()
        err = _mean_abs_error(_run_all(ort_runner(int8, ctx.output_names, ctx.threads), ctx.calibration), ref, mask)
        tried.append((alpha, err))
        if best is None or err < best[1]:
            if best is not None:
                best[2].unlink()
            best = (alpha, err, int8)
        else:
            int8.unlink()
    final = best[2].replace(ctx.workdir / "model.onnx")
    if given is None:
        ctx.shared[key] = (best[0], tried)
    return _smooth_built(ctx, final, best[0], tried, count, given=given is not None)


def _smooth_with(ctx: RouteContext, fused: Path, alpha: float, tried: List[Tuple[float, float]]) -> Built:
    """``ort-int8-smooth``'s graph at an alpha this job has already chosen: one SmoothQuant pass and one int8."""
    from ..ort import quantize_dynamic_int8, smooth_onnx

    smoothed = ctx.workdir / "smooth.onnx"
    count = smooth_onnx(fused, smoothed, ctx.calibration, alpha=alpha)
    with quiet_ort_quantizer():
        final = quantize_dynamic_int8(smoothed, ctx.workdir / "model.onnx")
    smoothed.unlink()
    return _smooth_built(ctx, final, alpha, tried, count)


def _smooth_built(ctx: RouteContext, graph: Path, alpha: float, tried: List[Tuple[float, float]], count: int,
                  given: bool = False) -> Built:
    how = "given" if given else "chosen on the calibration data by mean |output error| against fp32: " + ", ".join(
        f"{a} -> {e:.3f}" for a, e in tried)
    note = f"SmoothQuant before dynamic int8: alpha {alpha} ({how}); {count} MatMul/Attention inputs smoothed"
    return _built(ctx, graph, [note], {"alpha": alpha, "alphas_tried": [{"alpha": a, "error": e} for a, e in tried]})


def _build_per_token(ctx: RouteContext) -> Built:
    from ..ort import quantize_per_token_int8

    with quiet_ort_quantizer():
        counts = quantize_per_token_int8(_fused(ctx), ctx.workdir / "model.onnx", attention="per-token")
    note = "per-token int8 (hf_lnorm): " + ", ".join(f"{k} {v}" for k, v in counts.items())
    return _built(ctx, ctx.workdir / "model.onnx", [note], {"counts": dict(counts)})


def _build_static(ctx: RouteContext) -> Built:
    from ..ort import quantize_static_int8

    if ctx.onnx_path is None:
        raise ValueError("ort-int8-static needs the job's plain ONNX export (ctx.onnx_path), which was not built")
    if not ctx.calibration:
        raise ValueError("ort-int8-static needs calibration data (ctx.calibration is empty)")
    with quiet_ort_quantizer():
        path = quantize_static_int8(ctx.onnx_path, ctx.workdir / "model.onnx", list(ctx.calibration))
    rows = sum(next(iter(f.values())).shape[0] for f in ctx.calibration)
    seq = next(iter(ctx.calibration[0].values())).shape[1]
    return _built(ctx, path, [f"static int8 (QDQ, per-channel weights, MinMax) calibrated on {rows} inputs at seq {seq}"])


def _trim_checked(ctx: RouteContext) -> float:
    """Max |trimmed - full| of the fp32 fused graph on ``trim_check_feeds`` (once per job); raises when trimming
    changes the outputs at real tokens beyond ``TRIM_TOLERANCE``."""
    from ..ort import trim_padding_onnx
    from ..tasks import get_task
    from ..trimming import accept_trim_error, real_token_error, trim_check_feeds

    fused = _fused(ctx)
    key = ("ort.trim-check", str(fused))
    if key not in ctx.shared:
        feeds = trim_check_feeds(ctx.calibration)
        trimmed_fp32 = trim_padding_onnx(fused, ctx.workdir / "trimmed_fp32.onnx", get_task(ctx.task).seq_outputs)
        full, trimmed = (ort_runner(p, ctx.output_names, ctx.threads) for p in (fused, trimmed_fp32))
        ctx.shared[key] = max(real_token_error(full(f), trimmed(f), f["attention_mask"]) for f in feeds)
        trimmed_fp32.unlink()
    return accept_trim_error(ctx.shared[key])


def _trimmed(build: Callable[[RouteContext], Built], scales: str) -> Callable[[RouteContext], Built]:
    """A route that builds ``build``'s int8 graph and wraps it in ``trim_padding_onnx``.

    Trimming is checked on the fp32 fused graph first (``_trim_checked``). ``scales`` says what trimming does to
    the int8 graph's activation scales, for the report note."""

    def build_trimmed(ctx: RouteContext) -> Built:
        from ..ort import trim_padding_onnx
        from ..tasks import get_task
        from ..trimming import trim_note

        err = _trim_checked(ctx)
        base = build(ctx)
        graph = ctx.workdir / "model.onnx"
        trim_padding_onnx(graph, graph, get_task(ctx.task).seq_outputs)
        notes = [f"{base.notes[0]}; {trim_note(err, 'fp32 graph')}; {scales}", *base.notes[1:]]
        return _built(ctx, graph, notes, {**base.info, "trim_padding": True, "trim_error": err}, int8=False)

    build_trimmed.__doc__ = f"``{build.__name__}``, then ``trim_padding_onnx`` around its graph."
    return build_trimmed


_PER_RUN_SCALES = ("its activation scales, computed per run, see only the real part of the batch: the outputs are "
                   "those of the untrimmed graph on the batch cut to its longest row")
_PER_ROW_SCALES = "one activation scale per row, so trimming leaves the outputs at real tokens as they were"


def _route(name: str, description: str, build, fused: bool = True) -> Route:
    return Route(name, "onnxruntime", description, build, requires=_REQUIRES, install_hint=_HINT,
                 needs_onnx=True, needs_fused_onnx=fused)


ROUTES: List[Route] = [
    _route("ort-fp32", "ONNX Runtime, ORT-fused fp32 graph", _build_fp32),
    _route("ort-int8", "ONNX Runtime dynamic int8 of the fused graph", _build_int8),
    _route("ort-int8-smooth", "SmoothQuant, then ONNX Runtime dynamic int8", _build_smooth),
    _route("ort-int8-per-token", "hf_lnorm's per-token int8 of the fused graph", _build_per_token),
    _route("ort-int8-static", "ONNX Runtime static QDQ int8 of the plain export, calibrated", _build_static, fused=False),
    _route("ort-int8-trimmed", "ORT dynamic int8 of the fused graph, trailing padding skipped in the graph (hf_lnorm)",
           _trimmed(_build_int8, _PER_RUN_SCALES)),
    _route("ort-int8-smooth-trimmed", "SmoothQuant, then ORT dynamic int8, trailing padding skipped in the graph "
           "(hf_lnorm)", _trimmed(_build_smooth, _PER_RUN_SCALES)),
    _route("ort-int8-per-token-trimmed", "hf_lnorm's per-token int8 of the fused graph, trailing padding skipped in "
           "the graph", _trimmed(_build_per_token, _PER_ROW_SCALES)),
]
