"""``hf-lnorm experiment depth``: a quick run, the verdict rule, and the generated docs page."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from hf_lnorm.cli import main
from hf_lnorm.experiments import depth
from hf_lnorm.experiments._charlm import char_data

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "experiments" / "depth.json"
PAGE = ROOT / "docs" / "experiments" / "depth.md"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run through the CLI: (exit status, output folder)."""
    out = tmp_path_factory.mktemp("exp") / "depth"
    return main(["experiment", "depth", "--quick", "--output", str(out)]), out


def test_quick_run_writes_every_variant_and_depth_with_finite_numbers_and_a_plot(quick_run):
    code, out = quick_run
    assert code == 0
    data = json.loads((out / "depth.json").read_text(encoding="utf-8"))
    assert data["experiment"] == "depth" and data["quick"] is True and data["seeds"] == 1
    assert {"git_sha", "versions", "command"} <= set(data["provenance"])
    s = data["settings"]
    runs = {(r["variant"], r["depth"], r["seed"]) for r in data["per_seed"]}
    assert runs == {(v, d, 0) for v in depth.VARIANTS for d in s["depths"]}
    vocab = s["vocab"]
    assert 0 < s["unigram_loss"] < math.log(vocab)  # character frequencies beat a uniform guess
    for r in data["per_seed"]:
        assert r["steps_run"] == s["steps"] and r["finite"]
        assert [p["step"] for p in r["curve"]] == [0] + list(range(s["eval_every"], s["steps"] + 1, s["eval_every"]))
        assert all(math.isfinite(p["metric"]) for p in r["curve"])
        assert abs(r["curve"][0]["metric"] - math.log(vocab)) < 0.5  # a fresh model: about uniform
        assert r["diverged"] == (r["curve"][-1]["metric"] > s["unigram_loss"])
    cells = data["summary"]["cells"]
    assert len(cells) == len(depth.VARIANTS) * len(s["depths"])
    assert data["summary"]["verdict"]["depth"] == max(s["depths"])
    png = out / "depth.png"
    assert png.is_file() == HAS_MATPLOTLIB
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unigram_baseline_is_the_held_out_cross_entropy_of_training_frequencies():
    data = char_data()
    counts = [1.0] * data.vocab_size
    for i in data.train_ids.tolist():
        counts[i] += 1
    total = sum(counts)
    expected = -sum(math.log(counts[i] / total) for i in data.valid_ids.tolist()) / len(data.valid_ids)
    assert data.unigram_entropy() == pytest.approx(expected, rel=1e-9)


def _record(variant, layers, seed, final):
    finite = final is not None and math.isfinite(final)
    return {"variant": variant, "depth": layers, "seed": seed, "finite": finite,
            "curve": [{"step": 0, "metric": 4.3}, {"step": 10, "metric": final if finite else None}]}


def _records(finals):
    return [_record(v, d, s, f) for (v, d), values in finals.items() for s, f in enumerate(values)]


def test_verdict_holds_when_pre_ln_trains_and_the_others_degrade():
    finals = {("pre", 2): [2.5, 2.5, 2.5], ("post", 2): [2.5, 2.6, 2.5], ("none", 2): [2.7, 2.8, 2.7],
              ("pre", 12): [2.2, 2.25, 2.2], ("post", 12): [3.5, 2.4, float("nan")], ("none", 12): [2.9, 3.0, 2.95]}
    summary = depth.summarize(_records(finals), unigram_loss=3.3)
    v = summary["verdict"]
    assert v["depth"] == 12 and v["pre_trains"] and v["held"]
    assert v["post_diverged"] and v["post_degrades"]  # one run above the baseline, one non-finite
    assert not v["none_diverged"] and v["none_worse"] and v["none_degrades"]
    cell = {(c["variant"], c["depth"]): c for c in summary["cells"]}
    assert cell[("post", 12)]["diverged"] == 2 and cell[("post", 12)]["final"]["mean"] == pytest.approx(2.95)
    line = depth.summary_lines({"summary": summary, "settings": {"unigram_loss": 3.3}})[0]
    assert line.startswith('**Claim reproduced: "Pre-LN trains at 12 layers where Post-LN/none degrade or diverge"**')


def test_verdict_fails_when_post_ln_keeps_up_or_pre_ln_diverges():
    finals = {("pre", 12): [2.2, 2.25, 2.2], ("post", 12): [2.21, 2.2, 2.24], ("none", 12): [2.9, 3.0, 2.95]}
    v = depth.summarize(_records(finals), unigram_loss=3.3)["verdict"]
    assert v["pre_trains"] and not v["post_degrades"] and v["none_degrades"] and not v["held"]
    finals[("pre", 12)] = [2.2, 3.4, 2.2]  # one Pre-LN seed ends above the unigram baseline
    v = depth.summarize(_records(finals), unigram_loss=3.3)["verdict"]
    assert not v["pre_trains"] and not v["held"]
    summary = depth.summarize(_records(finals), unigram_loss=3.3)
    line = depth.summary_lines({"summary": summary, "settings": {"unigram_loss": 3.3}})[0]
    assert line.startswith("**Claim not reproduced") and "Pre-LN does not train" in line


def test_docs_page_is_what_the_committed_json_renders_to(capsys):
    assert main(["experiment", "depth", "--render-docs", str(RESULT)]) == 0
    rendered = capsys.readouterr().out
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/experiments/depth.md differs from its JSON; run: hf-lnorm experiment depth "
        "--render-docs data/results/experiments/depth.json > docs/experiments/depth.md")
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    assert data["quick"] is False and data["seeds"] >= 3 and "provenance" in data
    assert data["settings"]["depths"] == [2, 6, 12]
    for line in depth.summary_lines(data):
        assert line in rendered
    assert (ROOT / "docs" / "experiments" / "img" / "depth.png").read_bytes() == RESULT.with_suffix(".png").read_bytes()
