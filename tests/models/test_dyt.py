"""norm_type="dyt" (Dynamic Tanh, weight * tanh(alpha * x) + bias) in every family: the layer's math and gradient,
build / forward / backward / save-load per family, remote code without hf_lnorm, ONNX export, the patch report,
and config validation."""

import json
import math

import pytest
import torch
from torch import nn

import hf_lnorm
from hf_lnorm.export import export, onnx_op_types
from hf_lnorm.models import (
    NORM_TYPES,
    LNormDyT,
    LNormGPTConfig,
    LNormGPTForCausalLM,
    LNormPolicyConfig,
    LNormPolicyModel,
    LNormSeq2SeqConfig,
    LNormSeq2SeqForConditionalGeneration,
    LNormSpeechConfig,
    LNormSpeechForConditionalGeneration,
    LNormViTConfig,
    LNormViTForImageClassification,
    LNormVisionTextConfig,
    LNormVisionTextForClassification,
    layers,
)
from hf_lnorm.probe import DYT_SKIP_REASON

from .conftest import BLOCK_HF_LNORM, run_python

ALPHA = 0.8  # not the default, so a config value that is dropped somewhere shows up
B = 2


# --------------------------------------------------------------------------- the layer


def _random_dyt(hidden=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dyt = LNormDyT(hidden, alpha_init=ALPHA)
    with torch.no_grad():
        dyt.weight.copy_(torch.randn(hidden, generator=gen))
        dyt.bias.copy_(torch.randn(hidden, generator=gen))
        dyt.alpha.fill_(1.7)
    return dyt, torch.randn(3, 5, hidden, generator=gen) * 3


def test_forward_equals_the_formula_and_add_forward_adds_first():
    dyt, x = _random_dyt()
    expected = dyt.weight.detach() * torch.tanh(1.7 * x) + dyt.bias.detach()
    torch.testing.assert_close(dyt(x), expected, atol=1e-6, rtol=1e-6)
    residual = torch.randn_like(x)
    normed, summed = dyt.add_forward(x, residual)
    torch.testing.assert_close(summed, x + residual)
    torch.testing.assert_close(normed, dyt.weight.detach() * torch.tanh(1.7 * (x + residual)) + dyt.bias.detach())
    fresh = LNormDyT(24, alpha_init=ALPHA)
    assert fresh.alpha.shape == (1,) and fresh.alpha.item() == pytest.approx(ALPHA)
    assert torch.equal(fresh.weight, torch.ones(24)) and torch.equal(fresh.bias, torch.zeros(24))
    torch.testing.assert_close(fresh(x), torch.tanh(ALPHA * x))
    assert dyt(x.to(torch.bfloat16)).dtype == torch.float32  # promoted like the other fp32-parameter layers
    assert dyt.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_alpha_weight_and_bias_are_learnable():
    dyt, x = _random_dyt()
    (dyt(x) ** 2).sum().backward()
    expected_alpha = (2 * dyt(x) * dyt.weight * x * (1 - torch.tanh(dyt.alpha * x) ** 2)).sum().detach()
    for name in ("alpha", "weight", "bias"):
        grad = getattr(dyt, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    torch.testing.assert_close(dyt.alpha.grad, expected_alpha.reshape(1), rtol=1e-4, atol=1e-4)
    assert sorted(dyt.state_dict()) == ["alpha", "bias", "weight"]


# --------------------------------------------------------------------------- every family


STACK = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, dropout=0.0, attention_dropout=0.0,
             norm_type="dyt", dyt_alpha_init=ALPHA)


def _gpt():
    config = LNormGPTConfig(vocab_size=50, max_position_embeddings=16, **STACK)
    ids = torch.randint(3, 50, (B, 6))
    return LNormGPTForCausalLM(config), {"input_ids": ids, "labels": ids}, "AutoModelForCausalLM", "logits"


def _imagegpt():
    # ImageGPT mode: 4x4 images over 8 colour clusters, token 8 starts an image
    config = LNormGPTConfig(vocab_size=9, max_position_embeddings=17, image_size=4, bos_token_id=8, **STACK)
    ids = torch.cat([torch.full((B, 1), 8), torch.randint(0, 8, (B, 16))], dim=1)
    return LNormGPTForCausalLM(config), {"input_ids": ids, "labels": ids}, "AutoModelForCausalLM", "logits"


def _seq2seq():
    config = LNormSeq2SeqConfig(vocab_size=40, max_position_embeddings=16, num_decoder_layers=1, **STACK)
    ids = torch.randint(3, 40, (B, 6))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(3, 40, (B, 4))}
    return LNormSeq2SeqForConditionalGeneration(config), inputs, "AutoModelForSeq2SeqLM", "logits"


