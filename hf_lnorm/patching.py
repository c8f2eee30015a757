"""Find the norm layers of any model by structure, swap their forward per instance, undo it.

``patch(model)`` walks ``model.named_modules()``, picks out every module that
looks like a norm (``nn.LayerNorm`` and subclasses, ``nn.RMSNorm``, and any
class whose name ends in ``Norm``), and classifies each one into a variant of
``norms/reference.py`` by *probing*: the candidate variant is run beside the
original module on random inputs (fp32, bf16, and bf16 input with fp32
parameters, plus a tiny-variance input that exposes the eps) with random
parameters substituted through ``torch.func.functional_call``. A module is
patched only when a variant reproduces it; otherwise it is left alone and the
report says why. The probing lives in ``hf_lnorm.probe``, the report records in
``hf_lnorm.patch_report``; their public names import from here too.

Patching is per instance: the module's own ``forward`` attribute is set to a
bound method (its class is untouched), its parameters are not touched, so the
state_dict is byte-identical and ``unpatch`` restores the module exactly.

Examples:
    >>> import torch, hf_lnorm
    >>> block = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    >>> block = hf_lnorm.patch(block)
    >>> [r.status for r in hf_lnorm.patch_report(block)]
    ['patched']
    >>> block = hf_lnorm.unpatch(block)
"""

from __future__ import annotations

import fnmatch
import logging
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .norms.fastpath import FastPlan, eager_call
from .norms.fastpath import plan as fast_plan
from .norms.fused import fused_norm, resolve_backend, traced_norm, tracing
from .norms.reference import NormSpec
from .norms.residual import RESIDUAL_ATTR
from .patch_report import NormRecord, PatchReport
from .probe import (  # noqa: F401 - re-exported: hf_lnorm.patching is the documented home of these names
    EPS_ATTRS,
    _NOT_LAST_DIM,
    _full_shape,
    _is_candidate,
    _qualname,
    _structure,
    classify,
    meta_model_error,
)

logger = logging.getLogger("hf_lnorm")

STATE_ATTR = "_hf_lnorm_state"
REPORT_ATTR = "_hf_lnorm_report"
_MISSING = object()
PatternArg = Optional[Union[str, Sequence[str]]]


# --------------------------------------------------------------------------- modes


