"""``hf_lnorm._machine``: what every result JSON records under ``provenance``."""

import datetime
import importlib.util
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import transformers

from hf_lnorm import _machine

MODULE = Path(_machine.__file__)


def load_copy(folder: Path):
    """The module loaded from a copy at ``folder/pkg/_machine.py`` (its ``__file__`` decides the checkout)."""
    (folder / "pkg").mkdir(parents=True)
    target = folder / "pkg" / "_machine.py"
    shutil.copy(MODULE, target)
    spec = importlib.util.spec_from_file_location("machine_copy", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_fields():
    prov = _machine.provenance()
    assert set(prov) >= {"git_sha", "git_dirty", "hf_lnorm", "versions", "machine", "command", "created"}
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["versions"]["transformers"] == transformers.__version__
    assert prov["versions"]["python"] == platform.python_version()
    assert prov["machine"]["cores"] >= 1 and prov["machine"]["cpu"]
    created = datetime.datetime.fromisoformat(prov["created"])
    assert created.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 600


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_sha_only_for_the_package_own_checkout(tmp_path):
    plain = load_copy(tmp_path / "plain")  # not in a repository: an installed wheel
    assert plain.source_commit() == {"git_sha": None, "git_dirty": None}

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("x\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "init")
    untracked = load_copy(repo)  # inside a checkout but not its file (a venv inside a checkout)
    assert untracked.source_commit() == {"git_sha": None, "git_dirty": None}

    git(repo, "add", "pkg/_machine.py")
    git(repo, "commit", "-q", "-m", "add")
    sha = git(repo, "rev-parse", "HEAD")
    assert untracked.source_commit() == {"git_sha": sha, "git_dirty": False}
    (repo / "README").write_text("changed\n")
    assert untracked.source_commit() == {"git_sha": sha, "git_dirty": True}


def test_cpu_model_name_from_cpuinfo():
    lines = ["processor\t: 0\n", "model name\t: AMD EPYC 9B14\n", "flags\t\t: fpu avx2 avx512_vnni\n"]
    assert _machine._cpuinfo_field(lines, "model name") == "AMD EPYC 9B14"
    assert _machine._cpuinfo_field(lines, "flags") == "fpu avx2 avx512_vnni"
    assert _machine._cpuinfo_field(lines, "microcode") is None


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo on this OS")
def test_cpu_flags_are_the_listed_ones_this_cpu_has():
    flags = (_machine._cpuinfo_field(Path("/proc/cpuinfo").read_text().splitlines(), "flags") or "").split()
    info = _machine.machine_info()
    assert info["cpu_flags"] == [f for f in _machine.CPU_FLAGS if f in flags]  # report order, nothing else
    assert set(info["int8_isa"]) <= set(info["cpu_flags"])  # every int8 ISA flag is among the listed ones
