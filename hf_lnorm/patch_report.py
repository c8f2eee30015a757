"""What ``patch`` did with each norm-like module: the records behind ``patch_report(model)``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class NormRecord:
    """One norm-like module and what ``patch`` did with it."""

    name: str
    cls: str
    variant: Optional[str]
    status: str  # "patched" | "skipped" | "excluded"
    reason: str = ""
    mode: Optional[str] = None
    probe_err_fp32: Optional[float] = None
    probe_err_half: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)


class PatchReport(list):
    """List of ``NormRecord`` with summaries. Returned by ``patch_report(model)``."""

    @property
    def patched(self) -> List[NormRecord]:
        return [r for r in self if r.status == "patched"]

    @property
    def skipped(self) -> List[NormRecord]:
        return [r for r in self if r.status == "skipped"]

    @property
    def excluded(self) -> List[NormRecord]:
        return [r for r in self if r.status == "excluded"]

    def summary(self) -> str:
        modes = sorted({r.mode for r in self.patched if r.mode})
        return (
            f"hf_lnorm.patch: {len(self.patched)} norm(s) patched"
            f"{' (' + ', '.join(modes) + ')' if modes else ''}, {len(self.skipped)} skipped, "
            f"{len(self.excluded)} excluded"
        )

    def to_dicts(self) -> List[Dict[str, Any]]:
        return [asdict(r) for r in self]

    def table(self) -> str:
        rows = [("module", "class", "variant", "status", "reason")]
        rows += [(r.name or "<root>", r.cls, r.variant or "-", r.status, r.reason) for r in self]
        widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
        lines = []
        for row in rows:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        return "\n".join(lines)
