"""``hf-lnorm experiment norm_choice``: a quick run, the verdict rules, and the generated docs page."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from hf_lnorm.cli import main
from hf_lnorm.experiments import norm_choice
from hf_lnorm.models import LNormViTConfig, LNormViTForImageClassification

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "experiments" / "norm_choice.json"
PAGE = ROOT / "docs" / "experiments" / "norm_choice.md"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run through the CLI: (exit status, output folder)."""
    out = tmp_path_factory.mktemp("exp") / "norm_choice"
    return main(["experiment", "norm_choice", "--quick", "--output", str(out)]), out


def test_quick_run_writes_every_configuration_with_finite_numbers_and_a_plot(quick_run):
    code, out = quick_run
    assert code == 0
    data = json.loads((out / "norm_choice.json").read_text(encoding="utf-8"))
    assert data["experiment"] == "norm_choice" and data["quick"] is True and data["seeds"] == 1
    assert {"git_sha", "versions", "command"} <= set(data["provenance"])
    runs = {(r["task"], r["norm_type"], r["path"], r["seed"]) for r in data["per_seed"]}
    assert runs == {(t, n, p, 0) for t in norm_choice.TASKS for n in norm_choice.NORM_TYPES for p in norm_choice.PATHS}
    steps = {t: data["settings"][t]["steps"] for t in norm_choice.TASKS}
    for r in data["per_seed"]:
        assert r["finite"] and r["steps_run"] == steps[r["task"]]
        assert r["curve"][0]["step"] == 0 and r["curve"][-1]["step"] == steps[r["task"]]
        seconds = [p["seconds"] for p in r["curve"]]
        assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(r["train_seconds"]) and seconds[-1] > 0
        assert 0 < r["step_seconds_median"] < r["train_seconds"]
        for point in r["curve"]:
            assert math.isfinite(point["metric"])
        if r["task"] == "vit":
            assert all(0.0 <= p["metric"] <= 1.0 for p in r["curve"])
        else:  # a fresh LM scores about log(vocab) per character
            assert abs(r["curve"][0]["metric"] - math.log(data["settings"]["lm_data"]["vocab"])) < 0.5
    # what each path did to the norms: plain switches LN/RMS (2 per block + final), patch fuses them and nothing else
    for r in data["per_seed"]:
        layers = data["settings"][r["task"]]["layers"]
        if r["path"] == "plain":
            assert r["plain_norms"] == (2 * layers + 1 if r["norm_type"] in ("layernorm", "rmsnorm") else 0)
        elif r["norm_type"] in ("layernorm", "rmsnorm"):
            assert (r["patched"], r["skipped"]) == (2 * layers + 1, 0)
        elif r["norm_type"] == "dyt":
            assert r["patched"] == 0 and r["skipped"] == 2 * layers + 1 and "DyT" in r["skip_reasons"][0]
        else:
            assert (r["patched"], r["skipped"]) == (0, 0)
    claims = {v["claim"] for v in data["summary"]["verdicts"]}
    assert claims == {"rmsnorm", "dyt", "dyt_speed", "layernorm_vs_none"}
    png = out / "norm_choice.png"
    assert png.is_file() == HAS_MATPLOTLIB
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_and_patched_paths_compute_the_same_numbers():
    torch.manual_seed(0)
    config = LNormViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, norm_type="rmsnorm", num_labels=10)
    plain, patched = LNormViTForImageClassification(config), LNormViTForImageClassification(config)
    patched.load_state_dict(plain.state_dict())
    assert norm_choice.use_plain_torch_norms(plain) == 5
    assert all("forward" in m.__dict__ for m in plain.modules() if type(m).__name__ == "LNormRMSNorm")
    info = norm_choice._prepare(patched, "patched")
    assert info["patched"] == 5
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(plain(pixel_values=x).logits, patched(pixel_values=x).logits, atol=1e-5, rtol=1e-5)


