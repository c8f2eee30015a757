"""LayerNorm vs RMSNorm vs Dynamic Tanh vs no norm, per optimizer step and per second of training.

Three published claims are put to the same runs:

* Zhang & Sennrich (2019), "Root Mean Square Layer Normalization": RMSNorm gives the quality of
  LayerNorm per step in 7-64% less time.
* Zhu et al. (2025), "Transformers without Normalization": Dynamic Tanh (DyT, ``weight * tanh(alpha * x)
  + bias``) matches LayerNorm in Vision Transformers; others report it is no faster than a fused RMSNorm.
* The course's "LayerNorm stabilises training and speeds convergence": without a norm, training ends worse.

Two tasks, each trained from the same initial weights and the same batches for every norm type of a seed:

* **ViT**: ``LNormViTForImageClassification`` on scikit-learn's digits (8x8 grayscale, 10 classes; the
  stratified 80/20 split with split seed 0 of ``configs/vit_digits.json``, pixels rescaled by 1/16 and
  normalized to [-1, 1] by ``LNormViTImageProcessor``); metric: test accuracy.
* **LM**: a character-level ``LNormGPTForCausalLM`` on the package's Shakespeare sample (the last 10% of
  the text held out); metric: validation loss (nats per character).

Every configuration runs twice: on the **plain-torch** path, where each LayerNorm runs
``torch.nn.functional.layer_norm`` and each RMSNorm the Llama-convention RMSNorm in torch ops (what the
model computes where hf_lnorm's kernels are not importable), and **patched** by ``hf_lnorm.patch(model)``.
DyT and no-norm models have nothing to patch (``patch_report`` lists DyT as skipped, and a model without
norms has no entries), so their two runs do the same work and show the timing noise. For each seed, all
configurations of a task train in lockstep (one step of each in turn), so machine load hits them alike.
Only the optimizer steps are timed, each on its own; a configuration's time per step is the median over
its steps.
"""

from __future__ import annotations

import statistics
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._charlm import Run, char_data, gpt_model, lm_objective, mean_std, train_interleaved
from ._report import provenance_lines

__all__ = ["NAME", "DESCRIPTION", "DEFAULT_SEEDS", "NORM_TYPES", "PATHS", "TASKS", "FASTER", "SPREAD_K",
           "use_plain_torch_norms", "summarize", "run", "plot", "render_docs", "summary_lines"]

NAME = "norm_choice"
DESCRIPTION = ("LayerNorm vs RMSNorm vs DyT vs none on a ViT (digits) and a character LM, per step and per "
               "second, plain torch and patched (Zhang & Sennrich 2019; Zhu et al. 2025)")
DEFAULT_SEEDS = 3
NORM_TYPES = ("layernorm", "rmsnorm", "dyt", "none")
NORM_LABELS = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm", "dyt": "DyT", "none": "no norm"}
PATHS = ("plain", "patched")
PATH_LABELS = {"plain": "plain torch", "patched": "hf_lnorm.patch"}
TASKS = ("vit", "lm")
TASK_LABELS = {"vit": "ViT, digits (test accuracy)", "lm": "character LM, Shakespeare (validation loss)"}
HIGHER_IS_BETTER = {"vit": True, "lm": False}
# "Faster" means at least 7% less time per step (the low end of the RMSNorm paper's 7-64%).
FASTER = 0.07
# Two final metrics agree when their means differ by at most SPREAD_K times the larger seed standard deviation.
SPREAD_K = 2.0

FULL = {
    "vit": {"hidden_size": 64, "layers": 4, "heads": 4, "patch_size": 2, "batch_size": 32, "steps": 160,
            "lr": 3e-3, "warmup": 16, "eval_every": 20, "weight_decay": 0.05},
    "lm": {"hidden_size": 64, "layers": 2, "heads": 4, "seq_len": 64, "batch_size": 24, "steps": 160,
           "lr": 3e-3, "warmup": 16, "eval_every": 20, "weight_decay": 0.0, "valid_windows": 96},
}
QUICK = {
    "vit": {"hidden_size": 32, "layers": 2, "heads": 2, "patch_size": 2, "batch_size": 32, "steps": 20,
            "lr": 3e-3, "warmup": 4, "eval_every": 10, "weight_decay": 0.05},
    "lm": {"hidden_size": 32, "layers": 2, "heads": 2, "seq_len": 32, "batch_size": 16, "steps": 20,
           "lr": 3e-3, "warmup": 4, "eval_every": 10, "weight_decay": 0.0, "valid_windows": 64},
}


