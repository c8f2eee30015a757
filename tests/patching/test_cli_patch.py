"""``hf-lnorm patch`` end to end, in a subprocess like a user would run it."""

import json
import subprocess
import sys

from .archs import tiny_config


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hf_lnorm.cli", *args], capture_output=True, text=True, timeout=300)


def test_patch_command_lists_norms_and_checks_outputs(tmp_path):
    from transformers import AutoModel

    AutoModel.from_config(tiny_config("llama")).save_pretrained(tmp_path / "llama")
    res = _cli("patch", str(tmp_path / "llama"), "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert "layers.0.input_layernorm" in res.stdout and "rms_norm_llama" in res.stdout
    assert "outputs match" in res.stdout
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["max_abs_err"] <= 1e-5 and len(payload["norms"]) == 5
    assert all(n["status"] == "patched" for n in payload["norms"])


def test_patch_command_usage_errors_exit_2(tmp_path):
    res = _cli("patch", str(tmp_path / "missing" / "model"))
    assert res.returncode == 2
    # (third-party import noise, e.g. torchao's, may precede it: our message is one line, the last)
    ours = [l for l in res.stderr.strip().splitlines() if l.startswith("hf-lnorm")]
    assert ours == [f"hf-lnorm: error: model path '{tmp_path / 'missing' / 'model'}' does not exist"]
    assert res.stderr.strip().splitlines()[-1] == ours[0]
    res = _cli("patch", "--mode", "int3", str(tmp_path))
    assert res.returncode == 2 and "unknown mode 'int3'" in res.stderr
    res = _cli("patch", "--help")
    assert res.returncode == 0 and "--include" in res.stdout
