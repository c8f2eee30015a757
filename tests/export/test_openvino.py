"""OpenVINO: ONNX conversion, the CPU runner, NNCF int8, the saved IR folder, the routes and ``--target openvino``.

A tiny random BERT is exported once per module (Optimum's exporter on transformers 4.57, torch.onnx on 5.x);
everything else works on that ONNX file.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from hf_lnorm.cli import main
from hf_lnorm.export import export
from hf_lnorm.export.openvino import (
    OV_BIN,
    OV_XML,
    PAD_FILL,
    Int8Config,
    OpenVINORunner,
    activation_matmuls,
    calibration_items,
    compile_config,
    convert_onnx,
    padding_trim_error,
    plugin_default_precision,
    quantize_int8,
    save_ir,
    telemetry_off,
    trim_padding,
)
from hf_lnorm.export.routes import RouteContext, all_routes
from hf_lnorm.export.routes.openvino import ROUTES, _load_hint, _trimmed
from hf_lnorm.export.trimming import accept_trim_error

OUTPUTS = ("start_logits", "end_logits")
VOCAB = 99


def tiny_bert_qa():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    return transformers.BertForQuestionAnswering(cfg).eval()


def feed(batch, seq, seed):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 3 :] = 0  # some padding
    return {"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64), "attention_mask": mask,
            "token_type_ids": (np.arange(seq)[None, :] >= seq // 2).astype(np.int64).repeat(batch, 0)}


def padded_feed(lengths, seq, seed):
    """Rows of the given real lengths, right-padded to ``seq`` (pad id 0, mask 0)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (len(lengths), seq)).astype(np.int64)
    mask = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def torch_out(model, f):
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in f.items()})
    return out.start_logits.numpy(), out.end_logits.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_bert_qa()
    out = tmp_path_factory.mktemp("ov") / "onnx"
    export(model, out, task="question-answering")
    return model, out / "model.onnx"


def test_conversion_matches_pytorch_and_ort_at_f32(exported):
    from hf_lnorm.export.ort import feed_for, session

    model, onnx_path = exported
    run = OpenVINORunner(convert_onnx(onnx_path), OUTPUTS, threads=1, precision="f32")
    f = feed(3, 11, seed=1)
    got = run(f)
    ref = torch_out(model, f)
    sess = session(onnx_path, 1)
    ort_out = sess.run(list(OUTPUTS), feed_for(sess, f))
    for g, r, o in zip(got, ref, ort_out):
        assert g.dtype == np.float32 and g.shape == (3, 11)
        assert np.abs(g - r).max() < 1e-4
        assert np.abs(g - o).max() < 1e-4


def test_runner_compiles_one_static_shape_per_input_shape(exported):
    model, onnx_path = exported
    ov_model = convert_onnx(onnx_path)
    run = OpenVINORunner(ov_model, OUTPUTS, threads=1, precision="f32", static=True)
    a, b = feed(2, 8, seed=2), feed(1, 16, seed=3)
    first = run(a)
    run(b)
    again = run(a)
    assert run.compiled_shapes == [((2, 8),) * 3, ((1, 16),) * 3]
    np.testing.assert_array_equal(first[0], again[0])  # the output is a copy, not the request's buffer
    assert ov_model.inputs[0].get_partial_shape().is_dynamic  # the model itself keeps its dynamic axes
    dynamic = OpenVINORunner(ov_model, OUTPUTS, threads=1, precision="f32", static=False)
    np.testing.assert_allclose(dynamic(b)[1], run(b)[1], atol=1e-5)
    assert dynamic.compiled_shapes == [None]


def test_compile_config_is_explicit_and_bad_values_are_clear_errors(exported):
    config = compile_config(2, "default")
    assert config["PERFORMANCE_HINT"] == "LATENCY" and config["NUM_STREAMS"] == "1"
    assert config["INFERENCE_NUM_THREADS"] == "2"
    assert config["INFERENCE_PRECISION_HINT"] == plugin_default_precision() in ("bf16", "f32", "f16")
    with pytest.raises(ValueError, match=r"'fp64'.*accepted: default, bf16, f32"):
        compile_config(1, "fp64")
    with pytest.raises(ValueError, match=r"'fast'.*accepted: mixed, performance"):
        Int8Config(preset="fast")
    with pytest.raises(ValueError, match=r"alpha 1.5"):
        Int8Config(smooth_quant_alpha=1.5)
    _, onnx_path = exported
    with pytest.raises(ValueError, match=r"no output 'logits'.*start_logits"):
        OpenVINORunner(convert_onnx(onnx_path), ("logits",))
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        convert_onnx("nowhere.onnx")


