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
    quantize_per_token_int8,
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
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary graph left
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


def _one_matmul_graph(path, k, n, seed=0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "rows", n])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return w


def test_per_token_int8_is_per_row_int8_math(tmp_path):
    """The transformed MatMul computes round(x_row / s_row) @ q(W) * s_row * s_col, s_row = max|x_row| / 127,
    with weight codes up to weight_qmax() (127, or 63 where ORT's kernels would saturate full-range weights)."""
    from hf_lnorm.export.ort import quantize_per_token_int8, weight_qmax

    k, n = 48, 40
    w = _one_matmul_graph(tmp_path / "mm.onnx", k, n)
    counts = quantize_per_token_int8(tmp_path / "mm.onnx", tmp_path / "pt.onnx")
    assert counts == {"inputs": 1, "matmul": 1, "attention": 0, "attention_mask_folded": 0, "attention_ort_int8": 0,
                      "attention_kept_fp32": 0}
    ops = onnx_op_types(tmp_path / "pt.onnx")
    assert ops["com.microsoft::MatMulIntegerToFloat"] == 1 and ops["QuantizeLinear"] == 1 and ops["MatMul"] == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary graph left

    x = np.random.default_rng(1).standard_normal((2, 5, k)).astype(np.float32)
    x[0, 2] *= 100.0  # one loud token: per-tensor scales would flatten the others
    got = session(tmp_path / "pt.onnx").run(["y"], {"x": x})[0]
    qmax = weight_qmax()
    w_scale = np.abs(w).max(axis=0) / qmax
    w_q = np.clip(np.rint(w / w_scale), -qmax, qmax)
    rows = x.reshape(-1, k).astype(np.float64)
    s = np.abs(rows).max(axis=1, keepdims=True) / 127.0
    x_q = np.clip(np.rint(rows / s), -127, 127)
    want = ((x_q @ w_q) * s * w_scale).reshape(2, 5, n)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()

    exact = x.astype(np.float64) @ w
    quiet = np.ones((2, 5), bool)
    quiet[0, 2] = False
    per_tensor = session(quantize_dynamic_int8(tmp_path / "mm.onnx", tmp_path / "dyn.onnx")).run(["y"], {"x": x})[0]
    err_token = np.abs(got - exact)[quiet].mean()
    err_tensor = np.abs(per_tensor - exact)[quiet].mean()
    assert err_token < 0.25 * err_tensor, (err_token, err_tensor)


