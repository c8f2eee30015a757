"""LNormViT: shapes and loss under every norm flag, Auto classes, save/load, the image processor, bad input,
hf_lnorm.patch, PEFT LoRA under Trainer, remote code without hf_lnorm and the Hub, ONNX export, the training script."""

import json
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
)

import hf_lnorm
from hf_lnorm.models import (
    LNormViTConfig,
    LNormViTForImageClassification,
    LNormViTImageProcessor,
    LNormViTModel,
    layers,
)

from ..hub_server import HubServer, use_endpoint
from ..backend_check import check_default_backend
from .conftest import BLOCK_HF_LNORM, REPO_ROOT, assert_norm_paths_agree, load_script, run_python

B, SIZE, PATCH, LAYERS = 3, 8, 2, 2
TOKENS = 1 + (SIZE // PATCH) ** 2


def tiny_vit_config(**overrides) -> LNormViTConfig:
    """A 2-layer, 32-wide LNormViT on 8x8 grayscale images (patch 2: 16 patches + class token), dropout off."""
    values = dict(
        image_size=SIZE, patch_size=PATCH, num_channels=1, hidden_size=32, num_hidden_layers=LAYERS,
        num_attention_heads=4, dropout=0.0, attention_dropout=0.0, num_labels=10,
    )
    values.update(overrides)
    return LNormViTConfig(**values)


def _pixels(channels=1, seed=0, batch=B):
    return torch.randn(batch, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _digits(n=6):
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[:n], digits.target[:n]


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(norm_position="post"), dict(norm_type="rmsnorm"), dict(norm_type="none"), dict(pooling="mean", num_channels=3)],
    ids=["pre-ln", "post-ln", "rmsnorm", "no-norm", "mean-pool-rgb"],
)
def test_shapes_loss_pooling_and_norm_flags(overrides):
    config = tiny_vit_config(**overrides)
    model = LNormViTForImageClassification(config).eval()
    pixels = _pixels(config.num_channels)
    labels = torch.tensor([0, 3, 9])
    out = model(pixels, labels=labels, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (B, 10)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert len(out.hidden_states) == LAYERS + 1 and out.hidden_states[0].shape == (B, TOKENS, 32)
    assert out.attentions[0].shape == (B, 4, TOKENS, TOKENS)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(B, 4, TOKENS))

    base = model.vit(pixels)
    assert base.last_hidden_state.shape == (B, TOKENS, 32) and base.pooler_output.shape == (B, 32)
    pooled = base.last_hidden_state[:, 0] if config.pooling == "cls" else base.last_hidden_state[:, 1:].mean(1)
    torch.testing.assert_close(base.pooler_output, pooled)
    torch.testing.assert_close(model.classifier(base.pooler_output), out.logits)

    norm_class = {"layernorm": layers.LNormLayerNorm, "rmsnorm": layers.LNormRMSNorm, "none": None}[config.norm_type]
    norms = [m for m in model.modules() if isinstance(m, (layers.LNormLayerNorm, layers.LNormRMSNorm))]
    expected = 0 if norm_class is None else 2 * LAYERS + (1 if config.norm_position == "pre" else 0)
    assert len(norms) == expected and all(type(m) is norm_class for m in norms)
    # the tuple form carries the same tensors
    as_tuple = model(pixels, labels=labels, return_dict=False)
    torch.testing.assert_close(as_tuple[1], out.logits)


def test_images_are_read_patch_by_patch_with_positions():
    """Changing one pixel changes only that patch's embedding (plus nothing else); positions tell patches apart."""
    model = LNormViTModel(tiny_vit_config()).eval()
    pixels = _pixels(batch=1)
    tokens = model.embeddings(pixels)
    changed = pixels.clone()
    changed[0, 0, 5, 6] += 1.0  # patch row 2, column 3 -> patch index 2 * 4 + 3 = 11, token 12
    diff = (model.embeddings(changed) - tokens).abs().sum(-1)[0]
    assert diff[12] > 0 and torch.count_nonzero(diff) == 1
    same = torch.zeros(1, 1, SIZE, SIZE)  # every patch identical: only the positions tell the tokens apart
    with_positions = model.embeddings(same)[0, 1:]
    assert not torch.allclose(with_positions, with_positions[:1].expand(TOKENS - 1, -1))
    with torch.no_grad():
        model.embeddings.position_embeddings.zero_()
        model.embeddings.cls_token.zero_()
    assert torch.allclose(model.embeddings(same)[0, 1:], model.embeddings(same)[0, 1:2].expand(TOKENS - 1, -1))


