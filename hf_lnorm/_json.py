"""Writing result files so that a crash or kill never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Union


@contextmanager
def staged_file(path: Union[str, "os.PathLike[str]"], suffix: str = ".partial") -> Iterator[str]:
    """Yield a temporary file name in ``path``'s folder (created when missing); rename it onto ``path`` when the
    block ends normally, remove it when the block raises. Readers see the previous file or the complete new one.
    ``suffix`` ends the temporary name (``".png"`` for writers that pick the format from the extension)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj: Any, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, renamed into place.

    ``indent`` is passed to :func:`json.dump` (``None`` writes one line); the text is UTF-8 (non-ASCII
    characters written as themselves) and ends with a newline. The folder is created when missing. The
    temporary file (``.<name>.*.partial`` next to ``path``, :func:`staged_file`) is renamed with
    :func:`os.replace`, so readers see either the previous file or the complete new one. On any error,
    including a ``TypeError`` for an object ``json`` cannot serialize, the temporary file is removed, ``path``
    is left as it was (absent, or the previous complete file) and the exception propagates.
    """
    with staged_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=indent, ensure_ascii=False)
            handle.write("\n")