class PatchMode:
    """How a patched norm computes. Subclass and ``register_mode`` to add one.

    ``forward(module, x)`` runs in place of the module's forward; the module's
    ``_hf_lnorm_state`` holds its ``NormSpec`` and backend. ``after_patch`` and
    ``before_unpatch`` see the whole model (the quantized mode uses them to find
    and restore the Linear layers that consume norm outputs).

    ``validate_options`` is called by ``patch`` before the model is touched, so a
    bad option never leaves a half-patched model. ``instance_attrs`` names the
    per-instance ``__dict__`` entries the mode sets on modules other than the
    norms (fused residual blocks, int8 Linears): ``patch`` snapshots them and
    restores them if the call fails.

    The class attribute ``name`` is the string users pass as ``patch(model,
    mode=...)``. The built-in modes are ``"fused"`` (this module) and
    ``"quantized"`` (``hf_lnorm.quantization.QuantizedMode``).

    Examples:
        >>> import torch
        >>> import hf_lnorm
        >>> from hf_lnorm.patching import PatchMode, register_mode
        >>> class ReferenceMode(PatchMode):
        ...     name = "reference-example"
        ...     def forward(self, module, x):
        ...         state = module._hf_lnorm_state
        ...         bias = module.bias if state.spec.has_bias else None
        ...         return hf_lnorm.norms.reference_forward(state.spec, x, module.weight, bias, module.eps)
        >>> register_mode(ReferenceMode())
        >>> norm = hf_lnorm.patch(torch.nn.LayerNorm(8), mode="reference-example")
        >>> hf_lnorm.patch_report(norm)[0].mode
        'reference-example'
        >>> x = torch.randn(2, 8)
        >>> torch.allclose(norm(x), hf_lnorm.unpatch(norm)(x), atol=1e-6)
        True
    """

    name = "base"
    instance_attrs: Tuple[str, ...] = ()

    def forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Compute the patched norm ``module`` on ``x``; runs in place of the module's own forward.

        Args:
            module: the patched norm; ``module._hf_lnorm_state`` holds its ``spec``
                (a ``NormSpec``), ``backend`` and ``mode``.
            x: the norm's input.

        Returns:
            The norm's output, with the shape and dtype the original module returns.

        Raises:
            NotImplementedError: in the base class; every mode implements it.
        """
        raise NotImplementedError

    def validate_options(self, **options) -> None:
        """Check the mode options of a ``patch`` call; the base mode accepts none.

        Raises:
            TypeError: an unknown option, or an option of the wrong type.
            ValueError: an option value outside what the mode accepts.
        """
        if options:
            raise TypeError(f"unknown option(s) for mode {self.name!r}: {', '.join(sorted(options))}; accepted: none")

    def after_patch(self, model: nn.Module, patched: List[Tuple[str, nn.Module]], report: "PatchReport", **options) -> None:
        """Called once per ``patch`` call, after the norms are swapped.

        Args:
            model: the model passed to ``patch``.
            patched: ``(name, module)`` of each norm this call patched.
            report: the call's report; a mode may add details to ``NormRecord.extra``.
            **options (Any): the mode options of the ``patch`` call.
        """

    def before_unpatch(self, model: nn.Module) -> None:
        """Called once per ``unpatch`` call, before the norms are restored.

        Args:
            model: the model passed to ``unpatch``; undo any model-level change here.
        """


class FusedMode(PatchMode):
    """Numerically equivalent norms through the fastest exact backend."""

    name = "fused"
    instance_attrs = (RESIDUAL_ATTR,)

    def forward(self, module, x):
        state = module.__dict__[STATE_ATTR]
        spec = state.spec
        weight, bias = _params_of(module, spec)
        eps = _eps_of(module, spec)
        mixed_ok = state.extra.get("mixed_ok", True)
        if tracing(x):
            # fx hands this forward Proxies (no shape ints, no dtypes): read both from the module itself
            shape, w_dtype = _static_params(module, spec)
            if not mixed_ok and w_dtype is not None and not isinstance(x, torch.fx.Proxy) and x.dtype != w_dtype:
                return original_forward(module)(x)
            return traced_norm(spec, x, weight, bias, eps, state.backend, shape, w_dtype)
        if not mixed_ok and weight is not None and x.dtype != weight.dtype:
            return original_forward(module)(x)  # the probe found the fused path differs for mixed dtypes
        return fused_norm(spec, x, weight, bias, eps, state.backend)

    def after_patch(self, model, patched, report, fuse_residual: bool = True, **options):
        """Fuse post-LN residual blocks (option ``fuse_residual``, default True).

        Blocks ``norm(dropout(dense(h)) + residual)`` (BERT's ``SelfOutput`` /
        ``Output`` and their copies) are verified on a probe and then run the
        fused add+LayerNorm (``hf_lnorm.norms.residual``). The norm's
        ``NormRecord.extra["residual_fusion"]`` names the block and says
        ``fused``, or ``rejected`` with the probe's reason.
        """
        self.validate_options(fuse_residual=fuse_residual, **options)
        if not fuse_residual:
            return
        from .norms.residual import fuse_residual_blocks

        records = {r.name: r for r in report}
        for match, ok, err, why in fuse_residual_blocks(model):
            norm_name = f"{match.name}.{match.norm}" if match.name else match.norm
            info = {"block": match.name, "status": "fused" if ok else "rejected", "probe_err": err}
            if not ok:
                info["reason"] = why
                logger.info("hf_lnorm.patch: residual block %s kept unfused: %s", match.name, why)
            if norm_name in records:
                records[norm_name].extra["residual_fusion"] = info

    def validate_options(self, fuse_residual: bool = True, **options) -> None:
        """Accepts ``fuse_residual`` (True or False).

        Raises:
            TypeError: an unknown option, or ``fuse_residual`` not a bool.
        """
        if options:
            raise TypeError(f"unknown option(s) for mode 'fused': {', '.join(sorted(options))}; accepted: fuse_residual")
        if not isinstance(fuse_residual, bool):
            raise TypeError(f"fuse_residual must be True or False, got {fuse_residual!r}")

    def before_unpatch(self, model):
        """Restore the fused residual blocks before the norms themselves."""
        from .norms.residual import unfuse_residual_blocks

        unfuse_residual_blocks(model)


MODES: Dict[str, PatchMode] = {}


def register_mode(mode: PatchMode) -> None:
    """Make ``patch(model, mode=mode.name)`` available.

    A mode registered under an existing name replaces it for later ``patch``
    calls. Registration is process-wide; patching stays per instance.

    Args:
        mode: an instance of a ``PatchMode`` subclass; its ``name`` is the key.

    Examples:
        >>> from hf_lnorm.patching import MODES
        >>> sorted(MODES)[:2]
        ['fused', 'quantized']

        See ``PatchMode`` for a complete custom mode.
    """
    MODES[mode.name] = mode


register_mode(FusedMode())


@dataclass
class _PatchState:
    mode: str
    spec: NormSpec
    backend: str
    forward_attr: str  # "forward", or "_old_forward" under an accelerate hook
    previous: Any  # the instance attribute that was there before, or _MISSING
    extra: Dict[str, Any] = field(default_factory=dict)
    fast: Optional[FastPlan] = None  # what plain eager calls may take without the mode's checks (norms/fastpath.py)


# --------------------------------------------------------------------------- helpers


def _params_of(module: nn.Module, spec: NormSpec):
    w = module.weight if spec.has_weight else None
    b = module.bias if spec.has_bias else None
    return w, b


def _eps_of(module: nn.Module, spec: NormSpec):
    return getattr(module, spec.eps_attr) if spec.eps_attr else None


def _static_params(module: nn.Module, spec: NormSpec) -> Tuple[Optional[tuple], Optional[torch.dtype]]:
    """(normalized sizes as Python ints, the gain's dtype) of a patched norm, read from the module:
    ``normalized_shape`` where it has one, else the weight's trailing dims (None when neither says); the dims
    of the gathered weight for a sharded one (a DTensor's global shape, a ZeRO-3 placeholder's ``ds_shape``)."""
    n = spec.normalized_ndim
    weight = module._parameters.get("weight") if spec.has_weight else None  # the tensor, never an fx Proxy
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, int):
        shape = (shape,)
    if not (isinstance(shape, (tuple, list)) and len(shape) == n and all(isinstance(d, int) for d in shape)):
        full = _full_shape(weight)
        shape = tuple(int(d) for d in full[-n:]) if full is not None and len(full) >= n else None
    return (None if shape is None else tuple(shape)), (None if weight is None else weight.dtype)


def original_forward(module: nn.Module):
    """The forward the module had before patching (bound), for fallbacks."""
    state = module.__dict__[STATE_ATTR]
    if state.previous is not _MISSING:
        return state.previous
    return types.MethodType(type(module).forward, module)


def _patched_forward(self, hidden_states):
    state = self.__dict__[STATE_ATTR]
    if state.fast is not None:  # decided at patch time: a few attribute reads, then the kernel
        if _dynamo_compiling():
            # torch.compile: the norm steps aside, so inductor sees the stock module's own ops and fuses them
            # with their neighbours exactly as in the unpatched model
            if state.previous is not _MISSING:
                return state.previous(hidden_states)
            return type(self).forward(self, hidden_states)
        out = eager_call(state.fast, self, hidden_states)
        if out is not None:
            return out
    return MODES[state.mode].forward(self, hidden_states)


_dynamo_compiling = torch.compiler.is_dynamo_compiling


def is_patched(module: nn.Module) -> bool:
    """Whether ``module`` itself (not its children) is a patched norm.

    Args:
        module: any module.

    Returns:
        True when ``patch`` swapped this module's forward.

    Examples:
        >>> import torch, hf_lnorm
        >>> model = hf_lnorm.patch(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)))
        >>> hf_lnorm.is_patched(model[1]), hf_lnorm.is_patched(model)
        (True, False)
    """
    return STATE_ATTR in module.__dict__


def _as_patterns(arg: PatternArg, what: str) -> Optional[List[str]]:
    if arg is None:
        return None
    if isinstance(arg, str):
        return [arg]
    if isinstance(arg, (list, tuple, set)) and all(isinstance(p, str) for p in arg):
        return list(arg)
    raise TypeError(f"{what} must be a module-name pattern or a list of them, got {type(arg).__name__}: {arg!r}")


def _matches(name: str, pattern: str) -> bool:
    """Glob on the full dotted name, or equality with its trailing components."""
    return fnmatch.fnmatchcase(name, pattern) or name == pattern or name.endswith("." + pattern)


# --------------------------------------------------------------------------- patch / unpatch


def _set_forward(module: nn.Module, state: _PatchState) -> None:
    if state.mode == "fused":
        shape, _ = _static_params(module, state.spec)
        state.fast = fast_plan(state.spec, module, state.backend, shape[0] if shape and len(shape) == 1 else None,
                               state.extra.get("mixed_ok", True))
    module.__dict__[STATE_ATTR] = state
    module.__dict__[state.forward_attr] = types.MethodType(_patched_forward, module)


def _restore_forward(module: nn.Module) -> None:
    state = module.__dict__.pop(STATE_ATTR)
    if state.previous is _MISSING:
        module.__dict__.pop(state.forward_attr, None)
    else:
        module.__dict__[state.forward_attr] = state.previous


_FORWARD_ATTRS = ("forward", "_old_forward")


def _copy_state(value: Any) -> Any:
    """A shallow copy of a state object's fields, with its dict/list fields copied too (restored in place)."""
    fields = getattr(value, "__dict__", None)
    if fields is None or isinstance(value, (nn.Module, types.MethodType, types.FunctionType)):
        return None
    return {k: (v, dict(v) if type(v) is dict else list(v) if type(v) is list else None) for k, v in fields.items()}


