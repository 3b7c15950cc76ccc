"""What the five dataset readers share: list parsing, official counts, image checks, resized cache.

A reader turns a downloaded dataset folder into a frame with the manifest columns
``path`` (relative to that folder, POSIX separators), ``label`` (the dataset's own
class id), ``split`` and ``class_name``. :func:`prepare_dataset` then checks every
image, optionally builds a cache of smaller copies (the squashed square that SPEC 3's
transforms start from; none where training crops the original image, CUB), and writes
the manifest; every problem the user can fix is a one-line :class:`~iaa.errors.IAAError`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError

from iaa.errors import IAAError
from iaa.io import MANIFEST_COLUMNS, write_json, write_manifest

log = logging.getLogger(__name__)

CACHE_MARKER = ".iaa-cache.json"
# The filters of ``iaa.data.images.INTERPOLATIONS``, as PIL applies them (antialiased when shrinking).
CACHE_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}
_MISSING = "missing"
_EXAMPLES = 3  # bad files named in a message; the rest are only counted
_CHUNK = 64  # paths per pool task: enough to amortise the task overhead, small enough to balance
# PIL modes of more than 8 bits per sample that ``convert("RGB")`` clips instead of scaling
# (a 16-bit PNG would come out almost all white): 0..65535 is mapped to 0..255.
WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


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


# --------------------------------------------------------------------------- image checks


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, the one conversion every loader uses (``iaa.data.images.load_rgb``
    and the resized cache), so no image comes out clipped or saturated.

    * RGB: unchanged. L, 1, CMYK, YCbCr, ...: PIL's own ``convert("RGB")``.
    * 16/32-bit integer (I;16, I;16B, I;16L, I;16N, I): ``round(v / 257)``, clipped to 0..255,
      i.e. 0..65535 -> 0..255 (PIL's ``convert`` clips instead: an almost white image).
    * F (float): PIL's convention, values on the 0..255 scale; rounded (PIL's ``convert``
      truncates) and clipped, NaN -> 0.
    * RGBA, LA, PA and P (with or without a transparency entry): the alpha channel is dropped
      and the stored colours are kept, as torchvision's loader (``convert("RGB")``) does; a
      palette image with transparency goes through RGBA, without PIL's warning about it.
    """
    if img.mode == "RGB":
        return img
    if img.mode in WIDE_MODES or img.mode == "F":
        values = np.asarray(img).astype(np.float64)
        if img.mode != "F":
            values /= 257.0
        gray = np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def _check_image(path: Path) -> str | None:
    """None if every pixel decodes (and converts to RGB as the loaders will), else why not.

    ``Image.verify`` reads headers only: a JPEG cut short passed it and failed later inside
    a DataLoader worker. ``load`` decodes the whole file, and PIL refuses a truncated one
    as long as ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False (:func:`verify_images` sees to it).
    """
    try:
        with Image.open(path) as img:
            img.load()
            to_rgb(img)
    except FileNotFoundError:
        return _MISSING
    except UnidentifiedImageError:  # its message repeats the whole path
        return "not an image PIL can read"
    except Exception as err:  # PIL raises many types for a damaged file; all mean "unreadable"
        return _one_line(err)
    return None


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _map_chunked(fn: Callable[[str], str | None], items: Sequence[str], threads: int) -> dict[str, str]:
    """Run ``fn`` over ``items`` on a thread pool (PIL and file I/O release the GIL); keep failures."""

    def run(chunk: Sequence[str]) -> list[tuple[str, str]]:
        return [(item, why) for item in chunk if (why := fn(item)) is not None]

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = pool.map(run, _chunks(items, _CHUNK))
        return dict(pair for chunk in results for pair in chunk)


def verify_images(folder: Path, relpaths: Sequence[str], threads: int) -> dict[str, str]:
    """Relative path -> problem ("missing" or the decoder's complaint) for each bad image.

    Every image is decoded in full, on ``threads`` threads. Should something in the process
    have set ``ImageFile.LOAD_TRUNCATED_IMAGES`` (PIL then pads a file cut short with grey),
    it is switched off for the check and restored afterwards.
    """
    tolerant = ImageFile.LOAD_TRUNCATED_IMAGES
    if tolerant:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; ignoring it while checking images")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        return _map_chunked(lambda rel: _check_image(folder / rel), relpaths, threads)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def drop_bad_images(
    frame: pd.DataFrame, problems: Mapping[str, str], name: str, folder: Path, skip: bool
) -> pd.DataFrame:
    """Fail naming the first few bad files and their count, or (``skip``) drop them with a warning."""
    if not problems:
        return frame
    missing = sorted(p for p, why in problems.items() if why == _MISSING)
    broken = sorted((p, why) for p, why in problems.items() if why != _MISSING)
    parts = []
    if missing:
        parts.append(f"{len(missing)} listed image(s) do not exist (e.g. {', '.join(missing[:_EXAMPLES])})")
    if broken:
        examples = "; ".join(f"{p}: {why}" for p, why in broken[:_EXAMPLES])
        parts.append(f"{len(broken)} image(s) cannot be read (e.g. {examples})")
    detail = " and ".join(parts)
    if not skip:
        raise IAAError(f"{name}: {detail} under {folder}; fix them or pass --skip-bad-images to drop them")
    log.warning("%s: dropping %d bad image(s) from the manifest: %s", name, len(problems), detail)
    kept = frame[~frame["path"].isin(list(problems))].reset_index(drop=True)
    empty = sorted(set(frame["split"]) - set(kept["split"]))
    if empty:
        raise IAAError(f"{name}: no readable images left in split(s) {', '.join(empty)} under {folder}")
    return kept


