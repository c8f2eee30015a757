"""Outputs never destroy user data: ``hf-lnorm export`` and ``hf-lnorm optimize`` refuse, before any work, every
output path whose replacement would lose something; a killed run leaves the earlier output intact and its
staging folder is cleaned up by the next run; files and folders honour the umask."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers

import hf_lnorm.export.onnx as export_module
import hf_lnorm.export.optimize as optimize_module
from hf_lnorm._json import staged_file, write_json
from hf_lnorm.cli import main
from hf_lnorm.export import UnsafeOutputError, export
from hf_lnorm.outputs import (MARKER, check_output_dir, is_hf_lnorm_output, remove_stale_staging,
                              staged_output_dir, write_marker)

from ..conftest import minilm_path, tree_digest

REPO_ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


def _save_tiny_bert(path: Path, tokenizer=None) -> Path:
    vocab = tokenizer.vocab_size if tokenizer is not None else 99
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertForQuestionAnswering(cfg).save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A user's folder (the current directory): notes, a data folder, and a saved model under models/bert."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "notes.txt").write_text("my notes\n")
    (work / "data" / "table.csv").write_text("a,b\n1,2\n")
    _save_tiny_bert(work / "models" / "bert")
    (work / "models" / "bert" / "README.md").write_text("my model card\n")
    os.symlink(work / "models" / "bert", work / "bert-link")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def no_loading(monkeypatch):
    """Fail loudly if either command gets as far as loading a model."""
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was loaded before the output path was refused")

    monkeypatch.setattr(export_module, "load_model", forbidden)
    monkeypatch.setattr(optimize_module, "_resolve_source", forbidden)
    monkeypatch.setattr(optimize_module, "_load", forbidden)
    return calls


# OUT as the user types it (cwd = the workspace), and what the one error line must say
REFUSALS = {
    "model-folder": ("models/bert", "is the source model's folder"),
    "model-folder-dotdot": ("models/../models/bert/", "is the source model's folder"),
    "model-symlink": ("bert-link", "is the source model's folder"),
    "cwd": (".", "is the current directory"),
    "cwd-absolute": ("<cwd>", "is the current directory"),
    "parent-of-model": ("models", "contains the source model's folder"),
    "ancestor-of-cwd": ("..", "contains"),
    "user-files": ("data", "was not written by hf-lnorm"),
    "file": ("notes.txt", "is not a folder"),
}


@pytest.mark.parametrize("command", ["export", "optimize"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_outputs_exit_2_and_touch_nothing(workspace, no_loading, capsys, command, case):
    out, reason = REFUSALS[case]
    out = str(workspace) if out == "<cwd>" else out
    before = tree_digest(workspace.parent)
    if command == "export":
        argv = ["export", "models/bert", out, "--overwrite"]
    else:
        argv = ["optimize", "models/bert", "--output", out, "--overwrite", "--quick"]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("hf-lnorm: error: ") and reason in lines[0] and repr(out) in lines[0], lines[0]
    assert no_loading == []
    assert tree_digest(workspace.parent) == before  # every user file byte-identical, nothing added


def test_python_api_refuses_a_loaded_models_own_folder(workspace):
    model = transformers.BertForQuestionAnswering.from_pretrained(workspace / "models" / "bert")
    before = tree_digest(workspace)
    with pytest.raises(UnsafeOutputError, match="source model's folder"):
        export(model, workspace / "models" / "bert", overwrite=True)
    with pytest.raises(UnsafeOutputError, match="contains the source model's folder"):
        export(model, workspace / "models", overwrite=True)
    with pytest.raises(ValueError, match="is the current directory"):  # an OutputExistsError and a ValueError
        export(model, ".", overwrite=True)
    assert tree_digest(workspace) == before


def test_overwrite_replaces_an_hf_lnorm_output_with_umask_modes(workspace, capsys):
    out = workspace / "onnx-out"
    with staged_output_dir(out, writer="hf-lnorm export") as tmp:  # an earlier export
        (tmp / "model.onnx").write_bytes(b"stale")
    assert main(["export", "models/bert", "onnx-out"]) == 2  # an hf-lnorm output still needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    old_mask = os.umask(0o022)
    try:
        assert main(["export", "models/bert", "onnx-out", "--overwrite"]) == 0
    finally:
        os.umask(old_mask)
    marker = json.loads((out / MARKER).read_text())
    assert marker["tool"] == "hf-lnorm" and marker["writer"] == "hf-lnorm export" and marker["hf_lnorm_version"]
    assert is_hf_lnorm_output(out) and (out / "model.onnx").read_bytes() != b"stale"
    assert sorted(p.name for p in workspace.iterdir()) == ["bert-link", "data", "models", "notes.txt", "onnx-out"]
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["."] == 0o755 and modes["model.onnx"] == 0o644 and modes[MARKER] == 0o644, modes
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o755}, modes
    assert {m for p, m in modes.items() if not (out / p).is_dir()} == {0o644}, modes


def test_sigkill_mid_export_keeps_the_earlier_output_and_the_next_run_cleans_up(workspace):
    target = workspace / "onnx-out"
    with staged_output_dir(target, writer="hf-lnorm export") as tmp:
        (tmp / "model.onnx").write_bytes(b"earlier good export")
    earlier = tree_digest(target)
    # the real command, with the exporter held up so that the kill lands while the staging folder is being written
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import hf_lnorm.export.onnx as ex\n"
        "def hang(model, out_dir, *args, **kwargs):\n"
        "    (Path(out_dir) / 'model.onnx').write_bytes(b'half')\n"
        "    time.sleep(600)\n"
        "ex._export_optimum = ex._export_dynamo = hang\n"
        "from hf_lnorm.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script, "export", "models/bert", "onnx-out", "--overwrite"],
                            cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partials = []
    deadline = time.monotonic() + 180
    try:
        while not partials and time.monotonic() < deadline and proc.poll() is None:
            partials = [p for p in workspace.glob(f".onnx-out.partial-{proc.pid}-*") if (p / "model.onnx").is_file()]
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert partials, f"the export never reached its staging folder: {err.decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert tree_digest(target) == earlier  # the earlier output is byte-identical
    assert partials[0].is_dir()  # the killed run's staging folder is all that is left, beside the target
    assert main(["export", "models/bert", "onnx-out", "--overwrite"]) == 0
    assert not partials[0].exists()
    assert not [p.name for p in workspace.iterdir() if p.name.startswith(".onnx-out.")]
    assert is_hf_lnorm_output(target) and (target / "model.onnx").read_bytes() != b"earlier good export"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_cleanup_touches_only_hf_lnorm_staging_of_gone_processes(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    keep = [
        f".out.partial-{alive}-abc123",  # a live process (this one) still writing
        ".out.partial-abc123",  # no pid: not hf_lnorm's current naming
        f".out.partial-{dead}-ABC.x",  # not mkdtemp's alphabet
        f".other.partial-{dead}-abc123",  # another target's
        f".out.partialx-{dead}-abc123",
        f"out.partial-{dead}-abc123",  # no leading dot
    ]
    for name in keep:
        (tmp_path / name).mkdir()
        (tmp_path / name / "user.txt").write_text("x")
    (tmp_path / f".out.old-{dead}-zzz999").write_text("a file, not a staging folder")
    keep.append(f".out.old-{dead}-zzz999")
    gone = [f".out.partial-{dead}-abc123", f".out.old-{dead}-q_1"]
    for name in gone:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"half")
    (tmp_path / "out").mkdir()
    removed = remove_stale_staging(tmp_path / "out")
    assert sorted(p.name for p in removed) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["out"])
    assert remove_stale_staging(tmp_path / "out", started=0.0) == []  # nothing older than the epoch


def test_output_moved_aside_by_a_killed_run_comes_back(tmp_path):
    # killed between moving the earlier output aside and renaming the new one into place
    aside = tmp_path / f".out.old-{_dead_pid()}-abc123" / "previous"
    aside.mkdir(parents=True)
    write_marker(aside, "hf-lnorm export")
    (aside / "model.onnx").write_bytes(b"earlier")
    with pytest.raises(export_module.OutputExistsError, match="--overwrite"):
        check_output_dir(tmp_path / "out", overwrite=False)
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_and_folders_follow_the_umask(tmp_path, mask):
    old_mask = os.umask(mask)
    try:
        write_json(str(tmp_path / "report.json"), {"a": 1})
        with staged_file(tmp_path / "plot.png", suffix=".png") as tmp:
            Path(tmp).write_bytes(b"png")
        with staged_output_dir(tmp_path / "out") as tmp:
            (tmp / "model.onnx").write_bytes(b"graph")
            (tmp / "sub").mkdir()
    finally:
        os.umask(old_mask)
    mode = lambda p: stat.S_IMODE((tmp_path / p).stat().st_mode)  # noqa: E731
    for name in ("report.json", "plot.png", "out/model.onnx", f"out/{MARKER}"):
        assert mode(name) == 0o666 & ~mask, name
    for name in ("out", "out/sub"):
        assert mode(name) == 0o777 & ~mask, name


def test_staged_writes_are_flushed_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with staged_output_dir(tmp_path / "out") as tmp:
        (tmp / "model.onnx").write_bytes(b"graph")
        staging = str(tmp)
        # the marker (under its temporary name), then the folder entry of its rename
        assert len(synced) == 2 and os.path.dirname(synced[0]) == staging and synced[1] == staging, synced
        synced.clear()
    assert os.path.join(staging, "model.onnx") in synced and staging in synced  # before the rename
    assert synced[-1] == str(tmp_path)  # the parent, after it


@pytest.fixture(scope="module")
def tiny_qa_dir(tmp_path_factory):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    return _save_tiny_bert(tmp_path_factory.mktemp("safety") / "tiny-bert-qa", tokenizer)


def test_optimize_without_matplotlib_keeps_the_run_and_warns(tiny_qa_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "opt"
    with staged_output_dir(out, writer="hf-lnorm optimize") as tmp:  # an earlier run's output, replaced below
        (tmp / "report.json").write_text("{}\n")
    argv = ["optimize", str(tiny_qa_dir), "--output", str(out), "--overwrite", "--batch-sizes", "1", "--seq-lens", "32",
            "--eval-examples", "4", "--calibration-examples", "4", "--repeats", "1", "--smooth-alpha", "0.5"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("hf-lnorm: warning:")]
    assert len(warning) == 1 and "matplotlib is not installed" in warning[0] and "hf-lnorm[onnx]" in warning[0]
    assert "report.json" in captured.out and "report.png" not in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] and report["plot"] is None and "matplotlib" in report["warnings"][0]
    assert Path(report["calibration_file"]).name == "sample_train.json" and Path(report["qa_file"]).name == "dev.json"
    assert not (out / "report.png").exists()
    assert json.loads((out / MARKER).read_text())["writer"] == "hf-lnorm optimize"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt"]


def test_optimize_names_a_missing_package_before_any_work(tiny_qa_dir, tmp_path, monkeypatch, no_loading, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["optimize", str(tiny_qa_dir), "--output", str(tmp_path / "opt"), "--quick"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "onnxruntime" in lines[0] and 'pip install "hf-lnorm[onnx]"' in lines[0], lines
    assert no_loading == [] and not (tmp_path / "opt").exists()


def test_optimize_calibration_file_must_exist(tiny_qa_dir, tmp_path, no_loading, capsys):
    missing = tmp_path / "no-such-calibration.json"
    assert main(["optimize", str(tiny_qa_dir), "--output", str(tmp_path / "opt"), "--calibration-file", str(missing)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--calibration-file" in lines[0] and str(missing) in lines[0], lines
    assert no_loading == []
