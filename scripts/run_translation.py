#!/usr/bin/env python
"""Train and evaluate a sequence-to-sequence translation model with ``Seq2SeqTrainer``.

Follows the Hugging Face examples' conventions (``HfArgumentParser`` over
``ModelArguments``, ``DataTrainingArguments`` and ``Seq2SeqTrainingArguments``;
``--dataset_name`` or ``--train_file/--validation_file``; a JSON config as the
only argument, optionally followed by overriding flags)::

    python scripts/prepare_data.py bible                      # -> data/cache/bible_en_es.jsonl
    python scripts/run_translation.py configs/translation_lnorm_seq2seq.json
    python scripts/run_translation.py configs/translation_lnorm_seq2seq.json --model_type marian \\
        --config_overrides '{"d_model": 128, "encoder_layers": 2, "decoder_layers": 2}'
    accelerate launch --num_processes 2 scripts/run_translation.py configs/translation_lnorm_seq2seq.json

Model: ``--model_name_or_path`` fine-tunes a pretrained Hub seq2seq model with
its own tokenizer; otherwise ``--model_type`` (default ``lnorm-seq2seq``, the
project's LayerNorm encoder-decoder; any Hub seq2seq type such as ``marian``,
``bart``, ``t5`` works) is built from a config with ``--config_overrides``,
and a joint BPE tokenizer is trained on the training split
(``--tokenizer_vocab_size``) and saved as ``PreTrainedTokenizerFast`` in
``output_dir/tokenizer`` (and with the final model).

Data: JSON lines with the two language keys (``data/bible_en_es.jsonl``
layout) or under ``"translation"``. Without ``--validation_file`` the rows of
``--holdout_books`` (a comma list matched against each row's ``book``) are held
out for evaluation; they are never trained on, also in a run without ``--do_eval``.

Evaluation uses ``predict_with_generate`` and reports sacrebleu BLEU and chrF;
``--eval_copy_source_baseline`` also scores returning the source unchanged.
Other switches as in ``run_qa.py``: ``--hf_lnorm_patch``, ``--lora``,
``--push_to_hub``; an existing ``output_dir`` resumes from its newest complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402
import numpy as np  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    PreTrainedTokenizerFast,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)

import hf_lnorm  # noqa: E402,F401  (registers the lnorm-* model types with the Auto classes)
from hf_lnorm.recipes import common  # noqa: E402
from hf_lnorm.recipes.common import PATCH_CHOICES, InOrderEvaluation, apply_lnorm_patch, apply_lora, parse_recipe_args  # noqa: E402
from hf_lnorm.recipes.data_files import DataFileError, load_translation_file  # noqa: E402
from hf_lnorm.recipes.translation import (  # noqa: E402
    build_seq2seq_from_config,
    check_label_order,
    parse_config_overrides,
    train_joint_tokenizer,
    translation_scores,
)

logger = logging.getLogger("run_translation")

try:  # registers the model families when the models package is importable
    import hf_lnorm.models  # noqa: F401
except ImportError:  # pragma: no cover - only while the families are being written
    pass


class TranslationTrainer(InOrderEvaluation, Seq2SeqTrainer):
    """``Seq2SeqTrainer`` that evaluates the held-out pairs in their own order, so prediction i is pair i's."""


