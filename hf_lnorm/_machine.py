"""What benchmark figures depend on, recorded next to them in the JSON reports."""

from __future__ import annotations

import os
import platform
from typing import Dict


def machine_info() -> Dict[str, object]:
    """CPU, core count, the vector ISA torch dispatches to, the int8 dot-product flags, torch version, 1-min load."""
    import torch

    info: Dict[str, object] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        info["int8_isa"] = sorted(set(flags) & {"avx2", "avx512_vnni", "avx_vnni", "amx_int8"})  # VNNI: int8 dot products
    except OSError:
        pass
    try:
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        info["load_avg_1min"] = None
    return info
