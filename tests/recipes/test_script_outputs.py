"""The training scripts never remove a folder they did not write: an existing folder of someone else's files is
refused with exit 2 before training, byte-identical afterwards; ``--overwrite`` replaces only the script's own
earlier output (``hf_lnorm.outputs``)."""

import json
from pathlib import Path

import pytest

from hf_lnorm.outputs import MARKER, is_hf_lnorm_output

from ..conftest import tree_digest
from .conftest import load_script


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """The user's current folder, with a folder of their own files (``mine``)."""
    work = tmp_path / "work"
    (work / "mine" / "sub").mkdir(parents=True)
    (work / "mine" / "notes.txt").write_text("my notes\n")
    (work / "mine" / "sub" / "table.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(work)
    return work


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _tokenizer_argv(work: Path, out: str) -> list:
    text = work / "text.txt"
    if not text.exists():
        text.write_text("to be, or not to be: that is the question\n" * 20)
    return ["--input", str(text), "--vocab-size", "300", "--output", out]


def _policy_argv(work: Path, out: str) -> list:
    recipe = work / "recipe.json"
    if not recipe.exists():
        recipe.write_text(json.dumps({
            "env_id": "CartPole-v1", "seed": 0, "model": {"hidden_sizes": [8], "norm_type": "layernorm"},
            "ppo": {"num_envs": 1, "num_steps": 16, "total_timesteps": 16, "update_epochs": 1, "num_minibatches": 1},
            "early_stop": {}, "evaluation": {"episodes": 1, "seed": 50},
        }))
    return [str(recipe), "--output-dir", out, "--results", str(work / "result.json")]


SCRIPTS = {
    # the script's arguments for an output folder (its inputs written on first use), and the function that trains
    "train_tokenizer": (_tokenizer_argv, "train_bpe_tokenizer"),
    "train_policy": (_policy_argv, "train"),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_refuses_user_folders_and_overwrites_only_its_own_output(workspace, capsys, monkeypatch, name):
    if name == "train_policy":
        pytest.importorskip("gymnasium")
    argv, trains = SCRIPTS[name]
    script = load_script(name)
    argv(workspace, "out")  # writes the inputs

    def run(out, *flags):
        return script.main([*argv(workspace, out), *flags])

    # someone else's folder and the current directory: refused before training, even with --overwrite
    with monkeypatch.context() as patch:
        patch.setattr(script, trains, lambda *a, **k: pytest.fail("training started before the output was checked"))
        before = tree_digest(workspace.parent)
        for out, reason in (("mine", "was not written by hf-lnorm"), (".", "is the current directory")):
            assert run(out, "--overwrite") == 2
            line = _one_error_line(capsys)
            assert line.startswith(f"{name}: error: ") and reason in line and repr(out) in line, line
        assert tree_digest(workspace.parent) == before  # every user file byte-identical, nothing added

    # the script's own output: written, marked, then replaced only with --overwrite
    assert run("out") == 0
    capsys.readouterr()
    marker = json.loads((workspace / "out" / MARKER).read_text())
    assert is_hf_lnorm_output(workspace / "out") and marker["writer"] == f"scripts/{name}.py"
    first = tree_digest(workspace / "out")
    assert run("out") == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert tree_digest(workspace / "out") == first
    (workspace / "out" / "stale.txt").write_text("from the earlier run")
    assert run("out", "--overwrite") == 0
    assert is_hf_lnorm_output(workspace / "out") and not (workspace / "out" / "stale.txt").exists()
    assert {p for p in first if p != MARKER} <= set(tree_digest(workspace / "out"))  # the same files, written again
    assert not [p.name for p in workspace.iterdir() if p.name.startswith(".")]  # no staging folder left