def _snapshot_keys() -> Tuple[str, ...]:
    """The ``__dict__`` entries ``patch`` may set on a module (rolled back when a call fails)."""
    keys = {STATE_ATTR, REPORT_ATTR, *_FORWARD_ATTRS}
    for mode_obj in MODES.values():
        keys.update(mode_obj.instance_attrs)
    return tuple(sorted(keys))


def _snapshot(model: nn.Module) -> List[Tuple[nn.Module, Dict[str, Any]]]:
    """What ``patch`` may change on each module: forwards, patch states (and their contents), the report."""
    keys = _snapshot_keys()
    state_keys = set(keys) - {REPORT_ATTR, *_FORWARD_ATTRS}
    saved = []
    for module in model.modules():
        d = module.__dict__
        entries = {k: (d[k], _copy_state(d[k]) if k in state_keys else None) for k in keys if k in d}
        saved.append((module, entries))
    return saved


def _restore(snapshot: List[Tuple[nn.Module, Dict[str, Any]]]) -> None:
    """Put back every entry ``_snapshot`` saw, and remove the ones it did not see."""
    keys = _snapshot_keys()
    for module, entries in snapshot:
        d = module.__dict__
        for k in keys:
            if k not in entries:
                d.pop(k, None)
                continue
            value, fields = entries[k]
            d[k] = value
            if fields is not None:
                value.__dict__.clear()
                for name, (field_value, contents) in fields.items():
                    value.__dict__[name] = field_value
                    if type(contents) is dict:
                        field_value.clear()
                        field_value.update(contents)
                    elif type(contents) is list:
                        field_value[:] = contents


