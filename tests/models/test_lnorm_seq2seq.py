"""LNormSeq2Seq: heads, Pre-/Post-LN, shared/separate embeddings, generation with cache and beams, save/load, patching."""

import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

import hf_lnorm
from hf_lnorm.models import LNormSeq2SeqConfig, LNormSeq2SeqForConditionalGeneration, LNormSeq2SeqModel, layers
from hf_lnorm.models.modeling_lnorm_seq2seq import shift_tokens_right

from ..backend_check import check_default_backend
from .conftest import ForwardSpy, assert_norm_paths_agree, tiny_seq2seq_config

B, S, T = 2, 7, 5


def _batch(vocab=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (B, S), generator=gen)
    mask = torch.ones_like(src)
    mask[1, 5:] = 0
    src[1, 5:] = 0
    tgt = torch.randint(3, vocab, (B, T), generator=gen)
    return src, mask, tgt


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(norm_position="post"),
        dict(norm_type="rmsnorm"),
        dict(norm_type="none"),
        dict(share_embeddings=False, decoder_vocab_size=40, tie_word_embeddings=False),
        dict(share_embeddings=False, decoder_vocab_size=40, tie_word_embeddings=True),
    ],
    ids=["pre-ln", "post-ln", "rmsnorm", "no-norm", "separate-untied", "separate-tied"],
)
def test_shapes_loss_and_embeddings(overrides):
    config = tiny_seq2seq_config(**overrides)
    src, mask, tgt = _batch()
    tgt = tgt.clamp(max=config.decoder_vocab_size - 1)
    model = LNormSeq2SeqForConditionalGeneration(config).eval()
    out = model(src, attention_mask=mask, labels=tgt, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (B, T, config.decoder_vocab_size)
    assert out.encoder_last_hidden_state.shape == (B, S, 32)
    assert len(out.encoder_hidden_states) == 3 and len(out.decoder_hidden_states) == 4
    assert out.cross_attentions[0].shape == (B, 4, T, S)
    assert torch.all(out.cross_attentions[0][1, :, :, 5:] == 0)  # padded source positions get no attention
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, config.decoder_vocab_size), tgt.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    # teacher forcing input is the shifted target
    explicit = model(src, attention_mask=mask, decoder_input_ids=shift_tokens_right(tgt, 0, config.decoder_start_token_id))
    torch.testing.assert_close(explicit.logits, out.logits)

    embeddings = model.get_encoder().get_input_embeddings(), model.get_decoder().get_input_embeddings()
    assert (embeddings[0] is embeddings[1]) == config.share_embeddings
    assert (model.lm_head is None) == config.tie_word_embeddings
    names = list(model.state_dict())
    assert len(names) == len(set(names)) and not any(n.endswith("._shared") for n in names)
    base = LNormSeq2SeqModel(config).eval()
    assert base(src, attention_mask=mask, decoder_input_ids=tgt).last_hidden_state.shape == (B, T, 32)


def test_padding_in_the_source_does_not_change_the_translation():
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config()).eval()
    src, mask, tgt = _batch()
    alone = model(src[1:, :5], decoder_input_ids=tgt[1:]).logits
    padded = model(src, attention_mask=mask, decoder_input_ids=tgt).logits[1:]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [dict(), dict(norm_position="post", share_embeddings=False, decoder_vocab_size=40)])
def test_generate_with_cache_equals_without_and_uses_it(overrides):
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config(**overrides)).eval()
    src, mask, _ = _batch()
    spy = ForwardSpy(model, key="decoder_input_ids")
    cached = model.generate(src, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=True)
    calls = list(spy.calls)
    spy.calls.clear()
    plain = model.generate(src, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=False)
    spy.remove()
    assert cached.shape == (B, 9) and torch.equal(cached, plain)
    assert cached[:, 0].eq(model.config.decoder_start_token_id).all()
    assert calls[0] == (1, False) and all(c == (1, True) for c in calls[1:]), calls


def test_incremental_decoding_matches_full_forward_token_by_token():
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config()).eval()
    src, mask, tgt = _batch()
    full = model(src, attention_mask=mask, decoder_input_ids=tgt).logits
    encoder_outputs = model.get_encoder()(src, attention_mask=mask)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = []
    for t in range(T):
        step = model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_input_ids=tgt[:, t : t + 1], past_key_values=cache, use_cache=True)
        steps.append(step.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.self_attention_cache.get_seq_length() == T and cache.cross_attention_cache.get_seq_length() == S


def test_beam_search_with_cache_equals_without():
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config()).eval()
    src, mask, _ = _batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=6, min_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False)
    beams = model.generate(src, use_cache=True, **kwargs)
    assert beams.shape == (B * 2, 7)
    assert torch.equal(beams, model.generate(src, use_cache=False, **kwargs))


