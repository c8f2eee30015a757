"""Int8 norms and the int8 Linear layers that read them: ``patch(model, mode="quantized")``.

What the mode does
------------------
* **Norms** compute in fp32 exactly like ``fused`` mode, then quantize their
  output to int8 with one symmetric scale per token (row): ``q = round(y / s)``,
  ``s = max|y_row| / 127``. The int8 tensor and its scales are stashed on the
  norm; the float tensor the norm returns is the exact norm output, so
  non-Linear readers (a residual path, a pooler) see correct float values.
* **Consumers**: the ``nn.Linear`` (and GPT-2 ``Conv1D``) layers that read a
  norm's output are found by tracing one forward pass and matching tensor
  identity (the tensor a norm returned *is* the tensor a Linear received) -
  no per-architecture table. Each consumer is patched per instance: when it is
  called with the very tensor its norm stashed, it reuses the int8 activation
  (quantized once, shared by Q/K/V) and runs an int8 x int8 -> int32 GEMM with
  per-output-channel int8 weights, dequantizing with ``s_row * s_col``.
  Called with anything else it quantizes that input per token itself.
* **Norms with no Linear consumer** quantize-dequantize their output and are
  reported as such (``NormRecord.extra["int8"] == "qdq"``).
* ``calibrate(model, batches)`` records per-channel activation ranges of every
  quantized norm; ``calibrate(..., static=True)`` switches the norms to the
  calibrated per-tensor scale. ``smooth(model, batches, alpha)`` computes
  SmoothQuant scales ``s_k = amax_act_k**alpha / amax_w_k**(1 - alpha)`` and
  folds them in: the norm's int8 output becomes ``quantize(norm(x) / s)`` (the
  same as a norm with gain ``w / s`` and bias ``b / s``) and each consumer's
  int8 weight becomes ``quantize(W * s)``. ``fold_smoothing`` is that fold on
  plain tensors; it is exact in float (tested).

Kernels (``kernel=`` mode option, default ``"auto"``):
    ``onednn``    ``torch.ops.onednn.qlinear_pointwise`` (x86 CPU). On CPUs
                  without VNNI it saturates int16 pair sums, so weights use 7
                  bits there; the choice is made by an exactness self-test.
    ``int_mm``    ``torch._int_mm`` (CUDA; needs M > 16 and K, N multiples of 8,
                  other shapes fall back to ``reference``). On CPUs without VNNI
                  ``torch._int_mm`` is a slow generic loop, so ``auto`` does not
                  pick it there.
    ``reference`` integer-valued fp32 matmul; same numbers, any device.

State while patched
-------------------
Float parameters are never modified: the int8 weights, scales and smoothing
vectors live in plain instance attributes (``_hf_lnorm_int8``) and in the norm's
patch state, not in parameters or buffers. So ``state_dict()`` of a
quantized-patched model is byte-identical to the float model's (saving it saves
the float model) and ``unpatch`` restores everything by deleting attributes.

Example inputs for the trace
----------------------------
``patch(model, mode="quantized", example_inputs=...)`` takes a dict of keyword
arguments, a tuple of positional arguments, or one tensor. Without it, inputs
are built from ``model.config`` by ``hf_lnorm.inputs.dummy_inputs`` (batch 2,
16 tokens; images, audio and log-mel features at their config sizes), chosen
by ``model.main_input_name``.
A model for which neither works is patched with quantize-dequantize norms only,
and the report says why.

torch.ao quantized models
-------------------------
``QuantizedTensorLayerNorm`` is the course's dequantize -> LayerNorm -> requantize
module for models that pass ``torch.ao`` quantized tensors between layers; unlike
the course sketch it requantizes with output parameters of its own (observed by
calibration, or computed from the output) instead of the input's scale. A
quantized-mode norm that receives a quantized tensor takes the same path.

Quantized mode is for inference: int8 paths carry no gradient.

Example:
    >>> import torch, hf_lnorm
    >>> block = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 64))
    >>> block = hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(4, 32))
    >>> hf_lnorm.patch_report(block)[0].extra["consumers"]
    ['1']
    >>> block = hf_lnorm.unpatch(block)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import types
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..patching import (
    STATE_ATTR,
    PatchMode,
    PatchReport,
    _eps_of,
    _params_of,
    is_patched,
    register_mode,
)
from .fused import fused_norm
from .reference import LAYER_NORM, LAYER_NORM_CHANNELS_FIRST, NormSpec

MODE_NAME = "quantized"
LINEAR_ATTR = "_hf_lnorm_int8"
ACT_QMAX = 127
KERNELS = ("auto", "onednn", "int_mm", "reference")
_MISSING = object()
_TINY = 1e-12


# --------------------------------------------------------------------------- int8 math


def quantize_per_token(y: torch.Tensor, qmax: int = ACT_QMAX, static_scale: Optional[float] = None):
    """Symmetric int8 quantization with one scale per row of the last dimension.

    Args:
        y: float tensor ``(..., K)``.
        qmax: largest magnitude of the int8 code (127).
        static_scale: use this one scale for every row (calibrated static mode);
            values beyond ``static_scale * qmax`` are clamped.
    Returns:
        ``(q, scale)``: ``q`` int8 shaped like ``y``, ``scale`` fp32 ``(..., 1)``.
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
    """Per-row symmetric scale ``max|y_row| / qmax`` (at least ``_TINY``), shape ``(..., 1)``."""
    return yf.abs().amax(dim=-1, keepdim=True).div(qmax).clamp_min(_TINY)


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
    scale = (w.abs().amax(dim=1) / qmax).clamp_min_(_TINY)
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
    alpha = _check_alpha(alpha)
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
        ``(new_weight, new_bias, new_linear_weights)``.
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


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 <= float(alpha) <= 1.0) or math.isnan(alpha):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


