"""Output folders of every hf_lnorm writer (``export``, ``optimize``, the training scripts): staged, marked as
hf_lnorm's, never replacing anyone else's data.

Everything is written into a temporary sibling folder first (``.<name>.partial-<pid>-<random>``),
flushed to disk and renamed onto the target at the end, so an interrupted, failed or killed run
never leaves a half-written folder under the final name and leaves an earlier output intact.

Every folder written this way carries a marker file, ``MARKER`` (which command wrote it, the
hf_lnorm version, when). ``overwrite`` replaces only a folder that carries the marker (or an empty
one); the source model's folder, the current directory, any folder holding either of them, a file,
and a folder of someone else's files are refused before any work starts. Staging folders left by
killed runs (whose process is gone) are removed by the next run into the same target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Union

from ._json import default_dir_mode, fsync_path, write_json

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["MARKER", "OutputExistsError", "UnsafeOutputError", "check_output_dir", "staged_output_dir",
           "is_hf_lnorm_output", "write_marker", "remove_stale_staging"]

MARKER = ".hf-lnorm-output.json"
_TOOL = "hf-lnorm"


class OutputExistsError(FileExistsError):
    """The output folder exists and ``overwrite`` was not given.

    Raised only for a folder that may be replaced (an earlier hf_lnorm output or
    an empty folder); pass ``overwrite=True`` (``--overwrite`` on the command
    line) to replace it. The CLI reports it as a usage error (exit status 2).

    Examples:
        >>> import os, tempfile
        >>> from hf_lnorm.outputs import OutputExistsError, check_output_dir
        >>> empty = tempfile.mkdtemp()
        >>> try:
        ...     check_output_dir(empty, overwrite=False)
        ... except OutputExistsError as exc:
        ...     print(type(exc).__name__)
        OutputExistsError
        >>> check_output_dir(empty, overwrite=True).is_dir()
        True
        >>> os.rmdir(empty)
    """


class UnsafeOutputError(OutputExistsError, ValueError):
    """The output path may not be replaced, even with ``overwrite``.

    The path is the source model's folder, holds the source or the current
    directory, is a file, or is a non-empty folder hf_lnorm did not write (it has
    no ``MARKER``). This is bad input, so the class is also a ``ValueError``;
    the CLI reports it as a usage error (exit status 2).

    Examples:
        >>> import os
        >>> from hf_lnorm.outputs import UnsafeOutputError, check_output_dir
        >>> try:
        ...     check_output_dir(os.getcwd(), overwrite=True)
        ... except UnsafeOutputError as exc:
        ...     print(str(exc).split(";")[0].endswith("is the current directory"))
        True
    """


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _within(outer: Path, inner: Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies below it (both already resolved)."""
    return inner == outer or outer in inner.parents


def is_hf_lnorm_output(folder: PathLike) -> bool:
    """Whether ``folder`` carries hf_lnorm's output marker.

    The marker is a regular file named ``MARKER`` (``.hf-lnorm-output.json``)
    holding a JSON object whose ``"tool"`` is ``"hf-lnorm"``; a symbolic link, an
    unreadable file or other JSON does not count.

    Args:
        folder: the folder to look at (it need not exist).

    Returns:
        True when the marker is there and names hf-lnorm.

    Examples:
        >>> import shutil, tempfile
        >>> from hf_lnorm.outputs import is_hf_lnorm_output, write_marker
        >>> folder = tempfile.mkdtemp()
        >>> is_hf_lnorm_output(folder)
        False
        >>> write_marker(folder, "my-script")
        >>> is_hf_lnorm_output(folder)
        True
        >>> shutil.rmtree(folder)
    """
    marker = Path(folder) / MARKER
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("tool") == _TOOL


