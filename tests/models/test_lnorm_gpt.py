"""LNormGPT: every head, generation with and without the KV cache, save/load, Auto classes, bad input, patching."""

import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from transformers.cache_utils import DynamicCache

import hf_lnorm
from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM, LNormGPTForSequenceClassification, LNormGPTModel, layers

from ..backend_check import check_default_backend
from .conftest import ForwardSpy, assert_norm_paths_agree, tiny_gpt_config

VARIANTS = [(t, p) for t in ("layernorm", "rmsnorm", "none") for p in ("pre", "post")]
B, T = 2, 7


def _ids(vocab=99, batch=B, length=T, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=gen)


@pytest.mark.parametrize("norm_type,norm_position", VARIANTS)
def test_every_head_shapes_and_losses(norm_type, norm_position):
    config = tiny_gpt_config(norm_type=norm_type, norm_position=norm_position)
    ids = _ids()
    base = LNormGPTModel(config).eval()
    out = base(ids, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (B, T, 32)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert len(out.attentions) == config.num_hidden_layers and out.attentions[0].shape == (B, 4, T, T)
    # causal: no attention to later positions
    assert torch.all(out.attentions[0].triu(1) == 0)

    lm = LNormGPTForCausalLM(config).eval()
    out = lm(ids, labels=ids)
    assert out.logits.shape == (B, T, 99)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 99), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert lm(ids).loss is None

    cls = LNormGPTForSequenceClassification(config).eval()
    labels = torch.tensor([0, 2])
    out = cls(ids, labels=labels)
    assert out.logits.shape == (B, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_tuple_outputs_match_dict_outputs():
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    ids = _ids()
    as_dict = model(ids, labels=ids)
    as_tuple = model(ids, labels=ids, return_dict=False)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)


def test_sequence_classification_uses_last_real_token():
    config = tiny_gpt_config()
    model = LNormGPTForSequenceClassification(config).eval()
    ids = _ids(batch=1, length=5)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)  # right padding with pad id 0
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 3)], dim=1).long()
    torch.testing.assert_close(model(padded, attention_mask=mask).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(padded).logits, model(ids).logits, atol=1e-5, rtol=1e-5)  # found via pad id


@pytest.mark.parametrize("norm_type,norm_position", [("layernorm", "pre"), ("rmsnorm", "post")])
def test_generate_with_cache_equals_without_and_uses_it(norm_type, norm_position):
    model = LNormGPTForCausalLM(tiny_gpt_config(norm_type=norm_type, norm_position=norm_position)).eval()
    ids = _ids()
    spy = ForwardSpy(model)
    with_cache = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, use_cache=True)
    calls_cached = list(spy.calls)
    spy.calls.clear()
    without = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, use_cache=False)
    calls_plain = list(spy.calls)
    spy.remove()
    assert with_cache.shape == (B, T + 12)
    assert torch.equal(with_cache, without)
    # The cache was really used: after the prompt, one new token per step and a non-empty cache came in.
    assert calls_cached[0] == (T, False)
    assert all(call == (1, True) for call in calls_cached[1:]), calls_cached
    assert [n for n, _ in calls_plain] == list(range(T, T + 12))


def test_incremental_decoding_matches_full_forward_token_by_token():
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    ids = _ids(length=10)
    full = model(ids).logits
    cache = DynamicCache()
    steps = [model(ids[:, :4], past_key_values=cache, use_cache=True).logits]
    for t in range(4, 10):
        steps.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # the transformers 5.x spelling of the argument works the same
    cache5 = DynamicCache()
    model(ids[:, :4], cache=cache5, use_cache=True)
    assert cache5.get_seq_length() == 4


def test_left_padded_batch_generates_like_single_prompts():
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    long, short = _ids(batch=1, length=6, seed=1), _ids(batch=1, length=3, seed=2)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    out = model.generate(batch, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    alone = model.generate(short, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(out[1, 3:], alone[0])
    assert torch.equal(out[0], model.generate(long, max_new_tokens=5, min_new_tokens=5, do_sample=False)[0])


def test_beam_search_and_sampling_run():
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    ids = _ids()
    beams = model.generate(ids, max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False, min_new_tokens=6)
    assert beams.shape == (B * 2, T + 6)
    no_cache = model.generate(ids, max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False, min_new_tokens=6, use_cache=False)
    assert torch.equal(beams, no_cache)
    sampled = model.generate(ids, max_new_tokens=4, do_sample=True, top_k=5)
    assert sampled.shape == (B, T + 4)


def test_save_load_round_trip_every_head(tmp_path):
    config = tiny_gpt_config(norm_type="rmsnorm")
    ids = _ids()
    for cls, auto in [
        (LNormGPTModel, AutoModel),
        (LNormGPTForCausalLM, AutoModelForCausalLM),
        (LNormGPTForSequenceClassification, AutoModelForSequenceClassification),
    ]:
        model = cls(config).eval()
        folder = tmp_path / cls.__name__
        model.save_pretrained(folder)
        files = set(os.listdir(folder))
        assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
        assert {"configuration_lnorm_gpt.py", "modeling_lnorm_gpt.py", "layers.py", "remote_code.py", "README.md"} <= files
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"}
        loaded = auto.from_pretrained(folder).eval()
        assert type(loaded) is cls
        expected, got = model(ids)[0], loaded(ids)[0]
        torch.testing.assert_close(got, expected)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "LNormGPTForCausalLM")
    assert loaded.lm_head.weight is loaded.transformer.embed_tokens.weight  # still tied after loading


def test_untied_head_is_separate_and_round_trips(tmp_path):
    model = LNormGPTForCausalLM(tiny_gpt_config(tie_word_embeddings=False)).eval()
    assert model.lm_head.weight is not model.transformer.embed_tokens.weight
    model.save_pretrained(tmp_path)
    loaded = LNormGPTForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)
    torch.testing.assert_close(loaded(_ids()).logits, model(_ids()).logits)


