"""Your own images: an image-folder tree (``iaa prepare folder``) or a table (``iaa prepare csv``).

* ``folder``: ``<root>/<class name>/<image>``, torchvision's ImageFolder layout. Files in
  nested folders below a class belong to it; hidden files and folders (a leading ``.``)
  and files that are not images (by extension) are skipped and counted in one log line.
* ``csv``: a CSV or Parquet table with columns ``path`` (relative to ``root``) and
  ``label``, and optionally ``split`` (``train``/``test``, or ``train``/``query``/``gallery``
  for a query-vs-gallery protocol like In-Shop's) and ``class_name``.

Without a split, the classes are split into disjoint train and test classes: the first
half in sorted order trains, as on CUB and Cars (``test_fraction=None``), or a random
``test_fraction`` of them tests (``seed``). Every image is then decoded in full once, as
the five benchmarks' readers do (:func:`~iaa.data.datasets.image_checks.verify_images`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from iaa.data.datasets.image_checks import _EXAMPLES, drop_bad_images, verify_images
from iaa.data.datasets.resized_cache import build_resized_cache, cache_filter
from iaa.errors import IAAError
from iaa.io import MANIFEST_COLUMNS, write_manifest

log = logging.getLogger(__name__)

FORMATS = ("folder", "csv")
# torchvision's ImageFolder extensions (IMG_EXTENSIONS), compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
# The split values a table may use: one protocol or the other, never a mix.
PROTOCOLS = (("train", "test"), ("train", "query", "gallery"))


def _examples(items: Sequence[str]) -> str:
    return ", ".join(str(i) for i in list(items)[:_EXAMPLES])


# --------------------------------------------------------------------------- class split


def split_classes(classes: Sequence, name: str, *, test_fraction: float | None = None, seed: int = 0) -> set:
    """The test classes: the second half in sorted order, or a random ``test_fraction`` of them.

    With an odd number of classes the extra one trains. At least one class trains and one tests.
    """
    ordered = sorted(set(classes))
    n = len(ordered)
    if n < 2:
        raise IAAError(f"{name}: found {n} class(es); at least 2 are needed to split train from test classes")
    if test_fraction is None:
        return set(ordered[(n + 1) // 2 :])
    if not 0.0 < test_fraction < 1.0:
        raise IAAError(f"{name}: --test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    picked = np.random.default_rng(seed).permutation(n)[:n_test]
    return {ordered[i] for i in picked}


# --------------------------------------------------------------------------- readers


def read_folder(root: Path, *, test_fraction: float | None = None, seed: int = 0) -> pd.DataFrame:
    """``root/<class>/**/<image>`` as manifest rows; labels number the classes in sorted order."""
    name = "folder"
    if not root.is_dir():
        hint = "pass --root DIR holding <class>/<image> folders"
        raise IAAError(f"{name}: image folder not found: {root} ({hint})")
    hidden = other = 0
    rows: list[tuple[str, str]] = []
    empty: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            hidden += sum(1 for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else 1
            continue
        if not entry.is_dir():
            other += 1  # a file beside the class folders belongs to no class
            continue
        found = 0
        for path in sorted(entry.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                hidden += 1
            elif path.suffix.lower() not in IMAGE_EXTENSIONS:
                other += 1
            else:
                rows.append((rel.as_posix(), entry.name))
                found += 1
        if not found:
            empty.append(entry.name)
    if hidden or other or empty:
        log.info(
            "%s: skipped %d hidden file(s), %d non-image file(s) and %d class folder(s) without images%s"
            " under %s",
            name,
            hidden,
            other,
            len(empty),
            f" ({_examples(empty)})" if empty else "",
            root,
        )
    if not rows:
        raise IAAError(f"{name}: no images found in {root}; expected <class name>/<image> folders")
    frame = pd.DataFrame(rows, columns=["path", "class_name"])
    classes = sorted(frame["class_name"].unique())
    frame["label"] = frame["class_name"].map({c: i for i, c in enumerate(classes)}).astype("int64")
    test = split_classes(classes, name, test_fraction=test_fraction, seed=seed)
    frame["split"] = np.where(frame["class_name"].isin(test), "test", "train")
    return frame.loc[:, list(MANIFEST_COLUMNS)]


def _load_table(path: Path, name: str) -> pd.DataFrame:
    if not path.is_file():
        raise IAAError(f"{name}: table not found: {path} (pass --manifest FILE.csv or FILE.parquet)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise IAAError(f"{name}: table {path} is empty") from None
    except Exception as err:  # parser and Arrow errors alike: the user's file cannot be read
        text = " ".join(str(err).split())[:100]
        raise IAAError(f"{name}: cannot read table {path}: {text}") from None
    raise IAAError(f"{name}: table {path} is neither .csv nor .parquet")


def _labels(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(int64 labels, class names): integer labels are kept, other labels numbered in sorted order."""
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all() and (numbers % 1 == 0).all():
        return numbers.astype("int64"), text
    classes = sorted(text.unique())
    return text.map({c: i for i, c in enumerate(classes)}).astype("int64"), text


