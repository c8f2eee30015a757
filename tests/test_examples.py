"""Every script in examples/ runs in its ``--quick`` form, in a fresh interpreter, and prints what it promises.

Each script gets an empty working directory and its own ``--output-dir``; the tests
check its exit status, the numbers it prints and the files it writes, and that it
wrote nothing into the working directory. ``test_every_example_is_tested`` fails
when a script is added to examples/ without a test here or a line in the indexes.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .hub_server import HubServer

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
TESTS = {}  # script name -> name of the test that runs it


def runs(script):
    def mark(test):
        TESTS[script] = test.__name__
        return test
    return mark


def run_example(script, tmp_path, *args, env=None, expect_rc=0):
    """Run ``examples/<script> --quick --output-dir <tmp>/out`` from an empty directory; return (stdout, output dir)."""
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    full_env.pop("HF_ENDPOINT", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", "--output-dir", str(out), *args],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect_rc, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert list(cwd.iterdir()) == [], f"{script} wrote into its working directory: {sorted(os.listdir(cwd))}"
    return proc.stdout, out


def number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text}"
    return float(match.group(1))


def test_every_example_is_tested_and_listed():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts and scripts == sorted(TESTS), f"examples without a test here: {sorted(set(scripts) - set(TESTS))}"
    assert all(name in globals() for name in TESTS.values())
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.name != "__pycache__") == sorted([*scripts, "README.md"])
    for index in (EXAMPLES / "README.md", REPO_ROOT / "docs" / "examples.md"):
        text = index.read_text(encoding="utf-8")
        assert [s for s in scripts if f"examples/{s} --quick" not in text and f"{s} --quick" not in text] == [], index


@pytest.mark.slow
@runs("patch_any_model.py")
def test_patch_any_model(tmp_path):
    stdout, out = run_example("patch_any_model.py", tmp_path)
    assert stdout.count("hf_lnorm.patch: 5 norm(s) patched (fused), 0 skipped") == 2, stdout
    assert "rms_norm_llama  patched" in stdout and "layer_norm  patched" in stdout
    errors = [float(x) for x in re.findall(r"max \|patched - stock\| = (\S+)", stdout)]
    assert len(errors) == 2 and all(err < 1e-4 for err in errors), errors
    assert stdout.count("unpatched outputs identical to stock: True") == 2
    reports = json.loads((out / "patch_report.json").read_text())
    assert [len(r) for r in reports.values()] == [5, 5]
    assert all(rec["status"] == "patched" for r in reports.values() for rec in r)


@pytest.mark.slow
@runs("train_and_push_gpt.py")
def test_train_and_push_gpt_to_a_local_hub(tmp_path):
    with HubServer() as server:
        env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_TOKEN": "hf_test_token_for_local_hub",
               "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_MODULES_CACHE": str(tmp_path / "modules")}
        stdout, out = run_example("train_and_push_gpt.py", tmp_path, "--endpoint", server.url, "--repo-id", "tiny-gpt",
                                  env=env)
        files = set(server.repos["tester/tiny-gpt"].files)
    losses = [float(x) for x in re.findall(r"step +\d+ +loss (\S+)", stdout)]
    assert len(losses) >= 2 and losses[-1] < losses[0] - 0.5, losses
    assert f"pushed to {server.url} as tester/tiny-gpt" in stdout
    assert {"config.json", "model.safetensors", "modeling_lnorm_gpt.py", "tokenizer.json", "README.md"} <= files
    assert "model.safetensors" in server.downloads
    assert re.search(r"generated: 'ROMEO:.{10,}'", stdout), stdout
    assert (out / "lnorm-gpt-shakespeare" / "config.json").is_file()


def test_train_and_push_gpt_refuses_an_existing_output_dir(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user file")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, str(EXAMPLES / "train_and_push_gpt.py"), "--output-dir", str(tmp_path / "out")],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "already exists" in proc.stderr, proc.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "user file"


@pytest.mark.slow
@runs("quantize_and_check.py")
def test_quantize_and_check(tmp_path):
    stdout, out = run_example("quantize_and_check.py", tmp_path)
    assert "12 evaluation questions, 128 tokens, 8 calibration questions" in stdout
    rows = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in rows][0] == "fp32" and len(rows) == 5
    assert rows[0]["agreement"] == 1.0 and rows[0]["max_logit_err"] == 0.0
    for row in rows[1:]:  # int8 really ran (logits moved) and kept most answers
        assert 0.0 < row["max_logit_err"] < 10.0 and row["agreement"] >= 0.75, row
        assert f"{row['variant']:36s} {row['agreement']:9.1%}" in stdout


@pytest.mark.slow
@runs("export_and_serve_ort.py")
def test_export_and_serve_ort(tmp_path):
    stdout, out = run_example("export_and_serve_ort.py", tmp_path)
    assert (out / "onnx" / "model.onnx").is_file()
    assert number(r"opset \d+, (\d+) LayerNormalization ops", stdout) == 13  # MiniLM: 6 layers x 2 + embeddings
    assert number(r"max \|ONNX Runtime - PyTorch\| logits: (\S+)", stdout) < 1e-3
    assert number(r"span agreement with PyTorch (\S+)%", stdout) == 100.0
    assert re.search(r"ONNX Runtime answer: '.+'", stdout), stdout


@pytest.mark.slow
@runs("finetune_qa_lora.py")
def test_finetune_qa_lora(tmp_path):
    stdout, out = run_example("finetune_qa_lora.py", tmp_path)
    first, last = number(r"training loss (\S+) ->", stdout), number(r"training loss \S+ -> (\S+)", stdout)
    assert last < first, stdout
    assert number(r"over (\d+) steps", stdout) == 12
    assert re.search(r"24 held-out questions: EM \S+ -> \S+, F1 \S+ -> \S+", stdout), stdout
    assert {p.name for p in (out / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
