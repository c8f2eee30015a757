#!/usr/bin/env python
"""Train LNormGPT with the Trainer: on Shakespeare (text) or on the scikit-learn digits (ImageGPT mode).

A JSON recipe (``configs/lnorm_gpt_shakespeare.json``, ``configs/lnorm_gpt_digits.json``)
gives the model config, the training arguments and the data; flags override it.

    python scripts/prepare_data.py shakespeare                 # -> data/cache/shakespeare.txt
    python scripts/train_gpt.py configs/lnorm_gpt_shakespeare.json
    python scripts/train_gpt.py configs/lnorm_gpt_shakespeare.json --data hf_lnorm/data/shakespeare_sample.txt --max-steps 50
    python scripts/train_gpt.py configs/lnorm_gpt_digits.json  # ImageGPT: completes digits from their top half

Text mode trains a BPE tokenizer on the training text (``scripts/train_tokenizer.py``)
and saves model + tokenizer (and a generated sample); image mode fits the color
clusters, saves the processor next to the model, and writes ``completions.png``
(top: real digits, bottom: top half kept, bottom half generated). The output
folder is written under a temporary name and renamed when complete; an existing
one is replaced only with ``--overwrite`` and only if this project wrote it
(``hf_lnorm.outputs``): a folder of other files is refused before training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import torch  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from hf_lnorm._machine import provenance  # noqa: E402
from hf_lnorm.models import ImageGPTColorProcessor, LNormGPTConfig, LNormGPTForCausalLM, complete_images  # noqa: E402
from hf_lnorm.outputs import OutputExistsError, check_output_dir, staged_output_dir  # noqa: E402


def _text_data(recipe: dict, data_path: str):
    from train_tokenizer import read_texts, train_bpe_tokenizer

    texts = list(read_texts(data_path))
    tokenizer = train_bpe_tokenizer(texts, vocab_size=recipe.get("tokenizer_vocab_size", 8000))
    ids = tokenizer("\n".join(texts)).input_ids
    block = recipe["model"]["max_position_embeddings"]
    blocks = [torch.tensor(ids[i : i + block]) for i in range(0, len(ids) - block, block)]
    held = max(1, int(len(blocks) * recipe.get("validation_fraction", 0.05)))
    rows = [{"input_ids": b, "labels": b} for b in blocks]
    model_overrides = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return rows[:-held], rows[-held:], tokenizer, model_overrides


def _image_data(recipe: dict):
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images, dtype=torch.float32) / 16.0
    n_train = int(len(images) * (1 - recipe.get("validation_fraction", 0.1)))
    processor = ImageGPTColorProcessor.fit(images[:n_train], n_clusters=recipe.get("n_clusters", 8))
    tokens = processor.encode(images)
    rows = [{"input_ids": t, "labels": t} for t in tokens]
    model_overrides = dict(
        vocab_size=processor.vocab_size, max_position_embeddings=processor.sequence_length,
        image_size=processor.image_size, bos_token_id=processor.bos_token_id,
    )
    return rows[:n_train], rows[n_train:], processor, model_overrides, images[n_train:]


def _save_completions(model, processor, images, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    completed, _ = complete_images(model, processor, images)
    fig, axes = plt.subplots(2, len(images), figsize=(len(images), 2.2))
    for i in range(len(images)):
        axes[0, i].imshow(images[i], cmap="gray_r")
        axes[1, i].imshow(completed[i], cmap="gray_r")
        axes[1, i].axhline(processor.image_size / 2 - 0.5, color="red", linewidth=0.8)
        for ax in axes[:, i]:
            ax.set_axis_off()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="JSON recipe (configs/lnorm_gpt_*.json)")
    parser.add_argument("--data", default=None, help="text file (text mode); overrides the recipe's data")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--norm-type", default=None, help="layernorm | rmsnorm | dyt | none")
    parser.add_argument("--norm-position", default=None, help="pre | post")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder written by an earlier run (never a folder of other files)")
    args = parser.parse_args(argv)

    with open(args.recipe) as handle:
        recipe = json.load(handle)
    mode = recipe.get("mode", "text")
    if mode not in ("text", "image"):
        print(f"train_gpt: error: mode={mode!r} is not supported; accepted: 'text', 'image'", file=sys.stderr)
        return 2
    output_dir = args.output_dir or recipe["output_dir"]
    data_path = (args.data or os.path.join(ROOT, recipe["data"])) if mode == "text" else None
    protect = [args.recipe, data_path]
    try:
        check_output_dir(output_dir, args.overwrite, protect)
    except OutputExistsError as exc:
        print(f"train_gpt: error: {exc}", file=sys.stderr)
        return 2
    training = dict(recipe.get("training", {}))
    if args.max_steps is not None:
        training["max_steps"] = args.max_steps
    model_args = dict(recipe["model"])
    for key in ("norm_type", "norm_position"):
        if getattr(args, key):
            model_args[key] = getattr(args, key)

    if mode == "text":
        if not os.path.exists(data_path):
            print(f"train_gpt: error: {data_path} is missing; run `python scripts/prepare_data.py shakespeare` "
                  "or pass --data hf_lnorm/data/shakespeare_sample.txt", file=sys.stderr)
            return 2
        train, valid, tokenizer, overrides = _text_data(recipe, data_path)
    else:
        train, valid, processor, overrides, valid_images = _image_data(recipe)
    model_args.update(overrides)
    try:
        config = LNormGPTConfig(**model_args)
    except ValueError as exc:
        print(f"train_gpt: error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(training.get("seed", 0))
    model = LNormGPTForCausalLM(config)

    with staged_output_dir(output_dir, args.overwrite, protect, writer="scripts/train_gpt.py") as staged:
        tmp_dir = str(staged)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=tmp_dir, report_to=[], save_strategy="no", **training),
            train_dataset=train,
            eval_dataset=valid,
        )
        before = trainer.evaluate()["eval_loss"]
        trainer.train()
        after = trainer.evaluate()["eval_loss"]
        print(f"validation loss {before:.3f} -> {after:.3f} (perplexity {math.exp(after):.1f})")

        model.eval()
        description = recipe.get("training_data", "")
        model.save_pretrained(tmp_dir, training_data=description)
        if mode == "text":
            tokenizer.save_pretrained(tmp_dir)
            prompt = tokenizer(recipe.get("sample_prompt", "ROMEO:"), return_tensors="pt")
            sample = model.generate(**prompt, max_new_tokens=60, do_sample=True, top_k=40, pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(sample[0], skip_special_tokens=True)
            print("sample:\n" + text)
        else:
            processor.save_pretrained(tmp_dir)
            _save_completions(model, processor, valid_images[:10], os.path.join(tmp_dir, "completions.png"))
        with open(os.path.join(tmp_dir, "train_results.json"), "w") as handle:
            json.dump({"eval_loss_before": before, "eval_loss_after": after, "steps": trainer.state.global_step,
                       "provenance": provenance()}, handle, indent=2)
    print(f"saved to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