def patch(
    model: nn.Module,
    mode: str = "fused",
    include: PatternArg = None,
    exclude: PatternArg = None,
    backend: Optional[str] = None,
    **mode_options,
) -> nn.Module:
    """Swap the norm layers of ``model`` for fused or quantized versions, in place.

    Every module that looks like a norm is probed against the variants of
    ``hf_lnorm.norms.reference`` and patched only when one reproduces it;
    the others are left alone and listed in ``patch_report(model)`` with the
    reason. Patching is per instance: classes, parameters and the state_dict are
    untouched, and patching an already patched model with the same mode and
    backend changes nothing.

    Every argument is checked before the model is touched, and a call that fails
    part-way (a probe, the quantized mode's tracing, residual fusion) restores
    the model exactly as it was, earlier patches and report included, before
    re-raising. A pattern in ``include``/``exclude`` that matches no norm, and a
    model without norms, give a ``UserWarning``.

    Args:
        model: any ``nn.Module`` (a ``PreTrainedModel``, a PEFT model, a bare block).
        mode: ``"fused"`` (numerically equivalent) or another registered mode
            (``"quantized"`` once ``hf_lnorm.quantization`` is imported).
        include: module-name pattern(s); only matching norms are patched. A pattern
            is a glob on the dotted name (``"encoder.layer.0.*"``) or a trailing
            name (``"LayerNorm"``, ``"ln_f"``).
        exclude: module-name pattern(s) never patched.
        backend: force a kernel backend (``"aten"``, ``"triton"``...); default picks
            the fastest available one.
        **mode_options (Any): passed to the mode: ``fuse_residual`` for ``fused``;
            ``example_inputs``, ``kernel``, ``all_linears`` (default True: every Linear
            in int8) for ``quantized``.

    Returns:
        The same ``model`` object, patched.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, a bad ``include``/``exclude``,
            or an unknown or mistyped mode option.
        ValueError: unknown ``mode`` or ``backend``, a forced backend that cannot run
            here, or a bad mode option value; a model whose parameters are all on the
            ``meta`` device, or a norm whose weight or bias is an empty sharding
            placeholder without a ``ds_shape`` (see the scaling guide).

    Examples:
        >>> import torch, hf_lnorm
        >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.LayerNorm(16))
        >>> x = torch.randn(3, 16)
        >>> expected = model(x)
        >>> model = hf_lnorm.patch(model, exclude="2")
        >>> print(hf_lnorm.patch_report(model).summary())
        hf_lnorm.patch: 1 norm(s) patched (fused), 0 skipped, 1 excluded
        >>> torch.allclose(model(x), expected, atol=1e-5)
        True
        >>> model = hf_lnorm.unpatch(model)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"hf_lnorm.patch expects a torch.nn.Module, got {type(model).__module__}.{type(model).__name__}")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; accepted modes: {', '.join(sorted(MODES))}")
    backend = resolve_backend(backend)
    includes = _as_patterns(include, "include")
    excludes = _as_patterns(exclude, "exclude")
    mode_obj = MODES[mode]
    mode_obj.validate_options(**mode_options)
    meta_problem = meta_model_error(model)
    if meta_problem:
        raise ValueError(meta_problem)

    snapshot = _snapshot(model)
    try:
        report = _patch(model, mode, mode_obj, includes, excludes, backend, mode_options)
    except BaseException:
        _restore(snapshot)
        raise
    logger.info(report.summary())
    return model


def _patch(model, mode, mode_obj, includes, excludes, backend, mode_options) -> PatchReport:
    """The body of ``patch`` on validated arguments; may leave the model half-changed if it raises."""
    candidates = [(n, m) for n, m in model.named_modules() if _is_candidate(m)]
    stale = {m.__dict__[STATE_ATTR].mode for _, m in candidates if is_patched(m)} - {mode}
    for old_mode in sorted(stale):  # switching modes: let the old one undo its model-level changes
        MODES[old_mode].before_unpatch(model)
    report = PatchReport()
    cache: dict = {}
    used_patterns = set()
    newly_patched: List[Tuple[str, nn.Module]] = []
    for name, module in candidates:
        cls = _qualname(module)
        if excludes and any(_matches(name, p) for p in excludes):
            used_patterns.update(p for p in excludes if _matches(name, p))
            report.append(NormRecord(name, cls, None, "excluded", "matched exclude pattern"))
            continue
        if includes is not None:
            hit = [p for p in includes if _matches(name, p)]
            if not hit:
                report.append(NormRecord(name, cls, None, "excluded", "not matched by include"))
                continue
            used_patterns.update(hit)
        if is_patched(module):
            state = module.__dict__[STATE_ATTR]
            if state.mode == mode and state.backend == backend:
                report.append(NormRecord(name, cls, state.spec.variant, "patched", "already patched", mode))
                continue
            _restore_forward(module)
        spec, reason, e32, eh = classify(module, cache)
        if spec is None:
            report.append(NormRecord(name, cls, None, "skipped", reason))
            continue
        note = "original forward for half inputs with fp32 parameters" if reason == "mixed-dtype" else ""
        hooked = "_hf_hook" in module.__dict__ and "_old_forward" in module.__dict__
        attr = "_old_forward" if hooked else "forward"
        previous = module.__dict__.get(attr, _MISSING)
        _set_forward(module, _PatchState(mode, spec, backend, attr, previous, {"mixed_ok": not note}))
        newly_patched.append((name, module))
        report.append(NormRecord(name, cls, spec.variant, "patched", note, mode, e32, eh))

    for what, pats in (("include", includes), ("exclude", excludes)):
        for p in pats or []:
            if p not in used_patterns:
                warnings.warn(f"hf_lnorm.patch: {what} pattern {p!r} matched no norm layer", UserWarning, stacklevel=3)
    if not candidates:
        warnings.warn(f"hf_lnorm.patch: no norm layers found in {type(model).__name__}", UserWarning, stacklevel=3)

    model.__dict__[REPORT_ATTR] = report
    mode_obj.after_patch(model, newly_patched, report, **mode_options)
    return report


def unpatch(model: nn.Module) -> nn.Module:
    """Restore every patched norm of ``model`` exactly; a no-op on an unpatched model.

    Each mode first undoes its model-level changes (fused residual blocks, int8
    Linear layers), then every norm gets its original forward back and the
    report is dropped. Nothing else about the model changes.

    Args:
        model: a model passed to ``patch`` earlier (or any ``nn.Module``).

    Returns:
        The same ``model`` object.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> import torch, hf_lnorm
        >>> model = hf_lnorm.patch(torch.nn.Sequential(torch.nn.LayerNorm(8)))
        >>> model = hf_lnorm.unpatch(model)
        >>> list(hf_lnorm.iter_patched(model)), len(hf_lnorm.patch_report(model))
        ([], 0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"hf_lnorm.unpatch expects a torch.nn.Module, got {type(model).__module__}.{type(model).__name__}")
    # every mode, not only those with norms still patched: a mode may have left
    # model-level state behind (e.g. int8 Linear consumers) after its norms were re-patched
    for mode in sorted(MODES):
        MODES[mode].before_unpatch(model)
    for module in model.modules():
        if is_patched(module):
            _restore_forward(module)
    model.__dict__.pop(REPORT_ATTR, None)
    return model


