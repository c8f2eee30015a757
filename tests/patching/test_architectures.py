"""patch/unpatch on tiny random models of many transformers architectures.

For each architecture: every norm is patched or reported skipped with a reason;
outputs and gradients equal the unpatched twin (fp32, max abs err <= 1e-5),
where recording gradients keeps every norm on aten; under ``torch.no_grad()``
and ``torch.inference_mode()`` the outputs equal the twin's too, and the
profiler shows the default CPU backend (the C++ kernel) ran every norm it
covers (aten only with ``HF_LNORM_CPU_KERNELS=0``); the state_dict is byte-identical; patching twice changes nothing; unpatch
restores every module's class and forward; save_pretrained of the patched
model loads in stock transformers with equal outputs.
"""

import pytest
import torch
from torch import nn
from transformers import AutoModel

import hf_lnorm
from hf_lnorm.inputs import dummy_inputs
from hf_lnorm.patching import STATE_ATTR

from ..backend_check import CPP_UNCOVERED_VARIANTS, INFERENCE_MODES, assert_aten_only, assert_inference_backend, norm_calls
from .archs import ARCHS, tiny_config

# Norm classes a model may contain that hf_lnorm must *not* patch, with the reason
# fragment it must report.
EXPECTED_SKIPS = {
    "GroupNorm": "not the last dimension",
}


def _build(arch):
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_config(arch), attn_implementation="eager").eval()
    return model


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    for v in (out.values() if hasattr(out, "values") else out):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    raise AssertionError("model returned no float tensor")


def _state_bytes(model):
    return {k: (v.dtype, tuple(v.shape), v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
            for k, v in model.state_dict().items()}


def _module_snapshot(model):
    return {n: (type(m), m.__dict__.get("forward")) for n, m in model.named_modules()}


def _run(model, inputs):
    """Forward and backward with gradients: ``(output, parameter gradients, norm_calls of the forward)``."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out, calls = norm_calls(lambda: _first_tensor(model(**inputs)))
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads, calls


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_patch_exact(arch, tmp_path):
    model = _build(arch)
    inputs = dummy_inputs(model, batch_size=2, seq_len=8)
    ref_out, ref_grads, _ = _run(model, inputs)
    with torch.no_grad():
        ref_inference = _first_tensor(model(**inputs))
    before_state = _state_bytes(model)
    before_modules = _module_snapshot(model)

    assert hf_lnorm.patch(model) is model
    report = hf_lnorm.patch_report(model)
    assert report.patched, f"{arch}: nothing patched\n{report.table()}"
    for rec in report:
        assert rec.status in ("patched", "skipped"), rec
        if rec.status == "skipped":
            short = rec.cls.rsplit(".", 1)[-1]
            assert rec.reason, rec
            assert short in EXPECTED_SKIPS and EXPECTED_SKIPS[short] in rec.reason, f"{arch}: unexpected skip {rec}"
    # every nn.LayerNorm-like module (by class) is in the report
    names = {r.name for r in report}
    for n, m in model.named_modules():
        if type(m).__module__.startswith("torch.nn.utils"):
            continue  # weight-norm parametrizations normalize weights, not activations
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) or type(m).__name__.endswith("Norm"):
            assert n in names, f"{arch}: {n} ({type(m).__name__}) missing from report"

    out, grads, grad_calls = _run(model, inputs)
    assert out.dtype == ref_out.dtype
    assert (out - ref_out).abs().max().item() <= 1e-5
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-5, rtol=1e-4, msg=lambda m: f"{arch} grad {k}: {m}")
    n_calls = assert_aten_only(grad_calls, f"{arch} with gradients")

    # fp32 CPU inference: the default backend runs, with the twin's outputs
    uncovered = sum(r.variant in CPP_UNCOVERED_VARIANTS for r in report.patched)
    for mode, context in INFERENCE_MODES.items():
        with context():
            out, calls = norm_calls(lambda: _first_tensor(model(**inputs)))
        assert_inference_backend(calls, n_calls, len(report.patched) - uncovered, uncovered, where=f"{arch} {mode}")
        assert out.dtype == ref_inference.dtype
        assert (out - ref_inference).abs().max().item() <= 1e-5, f"{arch} {mode}"
    assert _state_bytes(model) == before_state

    # patching twice changes nothing
    patched_forwards = {n: m.__dict__.get("forward") for n, m in model.named_modules()}
    hf_lnorm.patch(model)
    assert {n: m.__dict__.get("forward") for n, m in model.named_modules()} == patched_forwards
    assert len(hf_lnorm.patch_report(model).patched) == len(report.patched)

    # save_pretrained of the patched model loads in stock transformers
    model.save_pretrained(tmp_path / "saved")
    stock = AutoModel.from_pretrained(tmp_path / "saved", attn_implementation="eager").eval()
    assert not any(STATE_ATTR in m.__dict__ for m in stock.modules())
    with torch.no_grad():
        stock_out = _first_tensor(stock(**inputs))
    assert (stock_out - ref_out).abs().max().item() <= 1e-5

    assert hf_lnorm.unpatch(model) is model
    assert _module_snapshot(model) == before_modules
    assert _state_bytes(model) == before_state
    with torch.no_grad():
        again = _first_tensor(model(**inputs))
    assert torch.equal(again, ref_out)
