"""LayerNorm / RMSNorm and residual add+norm as ``torch.library`` custom ops.

Public functions (differentiable, ``torch.compile(fullgraph=True)``-safe,
exported to standard ONNX ops such as ``LayerNormalization`` at opset 17):

* ``layer_norm(x, weight, bias, eps)``
* ``rms_norm(x, weight, eps)`` (Llama convention: ``weight * normed.to(x.dtype)``)
* ``add_layer_norm(x, residual, weight, bias, eps) -> (normed, summed)``
* ``add_rms_norm(x, residual, weight, eps) -> (normed, summed)``
* ``add_layer_norm_(x, residual, weight, bias, eps)``: the in-place inference
  variant (no autograd): ``residual += x``, then the norm of it.

All of them normalize over the last dimension. Under them sit two custom ops,
``hf_lnorm::norm_fwd`` and ``hf_lnorm::norm_bwd``, which cover every variant
of ``reference.py`` except channels-first (``variant``: ``layer_norm``,
``rms_norm_llama``, ``rms_norm_gemma``, ``rms_norm_t5``, ``rms_norm_torch``), with fake (meta) implementations and registered
autograd, so that ``torch.compile`` and ``torch.export`` see one op per norm.
Inside the ops, CUDA tensors run the Triton kernels of ``norms/triton`` (when
Triton is installed) and everything else runs native aten kernels; ``impl``
forces one (``"triton"`` also runs on CPU under ``TRITON_INTERPRET=1``).

On CPU in eager mode the public functions skip the custom-op dispatcher: in
float32 inference (nothing records gradients) they run the C++ kernels of
``norms/cpu`` (one pass per row, recycled output blocks; ``impl="cpp"`` in
the op), otherwise the same aten kernels as the op; on CUDA in eager mode they call the same Triton
kernels through a plain ``autograd.Function`` (``_TritonNorm``); under ``torch.compile``/``torch.export`` and on other
devices they go through the ops. During ONNX export they emit plain aten ops
so the exporter produces standard ONNX nodes.

Examples:
    >>> import torch
    >>> from hf_lnorm.norms.ops import add_layer_norm
    >>> x, r = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    >>> y, s = add_layer_norm(x, r, torch.ones(8), torch.zeros(8), 1e-5)
    >>> torch.allclose(s, x + r)
    True
"""

from __future__ import annotations

import os
import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu as _cpu

try:
    from torch._subclasses.fake_tensor import is_fake as _is_fake
except ImportError:  # pragma: no cover - torch without fake tensors
    def _is_fake(x) -> bool:
        return False
from ._common import _HALF, TRITON_MAX_HIDDEN, output_dtype  # noqa: F401  (public here too)
from ._impls import (  # noqa: F401  (re-exported: callers reach them as ops.<name>)
    CPP_VARIANTS, _aten_bwd, _aten_fwd, _cpp_covers, _cpp_fwd, _rms_llama_native, _rms_llama_plain, _rounded_xhat,
    _rows, _TritonNorm, _use_cpp,
)

VARIANTS = ("layer_norm", "rms_norm_llama", "rms_norm_gemma", "rms_norm_t5", "rms_norm_torch")
IMPLS = ("auto", "aten", "triton", "cpp", "cpp_inference")
_OLD_VARIANT_NAMES = {"rms_llama": "rms_norm_llama", "rms_gemma": "rms_norm_gemma", "rms_t5": "rms_norm_t5",
                      "rms_torch": "rms_norm_torch"}
_OLD_CONSTANTS = {"KINDS": "VARIANTS", "CPP_KINDS": "CPP_VARIANTS"}


