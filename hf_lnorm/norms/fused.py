"""Exact ("fused") implementations of every reference variant, with backend dispatch.

``fused_norm(spec, x, weight, bias, eps)`` computes the same numbers as
``reference.reference_forward`` and as the original module, through the
fastest exact path available for the tensor's device:

* ``aten``: PyTorch's native ``layer_norm`` / ``rms_norm`` kernels (every
  device, every variant and dtype, autograd).
* ``cpp``: hf_lnorm's C++ CPU kernel (``norms/cpu``) for float32 inference of
  last-dim LayerNorm and the Llama / T5 / ``nn.RMSNorm`` conventions, ``aten``
  for everything else (gradients, half precision, channels-first, Gemma). It is
  faster than aten on CPU mostly because its output blocks are recycled
  instead of faulted in fresh (``hf-lnorm bench norms --device cpu``), and
  equals aten within fp32 rounding, not bit for bit.
* ``triton``: the Triton kernels of ``norms/triton`` through the
  ``hf_lnorm::norm_fwd`` custom op (compile- and export-safe, registered
  autograd) for CUDA tensors; other tensors take the ``aten`` path (except
  under ``TRITON_INTERPRET=1``, where the kernels run on CPU for testing).

Backends are looked up by name; ``resolve_backend`` picks one when a layer is
patched (``triton`` when CUDA and Triton are both present, else ``cpp`` when
the C++ kernels build here, else ``aten``);
forcing a backend that cannot run here raises a clear error.

Example:
    >>> import torch
    >>> from hf_lnorm.norms.reference import NormSpec
    >>> spec = NormSpec("rms_norm_llama", eps_attr="variance_epsilon")
    >>> fused_norm(spec, torch.randn(2, 8), torch.ones(8), None, 1e-6).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .reference import (
    LAYER_NORM,
    LAYER_NORM_CHANNELS_FIRST,
    RMS_NORM_GEMMA,
    RMS_NORM_LLAMA,
    RMS_NORM_T5,
    RMS_NORM_TORCH,
    NormSpec,
)

_HALF = (torch.float16, torch.bfloat16)
NormFn = Callable[[NormSpec, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor], Optional[float]], torch.Tensor]


def static_dims(dims) -> tuple:
    """Normalized sizes as Python ints.

    Exporters that trace with dynamic axes (torch.onnx's TorchScript path, which
    Optimum uses) turn ``x.shape[-1]`` into a graph value, and ``normalized_shape``
    must be a constant; norm sizes are fixed by the weights, so a constant is right.
    """
    return tuple(int(d) for d in dims)


def aten_norm(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: Optional[float],
) -> torch.Tensor:
    """Native-kernel implementation of ``spec`` (exact to the original's casting order)."""
    n = spec.normalized_ndim
    variant = spec.variant
    if variant == LAYER_NORM:
        return F.layer_norm(x, static_dims(x.shape[-n:]), weight, bias, eps)
    if variant == LAYER_NORM_CHANNELS_FIRST:
        y = F.layer_norm(x.movedim(1, -1), static_dims(x.shape[1:2]), weight, bias, eps)
        return y.movedim(-1, 1)
    shape = static_dims(x.shape[-n:])
    if variant == RMS_NORM_TORCH:
        return F.rms_norm(x, shape, weight, eps)
    if variant == RMS_NORM_GEMMA:
        gain = None if weight is None else 1.0 + weight.float()
        if x.dtype != torch.float32:  # fp32 math, one cast at the end (as Gemma does)
            return F.rms_norm(x.float(), shape, gain, eps).to(x.dtype)
        return F.rms_norm(x, shape, gain, eps)
    if variant == RMS_NORM_LLAMA:
        if weight is not None and x.dtype == weight.dtype == torch.float32:
            return F.rms_norm(x, shape, weight, eps)
        y = F.rms_norm(x, shape, None, eps)
        return y if weight is None else weight * y
    if variant == RMS_NORM_T5:
        if x.dtype == torch.float32 and (weight is None or weight.dtype == torch.float32):
            return F.rms_norm(x, shape, weight, eps)
        y = F.rms_norm(x.float(), shape, None, eps)
        if weight is None:
            return y
        if weight.dtype in _HALF:
            y = y.to(weight.dtype)
        return weight * y
    raise ValueError(f"unknown norm variant {variant!r}")


_KIND_OF_VARIANT = {
    LAYER_NORM: "layer_norm",
    LAYER_NORM_CHANNELS_FIRST: "layer_norm",
    RMS_NORM_LLAMA: "rms_llama",
    RMS_NORM_GEMMA: "rms_gemma",
    RMS_NORM_T5: "rms_t5",
    RMS_NORM_TORCH: "rms_torch",
}


def triton_norm(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: Optional[float],
) -> torch.Tensor:
    """Triton-kernel implementation of ``spec`` (CUDA tensors; ``aten`` for the others).

    Multi-dim normalized shapes are flattened to one dim and channels-first
    inputs are moved to channels-last around the kernel.
    """
    from . import ops

    if x.device.type != "cuda" and not ops.triton_interpret():
        return aten_norm(spec, x, weight, bias, eps)
    if eps is None:  # nn.RMSNorm(eps=None) uses the input dtype's machine epsilon
        eps = torch.finfo(x.dtype).eps
    kind = _KIND_OF_VARIANT[spec.variant]
    if spec.variant == LAYER_NORM_CHANNELS_FIRST:
        y = ops.triton_norm_fwd(x.movedim(1, -1), None, weight, bias, float(eps), kind)[0]
        return y.movedim(-1, 1)
    n = spec.normalized_ndim
    if n == 1:
        return ops.triton_norm_fwd(x, None, weight, bias, float(eps), kind)[0]
    flat = x.reshape(x.shape[:-n] + (-1,))
    w = None if weight is None else weight.reshape(-1)
    b = None if bias is None else bias.reshape(-1)
    return ops.triton_norm_fwd(flat, None, w, b, float(eps), kind)[0].reshape(x.shape)


def cpp_norm(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: Optional[float],
) -> torch.Tensor:
    """hf_lnorm's C++ CPU kernel (``norms/cpu``) for float32 inference over the last dim; ``aten`` otherwise.

    Covers LayerNorm and the RMS conventions whose float32 math is ``normed * w``
    (Llama, T5, ``nn.RMSNorm``); the result equals ``aten``'s within fp32 rounding.
    """
    from . import ops

    kind = _KIND_OF_VARIANT[spec.variant]
    if (spec.variant != LAYER_NORM_CHANNELS_FIRST and spec.normalized_ndim == 1 and eps is not None
            and ops._cpp_inference(x, None, weight, bias, kind)):
        return ops._cpp_fwd(x, None, weight, bias, eps, kind)[0]
    return aten_norm(spec, x, weight, bias, eps)


BACKENDS: Dict[str, NormFn] = {"aten": aten_norm, "triton": triton_norm, "cpp": cpp_norm}


def _unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run in this process, or None when it can."""
    if name == "cpp":
        from . import cpu

        return cpu.unavailable_reason()
    if name == "triton":
        from . import ops

        if not ops.triton_available():
            return "Triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and not ops.triton_interpret():
            return "no CUDA device (Triton runs on CPU only with TRITON_INTERPRET=1)"
    return None


def available_backends() -> list:
    """Names of the backends that can run in this process."""
    return [name for name in BACKENDS if _unavailable_reason(name) is None]


def default_backend() -> str:
    """The backend ``patch`` uses when none is forced: ``triton`` with CUDA + Triton, else ``cpp``
    when the C++ CPU kernels build here, else ``aten``."""
    from . import cpu, ops

    if torch.cuda.is_available() and ops.triton_available():
        return "triton"
    return "cpp" if cpu.is_available() else "aten"


def resolve_backend(backend: Optional[str] = None) -> str:
    """Validate a requested backend name, or pick the default (see ``default_backend``).

    Args:
        backend: ``None``/``"auto"`` for the default, or a name in ``BACKENDS``.
    Returns:
        The backend name to store with a patched layer.
    Raises:
        ValueError: the name is not a backend this package knows, or it cannot run here.
    """
    if backend is None or backend == "auto":
        return default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: auto, {', '.join(BACKENDS)}")
    why = _unavailable_reason(backend)
    if why is not None:
        raise ValueError(
            f"backend {backend!r} was forced but is not available: {why}; "
            f"available backends: {', '.join(available_backends())}"
        )
    return backend


def fused_norm(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: Optional[float],
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Run ``spec`` on ``x`` with the named backend.

    Args:
        spec: what to compute; x: the input.
        weight, bias, eps: the module's parameters and epsilon.
        backend: a name from ``BACKENDS``; None picks ``default_backend()``.
    Returns:
        The same tensor the original module returns (shape and dtype).
    """
    return BACKENDS[backend or default_backend()](spec, x, weight, bias, eps)