def test_per_token_int8_on_exported_bert(exported, tmp_path):
    import onnx

    from hf_lnorm.export.ort import quantize_per_token_int8

    model, path, method = exported
    optimize_onnx(path, tmp_path / "fused.onnx", model.config)
    fused_attention = method == METHOD_OPTIMUM  # the dynamo graph (transformers 5.x) keeps attention unfused
    feed = _feed(model, batch=3, seq=12, seed=4)
    feed["attention_mask"][1, 7:] = 0  # a padded row: the mask reaches the attention
    valid = feed["attention_mask"].astype(bool)
    ref = session(tmp_path / "fused.onnx").run(["start_logits"], feed)[0]
    per_tensor = session(quantize_dynamic_int8(tmp_path / "fused.onnx", tmp_path / "dyn.onnx")).run(["start_logits"], feed)[0]

    for mode in ("per-token", "ort"):
        counts = quantize_per_token_int8(tmp_path / "fused.onnx", tmp_path / f"{mode}.onnx", attention=mode)
        ops = onnx_op_types(tmp_path / f"{mode}.onnx")
        if not fused_attention:  # Q/K/V are MatMuls sharing one quantized input; nothing for the attention modes to do
            assert counts == {"inputs": 4 * LAYERS, "matmul": 6 * LAYERS, "attention": 0, "attention_mask_folded": 0,
                              "attention_ort_int8": 0, "attention_kept_fp32": 0}
        elif mode == "per-token":  # fused Attention -> Q/K/V per-token GEMMs + MultiHeadAttention, mask folded into K
            assert counts == {"inputs": 4 * LAYERS, "matmul": 3 * LAYERS, "attention": LAYERS,
                              "attention_mask_folded": LAYERS, "attention_ort_int8": 0, "attention_kept_fp32": 0}
            assert ops["com.microsoft::MultiHeadAttention"] == LAYERS
            mha = [n for n in onnx.load(str(tmp_path / f"{mode}.onnx")).graph.node if n.op_type == "MultiHeadAttention"]
            assert all(len(n.input) == 4 for n in mha)  # q, k, v, bias: no mask input
        else:  # ORT's QAttention for the fused attention, per-token for the other GEMMs
            assert counts == {"inputs": 3 * LAYERS, "matmul": 3 * LAYERS, "attention": 0, "attention_mask_folded": 0,
                              "attention_ort_int8": LAYERS, "attention_kept_fp32": 0}
            assert ops["com.microsoft::QAttention"] == LAYERS
        assert ops["com.microsoft::MatMulIntegerToFloat"] == counts["matmul"] + 3 * counts["attention"]
        assert ops["MatMul"] >= 1  # the 2-logit QA head stays fp32 (min_out_features)
        got = session(tmp_path / f"{mode}.onnx").run(["start_logits"], feed)[0]
        assert np.abs(got - ref)[valid].max() < 0.05 * np.abs(ref).max(), mode
        if mode == "per-token":
            assert np.abs(got - ref)[valid].mean() < np.abs(per_tensor - ref)[valid].mean()
            # padded keys get exactly zero attention weight: other tokens at the padded positions change nothing
            other = dict(feed)
            other["input_ids"] = feed["input_ids"].copy()
            other["input_ids"][1, 7:] = (feed["input_ids"][1, 7:] + 5) % model.config.vocab_size
            moved = session(tmp_path / f"{mode}.onnx").run(["start_logits"], other)[0]
            assert np.array_equal(moved[valid], got[valid])

    kept = quantize_per_token_int8(tmp_path / "fused.onnx", tmp_path / "fp32attn.onnx", attention="fp32")
    assert kept["attention_kept_fp32"] == (LAYERS if fused_attention else 0)
    none = quantize_per_token_int8(tmp_path / "fused.onnx", tmp_path / "none.onnx", attention="fp32", exclude=["*"])
    assert none["inputs"] == none["matmul"] == 0
    assert np.array_equal(session(tmp_path / "none.onnx").run(["start_logits"], feed)[0], ref)
    with pytest.raises(ValueError, match="min_out_features must be at least 1, got 0"):
        quantize_per_token_int8(tmp_path / "fused.onnx", tmp_path / "x.onnx", min_out_features=0)
    with pytest.raises(ValueError, match="unknown attention mode 'int4'; accepted: ort, per-token, fp32"):
        quantize_per_token_int8(tmp_path / "fused.onnx", tmp_path / "x.onnx", attention="int4")