def _vit():
    config = LNormViTConfig(image_size=8, patch_size=2, num_channels=1, num_labels=3, **STACK)
    inputs = {"pixel_values": torch.randn(B, 1, 8, 8), "labels": torch.tensor([0, 2])}
    return LNormViTForImageClassification(config), inputs, "AutoModelForImageClassification", "logits"


def _speech():
    config = LNormSpeechConfig(vocab_size=30, num_mel_bins=8, conv_channels=8, max_source_positions=16,
                               max_position_embeddings=32, num_decoder_layers=1, **STACK)
    inputs = {"input_features": torch.randn(B, 20, 8), "labels": torch.randint(3, 30, (B, 5))}
    return LNormSpeechForConditionalGeneration(config), inputs, "AutoModelForSpeechSeq2Seq", "logits"


def _vision_text():
    config = LNormVisionTextConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_labels=4, norm_type="dyt", dyt_alpha_init=ALPHA,
        vision_config=dict(image_size=8, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=4),
        text_config=dict(vocab_size=30, max_position_embeddings=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=4),
    )
    inputs = {"pixel_values": torch.randn(B, 3, 8, 8), "input_ids": torch.randint(1, 30, (B, 5)), "labels": torch.tensor([1, 3])}
    return LNormVisionTextForClassification(config), inputs, "AutoModelForVisualQuestionAnswering", "logits"


def _policy():
    config = LNormPolicyConfig(observation_size=6, action_size=3, hidden_sizes=[16, 8], critic_hidden_sizes=[12],
                               norm_type="dyt", dyt_alpha_init=ALPHA)
    inputs = {"observations": torch.randn(B, 6), "labels": torch.tensor([0, 2])}
    return LNormPolicyModel(config), inputs, "AutoModel", "logits"


FAMILIES = {"gpt": _gpt, "imagegpt": _imagegpt, "seq2seq": _seq2seq, "vit": _vit, "speech": _speech,
            "vision_text": _vision_text, "policy": _policy}


def _build(family, seed=0):
    torch.manual_seed(seed)
    model, inputs, auto_class, key = FAMILIES[family]()
    return model.eval(), inputs, auto_class, key


def _norm_like(model):
    """Every module that is one of the families' norm layers (or the ``none`` pass-through)."""
    kinds = (layers.LNormLayerNorm, layers.LNormRMSNorm, layers.LNormDyT, layers.Passthrough)
    return [m for m in model.modules() if isinstance(m, kinds)]


