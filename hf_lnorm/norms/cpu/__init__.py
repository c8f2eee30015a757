"""CPU kernels for residual add + LayerNorm / RMSNorm (float32 inference).

``add_norm.cpp`` holds one op, ``torch.ops.hf_lnorm_cpu.add_norm``, that adds
the residual, computes the row statistics and normalizes in one pass over
memory per row, writes large outputs with streaming stores, and can take its
output blocks from a bounded cache of freed blocks (PyTorch's CPU allocator
hands large blocks back to the OS, and re-faulting fresh pages can cost more
than the arithmetic). ``hf_lnorm.norms.ops`` uses it for float32 CPU tensors in
inference; everything else stays on the aten path.

The op is compiled on first use with ``torch.utils.cpp_extension`` (a C++
compiler and ninja; once, logged at INFO on the ``hf_lnorm`` logger)
for the CPU it runs on (``-march=native``), into
``hf_lnorm.resources.cache_dir("kernels", "cpu-<key>")``. The key hashes
everything the binary depends on (the CPU's feature flags, the compiler and
its version, torch, Python, the source and the flags: ``build_key``), so a
cache folder shared by different machines never runs a binary on a CPU or a
torch it was not built for. ``hf-lnorm build-kernels`` builds it ahead of
time. When it cannot be built, ``is_available()`` is False and the callers
silently keep the aten path; ``unavailable_reason()`` says why.

The environment variables it reads:

* ``HF_LNORM_CPU_KERNELS``: ``0`` disables the kernels (aten everywhere).
* ``HF_LNORM_CPU_CACHE_MB``: MiB of idle output blocks the cache may keep
  (default 64, ``DEFAULT_CACHE_MB``; ``0`` frees every block at once; a larger
  limit helps only for very large outputs, which ``hf-lnorm bench norms --device cpu``
  measures). ``set_cache_limit`` changes it at run time; ``hf_lnorm.unpatch``
  frees the idle blocks.
* ``HF_LNORM_CPU_STREAM_MB``: outputs at least this large use streaming stores
  (default 8).
* ``HF_LNORM_CPU_MIN_NUMEL`` (read by ``norms/fastpath.py``): patched norms send inputs
  with fewer elements to aten's kernel (default 4096).
* ``HF_LNORM_CACHE``: the cache root (see ``hf_lnorm.resources.cache_dir``).

Examples:
    ```python
    import torch
    from hf_lnorm.norms import cpu

    if cpu.is_available():  # builds the kernels on first use
        y, s, mean, rstd = cpu.add_norm(torch.randn(4, 8), torch.randn(4, 8), None, None, 1e-5)
    else:
        print(cpu.unavailable_reason())
    ```
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor

from ..._json import write_json

__all__ = [
    "DEFAULT_CACHE_MB",
    "add_norm",
    "build",
    "build_directory",
    "build_key",
    "cache_info",
    "empty_cache",
    "is_available",
    "last_build",
    "set_cache_limit",
    "unavailable_reason",
]

SOURCE = Path(__file__).with_name("add_norm.cpp")
LIBRARY = "hf_lnorm_cpu"  # the .so name and the torch.ops namespace
CFLAGS = ("-O3", "-march=native", "-fopenmp")
LDFLAGS = ("-fopenmp",)
DEFAULT_CACHE_MB = 64  # MiB: the add+norm outputs of 4096 tokens x 1024 (2 x 16 MiB) recycle; see scripts/bench_cpu_cache_policy.py
_MARKER = "build.json"  # written (renamed into place) once the library built and loaded
_STALE_LOCK_S = 600.0  # torch's build lock left by a killed build; a real build takes well under this

_log = logging.getLogger("hf_lnorm")
_lock = threading.Lock()
# "loaded": "yes" once loaded; "error": why it cannot be; "dir": its folder; "compiled": "yes" when this process built it
_state: Dict[str, Optional[str]] = {}


# --------------------------------------------------------------------------- the build key


def build_key(cpu_flags: str, machine: str, compiler: str, compiler_version: str, torch_version: str,
              python: str, source_sha256: str, cflags: Sequence[str]) -> str:
    """A short hash of everything the compiled library depends on (16 hex digits).

    Args:
        cpu_flags: the CPU's feature set (torch's CPU capability and the sorted
            ``flags`` of ``/proc/cpuinfo``): ``-march=native`` compiles for it.
        machine: ``platform.machine()``.
        compiler: the compiler's resolved path.
        compiler_version: the first line of its ``--version``.
        torch_version: ``torch.__version__``.
        python: the interpreter's cache tag.
        source_sha256: hash of ``add_norm.cpp``.
        cflags: compiler and linker flags.

    Returns:
        The key naming the build folder ``cpu-<key>``.
    """
    text = json.dumps([cpu_flags, machine, compiler, compiler_version, torch_version, python, source_sha256,
                       list(cflags)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_flags() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1] for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    if not flags.strip():  # no /proc/cpuinfo (macOS, ...): the processor name stands in
        flags = platform.processor()
    return torch.backends.cpu.get_cpu_capability() + " " + " ".join(sorted(flags.split()))


def _compiler() -> tuple:
    """(resolved path, first line of ``--version``) of the compiler torch builds with.

    Raises:
        FileNotFoundError: no compiler on PATH.
    """
    # torch.utils.cpp_extension.get_cxx_compiler's choice, without importing that module (~1 s) to load a build
    name = os.environ.get("CXX", "cl" if sys.platform == "win32" else "c++")
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"no C++ compiler ({name!r} is not on PATH; set CXX or install g++)")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise FileNotFoundError(f"the C++ compiler {path!r} does not run: {exc}") from None
    return os.path.realpath(path), (out.strip().splitlines() or [""])[0]


def _key() -> str:
    compiler, version = _compiler()
    source_sha = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    return build_key(_cpu_flags(), platform.machine(), compiler, version, torch.__version__,
                     sys.implementation.cache_tag or "", source_sha, CFLAGS + LDFLAGS)


def build_directory() -> Path:
    """The folder the kernels for this CPU, compiler and torch are (or would be) built in.

    Raises:
        FileNotFoundError: no C++ compiler, so there is no key.
    """
    if "dir" in _state:
        return Path(_state["dir"])
    from ...resources import cache_dir

    return cache_dir("kernels", f"cpu-{_key()}")


# --------------------------------------------------------------------------- building and loading


def _ninja_dir() -> tuple:
    """(why ninja cannot be found or None, a folder to put on PATH for the build or None)."""
    if shutil.which("ninja") is not None:
        return None, None
    venv_bin = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(venv_bin, "ninja")):
        return None, venv_bin
    return "ninja is not installed (pip install ninja)", None


@contextlib.contextmanager
def _path_with(folder: Optional[str]) -> Iterator[None]:
    """``folder`` first on PATH for the block (torch's build runs ``ninja`` from PATH), then PATH as it was."""
    if folder is None:
        yield
        return
    old = os.environ.get("PATH")
    os.environ["PATH"] = folder + os.pathsep + (old or "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = old


def _cache_limit_from_env() -> int:
    """Bytes from ``HF_LNORM_CPU_CACHE_MB`` (default ``DEFAULT_CACHE_MB``).

    Raises:
        ValueError: the variable is not a number >= 0.
    """
    text = os.environ.get("HF_LNORM_CPU_CACHE_MB", "").strip()
    if not text:
        return DEFAULT_CACHE_MB << 20
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise ValueError(f"HF_LNORM_CPU_CACHE_MB={text!r} is not accepted: give the MiB of idle output blocks "
                         "the CPU kernels may keep, a number >= 0 (0 keeps none)")
    return int(mb * (1 << 20))


def _clear_stale_lock(folder: Path) -> None:
    """Remove torch's build lock when a killed build left it (torch would wait on it forever)."""
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return
    if age > _STALE_LOCK_S:
        _log.info("hf_lnorm: removing the stale build lock %s (%.0f s old)", lock, age)
        with contextlib.suppress(OSError):
            lock.unlink()


def _load_or_compile() -> None:
    """Load the library from its build folder, compiling it there first when needed (caller holds ``_lock``).

    Raises:
        FileNotFoundError, RuntimeError, OSError: no compiler or ninja, a failed build, an unwritable folder.
    """
    folder = build_directory()
    library = folder / f"{LIBRARY}.so"
    if (folder / _MARKER).is_file() and library.is_file():
        _log.debug("hf_lnorm: loading the CPU norm kernels from %s", folder)
        torch.ops.load_library(str(library))
        _state["dir"] = str(folder)
        return
    why, ninja_dir = _ninja_dir()
    if why is not None:
        raise FileNotFoundError(why)
    from torch.utils.cpp_extension import load

    folder.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(folder)
    _log.info("hf_lnorm: compiling the CPU norm kernels (%s, %s) into %s; once per CPU/compiler/torch",
              SOURCE.name, " ".join(CFLAGS), folder)
    with _path_with(ninja_dir):
        load(LIBRARY, [str(SOURCE)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
             build_directory=str(folder), is_python_module=False, verbose=False)
    write_json(str(folder / _MARKER), {"source": SOURCE.name, "cflags": list(CFLAGS), "ldflags": list(LDFLAGS),
                                       "torch": torch.__version__, "compiler": list(_compiler()), "cpu": _cpu_flags()})
    _state["dir"] = str(folder)
    _state["compiled"] = "yes"


def build() -> Optional[str]:
    """Compile (or load the cached build of) the kernels; returns None, or why they cannot run.

    Raises:
        ValueError: ``HF_LNORM_CPU_CACHE_MB`` is set to something other than a number >= 0.
    """
    if os.environ.get("HF_LNORM_CPU_KERNELS", "1") == "0":
        return "disabled by HF_LNORM_CPU_KERNELS=0"
    if "loaded" in _state:  # the per-call fast path
        return None
    with _lock:
        if "loaded" in _state:
            return None
        if "error" in _state:
            return _state["error"]
        limit = _cache_limit_from_env()
        why = None
        try:
            _load_or_compile()
            torch.ops.hf_lnorm_cpu.add_norm  # noqa: B018  (raises when the library did not register)
            torch.ops.hf_lnorm_cpu.set_cache_limit(limit)
        except FileNotFoundError as exc:
            why = str(exc)
        except Exception as exc:  # compiler error, unwritable cache folder, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = f"the build failed: {first}"
        if why is None:
            _state["loaded"] = "yes"
        else:
            _state["error"] = why
        return why


def last_build() -> Dict[str, object]:
    """Where the loaded kernels live and whether this process compiled them.

    Returns:
        ``{"directory": str or None, "compiled": bool, "error": str or None}`` (nothing built or loaded
            yet: directory None and no error).
    """
    return {"directory": _state.get("dir"), "compiled": "compiled" in _state, "error": _state.get("error")}


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


# --------------------------------------------------------------------------- the op and its block cache


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
        weight: None or float32 contiguous ``(N,)``.
        bias: None or float32 contiguous ``(N,)`` (no bias with ``rms``).
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
    """Free every idle output block; returns the bytes freed (0 when the kernels are not loaded).

    ``hf_lnorm.unpatch`` calls it: idle blocks are by definition unused, and a
    model still patched refills the cache within one forward.
    """
    if "loaded" not in _state:
        return 0
    return int(torch.ops.hf_lnorm_cpu.empty_cache())


def set_cache_limit(limit_bytes: int) -> int:
    """Set the bytes of idle blocks the cache may keep (0 disables it); returns the previous limit.

    A freed output block is kept when it fits under the limit, evicting idle blocks of other sizes
    first, so the cache follows the shapes in use; idle blocks above a lowered limit are freed at once.

    Raises:
        ValueError: ``limit_bytes`` is negative or not an int.
    """
    if not isinstance(limit_bytes, int) or isinstance(limit_bytes, bool) or limit_bytes < 0:
        raise ValueError(f"limit_bytes must be an int >= 0, got {limit_bytes!r}")
    _require()
    return int(torch.ops.hf_lnorm_cpu.set_cache_limit(limit_bytes))
