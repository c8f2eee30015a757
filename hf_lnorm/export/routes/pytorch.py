"""PyTorch routes of ``hf-lnorm optimize``: eager fp32, hf_lnorm's patch (fused and int8), torch.compile, torch's
dynamic int8.

Every PyTorch route deploys the same thing: the fp32 weights (``save_pretrained``; a patch leaves the
state_dict unchanged). What differs is the call that follows loading, which the route's ``load_hint``
states (``hf_lnorm.patch(...)``, ``torch.compile(...)``, ``torch.ao.quantization.quantize_dynamic(...)``).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable, List

import numpy as np

from .base import Built, Route, RouteContext, Runner

__all__ = ["ROUTES", "torch_runner"]


def torch_runner(model, output_names) -> Runner:
    """A runner over a PyTorch model: numpy feed in, the named outputs out as float32 numpy, no autograd."""
    import torch

    def run(feed):
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}, return_dict=True)
        return tuple(out[name].float().numpy() for name in output_names)

    return run


def _auto_class(ctx: RouteContext) -> str:
    from ..tasks import get_task

    return get_task(ctx.task).auto_class


def _save_fp32(ctx: RouteContext) -> Callable[[Path], None]:
    def deploy(path: Path) -> None:
        ctx.model.save_pretrained(path)  # safetensors; the fp32 weights every PyTorch route starts from

    return deploy


def _loaded(ctx: RouteContext) -> str:
    return f"{_auto_class(ctx)}.from_pretrained(PATH).eval()"


def _build_fp32(ctx: RouteContext) -> Built:
    return Built(torch_runner(ctx.model, ctx.output_names), _save_fp32(ctx), _loaded(ctx),
                 notes=["the model as loaded, eager fp32"])


def _build_patched(ctx: RouteContext) -> Built:
    import hf_lnorm

    model = copy.deepcopy(ctx.model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_lnorm.patch(model)
    summary = hf_lnorm.patch_report(model).summary()
    return Built(torch_runner(model, ctx.output_names), _save_fp32(ctx), f"hf_lnorm.patch({_loaded(ctx)})",
                 notes=[summary], info={"patch": summary})


def _build_compile(ctx: RouteContext) -> Built:
    import torch

    compiled = torch.compile(copy.deepcopy(ctx.model).eval())
    return Built(torch_runner(compiled, ctx.output_names), _save_fp32(ctx), f"torch.compile({_loaded(ctx)})",
                 notes=["torch.compile (inductor) of the stock model; each input shape compiles on its first, untimed call"])


def _build_int8(ctx: RouteContext) -> Built:
    import torch

    import hf_lnorm

    model = copy.deepcopy(ctx.model).eval()
    options = {}
    if ctx.calibration:  # a real batch for the trace that finds each norm's readers
        options["example_inputs"] = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ctx.calibration[0].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_lnorm.patch(model, mode="quantized", **options)
    summary = hf_lnorm.patch_report(model).summary()
    return Built(torch_runner(model, ctx.output_names), _save_fp32(ctx), f'hf_lnorm.patch({_loaded(ctx)}, mode="quantized")',
                 notes=[f'hf_lnorm.patch(mode="quantized"): {summary}'], info={"patch": summary})


def _build_dynamic_int8(ctx: RouteContext) -> Built:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(ctx.model).eval(), {torch.nn.Linear}, dtype=torch.qint8)
    count = sum(1 for m in model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic"))
    hint = f"torch.ao.quantization.quantize_dynamic({_loaded(ctx)}, {{torch.nn.Linear}}, dtype=torch.qint8)"
    return Built(torch_runner(model, ctx.output_names), _save_fp32(ctx), hint,
                 notes=[f"torch.ao.quantization.quantize_dynamic: {count} Linear layers int8 (weights per tensor, "
                        "activations per batch)"], info={"int8_linears": count})


ROUTES: List[Route] = [
    Route("pytorch-fp32", "pytorch", "the model as loaded, eager fp32 (the reference)", _build_fp32, reference=True),
    Route("pytorch-patched", "pytorch", "hf_lnorm.patch(model): fused norms, eager", _build_patched),
    Route("pytorch-compile", "pytorch", "torch.compile of the stock model", _build_compile, reference=True),
    Route("pytorch-int8", "pytorch", 'hf_lnorm.patch(model, mode="quantized"): int8 norms and every Linear', _build_int8),
    Route("torch-dynamic-int8", "pytorch", "torch.ao.quantization.quantize_dynamic on every nn.Linear",
          _build_dynamic_int8, reference=True),
]
