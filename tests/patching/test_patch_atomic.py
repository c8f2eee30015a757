"""A failed patch / calibrate / smooth call leaves the model exactly as it was."""

import pytest
import torch
from transformers import AutoModel

import hf_lnorm
from hf_lnorm import patching
from hf_lnorm.inputs import dummy_inputs
from hf_lnorm.norms.int8 import ACT_QMAX, Int8Weight, QuantizedActivation
from hf_lnorm.norms.fused import available_backends
from hf_lnorm.norms.residual import RESIDUAL_ATTR, fused_block_names
from hf_lnorm.quantization import LINEAR_ATTR, int8_layers, mode as quantized_mode

from .archs import tiny_config

_KEYS = ("forward", "_old_forward", patching.STATE_ATTR, patching.REPORT_ATTR, RESIDUAL_ATTR, LINEAR_ATTR)


def _bert():
    torch.manual_seed(0)
    return AutoModel.from_config(tiny_config("bert"), attn_implementation="eager").eval()


def _inputs(model, seed=0):
    return dummy_inputs(model, batch_size=2, seq_len=8, generator=torch.Generator().manual_seed(seed))


def _outputs(model, inputs):
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _same(a, b) -> bool:
    """Equality that compares tensors bit for bit and recurses into containers."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, QuantizedActivation):
        return isinstance(b, QuantizedActivation) and _same(a.u8, b.u8) and _same(a.scale, b.scale)
    return a is b or a == b


def _state(model):
    """Everything patch / calibrate / smooth may change, as comparable values."""
    out = {}
    for name, m in model.named_modules():
        d = m.__dict__
        entry = {k: d[k] for k in _KEYS if k in d}  # the objects themselves: compared by identity / ==
        st = d.get(patching.STATE_ATTR)
        if st is not None:
            entry["norm_state"] = {k: v for k, v in vars(st).items() if k != "extra"}
            entry["extra"] = {k: v for k, v in st.extra.items() if k != "stash"}
        lin = d.get(LINEAR_ATTR)
        if lin is not None:
            entry["int8"] = dict(vars(lin))
        out[name] = entry
    return out


def _snapshot(model, inputs):
    return {
        "out": _outputs(model, inputs),
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "state": _state(model),
        "report": model.__dict__.get(patching.REPORT_ATTR),
        "report_dicts": hf_lnorm.patch_report(model).to_dicts(),
        "patched": {n: hf_lnorm.is_patched(m) for n, m in model.named_modules()},
        "fused_blocks": fused_block_names(model),
        "int8": [n for n, _ in int8_layers(model)],
    }


def _assert_unchanged(model, inputs, before):
    after = _snapshot(model, inputs)
    assert torch.equal(after["out"], before["out"])
    assert _same(after["state_dict"], before["state_dict"])
    assert _same(after["state"], before["state"])
    assert after["report"] is before["report"] and after["report_dicts"] == before["report_dicts"]
    assert after["patched"] == before["patched"]
    assert after["fused_blocks"] == before["fused_blocks"]
    assert after["int8"] == before["int8"]


@pytest.fixture(scope="module")
def fused_ref():
    """Output of a freshly fused-patched tiny BERT (to show a model patched after a failure still works)."""
    model = _bert()
    hf_lnorm.patch(model)
    return _outputs(model, _inputs(model))


# --------------------------------------------------------------------------- patch


@pytest.mark.parametrize("prepatch", [None, "fused", "quantized"])
@pytest.mark.parametrize("kwargs, exc", [
    (dict(bogus_option=1), TypeError),
    (dict(mode="quantized", kernel="bogus"), ValueError),
    (dict(mode="quantized", all_linears="yes"), TypeError),
    (dict(mode="quantized", example_inputs="text"), TypeError),
    (dict(fuse_residual=1), TypeError),
    (dict(mode="int4"), ValueError),
    (dict(backend="bogus"), ValueError),
    (dict(include=3), TypeError),
])
def test_rejected_arguments_touch_nothing(prepatch, kwargs, exc):
    model = _bert()
    inputs = _inputs(model)
    if prepatch:
        hf_lnorm.patch(model, mode=prepatch)
    before = _snapshot(model, inputs)
    with pytest.raises(exc):
        hf_lnorm.patch(model, **kwargs)
    _assert_unchanged(model, inputs, before)


def test_after_patch_failure_on_a_fresh_model_rolls_back(monkeypatch, fused_ref):
    model = _bert()
    inputs = _inputs(model)
    before = _snapshot(model, inputs)
    real = patching.FusedMode.after_patch

    def fuse_then_fail(self, model, *args, **kwargs):
        real(self, model, *args, **kwargs)
        assert fused_block_names(model)  # the residual blocks were fused before the failure
        raise RuntimeError("injected failure after residual fusion")

    monkeypatch.setattr(patching.FusedMode, "after_patch", fuse_then_fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        hf_lnorm.patch(model)
    _assert_unchanged(model, inputs, before)
    assert not any(hf_lnorm.is_patched(m) for m in model.modules())
    monkeypatch.undo()
    hf_lnorm.patch(model)  # and the model still patches normally afterwards
    assert torch.equal(_outputs(model, inputs), fused_ref)


def _other_backend(model):
    """A backend other than the one the model's norms use, when this machine has one."""
    current = next(m for _, m in hf_lnorm.iter_patched(model)).__dict__[patching.STATE_ATTR].backend
    return next((b for b in available_backends() if b != current), None)