def test_nncf_int8_runs_and_stays_close_to_fp32(exported):
    model, onnx_path = exported
    fp = convert_onnx(onnx_path)
    items = calibration_items([feed(4, 16, seed=s) for s in range(3)], batch=1)
    assert len(items) == 12 and items[0]["input_ids"].shape == (1, 16)
    q = quantize_int8(fp, items, Int8Config(subset_size=len(items)))
    types = {op.get_type_name() for op in q.get_ordered_ops()}
    assert "FakeQuantize" in types and "FakeQuantize" not in {op.get_type_name() for op in fp.get_ordered_ops()}
    f = feed(2, 16, seed=9)
    got = OpenVINORunner(q, OUTPUTS, threads=1, precision="f32")(f)
    ref = torch_out(model, f)
    for g, r in zip(got, ref):
        assert np.isfinite(g).all()
        scale = np.abs(r).max()
        assert np.abs(g - r).max() < 0.1 * scale  # int8 error, well under the logits' range
    with pytest.raises(ValueError, match="calibration feeds"):
        quantize_int8(fp, [])


TELEMETRY_PROBE = """
import json, os, sys
import numpy as np
from openvino_telemetry.utils import sender
events = []
sender.TelemetrySender.send = lambda self, backend, message, *a, **k: events.append(message)  # count, send nothing
mode, onnx_path = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
items = [{"input_ids": rng.integers(0, 99, (1, 8)), "attention_mask": np.ones((1, 8), np.int64),
          "token_type_ids": np.zeros((1, 8), np.int64)} for _ in range(2)]
if mode == "direct":  # what a script calling OpenVINO's tools itself gets
    import nncf, openvino as ov
    model = ov.convert_model(onnx_path)
    nncf.quantize(model, nncf.Dataset(items), subset_size=2)
elif mode == "hf_lnorm":
    from hf_lnorm.export.openvino import Int8Config, convert_onnx, quantize_int8
    quantize_int8(convert_onnx(onnx_path), items, Int8Config(subset_size=2))
else:  # a deployed IR folder loaded through its load hint, as the job's fresh-process check does
    from hf_lnorm.export.deploy import load
    load(onnx_path, mode)
print(json.dumps({"events": len(events), "home": sorted(os.listdir(os.path.expanduser("~")))}))
"""