def __getattr__(name: str):
    if name in _OLD_CONSTANTS:
        new = _OLD_CONSTANTS[name]
        warnings.warn(f"hf_lnorm.norms.ops.{name} is deprecated: use hf_lnorm.norms.ops.{new}",
                      DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _variant_name(variant: str) -> str:
    """``variant``, with the deprecated names of the RMS variants (``rms_llama``...) mapped to
    ``reference.VARIANTS`` names under a ``DeprecationWarning``."""
    new = _OLD_VARIANT_NAMES.get(variant)
    if new is None:
        return variant
    warnings.warn(f"norm variant {variant!r} is deprecated: use {new!r}", DeprecationWarning, stacklevel=3)
    return new


# --------------------------------------------------------------------------- helpers


def triton_available() -> bool:
    """Whether the Triton kernels can be imported (the package is installed)."""
    from . import triton as _triton_pkg

    return _triton_pkg.is_available()


def triton_interpret() -> bool:
    """Whether Triton runs in interpreter mode (``TRITON_INTERPRET=1``), i.e. on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check(variant: str, impl: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown norm variant {variant!r}; accepted: {', '.join(VARIANTS)}")
    if impl not in IMPLS:
        raise ValueError(f"unknown norm impl {impl!r}; accepted: {', '.join(IMPLS)}")


def _cpp_inference(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                   variant: str) -> bool:
    """The one test for the C++ path of the eager functions: eager CPU (not compiling, tracing or under
    ``TRITON_INTERPRET=1``), nothing records gradients, a covered case, kernels built."""
    if not _direct_aten(x) or torch.jit.is_tracing():  # traces record aten ops, not this op
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, residual, weight, bias)):
        return False
    return _cpp_covers(x, residual, weight, bias, variant) and _cpu.is_available()


def _use_triton(x: Tensor, impl: str) -> bool:
    if impl in ("aten", "cpp", "cpp_inference"):
        return False
    if impl == "triton":
        if not triton_available():
            raise RuntimeError("impl='triton' was forced but Triton is not installed (pip install triton)")
        if x.device.type != "cuda" and not triton_interpret():
            raise RuntimeError(
                f"impl='triton' was forced for a {x.device.type} tensor; Triton runs on CUDA tensors, "
                "or on CPU only with TRITON_INTERPRET=1"
            )
        return True
    return x.device.type == "cuda" and x.shape[-1] <= TRITON_MAX_HIDDEN and triton_available()


# --------------------------------------------------------------------------- custom ops


@torch.library.custom_op("hf_lnorm::norm_fwd", mutates_args=())
def norm_fwd(
    x: Tensor,
    residual: Optional[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    variant: str,
    impl: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(Residual add +) norm over the last dim.

    Args:
        x: input ``(..., N)``.
        residual: optional tensor added to ``x`` before the norm (same shape).
        weight: optional ``(N,)`` gain.
        bias: optional ``(N,)`` shift (``layer_norm`` only).
        eps: added to the variance / mean square.
        variant: one of ``VARIANTS`` (the casting convention of the original module).
        impl: ``auto`` | ``aten`` | ``triton`` | ``cpp`` (the C++ CPU kernels of
            ``norms/cpu``, float32 only; ``auto`` keeps aten on CPU here, the
            public functions pick ``cpp`` themselves in CPU inference) |
            ``cpp_inference`` (the C++ kernels where the eager functions use
            them, aten otherwise: what graphs traced from a model patched with
            the ``cpp`` backend call, so they compute what eager does).

    Returns:
        ``(y, summed, mean, rstd)``: ``summed`` is ``x + residual`` (an empty
            tensor without residual), ``mean``/``rstd`` fp32 of shape ``x.shape[:-1]``
            (``mean`` empty for RMS variants).
    """
    variant = _variant_name(variant)
    _check(variant, impl)
    if bias is not None and variant != "layer_norm":
        raise ValueError(f"norm variant {variant!r} takes no bias (only 'layer_norm' does)")
    if _use_cpp(x, residual, weight, bias, variant, impl):
        y, s, mean, rstd = _cpp_fwd(x, residual, weight, bias, eps, variant)
    elif _use_triton(x, impl):
        from .triton import kernels

        y, s, mean, rstd = kernels.norm_fwd(x, residual, weight, bias, eps, variant)
    else:
        y, s, mean, rstd = _aten_fwd(x, residual, weight, bias, eps, variant)
    if residual is None:
        s = x.new_empty((0,))
    return y, s, mean, rstd


@norm_fwd.register_fake
def _norm_fwd_fake(x, residual, weight, bias, eps, variant, impl):
    variant = _variant_name(variant)
    s_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    y = x.new_empty(x.shape, dtype=output_dtype(variant, s_dtype, None if weight is None else weight.dtype))
    s = x.new_empty((0,)) if residual is None else x.new_empty(x.shape, dtype=s_dtype)
    stats = x.shape[:-1]
    mean = x.new_empty(stats if variant == "layer_norm" else (0,), dtype=torch.float32)
    rstd = x.new_empty(stats, dtype=torch.float32)
    return y, s, mean, rstd


@torch.library.custom_op("hf_lnorm::norm_bwd", mutates_args=())
def norm_bwd(
    dy: Tensor,
    ds: Optional[Tensor],
    s: Tensor,
    weight: Optional[Tensor],
    mean: Tensor,
    rstd: Tensor,
    variant: str,
    has_bias: bool,
    impl: str,
    mask: List[bool],
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``norm_fwd`` with respect to its normalized input, weight and bias.

    Args:
        dy: gradient of ``y``.
        ds: optional gradient that reached the sum ``x + residual`` directly.
        s: the tensor that was normalized (``x`` or ``x + residual``).
        weight: as saved by the forward.
        mean: as saved by the forward.
        rstd: as saved by the forward.
        variant: as in ``norm_fwd``.
        has_bias: whether the forward had a bias.
        impl: as in ``norm_fwd``.
        mask: which of (dx, dweight, dbias) are needed.

    Returns:
        ``(dx, dweight, dbias)``: dx (including ``ds``) in ``s.dtype``; dweight and dbias
            fp32 ``(N,)`` accumulated across rows. Gradients that are not needed
            come back as empty tensors.
    """
    variant = _variant_name(variant)
    _check(variant, impl)
    if _use_triton(s, impl):
        from .triton import kernels

        dx, dw, db = kernels.norm_bwd(dy, ds, s, weight, mean, rstd, variant, has_bias, mask)
    else:
        dx, dw, db = _aten_bwd(dy, ds, s, weight, mean, rstd, variant, has_bias, mask)
    dx = s.new_empty((0,)) if dx is None else dx
    dw = s.new_empty((0,), dtype=torch.float32) if dw is None else dw.float()
    db = s.new_empty((0,), dtype=torch.float32) if db is None else db.float()
    return dx, dw, db


@norm_bwd.register_fake
def _norm_bwd_fake(dy, ds, s, weight, mean, rstd, variant, has_bias, impl, mask):
    variant = _variant_name(variant)
    n = s.shape[-1]
    f32 = torch.float32
    dx = s.new_empty(s.shape) if mask[0] else s.new_empty((0,))
    dw = s.new_empty((n,), dtype=f32) if (mask[1] and weight is not None) else s.new_empty((0,), dtype=f32)
    db = s.new_empty((n,), dtype=f32) if (mask[2] and has_bias) else s.new_empty((0,), dtype=f32)
    return dx, dw, db


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, eps, variant, impl = inputs
    variant = _variant_name(variant)
    y, s, mean, rstd = output
    normalized = x if residual is None else s
    ctx.save_for_backward(normalized, weight, mean, rstd)
    ctx.variant, ctx.impl = variant, impl
    ctx.has_bias = bias is not None
    ctx.has_residual = residual is not None
    ctx.dtypes = (x.dtype, None if residual is None else residual.dtype)
    ctx.param_dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, dy, ds, dmean, drstd):
    s, weight, mean, rstd = ctx.saved_tensors
    need_x = ctx.needs_input_grad[0] or (ctx.has_residual and ctx.needs_input_grad[1])
    mask = [bool(need_x), bool(ctx.needs_input_grad[2] and weight is not None), bool(ctx.needs_input_grad[3] and ctx.has_bias)]
    if dy is None:
        dy = torch.zeros_like(s)
    if not ctx.has_residual or ds is None or ds.numel() == 0:
        ds = None
    dx, dw, db = norm_bwd(dy.contiguous(), ds, s, weight, mean, rstd, ctx.variant, ctx.has_bias, ctx.impl, mask)
    gx = gr = gw = gb = None
    if need_x:
        if ctx.needs_input_grad[0]:
            gx = dx.to(ctx.dtypes[0])
        if ctx.has_residual and ctx.needs_input_grad[1]:
            gr = dx.to(ctx.dtypes[1])
    if mask[1]:
        gw = dw.to(ctx.param_dtypes[0])
    if mask[2]:
        gb = db.to(ctx.param_dtypes[1])
    return gx, gr, gw, gb, None, None, None


norm_fwd.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- eager CUDA fast path


def _direct_triton(x: Tensor, interpreted_ok: bool = False) -> bool:
    """Eager CUDA (or, with ``interpreted_ok``, CPU under ``TRITON_INTERPRET=1``) with Triton installed:
    run the kernels through ``_TritonNorm`` instead of the custom-op dispatcher."""
    on_device = x.device.type == "cuda" or (interpreted_ok and triton_interpret())
    return (on_device and x.shape[-1] <= TRITON_MAX_HIDDEN and not compiling(x)
            and not _exporting(x) and triton_available())


def triton_norm_fwd(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                    eps: float, variant: Optional[str] = None, *, kind: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """``(y, summed)`` from the Triton kernels for any ``variant``; ``summed`` is ``x`` without residual.

    Eager CUDA goes through ``_TritonNorm`` (cheap to call), everything else
    (``torch.compile``, export, ``TRITON_INTERPRET=1`` on CPU) through the
    ``norm_fwd`` custom op with ``impl="triton"``.

    Args:
        x: as in ``norm_fwd``.
        residual: as in ``norm_fwd``.
        weight: as in ``norm_fwd``.
        bias: as in ``norm_fwd``.
        eps: as in ``norm_fwd``.
        variant: one of ``VARIANTS``.
        kind: deprecated name of ``variant``.

    Returns:
        ``(y, summed)``.

    Raises:
        TypeError: neither or both of ``variant`` and ``kind`` are given.
    """
    if kind is not None:
        if variant is not None:
            raise TypeError("triton_norm_fwd got both 'variant' and its deprecated name 'kind'; pass 'variant'")
        warnings.warn("triton_norm_fwd(kind=...) is deprecated: use variant=...", DeprecationWarning, stacklevel=2)
        variant = kind
    if variant is None:
        raise TypeError("triton_norm_fwd needs 'variant' (one of " + ", ".join(VARIANTS) + ")")
    variant = _variant_name(variant)
    if _direct_triton(x, interpreted_ok=True):
        out = _TritonNorm.apply(x, residual, weight, bias, float(eps), variant)
        return out if residual is not None else (out, x)
    y, s, _, _ = norm_fwd(x, residual, weight, bias, float(eps), variant, "triton")
    return y, (s if residual is not None else x)


# --------------------------------------------------------------------------- public functions


def compiling(x: Tensor) -> bool:
    """Whether ``x`` is being traced in this thread by ``torch.compile`` or ``torch.export``.

    ``torch.compiler.is_compiling()`` alone is process-wide while a non-strict
    ``torch.export`` (and so torch.onnx's dynamo exporter) runs, so other threads
    would see it too; that export hands the model fake tensors, which tell.
    """
    if torch.compiler.is_dynamo_compiling():
        return True
    return torch.compiler.is_compiling() and _is_fake(x)


def _direct_aten(x: Tensor) -> bool:
    """Eager CPU: call aten directly (same kernels as the op, without dispatch overhead)."""
    return x.device.type == "cpu" and not compiling(x) and not triton_interpret()


def _exporting(x: Tensor) -> bool:
    """This thread is inside ``torch.onnx.export`` (TorchScript or dynamo): emit plain aten ops for standard
    ONNX nodes (torch's export flag is process-wide; the trace state of ``x`` says whether it is this thread)."""
    return torch.onnx.is_in_onnx_export() and (torch.jit.is_tracing() or compiling(x))


def layer_norm(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dim (``nn.LayerNorm`` numerics: fp32 statistics, output in ``x.dtype``).

    Public as ``hf_lnorm.norms.fused_layer_norm``. Differentiable, safe under
    ``torch.compile(fullgraph=True)``, exported to ONNX as ``LayerNormalization``.
    Float32 CPU inference runs the C++ kernel when it is built (equal to aten
    within fp32 rounding), CUDA runs the Triton kernel when Triton is installed,
    everything else runs aten's ``layer_norm``.

    Args:
        x: input ``(..., N)``.
        weight: optional ``(N,)`` gain.
        bias: optional ``(N,)`` bias.
        eps: added to the variance.

    Returns:
        Tensor shaped and typed like ``x``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import fused_layer_norm
        >>> x, w, b = torch.randn(2, 5, 32), torch.randn(32), torch.randn(32)
        >>> torch.allclose(fused_layer_norm(x, w, b), torch.nn.functional.layer_norm(x, (32,), w, b), atol=1e-5)
        True
    """
    if _cpp_inference(x, None, weight, bias, "layer_norm"):
        return _cpp_fwd(x, None, weight, bias, eps, "layer_norm")[0]
    if _direct_aten(x) or _exporting(x):
        return F.layer_norm(x, (int(x.shape[-1]),), weight, bias, eps)
    if _direct_triton(x):
        return _TritonNorm.apply(x, None, weight, bias, float(eps), "layer_norm")
    return norm_fwd(x, None, weight, bias, float(eps), "layer_norm", "auto")[0]


def rms_norm(x: Tensor, weight: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """RMSNorm over the last dim in the Llama convention (``weight * normed.to(x.dtype)``).

    Public as ``hf_lnorm.norms.fused_rms_norm``. Differentiable and
    compile-safe; the statistics are computed in float32, the normalized value is
    cast back to ``x.dtype`` and then multiplied by the weight, as
    ``LlamaRMSNorm`` does. During ONNX export it is written as plain ops
    (opset 17 has no RMSNorm node).

    Args:
        x: input ``(..., N)``.
        weight: optional ``(N,)`` gain.
        eps: added to the mean square.

    Returns:
        Tensor in ``promote(weight.dtype, x.dtype)`` (``x.dtype`` without weight).

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import fused_rms_norm, rms_norm
        >>> x, w = torch.randn(4, 64), torch.randn(64)
        >>> torch.allclose(fused_rms_norm(x, w), rms_norm(x, w, variant="rms_norm_llama"), atol=1e-5)
        True
    """
    if _exporting(x):
        return _rms_llama_plain(x, weight, eps)
    if _cpp_inference(x, None, weight, None, "rms_norm_llama"):
        return _cpp_fwd(x, None, weight, None, eps, "rms_norm_llama")[0]
    if _direct_aten(x):
        return _rms_llama_native(x, weight, eps)
    if _direct_triton(x):
        return _TritonNorm.apply(x, None, weight, None, float(eps), "rms_norm_llama")
    return norm_fwd(x, None, weight, None, float(eps), "rms_norm_llama", "auto")[0]


def add_layer_norm(
    x: Tensor, residual: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5
) -> Tuple[Tensor, Tensor]:
    """Fused ``summed = x + residual; normed = layer_norm(summed)``.

    One pass over the activations for the add and the norm where a kernel is
    available (the C++ kernel in float32 CPU inference, Triton on CUDA);
    differentiable in both outputs. The inputs are not modified: see
    ``add_layer_norm_`` for the in-place inference variant.

    Args:
        x: the sublayer output ``(..., N)``.
        residual: the residual stream, same shape as ``x``.
        weight: optional ``(N,)`` gain.
        bias: optional ``(N,)`` bias.
        eps: added to the variance.

    Returns:
        ``(normed, summed)``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import add_layer_norm
        >>> x, r = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
        >>> normed, summed = add_layer_norm(x, r, torch.ones(8), torch.zeros(8), 1e-5)
        >>> torch.allclose(summed, x + r), torch.allclose(normed, torch.nn.functional.layer_norm(x + r, (8,)), atol=1e-5)
        (True, True)
    """
    if _cpp_inference(x, residual, weight, bias, "layer_norm"):
        y, s, _, _ = _cpp_fwd(x, residual, weight, bias, eps, "layer_norm")
        return y, s
    if _direct_aten(x) or _exporting(x):
        s = x + residual
        return F.layer_norm(s, (int(s.shape[-1]),), weight, bias, eps), s
    if _direct_triton(x):
        return _TritonNorm.apply(x, residual, weight, bias, float(eps), "layer_norm")
    y, s, _, _ = norm_fwd(x, residual, weight, bias, float(eps), "layer_norm", "auto")
    return y, s


def add_rms_norm(x: Tensor, residual: Tensor, weight: Optional[Tensor] = None, eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Fused ``summed = x + residual; normed = rms_norm(summed)`` (Llama convention).

    The pre-norm block step of Llama-style models in one call; differentiable in
    both outputs, inputs not modified. The norm is ``fused_rms_norm``'s.

    Args:
        x: the sublayer output ``(..., N)``.
        residual: the residual stream, same shape as ``x``.
        weight: optional ``(N,)`` gain.
        eps: added to the mean square.

    Returns:
        ``(normed, summed)``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import add_rms_norm, fused_rms_norm
        >>> x, r, w = torch.randn(3, 16), torch.randn(3, 16), torch.randn(16)
        >>> normed, summed = add_rms_norm(x, r, w)
        >>> torch.allclose(summed, x + r), torch.allclose(normed, fused_rms_norm(x + r, w), atol=1e-5)
        (True, True)
    """
    if _exporting(x):
        s = x + residual
        return _rms_llama_plain(s, weight, eps), s
    if _cpp_inference(x, residual, weight, None, "rms_norm_llama"):
        y, s, _, _ = _cpp_fwd(x, residual, weight, None, eps, "rms_norm_llama")
        return y, s
    if _direct_aten(x):
        s = x + residual
        return _rms_llama_native(s, weight, eps), s
    if _direct_triton(x):
        return _TritonNorm.apply(x, residual, weight, None, float(eps), "rms_norm_llama")
    y, s, _, _ = norm_fwd(x, residual, weight, None, float(eps), "rms_norm_llama", "auto")
    return y, s


def add_layer_norm_(
    x: Tensor, residual: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5,
    impl: str = "auto",
) -> Tuple[Tensor, Tensor]:
    """In-place inference variant of ``add_layer_norm``: the sum is written into ``residual``.

    ``residual += x``, then ``normed = layer_norm(residual)``: one new
    activation-sized tensor instead of eager's two. Use it where the old
    residual is dead afterwards (the residual stream of a pre-LN block in
    inference). Not differentiable. (aten has no LayerNorm that writes into a
    given buffer: its ``out=`` variant computes into a temporary and copies,
    which costs more than it saves, so the output is allocated.)

    Args:
        x: sublayer output ``(..., N)``.
        residual: tensor of the same shape and dtype; receives the sum.
        weight: optional ``(N,)`` gain.
        bias: optional ``(N,)`` bias.
        eps: added to the variance.
        impl: ``auto`` (the C++ kernels in float32 CPU inference when they are
            built, aten otherwise) or ``aten`` (always aten: ``residual.add_(x)``
            then ``F.layer_norm``, the stock model's numbers bit for bit).

    Returns:
        ``(normed, residual)``, i.e. ``(normed, summed)`` with the sum in ``residual``.

    Raises:
        RuntimeError: autograd is recording and an input requires grad.
        ValueError: ``x`` and ``residual`` differ in shape or dtype, or ``impl`` is not ``auto`` or ``aten``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import add_layer_norm_
        >>> x, residual = torch.randn(2, 8), torch.randn(2, 8)
        >>> expected = x + residual
        >>> with torch.no_grad():
        ...     normed, summed = add_layer_norm_(x, residual)
        >>> summed is residual, torch.allclose(residual, expected)
        (True, True)
    """
    if impl not in ("auto", "aten"):
        raise ValueError(f"add_layer_norm_ impl {impl!r} is not accepted; accepted: auto, aten")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, residual, weight, bias)):
        raise RuntimeError(
            "add_layer_norm_ writes into its inputs and has no autograd; use add_layer_norm when gradients are needed"
        )
    if x.shape != residual.shape or x.dtype != residual.dtype:
        raise ValueError(
            f"add_layer_norm_ needs x and residual of one shape and dtype, got {tuple(x.shape)}/{x.dtype} "
            f"and {tuple(residual.shape)}/{residual.dtype}"
        )
    if impl == "auto" and residual.is_contiguous() and _cpp_inference(x, residual, weight, bias, "layer_norm"):
        y, s, _, _ = _cpp_fwd(x, residual, weight, bias, eps, "layer_norm", in_place=True)
        return y, s
    residual.add_(x)
    return F.layer_norm(residual, (int(residual.shape[-1]),), weight, bias, eps), residual