def write_marker(folder: PathLike, writer: str) -> None:
    """Write ``MARKER`` into ``folder``: ``{"tool", "writer", "hf_lnorm_version", "created"}``.

    The marker is what lets a later run replace the folder with ``overwrite``.
    ``staged_output_dir`` writes it for you; call this only for a folder you
    stage yourself. The file is written atomically.

    Args:
        folder: an output folder hf_lnorm is writing (it must exist).
        writer: what writes it, e.g. ``"hf-lnorm export"``.

    Raises:
        OSError: the marker cannot be written.

    Examples:
        >>> import json, os, shutil, tempfile
        >>> from hf_lnorm.outputs import MARKER, write_marker
        >>> folder = tempfile.mkdtemp()
        >>> write_marker(folder, "my-script")
        >>> with open(os.path.join(folder, MARKER)) as f:
        ...     sorted(json.load(f))
        ['created', 'hf_lnorm_version', 'tool', 'writer']
        >>> shutil.rmtree(folder)
    """
    from ._version import __version__

    write_json(os.path.join(os.fspath(folder), MARKER), {
        "tool": _TOOL,
        "writer": writer,
        "hf_lnorm_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def _staging_pattern(name: str) -> "re.Pattern[str]":
    # tempfile.mkdtemp's random part uses [a-z0-9_]
    return re.compile(rf"^\.{re.escape(name)}\.(?P<kind>partial|old)-(?P<pid>\d+)-[a-z0-9_]+$")


def _process_gone(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) terminates the process on Windows: never guess there
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else, or cannot tell: keep its folder
        return False
    return False


def remove_stale_staging(target: PathLike, started: Optional[float] = None) -> List[Path]:
    """Remove the staging folders that killed runs left beside ``target``.

    Only folders named as hf_lnorm names them (``.<name>.partial-<pid>-<random>``,
    ``.<name>.old-<pid>-<random>``), older than ``started``, whose process ``<pid>`` is gone,
    are touched. A run killed between moving the earlier output aside and renaming the new one
    into place leaves the earlier output in ``.<name>.old-*/previous``: when ``target`` is
    missing, that folder is renamed back onto ``target`` instead of being removed.

    Args:
        target: the output folder (resolved).
        started: only folders last modified before this time (``time.time()``; default: now).

    Returns:
        The staging folders removed (empty when there were none, or when the
            parent folder cannot be listed).

    Examples:
        >>> import os, shutil, tempfile
        >>> from hf_lnorm.outputs import remove_stale_staging
        >>> parent = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(parent, ".out.partial-999999999-abc"))  # left by a process that is gone
        >>> [p.name for p in remove_stale_staging(os.path.join(parent, "out"))]
        ['.out.partial-999999999-abc']
        >>> os.listdir(parent)
        []
        >>> shutil.rmtree(parent)
    """
    target = Path(target)
    started = time.time() if started is None else started
    pattern = _staging_pattern(target.name)
    removed: List[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    # old-* first: a missing target is restored before anything else happens to its name
    for entry in sorted(entries, key=lambda e: not e.name.startswith(f".{target.name}.old-")):
        match = pattern.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= started or not _process_gone(int(match["pid"])):
                continue
        except OSError:
            continue
        path = Path(entry.path)
        previous = path / "previous"
        if match["kind"] == "old" and not os.path.lexists(target) and previous.is_dir() and not previous.is_symlink():
            os.rename(previous, target)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def check_output_dir(target: PathLike, overwrite: bool, protect: Iterable[Optional[PathLike]] = ()) -> Path:
    """Validate an output folder before any work starts.

    Refused whatever ``overwrite`` says: the current directory or a folder that holds it, a path in
    ``protect`` (the source model's folder, input files) or a folder that holds one, an existing file,
    and an existing non-empty folder without hf_lnorm's ``MARKER``. Paths are compared after
    resolving ``~``, ``.``, ``..`` and symbolic links. Staging folders of earlier killed runs into the same target are cleaned up
    (``remove_stale_staging``) once the path is known to be allowed.

    Args:
        target: the folder the run will create or replace.
        overwrite: whether an existing hf_lnorm output (or an empty folder) may be replaced.
        protect: the run's inputs, which it must neither replace nor remove: the source model's folder,
            input files (``None`` entries and missing paths are ignored).

    Returns:
        The resolved target (symbolic links followed), where the run will write.

    Raises:
        UnsafeOutputError: one of the refusals above.
        OutputExistsError: ``target`` is an hf_lnorm output or an empty folder and ``overwrite`` is False.

    Examples:
        >>> import os, shutil, tempfile
        >>> from hf_lnorm.outputs import UnsafeOutputError, check_output_dir
        >>> parent = tempfile.mkdtemp()
        >>> source = os.path.join(parent, "model"); os.mkdir(source)
        >>> check_output_dir(os.path.join(parent, "model-onnx"), overwrite=False, protect=[source]).name
        'model-onnx'
        >>> try:
        ...     check_output_dir(source, overwrite=True, protect=[source])
        ... except UnsafeOutputError as exc:
        ...     print("refused:", str(exc).split(";")[0].split(" is ")[1])
        refused: the source model's folder
        >>> shutil.rmtree(parent)
    """
    shown = os.fspath(target)
    real = _real(target)
    cwd = _real(os.getcwd())
    if _within(real, cwd):
        what = "is the current directory" if real == cwd else f"contains the current directory {str(cwd)!r}"
        raise UnsafeOutputError(f"output {shown!r} {what}; choose a new output folder")
    for item in protect:
        if item is None or not os.path.exists(os.path.expanduser(os.fspath(item))):
            continue
        source = _real(item)
        what = "the source model's folder" if source.is_dir() else "an input file of this run"
        if source == real:
            raise UnsafeOutputError(f"output {shown!r} is {what}; choose a new output folder")
        if _within(real, source):
            raise UnsafeOutputError(f"output {shown!r} contains {what}, {str(source)!r}; choose a new output folder")
    remove_stale_staging(real)
    if os.path.lexists(os.path.expanduser(shown)) or os.path.lexists(real):
        if not real.is_dir():
            raise UnsafeOutputError(f"output {shown!r} exists and is not a folder; hf-lnorm writes a folder and "
                                    "never replaces a file: choose a new output folder")
        if not is_hf_lnorm_output(real) and any(real.iterdir()):
            raise UnsafeOutputError(f"output folder {shown!r} exists and was not written by hf-lnorm (no {MARKER}); "
                                    "it is never replaced, even with --overwrite: choose a new output folder")
        if not overwrite:
            raise OutputExistsError(f"output folder {shown!r} already exists; pass --overwrite to replace it")
    return real


def _sync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk (before it is renamed into place)."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fsync_path(path)
        fsync_path(root)


@contextlib.contextmanager
def staged_output_dir(target: PathLike, overwrite: bool = False, protect: Iterable[Optional[PathLike]] = (),
                      writer: str = "hf-lnorm") -> Iterator[Path]:
    """Yield a fresh staging folder next to ``target``; rename it onto ``target`` on success.

    The staging folder (``.<name>.partial-<pid>-<random>``) gets the umask's folder mode and
    ``MARKER`` before the block runs. On success the target is checked again
    (``check_output_dir``), everything is flushed to disk, an existing ``target`` is moved
    aside, the staging folder is renamed onto ``target`` and the old one removed. On any exception
    (``KeyboardInterrupt`` included) the staging folder is removed and ``target`` is left exactly
    as it was; a killed run leaves only its staging folder, which the next run removes.

    Args:
        target: the final output folder.
        overwrite: replace an existing hf_lnorm output (only once the new one is complete).
        protect: folders the output must not replace or contain (the source model's).
        writer: recorded in the marker, e.g. ``"hf-lnorm export"``.

    Yields:
        The staging folder to write into.

    Raises:
        UnsafeOutputError: the target may not be replaced (see ``check_output_dir``), checked
            before the block runs and again before the rename.
        OutputExistsError: the target exists and ``overwrite`` is False.

    Examples:
        >>> import os, shutil, tempfile
        >>> from hf_lnorm.outputs import staged_output_dir
        >>> parent = tempfile.mkdtemp()
        >>> target = os.path.join(parent, "out")
        >>> with staged_output_dir(target, writer="my-script") as tmp:
        ...     _ = (tmp / "result.txt").write_text("42")
        >>> sorted(os.listdir(target))
        ['.hf-lnorm-output.json', 'result.txt']
        >>> with staged_output_dir(target, overwrite=True) as tmp:
        ...     raise RuntimeError("the run fails half-way")
        Traceback (most recent call last):
        ...
        RuntimeError: the run fails half-way
        >>> sorted(os.listdir(target))  # the earlier output is untouched
        ['.hf-lnorm-output.json', 'result.txt']
        >>> shutil.rmtree(parent)
    """
    protect = list(protect)
    real = check_output_dir(target, overwrite, protect)
    real.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.partial-{os.getpid()}-", dir=real.parent))
    try:
        os.chmod(tmp, default_dir_mode())
        write_marker(tmp, writer)
        yield tmp
        check_output_dir(target, overwrite, protect)  # the target may have changed during a long run
        _sync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if os.path.lexists(real):
            old = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-{os.getpid()}-", dir=real.parent))
            os.rename(real, old / "previous")
        os.rename(tmp, real)
    except BaseException:
        if old is not None and not os.path.lexists(real) and os.path.lexists(old / "previous"):
            os.rename(old / "previous", real)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.lexists(old / "previous"):
            shutil.rmtree(old, ignore_errors=True)
        raise
    fsync_path(real.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
