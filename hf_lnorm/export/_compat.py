"""Make patched norms traceable by the TorchScript-based ONNX exporter that Optimum uses.

Optimum's exporter runs ``torch.onnx.export(..., dynamo=False)``, which traces
the model with dynamic axes. A norm that calls ``F.layer_norm(x, x.shape[-1:])``
then fails: under the tracer ``x.shape[-1]`` is a graph value, and
``normalized_shape`` must be a constant. While exporting, ``traceable_norms``
routes every patched norm through an export-only backend that passes the
normalized shape as Python ints (the same ``F.layer_norm`` call, so it is still
emitted as one ``LayerNormalization`` node) and RMS variants through the
reference math. It does nothing when the installed kernels trace already.

Fused residual blocks (``hf_lnorm.norms.residual``: BERT's ``dense -> dropout
-> add -> LayerNorm`` in one call) are run through their class forward for
the duration of the export: ONNX has no fused add+norm op, so the graph is the
same ``Add`` + ``LayerNormalization`` either way (ONNX Runtime re-fuses it into
``SkipLayerNormalization``), and the fused form's in-place add does not trace.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import warnings
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from ..norms import fused
from ..norms.reference import LAYER_NORM, LAYER_NORM_CHANNELS_FIRST, NormSpec, rms_norm
from ..patching import STATE_ATTR, iter_patched

RESIDUAL_ATTR = "_hf_lnorm_residual"  # hf_lnorm.norms.residual marks fused blocks with it

EXPORT_BACKEND = "onnx-trace"


def _static_ints(dims) -> tuple:
    # int() on a traced size records a constant: right here, since norm sizes are fixed by the weights
    return tuple(int(d) for d in dims)


def traceable_norm(spec: NormSpec, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps) -> torch.Tensor:
    """``fused_norm`` with constant normalized shapes (export-only backend)."""
    if spec.variant == LAYER_NORM:
        return F.layer_norm(x, _static_ints(x.shape[-spec.normalized_ndim :]), weight, bias, eps)
    if spec.variant == LAYER_NORM_CHANNELS_FIRST:
        y = F.layer_norm(x.movedim(1, -1), _static_ints(x.shape[1:2]), weight, bias, eps)
        return y.movedim(-1, 1)
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    return rms_norm(x, weight, eps, spec.rms_convention, spec.normalized_ndim)


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence fds 1 and 2: a failing TorchScript export prints the whole graph from C++."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


@functools.lru_cache(maxsize=1)
def fused_norms_trace() -> bool:
    """Whether the installed fused ``layer_norm`` path survives a dynamic-axes TorchScript export."""
    spec = NormSpec(LAYER_NORM, eps_attr="eps")

    class _Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(8))

        def forward(self, x):
            return fused.fused_norm(spec, x, self.weight, None, 1e-5)

    try:
        with warnings.catch_warnings(), _quiet_fds():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Probe(), (torch.randn(2, 3, 8),), io.BytesIO(), input_names=["x"],
                dynamic_axes={"x": {0: "b", 1: "s"}}, opset_version=17, dynamo=False,
            )
        return True
    except Exception:
        return False


@contextlib.contextmanager
def traceable_norms(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, patched fused-mode norms of ``model`` use the export-only backend.

    Yields:
        How many norms were rerouted (0 when the kernels trace as they are).
    """
    swapped = []
    blocks = []
    # hf_lnorm families pick fused norm ops through a module switch made for exactly this:
    # the plain-torch path computes the same numbers and traces with constant shapes
    switches = {}
    for module in model.modules():
        mod = sys.modules.get(type(module).__module__)
        if mod is not None and hasattr(mod, "USE_FUSED_NORMS") and mod not in switches:
            switches[mod] = mod.USE_FUSED_NORMS
    for mod in switches:
        mod.USE_FUSED_NORMS = False
    for module in model.modules():
        if RESIDUAL_ATTR in module.__dict__:
            saved = {k: module.__dict__.pop(k) for k in ("forward", "_old_forward") if k in module.__dict__}
            blocks.append((module, saved))
    if not fused_norms_trace():
        fused.BACKENDS.setdefault(EXPORT_BACKEND, traceable_norm)
        for _, module in iter_patched(model):
            state = module.__dict__[STATE_ATTR]
            if state.mode == "fused":
                swapped.append((state, state.backend))
                state.backend = EXPORT_BACKEND
    try:
        yield len(swapped)
    finally:
        for state, backend in swapped:
            state.backend = backend
        for module, saved in blocks:
            module.__dict__.update(saved)
        for mod, value in switches.items():
            mod.USE_FUSED_NORMS = value
