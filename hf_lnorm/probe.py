"""Recognise a norm layer by its structure and prove which reference variant it computes.

``patch`` (in ``hf_lnorm.patching``) asks this module two things about each
submodule: is it norm-like (``_is_candidate``), and which variant of
``norms/reference.py`` reproduces it (``classify``). Classification runs each
candidate variant beside the original module on random inputs (fp32, bf16, and
bf16 input with fp32 parameters, plus a tiny-variance input that exposes the
eps) with random parameters substituted through ``torch.func.functional_call``.

The probe never reads a parameter's values, only its shape, dtype and device, and
it calls the module's ``forward`` without the module's hooks. So it works on
sharded models: an FSDP2 ``DTensor`` parameter gives its global shape, a
DeepSpeed ZeRO-3 placeholder (an empty tensor) its ``ds_shape``, and the
all-gather hooks FSDP2 and ZeRO-3 put on a module never run during the probe.
An empty parameter that says nothing about its full shape is refused with a
``ValueError`` (``_placeholder_error``), and so is a model whose parameters are
all on the ``meta`` device (``meta_model_error``): ``patch`` needs parameters it
can run.

Elementwise stand-ins for a norm, such as DyT (Dynamic Tanh, ``weight * tanh(alpha * x) + bias``),
are norm-like by position but not normalizations: they are reported as skipped,
never probed or patched. They are recognised by class name (``*DyT``,
``DynamicTanh``) or by a true class attribute ``is_elementwise_norm_substitute``.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Optional, Tuple

import torch
from torch import nn

from .norms.fused import fused_norm
from .norms.reference import (
    LAYER_NORM,
    LAYER_NORM_CHANNELS_FIRST,
    RMS_NORM_GEMMA,
    RMS_NORM_LLAMA,
    RMS_NORM_T5,
    RMS_NORM_TORCH,
    NormSpec,
)

EPS_ATTRS = ("eps", "variance_epsilon", "epsilon", "layer_norm_eps", "norm_eps")
_NORM_CLASS_NAME = re.compile(r"Norm(\d*d?|Gated)?$")
_NOT_LAST_DIM = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)
_RMS_ORDER = (RMS_NORM_LLAMA, RMS_NORM_T5, RMS_NORM_TORCH, RMS_NORM_GEMMA)
ELEMENTWISE_SUBSTITUTE_ATTR = "is_elementwise_norm_substitute"
_DYT_CLASS_NAME = re.compile(r"(DyT|DynamicTanh)$")
DYT_SKIP_REASON = "DyT: elementwise tanh, not a normalization; nothing to fuse"


def _substitute_reason(module: nn.Module) -> Optional[str]:
    """Why ``module`` is an elementwise stand-in for a norm (DyT and the like) and is not patched, else None."""
    cls = type(module)
    if _DYT_CLASS_NAME.search(cls.__name__):
        return DYT_SKIP_REASON
    if getattr(cls, ELEMENTWISE_SUBSTITUTE_ATTR, False) is True:
        return f"{cls.__name__}: elementwise, not a normalization; nothing to fuse"
    return None


def _is_candidate(module: nn.Module) -> bool:
    if type(module).__module__.startswith("torch.nn.utils"):
        return False  # weight/spectral-norm parametrizations normalize weights, not activations
    if _substitute_reason(module) is not None:
        return True  # listed in the report as skipped, with the reason
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm) + _NOT_LAST_DIM):
        return True
    return bool(_NORM_CLASS_NAME.search(type(module).__name__))


def _qualname(module: nn.Module) -> str:
    t = type(module)
    return f"{t.__module__}.{t.__qualname__}"


def _forward_signature_problem(module: nn.Module) -> Optional[str]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not params:
        return "forward takes no tensor argument"
    extra = [p.name for p in params[1:]]
    if extra:
        return f"forward takes extra arguments ({', '.join(extra)}); only single-input norms are patched"
    return None


def _full_shape(param: Optional[torch.Tensor]) -> Optional[Tuple[int, ...]]:
    """The shape ``param`` has when gathered: its own, a ``DTensor``'s global shape, or a ZeRO-3 ``ds_shape``."""
    if param is None:
        return None
    ds_shape = getattr(param, "ds_shape", None)  # DeepSpeed ZeRO-3 keeps an empty tensor and the full shape here
    if ds_shape is not None and param.numel() == 0:
        return tuple(int(d) for d in ds_shape)
    return tuple(param.shape)  # a DTensor reports its global shape


