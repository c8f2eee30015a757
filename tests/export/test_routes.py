"""The routes of ``hf-lnorm optimize``: registry, ``--routes`` validation, the choice, the PyTorch routes built
directly, and ONNX Runtime sessions without spinning."""

import copy

import numpy as np
import pytest
import torch
import transformers

from hf_lnorm.errors import UsageError
from hf_lnorm.export.optimize import choose, paired_speedup, pareto_front, select_routes
from hf_lnorm.export.routes import ROUTE_MODULES, RouteContext, all_routes

PYTORCH = ["pytorch-fp32", "pytorch-patched", "pytorch-compile", "pytorch-int8", "torch-dynamic-int8"]
ORT = ["ort-fp32", "ort-int8", "ort-int8-smooth", "ort-int8-per-token", "ort-int8-static", "ort-int8-trimmed",
       "ort-int8-smooth-trimmed", "ort-int8-per-token-trimmed"]


def test_registry_lists_every_route_once_in_module_order():
    names = [r.name for r in all_routes()]
    assert len(names) == len(set(names))
    assert names[:5] == PYTORCH and names[5:13] == ORT
    assert ROUTE_MODULES == ("pytorch", "ort", "openvino")
    by = {r.name: r for r in all_routes()}
    assert {n for n in names if by[n].reference} >= {"pytorch-fp32", "pytorch-compile", "torch-dynamic-int8"}
    assert all(by[n].requires == ("onnxruntime", "onnx") and by[n].needs_onnx for n in ORT)
    assert by["ort-int8-static"].needs_fused_onnx is False and by["ort-int8"].needs_fused_onnx is True


def test_select_routes_validates_names():
    routes, warnings = select_routes("ort-int8,pytorch-fp32", "question-answering")
    assert [r.name for r in routes] == ["pytorch-fp32", "ort-int8"] and warnings == []  # report order, not typed order
    with pytest.raises(UsageError, match=r"unknown route 'ort-int9'; accepted: pytorch-fp32, pytorch-patched"):
        select_routes("pytorch-fp32,ort-int9", "question-answering")
    with pytest.raises(UsageError, match="more than once"):
        select_routes("ort-int8,ort-int8", "question-answering")
    with pytest.raises(UsageError, match="names no route"):
        select_routes(" , ", "question-answering")
    default, _ = select_routes(None, "text-classification")
    assert [r.name for r in default][:13] == PYTORCH + ORT


