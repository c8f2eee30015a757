"""hf_lnorm as a provider for the ``kernels`` library and transformers' kernel mappings.

transformers marks its norm classes (``LlamaRMSNorm`` and its copies) with
``@use_kernel_forward_from_hub("RMSNorm")``; the ``kernels`` library then swaps
their forward, per instance, for a layer named in a *kernel mapping*. This
module makes hf_lnorm's fused norms such layers:

* ``local_repo()`` writes a local kernel repository (``build/torch-universal``:
  ``metadata.json`` and an ``__init__.py`` whose ``layers`` are
  ``hf_lnorm.hub_kernels.layers``) into ``hf_lnorm.resources.cache_dir("hub_kernels")``
  on first use, for ``kernels.LocalLayerRepository``;
* ``kernel_mapping()`` returns the mapping that points the layer names
  ``"RMSNorm"`` and ``"LayerNorm"`` there, for ``kernels.use_kernel_mapping`` or,
  as strings, for transformers' ``KernelConfig(..., use_local_kernel=True)``;
* ``kernelize(model)`` covers every norm of any model in one call: decorated
  norms through the ``kernels`` library with this mapping, the others (plain
  ``nn.LayerNorm`` users such as BERT) through ``hf_lnorm.patch``; ``unkernelize``
  undoes it.

Nothing here contacts the Hugging Face Hub. ``import hf_lnorm`` does not import
this module or the ``kernels`` library; the functions import ``kernels`` when
called and raise ``ImportError`` naming the extra to install when it is missing.

Examples:
    >>> import torch, hf_lnorm
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16))
    >>> report = hf_lnorm.kernelize(model, mode="inference", device="cpu")  # doctest: +SKIP
    >>> report[0].route, report[0].kernel  # doctest: +SKIP
    ('patch', 'hf_lnorm.patch/fused')
"""

from __future__ import annotations

import hashlib
import base64
import inspect
import json
import os
import re
import shutil
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._version import __version__
from ..resources import cache_dir

__all__ = [
    "KERNEL_LAYERS",
    "KernelizeReport",
    "KernelizedNorm",
    "kernel_mapping",
    "kernelize",
    "kernelize_report",
    "local_repo",
    "unkernelize",
]

KERNEL_LAYERS: Tuple[str, ...] = ("RMSNorm", "LayerNorm")
"""The kernel layer names hf_lnorm provides."""

MODES: Tuple[str, ...] = ("inference", "training", "inference+compile", "training+compile")
"""The ``mode`` strings ``kernelize`` accepts (a ``kernels.Mode`` is accepted too)."""

DEVICES: Tuple[str, ...] = ("cpu", "cuda")
"""The device types hf_lnorm's layers are mapped for."""

STYLES: Tuple[str, ...] = ("kernels", "kernel_config")
"""The forms ``kernel_mapping`` returns: for ``kernels.use_kernel_mapping`` or for transformers' ``KernelConfig``."""

INSTALL_HINT = "pip install 'hf-lnorm[kernels]'"
REPORT_ATTR = "_hf_lnorm_kernelize_report"
_VARIANT_DIR = "torch-universal"  # a pure-Python build: every kernels version loads it on every device
_REPO_NAME = "hf-lnorm"


def _kernels():
    """The ``kernels`` module, or an ImportError that says how to install it."""
    try:
        import kernels
    except ImportError as exc:
        raise ImportError(
            f"hf_lnorm's kernel layers need the 'kernels' library, which is not installed: {INSTALL_HINT}"
        ) from exc
    return kernels


# --------------------------------------------------------------------------- the local kernel repository


def _repo_files() -> Dict[str, bytes]:
    """The files of the build variant (without ``metadata.json``): one ``__init__.py``."""
    init = (
        '"""hf_lnorm\'s norms as a kernels-library repository, written by hf_lnorm.hub_kernels.local_repo."""\n'
        "from hf_lnorm.hub_kernels import layers  # noqa: F401  (RMSNorm, LayerNorm)\n"
        "\n"
        '__all__ = ["layers"]\n'
    )
    return {"__init__.py": init.encode("utf-8")}


