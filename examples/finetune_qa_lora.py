"""LoRA fine-tuning of a BERT-style model for extractive QA with PEFT and Trainer, then EM/F1 on held-out questions.

Trains on the question sample shipped with hf_lnorm (`qa/sample_train.json`) and
scores held-out plays (`resources.QA_EVAL_FILE`) before and after, with the
windowing, answer decoding and SQuAD metrics of `hf_lnorm.recipes`.
`--hf-lnorm-patch fused` trains with hf_lnorm's fused norms. Needs `hf-lnorm[train]`.

    python examples/finetune_qa_lora.py                                 # offline MiniLM, 4 epochs, 200 questions
    python examples/finetune_qa_lora.py --model bert-base-uncased --hf-lnorm-patch fused
    python examples/finetune_qa_lora.py --quick                         # tiny random BERT, 12 steps, 24 questions
"""

import argparse
import os
import tempfile

import torch
from datasets import Dataset
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertConfig, Trainer, TrainingArguments

from hf_lnorm.loading import bundled_model_path
from hf_lnorm.recipes.common import apply_lnorm_patch, apply_lora
from hf_lnorm.recipes.data_files import load_squad_file
from hf_lnorm.recipes.qa import postprocess_qa_predictions, prepare_eval_features, prepare_train_features
from hf_lnorm.recipes.squad_metrics import squad_scores
from hf_lnorm.resources import QA_EVAL_FILE, data_file


def evaluate(trainer, dev, windows):
    start, end = trainer.predict(windows.remove_columns(["example_id", "offset_mapping"])).predictions
    predictions, _ = postprocess_qa_predictions(dev, windows, start, end)
    return squad_scores(predictions, {row["id"]: row["answers"]["text"] for row in dev})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="BERT-style model folder or Hub id (default: the offline MiniLM, no QA head)")
    parser.add_argument("--hf-lnorm-patch", choices=["none", "fused"], default="none", help="patch the norms first")
    parser.add_argument("--quick", action="store_true", help="a tiny random BERT, 12 steps, 24 evaluation questions")
    parser.add_argument("--output-dir", help="new folder for the trained adapter (default: a fresh temporary folder)")
    args = parser.parse_args()
    if args.output_dir and os.path.exists(args.output_dir):
        parser.error(f"--output-dir {args.output_dir!r} already exists; pass a new folder")
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="finetune_qa_lora-")
    path = args.model or bundled_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    if args.quick:  # a tiny random BERT with the same tokenizer: shows the steps, not the accuracy
        model = AutoModelForQuestionAnswering.from_config(BertConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4))
    else:
        model = AutoModelForQuestionAnswering.from_pretrained(path)  # the span head (qa_outputs) starts untrained
    model, report = apply_lnorm_patch(model, args.hf_lnorm_patch)  # report is None for "none"
    # LoRA on the encoder's Linears; the span head trains in full
    model = apply_lora(model, "QUESTION_ANS", r=16, alpha=32, dropout=0.05,
                       target_modules=["query", "key", "value", "dense"], modules_to_save=None)

    seq_len, n_eval = (128, 24) if args.quick else (256, 200)
    window = dict(tokenizer=tokenizer, max_seq_length=seq_len, doc_stride=seq_len // 4, pad_to_max_length=True)
    train = Dataset.from_list(load_squad_file(str(data_file("qa", "sample_train.json"))))
    train = train.map(prepare_train_features, batched=True, remove_columns=train.column_names, fn_kwargs=window)
    dev = Dataset.from_list(load_squad_file(str(data_file(*QA_EVAL_FILE)))[:n_eval])
    dev_windows = dev.map(prepare_eval_features, batched=True, remove_columns=dev.column_names, fn_kwargs=window)

    trainer = Trainer(model=model, train_dataset=train, args=TrainingArguments(
        output_dir=os.path.join(output_dir, "trainer"), per_device_train_batch_size=8 if args.quick else 16,
        learning_rate=1e-3, num_train_epochs=4, max_steps=12 if args.quick else -1, logging_steps=4,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False, seed=0))
    before = evaluate(trainer, dev, dev_windows)
    trainer.train()
    after = evaluate(trainer, dev, dev_windows)

    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    print(f"training loss {losses[0]:.3f} -> {losses[-1]:.3f} over {trainer.state.global_step} steps")
    print(f"{after['count']} held-out questions: EM {before['exact_match']:.1f} -> {after['exact_match']:.1f}, "
          f"F1 {before['f1']:.1f} -> {after['f1']:.1f}")
    model.save_pretrained(os.path.join(output_dir, "adapter"))
    print(f"adapter saved to {os.path.join(output_dir, 'adapter')}" + (f"; {report.summary()}" if report else ""))


if __name__ == "__main__":
    main()
