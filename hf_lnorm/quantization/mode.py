"""``QuantizedMode``: the patch mode behind ``patch(model, mode="quantized")``, registered on import.

Its norms compute in float exactly like ``fused`` mode and stash a per-token
int8 copy of their output for their int8 readers (``linear.py``), found by one
traced forward pass (``trace.py``). See ``hf_lnorm.quantization`` for the whole
picture.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from ..norms.fused import fused_norm
from ..norms.int8 import KERNELS, _CompiledQuantizer, quantize_dequantize, requant_params
from ..norms.reference import LAYER_NORM_CHANNELS_FIRST, NormSpec
from ..patching import STATE_ATTR, PatchMode, PatchReport, _eps_of, _params_of, is_patched, register_mode
from . import cpu_quantizer
from .linear import LINEAR_ATTR, _install_linear, _uninstall_linear, int8_layers, quantize_input
from .trace import TRACING, example_inputs_for, trace_consumers

__all__ = ["MODE_NAME", "QuantizedMode"]

MODE_NAME = "quantized"


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


def _requantized_norm(module: nn.Module, spec: NormSpec, x: torch.Tensor, qs: Dict[str, Any]) -> torch.Tensor:
    y = _norm_float(module, x.dequantize())
    scale, zp = requant_params(y, x.dtype, qs.get("out_range"))
    return torch.quantize_per_tensor(y, scale, zp, x.dtype)


class QuantizedMode(PatchMode):
    """``mode="quantized"``: int8-output norms feeding int8 GEMMs (see ``hf_lnorm.quantization``).

    Registered on import; use it through ``patch(model, mode="quantized",
    **options)``. The options:

    * ``example_inputs``: input for the tracing forward pass (dict, tuple or
      tensor); default built from ``model.config`` by ``example_inputs_for``.
    * ``kernel``: ``"auto"`` | ``"onednn"`` | ``"int_mm"`` | ``"reference"``.
    * ``all_linears``: run every Linear the trace saw in int8 (default True).
      The norms' readers reuse the int8 activation their norm stashed; the
      others (attention output, FFN down projection, ...) quantize their input
      per token inside the layer. ``all_linears=False`` runs only the norms'
      readers in int8 and keeps every other Linear in float: less int8 error,
      less speed-up.

    Examples:
        >>> import torch, hf_lnorm
        >>> block = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 64))
        >>> block = hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(4, 32), kernel="reference")
        >>> extra = hf_lnorm.patch_report(block)[0].extra
        >>> extra["int8"], extra["consumers"], extra["kernel"], extra["all_linears"]
        ('gemm', ['1'], 'reference', True)
        >>> block = hf_lnorm.unpatch(block)
    """

    name = MODE_NAME
    instance_attrs = (LINEAR_ATTR,)

    def validate_options(self, example_inputs=None, kernel: str = "auto", all_linears: bool = True, **options) -> None:
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
        """The norm in float (as ``fused`` mode), plus a per-token int8 copy for its int8 readers.

        A norm without an int8 reader returns its output quantized and
        dequantized instead; a ``torch.ao`` quantized input is dequantized,
        normalized and requantized.

        Args:
            module: the patched norm.
            x: the norm's input.

        Returns:
            The norm's float output (or a quantized tensor for a quantized input).
        """
        state = module.__dict__[STATE_ATTR]
        qs = state.extra
        if x.is_quantized:
            return _requantized_norm(module, state.spec, x, qs)
        y = _norm_float(module, x)
        if qs.get(TRACING):
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
            act = quantize_input(ys, qs.get("static_scale"))
        qs["stash"] = (weakref.ref(y), act)
        return y

    def after_patch(self, model, patched, report: PatchReport, example_inputs=None, kernel: str = "auto",
                    all_linears: bool = True, **options) -> None:
        self.validate_options(example_inputs=example_inputs, kernel=kernel, all_linears=all_linears, **options)
        norms = {name: m for name, m in patched}
        for m in norms.values():
            m.__dict__[STATE_ATTR].extra.update(consumers=[], layers=[], kernel=None, note="", all_linears=all_linears)
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
                if any(p.device.type == "cpu" for p in model.parameters()) and not cpu_quantizer.is_available():
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
        "all_linears": bool(qs.get("all_linears")),
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


register_mode(QuantizedMode())