@dataclass
class ModelArguments:
    """Which model to train and how to modify it."""

    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Pretrained seq2seq model (Hub id or folder); if unset, build --model_type from a config."})
    model_type: str = field(default="lnorm-seq2seq", metadata={"help": "Config type to build when no model_name_or_path: lnorm-seq2seq, marian, bart, t5, ..."})
    config_overrides: Optional[str] = field(default=None, metadata={"help": "Config attributes for --model_type: JSON object or k=v,k=v."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer folder/id; default: the model's, or train one."})
    tokenizer_vocab_size: int = field(default=8000, metadata={"help": "Vocabulary size of the locally trained tokenizer."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where to cache Hub downloads."})
    hf_lnorm_patch: str = field(default="none", metadata={"help": "Swap norm layers with hf_lnorm.patch.", "choices": list(PATCH_CHOICES)})
    lora: bool = field(default=False, metadata={"help": "Train a PEFT LoRA adapter instead of all weights (meant for pretrained models)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: Optional[List[str]] = field(default=None, metadata={"help": "Module names to adapt; default: the attention projections (see hf_lnorm.recipes.common)."})


@dataclass
class DataTrainingArguments:
    """What data to use and how long sequences may be."""

    dataset_name: Optional[str] = field(default=None, metadata={"help": "datasets Hub name with a 'translation' column, e.g. 'opus_books' (needs network)."})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "datasets config, e.g. 'en-es'."})
    train_file: Optional[str] = field(default=None, metadata={"help": "JSON lines training pairs."})
    validation_file: Optional[str] = field(default=None, metadata={"help": "JSON lines evaluation pairs; default: --holdout_books of the train file."})
    source_lang: str = field(default="en", metadata={"help": "Source language key."})
    target_lang: str = field(default="es", metadata={"help": "Target language key."})
    holdout_books: Optional[str] = field(default=None, metadata={"help": "Comma list of 'book' values held out for evaluation when no validation_file."})
    source_prefix: str = field(default="", metadata={"help": "Text prepended to every source (e.g. 'translate English to Spanish: ' for T5)."})
    max_source_length: int = field(default=128, metadata={"help": "Source tokens kept."})
    max_target_length: int = field(default=128, metadata={"help": "Target tokens kept."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N training pairs."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N evaluation pairs."})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": "Processes for tokenization."})
    eval_copy_source_baseline: bool = field(default=False, metadata={"help": "Also score the copy-the-source baseline."})


def load_pairs(data_args: DataTrainingArguments, model_args: ModelArguments, need_train: bool, need_eval: bool):
    """Return ``(train, eval)`` ``datasets.Dataset`` with a ``translation`` column (files validated first)."""
    src, tgt = data_args.source_lang, data_args.target_lang
    if data_args.dataset_name:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir)
        train = raw["train"] if need_train else None
        ev = raw.get("validation", raw.get("test")) if need_eval else None
        return train, ev
    if not data_args.train_file and (need_train or not data_args.validation_file):
        raise ValueError("no data: pass --train_file (JSON lines pairs) or --dataset_name")
    train_rows = load_translation_file(data_args.train_file, src, tgt, extra_keys=["id", "book"]) if data_args.train_file else []
    held_out = []
    if data_args.holdout_books and train_rows:
        # Held out whether or not this run evaluates, so a model trained with --do_eval false and evaluated
        # later has never seen its evaluation books.
        books = {b.strip() for b in data_args.holdout_books.split(",") if b.strip()}
        held_out = [r for r in train_rows if r.get("book") in books]
        train_rows = [r for r in train_rows if r.get("book") not in books]
        if not held_out:
            found = sorted({str(r.get("book")) for r in train_rows})[:20]
            raise DataFileError(data_args.train_file, f"no rows of holdout_books {sorted(books)} (books found: {found})")
    if data_args.validation_file:
        eval_rows = load_translation_file(data_args.validation_file, src, tgt, extra_keys=["id", "book"])
    elif need_eval:
        if not data_args.holdout_books:
            raise ValueError("--do_eval needs --validation_file or --holdout_books (books of the train file to hold out)")
        eval_rows = held_out
    else:
        eval_rows = []
    # Keep only the translation column so Arrow sees one schema.
    train = datasets.Dataset.from_list([{"translation": r["translation"]} for r in train_rows]) if need_train else None
    ev = datasets.Dataset.from_list([{"translation": r["translation"]} for r in eval_rows]) if need_eval else None
    return train, ev


def get_tokenizer(model_args: ModelArguments, training_args, train_ds, data_args: DataTrainingArguments):
    """Load the tokenizer, or train one on the training pairs (main process first; others load it)."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name:
        return AutoTokenizer.from_pretrained(name, cache_dir=model_args.cache_dir)
    tok_dir = os.path.join(training_args.output_dir, "tokenizer")
    with training_args.main_process_first(desc="tokenizer"):
        if os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
            return PreTrainedTokenizerFast.from_pretrained(tok_dir)
        if train_ds is None:
            raise ValueError("no tokenizer: pass --tokenizer_name or --model_name_or_path when not training")
        texts = (t for pair in train_ds["translation"] for t in (pair[data_args.source_lang], pair[data_args.target_lang]))
        tok = train_joint_tokenizer(texts, vocab_size=model_args.tokenizer_vocab_size)
        if training_args.should_save:
            tmp = tok_dir + ".tmp"
            tok.save_pretrained(tmp)
            os.replace(tmp, tok_dir) if not os.path.exists(tok_dir) else None
        return tok


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the recipe; returns the final metrics (also written to ``output_dir/all_results.json``)."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments))
    model_args, data_args, training_args = parse_recipe_args(parser, argv)
    common.setup_logging(training_args)
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("nothing to do: pass --do_train and/or --do_eval")
    if training_args.do_eval and not training_args.predict_with_generate:
        raise ValueError("BLEU/chrF need generated text: pass --predict_with_generate true")

    train_ds, eval_ds = load_pairs(data_args, model_args, training_args.do_train, training_args.do_eval)

    resume = common.resume_or_refuse(training_args, logger, keep=("tokenizer",))

    set_seed(training_args.seed)
    if training_args.do_train and data_args.max_train_samples is not None:
        train_ds = train_ds.select(range(min(data_args.max_train_samples, len(train_ds))))
    if training_args.do_eval and data_args.max_eval_samples is not None:
        eval_ds = eval_ds.select(range(min(data_args.max_eval_samples, len(eval_ds))))

    tokenizer = get_tokenizer(model_args, training_args, train_ds, data_args)
    if model_args.model_name_or_path:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    else:
        model = build_seq2seq_from_config(model_args.model_type, tokenizer, parse_config_overrides(model_args.config_overrides))
    model, report = apply_lnorm_patch(model, model_args.hf_lnorm_patch)
    if report is not None:
        logger.info(report.summary())
    if model_args.lora:
        model = apply_lora(model, "SEQ_2_SEQ_LM", model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                           model_args.lora_target_modules, modules_to_save=None)
    logger.info("model %s: %.2fM parameters", type(model).__name__, sum(p.numel() for p in model.parameters()) / 1e6)

    src, tgt, prefix = data_args.source_lang, data_args.target_lang, data_args.source_prefix

    def preprocess(batch):
        sources = [prefix + p[src] for p in batch["translation"]]
        targets = [p[tgt] for p in batch["translation"]]
        features = tokenizer(sources, max_length=data_args.max_source_length, truncation=True)
        features["labels"] = tokenizer(text_target=targets, max_length=data_args.max_target_length, truncation=True)["input_ids"]
        return features

    def tokenize(ds, desc):
        with training_args.main_process_first(desc=desc):
            return ds.map(preprocess, batched=True, remove_columns=ds.column_names,
                          num_proc=data_args.preprocessing_num_workers, desc=desc)

    train_features = tokenize(train_ds, "train pairs") if training_args.do_train else None
    eval_features = tokenize(eval_ds, "eval pairs") if training_args.do_eval else None
    eval_refs = [p[tgt] for p in eval_ds["translation"]] if training_args.do_eval else []

    def compute_metrics(eval_pred):
        preds = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        preds = np.where(preds < 0, tokenizer.pad_token_id, preds)
        # Distributed evaluation of a set smaller than one global batch can come back with the wrap-around
        # padding samples appended (accelerate's even_batches); the first len(eval_refs) rows are the real ones.
        if len(preds) < len(eval_refs):
            raise ValueError(f"evaluation returned {len(preds)} predictions for {len(eval_refs)} references")
        check_label_order(eval_pred.label_ids, eval_features["labels"], tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(preds[: len(eval_refs)], skip_special_tokens=True)
        scores = translation_scores(texts, eval_refs)
        compute_metrics.last_texts = texts
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}

    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8)
    trainer = TranslationTrainer(model=model, args=training_args, train_dataset=train_features, eval_dataset=eval_features,
                             processing_class=tokenizer, data_collator=collator,
                             compute_metrics=compute_metrics if training_args.predict_with_generate else None)

    results: dict = {}
    if training_args.do_train:
        results.update(common.train_and_save(trainer, resume, train_samples=len(train_features)))
    if training_args.do_eval:
        t0 = time.time()
        metrics = trainer.evaluate(max_length=training_args.generation_max_length or data_args.max_target_length,
                                   num_beams=training_args.generation_num_beams)
        metrics["eval_samples"] = len(eval_features)
        metrics["eval_wall_s"] = round(time.time() - t0, 1)
        if data_args.eval_copy_source_baseline:
            base = translation_scores([p[src] for p in eval_ds["translation"]], eval_refs)
            metrics["eval_copy_source_bleu"] = base["bleu"]
            metrics["eval_copy_source_chrf"] = base["chrf"]
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
        if trainer.is_world_process_zero() and getattr(compute_metrics, "last_texts", None) is not None:
            rows = [{"source": p[src], "reference": r, "prediction": h}
                    for p, r, h in zip(eval_ds["translation"], eval_refs, compute_metrics.last_texts)]
            tmp = os.path.join(training_args.output_dir, ".eval_translations.jsonl.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            os.replace(tmp, os.path.join(training_args.output_dir, "eval_translations.jsonl"))
        if not training_args.do_train:
            common.save_provenance(trainer)
    if training_args.push_to_hub:
        trainer.push_to_hub(tasks="translation", dataset=data_args.dataset_name or data_args.train_file)
    return results


if __name__ == "__main__":
    main()
