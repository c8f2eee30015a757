"""Tiny end-to-end runs of both recipe scripts, in-process: train, evaluate, save, reload."""

import json
import os

import pytest
import torch

import hf_lnorm

from .conftest import QA_SAMPLE_DEV, qa_args, translation_args, write_config


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _translations(out):
    with open(os.path.join(out, "eval_translations.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _assert_scores(res, predictions, references, prefix="eval_"):
    """``res``'s BLEU and chrF under ``prefix`` are sacrebleu's scores of ``predictions``."""
    from hf_lnorm.recipes.translation import translation_scores

    scores = translation_scores(predictions, references)
    assert res[prefix + "bleu"] == pytest.approx(scores["bleu"]) and res[prefix + "chrf"] == pytest.approx(scores["chrf"])


def test_qa_train_eval_save_with_fused_patch(run_qa, tiny_qa_model_dir, tmp_path):
    out = str(tmp_path / "qa")
    cfg = write_config(str(tmp_path / "qa.json"), qa_args(tiny_qa_model_dir, out, hf_lnorm_patch="fused"))
    # JSON config plus a command-line override, as in the HF examples.
    res = run_qa.main([cfg, "--max_steps", "2"])
    state = _read(os.path.join(out, "trainer_state.json"))
    assert state["global_step"] == 2
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 2 and res["final_logged_loss"] == pytest.approx(losses[-1])
    assert res["train_samples"] == 48 and res["train_windows"] > res["train_samples"], "96-token windows must split some contexts"
    preds = _read(os.path.join(out, "eval_predictions.json"))
    assert len(preds) == 24 and all(isinstance(v, str) for v in preds.values())
    # the reported EM/F1 are those of the written predictions against the first 24 dev questions
    from hf_lnorm.recipes.data_files import load_squad_file
    from hf_lnorm.recipes.squad_metrics import squad_scores

    rows = load_squad_file(QA_SAMPLE_DEV)[:24]
    gold = {row["id"]: row["answers"]["text"] for row in rows}
    assert set(preds) == set(gold)
    scores = squad_scores(preds, gold)
    assert res["eval_exact_match"] == pytest.approx(scores["exact_match"])
    assert res["eval_f1"] == pytest.approx(scores["f1"])
    baseline = squad_scores({row["id"]: run_qa.first_sentence(row["context"]) for row in rows}, gold)
    assert baseline["f1"] > 0 and res["eval_first_sentence_f1"] == pytest.approx(baseline["f1"])
    assert os.path.isfile(os.path.join(out, "model.safetensors")) and os.path.isfile(os.path.join(out, "tokenizer.json"))
    assert _read(os.path.join(out, "all_results.json"))["eval_f1"] == pytest.approx(res["eval_f1"])
    prov = _read(os.path.join(out, "provenance.json"))  # where the metrics came from
    assert prov["versions"]["transformers"] and prov["machine"]["cores"] and prov["created"]
    # The saved (patched during training) model loads in stock transformers.
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(out)
    assert not hf_lnorm.patch_report(model).patched


def test_qa_lora_trains_adapter_and_head(run_qa, tiny_qa_model_dir, tmp_path):
    out = str(tmp_path / "qa_lora")
    run_qa.main([write_config(str(tmp_path / "c.json"), qa_args(tiny_qa_model_dir, out, lora=True, lora_r=4, do_eval=False, max_steps=1))])
    adapter = _read(os.path.join(out, "adapter_config.json"))
    assert sorted(adapter["target_modules"]) == ["query", "value"]
    assert set(adapter["modules_to_save"]) == {"qa_outputs"}  # the fresh span head is trained in full


def test_qa_lora_model_sees_token_type_ids(tiny_qa_model_dir):
    """The LoRA-wrapped QA model passes token_type_ids on (PEFT's own QA wrapper drops them): with LoRA's
    zero-initialised B it computes exactly the base model, segment ids included."""
    from transformers import AutoModelForQuestionAnswering

    from hf_lnorm.recipes.common import apply_lora

    base = AutoModelForQuestionAnswering.from_pretrained(tiny_qa_model_dir).eval()
    ids = torch.randint(5, 90, (2, 12))
    segments = torch.zeros_like(ids)
    segments[:, 5:] = 1
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": segments}
    with torch.no_grad():
        want = base(**inputs).start_logits
        zero_segments = base(**{**inputs, "token_type_ids": torch.zeros_like(ids)}).start_logits
        got = apply_lora(base, "QUESTION_ANS", 4, 8, 0.0, None, None).eval()(**inputs).start_logits
    assert not torch.allclose(want, zero_segments)  # the segment ids matter for this model
    torch.testing.assert_close(got, want)


def test_qa_unknown_config_key_is_rejected(run_qa, tmp_path):
    cfg = write_config(str(tmp_path / "c.json"), {"train_fil": "x.json"})
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['train_fil'\]"):
        run_qa.main([cfg])


def test_translation_lnorm_seq2seq_train_eval_save(run_translation, tmp_path):
    out = str(tmp_path / "tr")
    res = run_translation.main([write_config(str(tmp_path / "t.json"), translation_args(out, hf_lnorm_patch="fused"))])
    assert res["eval_samples"] == 16
    rows = _translations(out)
    assert len(rows) == 16 and set(rows[0]) == {"source", "reference", "prediction"}
    # the reported scores are those of the written translations, and of the sources for the copy baseline
    _assert_scores(res, [r["prediction"] for r in rows], [r["reference"] for r in rows])
    _assert_scores(res, [r["source"] for r in rows], [r["reference"] for r in rows], prefix="eval_copy_source_")
    assert res["eval_copy_source_chrf"] > 0  # Spanish and English share names and numbers
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert model.config.model_type == "lnorm-seq2seq"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.decode(tok("In the beginning")["input_ids"], skip_special_tokens=True) == "In the beginning"


def test_translation_any_hub_seq2seq_type(run_translation, tmp_path):
    out = str(tmp_path / "marian")
    over = json.dumps({"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                       "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 128})
    res = run_translation.main([write_config(str(tmp_path / "m.json"), translation_args(out, model_type="marian", config_overrides=over,
                                                                                         max_steps=2, max_eval_samples=8))])
    rows = _translations(out)
    assert len(rows) == 8
    _assert_scores(res, [r["prediction"] for r in rows], [r["reference"] for r in rows])
    assert _read(os.path.join(out, "config.json"))["model_type"] == "marian"


def test_patch_switch_none_and_fused(tiny_qa_model_dir):
    """--hf_lnorm_patch: 'none' leaves the model alone, 'fused' patches every LayerNorm, and a mode that is
    not registered fails with patch's own ValueError (what 'quantized' does until its module is installed)."""
    from transformers import AutoModelForQuestionAnswering

    from hf_lnorm.recipes.common import apply_lnorm_patch

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_qa_model_dir)
    same, report = apply_lnorm_patch(model, "none")
    assert same is model and report is None and not hf_lnorm.patch_report(model).patched
    n_norms = sum(1 for m in model.modules() if type(m).__name__ == "LayerNorm")
    model, report = apply_lnorm_patch(model, "fused")
    assert len(report.patched) == n_norms == 5  # embeddings + 2 per layer
    with pytest.raises(ValueError, match="unknown mode 'not-a-mode'"):
        apply_lnorm_patch(model, "not-a-mode")


def test_patch_switch_quantized_all(tiny_qa_model_dir):
    """'quantized-readers' puts only the norms' readers in int8; 'quantized' (and 'quantized-all') every Linear."""
    from transformers import AutoModelForQuestionAnswering

    from hf_lnorm.quantization import int8_layers
    from hf_lnorm.recipes.common import apply_lnorm_patch

    readers = {n for n, _ in int8_layers(apply_lnorm_patch(AutoModelForQuestionAnswering.from_pretrained(tiny_qa_model_dir), "quantized-readers")[0])}
    model, report = apply_lnorm_patch(AutoModelForQuestionAnswering.from_pretrained(tiny_qa_model_dir), "quantized")
    every = {n for n, _ in int8_layers(model)}
    spelled = apply_lnorm_patch(AutoModelForQuestionAnswering.from_pretrained(tiny_qa_model_dir), "quantized-all")[0]
    assert {n for n, _ in int8_layers(spelled)} == every
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert readers < every == linears
    assert all(n.endswith(("query", "key", "value", "intermediate.dense", "qa_outputs")) for n in readers)  # qa_outputs reads the last norm too
    assert "qa_outputs" in readers