def _metadata(files: Dict[str, bytes], build_id: str) -> bytes:
    digest = {name: base64.b64encode(hashlib.sha256(data).digest()).decode("ascii") for name, data in files.items()}
    meta = {
        "name": _REPO_NAME,
        "id": f"_hf_lnorm_{build_id}",
        "version": 1,
        "license": "Apache-2.0",
        "python-depends": [],
        "backend": {"type": "universal"},
        "digest": {"algorithm": "sha256", "files": digest},
    }
    return (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _repo_contents() -> Tuple[str, Dict[str, bytes]]:
    """(folder name, {relative path: bytes}) of the repository this hf_lnorm version writes."""
    files = _repo_files()
    content_hash = hashlib.sha256(b"".join(k.encode() + b"\0" + v for k, v in sorted(files.items()))).hexdigest()[:12]
    version = re.sub(r"[^0-9A-Za-z]+", "_", __version__)
    build_id = f"{version}_{content_hash}"
    contents = {f"build/{_VARIANT_DIR}/{name}": data for name, data in files.items()}
    contents[f"build/{_VARIANT_DIR}/metadata.json"] = _metadata(files, build_id)
    return f"hf-lnorm-{version}-{content_hash}", contents


def local_repo() -> Path:
    """The local kernel repository of hf_lnorm's layers, written on first use.

    The folder ``hf_lnorm.resources.cache_dir("hub_kernels", "hf-lnorm-<version>-<hash>")``
    holds one build variant, ``build/torch-universal``: an ``__init__.py`` whose
    ``layers`` attribute is ``hf_lnorm.hub_kernels.layers`` and a ``metadata.json``
    with the sha256 digest of that file, the layout ``kernels.LocalLayerRepository``
    and transformers' ``KernelConfig(..., use_local_kernel=True)`` load. It is
    written into a staging folder and renamed into place, so a reader never sees
    a half-written repository; the name changes with the contents, so an existing
    folder is never rewritten.

    Returns:
        The repository folder (absolute).

    Raises:
        RuntimeError: the folder exists but its files differ from what this
            hf_lnorm version writes (the message names the file).

    Examples:
        >>> from hf_lnorm.hub_kernels import local_repo
        >>> (local_repo() / "build" / "torch-universal" / "metadata.json").is_file()
        True
    """
    name, contents = _repo_contents()
    root = cache_dir("hub_kernels")
    target = (root / name).resolve()
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=root))
        try:
            for rel, data in contents.items():
                path = staging / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            try:
                os.rename(staging, target)
            except OSError:
                if not target.exists():  # not a concurrent writer that won the race
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging)  # the staging folder this call created
    for rel, data in contents.items():
        path = target / rel
        if not path.is_file() or path.read_bytes() != data:
            raise RuntimeError(f"hf_lnorm kernel repository file {path} is missing or was changed; "
                               f"remove the folder {target} and it is written again on next use")
    return target


def _local_layer_repository(kernels, repo: Path, layer_name: str):
    """``kernels.LocalLayerRepository`` for ``layer_name`` (its constructor differs between kernels versions)."""
    params = inspect.signature(kernels.LocalLayerRepository.__init__).parameters
    if "package_name" in params:  # kernels < 0.13
        return kernels.LocalLayerRepository(repo_path=repo, package_name="hf_lnorm_layers", layer_name=layer_name)
    return kernels.LocalLayerRepository(repo_path=repo, layer_name=layer_name)


def _as_tuple(value: Union[str, Sequence[str]], what: str, accepted: Sequence[str]) -> Tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value)
    bad = [v for v in values if v not in accepted]
    if bad or not values:
        raise ValueError(f"unknown {what} {bad[0] if bad else value!r}; accepted: {', '.join(accepted)}"
                         if bad else f"{what} is empty; accepted: {', '.join(accepted)}")
    return values


