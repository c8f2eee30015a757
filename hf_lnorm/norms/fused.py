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

Backends are registered here, once, and looked up by name; ``resolve_backend``
picks one when a layer is patched (``triton`` when CUDA and Triton are both
present, else ``cpp`` when the C++ kernels build here, else ``aten``); forcing
a backend that cannot run here raises a clear error.

Graphs. The path is chosen per call from the tensors and the tracing state
(``tracing``), never from flags: while a graph is recorded (``torch.fx``,
``torch.jit.trace``, ``torch.export``, ONNX export) ``fused_norm`` records
``traced_norm`` instead, which takes the normalized shape as Python ints (from
the module, not from ``x.shape``, so fx never iterates a Proxy) and computes
what the eager call computes:

* ``aten``: the same aten calls as eager (``F.layer_norm`` / ``F.rms_norm``), so
  a traced graph equals eager bit for bit, and equals the stock model's for
  LayerNorm.
* ``cpp``: the ``hf_lnorm::norm_fwd`` custom op with ``impl="cpp_inference"``,
  which at run time takes the C++ kernel exactly where eager does (float32 CPU
  inference) and aten elsewhere, so the graph computes what eager computes.
* ONNX export (every backend): ``F.layer_norm``, exported as the standard
  ``LayerNormalization`` node, and the RMS variants as the reference math
  (``Pow``/``ReduceMean``/``Sqrt``...: opset 17 has no RMSNorm op).

``torch.fx`` records no dtypes, so under fx the casting rules are taken for an
input in the parameters' dtype (the case models run in).

Examples:
    >>> import torch
    >>> from hf_lnorm.norms.fused import fused_norm
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
from . import ops  # imported once here: tracing() runs on every norm call
from .reference import rms_norm as reference_rms_norm

_HALF = (torch.float16, torch.bfloat16)
NormFn = Callable[[NormSpec, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor], Optional[float]], torch.Tensor]


def static_dims(dims) -> tuple:
    """Normalized sizes as Python ints.

    Exporters that trace with dynamic axes (torch.onnx's TorchScript path, which
    Optimum uses) turn ``x.shape[-1]`` into a graph value, and ``normalized_shape``
    must be a constant; norm sizes are fixed by the weights, so a constant is right.
    """
    return tuple(int(d) for d in dims)


def tracing(x) -> bool:
    """Whether this thread is recording ``x`` into a graph: ``torch.fx`` (``x`` is a Proxy),
    ``torch.jit.trace`` (and torch.onnx's TorchScript exporter, which traces with it), ``torch.export``
    (and torch.onnx's dynamo exporter, which exports with it).

    Only per-thread signals count (torch's export flags are process-wide, see ``ops.compiling``), so an
    export in one thread leaves the path of a model running in another alone. ``torch.compile`` is not
    tracing here: it runs the eager paths, which are compile-safe.
    """

    return (isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing()
            or (_is_exporting() and ops.compiling(x)))


_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch >= 2.6


def aten_norm(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: Optional[float],
    normalized_shape: Optional[tuple] = None,
    dtypes: Optional[tuple] = None,
) -> torch.Tensor:
    """Native-kernel implementation of ``spec`` (exact to the original's casting order).

    Args:
        spec: what to compute.
        x: the input.
        weight: the gain, or None.
        bias: the bias, or None.
        eps: the epsilon.
        normalized_shape: the normalized sizes as Python ints (default: from ``x.shape``).
        dtypes: ``(input dtype, weight dtype)`` that pick the casting steps (default: the tensors').

    Returns:
        The norm's output, shaped and typed as the original module returns it.

    Raises:
        ValueError: ``spec.variant`` is not a known variant.
    """
    n = spec.normalized_ndim
    variant = spec.variant
    if variant == LAYER_NORM_CHANNELS_FIRST:
        shape = normalized_shape or static_dims(x.shape[1:2])
        return F.layer_norm(x.movedim(1, -1), shape, weight, bias, eps).movedim(-1, 1)
    shape = normalized_shape or static_dims(x.shape[-n:])
    if variant == LAYER_NORM:
        return F.layer_norm(x, shape, weight, bias, eps)
    x_dtype, w_dtype = dtypes or (x.dtype, None if weight is None else weight.dtype)
    if variant == RMS_NORM_TORCH:
        return F.rms_norm(x, shape, weight, eps)
    if variant == RMS_NORM_GEMMA:
        gain = None if weight is None else 1.0 + weight.float()
        if x_dtype != torch.float32:  # fp32 math, one cast at the end (as Gemma does)
            return F.rms_norm(x.float(), shape, gain, eps).to(x.dtype)
        return F.rms_norm(x, shape, gain, eps)
    if variant == RMS_NORM_LLAMA:
        if weight is not None and x_dtype == w_dtype == torch.float32:
            return F.rms_norm(x, shape, weight, eps)
        y = F.rms_norm(x, shape, None, eps)
        return y if weight is None else weight * y
    if variant == RMS_NORM_T5:
        if x_dtype == torch.float32 and (weight is None or w_dtype == torch.float32):
            return F.rms_norm(x, shape, weight, eps)
        y = F.rms_norm(x.float(), shape, None, eps)
        if weight is None:
            return y
        if w_dtype in _HALF:
            y = y.to(w_dtype)
        return weight * y
    raise ValueError(f"unknown norm variant {variant!r}")


