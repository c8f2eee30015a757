"""Skipping each batch's trailing padding inside a graph: what the OpenVINO and ONNX rewrites share.

Inputs padded to a fixed length (SQuAD-style preprocessing pads every question to 384 tokens) spend most of their
time on padding. ``hf_lnorm.export.openvino.trim_padding`` (an OpenVINO model) and
``hf_lnorm.export.ort.trim_padding_onnx`` (an ONNX file) rewrite a graph so that it reads ``attention_mask``, cuts
every ``[batch, seq]`` input after the last position that holds a real token in any row, runs the original graph,
and pads the sequence outputs back to the input length with ``PAD_FILL``. This module holds what both need: the
fill value and the check that trimming leaves a model's outputs at real tokens as they were (the outputs to pad
back are each task's ``seq_outputs``, ``hf_lnorm.export.tasks``).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import numpy as np

__all__ = ["PAD_FILL", "TRIM_TOLERANCE", "accept_trim_error", "real_token_error", "trim_check_feeds", "trim_note"]

PAD_FILL = -10000.0  # what a trimmed graph writes at the positions it skipped: a logit that never wins

TRIM_TOLERANCE = 1e-3  # max |trimmed - full| (float inference) on real tokens that a trimmed route accepts


def trim_check_feeds(calibration: Sequence[Mapping[str, np.ndarray]], batches: int = 2) -> List[Dict[str, np.ndarray]]:
    """The first ``batches`` calibration batches with the last quarter of every mask cleared, so that trimming
    happens on them.

    Raises:
        ValueError: no calibration batches.
    """
    if not calibration:
        raise ValueError("a trimmed route checks trimming on calibration batches; the job has none")
    feeds = []
    for feed in calibration[:batches]:
        mask = np.array(feed["attention_mask"], copy=True)
        mask[:, mask.shape[1] - max(1, mask.shape[1] // 4) :] = 0
        feeds.append({**feed, "attention_mask": mask})
    return feeds


def real_token_error(full: Sequence[np.ndarray], trimmed: Sequence[np.ndarray], mask: np.ndarray) -> float:
    """Max |trimmed - full| over the real tokens of ``mask`` (``[batch, seq]``); outputs without a sequence axis
    compare whole.

    Raises:
        ValueError: an output changed shape.
    """
    mask = np.asarray(mask).astype(bool)
    worst = 0.0
    for x, y in zip(full, trimmed):
        if x.shape != y.shape:
            raise ValueError(f"trimming changed an output's shape: {x.shape} -> {y.shape}")
        diff = np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
        worst = max(worst, float(diff[mask].max() if diff.shape[:2] == mask.shape else diff.max()))
    return worst


def accept_trim_error(err: float) -> float:
    """``err`` (a ``real_token_error`` of trimming on ``trim_check_feeds``) when it is within ``TRIM_TOLERANCE``.

    Raises:
        ValueError: trimming changes the outputs at real tokens: the model mixes tokens along the sequence other
            than through masked attention.
    """
    if not err <= TRIM_TOLERANCE:
        raise ValueError(f"skipping the padding changes this model's outputs at real tokens (max |diff| {err:.3g} > "
                         f"{TRIM_TOLERANCE:g}): it mixes tokens along the sequence other than through masked "
                         "attention, so the trimmed routes do not apply")
    return err


def trim_note(err: float, checked: str = "f32") -> str:
    """The report note of a trimmed route whose check measured ``err`` (``checked``: the precision it ran in)."""
    return (f"skips each batch's trailing padding in the graph, so its speed depends on how much padding the inputs "
            f"carry (none: no gain); outputs past the batch's last real token hold {PAD_FILL:g}; max |diff| from the "
            f"untrimmed model on real tokens of padded calibration batches, {checked}: {err:.2g}")