def _placeholder_error(module: nn.Module, name: str, param: torch.Tensor) -> str:
    return (
        f"hf_lnorm.patch: the {name} of {type(module).__name__} is an empty placeholder (shape "
        f"{tuple(param.shape)}) with no full shape (no ds_shape attribute), as left by a sharding wrapper "
        "that gathers parameters during forward; call hf_lnorm.patch on the model before sharding it, or "
        "with its parameters gathered"
    )


def meta_model_error(model: nn.Module) -> Optional[str]:
    """Why ``patch`` refuses ``model``: its parameters are all on the ``meta`` device; else None.

    ``patch`` runs each norm (and each fused residual block) on probe inputs,
    which meta tensors cannot do. A model whose meta parameters are loaded by
    accelerate's hooks at forward time (``device_map`` offloading, a module
    with ``_hf_hook``) is accepted: its meta norms are reported as skipped.

    Args:
        model: the model passed to ``patch``.

    Returns:
        The error message, or None when ``model`` can be patched.

    Examples:
        >>> import torch
        >>> with torch.device("meta"):
        ...     model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> print(meta_model_error(model).split(";")[0])
        hf_lnorm.patch: every parameter of Sequential is on the meta device (first: '0.weight')
        >>> meta_model_error(torch.nn.LayerNorm(4)) is None
        True
    """
    params = list(model.named_parameters())
    if not params or any(p.device.type != "meta" for _, p in params):
        return None
    if any("_hf_hook" in m.__dict__ for m in model.modules()):
        return None
    return (
        f"hf_lnorm.patch: every parameter of {type(model).__name__} is on the meta device (first: {params[0][0]!r}); "
        "patch runs each norm on probe inputs and needs real parameters. Materialise the model first "
        "(model.to_empty(device=...), then load or initialise the weights), then patch it; under FSDP2 "
        "that is after fully_shard and to_empty, which patch supports"
    )


def _structure(module: nn.Module):
    """(weight, bias, eps_attr, normalized_shape, channels_first) or a reason string."""
    substitute = _substitute_reason(module)
    if substitute is not None:
        return substitute
    if isinstance(module, _NOT_LAST_DIM) or re.search(r"(Batch|Group|Instance)Norm", type(module).__name__):
        return f"{type(module).__name__} normalizes over channels, groups or the batch, not the last dimension"
    if any(True for _ in module.children()):
        return "has submodules; not a plain norm layer"
    params = dict(module.named_parameters(recurse=False))
    unexpected = sorted(set(params) - {"weight", "bias"})
    if unexpected:
        return f"has parameters other than weight/bias: {', '.join(unexpected)}"
    weight, bias = params.get("weight"), params.get("bias")
    if weight is None and "weight" in module._buffers:
        return "its gain is a buffer, not a parameter"
    if weight is not None and weight.device.type == "meta":
        return "parameters are on the meta device"
    for pname, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.numel() == 0 and getattr(param, "ds_shape", None) is None:
            raise ValueError(_placeholder_error(module, pname, param))
    eps_attr = next((a for a in EPS_ATTRS if hasattr(module, a)), None)
    if eps_attr is None:
        return f"no eps attribute (looked for {', '.join(EPS_ATTRS)})"
    eps_value = getattr(module, eps_attr)
    if eps_value is not None and not isinstance(eps_value, (int, float)):
        return f"eps attribute {eps_attr!r} is not a number ({type(eps_value).__name__})"
    if weight is not None:
        shape = _full_shape(weight)
    elif getattr(module, "normalized_shape", None) is not None:
        ns = module.normalized_shape
        shape = tuple(ns) if isinstance(ns, (tuple, list, torch.Size)) else (int(ns),)
    else:
        shape = (16,)
    if bias is not None and _full_shape(bias) != shape:
        return f"bias shape {_full_shape(bias)} differs from gain shape {shape}"
    channels_first = getattr(module, "data_format", None) == "channels_first"
    problem = _forward_signature_problem(module)
    if problem:
        return problem
    return weight, bias, eps_attr, shape, channels_first