def read_table(table: Path, root: Path, *, test_fraction: float | None = None, seed: int = 0) -> pd.DataFrame:
    """A ``path,label[,split][,class_name]`` table as manifest rows (paths relative to ``root``)."""
    name = "csv"
    raw = _load_table(table, name)
    missing = [c for c in ("path", "label") if c not in raw.columns]
    if missing:
        raise IAAError(
            f"{name}: {table} lacks column(s) {', '.join(missing)}; expected path, label and optionally "
            f"split (columns found: {', '.join(map(str, raw.columns)) or 'none'})"
        )
    if raw.empty:
        raise IAAError(f"{name}: table {table} has no rows")
    if not root.is_dir():
        hint = "pass --root DIR, the folder the paths are relative to"
        raise IAAError(f"{name}: image root not found: {root} ({hint})")
    frame = pd.DataFrame({"path": raw["path"].astype(str).str.strip()})
    blank = raw["path"].isna().to_numpy() | (frame["path"] == "").to_numpy()
    blank |= raw["label"].isna().to_numpy() | (raw["label"].astype(str).str.strip() == "").to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0]) + 1
        raise IAAError(f"{name}: row {row} of {table} has an empty path or label")
    frame["path"] = frame["path"].map(lambda p: Path(p).as_posix()).str.removeprefix("./")
    dup = frame["path"][frame["path"].duplicated()].unique()
    if len(dup):
        raise IAAError(f"{name}: {len(dup)} path(s) appear more than once in {table} (e.g. {_examples(dup)})")
    frame["label"], names = _labels(raw["label"])
    frame["class_name"] = raw["class_name"].astype(str) if "class_name" in raw.columns else names
    if "split" in raw.columns:
        split = raw["split"].astype(str).str.strip().str.lower()
        used = set(split)
        if not any(used <= set(p) for p in PROTOCOLS):
            known = set().union(*map(set, PROTOCOLS))
            bad = sorted(used - known) or sorted(used)
            expected = " or ".join("/".join(p) for p in PROTOCOLS)
            raise IAAError(
                f"{name}: {table} has split value {bad[0]!r}; expected {expected} (one protocol, not a mix)"
            )
        if "train" not in used or not ("test" in used or {"query", "gallery"} <= used):
            raise IAAError(
                f"{name}: {table} has splits {', '.join(sorted(used))}; needs train and test, "
                "or train, query and gallery"
            )
        frame["split"] = split.to_numpy()
    else:
        test = split_classes(frame["label"].tolist(), name, test_fraction=test_fraction, seed=seed)
        frame["split"] = np.where(frame["label"].isin(test), "test", "train")
    return frame.loc[:, list(MANIFEST_COLUMNS)]


# --------------------------------------------------------------------------- checks


def warn_unretrievable(frame: pd.DataFrame, name: str) -> int:
    """Warn (one line) about evaluated classes whose images can never be retrieved; return their count.

    All-vs-all (``test``): a class with a single image has no other image to find. Query vs
    gallery: a query class with no gallery image.
    """
    lonely: list[str] = []
    for split in sorted(s for s in frame["split"].unique() if s == "test" or s.startswith("test-")):
        rows = frame[frame["split"] == split]
        sizes = rows.groupby("label")["class_name"].agg(["size", "first"])
        lonely.extend(f"{split}:{c}" for c in sizes.loc[sizes["size"] == 1, "first"])
    if {"query", "gallery"} <= set(frame["split"]):
        gallery = set(frame.loc[frame["split"] == "gallery", "label"])
        queries = frame[(frame["split"] == "query") & ~frame["label"].isin(gallery)]
        lonely.extend(f"query:{c}" for c in sorted(queries["class_name"].unique()))
    if lonely:
        log.warning(
            "%s: %d evaluated class(es) have a single image and can never be retrieved (e.g. %s); "
            "their queries can only miss",
            name,
            len(lonely),
            _examples(lonely),
        )
    return len(lonely)


def prepare_custom(
    fmt: str,
    root: Path,
    out: Path,
    *,
    manifest: Path | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    threads: int = 1,
    skip_bad_images: bool = False,
    resized_cache: Path | None = None,
    cache_size: int = 256,
    cache_square: bool = True,
    cache_interpolation: str = "bilinear",
) -> pd.DataFrame:
    """Read your own images (``fmt`` folder or csv), check each, write the manifest to ``out``.

    The same checks and optional resized cache as :func:`~iaa.data.datasets.common.prepare_dataset`;
    nothing is written to ``out`` unless every check passes.
    """
    if fmt not in FORMATS:
        raise IAAError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if resized_cache is not None:
        cache_filter(cache_interpolation)
    root = Path(root)
    if fmt == "folder":
        frame = read_folder(root, test_fraction=test_fraction, seed=seed)
    else:
        if manifest is None:
            raise IAAError("csv: pass --manifest FILE.csv or FILE.parquet (columns path, label[, split])")
        frame = read_table(Path(manifest), root, test_fraction=test_fraction, seed=seed)
    frame = frame.reset_index(drop=True)
    t0 = time.perf_counter()
    paths = frame["path"].tolist()
    problems = verify_images(root, paths, threads)
    log.info("%s: checked %d image(s) in %.1fs", fmt, len(paths), time.perf_counter() - t0)
    frame = drop_bad_images(frame, problems, fmt, root, skip_bad_images)
    manifest_root = root
    if resized_cache is not None and cache_square:
        paths, cache, how = frame["path"].tolist(), Path(resized_cache), cache_interpolation
        failures = build_resized_cache(root, paths, cache, cache_size, threads, interpolation=how)
        frame = drop_bad_images(frame, failures, fmt, root, skip_bad_images)
        manifest_root = Path(resized_cache)
    warn_unretrievable(frame, fmt)
    write_manifest(out, frame, root=manifest_root)
    return frame


def eval_splits_of(fmt: str, table: Path | None) -> tuple[str, ...]:
    """The evaluated protocol of your own dataset, known before ``prepare`` runs: ``("query",)``
    (query against gallery) when the table's ``split`` column names query rows, else
    ``("test",)`` (all against all). A table that cannot be read yet gives ``("test",)``:
    ``prepare`` then names the problem."""
    if fmt != "csv" or table is None:
        return ("test",)
    try:
        frame = _load_table(Path(table), "csv")
    except IAAError:
        return ("test",)
    if "split" in frame.columns and (frame["split"].astype(str) == "query").any():
        return ("query",)
    return ("test",)
