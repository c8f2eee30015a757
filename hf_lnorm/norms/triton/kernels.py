"""Triton LayerNorm / RMSNorm kernels, with optional fused residual add, forward and backward.

One kernel pair covers every variant of ``norms/reference.py``:

* forward: one program per row. Loads ``x`` (and ``residual``; the sum is
  rounded to its own dtype and stored, as eager ``x + residual`` would),
  computes the statistics in fp32, then applies the variant's casting
  convention (``ROUND``: Llama rounds the normalized row to the input dtype
  before the gain, T5 to a half-precision gain's dtype; ``GEMMA``: gain
  ``1 + weight``) and stores the output in the caller's dtype, plus fp32
  mean / rstd for the backward.
* backward: each program walks a contiguous block of rows, writes the input
  gradient (plus the gradient that reached the sum directly) and accumulates
  its rows' weight / bias gradients in fp32 registers; the per-program partial
  sums are added on the host in fp32.

The host functions take any shape ``(..., N)`` and normalize the last dim.
They run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from .._common import TRITON_MAX_HIDDEN as MAX_HIDDEN  # one row must fit one block
from .._common import _HALF, output_dtype


@triton.jit
def _norm_fwd_kernel(
    X, R, S, Y, W, B, MEAN, RSTD,
    stride_x, stride_r, stride_s, stride_y,
    N, eps,
    HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    IS_RMS: tl.constexpr, GEMMA: tl.constexpr, ROUND: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        s = (x + r).to(S.dtype.element_ty)
        tl.store(S + row * stride_s + cols, s, mask=mask)
        x = s.to(tl.float32)
    if IS_RMS:
        rstd = tl.rsqrt(tl.sum(x * x, axis=0) / N + eps)
        xhat = x * rstd
    else:
        mean = tl.sum(x, axis=0) / N
        xc = tl.where(mask, x - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(xc * xc, axis=0) / N + eps)
        xhat = xc * rstd
        tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)
    if ROUND == 1:  # Llama: normed.to(input dtype) before the gain
        xhat = xhat.to(S.dtype.element_ty).to(tl.float32)
    if ROUND == 2:  # T5 with a half-precision gain: normed.to(weight dtype)
        xhat = xhat.to(W.dtype.element_ty).to(tl.float32)
    y = xhat
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        if GEMMA:
            w = w + 1.0
        y = y * w
    if HAS_B:
        y = y + tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _norm_bwd_kernel(
    DY, DS, S, W, MEAN, RSTD, DX, DW_PART, DB_PART,
    stride_dy, stride_ds, stride_s, stride_dx,
    M, N, rows_per_prog,
    HAS_DS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    IS_RMS: tl.constexpr, GEMMA: tl.constexpr, ROUND: tl.constexpr,
    COMPUTE_DX: tl.constexpr, COMPUTE_DW: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        if GEMMA:
            w = w + 1.0
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_start = pid.to(tl.int64) * rows_per_prog
    for i in range(0, rows_per_prog):
        row = row_start + i
        if row < M:
            s = tl.load(S + row * stride_s + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + row)
            if IS_RMS:
                xhat = s * rstd
            else:
                xhat = tl.where(mask, (s - tl.load(MEAN + row)) * rstd, 0.0)
            if HAS_W:
                dxhat = dy * w
            else:
                dxhat = dy
            if COMPUTE_DX:
                c1 = tl.sum(dxhat * xhat, axis=0) / N
                if IS_RMS:
                    dx = (dxhat - xhat * c1) * rstd
                else:
                    c2 = tl.sum(dxhat, axis=0) / N
                    dx = (dxhat - xhat * c1 - c2) * rstd
                if HAS_DS:
                    dx = dx + tl.load(DS + row * stride_ds + cols, mask=mask, other=0.0).to(tl.float32)
                tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
            if COMPUTE_DW:
                if ROUND == 1:
                    xhat = xhat.to(S.dtype.element_ty).to(tl.float32)
                if ROUND == 2:
                    xhat = xhat.to(W.dtype.element_ty).to(tl.float32)
                dw_acc += dy * xhat
            if HAS_B:
                db_acc += dy
    if COMPUTE_DW:
        tl.store(DW_PART + pid * N + cols, dw_acc, mask=mask)
    if HAS_B:
        tl.store(DB_PART + pid * N + cols, db_acc, mask=mask)


# --------------------------------------------------------------------------- host side


def _flags(variant: str, weight: Optional[torch.Tensor]) -> Tuple[bool, bool, int]:
    """(IS_RMS, GEMMA, ROUND) for a norm variant."""
    is_rms = variant != "layer_norm"
    gemma = variant == "rms_norm_gemma"
    rnd = 0
    if variant == "rms_norm_llama":
        rnd = 1
    elif variant == "rms_norm_t5" and weight is not None and weight.dtype in _HALF:
        rnd = 2
    return is_rms, gemma, rnd


def _block(n: int, num_warps: Optional[int] = None) -> Tuple[int, int]:
    if n > MAX_HIDDEN:
        raise ValueError(f"Triton norm kernels support hidden sizes up to {MAX_HIDDEN}, got {n}")
    block = triton.next_power_of_2(max(n, 1))
    return block, num_warps or min(max(block // 256, 1), 16)


def _rows2d(t: torch.Tensor) -> torch.Tensor:
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def norm_fwd(
    x: torch.Tensor,
    residual: Optional[torch.Tensor],
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: float,
    variant: str,
    num_warps: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward of ``(residual +) norm`` over the last dim.

    Args:
        x: ``(..., N)`` input.
        residual: optional tensor of the same shape.
        weight: optional ``(N,)`` gain.
        bias: optional ``(N,)`` bias.
        eps: the epsilon.
        variant: ``layer_norm`` | ``rms_norm_llama`` | ``rms_norm_gemma`` | ``rms_norm_t5`` | ``rms_norm_torch``.
        num_warps: override the warps per row (tuning; default from the row width).

    Returns:
        ``(y, summed, mean, rstd)``; ``summed`` is ``x`` itself without residual,
            ``mean`` is empty for RMS variants; stats are fp32 shaped ``x.shape[:-1]``.
    """
    n = x.shape[-1]
    block, warps = _block(n, num_warps)
    x2 = _rows2d(x)
    m = x2.shape[0]
    is_rms, gemma, rnd = _flags(variant, weight)
    if residual is not None:
        r2 = _rows2d(residual)
        s2 = torch.empty(x2.shape, dtype=torch.promote_types(x.dtype, residual.dtype), device=x.device)
    else:
        r2, s2 = x2, x2
    y2 = torch.empty(x2.shape, dtype=output_dtype(variant, s2.dtype, None if weight is None else weight.dtype), device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    mean = rstd if is_rms else torch.empty(m, dtype=torch.float32, device=x.device)
    if m > 0:
        _norm_fwd_kernel[(m,)](
            x2, r2, s2, y2,
            weight if weight is not None else x2, bias if bias is not None else x2, mean, rstd,
            x2.stride(0), r2.stride(0), s2.stride(0), y2.stride(0),
            n, float(eps),
            HAS_RES=residual is not None, HAS_W=weight is not None, HAS_B=bias is not None,
            IS_RMS=is_rms, GEMMA=gemma, ROUND=rnd, BLOCK_N=block, num_warps=warps,
        )
    stats = x.shape[:-1]
    mean_out = x.new_empty((0,), dtype=torch.float32) if is_rms else mean.reshape(stats)
    s_out = x if residual is None else s2.reshape(x.shape)
    return y2.reshape(x.shape), s_out, mean_out, rstd.reshape(stats)


def _num_programs(m: int, device: torch.device, per_sm: int = 4) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(m, sms * per_sm))
    return max(1, min(m, 4))  # interpreter: few programs, it is slow per launch


