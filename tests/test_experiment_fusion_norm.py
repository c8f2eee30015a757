"""``hf-lnorm experiment fusion_norm``: a quick run, the feature scales, the verdict rule and the generated page."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from hf_lnorm.cli import main
from hf_lnorm.experiments import fusion_norm
from hf_lnorm.outputs import MARKER

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "experiments" / "fusion_norm.json"
PAGE = ROOT / "docs" / "experiments" / "fusion_norm.md"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("easy_vqa", reason="the easy-VQA data comes with hf-lnorm[train] (PyPI easy-vqa)")
    out = tmp_path_factory.mktemp("exp") / "fusion"
    code = main(["experiment", "fusion_norm", "--quick", "--output", str(out)])
    return code, out


def test_quick_run_writes_curves_scales_and_a_held_out_validation_split(quick_run):
    code, out = quick_run
    assert code == 0
    assert (out / MARKER).is_file()
    data = json.loads((out / "fusion_norm.json").read_text(encoding="utf-8"))
    assert data["experiment"] == "fusion_norm" and data["quick"] is True and data["seeds"] == 1
    assert {"git_sha", "versions", "command", "created"} <= set(data["provenance"])
    s = data["settings"]
    assert s["validation_images"] == round(s["validation_fraction"] * 4000)
    assert s["train_images"] == 400 and s["validation_questions_used"] == 200 and s["test_questions"] == 300
    assert [r["variant"] for r in data["per_seed"]] == list(fusion_norm.VARIANTS)
    for r in data["per_seed"]:
        assert [step for step, _ in r["val_accuracy"]][-1] == s["steps"]
        assert all(0 <= a <= 1 for _, a in r["val_accuracy"]) and 0 <= r["test_accuracy"] <= 1
        assert [x["step"] for x in r["feature_scales"]][0] == 0 and len(r["feature_scales"]) == s["eval_points"] + 1
        for x in r["feature_scales"]:
            assert all(math.isfinite(x[k]) and x[k] > 0 for k in ("image_in", "image_out", "text_in", "text_out"))
    scales = {r["variant"]: r["feature_scales"][0] for r in data["per_seed"]}
    # At initialisation a LayerNorm (weight 1, bias 0) maps every token to norm sqrt(width); the identity changes nothing.
    width = s["model"]["hidden_size"]
    assert scales["layernorm"]["image_out"] == pytest.approx(math.sqrt(width), rel=1e-3)
    assert scales["layernorm"]["text_out"] == pytest.approx(math.sqrt(width), rel=1e-3)
    assert scales["none"]["image_out"] == pytest.approx(scales["none"]["image_in"])
    assert scales["none"]["image_in"] == pytest.approx(scales["layernorm"]["image_in"])  # same initial weights
    assert data["summary"]["chosen_on_validation"] in fusion_norm.VARIANTS
    png = out / "fusion_norm.png"
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists()


def _rec(variant, acc, ratio, seed=0):
    return {"variant": variant, "seed": seed, "final_val_accuracy": acc, "test_accuracy": acc - 0.01,
            "feature_scales": [{"image_out": 8.0 * ratio, "text_out": 8.0, "ratio_out": ratio}]}


def test_verdict_needs_balance_and_an_accuracy_gain():
    held = fusion_norm.summarize([_rec("layernorm", 0.80, 1.1), _rec("none", 0.70, 4.0), _rec("dyt", 0.85, 2.0)])
    assert held["verdict"]["balanced"] and held["verdict"]["helps"] and held["verdict"]["held"] is True
    assert held["verdict"]["accuracy_gain"] == pytest.approx(0.10)
    assert held["chosen_on_validation"] == "dyt"
    no_gain = fusion_norm.summarize([_rec("layernorm", 0.805, 1.1), _rec("none", 0.80, 4.0)])
    assert no_gain["verdict"]["balanced"] is True and no_gain["verdict"]["helps"] is False
    assert no_gain["verdict"]["held"] is False
    unbalanced = fusion_norm.summarize([_rec("layernorm", 0.9, 1 / 3.0), _rec("none", 0.7, 2.0)])
    assert unbalanced["verdict"]["balanced"] is False and unbalanced["verdict"]["held"] is False
    # Already balanced without the norm: the LayerNorm is not what balances, whatever the accuracy.
    both_in = fusion_norm.summarize([_rec("layernorm", 0.9, 1.01), _rec("none", 0.7, 1.0)])
    assert both_in["verdict"]["none_in_balance"] and both_in["verdict"]["ln_in_balance"]
    assert both_in["verdict"]["balanced"] is False and both_in["verdict"]["held"] is False
    lines = fusion_norm.summary_lines({"summary": held})
    assert lines[0].startswith("**Claim reproduced.**") and "Chosen on validation: DyT" in lines[1]
    assert fusion_norm.summary_lines({"summary": no_gain})[0].startswith("**Claim not reproduced.**")


def test_docs_page_is_what_the_committed_json_renders_to(capsys):
    assert main(["experiment", "fusion_norm", "--render-docs", str(RESULT)]) == 0
    rendered = capsys.readouterr().out
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/experiments/fusion_norm.md differs from its JSON; run: hf-lnorm experiment fusion_norm "
        "--render-docs data/results/experiments/fusion_norm.json > docs/experiments/fusion_norm.md")
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    assert data["quick"] is False and data["seeds"] >= 3 and "provenance" in data
    for line in fusion_norm.summary_lines(data):
        assert line in rendered
    assert (ROOT / "docs" / "experiments" / "img" / "fusion_norm.png").read_bytes() == \
        RESULT.with_suffix(".png").read_bytes()