def test_auto_classes_and_save_load_round_trip(tmp_path):
    config = AutoConfig.for_model(
        "lnorm-vit", image_size=SIZE, patch_size=PATCH, num_channels=1, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4, num_labels=10
    )
    assert isinstance(config, LNormViTConfig)
    assert type(AutoModel.from_config(config)).__name__ == "LNormViTModel"
    model = AutoModelForImageClassification.from_config(config).eval()
    assert type(model) is LNormViTForImageClassification
    pixels = _pixels()
    with torch.no_grad():
        logits = model(pixels).logits
        pooled = model.vit(pixels).pooler_output
    model.save_pretrained(tmp_path / "cls")
    files = set(os.listdir(tmp_path / "cls"))
    assert {"model.safetensors", "config.json", "configuration_lnorm_vit.py", "modeling_lnorm_vit.py", "layers.py", "README.md"} <= files
    assert not any(f.endswith(".bin") for f in files)
    saved = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert saved["model_type"] == "lnorm-vit" and saved["auto_map"]["AutoModelForImageClassification"].endswith("LNormViTForImageClassification")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "cls").eval()
    encoder = AutoModel.from_pretrained(tmp_path / "cls").eval()  # the backbone of a classification checkpoint
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, logits)
        torch.testing.assert_close(encoder(pixels).pooler_output, pooled)
    assert "pipeline_tag: image-classification" in (tmp_path / "cls" / "README.md").read_text()


def test_gradient_checkpointing_gives_the_same_gradients():
    pixels, labels = _pixels(), torch.tensor([1, 2, 3])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LNormViTForImageClassification(tiny_vit_config()).train()
        if checkpointing:  # transformers 5.x renamed it (the old name warns)
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
            assert all(block.gradient_checkpointing for block in model.vit.layers)
        model(pixels, labels=labels).loss.backward()
        grads.append(model.vit.embeddings.patch_embed.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# --------------------------------------------------------------------------- image processor


def test_processor_rescales_normalizes_and_reads_every_layout():
    images, _ = _digits()
    processor = LNormViTImageProcessor(size=8, num_channels=1, rescale_factor=1 / 16)
    pixels = processor(images[:, None], return_tensors="pt").pixel_values
    assert pixels.shape == (6, 1, 8, 8) and pixels.dtype == torch.float32
    expected = (torch.tensor(images, dtype=torch.float32)[:, None] / 16 - 0.5) / 0.5
    torch.testing.assert_close(pixels, expected)
    # (H, W) images in a list, channels-last arrays and torch tensors give the same values
    torch.testing.assert_close(processor(list(images), return_tensors="pt").pixel_values, pixels)
    torch.testing.assert_close(processor(images[..., None], return_tensors="pt").pixel_values, pixels)
    torch.testing.assert_close(processor(torch.tensor(images)[:, None], return_tensors="pt").pixel_values, pixels)
    as_np = processor(images[0], return_tensors="np").pixel_values
    assert isinstance(as_np, np.ndarray) and as_np.shape == (1, 1, 8, 8)
    as_list = processor(images[:2, None]).pixel_values  # no return_tensors: one array per image
    assert isinstance(as_list, list) and len(as_list) == 2
    torch.testing.assert_close(torch.as_tensor(np.stack(as_list)), pixels[:2])
    last = processor(images[:2, None], return_tensors="np", data_format="channels_last").pixel_values
    assert last.shape == (2, 8, 8, 1)


def test_processor_resizes_with_torch_interpolation_and_per_channel_stats():
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 12, 10, 3)).astype(np.uint8)  # channels last
    processor = LNormViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.25, 0.125])
    pixels = processor(rgb, return_tensors="pt").pixel_values
    assert pixels.shape == (2, 3, 16, 16)
    up = F.interpolate(torch.tensor(rgb, dtype=torch.float32).permute(0, 3, 1, 2), size=(16, 16), mode="bilinear", align_corners=False)
    mean, std = torch.tensor([0.1, 0.2, 0.3])[:, None, None], torch.tensor([0.5, 0.25, 0.125])[:, None, None]
    torch.testing.assert_close(pixels, (up / 255 - mean) / std, atol=1e-5, rtol=1e-5)
    small = processor(rgb, size=4, do_normalize=False, return_tensors="pt").pixel_values  # per-call override
    assert small.shape == (2, 3, 4, 4) and 0 <= float(small.min()) and float(small.max()) <= 1


