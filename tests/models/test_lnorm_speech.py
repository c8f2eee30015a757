"""LNormSpeech: log-mel features, subsampling, padding, generate() with cache, save/load, remote code, Hub, patch, ONNX, WER."""

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForSpeechSeq2Seq, AutoProcessor
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

import hf_lnorm
from hf_lnorm.models import (
    LNormSpeechConfig,
    LNormSpeechFeatureExtractor,
    LNormSpeechForConditionalGeneration,
    LNormSpeechModel,
    LNormSpeechProcessor,
    build_word_tokenizer,
)
from hf_lnorm.models.modeling_lnorm_speech import subsampled_lengths
from hf_lnorm.models.processing_lnorm_speech import power_spectrogram
from hf_lnorm.recipes.speech_metrics import wer_details, word_edits, word_error_rate

from ..hub_server import HubServer, use_endpoint
from ..backend_check import check_default_backend
from .conftest import BLOCK_HF_LNORM, ForwardSpy, assert_norm_paths_agree, load_script, run_python

MELS = 16
WORDS = ["ace", "two", "three", "of", "clubs", "hearts"]


def tiny_speech_config(**overrides) -> LNormSpeechConfig:
    values = dict(
        vocab_size=30,
        num_mel_bins=MELS,
        conv_channels=16,
        max_source_positions=32,
        max_position_embeddings=24,
        hidden_size=32,
        num_hidden_layers=2,
        num_decoder_layers=2,
        num_attention_heads=4,
        dropout=0.0,
        attention_dropout=0.0,
    )
    values.update(overrides)
    return LNormSpeechConfig(**values)