def _attention_graph(path, hidden, heads, mask_rank):
    """One com.microsoft Attention node (random weights) reading x (batch, seq, hidden) and a 0/1 mask (batch, seq)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((hidden, 3 * hidden)) / np.sqrt(hidden)).astype(np.float32)
    b = (0.1 * rng.standard_normal(3 * hidden)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["mask"], ["mask32"], to=TensorProto.INT32),
             helper.make_node("Attention", ["x", "w", "b", "mask32"], ["y"], domain="com.microsoft", num_heads=heads)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden]),
                                           helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"][:mask_rank])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
              str(path))


def test_per_token_attention_folds_a_key_padding_mask_into_k(tmp_path):
    """attention="per-token" turns a (batch, seq) mask into an extra K channel: masked keys weigh exactly 0."""
    import onnx

    from hf_lnorm.export.ort import quantize_per_token_int8

    hidden, heads = 32, 4
    _attention_graph(tmp_path / "att.onnx", hidden, heads, mask_rank=2)
    counts = quantize_per_token_int8(tmp_path / "att.onnx", tmp_path / "pt.onnx", attention="per-token")
    assert counts["attention"] == counts["attention_mask_folded"] == 1
    mha = [n for n in onnx.load(str(tmp_path / "pt.onnx")).graph.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == 1 and len(mha[0].input) == 4  # q, k, v, bias

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 9, hidden)).astype(np.float32)
    mask = np.ones((3, 9), np.int64)
    mask[1, 5:] = 0
    mask[2, 2] = 0  # not only right padding: the 2-D mask is read element by element
    ref = session(tmp_path / "att.onnx").run(["y"], {"x": x, "mask": mask})[0]
    got = session(tmp_path / "pt.onnx").run(["y"], {"x": x, "mask": mask})[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()  # int8 Q/K/V projections, fp32 attention
    x2 = x.copy()
    x2[mask == 0] = 3.0 * rng.standard_normal((int((mask == 0).sum()), hidden))
    moved = session(tmp_path / "pt.onnx").run(["y"], {"x": x2, "mask": mask})[0]
    kept = mask.astype(bool)
    assert np.array_equal(moved[kept], got[kept])  # masked keys and values contribute exactly nothing

    # a mask whose layout is unknown (a 1-D graph input could be lengths or start/end pairs) stays a mask input
    _attention_graph(tmp_path / "att1.onnx", hidden, heads, mask_rank=1)
    counts = quantize_per_token_int8(tmp_path / "att1.onnx", tmp_path / "pt1.onnx", attention="per-token")
    assert counts["attention"] == 1 and counts["attention_mask_folded"] == 0
    mha = [n for n in onnx.load(str(tmp_path / "pt1.onnx")).graph.node if n.op_type == "MultiHeadAttention"]
    assert len(mha[0].input) == 5


def test_unfuse_skip_layer_norm_is_exact_and_stays_unfused(exported, tmp_path):
    import onnx
    import onnxruntime as ort

    from hf_lnorm.export.ort import unfuse_skip_layer_norm

    model, path, _ = exported
    counts = optimize_onnx(path, tmp_path / "fused.onnx", model.config)
    assert unfuse_skip_layer_norm(tmp_path / "fused.onnx", tmp_path / "unfused.onnx") == counts["SkipLayerNormalization"] > 0
    ops = onnx_op_types(tmp_path / "unfused.onnx")
    assert ops["com.microsoft::SkipLayerNormalization"] == 0
    assert ops["LayerNormalization"] >= counts["SkipLayerNormalization"]
    feed = _feed(model, seed=3)
    ref = session(tmp_path / "fused.onnx").run(["start_logits", "end_logits"], feed)
    got = session(tmp_path / "unfused.onnx").run(["start_logits", "end_logits"], feed)
    for a, b in zip(got, ref):
        assert np.abs(a - b).max() < 1e-5 * max(1.0, np.abs(b).max())
    # ONNX Runtime's own session-level fusions must not fold the Adds back into SkipLayerNormalization
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "session.onnx")
    ort.InferenceSession(str(tmp_path / "unfused.onnx"), options, providers=["CPUExecutionProvider"])
    after = {n.op_type for n in onnx.load(str(tmp_path / "session.onnx")).graph.node}
    assert "SkipLayerNormalization" not in after and "LayerNormalization" in after


def test_ort_cpu_ops_script_writes_every_row(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "ort_cpu_ops.py"
    spec = importlib.util.spec_from_file_location("ort_cpu_ops", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "ops.json"
    assert mod.main(["--tokens", "64", "--batch", "2", "--hidden", "32", "--ffn", "48", "--heads", "4", "--threads", "1",
                     "--repeats", "2", "--warmup", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["op"] for r in rows} == {"skip_layer_norm", "ffn_gemms", "int8_gemm_signedness", "attention", "session_switching"}
    assert len(rows) == 15 and all(r["median_ms"] > 0 for r in rows)
    int8_core = next(r for r in rows if r["impl"].startswith("int8 core"))
    assert 0 < int8_core["rel_err_vs_fp32"] < 0.05  # it computes attention, to int8 precision
    with pytest.raises(SystemExit):
        mod.main(["--tokens", "63", "--batch", "2"])


def test_weight_qmax_is_the_range_ort_multiplies_exactly_here():
    """127 exactly where full-range u8 x s8 products come out exact (VNNI), else 63, which is exact everywhere."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from hf_lnorm._machine import VNNI_FLAGS, machine_info
    from hf_lnorm.export.ort import weight_qmax

    def exact_with(qmax: int) -> bool:
        codes = np.full((4, 256), 255, np.uint8)
        weights = np.full((256, 8), qmax, np.int8)
        node = helper.make_node("MatMulInteger", ["a", "w", "zp"], ["y"])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, 256])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                                  [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(128, np.uint8), "zp")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": codes})[0]
        return bool(np.all(got == 127 * qmax * 256))

    assert weight_qmax() in (127, 63)
    assert exact_with(63)
    assert (weight_qmax() == 127) == exact_with(127)
    if set(machine_info().get("cpu_flags") or []) & set(VNNI_FLAGS):
        assert weight_qmax() == 127