def test_classify_failure_midway_rolls_back(monkeypatch):
    model = _bert()
    hf_lnorm.patch(model)
    inputs = _inputs(model)
    before = _snapshot(model, inputs)
    real, calls = patching.classify, []

    def classify_then_fail(module, cache=None):
        calls.append(module)
        if len(calls) == 3:
            raise RuntimeError("injected failure in classify")
        return real(module, cache)

    monkeypatch.setattr(patching, "classify", classify_then_fail)
    with pytest.raises(RuntimeError, match="injected failure in classify"):
        hf_lnorm.patch(model, mode="quantized")  # a mode change re-classifies every norm
    assert len(calls) == 3
    _assert_unchanged(model, inputs, before)


def test_failed_quantized_patch_over_a_fused_model_keeps_it_fused(monkeypatch):
    model = _bert()
    hf_lnorm.patch(model)
    inputs = _inputs(model)
    before = _snapshot(model, inputs)
    assert before["fused_blocks"] and all(r.mode == "fused" for r in before["report"].patched)
    real, made = Int8Weight.from_float, []

    def quantize_then_fail(weight, kernel):
        made.append(kernel)
        if len(made) == 3:  # two Linears are already int8 when this raises
            raise RuntimeError("injected failure while quantizing weights")
        return real(weight, kernel)

    monkeypatch.setattr(Int8Weight, "from_float", staticmethod(quantize_then_fail))
    with pytest.raises(RuntimeError, match="injected failure while quantizing"):
        hf_lnorm.patch(model, mode="quantized")
    assert len(made) == 3
    _assert_unchanged(model, inputs, before)


def test_failed_repatch_of_a_quantized_model_restores_int8_state(monkeypatch):
    model = _bert()
    hf_lnorm.patch(model, mode="quantized")
    inputs = _inputs(model)
    hf_lnorm.calibrate(model, [_inputs(model, 1)], static=True)
    before = _snapshot(model, inputs)
    sources = {n: list(m.__dict__[LINEAR_ATTR].sources) for n, m in int8_layers(model)}

    def fail(*args, **kwargs):
        raise RuntimeError("injected failure at the end of after_patch")

    monkeypatch.setattr(quantized_mode, "_refresh_report", fail)
    # another backend (where there is one) re-patches every norm and re-attaches them to the int8 Linears
    with pytest.raises(RuntimeError, match="injected failure at the end"):
        hf_lnorm.patch(model, mode="quantized", backend=_other_backend(model))
    _assert_unchanged(model, inputs, before)
    assert {n: list(m.__dict__[LINEAR_ATTR].sources) for n, m in int8_layers(model)} == sources


def test_failed_patch_then_unpatch_restores_the_stock_model():
    model = _bert()
    inputs = _inputs(model)
    stock = _snapshot(model, inputs)
    hf_lnorm.patch(model)
    with pytest.raises(ValueError):
        hf_lnorm.patch(model, mode="quantized", kernel="bogus")
    hf_lnorm.unpatch(model)
    assert torch.equal(_outputs(model, inputs), stock["out"])
    assert _same(_state(model), stock["state"])