# --------------------------------------------------------------------------- per-instance Linear patching


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
            act = quantize_activation(x if st.inv_smooth is None else x * st.inv_smooth.to(x.dtype))
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
    """(name, module) of every Linear that quantized mode runs in int8."""
    return [(n, m) for n, m in model.named_modules() if LINEAR_ATTR in m.__dict__]


# --------------------------------------------------------------------------- tracing


class _Trace:
    active = False


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _call(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def example_inputs_for(model: nn.Module, batch: int = 2, seq_len: int = 16):
    """A forward-pass input built from ``model.config`` (``hf_lnorm.inputs.dummy_inputs``), or None.

    Returns:
        A dict of keyword arguments for ``model(**inputs)``, or None when the
        model has no config or its main input is not one ``dummy_inputs`` knows.
    """
    from ..inputs import dummy_inputs

    base = getattr(model, "get_base_model", lambda: model)()
    if getattr(base, "config", None) is None:
        return None
    try:
        return dummy_inputs(model, batch_size=batch, seq_len=seq_len, generator=torch.Generator().manual_seed(1234))
    except (ValueError, AttributeError, TypeError):
        return None


def trace_consumers(model: nn.Module, norms: Dict[str, nn.Module], inputs) -> Tuple[Dict[str, List[str]], Dict[str, nn.Module]]:
    """Run one forward pass and match norm outputs to Linear inputs by tensor identity.

    Args:
        model: the model (its norms may already be patched).
        norms: ``{name: module}`` of the norms whose readers are wanted.
        inputs: a dict / tuple / tensor for ``model(...)``.
    Returns:
        ``(consumers, called)``: ``{norm name: [linear names]}`` and
        ``{linear name: module}`` for every Linear the pass called.
    """
    outputs: Dict[int, str] = {}
    keep: List[torch.Tensor] = []  # holds the traced outputs so their ids stay unique during the pass
    consumers: Dict[str, List[str]] = {n: [] for n in norms}
    layers: Dict[str, nn.Module] = {}
    handles = []

    def on_norm_output(name):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                outputs[id(output)] = name
                keep.append(output)
        return hook

    def on_linear_input(name, layer):
        def hook(_module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()), None)
            layers[name] = layer
            src = outputs.get(id(x)) if isinstance(x, torch.Tensor) else None
            if src is not None and name not in consumers[src]:
                consumers[src].append(name)
        return hook

    try:
        for name, norm in norms.items():
            handles.append(norm.register_forward_hook(on_norm_output(name)))
        for name, module in model.named_modules():
            if _is_consumer_candidate(module) is not None:
                handles.append(module.register_forward_pre_hook(on_linear_input(name, module), with_kwargs=True))
        _Trace.active = True
        with torch.no_grad(), _eval_mode(model):
            _call(model, inputs)
    finally:
        _Trace.active = False
        for h in handles:
            h.remove()
    return consumers, layers