# the op variant that computes each reference variant (channels-first runs the last-dim LayerNorm on moved dims)
_OP_VARIANT = {
    LAYER_NORM: LAYER_NORM,
    LAYER_NORM_CHANNELS_FIRST: LAYER_NORM,
    RMS_NORM_LLAMA: RMS_NORM_LLAMA,
    RMS_NORM_GEMMA: RMS_NORM_GEMMA,
    RMS_NORM_T5: RMS_NORM_T5,
    RMS_NORM_TORCH: RMS_NORM_TORCH,
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

    if x.device.type != "cuda" and not ops.triton_interpret():
        return aten_norm(spec, x, weight, bias, eps)
    if eps is None:  # nn.RMSNorm(eps=None) uses the input dtype's machine epsilon
        eps = torch.finfo(x.dtype).eps
    op_variant = _OP_VARIANT[spec.variant]
    if spec.variant == LAYER_NORM_CHANNELS_FIRST:
        y = ops.triton_norm_fwd(x.movedim(1, -1), None, weight, bias, float(eps), op_variant)[0]
        return y.movedim(-1, 1)
    n = spec.normalized_ndim
    if n == 1:
        return ops.triton_norm_fwd(x, None, weight, bias, float(eps), op_variant)[0]
    flat = x.reshape(x.shape[:-n] + (-1,))
    w = None if weight is None else weight.reshape(-1)
    b = None if bias is None else bias.reshape(-1)
    return ops.triton_norm_fwd(flat, None, w, b, float(eps), op_variant)[0].reshape(x.shape)


def cpp_norm(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: Optional[float],
) -> torch.Tensor:
    """hf_lnorm's C++ CPU kernel (``norms/cpu``) for float32 inference over the last dim; ``aten`` otherwise.

    Covers LayerNorm and the RMS variants whose float32 math is ``normed * w``
    (Llama, T5, ``nn.RMSNorm``); the result equals ``aten``'s within fp32 rounding.
    """

    op_variant = _OP_VARIANT[spec.variant]
    if (spec.variant != LAYER_NORM_CHANNELS_FIRST and spec.normalized_ndim == 1 and eps is not None
            and ops._cpp_inference(x, None, weight, bias, op_variant)):
        return ops._cpp_fwd(x, None, weight, bias, eps, op_variant)[0]
    return aten_norm(spec, x, weight, bias, eps)


BACKENDS: Dict[str, NormFn] = {"aten": aten_norm, "triton": triton_norm, "cpp": cpp_norm}


def traced_norm(
    spec: NormSpec,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: Optional[float],
    backend: str,
    normalized_shape: Optional[tuple] = None,
    weight_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """What a norm records while a graph is traced (see the module docstring, "Graphs").

    Args:
        spec: what to compute.
        x: the input (a tensor, or a Proxy under ``torch.fx``).
        weight: the gain, or None.
        bias: the bias, or None.
        eps: the epsilon.
        backend: the backend the norm runs eagerly.
        normalized_shape: the normalized sizes as Python ints; needed under ``torch.fx``
            (default: from ``x.shape``, which fx cannot iterate).
        weight_dtype: the gain's dtype; needed under ``torch.fx``, where ``weight`` is a Proxy.

    Returns:
        The graph's output tensor (or Proxy).
    """
    n = spec.normalized_ndim
    if weight_dtype is None and isinstance(weight, torch.Tensor):
        weight_dtype = weight.dtype
    x_dtype = (weight_dtype or torch.float32) if isinstance(x, torch.fx.Proxy) else x.dtype
    if normalized_shape is None:
        normalized_shape = static_dims(x.shape[1:2] if spec.variant == LAYER_NORM_CHANNELS_FIRST else x.shape[-n:])
    if torch.onnx.is_in_onnx_export() and spec.is_rms:
        if eps is None:
            eps = torch.finfo(x.dtype).eps
        return reference_rms_norm(x, weight, eps, spec.variant, n)

    op_variant = _OP_VARIANT[spec.variant]
    if (backend == "cpp" and not torch.onnx.is_in_onnx_export() and op_variant in ops.CPP_VARIANTS
            and spec.variant != LAYER_NORM_CHANNELS_FIRST and n == 1 and eps is not None):
        return ops.norm_fwd(x, None, weight, bias, float(eps), op_variant, "cpp_inference")[0]
    return aten_norm(spec, x, weight, bias, eps, normalized_shape, (x_dtype, weight_dtype))


def _unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run in this process, or None when it can."""
    if name == "cpp":
        from . import cpu

        return cpu.unavailable_reason()
    if name == "triton":

        if not ops.triton_available():
            return "Triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and not ops.triton_interpret():
            return "no CUDA device (Triton runs on CPU only with TRITON_INTERPRET=1)"
    return None


def available_backends() -> list:
    """Names of the backends that can run in this process.

    ``aten`` is always there; ``cpp`` needs a C++ compiler (the kernels are built
    once into the cache directory) and may be turned off with
    ``HF_LNORM_CPU_KERNELS=0``; ``triton`` needs Triton and a CUDA device.

    Returns:
        A subset of ``["aten", "triton", "cpp"]``, in that order.

    Examples:
        >>> from hf_lnorm.norms import available_backends
        >>> "aten" in available_backends()
        True
    """
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

    ``patch(model, backend=...)`` calls this, so an unusable backend fails before
    the model is touched.

    Args:
        backend: ``None``/``"auto"`` for the default, or a name in ``BACKENDS``
            (``"aten"``, ``"triton"``, ``"cpp"``).

    Returns:
        The backend name to store with a patched layer.

    Raises:
        ValueError: the name is not a backend this package knows, or it cannot run here
            (the message says why and lists the available ones).

    Examples:
        >>> from hf_lnorm.norms import resolve_backend
        >>> resolve_backend("aten")
        'aten'
        >>> resolve_backend("auto") in ("aten", "cpp", "triton")
        True
        >>> resolve_backend("cuda")
        Traceback (most recent call last):
        ...
        ValueError: unknown backend 'cuda'; accepted: auto, aten, triton, cpp
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
    normalized_shape: Optional[tuple] = None,
    weight_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Run ``spec`` on ``x`` with the named backend (its graph form, ``traced_norm``, while tracing).

    This is what a patched norm runs in ``fused`` mode: the numbers of
    ``reference_forward`` (and of the original module) through the backend's
    kernels.

    Args:
        spec: what to compute.
        x: the input.
        weight: the module's gain, or None.
        bias: the module's bias, or None.
        eps: the module's epsilon (None for ``nn.RMSNorm(eps=None)``).
        backend: a name from ``BACKENDS``; None picks ``default_backend()``.
        normalized_shape: the normalized sizes (Python ints), used while tracing;
            ``torch.fx`` needs them (its Proxies have no shape).
        weight_dtype: the gain's dtype, used while tracing under ``torch.fx``.

    Returns:
        The same tensor the original module returns (shape and dtype).

    Raises:
        KeyError: ``backend`` is not a name in ``BACKENDS`` (use ``resolve_backend``
            to validate a user's choice first).

    Examples:
        >>> import torch
        >>> from hf_lnorm.norms import NormSpec, fused_norm
        >>> norm = torch.nn.RMSNorm(16, eps=1e-6)
        >>> x = torch.randn(2, 16)
        >>> y = fused_norm(NormSpec("rms_norm_torch"), x, norm.weight, None, norm.eps, backend="aten")
        >>> torch.allclose(y, norm(x))
        True
    """
    backend = backend or default_backend()
    if tracing(x):
        return traced_norm(spec, x, weight, bias, eps, backend, normalized_shape, weight_dtype)
    return BACKENDS[backend](spec, x, weight, bias, eps)
