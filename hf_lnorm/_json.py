"""Writing result files so that a crash or kill never leaves a half-written file.

Files are written under a temporary name in the target's folder, flushed to disk
(``fsync``) and renamed into place; they get the permissions an ordinary ``open``
would give them under the process umask (``0644`` under umask ``022``), not the
``0600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Union

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status`` on Linux).

    Elsewhere it is read by setting and restoring it under a lock (``os.umask`` has no read-only form).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode of a new regular file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """Mode of a new folder under the current umask (``0o777 & ~umask``)."""
    return 0o777 & ~current_umask()


def fsync_path(path: Union[str, "os.PathLike[str]"]) -> None:
    """Flush a file's or a folder's data to disk; folders where the OS cannot sync them are skipped."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on Windows: nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def staged_file(path: Union[str, "os.PathLike[str]"], suffix: str = ".partial") -> Iterator[str]:
    """Write ``path`` through a temporary file in its folder, renamed into place when the block ends normally.

    The folder is created when missing. When the block ends normally the temporary file gets the
    umask's default mode (:func:`default_file_mode`), is flushed to disk, renamed onto ``path`` with
    :func:`os.replace`, and the folder entry is flushed too; readers see the previous file or the
    complete new one. When the block raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: the final file.
        suffix: end of the temporary name (``".png"`` for writers that pick the format from the extension).

    Yields:
        The temporary file name (``.<name>.<random><suffix>`` beside ``path``) to write to.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(folder)


def write_json(path: str, obj: Any, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, renamed into place.

    ``indent`` is passed to :func:`json.dump` (``None`` writes one line); the text is UTF-8 (non-ASCII
    characters written as themselves) and ends with a newline. The folder is created when missing. The
    temporary file (``.<name>.*.partial`` next to ``path``, :func:`staged_file`) is flushed to disk and
    renamed with :func:`os.replace`, so readers see either the previous file or the complete new one; the
    file gets the umask's default mode (``0644`` under umask ``022``). On any error, including a
    ``TypeError`` for an object ``json`` cannot serialize, the temporary file is removed, ``path`` is left
    as it was (absent, or the previous complete file) and the exception propagates.
    """
    with staged_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=indent, ensure_ascii=False)
            handle.write("\n")
