"""``hf-lnorm experiment critic_norm_rl``: TD3 on Pendulum with and without LayerNorm in the critic."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from hf_lnorm.cli import main
from hf_lnorm.experiments import critic_norm_rl, names
from hf_lnorm.outputs import MARKER

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "experiments" / "critic_norm_rl.json"
PAGE = ROOT / "docs" / "experiments" / "critic_norm_rl.md"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAS_GYMNASIUM = importlib.util.find_spec("gymnasium") is not None
needs_gymnasium = pytest.mark.skipif(not HAS_GYMNASIUM, reason="gymnasium is not installed (hf-lnorm[train])")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run through the CLI: (exit status, output folder)."""
    out = tmp_path_factory.mktemp("exp") / "critic"
    code = main(["experiment", "critic_norm_rl", "--quick", "--output", str(out)])
    return code, out


@needs_gymnasium
def test_quick_run_writes_both_critics_curves_and_plot(quick_run):
    code, out = quick_run
    assert code == 0
    assert (out / MARKER).is_file()
    data = json.loads((out / "critic_norm_rl.json").read_text(encoding="utf-8"))
    assert data["experiment"] == "critic_norm_rl" and data["quick"] is True and data["seeds"] == 1
    assert {"git_sha", "versions", "machine", "command", "created"} <= set(data["provenance"])
    sizes = critic_norm_rl.QUICK
    assert data["settings"]["utd"] >= 8 and data["settings"]["q_min"] == pytest.approx(critic_norm_rl.Q_MIN)
    assert sorted((r["critic_norm"], r["seed"]) for r in data["per_seed"]) == [("layernorm", 0), ("none", 0)]
    evals = sizes["env_steps"] // sizes["eval_every"]
    for record in data["per_seed"]:
        assert record["eval"]["step"] == [sizes["eval_every"] * (i + 1) for i in range(evals)]
        for key in ("return", "q_pred", "q_pred_min", "q_mc", "bias"):
            values = record["eval"][key]
            assert len(values) == evals and all(v is not None and math.isfinite(v) for v in values), key
        # returns of 200 Pendulum steps, Monte-Carlo values of its states: both inside the true range
        assert all(-200 * -critic_norm_rl.R_MIN <= v <= 0 for v in record["eval"]["return"])
        assert all(critic_norm_rl.Q_MIN <= v <= 0 for v in record["eval"]["q_mc"])
        assert all(b == pytest.approx(q - m) for b, q, m in zip(record["eval"]["bias"], record["eval"]["q_pred"],
                                                                 record["eval"]["q_mc"]))
        assert record["train"]["step"] and all(s >= sizes["start_steps"] for s in record["train"]["step"])
        assert all(math.isfinite(v) for v in record["train"]["q_mean"] + record["train"]["target_mean"])
        assert record["updates"] == (sizes["env_steps"] - sizes["start_steps"] + 1) * sizes["utd"]
        assert record["diverged"] is False and record["diverged_at"] is None
        assert record["final"]["bias"] == pytest.approx(sum(record["eval"]["bias"][-3:]) / 3)
    summary = data["summary"]
    assert set(summary["configs"]) == {"layernorm", "none"}
    assert set(summary["verdict"]) >= {"none_overestimates", "layernorm_in_range", "layernorm_return_ok", "held"}
    assert critic_norm_rl.summary_lines(data)[0].startswith("**Claim")
    png = out / "critic_norm_rl.png"
    if HAS_MATPLOTLIB:
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists()


@needs_gymnasium
def test_a_seed_fixes_the_whole_run():
    sizes = dict(critic_norm_rl.QUICK, env_steps=60, start_steps=30, utd=2, batch_size=8, hidden_sizes=[8, 8],
                 eval_every=60, eval_episodes=1, log_every=30)
    runs = [critic_norm_rl.train_td3("layernorm", seed, sizes, lambda line: None) for seed in (3, 3, 4)]
    for run in runs:
        run.pop("wall_s")
    assert runs[0] == runs[1]
    assert runs[0]["train"]["q_mean"] != runs[2]["train"]["q_mean"]


@needs_gymnasium
def test_the_reward_bound_is_pendulums_worst_step():
    import gymnasium
    import numpy as np

    env = gymnasium.make("Pendulum-v1")
    env.reset(seed=0)
    env.unwrapped.state = np.array([np.pi, 8.0])  # upside down at full speed, full torque
    _, reward, _, _, _ = env.step(np.array([2.0], dtype=np.float32))
    assert reward == pytest.approx(critic_norm_rl.R_MIN)
    assert critic_norm_rl.Q_MIN == pytest.approx(critic_norm_rl.R_MIN / (1 - critic_norm_rl.GAMMA))


def test_missing_gymnasium_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(ImportError, match=r"hf-lnorm\[train\]"):
        critic_norm_rl.run(seeds=1, quick=True)


def _config(diverged, bias, ret):
    return {"diverged": diverged, "final_bias": {"mean": bias, "std": 0.0, "n": 3},
            "final_return": {"mean": ret, "std": 0.0, "n": 3}}