def test_matmul_integer_to_float_scales_its_bias_by_a_row_activation_scale():
    """Why quantize_per_token_int8 keeps biases out of MatMulIntegerToFloat: with a (rows, 1) activation scale,
    ONNX Runtime (1.32) adds bias * row scale instead of bias. If ORT changes this, the bias input becomes usable."""
    from onnx import TensorProto, helper, numpy_helper

    from hf_lnorm.export.ort import weight_qmax

    rng = np.random.default_rng(0)
    m, k, n = 6, 16, 5
    codes = rng.integers(0, 256, (m, k), dtype=np.uint8)
    qmax = weight_qmax()  # full-range weights saturate on CPUs without VNNI
    weights = rng.integers(-qmax, qmax + 1, (k, n), dtype=np.int8)
    row_scale = rng.uniform(0.5, 2.0, (m, 1)).astype(np.float32)
    col_scale = rng.uniform(0.5, 2.0, n).astype(np.float32) * 1e-4  # products of order 10, like the bias
    bias = rng.standard_normal(n).astype(np.float32)
    node = helper.make_node("MatMulIntegerToFloat", ["a", "w", "sa", "sw", "zp", "", "bias"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k]),
                                            helper.make_tensor_value_info("sa", TensorProto.FLOAT, [m, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(col_scale, "sw"),
                               numpy_helper.from_array(np.array(128, np.uint8), "zp"), numpy_helper.from_array(bias, "bias")])
    import onnxruntime as ort

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": codes, "sa": row_scale})[0]
    product = ((codes.astype(np.int64) - 128) @ weights.astype(np.int64)) * row_scale * col_scale
    tolerance = 1e-5 * np.abs(product).max()
    assert np.abs(got - (product + bias * row_scale)).max() < tolerance  # what ORT computes
    assert np.abs(got - (product + bias)).max() > 100 * tolerance  # not the documented bias add


