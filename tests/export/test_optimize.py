"""``hf-lnorm optimize``: the main job end to end on a tiny BERT (quick settings), and its bad input."""

import json
from pathlib import Path

import pytest
import torch
import transformers

from hf_lnorm.cli import main
from hf_lnorm.export import onnx_op_types
from hf_lnorm.export.optimize import VARIANTS
from hf_lnorm.loading import default_qa_model

from ..conftest import minilm_path


@pytest.fixture(scope="module")
def tiny_qa_dir(tmp_path_factory):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("opt") / "tiny-bert-qa"
    torch.manual_seed(0)
    transformers.BertForQuestionAnswering(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _assert_int8_quality(row, fp32, questions):
    """An int8 row's quality numbers are consistent: its logits differ from fp32 (it is quantized), its span
    agreement counts whole questions, and where every span agrees its F1 is fp32's."""
    assert row["max_abs_err"] > 1e-6, f"{row['variant']}: no quantization error, so no int8 ran"
    agreed = row["span_agreement"] * questions
    assert agreed == pytest.approx(round(agreed)) and 0 <= round(agreed) <= questions, row
    if round(agreed) == questions:
        assert row["f1"] == pytest.approx(fp32["f1"]), row


def test_optimize_quick_writes_table_json_and_plot(tiny_qa_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["optimize", str(tiny_qa_dir), "--quick", "--output", str(out), "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    assert "span agree" in text and "pytorch-fp32" in text and "ort-int8-static" in text
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert {r["variant"] for r in rows} == set(VARIANTS)
    assert {(r["batch"], r["seq"]) for r in rows} == {(1, 32), (1, 64), (2, 32), (2, 64)}
    assert report["questions"] == 8  # --quick
    assert report["provenance"]["versions"]["onnxruntime"] and report["provenance"]["created"].endswith("+00:00")
    for r in rows:
        assert set(r) >= {"variant", "batch", "seq", "median_ms", "max_abs_err", "span_agreement", "f1"}
        assert r["median_ms"] > 0
    by = {(r["variant"], r["seq"]): r for r in rows if r["batch"] == 1}
    for seq in (32, 64):
        assert by[("pytorch-patched", seq)]["max_abs_err"] <= 1e-4  # patch is equivalent
        assert by[("ort-fp32", seq)]["max_abs_err"] <= 1e-4  # fused fp32 graph is too
        assert by[("ort-fp32", seq)]["span_agreement"] == 1.0
        for variant in ("ort-int8", "ort-int8-per-token", "ort-int8-static"):
            _assert_int8_quality(by[(variant, seq)], by[("pytorch-fp32", seq)], report["questions"])
    assert report["fused_ops"]["SkipLayerNormalization"] >= 3
    assert (out / "report.png").stat().st_size > 1000
    for name in ("onnx/model.onnx", "model_optimized.onnx", "model_int8_dynamic.onnx", "model_int8_per_token.onnx",
                 "model_int8_static.onnx"):
        assert (out / name).is_file(), name
    from hf_lnorm.outputs import MARKER, is_hf_lnorm_output

    assert is_hf_lnorm_output(out) and is_hf_lnorm_output(out / "onnx")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER]  # no scratch graphs left
    report_files = (report["qa_file"], report["calibration_file"])
    assert [Path(f).name for f in report_files] == ["dev.json", "sample_train.json"]  # never calibrated on the eval set
    assert f"CPU layer norms: {report['fused_ops']['SkipLayerNormalization']} SkipLayerNormalization -> Add" in " ".join(report["notes"])
    assert onnx_op_types(out / "model_optimized.onnx")["com.microsoft::SkipLayerNormalization"] == 0
    note = next(n for n in report["notes"] if n.startswith("per-token int8 (hf_lnorm)"))
    # attention-out, FFN in and FFN out of both layers; with attention unfused (dynamo graph) Q, K and V as well
    assert ("matmul 6" if report["export_method"] == "optimum" else "matmul 12") in note


def test_optimize_bad_input_exits_2(tmp_path, capsys):
    assert main(["optimize", str(tmp_path / "missing-model"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    assert main(["optimize", "--output", str(tmp_path / "o")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["optimize", "--output", str(tmp_path / "p"), "--repeats", "0"]) == 2
    assert not (tmp_path / "p").exists()


def test_default_model_is_resolvable():
    source, description = default_qa_model()
    assert source and description
    assert (transformers.AutoConfig.from_pretrained(source).model_type) == "bert"


def test_verify_tolerance_scales_with_the_logits():
    import numpy as np

    from hf_lnorm.export.optimize import check_equivalent

    big = (np.full((2, 8), 10.0, np.float32), np.full((2, 8), -4.0, np.float32))
    err, tol = check_equivalent(big, (big[0] + 5e-4, big[1]))
    assert tol == pytest.approx(1e-3) and err == pytest.approx(5e-4, rel=1e-3)
    with pytest.raises(RuntimeError, match=r"differs from the stock model by 2\.00e-03 \(> 1\.0e-03, 1e-4 of the largest logit 10\.00\)"):
        check_equivalent(big, (big[0], big[1] - 2e-3))
    small = (np.full((1, 4), 0.5, np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(RuntimeError, match=r"\(> 1\.0e-04"):  # at least 1e-4, even for small logits
        check_equivalent(small, (small[0] + 3e-4, small[1]))
