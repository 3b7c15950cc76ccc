"""Writing an output safely: atomically, by one writer, with the usual file mode.

Every writer goes through :func:`atomic_path`: the data is written under a temporary name in
the destination folder (``.<name>.<8 random characters>.tmp``, as ``tempfile.mkstemp``
names it) and renamed into place only when complete, so a job killed midway never leaves a
half-written output that Snakemake would trust. A SIGKILL (which nothing can catch) can
leave the temporary: :func:`remove_leftovers`, called under the one writer's lock
(:func:`exclusive_writer`), removes it on the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from iaa.errors import IAAError

_log = logging.getLogger(__name__)

# The process's umask, read once at import (reading it means setting it, which is not
# thread-safe later): temporaries get the mode a plain open() would have given the output.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def usual_mode(path: str | os.PathLike[str]) -> None:
    """Give a temporary from ``tempfile.mkstemp``/``mkdtemp`` (0600/0700, private) the mode
    the output would have had if written directly: 0666/0777 less the umask, so results on a
    shared file system are as readable as any other file the user writes."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        usual_mode(tmp)
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_HELD: set[Path] = set()  # outputs this process holds the writer's lock of (re-entrant use)


@contextlib.contextmanager
def exclusive_writer(target: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold the lock of the one process allowed to write ``target`` (and to remove its
    leftovers, :func:`remove_leftovers`): an advisory ``flock`` on ``.<name>.lock`` beside it,
    released when the process ends, however it ends (SIGKILL too). Re-entrant within a process.
    The lock file is removed on release (a SIGKILL leaves it, harmless: an unlocked file).

    Raises IAAError (one line) when another process holds it: a second writer would take the
    first one's live temporary for a leftover and delete it.
    """
    final = Path(target).absolute()
    if final in _HELD:
        yield
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.parent / f".{final.name}.lock"
    for _ in range(3):  # the holder may unlink the file between our open and our flock
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IAAError(
                f"another process is writing the {what} {final} (it holds {lock}); wait for it to end"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # locked the file that is in place
        except FileNotFoundError:
            pass
        os.close(fd)
    else:
        raise IAAError(f"cannot take the lock {lock} of the {what} {final}: it keeps being replaced")
    _HELD.add(final)
    try:
        yield
    finally:
        _HELD.discard(final)
        lock.unlink(missing_ok=True)  # still held: nobody can lock this inode in between
        os.close(fd)  # releases the lock


# tempfile.mkstemp/mkdtemp names: the prefix ``.<name>.``, 8 characters of this alphabet, the suffix.
_TEMP_RANDOM = "[a-z0-9_]{8}"


def leftover_pattern(suffixes: tuple[str, ...] = (".tmp",)) -> re.Pattern[str]:
    """The names :func:`atomic_path` (and the stages writing a temporary file or folder the
    same way, ``tempfile.mkstemp``/``mkdtemp`` with prefix ``.<name>.``) give the temporaries
    of an output; group ``name`` is the output's name."""
    ends = "|".join(re.escape(s) for s in suffixes)
    return re.compile(rf"\.(?P<name>.+)\.{_TEMP_RANDOM}(?:{ends})", re.DOTALL)


def remove_leftovers(*paths: str | os.PathLike[str], suffixes: tuple[str, ...] = (".tmp",)) -> list[Path]:
    """Delete the temporaries of ``paths`` that a killed writer left beside them (SIGKILL
    cannot be caught); return them.

    Only names of exactly the pattern this code's writers produce for one of ``paths``
    (:func:`leftover_pattern`: ``.<name>.<8 random characters><suffix>`` in the same folder)
    are touched, files or folders; each is logged with its size. One listing per folder.
    Call it from the one job that writes ``paths``, before it writes (a concurrent writer of
    the same path would lose its temporary).
    """
    pattern = leftover_pattern(suffixes)
    by_folder: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        by_folder.setdefault(path.parent, set()).add(path.name)
    removed = []
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or match["name"] not in names:
                continue
            leftover = Path(entry.path)
            size = _tree_bytes(leftover)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            _log.info("removed leftover %s (%s) from an interrupted run", leftover, _human_bytes(size))
            removed.append(leftover)
    return removed


def _tree_bytes(path: Path) -> int:
    """Bytes of the file ``path``, or of every file under the folder ``path`` (links not followed)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for parent, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _human_bytes(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{nbytes} B"
        value /= 1024
    return f"{value:.1f} TiB"
