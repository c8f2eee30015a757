#!/usr/bin/env python
"""Train LNormViT with the Trainer on scikit-learn's digits and report test accuracy.

    python scripts/train_vit.py configs/vit_digits.json
    python scripts/train_vit.py configs/vit_digits.json --norm-type rmsnorm --output-dir outputs/vit_digits_rms
    python scripts/train_vit.py configs/vit_digits.json --max-steps 20 --output-dir /tmp/vit_smoke

Data: ``sklearn.datasets.load_digits()`` (1,797 8x8 grayscale images, pixel
values 0..16, 10 classes), split once into train and test, stratified by class
with a fixed seed (``data.test_size``, ``data.split_seed`` in the recipe); the
split's indices are saved with the model (``split.json``). The images go
through ``LNormViTImageProcessor`` (``processor`` settings: 8x8, 1 channel,
rescale by 1/16, normalize to [-1, 1]); training images are shifted at random
by up to ``data.max_shift`` pixels (fresh each epoch, seeded). The test split
is used only for the final evaluation (no model selection on it).

Writes, under a temporary name renamed when complete: the model (with remote
code), the image processor, ``split.json`` and ``train_results.json`` (test
accuracy, loss, steps, wall time, thread count, transformers version). An existing
output folder is replaced only with ``--overwrite`` and only if this project wrote
it (``hf_lnorm.outputs``): a folder of other files is refused before training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hf_lnorm.models import LNormViTConfig, LNormViTForImageClassification, LNormViTImageProcessor  # noqa: E402
from hf_lnorm._machine import provenance  # noqa: E402
from hf_lnorm.outputs import OutputExistsError, check_output_dir, staged_output_dir  # noqa: E402


def digits_split(test_size: float = 0.2, seed: int = 0):
    """The fixed stratified split of ``load_digits()``.

    Returns:
        ``(images (N, 8, 8) float64 in 0..16, labels (N,), train_indices, test_indices)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size={test_size!r} must be a fraction in (0, 1)")
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(indices, test_size=test_size, random_state=seed, stratify=digits.target)
    return digits.images, digits.target, np.sort(train_idx), np.sort(test_idx)


class DigitsDataset(torch.utils.data.Dataset):
    """Preprocessed digits as ``{"pixel_values", "labels"}`` rows; optional random shifts (training)."""

    def __init__(self, pixel_values: torch.Tensor, labels, max_shift: int = 0, background: float = 0.0, seed: int = 0):
        self.pixel_values = pixel_values
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.max_shift = int(max_shift)
        self.background = float(background)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        image = self.pixel_values[index]
        if self.max_shift:
            s = self.max_shift
            dy, dx = torch.randint(0, 2 * s + 1, (2,), generator=self.generator).tolist()
            padded = F.pad(image, (s, s, s, s), value=self.background)
            image = padded[:, dy : dy + image.shape[1], dx : dx + image.shape[2]]
        return {"pixel_values": image, "labels": self.labels[index]}


def accuracy_metric(eval_pred) -> Dict[str, float]:
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, (tuple, list)) else logits
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="JSON recipe (configs/vit_digits.json)")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="training seed (the data split keeps the recipe's)")
    parser.add_argument("--norm-type", default=None, help="layernorm | rmsnorm | dyt | none")
    parser.add_argument("--norm-position", default=None, help="pre | post")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder written by an earlier run (never a folder of other files)")
    args = parser.parse_args(argv)

    from transformers import Trainer, TrainingArguments, __version__ as transformers_version

    try:
        with open(args.recipe) as handle:
            recipe = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"train_vit: error: cannot read recipe {args.recipe!r}: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    output_dir = args.output_dir or os.path.join(ROOT, recipe["output_dir"])
    try:
        check_output_dir(output_dir, args.overwrite, [args.recipe])
    except OutputExistsError as exc:
        print(f"train_vit: error: {exc}", file=sys.stderr)
        return 2
    training = dict(recipe.get("training", {}))
    if args.max_steps is not None:
        training["max_steps"] = args.max_steps
    if args.epochs is not None:
        training["num_train_epochs"] = args.epochs
    if args.seed is not None:
        training["seed"] = args.seed
    data = dict(recipe.get("data", {}))
    model_args = dict(recipe["model"])
    for key in ("norm_type", "norm_position"):
        if getattr(args, key):
            model_args[key] = getattr(args, key)
    model_args.setdefault("num_labels", 10)
    model_args.setdefault("id2label", {i: str(i) for i in range(10)})
    model_args.setdefault("label2id", {str(i): i for i in range(10)})
    try:
        config = LNormViTConfig(**model_args)
        processor = LNormViTImageProcessor(**recipe.get("processor", {}))
    except (TypeError, ValueError) as exc:
        print(f"train_vit: error: {exc}", file=sys.stderr)
        return 2

    images, labels, train_idx, test_idx = digits_split(data.get("test_size", 0.2), data.get("split_seed", 0))
    pixel_values = processor(images[:, None], return_tensors="pt").pixel_values
    background = float(processor(np.zeros((1, 1, 8, 8)), return_tensors="pt").pixel_values.flatten()[0])
    seed = training.get("seed", 0)
    train = DigitsDataset(pixel_values[train_idx], labels[train_idx], data.get("max_shift", 0), background, seed=seed)
    test = DigitsDataset(pixel_values[test_idx], labels[test_idx])

    torch.manual_seed(seed)
    model = LNormViTForImageClassification(config)
    with staged_output_dir(output_dir, args.overwrite, [args.recipe], writer="scripts/train_vit.py") as staged:
        tmp_dir = str(staged)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=tmp_dir, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                dataloader_num_workers=0, **training,
            ),
            train_dataset=train,
            eval_dataset=test,
            compute_metrics=accuracy_metric,
        )
        start = time.time()
        trainer.train()
        train_seconds = time.time() - start
        metrics = trainer.evaluate()
        wall = time.time() - start
        print(f"test accuracy {metrics['eval_accuracy']:.4f} ({len(test)} images), test loss {metrics['eval_loss']:.4f}; "
              f"{trainer.state.global_step} steps, training {train_seconds:.1f} s, total {wall:.1f} s, {torch.get_num_threads()} thread(s)")

        model.eval()
        model.save_pretrained(tmp_dir, training_data=recipe.get("training_data"))
        processor.save_pretrained(tmp_dir)
        results = {
            "test_accuracy": metrics["eval_accuracy"],
            "test_loss": metrics["eval_loss"],
            "test_images": len(test),
            "train_images": len(train),
            "steps": trainer.state.global_step,
            "train_seconds": round(train_seconds, 1),
            "wall_seconds": round(wall, 1),
            "threads": torch.get_num_threads(),
            "transformers": transformers_version,
            "torch": torch.__version__,
            "model": {k: config.to_dict()[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "norm_type", "norm_position")},
            "parameters": sum(p.numel() for p in model.parameters()),
            "provenance": provenance(),
        }
        for name, payload in (("train_results.json", results),
                              ("split.json", {"test_size": data.get("test_size", 0.2), "split_seed": data.get("split_seed", 0),
                                              "train_indices": train_idx.tolist(), "test_indices": test_idx.tolist()})):
            with open(os.path.join(tmp_dir, name), "w") as handle:
                json.dump(payload, handle, indent=2)
    print(f"saved to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