def _hypotheses(module: nn.Module, has_bias: bool, channels_first: bool, ndim: int, has_weight: bool, eps_attr: str):
    def spec(v, nd=ndim):
        return NormSpec(v, normalized_ndim=nd, eps_attr=eps_attr, has_weight=has_weight, has_bias=has_bias)

    name = type(module).__name__.lower()
    if channels_first:
        return [spec(LAYER_NORM_CHANNELS_FIRST, 1)]
    if type(module) is nn.LayerNorm:
        return [spec(LAYER_NORM)]
    if type(module) is nn.RMSNorm:
        return [spec(RMS_NORM_TORCH)]
    if isinstance(module, nn.LayerNorm):  # a subclass may permute its input (LayerNorm2d) or change the math
        ln, cf = spec(LAYER_NORM), spec(LAYER_NORM_CHANNELS_FIRST, 1)
        return [cf, ln] if name.endswith("2d") else [ln, cf]
    rms = [] if has_bias else [spec(v) for v in _RMS_ORDER]
    ln = [spec(LAYER_NORM)]
    ordered = rms + ln if "rms" in name or not has_bias else ln + rms
    if ndim == 1 and "rms" not in name:
        # LayerNorm2d-style classes permute a (B, C, H, W) input themselves
        cf = [spec(LAYER_NORM_CHANNELS_FIRST, 1)]
        ordered = cf + ordered if name.endswith("2d") else ordered + cf
    return ordered


def _probe_inputs(spec: NormSpec, shape: Tuple[int, ...], device, gen: torch.Generator, rank: int = 4):
    if spec.variant == LAYER_NORM_CHANNELS_FIRST:
        full = (2, shape[0], 3, 2) if rank == 4 else (2, shape[0], 5)
    else:
        full = (2, 3) + tuple(shape)
    x = torch.randn(full, generator=gen) * 2.0 + 0.5
    tiny = torch.randn(full, generator=gen) * 1e-3 + 1e-3  # eps dominates the variance here
    return x.to(device), tiny.to(device)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    if not torch.isfinite(a).all() or not torch.isfinite(b).all():
        same_nan = torch.equal(torch.isnan(a), torch.isnan(b))
        if not same_nan:
            return float("inf")
        a, b = torch.nan_to_num(a), torch.nan_to_num(b)
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


class _WithoutHooks(nn.Module):
    """Calls ``inner.forward`` directly: the probe runs the module's own computation, not its hooks.

    Sharding wrappers hook a module's call (FSDP2 all-gathers and, on the first call, initialises
    its root state; ZeRO-3 fetches parameters), and the probe substitutes its own parameters anyway.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner.forward(x)


def _probe(module: nn.Module, spec: NormSpec, struct) -> Tuple[bool, float, float, str]:
    """Run ``spec``'s fused forward beside the original. Returns (ok, fp32 err, half err, why)."""
    result = _probe_rank(module, spec, struct, 4)
    if spec.variant == LAYER_NORM_CHANNELS_FIRST and result[3].startswith("forward(x) raised"):
        result = _probe_rank(module, spec, struct, 3)  # (B, C, L) layouts, e.g. SqueezeBERT
    return result


def _probe_rank(module: nn.Module, spec: NormSpec, struct, rank: int) -> Tuple[bool, float, float, str]:
    weight, bias, eps_attr, shape, _ = struct
    device = weight.device if weight is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(20240607)
    x, tiny = _probe_inputs(spec, shape, device, gen, rank)
    w = (torch.randn(shape, generator=gen) * 0.5 + 0.3).to(device) if weight is not None else None
    b = torch.randn(shape, generator=gen).to(device) if bias is not None else None
    eps = getattr(module, eps_attr)

    unhooked = _WithoutHooks(module)

    def run_both(xin, pdtype):
        params = {}
        if w is not None:
            params["weight"] = w.to(pdtype)
        if b is not None:
            params["bias"] = b.to(pdtype)
        with torch.no_grad():
            try:
                ref = torch.func.functional_call(unhooked, {f"inner.{k}": v for k, v in params.items()}, (xin,))
            except Exception as exc:  # the original itself rejects this dtype mix
                return None, exc
            if not isinstance(ref, torch.Tensor):
                return "non-tensor", None
            ours = fused_norm(spec, xin, params.get("weight"), params.get("bias"), eps)
        return (ref, ours), None

    err32 = 0.0
    for xin in (x, tiny):
        res, exc = run_both(xin, torch.float32)
        if res is None:
            return False, float("inf"), float("inf"), f"forward(x) raised {type(exc).__name__}: {exc}"
        if res == "non-tensor":
            return False, float("inf"), float("inf"), "forward does not return a single tensor"
        ref, ours = res
        if ref.shape != ours.shape or ref.dtype != ours.dtype:
            return False, float("inf"), float("inf"), f"output {tuple(ref.shape)}/{ref.dtype} vs {tuple(ours.shape)}/{ours.dtype}"
        err32 = max(err32, _rel_err(ours, ref))
    if err32 > 1e-5:
        return False, err32, float("inf"), f"fp32 probe error {err32:.2e}"
    errh = 0.0
    mixed_ok = True
    for pdtype in (torch.bfloat16, torch.float32):  # bf16 params, then fp32 params with a bf16 input
        res, exc = run_both(x.to(torch.bfloat16), pdtype)
        if res is None or res == "non-tensor":
            continue  # the original does not support this dtype combination either
        ref, ours = res
        bad = ref.dtype != ours.dtype or ref.shape != ours.shape
        err = float("inf") if bad else _rel_err(ours, ref)
        if pdtype == torch.bfloat16:
            if bad:
                return False, err32, err, f"bf16 probe returns {ref.dtype}, variant gives {ours.dtype}"
            errh = max(errh, err)
        elif err > 2e-2:
            mixed_ok = False  # mixed dtypes will run the original forward
        else:
            errh = max(errh, err)
    if errh > 2e-2:
        return False, err32, errh, f"bf16 probe error {errh:.2e}"
    return True, err32, errh, "" if mixed_ok else "mixed-dtype"


