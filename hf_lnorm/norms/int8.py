"""Int8 math for quantized norms and their readers: quantization, int8 GEMM kernels, SmoothQuant folding.

Plain functions on tensors, with no knowledge of patching: per-token (per-row)
activation quantization, per-output-channel int8 weights (``Int8Weight``), the
int8 x int8 -> int32 GEMM kernels (``int8_linear``), SmoothQuant scales and their
exact fold (``smoothing_scales``, ``fold_smoothing``), and ``QuantizedTensorLayerNorm``
for models that pass ``torch.ao`` quantized tensors between layers.
``hf_lnorm.quantization`` builds ``patch(model, mode="quantized")`` on top of these.

Kernels (``resolve_kernel``):
    ``onednn``    ``torch.ops.onednn.qlinear_pointwise`` (x86 CPU). On CPUs
                  without VNNI it saturates int16 pair sums, so weights use 7
                  bits there; the choice is made by an exactness self-test.
    ``int_mm``    ``torch._int_mm`` (CUDA; needs M > 16 and K, N multiples of 8,
                  other shapes fall back to ``reference``). On CPUs without VNNI
                  ``torch._int_mm`` is a slow generic loop, so ``auto`` does not
                  pick it there.
    ``reference`` integer-valued fp32 matmul; same numbers, any device.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .reference import LAYER_NORM

__all__ = [
    "ACT_QMAX",
    "KERNELS",
    "Int8Weight",
    "QuantizedActivation",
    "QuantizedTensorLayerNorm",
    "check_alpha",
    "fold_smoothing",
    "int8_linear",
    "quantize_activation",
    "quantize_dequantize",
    "quantize_per_token",
    "quantize_weight",
    "requant_params",
    "resolve_kernel",
    "smoothing_scales",
    "swap_layer_norms_for_quantized_tensors",
]

ACT_QMAX = 127
KERNELS = ("auto", "onednn", "int_mm", "reference")
TINY = 1e-12  # smallest scale: an all-zero row quantizes to zeros instead of dividing by zero


def quantize_per_token(y: torch.Tensor, qmax: int = ACT_QMAX, static_scale: Optional[float] = None):
    """Symmetric int8 quantization with one scale per row of the last dimension.

    Args:
        y: float tensor ``(..., K)``.
        qmax: largest magnitude of the int8 code (127).
        static_scale: use this one scale for every row (calibrated static mode);
            values beyond ``static_scale * qmax`` are clamped.

    Returns:
        (tuple[torch.Tensor, torch.Tensor]): ``(q, scale)``: ``q`` int8 shaped like ``y``, ``scale`` fp32 ``(..., 1)``.
    """
    yf = y.float()
    if static_scale is not None:
        scale = torch.full(yf.shape[:-1] + (1,), float(static_scale), dtype=torch.float32, device=y.device)
        q = torch.round(yf / scale).clamp_(-qmax, qmax).to(torch.int8)
        return q, scale
    scale = _row_scale(yf, qmax)
    q = (yf / scale).round_().to(torch.int8)  # |y / scale| <= qmax by construction
    return q, scale


def _row_scale(yf: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-row symmetric scale ``max|y_row| / qmax`` (at least ``TINY``), shape ``(..., 1)``."""
    return yf.abs().amax(dim=-1, keepdim=True).div(qmax).clamp_min(TINY)


def quantize_dequantize(y: torch.Tensor, dim: int = -1, static_scale: Optional[float] = None) -> torch.Tensor:
    """Round ``y`` through per-token int8 along ``dim`` and back, in ``y``'s dtype."""
    moved = y.movedim(dim, -1) if dim not in (-1, y.dim() - 1) else y
    q, scale = quantize_per_token(moved, static_scale=static_scale)
    out = (q.float() * scale).to(y.dtype)
    return out.movedim(-1, dim) if moved is not y else out


def quantize_weight(weight: torch.Tensor, qmax: int = 127) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8 weights.

    Args:
        weight: ``(N, K)`` float weight (``nn.Linear`` layout).
        qmax: 127, or 63 for kernels that need 7-bit weights.

    Returns:
        ``(q, scale)``: int8 ``(N, K)`` and fp32 ``(N,)`` with ``weight ~ q * scale[:, None]``.
    """
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / qmax).clamp_min_(TINY)
    q = torch.round(w / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8).contiguous()
    return q, scale


@dataclass
class QuantizedActivation:
    """An int8 activation ``(M, K)`` with per-row scales ``(M, 1)``.

    Stored as ``u8 = q + 128`` (uint8, zero point 128: the oneDNN kernel's input
    format); the signed codes ``q`` are derived once on demand.
    """

    u8: torch.Tensor
    scale: torch.Tensor
    _q: Optional[torch.Tensor] = None

    @property
    def q(self) -> torch.Tensor:
        """Signed int8 codes ``(M, K)``."""
        if self._q is None:
            self._q = (self.u8 ^ 128).view(torch.int8)  # two's complement: flipping the sign bit subtracts 128
        return self._q


def _quantize_rows_u8(yf: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 codes of a 2-D float tensor, stored as ``q + 128`` (uint8), and the scales."""
    scale = _row_scale(yf, ACT_QMAX)
    codes = (yf / scale).round().add(128)  # in [1, 255]: |y / scale| <= 127
    return codes.to(torch.uint8), scale