def norm_bwd(
    dy: torch.Tensor,
    ds: Optional[torch.Tensor],
    s: torch.Tensor,
    weight: Optional[torch.Tensor],
    mean: torch.Tensor,
    rstd: torch.Tensor,
    variant: str,
    has_bias: bool,
    mask: List[bool],
    num_warps: Optional[int] = None,
    programs_per_sm: int = 4,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Backward of ``norm_fwd``.

    Args:
        dy: gradient of the output.
        ds: optional gradient that reached the sum directly.
        s: the normalized tensor.
        weight: from the forward.
        mean: from the forward.
        rstd: from the forward.
        variant: as in the forward.
        has_bias: as in the forward.
        mask: which of (dx, dw, db) are needed.
        num_warps: tuning override (default from the row width).
        programs_per_sm: tuning override (default 4 per SM).

    Returns:
        ``(dx, dw, db)``: dx in ``s.dtype`` (including ``ds``), dw/db fp32 ``(N,)``;
            None where not requested.
    """
    n = s.shape[-1]
    block, warps = _block(n, num_warps)
    s2, dy2 = _rows2d(s), _rows2d(dy)
    m = s2.shape[0]
    is_rms, gemma, rnd = _flags(variant, weight)
    want_dx, want_dw, want_db = mask[0], mask[1] and weight is not None, mask[2] and has_bias
    ds2 = _rows2d(ds) if (ds is not None and want_dx) else dy2
    dx2 = torch.empty(s2.shape, dtype=s.dtype, device=s.device) if want_dx else s2
    progs = _num_programs(m, s.device, programs_per_sm)
    rows_per_prog = triton.cdiv(max(m, 1), progs)
    dw_part = torch.empty((progs, n), dtype=torch.float32, device=s.device) if want_dw else rstd
    db_part = torch.empty((progs, n), dtype=torch.float32, device=s.device) if want_db else rstd
    if m > 0:
        _norm_bwd_kernel[(progs,)](
            dy2, ds2, s2, weight if weight is not None else s2, mean if mean.numel() else rstd, rstd,
            dx2, dw_part, db_part,
            dy2.stride(0), ds2.stride(0), s2.stride(0), dx2.stride(0),
            m, n, rows_per_prog,
            HAS_DS=ds is not None and want_dx, HAS_W=weight is not None, HAS_B=want_db,
            IS_RMS=is_rms, GEMMA=gemma, ROUND=rnd, COMPUTE_DX=want_dx, COMPUTE_DW=want_dw,
            BLOCK_N=block, num_warps=warps,
        )
    elif want_dw or want_db:
        dw_part = dw_part.zero_() if want_dw else dw_part
        db_part = db_part.zero_() if want_db else db_part
    dx = dx2.reshape(s.shape) if want_dx else None
    dw = dw_part.sum(0) if want_dw else None
    db = db_part.sum(0) if want_db else None
    return dx, dw, db
