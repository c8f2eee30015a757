"""hf_lnorm: LayerNorm done right across the Hugging Face stack.

The public API:

* ``patch``, ``unpatch``, ``patch_report`` (and ``calibrate``, ``smooth`` for the
  quantized mode): swap the norm layers of any model (``fused`` | ``quantized``);
* ``hf_lnorm.models``: LayerNorm-centred model families, registered with the Auto
  classes when ``hf_lnorm`` is imported;
* ``hf_lnorm.export``: Optimum / ONNX Runtime / TensorRT export helpers.

Examples:
    >>> import torch, hf_lnorm
    >>> model = hf_lnorm.patch(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)))
    >>> print(hf_lnorm.patch_report(model).summary())
    hf_lnorm.patch: 1 norm(s) patched (fused), 0 skipped, 0 excluded
"""

from .patching import MODES, NormRecord, PatchMode, PatchReport, classify, is_patched, iter_patched, patch, patch_report, register_mode, unpatch

# -- quantized mode (registers mode="quantized") --
from .quantization import calibrate, smooth  # noqa: E402  (importing registers the mode)

# -- model families (registers the Auto classes) --
from . import models  # noqa: E402,F401  (registers lnorm-* configs and heads with the Auto classes)

from ._version import __version__  # noqa: E402

_LAZY = ("kernelize", "kernel_mapping")  # from hf_lnorm.hub_kernels


def __getattr__(name):
    """``kernelize`` and ``kernel_mapping`` (``hf_lnorm.hub_kernels``) load on first use: the ``kernels`` extra."""
    if name in _LAZY:
        from . import hub_kernels

        return getattr(hub_kernels, name)
    raise AttributeError(f"module 'hf_lnorm' has no attribute {name!r}")


__all__ = [
    "MODES",
    "calibrate",
    "smooth",
    "NormRecord",
    "PatchMode",
    "PatchReport",
    "classify",
    "is_patched",
    "iter_patched",
    "kernel_mapping",
    "kernelize",
    "patch",
    "patch_report",
    "register_mode",
    "unpatch",
    "__version__",
]
