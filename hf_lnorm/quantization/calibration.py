"""``calibrate`` and ``smooth``: activation ranges, static scales and SmoothQuant for quantized-patched models.

Both check their input before anything changes and restore the earlier
quantization state if a forward pass fails part-way.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, Iterable, List, Tuple

import torch
from torch import nn

from ..norms.int8 import ACT_QMAX, TINY, Int8Weight, check_alpha, fold_smoothing, smoothing_scales
from ..patching import STATE_ATTR, PatchReport
from .linear import LINEAR_ATTR, _float_weight
from .mode import _quantized_norms, _refresh_report
from .trace import _call, _eval_mode

__all__ = ["calibrate", "smooth"]

_MISSING = object()


def _batches_or_raise(batches, what: str) -> Iterable:
    """``batches`` as an iterable known to hold at least one batch (only the first is read ahead).

    Raises:
        ValueError: ``batches`` is None or empty.
        TypeError: ``batches`` is not an iterable of batches.
    """
    if batches is None:
        raise ValueError(f"{what} needs an iterable of at least one batch, got None")
    if isinstance(batches, (str, bytes, dict)):
        raise TypeError(f"{what} needs an iterable of batches, got a {type(batches).__name__} "
                        "(wrap a single batch in a list)")
    try:
        it = iter(batches)
    except TypeError:
        raise TypeError(f"{what} needs an iterable of batches, got {type(batches).__name__}") from None
    first = next(it, _MISSING)
    if first is _MISSING:
        raise ValueError(f"{what} needs at least one batch; got an empty iterable")
    return itertools.chain((first,), it)


def _save_quant_state(norms: List[Tuple[str, nn.Module]]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Copies of what calibrate / smooth change: each norm's quantization state and its readers' int8 state."""
    saved = []
    for _, m in norms:
        qs = m.__dict__[STATE_ATTR].extra
        saved.append((qs, dict(qs)))
        for layer in qs.get("layers") or []:
            st = layer.__dict__.get(LINEAR_ATTR)
            if st is not None:
                saved.append((st.__dict__, dict(st.__dict__)))
    return saved


def _restore_quant_state(saved: List[Tuple[Dict[str, Any], Dict[str, Any]]]) -> None:
    for target, copy in saved:
        target.clear()
        target.update(copy)


def _calibrate(model: nn.Module, norms: List[Tuple[str, nn.Module]], batches: Iterable, static: bool) -> None:
    states = [m.__dict__[STATE_ATTR].extra for _, m in norms]
    for qs in states:
        qs.pop("act_absmax", None)
        qs["calibrated_batches"] = 0
        qs["calibrating"] = True
    try:
        with torch.no_grad(), _eval_mode(model):
            for batch in batches:
                _call(model, batch)
    finally:
        for qs in states:
            qs["calibrating"] = False
    for qs in states:
        if static and qs.get("act_absmax") is not None:
            amax = qs["act_absmax"]
            if qs.get("inv_smooth") is not None:  # a smoothed norm quantizes y / s: its range is the scaled one
                amax = amax * qs["inv_smooth"].to(amax.device)
            qs["static_scale"] = max(float(amax.max()) / ACT_QMAX, TINY)
        else:
            qs.pop("static_scale", None)


def calibrate(model: nn.Module, batches: Iterable, static: bool = False) -> nn.Module:
    """Record per-channel activation ranges of every quantized norm over ``batches``.

    Runs the model on each batch (eval mode, no gradients; the training flags
    are restored afterwards) and keeps, per quantized norm, the largest absolute
    output of each channel. ``smooth`` uses these ranges; with ``static=True``
    the norms switch to one calibrated per-tensor scale. The report's
    ``extra["static"]`` says which scales a norm uses.

    The input is checked before anything changes, and if a forward pass fails the
    earlier ranges and static scales are restored before the error propagates.

    Args:
        model: a model patched with ``mode="quantized"``.
        batches: non-empty iterable of model inputs (dicts of keyword arguments,
            tuples of positional arguments, or tensors).
        static: afterwards quantize each norm's int8 output with one calibrated
            per-tensor scale (``max |y| / 127`` seen in calibration) instead of
            per-token scales.

    Returns:
        The same model. Ranges live in each norm's patch state (``act_absmax``).

    Raises:
        ValueError: no batches, or the model is not quantized-patched.
        TypeError: ``batches`` is not an iterable, or ``static`` is not a bool.

    Examples:
        >>> import torch, hf_lnorm
        >>> block = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 64))
        >>> block = hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(4, 32))
        >>> block = hf_lnorm.calibrate(block, [torch.randn(4, 32) for _ in range(3)], static=True)
        >>> hf_lnorm.patch_report(block)[0].extra["static"]
        True
        >>> block = hf_lnorm.unpatch(block)
    """
    norms = _quantized_norms(model, "calibrate")
    if not isinstance(static, bool):
        raise TypeError(f"static must be True or False, got {static!r}")
    batches = _batches_or_raise(batches, "calibrate")
    saved = _save_quant_state(norms)
    try:
        _calibrate(model, norms, batches, static)
    except BaseException:
        _restore_quant_state(saved)
        raise
    _refresh_report(model, model.__dict__.get("_hf_lnorm_report", PatchReport()))
    return model


