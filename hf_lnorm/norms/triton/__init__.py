"""Triton kernels for LayerNorm / RMSNorm and residual add+norm (forward and backward).

The kernels live in ``kernels.py`` and are reached through the custom ops of
``hf_lnorm.norms.ops``; importing this package does not import Triton.
``is_available()`` says whether Triton is installed (probed once).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache


@lru_cache(maxsize=None)
def is_available() -> bool:
    """Whether the ``triton`` package can be imported in this process."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken install counts as missing
        return False
    return True