def _scramble_dyt(model, seed=1):
    """Random DyT parameters, so a load that re-initializes them instead of reading them fails."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LNormDyT):
                m.alpha.copy_(torch.rand(1, generator=gen) + 0.2)
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_builds_trains_and_round_trips_with_dyt(family, tmp_path):
    model, inputs, _, key = _build(family)
    dyts = [m for m in model.modules() if isinstance(m, LNormDyT)]
    others = [m for m in _norm_like(model) if not isinstance(m, (LNormDyT, layers.Passthrough))]
    assert dyts and not others, (family, [type(m).__name__ for m in others])
    for m in dyts:  # the family's init leaves DyT at its configured start
        assert m.alpha.item() == pytest.approx(ALPHA)
        assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))

    model.train()
    out = model(**inputs)
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    with_grad = [m for m in dyts if m.alpha.grad is not None and m.alpha.grad.abs().item() > 0]
    assert with_grad, f"{family}: no DyT alpha got a gradient"

    model.eval().zero_grad()
    _scramble_dyt(model)
    with torch.no_grad():
        expected = getattr(model(**inputs), key)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["norm_type"] == "dyt" and saved["dyt_alpha_init"] == ALPHA
    assert "Dynamic Tanh" in (tmp_path / "README.md").read_text()
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config.dyt_alpha_init == ALPHA
    state, loaded_state = model.state_dict(), loaded.state_dict()
    alpha_keys = [k for k in state if k.endswith(".alpha")]
    assert len(alpha_keys) == len(dyts)
    for k in alpha_keys:
        assert torch.equal(loaded_state[k], state[k]), k
    with torch.no_grad():
        torch.testing.assert_close(getattr(loaded(**inputs), key), expected, atol=1e-6, rtol=1e-6)


def test_vision_text_sub_configs_inherit_dyt_and_keep_their_own_after_save(tmp_path):
    config = LNormVisionTextConfig(norm_type="dyt", dyt_alpha_init=0.3, text_config={"vocab_size": 20, "dyt_alpha_init": 0.9})
    assert config.vision_config.norm_type == config.text_config.norm_type == "dyt"
    assert (config.dyt_alpha_init, config.vision_config.dyt_alpha_init, config.text_config.dyt_alpha_init) == (0.3, 0.3, 0.9)
    config.save_pretrained(tmp_path)
    again = LNormVisionTextConfig.from_pretrained(tmp_path)
    assert (again.dyt_alpha_init, again.vision_config.dyt_alpha_init, again.text_config.dyt_alpha_init) == (0.3, 0.3, 0.9)


def test_every_family_loads_as_remote_code_without_hf_lnorm(tmp_path):
    expected = {}
    for family in sorted(FAMILIES):
        model, inputs, auto_class, key = _build(family)
        _scramble_dyt(model)
        with torch.no_grad():
            out = getattr(model(**inputs), key)
        model.save_pretrained(tmp_path / family)
        alphas = {k: v for k, v in model.state_dict().items() if k.endswith(".alpha")}
        expected[family] = {"inputs": inputs, "auto_class": auto_class, "key": key, "out": out, "alphas": alphas}
    torch.save(expected, tmp_path / "expected.pt")

    # one fresh process for every family (starting an interpreter with torch + transformers is the slow part)
    code = BLOCK_HF_LNORM + f"""
import sys
import torch
import transformers
root = {str(tmp_path)!r}
expected = torch.load(root + "/expected.pt")
for family, data in expected.items():
    auto = getattr(transformers, data["auto_class"])
    model = auto.from_pretrained(root + "/" + family, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), (family, type(model).__module__)
    dyts = [m for m in model.modules() if type(m).__name__ == "LNormDyT"]
    assert dyts and all(type(m).is_elementwise_norm_substitute for m in dyts), family
    state = model.state_dict()
    assert set(k for k in state if k.endswith(".alpha")) == set(data["alphas"]), family
    for k, v in data["alphas"].items():
        assert torch.equal(state[k], v), (family, k)
    with torch.no_grad():
        got = getattr(model(**data["inputs"]), data["key"])
    torch.testing.assert_close(got, data["out"], atol=1e-6, rtol=1e-6, msg=lambda m: family + ": " + m)
    print("DYT-REMOTE-OK", family)
