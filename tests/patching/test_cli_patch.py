"""``hf-lnorm patch`` end to end, in a subprocess like a user would run it."""

import json
import subprocess
import sys

import pytest
import torch

from hf_lnorm.cli import main
from hf_lnorm.commands.patch import QUANTIZED_RTOL

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
    assert res.returncode == 2 and "argument --mode: invalid choice: 'int3'" in res.stderr
    res = _cli("patch", "--help")
    assert res.returncode == 0 and "--include" in res.stdout


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import AutoModel

    path = tmp_path_factory.mktemp("models") / "bert"
    torch.manual_seed(0)
    AutoModel.from_config(tiny_config("bert")).save_pretrained(path)
    return str(path)


def test_fused_mode_is_checked_at_fp32_tolerance(tiny_bert, capsys):
    assert main(["patch", tiny_bert, "--mode", "fused"]) == 0
    out = capsys.readouterr().out
    assert "tolerance: max abs err <= atol 1e-05 + rtol 0 x max|reference| (default for mode fused)" in out
    assert "outputs match" in out


def test_quantized_mode_is_checked_at_an_int8_tolerance(tiny_bert, tmp_path, capsys):
    assert main(["patch", tiny_bert, "--mode", "quantized", "--json", str(tmp_path / "q.json")]) == 0
    out = capsys.readouterr().out
    assert f"atol 0 + rtol {QUANTIZED_RTOL:g} x max|reference| (default for mode quantized)" in out
    assert "outputs match" in out
    payload = json.loads((tmp_path / "q.json").read_text())
    assert payload["ok"] and payload["rtol"] == QUANTIZED_RTOL
    last = payload["checks"]["last_hidden_state"]
    # int8 really ran: the error is far above fp32 rounding, and within the documented bound
    assert 1e-4 < last["max_abs_err"] <= QUANTIZED_RTOL * last["max_abs_ref"]
    # the fp32 bound, asked for explicitly, rejects the same int8 outputs
    assert main(["patch", tiny_bert, "--mode", "quantized", "--atol", "1e-5"]) == 1
    out = capsys.readouterr().out
    assert "atol 1e-05 + rtol 0 x max|reference| (from --atol/--rtol)" in out and "outputs DIFFER" in out
