"""Writing the decoded store (:mod:`iaa.data.decoded_store` defines its format and reads it).

:func:`write_store` decodes every manifest row once, on a thread pool (PIL releases the GIL),
into a temporary folder beside the target (``.<name>.<random>.tmp``). It first removes the
temporaries a killed run of the same target left (:func:`remove_store_leftovers`), then checks
the free disk space and says how much it will write. It renames the folder into place when
complete, so a reader sees either no store or a complete one; on any exception, Ctrl-C or
SIGTERM (:func:`iaa.preemption.clean_up_on_sigterm` on the stage) the temporary folder is
removed. ``iaa decode`` (:mod:`iaa.decode`) is the stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image
from tqdm import tqdm

from iaa.atomic import exclusive_writer, remove_leftovers, usual_mode
from iaa.data.decoded_store import (
    DISK_MARGIN,
    FORMAT_VERSION,
    IMAGE_STATS_FILE,
    INDEX_FILE,
    META_FILE,
    PIXELS_FILE,
    file_sha256,
    image_stats,
    paths_sha256,
)
from iaa.data.images import load_rgb, pil_filter, squash_image
from iaa.errors import IAAError
from iaa.io import read_manifest, require_file

log = logging.getLogger(__name__)


def write_store(
    manifest_path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    resize: int,
    square: bool,
    interpolation: str,
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Decode every row of the manifest at ``manifest_path`` into a store at ``folder``.

    ``square``: each image squashed to ``resize`` x ``resize`` with ``interpolation``; not
    square: each image at its own size. ``threads`` decode in parallel (default: one per
    CPU). An existing store at ``folder`` is replaced. Raises IAAError when the disk lacks
    room (before anything is written) or an image is missing or cannot be decoded (nothing is
    left behind). Returns ``folder``.
    """
    pil_filter(interpolation)  # an unknown filter fails before any work
    if square and resize < 1:
        raise IAAError(f"decode: resize must be a positive number of pixels, got {resize}")
    manifest_path = require_file(manifest_path, "manifest")
    target = Path(folder)
    manifest = read_manifest(manifest_path)
    rel_paths = [str(p) for p in manifest.frame["path"]]
    files = manifest.absolute_paths()
    n = len(files)
    threads = max(1, threads or os.cpu_count() or 1)
    stats = image_stats(files)  # the signature training checks; also checks that every image exists

    if square:
        sizes = None
        pixel_shape: tuple[int, ...] = (n, resize, resize, 3)
        pixel_bytes = n * resize * resize * 3
    else:
        sizes = _image_sizes(files, threads)  # (N, 2) height, width from the headers
        pixel_bytes = int((sizes[:, 0] * sizes[:, 1]).sum()) * 3
        pixel_shape = (pixel_bytes,)
    need = pixel_bytes + (0 if square else n * 3 * 8) + 2 * 128 + DISK_MARGIN
    log.info(
        "decoding %d images of %s into %s: %s (%s)",
        n,
        manifest_path,
        target,
        _human(pixel_bytes),
        f"{resize}x{resize} {interpolation}" if square else "original sizes",
    )
    with exclusive_writer(target, "decoded store"):  # one writer: a second would delete its live temporary
        remove_store_leftovers(target)  # before the free-space check: their bytes count as free
        _check_space(target, need)

        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "rows": n,
            "manifest_sha256": file_sha256(manifest_path),
            "paths_sha256": paths_sha256(rel_paths),
            "image_stats": IMAGE_STATS_FILE,
            "square": bool(square),
            "resize": int(resize) if square else None,
            "interpolation": interpolation if square else None,
            "layout": "NHWC uint8" if square else "concatenated HWC uint8 + index (offset, height, width)",
            "pillow": PIL.__version__,
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            usual_mode(tmp)  # mkdtemp's folder is private (0700); a store is shared like any output
            pixels = np.lib.format.open_memmap(
                tmp / PIXELS_FILE, mode="w+", dtype=np.uint8, shape=pixel_shape
            )
            if sizes is None:
                offsets = None
            else:
                index = np.zeros((n, 3), dtype=np.int64)
                index[:, 1:] = sizes
                index[1:, 0] = np.cumsum(sizes[:, 0] * sizes[:, 1] * 3)[:-1]
                offsets = index[:, 0]
                np.save(tmp / INDEX_FILE, index, allow_pickle=False)
            np.save(tmp / IMAGE_STATS_FILE, stats, allow_pickle=False)

            def decode_one(i: int) -> None:
                image = load_rgb(files[i])
                if square:
                    pixels[i] = np.asarray(squash_image(image, resize, interpolation))
                    return
                h, w = int(sizes[i, 0]), int(sizes[i, 1])
                array = np.asarray(image)
                if array.shape != (h, w, 3):
                    raise IAAError(f"image {files[i]} decoded to {array.shape}, its header said {(h, w, 3)}")
                start = int(offsets[i])
                pixels[start : start + h * w * 3] = array.reshape(-1)

            _run_parallel(decode_one, n, threads, desc="decode", progress=progress)
            pixels.flush()  # msync; the mapping itself is dropped when this function returns
            names = [PIXELS_FILE] + ([] if square else [INDEX_FILE]) + [IMAGE_STATS_FILE]
            for name in names:
                _fsync(tmp / name)
            meta["files"] = {name: (tmp / name).stat().st_size for name in names}
            meta["total_bytes"] = sum(meta["files"].values())
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            _fsync(tmp / META_FILE)
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("wrote decoded store %s (%d rows, %s)", target, n, _human(meta["total_bytes"]))
        return target


