"""The per-call fast path of patched norms: a few attribute reads before the kernel.

A patched norm's general forward (``patching.FusedMode.forward`` → ``fused.fused_norm``)
answers several questions on every call: is a graph being traced, which backend, does the
C++ kernel cover these tensors, do they need gradients. At small activations (a batch of one
sequence of 128 tokens) those checks cost more than the kernel saves. This module decides once,
when a layer is patched, what a call can take (``plan``), and ``eager_call`` then checks only
what may differ between calls:

* the call is plain eager execution: not ``torch.compile`` (dynamo), not a TorchScript trace,
  and ``x`` is a plain ``torch.Tensor`` (``torch.fx`` Proxies, fake tensors of ``torch.export``
  and of the ONNX dynamo exporter, and tensor subclasses such as DTensor are not, so they take
  the general path);
* the tensors are float32 on the CPU, the gain and bias are plain, contiguous and sized like the
  last dim of ``x``, and nothing records gradients: then the C++ kernel runs (``norms/cpu``), or
  aten's own kernel for inputs under ``CPP_MIN_NUMEL`` elements, where the op's dispatch would cost
  more than the kernel saves;
* otherwise LayerNorm calls ``F.layer_norm`` as ``nn.LayerNorm`` does, the RMS variants call
  ``F.rms_norm`` in float32 (what the general path's aten backend computes there), and half
  precision returns ``None``, which sends the caller to the general path.

The answers equal the general path's: the same kernels under the same conditions.

Examples:
    >>> import torch
    >>> from hf_lnorm.norms.fastpath import FastPlan, eager_call
    >>> plan = FastPlan(size=8, rms=False, has_weight=True, has_bias=True, eps_attr="eps", cpp=False, layer_norm=True)
    >>> norm = torch.nn.LayerNorm(8)
    >>> x = torch.randn(2, 8)
    >>> torch.equal(eager_call(plan, norm, x), norm(x))
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import LAYER_NORM, NormSpec

__all__ = ["FastPlan", "plan", "eager_call", "plain_eager", "cpp_inference_ok"]

_Tensor = torch.Tensor
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_F32 = torch.float32
_dynamo_compiling = torch.compiler.is_dynamo_compiling
_jit_tracing_state = torch._C._get_tracing_state
_grad_enabled = torch.is_grad_enabled

def _min_numel() -> int:
    text = os.environ.get("HF_LNORM_CPU_MIN_NUMEL", "").strip()
    if not text:
        return 4096
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"HF_LNORM_CPU_MIN_NUMEL={text!r} is not accepted; accepted: a whole number >= 0 "
                         "(the fewest elements an input needs to take the C++ kernel; default 4096)")
    return value


# Inputs with fewer elements than this take aten's kernel in the C++ case: one call of the C++ op through
# torch's dispatcher costs about 8 us, aten's LayerNorm of a 384-wide row about 5 us, and the two cross near
# 4,096 elements on a Zen 4 core (both calls timed at 1 to 256 rows of 384 to 4,096 floats, one thread).
# HF_LNORM_CPU_MIN_NUMEL sets it (0: the C++ kernel for every size), read once at import.
CPP_MIN_NUMEL = _min_numel()
# the variants whose float32 math the C++ kernel computes (LayerNorm, and RMS as normed * weight)
_CPP_VARIANTS = ("layer_norm", "rms_norm_llama", "rms_norm_t5", "rms_norm_torch")


@dataclass(frozen=True)
class FastPlan:
    """What a patched norm's calls may take, decided when it is patched.

    Attributes:
        size: the normalized size (the last dim of the inputs).
        rms: an RMS variant whose float32 math is ``normed * weight`` (Llama, T5, ``nn.RMSNorm``), rather
            than last-dim LayerNorm.
        has_weight: the module has a gain (``module.weight``).
        has_bias: the module has a bias (``module.bias``).
        eps_attr: the attribute holding the epsilon.
        cpp: the C++ CPU kernels are the backend and are built.
        layer_norm: the variant is last-dim LayerNorm, so calls outside the C++ case may run
            ``F.layer_norm`` directly.
    """

    size: int
    rms: bool
    has_weight: bool
    has_bias: bool
    eps_attr: str
    cpp: bool
    layer_norm: bool


def plan(spec: NormSpec, module: torch.nn.Module, backend: str, size: Optional[int],
         mixed_ok: bool = True) -> Optional[FastPlan]:
    """The fast plan of a norm patched with ``spec`` and ``backend``, or None when its calls need the general path.

    Args:
        spec: the norm's variant.
        module: the norm module (its gain and bias must be parameters, for ``module._parameters``).
        backend: the backend the norm was patched with (``"cpp"``, ``"aten"``, ``"triton"``).
        size: the normalized size (None when the module does not say).
        mixed_ok: False when the probe found that half inputs with float32 parameters must take the
            original forward; such norms keep the general path.

    Returns:
        A ``FastPlan``, or None (Triton backend, channels-first, Gemma or multi-dim norms, an epsilon that
        is not a float attribute, parameters that are not in ``module._parameters``).
    """
    if backend not in ("cpp", "aten") or not mixed_ok or spec.normalized_ndim != 1 or not spec.eps_attr or not size:
        return None
    params = module._parameters
    if (spec.has_weight and "weight" not in params) or (spec.has_bias and "bias" not in params):
        return None
    if not isinstance(getattr(module, spec.eps_attr, None), float):
        return None  # eps=None (nn.RMSNorm's dtype epsilon) or a tensor: the general path knows the rules
    if spec.variant not in _CPP_VARIANTS:
        return None  # Gemma's 1 + weight and channels-first keep the general path
    layer_norm = spec.variant == LAYER_NORM
    return FastPlan(int(size), not layer_norm, spec.has_weight, spec.has_bias, spec.eps_attr, backend == "cpp",
                    layer_norm)


def plain_eager(x) -> bool:
    """Whether a call on ``x`` is plain eager execution (see the module docstring).

    Args:
        x: the norm's input.

    Returns:
        False under ``torch.compile``, a TorchScript trace, or for anything but a plain ``torch.Tensor``.
    """
    return not _dynamo_compiling() and type(x) is _Tensor and _jit_tracing_state() is None


def cpp_inference_ok(x: Tensor, size: int, weight: Optional[Tensor], bias: Optional[Tensor]) -> bool:
    """Whether the C++ kernel computes this call: float32 CPU tensors whose last dim is ``size``, plain
    contiguous parameters of that size, and no gradient recorded (``x`` is a plain tensor: see ``plain_eager``).

    Args:
        x: the input.
        size: the normalized size.
        weight: the gain, or None.
        bias: the bias, or None.

    Returns:
        True when ``torch.ops.hf_lnorm_cpu.add_norm`` may run.
    """
    if x.dtype is not _F32 or not x.is_cpu or x.dim() == 0 or x.shape[-1] != size:
        return False
    grad = _grad_enabled() and x.requires_grad
    for t in (weight, bias):
        if t is not None:
            if (type(t) not in _PLAIN or t.dtype is not _F32 or not t.is_cpu or t.dim() != 1 or t.shape[0] != size
                    or not t.is_contiguous()):
                return False
            grad = grad or (t.requires_grad and _grad_enabled())
    return not grad


def eager_call(fast: FastPlan, module: torch.nn.Module, x) -> Optional[Tensor]:
    """The norm's output on ``x`` through the fast path, or None when the call needs the general path.

    Args:
        fast: the module's plan (``plan``).
        module: the patched norm.
        x: its input.

    Returns:
        The output tensor, or None.
    """
    if not plain_eager(x):
        return None
    params = module._parameters
    weight = params["weight"] if fast.has_weight else None
    bias = params["bias"] if fast.has_bias else None
    eps = getattr(module, fast.eps_attr)
    # below CPP_MIN_NUMEL elements aten's kernel costs less than the op's dispatch
    if fast.cpp and x.numel() >= CPP_MIN_NUMEL and cpp_inference_ok(x, fast.size, weight, bias):
        if not x.is_contiguous():
            x = x.contiguous()
        return torch.ops.hf_lnorm_cpu.add_norm(x, None, weight, bias, eps, fast.rms, False)[0]
    if fast.layer_norm:
        return F.layer_norm(x, (fast.size,), weight, bias, eps)
    if x.dtype is _F32 and (weight is None or weight.dtype is _F32):
        return F.rms_norm(x, (fast.size,), weight, eps)  # float32 math of the Llama, T5 and torch RMS variants
    return None  # half precision: the variant's casting rules are in the general path