# --------------------------------------------------------------------------- the mode


def _norm_float(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state = module.__dict__[STATE_ATTR]
    # The float output stays bit-identical to the original module's (the residual stream reads it), so the
    # C++ CPU kernel, equal only within fp32 rounding, is not used here.
    backend = "aten" if state.backend == "cpp" else state.backend
    return fused_norm(state.spec, x, *_params_of(module, state.spec), _eps_of(module, state.spec), backend)


def _record_ranges(qs: Dict[str, Any], y: torch.Tensor, spec: NormSpec) -> None:
    yf = y.detach().float()
    if spec.variant == LAYER_NORM_CHANNELS_FIRST:
        yf = yf.movedim(1, -1)
    per_channel = yf.reshape(-1, yf.shape[-1]).abs().amax(dim=0)
    prev = qs.get("act_absmax")
    qs["act_absmax"] = per_channel if prev is None else torch.maximum(prev, per_channel)
    qs["calibrated_batches"] = qs.get("calibrated_batches", 0) + 1


class QuantizedMode(PatchMode):
    """``mode="quantized"``: int8-output norms feeding int8 GEMMs (see the module docstring).

    Mode options (``patch(model, mode="quantized", **options)``):
        example_inputs: input for the tracing forward pass (dict, tuple or tensor);
            default built from ``model.config`` by ``example_inputs_for``.
        kernel: ``"auto"`` | ``"onednn"`` | ``"int_mm"`` | ``"reference"``.
        all_linears: also run every other Linear the trace saw in int8, quantizing
            its input per token inside the layer (default False: only the
            norms' readers are int8, everything else stays float).
    """

    name = MODE_NAME
    instance_attrs = (LINEAR_ATTR,)

    def validate_options(self, example_inputs=None, kernel: str = "auto", all_linears: bool = False, **options) -> None:
        """Check the options of ``patch(model, mode="quantized", ...)`` before anything is patched.

        Raises:
            TypeError: an unknown option, ``example_inputs`` not a dict / tuple / list /
                tensor, or ``all_linears`` not a bool.
            ValueError: ``kernel`` is not one of ``KERNELS``.
        """
        if options:
            raise TypeError(f"unknown quantized-mode option(s): {', '.join(sorted(options))}; "
                            "accepted: example_inputs, kernel, all_linears")
        if example_inputs is not None and not isinstance(example_inputs, (dict, tuple, list, torch.Tensor)):
            raise TypeError("example_inputs must be a dict of keyword arguments, a tuple of positional arguments "
                            f"or a tensor, got {type(example_inputs).__name__}")
        if not isinstance(kernel, str) or kernel not in KERNELS:
            raise ValueError(f"unknown int8 kernel {kernel!r}; accepted: {', '.join(KERNELS)}")
        if not isinstance(all_linears, bool):
            raise TypeError(f"all_linears must be True or False, got {all_linears!r}")

    def forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        state = module.__dict__[STATE_ATTR]
        qs = state.extra
        if x.is_quantized:
            return _requantized_norm(module, state.spec, x, qs)
        y = _norm_float(module, x)
        if _Trace.active:
            return y
        if qs.get("calibrating"):
            _record_ranges(qs, y, state.spec)
        if not qs.get("layers"):  # no int8 reader: quantize-dequantize along the normalized dim
            dim = 1 if state.spec.variant == LAYER_NORM_CHANNELS_FIRST else -1
            with torch.no_grad():
                return quantize_dequantize(y, dim, qs.get("static_scale"))
        with torch.no_grad():
            inv = qs.get("inv_smooth")
            ys = y if inv is None else y * inv.to(y.dtype)
            act = quantize_activation(ys, qs.get("static_scale"))
        qs["stash"] = (weakref.ref(y), act)
        return y

    def after_patch(self, model, patched, report: PatchReport, example_inputs=None, kernel: str = "auto",
                    all_linears: bool = False, **options) -> None:
        self.validate_options(example_inputs=example_inputs, kernel=kernel, all_linears=all_linears, **options)
        norms = {name: m for name, m in patched}
        for m in norms.values():
            m.__dict__[STATE_ATTR].extra.update(consumers=[], layers=[], kernel=None, note="")
        if norms:
            inputs = example_inputs if example_inputs is not None else example_inputs_for(model)
            if inputs is None:
                note = "no example input (pass example_inputs=...): quantize-dequantize only"
                for m in norms.values():
                    m.__dict__[STATE_ATTR].extra["note"] = note
            else:
                try:
                    consumers, layers = trace_consumers(model, norms, inputs)
                except Exception as exc:  # the model rejects the example input: still usable as qdq
                    warnings.warn(f"hf_lnorm quantized mode: tracing forward failed ({type(exc).__name__}: {exc}); "
                                  "norms quantize-dequantize only", UserWarning, stacklevel=4)
                    consumers, layers = {}, {}
                    for m in norms.values():
                        m.__dict__[STATE_ATTR].extra["note"] = f"tracing failed ({type(exc).__name__}): quantize-dequantize only"
                self._install(norms, consumers, layers, kernel)
                if any(p.device.type == "cpu" for p in model.parameters()):
                    _CompiledQuantizer.get()  # compile now, not inside the first timed forward
                if all_linears:
                    for lname, layer in layers.items():
                        if LINEAR_ATTR not in layer.__dict__:
                            _install_linear(lname, layer, [], kernel)
        _refresh_report(model, report)

    def _install(self, norms, consumers, layers, kernel):
        readers: Dict[str, List[nn.Module]] = {}
        for norm_name, names in consumers.items():
            for lname in names:
                readers.setdefault(lname, []).append(norms[norm_name])
        for lname, sources in readers.items():
            layer = layers[lname]
            if LINEAR_ATTR in layer.__dict__:  # already int8 from an earlier patch call: add the new sources
                layer.__dict__[LINEAR_ATTR].sources.extend(s for s in sources if s not in layer.__dict__[LINEAR_ATTR].sources)
            else:
                _install_linear(lname, layer, sources, kernel)
        for norm_name, names in consumers.items():
            qs = norms[norm_name].__dict__[STATE_ATTR].extra
            qs["consumers"] = list(names)
            qs["layers"] = [layers[n] for n in names]
            qs["kernel"] = layers[names[0]].__dict__[LINEAR_ATTR].weight.kernel if names else None
            if not names:
                qs["note"] = qs.get("note") or "no Linear consumer: quantize-dequantize only"

    def before_unpatch(self, model: nn.Module) -> None:
        for _, layer in int8_layers(model):
            _uninstall_linear(layer)
        for m in model.modules():
            state = m.__dict__.get(STATE_ATTR)
            if state is not None and state.mode == MODE_NAME:
                state.extra.clear()


def _summary(qs: Dict[str, Any]) -> Dict[str, Any]:
    out = {
        "int8": "gemm" if qs.get("layers") else "qdq",
        "consumers": list(qs.get("consumers", [])),
        "kernel": qs.get("kernel"),
        "smoothed": qs.get("inv_smooth") is not None,
        "static": qs.get("static_scale") is not None,
    }
    if qs.get("note"):
        out["note"] = qs["note"]
    return out


def _refresh_report(model: nn.Module, report: PatchReport) -> None:
    by_name = dict(model.named_modules())
    for rec in report:
        m = by_name.get(rec.name)
        if rec.status == "patched" and m is not None and is_patched(m) and m.__dict__[STATE_ATTR].mode == MODE_NAME:
            rec.extra = {**rec.extra, **_summary(m.__dict__[STATE_ATTR].extra)}


def _quantized_norms(model: nn.Module, what: str) -> List[Tuple[str, nn.Module]]:
    found = [(n, m) for n, m in model.named_modules() if is_patched(m) and m.__dict__[STATE_ATTR].mode == MODE_NAME]
    if not found:
        raise ValueError(f"{what} needs a model patched with hf_lnorm.patch(model, mode='quantized'); "
                         f"{type(model).__name__} has no quantized norm")
    return found


# --------------------------------------------------------------------------- calibrate / smooth


def _batches_or_raise(batches, what: str) -> Iterable:
    """``batches`` as an iterable known to hold at least one batch (only the first is read ahead).

    Raises:
        ValueError: ``batches`` is None or empty.
        TypeError: ``batches`` is not an iterable of batches.
    """
    if batches is None:
        raise ValueError(f"{what} needs an iterable of at least one batch, got None")
    if isinstance(batches, (str, bytes, dict)):
        raise TypeError(f"{what} needs an iterable of batches, got a {type(batches).__name__} "
                        "(wrap a single batch in a list)")
    try:
        it = iter(batches)
    except TypeError:
        raise TypeError(f"{what} needs an iterable of batches, got {type(batches).__name__}") from None
    first = next(it, _MISSING)
    if first is _MISSING:
        raise ValueError(f"{what} needs at least one batch; got an empty iterable")
    return itertools.chain((first,), it)


def _save_quant_state(norms: List[Tuple[str, nn.Module]]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Copies of what calibrate / smooth change: each norm's quantization state and its readers' int8 state."""
    saved = []
    for _, m in norms:
        qs = m.__dict__[STATE_ATTR].extra
        saved.append((qs, dict(qs)))
        for layer in qs.get("layers") or []:
            st = layer.__dict__.get(LINEAR_ATTR)
            if st is not None:
                saved.append((st.__dict__, dict(st.__dict__)))
    return saved


def _restore_quant_state(saved: List[Tuple[Dict[str, Any], Dict[str, Any]]]) -> None:
    for target, copy in saved:
        target.clear()
        target.update(copy)


def _calibrate(model: nn.Module, norms: List[Tuple[str, nn.Module]], batches: Iterable, static: bool) -> None:
    states = [m.__dict__[STATE_ATTR].extra for _, m in norms]
    for qs in states:
        qs.pop("act_absmax", None)
        qs["calibrated_batches"] = 0
        qs["calibrating"] = True
    try:
        with torch.no_grad(), _eval_mode(model):
            for batch in batches:
                _call(model, batch)
    finally:
        for qs in states:
            qs["calibrating"] = False
    for qs in states:
        if static and qs.get("act_absmax") is not None:
            amax = qs["act_absmax"]
            if qs.get("inv_smooth") is not None:  # a smoothed norm quantizes y / s: its range is the scaled one
                amax = amax * qs["inv_smooth"].to(amax.device)
            qs["static_scale"] = max(float(amax.max()) / ACT_QMAX, _TINY)
        else:
            qs.pop("static_scale", None)


def calibrate(model: nn.Module, batches: Iterable, static: bool = False) -> nn.Module:
    """Record per-channel activation ranges of every quantized norm over ``batches``.

    Args:
        model: a model patched with ``mode="quantized"``.
        batches: non-empty iterable of model inputs (dicts of keyword arguments,
            tuples of positional arguments, or tensors).
        static: afterwards quantize each norm's int8 output with one calibrated
            per-tensor scale (``max |y| / 127`` seen in calibration) instead of
            per-token scales.
    Returns:
        The same model. Ranges live in each norm's patch state (``act_absmax``).
    Raises:
        ValueError: no batches, or the model is not quantized-patched.
        TypeError: ``batches`` is not an iterable, or ``static`` is not a bool.

    The input is checked before anything changes, and if a forward pass fails the
    earlier ranges and static scales are restored before the error propagates.

    Example:
        >>> hf_lnorm.calibrate(model, [tok("some text", return_tensors="pt")])  # doctest: +SKIP
    """
    norms = _quantized_norms(model, "calibrate")
    if not isinstance(static, bool):
        raise TypeError(f"static must be True or False, got {static!r}")
    batches = _batches_or_raise(batches, "calibrate")
    saved = _save_quant_state(norms)
    try:
        _calibrate(model, norms, batches, static)
    except BaseException:
        _restore_quant_state(saved)
        raise
    _refresh_report(model, model.__dict__.get("_hf_lnorm_report", PatchReport()))
    return model


def smooth(model: nn.Module, batches: Iterable, alpha: float = 0.5) -> nn.Module:
    """SmoothQuant: migrate activation outliers of each quantized norm into its consumers' weights.

    Calibrates on ``batches``, then for every norm whose int8 readers read only
    that norm computes ``s = smoothing_scales(act_absmax, weight_absmax, alpha)``
    and re-quantizes: the norm emits ``quantize(norm(x) / s)`` and each reader's
    int8 weight becomes ``quantize(W * s)`` (``fold_smoothing``). Float parameters
    are untouched, so ``state_dict`` and ``unpatch`` are unaffected. Like
    ``calibrate(..., static=False)`` it leaves the norms on per-token scales.

    Args:
        model: a model patched with ``mode="quantized"``.
        batches: non-empty iterable of model inputs (see ``calibrate``).
        alpha: migration strength in [0, 1]; 0 leaves activations alone, 1 moves
            all of their range into the weights.
    Returns:
        The same model.
    Raises:
        ValueError: ``alpha`` outside [0, 1], no batches, or model not quantized-patched.
        TypeError: ``batches`` is not an iterable.

    The input is checked before anything changes, and a failure part-way restores
    the earlier calibration and smoothing before the error propagates.
    """
    alpha = _check_alpha(alpha)
    norms = _quantized_norms(model, "smooth")
    batches = _batches_or_raise(batches, "smooth")
    saved = _save_quant_state(norms)
    try:
        for _, m in norms:  # ranges are of the unsmoothed norm output (the norm records y before dividing by s)
            m.__dict__[STATE_ATTR].extra.pop("static_scale", None)
        _calibrate(model, norms, batches, static=False)
        _apply_smoothing(norms, alpha)
    except BaseException:
        _restore_quant_state(saved)
        raise
    _refresh_report(model, model.__dict__.get("_hf_lnorm_report", PatchReport()))
    return model


def _apply_smoothing(norms: List[Tuple[str, nn.Module]], alpha: float) -> None:
    for _, m in norms:
        qs = m.__dict__[STATE_ATTR].extra
        layers = qs.get("layers") or []
        act = qs.get("act_absmax")
        if not layers or act is None:
            continue
        states = [layer.__dict__[LINEAR_ATTR] for layer in layers]
        if any(len(st.sources) != 1 for st in states):
            qs["note"] = "a reader also reads another norm: not smoothed"
            continue
        floats = [_float_weight(layer, st.transposed).detach().float() for layer, st in zip(layers, states)]
        w_absmax = torch.stack([w.abs().amax(dim=0) for w in floats]).amax(dim=0)
        s = smoothing_scales(act.to(w_absmax.device), w_absmax, alpha)
        _, _, folded = fold_smoothing(None, None, floats, s)
        for layer, st, w in zip(layers, states, folded):
            st.weight = Int8Weight.from_float(w, st.weight.kernel)
            st.smooth, st.inv_smooth = s, 1.0 / s
        qs["smooth"], qs["inv_smooth"] = s, 1.0 / s


# --------------------------------------------------------------------------- torch.ao quantized tensors


def _requant_params(y: torch.Tensor, dtype: torch.dtype, observed: Optional[Tuple[float, float]] = None):
    lo, hi = observed if observed is not None else (float(y.min()), float(y.max()))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if dtype == torch.qint8:
        scale = max(max(-lo, hi) / 127.0, _TINY)
        return scale, 0
    if dtype == torch.quint8:
        scale = max((hi - lo) / 255.0, _TINY)
        return scale, int(min(255, max(0, round(-lo / scale))))
    raise ValueError(f"requantizing to {dtype} is not supported; accepted: torch.quint8, torch.qint8")


def _requantized_norm(module: nn.Module, spec: NormSpec, x: torch.Tensor, qs: Dict[str, Any]) -> torch.Tensor:
    y = _norm_float(module, x.dequantize())
    scale, zp = _requant_params(y, x.dtype, qs.get("out_range"))
    return torch.quantize_per_tensor(y, scale, zp, x.dtype)


class QuantizedTensorLayerNorm(nn.Module):
    """Dequantize -> LayerNorm -> requantize, for models that carry ``torch.ao`` quantized tensors.

    The output gets its own quantization parameters: the ``(min, max)`` range
    observed while ``observe`` is True (set ``observe=True``, run calibration
    data, set it False), or, before any observation, the range of each output.
    The course sketch reused the input's scale, which clips or wastes the
    output range because LayerNorm rescales its input.

    Float inputs are normalized and returned as float.

    Args:
        normalized_shape, eps, elementwise_affine, bias: as ``nn.LayerNorm``.
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
        scale, zp = _requant_params(y, x.dtype, observed)
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


register_mode(QuantizedMode())
