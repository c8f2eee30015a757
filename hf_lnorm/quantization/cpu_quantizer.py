"""Per-token int8 quantization of activations on CPU in one pass: a small C++ kernel loaded with ctypes.

Quantized mode quantizes every int8 Linear's input row by row: ``s = max|y_row| / 127``,
``u8 = round(y / s) + 128`` (see ``hf_lnorm.norms.int8.quantize_activation``). The
inductor-compiled quantizer makes two passes over the activation (the row maxima of the
whole tensor, then the codes), so a wide activation such as a 3072 x 1536 FFN input is
read from memory twice, and every call pays the ``torch.compile`` guard checks. This
kernel finishes each row while it is still in the L1 cache (row maximum, then codes),
splits the rows over ``torch.get_num_threads()`` OpenMP threads, and is called through
``ctypes`` without the dispatcher. Its codes and scales are bit-identical to the eager
ops for finite inputs (IEEE division, round half to even; tested).

It is compiled on first use with the C++ compiler (``CXX`` or ``c++``; no torch headers,
well under a second) for the CPU it runs on (``-march=native``), into
``hf_lnorm.resources.cache_dir("kernels", "quant-<key>")``, where the key hashes the CPU
flags, the compiler and its version, the source and the flags
(``hf_lnorm.norms.cpu.build_key``). ``HF_LNORM_CPU_KERNELS=0`` disables it, as it disables
the CPU norm kernels. When it cannot be built the quantized mode uses the inductor-compiled
quantizer (same codes) and logs the reason once at WARNING on the ``hf_lnorm`` logger;
``unavailable_reason()`` returns it.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional, Tuple

import torch

__all__ = ["is_available", "quantize_rows_u8", "unavailable_reason"]

CFLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")

SOURCE = r"""
// Per-row symmetric int8 quantization, stored as u8 = q + 128 (see cpu_quantizer.py).
#include <cmath>
#include <cstdint>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static void quantize_row(const float* x, int64_t cols, uint8_t* out, float* scale) {
    float amax = 0.0f;
    int64_t j = 0;
#if defined(__AVX512F__)
    __m512 vmax = _mm512_setzero_ps();
    for (; j + 16 <= cols; j += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    amax = _mm512_reduce_max_ps(vmax);
#endif
    for (; j < cols; ++j) { float a = std::fabs(x[j]); amax = a > amax ? a : amax; }
    float s = amax / 127.0f;
    s = s < 1e-12f ? 1e-12f : s;  // clamp_min(TINY) of the eager ops
    *scale = s;
    j = 0;
#if defined(__AVX512F__)
    const __m512 vs = _mm512_set1_ps(s), v128 = _mm512_set1_ps(128.0f);
    for (; j + 16 <= cols; j += 16) {
        __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + j), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i*)(out + j), _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(_mm512_add_ps(q, v128))));
    }
#endif
    for (; j < cols; ++j) out[j] = (uint8_t)(std::nearbyint(x[j] / s) + 128.0f);
}

extern "C" void hf_lnorm_quantize_rows_u8(const float* x, int64_t rows, int64_t cols, uint8_t* out, float* scale,
                                          int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) quantize_row(x + r * cols, cols, out + r * cols, scale + r);
}
"""

_log = logging.getLogger("hf_lnorm")
_lock = threading.Lock()
_state: dict = {}  # "fn": the ctypes function once loaded; "error": why it cannot be


def _build_dir() -> Path:
    from ..norms.cpu import _compiler, _cpu_flags, build_key
    from ..resources import cache_dir

    compiler, version = _compiler()
    key = build_key(_cpu_flags(), platform.machine(), compiler, version, "no-torch-headers",
                    sys.implementation.cache_tag or "", hashlib.sha256(SOURCE.encode()).hexdigest(), CFLAGS)
    return cache_dir("kernels", f"quant-{key}")


def _load_or_compile():
    from ..norms.cpu import _compiler

    folder = _build_dir()
    library = folder / "hf_lnorm_quant.so"
    if not library.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        compiler = _compiler()[0]
        with tempfile.TemporaryDirectory(dir=folder) as tmp:  # staged, renamed into place
            src = Path(tmp) / "quantize_rows.cpp"
            src.write_text(SOURCE, encoding="utf-8")
            staged = Path(tmp) / library.name
            proc = subprocess.run([compiler, *CFLAGS, str(src), "-o", str(staged)], capture_output=True, text=True,
                                  timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling the quantizer failed: {(proc.stderr.strip().splitlines() or ['?'])[0]}")
            os.replace(staged, library)
        _log.info("hf_lnorm: compiled the CPU int8 quantizer into %s", folder)
    lib = ctypes.CDLL(str(library))
    fn = lib.hf_lnorm_quantize_rows_u8
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    fn.restype = None
    return fn


def _function():
    fn = _state.get("fn")
    if fn is not None or "error" in _state:
        return fn
    with _lock:
        if "fn" in _state or "error" in _state:
            return _state.get("fn")
        if os.environ.get("HF_LNORM_CPU_KERNELS", "1") == "0":
            _state["error"] = "disabled by HF_LNORM_CPU_KERNELS=0"
            return None
        try:
            fn = _load_or_compile()
            probe = torch.linspace(-3.0, 3.0, 3 * 40).view(3, 40)
            got = _run(fn, probe)
            want_scale = probe.abs().amax(-1, keepdim=True).div(127).clamp_min(1e-12)
            want = (probe / want_scale).round().add(128).to(torch.uint8)
            if not (torch.equal(got[0], want) and torch.equal(got[1], want_scale)):
                raise RuntimeError("the compiled quantizer disagrees with the eager ops")
            _state["fn"] = fn
        except Exception as exc:  # no compiler, unwritable cache, ...: the inductor quantizer stays in use
            why = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            _state["error"] = why
            _log.warning("hf_lnorm: the one-pass CPU int8 quantizer is unavailable (%s); quantized mode uses the "
                         "inductor-compiled quantizer instead", why)
        return _state.get("fn")


def _run(fn, yf: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    rows, cols = yf.shape
    out = torch.empty((rows, cols), dtype=torch.uint8)
    scale = torch.empty((rows, 1), dtype=torch.float32)
    fn(yf.data_ptr(), rows, cols, out.data_ptr(), scale.data_ptr(), torch.get_num_threads())
    return out, scale


def is_available() -> bool:
    """Whether the one-pass quantizer can run here (builds it on the first call)."""
    return _function() is not None


def unavailable_reason() -> Optional[str]:
    """Why the one-pass quantizer cannot run here, or None when it can (builds it on the first call)."""
    return None if _function() is not None else _state.get("error")


def quantize_rows_u8(y: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Per-row symmetric int8 codes of a 2-D float32 CPU tensor, as ``q + 128`` (uint8), and the scales.

    Args:
        y: ``(M, K)`` float32 tensor on the CPU.

    Returns:
        ``(u8, scale)``: uint8 ``(M, K)`` and float32 ``(M, 1)``, equal to
        ``hf_lnorm.norms.int8``'s eager quantization; or None when the kernel is
        unavailable or ``y`` is not a float32 CPU tensor (the caller uses another path).

    Examples:
        >>> import torch
        >>> from hf_lnorm.quantization import cpu_quantizer
        >>> out = cpu_quantizer.quantize_rows_u8(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
        >>> out is None or out[0].tolist() == [[192, 1], [255, 192]]
        True
    """
    if y.dtype != torch.float32 or y.device.type != "cpu" or y.dim() != 2:
        return None
    fn = _function()
    if fn is None:
        return None
    return _run(fn, y.contiguous())
