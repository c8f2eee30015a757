"""hf_lnorm's norms as layers of the ``kernels`` library: ``RMSNorm`` and ``LayerNorm``.

The ``kernels`` library swaps a layer's forward for the ``forward`` of a class
found in a kernel repository, bound to the original module instance. Such a
class keeps no state of its own: no ``__init__``, no members besides
``forward`` and the two capability flags, and a forward with the same
signature as the one it replaces. Its forward reads only the replaced module's
own attributes.

``RMSNorm``
    The Llama convention (``weight * normed.to(input_dtype)``, statistics in
    float32), the math of the transformers classes decorated with
    ``@use_kernel_forward_from_hub("RMSNorm")`` (``LlamaRMSNorm`` and its
    copies). Reads ``weight`` and ``variance_epsilon`` (``eps`` where the
    module has no ``variance_epsilon``).
``LayerNorm``
    ``torch.nn.LayerNorm``: reads ``weight``, ``bias`` (either may be None),
    ``eps`` and ``normalized_shape``.

Both run ``hf_lnorm.norms.fused_norm``, the function a norm patched with
``hf_lnorm.patch(model, mode="fused")`` runs, with the backend
``hf_lnorm.norms.resolve_backend()`` picks in this process (chosen once, when
this module is imported). They support autograd and ``torch.compile``
(``has_backward`` and ``can_torch_compile`` are True) and trace wherever a
patched norm traces.

The kernel repository that ``hf_lnorm.hub_kernels.local_repo`` writes exposes
this module as its ``layers`` attribute.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from ..norms.fused import fused_norm, resolve_backend, tracing
from ..norms.reference import LAYER_NORM, RMS_NORM_LLAMA, NormSpec

__all__ = ["BACKEND", "LAYER_NAMES", "LayerNorm", "RMSNorm"]

BACKEND: str = resolve_backend(None)
"""The fused backend both layers use in this process (``aten``, ``cpp`` or ``triton``)."""

_RMS_SPEC = NormSpec(RMS_NORM_LLAMA, eps_attr="variance_epsilon")
_LN_SPECS: Dict[Tuple[int, bool, bool], NormSpec] = {
    (ndim, has_weight, has_bias): NormSpec(LAYER_NORM, normalized_ndim=ndim, eps_attr="eps",
                                           has_weight=has_weight, has_bias=has_bias)
    for ndim in (1, 2, 3, 4) for has_weight in (False, True) for has_bias in (False, True)
}


def rms_norm_forward(module: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Llama-convention RMSNorm of ``hidden_states`` with ``module``'s gain and epsilon.

    Args:
        module: the module being replaced (``LlamaRMSNorm`` or a copy of it).
        hidden_states: the input, normalized over its last dimension.

    Returns:
        What ``module``'s own forward returns, computed by ``fused_norm``.
    """
    eps = module.variance_epsilon if hasattr(module, "variance_epsilon") else module.eps
    if tracing(hidden_states):
        weight = module._parameters["weight"]  # the tensor itself, never an fx Proxy
        return fused_norm(_RMS_SPEC, hidden_states, module.weight, None, eps, BACKEND,
                          tuple(int(d) for d in weight.shape), weight.dtype)
    return fused_norm(_RMS_SPEC, hidden_states, module.weight, None, eps, BACKEND)


def layer_norm_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.LayerNorm`` of ``x`` with ``module``'s parameters, epsilon and normalized shape.

    Args:
        module: the module being replaced (an ``nn.LayerNorm`` or a class with its attributes).
        x: the input, normalized over its trailing ``len(module.normalized_shape)`` dimensions.

    Returns:
        What ``module``'s own forward returns, computed by ``fused_norm``.
    """
    shape = tuple(int(d) for d in module.normalized_shape)
    weight, bias = module.weight, module.bias
    key = (len(shape), weight is not None, bias is not None)
    spec = _LN_SPECS.get(key) or NormSpec(LAYER_NORM, normalized_ndim=key[0], has_weight=key[1], has_bias=key[2])
    if tracing(x):
        raw = module._parameters.get("weight")
        return fused_norm(spec, x, weight, bias, module.eps, BACKEND, shape, None if raw is None else raw.dtype)
    return fused_norm(spec, x, weight, bias, module.eps, BACKEND)


class RMSNorm(nn.Module):
    """Kernel layer ``RMSNorm``: the Llama-convention RMSNorm through hf_lnorm's fused path."""

    can_torch_compile = True
    has_backward = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Run ``rms_norm_forward`` on the module this forward is bound to.

        Args:
            hidden_states: the input.

        Returns:
            The normalized tensor, shaped and typed as the replaced forward returns it.
        """
        return rms_norm_forward(self, hidden_states)


class LayerNorm(nn.Module):
    """Kernel layer ``LayerNorm``: ``torch.nn.LayerNorm`` through hf_lnorm's fused path."""

    can_torch_compile = True
    has_backward = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.LayerNorm's parameter name
        """Run ``layer_norm_forward`` on the module this forward is bound to.

        Args:
            input: the input.

        Returns:
            The normalized tensor, shaped and typed as the replaced forward returns it.
        """
        return layer_norm_forward(self, input)


LAYER_NAMES: Dict[str, type] = {"RMSNorm": RMSNorm, "LayerNorm": LayerNorm}
"""Kernel layer name -> layer class."""

VARIANT_OF: Dict[str, str] = {"RMSNorm": RMS_NORM_LLAMA, "LayerNorm": LAYER_NORM}
"""Kernel layer name -> the ``hf_lnorm.norms.reference`` variant it computes."""
