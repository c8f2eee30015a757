"""Norm layers of the hf_lnorm model families, with an optional fused path.

``LNormLayerNorm`` (an ``nn.LayerNorm``) and ``LNormRMSNorm`` (a Llama-convention
RMSNorm) keep plain parameters (``weight``, ``bias``), so ``hf_lnorm.patch``
recognises and patches them like any other norm; ``LNormDyT`` is Dynamic Tanh
(``norm_type="dyt"``), an elementwise stand-in for a norm that ``hf_lnorm.patch``
lists as skipped; ``Passthrough`` is ``norm_type="none"``. A block asks a norm for ``add_forward(x, residual)``
(residual add + norm in one op); when the norm's ``forward`` has been replaced
on the instance (by ``hf_lnorm.patch``, an accelerate hook, ...), that forward
is used instead, so patching always takes effect.

hf_lnorm's fused norm kernels are an optional import: when ``hf_lnorm.norms.ops``
is importable the norms use it in eager runs and under ``torch.compile``,
otherwise they use plain torch, which gives the same numbers. The choice is made
per call (``use_fused_norms``): while a graph is recorded (``torch.fx``,
``torch.jit`` tracing or scripting, ``torch.export``, ONNX export) the norms
record the plain-torch ops, so the graph holds standard ops only.

This file is shipped next to saved weights as remote code, so it imports only
torch and (optionally) hf_lnorm's kernels.
"""

from __future__ import annotations

import math
import numbers
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

try:
    from torch._subclasses.fake_tensor import is_fake as _is_fake
except ImportError:  # pragma: no cover
    def _is_fake(x) -> bool:
        return False

try:  # optional: hf_lnorm's fused kernels; the plain-torch path below computes the same numbers
    from hf_lnorm.norms.ops import add_layer_norm as _fused_add_layer_norm
    from hf_lnorm.norms.ops import add_rms_norm as _fused_add_rms_norm
    from hf_lnorm.norms.ops import layer_norm as _fused_layer_norm
    from hf_lnorm.norms.ops import rms_norm as _fused_rms_norm

    FUSED_NORMS_AVAILABLE = True
except ImportError:
    FUSED_NORMS_AVAILABLE = False


def use_fused_norms(x) -> bool:
    """Whether a norm runs hf_lnorm's fused ops on ``x`` in this call: they are importable and this thread
    is not recording a graph (fx Proxy input, ``torch.jit`` tracing or scripting, which torch.onnx's
    TorchScript exporter uses, or ``torch.export``, which its dynamo exporter uses)."""
    if not FUSED_NORMS_AVAILABLE or isinstance(x, torch.fx.Proxy) or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.6
    if is_exporting is not None and is_exporting():
        # the flag is process-wide; this thread exports when it traces x (dynamo, or fake tensors)
        return not (torch.compiler.is_dynamo_compiling() or _is_fake(x))
    return True


