"""``hf-lnorm optimize``: the job as a loop over routes, end to end (quick settings), its deployable folders,
``--task``, and its bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
import transformers

import hf_lnorm.export.routes.pytorch as pytorch_routes
from hf_lnorm.cli import main
from hf_lnorm.export import onnx_op_types
from hf_lnorm._machine import machine_info
from hf_lnorm.export.routes import Route
from hf_lnorm.loading import default_qa_model
from hf_lnorm.outputs import MARKER, is_hf_lnorm_output

from ..conftest import minilm_path


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(path: Path, cls, num_labels: int = 2) -> Path:
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    torch.manual_seed(0)
    cls(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_qa_dir(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("opt") / "tiny-bert-qa", transformers.BertForQuestionAnswering)


def _readme_code(folder: Path) -> str:
    return re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)


def test_quick_job_on_the_bundled_model_deploys_a_folder_that_reloads(tmp_path, capsys):
    out = tmp_path / "opt"
    routes = "pytorch-fp32,pytorch-patched,ort-fp32,ort-int8"
    assert main(["optimize", "--quick", "--routes", routes, "--output", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "question-answering" and report["examples"] == 8 and report["failed"] == {}
    assert {r["variant"] for r in report["rows"]} == set(routes.split(","))
    assert {(r["batch"], r["seq"]) for r in report["rows"]} == {(1, 32), (1, 64), (2, 32), (2, 64)}
    chosen = report["chosen"]
    assert chosen in routes.split(",") and f"chosen: {chosen}" in text
    # the choice follows the rule: within the budget and the fastest at the primary cell (batch 2 x seq 64)
    primary = {r["variant"]: r for r in report["rows"] if (r["batch"], r["seq"]) == (2, 64)}
    ref_f1 = report["reference_quality"]["64"]["f1"]
    within = [n for n, r in primary.items() if r["agreement"] >= 0.97 and ref_f1 - r["f1"] <= 1.0]
    assert chosen == min(within, key=lambda n: primary[n]["median_ms"])
    assert set(report["rejected"]) == set(routes.split(",")) - {chosen}
    # every timed cell: the fastest route within the budget there, and each route that ran faster than the chosen one
    assert [(c["batch"], c["seq"]) for c in report["cells"]] == [(1, 32), (1, 64), (2, 32), (2, 64)]
    for cell in report["cells"]:
        at = {r["variant"]: r for r in report["rows"] if (r["batch"], r["seq"]) == (cell["batch"], cell["seq"])}
        f1 = report["reference_quality"][str(cell["seq"])]["f1"]
        ok = [n for n, r in at.items() if r["agreement"] >= 0.97 and f1 - r["f1"] <= 1.0]
        assert cell["fastest_within_budget"] == min(ok, key=lambda n: at[n]["median_ms"])
        assert cell["chosen_ms"] == at[chosen]["median_ms"] and cell["chosen_within_budget"] == (chosen in ok)
        assert cell["chosen_agreement"] == at[chosen]["agreement"]
        assert [f["route"] for f in cell["faster_than_chosen"]] == sorted(
            (n for n in at if at[n]["median_ms"] < at[chosen]["median_ms"]), key=lambda n: at[n]["median_ms"])
        assert all(f["within_budget"] == (f["route"] in ok) for f in cell["faster_than_chosen"])
        line = f"batch {cell['batch']} x seq {cell['seq']}: {chosen} {at[chosen]['median_ms']:.2f} ms"
        assert line + ("" if chosen in ok else f" (outside the budget at seq {cell['seq']}") in text
    assert report["cells"][-1]["fastest_within_budget"] == chosen
    assert report["verify_deploy"] == {"equal": 8, "total": 8, "differing": [], "error": None}
    # the layout: the chosen route in model/, every other one under variants/
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "model", "variants", "report.json", "report.png"])
    assert sorted(p.name for p in (out / "variants").iterdir()) == sorted(set(routes.split(",")) - {chosen})
    answers = json.loads((out / "model" / "answers.json").read_text())
    assert len(answers) == 8 and all(isinstance(a, str) for a in answers.values())
    for r in report["routes"]:
        assert r["build_seconds"] is not None and r["build_seconds"] >= 0
    assert report["provenance"]["versions"]["onnxruntime"] and report["machine"]["cpu_flags"] == machine_info()["cpu_flags"] and report["threads"] == 1
    # the README's load block, run as it is in a fresh interpreter, loads the folder and answers
    code = _readme_code(out / "model")
    assert f"PATH = {str(out.absolute() / 'model')!r}" in code
    probe = code + (
        "\nimport numpy as np\nenc = tokenizer('Who speaks?', 'Hamlet speaks.', return_tensors='np')\n"
        "feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}\n"
        "from hf_lnorm.export.deploy import runner_for\n"
        "print('OK', runner_for(model, ('start_logits', 'end_logits'))(feed)[0].shape)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("OK (1, ")


def _folder(out: Path, report: dict, name: str) -> Path:
    """Where the job wrote route ``name``: ``model/`` when it is the chosen one, else ``variants/<name>``."""
    return out / "model" if report["chosen"] == name else out / "variants" / name


def _broken(ctx):
    raise RuntimeError("this route cannot be built here")


def test_onnx_runtime_routes_and_a_failing_route(tiny_qa_dir, tmp_path, capsys, monkeypatch):
    broken = Route("pytorch-broken", "pytorch", "a route that fails to build", _broken)
    monkeypatch.setattr(pytorch_routes, "ROUTES", pytorch_routes.ROUTES + [broken])
    out = tmp_path / "report"
    routes = ("pytorch-fp32,ort-fp32,ort-int8,ort-int8-smooth,ort-int8-per-token,ort-int8-static,ort-int8-trimmed,"
              "ort-int8-smooth-trimmed,ort-int8-per-token-trimmed,pytorch-broken")
    assert main(["optimize", str(tiny_qa_dir), "--quick", "--routes", routes, "--output", str(out), "--repeats", "1",
                 "--threads", "1", "--no-plot"]) == 0
    captured = capsys.readouterr()
    assert "route pytorch-broken failed in build and is left out: RuntimeError: this route cannot be built here" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] == {"pytorch-broken": "build: RuntimeError: this route cannot be built here"}
    assert "failed: pytorch-broken" in captured.out
    rows = report["rows"]
    assert {r["variant"] for r in rows} == set(routes.split(",")) - {"pytorch-broken"}
    by = {(r["variant"], r["seq"]): r for r in rows if r["batch"] == 1}
    for seq in (32, 64):
        assert by[("ort-fp32", seq)]["max_abs_err"] <= 1e-4 and by[("ort-fp32", seq)]["agreement"] == 1.0
        for name in ("ort-int8", "ort-int8-smooth", "ort-int8-per-token", "ort-int8-static", "ort-int8-trimmed",
                     "ort-int8-smooth-trimmed", "ort-int8-per-token-trimmed"):
            row = by[(name, seq)]
            assert row["max_abs_err"] > 1e-6, f"{name}: no quantization error, so no int8 ran"
            agreed = row["agreement"] * report["examples"]
            assert agreed == pytest.approx(round(agreed))
            if round(agreed) == report["examples"]:
                assert row["f1"] == pytest.approx(by[("pytorch-fp32", seq)]["f1"])
    assert report["fused_ops"]["SkipLayerNormalization"] >= 3
    assert f"CPU layer norms: {report['fused_ops']['SkipLayerNormalization']} SkipLayerNormalization -> Add" in " ".join(report["notes"])
    note = next(n for n in report["notes"] if "per-token int8 (hf_lnorm)" in n)
    # attention-out, FFN in and FFN out of both layers; with attention unfused (dynamo graph) Q, K and V as well
    assert ("matmul 6" if report["export_method"] == "optimum" else "matmul 12") in note
    for name in ("ort-int8-trimmed", "ort-int8-smooth-trimmed", "ort-int8-per-token-trimmed"):
        trimmed = next(r for r in report["routes"] if r["name"] == name)
        assert trimmed["info"]["trim_padding"] is True and trimmed["info"]["trim_error"] <= 1e-3
        assert any(n.op_type == "Pad" for n in onnx.load(str(_folder(out, report, name) / "model.onnx")).graph.node)
        assert "runs only up to the last real token" in (_folder(out, report, name) / "README.md").read_text()
    for seq in (32, 64):  # one scale per row: trimming leaves the per-token graph's answers as they were
        a, b = by[("ort-int8-per-token", seq)], by[("ort-int8-per-token-trimmed", seq)]
        assert (a["agreement"], a["f1"]) == (b["agreement"], b["f1"])
    smooth = next(r for r in report["routes"] if r["name"] == "ort-int8-smooth")
    assert smooth["info"]["alpha"] in (0.5, 0.75, 0.9) and len(smooth["info"]["alphas_tried"]) == 3
    smooth_trimmed = next(r for r in report["routes"] if r["name"] == "ort-int8-smooth-trimmed")
    assert {k: smooth_trimmed["info"][k] for k in ("alpha", "alphas_tried")} == {k: smooth["info"][k] for k in ("alpha", "alphas_tried")}
    chosen = out / "model" / "model.onnx" if report["chosen"].startswith("ort") else None
    for name in set(routes.split(",")) - {"pytorch-broken", report["chosen"]}:
        folder = out / "variants" / name
        assert (folder / ("model.safetensors" if name.startswith("pytorch") else "model.onnx")).is_file(), name
    assert onnx_op_types(chosen or out / "variants" / "ort-fp32" / "model.onnx")["com.microsoft::SkipLayerNormalization"] == 0
    assert is_hf_lnorm_output(out) and not (out / "build").exists()  # the scratch graphs are gone
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER]
    assert [Path(report[k]).name for k in ("qa_file", "calibration_file")] == ["dev.json", "sample_train.json"]
    assert "calibration: 8 examples from sample_train.json at seq 64" in " ".join(report["notes"])


def test_no_variants_writes_only_the_chosen_folder(tiny_qa_dir, tmp_path, capsys):
    out = tmp_path / "opt"
    assert main(["optimize", str(tiny_qa_dir), "--quick", "--routes", "pytorch-fp32,ort-fp32", "--output", str(out),
                 "--repeats", "1", "--threads", "1", "--no-plot", "--no-variants"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {r["variant"] for r in report["rows"]} == {"pytorch-fp32", "ort-fp32"}  # both timed and evaluated
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "model", "report.json"])
    assert {r["name"]: r["folder"] for r in report["routes"]} == {
        n: ("model" if n == report["chosen"] else None) for n in ("pytorch-fp32", "ort-fp32")}
    assert report["verify_deploy"]["equal"] == report["verify_deploy"]["total"] == 8


@pytest.mark.parametrize("task,cls", [("text-classification", transformers.BertForSequenceClassification),
                                      ("token-classification", transformers.BertForTokenClassification)])
def test_classification_tasks(tmp_path, capsys, task, cls):
    model_dir = _tiny(tmp_path / "tiny", cls, num_labels=3)
    routes = "pytorch-fp32,pytorch-patched,ort-fp32,ort-int8,ort-int8-per-token-trimmed,openvino-int8-trimmed"
    argv = ["optimize", str(model_dir), "--task", task, "--quick", "--routes", routes,
            "--output", str(tmp_path / "opt"), "--repeats", "1", "--threads", "1", "--no-plot"]
    if task == "text-classification":  # labelled texts: accuracy is reported
        texts = tmp_path / "texts.jsonl"
        texts.write_text("".join(json.dumps({"id": f"t{i}", "text": f"line {i} of a short play", "label": i % 3}) + "\n"
                                 for i in range(6)))
        argv += ["--texts-file", str(texts)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "opt" / "report.json").read_text())
    assert report["task"] == task and report["failed"] == {}
    rows = report["rows"]
    assert {r["variant"] for r in rows} == set(routes.split(","))
    for name in ("openvino-int8-trimmed", "ort-int8-per-token-trimmed"):
        trimmed = next(r for r in report["routes"] if r["name"] == name)
        assert trimmed["info"]["trim_padding"] is True and trimmed["info"]["trim_error"] < 1e-3
    # the timing batches are recorded with their real lengths (short texts: padding the trimmed route skips)
    assert [(t["batch"], t["seq"]) for t in report["timing_inputs"]] == [(1, 32), (1, 64), (2, 32), (2, 64)]
    assert all(len(t["real_tokens"]) == t["batch"] and max(t["real_tokens"]) <= t["seq"] for t in report["timing_inputs"])
    assert all(r["f1"] is None and r["exact_match"] is None for r in rows)
    fp32 = [r for r in rows if r["variant"] == "pytorch-fp32"]
    assert all(r["agreement"] == 1.0 for r in fp32)
    if task == "text-classification":
        assert report["examples"] == 6 and all(r["accuracy"] is not None and 0 <= r["accuracy"] <= 100 for r in rows)
    else:
        assert report["examples"] == 8 and Path(report["eval_file"]).name == "dev.json"  # sentences of the QA contexts
        assert all(r["accuracy"] is None for r in rows)
    answers = json.loads((tmp_path / "opt" / "model" / "answers.json").read_text())
    labels = {"LABEL_0", "LABEL_1", "LABEL_2"}
    if task == "text-classification":
        assert sorted(answers) == [f"t{i}" for i in range(6)] and set(answers.values()) <= labels
    else:
        assert all(isinstance(v, list) and v and set(v) <= labels for v in answers.values())
    v = report["verify_deploy"]
    assert v["error"] is None and v["equal"] == v["total"] == report["examples"]


def test_optimize_bad_input_exits_2(tmp_path, capsys):
    assert main(["optimize", str(tmp_path / "missing-model"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    assert main(["optimize", "--output", str(tmp_path / "o")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["optimize", "--output", str(tmp_path / "p"), "--repeats", "0"]) == 2
    assert main(["optimize", "--output", str(tmp_path / "p"), "--min-agreement", "1.5"]) == 2
    assert main(["optimize", "--output", str(tmp_path / "p"), "--task", "summarization"]) == 2
    assert main(["optimize", "--output", str(tmp_path / "p"), "--texts-file", "x.jsonl"]) == 2
    assert "--texts-file is for --task text-classification" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"label": 1}\n')
    assert main(["optimize", "--task", "text-classification", "--texts-file", str(bad), "--output", str(tmp_path / "p")]) == 2
    assert "line 1 has no 'text' string" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_default_model_is_resolvable():
    source, description = default_qa_model()
    assert source and description
    assert (transformers.AutoConfig.from_pretrained(source).model_type) == "bert"


def test_verify_tolerance_scales_with_the_logits():
    import numpy as np

    from hf_lnorm.export.optimize import check_equivalent

    big = (np.full((2, 8), 10.0, np.float32), np.full((2, 8), -4.0, np.float32))
    err, tol = check_equivalent(big, (big[0] + 5e-4, big[1]))
    assert tol == pytest.approx(1e-3) and err == pytest.approx(5e-4, rel=1e-3)
    with pytest.raises(RuntimeError, match=r"differs from the stock model by 2\.00e-03 \(> 1\.0e-03, 1e-4 of the largest logit 10\.00\)"):
        check_equivalent(big, (big[0], big[1] - 2e-3))
    small = (np.full((1, 4), 0.5, np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(RuntimeError, match=r"\(> 1\.0e-04"):  # at least 1e-4, even for small logits
        check_equivalent(small, (small[0] + 3e-4, small[1]))