class _CompiledQuantizer:
    """``_quantize_rows_u8`` compiled by inductor into one CPU kernel, built on first use.

    In eager mode the quantization is five passes over the activation (absmax,
    divide, round, shift, cast), each allocating; for a 3072 x 1536 activation that
    costs more than the int8 GEMM saves (``hf-lnorm bench quantized`` measures it).
    Inductor fuses them into one loop with the same arithmetic, so the codes are
    bit-identical (tested). The compiled function is shape-dynamic: one compile per
    process (cached on disk by inductor afterwards). If compiling fails (no
    C++ compiler) or ``HF_LNORM_INDUCTOR=0`` is set, the eager function is used and
    the reason is kept in ``disabled_reason``.
    """

    fn = None
    disabled_reason: Optional[str] = None

    @classmethod
    def get(cls):
        if cls.fn is None and cls.disabled_reason is None:
            if os.environ.get("HF_LNORM_INDUCTOR", "1") == "0":
                cls.disabled_reason = "HF_LNORM_INDUCTOR=0"
            else:
                try:
                    fn = torch.compile(_quantize_rows_u8, dynamic=True)
                    probe = torch.linspace(-3.0, 3.0, 3 * 40).view(3, 40)
                    got, want = fn(probe), _quantize_rows_u8(probe)
                    if not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])):
                        raise RuntimeError("compiled quantizer disagrees with eager")
                    cls.fn = fn
                except Exception as exc:  # no compiler, unsupported platform, ...: stay eager
                    cls.disabled_reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return cls.fn


def quantize_activation(y: torch.Tensor, static_scale: Optional[float] = None) -> QuantizedActivation:
    """Per-token symmetric int8 (``quantize_per_token``) of a ``(..., K)`` tensor, flattened to rows.

    On CPU outside ``torch.compile`` the quantization runs as one inductor kernel
    (``_CompiledQuantizer``) when that is available; the codes are the same either way.
    """
    yf = y.reshape(-1, y.shape[-1]).float()
    if static_scale is not None:
        q, scale = quantize_per_token(yf, static_scale=static_scale)
        return QuantizedActivation((q.view(torch.uint8) ^ 128).contiguous(), scale)
    fn = None
    if yf.device.type == "cpu" and not torch.compiler.is_compiling() and yf.shape[0] > 1:
        fn = _CompiledQuantizer.get()
    u8, scale = (fn or _quantize_rows_u8)(yf)
    return QuantizedActivation(u8, scale)


