"""Facts shared by the norm kernels and their dispatch (``ops.py``, ``triton/kernels.py``).

A leaf of ``hf_lnorm.norms``: it imports only torch, so the Triton kernels can
read these without importing the dispatch module that calls them.
"""

from typing import Optional

import torch

TRITON_MAX_HIDDEN = 65536  # one row per Triton block; wider rows take the aten path under impl="auto"
_HALF = (torch.float16, torch.bfloat16)


def output_dtype(variant: str, x_dtype: torch.dtype, w_dtype: Optional[torch.dtype]) -> torch.dtype:
    """dtype that the original implementation of ``variant`` returns (see ``reference.py``).

    Args:
        variant: one of ``hf_lnorm.norms.ops.VARIANTS``.
        x_dtype: dtype of the normalized input (the sum, for add+norm).
        w_dtype: dtype of the gain, or None without one.

    Returns:
        The output dtype.
    """
    if variant == "rms_norm_llama":
        return x_dtype if w_dtype is None else torch.promote_types(w_dtype, x_dtype)
    if variant == "rms_norm_t5":
        if w_dtype is None:
            return torch.float32
        return w_dtype if w_dtype in _HALF else torch.promote_types(w_dtype, torch.float32)
    return x_dtype
