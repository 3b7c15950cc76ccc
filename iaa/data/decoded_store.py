"""Every image of a manifest decoded once into one on-disk array that training memory-maps.

JPEG decoding in a DataLoader feeds a GPU node 1,300-1,700 images/s where the GPU could
train on 4,000-6,000. A store holds the decoded pixels of *all* rows of a manifest (every
split, manifest order: store row ``i`` is manifest row ``i``) so that a batch is a gather
from a memory map, with no decoding and no worker processes.

On-disk layout, a folder ``<store>/`` (written by :func:`iaa.data.store_writer.write_store`, read by
:meth:`DecodedStore.open`):

* ``meta.json``: ``format`` (:data:`FORMAT_VERSION`), ``rows``, ``manifest_sha256`` (of the
  manifest file's bytes), ``paths_sha256`` (of its ``path`` column, in order), ``image_stats``
  (the name of the file below), ``square``, ``resize``, ``interpolation``, ``layout``,
  ``pillow``, ``files`` (name -> bytes) and ``total_bytes`` (their sum).
* ``image_stats.npy``: int64 ``(N, 2)``, each source image's size in bytes and mtime (ns) when
  it was decoded: the cheap signature (one stat per image, about 1 s for 120k files) that
  opening compares so an image rewritten in place is never served stale.
* square datasets (every pass squashes to resize x resize first: Cars, SOP, In-Shop,
  VehicleID, synth, custom): ``pixels.npy``, uint8 ``(N, resize, resize, 3)``, each image
  squashed exactly as the JPEG path squashes it (:func:`iaa.data.images.squash_image` of
  :func:`iaa.data.images.load_rgb`, the configured filter).
* not square (CUB: training crops the original): ``pixels.npy``, uint8 ``(total,)``, every
  image at its own size (H, W, 3) one after the other, and ``index.npy``, int64 ``(N, 3)``:
  byte offset, height and width of each row. ``resize`` and ``interpolation`` are recorded as
  null: the pixels do not depend on them.

Writing checks the free space first and goes to a temporary folder beside the target that
is renamed into place when complete, so a reader sees either no store or a complete one.
Opening compares ``meta.json`` with the manifest and the caller's settings and refuses a
store that differs (:class:`StaleStoreError`, one line saying how to rebuild it); with
``check_images`` (``iaa decode``, and training) also each image's size and mtime. Format 1
stores (no image signature) are refused with that line: only a rebuild can tell whether
their images changed.

Training batches are gathered from the store by :class:`iaa.data.cache_loader.CacheLoader`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iaa.errors import IAAError
from iaa.io import read_manifest, require_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: image_stats.npy, the per-image signature
META_FILE = "meta.json"
PIXELS_FILE = "pixels.npy"
INDEX_FILE = "index.npy"
IMAGE_STATS_FILE = "image_stats.npy"
META_KEYS = (
    "format", "rows", "manifest_sha256", "paths_sha256", "image_stats", "square", "resize",
    "interpolation", "files", "total_bytes",
)  # fmt: skip
# Room left on the disk beyond the store's own bytes (meta.json, directory entries, slack).
DISK_MARGIN = 16 << 20


class StaleStoreError(IAAError):
    """A decoded store does not match its manifest or the requested settings: rebuild it."""


class StoreMissingError(StaleStoreError):
    """No (complete) decoded store at the folder given."""


# --------------------------------------------------------------------------- hashes


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def paths_sha256(paths: Sequence[str]) -> str:
    """SHA-256 of the manifest's ``path`` column in row order (NUL never occurs in a path)."""
    digest = hashlib.sha256(f"n={len(paths)}\0".encode())
    for p in paths:
        digest.update(f"{p}\0".encode())
    return digest.hexdigest()


def image_stats(files: Sequence[Path], *, missing_ok: bool = False) -> np.ndarray:
    """int64 ``(N, 2)``: each image file's size in bytes and mtime (ns), one stat per file.

    A missing file is an IAAError naming it, or with ``missing_ok`` the row ``(-1, -1)``.
    """
    stats = np.empty((len(files), 2), dtype=np.int64)
    for i, path in enumerate(files):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not missing_ok:
                raise IAAError(f"image listed in the manifest is missing: {path}") from None
            stats[i] = -1
            continue
        stats[i] = st.st_size, st.st_mtime_ns
    return stats


# --------------------------------------------------------------------------- writing


def rebuild_hint(
    manifest_path: str | os.PathLike[str], folder: str | os.PathLike[str], settings: dict
) -> str:
    square = settings.get("square", True)
    resize = settings.get("resize") or 256
    interpolation = settings.get("interpolation") or "bilinear"
    return (
        f"iaa decode --manifest {manifest_path} --out {folder} --resize {resize} "
        f"--{'' if square else 'no-'}square --interpolation {interpolation}"
    )


# --------------------------------------------------------------------------- reading