def test_processor_accepts_pil_images():
    Image = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    processor = LNormViTImageProcessor(size=8)
    from_pil = processor(Image.fromarray(rgb), return_tensors="pt").pixel_values
    torch.testing.assert_close(from_pil, processor(rgb, return_tensors="pt").pixel_values)
    with pytest.raises(ValueError, match=r"PIL mode 'L'.*num_channels=3"):
        processor(Image.fromarray(rgb).convert("L"))


def test_processor_save_load_and_auto_image_processor(tmp_path):
    processor = LNormViTImageProcessor(size=8, num_channels=1, rescale_factor=1 / 16, resample="nearest")
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "LNormViTImageProcessor"
    assert saved["auto_map"]["AutoImageProcessor"] == "processing_lnorm_vit.LNormViTImageProcessor"
    assert (tmp_path / "processing_lnorm_vit.py").exists()
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is LNormViTImageProcessor
    assert (loaded.size, loaded.num_channels, loaded.resample, loaded.rescale_factor) == ({"height": 8, "width": 8}, 1, "nearest", 1 / 16)
    images, _ = _digits(3)
    torch.testing.assert_close(loaded(images[:, None], return_tensors="pt").pixel_values, processor(images[:, None], return_tensors="pt").pixel_values)


# --------------------------------------------------------------------------- bad input


def test_wrong_channel_count_is_a_clear_error():
    processor = LNormViTImageProcessor(size=8, num_channels=1)
    with pytest.raises(ValueError, match=r"shape \(8, 8, 3\) has 3 channel\(s\).*expects num_channels=1"):
        processor(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"shape \(3, 8, 8\) has 3 channel\(s\).*expects num_channels=1"):
        processor([np.zeros((8, 8)), np.zeros((3, 8, 8))])
    with pytest.raises(ValueError, match=r"shape \(8, 8\) has 1 channel\(s\).*expects num_channels=3"):
        LNormViTImageProcessor(size=8)(np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"cannot tell the channel axis.*\(5, 8, 8\)|\(5, 8, 8\) has 5 channel"):
        processor(np.zeros((5, 8, 8)))

    model = LNormViTForImageClassification(tiny_vit_config())
    with pytest.raises(ValueError, match=r"pixel_values has 3 channels \(shape \(2, 3, 8, 8\)\).*num_channels=1"):
        model(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"height x width 16 x 16.*image_size=8"):
        model(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"must be 4-D.*got shape \(1, 8, 8\)"):
        model(torch.zeros(1, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="image_size=10 is not divisible by patch_size=4"):
        LNormViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="norm_type='batchnorm'.*'layernorm'"):
        tiny_vit_config(norm_type="batchnorm")
    with pytest.raises(ValueError, match="pooling='max'.*'cls', 'mean'"):
        tiny_vit_config(pooling="max")
    with pytest.raises(ValueError, match="num_channels=0"):
        tiny_vit_config(num_channels=0)
    with pytest.raises(ValueError, match="resample='lanczos'.*'bilinear'"):
        LNormViTImageProcessor(resample="lanczos")
    with pytest.raises(ValueError, match=r"image_mean=\[0.5, 0.5\] has 2 values; num_channels=3"):
        LNormViTImageProcessor(image_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="return_tensors='tf'"):
        LNormViTImageProcessor()(np.zeros((8, 8, 3)), return_tensors="tf")
    with pytest.raises(TypeError, match="expected a PIL image, numpy array or torch tensor, got str"):
        LNormViTImageProcessor()(["cat.png"])


