"""``hf-lnorm experiment warmup``: a quick run, the verdict rule, the corpus lookup and the generated page."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from hf_lnorm.cli import main
from hf_lnorm.experiments import warmup
from hf_lnorm.outputs import MARKER

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "experiments" / "warmup.json"
PAGE = ROOT / "docs" / "experiments" / "warmup.md"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "warmup"
    code = main(["experiment", "warmup", "--quick", "--output", str(out)])
    return code, out


def test_quick_run_writes_every_configuration_with_finite_curves(quick_run):
    code, out = quick_run
    assert code == 0
    assert (out / MARKER).is_file()
    data = json.loads((out / "warmup.json").read_text(encoding="utf-8"))
    assert data["experiment"] == "warmup" and data["quick"] is True and data["seeds"] == 1
    assert {"git_sha", "versions", "command", "created"} <= set(data["provenance"])
    s = data["settings"]
    assert s["data_file"] == "bible_en_es_sample.jsonl" and s["held_out_pairs"] > 0
    assert s["warmup_steps"] == round(s["steps"] * s["warmup_fraction"]) > 0
    runs = {(r["norm_position"], r["lr"], r["warmup_steps"]) for r in data["per_seed"]}
    assert runs == {(p, lr, w) for p in ("pre", "post") for lr in (5e-4, 1e-3) for w in (0, s["warmup_steps"])}
    for r in data["per_seed"]:
        assert r["seed"] == 0
        if r["diverged"]:
            continue
        assert len(r["train_loss"]) == s["steps"] // s["log_every"]
        assert [step for step, _ in r["held_out_loss"]][-1] == s["steps"]
        values = [v for _, v in r["train_loss"] + r["held_out_loss"]] + [r["final_bleu"], r["final_chrf"]]
        assert all(math.isfinite(v) for v in values)
        assert 0 < r["final_held_out_loss"] < 20 and 0 <= r["final_bleu"] <= 100
    assert [v["lr"] for v in data["summary"]["verdicts"]] == [5e-4, 1e-3]
    png = out / "warmup.png"
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists()


def _rec(position, warm, loss, seed, lr=1e-3):
    return {"norm_position": position, "lr": lr, "warmup_steps": warm, "seed": seed, "diverged": loss is None,
            "final_held_out_loss": loss, "final_bleu": 1.0, "final_chrf": 10.0}


def test_verdict_holds_only_when_post_ln_fails_and_pre_ln_does_not():
    stalls = [_rec("pre", 0, 4.0, s) for s in range(3)] + [_rec("pre", 10, 4.1, s) for s in range(3)] + \
        [_rec("post", 0, 6.0, 0), _rec("post", 0, None, 1), _rec("post", 0, 4.3, 2)] + \
        [_rec("post", 10, 4.2, s) for s in range(3)]
    v = warmup.summarize(stalls)["verdicts"][0]
    assert (v["post_fails"], v["post_diverged"], v["pre_fails"]) == (2, 1, 0)
    assert v["held"] is True
    assert v["post_gap"] == pytest.approx((1.8 + 0.1) / 2)  # the diverged seed has no gap
    both_fine = [_rec(p, w, 4.0, s) for p in ("pre", "post") for w in (0, 10) for s in range(3)]
    v = warmup.summarize(both_fine)["verdicts"][0]
    assert v["held"] is False and v["post_fails"] == 0
    both_fail = [_rec(p, 0, 5.0, s) for p in ("pre", "post") for s in range(3)] + \
        [_rec(p, 10, 4.0, s) for p in ("pre", "post") for s in range(3)]
    v = warmup.summarize(both_fail)["verdicts"][0]
    assert v["post_fails_majority"] and v["pre_fails_majority"] and v["held"] is False
    lines = warmup.summary_lines({"summary": warmup.summarize(stalls)})
    assert lines[0].startswith("Peak learning rate 0.001: **Claim reproduced.**")


def test_full_run_without_the_corpus_is_a_usage_error_naming_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(warmup.BIBLE_ENV, str(tmp_path / "missing.jsonl"))
    out = tmp_path / "out"
    assert main(["experiment", "warmup", "--seeds", "1", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "python scripts/prepare_data.py bible" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_docs_page_is_what_the_committed_json_renders_to(capsys):
    assert main(["experiment", "warmup", "--render-docs", str(RESULT)]) == 0
    rendered = capsys.readouterr().out
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/experiments/warmup.md differs from its JSON; run: hf-lnorm experiment warmup "
        "--render-docs data/results/experiments/warmup.json > docs/experiments/warmup.md")
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    assert data["quick"] is False and data["seeds"] >= 3 and "provenance" in data
    assert data["settings"]["data"] == "full"
    for line in warmup.summary_lines(data):
        assert line in rendered
    assert (ROOT / "docs" / "experiments" / "img" / "warmup.png").read_bytes() == RESULT.with_suffix(".png").read_bytes()
