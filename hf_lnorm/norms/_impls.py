"""The implementations under ``norms/ops.py``: aten forward/backward, the C++ CPU kernel call, the Triton autograd.Function.

``ops`` decides which one runs (custom-op dispatch, eager fast paths, ONNX
export); this module only computes. Everything here is re-exported from
``hf_lnorm.norms.ops`` under the same names.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu as _cpu
from ._common import _HALF

CPP_VARIANTS = ("layer_norm", "rms_norm_llama", "rms_norm_t5", "rms_norm_torch")  # float32 math is the same for the three RMS variants


# --------------------------------------------------------------------------- C++ CPU kernels


def _cpp_covers(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                variant: str) -> bool:
    """Whether the C++ CPU kernels (``norms/cpu``) compute this case: float32 CPU tensors, a covered variant."""
    if x.dtype != torch.float32 or not x.is_cpu or variant not in CPP_VARIANTS or x.dim() == 0:
        return False
    n = x.shape[-1]
    if residual is not None and (residual.dtype != torch.float32 or not residual.is_cpu or residual.shape != x.shape):
        return False
    for t in (weight, bias):
        if t is not None and (t.dtype != torch.float32 or not t.is_cpu or t.shape != (n,)):
            return False
    return True


def _cpp_fwd(x, residual, weight, bias, eps, variant, in_place=False):
    """``[y, s, mean, rstd]`` from the C++ kernels (contiguous copies where needed; callers checked
    that the kernels are available)."""
    c = [t if t is None or t.is_contiguous() else t.contiguous() for t in (x, residual, weight, bias)]
    return torch.ops.hf_lnorm_cpu.add_norm(c[0], c[1], c[2], c[3], float(eps), variant != "layer_norm", in_place)


def _use_cpp(x, residual, weight, bias, variant, impl) -> bool:
    """Whether the op runs the C++ kernels: ``impl="cpp"`` checks the case is covered and the kernels run
    here (clear errors otherwise); ``impl="cpp_inference"`` uses them exactly where the eager functions
    would (float32 CPU inference of a covered case, kernels built) and aten everywhere else."""
    if impl == "cpp_inference":
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, residual, weight, bias)):
            return False
        return _cpp_covers(x, residual, weight, bias, variant) and _cpu.is_available()
    if impl != "cpp":
        return False
    if not _cpp_covers(x, residual, weight, bias, variant):
        raise ValueError(
            f"impl='cpp' runs float32 CPU tensors of variants {', '.join(CPP_VARIANTS)}; got variant {variant!r}, "
            f"x {x.dtype} on {x.device.type}" + ("" if residual is None else f", residual {residual.dtype}")
        )
    why = _cpu.unavailable_reason()
    if why is not None:
        raise RuntimeError(f"impl='cpp' was forced but the hf_lnorm CPU kernels are not available: {why}")
    return True


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


# --------------------------------------------------------------------------- aten implementations


def _aten_fwd(x, residual, weight, bias, eps, variant):
    s = x if residual is None else x + residual
    n = s.shape[-1]
    if variant == "layer_norm":
        mixed = any(t is not None and t.dtype != s.dtype for t in (weight, bias))
        if mixed and s.device.type != "cpu":
            # CUDA's kernel wants one dtype; CPU's mixed kernel computes in fp32 and returns s.dtype: do the same
            y, mean, rstd = torch.ops.aten.native_layer_norm(
                s.float(), (n,), None if weight is None else weight.float(), None if bias is None else bias.float(), eps)
            return y.to(s.dtype), s, mean.reshape(s.shape[:-1]), rstd.reshape(s.shape[:-1])
        y, mean, rstd = torch.ops.aten.native_layer_norm(s, (n,), weight, bias, eps)
        if mean.dtype != torch.float32:  # CPU keeps half-precision stats; the backward wants fp32
            sf = s.float()
            mean = sf.mean(-1)
            rstd = torch.rsqrt((sf - mean.unsqueeze(-1)).pow(2).mean(-1) + eps)
        return y, s, mean.reshape(s.shape[:-1]), rstd.reshape(s.shape[:-1])
    sf = s.float()
    rstd = torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + eps)
    normed = sf * rstd
    if variant == "rms_norm_llama":
        y = normed.to(s.dtype)
        if weight is not None:
            y = weight * y
    elif variant == "rms_norm_gemma":
        y = (normed if weight is None else normed * (1.0 + weight.float())).to(s.dtype)
    elif variant == "rms_norm_t5":
        if weight is None:
            y = normed
        else:
            y = weight * (normed.to(weight.dtype) if weight.dtype in _HALF else normed)
    else:  # rms_norm_torch
        y = (normed if weight is None else normed * weight.float()).to(s.dtype)
    return y, s, s.new_empty((0,), dtype=torch.float32), rstd.reshape(s.shape[:-1])


def _rounded_xhat(variant, xhat, s_dtype, weight):
    """xhat as the original multiplies it by the weight (Llama/T5 round it first)."""
    if variant == "rms_norm_llama":
        return xhat.to(s_dtype).float()
    if variant == "rms_norm_t5" and weight is not None and weight.dtype in _HALF:
        return xhat.to(weight.dtype).float()
    return xhat


def _aten_bwd(dy, ds, s, weight, mean, rstd, variant, has_bias, mask):
    """Backward in fp32 from the saved fp32 statistics (plain torch ops, any device)."""
    sf, g = s.float(), dy.float()
    r = rstd.unsqueeze(-1)
    xhat = (sf - mean.unsqueeze(-1)) * r if variant == "layer_norm" else sf * r
    if weight is None:
        dxhat = g
    elif variant == "rms_norm_gemma":
        dxhat = g * (1.0 + weight.float())
    else:
        dxhat = g * weight.float()
    dx = None
    if mask[0]:
        proj = xhat * (dxhat * xhat).mean(-1, keepdim=True)
        if variant == "layer_norm":
            proj = proj + dxhat.mean(-1, keepdim=True)
        dx = r * (dxhat - proj)
        if ds is not None:
            dx = dx + ds.float()
        dx = dx.to(s.dtype)
    dw = None
    if weight is not None and mask[1]:
        dw = _rows(g * _rounded_xhat(variant, xhat, s.dtype, weight)).sum(0)
    db = _rows(g).sum(0) if has_bias and mask[2] else None
    return dx, dw, db


# --------------------------------------------------------------------------- eager CUDA: Triton without the dispatcher


class _TritonNorm(torch.autograd.Function):
    """Eager CUDA: the Triton kernels under a plain autograd.Function.

    Same kernels and saved tensors as the ``norm_fwd`` custom op, without the
    custom-op dispatcher and its autograd wrapper, whose Python cost per call
    is several times a small norm's kernel time. ``torch.compile``,
    ``torch.export`` and ONNX export still go through the custom ops.
    """

    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps, variant):
        from .triton import kernels

        y, s, mean, rstd = kernels.norm_fwd(x, residual, weight, bias, eps, variant)
        ctx.save_for_backward(s, weight, mean, rstd)
        ctx.variant, ctx.has_bias, ctx.has_residual = variant, bias is not None, residual is not None
        ctx.dtypes = (x.dtype, None if residual is None else residual.dtype,
                      None if weight is None else weight.dtype, None if bias is None else bias.dtype)
        ctx.set_materialize_grads(False)
        return (y, s) if residual is not None else y

    @staticmethod
    def backward(ctx, dy, ds=None):
        from .triton import kernels

        s, weight, mean, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        need_x = need[0] or (ctx.has_residual and need[1])
        mask = [bool(need_x), bool(need[2] and weight is not None), bool(need[3] and ctx.has_bias)]
        if dy is None:
            dy = torch.zeros_like(s)
        dx, dw, db = kernels.norm_bwd(dy.contiguous(), ds if ctx.has_residual else None, s, weight, mean, rstd,
                                      ctx.variant, ctx.has_bias, mask)
        gx = dx.to(ctx.dtypes[0]) if need[0] else None
        gr = dx.to(ctx.dtypes[1]) if (ctx.has_residual and need[1]) else None
        gw = dw.to(ctx.dtypes[2]) if mask[1] else None
        gb = db.to(ctx.dtypes[3]) if mask[2] else None
        return gx, gr, gw, gb, None, None


# --------------------------------------------------------------------------- Llama RMSNorm in plain aten (eager, ONNX export)


def _rms_llama_plain(s: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    """Llama RMSNorm from elementary ops (what ONNX export sees)."""
    sf = s.float()
    y = (sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + eps)).to(s.dtype)
    return y if weight is None else weight * y


def _rms_llama_native(s: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    """Llama RMSNorm through the native fused ``F.rms_norm`` kernel (same casting order)."""
    n = (int(s.shape[-1]),)
    if weight is not None and s.dtype == weight.dtype == torch.float32:
        return F.rms_norm(s, n, weight, eps)
    y = F.rms_norm(s, n, None, eps)  # fp32 math, one cast back to s.dtype
    return y if weight is None else weight * y
