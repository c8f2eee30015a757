"""`hf-lnorm bench quantized`: usage errors exit 2; a tiny run on the offline MiniLM writes the JSON rows."""

import json
import os

import pytest
import torch

from hf_lnorm.cli import main
from hf_lnorm.resources import data_file

from ..conftest import minilm_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("argv", [
    ["--variants", "fp32,int4"],
    ["--batch", "0"],
    ["--alpha", "1.5"],
    ["--text-file", "/nonexistent/text.txt"],
])
def test_bench_quantized_usage_errors_exit_2(argv, capsys):
    assert main(["bench", "quantized", *argv]) == 2
    err = capsys.readouterr().err
    # one error line (argparse rejects numbers itself and prints its usage lines first)
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("hf-lnorm") and err.strip().splitlines()[-1] == errors[0]


def test_bench_quantized_tiny_run_writes_rows(tmp_path, capsys):
    text = os.path.join(REPO, "hf_lnorm", "data", "shakespeare_sample.txt")
    qa_file = str(data_file("qa", "sample_dev.json"))
    out = tmp_path / "bench.json"
    argv = ["bench", "quantized", "--model", minilm_path(), "--batch", "2", "--seq", "32", "--repeats", "1",
            "--warmup", "0", "--variants", "fp32,torch-dynamic-int8,hf_lnorm-int8,hf_lnorm-int8-smooth,hf_lnorm-int8-readers",
            "--text-file", text, "--qa-file", qa_file,
            "--qa-examples", "8", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "torch-dynamic-int8", "hf_lnorm-int8", "hf_lnorm-int8-smooth",
                                            "hf_lnorm-int8-readers"]
    assert data["provenance"]["versions"]["torch"] == torch.__version__ and "git_sha" in data["provenance"]
    for r in rows:
        assert set(r) >= {"variant", "model", "median_ms", "weight_bytes", "metric", "value"}
        assert r["median_ms"] > 0 and r["weight_bytes"] > 0
        assert r["metric"] in ("span_agreement", "cosine_vs_fp32")
    fp32 = rows[0]
    assert fp32["value"] == 1.0
    assert rows[2]["weight_bytes"] < rows[4]["weight_bytes"] < fp32["weight_bytes"]  # int8 copies: all / readers
    # the default mode runs every Linear in int8; all_linears=False only the norms' readers
    assert rows[2]["all_linears"] is True and rows[4]["all_linears"] is False
    assert rows[2]["int8_layers"] > rows[4]["int8_layers"] > 0
    assert "hf_lnorm-int8" in capsys.readouterr().out


def test_default_variant_list():
    import argparse

    from hf_lnorm.benchmarks.quantized import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # the baselines, the default quantized mode and its explicit alternatives, all run by default
    assert parser.parse_args([]).variants.split(",") == [
        "fp32", "torch-dynamic-int8", "torchao-int8", "hf_lnorm-int8", "hf_lnorm-int8-smooth",
        "hf_lnorm-int8-readers", "hf_lnorm-int8-smooth-readers"]