# --------------------------------------------------------------------------- calibrate / smooth


@pytest.fixture
def calibrated():
    """A quantized tiny BERT after a static calibration and a smoothing pass."""
    model = _bert()
    hf_lnorm.patch(model, mode="quantized")
    batches = [_inputs(model, 1), _inputs(model, 2)]
    hf_lnorm.calibrate(model, batches, static=True)
    hf_lnorm.smooth(model, batches, alpha=0.5)
    hf_lnorm.calibrate(model, batches, static=True)
    inputs = _inputs(model)
    before = _snapshot(model, inputs)
    extras = [m.__dict__[patching.STATE_ATTR].extra for _, m in hf_lnorm.iter_patched(model)]
    assert all(e.get("static_scale") is not None and e.get("inv_smooth") is not None for e in extras if e["layers"])
    return model, inputs, batches, before


@pytest.mark.parametrize("call, exc, match", [
    (lambda m, b: hf_lnorm.calibrate(m, []), ValueError, "at least one batch"),
    (lambda m, b: hf_lnorm.calibrate(m, iter(())), ValueError, "at least one batch"),
    (lambda m, b: hf_lnorm.calibrate(m, None), ValueError, "got None"),
    (lambda m, b: hf_lnorm.calibrate(m, b[0]), TypeError, "wrap a single batch"),
    (lambda m, b: hf_lnorm.calibrate(m, 3), TypeError, "iterable of batches, got int"),
    (lambda m, b: hf_lnorm.calibrate(m, b, static="yes"), TypeError, "static must be True or False"),
    (lambda m, b: hf_lnorm.smooth(m, []), ValueError, "at least one batch"),
    (lambda m, b: hf_lnorm.smooth(m, b, alpha=2), ValueError, r"alpha must be a number in \[0, 1\], got 2"),
    (lambda m, b: hf_lnorm.smooth(m, [], alpha=-1), ValueError, "alpha"),
])
def test_rejected_calibration_input_keeps_the_earlier_calibration(calibrated, call, exc, match):
    model, inputs, batches, before = calibrated
    with pytest.raises(exc, match=match):
        call(model, batches)
    _assert_unchanged(model, inputs, before)


@pytest.mark.parametrize("what", ["calibrate", "smooth"])
def test_forward_failure_midway_restores_the_earlier_calibration(calibrated, what):
    model, inputs, batches, before = calibrated
    # token ids beyond the vocabulary: the model raises on the second batch, after recording the first
    bad = dict(batches[0], input_ids=torch.full_like(batches[0]["input_ids"], 10_000))
    with pytest.raises(IndexError):
        if what == "calibrate":
            hf_lnorm.calibrate(model, [batches[1], bad], static=True)
        else:
            hf_lnorm.smooth(model, [batches[1], bad], alpha=0.9)
    _assert_unchanged(model, inputs, before)
    assert not any(m.__dict__[patching.STATE_ATTR].extra.get("calibrating") for _, m in hf_lnorm.iter_patched(model))


def test_calibrate_reads_a_generator_once(calibrated):
    model, inputs, batches, before = calibrated
    seen = []

    def gen():
        for b in batches:
            seen.append(1)
            yield b

    hf_lnorm.calibrate(model, gen(), static=True)
    assert len(seen) == 2
    extras = [m.__dict__[patching.STATE_ATTR].extra for _, m in hf_lnorm.iter_patched(model)]
    assert [e["calibrated_batches"] for e in extras] == [2] * len(extras)


def test_static_scale_of_a_smoothed_norm_covers_its_smoothed_output(calibrated):
    model, inputs, batches, before = calibrated
    for _, m in hf_lnorm.iter_patched(model):
        qs = m.__dict__[patching.STATE_ATTR].extra
        if qs.get("inv_smooth") is None:
            continue
        ys_absmax = float((qs["act_absmax"] * qs["inv_smooth"]).max())
        assert qs["static_scale"] == pytest.approx(ys_absmax / ACT_QMAX, rel=1e-6)
