"""Trainer lowers the loss on the committed offline text: LNormGPT on Shakespeare, LNormSeq2Seq on English-Spanish."""

import json
import os

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM, LNormSeq2SeqConfig, LNormSeq2SeqForConditionalGeneration

from .conftest import REPO_ROOT, load_script

SHAKESPEARE = os.path.join(REPO_ROOT, "hf_lnorm", "data", "shakespeare_sample.txt")
BIBLE = os.path.join(REPO_ROOT, "hf_lnorm", "data", "bible_en_es_sample.jsonl")


def _args(tmp_path, steps, lr):
    return TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=steps,
        learning_rate=lr,
        warmup_steps=2,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )


def test_trainer_lowers_lnorm_gpt_loss_on_shakespeare(tmp_path):
    tok_script = load_script("train_tokenizer")
    texts = list(tok_script.read_texts(SHAKESPEARE))
    tokenizer = tok_script.train_bpe_tokenizer(texts, vocab_size=600)
    ids = tokenizer("\n".join(texts)).input_ids
    block = 64
    blocks = [ids[i : i + block] for i in range(0, len(ids) - block, block)]
    train = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks[:-16]]
    held_out = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks[-16:]]
    config = LNormGPTConfig(
        vocab_size=len(tokenizer), max_position_embeddings=block, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        dropout=0.0, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    trainer = Trainer(model=LNormGPTForCausalLM(config), args=_args(tmp_path, 40, 3e-3), train_dataset=train, eval_dataset=held_out)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert after < before - 0.5, (before, after)
    assert losses[-1] < losses[0], losses


def test_trainer_lowers_lnorm_seq2seq_loss_on_english_spanish(tmp_path):
    tok_script = load_script("train_tokenizer")
    rows = [json.loads(line) for line in open(BIBLE, encoding="utf-8")]
    tokenizer = tok_script.train_bpe_tokenizer(tok_script.read_texts(BIBLE, ["en", "es"]), vocab_size=800, add_eos=True)
    features = []
    for row in rows:
        src = tokenizer(row["en"], truncation=True, max_length=48).input_ids
        tgt = tokenizer(row["es"], truncation=True, max_length=48).input_ids
        features.append({"input_ids": src, "attention_mask": [1] * len(src), "labels": tgt})
    train, held_out = features[:-64], features[-64:]
    config = LNormSeq2SeqConfig(
        vocab_size=len(tokenizer), max_position_embeddings=48, hidden_size=64, num_hidden_layers=2, num_decoder_layers=2,
        num_attention_heads=4, dropout=0.0, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LNormSeq2SeqForConditionalGeneration(config)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=_args(tmp_path, 40, 3e-3), train_dataset=train, eval_dataset=held_out, data_collator=collator)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.5, (before, after)
    model.eval()
    batch = collator(held_out[:2])
    out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=10, num_beams=2)
    assert out.shape[0] == 2 and (out[:, 0] == config.decoder_start_token_id).all()
