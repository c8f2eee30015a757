"""LNormVisionText: shapes, losses, masking, modality norms, save/load, processor, bad input, patch, Trainer,
remote code without hf_lnorm, Hub push and ONNX export (tiny configs: width 32, 1-2 layers, 16x16 images)."""

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor, Trainer, TrainingArguments

import hf_lnorm
from hf_lnorm.models import (
    LNormViTConfig,
    LNormViTImageProcessor,
    LNormVisionTextConfig,
    LNormVisionTextForClassification,
    LNormVisionTextModel,
    LNormVisionTextProcessor,
    layers,
    train_question_tokenizer,
)

from ..hub_server import HubServer, use_endpoint
from ..backend_check import check_default_backend
from .conftest import BLOCK_HF_LNORM, assert_norm_paths_agree, run_python

QUESTIONS = ["what color is the shape?", "is there a circle?", "does the image contain a red triangle?", "what is the blue shape?"]
IMAGE = 16
PATCHES = (IMAGE // 4) ** 2


def tiny_config(**overrides) -> LNormVisionTextConfig:
    values = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_labels=5,
        vision_config=dict(image_size=IMAGE, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=4),
        text_config=dict(vocab_size=40, max_position_embeddings=12, hidden_size=24, num_hidden_layers=1, num_attention_heads=4),
    )
    values.update(overrides)
    return LNormVisionTextConfig(**values)


def _inputs(batch=3, length=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 40, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, length - 3 :] = 0
    return {"pixel_values": torch.randn(batch, 3, IMAGE, IMAGE, generator=gen), "input_ids": ids, "attention_mask": mask}


def _processor(size=IMAGE):
    return LNormVisionTextProcessor(LNormViTImageProcessor(size=size), train_question_tokenizer(QUESTIONS, max_length=12))


@pytest.mark.parametrize("norm_type,norm_position", [("layernorm", "pre"), ("rmsnorm", "pre"), ("none", "pre"), ("layernorm", "post")])
def test_shapes_loss_and_norm_flags(norm_type, norm_position):
    torch.manual_seed(0)
    model = LNormVisionTextForClassification(tiny_config(norm_type=norm_type, norm_position=norm_position))
    # one flag reaches every stack: vision, text, fusion (sub-configs not given explicitly inherit it)
    assert model.config.vision_config.norm_type == model.config.text_config.norm_type == norm_type
    norm_cls = {"layernorm": layers.LNormLayerNorm, "rmsnorm": layers.LNormRMSNorm, "none": layers.Passthrough}[norm_type]
    assert type(model.vision_text.vision_norm) is norm_cls and type(model.vision_text.text_norm) is norm_cls
    inputs = _inputs()
    out = model(**inputs, labels=torch.tensor([0, 3, 4]), output_hidden_states=True)
    assert out.logits.shape == (3, 5)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    fused_len = 1 + (1 + PATCHES) + 7  # fusion CLS + image tokens (class token first) + question
    assert len(out.hidden_states) == 2 + 1 and out.hidden_states[-1].shape == (3, fused_len, 32)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert grads["vision_text.vision_encoder.embeddings.patch_embed.weight"].abs().sum() > 0
    assert grads["vision_text.text_encoder.embed_tokens.weight"].abs().sum() > 0


