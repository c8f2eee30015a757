"""Usage errors of every ``hf-lnorm`` command: exit 2, one error line naming the flag and value, no work done."""

import pytest
import torch
import transformers

import hf_lnorm.loading
from hf_lnorm.cli import main

BAD_FLAGS = [
    # (argv, flag, value named in the message, what is accepted)
    (["patch", "--backend", "bogus"], "--backend", "'bogus'", "choose from"),
    (["patch", "--mode", "int3"], "--mode", "'int3'", "quantized"),
    (["patch", "--task", "translation"], "--task", "'translation'", "question-answering"),
    (["patch", "--seq-len", "0"], "--seq-len", "'0'", ">= 1"),
    (["patch", "--seq-len", "ten"], "--seq-len", "'ten'", ">= 1"),
    (["patch", "--atol", "-1"], "--atol", "'-1'", ">= 0"),
    (["patch", "--rtol", "nan"], "--rtol", "'nan'", ">= 0"),
    (["optimize", "--threads", "-1"], "--threads", "'-1'", ">= 0"),
    (["optimize", "--batch-sizes", "0,8"], "--batch-sizes", "'0,8'", ">= 1"),
    (["optimize", "--seq-lens", "128,x"], "--seq-lens", "'128,x'", ">= 1"),
    (["optimize", "--eval-examples", "0"], "--eval-examples", "'0'", ">= 1"),
    (["optimize", "--calibration-examples", "-2"], "--calibration-examples", "'-2'", ">= 1"),
    (["optimize", "--repeats", "0"], "--repeats", "'0'", ">= 1"),
    (["optimize", "--opset", "16"], "--opset", "'16'", ">= 17"),
    (["optimize", "--smooth-alpha", "1.5"], "--smooth-alpha", "'1.5'", "[0, 1]"),
    (["export", "some/model", "out", "--opset", "16"], "--opset", "'16'", ">= 17"),
    (["bench", "norms", "--repeats", "0"], "--repeats", "'0'", ">= 1"),
    (["bench", "norms", "--threads", "0"], "--threads", "'0'", ">= 1"),
    (["bench", "norms", "--e2e-seq", "-8"], "--e2e-seq", "'-8'", ">= 1"),
    (["bench", "quantized", "--batch", "0"], "--batch", "'0'", ">= 1"),
    (["bench", "quantized", "--warmup", "-1"], "--warmup", "'-1'", ">= 0"),
    (["bench", "quantized", "--alpha", "2"], "--alpha", "'2'", "[0, 1]"),
    (["bench", "quantized", "--qa-examples", "0"], "--qa-examples", "'0'", ">= 1"),
    (["bench", "generate", "--layers", "0"], "--layers", "'0'", ">= 1"),
    (["bench", "compile", "--rounds", "0"], "--rounds", "'0'", ">= 1"),
    (["bench", "compile", "--shapes", "8by384"], "--shapes", "'8by384'", "BATCHxSEQ"),
    (["bench", "compile", "--train-shape", "8x0"], "--train-shape", "'8x0'", ">= 1"),
    (["bench", "generate", "--new-tokens", "-5"], "--new-tokens", "'-5'", ">= 1"),
]


@pytest.fixture
def loads(monkeypatch):
    """Records every attempt to find or load a model; the usage errors below must make none."""
    calls = []

    def record(name):
        def fake(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called during a usage error")
        return fake

    for name in ("load_model", "resolve_model", "default_qa_model", "bundled_model_path"):
        monkeypatch.setattr(hf_lnorm.loading, name, record(name))
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(record("from_pretrained")))
    return calls


def _error_lines(err: str):
    return [line for line in err.splitlines() if "error:" in line]


@pytest.mark.parametrize("argv, flag, value, accepted", BAD_FLAGS, ids=[" ".join(a) for a, *_ in BAD_FLAGS])
def test_bad_flag_is_a_usage_error_before_any_work(argv, flag, value, accepted, loads, capsys):
    assert main(argv) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert f"argument {flag}" in lines[0] and value in lines[0] and accepted in lines[0], lines[0]
    assert loads == []


def test_unavailable_backend_is_rejected_before_loading(loads, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so the triton backend may be too")
    assert main(["patch", "--backend", "triton"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("hf-lnorm: error: --backend triton:") and "not available" in lines[0]
    assert loads == []


def test_unbuilt_cpp_backend_is_rejected_before_loading(loads, capsys, monkeypatch):
    monkeypatch.setenv("HF_LNORM_CPU_KERNELS", "0")
    assert main(["patch", "--backend", "cpp"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--backend cpp" in lines[0] and "HF_LNORM_CPU_KERNELS=0" in lines[0], lines
    assert loads == []


def test_help_still_exits_0(capsys):
    assert main(["patch", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--backend" in out and "quantized" in out and "--rtol" in out