# --------------------------------------------------------------------------- resized cache


def _save_format(path: Path) -> str:
    return Image.registered_extensions().get(path.suffix.lower(), "JPEG")


def _write_atomic(dst: Path, write: Callable[[Path], None]) -> None:
    """Write under a temporary name beside ``dst``, rename on success: no half-written cache files."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cache_one(src: Path, dst: Path, size: int, resample: Image.Resampling) -> str | None:
    """Squash ``src`` to ``size`` x ``size`` into ``dst`` with filter ``resample``; None on
    success or skip.

    That squash is the first step of SPEC 3's train and eval transforms on every dataset but
    CUB, so the pipeline's own resize of the cached copy is a no-op and its crops are the
    crops of the original, up to JPEG noise.
    """
    try:
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            return None
        with Image.open(src) as img:
            w, h = img.size
            if w <= size and h <= size and img.mode not in WIDE_MODES:
                # Never upscale: the pipeline squashes the original the same way; keep its bytes.
                _write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))
                return None
            if w <= size and h <= size:  # 16-bit: an 8-bit copy, the pixels load_rgb gives
                small = to_rgb(img)
                _write_atomic(dst, lambda tmp: small.save(tmp, format=_save_format(dst)))
                return None
            new = (size, size)
            img.draft(None, new)  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is still >= new
            fmt = _save_format(dst)
            # Anything else is converted as the loaders convert it (16-bit scaled, alpha dropped).
            keep = ("RGB", "L", "CMYK") if fmt == "JPEG" else ("RGB", "L")
            out = img if img.mode in keep else to_rgb(img)
            out = out.resize(new, resample)
            options = {"quality": 95} if fmt == "JPEG" else {}
            _write_atomic(dst, lambda tmp: out.save(tmp, format=fmt, **options))
    except FileNotFoundError:
        return _MISSING
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except Exception as err:  # a file whose header verified but whose pixels do not decode
        return _one_line(err)
    return None


def cache_filter(interpolation: str) -> Image.Resampling:
    """PIL's filter for a ``--cache-interpolation`` name; an unknown name is an IAAError."""
    try:
        return CACHE_FILTERS[interpolation]
    except KeyError:
        known = ", ".join(CACHE_FILTERS)
        raise IAAError(f"unknown --cache-interpolation {interpolation!r}; expected one of {known}") from None


def _cached_recipe(cache_dir: Path) -> dict | None:
    """What the cache's marker says its files are (None: no marker, or an unreadable one)."""
    try:
        recipe = json.loads((cache_dir / CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return recipe if isinstance(recipe, dict) else None


def build_resized_cache(
    folder: Path,
    relpaths: Sequence[str],
    cache_dir: Path,
    size: int,
    threads: int,
    interpolation: str = "bilinear",
) -> dict[str, str]:
    """Write ``cache_dir/<relpath>`` for every image, squashed to ``size`` x ``size``; return
    failures (relative path -> why).

    Files already present and at least as new as their source are kept. A marker file
    records the recipe (size, squash, filter): after a change the old files would look
    fresh, so they are removed before the marker changes, and an interrupted rebuild cannot
    leave a mix (a marker of the old shorter-side caches differs too).
    """
    if size < 1:
        raise IAAError(f"--cache-size must be >= 1, got {size}")
    resample = cache_filter(interpolation)
    if cache_dir.resolve() == folder.resolve():
        raise IAAError(f"the resized cache {cache_dir} is the dataset folder itself; choose another folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    recipe = {"square_side": size, "interpolation": interpolation}
    previous = _cached_recipe(cache_dir)
    if previous is not None and previous != recipe:
        log.info("resized cache %s holds %s, not %s: rebuilding", cache_dir, previous, recipe)
        _map_chunked(lambda rel: (cache_dir / rel).unlink(missing_ok=True), relpaths, threads)
    write_json(cache_dir / CACHE_MARKER, recipe)
    t0 = time.perf_counter()
    failures = _map_chunked(
        lambda rel: _cache_one(folder / rel, cache_dir / rel, size, resample), relpaths, threads
    )
    log.info(
        "resized cache %s: %d image(s), %d x %d (%s), in %.1fs",
        cache_dir,
        len(relpaths),
        size,
        size,
        interpolation,
        time.perf_counter() - t0,
    )
    return failures


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
