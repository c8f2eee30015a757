"""Subcommands of the ``hf-lnorm`` CLI that have no better home."""
