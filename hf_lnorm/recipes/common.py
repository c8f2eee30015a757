"""Pieces shared by ``scripts/run_qa.py`` and ``scripts/run_translation.py``.

* :func:`parse_recipe_args`: Hugging Face examples-style argument parsing,
  with a JSON config as the first argument and optional command-line overrides.
* :func:`apply_lnorm_patch`: the ``--hf_lnorm_patch {none,fused,quantized,quantized-readers,quantized-all}`` switch.
* :func:`apply_lora` / :func:`default_lora_targets`: the ``--lora`` switch (PEFT).
* :func:`resumable_checkpoint`: the newest *complete* ``checkpoint-N`` folder.
* :func:`setup_logging`, :func:`resume_or_refuse`, :func:`train_and_save`: the
  steps every recipe's ``main`` runs before and after its task-specific part.
* :class:`InOrderEvaluation`: a Trainer mixin that evaluates the dataset in its own order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._json import write_json
from .._machine import provenance

__all__ = ["PATCH_CHOICES", "parse_recipe_args", "apply_lnorm_patch", "default_lora_targets", "apply_lora", "resumable_checkpoint",
           "setup_logging", "resume_or_refuse", "train_and_save", "save_provenance", "InOrderEvaluation"]

PATCH_CHOICES = ("none", "fused", "quantized", "quantized-readers", "quantized-all")

# Attention projections tried in order when --lora_target_modules is not given.
# BERT-style ("query"/"value"), BART/Marian/Llama-style ("q_proj"/"v_proj"), T5-style ("q"/"v"),
# hf_lnorm families (fused "qkv_proj" in self-attention, "q_proj" + "kv_proj" in cross-attention), GPT-2 ("c_attn").
_LORA_CANDIDATES: Tuple[Tuple[str, ...], ...] = (
    ("query", "value"), ("q_proj", "v_proj"), ("q", "v"), ("qkv_proj", "q_proj", "kv_proj"), ("qkv_proj",), ("c_attn",), ("qkv",))


def parse_recipe_args(parser, argv: Optional[Sequence[str]] = None) -> tuple:
    """Parse ``argv`` into the parser's dataclasses.

    ``script.py config.json`` reads every field from the JSON file (as in the
    Hugging Face examples); ``script.py config.json --num_train_epochs 2``
    additionally overrides fields on the command line; plain flags work as usual.

    Args:
        parser (transformers.HfArgumentParser): the recipe's parser.
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The tuple of dataclass instances.

    Raises:
        ValueError: the JSON file has a key that is not an argument of the script.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(".json") and not argv[0].startswith("-"):
        path = os.path.abspath(argv.pop(0))
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe config must be a JSON object of argument names to values")
        known = {f.name for dc in parser.dataclass_types for f in dataclasses.fields(dc) if f.init}
        values = _portable_training_values(values, known)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown argument(s) {unknown}; see --help for the accepted names")
        parser.set_defaults(**values)
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    return parser.parse_args_into_dataclasses(args=argv)


def _portable_training_values(values: dict, known: set) -> dict:
    """Spell config keys the way the installed transformers does.

    transformers 5.x dropped ``warmup_ratio`` (a fractional ``warmup_steps``
    < 1 means the same ratio there) and ``group_by_length`` (now
    ``train_sampling_strategy="group_by_length"``); 4.57 has the old names.
    """
    values = dict(values)
    if "warmup_ratio" in values and "warmup_ratio" not in known and "warmup_steps" in known:
        ratio = values.pop("warmup_ratio")
        if values.get("warmup_steps", 0):
            raise ValueError("give either warmup_ratio or warmup_steps in a recipe config, not both")
        if not 0 <= ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio!r}")
        values["warmup_steps"] = ratio
    # 5.x replaced the boolean group_by_length with train_sampling_strategy
    if "group_by_length" in values and "group_by_length" not in known and "train_sampling_strategy" in known:
        if values.pop("group_by_length"):
            values["train_sampling_strategy"] = "group_by_length"
    return values


