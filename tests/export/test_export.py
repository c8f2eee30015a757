"""Export of patched Hugging Face models: ONNX Runtime equivalence, op types, TensorRT target, bad input.

Both transformers lines run these: transformers 4.57 takes Optimum's exporter,
5.x the torch.onnx (dynamo) path; ``EXPECTED_METHOD`` says which one each venv must take.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from packaging import version

import hf_lnorm
from hf_lnorm.cli import main
from hf_lnorm.export import (
    METHOD_DYNAMO,
    METHOD_OPTIMUM,
    ModelNotFoundError,
    OutputExistsError,
    UnsupportedArchitectureError,
    export,
    onnx_op_types,
    optimum_available,
    standard_op_problems,
)

TF5 = version.parse(transformers.__version__).major >= 5
EXPECTED_METHOD = METHOD_DYNAMO if TF5 else METHOD_OPTIMUM


def tiny_bert_qa():
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    return transformers.BertForQuestionAnswering(cfg).eval()


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(cfg).eval()


def tiny_vit():
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                 image_size=16, patch_size=4, num_labels=3)
    return transformers.ViTForImageClassification(cfg).eval()


def _count_layernorms(model):
    return sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())


def test_export_path_matches_transformers_line():
    assert optimum_available() == (not TF5)


@pytest.mark.parametrize(
    "build, task",
    [(tiny_bert_qa, "question-answering"), (tiny_gpt2, "text-generation"), (tiny_vit, "image-classification")],
    ids=["bert", "gpt2", "vit"],
)
def test_patched_model_exports_with_layernormalization(tmp_path, build, task):
    model = hf_lnorm.patch(build())
    assert hf_lnorm.patch_report(model).patched
    result = export(model, tmp_path / "out", task=task)
    assert result.method == EXPECTED_METHOD
    assert result.onnx_files == ["model.onnx"]
    ops = onnx_op_types(tmp_path / "out" / "model.onnx")
    # every norm is one standard LayerNormalization node, nothing custom
    assert ops["LayerNormalization"] == _count_layernorms(model)
    assert standard_op_problems(tmp_path / "out" / "model.onnx") == []
    assert result.opset >= 17
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4
    assert (tmp_path / "out" / "config.json").is_file()
    if task == "question-answering":
        _check_new_shapes(model, tmp_path / "out" / "model.onnx")
        _check_fused_graph_is_flagged(model, tmp_path / "out" / "model.onnx", tmp_path)


def _check_new_shapes(model, onnx_path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(3)
    for batch, seq in [(1, 7), (4, 40)]:
        ids = torch.randint(0, 99, (batch, seq), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, seq // 2 :] = 0
        tt = torch.zeros_like(ids)
        got = sess.run(["start_logits", "end_logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": tt.numpy()})
        with torch.inference_mode():
            ref = model(input_ids=ids, attention_mask=mask, token_type_ids=tt)
        assert np.abs(got[0] - ref.start_logits.numpy()).max() < 1e-4
        assert np.abs(got[1] - ref.end_logits.numpy()).max() < 1e-4


def _check_fused_graph_is_flagged(model, onnx_path, tmp_path):
    from hf_lnorm.export.ort import optimize_onnx

    optimize_onnx(onnx_path, tmp_path / "fused.onnx", model.config)
    problems = standard_op_problems(tmp_path / "fused.onnx")
    assert problems and "com.microsoft::" in problems[-1]


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def saved_bert(tmp_path):
    path = tmp_path / "bert-qa"
    tiny_bert_qa().save_pretrained(path)
    return path


def test_cli_tensorrt_target_has_only_standard_ops(saved_bert, tmp_path, capsys):
    out = tmp_path / "trt"
    assert main(["export", str(saved_bert), str(out), "--target", "tensorrt", "--opset", "17"]) == 0
    text = capsys.readouterr().out
    # the command says which export path it took
    assert ("Optimum ONNX exporter" in text) == (EXPECTED_METHOD == METHOD_OPTIMUM)
    assert ("torch.onnx.export (dynamo)" in text) == (EXPECTED_METHOD == METHOD_DYNAMO)
    assert "LayerNormalization" in text and "max |err|" in text
    ops = onnx_op_types(out / "model.onnx")
    assert all("::" not in op for op in ops), ops  # no com.microsoft / custom-domain ops
    assert ops["LayerNormalization"] == 5
    assert standard_op_problems(out / "model.onnx", min_opset=17) == []
    from hf_lnorm.export.tensorrt import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:  # no engine can be built here: one line says why, then the trtexec command
        assert f"TensorRT engine not built: {reason}" in text
        assert "trtexec --onnx=model.onnx" in text and "--minShapes=input_ids:1x1" in text
    else:
        assert (out / "model.plan").is_file()


# --------------------------------------------------------------------------- bad input


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return [line for line in err if line.startswith("hf-lnorm: error:")]


def test_missing_path_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "no-such-dir"), str(tmp_path / "out")]) == 2
    lines = _one_line_error(capsys)
    assert len(lines) == 1 and "does not exist" in lines[0]
    assert not (tmp_path / "out").exists()


def test_unknown_hub_id_exits_2(tmp_path, capsys):
    assert main(["export", "hf-lnorm-no-such-org/no-such-model", str(tmp_path / "out")]) == 2
    lines = _one_line_error(capsys)
    assert len(lines) == 1 and "hf-lnorm-no-such-org/no-such-model" in lines[0]


def test_existing_output_needs_overwrite(saved_bert, tmp_path, capsys):
    from hf_lnorm.outputs import write_marker

    out = tmp_path / "out"
    out.mkdir()
    write_marker(out, "hf-lnorm export")  # an earlier hf-lnorm output (other folders: tests/export/test_output_safety.py)
    (out / "keep.txt").write_text("x")
    assert main(["export", str(saved_bert), str(out)]) == 2
    assert "--overwrite" in _one_line_error(capsys)[0]
    assert (out / "keep.txt").is_file()
    with pytest.raises(OutputExistsError):
        export(str(saved_bert), out)
    assert main(["export", str(saved_bert), str(out), "--overwrite"]) == 0
    assert (out / "model.onnx").is_file() and not (out / "keep.txt").exists()


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_interrupted_export_leaves_no_partial_dir(saved_bert, tmp_path, monkeypatch, exc):
    import hf_lnorm.export.onnx as ex

    def half_export(model, out_dir, *args, **kwargs):
        (Path(out_dir) / "model.onnx").write_bytes(b"partial")
        raise exc

    monkeypatch.setattr(ex, "_export_optimum", half_export)
    monkeypatch.setattr(ex, "_export_dynamo", half_export)
    parent = tmp_path / "exports"
    parent.mkdir()
    with pytest.raises(type(exc)):
        export(str(saved_bert), parent / "out")
    assert list(parent.iterdir()) == []  # neither the target nor a temp dir is left


def test_failed_overwrite_keeps_previous_output(saved_bert, tmp_path, monkeypatch):
    import hf_lnorm.export.onnx as ex

    from hf_lnorm.outputs import write_marker

    out = tmp_path / "out"
    out.mkdir()
    write_marker(out, "hf-lnorm export")
    (out / "model.onnx").write_bytes(b"previous export")
    before = (out / "model.onnx").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ex, "_export_optimum", boom)
    monkeypatch.setattr(ex, "_export_dynamo", boom)
    with pytest.raises(RuntimeError):
        export(str(saved_bert), out, overwrite=True)
    assert (out / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert-qa", "out"]


def test_unsupported_architecture_is_named(tmp_path, capsys):
    path = tmp_path / "nsp"
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    transformers.BertForNextSentencePrediction(cfg).save_pretrained(path)
    assert main(["export", str(path), str(tmp_path / "out")]) == 2
    lines = _one_line_error(capsys)
    assert len(lines) == 1 and "BertForNextSentencePrediction" in lines[0] and "unsupported architecture" in lines[0]
    with pytest.raises(UnsupportedArchitectureError, match="BertForNextSentencePrediction"):
        export(str(path), tmp_path / "out2")
    assert not (tmp_path / "out").exists()


def test_python_api_errors_name_the_value(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nope"):
        export(str(tmp_path / "nope"), tmp_path / "out")
    with pytest.raises(ValueError, match="opset 16"):
        export(tiny_bert_qa(), tmp_path / "out", opset=16)
    with pytest.raises(ValueError, match="'tpu'"):
        export(tiny_bert_qa(), tmp_path / "out", target="tpu")
    with pytest.raises(ValueError, match="'summarize-poems'"):
        export(tiny_bert_qa(), tmp_path / "out", task="summarize-poems")
