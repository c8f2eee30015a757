"""Shared precision check for the norm ops: ours within 2x of torch's own error.

For one configuration it builds inputs in ``dtype``, runs (a) the op under
test, (b) torch's own implementation in ``dtype`` (the reference math of
``reference.py``, i.e. what the original module computes, with eager
``x + residual``) and (c) the same math on upcast inputs (fp32 for half
dtypes, fp64 for fp32) as ground truth, and compares the output and every
gradient (input, residual, weight, bias).
"""

from __future__ import annotations

import torch

from hf_lnorm.norms import ops
from hf_lnorm.norms.reference import rms_norm as ref_rms_norm


def _torch_forward(variant, x, residual, weight, bias, eps):
    s = x if residual is None else x + residual
    if variant == "layer_norm":
        if x.dtype == torch.float64:
            return _ln64(s, weight, bias, eps), s
        return torch.nn.functional.layer_norm(s, (s.shape[-1],), weight, bias, eps), s
    if x.dtype == torch.float64:
        return _rms64(s, weight, eps, variant), s
    return ref_rms_norm(s, weight, eps, variant), s


def _ln64(s, w, b, eps):
    mean = s.mean(-1, keepdim=True)
    var = (s - mean).pow(2).mean(-1, keepdim=True)
    y = (s - mean) / torch.sqrt(var + eps)
    y = y if w is None else y * w
    return y if b is None else y + b


def _rms64(s, w, eps, variant):
    y = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)
    if w is None:
        return y
    return y * (1.0 + w) if variant == "rms_norm_gemma" else y * w


def _grads(out, summed, inputs, gy, gs):
    loss = (out.float() * gy).sum()
    if summed is not None and gs is not None:
        loss = loss + (summed.float() * gs).sum()
    return torch.autograd.grad(loss, inputs)


def check_precision(variant, dtype, hidden, has_weight, has_bias, residual, impl, device="cpu", rows=3, eps=1e-5):
    """Assert ours (``ops.norm_fwd`` with ``impl``) is within 2x torch's error for output and grads.

    Returns:
        dict name -> (our error, torch error) for the record.
    """
    gen = torch.Generator().manual_seed(hidden * 31 + rows)
    truth_dtype = torch.float64 if dtype == torch.float32 else torch.float32

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device)

    base = {"x": rnd(rows, hidden, scale=2.0, shift=0.5)}
    if residual:
        base["r"] = rnd(rows, hidden)
    if has_weight:
        base["w"] = rnd(hidden, scale=0.5, shift=1.0)
    if has_bias:
        base["b"] = rnd(hidden, scale=0.5)
    gy = rnd(rows, hidden)
    gs = rnd(rows, hidden) if residual else None

    def leaves(dt):
        return {k: v.to(dt).clone().requires_grad_() for k, v in base.items()}

    mine = leaves(dtype)
    y, s, _, _ = ops.norm_fwd(mine["x"], mine.get("r"), mine.get("w"), mine.get("b"), eps, variant, impl)
    ours = [y] + list(_grads(y, s if residual else None, list(mine.values()), gy, gs))

    theirs_in = leaves(dtype)
    ty, ts = _torch_forward(variant, theirs_in["x"], theirs_in.get("r"), theirs_in.get("w"), theirs_in.get("b"), eps)
    assert y.dtype == ty.dtype, f"output dtype {y.dtype}, torch gives {ty.dtype}"
    assert y.shape == ty.shape
    theirs = [ty] + list(_grads(ty, ts if residual else None, list(theirs_in.values()), gy, gs))

    truth_in = leaves(truth_dtype)
    uy, us = _torch_forward(variant, truth_in["x"], truth_in.get("r"), truth_in.get("w"), truth_in.get("b"), eps)
    truth = [uy] + list(_grads(uy, us if residual else None, list(truth_in.values()), gy, gs))

    names = ["y"] + ["d" + k for k in base]
    record = {}
    floor_eps = torch.finfo(dtype).eps
    # The input gradient subtracts terms of size |dy| * |w| * rstd that nearly cancel
    # (e.g. hidden=1, where the true gradient is ~eps); a couple of ulps of those terms
    # is the rounding floor below which "2x torch's error" means nothing.
    s64 = base["x"].double() + (base["r"].double() if residual else 0.0)
    var = s64.var(-1, unbiased=False) if variant == "layer_norm" else s64.pow(2).mean(-1)
    rstd_max = float(torch.rsqrt(var + eps).max())
    w_max = max(1.0, float(base["w"].abs().max()) + (1.0 if variant == "rms_norm_gemma" else 0.0)) if has_weight else 1.0
    term = float(gy.abs().max()) * w_max * rstd_max
    for name, a, t, u in zip(names, ours, theirs, truth):
        a, t, u = a.detach(), t.detach(), u.detach().double()
        err_ours = float((a.double() - u).abs().max())
        err_torch = float((t.double() - u).abs().max())
        scale = max(1.0, float(u.abs().max()), term if name in ("dx", "dr") else 0.0)
        floor = 2 * floor_eps * scale
        record[name] = (err_ours, err_torch)
        assert err_ours <= 2 * err_torch + floor, (
            f"{variant} {dtype} hidden={hidden} w={has_weight} b={has_bias} res={residual} impl={impl}: "
            f"{name} error {err_ours:.3e} > 2 x torch's {err_torch:.3e} + {floor:.1e}"
        )
    return record