def test_save_load_round_trip_and_auto_classes(tmp_path):
    config = tiny_seq2seq_config(share_embeddings=False, decoder_vocab_size=40)
    src, mask, tgt = _batch()
    tgt = tgt.clamp(max=39)
    for cls, auto in [(LNormSeq2SeqModel, AutoModel), (LNormSeq2SeqForConditionalGeneration, AutoModelForSeq2SeqLM)]:
        model = cls(config).eval()
        folder = tmp_path / cls.__name__
        model.save_pretrained(folder)
        files = set(os.listdir(folder))
        assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
        assert {"configuration_lnorm_seq2seq.py", "modeling_lnorm_seq2seq.py", "layers.py", "remote_code.py", "README.md"} <= files
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSeq2SeqLM"}
        loaded = auto.from_pretrained(folder).eval()
        assert type(loaded) is cls
        torch.testing.assert_close(loaded(src, attention_mask=mask, decoder_input_ids=tgt)[0], model(src, attention_mask=mask, decoder_input_ids=tgt)[0])
    config = AutoConfig.for_model("lnorm-seq2seq", vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    assert isinstance(config, LNormSeq2SeqConfig) and config.num_decoder_layers == 1
    assert type(AutoModelForSeq2SeqLM.from_config(config)) is LNormSeq2SeqForConditionalGeneration


def test_shared_embedding_is_stored_once_and_stays_shared_after_loading(tmp_path):
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config()).eval()
    keys = [k for k in model.state_dict() if "embed_tokens" in k or "shared" in k]
    assert keys == ["model.shared.weight"]
    model.save_pretrained(tmp_path)
    loaded = LNormSeq2SeqForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.get_encoder().get_input_embeddings() is loaded.get_decoder().get_input_embeddings() is loaded.model.shared
    torch.testing.assert_close(loaded.model.shared.weight, model.model.shared.weight)


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        (dict(hidden_size=30, num_attention_heads=4), ["hidden_size=30", "num_attention_heads=4"]),
        (dict(norm_type="groupnorm"), ["'groupnorm'", "'layernorm'", "'rmsnorm'", "'none'"]),
        (dict(norm_position="sandwich"), ["'sandwich'", "'pre'", "'post'"]),
        (dict(vocab_size=50, decoder_vocab_size=40), ["decoder_vocab_size=40", "share_embeddings=False"]),
    ],
)
def test_bad_config_raises_value_error(kwargs, needles):
    with pytest.raises(ValueError) as info:
        LNormSeq2SeqConfig(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_source_longer_than_context_is_a_clear_error():
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config(max_position_embeddings=8)).eval()
    with pytest.raises(ValueError, match="context length max_position_embeddings=8"):
        model(torch.randint(3, 60, (1, 9)), decoder_input_ids=torch.tensor([[1]]))


def test_hf_lnorm_patch_is_exact():
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config()).eval()
    src, mask, tgt = _batch()
    before = model(src, attention_mask=mask, decoder_input_ids=tgt).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    # encoder: 2 blocks x 2 norms + final; decoder: 3 blocks x 3 norms + final
    assert len(report.patched) == 2 * 2 + 1 + 3 * 3 + 1 and not report.skipped
    outputs = check_default_backend(lambda: model(src, attention_mask=mask, decoder_input_ids=tgt).logits,
                                    len(report.patched), where="patched LNormSeq2Seq")
    for mode, out in outputs.items():
        torch.testing.assert_close(out, before, atol=1e-6, rtol=1e-6, msg=lambda m: f"{mode}: {m}")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    hf_lnorm.unpatch(model)
    assert not any("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_fused_and_plain_norm_paths_agree(monkeypatch, norm_type):
    model = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config(norm_type=norm_type)).eval()
    src, mask, tgt = _batch()
    assert_norm_paths_agree(monkeypatch, model, lambda: model(src, attention_mask=mask, decoder_input_ids=tgt).logits,
                            where=f"LNormSeq2Seq {norm_type}")


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(reentrant):
    """Encoder states reach every decoder block; with reentrant checkpointing they must be a checkpoint input."""
    torch.manual_seed(0)
    cfg = LNormSeq2SeqConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_decoder_layers=2,
                             num_attention_heads=4, dropout=0.0, attention_dropout=0.0)
    plain = LNormSeq2SeqForConditionalGeneration(cfg).train()
    ckpt = LNormSeq2SeqForConditionalGeneration(cfg).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert ckpt.model.decoder.gradient_checkpointing
    x, y = torch.randint(3, 50, (2, 7)), torch.randint(3, 50, (2, 5))
    plain(input_ids=x, labels=y).loss.backward()
    ckpt(input_ids=x, labels=y).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert b.grad is not None and torch.allclose(a.grad, b.grad, atol=1e-6), name