def apply_lnorm_patch(model, mode: str):
    """Apply ``hf_lnorm.patch(model, mode=mode)`` unless ``mode == "none"``.

    Args:
        model (torch.nn.Module): a transformers model.
        mode: ``"none"``, ``"fused"``, ``"quantized"`` (every Linear int8, the quantized mode's default),
            ``"quantized-readers"`` (``all_linears=False``: only the Linears that read a norm),
            ``"quantized-all"`` (the same as ``"quantized"``, spelled out), or any other mode registered
            with hf_lnorm.

    Returns:
        (tuple[torch.nn.Module, hf_lnorm.PatchReport | None]): ``(model, report)``; ``report`` is ``None``
            for ``"none"``.

    Raises:
        ValueError: from ``hf_lnorm.patch`` when the mode is not registered
            (for example ``"quantized"`` before its module is installed).
    """
    if mode == "none":
        return model, None
    import hf_lnorm

    if mode in ("quantized-all", "quantized-readers"):
        model = hf_lnorm.patch(model, mode="quantized", all_linears=mode == "quantized-all")
    else:
        model = hf_lnorm.patch(model, mode=mode)
    return model, hf_lnorm.patch_report(model)


def default_lora_targets(model) -> List[str]:
    """Pick LoRA target module names for ``model``: its attention query/value projections.

    Args:
        model (torch.nn.Module): a transformers model.

    Returns:
        The first candidate group whose names all exist as ``nn.Linear`` leaf names:
            ``query,value`` (BERT), ``q_proj,v_proj`` (BART, Marian, Llama), ``q,v`` (T5),
            ``qkv_proj,q_proj,kv_proj`` (lnorm-seq2seq), ``qkv_proj`` (lnorm-gpt), ``c_attn`` (GPT-2) or ``qkv``.

    Raises:
        ValueError: no candidate matches; pass ``--lora_target_modules`` explicitly.
    """
    import torch.nn as nn

    leaf_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for group in _LORA_CANDIDATES:
        if all(n in leaf_names for n in group):
            return list(group)
    raise ValueError(f"no default LoRA target modules for {type(model).__name__} (linear layers: {sorted(leaf_names)[:20]}); "
                     f"pass --lora_target_modules NAME [NAME ...]")


def apply_lora(model, task_type: str, r: int, alpha: int, dropout: float, target_modules: Optional[List[str]],
               modules_to_save: Optional[List[str]], bias: str = "none"):
    """Wrap ``model`` with a PEFT LoRA adapter.

    Args:
        model (torch.nn.Module): a transformers model.
        task_type: PEFT task type name, e.g. ``"QUESTION_ANS"`` or ``"SEQ_2_SEQ_LM"``.
        r: LoRA rank.
        alpha: LoRA scaling numerator.
        dropout: LoRA dropout.
        target_modules: module names to adapt; ``None`` uses ``default_lora_targets``.
        modules_to_save: modules trained in full and saved with the adapter (e.g. the fresh QA head).
        bias: ``"none"``, ``"all"`` or ``"lora_only"``: which biases train with the adapter.

    Returns:
        (peft.PeftModel): the wrapped model.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(target_modules) if target_modules else default_lora_targets(model)
    peft_task = getattr(TaskType, task_type)
    if task_type == "QUESTION_ANS":
        # PEFT's question-answering wrapper (PeftModelForQuestionAnswering, peft 0.21) does not pass
        # token_type_ids on to the model, so BERT-style models would train on all-zero segment ids and
        # disagree with the merged model. The generic PeftModel passes every argument through; the span
        # head that the QA wrapper would add to modules_to_save is added here.
        peft_task = None
        modules_to_save = list(dict.fromkeys([*(modules_to_save or []), "qa_outputs"]))
    cfg = LoraConfig(task_type=peft_task, r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=targets, modules_to_save=modules_to_save, bias=bias)
    return get_peft_model(model, cfg)


_CKPT = re.compile(r"^checkpoint-(\d+)$")


def _complete_json(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def resumable_checkpoint(output_dir: str) -> Optional[str]:
    """The newest ``checkpoint-N`` folder under ``output_dir`` that was completely written.

    Trainer writes ``trainer_state.json`` last (and not atomically), so a folder
    where it is missing or does not parse as JSON comes from a run killed while
    saving and is skipped (the stock ``get_last_checkpoint`` would pick it and fail
    to resume).

    Args:
        output_dir: a Trainer output folder (may not exist).

    Returns:
        The folder path, or ``None`` when there is no complete checkpoint.
    """
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        m = _CKPT.match(name)
        path = os.path.join(output_dir, name)
        if m and _complete_json(os.path.join(path, "trainer_state.json")):
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


# --------------------------------------------------------------------------- the steps around a recipe's task


def setup_logging(training_args) -> None:
    """INFO logging on the process that logs (WARN elsewhere), transformers' own logger at WARN."""
    import transformers

    level = logging.INFO if training_args.should_log else logging.WARN
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(logging.WARN)


