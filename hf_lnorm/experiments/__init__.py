"""Reproductions of published LayerNorm findings with the package's model families.

Run one with ``hf-lnorm experiment NAME`` (``hf-lnorm experiment --list`` names them); each writes a
JSON with its settings, per-seed data, summary and provenance, and a plot. ``runner`` holds the
harness and the registry; each other module is one experiment.

Examples:
    >>> from hf_lnorm.experiments import names
    >>> "grad_norms_init" in names()
    True
"""

from .runner import EXPERIMENTS, load, names, run_experiment

__all__ = ["EXPERIMENTS", "load", "names", "run_experiment"]
