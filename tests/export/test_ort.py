"""ONNX Runtime fusions (fused-op counts), dynamic int8 and static QDQ int8 on an exported patched BERT."""

import numpy as np
import pytest
import transformers

import hf_lnorm
from hf_lnorm.export import METHOD_OPTIMUM, dummy_inputs, export, onnx_op_types
from hf_lnorm.export.ort import (
    check_fusions,
    expected_fusions,
    optimize_onnx,
    ort_model_type,
    quantize_dynamic_int8,
    quantize_static_int8,
    session,
)

LAYERS = 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    model = hf_lnorm.patch(transformers.BertForQuestionAnswering(cfg).eval())
    out = tmp_path_factory.mktemp("ort") / "onnx"
    result = export(model, out, task="question-answering")
    return model, out / "model.onnx", result.method


def _feed(model, batch=2, seq=12, seed=0):
    return {k: v.numpy() for k, v in dummy_inputs(model, "question-answering", batch=batch, seq=seq, seed=seed).items()}


def test_bert_fusions_are_counted(exported, tmp_path):
    model, path, method = exported
    counts = optimize_onnx(path, tmp_path / "fused.onnx", model.config)
    # ORT's attention patterns match the TorchScript (Optimum) graph; the dynamo graph
    # of transformers 5.x keeps attention unfused (norm and GELU fusions still apply)
    optimum_graph = method == METHOD_OPTIMUM
    assert counts["Attention"] == (LAYERS if optimum_graph else 0)
    assert counts["SkipLayerNormalization"] >= 2 * LAYERS - 1
    assert counts["BiasGelu"] + counts["Gelu"] + counts["FastGelu"] == LAYERS
    assert check_fusions(counts, expected_fusions("bert", LAYERS, attention=optimum_graph)) == []
    # the fused graph still computes the same logits
    feed = _feed(model)
    plain = session(path).run(["start_logits"], feed)[0]
    fused = session(tmp_path / "fused.onnx").run(["start_logits"], feed)[0]
    assert np.abs(plain - fused).max() < 1e-4


def test_fusion_check_reports_missing_fusions():
    problems = check_fusions({"Attention": 1, "SkipLayerNormalization": 3, "BiasGelu": 2}, expected_fusions("bert", 2))
    assert problems == ["Attention: 1 fused, expected >= 2"]


def test_model_type_mapping_covers_families_and_rejects_unknown():
    assert ort_model_type("bert") == "bert"
    assert ort_model_type("lnorm-gpt") == "gpt2"
    with pytest.raises(ValueError, match="'mamba'"):
        ort_model_type("mamba")


def test_dynamic_and_static_int8(exported, tmp_path):
    model, path, _ = exported
    feed = _feed(model)
    ref = session(path).run(["start_logits"], feed)[0]

    optimize_onnx(path, tmp_path / "fused.onnx", model.config)
    dyn = quantize_dynamic_int8(tmp_path / "fused.onnx", tmp_path / "int8.onnx")
    ops = onnx_op_types(dyn)
    assert ops["DynamicQuantizeLinear"] + ops["com.microsoft::DynamicQuantizeMatMul"] + ops["com.microsoft::QAttention"] > 0
    got = session(dyn).run(["start_logits"], feed)[0]
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.abs(got - ref).max() < 0.25 * max(1.0, np.abs(ref).max())

    calib = [_feed(model, batch=1, seq=12, seed=s) for s in range(4)]
    static = quantize_static_int8(path, tmp_path / "int8_static.onnx", calib)
    ops = onnx_op_types(static)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0  # QDQ format
    got = session(static).run(["start_logits"], feed)[0]
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.abs(got - ref).max() < 0.25 * max(1.0, np.abs(ref).max())
    with pytest.raises(ValueError, match="calibration"):
        quantize_static_int8(path, tmp_path / "x.onnx", [])
