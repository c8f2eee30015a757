"""Per-modality projection norms in a vision-text fusion model, on easy-VQA.

A common design for fusing two encoders (ViLT, FLAVA, many VQA models) projects each modality's
features to a shared width and normalizes each with its own LayerNorm before the fusion transformer,
so that neither modality's features dominate by sheer scale. ``LNormVisionTextModel`` does this:
``vision_norm(vision_projection(image))`` and ``text_norm(text_projection(text))``.

This experiment trains ``LNormVisionTextForClassification`` on easy-VQA (PyPI ``easy-vqa``: images of
one coloured shape, 13-way answers) three ways, the rest of the model (encoders, fusion stack)
identical and seeded alike:

* ``layernorm``: the model as built, a LayerNorm per modality projection;
* ``none``: both projection norms replaced by the identity;
* ``dyt``: both replaced by Dynamic Tanh (``weight * tanh(alpha * x) + bias``).

A fixed, seeded fifth of the training *images* (with all their questions) is held out as the
validation split; the curves and the verdict use validation accuracy, and easy-VQA's test split is
scored once, at the end of each run, as the final number. The "balance" is measured directly: the
mean L2 norm per token of the projected image and text features, before and after the projection
norm, on a fixed validation batch at every evaluation.

Verdict: the claim counts as reproduced when (a) the LayerNorm does the balancing: without a
projection norm the image/text feature-norm ratio entering the fusion lies outside
``[1 / BALANCE, BALANCE]`` and with LayerNorm inside it (geometric mean over seeds, at the end of
training), and (b) LayerNorm's final validation accuracy (mean over seeds) is more than
``ACC_MARGIN`` above that without a projection norm.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ._report import mean_std, provenance_lines
from ..errors import UsageError

__all__ = ["NAME", "DESCRIPTION", "DEFAULT_SEEDS", "ACC_MARGIN", "BALANCE", "VARIANTS", "summarize", "run", "plot",
           "render_docs", "summary_lines"]

NAME = "fusion_norm"
DESCRIPTION = "per-modality projection norms (LayerNorm / none / DyT) in a vision-text fusion model on easy-VQA"
DEFAULT_SEEDS = 3
# LayerNorm "helps" when its mean final validation accuracy beats the no-norm one by more than this.
ACC_MARGIN = 0.01
# Two modalities are "in balance" when the ratio of their feature norms lies within [1 / BALANCE, BALANCE].
BALANCE = 1.25
VARIANTS = ("layernorm", "none", "dyt")
VARIANT_LABELS = {"layernorm": "LayerNorm", "none": "no projection norm", "dyt": "DyT"}
VALIDATION_SEED = 1234
VALIDATION_FRACTION = 0.2

# The model of configs/vision_text_easyvqa.json (32 px images, patches of 8).
MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "mlp_ratio": 2.0, "dropout": 0.0,
         "norm_type": "layernorm", "norm_position": "pre",
         "vision_config": {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 64,
                           "num_hidden_layers": 2, "num_attention_heads": 4, "mlp_ratio": 2.0},
         "text_config": {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "mlp_ratio": 2.0,
                         "max_position_embeddings": 16}}
FULL = {"train_images": None, "steps": 500, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.01, "warmup_steps": 50,
        "eval_points": 5, "val_questions": 2000, "test_questions": None, "scale_batch": 256}
QUICK = {"train_images": 400, "steps": 30, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.01, "warmup_steps": 5,
         "eval_points": 2, "val_questions": 200, "test_questions": 300, "scale_batch": 64}


# --------------------------------------------------------------------------- data


def _load_easy_vqa(sizes: dict):
    try:
        import easy_vqa
    except ImportError:
        raise UsageError(f"the {NAME} experiment needs the easy-VQA data set: pip install easy-vqa") from None
    from PIL import Image

    from ..models import LNormViTImageProcessor, LNormVisionTextProcessor, train_question_tokenizer

    answers = list(easy_vqa.get_answers())
    train_q, train_a, train_img = easy_vqa.get_train_questions()
    test_q, test_a, test_img = easy_vqa.get_test_questions()
    train_paths, test_paths = easy_vqa.get_train_image_paths(), easy_vqa.get_test_image_paths()

    image_ids = sorted(train_paths)
    rng = random.Random(VALIDATION_SEED)  # a fixed split: validation images are never trained on
    val_images = set(rng.sample(image_ids, round(VALIDATION_FRACTION * len(image_ids))))
    train_images = [i for i in image_ids if i not in val_images]
    if sizes["train_images"]:
        train_images = train_images[:sizes["train_images"]]
    keep = set(train_images)
    train_rows = [k for k, i in enumerate(train_img) if i in keep]
    val_rows = [k for k, i in enumerate(train_img) if i in val_images]
    val_rows = random.Random(VALIDATION_SEED + 1).sample(val_rows, min(sizes["val_questions"], len(val_rows)))
    test_rows = list(range(len(test_q)))
    if sizes["test_questions"]:
        test_rows = random.Random(VALIDATION_SEED + 2).sample(test_rows, sizes["test_questions"])

    size = MODEL["vision_config"]["image_size"]
    image_processor = LNormViTImageProcessor(size=size, num_channels=3, resample="bilinear", rescale_factor=1 / 255)
    tokenizer = train_question_tokenizer([train_q[k] for k in train_rows],
                                         max_length=MODEL["text_config"]["max_position_embeddings"])
    processor = LNormVisionTextProcessor(image_processor, tokenizer)
    label_of = {a: i for i, a in enumerate(answers)}

    def split(rows: Sequence[int], questions, labels, image_of, paths) -> dict:
        needed = sorted({image_of[k] for k in rows})
        row_of = {image_id: r for r, image_id in enumerate(needed)}
        pixels = []
        for start in range(0, len(needed), 500):
            batch = [Image.open(paths[i]).convert("RGB") for i in needed[start:start + 500]]
            pixels.append(image_processor(batch, return_tensors="pt")["pixel_values"])
        enc = processor(text=[questions[k] for k in rows], padding="longest", return_tensors="pt")
        return {"pixels": torch.cat(pixels), "image_row": torch.tensor([row_of[image_of[k]] for k in rows]),
                "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": torch.tensor([label_of[labels[k]] for k in rows])}

    data = {"train": split(train_rows, train_q, train_a, train_img, train_paths),
            "validation": split(val_rows, train_q, train_a, train_img, train_paths),
            "test": split(test_rows, test_q, test_a, test_img, test_paths)}
    counts = {"train_images": len(train_images), "validation_images": len(val_images),
              "train_questions": len(train_rows), "validation_questions_used": len(val_rows),
              "validation_questions_all": sum(1 for i in train_img if i in val_images),
              "test_questions": len(test_rows), "answers": len(answers)}
    return answers, tokenizer, data, counts


def _batch(split: dict, rows) -> dict:
    return {"pixel_values": split["pixels"][split["image_row"][rows]], "input_ids": split["input_ids"][rows],
            "attention_mask": split["attention_mask"][rows], "labels": split["labels"][rows]}


# --------------------------------------------------------------------------- model, measuring, training


def _model(tokenizer, answers: Sequence[str], variant: str, seed: int):
    from ..models import LNormVisionTextConfig, LNormVisionTextForClassification
    from ..models.layers import build_norm

    cfg = {k: v for k, v in MODEL.items() if k not in ("vision_config", "text_config")}
    text_cfg = dict(MODEL["text_config"], vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    config = LNormVisionTextConfig(**cfg, vision_config=dict(MODEL["vision_config"]), text_config=text_cfg,
                                   num_labels=len(answers))
    torch.manual_seed(seed)
    model = LNormVisionTextForClassification(config)
    backbone = model.base_model
    if variant != "layernorm":  # same initial weights everywhere else; only the two projection norms differ
        backbone.vision_norm = build_norm(variant, config.hidden_size, config.layer_norm_eps, config.dyt_alpha_init)
        backbone.text_norm = build_norm(variant, config.hidden_size, config.layer_norm_eps, config.dyt_alpha_init)
    return model


@torch.no_grad()
def feature_scales(model, batch: dict) -> Dict[str, float]:
    """Mean L2 norm per token of the projected image and text features, before and after the projection norms.

    Args:
        model: an ``LNormVisionTextForClassification``.
        batch: ``pixel_values``, ``input_ids``, ``attention_mask`` (text padding is left out of the text means).

    Returns:
        ``image_in``, ``text_in`` (the projections' outputs), ``image_out``, ``text_out`` (what enters the fusion,
            before the type embedding) and ``ratio_out = image_out / text_out``.
    """
    backbone = model.base_model
    seen: Dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, inputs, output):
            seen[name + "_in"], seen[name + "_out"] = inputs[0].norm(dim=-1), output.norm(dim=-1)
        return hook

    handles = [backbone.vision_norm.register_forward_hook(keep("image")),
               backbone.text_norm.register_forward_hook(keep("text"))]
    was_training = model.training
    model.eval()
    try:
        model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    mask = batch["attention_mask"].bool()
    out = {k: float(v.mean()) for k, v in seen.items() if k.startswith("image")}
    out.update({k: float(v[mask].mean()) for k, v in seen.items() if k.startswith("text")})
    out["ratio_out"] = out["image_out"] / out["text_out"]
    return out


@torch.no_grad()
def _accuracy(model, split: dict, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(split["labels"]), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(split["labels"])))
        batch = _batch(split, rows)
        labels = batch.pop("labels")
        correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    model.train()
    return correct / len(split["labels"])


def _train_one(model, data: dict, sizes: dict, seed: int) -> dict:
    steps = sizes["steps"]
    eval_at = sorted({round(steps * (i + 1) / sizes["eval_points"]) for i in range(sizes["eval_points"])})
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": sizes["weight_decay"]},
                                   {"params": other, "weight_decay": 0.0}], lr=sizes["lr"])

    def factor(s: int) -> float:  # linear warm-up, then cosine to 0
        if s < sizes["warmup_steps"]:
            return (s + 1) / sizes["warmup_steps"]
        return 0.5 * (1 + math.cos(math.pi * (s - sizes["warmup_steps"]) / max(1, steps - sizes["warmup_steps"])))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed)  # the same batches for every variant of a seed
    scale_rows = torch.arange(min(sizes["scale_batch"], len(data["validation"]["labels"])))
    scale_batch = _batch(data["validation"], scale_rows)
    n = len(data["train"]["labels"])
    order, cursor = torch.randperm(n, generator=generator), 0
    losses, window = [], []
    val_curve, scales = [], [{"step": 0, **feature_scales(model, scale_batch)}]
    model.train()
    for step in range(1, steps + 1):
        if cursor + sizes["batch_size"] > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        batch = _batch(data["train"], order[cursor:cursor + sizes["batch_size"]])
        cursor += sizes["batch_size"]
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        window.append(float(loss.detach()))
        if step in eval_at:
            losses.append([step, sum(window) / len(window)])
            window = []
            val_curve.append([step, _accuracy(model, data["validation"])])
            scales.append({"step": step, **feature_scales(model, scale_batch)})
    return {"train_loss": losses, "val_accuracy": val_curve, "feature_scales": scales,
            "final_val_accuracy": val_curve[-1][1], "test_accuracy": _accuracy(model, data["test"])}


# --------------------------------------------------------------------------- verdict


def summarize(per_seed: Sequence[dict]) -> Dict[str, object]:
    """Seed statistics per variant, the variant chosen on validation, and the verdict.

    Args:
        per_seed: records with ``variant``, ``seed``, ``final_val_accuracy``, ``test_accuracy`` and
            ``feature_scales`` (a list of dicts with ``image_out``, ``text_out``, ``ratio_out``, ...; the last is used).

    Returns:
        ``{"variants": [...], "chosen_on_validation": name, "verdict": {...}}``. A variant entry has mean/std over
            seeds of the final validation accuracy, test accuracy, final image and text feature norms entering the
            fusion, and ``abs_log_ratio`` (mean over seeds of ``|log(image_out / text_out)|``). The verdict has
            ``ln_in_balance`` and ``none_in_balance`` (``exp(abs_log_ratio) <= BALANCE``), ``balanced`` (the no-norm
            model is out of balance and the LayerNorm model in balance), ``accuracy_gain`` (LayerNorm minus no-norm
            mean validation accuracy), ``helps`` (gain above ``ACC_MARGIN``) and ``held`` (both); ``None`` values
            when a variant is missing.

    Examples:
        >>> rec = lambda v, acc, ratio: {"variant": v, "seed": 0, "final_val_accuracy": acc, "test_accuracy": acc,
        ...     "feature_scales": [{"image_out": ratio, "text_out": 1.0, "ratio_out": ratio}]}
        >>> s = summarize([rec("layernorm", 0.9, 1.1), rec("none", 0.8, 5.0)])
        >>> s["verdict"]["held"], s["chosen_on_validation"]
        (True, 'layernorm')
    """
    groups: Dict[str, List[dict]] = {}
    for r in per_seed:
        groups.setdefault(r["variant"], []).append(r)
    variants = []
    for name in [v for v in VARIANTS if v in groups] + sorted(set(groups) - set(VARIANTS)):
        records = groups[name]
        last = [r["feature_scales"][-1] for r in records]
        variants.append({
            "variant": name, "seeds": len(records),
            "final_val_accuracy": mean_std([r["final_val_accuracy"] for r in records]),
            "test_accuracy": mean_std([r["test_accuracy"] for r in records]),
            "image_out": mean_std([s["image_out"] for s in last]),
            "text_out": mean_std([s["text_out"] for s in last]),
            "abs_log_ratio": mean_std([abs(math.log(s["ratio_out"])) for s in last]),
        })
    by_name = {v["variant"]: v for v in variants}
    chosen = max(variants, key=lambda v: v["final_val_accuracy"]["mean"])["variant"] if variants else None
    ln, none = by_name.get("layernorm"), by_name.get("none")
    if ln is None or none is None:
        verdict = {"balanced": None, "accuracy_gain": None, "helps": None, "held": None}
    else:
        ln_in = bool(math.exp(ln["abs_log_ratio"]["mean"]) <= BALANCE)
        none_in = bool(math.exp(none["abs_log_ratio"]["mean"]) <= BALANCE)
        balanced = ln_in and not none_in
        gain = ln["final_val_accuracy"]["mean"] - none["final_val_accuracy"]["mean"]
        helps = bool(gain > ACC_MARGIN)
        verdict = {"balanced": balanced, "accuracy_gain": gain, "helps": helps, "held": balanced and helps,
                   "ln_in_balance": ln_in, "none_in_balance": none_in,
                   "ln_abs_log_ratio": ln["abs_log_ratio"]["mean"], "none_abs_log_ratio": none["abs_log_ratio"]["mean"]}
    return {"variants": variants, "chosen_on_validation": chosen, "verdict": verdict}


# --------------------------------------------------------------------------- the experiment


def run(seeds: int, quick: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Train every projection-norm variant for every seed.

    Args:
        seeds: number of seeds (``0 .. seeds-1``); a seed sets the initial weights and the batch order (the same
            for every variant of that seed).
        quick: ``QUICK`` sizes (400 training images, a few dozen steps, subsets of validation and test).
        log: called with one line per training run.

    Returns:
        ``{"settings": {...}, "per_seed": [...], "summary": summarize(per_seed)}``.

    Raises:
        UsageError: the ``easy-vqa`` package is not installed.
    """
    sizes = dict(QUICK if quick else FULL)
    log = log or (lambda line: None)
    answers, tokenizer, data, counts = _load_easy_vqa(sizes)
    per_seed, parameters = [], {}
    for seed in range(seeds):
        for variant in VARIANTS:
            model = _model(tokenizer, answers, variant, seed)
            parameters[variant] = sum(p.numel() for p in model.parameters())
            record = _train_one(model, data, sizes, seed)
            per_seed.append({"variant": variant, "seed": seed, **record})
            last = record["feature_scales"][-1]
            log(f"{variant} seed {seed}: validation accuracy {record['final_val_accuracy']:.3f}, "
                f"image/text feature norm {last['image_out']:.2f}/{last['text_out']:.2f}")
    settings = {**sizes, **counts, "seeds": list(range(seeds)), "variants": list(VARIANTS), "acc_margin": ACC_MARGIN, "balance": BALANCE,
                "validation_seed": VALIDATION_SEED, "validation_fraction": VALIDATION_FRACTION, "model": MODEL,
                "parameters": parameters,
                "optimizer": "AdamW (weight decay on matrices only), linear warm-up then cosine decay to 0",
                "data": "easy-VQA (PyPI easy-vqa), images resized to 32 px"}
    return {"settings": settings, "per_seed": per_seed, "summary": summarize(per_seed)}


