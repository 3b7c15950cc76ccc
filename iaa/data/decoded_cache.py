"""A disk cache of decoded, squashed images: one ``.npy`` file per (file list, size, filter).

Every train job of a benchmark preloads the same train and test images, and every export job
the same train + test images again (``iaa.data.sources.ImageSource``'s preload path); on
synth decoding them is most of an export job and a quarter of a train job. The first job
that decodes a given list of files at a given (resize, interpolation) writes the uint8
array (N, 3, resize, resize) to ``<cache_dir>/<key>.npy``; later jobs load it instead.

The key (:func:`cache_key`) is a SHA-256 over everything the pixels depend on: each file's
path, size and modification time (ns), in order; ``resize``; ``interpolation``; Pillow's
version (its resampling code makes the pixels) and :data:`FORMAT` (this module's recipe).
Rewriting an image, even with the same size, changes its mtime and so the key; an entry no
key points to any more is never read again (delete the folder to reclaim its space).

A file that fails to load, or holds an array of the wrong shape or dtype, is never used: it
is logged as a warning, the images are decoded again and the file rewritten.

Concurrency: jobs run in parallel (Snakemake, a cluster) and may want the same key at
once. Writes go through :func:`iaa.atomic.atomic_path` (a temporary file in the same folder,
renamed onto ``<key>.npy`` when complete), so a reader sees either no file or a complete
one, never a partial write; two writers of one key write the same bytes and the last rename
wins, which is harmless. On top of that, a job that misses takes an exclusive ``flock`` on
``<key>.lock`` before decoding and looks again once it holds it, so jobs started together
decode once and the rest wait and load (decoding in parallel would only share the same
cores). Where the filesystem has no ``flock`` the jobs simply race, safely as above; the
kernel drops the lock of a job that dies, so no lock is ever left held.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL

from iaa.atomic import atomic_path

try:  # POSIX only; elsewhere concurrent misses just decode in parallel
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Bump when the decoding recipe changes in a way the key cannot see (e.g. a new colour
# conversion): every old entry then misses instead of being read as the new recipe's output.
FORMAT = "iaa-decoded-v1"
DECODED_DIR = "decoded"


def default_cache_dir(manifest_path: str | os.PathLike[str]) -> Path:
    """Where the stages keep the decoded images of a manifest: ``decoded/`` beside it
    (``<results>/<bench>/decoded/``); the benchmark's runs share it."""
    return Path(manifest_path).parent / DECODED_DIR


def cache_key(files: Sequence[Path], resize: int, interpolation: str) -> str:
    """Hex SHA-256 (64 characters) of what the decoded array of ``files`` depends on.

    One ``stat`` per file (no pixels read). A missing file raises FileNotFoundError; callers
    check that the files exist first (``iaa.data.images.check_images_exist``).
    """
    digest = hashlib.sha256()
    header = (FORMAT, f"pillow={PIL.__version__}", f"resize={int(resize)}", f"interpolation={interpolation}")
    digest.update(("\0".join(header) + f"\0n={len(files)}\0").encode())
    for path in files:
        st = os.stat(path)
        # NUL cannot occur in a path, so the fields of consecutive files cannot run together.
        digest.update(f"{os.fspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def cached_decode(
    files: Sequence[Path],
    resize: int,
    interpolation: str,
    cache_dir: str | os.PathLike[str],
    decode: Callable[[], np.ndarray],
) -> np.ndarray:
    """The uint8 array (len(files), 3, resize, resize) of ``files``: loaded from ``cache_dir``
    when a valid entry exists, else ``decode()`` and the result stored there.

    ``decode`` must return exactly that array (checked: a wrong result is a ValueError, so
    a bug never enters the cache). A bad entry (unreadable, wrong shape or dtype) is logged
    as a warning and replaced; a failure to *write* an entry (read-only or full disk) is a
    warning too, the decoded array being returned all the same: the cache only saves time.
    See the module docstring for the key and for concurrent jobs.
    """
    shape = (len(files), 3, resize, resize)
    folder = Path(cache_dir)
    key = cache_key(files, resize, interpolation)
    path = folder / f"{key}.npy"
    cached, problem = _load(path, shape)
    if cached is not None:
        log.info("loaded %d decoded images from %s", len(files), path)
        return cached
    if problem:
        log.warning("%s", problem)
    with _exclusive(folder / f"{key}.lock"):
        # Another job may have written the entry while this one waited for the lock.
        cached, again = _load(path, shape)
        if cached is not None:
            log.info("loaded %d decoded images from %s (written by a concurrent job)", len(files), path)
            return cached
        if again and again != problem:
            log.warning("%s", again)
        images = decode()
        if images.shape != shape or images.dtype != np.uint8:
            raise ValueError(f"decoded images are {images.dtype} {images.shape}, expected uint8 {shape}")
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:  # np.save(<path>) would add ".npy"
                np.save(f, images, allow_pickle=False)
        except OSError as err:
            log.warning("cannot write decoded-image cache %s (%s); continuing without it", path, err)
        else:
            log.info("wrote %d decoded images to %s", len(files), path)
    return images


def _load(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    """(the array in ``path``, None) if it is a readable uint8 array of ``shape``; else
    (None, None) when there is no such file, or (None, why it is ignored) when it is bad:
    the caller warns, decodes again and replaces it."""
    try:
        images = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None, None
    except Exception as err:  # truncated or foreign file: numpy raises ValueError, OSError, EOFError...
        why = f"cannot load it ({err})"
    else:
        if images.shape == shape and images.dtype == np.uint8:
            return images, None
        why = f"it holds {images.dtype} {images.shape}, expected uint8 {shape}"
    return None, f"ignoring decoded-image cache {path}: {why}; decoding again and rewriting it"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the block.

    Best effort: without fcntl, or where the folder cannot be created or the filesystem
    refuses flock, the block runs unlocked (concurrent writers are safe anyway, see above).
    """
    if fcntl is None:
        yield
        return
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # e.g. ENOLCK on a filesystem without locks
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