def classify(module: nn.Module, _cache: Optional[dict] = None) -> Tuple[Optional[NormSpec], str, Optional[float], Optional[float]]:
    """Classify a norm-like module into a reference variant.

    The module's structure (gain, bias, eps attribute, normalized shape,
    channels-first layout) selects the candidate variants; each candidate then
    runs beside the module's own forward on random inputs (fp32, bf16, bf16
    input with fp32 parameters, and a tiny-variance input that exposes the eps),
    with random parameters substituted for the module's. The module itself is
    not changed.

    Args:
        module: a norm-like module (``nn.LayerNorm``, ``nn.RMSNorm``, a ``*Norm``
            class of a Hugging Face model, ...).
        _cache: a dict reused across calls within one ``patch`` call, so that
            modules of the same class and structure try the variant found last
            first; leave it None.

    Returns:
        ``(spec, reason, fp32_err, half_err)``; ``spec`` is None when the module
            cannot be proven equivalent to any variant, with ``reason`` saying why.
            When the variant matches for same-dtype inputs but not for a half input
            with fp32 parameters, ``reason`` is ``"mixed-dtype"``: the patched module
            then runs its original forward for such inputs. ``fp32_err`` and
            ``half_err`` are the probe's largest absolute differences.

    Raises:
        ValueError: the module's weight or bias is an empty placeholder with no
            ``ds_shape`` saying its full shape (a sharded parameter outside forward).

    Examples:
        >>> import torch
        >>> from hf_lnorm import classify
        >>> spec, reason, fp32_err, half_err = classify(torch.nn.LayerNorm(16))
        >>> spec.variant, reason, fp32_err < 1e-5
        ('layer_norm', '', True)
        >>> classify(torch.nn.BatchNorm1d(16))[:2]
        (None, 'BatchNorm1d normalizes over channels, groups or the batch, not the last dimension')
    """
    struct = _structure(module)
    if isinstance(struct, str):
        return None, struct, None, None
    weight, bias, eps_attr, shape, channels_first = struct
    key = (type(module), weight is not None, bias is not None, eps_attr, len(shape), channels_first)
    hyps = _hypotheses(module, bias is not None, channels_first, len(shape), weight is not None, eps_attr)
    if _cache is not None and key in _cache:
        hyps = [_cache[key]] + [h for h in hyps if h != _cache[key]]
    best = None
    failures = []
    for spec in hyps:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok, e32, eh, why = _probe(module, spec, struct)
        if ok:
            eh_rank = eh + (1.0 if why else 0.0)  # prefer variants that also match mixed dtypes
            if best is None or eh_rank < best[3]:
                best = (spec, e32, eh, eh_rank, why != "mixed-dtype")
            if eh_rank == 0.0 or (_cache is not None and _cache.get(key) == spec):
                break
        else:
            failures.append(f"{spec.variant}: {why}")
    if best is None:
        return None, "no reference variant reproduces it (" + "; ".join(failures[:3]) + ")", None, None
    if _cache is not None:
        _cache[key] = best[0]
    return best[0], "" if best[4] else "mixed-dtype", best[1], best[2]
