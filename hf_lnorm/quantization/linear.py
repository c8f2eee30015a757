"""Per-instance int8 Linear layers: the readers of a quantized norm run an int8 GEMM.

``_install_linear`` swaps one layer's ``forward`` (an instance attribute, so other
instances of the class are untouched) for ``_int8_linear_forward``, which reuses
the int8 activation its source norm stashed when it receives that very tensor,
and quantizes any other input per token itself. ``_uninstall_linear`` restores
the previous ``forward`` exactly. Float parameters are never modified.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from ..norms.int8 import Int8Weight, QuantizedActivation, int8_linear, quantize_activation, resolve_kernel
from ..patching import STATE_ATTR
from .cpu_quantizer import quantize_rows_u8

__all__ = ["LINEAR_ATTR", "int8_layers"]

LINEAR_ATTR = "_hf_lnorm_int8"
_MISSING = object()


@dataclass
class _LinearState:
    name: str
    sources: List[nn.Module]  # the patched norms whose outputs this layer reads
    weight: Int8Weight
    transposed: bool  # GPT-2 Conv1D keeps its weight as (K, N)
    forward_attr: str
    previous: Any
    inv_smooth: Optional[torch.Tensor] = None  # 1 / s of the source norm, for inputs not from the stash
    smooth: Optional[torch.Tensor] = None


def _float_weight(layer: nn.Module, transposed: bool) -> torch.Tensor:
    return layer.weight.t() if transposed else layer.weight


def _is_consumer_candidate(module: nn.Module) -> Optional[bool]:
    """True/False = Linear-like (value: weight transposed?); None = not a GEMM layer we handle."""
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(getattr(module, "weight", None), torch.Tensor):
        return True
    if isinstance(module, nn.Linear) and isinstance(module.weight, nn.Parameter) and module.weight.dim() == 2:
        return False
    return None


def quantize_input(y: torch.Tensor, static_scale: Optional[float] = None) -> QuantizedActivation:
    """Per-token int8 of ``y`` ``(..., K)`` flattened to rows, as ``hf_lnorm.norms.int8.quantize_activation``.

    Eager float32 CPU tensors with dynamic (per-token) scales go through the
    one-pass kernel of ``cpu_quantizer``; everything else (static scales, CUDA,
    ``torch.compile``, ``torch.jit`` tracing, a single row) through
    ``quantize_activation``. The codes are the same either way.

    Args:
        y: the float activation.
        static_scale: one calibrated scale for every row, or None for per-token scales.

    Returns:
        The int8 activation ``(M, K)`` with its per-row scales.
    """
    if (static_scale is None and y.device.type == "cpu" and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()):
        yf = y.reshape(-1, y.shape[-1]).float()
        if yf.shape[0] > 1:
            out = quantize_rows_u8(yf)
            if out is not None:
                return QuantizedActivation(*out)
    return quantize_activation(y, static_scale)


def _int8_linear_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    st: _LinearState = self.__dict__[LINEAR_ATTR]
    if x.is_quantized:
        x = x.dequantize()
    act = None
    for norm in st.sources:
        state = norm.__dict__.get(STATE_ATTR)
        stash = state.extra.get("stash") if state is not None else None
        if stash is not None and stash[0]() is x:
            act = stash[1]
            break
    with torch.no_grad():
        if act is None:  # called on something other than the norm's output: quantize it here
            act = quantize_input(x if st.inv_smooth is None else x * st.inv_smooth.to(x.dtype))
        out = int8_linear(act, st.weight, getattr(self, "bias", None))
    return out.view(*x.shape[:-1], out.shape[-1]).to(x.dtype)


def _install_linear(name: str, layer: nn.Module, sources: List[nn.Module], kernel: str) -> _LinearState:
    transposed = bool(_is_consumer_candidate(layer))
    hooked = "_hf_hook" in layer.__dict__ and "_old_forward" in layer.__dict__
    attr = "_old_forward" if hooked else "forward"
    state = _LinearState(
        name=name,
        sources=sources,
        weight=Int8Weight.from_float(_float_weight(layer, transposed), resolve_kernel(kernel, layer.weight.device)),
        transposed=transposed,
        forward_attr=attr,
        previous=layer.__dict__.get(attr, _MISSING),
    )
    layer.__dict__[LINEAR_ATTR] = state
    layer.__dict__[attr] = types.MethodType(_int8_linear_forward, layer)
    return state


def _uninstall_linear(layer: nn.Module) -> None:
    state = layer.__dict__.pop(LINEAR_ATTR)
    if state.previous is _MISSING:
        layer.__dict__.pop(state.forward_attr, None)
    else:
        layer.__dict__[state.forward_attr] = state.previous


def int8_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every Linear that quantized mode runs in int8.

    With the default ``all_linears=True`` these are all the Linears the trace
    saw; with ``all_linears=False`` only the norms' readers. GPT-2 style
    ``Conv1D`` layers count as Linear.

    Args:
        model: a model patched with ``mode="quantized"`` (any module works; an
            unpatched one gives an empty list).

    Returns:
        The int8 layers, in ``named_modules()`` order.

    Examples:
        >>> import torch, hf_lnorm
        >>> from hf_lnorm.quantization import int8_layers
        >>> block = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 64), torch.nn.Linear(64, 8))
        >>> block = hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(4, 32))
        >>> [name for name, _ in int8_layers(block)]
        ['1', '2']
        >>> block = hf_lnorm.unpatch(block)
        >>> block = hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(4, 32), all_linears=False)
        >>> [name for name, _ in int8_layers(block)]
        ['1']
        >>> block = hf_lnorm.unpatch(block)
        >>> int8_layers(block)
        []
    """
    return [(n, m) for n, m in model.named_modules() if LINEAR_ATTR in m.__dict__]