def test_model_card_describes_config_and_norms(tmp_path):
    model = LNormGPTForCausalLM(tiny_gpt_config(norm_position="post"))
    model.save_pretrained(tmp_path, training_data="Shakespeare's plays (test sample).")
    card = (tmp_path / "README.md").read_text()
    for text in ("lnorm-gpt", "norm_position='post'", "norm_type='layernorm'", "| hidden_size | 32 |", "## Intended use", "Shakespeare's plays (test sample)."):
        assert text in card, text


def test_auto_classes_are_registered_on_import():
    config = AutoConfig.for_model("lnorm-gpt", vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    assert isinstance(config, LNormGPTConfig) and config.model_type.startswith("lnorm-")
    assert type(AutoModel.from_config(config)) is LNormGPTModel
    assert type(AutoModelForCausalLM.from_config(config)) is LNormGPTForCausalLM
    assert type(AutoModelForSequenceClassification.from_config(config)) is LNormGPTForSequenceClassification


def test_device_map_auto_loads(tmp_path):
    pytest.importorskip("accelerate")
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="auto").eval()
    torch.testing.assert_close(loaded(_ids()).logits, model(_ids()).logits)


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        (dict(hidden_size=30, num_attention_heads=4), ["hidden_size=30", "num_attention_heads=4"]),
        (dict(norm_type="batchnorm"), ["'batchnorm'", "'layernorm'", "'rmsnorm'", "'none'"]),
        (dict(norm_position="middle"), ["'middle'", "'pre'", "'post'"]),
    ],
)
def test_bad_config_raises_value_error_naming_value_and_choices(kwargs, needles):
    with pytest.raises(ValueError) as info:
        LNormGPTConfig(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_input_longer_than_context_is_a_clear_error():
    model = LNormGPTForCausalLM(tiny_gpt_config(max_position_embeddings=16)).eval()
    with pytest.raises(ValueError, match="context length max_position_embeddings=16"):
        model(_ids(length=17))
    with pytest.raises(ValueError, match="context length"):
        model.generate(_ids(length=10), max_new_tokens=10, min_new_tokens=10, do_sample=False)


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_hf_lnorm_patch_is_exact(norm_type):
    model = LNormGPTForCausalLM(tiny_gpt_config(norm_type=norm_type)).eval()
    ids = _ids()
    before = model(ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    norms = [n for n, m in model.named_modules() if isinstance(m, (layers.LNormLayerNorm, layers.LNormRMSNorm))]
    assert sorted(r.name for r in report.patched) == sorted(norms) and len(norms) == 2 * 2 + 1
    assert not report.skipped
    for mode, out in check_default_backend(lambda: model(ids).logits, len(norms), where=f"patched {norm_type}").items():
        torch.testing.assert_close(out, before, atol=1e-6, rtol=1e-6, msg=lambda m: f"{mode}: {m}")
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    hf_lnorm.unpatch(model)
    assert not any("forward" in m.__dict__ for _, m in model.named_modules())
    torch.testing.assert_close(model(ids).logits, before)


def test_patched_forward_is_used_by_the_fused_residual_path(monkeypatch):
    """A per-instance forward (what hf_lnorm.patch installs) must take effect in add_forward too."""
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    norm = model.transformer.layers[0].mlp_norm
    calls = []
    original = type(norm).forward

    def counting_forward(x):
        calls.append(x.shape)
        return original(norm, x)

    norm.forward = counting_forward
    model(_ids())
    assert calls, "the block bypassed the instance forward"


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_fused_and_plain_norm_paths_agree(monkeypatch, norm_type):
    model = LNormGPTForCausalLM(tiny_gpt_config(norm_type=norm_type)).eval()
    ids = _ids()
    assert_norm_paths_agree(monkeypatch, model, lambda: model(ids).logits, where=f"LNormGPT {norm_type}")


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_gpt_config()
    ids = _ids()
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LNormGPTForCausalLM(config).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.is_gradient_checkpointing
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_peft_lora_on_documented_target_modules():
    peft = pytest.importorskip("peft")
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    ids = _ids()
    before = model(ids).logits.detach()
    lora = peft.get_peft_model(
        model,
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "out_proj", "fc_in", "fc_out"], task_type="CAUSAL_LM"),
    )
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len({n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}) == 4  # all four module kinds wrapped
    torch.testing.assert_close(lora(input_ids=ids).logits, before)  # LoRA B starts at zero
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora.train()
    for _ in range(3):
        loss = lora(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    lora.eval()
    adapted = lora(input_ids=ids).logits.detach()
    assert not torch.allclose(adapted, before)
    merged = lora.merge_and_unload()
    torch.testing.assert_close(merged(ids).logits, adapted, atol=1e-5, rtol=1e-5)
    assert lora.generate(input_ids=ids, max_new_tokens=3, do_sample=False).shape == (B, T + 3)