@dataclass
class DecodedStore:
    """A written store, memory-mapped: ``len(store)`` rows, row ``i`` = manifest row ``i``."""

    folder: Path
    meta: dict[str, Any]
    pixels: np.ndarray  # memmap: (N, R, R, 3) square, (total,) otherwise
    index: np.ndarray | None  # (N, 3) offset, height, width; None when square

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        manifest_path: str | os.PathLike[str],
        *,
        resize: int | None = None,
        square: bool | None = None,
        interpolation: str | None = None,
        check_images: bool = False,
    ) -> DecodedStore:
        """The store at ``folder``, checked against ``manifest_path`` and the settings given.

        Refused with :class:`StaleStoreError` (:class:`StoreMissingError` when there is no
        store), one line naming what differs and the ``iaa decode`` command that rebuilds it:
        another format version, row count, manifest bytes or path order; ``square``, and when
        square ``resize`` and ``interpolation``, other than the caller's (None: not checked);
        files whose sizes differ from those recorded. ``check_images`` also compares each
        image's size and mtime with those at writing (one stat per image, about 1 s for 120k
        images): an image rewritten in place since is refused, naming it.
        """
        folder = Path(folder)
        manifest_path = require_file(manifest_path, "manifest")
        wanted = {"square": square, "resize": resize, "interpolation": interpolation}
        meta_path = folder / META_FILE

        def stale(what: str, settings: dict | None = None) -> StaleStoreError:
            hint = rebuild_hint(manifest_path, folder, {**(settings or {}), **_given(wanted)})
            return StaleStoreError(f"decoded store {folder} is stale: {what}; rebuild it with `{hint}`")

        if not meta_path.is_file():
            hint = rebuild_hint(manifest_path, folder, _given(wanted))
            raise StoreMissingError(f"no decoded store at {folder}; build it with `{hint}`")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise stale(f"cannot read {meta_path} ({err})") from None
        if not isinstance(meta, dict):
            raise stale(f"{meta_path} holds no object")
        recorded = {k: meta.get(k) for k in ("square", "resize", "interpolation")}
        if meta.get("format") != FORMAT_VERSION:
            raise stale(f"format {meta.get('format')}, this version reads {FORMAT_VERSION}", recorded)
        lacking = [k for k in META_KEYS if k not in meta]
        if lacking:
            raise stale(f"{meta_path} lacks {', '.join(lacking)}", recorded)
        manifest = read_manifest(manifest_path)
        rel_paths = [str(p) for p in manifest.frame["path"]]
        if meta["rows"] != len(rel_paths):
            raise stale(f"it has {meta['rows']} rows, the manifest {len(rel_paths)}", recorded)
        if meta["paths_sha256"] != paths_sha256(rel_paths):
            raise stale("the manifest's image paths changed or were reordered since it was written", recorded)
        if meta["manifest_sha256"] != file_sha256(manifest_path):
            raise stale(f"the manifest {manifest_path} was rewritten since it was written", recorded)
        if square is not None and bool(square) != meta["square"]:
            have = "squashed" if meta["square"] else "original-size"
            raise stale(f"it holds {have} images, square={bool(square)} was asked", recorded)
        if meta["square"]:
            if resize is not None and int(resize) != meta["resize"]:
                raise stale(f"resize {meta['resize']}, {resize} was asked", recorded)
            if interpolation is not None and interpolation != meta["interpolation"]:
                raise stale(f"interpolation {meta['interpolation']}, {interpolation} was asked", recorded)
        sizes = {}
        for name in meta["files"]:
            try:
                sizes[name] = (folder / name).stat().st_size
            except FileNotFoundError:
                raise stale(f"{name} is missing", recorded) from None
        if sizes != meta["files"] or sum(sizes.values()) != meta["total_bytes"]:
            raise stale(f"file sizes {sizes} differ from those recorded {meta['files']}", recorded)
        if meta["image_stats"] != IMAGE_STATS_FILE or IMAGE_STATS_FILE not in meta["files"]:
            raise stale(f"{meta_path} names no {IMAGE_STATS_FILE}", recorded)
        if check_images:
            changed = _changed_image(folder, manifest.absolute_paths())
            if changed is not None:
                raise stale(changed, recorded)
        pixels = np.load(folder / PIXELS_FILE, mmap_mode="r", allow_pickle=False)
        index = None if meta["square"] else np.load(folder / INDEX_FILE, allow_pickle=False)
        n = meta["rows"]
        if meta["square"]:
            expected: tuple[int, ...] = (n, meta["resize"], meta["resize"], 3)
        else:
            expected = (int((index[:, 1] * index[:, 2]).sum()) * 3,) if n else (0,)
            if index.shape != (n, 3):
                raise stale(f"{INDEX_FILE} holds {index.shape}, expected {(n, 3)}", recorded)
        if pixels.dtype != np.uint8 or pixels.shape != expected:
            raise stale(
                f"{PIXELS_FILE} holds {pixels.dtype} {pixels.shape}, expected uint8 {expected}", recorded
            )
        return cls(folder=folder, meta=meta, pixels=pixels, index=index)

    def __len__(self) -> int:
        return int(self.meta["rows"])

    @property
    def square(self) -> bool:
        return bool(self.meta["square"])

    def max_size(self) -> tuple[int, int]:
        """(largest height, largest width) of any row: the size a batch buffer needs at most."""
        if self.square:
            r = int(self.meta["resize"])
            return r, r
        if len(self) == 0:
            return 0, 0
        return int(self.index[:, 1].max()), int(self.index[:, 2].max())

    def image(self, row: int) -> np.ndarray:
        """Row ``row`` as a read-only (H, W, 3) uint8 view of the memory map."""
        if self.square:
            return self.pixels[row]
        off, h, w = (int(v) for v in self.index[row])
        return self.pixels[off : off + h * w * 3].reshape(h, w, 3)

    def gather(
        self, rows: np.ndarray | torch.Tensor | Sequence[int], out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images uint8 (B, 3, Hmax, Wmax), heights (B,) int64, widths (B,) int64) of ``rows``.

        Square stores: every image is resize x resize. Otherwise the batch is padded to its
        largest height and width with zeros, image ``b`` in ``[:, :h_b, :w_b]``. The images
        tensor is a channels-last view of an (B, H, W, 3) buffer (as stored; ``.contiguous()``
        makes it NCHW-contiguous); with ``out`` (any contiguous uint8 tensor of at least
        B*Hmax*Wmax*3 elements, e.g. pinned) the pixels are written there, without allocating.
        Rows are read in sorted order (locality in the file) and placed in the order asked.
        """
        idx = as_rows(rows, len(self))
        b = len(idx)
        if self.square:
            hmax = wmax = int(self.meta["resize"])
            heights = torch.full((b,), hmax, dtype=torch.int64)
            widths = heights.clone()
        else:
            hw = self.index[idx, 1:] if b else np.zeros((0, 2), dtype=np.int64)
            heights = torch.from_numpy(np.ascontiguousarray(hw[:, 0]))
            widths = torch.from_numpy(np.ascontiguousarray(hw[:, 1]))
            hmax = int(hw[:, 0].max()) if b else 0
            wmax = int(hw[:, 1].max()) if b else 0
        numel = b * hmax * wmax * 3
        if out is None:
            buf = torch.empty(numel, dtype=torch.uint8)
        else:
            if out.dtype != torch.uint8 or not out.is_contiguous() or out.device.type != "cpu":
                raise ValueError("gather: out must be a contiguous uint8 CPU tensor")
            if out.numel() < numel:
                raise ValueError(f"gather: out holds {out.numel()} elements, the batch needs {numel}")
            buf = out.view(-1)[:numel]
        dst = buf.numpy().reshape(b, hmax, wmax, 3)
        if not self.square and b and (int(heights.min()) < hmax or int(widths.min()) < wmax):
            dst.fill(0)  # the padding of the smaller images
        # Rows are read in file order (locality: neighbouring pages, readahead) and each is
        # copied once, straight into its place in the batch. One slice copy per row beats
        # fancy indexing here: np.take(memmap, rows, out=) reads at half the rate (17k vs 34k
        # rows/s of 256 x 256, warm page cache), and a sorted take then an un-permuting copy
        # at a third (two passes over the batch).
        for j in np.argsort(idx, kind="stable"):
            if self.square:
                dst[j] = self.pixels[idx[j]]
            else:
                image = self.image(int(idx[j]))
                dst[j, : image.shape[0], : image.shape[1]] = image
        images = buf.view(b, hmax, wmax, 3).permute(0, 3, 1, 2)
        return images, heights, widths


def _changed_image(folder: Path, files: Sequence[Path]) -> str | None:
    """What differs between the images now and the signature the store recorded (the first
    file that differs, and how many do), or None when every size and mtime is the same."""
    try:
        recorded = np.load(folder / IMAGE_STATS_FILE, allow_pickle=False)
    except (OSError, ValueError) as err:
        return f"cannot read {folder / IMAGE_STATS_FILE} ({err})"
    if recorded.dtype != np.int64 or recorded.shape != (len(files), 2):
        return f"{IMAGE_STATS_FILE} holds {recorded.dtype} {recorded.shape}, expected int64 {(len(files), 2)}"
    now = image_stats(files, missing_ok=True)
    differ = np.flatnonzero((now != recorded).any(axis=1))
    if not len(differ):
        return None
    first = int(differ[0])
    others = f" (and {len(differ) - 1} other image(s))" if len(differ) > 1 else ""
    if now[first, 0] < 0:
        return f"image {files[first]} is missing{others}"
    return f"image {files[first]} was rewritten since the store was written (size or mtime differ){others}"


def _given(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if v is not None}


def as_rows(rows: np.ndarray | torch.Tensor | Sequence[int], n: int) -> np.ndarray:
    """``rows`` as a flat int64 array; an IndexError names the first row outside ``[0, n)``."""
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    idx = np.asarray(rows, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise IndexError(f"row {bad} out of range for a decoded store of {n} rows")
    return idx
