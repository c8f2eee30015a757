"""Errors raised in one layer of the package and caught in another.

A leaf module: it imports nothing from hf_lnorm, so every layer can raise
these and the CLI on top can map them to exit statuses.
"""

__all__ = ["UnsupportedArchitectureError", "UsageError"]


class UsageError(Exception):
    """Bad command-line input: the ``hf-lnorm`` command exits with status 2."""


class UnsupportedArchitectureError(ValueError):
    """The model's architecture (or task) cannot be exported by the selected path."""
