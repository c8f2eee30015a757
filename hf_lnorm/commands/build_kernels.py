"""``hf-lnorm build-kernels``: compile the C++ CPU norm kernels now instead of on first use.

The kernels are built once per CPU, compiler and torch version into
``hf_lnorm.resources.cache_dir("kernels", "cpu-<key>")`` (``HF_LNORM_CACHE``
moves the root). Prints the folder and how long it took, or why the kernels
cannot be built here (exit status 1; hf_lnorm then uses aten on CPU).

Examples:
    hf-lnorm build-kernels
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``build-kernels`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Build (or load the cached build of) the CPU kernels. Returns 0 when they run here, else 1."""
    from ..norms import cpu

    start = time.perf_counter()
    why = cpu.build()
    seconds = time.perf_counter() - start
    if why is not None:
        print(f"hf-lnorm: error: the CPU norm kernels cannot be built here: {why} "
              "(hf_lnorm uses aten on CPU instead)", file=sys.stderr)
        return 1
    info = cpu.last_build()
    if info["compiled"]:
        print(f"compiled the CPU norm kernels into {info['directory']} in {seconds:.1f} s")
    else:
        print(f"the CPU norm kernels are already built in {info['directory']} (loaded in {seconds:.2f} s)")
    return 0
