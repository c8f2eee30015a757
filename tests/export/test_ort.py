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


def test_smooth_onnx_is_exact_in_float(exported, tmp_path):
    import onnx

    from hf_lnorm.export.ort import smooth_onnx

    model, path, _ = exported
    optimize_onnx(path, tmp_path / "fused.onnx", model.config)
    calib = [_feed(model, batch=2, seq=12, seed=s) for s in range(1, 5)]
    count = smooth_onnx(tmp_path / "fused.onnx", tmp_path / "smooth.onnx", calib, alpha=0.75)
    graph = onnx.load(str(tmp_path / "smooth.onnx"), load_external_data=False).graph
    muls = [n for n in graph.node if n.name.startswith("hf_lnorm_smooth_")]
    assert count == len(muls) and count >= 3 * LAYERS  # per layer at least: attention (or Q/K/V), FFN in, FFN out
    assert not (tmp_path / ".smooth.onnx.partial").exists()
    feed = _feed(model, seed=9)
    ref = session(tmp_path / "fused.onnx").run(["start_logits"], feed)[0]
    smoothed = session(tmp_path / "smooth.onnx").run(["start_logits"], feed)[0]
    assert np.abs(smoothed - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())  # the same function in float
    # ranges measured once and passed in (the main job's alpha search) give the same graph
    from hf_lnorm.export.ort import activation_ranges

    ranges = activation_ranges(tmp_path / "fused.onnx", calib)
    assert set(ranges) == {n.input[0] for n in muls}
    assert smooth_onnx(tmp_path / "fused.onnx", tmp_path / "smooth2.onnx", alpha=0.75, ranges=ranges) == count
    again = session(tmp_path / "smooth2.onnx").run(["start_logits"], feed)[0]
    assert np.array_equal(again, smoothed)


def test_smooth_onnx_moves_outlier_channels_into_the_weights(tmp_path):
    """X (two channels 50x the rest) @ W: per-tensor int8 of X loses the small channels unless smoothed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hf_lnorm.export.ort import smooth_onnx

    rng = np.random.default_rng(0)
    k, n = 64, 32
    w = rng.standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "mm.onnx"))

    def batch(seed):
        x = np.random.default_rng(seed).standard_normal((16, k)).astype(np.float32)
        x[:, [5, 40]] *= 50.0
        return {"x": x}

    assert smooth_onnx(tmp_path / "mm.onnx", tmp_path / "mm_smooth.onnx", [batch(s) for s in range(4)], alpha=0.5) == 1
    feed = batch(99)
    exact = feed["x"].astype(np.float64) @ w
    errs = {}
    for name in ("mm", "mm_smooth"):
        q = quantize_dynamic_int8(tmp_path / f"{name}.onnx", tmp_path / f"{name}_int8.onnx")
        errs[name] = float(np.abs(session(q).run(["y"], feed)[0] - exact).mean())
    assert errs["mm_smooth"] < 0.5 * errs["mm"], errs


def test_smooth_onnx_rejects_bad_input(exported, tmp_path):
    from hf_lnorm.export.ort import smooth_onnx

    model, path, _ = exported
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\], got 1.5"):
        smooth_onnx(path, tmp_path / "s.onnx", [_feed(model)], alpha=1.5)
    with pytest.raises(ValueError, match="calibration"):
        smooth_onnx(path, tmp_path / "s.onnx", [])
    assert not (tmp_path / "s.onnx").exists()
