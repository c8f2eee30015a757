"""hf_lnorm's own families through export: Optimum ONNX config (with past), ORT generate(), fusions."""

import numpy as np
import pytest
import torch

import hf_lnorm  # noqa: F401  (registers the families)
from hf_lnorm.export import METHOD_DYNAMO, METHOD_OPTIMUM, UnsupportedArchitectureError, export, onnx_op_types, optimum_available
from hf_lnorm.export.ort import check_fusions, expected_fusions, optimize_onnx, ort_model_type

models = pytest.importorskip("hf_lnorm.models")

LAYERS = 2


def tiny_lnorm_gpt(norm_type="layernorm"):
    torch.manual_seed(0)
    # a wide init keeps greedy decoding of a random model from collapsing onto one token
    cfg = models.LNormGPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                                max_position_embeddings=64, norm_type=norm_type, initializer_range=0.4)
    return models.LNormGPTForCausalLM(cfg).eval()


def test_lnorm_gpt_exports_with_layernormalization(tmp_path):
    model = tiny_lnorm_gpt()
    result = export(model, tmp_path / "out", task="text-generation")
    ops = onnx_op_types(tmp_path / "out" / "model.onnx")
    assert ops["LayerNormalization"] == 2 * LAYERS + 1
    assert all("::" not in op for op in ops)
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4
    counts = optimize_onnx(tmp_path / "out" / "model.onnx", tmp_path / "fused.onnx", model.config)
    assert ort_model_type("lnorm-gpt") == "gpt2"
    assert counts["SkipLayerNormalization"] >= 2 * LAYERS - 1
    assert check_fusions(counts, expected_fusions("gpt2", LAYERS)) == []


@pytest.mark.skipif(not optimum_available(), reason="ORTModelForCausalLM needs optimum-onnx (transformers 4.57 only)")
def test_lnorm_gpt_with_past_generates_same_tokens_through_ort(tmp_path):
    from optimum.onnxruntime import ORTModelForCausalLM

    model = tiny_lnorm_gpt()
    result = export(model, tmp_path / "out", task="text-generation-with-past")
    assert result.method == METHOD_OPTIMUM
    assert result.max_abs_err < 1e-4
    ort_model = ORTModelForCausalLM.from_pretrained(tmp_path / "out")
    assert ort_model.use_cache
    prompts = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    ours = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12, do_sample=False)
    theirs = ort_model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)
    assert len(set(ours[0, 4:].tolist())) > 1  # a non-degenerate sequence was compared


def test_torch_onnx_path_refuses_past_key_values_clearly(tmp_path):
    with pytest.raises(UnsupportedArchitectureError, match="LNormGPTForCausalLM.*past"):
        export(tiny_lnorm_gpt(), tmp_path / "out", task="text-generation-with-past", method=METHOD_DYNAMO)
    assert not (tmp_path / "out").exists()