# --------------------------------------------------------------------------- the plain-torch path


def _plain_layer_norm(self, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


def _plain_rms_norm(self, x: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)  # Llama convention
    return self.weight * normed


def use_plain_torch_norms(model: nn.Module) -> int:
    """Make every LayerNorm and RMSNorm of an hf_lnorm family model compute in plain torch ops, per instance.

    The family norms call hf_lnorm's fused ops whenever they are importable; this sets a forward on each
    norm instance (``F.layer_norm``, or the Llama-convention RMSNorm written in torch ops) so the model
    computes what it computes where hf_lnorm is not installed. The residual add then runs as its own op too.

    Args:
        model: a model built from ``hf_lnorm.models``.

    Returns:
        The number of norms switched (DyT and no-norm layers are left as they are).

    Examples:
        >>> from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM
        >>> model = LNormGPTForCausalLM(LNormGPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
        ...                                            num_attention_heads=2, norm_type="rmsnorm"))
        >>> use_plain_torch_norms(model)  # two per block and the final norm
        5
    """
    from ..models import LNormLayerNorm, LNormRMSNorm

    count = 0
    for module in model.modules():
        if isinstance(module, LNormLayerNorm):
            module.forward = types.MethodType(_plain_layer_norm, module)
        elif isinstance(module, LNormRMSNorm):
            module.forward = types.MethodType(_plain_rms_norm, module)
        else:
            continue
        count += 1
    return count


def _prepare(model: nn.Module, path: str) -> Dict[str, object]:
    """Put ``model`` on ``path`` and say what that did: norms switched to plain torch, or the patch report."""
    if path == "plain":
        return {"plain_norms": use_plain_torch_norms(model)}
    import warnings

    from .. import patch, patch_report

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no norm layers found.*")  # norm_type="none": recorded below
        patch(model)
    records = patch_report(model)
    reasons = sorted({r.reason for r in records if r.status != "patched" and r.reason})
    return {"patched": sum(r.status == "patched" for r in records),
            "skipped": sum(r.status != "patched" for r in records), "skip_reasons": reasons}


# --------------------------------------------------------------------------- the tasks


def _digits():
    """Preprocessed digits: ``(train pixels, train labels, test pixels, test labels)``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError("the norm_choice experiment needs scikit-learn for its digits data: "
                          "pip install scikit-learn") from exc
    from ..models import LNormViTImageProcessor

    digits = load_digits()
    indices = list(range(len(digits.target)))
    train_idx, test_idx = train_test_split(indices, test_size=0.2, random_state=0, stratify=digits.target)
    train_idx, test_idx = sorted(train_idx), sorted(test_idx)
    processor = LNormViTImageProcessor(size=8, num_channels=1, rescale_factor=1 / 16, image_mean=0.5, image_std=0.5)
    pixels = processor(digits.images[:, None], return_tensors="pt").pixel_values  # (N, 1, 8, 8)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    return pixels[train_idx], labels[train_idx], pixels[test_idx], labels[test_idx]


def _vit_runs(data, sizes: dict, seed: int) -> List[Run]:
    """One ViT per norm type and path, all from the weights of ``seed`` and seeing the same batches."""
    from ..models import LNormViTConfig, LNormViTForImageClassification

    train_x, train_y, test_x, test_y = data
    generator = torch.Generator().manual_seed(seed)
    order = [torch.randint(0, len(train_y), (sizes["batch_size"],), generator=generator) for _ in range(sizes["steps"])]

    def loss_fn(m: nn.Module, step: int) -> torch.Tensor:
        return m(pixel_values=train_x[order[step]], labels=train_y[order[step]]).loss

    def evaluate(m: nn.Module) -> float:
        return float((m(pixel_values=test_x).logits.argmax(-1) == test_y).float().mean())

    runs = []
    for norm_type in NORM_TYPES:
        for path in PATHS:
            config = LNormViTConfig(image_size=8, patch_size=sizes["patch_size"], num_channels=1,
                                    hidden_size=sizes["hidden_size"], num_hidden_layers=sizes["layers"],
                                    num_attention_heads=sizes["heads"], mlp_ratio=2.0, dropout=0.0,
                                    norm_type=norm_type, num_labels=10)
            torch.manual_seed(seed)
            model = LNormViTForImageClassification(config).train()
            run = Run(model, loss_fn, evaluate)
            run.labels = {"task": "vit", "norm_type": norm_type, "path": path, "seed": seed, **_prepare(model, path)}
            runs.append(run)
    return runs


def _lm_runs(data, sizes: dict, seed: int) -> List[Run]:
    """One character LM per norm type and path, all from the weights of ``seed`` and seeing the same batches."""
    loss_fn, evaluate = lm_objective(data, sizes, seed)

    runs = []
    for norm_type in NORM_TYPES:
        for path in PATHS:
            model = gpt_model(data.vocab_size, sizes["seq_len"], sizes["hidden_size"], sizes["layers"],
                              sizes["heads"], norm_type, "pre", seed)
            run = Run(model, loss_fn, evaluate)
            run.labels = {"task": "lm", "norm_type": norm_type, "path": path, "seed": seed, **_prepare(model, path)}
            runs.append(run)
    return runs


# --------------------------------------------------------------------------- summary and verdicts


def _final(record: dict) -> Optional[float]:
    """The last metric of a run, ``None`` when the run diverged."""
    return record["curve"][-1]["metric"] if record["finite"] else None


def _agree(a: dict, b: dict) -> bool:
    """Two seed summaries agree: means within ``SPREAD_K`` times the larger standard deviation."""
    return abs(a["mean"] - b["mean"]) <= SPREAD_K * max(a["std"], b["std"])


def _worse(task: str, candidate: dict, reference: dict) -> bool:
    """``candidate`` is worse than ``reference`` by more than the seed spread (for ``task``'s metric direction)."""
    gap = reference["mean"] - candidate["mean"] if HIGHER_IS_BETTER[task] else candidate["mean"] - reference["mean"]
    return gap > SPREAD_K * max(candidate["std"], reference["std"])


def summarize(per_seed: Sequence[dict]) -> Dict[str, object]:
    """Seed statistics per task, norm type and path, and the verdicts of the three claims.

    Args:
        per_seed: the run records: ``task``, ``norm_type``, ``path``, ``seed``, ``curve`` (``step``,
            ``seconds``, ``metric``), ``finite``, ``step_seconds_median``.

    Returns:
        ``{"configs": [...], "verdicts": [...]}``. A config has ``task``, ``norm_type``, ``path``, ``seeds``,
            ``diverged`` (runs with a non-finite loss), ``final`` and ``mid`` (mean/std of the metric at the
            end and at the middle evaluation over the finite runs; ``None`` when none finished),
            ``step_ms`` (mean/std over seeds of the median time per step, in ms) and ``curve`` (the mean
            metric and mean elapsed seconds per evaluation step, over the finite runs). A verdict has
            ``task``, ``claim`` (``rmsnorm``, ``dyt``, ``dyt_speed``, ``layernorm_vs_none``), ``path``,
            the numbers it was decided on and ``held``.
    """
    groups: Dict[tuple, List[dict]] = {}
    for r in per_seed:
        groups.setdefault((r["task"], r["norm_type"], r["path"]), []).append(r)
    configs = []
    for (task, norm_type, path), records in groups.items():
        finished = [r for r in records if r["finite"]]
        config: Dict[str, object] = {"task": task, "norm_type": norm_type, "path": path, "seeds": len(records),
                                     "diverged": len(records) - len(finished), "final": None, "mid": None,
                                     "curve": None,
                                     "step_ms": mean_std([1000 * r["step_seconds_median"] for r in records])}
        if finished:
            config["final"] = mean_std([_final(r) for r in finished])
            points = min(len(r["curve"]) for r in finished)
            middle = points // 2
            config["mid"] = mean_std([r["curve"][middle]["metric"] for r in finished])
            config["mid_step"] = finished[0]["curve"][middle]["step"]
            config["curve"] = {
                "step": [finished[0]["curve"][i]["step"] for i in range(points)],
                "seconds": [statistics.fmean(r["curve"][i]["seconds"] for r in finished) for i in range(points)],
                "metric": [statistics.fmean(r["curve"][i]["metric"] for r in finished) for i in range(points)],
            }
        configs.append(config)
    order = {t: i for i, t in enumerate(TASKS)}, {n: i for i, n in enumerate(NORM_TYPES)}, {p: i for i, p in enumerate(PATHS)}
    configs.sort(key=lambda c: (order[0].get(c["task"], 9), order[1].get(c["norm_type"], 9), order[2].get(c["path"], 9)))
    by_key = {(c["task"], c["norm_type"], c["path"]): c for c in configs}
    verdicts = []
    for task in [t for t in TASKS if any(c["task"] == t for c in configs)]:
        for path in PATHS:
            ln, rms = by_key.get((task, "layernorm", path)), by_key.get((task, "rmsnorm", path))
            dyt, none = by_key.get((task, "dyt", path)), by_key.get((task, "none", path))
            if ln is None or ln["final"] is None:
                continue
            if rms is not None:
                same = rms["final"] is not None and _agree(rms["final"], ln["final"])
                saving = 1 - rms["step_ms"]["mean"] / ln["step_ms"]["mean"]
                verdicts.append({"task": task, "claim": "rmsnorm", "path": path, "quality_agrees": bool(same),
                                 "time_saving": saving, "faster": bool(saving >= FASTER),
                                 "held": bool(same and saving >= FASTER)})
            if dyt is not None:
                same = dyt["final"] is not None and _agree(dyt["final"], ln["final"])
                saving = 1 - dyt["step_ms"]["mean"] / ln["step_ms"]["mean"]
                verdicts.append({"task": task, "claim": "dyt", "path": path, "quality_agrees": bool(same),
                                 "time_saving": saving, "held": bool(same)})
                if rms is not None and path == "patched":
                    dyt_vs_rms = 1 - dyt["step_ms"]["mean"] / rms["step_ms"]["mean"]
                    verdicts.append({"task": task, "claim": "dyt_speed", "path": path, "time_saving": dyt_vs_rms,
                                     "held": bool(dyt_vs_rms < FASTER)})
            if none is not None:
                end_worse = none["final"] is None or _worse(task, none["final"], ln["final"])
                mid_worse = none["mid"] is None or (ln["mid"] is not None and _worse(task, none["mid"], ln["mid"]))
                verdicts.append({"task": task, "claim": "layernorm_vs_none", "path": path,
                                 "none_diverged": none["diverged"], "none_worse_at_end": bool(end_worse),
                                 "none_worse_midway": bool(mid_worse), "held": bool(end_worse and mid_worse)})
    return {"configs": configs, "verdicts": verdicts}


# --------------------------------------------------------------------------- the experiment


def run(seeds: int, quick: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Train every task x norm type x path for each seed, the configurations of a task in lockstep.

    Args:
        seeds: number of seeds (``0 .. seeds-1``); a seed sets the initial weights and the batches.
        quick: ``QUICK`` sizes (tiny models, a few steps) instead of ``FULL``.
        log: called with one line per run.

    Returns:
        ``{"settings": {...}, "per_seed": [...], "summary": summarize(per_seed)}``.
    """
    sizes = {task: dict(values) for task, values in (QUICK if quick else FULL).items()}
    log = log or (lambda line: None)
    digits = _digits()
    chars = char_data()
    per_seed = []
    for seed in range(seeds):
        for task in TASKS:
            runs = _vit_runs(digits, sizes["vit"], seed) if task == "vit" else _lm_runs(chars, sizes["lm"], seed)
            t = sizes[task]
            results = train_interleaved(runs, t["steps"], t["lr"], t["warmup"], t["eval_every"], t["weight_decay"])
            for run, out in zip(runs, results):
                per_seed.append({**run.labels, **out})
                final = out["curve"][-1]["metric"]
                log(f"{task} {run.labels['norm_type']} {run.labels['path']} seed {seed}: final metric "
                    f"{'diverged' if final is None else f'{final:.4f}'}, "
                    f"{1000 * out['step_seconds_median']:.2f} ms/step")
    settings = {
        **sizes,
        "seeds": list(range(seeds)),
        "norm_types": list(NORM_TYPES),
        "paths": list(PATHS),
        "faster": FASTER,
        "spread_k": SPREAD_K,
        "threads": torch.get_num_threads(),
        "optimizer": "AdamW (betas 0.9, 0.95), linear warm-up then cosine decay to 0, no gradient clipping",
        "vit_data": {"source": "sklearn.datasets.load_digits", "train": len(digits[1]), "test": len(digits[3]),
                     "split": "stratified, 20% test, random_state 0", "processor": "8x8, 1 channel, x/16, mean 0.5, std 0.5"},
        "lm_data": {"source": "shakespeare_sample.txt (characters)", "vocab": chars.vocab_size,
                    "train_chars": len(chars.train_ids), "valid_chars": len(chars.valid_ids),
                    "unigram_loss": chars.unigram_entropy()},
        "norm_position": "pre",
        "dropout": 0.0,
    }
    return {"settings": settings, "per_seed": per_seed, "summary": summarize(per_seed)}


# --------------------------------------------------------------------------- reporting


COLOURS = {"layernorm": "tab:blue", "rmsnorm": "tab:orange", "dyt": "tab:green", "none": "tab:red"}


def plot(result: dict, path: "Path | str") -> None:
    """Draw the mean metric against steps and against training seconds, one row per task.

    Args:
        result: the experiment's JSON (``summary.configs`` is read).
        path: the PNG to write.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [c for c in result["summary"]["configs"] if c["curve"] is not None]
    tasks = [t for t in TASKS if any(c["task"] == t for c in configs)]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.8 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for col, axis in enumerate(("step", "seconds")):
            ax = axes[row][col]
            for c in configs:
                if c["task"] != task:
                    continue
                ax.plot(c["curve"][axis], c["curve"]["metric"], color=COLOURS[c["norm_type"]],
                        linestyle="-" if c["path"] == "plain" else "--", marker="o", markersize=2.5,
                        label=f"{NORM_LABELS[c['norm_type']]}, {PATH_LABELS[c['path']]}")
            ax.set_xlabel("optimizer steps" if axis == "step" else "training seconds (steps only)")
            ax.set_ylabel("test accuracy" if task == "vit" else "validation loss (nats/char)")
            ax.set_title(TASK_LABELS[task].split(" (")[0] + (" per step" if axis == "step" else " per second"),
                         fontsize=10)
            ax.grid(True, alpha=0.3)
            if task == "lm":
                finals = [v for c in configs if c["task"] == "lm" for v in c["curve"]["metric"][1:]]
                if finals:
                    ax.set_ylim(min(finals) - 0.1, max(finals) + 0.3)
            ax.legend(fontsize=6.5, ncol=2)
    seeds = result.get("seeds")
    fig.suptitle(f"Norm choice: mean over {seeds} seed{'s' if seeds != 1 else ''} (solid: plain torch, dashed: "
                 "patched)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ms(stats: dict) -> str:
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def _metric(task: str, stats: Optional[dict]) -> str:
    if stats is None:
        return "diverged"
    if task == "vit":
        return f"{100 * stats['mean']:.1f}% ± {100 * stats['std']:.1f}"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _less_time(saving: float, of: str = "time per step") -> str:
    """``0.12`` -> "12.0% less time per step"; a negative saving reads as more time."""
    return f"{100 * abs(saving):.1f}% {'less' if saving >= 0 else 'more'} {of}"


def _outcome(flags: Sequence[bool]) -> str:
    count = sum(flags)
    return "reproduced" if count == len(flags) else "not reproduced" if not count else "partly reproduced"


def summary_lines(result: dict) -> List[str]:
    """One line per claim: whether it held on each task and path, with the numbers it was decided on.

    Args:
        result: the experiment's JSON.

    Returns:
        The lines, also the sentences of the docs page.
    """
    verdicts = result["summary"]["verdicts"]
    by_key = {(c["task"], c["norm_type"], c["path"]): c for c in result["summary"]["configs"]}
    short = {"vit": "ViT", "lm": "LM"}
    lines = []

    def cases(claim: str) -> List[dict]:
        return [v for v in verdicts if v["claim"] == claim]

    rms = cases("rmsnorm")
    if rms:
        parts = [f"{short[v['task']]} {PATH_LABELS[v['path']]}: final metric "
                 f"{'agrees' if v['quality_agrees'] else 'differs'} "
                 f"({_metric(v['task'], by_key[(v['task'], 'rmsnorm', v['path'])]['final'])} vs LayerNorm "
                 f"{_metric(v['task'], by_key[(v['task'], 'layernorm', v['path'])]['final'])}), "
                 f"{_less_time(v['time_saving'])}" for v in rms]
        lines.append(f"RMSNorm (Zhang & Sennrich 2019): **claim {_outcome([v['held'] for v in rms])}** "
                     f"(same quality and ≥ {100 * FASTER:.0f}% less time per step in {sum(v['held'] for v in rms)} "
                     f"of {len(rms)} cases). " + "; ".join(parts) + ".")
    dyt = cases("dyt")
    if dyt:
        parts = [f"{short[v['task']]} {PATH_LABELS[v['path']]}: "
                 f"{_metric(v['task'], by_key[(v['task'], 'dyt', v['path'])]['final'])} vs LayerNorm "
                 f"{_metric(v['task'], by_key[(v['task'], 'layernorm', v['path'])]['final'])} "
                 f"({'agrees' if v['quality_agrees'] else 'differs'})" for v in dyt]
        lines.append(f"DyT matches LayerNorm (Zhu et al. 2025): **claim {_outcome([v['held'] for v in dyt])}** "
                     f"({sum(v['held'] for v in dyt)} of {len(dyt)} cases). " + "; ".join(parts) + ".")
    speed = cases("dyt_speed")
    if speed:
        parts = [f"{short[v['task']]}: DyT {_ms(by_key[(v['task'], 'dyt', 'patched')]['step_ms'])} ms/step vs "
                 f"patched RMSNorm {_ms(by_key[(v['task'], 'rmsnorm', 'patched')]['step_ms'])} "
                 f"(DyT: {_less_time(v['time_saving'])})" for v in speed]
        lines.append(f"DyT is not faster than a fused RMSNorm: **claim {_outcome([v['held'] for v in speed])}** "
                     f"(DyT saves less than {100 * FASTER:.0f}% in {sum(v['held'] for v in speed)} of {len(speed)} "
                     "cases). " + "; ".join(parts) + ".")
    course = cases("layernorm_vs_none")
    if course:
        parts = [f"{short[v['task']]} {PATH_LABELS[v['path']]}: no norm "
                 f"{_metric(v['task'], by_key[(v['task'], 'none', v['path'])]['final'])} vs LayerNorm "
                 f"{_metric(v['task'], by_key[(v['task'], 'layernorm', v['path'])]['final'])} at the end"
                 f"{' (' + str(v['none_diverged']) + ' diverged)' if v['none_diverged'] else ''}, "
                 f"{'worse' if v['none_worse_midway'] else 'not worse'} midway" for v in course]
        lines.append(f"LayerNorm stabilises training and speeds convergence (course): "
                     f"**claim {_outcome([v['held'] for v in course])}** (no norm worse at the middle and at the end "
                     f"in {sum(v['held'] for v in course)} of {len(course)} cases). " + "; ".join(parts) + ".")
    return lines


def render_docs(result: dict) -> str:
    """The user's-guide page (``docs/experiments/norm_choice.md``) for a result JSON.

    Args:
        result: the experiment's JSON.

    Returns:
        The Markdown text; every number in it comes from ``result``.
    """
    s = result["settings"]
    configs = result["summary"]["configs"]
    seeds = result["seeds"]
    vit, lm = s["vit"], s["lm"]
    patch_notes: Dict[str, set] = {}
    for r in result["per_seed"]:
        if r["path"] == "patched":
            patch_notes.setdefault(r["norm_type"], set()).add(
                (TASKS.index(r["task"]), r["patched"], r["skipped"], "; ".join(r["skip_reasons"])))

    def note(norm_type: str) -> str:
        texts = []
        for task_index, patched, skipped, reasons in sorted(patch_notes.get(norm_type, ())):
            task = {"vit": "ViT", "lm": "LM"}[TASKS[task_index]]
            if patched:
                texts.append(f"{patched} norms patched in the {task}")
            elif skipped:
                texts.append(f"nothing patched in the {task}, {skipped} layers skipped ({reasons})")
            else:
                texts.append(f"nothing patched in the {task}: it has no norm layers")
        return ", ".join(texts) or "not run"

    lines = [
        f"<!-- Generated by hf-lnorm experiment {NAME} --render-docs data/results/experiments/{NAME}.json. "
        "Edit the JSON or the renderer, not this page. -->",
        "# Norm choice: LayerNorm vs RMSNorm vs DyT vs no norm",
        "",
        "**The question.** Does the choice of norm change what a small transformer learns per optimizer step, "
        "and what a step costs? Three claims are tested on the same runs:",
        "",
        "- Zhang & Sennrich (2019), *Root Mean Square Layer Normalization*: RMSNorm reaches LayerNorm's quality "
        "per step in 7–64% less time.",
        "- Zhu et al. (2025), *Transformers without Normalization*: Dynamic Tanh (DyT, `weight * tanh(alpha * x) "
        "+ bias`) matches LayerNorm in Vision Transformers; others report that it is not faster than a fused "
        "RMSNorm.",
        "- The course: LayerNorm stabilises training and speeds convergence (so no norm ends worse).",
        "",
        "## Setup",
        "",
        f"- **ViT**: `LNormViTForImageClassification`, width {vit['hidden_size']}, {vit['layers']} Pre-LN layers, "
        f"{vit['heads']} heads, {vit['patch_size']}×{vit['patch_size']} patches, MLP 2× width, on scikit-learn's "
        f"digits ({s['vit_data']['train']} training and {s['vit_data']['test']} test images; "
        f"{s['vit_data']['split']}; {s['vit_data']['processor']}). Metric: test accuracy.",
        f"- **LM**: character-level `LNormGPTForCausalLM`, width {lm['hidden_size']}, {lm['layers']} Pre-LN layers, "
        f"{lm['heads']} heads, context {lm['seq_len']}, on the package's Shakespeare sample ({s['lm_data']['vocab']} "
        f"characters; the last {s['lm_data']['valid_chars']} characters held out, {lm['valid_windows']} windows of "
        f"them scored). Metric: validation loss in nats per character (a context-free unigram model scores "
        f"{s['lm_data']['unigram_loss']:.3f}).",
        f"- Training: {vit['steps']} (ViT) and {lm['steps']} (LM) steps of batch {vit['batch_size']} and "
        f"{lm['batch_size']}, {s['optimizer']}; peak learning rate {vit['lr']:g} (ViT) and {lm['lr']:g} (LM), "
        f"warm-up {vit['warmup']} and {lm['warmup']} steps, weight decay {vit['weight_decay']:g} and "
        f"{lm['weight_decay']:g}, dropout off. The learning rate is high for models of this size, so that "
        "training without a norm is put under strain. Each seed sets the initial weights and the batches; all "
        f"norm types of a seed start from the same generator state and see the same batches. {seeds} "
        f"seed{'s' if seeds != 1 else ''}, {s['threads']} thread{'s' if s['threads'] != 1 else ''}.",
        "- **Paths**: *plain torch* runs each LayerNorm as `torch.nn.functional.layer_norm` and each RMSNorm as "
        "the Llama-convention RMSNorm in torch ops (what the model computes where hf_lnorm is not installed); "
        "*hf_lnorm.patch* runs the model after `hf_lnorm.patch(model)`. What the patch did: "
        + "; ".join(f"{NORM_LABELS[n]}: {note(n)}" for n in NORM_TYPES) + ". DyT and no-norm models therefore "
        "run the same code on both paths, and their two timings show the measurement noise.",
        "- **Timing**: only optimizer steps (forward, backward, update) are timed, each on its own; a run's time "
        "per step is the median over its steps, and the table gives its mean ± standard deviation over seeds. "
        "For each seed and task the eight configurations train in lockstep, one step of each in turn, so "
        "machine load falls on all of them alike.",
        f"- **Rules**: two final metrics *agree* when their means differ by at most {SPREAD_K:g}× the larger "
        f"seed standard deviation; *worse* means worse by more than that; *faster* means at least "
        f"{100 * FASTER:.0f}% less time per step.",
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
    lines += ["", f"![Metric per step and per second of training, per norm type](img/{NAME}.png)", ""]
    for task in [t for t in TASKS if any(c["task"] == t for c in configs)]:
        head = "test accuracy" if task == "vit" else "validation loss"
        lines += [f"### {TASK_LABELS[task].split(' (')[0]}", "",
                  f"| norm | path | final {head} | {head} midway | ms per step | training s | diverged |",
                  "|---|---|---|---|---|---|---|"]
        for c in configs:
            if c["task"] != task:
                continue
            seconds = c["curve"]["seconds"][-1] if c["curve"] else None
            lines.append(f"| {NORM_LABELS[c['norm_type']]} | {PATH_LABELS[c['path']]} | {_metric(task, c['final'])} | "
                         f"{_metric(task, c['mid'])} (step {c.get('mid_step', '-')}) | {_ms(c['step_ms'])} | "
                         f"{'-' if seconds is None else f'{seconds:.1f}'} | {c['diverged']} of {c['seeds']} |")
        lines.append("")
    lines += ["### Verdicts", "",
              "| task | claim | path | decided on | held |", "|---|---|---|---|---|"]
    yes = {True: "yes", False: "no"}
    for v in result["summary"]["verdicts"]:
        if v["claim"] == "rmsnorm":
            basis = f"quality agrees: {yes[v['quality_agrees']]}; RMSNorm: {_less_time(v['time_saving'])}"
        elif v["claim"] == "dyt":
            basis = f"quality agrees: {yes[v['quality_agrees']]} (DyT: {_less_time(v['time_saving'])} than LayerNorm)"
        elif v["claim"] == "dyt_speed":
            basis = f"DyT: {_less_time(v['time_saving'])} than patched RMSNorm"
        else:
            basis = (f"no norm worse midway: {yes[v['none_worse_midway']]}, at the end: {yes[v['none_worse_at_end']]}"
                     f", diverged runs: {v['none_diverged']}")
        claim = {"rmsnorm": f"RMSNorm = LayerNorm quality, ≥{100 * FASTER:.0f}% faster", "dyt": "DyT = LayerNorm quality",
                 "dyt_speed": "DyT not faster than fused RMSNorm", "layernorm_vs_none": "no norm worse than LayerNorm"}
        lines.append(f"| {v['task']} | {claim[v['claim']]} | {PATH_LABELS[v['path']]} | {basis} | {yes[v['held']]} |")
    lines += ["", "## Provenance", ""] + provenance_lines(result, NAME, with_load=True)
    return "\n".join(lines) + "\n"