@functools.lru_cache(maxsize=None)
def _onednn_weight_qmax() -> Optional[int]:
    """Largest weight code the oneDNN int8 kernel multiplies exactly here (127, 63) or None.

    x86 CPUs without VNNI add u8*s8 products pairwise in saturating int16, so a
    full-range weight can overflow; 7-bit weights (|q| <= 63) never do.
    """
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops, "onednn")):
        return None
    try:
        op = torch.ops.onednn.qlinear_pointwise
        prepack = torch.ops.onednn.qlinear_prepack
    except (AttributeError, RuntimeError):
        return None
    gen = torch.Generator().manual_seed(0)
    k, n, m = 64, 16, 8
    x = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8)
    x[0] = 127  # the worst case for int16 pair sums
    for qmax in (127, 63):
        w = torch.randint(-qmax, qmax + 1, (n, k), generator=gen, dtype=torch.int8)
        w[0] = qmax
        exact = x.double() @ w.double().t()
        try:
            got = op(x.view(torch.uint8) ^ 128, 1.0, 128, prepack(w, None), torch.ones(n), torch.zeros(n, dtype=torch.long),
                     None, 1.0, 0, torch.float32, "none", [], "")
        except (RuntimeError, TypeError):
            return None
        if torch.equal(got.double(), exact):
            return qmax
    return None


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """The int8 GEMM kernel to use on ``device`` for the ``kernel`` request.

    Raises:
        ValueError: unknown kernel name, or a forced kernel that cannot run here.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown int8 kernel {kernel!r}; accepted: {', '.join(KERNELS)}")
    device = torch.device(device)
    if kernel == "auto":
        if device.type == "cuda":
            return "int_mm"
        if device.type == "cpu" and _onednn_weight_qmax() is not None:
            return "onednn"
        return "reference"
    if kernel == "onednn" and (device.type != "cpu" or _onednn_weight_qmax() is None):
        raise ValueError(f"int8 kernel 'onednn' is not available on {device}; use 'auto' or 'reference'")
    if kernel == "int_mm" and not hasattr(torch, "_int_mm"):
        raise ValueError("int8 kernel 'int_mm' needs torch._int_mm, which this torch lacks; use 'auto' or 'reference'")
    return kernel


@dataclass
class Int8Weight:
    """Int8 copy of a Linear weight for one kernel: codes ``(N, K)``, scales ``(N,)``, kernel handle."""

    q: torch.Tensor
    scale: torch.Tensor
    kernel: str
    packed: Optional[torch.Tensor] = None

    @classmethod
    def from_float(cls, weight: torch.Tensor, kernel: str) -> "Int8Weight":
        """Quantize an ``(N, K)`` float weight for ``kernel`` (already resolved)."""
        qmax = _onednn_weight_qmax() if kernel == "onednn" else 127
        q, scale = quantize_weight(weight, qmax)
        packed = None
        if kernel == "onednn":
            packed = torch.ops.onednn.qlinear_prepack(q, None)
        elif kernel == "int_mm":
            packed = q.t()  # (K, N) column-major view, the layout _int_mm wants
        return cls(q, scale, kernel, packed)

    @property
    def nbytes(self) -> int:
        return self.q.numel() + self.scale.numel() * 4


def int8_linear(act: QuantizedActivation, weight: Int8Weight, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``dequant(act) @ dequant(weight).T + bias`` through an int8 x int8 -> int32 GEMM.

    Args:
        act: per-row quantized activation ``(M, K)``.
        weight: per-channel quantized weight ``(N, K)``.
        bias: optional float bias ``(N,)``.

    Returns:
        fp32 ``(M, N)``.
    """
    m, k = act.u8.shape
    n = weight.q.shape[0]
    kernel = weight.kernel
    if kernel == "int_mm" and not (act.u8.is_cuda and m > 16 and k % 8 == 0 and n % 8 == 0):
        kernel = "reference"
    if kernel == "onednn":
        # int32 accumulate, times the per-channel weight scale, in one oneDNN call
        out = torch.ops.onednn.qlinear_pointwise(
            act.u8, 1.0, 128, weight.packed, weight.scale, torch.zeros(n, dtype=torch.long), None,
            1.0, 0, torch.float32, "none", [], "")
        # per-row activation scale and bias in place: a second output-sized allocation costs more than the pass
        return out.mul_(act.scale) if bias is None else torch.addcmul(bias.detach().float(), out, act.scale, out=out)
    if kernel == "int_mm":
        acc = torch._int_mm(act.q, weight.packed).float()
    else:
        acc = act.q.float() @ weight.q.float().t()
    out = acc.mul_(act.scale).mul_(weight.scale)
    return out if bias is None else out.add_(bias.detach().float())


# --------------------------------------------------------------------------- smoothing


def smoothing_scales(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant per-channel scales ``s = a**alpha / w**(1 - alpha)``.

    Args:
        act_absmax: ``(K,)`` max |activation| per input channel.
        weight_absmax: ``(K,)`` max |weight| per input channel over all consumers.
        alpha: migration strength in [0, 1].

    Returns:
        ``(K,)`` positive fp32 scales (1 where a channel is all zeros).
    """
    alpha = check_alpha(alpha)
    a = act_absmax.float().clamp_min(1e-5)
    w = weight_absmax.float().clamp_min(1e-5)
    s = a.pow(alpha) / w.pow(1.0 - alpha)
    dead = (act_absmax <= 0) | (weight_absmax <= 0) | ~torch.isfinite(s)
    return torch.where(dead, torch.ones_like(s), s).clamp_(1e-4, 1e4)


def fold_smoothing(
    norm_weight: Optional[torch.Tensor],
    norm_bias: Optional[torch.Tensor],
    linear_weights: Sequence[torch.Tensor],
    scales: torch.Tensor,
    variant: str = LAYER_NORM,
):
    """Fold smoothing scales into a norm's affine parameters and its consumers' weights.

    ``Linear(norm(x))`` is unchanged in exact arithmetic: the norm's gain and
    bias are divided by ``scales`` and each consumer weight ``(N, K)`` is
    multiplied by ``scales`` along ``K``.

    Args:
        norm_weight: gain ``(K,)`` or None (then a gain of ``1 / scales`` is returned).
        norm_bias: bias ``(K,)`` or None.
        linear_weights: consumer weights in ``nn.Linear`` layout ``(N, K)``.
        scales: ``(K,)`` positive scales.
        variant: the norm's reference variant; for ``rms_norm_gemma`` the gain is
            ``1 + weight`` and the returned weight is ``(1 + weight) / s - 1``.

    Returns:
        (tuple): ``(new_weight, new_bias, new_linear_weights)``.
    """
    s = scales if scales.is_floating_point() else scales.float()  # results promote to at least s's dtype
    if norm_weight is None:
        new_w = 1.0 / s
    elif variant == "rms_norm_gemma":
        new_w = (1.0 + norm_weight.detach()) / s - 1.0
    else:
        new_w = norm_weight.detach() / s
    new_b = None if norm_bias is None else norm_bias.detach() / s
    return new_w, new_b, [w.detach() * s[None, :] for w in linear_weights]


def check_alpha(alpha) -> float:
    """``alpha`` as a float, checked to be a SmoothQuant migration strength.

    Raises:
        ValueError: not a real number in [0, 1] (booleans and NaN included).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 <= float(alpha) <= 1.0) or math.isnan(alpha):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


