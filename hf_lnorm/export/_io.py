"""Output-directory handling shared by ``export`` and ``optimize``.

Everything is written into a temporary sibling directory first and renamed
onto the target at the end, so an interrupted or failed run never leaves a
half-written output directory behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union


class OutputExistsError(FileExistsError):
    """The output directory exists and ``overwrite`` was not given."""


def check_output_dir(target: Union[str, Path], overwrite: bool) -> Path:
    """Validate an output directory before any work starts.

    Args:
        target: the directory the run will create.
        overwrite: whether an existing directory may be replaced.
    Returns:
        ``target`` as an absolute ``Path``.
    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is False.
        NotADirectoryError: ``target`` exists and is a file.
    """
    target = Path(target).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise NotADirectoryError(f"output path {str(target)!r} exists and is not a directory")
        if not overwrite:
            raise OutputExistsError(f"output directory {str(target)!r} already exists; pass --overwrite to replace it")
    return target


@contextlib.contextmanager
def staged_output_dir(target: Union[str, Path], overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; rename it onto ``target`` on success.

    On any exception (``KeyboardInterrupt`` included) the temporary directory is
    removed and ``target`` is left exactly as it was.

    Args:
        target: the final output directory.
        overwrite: replace an existing ``target`` (only once the new one is complete).
    Yields:
        The temporary directory to write into.
    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is False.

    Example:
        >>> with staged_output_dir("out") as tmp:      # doctest: +SKIP
        ...     (tmp / "model.onnx").write_bytes(data)
    """
    target = check_output_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, old / "previous")
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old / "previous", target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