class _AddNorm:
    """``add_forward`` of the norms: one fused add+norm op (the subclass's ``_fused_add_norm``) where hf_lnorm's
    kernels are used and the instance is not patched, else the residual add and then the module itself."""

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Residual add and norm in one call (one fused op where hf_lnorm's kernels are used).

        Args:
            x: the sublayer output ``(..., hidden)``.
            residual: the residual stream, same shape.

        Returns:
            ``(norm(x + residual), x + residual)``.
        """
        if "forward" not in self.__dict__ and use_fused_norms(x):
            return self._fused_add_norm(x, residual)
        summed = x + residual
        return self(summed), summed


class LNormLayerNorm(_AddNorm, nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension, with an optional fused residual-add path.

    Built like ``nn.LayerNorm`` (``normalized_shape``, ``eps``, ...) and computing
    the same numbers; where hf_lnorm is installed its fused kernels are used in
    eager runs. ``norm_type="layernorm"`` in a family config builds these.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormLayerNorm
        >>> norm = LNormLayerNorm(16, eps=1e-5)
        >>> x, residual = torch.randn(2, 16), torch.randn(2, 16)
        >>> normed, summed = norm.add_forward(x, residual)
        >>> torch.allclose(normed, torch.nn.functional.layer_norm(x + residual, (16,)), atol=1e-5)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm of ``x`` over its last dimension.

        Args:
            x: input ``(..., hidden)``.

        Returns:
            Tensor shaped and typed like ``x``.
        """
        if use_fused_norms(x):
            return _fused_layer_norm(x, self.weight, self.bias, self.eps)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def _fused_add_norm(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return _fused_add_layer_norm(x, residual, self.weight, self.bias, self.eps)


class LNormRMSNorm(_AddNorm, nn.Module):
    """RMSNorm over the last dimension with a learned gain, Llama casting convention.

    Statistics in fp32, the normalized value cast back to the input dtype, then multiplied by
    ``weight`` (the convention of ``hf_lnorm.norms.ops.rms_norm``, so both paths agree in every dtype).
    ``norm_type="rmsnorm"`` in a family config builds these.

    Args:
        hidden_size: size of the last dimension (and of ``weight``).
        eps: added to the mean square.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormRMSNorm
        >>> norm = LNormRMSNorm(16, eps=1e-6)
        >>> x = torch.randn(2, 16)
        >>> torch.allclose(norm(x), torch.nn.functional.rms_norm(x, (16,), norm.weight, 1e-6), atol=1e-6)
        True
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.normalized_shape = (hidden_size,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm of ``x`` over its last dimension.

        Args:
            x: input ``(..., hidden)``.

        Returns:
            Tensor in the promoted dtype of ``weight`` and ``x``.
        """
        if use_fused_norms(x):
            return _fused_rms_norm(x, self.weight, self.eps)
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.weight * normed

    def _fused_add_norm(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return _fused_add_rms_norm(x, residual, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


def check_dyt_alpha_init(value, name: str = "dyt_alpha_init") -> float:
    """Return ``value`` as a float if it is a positive finite number, else raise naming it.

    Args:
        value (object): the starting value of DyT's ``alpha``.
        name: the option's name, used in the message.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: ``value`` is not a real number (bools are refused), or is zero, negative, inf or nan.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"{name}={value!r} is not supported; accepted values: a positive finite float (e.g. 0.5)")
    return float(value)


class LNormDyT(nn.Module):
    """Dynamic Tanh (DyT): ``weight * tanh(alpha * x) + bias``, elementwise over the last dimension.

    From Zhu et al. 2025, "Transformers without Normalization": a drop-in
    replacement for a norm layer that computes no statistics. ``alpha`` is a
    learnable scalar (stored with shape ``(1,)``) that starts at ``alpha_init``;
    ``weight`` (starts at 1) and ``bias`` (starts at 0) are per channel.
    ``norm_type="dyt"`` in a family config builds these, with ``alpha_init``
    from the config's ``dyt_alpha_init``.

    ``hf_lnorm.patch`` does not patch it: it is not a normalization, so there is
    nothing to fuse, and the patch report lists it as skipped with that reason
    (the class attribute ``is_elementwise_norm_substitute`` marks it, also in
    saved remote-code copies of this file).

    Args:
        hidden_size: size of the last dimension (and of ``weight`` and ``bias``).
        alpha_init: starting value of ``alpha``; a positive finite float.

    Raises:
        ValueError: ``alpha_init`` is not a positive finite float.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormDyT
        >>> dyt = LNormDyT(16, alpha_init=0.5)
        >>> x = torch.randn(2, 16)
        >>> torch.allclose(dyt(x), dyt.weight * torch.tanh(0.5 * x) + dyt.bias)
        True
        >>> sorted(name for name, _ in dyt.named_parameters())
        ['alpha', 'bias', 'weight']
    """

    is_elementwise_norm_substitute = True

    def __init__(self, hidden_size: int, alpha_init: float = 0.5):
        super().__init__()
        self.alpha_init = check_dyt_alpha_init(alpha_init, "alpha_init")
        self.normalized_shape = (hidden_size,)
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init))
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """DyT of ``x``.

        Args:
            x: input ``(..., hidden)``.

        Returns:
            Tensor shaped like ``x``, in the promoted dtype of the parameters and ``x``.
        """
        return self.weight * torch.tanh(self.alpha * x) + self.bias

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Residual add, then DyT (the same interface as the norms; no fused op).

        Args:
            x: the sublayer output ``(..., hidden)``.
            residual: the residual stream, same shape.

        Returns:
            ``(dyt(x + residual), x + residual)``.
        """
        summed = x + residual
        return self(summed), summed

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha_init={self.alpha_init}"


class Passthrough(nn.Module):
    """``norm_type="none"``: no normalization, the same interface as the norms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        summed = x + residual
        return summed, summed