def _batch(seed=0, frames=(40, 27)):
    """Features of two utterances (the second right-padded) and decoder ids."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(frames), max(frames), MELS, generator=gen)
    mask = torch.zeros(len(frames), max(frames), dtype=torch.long)
    for i, n in enumerate(frames):
        mask[i, :n] = 1
        feats[i, n:] = 0.0
    ids = torch.randint(3, 30, (len(frames), 5), generator=gen)
    return feats, mask, ids


def _tone(freq, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(norm_position="post"), dict(norm_type="rmsnorm"), dict(norm_type="none"), dict(tie_word_embeddings=False)],
    ids=["pre-ln", "post-ln", "rmsnorm", "no-norm", "untied"],
)
def test_shapes_loss_and_subsampling(overrides):
    config = tiny_speech_config(**overrides)
    feats, mask, ids = _batch()
    model = LNormSpeechForConditionalGeneration(config).eval()
    out = model(input_features=feats, attention_mask=mask, labels=ids, output_hidden_states=True, output_attentions=True)
    assert out.encoder_last_hidden_state.shape == (2, 10, 32)  # 40 frames -> ceil(ceil(40 / 2) / 2)
    assert out.logits.shape == (2, 5, 30)
    assert len(out.encoder_hidden_states) == 3 and len(out.decoder_hidden_states) == 3
    # 27 real frames -> 7 encoder positions: the padded ones get no cross-attention
    assert torch.all(out.cross_attentions[0][1, :, :, 7:] == 0) and torch.all(out.cross_attentions[0][1, :, :, 6] > 0)
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 30), ids.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert (model.lm_head is None) == config.tie_word_embeddings
    base = LNormSpeechModel(config).eval()
    assert base(input_features=feats, attention_mask=mask, decoder_input_ids=ids).last_hidden_state.shape == (2, 5, 32)


def test_auxiliary_ctc_loss():
    feats, mask, ids = _batch()
    plain = LNormSpeechForConditionalGeneration(tiny_speech_config()).eval()
    assert plain.ctc_head is None
    torch.manual_seed(0)
    model = LNormSpeechForConditionalGeneration(tiny_speech_config(ctc_weight=0.25)).eval()
    ids[:, -1] = model.config.eos_token_id
    out = model(input_features=feats, attention_mask=mask, labels=ids)
    ce = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 30), ids.reshape(-1))
    log_probs = model.ctc_head(out.encoder_last_hidden_state).log_softmax(-1).transpose(0, 1)
    ctc = torch.nn.functional.ctc_loss(log_probs, ids[:, :-1], torch.tensor([10, 7]), torch.tensor([4, 4]), blank=0, zero_infinity=True)
    torch.testing.assert_close(out.loss, 0.75 * ce + 0.25 * ctc)
    with pytest.raises(ValueError, match="ctc_weight=1.0"):
        tiny_speech_config(ctc_weight=1.0)


def test_subsampled_lengths_match_the_convolutions():
    model = LNormSpeechForConditionalGeneration(tiny_speech_config()).eval()
    for frames in (1, 2, 3, 4, 5, 17, 40):
        out = model.get_encoder()(torch.randn(1, frames, MELS)).last_hidden_state
        assert out.shape[1] == int(subsampled_lengths(torch.tensor(frames))) == -(-(-(-frames // 2)) // 2)


def test_padding_does_not_change_the_result():
    model = LNormSpeechForConditionalGeneration(tiny_speech_config()).eval()
    feats, mask, ids = _batch(frames=(40, 27))
    alone = model(input_features=feats[1:, :27], decoder_input_ids=ids[1:])
    padded = model(input_features=feats, attention_mask=mask, decoder_input_ids=ids)
    torch.testing.assert_close(padded.logits[1:], alone.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.encoder_last_hidden_state[1:, :7], alone.encoder_last_hidden_state, atol=1e-5, rtol=1e-5)
    # garbage in the padded frames changes nothing either
    noisy = feats.clone()
    noisy[1, 27:] = 100.0
    torch.testing.assert_close(model(input_features=noisy, attention_mask=mask, decoder_input_ids=ids).logits, padded.logits)


@pytest.mark.parametrize("overrides", [dict(), dict(norm_position="post", num_decoder_layers=3)])
def test_generate_with_cache_equals_without_and_uses_it(overrides):
    model = LNormSpeechForConditionalGeneration(tiny_speech_config(**overrides)).eval()
    feats, mask, _ = _batch()
    spy = ForwardSpy(model, key="decoder_input_ids")
    kwargs = dict(attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    cached = model.generate(input_features=feats, use_cache=True, **kwargs)
    calls = list(spy.calls)
    spy.calls.clear()
    plain = model.generate(input_features=feats, use_cache=False, **kwargs)
    spy.remove()
    assert cached.shape == (2, 9) and torch.equal(cached, plain)
    assert cached[:, 0].eq(model.config.decoder_start_token_id).all()
    assert calls[0] == (1, False) and all(c == (1, True) for c in calls[1:]), calls
    beams = dict(kwargs, num_beams=3, num_return_sequences=2)
    assert torch.equal(model.generate(input_features=feats, use_cache=True, **beams), model.generate(input_features=feats, use_cache=False, **beams))


def test_incremental_decoding_matches_full_forward():
    model = LNormSpeechForConditionalGeneration(tiny_speech_config()).eval()
    feats, mask, ids = _batch()
    full = model(input_features=feats, attention_mask=mask, decoder_input_ids=ids).logits
    encoder_outputs = model.get_encoder()(feats, attention_mask=mask)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = [
        model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits
        for t in range(ids.shape[1])
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.self_attention_cache.get_seq_length() == 5 and cache.cross_attention_cache.get_seq_length() == 10


def test_save_load_round_trip_and_auto_classes(tmp_path):
    config = tiny_speech_config()
    feats, mask, ids = _batch()
    for cls, auto in [(LNormSpeechModel, AutoModel), (LNormSpeechForConditionalGeneration, AutoModelForSpeechSeq2Seq)]:
        model = cls(config).eval()
        folder = tmp_path / cls.__name__
        model.save_pretrained(folder)
        files = set(os.listdir(folder))
        assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
        assert {"configuration_lnorm_speech.py", "modeling_lnorm_speech.py", "modeling_lnorm_seq2seq.py", "layers.py", "README.md"} <= files
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSpeechSeq2Seq"}
        loaded = auto.from_pretrained(folder).eval()
        assert type(loaded) is cls
        torch.testing.assert_close(
            loaded(input_features=feats, attention_mask=mask, decoder_input_ids=ids)[0], model(input_features=feats, attention_mask=mask, decoder_input_ids=ids)[0]
        )
    assert "automatic-speech-recognition" in (tmp_path / "LNormSpeechModel" / "README.md").read_text()
    config = AutoConfig.for_model("lnorm-speech", vocab_size=20, num_mel_bins=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    assert isinstance(config, LNormSpeechConfig) and config.num_decoder_layers == 1
    assert type(AutoModelForSpeechSeq2Seq.from_config(config)) is LNormSpeechForConditionalGeneration


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        (dict(hidden_size=30, num_attention_heads=4), ["hidden_size=30", "num_attention_heads=4"]),
        (dict(norm_type="batchnorm"), ["'batchnorm'", "'layernorm'", "'rmsnorm'", "'none'"]),
        (dict(norm_position="sandwich"), ["'sandwich'", "'pre'", "'post'"]),
        (dict(conv_kernel_size=4), ["conv_kernel_size=4", "odd"]),
    ],
)
def test_bad_config_raises_value_error(kwargs, needles):
    with pytest.raises(ValueError) as info:
        LNormSpeechConfig(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_bad_inputs_are_clear_errors():
    model = LNormSpeechForConditionalGeneration(tiny_speech_config()).eval()
    ids = torch.tensor([[1]])
    with pytest.raises(ValueError, match=r"num_mel_bins=16.*got \(1, 16, 40\)"):  # Whisper's (batch, mels, frames) layout
        model(input_features=torch.randn(1, 16, 40), decoder_input_ids=ids)
    with pytest.raises(ValueError, match="max_source_positions=32"):
        model(input_features=torch.randn(1, 129, MELS), decoder_input_ids=ids)
    with pytest.raises(ValueError, match=r"attention_mask of shape \(1, 9\)"):
        model(input_features=torch.randn(1, 10, MELS), attention_mask=torch.ones(1, 9), decoder_input_ids=ids)


def test_hf_lnorm_patch_is_exact_and_unpatch_restores():
    model = LNormSpeechForConditionalGeneration(tiny_speech_config()).eval()
    feats, mask, ids = _batch()
    before = model(input_features=feats, attention_mask=mask, decoder_input_ids=ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    assert len(report.patched) == 2 * 2 + 1 + 2 * 3 + 1 and not report.skipped  # encoder blocks + final, decoder blocks + final
    outputs = check_default_backend(lambda: model(input_features=feats, attention_mask=mask, decoder_input_ids=ids).logits,
                                    len(report.patched), where="patched LNormSpeech")
    for mode, out in outputs.items():
        torch.testing.assert_close(out, before, atol=1e-6, rtol=1e-6, msg=lambda m: f"{mode}: {m}")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    hf_lnorm.unpatch(model)
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert torch.equal(model(input_features=feats, attention_mask=mask, decoder_input_ids=ids).logits, before)


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_fused_and_plain_norm_paths_agree(monkeypatch, norm_type):
    model = LNormSpeechForConditionalGeneration(tiny_speech_config(norm_type=norm_type)).eval()
    feats, mask, ids = _batch()
    assert_norm_paths_agree(monkeypatch, model,
                            lambda: model(input_features=feats, attention_mask=mask, decoder_input_ids=ids).logits,
                            where=f"LNormSpeech {norm_type}")


def test_trainer_lowers_the_loss(tmp_path):
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    torch.manual_seed(0)
    model = LNormSpeechForConditionalGeneration(tiny_speech_config())
    feats, mask, ids = _batch(frames=(40, 36))
    rows = [{"input_features": feats[i % 2], "attention_mask": mask[i % 2], "labels": ids[i % 2]} for i in range(8)]
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=15, learning_rate=3e-3, per_device_train_batch_size=4,
                                    logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, seed=0)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 15 and losses[-1] < 0.75 * losses[0], losses


# --------------------------------------------------------------------------- feature extractor, tokenizer, processor


def test_power_spectrogram_matches_torch_stft():
    wave = np.random.default_rng(0).standard_normal(4321)
    window = LNormSpeechFeatureExtractor(n_fft=400, win_length=320).window
    ours = power_spectrogram(wave, window, hop_length=160)
    ref = torch.stft(torch.from_numpy(wave), 400, 160, 320, window=torch.hann_window(320, dtype=torch.float64), center=True,
                     pad_mode="reflect", return_complex=True).abs().pow(2).T.numpy()
    assert ours.shape == ref.shape == (1 + 4321 // 160, 201)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_mel_filters_and_tones_land_in_the_right_channel():
    extractor = LNormSpeechFeatureExtractor(feature_size=40, normalize=False)
    filters = extractor.mel_filters
    # every filter catches at least one FFT bin near its peak (narrow low filters fall between bins: < 1)
    assert filters.shape == (201, 40) and filters.min() >= 0 and filters.max(axis=0).min() > 0.5 and filters.max() <= 1.0
    peaks = filters.argmax(axis=0) * 40.0  # bin spacing 16000 / 400 Hz
    assert np.all(np.diff(peaks) > 0)  # channel centres increase
    for freq in (300.0, 1000.0, 3000.0):
        feats = extractor(_tone(freq), sampling_rate=16000)["input_features"][0]
        channel = int(np.asarray(feats).mean(axis=0).argmax())
        assert abs(peaks[channel] - freq) <= 0.12 * freq + 40, (freq, peaks[channel])


def test_feature_extractor_batches_pads_and_normalizes():
    extractor = LNormSpeechFeatureExtractor(feature_size=MELS)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(16000).astype(np.float32) * 0.1, rng.standard_normal(8000).astype(np.float32) * 0.1]
    batch = extractor(waves, sampling_rate=16000, return_tensors="pt")
    assert batch["input_features"].shape == (2, 101, MELS) and batch["attention_mask"].sum(-1).tolist() == [101, 51]
    assert torch.all(batch["input_features"][1, 51:] == extractor.padding_value)
    real = batch["input_features"][0].numpy()
    np.testing.assert_allclose(real.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(real.std(axis=0), 1.0, atol=1e-3)
    # volume does not matter after the per-utterance normalization
    louder = extractor(waves[0] * 8.0, sampling_rate=16000, return_tensors="np")["input_features"][0]
    np.testing.assert_allclose(louder, real, atol=1e-3)
    single = extractor(waves[1], sampling_rate=16000, return_tensors="pt")
    torch.testing.assert_close(single["input_features"][0], batch["input_features"][1, :51])


def test_feature_extractor_bad_input_errors():
    extractor = LNormSpeechFeatureExtractor(feature_size=MELS)
    audio = np.zeros(1600, dtype=np.float32)
    with pytest.raises(ValueError) as info:
        extractor(audio, sampling_rate=22050)
    assert "22050" in str(info.value) and "16000" in str(info.value)
    with pytest.warns(UserWarning, match="without sampling_rate.*16000"):
        extractor(audio)
    with pytest.raises(ValueError, match="mono"):
        extractor([np.zeros((1600, 2), dtype=np.float32)], sampling_rate=16000)
    with pytest.raises(ValueError, match="int16"):
        extractor(np.zeros(1600, dtype=np.int16), sampling_rate=16000)
    with pytest.raises(ValueError, match="empty"):
        extractor([np.zeros(0, dtype=np.float32)], sampling_rate=16000)


def test_word_tokenizer_and_processor_round_trip(tmp_path):
    tokenizer = build_word_tokenizer(WORDS)
    assert tokenizer("Ace of Clubs").input_ids == [4, 7, 8, 2]  # lower-cased words + </s>
    assert tokenizer("ace of spades").input_ids == [4, 7, 3, 2]  # out of vocabulary -> <unk>
    with pytest.raises(ValueError, match="duplicates"):
        build_word_tokenizer(["ace", "ace"])
    processor = LNormSpeechProcessor(LNormSpeechFeatureExtractor(feature_size=MELS), tokenizer)
    out = processor(audio=[_tone(440.0), _tone(880.0, 0.3)], sampling_rate=16000, text=["ace of clubs", "two"], return_tensors="pt")
    assert out["labels"].tolist() == [[4, 7, 8, 2], [5, 2, -100, -100]]
    assert out["input_features"].shape == (2, 51, MELS)
    with pytest.raises(ValueError, match="44100.*16000"):
        processor(audio=_tone(440.0), sampling_rate=44100)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is LNormSpeechProcessor and type(loaded.feature_extractor) is LNormSpeechFeatureExtractor
    again = loaded(audio=[_tone(440.0), _tone(880.0, 0.3)], sampling_rate=16000, text=["ace of clubs", "two"], return_tensors="pt")
    assert torch.equal(again["labels"], out["labels"]) and torch.equal(again["input_features"], out["input_features"])
    assert loaded.batch_decode([[1, 4, 7, 9, 2, 0]], skip_special_tokens=True) == ["ace of hearts"]
    # 4.57 writes preprocessor_config.json, 5.x folds it into processor_config.json: either way it loads
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is LNormSpeechFeatureExtractor


# --------------------------------------------------------------------------- remote code and Hub


def test_remote_code_and_hub_push_load_without_hf_lnorm(tmp_path):
    torch.manual_seed(0)
    model = LNormSpeechForConditionalGeneration(tiny_speech_config(vocab_size=4 + len(WORDS))).eval()
    processor = LNormSpeechProcessor(LNormSpeechFeatureExtractor(feature_size=MELS), build_word_tokenizer(WORDS))
    audio = [_tone(440.0), _tone(660.0, 0.3)]
    batch = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = {
            "logits": model(**batch, decoder_input_ids=torch.tensor([[1, 4], [1, 5]])).logits,
            "generate": model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False),
        }
    torch.save({"audio": audio, "features": batch["input_features"], "expected": expected}, tmp_path / "expected.pt")
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")

    with HubServer() as server, use_endpoint(server.url):
        model.push_to_hub("tester/tiny-lnorm-speech", training_data="Random weights (test).")
        files = set(server.repos["tester/tiny-lnorm-speech"].files)
        assert {"config.json", "model.safetensors", "modeling_lnorm_speech.py", "modeling_lnorm_seq2seq.py", "layers.py", "README.md"} <= files
        code = BLOCK_HF_LNORM + f"""
