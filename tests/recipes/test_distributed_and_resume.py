"""Scale-out and resume: 2-process accelerate runs (CPU, gloo) and a real kill mid-training."""

import json
import os
import signal
import subprocess
import time

from hf_lnorm.recipes.common import resumable_checkpoint

from .conftest import ROOT, accelerate_cmd, qa_args, run, subprocess_env, translation_args, write_config



def _results(out):
    with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
        return json.load(f)


def test_qa_under_accelerate_two_processes(tiny_qa_model_dir, tmp_path):
    out = str(tmp_path / "qa")
    cfg = write_config(str(tmp_path / "qa.json"), qa_args(tiny_qa_model_dir, out, max_steps=2))
    proc = run(accelerate_cmd(2, "run_qa.py", cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(out)
    assert res["world_size"] == 2
    # Evaluation gathers the windows of both processes: every question gets an answer exactly once.
    with open(os.path.join(out, "eval_predictions.json"), encoding="utf-8") as f:
        assert len(json.load(f)) == 24
    assert res["eval_samples"] == 24


def test_translation_under_accelerate_two_processes(tmp_path):
    out = str(tmp_path / "tr")
    cfg = write_config(str(tmp_path / "tr.json"), translation_args(out, max_steps=2, max_eval_samples=10))
    proc = run(accelerate_cmd(2, "run_translation.py", cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(out)
    assert res["world_size"] == 2
    with open(os.path.join(out, "eval_translations.jsonl"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) == 10


def _loss_at(out, step):
    with open(os.path.join(out, "trainer_state.json"), encoding="utf-8") as f:
        hist = json.load(f)["log_history"]
    return {h["step"]: h["loss"] for h in hist if "loss" in h}.get(step)


def test_killed_run_resumes_to_the_same_loss(tmp_path):
    """SIGKILL a run after its first checkpoint; rerunning the same command resumes and ends at the
    uninterrupted run's final loss (tolerance 1e-4 absolute: same data order, dropout RNG restored)."""
    steps = 40
    over = dict(max_steps=steps, save_strategy="steps", save_steps=10, logging_steps=1, do_eval=False,
                max_train_samples=640, learning_rate=2e-3)
    script = os.path.join(ROOT, "scripts", "run_translation.py")
    env = subprocess_env()
    ref_out, kill_out = str(tmp_path / "ref"), str(tmp_path / "killed")
    ref_cfg = write_config(str(tmp_path / "ref.json"), translation_args(ref_out, **over))
    kill_cfg = write_config(str(tmp_path / "kill.json"), translation_args(kill_out, **over))
    import sys

    ref = subprocess.Popen([sys.executable, script, ref_cfg], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([sys.executable, script, kill_cfg], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_ckpt = os.path.join(kill_out, "checkpoint-10", "trainer_state.json")
    deadline = time.time() + 240
    # kill once the first checkpoint is complete (its trainer_state.json, written last, parses)
    while resumable_checkpoint(kill_out) is None and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    assert os.path.exists(first_ckpt)
    assert not os.path.exists(os.path.join(kill_out, "all_results.json"))
    assert not os.path.exists(os.path.join(kill_out, f"checkpoint-{steps}"))

    resumed = run([sys.executable, script, kill_cfg])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    _, err = ref.communicate(timeout=240)
    assert ref.returncode == 0, err[-3000:]
    ref_loss, resumed_loss = _loss_at(ref_out, steps), _loss_at(kill_out, steps)
    assert ref_loss is not None and resumed_loss is not None
    assert abs(ref_loss - resumed_loss) <= 1e-4, (ref_loss, resumed_loss)
    assert _results(kill_out)["world_size"] == 1