# --------------------------------------------------------------------------- patching, LoRA


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_hf_lnorm_patch_is_exact(norm_type):
    model = LNormViTForImageClassification(tiny_vit_config(norm_type=norm_type)).eval()
    pixels = _pixels()
    before = model(pixels).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    norms = [n for n, m in model.named_modules() if isinstance(m, (layers.LNormLayerNorm, layers.LNormRMSNorm))]
    assert sorted(r.name for r in report.patched) == sorted(norms) and len(norms) == 2 * LAYERS + 1
    assert not report.skipped
    for mode, out in check_default_backend(lambda: model(pixels).logits, len(norms), where=f"patched {norm_type}").items():
        torch.testing.assert_close(out, before, atol=1e-6, rtol=1e-6, msg=lambda m: f"{mode}: {m}")
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    hf_lnorm.unpatch(model)
    assert not any("forward" in m.__dict__ for _, m in model.named_modules())
    torch.testing.assert_close(model(pixels).logits, before)


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_fused_and_plain_norm_paths_agree(monkeypatch, norm_type):
    model = LNormViTForImageClassification(tiny_vit_config(norm_type=norm_type)).eval()
    pixels = _pixels()
    assert_norm_paths_agree(monkeypatch, model, lambda: model(pixels).logits, where=f"LNormViT {norm_type}")


def _trainer_args(tmp_path, steps, lr):
    return TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=steps, learning_rate=lr, per_device_train_batch_size=16,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0,
    )


def test_lora_on_attention_trains_under_trainer_and_changes_only_lora_weights(tmp_path):
    peft = pytest.importorskip("peft")
    images, labels = _digits(64)
    processor = LNormViTImageProcessor(size=8, num_channels=1, rescale_factor=1 / 16)
    pixels = processor(images[:, None], return_tensors="pt").pixel_values
    rows = [{"pixel_values": p, "labels": torch.tensor(int(y))} for p, y in zip(pixels, labels)]
    torch.manual_seed(0)
    base = LNormViTForImageClassification(tiny_vit_config())
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "out_proj"], lora_dropout=0.0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert sum("qkv_proj" in n for n in trainable) == 2 * LAYERS and sum("out_proj" in n for n in trainable) == 2 * LAYERS
    trainer = Trainer(model=model, args=_trainer_args(tmp_path, 6, 1e-2), train_dataset=rows)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 6 and all(np.isfinite(losses))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == trainable, (sorted(changed - trainable), sorted(trainable - changed))
    merged = model.merge_and_unload()  # LoRA folds back into a plain LNormViT
    assert type(merged) is LNormViTForImageClassification


# --------------------------------------------------------------------------- remote code, Hub


def test_remote_code_and_hub_load_without_hf_lnorm(tmp_path):
    torch.manual_seed(0)
    model = LNormViTForImageClassification(tiny_vit_config(norm_type="rmsnorm", pooling="mean")).eval()
    processor = LNormViTImageProcessor(size=8, num_channels=1, rescale_factor=1 / 16)
    images, _ = _digits(4)
    pixels = processor(images[:, None], return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = {"logits": model(pixels).logits, "pooled": model.vit(pixels).pooler_output}
    model.save_pretrained(tmp_path / "vit")
    processor.save_pretrained(tmp_path / "vit")
    np.save(tmp_path / "images.npy", images)
    torch.save({"pixels": pixels, **expected}, tmp_path / "expected.pt")

    with HubServer() as server, use_endpoint(server.url):
        commit = model.push_to_hub("tester/tiny-lnorm-vit", tokenizer=processor, training_data="Four digits (test).")
        repo = server.repos["tester/tiny-lnorm-vit"]
        assert commit.oid == repo.sha
        assert {"config.json", "model.safetensors", "modeling_lnorm_vit.py", "configuration_lnorm_vit.py", "layers.py",
                "remote_code.py", "README.md", "preprocessor_config.json", "processing_lnorm_vit.py"} <= set(repo.files)
        assert "Four digits (test)." in repo.files["README.md"].decode()

        code = BLOCK_HF_LNORM + f"""
import numpy as np, torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification
root = {str(tmp_path)!r}
data = torch.load(root + "/expected.pt")
images = np.load(root + "/images.npy")
for source in (root + "/vit", "tester/tiny-lnorm-vit"):
    processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=True)
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    pixels = processor(images[:, None], return_tensors="pt").pixel_values
    torch.testing.assert_close(pixels, data["pixels"], atol=0, rtol=0)
    model = AutoModelForImageClassification.from_pretrained(source, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    encoder = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
    assert type(encoder).__name__ == "LNormViTModel"
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, data["logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(encoder(pixels).pooler_output, data["pooled"], atol=1e-5, rtol=1e-5)
    try:
        processor(np.zeros((8, 8, 3)))
    except ValueError as exc:
        assert "num_channels=1" in str(exc), exc
    else:
        raise SystemExit("a 3-channel image was accepted")
import sys
assert "hf_lnorm" not in sys.modules
print("VIT-REMOTE-OK")
"""
        proc = run_python(
            code,
            env_extra={"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home")},
            cwd=str(tmp_path),
        )
        assert "VIT-REMOTE-OK" in proc.stdout
        assert "model.safetensors" in server.downloads and "processing_lnorm_vit.py" in server.downloads


