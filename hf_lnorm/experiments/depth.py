"""Pre-LN vs Post-LN vs no norm at 2, 6 and 12 layers: which trains at depth on a fixed budget?

The course says that "Pre-LN enables deeper models": with the norm before each residual branch, the
residual stream is an identity path from input to output, so a deep stack trains at the learning rate
and warm-up where a Post-LN stack (norm after the residual add) or a stack without norms degrades or
diverges (Xiong et al. 2020 make the same argument for Post-LN's need for warm-up).

A character-level ``LNormGPTForCausalLM`` (width 64) is trained on the package's Shakespeare sample at
each depth with the norm before each branch (``pre``), after the residual add (``post``) or no norm at all
(``none``), all with the same steps, batches, peak learning rate and warm-up. For each seed the nine
models train in lockstep (one step of each in turn). Measured: the validation loss on the held-out tail
of the text, and whether a run diverged: a non-finite training loss, or a final validation loss above
the unigram baseline (a model that ignores context). The claim holds when Pre-LN trains at 12 layers
(no seed diverged) while Post-LN and no norm each degrade (a mean final loss worse than Pre-LN's by more
than ``SPREAD_K`` times the larger seed standard deviation) or diverge (in any seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ._charlm import Run, char_data, gpt_model, lm_objective, mean_std, train_interleaved
from ._report import provenance_lines

__all__ = ["NAME", "DESCRIPTION", "DEFAULT_SEEDS", "VARIANTS", "SPREAD_K", "diverged", "summarize", "run", "plot",
           "render_docs", "summary_lines"]

NAME = "depth"
DESCRIPTION = "Pre-LN vs Post-LN vs no norm at 2, 6 and 12 layers on a character LM at a fixed budget (course claim)"
DEFAULT_SEEDS = 3
# variant -> (norm_type, norm_position); without norms the position changes nothing
VARIANTS = {"pre": ("layernorm", "pre"), "post": ("layernorm", "post"), "none": ("none", "pre")}
VARIANT_LABELS = {"pre": "Pre-LN", "post": "Post-LN", "none": "no norm"}
# A mean loss is worse than another when the gap exceeds SPREAD_K times the larger seed standard deviation.
SPREAD_K = 2.0

FULL = {"depths": [2, 6, 12], "hidden_size": 64, "heads": 4, "seq_len": 32, "batch_size": 16, "steps": 150,
        "lr": 3e-3, "warmup": 8, "eval_every": 15, "weight_decay": 0.0, "valid_windows": 64}
QUICK = {"depths": [2, 6], "hidden_size": 32, "heads": 2, "seq_len": 32, "batch_size": 8, "steps": 16,
         "lr": 3e-3, "warmup": 2, "eval_every": 8, "weight_decay": 0.0, "valid_windows": 32}


def diverged(record: dict, unigram_loss: float) -> bool:
    """Whether a run diverged: a non-finite loss, or a final validation loss above ``unigram_loss``.

    Args:
        record: a run record (``finite``, ``curve`` whose last entry has ``metric``).
        unigram_loss: the validation loss of a context-free unigram model.

    Returns:
        True when the run diverged.

    Examples:
        >>> diverged({"finite": True, "curve": [{"metric": 2.1}]}, 3.3)
        False
        >>> diverged({"finite": True, "curve": [{"metric": 3.4}]}, 3.3)
        True
        >>> diverged({"finite": False, "curve": [{"metric": None}]}, 3.3)
        True
    """
    final = record["curve"][-1]["metric"]
    return not record["finite"] or final is None or final > unigram_loss


def _worse(candidate: dict, reference: dict) -> bool:
    return candidate["mean"] - reference["mean"] > SPREAD_K * max(candidate["std"], reference["std"])


def summarize(per_seed: Sequence[dict], unigram_loss: float) -> Dict[str, object]:
    """Seed statistics per variant and depth, and the verdict at the deepest depth.

    Args:
        per_seed: run records: ``variant``, ``depth``, ``seed``, ``finite``, ``curve`` (``step``, ``metric``).
        unigram_loss: the divergence threshold (see ``diverged``).

    Returns:
        ``{"cells": [...], "verdict": {...} or None}``. A cell has ``variant``, ``depth``, ``seeds``,
            ``diverged`` (count), ``final`` (mean/std of the final validation loss over the runs that ended
            finite, ``None`` if none did) and ``curve`` (``step`` and mean ``metric`` over those runs). The
            verdict (at the deepest depth, when Pre-LN, Post-LN and no norm all ran there) has ``depth``,
            ``pre_trains`` (no Pre-LN seed diverged), per other variant ``{variant}_diverged`` (any seed),
            ``{variant}_worse`` (mean loss worse than Pre-LN's beyond the spread) and ``{variant}_degrades``
            (either), and ``held``.
    """
    groups: Dict[tuple, List[dict]] = {}
    for r in per_seed:
        groups.setdefault((r["variant"], r["depth"]), []).append(r)
    order = {v: i for i, v in enumerate(VARIANTS)}
    cells = []
    for (variant, depth), records in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 9))):
        ended = [r for r in records if r["finite"] and r["curve"][-1]["metric"] is not None]
        cell: Dict[str, object] = {"variant": variant, "depth": depth, "seeds": len(records),
                                   "diverged": sum(diverged(r, unigram_loss) for r in records),
                                   "final": mean_std([r["curve"][-1]["metric"] for r in ended]) if ended else None,
                                   "curve": None}
        if ended:
            points = min(len(r["curve"]) for r in ended)
            cell["curve"] = {"step": [ended[0]["curve"][i]["step"] for i in range(points)],
                             "metric": [sum(r["curve"][i]["metric"] for r in ended) / len(ended) for i in range(points)]}
        cells.append(cell)
    by_key = {(c["variant"], c["depth"]): c for c in cells}
    verdict = None
    if cells:
        deepest = max(c["depth"] for c in cells)
        pre = by_key.get(("pre", deepest))
        others = {v: by_key.get((v, deepest)) for v in ("post", "none")}
        if pre is not None and all(others.values()):
            verdict = {"depth": deepest, "pre_trains": bool(pre["diverged"] == 0)}
            for variant, cell in others.items():
                any_diverged = cell["diverged"] > 0
                worse = bool(cell["final"] is None or (pre["final"] is not None and _worse(cell["final"], pre["final"])))
                verdict[f"{variant}_diverged"] = bool(any_diverged)
                verdict[f"{variant}_worse"] = worse
                verdict[f"{variant}_degrades"] = bool(any_diverged or worse)
            verdict["held"] = bool(verdict["pre_trains"] and verdict["post_degrades"] and verdict["none_degrades"])
    return {"cells": cells, "verdict": verdict}


def _runs(data, sizes: dict, seed: int) -> List[Run]:
    loss_fn, evaluate = lm_objective(data, sizes, seed)

    runs = []
    for depth in sizes["depths"]:
        for variant, (norm_type, position) in VARIANTS.items():
            model = gpt_model(data.vocab_size, sizes["seq_len"], sizes["hidden_size"], depth, sizes["heads"],
                              norm_type, position, seed)
            run = Run(model, loss_fn, evaluate)
            run.labels = {"variant": variant, "depth": depth, "seed": seed}
            runs.append(run)
    return runs


def run(seeds: int, quick: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Train every variant at every depth for each seed, the models of a seed in lockstep.

    Args:
        seeds: number of seeds (``0 .. seeds-1``); a seed sets the initial weights and the batches.
        quick: ``QUICK`` sizes (depths 2 and 6, tiny width, a few steps) instead of ``FULL``.
        log: called with one line per run.

    Returns:
        ``{"settings": {...}, "per_seed": [...], "summary": summarize(per_seed, unigram_loss)}``.
    """
    sizes = dict(QUICK if quick else FULL)
    log = log or (lambda line: None)
    data = char_data()
    unigram = data.unigram_entropy()
    per_seed = []
    for seed in range(seeds):
        runs = _runs(data, sizes, seed)
        results = train_interleaved(runs, sizes["steps"], sizes["lr"], sizes["warmup"], sizes["eval_every"],
                                    sizes["weight_decay"])
        for r, out in zip(runs, results):
            record = {**r.labels, **out}
            record["diverged"] = diverged(record, unigram)
            per_seed.append(record)
            final = out["curve"][-1]["metric"]
            log(f"{VARIANT_LABELS[r.labels['variant']]} {r.labels['depth']} layers seed {seed}: validation loss "
                f"{'non-finite' if final is None else f'{final:.3f}'}{' (diverged)' if record['diverged'] else ''}")
    settings = {**sizes, "seeds": list(range(seeds)), "variants": {k: list(v) for k, v in VARIANTS.items()},
                "spread_k": SPREAD_K, "threads": torch.get_num_threads(), "unigram_loss": unigram,
                "data": "shakespeare_sample.txt (characters), last 10% held out", "vocab": data.vocab_size,
                "optimizer": "AdamW (betas 0.9, 0.95), linear warm-up then cosine decay to 0, no gradient clipping",
                "init": "GPT-2: normal(0, 0.02), residual projections scaled by 1/sqrt(2 * depth)", "dropout": 0.0}
    return {"settings": settings, "per_seed": per_seed, "summary": summarize(per_seed, unigram)}


# --------------------------------------------------------------------------- reporting

COLOURS = {"pre": "tab:blue", "post": "tab:red", "none": "tab:gray"}


def plot(result: dict, path: "Path | str") -> None:
    """Draw final validation loss against depth, and the validation curves at the deepest depth.

    Args:
        result: the experiment's JSON (``summary.cells`` is read).
        path: the PNG to write.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["summary"]["cells"]
    unigram = result["settings"]["unigram_loss"]
    deepest = max(c["depth"] for c in cells)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for variant in VARIANTS:
        mine = [c for c in cells if c["variant"] == variant and c["final"] is not None]
        if mine:
            left.errorbar([c["depth"] for c in mine], [c["final"]["mean"] for c in mine],
                          yerr=[c["final"]["std"] for c in mine], color=COLOURS[variant], marker="o", capsize=3,
                          label=VARIANT_LABELS[variant])
        for c in cells:
            if c["variant"] == variant and c["depth"] == deepest and c["curve"] is not None:
                right.plot(c["curve"]["step"], c["curve"]["metric"], color=COLOURS[variant], marker="o",
                           markersize=3, label=VARIANT_LABELS[variant])
    for ax in (left, right):
        ax.axhline(unigram, color="black", linestyle=":", linewidth=1, label="unigram baseline")
        ax.set_ylabel("validation loss (nats/char)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    left.set_xlabel("layers")
    left.set_xticks(sorted({c["depth"] for c in cells}))
    left.set_title("final validation loss (mean ± std over finished runs)", fontsize=10)
    right.set_xlabel("optimizer steps")
    right.set_title(f"validation loss during training, {deepest} layers", fontsize=10)
    right.set_ylim(None, unigram + 0.5)
    seeds = result.get("seeds")
    fig.suptitle(f"Pre-LN vs Post-LN vs no norm at depth ({seeds} seed{'s' if seeds != 1 else ''})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _loss(stats: Optional[dict]) -> str:
    return "—" if stats is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def summary_lines(result: dict) -> List[str]:
    """The verdict sentence, with the numbers it was decided on.

    Args:
        result: the experiment's JSON.

    Returns:
        One line (none when the deepest depth lacks a variant).
    """
    verdict = result["summary"]["verdict"]
    if verdict is None:
        return []
    by_key = {(c["variant"], c["depth"]): c for c in result["summary"]["cells"]}
    depth = verdict["depth"]

    def state(variant: str) -> str:
        cell = by_key[(variant, depth)]
        what = []
        if cell["diverged"]:
            what.append(f"diverged in {cell['diverged']} of {cell['seeds']} seeds")
        if variant != "pre":
            what.append("worse than Pre-LN beyond the seed spread" if verdict[f"{variant}_worse"]
                        else "not worse than Pre-LN beyond the seed spread")
        return f"{VARIANT_LABELS[variant]} {_loss(cell['final'])}" + (f" ({', '.join(what)})" if what else "")

    outcome = "reproduced" if verdict["held"] else "not reproduced"
    parts = [f"Pre-LN {'trains' if verdict['pre_trains'] else 'does not train'}",
             f"Post-LN {'degrades or diverges' if verdict['post_degrades'] else 'does not degrade'}",
             f"no norm {'degrades or diverges' if verdict['none_degrades'] else 'does not degrade'}"]
    return [f"**Claim {outcome}: \"Pre-LN trains at {depth} layers where Post-LN/none degrade or diverge\"** — "
            f"{', '.join(parts)}. Final validation loss at {depth} layers: {state('pre')}; {state('post')}; "
            f"{state('none')} (unigram baseline {result['settings']['unigram_loss']:.3f})."]


def render_docs(result: dict) -> str:
    """The user's-guide page (``docs/experiments/depth.md``) for a result JSON.

    Args:
        result: the experiment's JSON.

    Returns:
        The Markdown text; every number in it comes from ``result``.
    """
    s = result["settings"]
    seeds = result["seeds"]
    cells = result["summary"]["cells"]
    depths = sorted({c["depth"] for c in cells})
    lines = [
        f"<!-- Generated by hf-lnorm experiment {NAME} --render-docs data/results/experiments/{NAME}.json. "
        "Edit the JSON or the renderer, not this page. -->",
        "# Depth: Pre-LN vs Post-LN vs no norm",
        "",
        "**The question.** The course says that LayerNorm before each residual branch (Pre-LN) \"enables deeper "
        "models\": at a learning rate and warm-up where a deep Post-LN stack (norm after the residual add, the "
        "original Transformer) or a stack without norms degrades or diverges, a Pre-LN stack still trains. "
        "Xiong et al. (2020), *On Layer Normalization in the Transformer Architecture*, explain the same "
        "difference through the gradients at initialisation (see "
        "[Gradient norms at initialisation](grad_norms_init.md)).",
        "",
        "## Setup",
        "",
        f"- Character-level `LNormGPTForCausalLM`, width {s['hidden_size']}, {s['heads']} heads, MLP 4× width, "
        f"{', '.join(str(d) for d in depths)} layers; Pre-LN ends with a final LayerNorm, Post-LN does not; "
        f"\"no norm\" has no norm layers at all. {s['init']}; dropout off.",
        f"- Data: {s['data']} ({s['vocab']} characters); {s['valid_windows']} windows of {s['seq_len']} "
        "held-out characters are scored.",
        f"- Training, the same for every model: {s['steps']} steps of {s['batch_size']} windows of {s['seq_len']} "
        f"characters, {s['optimizer']}, peak learning rate {s['lr']:g} with {s['warmup']} warm-up steps (a high "
        "rate with a short warm-up, the setting in which the position of the norm matters). Each seed sets the "
        f"initial weights and the batches; the {len(depths) * len(VARIANTS)} models of a seed train in lockstep "
        f"(one step of each in turn). {seeds} "
        f"seed{'s' if seeds != 1 else ''}, {s['threads']} thread{'s' if s['threads'] != 1 else ''}.",
        f"- **Diverged**: a non-finite training loss, or a final validation loss above the unigram baseline "
        f"({s['unigram_loss']:.3f} nats per character: the held-out text scored with the training text's "
        f"character frequencies). **Worse**: a mean final loss above Pre-LN's by more than {SPREAD_K:g}× the "
        "larger seed standard deviation. The claim holds when no Pre-LN seed diverges at the deepest depth and "
        "Post-LN and no norm each diverge (in any seed) or are worse there.",
        "",
        f"Run it (the run recorded here took {result.get('wall_s', 0) / 60:.1f} minutes on the machine named under "
        "Provenance; `--quick` is a short check with tiny models):",
        "",
        "```bash",
        f"hf-lnorm experiment {NAME} --seeds {seeds}",
        "```",
        "",
        "## Result",
        "",
    ]
    lines += [f"- {line}" for line in summary_lines(result)]
    lines += ["", f"![Final validation loss per depth, and the curves at the deepest depth](img/{NAME}.png)", "",
              "| layers | variant | final validation loss | diverged |", "|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {c['depth']} | {VARIANT_LABELS[c['variant']]} | {_loss(c['final'])} | "
                     f"{c['diverged']} of {c['seeds']} |")
    lines += ["", "Mean ± standard deviation over the seeds whose loss stayed finite; a run above the unigram "
              "baseline counts as diverged and is still in the mean.", "", "## Provenance", ""]
    lines += provenance_lines(result, NAME, with_load=True)
    return "\n".join(lines) + "\n"