def test_verdict_rule_on_synthetic_numbers():
    tol = critic_norm_rl.TOL
    held = critic_norm_rl.verdict({"layernorm": _config(0, 20.0, -180.0), "none": _config(0, 20.0 + 2 * tol, -200.0)})
    assert held == {"tol": tol, "none_overestimates": True, "layernorm_in_range": True, "layernorm_return_ok": True,
                    "held": True}
    # a diverged no-norm seed counts as overestimation even when the mean bias is small
    assert critic_norm_rl.verdict({"layernorm": _config(0, 0.0, -150.0), "none": _config(1, 0.0, -150.0)})["held"]
    # both critics accurate: nothing to fix, the claim does not hold
    same = critic_norm_rl.verdict({"layernorm": _config(0, 10.0, -150.0), "none": _config(0, 15.0, -150.0)})
    assert same["none_overestimates"] is False and same["held"] is False
    # LayerNorm in range but the agent earns clearly less
    worse = critic_norm_rl.verdict({"layernorm": _config(0, 0.0, -400.0), "none": _config(1, 900.0, -200.0)})
    assert worse["layernorm_return_ok"] is False and worse["held"] is False
    # LayerNorm itself overestimates
    over = critic_norm_rl.verdict({"layernorm": _config(0, 2 * tol, -150.0), "none": _config(0, 5 * tol, -150.0)})
    assert over["none_overestimates"] is True and over["layernorm_in_range"] is False and over["held"] is False


def _record(norm, seed, biases, returns, diverged_at=None):
    steps = [100 * (i + 1) for i in range(len(biases))]
    ev = {"step": steps, "return": returns, "q_pred": [b - 500.0 for b in biases], "q_pred_min": biases,
          "q_mc": [-500.0] * len(biases), "bias": biases}
    tr = {"step": steps, "q_mean": [-1.0] * len(steps), "q_absmax": [2.0 * (seed + 1)] * len(steps),
          "target_mean": [-1.0] * len(steps), "critic_loss": [0.1] * len(steps)}
    final = {"return": sum(returns[-3:]) / 3, "q_pred": sum(ev["q_pred"][-3:]) / 3, "q_mc": -500.0,
             "bias": sum(biases[-3:]) / 3}
    return {"critic_norm": norm, "seed": seed, "eval": ev, "train": tr, "updates": 8, "diverged": diverged_at is not None,
            "diverged_at": diverged_at, "final": final, "wall_s": 1.0}


def test_summary_and_sentence_follow_the_rule_both_ways():
    ln = [_record("layernorm", s, [0.0, 5.0, 5.0, 5.0], [-300.0, -200.0, -200.0, -200.0]) for s in range(3)]
    bad = [_record("none", s, [0.0, 400.0, 400.0, 400.0], [-300.0, -250.0, -250.0, -250.0]) for s in range(3)]
    summary = critic_norm_rl.summarize(ln + bad)
    assert summary["configs"]["none"]["final_bias"]["mean"] == pytest.approx(400.0)
    assert summary["configs"]["layernorm"]["peak_abs_q"] == pytest.approx(6.0)
    assert summary["verdict"]["held"] is True
    assert critic_norm_rl.summary_lines({"summary": summary})[0].startswith("**Claim reproduced.**")
    bad[0]["final"]["bias"] = 5.0  # one no-norm seed in range: the sentence counts the seeds behind the mean
    line = critic_norm_rl.summary_lines({"summary": summary, "per_seed": ln + bad})[0]
    assert line.endswith("(or is not finite): no-norm 2 of 3, LayerNorm 0 of 3.")
    good = [_record("none", s, [0.0, 5.0, 5.0, 5.0], [-300.0, -200.0, -200.0, -200.0]) for s in range(3)]
    summary = critic_norm_rl.summarize(ln + good)
    assert summary["verdict"]["held"] is False
    line = critic_norm_rl.summary_lines({"summary": summary})[0]
    assert line.startswith("**Claim not reproduced.**") and "no-norm 5.0 ± 0.0, LayerNorm 5.0 ± 0.0" in line


@pytest.mark.skipif(not RESULT.is_file(), reason="no committed critic_norm_rl result")
def test_docs_page_is_what_the_committed_json_renders_to(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the page states the PPO CartPole control from data/results/ of the checkout
    assert main(["experiment", "critic_norm_rl", "--render-docs", str(RESULT)]) == 0
    rendered = capsys.readouterr().out
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/experiments/critic_norm_rl.md differs from its JSON; run: hf-lnorm experiment critic_norm_rl "
        "--render-docs data/results/experiments/critic_norm_rl.json > docs/experiments/critic_norm_rl.md")
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    assert data["quick"] is False and data["seeds"] >= 3 and "provenance" in data
    for line in critic_norm_rl.summary_lines(data):
        assert line in rendered
    control = json.loads((ROOT / critic_norm_rl.CONTROL_JSON).read_text(encoding="utf-8"))
    ln_returns = [r["mean_return"] for r in control["runs"] if r["norm_type"] == "layernorm"]
    assert f"{sum(ln_returns) / len(ln_returns):.2f}" in rendered
    assert (ROOT / "docs" / "experiments" / "img" / "critic_norm_rl.png").read_bytes() == \
        RESULT.with_suffix(".png").read_bytes()
    assert "(critic_norm_rl.md)" in (ROOT / "docs" / "experiments" / "index.md").read_text(encoding="utf-8")
    assert "critic_norm_rl" in names()


def test_render_docs_without_the_control_json_is_a_usage_error(tmp_path, monkeypatch, capsys):
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"experiment": "critic_norm_rl", "seeds": 1, "settings": {}, "per_seed": [],
                                  "summary": {"configs": {}}}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "critic_norm_rl", "--render-docs", str(result)]) == 2
    assert critic_norm_rl.CONTROL_JSON in capsys.readouterr().err