def remove_store_leftovers(target: str | os.PathLike[str]) -> list[Path]:
    """Delete what a killed ``write_store`` of ``target`` left beside it: its temporary folder
    (``.<name>.<random>.tmp``) or an old store moved aside (``.<name>.<random>.old``); nothing
    else. Each is logged with its size. Returns them."""
    return remove_leftovers(target, suffixes=(".tmp", ".old"))


def _image_sizes(files: Sequence[Path], threads: int) -> np.ndarray:
    """(N, 2) int64 height, width of each image from its header (no pixels decoded)."""
    sizes = np.zeros((len(files), 2), dtype=np.int64)

    def one(i: int) -> None:
        try:
            with Image.open(files[i]) as img:
                sizes[i] = (img.height, img.width)
        except FileNotFoundError:
            raise IAAError(f"image listed in the manifest is missing: {files[i]}") from None
        except OSError as err:
            raise IAAError(f"image cannot be decoded: {files[i]} ({err})") from None

    _run_parallel(one, len(files), threads, desc="sizes", progress=False)
    return sizes


def _run_parallel(fn: Any, n: int, threads: int, *, desc: str, progress: bool) -> None:
    """``fn(i)`` for i in range(n) on ``threads`` threads; the first exception is re-raised and
    the tasks not yet started are cancelled."""
    if n == 0:
        return
    with (
        tqdm(total=n, desc=desc, unit="img", mininterval=5, disable=not progress, leave=False) as bar,
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="iaa-decode") as pool,
    ):
        chunk = max(1, min(256, n // (threads * 8) or 1))

        def run(start: int) -> int:
            stop = min(n, start + chunk)
            for i in range(start, stop):
                fn(i)
            return stop - start

        futures = {pool.submit(run, s) for s in range(0, n, chunk)}
        try:
            while futures:
                done, futures = wait(futures, return_when=FIRST_EXCEPTION)
                for f in done:
                    bar.update(f.result())  # re-raises a worker's exception
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _check_space(target: Path, need: int) -> None:
    """IAAError when the filesystem of ``target`` has less than ``need`` bytes free."""
    probe = target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if target.is_dir():  # the store replaced: its bytes come back once the new one is in place
        reclaim = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
        if free < need <= free + reclaim:
            log.info("removing the old store %s first to make room", target)
            shutil.rmtree(target)
            free = shutil.disk_usage(probe).free
    if free < need:
        raise IAAError(
            f"not enough disk space for the decoded store: it needs {_human(need)}, "
            f"{_human(free)} free in {probe}"
        )


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename the complete folder ``tmp`` onto ``target`` (an old store is moved aside first)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / "store")
    os.replace(tmp, target)
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _human(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    raise AssertionError  # pragma: no cover
