"""Which norm backend ran: the profiler's events for the C++ CPU kernel and for the aten norm ops.

On float32 CPU inference (``torch.no_grad()`` / ``torch.inference_mode()``) the
default backend is the C++ kernel ``torch.ops.hf_lnorm_cpu.add_norm``; with
gradients recorded, under ``HF_LNORM_CPU_KERNELS=0``, or for a norm variant the
kernel does not compute, the aten ops run. The tests read the path from
``torch.profiler`` events, so nothing in the model or the package is changed to
observe it.
"""

import collections
import os
from typing import Any, Callable, Counter, Dict, Tuple

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from hf_lnorm.norms import cpu
from hf_lnorm.norms.reference import LAYER_NORM_CHANNELS_FIRST, RMS_NORM_GEMMA

CPP_EVENT = "hf_lnorm_cpu::add_norm"
ATEN_EVENTS = ("aten::layer_norm", "aten::native_layer_norm", "aten::rms_norm", "aten::_fused_rms_norm")
# forward norm ops only (exact names: "aten::native_layer_norm_backward" is not a norm call);
# hf_lnorm::norm_fwd is the custom op of the traced / compiled path
_NORM_EVENTS = frozenset((CPP_EVENT, "hf_lnorm::norm_fwd") + ATEN_EVENTS)
# variants whose float32 math the C++ kernel does not compute: these stay on aten in inference too
CPP_UNCOVERED_VARIANTS = (LAYER_NORM_CHANNELS_FIRST, RMS_NORM_GEMMA)
INFERENCE_MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def norm_calls(fn: Callable[[], Any]) -> Tuple[Any, Counter]:
    """Run ``fn()`` under the CPU profiler and count its outermost norm events by name.

    Returns:
        ``(fn's result, Counter)``; an event nested in another norm event (``aten::native_layer_norm``
        inside ``aten::layer_norm``) is not counted, so each norm call counts once.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    counts = collections.Counter()
    for event in prof.events():
        if event.name not in _NORM_EVENTS:
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name not in _NORM_EVENTS:
            parent = parent.cpu_parent
        if parent is None:
            counts[event.name] += 1
    return result, counts


def expected_cpu_backend() -> str:
    """``"cpp"``, or ``"aten"`` where ``HF_LNORM_CPU_KERNELS=0`` is set explicitly.

    Fails the test (never skips it) when the C++ kernels should run but cannot be built here.
    """
    if os.environ.get("HF_LNORM_CPU_KERNELS", "1") == "0":
        return "aten"
    why = cpu.unavailable_reason()
    if why is not None:
        pytest.fail(f"the default CPU backend (the C++ kernels) cannot run here: {why}. "
                    "Install a C++ compiler and ninja, or set HF_LNORM_CPU_KERNELS=0 to test the aten path explicitly")
    return "cpp"


def assert_aten_only(counts: Counter, where: str = "") -> int:
    """Assert no C++ kernel call and at least one aten norm call; returns the number of norm calls."""
    assert counts.get(CPP_EVENT, 0) == 0, f"{where}: the C++ kernel ran where aten must: {dict(counts)}"
    total = sum(counts.values())
    assert total > 0, f"{where}: no norm op ran at all: {dict(counts)}"
    return total


def assert_inference_backend(counts: Counter, n_calls: int, n_covered: int, n_uncovered: int = 0,
                             where: str = "") -> None:
    """Assert which backend ran the norms of a float32 CPU inference forward.

    Args:
        counts: ``norm_calls`` of the inference forward.
        n_calls: the norm calls that forward makes (``assert_aten_only`` of the same forward with gradients).
        n_covered, n_uncovered: patched norm modules whose variant the C++ kernel computes / does not.
    """
    total = sum(counts.values())
    assert total == n_calls, f"{where}: {total} norm calls in inference, {n_calls} with gradients: {dict(counts)}"
    cpp, aten = counts.get(CPP_EVENT, 0), sum(counts.get(name, 0) for name in ATEN_EVENTS)
    if expected_cpu_backend() == "aten":
        assert cpp == 0 and aten == n_calls, f"{where}: HF_LNORM_CPU_KERNELS=0 but not all aten: {dict(counts)}"
        return
    assert cpp + aten == n_calls, f"{where}: norm ops other than the C++ kernel and aten ran: {dict(counts)}"
    assert cpp >= n_covered, f"{where}: {n_covered} norms the C++ kernel covers, {cpp} kernel calls: {dict(counts)}"
    if n_uncovered:
        assert aten >= n_uncovered, f"{where}: {n_uncovered} norms must stay on aten: {dict(counts)}"
    else:
        assert aten == 0, f"{where}: aten norms ran where the C++ kernel covers every norm: {dict(counts)}"


def check_default_backend(forward: Callable[[], torch.Tensor], n_covered: int, n_uncovered: int = 0,
                          where: str = "") -> Dict[str, torch.Tensor]:
    """Run a float32 CPU ``forward`` with gradients, under ``no_grad`` and under ``inference_mode``, and
    assert which norm backend each run took (aten with gradients; the default CPU backend in inference).

    Args:
        forward: a no-argument call returning one tensor.
        n_covered, n_uncovered: norm modules whose variant the C++ kernel computes / does not.
        where: names the case in failure messages.
    Returns:
        The detached outputs keyed ``"enable_grad"``, ``"no_grad"``, ``"inference_mode"``.
    """
    with torch.enable_grad():
        out, calls = norm_calls(forward)
    n_calls = assert_aten_only(calls, f"{where} with gradients")
    outputs = {"enable_grad": out.detach()}
    for mode, context in INFERENCE_MODES.items():
        with context():
            outputs[mode], calls = norm_calls(forward)
        assert_inference_backend(calls, n_calls, n_covered, n_uncovered, where=f"{where} {mode}")
    return outputs