def smooth(model: nn.Module, batches: Iterable, alpha: float = 0.5) -> nn.Module:
    """SmoothQuant: migrate activation outliers of each quantized norm into its consumers' weights.

    Calibrates on ``batches``, then for every norm whose int8 readers read only
    that norm computes ``s = smoothing_scales(act_absmax, weight_absmax, alpha)``
    and re-quantizes: the norm emits ``quantize(norm(x) / s)`` and each reader's
    int8 weight becomes ``quantize(W * s)`` (``fold_smoothing``). Float parameters
    are untouched, so ``state_dict`` and ``unpatch`` are unaffected. Like
    ``calibrate(..., static=False)`` it leaves the norms on per-token scales.

    A norm with a reader that also reads another norm is not smoothed; its
    report record says so in ``extra["note"]``. The input is checked before
    anything changes, and a failure part-way restores the earlier calibration and
    smoothing before the error propagates.

    Args:
        model: a model patched with ``mode="quantized"``.
        batches: non-empty iterable of model inputs (see ``calibrate``).
        alpha: migration strength in [0, 1]; 0 leaves activations alone, 1 moves
            all of their range into the weights.

    Returns:
        The same model.

    Raises:
        ValueError: ``alpha`` outside [0, 1], no batches, or model not quantized-patched.
        TypeError: ``batches`` is not an iterable, or ``alpha`` is not a number.

    Examples:
        >>> import torch, hf_lnorm
        >>> block = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 64))
        >>> block = hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(4, 32))
        >>> block = hf_lnorm.smooth(block, [torch.randn(4, 32) for _ in range(3)], alpha=0.5)
        >>> hf_lnorm.patch_report(block)[0].extra["smoothed"]
        True
        >>> block = hf_lnorm.unpatch(block)
    """
    alpha = check_alpha(alpha)
    norms = _quantized_norms(model, "smooth")
    batches = _batches_or_raise(batches, "smooth")
    saved = _save_quant_state(norms)
    try:
        for _, m in norms:  # ranges are of the unsmoothed norm output (the norm records y before dividing by s)
            m.__dict__[STATE_ATTR].extra.pop("static_scale", None)
        _calibrate(model, norms, batches, static=False)
        _apply_smoothing(norms, alpha)
    except BaseException:
        _restore_quant_state(saved)
        raise
    _refresh_report(model, model.__dict__.get("_hf_lnorm_report", PatchReport()))
    return model


def _apply_smoothing(norms: List[Tuple[str, nn.Module]], alpha: float) -> None:
    for _, m in norms:
        qs = m.__dict__[STATE_ATTR].extra
        layers = qs.get("layers") or []
        act = qs.get("act_absmax")
        if not layers or act is None:
            continue
        states = [layer.__dict__[LINEAR_ATTR] for layer in layers]
        if any(len(st.sources) != 1 for st in states):
            qs["note"] = "a reader also reads another norm: not smoothed"
            continue
        floats = [_float_weight(layer, st.transposed).detach().float() for layer, st in zip(layers, states)]
        w_absmax = torch.stack([w.abs().amax(dim=0) for w in floats]).amax(dim=0)
        s = smoothing_scales(act.to(w_absmax.device), w_absmax, alpha)
        _, _, folded = fold_smoothing(None, None, floats, s)
        for layer, st, w in zip(layers, states, folded):
            st.weight = Int8Weight.from_float(w, st.weight.kernel)
            st.smooth, st.inv_smooth = s, 1.0 / s
        qs["smooth"], qs["inv_smooth"] = s, 1.0 / s