# --------------------------------------------------------------------------- export


def test_export_matches_onnx_runtime(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from hf_lnorm.cli import main
    from hf_lnorm.export import default_method, export, onnx_op_types

    torch.manual_seed(0)
    # `hf-lnorm export` on a saved classifier: patched on load, checked against ONNX Runtime, processor copied
    LNormViTForImageClassification(tiny_vit_config()).save_pretrained(tmp_path / "saved")
    LNormViTImageProcessor(size=8, num_channels=1).save_pretrained(tmp_path / "saved")
    assert main(["export", str(tmp_path / "saved"), str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    err = float(re.search(r"max \|err\| (\S+)", printed).group(1))
    assert err < 1e-4, printed
    assert ("export path: Optimum ONNX exporter" in printed) == (default_method() == "optimum")
    ops = onnx_op_types(tmp_path / "cli" / "model.onnx")
    assert ops["LayerNormalization"] == 2 * LAYERS + 1 and ops["Conv"] == 1 and all("::" not in op for op in ops)
    assert (tmp_path / "cli" / "preprocessor_config.json").exists()

    # the encoder alone (what other families use as their vision branch), patched in memory
    encoder = hf_lnorm.patch(LNormViTModel(tiny_vit_config(norm_type="rmsnorm")).eval())
    result = export(encoder, tmp_path / "features", task="feature-extraction")
    assert result.method == default_method() and result.onnx_files == ["model.onnx"]
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4


# --------------------------------------------------------------------------- training script


def test_digits_split_is_fixed_stratified_and_disjoint():
    script = load_script("train_vit")
    images, labels, train_idx, test_idx = script.digits_split(0.2, 0)
    again = script.digits_split(0.2, 0)
    assert np.array_equal(train_idx, again[2]) and np.array_equal(test_idx, again[3])
    assert len(test_idx) == 360 and not set(train_idx) & set(test_idx) and len(train_idx) + len(test_idx) == len(labels)
    test_counts = np.bincount(labels[test_idx], minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # stratified: ~20% of each class
    with open(os.path.join(REPO_ROOT, "configs", "vit_digits.json")) as handle:
        recipe = json.load(handle)
    assert recipe["model"]["image_size"] == recipe["processor"]["size"] == 8


def test_training_script_runs_and_saves_a_loadable_model(tmp_path):
    script = load_script("train_vit")
    out = tmp_path / "vit"
    recipe = os.path.join(REPO_ROOT, "configs", "vit_digits.json")
    assert script.main([recipe, "--max-steps", "3", "--output-dir", str(out)]) == 0
    results = json.loads((out / "train_results.json").read_text())
    assert results["steps"] == 3 and results["test_images"] == 360 and 0.0 <= results["test_accuracy"] <= 1.0
    split = json.loads((out / "split.json").read_text())
    assert len(split["test_indices"]) == 360
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    images, labels = _digits(8)
    logits = model(**processor(images[:, None], return_tensors="pt")).logits
    assert logits.shape == (8, 10)
    # the reported accuracy is the saved model's on the saved test split
    from sklearn.datasets import load_digits

    digits = load_digits()
    test_idx = np.array(split["test_indices"])
    with torch.no_grad():
        pred = model(**processor(digits.images[test_idx][:, None], return_tensors="pt")).logits.argmax(-1).numpy()
    assert float((pred == digits.target[test_idx]).mean()) == pytest.approx(results["test_accuracy"], abs=1e-9)
    assert not (tmp_path / "vit.partial").exists()
    assert script.main([recipe, "--norm-type", "batchnorm", "--output-dir", str(tmp_path / "bad")]) == 2