def _record(task, norm_type, path, seed, final, ms, finite=True):
    mid = final if finite else None
    curve = [{"step": 0, "seconds": 0.0, "metric": 0.1 if task == "vit" else 4.3},
             {"step": 10, "seconds": ms / 100, "metric": mid},
             {"step": 20, "seconds": ms / 50, "metric": final if finite else None}]
    return {"task": task, "norm_type": norm_type, "path": path, "seed": seed, "curve": curve, "finite": finite,
            "step_seconds_median": ms / 1000}


def _records(task, finals, ms):
    """Three seeds per norm type and path; ``finals``/``ms`` map a norm type to its seed values / time."""
    return [_record(task, n, p, s, finals[n][s], ms[n], finite=finals[n][s] is not None)
            for n in norm_choice.NORM_TYPES for p in norm_choice.PATHS for s in range(3)]


def test_verdicts_hold_when_the_numbers_say_so():
    finals = {"layernorm": [2.00, 2.02, 1.98], "rmsnorm": [2.01, 1.99, 2.02], "dyt": [2.03, 1.97, 2.00],
              "none": [2.6, 2.7, None]}
    summary = norm_choice.summarize(_records("lm", finals, {"layernorm": 10.0, "rmsnorm": 8.5, "dyt": 9.0,
                                                            "none": 7.0}))
    verdict = {(v["claim"], v["path"]): v for v in summary["verdicts"]}
    assert verdict[("rmsnorm", "plain")]["held"] is True
    assert verdict[("rmsnorm", "plain")]["time_saving"] == pytest.approx(0.15)
    assert verdict[("dyt", "patched")]["held"] is True
    assert verdict[("dyt_speed", "patched")]["held"] is True  # DyT 9.0 ms vs RMSNorm 8.5 ms: not faster
    assert verdict[("layernorm_vs_none", "plain")]["held"] is True
    assert verdict[("layernorm_vs_none", "plain")]["none_diverged"] == 1
    lines = norm_choice.summary_lines({"summary": summary})
    assert lines[0].startswith("RMSNorm (Zhang & Sennrich 2019): **claim reproduced**")
    assert lines[1].startswith("DyT matches LayerNorm (Zhu et al. 2025): **claim reproduced**")
    assert "**claim reproduced**" in lines[3] and "(1 diverged)" in lines[3]


def test_verdicts_fail_when_the_numbers_say_so():
    # the ViT metric is accuracy: higher is better, so a lower DyT accuracy is a difference, and a
    # no-norm run as good as LayerNorm is "not worse"
    finals = {"layernorm": [0.90, 0.91, 0.92], "rmsnorm": [0.80, 0.81, 0.79], "dyt": [0.70, 0.72, 0.71],
              "none": [0.91, 0.90, 0.92]}
    summary = norm_choice.summarize(_records("vit", finals, {"layernorm": 10.0, "rmsnorm": 9.8, "dyt": 8.0,
                                                             "none": 7.0}))
    verdict = {(v["claim"], v["path"]): v for v in summary["verdicts"]}
    rms = verdict[("rmsnorm", "patched")]
    assert rms["quality_agrees"] is False and rms["faster"] is False and rms["held"] is False
    assert verdict[("dyt", "plain")]["held"] is False
    assert verdict[("dyt_speed", "patched")]["held"] is False  # DyT saves 18% against RMSNorm
    assert verdict[("layernorm_vs_none", "plain")]["held"] is False
    lines = norm_choice.summary_lines({"summary": summary})
    assert all("**claim not reproduced**" in line for line in lines)


def test_docs_page_is_what_the_committed_json_renders_to(capsys):
    assert main(["experiment", "norm_choice", "--render-docs", str(RESULT)]) == 0
    rendered = capsys.readouterr().out
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/experiments/norm_choice.md differs from its JSON; run: hf-lnorm experiment norm_choice "
        "--render-docs data/results/experiments/norm_choice.json > docs/experiments/norm_choice.md")
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    assert data["quick"] is False and data["seeds"] >= 3 and "provenance" in data
    for line in norm_choice.summary_lines(data):
        assert line in rendered
    assert (ROOT / "docs" / "experiments" / "img" / "norm_choice.png").read_bytes() == \
        RESULT.with_suffix(".png").read_bytes()
