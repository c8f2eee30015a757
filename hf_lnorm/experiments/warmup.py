"""Learning-rate warm-up, Pre-LN against Post-LN, on English-to-Spanish translation (Xiong et al. 2020).

"On Layer Normalization in the Transformer Architecture" (Xiong et al., ICML 2020, Section 3 and
Figure 2) reports that a Post-LN Transformer needs a learning-rate warm-up: trained with Adam at a
learning rate of 5e-4 or 1e-3 from the first step, it stalls at a much worse loss (or diverges),
while a Pre-LN Transformer trains without warm-up and converges faster.

This experiment trains ``LNormSeq2SeqForConditionalGeneration`` (Xavier-uniform Linear weights, as
in the paper) on King James → Reina-Valera verse pairs with a joint BPE tokenizer trained on the
training books, over the grid norm position {pre, post} × peak learning rate × warm-up {0, W}
steps, with Adam (beta2 = 0.98). The learning rate rises linearly from 0 to its peak over W steps
and then stays constant; without warm-up it is at its peak from the first step. The books of
``HOLDOUT_BOOKS`` are never trained on: the held-out loss and the greedy-decoding BLEU and chrF
(sacreBLEU) are measured on them.

Data: ``--quick`` uses the package's 2,000-pair sample (``bible_en_es_sample.jsonl``). The full run
reads the whole corpus (about 31,000 pairs) that ``python scripts/prepare_data.py bible`` writes
to ``data/cache/bible_en_es.jsonl``, from the path in ``$HF_LNORM_BIBLE_JSONL``, or else from
``bible_en_es.jsonl`` in the hf_lnorm cache folder (``hf_lnorm.resources.cache_dir()``); without
either the run stops with a usage error naming that command.

Verdict, per learning rate: a configuration *fails* in a seed when its training diverged (a
non-finite loss) or its final held-out loss is more than ``STALL_NATS`` above the same norm
position's final held-out loss with warm-up (same seed). "Post-LN fails without warm-up" holds when
it fails in more than half of the seeds; the claim holds at that learning rate when Post-LN fails
and Pre-LN does not (fails in at most half of the seeds).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ._report import mean_std, provenance_lines
from ..errors import UsageError
from ..resources import cache_dir, data_file

__all__ = ["NAME", "DESCRIPTION", "DEFAULT_SEEDS", "STALL_NATS", "HOLDOUT_BOOKS", "BIBLE_ENV", "bible_corpus_path",
           "summarize", "run", "plot", "render_docs", "summary_lines"]

NAME = "warmup"
DESCRIPTION = "Post-LN needs learning-rate warm-up, Pre-LN does not: translation en->es (Xiong et al. 2020)"
DEFAULT_SEEDS = 3
# "Stalls": the final held-out loss without warm-up is more than this many nats above the one with warm-up.
STALL_NATS = 0.3
# The books the translation recipe holds out (configs/translation_lnorm_seq2seq.json): never trained on.
HOLDOUT_BOOKS = ("Ruth", "Jonah", "Obad", "Titus", "Phlm", "Jude", "2John", "3John")
BIBLE_ENV = "HF_LNORM_BIBLE_JSONL"
BIBLE_COMMAND = "python scripts/prepare_data.py bible"
POSITIONS = ("pre", "post")

FULL = {"data": "full", "layers": 4, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256,
        "dropout": 0.1, "vocab_size": 2000, "max_tokens": 32, "batch_size": 24, "steps": 320,
        "warmup_fraction": 0.25, "learning_rates": [5e-4, 1e-3], "log_every": 10, "eval_points": 4,
        "eval_pairs": 128, "bleu_points": 1, "bleu_pairs": 64, "generate_max_tokens": 40}
QUICK = {"data": "sample", "layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
         "dropout": 0.1, "vocab_size": 800, "max_tokens": 32, "batch_size": 16, "steps": 24,
         "warmup_fraction": 0.25, "learning_rates": [5e-4, 1e-3], "log_every": 4, "eval_points": 2,
         "eval_pairs": 16, "bleu_points": 1, "bleu_pairs": 8, "generate_max_tokens": 16}


# --------------------------------------------------------------------------- data


def bible_corpus_path() -> Path:
    """The full KJV / Reina-Valera corpus the full run trains on.

    Returns:
        ``$HF_LNORM_BIBLE_JSONL`` when set, else ``bible_en_es.jsonl`` in ``hf_lnorm.resources.cache_dir()``.

    Raises:
        UsageError: the file does not exist; the message names the command that writes it.

    Examples:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> with tempfile.TemporaryDirectory() as d, mock.patch.dict(os.environ, {"HF_LNORM_BIBLE_JSONL": d + "/x.jsonl"}):
        ...     try:
        ...         bible_corpus_path()
        ...     except UsageError as err:
        ...         print("prepare_data.py bible" in str(err))
        True
    """
    env = os.environ.get(BIBLE_ENV)
    path = Path(env).expanduser() if env else cache_dir("bible_en_es.jsonl")
    if not path.is_file():
        where = f"${BIBLE_ENV} = {str(path)!r}" if env else f"{str(path)!r} (${BIBLE_ENV} is not set)"
        raise UsageError(
            f"the full {NAME} run needs the whole English-Spanish Bible corpus, not found at {where}; create it with "
            f"`{BIBLE_COMMAND}` (in a checkout it writes data/cache/bible_en_es.jsonl), then set "
            f"{BIBLE_ENV} to that file or copy it to {str(cache_dir('bible_en_es.jsonl'))!r}; "
            f"`hf-lnorm experiment {NAME} --quick` runs on the bundled 2,000-pair sample")
    return path


def _load_pairs(which: str):
    path = bible_corpus_path() if which == "full" else data_file("bible_en_es_sample.jsonl")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    bad = [r for r in rows if not all(isinstance(r.get(k), str) for k in ("en", "es", "book"))]
    if bad or not rows:
        raise UsageError(f"{str(path)!r} is not a Bible pair file ({len(rows)} rows, {len(bad)} without "
                         f"string 'en', 'es', 'book'); recreate it with `{BIBLE_COMMAND}`")
    train = [r for r in rows if r["book"] not in HOLDOUT_BOOKS]
    held = [r for r in rows if r["book"] in HOLDOUT_BOOKS]
    return path, train, held


def _encode(tokenizer, texts: Sequence[str], max_tokens: int) -> List[List[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _batch(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], pad_id: int) -> dict:
    input_ids = _pad(src, pad_id)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": _pad(tgt, -100)}


# --------------------------------------------------------------------------- model and training


def _model(tokenizer, sizes: dict, position: str, seed: int):
    from ..models import LNormSeq2SeqConfig, LNormSeq2SeqForConditionalGeneration

    config = LNormSeq2SeqConfig(
        vocab_size=len(tokenizer), hidden_size=sizes["hidden_size"], num_hidden_layers=sizes["layers"],
        num_decoder_layers=sizes["layers"], num_attention_heads=sizes["num_attention_heads"],
        intermediate_size=sizes["intermediate_size"], dropout=sizes["dropout"], attention_dropout=0.0,
        norm_type="layernorm", norm_position=position, max_position_embeddings=max(64, sizes["max_tokens"] + 8),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LNormSeq2SeqForConditionalGeneration(config)
    for layer in list(model.model.encoder.layers) + list(model.model.decoder.layers):
        for module in layer.modules():
            if isinstance(module, nn.Linear):  # the paper's initialisation
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return model


def lr_factor(step: int, warmup_steps: int) -> float:
    """The learning rate at optimizer step ``step`` (0-based) as a fraction of the peak.

    Args:
        step: the step about to be taken.
        warmup_steps: length of the linear warm-up; 0 means the peak from the first step.

    Returns:
        ``(step + 1) / warmup_steps`` during the warm-up, then 1.

    Examples:
        >>> [lr_factor(s, 4) for s in range(5)], lr_factor(0, 0)
        ([0.25, 0.5, 0.75, 1.0, 1.0], 1.0)
    """
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@torch.no_grad()
def _held_out_loss(model, batches: Sequence[dict]) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        tokens = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss) * tokens
        count += tokens
    model.train()
    return total / count


@torch.no_grad()
def _bleu(model, tokenizer, pairs: Sequence[dict], sizes: dict) -> Dict[str, float]:
    from ..recipes.translation import translation_scores

    model.eval()
    outputs: List[str] = []
    for start in range(0, len(pairs), 64):
        chunk = pairs[start:start + 64]
        enc = tokenizer([p["en"] for p in chunk], truncation=True, max_length=sizes["max_tokens"], padding=True,
                        return_tensors="pt")
        ids = model.generate(**enc, max_new_tokens=sizes["generate_max_tokens"], num_beams=1, do_sample=False)
        outputs += tokenizer.batch_decode(ids, skip_special_tokens=True)
    model.train()
    scores = translation_scores(outputs, [p["es"] for p in pairs])
    return {"bleu": scores["bleu"], "chrf": scores["chrf"]}


def _train_one(model, tokenizer, data: dict, sizes: dict, lr: float, warmup_steps: int, seed: int) -> dict:
    steps = sizes["steps"]
    eval_at = sorted({round(steps * (i + 1) / sizes["eval_points"]) for i in range(sizes["eval_points"])})
    bleu_at = sorted({round(steps * (i + 1) / sizes["bleu_points"]) for i in range(sizes["bleu_points"])})
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps))
    rng = random.Random(seed)  # the same batches for every configuration of a seed
    order = list(range(len(data["src"])))
    rng.shuffle(order)
    cursor = 0
    train_curve, held_curve, bleu_curve = [], [], []
    window: List[float] = []
    diverged_at = None
    model.train()
    for step in range(1, steps + 1):
        if cursor + sizes["batch_size"] > len(order):
            rng.shuffle(order)
            cursor = 0
        chosen = order[cursor:cursor + sizes["batch_size"]]
        cursor += sizes["batch_size"]
        batch = _batch([data["src"][i] for i in chosen], [data["tgt"][i] for i in chosen], tokenizer.pad_token_id)
        loss = model(**batch).loss
        if not torch.isfinite(loss):
            diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        window.append(float(loss.detach()))
        if step % sizes["log_every"] == 0:
            train_curve.append([step, sum(window) / len(window)])
            window = []
        if step in eval_at:
            held = _held_out_loss(model, data["eval_batches"])
            if not math.isfinite(held):
                diverged_at = step
                break
            held_curve.append([step, held])
        if step in bleu_at:
            bleu_curve.append([step, *_bleu(model, tokenizer, data["bleu_pairs"], sizes).values()])
    return {"train_loss": train_curve, "held_out_loss": held_curve,
            "bleu": [[s, b] for s, b, _ in bleu_curve], "chrf": [[s, c] for s, _, c in bleu_curve],
            "diverged": diverged_at is not None, "diverged_at": diverged_at,
            "final_held_out_loss": held_curve[-1][1] if diverged_at is None else None,
            "final_bleu": bleu_curve[-1][1] if diverged_at is None and bleu_curve else None,
            "final_chrf": bleu_curve[-1][2] if diverged_at is None and bleu_curve else None}


# --------------------------------------------------------------------------- verdict


def summarize(per_seed: Sequence[dict]) -> Dict[str, object]:
    """Seed statistics per configuration and the verdict per learning rate.

    Args:
        per_seed: records with ``norm_position``, ``lr``, ``warmup_steps`` (0 or W), ``seed``, ``diverged`` and
            ``final_held_out_loss`` (``None`` when diverged), ``final_bleu``, ``final_chrf``.

    Returns:
        ``{"configs": [...], "verdicts": [...]}``. A config has ``norm_position``, ``lr``, ``warmup_steps``,
            ``seeds``, ``diverged`` (count) and mean/std of the final held-out loss, BLEU and chrF over the seeds
            that did not diverge. A verdict (one per learning rate) has, per position, ``{pos}_fails`` (seeds in
            which the run without warm-up diverged or ended more than ``STALL_NATS`` above the same seed's run with
            warm-up), ``{pos}_gap`` (mean loss without minus with warm-up), ``post_fails_majority``,
            ``pre_fails_majority`` and ``held`` (Post-LN fails in most seeds, Pre-LN does not).

    Examples:
        >>> rec = lambda pos, w, loss, seed=0: {"norm_position": pos, "lr": 1e-3, "warmup_steps": w, "seed": seed,
        ...     "diverged": loss is None, "final_held_out_loss": loss, "final_bleu": 1.0, "final_chrf": 9.0}
        >>> s = summarize([rec("pre", 0, 3.0), rec("pre", 5, 3.1), rec("post", 0, None), rec("post", 5, 3.2)])
        >>> s["verdicts"][0]["held"], s["verdicts"][0]["post_fails"], s["verdicts"][0]["pre_fails"]
        (True, 1, 0)
    """
    groups: Dict[tuple, List[dict]] = {}
    for r in per_seed:
        groups.setdefault((r["norm_position"], r["lr"], r["warmup_steps"] > 0), []).append(r)
    configs = []
    for (position, lr, warm), records in sorted(groups.items()):
        ok = [r for r in records if not r["diverged"]]
        entry: Dict[str, object] = {"norm_position": position, "lr": lr, "warmup": warm,
                                    "warmup_steps": records[0]["warmup_steps"], "seeds": len(records),
                                    "diverged": len(records) - len(ok)}
        for key in ("final_held_out_loss", "final_bleu", "final_chrf"):
            values = [r[key] for r in ok if r[key] is not None]
            entry[key] = mean_std(values) if values else None
        configs.append(entry)
    by_run = {(r["norm_position"], r["lr"], r["warmup_steps"] > 0, r["seed"]): r for r in per_seed}
    verdicts = []
    for lr in sorted({r["lr"] for r in per_seed}):
        verdict: Dict[str, object] = {"lr": lr}
        for position in POSITIONS:
            seeds = sorted({s for (p, l, w, s) in by_run if p == position and l == lr})
            fails, gaps = 0, []
            for seed in seeds:
                cold, warm = by_run.get((position, lr, False, seed)), by_run.get((position, lr, True, seed))
                if cold is None or warm is None:
                    continue
                if cold["diverged"]:
                    fails += 1
                elif not warm["diverged"]:
                    gap = cold["final_held_out_loss"] - warm["final_held_out_loss"]
                    gaps.append(gap)
                    fails += gap > STALL_NATS
            verdict[f"{position}_seeds"] = len(seeds)
            verdict[f"{position}_fails"] = fails
            verdict[f"{position}_diverged"] = sum(by_run[(position, lr, False, s)]["diverged"] for s in seeds
                                                  if (position, lr, False, s) in by_run)
            verdict[f"{position}_gap"] = sum(gaps) / len(gaps) if gaps else None
            verdict[f"{position}_fails_majority"] = bool(seeds) and 2 * fails > len(seeds)
        verdict["held"] = bool(verdict["post_fails_majority"] and not verdict["pre_fails_majority"])
        verdicts.append(verdict)
    return {"configs": configs, "verdicts": verdicts}


# --------------------------------------------------------------------------- the experiment


def run(seeds: int, quick: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Train every configuration of the grid for every seed.

    Args:
        seeds: number of seeds (``0 .. seeds-1``); a seed sets the initial weights and the batch order (the same
            for every configuration of that seed).
        quick: ``QUICK`` sizes on the bundled sample instead of ``FULL`` on the whole corpus.
        log: called with one line per training run.

    Returns:
        ``{"settings": {...}, "per_seed": [...], "summary": summarize(per_seed)}``.

    Raises:
        UsageError: the full run cannot find the whole corpus (see ``bible_corpus_path``).
    """
    from ..recipes.translation import train_joint_tokenizer

    sizes = dict(QUICK if quick else FULL)
    log = log or (lambda line: None)
    path, train, held = _load_pairs(sizes["data"])
    torch.manual_seed(0)
    tokenizer = train_joint_tokenizer([p["en"] for p in train] + [p["es"] for p in train],
                                      vocab_size=sizes["vocab_size"])
    held_rng = random.Random(1234)
    eval_pairs = held_rng.sample(held, min(sizes["eval_pairs"], len(held)))
    bleu_pairs = eval_pairs[:sizes["bleu_pairs"]]
    eval_src, eval_tgt = _encode(tokenizer, [p["en"] for p in eval_pairs], sizes["max_tokens"]), \
        _encode(tokenizer, [p["es"] for p in eval_pairs], sizes["max_tokens"])
    data = {"src": _encode(tokenizer, [p["en"] for p in train], sizes["max_tokens"]),
            "tgt": _encode(tokenizer, [p["es"] for p in train], sizes["max_tokens"]),
            "eval_batches": [_batch(eval_src[i:i + 64], eval_tgt[i:i + 64], tokenizer.pad_token_id)
                             for i in range(0, len(eval_pairs), 64)],
            "bleu_pairs": bleu_pairs}
    warmup_steps = max(1, round(sizes["steps"] * sizes["warmup_fraction"]))
    parameters = None
    per_seed = []
    for seed in range(seeds):
        for lr in sizes["learning_rates"]:
            for position in POSITIONS:
                for warm in (0, warmup_steps):
                    model = _model(tokenizer, sizes, position, seed)
                    parameters = sum(p.numel() for p in model.parameters())
                    record = _train_one(model, tokenizer, data, sizes, lr, warm, seed)
                    per_seed.append({"norm_position": position, "lr": lr, "warmup_steps": warm, "seed": seed, **record})
                    final = "diverged at step %s" % record["diverged_at"] if record["diverged"] else \
                        f"held-out loss {record['final_held_out_loss']:.3f}, BLEU {record['final_bleu']:.2f}"
                    log(f"{position}-LN lr {lr:g} warm-up {warm} seed {seed}: {final}")
    settings = {
        **sizes,
        "seeds": list(range(seeds)),
        "positions": list(POSITIONS),
        "warmup_steps": warmup_steps,
        "stall_nats": STALL_NATS,
        "model": "LNormSeq2SeqForConditionalGeneration",
        "parameters": parameters,
        "init": "Xavier-uniform Linear weights, zero biases (encoder and decoder layers); embeddings normal(0, 0.02)",
        "optimizer": "Adam, betas (0.9, 0.98), eps 1e-9, no weight decay, no gradient clipping",
        "schedule": "linear warm-up from 0 to the peak over warmup_steps, then constant; no warm-up: constant",
        "data_file": path.name,
        "train_pairs": len(train),
        "held_out_pairs": len(held),
        "held_out_books": list(HOLDOUT_BOOKS),
        "eval_pairs_used": len(eval_pairs),
        "bleu_pairs_used": len(bleu_pairs),
        "tokenizer": f"joint BPE trained on the training pairs, {len(tokenizer)} tokens",
    }
    return {"settings": settings, "per_seed": per_seed, "summary": summarize(per_seed)}


