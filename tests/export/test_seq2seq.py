"""LNormSeq2Seq through ``hf-lnorm export``: Optimum's encoder / decoder / decoder-with-past layout, by
Optimum's exporter on transformers 4.57 and by torch.onnx (dynamo) on 5.x; ONNX Runtime against PyTorch."""

import pytest
import torch

import hf_lnorm  # noqa: F401  (registers the families)
from hf_lnorm.cli import main
from hf_lnorm.export import METHOD_DYNAMO, UnsupportedArchitectureError, default_method, export, onnx_op_types
from hf_lnorm.export.seq2seq import TEXT, OrtEncoderDecoder, dynamo_with_past, verify
from hf_lnorm.models import LNormSeq2SeqForConditionalGeneration, LNormSeq2SeqModel

from tests.models.conftest import tiny_seq2seq_config  # 2 + 3 layers, hidden 32

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

OPTIMUM = default_method() == "optimum"
ENC_NORMS, DEC_NORMS = 2 * 2 + 1, 3 * 3 + 1  # encoder: 2 blocks x 2 + final; decoder: 3 blocks x 3 + final


def tiny_model(**overrides):
    torch.manual_seed(0)
    # a wide init keeps greedy decoding of a random model from collapsing onto one token
    return LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config(initializer_range=0.4, **overrides)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model saved, then exported with past by the CLI (Optimum on 4.57, torch.onnx dynamo on 5.x)."""
    root = tmp_path_factory.mktemp("seq2seq")
    model = tiny_model()
    model.save_pretrained(root / "model")
    assert main(["export", str(root / "model"), str(root / "onnx"), "--task", "text2text-generation-with-past"]) == 0
    return model, root / "onnx"


def test_cli_writes_optimum_seq2seq_layout_with_standard_ops(exported):
    model, out = exported
    files = {p.name for p in out.glob("*.onnx")}
    assert files == {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"}
    for name in files:
        ops = onnx_op_types(out / name)
        assert ops["LayerNormalization"] == (ENC_NORMS if name.startswith("encoder") else DEC_NORMS), name
        assert not [op for op in ops if "::" in op], name
    assert (out / "config.json").exists()


def test_every_graph_matches_pytorch_on_other_sizes_and_padding(exported):
    model, out = exported
    assert verify(TEXT, model, out) < 1e-4  # batch 3, source 9 with the last row padded, 4 target tokens + 1 cached step
    # batch 1 with no padding, and batch 2 with a longer source padded to half its length
    for batch, source, length in ((1, 5, 1), (2, 12, 6)):
        inputs = TEXT.example_inputs(model.config, batch, source, length, 7)
        if batch == 2:
            inputs["attention_mask"][0, source // 2 :] = 0
        assert verify(TEXT, model, out, inputs) < 1e-4


def test_verify_notices_a_model_that_differs_from_the_graphs(exported):
    model, out = exported
    other = tiny_model()
    with torch.no_grad():
        other.model.decoder.final_norm.weight.mul_(1.5)
    assert verify(TEXT, other, out) > 1e-2


def test_greedy_generation_through_ort_sessions_gives_the_same_tokens(exported):
    model, out = exported
    graphs = OrtEncoderDecoder(TEXT, out)
    assert graphs.has_past
    src = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 0, 0, 0]])
    mask = (src != 0).long()
    ours = model.generate(src, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1)
    theirs = graphs.generate(src, mask, model.config, max_new_tokens=12)
    assert torch.equal(ours, theirs)
    assert len(set(ours[1, 1:].tolist())) > 1  # a non-degenerate sequence was compared


@pytest.mark.skipif(not OPTIMUM, reason="ORTModelForSeq2SeqLM needs optimum-onnx (transformers 4.57 only)")
def test_ort_model_for_seq2seq_lm_generates_the_same_tokens(exported):
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    model, out = exported
    ort_model = ORTModelForSeq2SeqLM.from_pretrained(out)
    assert ort_model.decoder_with_past is not None  # the cache graph is used from the second token on
    src = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 0, 0, 0]])
    mask = (src != 0).long()
    ours = model.generate(src, attention_mask=mask, max_new_tokens=12, do_sample=False)
    theirs = ort_model.generate(src, attention_mask=mask, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)
    assert len(set(ours[1, 1:].tolist())) > 1  # a non-degenerate sequence was compared


def test_separate_vocabularies_export(tmp_path):
    if not OPTIMUM:
        pytest.skip("one dynamo export per run keeps the 5.x suite short; the vocabulary split is path-independent")
    model = tiny_model(share_embeddings=False, decoder_vocab_size=40, tie_word_embeddings=False)
    result = export(model, tmp_path / "out", task="text2text-generation-with-past")
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4
    logits = [o for o in onnx.load(str(tmp_path / "out" / "decoder_model.onnx")).graph.output if o.name == "logits"]
    assert logits[0].type.tensor_type.shape.dim[2].dim_value == 40


def test_bare_model_exports_decoder_features(tmp_path):
    if not OPTIMUM:
        pytest.skip("one dynamo export per run keeps the 5.x suite short; the dynamo path is covered with past")
    torch.manual_seed(0)
    bare = LNormSeq2SeqModel(tiny_seq2seq_config()).eval()
    result = export(bare, tmp_path / "out")  # task inferred: feature-extraction
    assert result.task == "feature-extraction"
    assert sorted(result.onnx_files) == ["decoder_model.onnx", "encoder_model.onnx"]
    outputs = [o.name for o in onnx.load(str(tmp_path / "out" / "decoder_model.onnx")).graph.output]
    assert outputs == ["last_hidden_state"]
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4


def test_unsupported_tasks_are_named(tmp_path):
    model = tiny_model()
    with pytest.raises(UnsupportedArchitectureError, match=r"'text-generation'.*LNormSeq2SeqForConditionalGeneration.*'text2text-generation'"):
        export(model, tmp_path / "a", task="text-generation")
    assert not (tmp_path / "a").exists()
    bare = LNormSeq2SeqModel(tiny_seq2seq_config()).eval()
    with pytest.raises(UnsupportedArchitectureError, match=r"'text2text-generation' does not fit LNormSeq2SeqModel.*LM head"):
        export(bare, tmp_path / "b", task="text2text-generation")
    with pytest.raises(UnsupportedArchitectureError, match=r"'feature-extraction' does not fit LNormSeq2SeqForConditionalGeneration"):
        export(model, tmp_path / "b", task="feature-extraction")
    with pytest.raises(UnsupportedArchitectureError, match=r"'fill-mask'.*torch.onnx path: 'text2text-generation', 'text2text-generation-with-past', 'feature-extraction'"):
        export(model, tmp_path / "c", task="fill-mask", method=METHOD_DYNAMO)
    assert dynamo_with_past(TEXT, model, "text2text-generation-with-past") and not dynamo_with_past(TEXT, model, "text2text-generation")
    assert not any(tmp_path.iterdir())
