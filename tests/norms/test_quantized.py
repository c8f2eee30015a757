"""Unit tests of quantized mode (hf_lnorm.norms.int8, hf_lnorm.quantization): int8 math, kernels, consumers, calibration, smoothing, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hf_lnorm
from hf_lnorm.norms import int8 as q
from hf_lnorm.patching import STATE_ATTR
from hf_lnorm.quantization import LINEAR_ATTR, int8_layers


def _cos(a, b):
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


class PreNormBlock(nn.Module):
    """x + fc2(gelu(fc1(ln(x)))) plus a second Linear on the same norm output; the residual reads ln(x) too."""

    def __init__(self, d=32, h=48):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, h)
        self.gate = nn.Linear(d, h, bias=False)
        self.fc2 = nn.Linear(h, d)

    def forward(self, x):
        y = self.ln(x)
        return y + self.fc2(F.gelu(self.fc1(y)) * self.gate(y))


class ConvReader(nn.Module):
    """A norm whose only reader is a convolution: no Linear consumer."""

    def __init__(self, d=16):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.conv = nn.Conv1d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.ln(x))


# --------------------------------------------------------------------------- int8 math


def test_quantize_per_token_error_bound_and_zero_rows():
    y = torch.randn(5, 37) * torch.tensor([0.01, 1.0, 100.0, 0.0, 3.0])[:, None]
    codes, scale = q.quantize_per_token(y)
    assert codes.dtype == torch.int8 and scale.shape == (5, 1)
    assert codes.abs().max() <= 127
    err = (codes.float() * scale - y).abs()
    assert (err <= scale / 2 + 1e-6 * y.abs().amax(-1, keepdim=True)).all()
    assert torch.equal(codes[3], torch.zeros(37, dtype=torch.int8))  # an all-zero row stays zero
    # each nonzero row uses the full range
    assert torch.equal(codes[[0, 1, 2, 4]].abs().amax(-1), torch.full((4,), 127, dtype=torch.int8))


def test_compiled_quantizer_codes_equal_eager_and_per_token_math():
    fn = q._CompiledQuantizer.get()
    if fn is None:
        pytest.skip(f"inductor unavailable here: {q._CompiledQuantizer.disabled_reason}")
    gen = torch.Generator().manual_seed(3)
    for rows, k in [(2, 1), (7, 33), (64, 384), (5, 1536)]:
        y = torch.randn(rows, k, generator=gen) * torch.logspace(-3, 3, rows)[:, None]
        y[1] = 0.0  # an all-zero row keeps code 128 (signed 0)
        got_u8, got_scale = fn(y)
        want_u8, want_scale = q._quantize_rows_u8(y)
        assert torch.equal(got_u8, want_u8) and torch.equal(got_scale, want_scale)
        codes, scale = q.quantize_per_token(y)  # the documented per-token math, signed
        assert torch.equal((got_u8.to(torch.int16) - 128).to(torch.int8), codes) and torch.equal(got_scale, scale)
    # quantize_activation takes the compiled path on CPU and stores the same codes
    y = torch.randn(9, 40, generator=gen)
    assert torch.equal(q.quantize_activation(y).q, q.quantize_per_token(y)[0])


def test_quantize_weight_per_channel():
    w = torch.randn(9, 13) * torch.logspace(-2, 2, 9)[:, None]
    for qmax in (127, 63):
        codes, scale = q.quantize_weight(w, qmax)
        assert codes.is_contiguous() and codes.abs().max() <= qmax
        assert ((codes.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all()
    # a transposed (non-contiguous) view quantizes to the same codes as its contiguous copy
    assert torch.equal(q.quantize_weight(w.t().contiguous().t())[0], q.quantize_weight(w)[0])


KERNELS_HERE = ["reference"] + (["onednn"] if q._onednn_weight_qmax() is not None else [])


@pytest.mark.parametrize("kernel", KERNELS_HERE + ["int_mm"])
@pytest.mark.parametrize("m,k,n", [(3, 7, 9), (37, 64, 48), (20, 40, 24)])
def test_int8_linear_matches_integer_math(kernel, m, k, n):
    x = torch.randn(m, k)
    w = torch.randn(n, k)
    b = torch.randn(n)
    act = q.quantize_activation(x)
    weight = q.Int8Weight.from_float(w, kernel)
    got = q.int8_linear(act, weight, b)
    exact = (act.q.double() @ weight.q.double().t()) * act.scale.double() * weight.scale.double() + b.double()
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-5)
    assert _cos(got, F.linear(x, w, b)) > 0.999


def test_resolve_kernel_rejects_unknown_and_unavailable():
    with pytest.raises(ValueError, match="'fast'.*accepted"):
        q.resolve_kernel("fast", torch.device("cpu"))
    assert q.resolve_kernel("auto", torch.device("cpu")) in ("onednn", "reference")
    assert q.resolve_kernel("reference", torch.device("cpu")) == "reference"


# --------------------------------------------------------------------------- the mode


def test_consumers_found_and_float_path_exact():
    torch.manual_seed(0)
    block = PreNormBlock().eval()
    x = torch.randn(4, 10, 32)
    with torch.no_grad():
        ref = block(x)
        exact_norm = block.ln(x)
    hf_lnorm.patch(block, mode="quantized", example_inputs=(x,), all_linears=False)
    rec = hf_lnorm.patch_report(block)[0]
    assert rec.extra["int8"] == "gemm" and rec.extra["consumers"] == ["fc1", "gate"]
    assert rec.extra["all_linears"] is False
    assert [n for n, _ in int8_layers(block)] == ["fc1", "gate"]  # fc2 reads the GELU product: stays float
    with torch.no_grad():
        # the norm returns the exact float output (the residual path reads it) ...
        assert torch.equal(block.ln(x), exact_norm)
        # ... and stashes the int8 version that fc1 and gate share
        stash = block.ln.__dict__[STATE_ATTR].extra["stash"]
        assert stash[1].q.dtype == torch.int8 and stash[1].q.shape == (40, 32)
        out = block(x)
    assert not torch.equal(out, ref) and _cos(out, ref) > 0.999
    # a Linear called on something that is not its norm's output quantizes that input itself
    with torch.no_grad():
        direct = block.fc1(x)
    assert _cos(direct, F.linear(x, block.fc1.weight, block.fc1.bias)) > 0.999
    hf_lnorm.unpatch(block)
    with torch.no_grad():
        assert torch.equal(block(x), ref)


def test_patch_twice_is_noop_and_report_kept():
    block = PreNormBlock().eval()
    x = torch.randn(2, 5, 32)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    forwards = {n: m.__dict__.get("forward") for n, m in block.named_modules()}
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    assert {n: m.__dict__.get("forward") for n, m in block.named_modules()} == forwards
    assert hf_lnorm.patch_report(block)[0].extra["consumers"] == ["fc1", "gate"]
    hf_lnorm.unpatch(block)
    assert not int8_layers(block)


def test_no_linear_consumer_is_reported_and_quantize_dequantized():
    model = ConvReader().eval()
    x = torch.randn(2, 4, 16)
    with torch.no_grad():
        exact_norm = model.ln(x)
        ref = model(x)
    hf_lnorm.patch(model, mode="quantized", example_inputs=x)
    rec = hf_lnorm.patch_report(model)[0]
    assert rec.status == "patched" and rec.extra["int8"] == "qdq"
    assert "no Linear consumer" in rec.extra["note"]
    with torch.no_grad():
        y = model.ln(x)
    assert torch.equal(y, q.quantize_dequantize(exact_norm))
    assert not torch.equal(y, exact_norm)
    with torch.no_grad():
        assert _cos(model(x), ref) > 0.999
    hf_lnorm.unpatch(model)


def test_model_without_config_or_example_input_is_reported():
    block = PreNormBlock().eval()
    hf_lnorm.patch(block, mode="quantized")
    rec = hf_lnorm.patch_report(block)[0]
    assert rec.extra["int8"] == "qdq" and "example_inputs" in rec.extra["note"]
    with torch.no_grad():
        assert torch.isfinite(block(torch.randn(2, 3, 32))).all()
    hf_lnorm.unpatch(block)


def test_unknown_mode_option_and_kernel_rejected():
    block = PreNormBlock()
    with pytest.raises(TypeError, match="calibration_set"):
        hf_lnorm.patch(block, mode="quantized", calibration_set=[1])
    hf_lnorm.unpatch(block)
    with pytest.raises(ValueError, match="'fast'"):
        hf_lnorm.patch(block, mode="quantized", kernel="fast")
    hf_lnorm.unpatch(block)


def test_half_input_keeps_dtype():
    block = PreNormBlock().to(torch.bfloat16).eval()
    x = torch.randn(2, 20, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = block(x)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    with torch.no_grad():
        out = block(x)
    assert out.dtype == torch.bfloat16 and _cos(out.float(), ref.float()) > 0.99
    hf_lnorm.unpatch(block)


# --------------------------------------------------------------------------- calibrate / smooth


def test_calibrate_bad_input():
    block = PreNormBlock().eval()
    with pytest.raises(ValueError, match="patched"):
        hf_lnorm.calibrate(block, [torch.randn(2, 32)])
    hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(2, 32))
    with pytest.raises(ValueError, match="at least one batch"):
        hf_lnorm.calibrate(block, [])
    with pytest.raises(ValueError, match="at least one batch"):
        hf_lnorm.calibrate(block, iter(()))
    with pytest.raises(ValueError, match="at least one batch"):
        hf_lnorm.smooth(block, [], alpha=0.5)
    hf_lnorm.unpatch(block)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_smooth_rejects_alpha_outside_unit_interval(alpha):
    block = PreNormBlock().eval()
    hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(2, 32))
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        hf_lnorm.smooth(block, [torch.randn(2, 32)], alpha=alpha)
    hf_lnorm.unpatch(block)


def test_calibrate_records_ranges_and_static_scale():
    block = PreNormBlock().eval()
    x = torch.randn(3, 7, 32)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    hf_lnorm.calibrate(block, [x, x * 0.5])
    qs = block.ln.__dict__[STATE_ATTR].extra
    with torch.no_grad():
        hf_lnorm.unpatch(block)
        expected = block.ln(x).abs().reshape(-1, 32).amax(0)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    hf_lnorm.calibrate(block, [x, x * 0.5], static=True)
    qs = block.ln.__dict__[STATE_ATTR].extra
    torch.testing.assert_close(qs["act_absmax"], expected)
    assert qs["calibrated_batches"] == 2
    assert math.isclose(qs["static_scale"], float(expected.max()) / 127, rel_tol=1e-6)
    assert hf_lnorm.patch_report(block)[0].extra["static"] is True
    with torch.no_grad():
        assert _cos(block(x), PreNormBlock.forward(block, x)) > 0.99
    hf_lnorm.unpatch(block)


def test_fold_smoothing_is_exact_in_float():
    torch.manual_seed(1)
    k = 24
    x = torch.randn(6, k, dtype=torch.float64)
    s = torch.rand(k, dtype=torch.float64) * 10 + 0.05
    w, b = torch.randn(k, dtype=torch.float64), torch.randn(k, dtype=torch.float64)
    lins = [torch.randn(n, k, dtype=torch.float64) for n in (5, 11)]
    for variant, gain in (("layer_norm", w), ("rms_norm_llama", w), ("rms_norm_gemma", 1 + w)):
        nw, nb, nl = q.fold_smoothing(w, b, lins, s, variant)
        new_gain = (1 + nw) if variant == "rms_norm_gemma" else nw
        core = F.layer_norm(x, (k,))
        for lin, new_lin in zip(lins, nl):
            torch.testing.assert_close((core * new_gain + nb) @ new_lin.t(), (core * gain + b) @ lin.t(), rtol=1e-12, atol=1e-12)
    nw, nb, _ = q.fold_smoothing(None, None, lins, s)
    torch.testing.assert_close(nw, 1 / s)
    assert nb is None


def test_smooth_fold_exact_on_model_and_helps_outliers():
    torch.manual_seed(0)
    block = PreNormBlock().eval()
    with torch.no_grad():  # a few outlier channels, the situation SmoothQuant is for
        block.ln.weight[:3] = 40.0
    x = torch.randn(4, 24, 32)
    with torch.no_grad():
        ref = block(x)
        ref_fc1 = block.fc1(block.ln(x))
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    with torch.no_grad():
        err_plain = (block.fc1(block.ln(x)) - ref_fc1).abs().mean().item()
    hf_lnorm.smooth(block, [x], alpha=0.5)
    qs = block.ln.__dict__[STATE_ATTR].extra
    s = qs["smooth"]
    assert s.shape == (32,) and (s > 0).all() and hf_lnorm.patch_report(block)[0].extra["smoothed"]
    # the fold with the scales smooth() computed is exact in float on this model
    nw, nb, (nfc1, ngate) = q.fold_smoothing(block.ln.weight, block.ln.bias, [block.fc1.weight, block.gate.weight], s)
    with torch.no_grad():
        y = F.layer_norm(x, (32,), nw, nb)
        torch.testing.assert_close(F.linear(y, nfc1, block.fc1.bias), ref_fc1, rtol=1e-4, atol=1e-4)
        err_smooth = (block.fc1(block.ln(x)) - ref_fc1).abs().mean().item()
        out = block(x)
    assert err_smooth < err_plain
    assert _cos(out, ref) > 0.999
    # float parameters untouched; unpatch exact
    hf_lnorm.unpatch(block)
    with torch.no_grad():
        assert torch.equal(block(x), ref)


def test_smoothing_scales_formula():
    a = torch.tensor([4.0, 1.0, 0.0, 9.0])
    w = torch.tensor([1.0, 4.0, 2.0, 0.0])
    s = q.smoothing_scales(a, w, alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(q.smoothing_scales(a[:2], w[:2], alpha=0.0), 1 / w[:2])
    torch.testing.assert_close(q.smoothing_scales(a[:2], w[:2], alpha=1.0), a[:2])


# --------------------------------------------------------------------------- torch.ao quantized tensors


class _AoNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.fc1 = nn.Linear(16, 32)
        self.ln = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 8)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.fc2(self.ln(self.fc1(self.quant(x)))))


def _static_quantize(model, data):
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    torch.ao.quantization.prepare(model, inplace=True)
    with torch.no_grad():
        model(data)
    return torch.ao.quantization.convert(model, inplace=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_dequantize_layernorm_requantize_module_in_torch_ao_model():
    torch.manual_seed(0)
    data = torch.randn(64, 16)
    float_model = _AoNet().eval()
    with torch.no_grad():
        float_model.ln.weight.uniform_(0.5, 4.0)  # output range far from the input's: the course sketch would clip
        ref = float_model(data)
    model = _AoNet().eval()
    model.load_state_dict(float_model.state_dict())
    q.swap_layer_norms_for_quantized_tensors(model)
    assert isinstance(model.ln, q.QuantizedTensorLayerNorm)
    model.ln.observe = True
    model = _static_quantize(model, data)
    model.ln.observe = False
    assert torch.isfinite(model.ln.out_range).all()
    with torch.no_grad():
        hidden = model.fc1(model.quant(data))
        assert hidden.is_quantized
        normed = model.ln(hidden)
        assert normed.is_quantized and normed.dtype == hidden.dtype
        assert normed.q_scale() != hidden.q_scale()  # its own output parameters, not the input's
        torch.testing.assert_close(normed.dequantize(), F.layer_norm(hidden.dequantize(), (32,), model.ln.weight, model.ln.bias),
                                   atol=2 * normed.q_scale(), rtol=0)
        out = model(data)
    assert _cos(out, ref) > 0.99


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_quantized_mode_norm_accepts_torch_ao_tensors():
    ln = nn.LayerNorm(32).eval()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2.0)
    hf_lnorm.patch(ln, mode="quantized")
    x = torch.randn(8, 32) * 3
    qx = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
    with torch.no_grad():
        out = ln(qx)
    assert out.is_quantized and out.dtype == torch.quint8
    expected = F.layer_norm(qx.dequantize(), (32,), ln.weight, ln.bias)
    torch.testing.assert_close(out.dequantize(), expected, atol=out.q_scale(), rtol=0)
    hf_lnorm.unpatch(ln)


@pytest.mark.parametrize("options", [{}, {"all_linears": True}])
def test_default_runs_every_linear_in_int8(options):
    torch.manual_seed(0)
    block = PreNormBlock().eval()
    x = torch.randn(3, 12, 32)
    with torch.no_grad():
        ref = block(x)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x, **options)
    assert hf_lnorm.patch_report(block)[0].extra["all_linears"] is True
    assert [n for n, _ in int8_layers(block)] == ["fc1", "gate", "fc2"]
    assert block.fc2.__dict__[LINEAR_ATTR].sources == []
    with torch.no_grad():
        out = block(x)
    assert _cos(out, ref) > 0.999
    hf_lnorm.unpatch(block)
    assert not int8_layers(block)
    with torch.no_grad():
        assert torch.equal(block(x), ref)


def _count_int8_gemms(model, x):
    """Forward ``model(x)`` under the profiler; the number of int8 GEMM kernel calls and the output."""
    from torch.profiler import ProfilerActivity, profile

    names = {"onednn::qlinear_pointwise", "aten::_int_mm"}
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        out = model(x)
    return sum(e.count for e in prof.key_averages() if e.key in names), out


@pytest.mark.skipif(q.resolve_kernel("auto", torch.device("cpu")) != "onednn", reason="no oneDNN int8 kernel on this CPU")
def test_default_int8_kernel_runs_once_per_linear():
    torch.manual_seed(0)
    block = PreNormBlock().eval()
    x = torch.randn(4, 24, 32)
    with torch.no_grad():
        ref = block(x)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    assert hf_lnorm.patch_report(block)[0].extra["kernel"] == "onednn"
    calls, out = _count_int8_gemms(block, x)
    assert calls == 3  # fc1, gate, fc2: no Linear falls back to float
    assert _cos(out, ref) > 0.999
    hf_lnorm.unpatch(block)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x, all_linears=False)
    calls, _ = _count_int8_gemms(block, x)
    assert calls == 2  # only the norm's readers
    hf_lnorm.unpatch(block)
    calls, out = _count_int8_gemms(block, x)
    assert calls == 0 and torch.equal(out, ref)


def test_default_on_a_tiny_bert_quantizes_every_linear_and_agrees():
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertForQuestionAnswering(config).eval()
    ids = torch.randint(0, 99, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=ids)
    hf_lnorm.patch(model, mode="quantized", example_inputs={"input_ids": ids})
    linears = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear) and "pooler" not in n)
    assert sorted(n for n, _ in int8_layers(model)) == linears  # the pooler is not called by the QA head
    with torch.no_grad():
        out = model(input_ids=ids)
    for a, b in ((out.start_logits, ref.start_logits), (out.end_logits, ref.end_logits)):
        assert not torch.equal(a, b) and _cos(a, b) > 0.99
    hf_lnorm.unpatch(model)


# --------------------------------------------------------------------------- the one-pass CPU quantizer


@pytest.mark.parametrize("rows, cols", [(3072, 384), (7, 1023), (5, 17), (2, 3)])
def test_cpu_quantizer_equals_eager_codes_and_scales(rows, cols):
    from hf_lnorm.quantization import cpu_quantizer

    if not cpu_quantizer.is_available():
        pytest.skip(f"one-pass CPU quantizer unavailable: {cpu_quantizer.unavailable_reason()}")
    gen = torch.Generator().manual_seed(rows + cols)
    y = torch.randn(rows, cols, generator=gen) * torch.logspace(-3, 2, rows)[:, None]
    y[1] = 0.0  # an all-zero row: scale TINY, codes 128
    ties = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -126.5])[:cols]
    y[0, :len(ties)] = ties  # scale 1 when nothing larger follows: quotients on .5 ties round half to even
    y[0, len(ties):] = 0.0
    u8, scale = cpu_quantizer.quantize_rows_u8(y)
    want_u8, want_scale = q._quantize_rows_u8(y)
    assert torch.equal(u8, want_u8) and torch.equal(scale, want_scale)
    assert (u8[1] == 128).all()
    assert u8[0, :4].tolist() == [255, 128, 130, 130][:min(4, cols)]  # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    assert cpu_quantizer.quantize_rows_u8(y.double()) is None  # not float32: the caller takes another path


def test_default_cpu_path_uses_the_one_pass_quantizer(monkeypatch):
    from hf_lnorm.quantization import cpu_quantizer, linear

    if not cpu_quantizer.is_available():
        pytest.skip(f"one-pass CPU quantizer unavailable: {cpu_quantizer.unavailable_reason()}")
    calls = []
    real = linear.quantize_rows_u8
    monkeypatch.setattr(linear, "quantize_rows_u8", lambda y: calls.append(tuple(y.shape)) or real(y))
    block = PreNormBlock().eval()
    x = torch.randn(2, 6, 32)
    hf_lnorm.patch(block, mode="quantized", example_inputs=x)
    calls.clear()
    with torch.no_grad():
        block(x)
    assert calls == [(12, 32), (12, 48)]  # the norm's output (shared by fc1 and gate), then fc2's input
    hf_lnorm.unpatch(block)