@pytest.mark.parametrize("mode", ["direct", "hf_lnorm", "deploy"])
def test_openvino_telemetry_stays_silent_in_hf_lnorm_calls(exported, tmp_path, mode):
    """OpenVINO's telemetry forks a process per event from worker threads (a deadlock hazard) and writes a client id
    under HOME. In a HOME without a consent file it is on: the direct calls send events, hf_lnorm's (conversion,
    int8, loading a deployed folder through its load hint) send none and write nothing there."""
    model, onnx_path = exported
    if mode == "deploy":
        folder = tmp_path / "ir"
        save_ir(convert_onnx(onnx_path), folder, model.config)
        onnx_path, mode = folder, _load_hint("f32")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")}
    env["HOME"] = str(home)
    done = subprocess.run([sys.executable, "-c", TELEMETRY_PROBE, mode, str(onnx_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if mode == "direct":
        assert report["events"] > 0 and report["home"] == ["intel"]
    else:
        assert report == {"events": 0, "home": []}


def test_telemetry_off_restores_the_consent_check():
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    before = OptInChecker.__dict__["check"]
    with telemetry_off():
        assert OptInChecker().check(False) == ConsentCheckResult.DECLINED
    assert OptInChecker.__dict__["check"] is before
    with pytest.raises(RuntimeError), telemetry_off():
        raise RuntimeError("boom")
    assert OptInChecker.__dict__["check"] is before


def test_variants_script_profile_counts_the_weight_matmuls(exported):
    """``scripts/openvino_variants.py --profile``: time by kind of node, and the weighted matmuls' work, which for
    the tiny BERT is every token through Q, K, V, O, the two FFN matmuls of each layer and the span head."""
    from ..conftest import load_script

    script = load_script("openvino_variants")
    _, onnx_path = exported
    f = feed(2, 16, seed=3)
    cfg = tiny_bert_qa().config
    per_token = cfg.num_hidden_layers * (4 * cfg.hidden_size ** 2 + 2 * cfg.hidden_size * cfg.intermediate_size)
    expected_macs = 2 * 16 * (per_token + cfg.hidden_size * 2)
    fp = convert_onnx(onnx_path)
    for precision, kind in (("f32", "float weight matmul"), ("default", None)):
        prof = script.profile(OpenVINORunner(fp, OUTPUTS, threads=1, precision=precision, static=False), f, repeats=2)
        assert prof["weight_matmul_macs"] == expected_macs
        assert prof["weight_matmul_gmac_per_s"] > 0
        assert prof["ms_per_inference"] == pytest.approx(sum(prof["by_kind_ms"].values()), abs=0.05)
        if kind:
            assert kind in prof["by_kind_ms"]
    q = quantize_int8(fp, calibration_items([feed(4, 16, seed=s) for s in range(2)], batch=1), Int8Config(subset_size=8))
    prof = script.profile(OpenVINORunner(q, OUTPUTS, threads=1, static=False), f, repeats=2)
    assert "int8 weight matmul" in prof["by_kind_ms"]


def test_variants_script_split_streams_runs_each_part_on_its_own_request(exported):
    """``x-split-streams``: a batch of 3 on 2 streams runs as 2 requests (2 rows and 1), and the joined outputs
    are the one-stream model's, row for row."""
    from ..conftest import load_script

    script = load_script("openvino_variants")
    _, onnx_path = exported
    fp = convert_onnx(onnx_path)
    f = feed(3, 12, seed=6)
    split = script.SplitStreamsRunner(fp, OUTPUTS, streams=2, precision="f32")
    got = split(f)
    assert split.parts_run == 2
    assert split.compiled.get_property("NUM_STREAMS") == 2
    expected = OpenVINORunner(fp, OUTPUTS, threads=1, precision="f32", static=False)(f)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=1e-5)
    split(feed(1, 12, seed=7))  # one row: one request
    assert split.parts_run == 3


def test_variants_script_unpadded_calibration_and_block_agreement():
    from ..conftest import load_script

    script = load_script("openvino_variants")
    item = feed(2, 10, seed=8)
    item["attention_mask"][:] = 1
    item["attention_mask"][0, 6:] = 0
    item["attention_mask"][1, 8:] = 0
    one = {k: v[:1] for k, v in item.items()}
    cut = script.unpadded([item, one])
    assert [c["input_ids"].shape for c in cut] == [(2, 8), (1, 6)]
    np.testing.assert_array_equal(cut[1]["input_ids"], one["input_ids"][:, :6])
    assert all(c["attention_mask"][:, -1].any() for c in cut)
    spans = [(1, 2)] * 450
    ref = [(1, 2)] * 200 + [(0, 0)] * 10 + [(1, 2)] * 240
    assert script.block_agreement(spans, ref) == [1.0, 0.95]


def test_variants_script_longest_padding_runner_matches_the_trimmed_graph(exported):
    from ..conftest import load_script

    script = load_script("openvino_variants")
    model, onnx_path = exported
    full = convert_onnx(onnx_path)
    f = padded_feed([4, 11, 6], 20, seed=9)
    cut = script.LongestPaddingRunner(OpenVINORunner(full, OUTPUTS, threads=1, precision="f32", static=False))
    trimmed = OpenVINORunner(trim_padding(full, OUTPUTS), OUTPUTS, threads=1, precision="f32", static=False)
    assert all(np.abs(x - y).max() < 1e-5 for x, y in zip(cut(f), trimmed(f)))
    assert cut.lengths == [11] and cut(f)[0].shape == (3, 20)


def test_activation_matmuls_are_the_attention_core(exported):
    _, onnx_path = exported
    fp = convert_onnx(onnx_path)
    names = activation_matmuls(fp)
    ops = {op.get_friendly_name(): op for op in fp.get_ordered_ops()}
    fused = [op for op in fp.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"]
    # two layers: Q.K and P.V per layer as MatMuls, or one fused attention op per layer and no such MatMul
    assert len(names) == 4 or (len(fused) == 2 and names == [])
    for name in names:
        assert ops[name].get_type_name() == "MatMul"
        assert all(i.get_source_output().get_node().get_type_name() != "Constant" for i in ops[name].inputs())


def test_trim_padding_computes_up_to_the_last_real_token_and_keeps_the_outputs(exported, tmp_path):
    import openvino

    model, onnx_path = exported
    full = convert_onnx(onnx_path)
    trimmed = trim_padding(full, OUTPUTS)
    assert [o.get_any_name() for o in trimmed.outputs] == [o.get_any_name() for o in full.outputs]
    assert [p.output(0).get_any_name() for p in trimmed.get_parameters()] == [p.output(0).get_any_name() for p in full.get_parameters()]
    f = padded_feed([5, 9, 3], 24, seed=3)
    a = OpenVINORunner(full, OUTPUTS, threads=1, precision="f32", static=False)(f)
    b = OpenVINORunner(trimmed, OUTPUTS, threads=1, precision="f32", static=False)(f)
    mask = f["attention_mask"].astype(bool)
    for x, y, ref in zip(a, b, torch_out(model, f)):
        assert x.shape == y.shape == (3, 24)
        assert np.abs(x - y)[mask].max() < 1e-5 and np.abs(y - ref)[mask].max() < 1e-4
        # the graph ran on 9 positions (the longest row): row 0's padding up to 9 is computed, the rest is the fill
        assert np.all(y[:, 9:] == PAD_FILL) and not np.any(y[:, :9] == PAD_FILL)
        assert np.abs(x[0, 5:9] - y[0, 5:9]).max() < 1e-5
    assert padding_trim_error(full, trimmed, [f, padded_feed([24, 2], 24, seed=4)], OUTPUTS, threads=1) < 1e-5
    # no trailing padding: nothing to skip, same outputs; an all-padding batch still runs (one position kept)
    g = feed(2, 16, seed=5)
    g["attention_mask"][:] = 1
    run = OpenVINORunner(trimmed, OUTPUTS, threads=1, precision="f32", static=False)
    assert all(np.abs(x - y).max() < 1e-5 for x, y in zip(run(g), torch_out(model, g)))
    empty = padded_feed([0, 0], 8, seed=6)
    assert [o.shape for o in run(empty)] == [(2, 8), (2, 8)] and np.all(run(empty)[0][:, 1:] == PAD_FILL)
    # the saved folder reloads as the trimming model
    save_ir(trimmed, tmp_path)
    reloaded = OpenVINORunner(openvino.Core().read_model(str(tmp_path / OV_XML)), OUTPUTS, threads=1, precision="f32",
                              static=False)
    assert all(np.array_equal(x, y) for x, y in zip(reloaded(f), b))


def test_trim_padding_refuses_what_it_cannot_trim(exported):
    import openvino
    import openvino.opset13 as ops

    _, onnx_path = exported
    with pytest.raises(ValueError, match="no output 'logits'; its outputs: start_logits, end_logits"):
        trim_padding(convert_onnx(onnx_path), ("logits",))
    ids = ops.parameter([-1, -1], np.int64, name="input_ids")
    ids.output(0).set_names({"input_ids"})
    out = ops.convert(ids, "f32")
    out.output(0).set_names({"start_logits"})
    with pytest.raises(ValueError, match="needs an attention_mask input; the model takes input_ids"):
        trim_padding(openvino.Model([out], [ids]), ("start_logits",))
    # a model whose outputs at real tokens read the padding (a sum over the whole sequence): the route refuses it
    mask = ops.parameter([-1, -1], np.int64, name="attention_mask")
    mask.output(0).set_names({"attention_mask"})
    total = ops.add(ops.convert(ids, "f32"), ops.reduce_sum(ops.convert(ids, "f32"), ops.constant(np.array([1])), True))
    start = ops.multiply(total, ops.convert(mask, "f32"))
    start.output(0).set_names({"start_logits"})
    end = ops.convert(ids, "f32")
    end.output(0).set_names({"end_logits"})
    leaky = openvino.Model([start, end], [ids, mask])
    ctx = RouteContext(model=None, tokenizer=None, task="question-answering", output_names=OUTPUTS, workdir=None,
                       threads=1, calibration=[padded_feed([8, 8], 8, seed=1)])
    with pytest.raises(ValueError, match="skipping the padding changes this model's outputs at real tokens"):
        accept_trim_error(_trimmed(leaky, ctx)[1])
    with pytest.raises(ValueError, match="checks trimming on calibration batches; the job has none"):
        _trimmed(leaky, RouteContext(model=None, tokenizer=None, task="question-answering", output_names=OUTPUTS,
                                     workdir=None, threads=1))


def test_saved_folder_reloads_in_a_fresh_process_with_plain_openvino(exported, tmp_path):
    model, onnx_path = exported
    ov_model = convert_onnx(onnx_path)
    folder = tmp_path / "ir"
    folder.mkdir()
    save_ir(ov_model, folder, model.config)
    assert {p.name for p in folder.iterdir()} == {OV_XML, OV_BIN, "config.json"}
    f = feed(2, 12, seed=4)
    np.savez(tmp_path / "feed.npz", **f)
    expected = OpenVINORunner(ov_model, OUTPUTS, threads=1, precision="f32")(f)
    code = (
        "import sys, numpy as np\n"
        "from hf_lnorm.export.openvino import telemetry_off\n"
        "with telemetry_off():\n"
        "    import openvino as ov\n"
        "core = ov.Core()\n"
        "m = core.compile_model(core.read_model(sys.argv[1]), 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})\n"
        "f = dict(np.load(sys.argv[2]))\n"
        "r = m(f)\n"
        "np.save(sys.argv[3], np.stack([r[m.output('start_logits')], r[m.output('end_logits')]]))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder / OV_XML), str(tmp_path / "feed.npz"), str(tmp_path / "out.npy")],
                   check=True, timeout=120)
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"


def test_every_route_builds_runs_and_deploys(exported, tmp_path):
    model, onnx_path = exported
    assert [r.name for r in ROUTES] == ["openvino", "openvino-f32", "openvino-int8-default", "openvino-int8",
                                        "openvino-trimmed", "openvino-int8-trimmed"]
    assert [r.name for r in all_routes() if r.runtime == "openvino"] == [r.name for r in ROUTES]
    ctx = RouteContext(model=model, tokenizer=None, task="question-answering", output_names=OUTPUTS, workdir=tmp_path,
                       threads=1, calibration=[feed(4, 16, seed=s) for s in range(2)], shapes=[(2, 16)],
                       onnx_path=onnx_path, extra={"openvino_alphas": (-1.0, 0.5)})
    f = feed(2, 16, seed=7)
    f["attention_mask"][:, 12:] = 0  # trailing padding in both rows: the trimmed routes skip it
    ref = torch_out(model, f)
    mask = f["attention_mask"].astype(bool)
    builds = {}
    for route in ROUTES:
        assert route.requires == ("openvino", "nncf") and route.needs_onnx and not route.missing()
        built = builds[route.name] = route.build(ctx)
        out = built.runner(f)
        err = max(np.abs(o - r)[mask].max() for o, r in zip(out, ref))
        bound = 1e-4 if route.name == "openvino-f32" else 0.1 * np.abs(ref[0]).max()
        assert err < bound, (route.name, err)
        assert built.load_hint.startswith('openvino.Core().compile_model(PATH + "/openvino_model.xml", "CPU"')
        assert ("INFERENCE_PRECISION_HINT" in built.load_hint) == (route.name == "openvino-f32")
        from hf_lnorm.export import deploy as deploy_module
        assert built.info["static_shapes"] is False and built.info["precision"] in ("bf16", "f32")
        target = tmp_path / route.name
        built.deploy(target)
        assert {p.name for p in target.iterdir()} == {OV_XML, OV_BIN, "config.json"}
        loaded = deploy_module.runner_for(deploy_module.load(str(target), built.load_hint), ("start_logits", "end_logits"))
        # the load line gives back exactly the model the route timed and evaluated (both dynamic-shape)
        assert all(np.array_equal(a, b) for a, b in zip(loaded(f), out))
    int8 = builds["openvino-int8"]
    assert [(p, a) for p, a, _ in int8.info["search"]] == [("mixed", -1.0), ("mixed", 0.5), ("performance", -1.0), ("performance", 0.5)]
    best = min(int8.info["search"], key=lambda t: t[2])
    assert (int8.info["quantization"]["preset"], int8.info["quantization"]["smooth_quant_alpha"]) == best[:2]
    assert int8.info["float_attention"] is True
    assert int8.info["quantization"]["ignored_names"] == activation_matmuls(convert_onnx(onnx_path))
    assert int8.info["calibration_items"] == int8.info["quantization"]["subset_size"] == 8  # every item, not 128
    from hf_lnorm._machine import VNNI_FLAGS, machine_info

    isa = set(machine_info().get("int8_isa") or [])
    if isa:  # x86 Linux: 7-bit weights exactly where the CPU's int8 dot products can saturate
        assert int8.info["quantization"]["overflow_fix"] == ("disable" if isa & set(VNNI_FLAGS) else "enable")
    q = builds["openvino-int8-default"].info["quantization"]
    assert (q["preset"], q["subset_size"], q["smooth_quant_alpha"], q["overflow_fix"]) == ("mixed", 128, None, "disable")
    # the trimmed routes: the untrimmed models' outputs at real tokens, the fill past the batch's last real token
    # one NNCF run for both int8 routes, one trimming check (on the float model) for both trimmed routes
    assert sorted(ctx.shared) == [("openvino.int8-default", str(onnx_path)), ("openvino.trimmed-float", str(onnx_path))]
    assert builds["openvino-int8-trimmed"].info["trim_error"] == builds["openvino-trimmed"].info["trim_error"]
    assert builds["openvino-int8-trimmed"].info["int8_trim_error"] >= 0
    int8_err = builds["openvino-int8-trimmed"].info["int8_trim_error"]
    assert f"int8 model trimmed against untrimmed, f32: {int8_err:.2g}" in builds["openvino-int8-trimmed"].notes[0]
    for trimmed, base in (("openvino-trimmed", "openvino"), ("openvino-int8-trimmed", "openvino-int8-default")):
        info = builds[trimmed].info
        assert info["trim_padding"] is True and info["trim_error"] < 1e-3
        assert builds[trimmed].info["quantization"] == builds[base].info["quantization"]
        for x, y in zip(builds[trimmed].runner(f), builds[base].runner(f)):
            assert np.abs(x - y)[mask].max() < 0.05 * np.abs(y).max() and np.all(x[:, 12:] == PAD_FILL)


def test_cli_export_target_openvino(tmp_path, capsys):
    src = tmp_path / "bert"
    tiny_bert_qa().save_pretrained(src)
    out = tmp_path / "out"
    assert main(["export", str(src), str(out), "--task", "question-answering", "--target", "openvino"]) == 0
    printed = capsys.readouterr().out
    assert "OpenVINO (f32) vs PyTorch (fresh inputs): max |err|" in printed
    err = float(printed.split("OpenVINO (f32) vs PyTorch (fresh inputs): max |err| ")[1].split()[0])
    assert err < 1e-4
    assert {OV_XML, OV_BIN, "config.json", "model.onnx"} <= {p.name for p in out.iterdir()}
    assert {p.name for p in tmp_path.iterdir()} == {"bert", "out"}  # no staging folder left beside it


def test_cli_bad_target_is_a_usage_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "m"), str(tmp_path / "o"), "--target", "openvino-int8"]) == 2
    assert "invalid choice: 'openvino-int8'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown target 'ov'.*onnx, tensorrt, openvino"):
        export(tiny_bert_qa(), tmp_path / "o", target="ov")
    assert not (tmp_path / "o").exists()
