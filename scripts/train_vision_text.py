#!/usr/bin/env python
"""Train LNormVisionText on easy-VQA with the Trainer and report accuracy on easy-VQA's test split.

easy-VQA (PyPI ``easy-vqa``, MIT): 64x64 images of one colored shape, questions
such as "what color is the shape?" or "is there a circle?", 13 answers; 4,000
train images / 38,575 questions and 1,000 test images / 9,673 questions. Every
question is a 13-way classification (``AutoModelForVisualQuestionAnswering``
head on the fusion CLS token).

    python scripts/train_vision_text.py configs/vision_text_easyvqa.json
    python scripts/train_vision_text.py configs/vision_text_easyvqa.json --max-steps 20 --limit-train 2000 --output-dir /tmp/vt  # smoke

Steps: (1) the image processor (``LNormViTImageProcessor``, resize to
``image_size``, rescale, normalize) runs once over all 5,000 images and the
result is cached in ``data/cache/easy_vqa_<size>px.pt`` (git-ignored; rebuilt
when missing); (2) a word-level tokenizer is trained on the *training*
questions; (3) Trainer runs (with ``"augment": true`` training images are randomly flipped / rotated by
multiples of 90 degrees, which keeps every easy-VQA answer correct); (4) the model is evaluated on every test question
and model + processor + ``results.json`` are written to ``output_dir`` (under a
temporary name, renamed when complete). No test data is used before step 4. An
existing ``output_dir`` is replaced only with ``--overwrite`` and only if this project
wrote it (``hf_lnorm.outputs``): a folder of other files is refused before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from hf_lnorm._json import write_json  # noqa: E402
from hf_lnorm._machine import provenance  # noqa: E402
from hf_lnorm.models import (  # noqa: E402
    LNormViTImageProcessor,
    LNormVisionTextConfig,
    LNormVisionTextForClassification,
    LNormVisionTextProcessor,
    train_question_tokenizer,
)
from hf_lnorm.outputs import OutputExistsError, check_output_dir, staged_output_dir  # noqa: E402

CACHE_DIR = os.path.join(ROOT, "data", "cache")
SPLITS = ("train", "test")


def load_easy_vqa():
    """Questions, answers and image paths of both splits, straight from the ``easy_vqa`` package."""
    try:
        import easy_vqa
    except ImportError:
        raise SystemExit("easy-vqa is not installed: pip install easy-vqa") from None
    answers = easy_vqa.get_answers()
    data = {}
    for split in SPLITS:
        texts, labels, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
        paths = getattr(easy_vqa, f"get_{split}_image_paths")()
        data[split] = {"texts": texts, "answers": labels, "image_ids": image_ids, "paths": paths}
    return answers, data


def cached_images(data: dict, image_processor: LNormViTImageProcessor, size: int) -> dict:
    """``{split: (ids tensor, pixel_values tensor)}``, processed once and cached under data/cache/."""
    path = os.path.join(CACHE_DIR, f"easy_vqa_{size}px.pt")
    settings = image_processor.to_dict()
    settings.pop("image_processor_type", None)
    settings.pop("processor_class", None)
    if os.path.exists(path):
        cache = torch.load(path)
        if cache.get("settings") == json.dumps(settings, sort_keys=True, default=str):
            return cache["images"]
        print(f"cache {path} was built with other image-processor settings; rebuilding")
    from PIL import Image

    images = {}
    for split in SPLITS:
        paths = data[split]["paths"]
        ids = sorted(paths)
        pixels = []
        for start in range(0, len(ids), 500):
            batch = [np.asarray(Image.open(paths[i]).convert("RGB")) for i in ids[start : start + 500]]
            pixels.append(image_processor(batch, return_tensors="pt")["pixel_values"])
        images[split] = (torch.tensor(ids), torch.cat(pixels))
    os.makedirs(CACHE_DIR, exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"settings": json.dumps(settings, sort_keys=True, default=str), "images": images}, tmp)
    os.replace(tmp, path)
    return images


class EasyVQADataset(torch.utils.data.Dataset):
    """One row per question: the question's image (shared tensor), its token ids and its answer id.

    With ``augment`` (training only) each image is flipped horizontally / vertically and rotated by a multiple
    of 90 degrees at random: easy-VQA's shapes (circle, rectangle, triangle) and colors keep their names under
    these maps, so every answer stays correct.
    """

    def __init__(self, image_ids, pixel_values, question_image_ids, input_ids, attention_mask, labels, augment=False):
        row_of = {int(i): r for r, i in enumerate(image_ids)}
        self.pixel_values = pixel_values
        self.image_rows = torch.tensor([row_of[int(i)] for i in question_image_ids])
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.labels = labels
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        pixels = self.pixel_values[self.image_rows[i]]
        if self.augment:
            flips = [d for d, flip in zip((1, 2), torch.randint(0, 2, (2,)).tolist()) if flip]
            if flips:
                pixels = pixels.flip(flips)
            pixels = torch.rot90(pixels, int(torch.randint(0, 4, ()).item()), dims=(1, 2))
        return {
            "pixel_values": pixels,
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention_mask[i],
            "labels": self.labels[i],
        }


def build_datasets(recipe: dict, limit_train=None):
    answers, data = load_easy_vqa()
    size = recipe["image_size"]
    image_processor = LNormViTImageProcessor(size=size, num_channels=3, resample="bilinear", rescale_factor=1 / 255)
    text_cfg = recipe["model"].get("text_config", {})
    max_length = text_cfg.get("max_position_embeddings", 16)
    tokenizer = train_question_tokenizer(data["train"]["texts"], max_length=max_length)
    processor = LNormVisionTextProcessor(image_processor, tokenizer)
    images = cached_images(data, image_processor, size)
    label_of = {a: i for i, a in enumerate(answers)}
    datasets = {}
    for split in SPLITS:
        d = data[split]
        n = len(d["texts"]) if (split == "test" or not limit_train) else min(limit_train, len(d["texts"]))
        enc = processor(text=d["texts"][:n], padding="longest", return_tensors="pt")
        labels = torch.tensor([label_of[a] for a in d["answers"][:n]])
        augment = split == "train" and bool(recipe.get("augment", False))
        datasets[split] = EasyVQADataset(*images[split], d["image_ids"][:n], enc["input_ids"], enc["attention_mask"], labels, augment)
    return answers, processor, datasets, data


def accuracy_by_kind(predictions, labels, answers) -> dict:
    yes_no = {answers.index("yes"), answers.index("no")}
    kinds = {"yes/no": [l in yes_no for l in labels], "other": [l not in yes_no for l in labels]}
    out = {"accuracy": float(np.mean(predictions == labels))}
    for kind, mask in kinds.items():
        mask = np.asarray(mask)
        out[f"accuracy_{kind}"] = float(np.mean(predictions[mask] == labels[mask])) if mask.any() else None
        out[f"count_{kind}"] = int(mask.sum())
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="recipe JSON, e.g. configs/vision_text_easyvqa.json")
    parser.add_argument("--output-dir", help="overrides the recipe's output_dir")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    parser.add_argument("--epochs", type=float, help="overrides training.num_train_epochs")
    parser.add_argument("--threads", type=int, help="torch threads (default: the recipe's, else 1)")
    parser.add_argument("--limit-train", type=int, help="use only the first N training questions (smoke runs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output_dir written by an earlier run (never a folder of other files)")
    parser.add_argument("--results-json", help="also write results.json here (e.g. data/results/vision_text_easyvqa.json)")
    args = parser.parse_args(argv)

    with open(args.config, encoding="utf-8") as handle:
        recipe = json.load(handle)
    output_dir = os.path.abspath(args.output_dir or os.path.join(ROOT, recipe["output_dir"]))
    protect = [args.config, CACHE_DIR]
    try:
        check_output_dir(output_dir, args.overwrite, protect)
    except OutputExistsError as exc:
        print(f"train_vision_text: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    torch.set_num_threads(args.threads or recipe.get("threads", 1))
    started = time.time()

    answers, processor, datasets, _ = build_datasets(recipe, args.limit_train)
    prep_s = time.time() - started
    model_cfg = dict(recipe["model"])
    text_cfg = dict(model_cfg.pop("text_config", {}))
    text_cfg.update(vocab_size=len(processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id)
    config = LNormVisionTextConfig(
        **model_cfg, text_config=text_cfg, num_labels=len(answers),
        id2label=dict(enumerate(answers)), label2id={a: i for i, a in enumerate(answers)},
    )
    torch.manual_seed(recipe["training"].get("seed", 0))
    model = LNormVisionTextForClassification(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"LNormVisionText: {n_params:,} parameters; {len(datasets['train'])} train / {len(datasets['test'])} test questions; "
          f"data ready in {prep_s:.1f} s")

    with staged_output_dir(output_dir, args.overwrite, protect, writer="scripts/train_vision_text.py") as staged:
        work = str(staged)
        training = dict(recipe["training"])
        if args.epochs is not None:
            training["num_train_epochs"] = args.epochs
        if args.max_steps is not None:
            training["max_steps"] = args.max_steps
        targs = TrainingArguments(
            output_dir=os.path.join(work, "trainer"), save_strategy="no", report_to=[], use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True, **training,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=datasets["train"])
        train_started = time.time()
        trainer.train()
        train_s = time.time() - train_started

        eval_started = time.time()
        prediction = trainer.predict(datasets["test"])
        eval_s = time.time() - eval_started
        predictions = prediction.predictions.argmax(-1)
        labels = prediction.label_ids
        results = accuracy_by_kind(predictions, labels, answers)
        results.update(
            test_questions=int(len(labels)), train_questions=len(datasets["train"]), parameters=n_params,
            train_steps=trainer.state.global_step, train_seconds=round(train_s, 1), eval_seconds=round(eval_s, 1),
            data_seconds=round(prep_s, 1), wall_seconds=round(time.time() - started, 1), threads=torch.get_num_threads(),
            final_train_loss=next((log["loss"] for log in reversed(trainer.state.log_history) if "loss" in log), None),
            confusions=Counter(f"{answers[l]}->{answers[p]}" for p, l in zip(predictions, labels) if p != l).most_common(10),
            config=os.path.relpath(os.path.abspath(args.config), ROOT), transformers_version=__import__("transformers").__version__,
            provenance=provenance(),
        )
        model.save_pretrained(work, training_data=f"easy-VQA train split (PyPI easy-vqa): {len(datasets['train']):,} questions.")
        processor.save_pretrained(work)
        shutil.rmtree(os.path.join(work, "trainer"), ignore_errors=True)
        with open(os.path.join(work, "results.json"), "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    if args.results_json:
        write_json(args.results_json, results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("confusions", "provenance")}, indent=2))
    print(f"saved model, processor and results.json to {output_dir}")
    return results


if __name__ == "__main__":
    main()