def patch_report(model: nn.Module) -> PatchReport:
    """What the last ``patch`` call on ``model`` patched, skipped and excluded.

    Args:
        model: the model passed to ``patch``.

    Returns:
        The report of the last ``patch`` call on ``model``: one ``NormRecord`` per
            norm-like module. Empty when ``model`` was never patched or was unpatched.

    Examples:
        >>> import torch, hf_lnorm
        >>> model = hf_lnorm.patch(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)))
        >>> record = hf_lnorm.patch_report(model)[0]
        >>> record.name, record.cls, record.variant, record.status
        ('1', 'torch.nn.modules.normalization.LayerNorm', 'layer_norm', 'patched')
    """
    return model.__dict__.get(REPORT_ATTR, PatchReport())


def iter_patched(model: nn.Module) -> Iterable[Tuple[str, nn.Module]]:
    """``(name, module)`` for every patched norm in ``model``.

    Args:
        model: any module.

    Returns:
        A generator over ``model.named_modules()`` that keeps the patched norms.

    Examples:
        >>> import torch, hf_lnorm
        >>> model = hf_lnorm.patch(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)))
        >>> [name for name, _ in hf_lnorm.iter_patched(model)]
        ['1']
    """
    return ((n, m) for n, m in model.named_modules() if is_patched(m))