def test_unknown_route_exits_2_before_any_work(tmp_path, monkeypatch, capsys):
    import hf_lnorm.export.optimize as optimize_module
    from hf_lnorm.cli import main

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before --routes was checked")

    monkeypatch.setattr(optimize_module, "_resolve_source", forbidden)
    monkeypatch.setattr(optimize_module, "_load", forbidden)
    assert main(["optimize", "--routes", "pytorch-fp32,bogus", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'bogus'" in err[0] and "accepted:" in err[0] and "ort-int8-static" in err[0]
    assert not (tmp_path / "o").exists()


QUALITY = {
    "pytorch-fp32": {"agreement": 1.0, "f1": 80.0},
    "ort-fp32": {"agreement": 1.0, "f1": 80.0},
    "ort-int8": {"agreement": 0.98, "f1": 79.2},      # within: drop 0.8, agreement 0.98
    "ort-int8-static": {"agreement": 0.99, "f1": 78.5},  # F1 drop 1.5: outside
    "pytorch-int8": {"agreement": 0.95, "f1": 80.5},  # agreement below 0.97: outside, whatever its F1
}


def test_choose_takes_the_fastest_route_within_the_budget():
    ms = {"pytorch-fp32": 10.0, "ort-fp32": 5.0, "ort-int8": 3.0, "ort-int8-static": 1.0, "pytorch-int8": 2.0}
    c = choose(QUALITY, ms, reference_f1=80.0, max_f1_drop=1.0, min_agreement=0.97)
    assert c.chosen == "ort-int8" and "3.00 ms" in c.why and "F1 drop 0.80" in c.why
    assert set(c.rejected) == set(QUALITY) - {"ort-int8"}
    assert "F1 drop 1.50 > 1.0" in c.rejected["ort-int8-static"]
    assert "agreement 0.950 < 0.97" in c.rejected["pytorch-int8"]
    assert "slower: 5.00 ms vs 3.00 ms" in c.rejected["ort-fp32"]
    # a looser budget lets the fastest in; a tighter one leaves only the exact routes
    assert choose(QUALITY, ms, 80.0, 2.0, 0.9).chosen == "ort-int8-static"
    assert choose(QUALITY, ms, 80.0, 0.1, 0.999).chosen == "ort-fp32"


def test_choose_without_f1_uses_agreement_and_may_choose_nothing():
    quality = {"a": {"agreement": 0.99, "f1": None}, "b": {"agreement": 0.5, "f1": None}}
    assert choose(quality, {"a": 2.0, "b": 1.0}, None, 1.0, 0.97).chosen == "a"
    none = choose(quality, {"a": 2.0, "b": 1.0}, None, 1.0, 0.999)
    assert none.chosen is None and set(none.rejected) == {"a", "b"}
    untimed = choose(quality, {"b": 1.0}, None, 1.0, 0.97)
    assert untimed.chosen is None and untimed.rejected["a"] == "not timed at the primary cell"


def test_paired_speedup_and_pareto_front():
    assert paired_speedup([10.0, 20.0, 10.0], [5.0, 5.0, 10.0]) == 2.0  # per-round ratios 2, 4, 1
    points = {"a": (1.0, 80.0), "b": (2.0, 79.0), "c": (1.5, 78.0), "d": (3.0, 60.0)}
    assert pareto_front(points) == ["a", "b", "d"]


@pytest.fixture(scope="module")
def tiny_ctx(tmp_path_factory):
    from ..conftest import minilm_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertForQuestionAnswering(cfg).eval()
    enc = tokenizer(["who speaks first?"] * 3, ["Hamlet speaks first, then the ghost answers him."] * 3,
                    padding="max_length", max_length=24, return_tensors="np")
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    work = tmp_path_factory.mktemp("routes")
    return RouteContext(model=model, tokenizer=tokenizer, task="question-answering",
                        output_names=("start_logits", "end_logits"), workdir=work, threads=1, calibration=[feed],
                        shapes=[(3, 24)])


@pytest.mark.parametrize("name,tolerance", [("pytorch-patched", 1e-5), ("pytorch-int8", 0.5), ("torch-dynamic-int8", 0.5)])
def test_pytorch_routes_run_deploy_and_reload_through_their_hint(tiny_ctx, tmp_path, name, tolerance):
    from hf_lnorm.export.deploy import load, runner_for

    route = next(r for r in all_routes() if r.name == name)
    before = copy.deepcopy(tiny_ctx.model.state_dict())
    built = route.build(tiny_ctx)
    feed = tiny_ctx.calibration[0]
    fp32 = next(r for r in all_routes() if r.name == "pytorch-fp32").build(tiny_ctx).runner(feed)
    got = built.runner(feed)
    err = max(float(np.abs(g - r).max()) for g, r in zip(got, fp32))
    assert err <= tolerance, (name, err)
    if name != "pytorch-patched":
        assert err > 0, f"{name} gave exactly fp32's logits: no int8 ran"
    assert all(torch.equal(v, before[k]) for k, v in tiny_ctx.model.state_dict().items())  # built on a copy
    built.deploy(tmp_path / name)
    assert (tmp_path / name / "model.safetensors").is_file()
    reloaded = runner_for(load(tmp_path / name, built.load_hint), tiny_ctx.output_names)(feed)
    for a, b in zip(reloaded, got):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_sessions_of_the_job_do_not_spin(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from hf_lnorm.export.ort import session
    from hf_lnorm.export.ort.sessions import SPINNING_KEY
    from hf_lnorm.export.routes.ort import ort_runner

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert session(path, 1, spinning=False).get_session_options().get_session_config_entry(SPINNING_KEY) == "0"
    with pytest.raises(Exception):  # ORT's default session has no such entry set
        session(path, 1).get_session_options().get_session_config_entry(SPINNING_KEY)
    seen = {}
    import hf_lnorm.export.ort as ort_package

    real = ort_package.session

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ort_package, "session", spy)
    out = ort_runner(path, ("logits",), 1)({"x": np.array([-1.0, 2.0], np.float32)})
    assert seen.get("spinning") is False and out[0].tolist() == [0.0, 2.0]
