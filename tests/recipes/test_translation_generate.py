"""A saved translation-recipe output answers ``model.generate(**tokenizer(texts, return_tensors="pt"))``."""

import json

import torch

from .conftest import BIBLE_SAMPLE


def _sample_pairs(n: int = 200):
    with open(BIBLE_SAMPLE, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def _save_tiny_recipe_output(path: str) -> None:
    """What the recipe writes for a model built from a config: its joint tokenizer and an lnorm-seq2seq model."""
    import hf_lnorm  # noqa: F401  (registers lnorm-seq2seq with the Auto classes)
    from hf_lnorm.recipes.translation import (
        build_seq2seq_from_config,
        train_joint_tokenizer,
    )

    pairs = _sample_pairs()
    tok = train_joint_tokenizer((t for p in pairs for t in (p["en"], p["es"])), vocab_size=300)
    torch.manual_seed(0)
    model = build_seq2seq_from_config("lnorm-seq2seq", tok, {"hidden_size": 32, "num_hidden_layers": 1, "num_decoder_layers": 1,
                                                             "num_attention_heads": 2, "intermediate_size": 64,
                                                             "max_position_embeddings": 64})
    tok.save_pretrained(path)
    model.save_pretrained(path)


def test_joint_tokenizer_returns_only_model_inputs():
    from hf_lnorm.recipes.translation import train_joint_tokenizer

    tok = train_joint_tokenizer(["In the beginning God created", "En el principio creó Dios"], vocab_size=60)
    assert list(tok(["In the beginning", "God"], padding=True)) == ["input_ids", "attention_mask"]


def test_generate_on_tokenizer_output_of_saved_recipe(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    _save_tiny_recipe_output(str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path)).eval()
    texts = ["In the beginning God created the heaven and the earth.", "Amen."]

    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert "token_type_ids" not in batch
    out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape == (2, 7)  # the decoder start token plus six new tokens
    assert bool((out[:, 0] == model.config.decoder_start_token_id).all())

    # the exact one-sentence call, no padding argument; padding the shorter source in the batch did not change its output
    single = model.generate(**tokenizer(texts[1:], return_tensors="pt"), max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert int(batch["attention_mask"][1].sum()) < batch["attention_mask"].shape[1]
    assert torch.equal(single[0], out[1])


def test_holdout_books_never_trained_on_without_eval(run_translation):
    """A training-only run leaves --holdout_books out too, so a later evaluation on them is on unseen verses."""
    data = run_translation.DataTrainingArguments(train_file=BIBLE_SAMPLE, holdout_books="Ruth,Jonah")
    model = run_translation.ModelArguments()
    with open(BIBLE_SAMPLE, encoding="utf-8") as f:
        books = [json.loads(line)["book"] for line in f]
    held = sum(b in ("Ruth", "Jonah") for b in books)
    assert held > 0
    for need_eval in (False, True):
        train, ev = run_translation.load_pairs(data, model, need_train=True, need_eval=need_eval)
        assert len(train) == len(books) - held
        assert (len(ev) == held) if need_eval else ev is None
