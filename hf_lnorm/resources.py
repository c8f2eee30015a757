"""Files that ship inside the package, and the user's cache directory.

Everything a default needs (the QA evaluation and calibration questions, the
LoRA adapter of the bundled QA model, small text samples) is package data under
``hf_lnorm/data`` and is read through ``importlib.resources``, so it works the
same from a wheel, an sdist or a checkout. Nothing here is ever written to.

Anything hf_lnorm writes for later reuse (the merged QA model, compiled CPU
kernels) goes under ``cache_dir``:

1. ``$HF_LNORM_CACHE`` when set;
2. else ``$HF_HOME/hf_lnorm`` when ``HF_HOME`` is set (the Hugging Face convention);
3. else ``$XDG_CACHE_HOME/huggingface/hf_lnorm``;
4. else ``~/.cache/huggingface/hf_lnorm``.

Examples:
    >>> from hf_lnorm.resources import data_file
    >>> data_file("qa", "dev.json").name
    'dev.json'
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["QA_ADAPTER", "QA_CALIBRATION_FILE", "QA_EVAL_FILE", "cache_dir", "data_file"]


def data_file(*parts: str) -> Path:
    """Path of a file or folder shipped under ``hf_lnorm/data``.

    The data is located with ``importlib.resources``, so the same call works
    from a wheel, an sdist or a checkout. Use the ``QA_*`` tuples of this module
    for the files hf_lnorm's own commands read.

    Args:
        *parts: path components below ``hf_lnorm/data`` (``"qa", "dev.json"``).

    Returns:
        A filesystem path (installed wheels and checkouts are plain folders).

    Raises:
        FileNotFoundError: the path does not exist, for example because the package
            was installed without its data files; the message gives the reinstall command.

    Examples:
        >>> from hf_lnorm.resources import QA_EVAL_FILE, data_file
        >>> path = data_file(*QA_EVAL_FILE)
        >>> path.parent.name, path.name, path.is_file()
        ('qa', 'dev.json', True)
    """
    node = resources.files("hf_lnorm").joinpath("data", *parts)
    path = Path(str(node))
    if not path.exists():
        raise FileNotFoundError(
            f"hf_lnorm package data {'/'.join(parts)!r} is missing from {str(path.parent)!r}; "
            "reinstall hf-lnorm from a complete wheel or sdist (pip install --force-reinstall hf-lnorm)")
    return path


def cache_dir(*parts: str) -> Path:
    """The folder hf_lnorm caches into, joined with ``parts``.

    The root is ``$HF_LNORM_CACHE`` when set, else ``$HF_HOME/hf_lnorm``, else
    ``$XDG_CACHE_HOME/huggingface/hf_lnorm``, else
    ``~/.cache/huggingface/hf_lnorm``. The environment is read on every call.
    The folder is not created here: the writer creates what it needs.

    Args:
        *parts: path components below the cache root (``"merged"``, ``"kernels"``).

    Returns:
        The path (``~`` expanded); it may not exist yet.

    Examples:
        >>> import os
        >>> from unittest import mock
        >>> from hf_lnorm.resources import cache_dir
        >>> with mock.patch.dict(os.environ, {"HF_LNORM_CACHE": "/tmp/my-cache"}):
        ...     print(cache_dir("kernels").as_posix())
        /tmp/my-cache/kernels
    """
    root = os.environ.get("HF_LNORM_CACHE")
    if root:
        base = Path(root)
    elif os.environ.get("HF_HOME"):
        base = Path(os.environ["HF_HOME"]) / "hf_lnorm"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = Path(xdg) / "huggingface" / "hf_lnorm"
    return base.expanduser().joinpath(*parts)


# Names of the shipped data; resolve them with data_file(*QA_EVAL_FILE) and so on.
QA_EVAL_FILE = ("qa", "dev.json")  # 600 questions on four held-out plays: evaluation only
QA_CALIBRATION_FILE = ("qa", "sample_train.json")  # training-split questions: calibration only
QA_ADAPTER = ("qa-minilm-lora",)  # PEFT LoRA + span head for the bundled MiniLM