def test_trim_padding_onnx_skips_the_padding_and_keeps_the_outputs(exported, tmp_path):
    """``trim_padding_onnx`` on the plain and the ORT-fused export: the same inputs and outputs, the full graph's
    outputs at real tokens, ``PAD_FILL`` past the batch's last real token; on a dynamic-int8 graph, the int8
    graph's outputs on the batch cut to its longest row (its activation scales see the real part only)."""
    import onnx

    from hf_lnorm.export.ort import trim_padding_onnx
    from hf_lnorm.export.trimming import PAD_FILL

    model, onnx_path, _ = exported
    fused = tmp_path / "fused.onnx"
    optimize_onnx(onnx_path, fused, model.config)
    f = _feed(model, batch=2, seq=16, seed=5)
    f["attention_mask"][0, 9:] = 0
    f["attention_mask"][1, 12:] = 0
    names = ["start_logits", "end_logits"]
    for src in (onnx_path, fused):
        out = trim_padding_onnx(src, tmp_path / "trimmed.onnx", names)
        a, b = onnx.load(str(src)), onnx.load(str(out))
        assert [(i.name, i.type) for i in a.graph.input] == [(i.name, i.type) for i in b.graph.input]
        assert [(o.name, o.type) for o in a.graph.output] == [(o.name, o.type) for o in b.graph.output]
        assert sum(n.op_type == "Slice" for n in b.graph.node) >= len(f) and sum(n.op_type == "Pad" for n in b.graph.node) == 2
        full, trimmed = session(src).run(names, f), session(out).run(names, f)
        for x, y in zip(full, trimmed):
            assert x.shape == y.shape == (2, 16)
            np.testing.assert_allclose(y[:, :12], x[:, :12], atol=1e-5)
            assert np.all(y[:, 12:] == PAD_FILL) and not np.any(x[:, 12:] == PAD_FILL)
        unpadded = {k: np.ones_like(v) if k == "attention_mask" else v for k, v in f.items()}
        for x, y in zip(session(src).run(names, unpadded), session(out).run(names, unpadded)):
            np.testing.assert_allclose(y, x, atol=1e-5)  # nothing to skip
    int8 = quantize_dynamic_int8(fused, tmp_path / "int8.onnx")
    int8_trimmed = trim_padding_onnx(int8, tmp_path / "int8_trimmed.onnx", names)
    cut = {k: v[:, :12] for k, v in f.items()}
    for x, y in zip(session(int8).run(names, cut), session(int8_trimmed).run(names, f)):
        np.testing.assert_allclose(y[:, :12], x, atol=1e-6)
    # per-token int8 has one scale per row: trimmed, it is the untrimmed per-token graph on the padded batch
    per_token = tmp_path / "per_token.onnx"
    quantize_per_token_int8(fused, per_token, attention="per-token")
    per_token_trimmed = trim_padding_onnx(per_token, tmp_path / "per_token_trimmed.onnx", names)
    mask = f["attention_mask"].astype(bool)
    for x, y in zip(session(per_token).run(names, f), session(per_token_trimmed).run(names, f)):
        np.testing.assert_allclose(y[mask], x[mask], atol=1e-5)


def test_trim_padding_onnx_refuses_what_it_cannot_trim(exported, tmp_path):
    import onnx

    from hf_lnorm.export.ort import trim_padding_onnx

    _, onnx_path, _ = exported
    with pytest.raises(ValueError, match="no output 'logits'.*start_logits"):
        trim_padding_onnx(onnx_path, tmp_path / "x.onnx", ["logits"])
    m = onnx.load(str(onnx_path))
    m.graph.input[[i.name for i in m.graph.input].index("attention_mask")].name = "mask"
    onnx.save(m, str(tmp_path / "renamed.onnx"))
    with pytest.raises(ValueError, match="needs an attention_mask input; the graph takes .*mask"):
        trim_padding_onnx(tmp_path / "renamed.onnx", tmp_path / "x.onnx", ["start_logits"])
    assert not (tmp_path / "x.onnx").exists()


def test_trimmed_graph_loads_with_optimum_ortmodel(exported, tmp_path):
    """A trimmed graph keeps the inputs and outputs Optimum's ``ORTModelForQuestionAnswering`` reads: it loads
    the folder and gives the session's logits (transformers 4.57 line, where optimum-onnx installs)."""
    optimum_ort = pytest.importorskip("optimum.onnxruntime", reason="Optimum's ORTModel needs optimum-onnx (transformers 4.57 line)")
    from hf_lnorm.export.ort import trim_padding_onnx

    model, onnx_path, _ = exported
    folder = tmp_path / "folder"
    folder.mkdir()
    trim_padding_onnx(onnx_path, folder / "model.onnx", ["start_logits", "end_logits"])
    model.config.save_pretrained(folder)
    f = _feed(model, batch=2, seq=16, seed=6)
    f["attention_mask"][:, 10:] = 0
    ort_model = optimum_ort.ORTModelForQuestionAnswering.from_pretrained(folder)
    import torch

    out = ort_model(**{k: torch.from_numpy(v) for k, v in f.items()})
    plain = session(folder / "model.onnx").run(["start_logits", "end_logits"], f)
    for a, b in zip((out.start_logits, out.end_logits), plain):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-6)
        assert np.all(b[:, 10:] == -10000.0)
