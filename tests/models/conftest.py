"""Tiny configs and helpers shared by the model-family tests (ModelTester style: hidden 32, 2 layers)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import hf_lnorm  # noqa: F401  (registers the Auto classes)
from hf_lnorm.models import LNormGPTConfig, LNormSeq2SeqConfig

from ..conftest import load_script  # noqa: F401 (the family tests import it from here)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_gpt_config(**overrides) -> LNormGPTConfig:
    """A 2-layer, 32-wide LNormGPT config with dropout off (deterministic outputs)."""
    values = dict(
        vocab_size=99,
        max_position_embeddings=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        num_labels=3,
    )
    values.update(overrides)
    return LNormGPTConfig(**values)


def tiny_seq2seq_config(**overrides) -> LNormSeq2SeqConfig:
    """A 2+3-layer, 32-wide LNormSeq2Seq config with dropout off."""
    values = dict(
        vocab_size=60,
        max_position_embeddings=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_decoder_layers=3,
        num_attention_heads=4,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    values.update(overrides)
    return LNormSeq2SeqConfig(**values)


class ForwardSpy:
    """Records, for every forward call of a model, the query length and whether a KV cache came in."""

    def __init__(self, model, key="input_ids"):
        self.calls = []
        self.key = key
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get(self.key)
        if ids is None and args:
            ids = args[0]
        cache = kwargs.get("past_key_values", None)
        if cache is None:
            cache = kwargs.get("cache", None)
        self.calls.append((ids.shape[-1], cache is not None and cache.get_seq_length() > 0))

    def remove(self):
        self.handle.remove()


def run_python(code: str, env_extra=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (offline Hub, private HF cache) and fail the test on a non-zero exit."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"})
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc


# Prepended to subprocess code: make `import hf_lnorm` fail even though the package is installed (editable),
# and prove it does, so remote code cannot lean on it.
BLOCK_HF_LNORM = """
import sys
class _BlockHfLnorm:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_lnorm" or name.startswith("hf_lnorm."):
            raise ImportError("hf_lnorm is blocked in this process")
        return None
sys.meta_path.insert(0, _BlockHfLnorm())
sys.path = [p for p in sys.path if "hf_lnorm" not in p and p not in ("", ".")]
try:
    import hf_lnorm
except ImportError:
    pass
else:
    raise SystemExit("hf_lnorm is importable; the remote-code test would prove nothing")
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every family test runs with one intra-op thread (``tests/conftest.py::one_thread``)."""
    yield


@pytest.fixture
def tmp_hf_home(tmp_path, monkeypatch):
    """A private HF_HOME so remote-code modules and downloads do not touch the user's cache."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def family_norms(model) -> list:
    """The families' norm modules in ``model`` (``LNormLayerNorm`` and ``LNormRMSNorm``)."""
    from hf_lnorm.models import layers

    return [m for m in model.modules() if isinstance(m, (layers.LNormLayerNorm, layers.LNormRMSNorm))]


def assert_norm_paths_agree(monkeypatch, model, forward, where: str, atol: float = 1e-6) -> None:
    """A family's norms give plain torch's numbers on every path, and each path is the one named.

    ``forward()`` runs with gradients (the fused ops' aten path), under ``no_grad`` and ``inference_mode``
    (the default CPU backend, the C++ kernel: asserted from the profiler), and with hf_lnorm's ops
    unavailable (``FUSED_NORMS_AVAILABLE=False``: the plain-torch code remote code runs without hf_lnorm,
    which must not call the kernel); every output equals the plain-torch one within ``atol``.
    """
    from hf_lnorm.models import norm_layers_lnorm

    from ..backend_check import CPP_EVENT, check_default_backend, norm_calls

    assert norm_layers_lnorm.FUSED_NORMS_AVAILABLE, "hf_lnorm.norms.ops is importable here, so the families must use it"
    outputs = check_default_backend(forward, n_covered=len(family_norms(model)), where=where)
    # patched where `use_fused_norms` reads it
    monkeypatch.setattr(norm_layers_lnorm, "FUSED_NORMS_AVAILABLE", False)
    with torch.no_grad():
        plain, calls = norm_calls(forward)
    assert calls.get(CPP_EVENT, 0) == 0, f"{where}: the plain-torch path called the C++ kernel: {dict(calls)}"
    for mode, out in outputs.items():
        torch.testing.assert_close(out, plain, atol=atol, rtol=atol, msg=lambda m: f"{where} {mode}: {m}")