def resume_or_refuse(training_args, logger: logging.Logger, keep: Sequence[str] = ()) -> Optional[str]:
    """The checkpoint to resume training from: ``--resume_from_checkpoint``, else the newest complete one.

    Args:
        training_args (transformers.TrainingArguments): the recipe's training arguments.
        logger: where to say that a run resumes.
        keep: names in ``output_dir`` the recipe wrote before training (a trained tokenizer) that do not
            make the folder "not empty".

    Returns:
        A checkpoint folder, or ``None`` to train from the start.

    Raises:
        ValueError: ``output_dir`` holds files but no complete checkpoint (never overwritten).
    """
    resume = training_args.resume_from_checkpoint
    if not training_args.do_train or resume is not None or not os.path.isdir(training_args.output_dir) \
            or getattr(training_args, "overwrite_output_dir", False):  # the flag is gone in transformers 5
        return resume
    resume = resumable_checkpoint(training_args.output_dir)
    if resume:
        logger.info("resuming from %s", resume)
    elif any(n for n in os.listdir(training_args.output_dir) if n not in keep and not n.startswith(".")):
        raise ValueError(f"output_dir {training_args.output_dir} is not empty and has no complete checkpoint; "
                         f"remove it, pass another --output_dir, or (transformers 4.x) --overwrite_output_dir true")
    return resume


def train_and_save(trainer, resume: Optional[str], **counts: Any) -> Dict[str, Any]:
    """Train, save the model, state, ``train_results.json`` and ``provenance.json``; returns the training metrics.

    Args:
        trainer (transformers.Trainer): the recipe's trainer.
        resume: the checkpoint to resume from (``resume_or_refuse``), or ``None``.
        **counts: recipe-specific numbers to record with the metrics (``train_samples=...``).

    Returns:
        ``Trainer.train``'s metrics plus ``counts``, ``train_wall_s``, ``world_size`` and ``final_logged_loss``.
    """
    t0 = time.time()
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    metrics = dict(train_result.metrics)
    metrics.update(counts)
    metrics["train_wall_s"] = round(time.time() - t0, 1)
    metrics["world_size"] = trainer.args.world_size
    metrics["final_logged_loss"] = next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    save_provenance(trainer)
    return metrics


def save_provenance(trainer) -> None:
    """Write ``output_dir/provenance.json`` (code, versions, machine, command line, time) from the main process.

    Training runs write it after saving the model (:func:`train_and_save`); evaluation-only runs after evaluating.
    """
    if trainer.is_world_process_zero():
        write_json(os.path.join(trainer.args.output_dir, "provenance.json"), provenance())


class InOrderEvaluation:
    """Trainer mixin: evaluation and prediction read the evaluation set in its own order.

    With ``group_by_length`` (5.x: ``train_sampling_strategy="group_by_length"``) the Trainer of transformers 4.57
    and 5.x also length-groups the *evaluation* set, so predictions come back in another order than the dataset's.
    The recipes pair each prediction with its reference (translation) or its example (QA) by position, so they
    evaluate sequentially (one process) or in accelerate's contiguous shards (several), whatever the training
    sampler is. Put it before the Trainer class: ``class MyTrainer(InOrderEvaluation, Seq2SeqTrainer)``.
    """

    def _get_eval_sampler(self, eval_dataset):  # transformers' hook, the same name and arguments on 4.57 and 5.x
        import torch
        from transformers.trainer_utils import has_length

        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
