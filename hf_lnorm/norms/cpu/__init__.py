"""CPU kernels for residual add + LayerNorm / RMSNorm (float32 inference).

``add_norm.cpp`` holds one op, ``torch.ops.hf_lnorm_cpu.add_norm``, that adds
the residual, computes the row statistics and normalizes in one pass over
memory per row, writes large outputs with streaming stores, and takes its
output blocks from a bounded cache of freed blocks (PyTorch's CPU allocator
hands large blocks back to the OS, and re-faulting fresh pages costs more than
the arithmetic). ``hf_lnorm.norms.ops`` uses it for float32 CPU tensors in
inference; everything else stays on the aten path.

The op is compiled on first use with ``torch.utils.cpp_extension`` (a C++
compiler and ninja; 9-13 s once here, then loaded from
``TORCH_EXTENSIONS_DIR``), for the CPU it runs on (``-march=native``; the
build folder is named after torch's CPU capability). When it cannot be built,
``is_available()`` is False and the callers silently keep the aten path;
``unavailable_reason()`` says why. ``HF_LNORM_CPU_KERNELS=0`` turns it off.

Environment:
    HF_LNORM_CPU_KERNELS: ``0`` disables the kernels (aten everywhere).
    HF_LNORM_CPU_CACHE_MB: bytes of idle output blocks the cache may keep
        (default 1024; ``0`` frees every block at once).
    HF_LNORM_CPU_STREAM_MB: outputs at least this large use streaming stores
        (default 8).

Example:
    >>> import torch
    >>> from hf_lnorm.norms import cpu
    >>> if cpu.is_available():                                  # doctest: +SKIP
    ...     y, s, mean, rstd = cpu.add_norm(torch.randn(4, 8), torch.randn(4, 8), None, None, 1e-5)
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

__all__ = [
    "add_norm",
    "build",
    "cache_info",
    "empty_cache",
    "is_available",
    "set_cache_limit",
    "unavailable_reason",
]

SOURCE = Path(__file__).with_name("add_norm.cpp")
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: Dict[str, Optional[str]] = {}  # "loaded": "yes" once built, "error": why it cannot be


def _extension_name() -> str:
    cap = torch.backends.cpu.get_cpu_capability().lower()
    return f"hf_lnorm_cpu_{cap}"


def _missing_tool() -> Optional[str]:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx!r} is not on PATH)"
    if shutil.which("ninja") is None:
        venv_bin = os.path.dirname(sys.executable)
        if os.path.exists(os.path.join(venv_bin, "ninja")):
            os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
        else:
            return "ninja is not installed (pip install ninja)"
    return None


def build() -> Optional[str]:
    """Compile (or load the cached build of) the kernels; returns None, or why they cannot run."""
    if os.environ.get("HF_LNORM_CPU_KERNELS", "1") == "0":
        return "disabled by HF_LNORM_CPU_KERNELS=0"
    if "loaded" in _state:  # the per-call fast path
        return None
    with _lock:
        if "loaded" in _state:
            return None
        if "error" in _state:
            return _state["error"]
        why = _missing_tool()
        if why is None:
            try:
                from torch.utils.cpp_extension import load

                _log.info("hf_lnorm: loading the CPU norm kernels (compiled once, then cached in TORCH_EXTENSIONS_DIR)")
                load(
                    _extension_name(),
                    [str(SOURCE)],
                    extra_cflags=["-O3", "-march=native", "-fopenmp"],
                    extra_ldflags=["-fopenmp"],
                    is_python_module=False,
                    verbose=False,
                )
                torch.ops.hf_lnorm_cpu.add_norm  # noqa: B018  (raises when the library did not register)
            except Exception as exc:  # compiler error, unwritable cache folder, ...
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                why = f"the build failed: {first}"
        if why is None:
            _state["loaded"] = "yes"
        else:
            _state["error"] = why
        return why


def unavailable_reason() -> Optional[str]:
    """Why the kernels cannot run in this process (building them if needed), or None when they can."""
    return build()


def is_available() -> bool:
    """Whether the kernels run here (the first call may compile them)."""
    return build() is None


def _require() -> None:
    why = build()
    if why is not None:
        raise RuntimeError(f"hf_lnorm CPU kernels are not available: {why}")


def add_norm(
    x: Tensor,
    residual: Optional[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    rms: bool = False,
    in_place: bool = False,
) -> List[Tensor]:
    """``s = x + residual`` then LayerNorm (or Llama RMSNorm with ``rms``) of ``s``, in one pass.

    Args:
        x: float32 contiguous CPU tensor ``(..., N)``.
        residual: None, or a tensor like ``x``; with ``in_place`` the sum is written into it.
        weight, bias: None or float32 contiguous ``(N,)`` (no bias with ``rms``).
        eps: added to the variance (mean square for RMSNorm).
    Returns:
        ``[y, s, mean, rstd]``; ``s`` is ``x`` itself without residual, ``mean``
        is empty for RMSNorm; statistics are float32 shaped ``x.shape[:-1]``.
    Raises:
        RuntimeError: the kernels are not available, or an input is not float32 /
            contiguous / on the CPU (the message names it).
    """
    _require()
    return torch.ops.hf_lnorm_cpu.add_norm(x, residual, weight, bias, float(eps), bool(rms), bool(in_place))


def cache_info() -> Dict[str, int]:
    """The output-block cache: ``idle_bytes``, ``limit_bytes``, ``hits``, ``misses``."""
    _require()
    idle, limit, hits, misses = torch.ops.hf_lnorm_cpu.cache_info()
    return {"idle_bytes": idle, "limit_bytes": limit, "hits": hits, "misses": misses}


def empty_cache() -> int:
    """Free every idle output block; returns the bytes freed (0 when the kernels are not loaded)."""
    if "loaded" not in _state:
        return 0
    return int(torch.ops.hf_lnorm_cpu.empty_cache())


def set_cache_limit(limit_bytes: int) -> int:
    """Set the bytes of idle blocks the cache may keep (0 disables it); returns the previous limit.

    Raises:
        ValueError: ``limit_bytes`` is negative or not an int.
    """
    if not isinstance(limit_bytes, int) or isinstance(limit_bytes, bool) or limit_bytes < 0:
        raise ValueError(f"limit_bytes must be an int >= 0, got {limit_bytes!r}")
    _require()
    return int(torch.ops.hf_lnorm_cpu.set_cache_limit(limit_bytes))
