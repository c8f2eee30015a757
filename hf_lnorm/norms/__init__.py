"""Norm math (reference), exact kernels (fused, ops) and int8 math for quantized norms (int8).

``layer_norm`` / ``rms_norm`` here are the plain-torch *reference* functions;
the fused, differentiable building blocks are ``fused_layer_norm``,
``fused_rms_norm``, ``add_layer_norm``, ``add_rms_norm`` (and the in-place
inference variant ``add_layer_norm_``) from ``hf_lnorm.norms.ops``.
"""

from .fused import available_backends, fused_norm, resolve_backend
from .ops import add_layer_norm, add_layer_norm_, add_rms_norm
from .ops import layer_norm as fused_layer_norm
from .ops import rms_norm as fused_rms_norm
from .reference import VARIANTS, NormSpec, layer_norm, layer_norm_channels_first, reference_forward, rms_norm

__all__ = [
    "NormSpec",
    "VARIANTS",
    "add_layer_norm",
    "add_layer_norm_",
    "add_rms_norm",
    "available_backends",
    "fused_layer_norm",
    "fused_norm",
    "fused_rms_norm",
    "layer_norm",
    "layer_norm_channels_first",
    "reference_forward",
    "resolve_backend",
    "rms_norm",
]