# --------------------------------------------------------------------------- torch.ao quantized tensors


def requant_params(y: torch.Tensor, dtype: torch.dtype, observed: Optional[Tuple[float, float]] = None):
    """Per-tensor ``(scale, zero_point)`` that requantizes a norm output ``y`` to ``dtype``.

    Args:
        y: the float output.
        dtype: ``torch.qint8`` (symmetric, zero point 0) or ``torch.quint8`` (affine).
        observed: a calibrated ``(min, max)`` range; default: ``y``'s own range.

    Raises:
        ValueError: another ``dtype``.
    """
    lo, hi = observed if observed is not None else (float(y.min()), float(y.max()))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if dtype == torch.qint8:
        scale = max(max(-lo, hi) / 127.0, TINY)
        return scale, 0
    if dtype == torch.quint8:
        scale = max((hi - lo) / 255.0, TINY)
        return scale, int(min(255, max(0, round(-lo / scale))))
    raise ValueError(f"requantizing to {dtype} is not supported; accepted: torch.quint8, torch.qint8")


class QuantizedTensorLayerNorm(nn.Module):
    """Dequantize -> LayerNorm -> requantize, for models that carry ``torch.ao`` quantized tensors.

    The output gets its own quantization parameters: the ``(min, max)`` range
    observed while ``observe`` is True (set ``observe=True``, run calibration
    data, set it False), or, before any observation, the range of each output.
    Reusing the input's scale would clip or waste the output range, because
    LayerNorm rescales its input.

    Float inputs are normalized and returned as float.

    Args:
        normalized_shape (int | Sequence[int]): as ``nn.LayerNorm``.
        eps: as ``nn.LayerNorm``.
        elementwise_affine: as ``nn.LayerNorm``.
        bias: as ``nn.LayerNorm``.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape)) if elementwise_affine and bias else None
        self.observe = False
        self.register_buffer("out_range", torch.tensor([float("inf"), float("-inf")]))

    @classmethod
    def from_float(cls, ln: nn.LayerNorm) -> "QuantizedTensorLayerNorm":
        """Copy an ``nn.LayerNorm``'s shape, eps and parameters."""
        new = cls(ln.normalized_shape, ln.eps, ln.weight is not None, ln.bias is not None)
        with torch.no_grad():
            if ln.weight is not None:
                new.weight.copy_(ln.weight)
            if ln.bias is not None:
                new.bias.copy_(ln.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.dequantize() if x.is_quantized else x
        y = F.layer_norm(xf, self.normalized_shape, self.weight, self.bias, self.eps)
        if self.observe:
            with torch.no_grad():
                self.out_range[0] = torch.minimum(self.out_range[0], y.min())
                self.out_range[1] = torch.maximum(self.out_range[1], y.max())
        if not x.is_quantized:
            return y
        observed = None
        if torch.isfinite(self.out_range).all():
            observed = (float(self.out_range[0]), float(self.out_range[1]))
        scale, zp = requant_params(y, x.dtype, observed)
        return torch.quantize_per_tensor(y.detach(), scale, zp, x.dtype)


def swap_layer_norms_for_quantized_tensors(model: nn.Module) -> nn.Module:
    """Replace every ``nn.LayerNorm`` child of ``model`` with ``QuantizedTensorLayerNorm`` (in place).

    For eager-mode ``torch.ao`` static quantization, where the tensors between
    layers are quantized. Returns the same model.
    """
    for name, child in list(model.named_children()):
        if type(child) is nn.LayerNorm:
            setattr(model, name, QuantizedTensorLayerNorm.from_float(child))
        else:
            swap_layer_norms_for_quantized_tensors(child)
    return model
