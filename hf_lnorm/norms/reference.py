"""Plain-torch reference math for every norm variant that transformers uses.

This file is the spec: every backend (aten, Triton, quantized) and every
patched module is tested against these functions. They are written for
clarity, not speed: statistics are always computed in fp32 and the casting
order of each original implementation is reproduced step by step.

Variants (``NormSpec.variant``):

``layer_norm``
    ``nn.LayerNorm``: ``(x - mean) / sqrt(var + eps) * weight + bias`` over the
    trailing ``normalized_shape`` dims; weight and bias each optional.
``layer_norm_channels_first``
    ConvNeXt / SAM style LayerNorm with ``data_format="channels_first"``:
    the same math over dim 1 of a ``(B, C, ...)`` tensor.
``rms_norm_llama``
    Llama / Mistral / Qwen2: compute in fp32, cast back to the input dtype,
    then multiply by the weight (``weight * x_normed.to(input_dtype)``).
``rms_norm_gemma``
    Gemma: compute in fp32, multiply by ``(1 + weight)`` in fp32, then cast
    back to the input dtype.
``rms_norm_t5``
    T5: fp32 variance, ``x * rsqrt(var + eps)`` promoted to fp32, cast to the
    weight's dtype only when that is fp16/bf16, then ``weight * x``.
``rms_norm_torch``
    ``torch.nn.RMSNorm`` / ``F.rms_norm``: fp32 math including the weight,
    one cast back to the input dtype at the end.

Examples:
    >>> import torch
    >>> from hf_lnorm.norms.reference import rms_norm
    >>> x = torch.randn(2, 3, 8)
    >>> y = rms_norm(x, torch.ones(8), eps=1e-6, variant="rms_norm_llama")
    >>> y.shape
    torch.Size([2, 3, 8])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

LAYER_NORM = "layer_norm"
LAYER_NORM_CHANNELS_FIRST = "layer_norm_channels_first"
RMS_NORM_LLAMA = "rms_norm_llama"
RMS_NORM_GEMMA = "rms_norm_gemma"
RMS_NORM_T5 = "rms_norm_t5"
RMS_NORM_TORCH = "rms_norm_torch"

VARIANTS = (
    LAYER_NORM,
    LAYER_NORM_CHANNELS_FIRST,
    RMS_NORM_LLAMA,
    RMS_NORM_GEMMA,
    RMS_NORM_T5,
    RMS_NORM_TORCH,
)
RMS_VARIANTS = (RMS_NORM_LLAMA, RMS_NORM_GEMMA, RMS_NORM_T5, RMS_NORM_TORCH)
RMS_CONVENTIONS = ("llama", "gemma", "t5", "torch")  # deprecated short names of RMS_VARIANTS
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class NormSpec:
    """What a norm module computes, independent of how it is implemented.

    ``classify`` (and so ``patch``) produces one per patched norm; the fused and
    reference functions take it to know which math to run. Frozen, so it can key
    caches.

    Args:
        variant: one of ``VARIANTS``.
        normalized_ndim: how many trailing dims (dim 1 for channels-first) are normalized.
        eps_attr: name of the module attribute that holds eps (``eps``,
            ``variance_epsilon``, ``epsilon``...), read at every call; None when
            the module has none.
        has_weight: whether the module has a learned gain ``weight``.
        has_bias: whether the module has a learned ``bias``.

    Raises:
        ValueError: ``variant`` is not in ``VARIANTS``.

    Examples:
        >>> from hf_lnorm.norms import NormSpec
        >>> spec = NormSpec("rms_norm_llama", eps_attr="variance_epsilon")
        >>> spec.is_rms, spec.has_bias
        (True, False)
        >>> NormSpec("batch_norm")
        Traceback (most recent call last):
        ...
        ValueError: unknown norm variant 'batch_norm'; accepted: layer_norm, layer_norm_channels_first, ...
    """

    variant: str
    normalized_ndim: int = 1
    eps_attr: Optional[str] = "eps"
    has_weight: bool = True
    has_bias: bool = False

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown norm variant {self.variant!r}; accepted: {', '.join(VARIANTS)}")

    @property
    def is_rms(self) -> bool:
        """Whether the variant is one of the RMSNorm variants (no mean subtraction, no bias)."""
        return self.variant.startswith("rms_norm")

    @property
    def rms_convention(self) -> Optional[str]:
        """Deprecated: the RMS variant without its ``rms_norm_`` prefix (None for LayerNorm); use ``variant``."""
        warnings.warn("NormSpec.rms_convention is deprecated: use NormSpec.variant", DeprecationWarning, stacklevel=2)
        return self.variant[len("rms_norm_"):] if self.is_rms else None


def layer_norm(
    x: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    normalized_ndim: int = 1,
) -> torch.Tensor:
    """LayerNorm over the last ``normalized_ndim`` dims; fp32 statistics, output in ``x.dtype``.

    The reference for ``nn.LayerNorm``: ``(x - mean) / sqrt(var + eps) * weight + bias``
    with the biased variance, computed in float32 whatever the input dtype.

    Args:
        x: input of any float dtype.
        weight: optional gain shaped like the normalized dims.
        bias: optional bias shaped like the normalized dims.
        eps: added to the variance.
        normalized_ndim: number of trailing dims to normalize over.

    Returns:
        Tensor shaped and typed like ``x``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import layer_norm
        >>> x = torch.randn(2, 5, 16)
        >>> torch.allclose(layer_norm(x), torch.nn.functional.layer_norm(x, (16,)), atol=1e-6)
        True
        >>> layer_norm(x.bfloat16()).dtype
        torch.bfloat16
    """
    dims = tuple(range(-normalized_ndim, 0))
    xf = x.float()
    mean = xf.mean(dim=dims, keepdim=True)
    var = (xf - mean).pow(2).mean(dim=dims, keepdim=True)
    y = (xf - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def layer_norm_channels_first(
    x: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """LayerNorm over dim 1 of a ``(B, C, *spatial)`` tensor (ConvNeXt ``channels_first``).

    Each spatial position is normalized over its ``C`` channels; fp32
    statistics, output in ``x.dtype``.

    Args:
        x: input shaped ``(B, C, *spatial)``, any float dtype.
        weight: optional gain of shape ``(C,)``.
        bias: optional bias of shape ``(C,)``.
        eps: added to the variance.

    Returns:
        Tensor shaped and typed like ``x``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import layer_norm, layer_norm_channels_first
        >>> x = torch.randn(2, 8, 4, 4)
        >>> y = layer_norm_channels_first(x)
        >>> torch.allclose(y, layer_norm(x.movedim(1, -1), eps=1e-6).movedim(-1, 1), atol=1e-6)
        True
    """
    xf = x.float()
    mean = xf.mean(dim=1, keepdim=True)
    var = (xf - mean).pow(2).mean(dim=1, keepdim=True)
    y = (xf - mean) * torch.rsqrt(var + eps)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.float().reshape(shape)
    if bias is not None:
        y = y + bias.float().reshape(shape)
    return y.to(x.dtype)


def rms_norm(
    x: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    eps: float = 1e-6,
    variant: str = RMS_NORM_LLAMA,
    normalized_ndim: int = 1,
    *,
    convention: Optional[str] = None,
) -> torch.Tensor:
    """RMSNorm in one of the casting variants of ``RMS_VARIANTS``.

    Args:
        x: input of any float dtype.
        weight: optional gain; for ``rms_norm_gemma`` it is applied as ``(1 + weight)``.
        eps: added to the mean square.
        variant: ``rms_norm_llama`` | ``rms_norm_gemma`` | ``rms_norm_t5`` | ``rms_norm_torch``
            (see module docstring).
        normalized_ndim: number of trailing dims to normalize over.
        convention: deprecated: ``llama`` | ``gemma`` | ``t5`` | ``torch``, the same as ``variant``
            without its ``rms_norm_`` prefix; overrides ``variant``.

    Returns:
        The normalized tensor, in the dtype the original implementation returns.

    Raises:
        ValueError: an unknown variant or convention.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import rms_norm
        >>> x, w = torch.randn(4, 16), torch.randn(16)
        >>> torch.allclose(rms_norm(x, w, eps=1e-6, variant="rms_norm_torch"),
        ...                torch.nn.functional.rms_norm(x, (16,), w, eps=1e-6), atol=1e-6)
        True
        >>> rms_norm(x.half(), w, variant="rms_norm_t5").dtype  # T5 keeps fp32 for an fp32 gain
        torch.float32
    """
    if convention is not None:
        warnings.warn("rms_norm(convention=...) is deprecated: use variant='rms_norm_<convention>'",
                      DeprecationWarning, stacklevel=2)
        if convention not in RMS_CONVENTIONS:
            raise ValueError(f"unknown RMSNorm convention {convention!r}; accepted: {', '.join(RMS_CONVENTIONS)}")
        variant = "rms_norm_" + convention
    elif variant in RMS_CONVENTIONS:
        warnings.warn(f"RMSNorm variant {variant!r} is deprecated: use 'rms_norm_{variant}'",
                      DeprecationWarning, stacklevel=2)
        variant = "rms_norm_" + variant
    if variant not in RMS_VARIANTS:
        raise ValueError(f"unknown RMSNorm variant {variant!r}; accepted: {', '.join(RMS_VARIANTS)}")
    dims = tuple(range(-normalized_ndim, 0))
    xf = x.float()
    inv = torch.rsqrt(xf.pow(2).mean(dim=dims, keepdim=True) + eps)
    normed = xf * inv  # fp32
    if variant == RMS_NORM_LLAMA:
        out = normed.to(x.dtype)
        return out if weight is None else weight * out
    if variant == RMS_NORM_GEMMA:
        if weight is not None:
            normed = normed * (1.0 + weight.float())
        return normed.to(x.dtype)
    if variant == RMS_NORM_T5:
        if weight is None:
            return normed
        if weight.dtype in _HALF:
            normed = normed.to(weight.dtype)
        return weight * normed
    # rms_norm_torch: F.rms_norm upcasts, multiplies by the weight in fp32, then casts
    # the result back to the input dtype.
    if weight is not None:
        normed = normed * weight.float()
    return normed.to(x.dtype)


def reference_forward(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: float,
) -> torch.Tensor:
    """Apply the reference math that ``spec`` describes.

    Dispatches to ``layer_norm``, ``layer_norm_channels_first`` or ``rms_norm``
    with ``spec.variant`` and ``spec.normalized_ndim``.

    Args:
        spec: what to compute.
        x: the input.
        weight: the gain, or None.
        bias: the bias, or None (ignored by the RMS variants).
        eps: the epsilon.

    Returns:
        The normalized tensor, as the module ``spec`` describes returns it.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import NormSpec, reference_forward
        >>> ln = torch.nn.LayerNorm(16)
        >>> x = torch.randn(3, 16)
        >>> y = reference_forward(NormSpec("layer_norm", has_bias=True), x, ln.weight, ln.bias, ln.eps)
        >>> torch.allclose(y, ln(x), atol=1e-6)
        True
    """
    if spec.variant == LAYER_NORM:
        return layer_norm(x, weight, bias, eps, spec.normalized_ndim)
    if spec.variant == LAYER_NORM_CHANNELS_FIRST:
        return layer_norm_channels_first(x, weight, bias, eps)
    return rms_norm(x, weight, eps, spec.variant, spec.normalized_ndim)


def normalized_shape_of(spec: NormSpec, x: torch.Tensor) -> Sequence[int]:
    """The dims a spec normalizes over, read off an input."""
    if spec.variant == LAYER_NORM_CHANNELS_FIRST:
        return (x.shape[1],)
    return tuple(x.shape[-spec.normalized_ndim:])
