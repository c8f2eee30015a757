"""Gradient norms at initialisation, Pre-LN against Post-LN (Xiong et al. 2020, Figure 3).

"On Layer Normalization in the Transformer Architecture" (Xiong et al., ICML 2020) shows that at
initialisation the gradients of a Post-LN Transformer's parameters grow toward the output
(the last layers' gradients are the largest), while a Pre-LN Transformer's stay about the same
size in every layer; its Figure 3 plots the gradient norm of the FFN weights W1 and W2 per
decoder layer. This experiment measures the same quantity in two settings:

* **A, the paper's**: ``LNormSeq2SeqForConditionalGeneration`` (encoder and decoder of the same
  depth) on English-Spanish verse pairs (the package's ``bible_en_es_sample.jsonl``) with a joint BPE
  tokenizer, the Linear weights of every layer re-initialised Xavier-uniform (biases zero), and
  the final LayerNorm of Pre-LN. Measured: the decoder layers.
* **B**: ``LNormGPTForCausalLM`` with the family's own GPT-2 initialisation (normal, std 0.02,
  residual projections scaled by ``1 / sqrt(2 * depth)``), character-level on the package's
  Shakespeare sample.

For each layer the norm of the gradient of the FFN input weight (W1, ``mlp.fc_in``), of the FFN
output weight (W2, ``mlp.fc_out``) and of all the layer's parameters together is taken on a few
batches (dropout off, one backward per batch) and averaged over the batches; the seeds give the
spread. The claim counts as reproduced for a quantity when Post-LN's last-to-first-layer ratio is
at least ``GROWS`` and Pre-LN's lies within ``[1 / FLAT, FLAT]``.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ._report import mean_std, provenance_lines
from ..resources import data_file

__all__ = ["NAME", "DESCRIPTION", "DEFAULT_SEEDS", "GROWS", "FLAT", "run", "plot", "render_docs", "summary_lines"]

NAME = "grad_norms_init"
DESCRIPTION = "per-layer gradient norms at initialisation, Pre-LN vs Post-LN (Xiong et al. 2020, Fig. 3)"
DEFAULT_SEEDS = 3
# Post-LN "grows toward the output": last / first layer >= GROWS. Pre-LN "about flat": within [1/FLAT, FLAT].
GROWS = 1.5
FLAT = 1.5
QUANTITIES = ("w1", "w2", "layer")
QUANTITY_LABELS = {"w1": "FFN W1", "w2": "FFN W2", "layer": "whole layer"}
POSITIONS = ("pre", "post")
SETTING_LABELS = {
    "A": "A: encoder-decoder, translation, Xavier init (decoder layers)",
    "B": "B: decoder-only GPT, Shakespeare characters, GPT-2 init",
}

# The sizes of a run. Depth is the number of layers of the GPT, and of the encoder and the decoder each.
FULL = {"depths": [6, 12], "hidden_size": 256, "num_attention_heads": 4, "batches": 4, "batch_size": 16,
        "max_source_tokens": 48, "vocab_size": 4000, "gpt_seq_len": 128}
QUICK = {"depths": [6], "hidden_size": 64, "num_attention_heads": 2, "batches": 2, "batch_size": 8,
         "max_source_tokens": 32, "vocab_size": 1000, "gpt_seq_len": 64}


# --------------------------------------------------------------------------- measuring


def layer_grad_norms(layers: Sequence[nn.Module]) -> Dict[str, List[float]]:
    """The gradient norms of each layer's FFN weights and of all its parameters, after a backward pass.

    Args:
        layers: ``LNormBlock`` modules whose parameters hold ``.grad``.

    Returns:
        ``{"w1": [...], "w2": [...], "layer": [...]}``, one L2 (Frobenius) norm per layer, first layer first.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models.layers import LNormBlock
        >>> _ = torch.manual_seed(0)
        >>> block = LNormBlock(8, 2, 16, 0.0, 0.0, "layernorm", "post", 1e-5, 0)
        >>> # a random readout: the plain sum of a post-LN output does not depend on the input (zero gradient)
        >>> (block(torch.randn(1, 3, 8))[0] * torch.randn(1, 3, 8)).sum().backward()
        >>> norms = layer_grad_norms([block])
        >>> norms["layer"][0] >= max(norms["w1"][0], norms["w2"][0]) > 0
        True
    """
    out: Dict[str, List[float]] = {q: [] for q in QUANTITIES}
    for layer in layers:
        out["w1"].append(float(layer.mlp.fc_in.weight.grad.norm()))
        out["w2"].append(float(layer.mlp.fc_out.weight.grad.norm()))
        squares = sum(float(p.grad.pow(2).sum()) for p in layer.parameters() if p.grad is not None)
        out["layer"].append(math.sqrt(squares))
    return out


def _mean_over_batches(model: nn.Module, layers: Sequence[nn.Module], batches: Sequence[dict]) -> Dict[str, object]:
    """Per-layer gradient norms, each batch on its own backward pass, averaged over the batches."""
    model.train()  # dropout is 0 in every config built here; train() is what a first training step sees
    sums = {q: [0.0] * len(layers) for q in QUANTITIES}
    losses = []
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        losses.append(float(loss.detach()))
        for q, values in layer_grad_norms(layers).items():
            sums[q] = [s + v for s, v in zip(sums[q], values)]
    model.zero_grad(set_to_none=True)
    return {**{q: [s / len(batches) for s in sums[q]] for q in QUANTITIES}, "loss": sum(losses) / len(losses)}


# --------------------------------------------------------------------------- setting A: translation


def _translation_data(sizes: dict):
    from ..recipes.translation import train_joint_tokenizer

    with open(data_file("bible_en_es_sample.jsonl"), encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    tokenizer = train_joint_tokenizer([p["en"] for p in pairs] + [p["es"] for p in pairs], vocab_size=sizes["vocab_size"])
    return pairs, tokenizer


def _translation_batches(pairs, tokenizer, sizes: dict, seed: int) -> List[dict]:
    rng = random.Random(seed)
    batches = []
    for _ in range(sizes["batches"]):
        chosen = rng.sample(pairs, sizes["batch_size"])
        kwargs = dict(padding=True, truncation=True, max_length=sizes["max_source_tokens"], return_tensors="pt")
        source = tokenizer([p["en"] for p in chosen], **kwargs)
        target = tokenizer([p["es"] for p in chosen], **kwargs)
        labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
        batches.append({"input_ids": source["input_ids"], "attention_mask": source["attention_mask"], "labels": labels})
    return batches


def _xavier_linears(layers: Sequence[nn.Module]) -> None:
    """Xavier-uniform weights and zero biases for every Linear inside ``layers`` (the paper's initialisation)."""
    for layer in layers:
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def _seq2seq(tokenizer, sizes: dict, depth: int, position: str, seed: int):
    from ..models import LNormSeq2SeqConfig, LNormSeq2SeqForConditionalGeneration

    config = LNormSeq2SeqConfig(
        vocab_size=len(tokenizer), hidden_size=sizes["hidden_size"], num_hidden_layers=depth, num_decoder_layers=depth,
        num_attention_heads=sizes["num_attention_heads"], dropout=0.0, attention_dropout=0.0, norm_position=position,
        max_position_embeddings=max(64, sizes["max_source_tokens"]), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LNormSeq2SeqForConditionalGeneration(config)
    _xavier_linears(list(model.model.encoder.layers) + list(model.model.decoder.layers))
    return model, list(model.model.decoder.layers)


# --------------------------------------------------------------------------- setting B: GPT


def _char_data() -> torch.Tensor:
    text = data_file("shakespeare_sample.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def _char_batches(ids: torch.Tensor, sizes: dict, seed: int) -> List[dict]:
    rng = random.Random(seed)
    length = sizes["gpt_seq_len"]
    batches = []
    for _ in range(sizes["batches"]):
        starts = [rng.randrange(0, len(ids) - length) for _ in range(sizes["batch_size"])]
        windows = torch.stack([ids[s:s + length] for s in starts])  # (B, T)
        batches.append({"input_ids": windows, "labels": windows})
    return batches


def _gpt(vocab_size: int, sizes: dict, depth: int, position: str, seed: int):
    from ..models import LNormGPTConfig, LNormGPTForCausalLM

    config = LNormGPTConfig(vocab_size=vocab_size, max_position_embeddings=sizes["gpt_seq_len"],
                            hidden_size=sizes["hidden_size"], num_hidden_layers=depth,
                            num_attention_heads=sizes["num_attention_heads"], dropout=0.0, attention_dropout=0.0,
                            norm_position=position)
    torch.manual_seed(seed)
    model = LNormGPTForCausalLM(config)
    return model, list(model.transformer.layers)


# --------------------------------------------------------------------------- the experiment


def summarize(per_seed: Sequence[dict]) -> Dict[str, object]:
    """Seed means and spreads per layer, last/first-layer ratios, and whether the claim held.

    Args:
        per_seed: the records ``run`` measures: ``setting``, ``depth``, ``norm_position``, ``seed`` and one
            list per quantity (``w1``, ``w2``, ``layer``).

    Returns:
        ``{"curves": [...], "verdicts": [...]}``. A curve has ``setting``, ``depth``, ``norm_position``
            and per quantity ``{"mean": [...], "std": [...], "last_over_first": r}`` (``std`` is the sample
            standard deviation over seeds, 0 for one seed). A verdict has ``setting``, ``depth``, ``quantity``,
            ``pre_ratio``, ``post_ratio``, ``post_grows`` (post ratio >= ``GROWS``), ``pre_flat`` (pre ratio
            within ``[1/FLAT, FLAT]``) and ``held`` (both).
    """
    groups: Dict[tuple, List[dict]] = {}
    for record in per_seed:
        groups.setdefault((record["setting"], record["depth"], record["norm_position"]), []).append(record)
    curves = []
    for (setting, depth, position), records in sorted(groups.items()):
        curve: Dict[str, object] = {"setting": setting, "depth": depth, "norm_position": position, "seeds": len(records)}
        for q in QUANTITIES:
            stats = [mean_std([r[q][i] for r in records]) for i in range(depth)]
            mean = [s["mean"] for s in stats]
            curve[q] = {"mean": mean, "std": [s["std"] for s in stats], "last_over_first": mean[-1] / mean[0]}
        curves.append(curve)
    by_key = {(c["setting"], c["depth"], c["norm_position"]): c for c in curves}
    verdicts = []
    for (setting, depth) in sorted({(c["setting"], c["depth"]) for c in curves}):
        pre, post = by_key.get((setting, depth, "pre")), by_key.get((setting, depth, "post"))
        if pre is None or post is None:
            continue
        for q in QUANTITIES:
            pre_ratio, post_ratio = pre[q]["last_over_first"], post[q]["last_over_first"]
            post_grows, pre_flat = bool(post_ratio >= GROWS), bool(1 / FLAT <= pre_ratio <= FLAT)
            verdicts.append({"setting": setting, "depth": depth, "quantity": q, "pre_ratio": pre_ratio,
                             "post_ratio": post_ratio, "post_grows": post_grows, "pre_flat": pre_flat,
                             "held": post_grows and pre_flat})
    return {"curves": curves, "verdicts": verdicts}


def run(seeds: int, quick: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Measure the per-layer gradient norms for both settings, both norm positions, every depth and seed.

    Args:
        seeds: number of seeds (``0 .. seeds-1``); a seed sets the weights and the batches.
        quick: ``QUICK`` sizes (depth 6 only, tiny width, 2 batches) instead of ``FULL``.
        log: called with one line per model measured.

    Returns:
        ``{"settings": {...}, "per_seed": [...], "summary": summarize(per_seed)}``.
    """
    sizes = dict(QUICK if quick else FULL)
    log = log or (lambda line: None)
    pairs, tokenizer = _translation_data(sizes)
    char_ids = _char_data()
    char_vocab = int(char_ids.max()) + 1
    per_seed = []
    for depth in sizes["depths"]:
        for seed in range(seeds):
            trans_batches = _translation_batches(pairs, tokenizer, sizes, seed)
            char_batches = _char_batches(char_ids, sizes, seed)
            for position in POSITIONS:
                for setting in ("A", "B"):
                    if setting == "A":
                        model, layers = _seq2seq(tokenizer, sizes, depth, position, seed)
                        batches = trans_batches
                    else:
                        model, layers = _gpt(char_vocab, sizes, depth, position, seed)
                        batches = char_batches
                    measured = _mean_over_batches(model, layers, batches)
                    per_seed.append({"setting": setting, "depth": depth, "norm_position": position, "seed": seed,
                                     **measured})
                    log(f"setting {setting} depth {depth} {position}-LN seed {seed}: loss {measured['loss']:.3f}, "
                        f"W2 grad norm first layer {measured['w2'][0]:.3g}, last {measured['w2'][-1]:.3g}")
    settings = {
        **sizes,
        "seeds": list(range(seeds)),
        "positions": list(POSITIONS),
        "grows": GROWS,
        "flat": FLAT,
        "A": {"model": "LNormSeq2SeqForConditionalGeneration", "data": "bible_en_es_sample.jsonl (en -> es)",
              "pairs": len(pairs), "tokenizer": f"joint BPE, {len(tokenizer)} tokens",
              "init": "Xavier-uniform Linear weights, zero biases (encoder and decoder layers); embeddings normal(0, 0.02)",
              "measured": "decoder layers"},
        "B": {"model": "LNormGPTForCausalLM", "data": "shakespeare_sample.txt (characters)",
              "tokenizer": f"characters, {char_vocab} symbols",
              "init": "GPT-2: normal(0, 0.02), residual projections scaled by 1/sqrt(2 * depth)",
              "measured": "decoder layers"},
        "dropout": 0.0,
    }
    return {"settings": settings, "per_seed": per_seed, "summary": summarize(per_seed)}


# --------------------------------------------------------------------------- reporting


def plot(result: dict, path: "Path | str") -> None:
    """Draw gradient norm against layer: a row per setting, a column per depth, pre/post lines for W1 and W2.

    Args:
        result: the experiment's JSON (``summary.curves`` is read).
        path: the PNG to write.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["summary"]["curves"]
    settings = sorted({c["setting"] for c in curves})
    depths = sorted({c["depth"] for c in curves})
    fig, axes = plt.subplots(len(settings), len(depths), figsize=(5.2 * len(depths), 3.8 * len(settings)), squeeze=False)
    colours = {"pre": "tab:blue", "post": "tab:red"}
    styles = {"w1": ("-", "o"), "w2": ("--", "s")}
    for row, setting in enumerate(settings):
        for col, depth in enumerate(depths):
            ax = axes[row][col]
            for curve in curves:
                if curve["setting"] != setting or curve["depth"] != depth:
                    continue
                for q, (line, marker) in styles.items():
                    x = list(range(1, depth + 1))
                    ax.errorbar(x, curve[q]["mean"], yerr=curve[q]["std"], color=colours[curve["norm_position"]],
                                linestyle=line, marker=marker, markersize=4, capsize=2,
                                label=f"{curve['norm_position']}-LN {QUANTITY_LABELS[q]}")
            ax.set_yscale("log")
            ax.set_xticks(range(1, depth + 1))
            ax.set_xlabel("layer (1 = nearest the input)")
            ax.set_ylabel("gradient norm")
            ax.set_title(f"{SETTING_LABELS[setting].split(',')[0]}, {depth} layers", fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    seeds = result.get("seeds")
    fig.suptitle(f"Gradient norm at initialisation per layer (mean ± std over {seeds} seed{'s' if seeds != 1 else ''})",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(stats: dict, i: int) -> str:
    std = stats["std"][i]
    return f"{stats['mean'][i]:.3g} ± {std:.2g}" if std else f"{stats['mean'][i]:.3g}"


def _direction(ratios: Sequence[float]) -> str:
    if all(r >= GROWS for r in ratios):
        return "grow toward the output"
    if all(r <= 1 / GROWS for r in ratios):
        return "shrink toward the output"
    if all(1 / FLAT <= r <= FLAT for r in ratios):
        return "are about flat across layers"
    return "change with depth in no single direction"


def _verdict_sentence(setting: str, verdicts: Sequence[dict]) -> str:
    mine = [v for v in verdicts if v["setting"] == setting and v["quantity"] in ("w1", "w2")]

    def outcome(key: str) -> str:
        count = sum(v[key] for v in mine)
        return "reproduced" if count == len(mine) else "not reproduced" if not count else "partly reproduced"

    held = sum(v["held"] for v in mine)
    whole = "reproduced" if held == len(mine) else "not reproduced" if not held else "partly reproduced"
    head = f"**Claim {whole}: Post-LN half {outcome('post_grows')}, Pre-LN half {outcome('pre_flat')}.**"

    def ratios(key: str) -> str:
        return ", ".join(f"{v[key]:.2f}" for v in mine)

    cases = ", ".join(f"{v['depth']} layers {QUANTITY_LABELS[v['quantity']]}" for v in mine)
    return (f"Setting {setting}: {head} Post-LN's FFN gradients {_direction([v['post_ratio'] for v in mine])} "
            f"(last/first layer {ratios('post_ratio')}; ≥ {GROWS} in {sum(v['post_grows'] for v in mine)} of "
            f"{len(mine)} cases); Pre-LN's {_direction([v['pre_ratio'] for v in mine])} "
            f"(last/first layer {ratios('pre_ratio')}; within [{1 / FLAT:.2f}, {FLAT}] in "
            f"{sum(v['pre_flat'] for v in mine)} of {len(mine)}). Cases in order: {cases}.")


def summary_lines(result: dict) -> List[str]:
    """One line per setting: whether the claim held, with the last/first-layer ratios.

    Args:
        result: the experiment's JSON.

    Returns:
        The lines, also the sentences of the docs page.
    """
    verdicts = result["summary"]["verdicts"]
    return [_verdict_sentence(s, verdicts) for s in sorted({v["setting"] for v in verdicts})]


def render_docs(result: dict) -> str:
    """The user's-guide page (``docs/experiments/grad_norms_init.md``) for a result JSON.

    Args:
        result: the experiment's JSON.

    Returns:
        The Markdown text; every number in it comes from ``result``.
    """
    s = result["settings"]
    curves = result["summary"]["curves"]
    verdicts = result["summary"]["verdicts"]
    seeds = result["seeds"]
    lines = [
        f"<!-- Generated by hf-lnorm experiment {NAME} --render-docs data/results/experiments/{NAME}.json. "
        "Edit the JSON or the renderer, not this page. -->",
        "# Gradient norms at initialisation: Pre-LN vs Post-LN",
        "",
        "**The question.** Xiong et al. (2020), *On Layer Normalization in the Transformer Architecture*, "
        "Figure 3: at initialisation, are the gradients of a Post-LN Transformer largest near the output and "
        "those of a Pre-LN Transformer about the same in every layer? That difference is why Post-LN needs a "
        "learning-rate warm-up and Pre-LN does not.",
        "",
        "## Setup",
        "",
        f"- **Setting A** (the paper's): `{s['A']['model']}` with encoder and decoder of the same depth, "
        f"on {s['A']['pairs']} English→Spanish verse pairs ({s['A']['tokenizer']}); {s['A']['init']}; "
        "Pre-LN ends each stack with a final LayerNorm. Measured: the decoder layers.",
        f"- **Setting B**: `{s['B']['model']}` on the Shakespeare sample ({s['B']['tokenizer']}); {s['B']['init']}.",
        f"- Width {s['hidden_size']}, {s['num_attention_heads']} heads, FFN 4× width, depths "
        f"{' and '.join(str(d) for d in s['depths'])}, dropout off. Each model sees {s['batches']} batches of "
        f"{s['batch_size']} sequences (source and target up to {s['max_source_tokens']} tokens in A, "
        f"{s['gpt_seq_len']} characters in B), one backward pass per batch; the norms are averaged over the "
        f"batches, then over {seeds} seed{'s' if seeds != 1 else ''} (the seed sets the weights and the batches).",
        "- W1 and W2 are the FFN's input and output weights (`mlp.fc_in`, `mlp.fc_out`); \"whole layer\" is the "
        "norm of the gradient of all the layer's parameters (attention, cross-attention, FFN, norms). "
        "Cells are mean ± standard deviation over seeds; layer 1 is nearest the input.",
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
    lines += ["", f"![Gradient norm per layer, Pre-LN and Post-LN](img/{NAME}.png)", ""]
    by_key = {(c["setting"], c["depth"], c["norm_position"]): c for c in curves}
    lines += ["### Last-to-first-layer ratios", "",
              f"Post-LN \"grows\" when its ratio is at least {GROWS}; Pre-LN is \"flat\" when its ratio lies within "
              f"[{1 / FLAT:.2f}, {FLAT}]; the claim holds when both do.", "",
              "| setting | layers | quantity | Pre-LN | Post-LN | Pre-LN flat | Post-LN grows | claim held |",
              "|---|---|---|---|---|---|---|---|"]
    yes = {True: "yes", False: "no"}
    for v in verdicts:
        lines.append(f"| {v['setting']} | {v['depth']} | {QUANTITY_LABELS[v['quantity']]} | {v['pre_ratio']:.2f} | "
                     f"{v['post_ratio']:.2f} | {yes[v['pre_flat']]} | {yes[v['post_grows']]} | {yes[v['held']]} |")
    lines.append("")
    for setting in sorted({c["setting"] for c in curves}):
        for depth in sorted({c["depth"] for c in curves if c["setting"] == setting}):
            pre, post = by_key.get((setting, depth, "pre")), by_key.get((setting, depth, "post"))
            if pre is None or post is None:
                continue
            lines += [f"### {SETTING_LABELS[setting]}, {depth} layers", "",
                      "| layer | Pre-LN W1 | Post-LN W1 | Pre-LN W2 | Post-LN W2 | Pre-LN whole layer | Post-LN whole layer |",
                      "|---|---|---|---|---|---|---|"]
            for i in range(depth):
                cells = [_cell(c[q], i) for q in QUANTITIES for c in (pre, post)]
                lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Provenance", ""] + provenance_lines(result, NAME)
    return "\n".join(lines) + "\n"
