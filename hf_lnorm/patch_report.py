"""What ``patch`` did with each norm-like module: the records behind ``patch_report(model)``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class NormRecord:
    """One norm-like module and what ``patch`` did with it.

    ``patch_report(model)`` holds one record per norm-like module, in
    ``named_modules()`` order. ``hf-lnorm patch --json`` prints these fields.

    Args:
        name: the module's dotted name in the model (``""`` for the model itself).
        cls: the module's class, qualified (``"torch.nn.modules.normalization.LayerNorm"``).
        variant: the reference variant that reproduces it (``"layer_norm"``,
            ``"rms_norm_llama"``, ...; see ``hf_lnorm.norms.VARIANTS``), or None.
        status: ``"patched"``, ``"skipped"`` (no variant reproduces it, or it is an
            elementwise stand-in for a norm such as DyT) or ``"excluded"`` (by
            ``include``/``exclude``).
        reason: why it was skipped or excluded, or a note on a patched module.
        mode: the patch mode of a patched module (``"fused"``, ``"quantized"``).
        probe_err_fp32: largest absolute difference between the variant and the
            original module on the float32 probe.
        probe_err_half: the same on the half-precision probes.
        extra: what the mode adds: ``"residual_fusion"`` (fused mode), ``"int8"``
            and ``"consumers"`` (quantized mode), ...

    Examples:
        >>> import torch, hf_lnorm
        >>> model = hf_lnorm.patch(torch.nn.Sequential(torch.nn.LayerNorm(8)))
        >>> record = hf_lnorm.patch_report(model)[0]
        >>> record.status, record.mode, record.probe_err_fp32 < 1e-5
        ('patched', 'fused', True)
    """

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
    """List of ``NormRecord`` with summaries. Returned by ``patch_report(model)``.

    A plain ``list`` (index it, iterate it, ``len`` it) with the records
    grouped by status and rendered as one line, a table or dicts for JSON.

    Examples:
        >>> import torch, hf_lnorm
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.LayerNorm(8))
        >>> report = hf_lnorm.patch_report(hf_lnorm.patch(model, include="1"))
        >>> [r.name for r in report.patched], [r.name for r in report.excluded]
        (['1'], ['2'])
        >>> print(report.table())
        module  class                                    variant     status    reason
        1       torch.nn.modules.normalization.LayerNorm  layer_norm  patched
        2       torch.nn.modules.normalization.LayerNorm  -           excluded  not matched by include
    """

    @property
    def patched(self) -> List[NormRecord]:
        """The records with status ``"patched"``."""
        return [r for r in self if r.status == "patched"]

    @property
    def skipped(self) -> List[NormRecord]:
        """The records with status ``"skipped"``: no reference variant reproduces the module, or it is not a norm (DyT)."""
        return [r for r in self if r.status == "skipped"]

    @property
    def excluded(self) -> List[NormRecord]:
        """The records with status ``"excluded"`` by ``include``/``exclude``."""
        return [r for r in self if r.status == "excluded"]

    def summary(self) -> str:
        """One line: how many norms were patched (and in which modes), skipped and excluded.

        Returns:
            For example ``"hf_lnorm.patch: 13 norm(s) patched (fused), 0 skipped, 0 excluded"``.
        """
        modes = sorted({r.mode for r in self.patched if r.mode})
        return (
            f"hf_lnorm.patch: {len(self.patched)} norm(s) patched"
            f"{' (' + ', '.join(modes) + ')' if modes else ''}, {len(self.skipped)} skipped, "
            f"{len(self.excluded)} excluded"
        )

    def to_dicts(self) -> List[Dict[str, Any]]:
        """The records as plain dicts (``dataclasses.asdict``), ready for ``json.dumps``.

        Returns:
            One dict per record, with the ``NormRecord`` field names as keys.
        """
        return [asdict(r) for r in self]

    def table(self) -> str:
        """A fixed-width text table: module, class, variant, status, reason.

        Returns:
            The table as one string, a header line first; the model itself is shown as ``<root>``.
        """
        rows = [("module", "class", "variant", "status", "reason")]
        rows += [(r.name or "<root>", r.cls, r.variant or "-", r.status, r.reason) for r in self]
        widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
        lines = []
        for row in rows:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        return "\n".join(lines)
