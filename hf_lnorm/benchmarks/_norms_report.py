"""Reporting for ``hf-lnorm bench norms``: the results table, the benchmark targets and the speedup plot.

Each function takes the list of result rows that ``benchmarks/norms.py`` measures
(keys ``op``, ``impl``, ``dtype``, ``tokens``, ``hidden``, ``pass``, ``median_ms``).
"""

from __future__ import annotations

from typing import List

import torch

from .._json import staged_file


def _targets(results: List[dict], device: str, copy_gbps: float) -> List[dict]:
    """The benchmark targets (speedups over torch eager, fraction of copy bandwidth), evaluated on this run's numbers."""
    idx = {(r["op"], r["impl"], r["dtype"], r["tokens"], r["hidden"], r["pass"]): r["median_ms"] for r in results}
    checks = []
    for (op, impl, dtype, tokens, hidden, pass_), ms in sorted(idx.items()):
        base = idx.get((op, "torch", dtype, tokens, hidden, pass_))
        if base is None or impl not in ("hf_lnorm", "hf_lnorm_inplace"):
            continue
        shape = f"{tokens}x{hidden} {dtype} {pass_}"
        speedup = base / ms
        if device == "cpu" and op == "add_layer_norm" and pass_ == "fwd":
            checks.append({"target": f"add_layer_norm {impl} >= 1.3x torch eager", "case": shape,
                           "value": round(speedup, 3), "met": speedup >= 1.3})
        if device == "cpu" and op == "layer_norm" and impl == "hf_lnorm":
            # "no slower": within 5% of torch native (the run-to-run noise of a shared machine)
            checks.append({"target": "layer_norm no slower than torch native", "case": shape,
                           "value": round(speedup, 3), "met": speedup >= 0.95})
        if device == "cuda" and op == "layer_norm" and impl == "hf_lnorm" and pass_ == "fwd" and hidden >= 1024:
            nbytes = 2 * tokens * hidden * torch.finfo(getattr(torch, dtype)).bits // 8
            frac = nbytes / (ms * 1e-3) / 1e9 / copy_gbps
            checks.append({"target": "layer_norm fwd >= 85% of copy bandwidth", "case": shape,
                           "value": round(frac, 3), "met": frac >= 0.85})
        if device == "cuda" and impl == "hf_lnorm" and pass_ == "fwd+bwd":
            checks.append({"target": f"{op} fwd+bwd faster than torch", "case": shape,
                           "value": round(speedup, 3), "met": speedup > 1.0})
    return checks


def _table(results: List[dict]) -> str:
    """A plain-text table of ``results``, each row with its speedup over torch eager."""
    rows = [("op", "pass", "dtype", "tokens x hidden", "impl", "median ms", "vs torch")]
    idx = {(r["op"], r["impl"], r["dtype"], r["tokens"], r["hidden"], r["pass"]): r["median_ms"] for r in results}
    for r in results:
        base = idx.get((r["op"], "torch", r["dtype"], r["tokens"], r["hidden"], r["pass"]))
        rel = f"{base / r['median_ms']:.2f}x" if base else "-"
        rows.append((r["op"], r["pass"], r["dtype"], f"{r['tokens']}x{r['hidden']}", r["impl"], f"{r['median_ms']:.3f}", rel))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)


def _plot(path: str, results: List[dict]) -> None:
    """Write a bar chart of the speedups over torch eager to ``path`` (PNG, staged then renamed into place)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = {(r["op"], r["impl"], r["dtype"], r["tokens"], r["hidden"], r["pass"]): r["median_ms"] for r in results}
    labels, series = [], {}
    for key, ms in idx.items():
        op, impl, dtype, tokens, hidden, pass_ = key
        if impl == "torch":
            continue
        base = idx.get((op, "torch", dtype, tokens, hidden, pass_))
        if not base:
            continue
        label = f"{op}\n{pass_} {tokens}x{hidden}"
        if label not in labels:
            labels.append(label)
        series.setdefault(impl, {})[label] = base / ms
    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 0.9), 4.5))
    width = 0.8 / max(1, len(series))
    for i, (impl, vals) in enumerate(sorted(series.items())):
        ax.bar([j + i * width for j in range(len(labels))], [vals.get(lbl, 0.0) for lbl in labels], width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=6, rotation=90)
    ax.set_ylabel("speedup over torch eager")
    ax.legend()
    fig.tight_layout()
    with staged_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