def test_text_padding_is_masked_and_tuple_outputs_match():
    torch.manual_seed(0)
    model = LNormVisionTextForClassification(tiny_config()).eval()
    inputs = _inputs()
    with torch.no_grad():
        batched = model(**inputs).logits
        alone = model(pixel_values=inputs["pixel_values"][-1:], input_ids=inputs["input_ids"][-1:, :4]).logits
        changed = dict(inputs, input_ids=inputs["input_ids"].clone())
        changed["input_ids"][-1, 4:] = 39  # other ids at padded positions
        repadded = model(**changed).logits
        as_tuple = model(**inputs, return_dict=False)[0]
    torch.testing.assert_close(batched[-1:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(repadded, batched)
    torch.testing.assert_close(as_tuple, batched)
    # the image matters too: another image changes the answer logits
    with torch.no_grad():
        other = model(**dict(inputs, pixel_values=torch.randn(3, 3, IMAGE, IMAGE))).logits
    assert (other - batched).abs().max() > 1e-4


def test_modality_norms_balance_the_scales():
    """Each modality's projected tokens are normalized by its own LayerNorm: whatever the encoder's scale,
    the fusion sees zero-mean unit-variance tokens (without the norms, a 100x larger image dominates)."""
    torch.manual_seed(0)
    captured = {}
    for norm_type in ("layernorm", "none"):
        model = LNormVisionTextModel(tiny_config(norm_type=norm_type)).eval()
        with torch.no_grad():
            model.vision_projection.weight.mul_(100.0)
        hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: captured.__setitem__((norm_type, name), o))
                 for name in ("vision_norm", "text_norm")]
        with torch.no_grad():
            model(**_inputs())
        for hook in hooks:
            hook.remove()
    for name in ("vision_norm", "text_norm"):
        normed = captured[("layernorm", name)]
        torch.testing.assert_close(normed.mean(-1), torch.zeros(normed.shape[:-1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(normed.std(-1, unbiased=False), torch.ones(normed.shape[:-1]), atol=1e-3, rtol=0)
    raw_ratio = captured[("none", "vision_norm")].std() / captured[("none", "text_norm")].std()
    assert raw_ratio > 20, raw_ratio


def test_config_and_model_round_trip_with_auto_classes(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(norm_type="rmsnorm", vision_config=dict(image_size=IMAGE, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                                                  num_attention_heads=4, norm_type="layernorm", pooling="mean"))
    model = LNormVisionTextForClassification(config).eval()
    inputs = _inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model_type"] == "lnorm-vision-text" and saved["auto_map"]["AutoModelForVisualQuestionAnswering"].endswith(
        "LNormVisionTextForClassification")
    loaded_config = AutoConfig.from_pretrained(tmp_path / "m")
    assert isinstance(loaded_config.vision_config, LNormViTConfig)
    assert loaded_config.norm_type == "rmsnorm" and loaded_config.vision_config.norm_type == "layernorm"
    assert loaded_config.vision_config.image_size == IMAGE and loaded_config.text_config.hidden_size == 24
    loaded = AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is LNormVisionTextForClassification
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected)
    base = AutoModel.from_pretrained(tmp_path / "m").eval()
    assert type(base) is LNormVisionTextModel
    with torch.no_grad():
        torch.testing.assert_close(base(**inputs).pooler_output, model.vision_text(**inputs).pooler_output)


def test_processor_encodes_saves_and_loads(tmp_path):
    processor = _processor()
    tok = processor.tokenizer
    assert tok.pad_token_id == 0 and tok.convert_tokens_to_ids("[UNK]") == 1
    assert tok("what is the zebra?").input_ids[3] == 1  # an unseen word is [UNK]
    images = [np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    batch = processor(images=images, text=["is there a circle?", "what color is the shape?"])
    assert batch["pixel_values"].shape == (2, 3, IMAGE, IMAGE)
    assert batch["input_ids"].shape == (2, 6) and batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert float(batch["pixel_values"].min()) >= -1 and float(batch["pixel_values"].max()) <= 1
    processor.save_pretrained(tmp_path / "p")
    loaded = AutoProcessor.from_pretrained(tmp_path / "p")
    assert type(loaded) is LNormVisionTextProcessor
    again = loaded(images=images, text=["is there a circle?", "what color is the shape?"])
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    model = LNormVisionTextForClassification(tiny_config(text_config=dict(vocab_size=len(tok), max_position_embeddings=12,
                                                                          hidden_size=32, num_attention_heads=4)))
    assert model(**batch).logits.shape == (2, 5)


def test_bad_inputs_give_clear_errors():
    model = LNormVisionTextForClassification(tiny_config()).eval()
    inputs = _inputs()
    with pytest.raises(ValueError, match=r"has 1 channels.*expects num_channels=3"):
        model(**dict(inputs, pixel_values=torch.randn(3, 1, IMAGE, IMAGE)))
    with pytest.raises(ValueError, match=r"image_size=16"):
        model(**dict(inputs, pixel_values=torch.randn(3, 3, 20, 20)))
    with pytest.raises(ValueError, match="missing: input_ids"):
        model(pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="batch size 2 but input_ids has 3"):
        model(**dict(inputs, pixel_values=inputs["pixel_values"][:2]))
    with pytest.raises(ValueError, match="13 tokens is longer than text_config.max_position_embeddings=12"):
        model(**dict(inputs, input_ids=torch.ones(3, 13, dtype=torch.long), attention_mask=None))
    processor = _processor()
    with pytest.raises(ValueError, match=r"shape \(64, 64, 4\) has 4 channel.*num_channels=3"):
        processor(images=np.zeros((64, 64, 4), np.uint8), text="is there a circle?")
    with pytest.raises(ValueError, match=r"has 1 channel.*num_channels=3"):
        processor(images=np.zeros((64, 64), np.uint8), text="is there a circle?")
    with pytest.raises(ValueError, match="2 image.*1 question"):
        processor(images=np.zeros((2, 64, 64, 3), np.uint8), text="is there a circle?")
    with pytest.raises(ValueError, match="norm_type='batchnorm'.*'layernorm'"):
        tiny_config(norm_type="batchnorm")
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_attention_heads=4"):
        tiny_config(hidden_size=30)


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_hf_lnorm_patch_is_exact_and_unpatch_restores(norm_type):
    torch.manual_seed(0)
    model = LNormVisionTextForClassification(tiny_config(norm_type=norm_type)).eval()
    inputs = _inputs()
    with torch.no_grad():
        before = model(**inputs).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    norms = sorted(n for n, m in model.named_modules() if isinstance(m, (layers.LNormLayerNorm, layers.LNormRMSNorm)))
    # vision 1 block (2) + final 1, text 1 block (2) + final 1, fusion 2 blocks (4) + final 1, two modality norms
    assert len(norms) == 3 + 3 + 5 + 2
    assert sorted(r.name for r in report.patched) == norms and not report.skipped
    for mode, out in check_default_backend(lambda: model(**inputs).logits, len(norms), where=f"patched {norm_type}").items():
        torch.testing.assert_close(out, before, atol=1e-6, rtol=1e-6, msg=lambda m: f"{mode}: {m}")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    hf_lnorm.unpatch(model)
    assert not any("forward" in m.__dict__ for _, m in model.named_modules())
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before)


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_fused_and_plain_norm_paths_agree(monkeypatch, norm_type):
    torch.manual_seed(0)
    model = LNormVisionTextForClassification(tiny_config(norm_type=norm_type)).eval()
    inputs = _inputs()
    assert_norm_paths_agree(monkeypatch, model, lambda: model(**inputs).logits, where=f"LNormVisionText {norm_type}")


def test_trainer_learns_a_visual_answer(tmp_path):
    """Trainer on a task that needs the image: the answer is the image's dominant color channel."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(192):
        color = i % 3
        pixels = torch.rand(3, IMAGE, IMAGE, generator=gen) * 0.2 - 0.5
        pixels[color] += 1.0
        rows.append({"pixel_values": pixels, "input_ids": torch.tensor([5, 6, 7, 8]), "attention_mask": torch.ones(4, dtype=torch.long),
                     "labels": torch.tensor(color)})
    torch.manual_seed(0)
    model = LNormVisionTextForClassification(tiny_config(num_labels=3))
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=30, learning_rate=3e-3, per_device_train_batch_size=32,
                             logging_steps=10, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows[:160], eval_dataset=rows[160:])
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    predictions = trainer.predict(rows[160:])
    accuracy = (predictions.predictions.argmax(-1) == predictions.label_ids).mean()
    assert after < before - 0.5 and accuracy > 0.9, (before, after, accuracy)


def test_remote_code_loads_model_and_processor_without_hf_lnorm(tmp_path):
    torch.manual_seed(0)
    processor = _processor()
    config = tiny_config(text_config=dict(vocab_size=len(processor.tokenizer), max_position_embeddings=12, hidden_size=32, num_attention_heads=4))
    model = LNormVisionTextForClassification(config).eval()
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    assert {"modeling_lnorm_vision_text.py", "modeling_lnorm_vit.py", "configuration_lnorm_vit.py", "layers.py",
            "processing_lnorm_vision_text.py", "processing_lnorm_vit.py"} <= set(os.listdir(tmp_path / "m"))
    image = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", image)
    with torch.no_grad():
        expected = model(**processor(images=image, text=["is there a circle?", "what is the blue shape?"])).logits
    torch.save(expected, tmp_path / "expected.pt")
    code = BLOCK_HF_LNORM + f"""
import numpy as np, torch
from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor
root = {str(tmp_path)!r}
processor = AutoProcessor.from_pretrained(root + "/m", trust_remote_code=True)
model = AutoModelForVisualQuestionAnswering.from_pretrained(root + "/m", trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules") and type(processor).__module__.startswith("transformers_modules")
batch = processor(images=np.load(root + "/images.npy"), text=["is there a circle?", "what is the blue shape?"])
with torch.no_grad():
    torch.testing.assert_close(model(**batch).logits, torch.load(root + "/expected.pt"), atol=1e-5, rtol=1e-5)
assert type(AutoModel.from_pretrained(root + "/m", trust_remote_code=True)).__name__ == "LNormVisionTextModel"
try:
    processor(images=np.zeros((64, 64, 4), np.uint8), text="is there a circle?")
except ValueError as exc:
    assert "num_channels=3" in str(exc), exc
else:
    raise SystemExit("a 4-channel image was accepted")
print("VISION-TEXT-REMOTE-OK")
"""
    proc = run_python(code, env_extra={"HF_HOME": str(tmp_path / "hf_home")}, cwd=str(tmp_path))
    assert "VISION-TEXT-REMOTE-OK" in proc.stdout


def test_push_to_local_hub_and_load_by_repo_id(tmp_path):
    torch.manual_seed(0)
    model = LNormVisionTextForClassification(tiny_config()).eval()
    inputs = _inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
    torch.save({"inputs": inputs, "logits": expected}, tmp_path / "expected.pt")
    with HubServer() as server, use_endpoint(server.url):
        model.push_to_hub("tester/tiny-lnorm-vision-text", training_data="Random tensors (test).")
        files = set(server.repos["tester/tiny-lnorm-vision-text"].files)
        assert {"config.json", "model.safetensors", "modeling_lnorm_vision_text.py", "modeling_lnorm_vit.py", "README.md"} <= files
        card = server.repos["tester/tiny-lnorm-vision-text"].files["README.md"].decode()
        assert "AutoModelForVisualQuestionAnswering" in card and "Random tensors (test)." in card
        code = BLOCK_HF_LNORM + f"""
import torch
from transformers import AutoModelForVisualQuestionAnswering
data = torch.load({str(tmp_path / "expected.pt")!r})
model = AutoModelForVisualQuestionAnswering.from_pretrained("tester/tiny-lnorm-vision-text", trust_remote_code=True).eval()
with torch.no_grad():
    torch.testing.assert_close(model(**data["inputs"]).logits, data["logits"], atol=1e-5, rtol=1e-5)
print("HUB-LOAD-OK", type(model).__module__)
"""
        proc = run_python(code, env_extra={"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                                           "HF_HOME": str(tmp_path / "hf_home")})
        assert "HUB-LOAD-OK transformers_modules" in proc.stdout, proc.stdout


def test_onnx_export_matches_pytorch(tmp_path):
    from hf_lnorm.export import METHOD_OPTIMUM, default_method, export, onnx_op_types, verify_onnx

    torch.manual_seed(0)
    model = LNormVisionTextForClassification(tiny_config(vision_config=dict(image_size=IMAGE, patch_size=8, hidden_size=32,
                                                                            num_hidden_layers=1, num_attention_heads=4))).eval()
    result = export(model, tmp_path / "onnx")
    assert result.method == default_method() and result.task == "visual-question-answering"
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4
    onnx_path = tmp_path / "onnx" / "model.onnx"
    assert onnx_op_types(onnx_path)["LayerNormalization"] == 3 + 3 + 5 + 2
    import onnxruntime as ort

    names = [i.name for i in ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()]
    assert sorted(names) == ["attention_mask", "input_ids", "pixel_values"]
    # other batch and question lengths than the export's, with padding
    for batch, length in ((1, 3), (5, 12)):
        inputs = _inputs(batch=batch, length=length, seed=batch)
        assert verify_onnx(model, onnx_path, "visual-question-answering", inputs) < 1e-4
    if result.method == METHOD_OPTIMUM:
        assert "Optimum" in result.notes[0]