assert "hf_lnorm" not in sys.modules
"""
    proc = run_python(code, env_extra={"HF_HOME": str(tmp_path / "hf_home")}, cwd=str(tmp_path))
    assert sorted(line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("DYT-REMOTE-OK")) == sorted(FAMILIES)


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dyt_family_exports_to_onnx_matching_pytorch(family, tmp_path):
    """Each family exports with its default task; the ONNX model has one Tanh per DyT, no LayerNormalization, no
    custom op, and its outputs match PyTorch (``export`` checks them and reports the largest difference)."""
    model, _, _, _ = _build(family)
    _scramble_dyt(model)
    result = export(model, tmp_path / "out", task="text-generation" if family == "gpt" else None)
    assert result.max_abs_err is not None and result.max_abs_err <= 1e-4, (family, result.max_abs_err)
    files = sorted((tmp_path / "out").glob("*.onnx"))
    assert files, family
    ops = {}
    for f in files:
        for op, n in onnx_op_types(f).items():
            ops[op] = ops.get(op, 0) + n
    dyts = len([m for m in model.modules() if isinstance(m, LNormDyT)])
    assert ops.get("Tanh", 0) >= dyts, (family, ops.get("Tanh"), dyts)
    assert "LayerNormalization" not in ops and all("::" not in op for op in ops), (family, sorted(ops))


# --------------------------------------------------------------------------- patch


def test_patch_reports_every_dyt_as_skipped_and_leaves_outputs_unchanged():
    model, inputs, _, key = _build("seq2seq")
    _scramble_dyt(model)
    names = [n for n, m in model.named_modules() if isinstance(m, LNormDyT)]
    with torch.no_grad():
        before = getattr(model(**inputs), key)
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    assert [r.name for r in report] == names
    assert all(r.status == "skipped" and r.reason == DYT_SKIP_REASON and r.variant is None for r in report)
    assert not any(hf_lnorm.is_patched(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(getattr(model(**inputs), key), before)


class DynamicTanh(nn.Module):
    """A DyT written elsewhere: recognised by its class name."""

    def __init__(self, hidden):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self.weight = nn.Parameter(torch.ones(hidden))
        self.bias = nn.Parameter(torch.zeros(hidden))

    def forward(self, x):
        return self.weight * torch.tanh(self.alpha * x) + self.bias


class MarkedTanhNorm(DynamicTanh):
    """Another name, marked with the class attribute (its name ends in Norm, so it would otherwise be probed)."""

    is_elementwise_norm_substitute = True


def test_patch_skips_dyt_beside_real_norms_which_it_still_patches():
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), DynamicTanh(8), MarkedTanhNorm(8), LNormDyT(8)).eval()
    x = torch.randn(3, 8)
    before = model(x)
    report = hf_lnorm.patch_report(hf_lnorm.patch(model))
    assert [(r.name, r.status) for r in report] == [("1", "patched"), ("2", "skipped"), ("3", "skipped"), ("4", "skipped")]
    assert report[1].reason == report[3].reason == DYT_SKIP_REASON
    assert report[2].reason == "MarkedTanhNorm: elementwise, not a normalization; nothing to fuse"
    assert report.summary() == "hf_lnorm.patch: 1 norm(s) patched (fused), 3 skipped, 0 excluded"
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    hf_lnorm.unpatch(model)
    assert not any(hf_lnorm.is_patched(m) for m in model.modules())


# --------------------------------------------------------------------------- config validation


CONFIGS = {
    "gpt": lambda **kw: LNormGPTConfig(hidden_size=32, num_attention_heads=4, **kw),
    "seq2seq": lambda **kw: LNormSeq2SeqConfig(hidden_size=32, num_attention_heads=4, **kw),
    "vit": lambda **kw: LNormViTConfig(image_size=8, patch_size=2, hidden_size=32, num_attention_heads=4, **kw),
    "speech": lambda **kw: LNormSpeechConfig(hidden_size=32, num_attention_heads=4, **kw),
    "vision_text": lambda **kw: LNormVisionTextConfig(**kw),
    "policy": lambda **kw: LNormPolicyConfig(**kw),
}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_config_accepts_dyt_and_validates_alpha_init(family):
    make = CONFIGS[family]
    assert make().dyt_alpha_init == 0.5
    config = make(norm_type="dyt", dyt_alpha_init=2)
    assert config.norm_type == "dyt" and config.dyt_alpha_init == 2.0 and isinstance(config.dyt_alpha_init, float)
    for bad in (0, -0.5, math.inf, math.nan, "0.5", True, None):
        with pytest.raises(ValueError) as info:
            make(norm_type="dyt", dyt_alpha_init=bad)
        message = str(info.value)
        assert f"dyt_alpha_init={bad!r}" in message and "positive finite float" in message, message
    with pytest.raises(ValueError) as info:
        make(norm_type="tanh")
    assert "norm_type='tanh'" in str(info.value) and "'dyt'" in str(info.value)


def test_norm_types_and_layer_arguments():
    assert NORM_TYPES == ("layernorm", "rmsnorm", "dyt", "none")
    assert isinstance(layers.build_norm("dyt", 8, 1e-5, 0.25), LNormDyT)
    assert layers.build_norm("dyt", 8, 1e-5, 0.25).alpha.item() == 0.25
    with pytest.raises(ValueError, match=r"alpha_init=-1\.0 is not supported; accepted values: a positive finite float"):
        LNormDyT(8, alpha_init=-1.0)