# --------------------------------------------------------------------------- reporting

COLOURS = {"layernorm": "tab:blue", "none": "tab:red", "dyt": "tab:green"}


def plot(result: dict, path: "Path | str") -> None:
    """Draw validation accuracy and the image/text feature-norm ratio against step, one line per seed.

    Args:
        result: the experiment's JSON (``per_seed`` is read).
        path: the PNG to write.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labelled = set()
    for r in result["per_seed"]:
        colour, label = COLOURS.get(r["variant"], "gray"), VARIANT_LABELS.get(r["variant"], r["variant"])
        show = None if label in labelled else label
        labelled.add(label)
        xs, ys = zip(*r["val_accuracy"])
        axes[0].plot(xs, ys, color=colour, marker="o", markersize=3, alpha=0.8, label=show)
        axes[1].plot([s["step"] for s in r["feature_scales"]], [s["ratio_out"] for s in r["feature_scales"]],
                     color=colour, marker="o", markersize=3, alpha=0.8, label=show)
    axes[0].set_ylabel("validation accuracy")
    axes[1].set_ylabel("image / text feature norm entering the fusion")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="black", linewidth=0.8, alpha=0.5)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    seeds = result.get("seeds")
    fig.suptitle(f"Projection norms in LNormVisionText on easy-VQA ({seeds} seed{'s' if seeds != 1 else ''}, one line each)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stat(entry: dict, digits: int = 3) -> str:
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}" if entry["std"] else f"{entry['mean']:.{digits}f}"


def summary_lines(result: dict) -> List[str]:
    """The verdict sentence and the variant chosen on validation, with its test accuracy.

    Args:
        result: the experiment's JSON.

    Returns:
        The lines, also the sentences of the docs page.
    """
    summary = result["summary"]
    v = summary["verdict"]
    by_name = {x["variant"]: x for x in summary["variants"]}
    lines = []
    if v["held"] is None:
        lines.append("**No verdict**: the run lacks the LayerNorm or the no-norm variant.")
    else:
        head = "**Claim reproduced.**" if v["held"] else "**Claim not reproduced.**"
        ln, none = by_name["layernorm"], by_name["none"]
        lines.append(
            f"{head} Balancing by the LayerNorm: {'yes' if v['balanced'] else 'no'}; the image and text features entering "
            f"the fusion differ in norm by {math.exp(v['ln_abs_log_ratio']):.2f}× with LayerNorm "
            f"({'in' if v['ln_in_balance'] else 'out of'} balance) and {math.exp(v['none_abs_log_ratio']):.2f}× "
            f"without a projection norm ({'in' if v['none_in_balance'] else 'out of'} balance; in balance means "
            f"within {BALANCE}×, geometric mean over seeds). Accuracy gain: "
            f"{'yes' if v['helps'] else 'no'}, final validation accuracy {_stat(ln['final_val_accuracy'])} with "
            f"LayerNorm against {_stat(none['final_val_accuracy'])} without (gain {v['accuracy_gain']:+.3f}; the rule "
            f"asks for more than {ACC_MARGIN}).")
    chosen = summary["chosen_on_validation"]
    if chosen is not None:
        lines.append(f"Chosen on validation: {VARIANT_LABELS.get(chosen, chosen)}; its test accuracy (easy-VQA test "
                     f"split, scored once at the end) is {_stat(by_name[chosen]['test_accuracy'])}.")
    return lines


def render_docs(result: dict) -> str:
    """The user's-guide page (``docs/experiments/fusion_norm.md``) for a result JSON.

    Args:
        result: the experiment's JSON.

    Returns:
        The Markdown text; every number in it comes from ``result``.
    """
    s = result["settings"]
    seeds = result["seeds"]
    m = s["model"]
    command = f"hf-lnorm experiment {NAME} --seeds {seeds}" + (" --quick" if result.get("quick") else "")
    lines = [
        f"<!-- Generated by hf-lnorm experiment {NAME} --render-docs data/results/experiments/{NAME}.json. "
        "Edit the JSON or the renderer, not this page. -->",
        "# Per-modality norms in a vision-text fusion model",
        "",
        "**The question.** Fusion models such as ViLT project each modality to a shared width and give each "
        "projection its own LayerNorm, so that neither modality's features dominate the fusion transformer by "
        "scale. Does that per-modality LayerNorm balance the two modalities' features, and does the model answer "
        "better with it than without a projection norm (or with Dynamic Tanh in its place)?",
        "",
        "## Setup",
        "",
        f"- Model: `LNormVisionTextForClassification` ({s['parameters'].get('layernorm', 0):,} parameters): an "
        f"`LNormViT` image encoder ({m['vision_config']['num_hidden_layers']} layers, width "
        f"{m['vision_config']['hidden_size']}, {m['vision_config']['image_size']} px images, patches of "
        f"{m['vision_config']['patch_size']}), a text encoder ({m['text_config']['num_hidden_layers']} layer), each "
        f"projected to width {m['hidden_size']}, and a {m['num_hidden_layers']}-layer Pre-LN fusion transformer. "
        "Only the two projection norms differ between the variants: LayerNorm (the model as built), none (identity), "
        "DyT; every variant of a seed starts from the same other weights and sees the same batches.",
        f"- Data: {s['data']}. A fixed {s['validation_fraction']:.0%} of the training images (seed {s['validation_seed']}, "
        f"{s['validation_images']:,} images, {s['validation_questions_all']:,} questions) is the validation split; "
        f"training uses the other {s['train_images']:,} images ({s['train_questions']:,} questions). Validation "
        f"accuracy is measured on {s['validation_questions_used']:,} of its questions; the test accuracy on "
        f"{s['test_questions']:,} questions of easy-VQA's test split, once, after training.",
        f"- Training: {s['steps']} steps of {s['batch_size']} questions, learning rate {s['lr']:g} "
        f"({s['warmup_steps']} warm-up steps), {s['optimizer']}, weight decay {s['weight_decay']}; "
        f"{seeds} seed{'s' if seeds != 1 else ''}.",
        f"- Feature scales: the mean L2 norm per token of the projected image and text features entering the fusion "
        f"(after the projection norm, before the type embedding), on {s['scale_batch']} validation questions.",
        f"- Verdict rule: the claim holds when the no-norm model's image/text feature-norm ratio at the end lies "
        f"outside [1/{s['balance']}, {s['balance']}] while the LayerNorm model's lies inside (the LayerNorm does the "
        f"balancing), and the LayerNorm model's mean final validation accuracy is more than {s['acc_margin']} above "
        "the no-norm model's.",
        "",
        f"Run it (the run recorded here took {result.get('wall_s', 0) / 60:.1f} minutes on the machine named under "
        "Provenance; `--quick` is a short check on a few hundred images):",
        "",
        "```bash",
        "pip install easy-vqa",
        command,
        "```",
        "",
        "## Result",
        "",
    ]
    lines += [f"- {line}" for line in summary_lines(result)]
    lines += ["", f"![Validation accuracy and image/text feature-norm ratio per step](img/{NAME}.png)", "",
              "### Final numbers", "",
              "Mean ± standard deviation over seeds; the feature norms are those entering the fusion at the end.", "",
              "| projection norm | validation accuracy | test accuracy | image feature norm | text feature norm |",
              "|---|---|---|---|---|"]
    for v in result["summary"]["variants"]:
        lines.append(f"| {VARIANT_LABELS.get(v['variant'], v['variant'])} | {_stat(v['final_val_accuracy'])} | "
                     f"{_stat(v['test_accuracy'])} | {_stat(v['image_out'], 2)} | {_stat(v['text_out'], 2)} |")
    steps = [step for step, _ in result["per_seed"][0]["val_accuracy"]]
    lines += ["", "### Validation accuracy per seed", "",
              "| projection norm | seed | " + " | ".join(f"step {st}" for st in steps) + " | test |",
              "|---|---|" + "---|" * (len(steps) + 1)]
    for r in result["per_seed"]:
        lines.append(f"| {VARIANT_LABELS.get(r['variant'], r['variant'])} | {r['seed']} | "
                     + " | ".join(f"{a:.3f}" for _, a in r["val_accuracy"]) + f" | {r['test_accuracy']:.3f} |")
    lines += ["", "### Feature norms per seed (image / text, before → after the projection norm)", "",
              "| projection norm | seed | " + " | ".join(f"step {s_['step']}" for s_ in result["per_seed"][0]["feature_scales"]) + " |",
              "|---|---|" + "---|" * len(result["per_seed"][0]["feature_scales"])]
    for r in result["per_seed"]:
        cells = [f"{x['image_in']:.1f} → {x['image_out']:.1f} / {x['text_in']:.1f} → {x['text_out']:.1f}"
                 for x in r["feature_scales"]]
        lines.append(f"| {VARIANT_LABELS.get(r['variant'], r['variant'])} | {r['seed']} | " + " | ".join(cells) + " |")
    lines += ["", "## Provenance", ""] + provenance_lines(result, NAME)
    return "\n".join(lines) + "\n"
