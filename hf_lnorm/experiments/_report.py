"""What the experiments share in reporting: seed statistics and the provenance lines under their tables."""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

__all__ = ["mean_std", "provenance_lines"]


def _load_text(machine: object) -> str:
    """", 2 cores, 1-minute load average 5.1 when the run ended" from the provenance's machine record."""
    if not isinstance(machine, dict):
        return ""
    cores, load = machine.get("cores"), machine.get("load_avg_1min")
    return (f", {cores} cores" if cores else "") + (
        f", 1-minute load average {load} when the run ended (step times are wall-clock)" if load is not None else "")


def provenance_lines(result: dict, name: str, with_load: bool = False) -> List[str]:
    """The Markdown bullet lines naming where a result JSON came from.

    Args:
        result: the experiment's JSON (its ``provenance`` is read).
        name: the experiment's name (for the source path).
        with_load: also give the core count and the machine's load when the run ended (for pages that
            report step times).

    Returns:
        The command, machine, date with git revision and versions, and source lines.

    Examples:
        >>> provenance_lines({"provenance": {"command": "hf-lnorm experiment x", "git_sha": "0123456789"}}, "x")[0]
        '- command: `hf-lnorm experiment x`'
    """
    prov = result.get("provenance") or {}
    machine = prov.get("machine") or {}
    versions = prov.get("versions") or {}
    vtext = ", ".join(f"{k} {versions[k]}" for k in ("python", "torch", "transformers") if k in versions)
    cpu = machine.get("cpu") if isinstance(machine, dict) else None
    sha = prov.get("git_sha")
    rev = f"git `{sha[:7]}`" + (" with uncommitted changes" if prov.get("git_dirty") else "") if sha else \
        f"hf_lnorm {prov.get('hf_lnorm', '?')}"
    load = _load_text(machine) if with_load else ""
    return [f"- command: `{prov.get('command', 'not recorded')}`",
            f"- machine: {cpu or 'not recorded'}{load}",
            f"- date {(prov.get('created') or '')[:10] or 'not recorded'}, {rev}; {vtext or 'versions not recorded'}",
            f"- source: `data/results/experiments/{name}.json`"]


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (0 for one value) of ``values``.

    Args:
        values: at least one number.

    Returns:
        ``{"mean": m, "std": s}``.

    Examples:
        >>> mean_std([1.0, 3.0])
        {'mean': 2.0, 'std': 1.4142135623730951}
    """
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var)}