import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
data = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=False)
ids = torch.tensor([[1, 4], [1, 5]])
processor = AutoProcessor.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
batch = processor(audio=data["audio"], sampling_rate=16000, return_tensors="pt")
assert torch.equal(batch["input_features"], data["features"])
for source in ({str(tmp_path / "saved")!r}, "tester/tiny-lnorm-speech"):
    model = AutoModelForSpeechSeq2Seq.from_pretrained(source, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, decoder_input_ids=ids).logits, data["expected"]["logits"], atol=1e-5, rtol=1e-5)
        assert torch.equal(model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False), data["expected"]["generate"])
import sys
assert "hf_lnorm" not in sys.modules
print("SPEECH-REMOTE-OK")
"""
        proc = run_python(
            code,
            env_extra={"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home")},
            cwd=str(tmp_path),
        )
    assert "SPEECH-REMOTE-OK" in proc.stdout
    assert "model.safetensors" in server.downloads and "modeling_lnorm_speech.py" in server.downloads


# --------------------------------------------------------------------------- ONNX


def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from hf_lnorm.export import default_method, export, onnx_op_types

    torch.manual_seed(0)
    model = LNormSpeechForConditionalGeneration(tiny_speech_config()).eval()
    optimum = default_method() == "optimum"
    task = "automatic-speech-recognition-with-past" if optimum else None
    result = export(model, tmp_path / "onnx", task=task)
    expected = {"encoder_model.onnx", "decoder_model.onnx"} | ({"decoder_with_past_model.onnx"} if optimum else set())
    assert set(result.onnx_files) == expected
    assert result.task == (task or "automatic-speech-recognition")
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4, result.max_abs_err
    assert onnx_op_types(tmp_path / "onnx" / "encoder_model.onnx")["LayerNormalization"] == 2 * 2 + 1
    if not optimum:
        from hf_lnorm.export import UnsupportedArchitectureError

        with pytest.raises(UnsupportedArchitectureError, match="with-past"):
            export(model, tmp_path / "past", task="automatic-speech-recognition-with-past")


# --------------------------------------------------------------------------- WER and data script


@pytest.mark.parametrize(
    "ref,hyp,edits",
    [
        ("ace of spades", "ace of spades", (0, 0, 0, 3)),
        ("ace of spades", "ace of hearts", (1, 0, 0, 3)),
        ("ace of spades", "ace spades", (0, 1, 0, 3)),
        ("ace spades", "ace of spades", (0, 0, 1, 2)),
        ("two nine three four zero", "nine three four zero oh", (0, 1, 1, 5)),  # one deletion + one insertion beats 5 substitutions
        ("one two", "", (0, 2, 0, 2)),
        ("", "one", (0, 0, 1, 0)),
        ("Ten of Clubs", "ten  of clubs", (0, 0, 0, 3)),
    ],
)
def test_word_edits_hand_checked(ref, hyp, edits):
    assert word_edits(ref, hyp) == edits


def test_corpus_wer_sums_before_dividing():
    refs, hyps = ["ace of spades", "one"], ["ace of hearts", "two three"]
    details = wer_details(refs, hyps)
    assert details["wer"] == pytest.approx(3 / 4) and details["sentence_error_rate"] == 1.0
    assert word_error_rate(["a b c d"], ["a b c d"]) == 0.0
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer_details(refs, hyps[:1])


def test_data_script_grammar_and_resampling():
    import random

    prep = load_script("prepare_speech_data")
    rng = random.Random(0)
    texts = [prep.make_text(rng) for _ in range(300)]
    assert all(set(t.split()) <= set(prep.VOCABULARY) for t in texts)
    assert any(" of " in t for t in texts) and any(t.split()[0] in ("zero", "oh") for t in texts)
    assert prep.HELD_OUT_VOICE not in prep.TRAIN_VOICES
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(22050) / 22050)).astype(np.float32)
    resampled = prep.to_16k(tone, 22050)
    assert len(resampled) == 16000
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(int(spectrum.argmax()) - 1000) <= 1  # 1 s at 16 kHz: bin = Hz
