"""What the five dataset readers share: list parsing, official counts, the prepare stage.

A reader turns a downloaded dataset folder into a frame with the manifest columns
``path`` (relative to that folder, POSIX separators), ``label`` (the dataset's own
class id), ``split`` and ``class_name``. :func:`prepare_dataset` then checks every
image (:mod:`iaa.data.datasets.image_checks`), optionally builds a cache of smaller copies
(:mod:`iaa.data.datasets.resized_cache`: the squashed square that SPEC 3's transforms start
from; none where training crops the original image, CUB), and writes the manifest; every
problem the user can fix is a one-line :class:`~iaa.errors.IAAError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iaa.data.datasets.image_checks import _one_line, drop_bad_images, verify_images
from iaa.data.datasets.resized_cache import build_resized_cache, cache_filter
from iaa.errors import IAAError
from iaa.io import MANIFEST_COLUMNS, write_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetReader:
    """One downloadable dataset: where it lives under the root, and how to list its images."""

    name: str
    folder: str  # looked up as <root>/<folder>
    layout: str  # what the folder holds, for the "not found" message
    source: str  # where users get it, for the same message
    # split -> (images, classes) of the official release; None where the count is not fixed.
    official: Mapping[str, tuple[int | None, int]]
    read: Callable[[Path], pd.DataFrame]


# --------------------------------------------------------------------------- list files


def require_list(folder: Path, name: str, relpath: str) -> Path:
    path = folder / relpath
    if not path.is_file():
        raise IAAError(f"{name}: list file {relpath} not found in {folder}")
    return path


def read_list(
    path: Path, name: str, columns: Sequence[str], *, skiprows: int = 0, ints: Sequence[str] = ()
) -> pd.DataFrame:
    """Whitespace-separated columns as strings (leading zeros kept); ``ints`` become int64.

    Extra trailing columns are ignored; a row with too few fields, or a non-integer where
    an integer belongs, fails naming its line.
    """
    try:
        raw = pd.read_csv(path, sep=r"\s+", header=None, skiprows=skiprows, dtype=str)
    except pd.errors.EmptyDataError:
        raise IAAError(f"{name}: list file {path} has no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise IAAError(f"{name}: cannot parse {path}: {_one_line(err)}") from None
    if raw.shape[1] < len(columns):
        raise IAAError(f"{name}: {path} has {raw.shape[1]} column(s), expected {' '.join(columns)}")
    frame = raw.iloc[:, : len(columns)].set_axis(list(columns), axis=1).copy()
    short = frame.isna().any(axis=1).to_numpy()
    if short.any():
        row = int(np.flatnonzero(short)[0]) + skiprows + 1
        raise IAAError(f"{name}: line {row} of {path} has fewer than {len(columns)} fields")
    for col in ints:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna().to_numpy() | (values.to_numpy() % 1 != 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            line = i + skiprows + 1
            raise IAAError(f"{name}: line {line} of {path}: {col} is not an integer ({frame[col].iloc[i]!r})")
        frame[col] = values.astype(np.int64)
    return frame


def check_range(frame: pd.DataFrame, name: str, source: Path, low: int, high: int) -> None:
    """Class ids outside the official range mean a different file, not a smaller copy."""
    bad = frame["label"][(frame["label"] < low) | (frame["label"] > high)]
    if len(bad):
        raise IAAError(f"{name}: class id {int(bad.iloc[0])} in {source} is outside {low}-{high}")


def split_by_class(labels: pd.Series, last_train: int) -> np.ndarray:
    """The DML protocol of CUB and Cars: the first half of the classes trains, the rest tests."""
    return np.where(labels.to_numpy() <= last_train, "train", "test")


# --------------------------------------------------------------------------- counts


def _count_text(counts: Mapping[str, tuple[int | None, int]]) -> str:
    parts = []
    for split, (images, classes) in counts.items():
        shown = f"{images:,} images/" if images is not None else ""
        parts.append(f"{split} {shown}{classes:,} classes")
    return ", ".join(parts)


def warn_if_unofficial(reader: DatasetReader, frame: pd.DataFrame) -> bool:
    """One warning line when the counts differ from the official release (a miniature copy)."""
    grouped = frame.groupby("split", sort=False)["label"].agg(["size", "nunique"])
    found = {str(s): (int(r["size"]), int(r["nunique"])) for s, r in grouped.iterrows()}
    differs = set(found) != set(reader.official) or any(
        (images is not None and found[s][0] != images) or found[s][1] != classes
        for s, (images, classes) in reader.official.items()
        if s in found
    )
    if differs:
        log.warning(
            "%s: found %s; the official release has %s (a partial or miniature copy?)",
            reader.name,
            _count_text(found),
            _count_text(reader.official),
        )
    return differs


# --------------------------------------------------------------------------- the stage


def locate_folder(reader: DatasetReader, root: Path) -> Path:
    """``root/<folder>``; ``root`` itself is accepted when it already is that folder."""
    if not root.is_dir():
        hint = f"pass --root DIR, the folder holding {reader.folder}/"
        raise IAAError(f"dataset root not found: {root} ({hint})")
    for folder in (root / reader.folder, root):
        if folder.name == reader.folder and folder.is_dir():
            return folder
    raise IAAError(
        f"{reader.name}: folder {reader.folder}/ not found in {root}; expected {reader.folder}/ "
        f"holding {reader.layout}; {reader.source}"
    )


def prepare_dataset(
    reader: DatasetReader,
    root: Path,
    out: Path,
    *,
    threads: int,
    skip_bad_images: bool = False,
    resized_cache: Path | None = None,
    cache_size: int = 256,
    cache_square: bool = True,
    cache_interpolation: str = "bilinear",
) -> pd.DataFrame:
    """Read, check and (optionally) shrink a downloaded dataset; write its manifest to ``out``.

    Nothing is written to ``out`` unless every check passes. The manifest's root is the
    dataset folder, or ``resized_cache`` when given, so later stages read the small files:
    copies squashed to ``cache_size`` x ``cache_size`` with ``cache_interpolation``
    (``cache_square``, the benchmark's ``train.square_resize``). Without ``cache_square``
    (CUB) training crops the original image, and a crop of any smaller copy would be
    blurrier, so no cache is built and the manifest points at the originals.
    """
    if resized_cache is not None:
        cache_filter(cache_interpolation)  # a bad name fails before the images are checked
    folder = locate_folder(reader, Path(root))
    frame = reader.read(folder).loc[:, list(MANIFEST_COLUMNS)].reset_index(drop=True)
    if frame.empty:
        raise IAAError(f"{reader.name}: the list files in {folder} name no images")
    # VehicleID lists an image in several test lists: check (and cache) each file once.
    unique = frame["path"].drop_duplicates().tolist()
    t0 = time.perf_counter()
    problems = verify_images(folder, unique, threads)
    log.info("%s: checked %d image(s) in %.1fs", reader.name, len(unique), time.perf_counter() - t0)
    frame = drop_bad_images(frame, problems, reader.name, folder, skip_bad_images)
    manifest_root = folder
    if resized_cache is not None and not cache_square:
        log.info(
            "%s: no resized cache: training crops the original images (--no-cache-square), and a "
            "crop of a smaller copy would be blurrier; the manifest points at %s",
            reader.name,
            folder,
        )
    elif resized_cache is not None:
        unique = frame["path"].drop_duplicates().tolist()
        failures = build_resized_cache(
            folder, unique, Path(resized_cache), cache_size, threads, interpolation=cache_interpolation
        )
        frame = drop_bad_images(frame, failures, reader.name, folder, skip_bad_images)
        manifest_root = Path(resized_cache)
    warn_if_unofficial(reader, frame)
    write_manifest(out, frame, root=manifest_root)
    return frame