# --------------------------------------------------------------------------- reporting

COLOURS = {"pre": "tab:blue", "post": "tab:red"}


def plot(result: dict, path: "Path | str") -> None:
    """Draw held-out and training loss against step, one column per learning rate.

    Args:
        result: the experiment's JSON (``per_seed`` is read; one thin line per seed).
        path: the PNG to write.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["per_seed"]
    lrs = sorted({r["lr"] for r in runs})
    fig, axes = plt.subplots(2, len(lrs), figsize=(5.4 * len(lrs), 7.2), squeeze=False)
    for col, lr in enumerate(lrs):
        for row, key in enumerate(("held_out_loss", "train_loss")):
            ax = axes[row][col]
            labelled = set()
            for r in runs:
                if r["lr"] != lr or not r[key]:
                    continue
                label = f"{r['norm_position']}-LN, " + ("warm-up" if r["warmup_steps"] else "no warm-up")
                xs, ys = zip(*r[key])
                ax.plot(xs, ys, color=COLOURS[r["norm_position"]], linestyle="-" if r["warmup_steps"] else "--",
                        marker="o" if key == "held_out_loss" else None, markersize=3, linewidth=1.2, alpha=0.8,
                        label=None if label in labelled else label)
                labelled.add(label)
                if r["diverged"]:
                    ax.axvline(r["diverged_at"], color=COLOURS[r["norm_position"]], alpha=0.3)
            ax.set_xlabel("step")
            ax.set_ylabel("held-out loss (nats/token)" if key == "held_out_loss" else "training loss")
            ax.set_title(f"peak lr {lr:g}: {'held-out' if row == 0 else 'training'} loss", fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    seeds = result.get("seeds")
    fig.suptitle(f"Pre-LN vs Post-LN with and without warm-up ({seeds} seed{'s' if seeds != 1 else ''}, one line each)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stat(entry: Optional[dict], digits: int = 3) -> str:
    if entry is None:
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}" if entry["std"] else f"{entry['mean']:.{digits}f}"


def _gap(value: Optional[float]) -> str:
    return "n/a (diverged)" if value is None else f"{value:+.2f}"


def summary_lines(result: dict) -> List[str]:
    """One line per learning rate: whether the claim held, with the numbers that decided it.

    Args:
        result: the experiment's JSON.

    Returns:
        The lines, also the sentences of the docs page.
    """
    lines = []
    for v in result["summary"]["verdicts"]:
        head = "**Claim reproduced.**" if v["held"] else "**Claim not reproduced.**"
        post = "fails" if v["post_fails_majority"] else "does not fail"
        pre = "fails" if v["pre_fails_majority"] else "does not fail"
        lines.append(
            f"Peak learning rate {v['lr']:g}: {head} Without warm-up Post-LN {post} (in {v['post_fails']} of "
            f"{v['post_seeds']} seeds; {v['post_diverged']} diverged; final held-out loss without minus with warm-up "
            f"{_gap(v['post_gap'])} nats) and Pre-LN {pre} (in {v['pre_fails']} of {v['pre_seeds']} seeds; "
            f"{v['pre_diverged']} diverged; {_gap(v['pre_gap'])} nats); a run fails when it diverges or ends more "
            f"than {STALL_NATS} nats above warm-up.")
    return lines


def _speed_lines(result: dict) -> List[str]:
    """The second half of the claim, stated from the numbers: Pre-LN without warm-up against Post-LN with it."""
    configs = {(c["norm_position"], c["lr"], c["warmup"]): c for c in result["summary"]["configs"]}
    lines = []
    for lr in sorted({c["lr"] for c in result["summary"]["configs"]}):
        pre, post = configs.get(("pre", lr, False)), configs.get(("post", lr, True))
        if not pre or not post or pre["final_held_out_loss"] is None or post["final_held_out_loss"] is None:
            continue
        a, b = pre["final_held_out_loss"]["mean"], post["final_held_out_loss"]["mean"]
        lines.append(f"Peak learning rate {lr:g}, convergence: Pre-LN without warm-up ends at a held-out loss of {a:.3f}, "
                     f"Post-LN with warm-up at {b:.3f} ({'lower' if a < b else 'not lower'} for Pre-LN; seed means).")
    return lines


def render_docs(result: dict) -> str:
    """The user's-guide page (``docs/experiments/warmup.md``) for a result JSON.

    Args:
        result: the experiment's JSON.

    Returns:
        The Markdown text; every number in it comes from ``result``.
    """
    s = result["settings"]
    seeds = result["seeds"]
    data = ("the whole KJV / Reina-Valera corpus (`python scripts/prepare_data.py bible`, read from "
            f"`${BIBLE_ENV}` or the hf_lnorm cache folder)" if s["data"] == "full"
            else "the package's 2,000-pair sample `bible_en_es_sample.jsonl`")
    command = f"hf-lnorm experiment {NAME} --seeds {seeds}" + (" --quick" if result.get("quick") else "")
    lines = [
        f"<!-- Generated by hf-lnorm experiment {NAME} --render-docs data/results/experiments/{NAME}.json. "
        "Edit the JSON or the renderer, not this page. -->",
        "# Learning-rate warm-up: Pre-LN vs Post-LN",
        "",
        "**The question.** Xiong et al. (2020), *On Layer Normalization in the Transformer Architecture*: does a "
        "Post-LN Transformer need a learning-rate warm-up (trained with Adam at 5e-4 or 1e-3 from the first step, it "
        "stalls at a much worse loss or diverges), while a Pre-LN Transformer trains well without one?",
        "",
        "## Setup",
        "",
        f"- Model: `{s['model']}`, {s['layers']} encoder and {s['layers']} decoder layers, width {s['hidden_size']}, "
        f"{s['num_attention_heads']} heads, FFN {s['intermediate_size']}, dropout {s['dropout']}, LayerNorm "
        f"({s['parameters']:,} parameters); {s['init']}. Pre-LN ends each stack with a final LayerNorm.",
        f"- Data: English→Spanish verse pairs from {data}: {s['train_pairs']:,} training pairs; the books "
        f"{', '.join(s['held_out_books'])} ({s['held_out_pairs']:,} pairs) are held out. Tokenizer: {s['tokenizer']}; "
        f"sequences cut at {s['max_tokens']} tokens.",
        f"- Training: {s['steps']} steps of {s['batch_size']} pairs; {s['optimizer']}; {s['schedule']}. "
        f"Warm-up W = {s['warmup_steps']} steps ({s['warmup_fraction']:.0%} of the run). Peak learning rates "
        f"{', '.join(f'{lr:g}' for lr in s['learning_rates'])}. Each seed sets the initial weights and the batch "
        f"order, the same for every configuration of that seed; {seeds} seed{'s' if seeds != 1 else ''}.",
        f"- Measured: the training loss (mean over every {s['log_every']} steps), the held-out loss on "
        f"{s['eval_pairs_used']} held-out pairs at {s['eval_points']} points, and greedy-decoding BLEU and chrF "
        f"(sacreBLEU) on {s['bleu_pairs_used']} of them at {s['bleu_points']} point(s), the last at the end.",
        f"- Verdict rule: a run without warm-up *fails* when it diverges (non-finite loss) or its final held-out loss "
        f"is more than {s['stall_nats']} nats above the same position's run with warm-up (same seed). The claim holds "
        "at a learning rate when Post-LN fails in more than half of the seeds and Pre-LN does not.",
        "",
        f"Run it (the run recorded here took {result.get('wall_s', 0) / 60:.1f} minutes on the machine named under "
        "Provenance; `--quick` is a short check with tiny models on the bundled sample):",
        "",
        "```bash",
        *([command] if result.get("quick") else [
            "python scripts/prepare_data.py bible      # writes data/cache/bible_en_es.jsonl",
            f"{BIBLE_ENV}=data/cache/bible_en_es.jsonl {command}"]),
        "```",
        "",
        "## Result",
        "",
    ]
    lines += [f"- {line}" for line in summary_lines(result)]
    lines += [f"- {line}" for line in _speed_lines(result)]
    lines += ["", f"![Held-out and training loss per step, Pre-LN and Post-LN, with and without warm-up](img/{NAME}.png)",
              "", "### Final numbers",
              "", "Mean ± standard deviation over the seeds that did not diverge.", "",
              "| peak lr | norm | warm-up steps | diverged | held-out loss | BLEU | chrF |",
              "|---|---|---|---|---|---|---|"]
    for c in sorted(result["summary"]["configs"], key=lambda c: (c["lr"], c["norm_position"] != "pre", c["warmup"])):
        lines.append(f"| {c['lr']:g} | {c['norm_position']}-LN | {c['warmup_steps']} | {c['diverged']} of {c['seeds']} | "
                     f"{_stat(c['final_held_out_loss'])} | {_stat(c['final_bleu'], 2)} | {_stat(c['final_chrf'], 1)} |")
    eval_steps = sorted({round(s["steps"] * (i + 1) / s["eval_points"]) for i in range(s["eval_points"])})
    width = len(eval_steps)
    lines += ["", "### Held-out loss per seed", "",
              "| peak lr | norm | warm-up steps | seed | " + " | ".join(f"step {step}" for step in eval_steps) + " |"]
    lines.append("|---|---|---|---|" + "---|" * width)
    for r in sorted(result["per_seed"], key=lambda r: (r["lr"], r["norm_position"] != "pre", r["warmup_steps"], r["seed"])):
        cells = [f"{v:.3f}" for _, v in r["held_out_loss"]] + ["diverged"] * (width - len(r["held_out_loss"]))
        lines.append(f"| {r['lr']:g} | {r['norm_position']}-LN | {r['warmup_steps']} | {r['seed']} | " + " | ".join(cells) + " |")
    lines += ["", "## Provenance", ""] + provenance_lines(result, NAME)
    return "\n".join(lines) + "\n"
