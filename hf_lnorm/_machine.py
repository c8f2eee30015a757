"""What benchmark figures depend on, recorded next to them in the JSON reports.

:func:`machine_info` describes the machine (CPU model, cores, vector ISA, load);
:func:`provenance` adds the code (git commit or package version), the library
versions, the command line and the time, and is what every result JSON records
under its ``provenance`` key.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

# Distributions whose versions are recorded when installed (torch and transformers always are).
OPTIONAL_DISTRIBUTIONS = ("onnx", "onnxruntime", "onnxruntime-gpu", "optimum", "optimum-onnx", "peft", "triton",
                          "openvino", "nncf", "optimum-intel", "torchao", "accelerate")


# The CPU features the int8 and bf16 kernels of torch, ONNX Runtime and OpenVINO choose by, in report order.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
# x86 int8 dot-product instructions that accumulate u8 x s8 in int32 (without them, AVX2 adds pairs in saturating int16).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo_field(lines: List[str], key: str) -> Optional[str]:
    """The value of the first ``key : value`` line of /proc/cpuinfo, or None."""
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def machine_info() -> Dict[str, object]:
    """CPU model, core count, the vector ISA torch dispatches to, the int8 dot-product flags, torch version, 1-min load.

    The CPU model is the ``model name`` of /proc/cpuinfo where there is one (Linux),
    else ``platform.processor()``. A ``gpu`` entry names the CUDA device when torch sees one.

    Returns:
        A JSON-ready dict, e.g. ``{"cpu": "AMD EPYC 7B13", "cores": 2, "int8_isa": ["avx2"], ...}``.
    """
    import torch

    info: Dict[str, object] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        lines = []
    if lines:
        info["cpu"] = _cpuinfo_field(lines, "model name") or info["cpu"]
        flags = (_cpuinfo_field(lines, "flags") or "").split()
        info["int8_isa"] = sorted(set(flags) & {"avx2", *VNNI_FLAGS})
        info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]  # what int8 / bf16 runtimes dispatch on
    try:
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        info["load_avg_1min"] = None
    try:
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except Exception:  # a broken CUDA setup must not cost a CPU benchmark its report
        pass
    return info


def _git(root: Path, *args: str) -> Optional[str]:
    """Output of ``git -C root args``, or None when git is missing or fails."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_commit() -> Dict[str, object]:
    """The git commit of the checkout this package runs from, and whether its tracked files differ from it.

    Returns ``{"git_sha": None, "git_dirty": None}`` when the package does not run
    from a git checkout (installed from a wheel, or its files are not tracked by
    the repository around it, e.g. a virtual environment inside a checkout).
    """
    package = Path(__file__).resolve().parent
    top = _git(package, "rev-parse", "--show-toplevel")
    if top is None:
        return {"git_sha": None, "git_dirty": None}
    me = Path(__file__).resolve().relative_to(Path(top).resolve()).as_posix()
    if _git(Path(top), "ls-files", "--error-unmatch", me) is None:  # not this repository's own source
        return {"git_sha": None, "git_dirty": None}
    sha = _git(Path(top), "rev-parse", "HEAD")
    status = _git(Path(top), "status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status)}


def versions() -> Dict[str, str]:
    """Python, torch, transformers and the installed optional libraries results depend on (importlib.metadata)."""
    from importlib import metadata

    found: Dict[str, str] = {"python": platform.python_version()}
    for name in ("torch", "transformers", *OPTIONAL_DISTRIBUTIONS):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _command_line() -> str:
    """``sys.argv`` joined: ``python scripts/x.py ...`` for a script, ``hf-lnorm ...`` for a console script."""
    argv = list(sys.argv) or [""]
    if argv[0].endswith(".py"):
        argv.insert(0, "python")
    elif argv[0]:
        argv[0] = Path(argv[0]).name
    return " ".join(argv)


def provenance() -> Dict[str, object]:
    """Where a result comes from: code, library versions, machine, command line and time.

    Returns:
        ``{"git_sha", "git_dirty", "hf_lnorm", "versions", "machine", "command", "created"}``;
        ``git_sha`` is None when the package is not run from a git checkout.

    Example:
        >>> report = {"rows": rows, "provenance": provenance()}  # doctest: +SKIP
    """
    from ._version import __version__

    return {
        **source_commit(),
        "hf_lnorm": __version__,
        "versions": versions(),
        "machine": machine_info(),
        "command": _command_line(),
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
    }
