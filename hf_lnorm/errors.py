"""Errors raised in one layer of the package and caught in another.

A leaf module: it imports nothing from hf_lnorm, so every layer can raise
these and the CLI on top can map them to exit statuses.
"""

__all__ = ["UnsupportedArchitectureError", "UsageError"]


class UsageError(Exception):
    """Bad command-line input: the ``hf-lnorm`` command exits with status 2.

    Raised by the subcommands for arguments that argparse accepts but that do
    not fit together or do not fit the model (a missing model, an output folder
    that may not be replaced, an unsupported architecture). ``hf-lnorm`` prints
    the message on one line (``hf-lnorm: error: ...``) and exits with status 2,
    the same status as an argparse error.

    Examples:
        >>> from hf_lnorm.errors import UsageError
        >>> try:
        ...     raise UsageError("--hidden-size=100 is not divisible by --heads=3")
        ... except UsageError as exc:
        ...     print(f"hf-lnorm: error: {exc}")
        hf-lnorm: error: --hidden-size=100 is not divisible by --heads=3
    """


class UnsupportedArchitectureError(ValueError):
    """The model's architecture (or task) cannot be exported by the selected path.

    Raised by the export helpers (``hf_lnorm.export.export``, ``infer_task``,
    ``load_model`` and the encoder-decoder exporters) when no exporter knows the
    model's architecture or task, or when the exporter rejects the model. It is a
    ``ValueError``: bad input, so ``hf-lnorm export`` and ``hf-lnorm optimize``
    report it as a usage error (exit status 2).

    Examples:
        >>> from hf_lnorm.export import infer_task
        >>> infer_task("MyCustomNet")
        Traceback (most recent call last):
        ...
        hf_lnorm.errors.UnsupportedArchitectureError: unsupported architecture 'MyCustomNet': no export task is known ...
    """