def kernel_mapping(
    device: Union[str, Sequence[str]] = DEVICES,
    layers: Union[str, Sequence[str]] = KERNEL_LAYERS,
    style: str = "kernels",
) -> Dict[str, Any]:
    """hf_lnorm's kernel mapping: the layer names ``"RMSNorm"`` and ``"LayerNorm"`` -> hf_lnorm's layers.

    With ``style="kernels"`` the mapping is in the ``kernels`` library's own form,
    for ``kernels.use_kernel_mapping`` (or ``register_kernel_mapping``): each
    device maps the modes inference and training, each also with
    ``torch.compile``, to a ``kernels.LocalLayerRepository`` on ``local_repo()``.
    With ``style="kernel_config"`` it is in the string form transformers'
    ``KernelConfig(kernel_mapping=..., use_local_kernel=True)`` takes
    (``"/path/to/repo:RMSNorm"``), where transformers picks the device and the
    mode from the model; ``device`` does not apply there. ``KernelConfig``
    rejects a layer name that no module of the model is decorated with, so pass
    only the names the model uses (``layers="RMSNorm"`` for Llama).

    The ``"RMSNorm"`` layer computes the Llama convention; ``hf_lnorm.kernelize``
    probes each decorated norm before it maps it, while a mapping used directly
    applies to every class decorated with that name.

    Args:
        device: device type(s) to map: ``"cpu"``, ``"cuda"`` or both.
        layers: layer name(s) to map: ``"RMSNorm"``, ``"LayerNorm"`` or both.
        style: ``"kernels"`` or ``"kernel_config"``.

    Returns:
        The mapping (a new dict on every call).

    Raises:
        ImportError: the ``kernels`` library is not installed (``style="kernels"``).
        ValueError: an unknown device, layer name or style.

    Examples:
        >>> import hf_lnorm
        >>> mapping = hf_lnorm.kernel_mapping(device="cpu")
        >>> sorted(mapping), sorted(mapping["RMSNorm"])
        (['LayerNorm', 'RMSNorm'], ['cpu'])
        >>> hf_lnorm.kernel_mapping(layers="RMSNorm", style="kernel_config")["RMSNorm"].endswith(":RMSNorm")
        True
        >>> hf_lnorm.kernel_mapping(device="mps")
        Traceback (most recent call last):
        ...
        ValueError: unknown device 'mps'; accepted: cpu, cuda
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; accepted: {', '.join(STYLES)}")
    devices = _as_tuple(device, "device", DEVICES)
    names = _as_tuple(layers, "layer name", KERNEL_LAYERS)
    repo = local_repo()
    if style == "kernel_config":
        return {name: f"{repo}:{name}" for name in names}
    kernels = _kernels()
    Mode = kernels.Mode
    modes = (Mode.INFERENCE, Mode.TRAINING, Mode.INFERENCE | Mode.TORCH_COMPILE, Mode.TRAINING | Mode.TORCH_COMPILE)
    mapping: Dict[str, Any] = {}
    for name in names:
        layer_repo = _local_layer_repository(kernels, repo, name)
        mapping[name] = {dev: {mode: layer_repo for mode in modes} for dev in devices}
    return mapping


# --------------------------------------------------------------------------- the report


@dataclass
class KernelizedNorm:
    """What ``kernelize`` did with one norm module.

    Attributes:
        name: the module's dotted name in the model.
        cls: the module's class, ``module.qualname``.
        route: ``"kernels"`` (forward swapped by the ``kernels`` library for an
            hf_lnorm layer), ``"patch"`` (swapped by ``hf_lnorm.patch``),
            ``"skipped"`` (left as it is; ``reason`` says why).
        kernel: what runs: ``"hf_lnorm/RMSNorm"`` or ``"hf_lnorm/LayerNorm"``
            (kernel layers), ``"hf_lnorm.patch/fused"``, or ``"original"``.
        variant: the ``hf_lnorm.norms.reference`` variant computed, or None.
        backend: the fused backend (``aten``, ``cpp``, ``triton``), or None.
        reason: why a norm took the route it took, where it is not the default one.
        extra: further detail, e.g. ``residual_fusion`` from ``hf_lnorm.patch``.
    """

    name: str
    cls: str
    route: str
    kernel: str
    variant: Optional[str] = None
    backend: Optional[str] = None
    reason: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


class KernelizeReport(list):
    """The ``KernelizedNorm`` records of one ``kernelize`` call, in module order.

    Examples:
        >>> from hf_lnorm.hub_kernels import KernelizeReport, KernelizedNorm
        >>> report = KernelizeReport([KernelizedNorm("norm", "m.LlamaRMSNorm", "kernels", "hf_lnorm/RMSNorm")])
        >>> print(report.summary())
        hf_lnorm.kernelize: 1 norm(s) on hf_lnorm kernel layers, 0 patched, 0 left as they are
    """

    def by_route(self, route: str) -> List[KernelizedNorm]:
        """The records whose ``route`` is ``route`` (``"kernels"``, ``"patch"``, ``"skipped"``)."""
        return [r for r in self if r.route == route]

    def summary(self) -> str:
        """One line: how many norms took each route."""
        return (f"hf_lnorm.kernelize: {len(self.by_route('kernels'))} norm(s) on hf_lnorm kernel layers, "
                f"{len(self.by_route('patch'))} patched, {len(self.by_route('skipped'))} left as they are")

    def table(self) -> str:
        """A plain-text table, one row per norm: name, class, route, kernel, backend, reason."""
        rows = [("module", "class", "route", "kernel", "backend", "reason")]
        rows += [(r.name, r.cls.rsplit(".", 1)[-1], r.route, r.kernel, r.backend or "-", r.reason) for r in self]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)

    def to_dicts(self) -> List[Dict[str, Any]]:
        """The records as plain dicts (for JSON)."""
        return [dict(r.__dict__) for r in self]


def kernelize_report(model: nn.Module) -> KernelizeReport:
    """The report of the last ``kernelize`` call on ``model`` (empty when none, or after ``unkernelize``).

    Args:
        model: a model passed to ``kernelize``.

    Returns:
        The ``KernelizeReport``.
    """
    return model.__dict__.get(REPORT_ATTR, KernelizeReport())


# --------------------------------------------------------------------------- kernelize / unkernelize


def _as_mode(mode: Any, kernels):
    Mode = kernels.Mode
    if isinstance(mode, Mode):
        base = mode & (Mode.INFERENCE | Mode.TRAINING)
        if base in (Mode.INFERENCE, Mode.TRAINING) and mode & ~(Mode.INFERENCE | Mode.TRAINING | Mode.TORCH_COMPILE) == Mode(0):
            return mode
    elif isinstance(mode, str) and mode in MODES:
        base, _, compiled = mode.partition("+")
        value = Mode.INFERENCE if base == "inference" else Mode.TRAINING
        return value | Mode.TORCH_COMPILE if compiled else value
    raise ValueError(f"unknown mode {mode!r}; accepted: {', '.join(MODES)}, or a kernels.Mode with "
                     f"INFERENCE or TRAINING (optionally | TORCH_COMPILE)")


def _as_device(device: Any, model: nn.Module) -> str:
    if device is None:
        param = next(iter(model.parameters()), None)
        if param is None:
            raise ValueError(f"cannot infer the device of a {type(model).__name__} without parameters; "
                             f"pass device= one of: {', '.join(DEVICES)}")
        device = param.device.type
        what = f"the model's parameters are on {device!r}"
    else:
        what = None
    if isinstance(device, torch.device):
        device = device.type
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"unknown device {device!r}{' (' + what + ')' if what else ''}; accepted: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False; accepted here: cpu")
    return device


def _qualname(module: nn.Module) -> str:
    t = type(module)
    return f"{t.__module__}.{t.__qualname__}"


def _layer_forwards() -> Dict[Any, str]:
    from .layers import LAYER_NAMES

    return {cls.forward: name for name, cls in LAYER_NAMES.items()}


def _hf_lnorm_layer_of(module: nn.Module) -> Optional[str]:
    """The hf_lnorm kernel layer name whose forward is bound to ``module``, or None."""
    fwd = module.__dict__.get("forward")
    if isinstance(fwd, types.MethodType) and fwd.__self__ is module:
        return _layer_forwards().get(fwd.__func__)
    return None


def _drop_kernel_forward(module: nn.Module) -> None:
    """Give a decorated module its class forward back where the kernels library swapped it."""
    fwd = module.__dict__.get("forward")
    if isinstance(fwd, types.MethodType) and fwd.__self__ is module and (
            "_kernel_repo" in module.__dict__ or fwd.__func__ is type(module).forward
            or fwd.__func__ in _layer_forwards()):
        module.__dict__.pop("forward")
        module.__dict__.pop("_kernel_repo", None)


def kernelize(
    model: nn.Module,
    mode: Any = "inference",
    device: Optional[Union[str, torch.device]] = None,
) -> KernelizeReport:
    """Put every norm of ``model`` on hf_lnorm's fused kernels, through the ``kernels`` library where it applies.

    Norms whose class is decorated with ``@use_kernel_forward_from_hub("RMSNorm")``
    or ``("LayerNorm")`` (``LlamaRMSNorm`` and its copies in transformers) are
    probed like ``hf_lnorm.patch`` probes (``hf_lnorm.classify``); when the
    probe shows they compute what the layer of that name computes (the Llama
    RMSNorm convention, ``nn.LayerNorm``), ``kernels.kernelize`` swaps their
    forward for hf_lnorm's layer under ``kernel_mapping()``, scoped to these
    norms only (no other layer of the model is touched, no Hub mapping is
    consulted). Every other norm (undecorated classes such as BERT's
    ``nn.LayerNorm``, and decorated ones the probe does not match) goes through
    ``hf_lnorm.patch(model, mode="fused")``, with its guarantees: probe-verified
    exactness, per instance, no class changed, and a norm that cannot be proven
    equivalent left alone and reported.

    Undo: ``unkernelize(model)`` drops the swapped forward of each decorated norm
    hf_lnorm's layers run (what ``kernels.kernelize`` does when it reverts a
    layer) and calls ``hf_lnorm.unpatch(model)``, which restores every norm
    patched by ``hf_lnorm.patch`` in the model, its fused residual blocks
    included. transformers' ``model.reset_kernels()`` (5.x) restores the
    decorated norms only.

    Args:
        model: any ``nn.Module``; changed in place.
        mode: ``"inference"``, ``"training"``, ``"inference+compile"``,
            ``"training+compile"``, or a ``kernels.Mode``.
        device: ``"cpu"`` or ``"cuda"`` (a ``torch.device`` of either type);
            default: the device of the model's first parameter.

    Returns:
        The report: one ``KernelizedNorm`` per norm, naming the route and the
            kernel that runs it (also returned later by ``kernelize_report(model)``).

    Raises:
        ImportError: the ``kernels`` library is not installed (``pip install 'hf-lnorm[kernels]'``).
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: an unknown ``mode`` or ``device``, or ``"cuda"`` without a CUDA device.

    Examples:
        >>> import torch, hf_lnorm
        >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16))
        >>> report = hf_lnorm.kernelize(model, mode="inference", device="cpu")
        >>> report[0].route, report[0].kernel
        ('patch', 'hf_lnorm.patch/fused')
        >>> hf_lnorm.kernelize(model, mode="eval")
        Traceback (most recent call last):
        ...
        ValueError: unknown mode 'eval'; accepted: inference, training, inference+compile, training+compile, ...
        >>> model = hf_lnorm.hub_kernels.unkernelize(model)
    """
    kernels = _kernels()
    if not isinstance(model, nn.Module):
        raise TypeError(f"hf_lnorm.kernelize expects a torch.nn.Module, got {type(model).__module__}.{type(model).__name__}")
    kmode = _as_mode(mode, kernels)
    device_type = _as_device(device, model)

    from ..patching import classify, is_patched, patch, patch_report, unpatch
    from .layers import BACKEND, VARIANT_OF

    decorated: List[Tuple[str, nn.Module, str]] = []
    for name, module in model.named_modules():
        layer_name = getattr(type(module), "kernel_layer_name", None)
        if layer_name in KERNEL_LAYERS:
            decorated.append((name, module, layer_name))

    routed: Dict[str, Tuple[nn.Module, str, str]] = {}  # name -> (module, layer name, variant)
    declined: Dict[str, str] = {}  # name -> why a decorated norm goes through patch instead
    cache: dict = {}
    for name, module, layer_name in decorated:
        if is_patched(module):
            unpatch(module)
        _drop_kernel_forward(module)  # probe the module's own computation, not an earlier swap
        spec, reason, _, _ = classify(module, cache)
        wanted = VARIANT_OF[layer_name]
        eps_attr = ("variance_epsilon" if hasattr(module, "variance_epsilon") else "eps")
        if spec is None:
            declined[name] = f"probe: {reason}"
        elif spec.variant != wanted:
            declined[name] = f"computes {spec.variant}, not {wanted} (the {layer_name} layer's math)"
        elif reason == "mixed-dtype":
            declined[name] = "differs for half inputs with fp32 parameters; patch keeps the original forward for those"
        elif spec.eps_attr not in (None, eps_attr):
            declined[name] = f"its eps is {spec.eps_attr!r}, the {layer_name} layer reads {eps_attr!r}"
        else:
            routed[name] = (module, layer_name, spec.variant)

    # Norms outside ``routed`` go through patch; the routed ones are excluded by their exact names.
    report = KernelizeReport()
    patch(model, mode="fused", exclude=sorted(routed) or None)
    patch_records = {r.name: r for r in patch_report(model)}
    for name in routed:  # an exclude pattern also matches a longer name ending in it: keep routed norms unpatched
        if is_patched(routed[name][0]):
            unpatch(routed[name][0])

    if routed:
        container = nn.ModuleList([module for module, _, _ in routed.values()])  # kernelize only these norms
        layers = sorted({layer_name for _, layer_name, _ in routed.values()})
        with kernels.use_kernel_mapping(kernel_mapping(device=device_type, layers=layers), inherit_mapping=False):
            kernels.kernelize(container, mode=kmode, device=device_type, use_fallback=False)

    for name, module in model.named_modules():
        if name in routed:
            _, layer_name, variant = routed[name]
            if _hf_lnorm_layer_of(module) == layer_name:
                report.append(KernelizedNorm(name, _qualname(module), "kernels", f"hf_lnorm/{layer_name}",
                                             variant, BACKEND))
            else:
                report.append(KernelizedNorm(name, _qualname(module), "skipped", "original", variant, None,
                                             "the class's kernel_condition declined this instance"))
            continue
        record = patch_records.get(name)
        if record is None:
            continue
        why = declined.get(name, "")
        if record.status == "patched":
            state = module.__dict__.get("_hf_lnorm_state")
            report.append(KernelizedNorm(name, record.cls, "patch", f"hf_lnorm.patch/{record.mode}", record.variant,
                                         getattr(state, "backend", None), "; ".join(x for x in (why, record.reason) if x),
                                         dict(record.extra)))
        elif record.status == "skipped":
            report.append(KernelizedNorm(name, record.cls, "skipped", "original", None, None,
                                         "; ".join(x for x in (why, record.reason) if x)))
    model.__dict__[REPORT_ATTR] = report
    return report


def unkernelize(model: nn.Module) -> nn.Module:
    """Undo ``kernelize``: every norm runs its class's own forward again.

    Decorated norms that run an hf_lnorm kernel layer get their class forward
    back (the per-instance ``forward`` the ``kernels`` library set is removed,
    as ``kernels.kernelize`` does when it reverts a layer). Then
    ``hf_lnorm.unpatch(model)`` restores every norm ``hf_lnorm.patch`` patched,
    fused residual blocks included; norms patched by an earlier, separate
    ``hf_lnorm.patch`` call are restored too. Forwards that other kernel
    repositories set are left alone.

    Args:
        model: a model passed to ``kernelize``.

    Returns:
        The same ``model`` object.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"hf_lnorm.unkernelize expects a torch.nn.Module, got {type(model).__module__}.{type(model).__name__}")
    from ..patching import unpatch

    for module in model.modules():
        if _hf_lnorm_layer_of(module) is not None:
            module.__dict__.pop("forward")
            module.__dict__.pop("_kernel_repo", None)
    unpatch(model)
    model.__dict__.pop(REPORT_ATTR, None)
    return model
