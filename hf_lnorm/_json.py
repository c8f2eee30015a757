"""Writing JSON results so that a crash or kill never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional


def write_json(path: str, obj: Any, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, renamed into place.

    ``indent`` is passed to :func:`json.dump` (``None`` writes one line); the text is UTF-8 (non-ASCII
    characters written as themselves) and ends with a newline. The folder is created when missing. The
    temporary file (``.<name>.*.partial`` next to ``path``) is renamed with :func:`os.replace`, so readers
    see either the previous file or the complete new one. On any error, including a ``TypeError`` for an
    object ``json`` cannot serialize, the temporary file is removed, ``path`` is left as it was (absent,
    or the previous complete file) and the exception propagates.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=indent, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
