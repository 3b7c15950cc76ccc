"""Files between stages: manifests and embedding tables in Parquet, JSON.

Every writer goes through :func:`iaa.atomic.atomic_path` (a temporary file renamed into
place when complete), so a job killed midway never leaves a half-written output.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iaa.atomic import atomic_path
from iaa.errors import IAAError

_log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "label", "split", "class_name")
ROOT_METADATA_KEY = b"iaa.root"


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(require_file(path, "JSON file").read_text())


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` as a Path, or raise a one-line error naming it."""
    p = Path(path)
    if not p.is_file():
        raise IAAError(f"{what} not found: {p}")
    return p


def require_splits(present: Iterable[str], wanted: Iterable[str], source: str) -> None:
    """Refuse (IAAError, one line) a split asked for by name that ``source`` has no rows of:
    a misspelt ``--splits`` would otherwise be dropped without a word."""
    have = sorted({str(s) for s in present})
    missing = [s for s in dict.fromkeys(wanted) if s not in have]
    if missing:
        named = ", ".join(map(repr, missing))
        raise IAAError(f"{source} has no rows of split(s) {named} (its splits: {', '.join(have)})")


def require_parquet(path: str | os.PathLike[str], what: str) -> Path:
    """:func:`require_file`, and its Parquet footer readable: an empty, truncated or non-Parquet
    file is one IAAError naming it (pyarrow's ArrowInvalid otherwise ends in a traceback)."""
    p = require_file(path, what)
    try:
        pq.read_schema(p)
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise IAAError(f"cannot read {what} {p}: not a readable Parquet file ({reason})") from None
    return p


# --------------------------------------------------------------------------- manifests


def write_manifest(path: str | os.PathLike[str], manifest: pd.DataFrame, root: Path) -> None:
    """Write a dataset manifest; ``path`` entries are relative to ``root``."""
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    table = pa.Table.from_pandas(
        manifest.loc[:, list(MANIFEST_COLUMNS)].astype(
            {"path": str, "label": np.int64, "split": str, "class_name": str}
        ),
        preserve_index=False,
    )
    meta = dict(table.schema.metadata or {})
    meta[ROOT_METADATA_KEY] = str(Path(root).resolve()).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


@dataclass(frozen=True)
class Manifest:
    frame: pd.DataFrame  # columns path (relative), label, split, class_name
    root: Path

    def split(self, *names: str) -> pd.DataFrame:
        return self.frame[self.frame["split"].isin(names)].reset_index(drop=True)

    def absolute_paths(self, frame: pd.DataFrame | None = None) -> list[Path]:
        frame = self.frame if frame is None else frame
        return [self.root / p for p in frame["path"]]


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    p = require_parquet(path, "manifest")
    table = pq.read_table(p)
    missing = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing:
        raise IAAError(f"manifest {p} lacks columns {missing}")
    meta = table.schema.metadata or {}
    root = Path(meta.get(ROOT_METADATA_KEY, str(p.parent).encode()).decode())
    return Manifest(frame=table.to_pandas(), root=root)


# --------------------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class EmbeddingTable:
    """One row per image: an embedding (or backbone feature) and where it came from."""

    embeddings: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    splits: np.ndarray  # (N,) object (str)
    paths: np.ndarray  # (N,) object (str)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def select(self, mask: np.ndarray) -> EmbeddingTable:
        return EmbeddingTable(self.embeddings[mask], self.labels[mask], self.splits[mask], self.paths[mask])

    def split(self, *names: str) -> EmbeddingTable:
        return self.select(np.isin(self.splits, names))


def write_embeddings(
    path: str | os.PathLike[str],
    embeddings: np.ndarray,
    labels: np.ndarray,
    splits: np.ndarray | list[str],
    paths: np.ndarray | list[str],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write an embeddings Parquet: label int64, split, path, embedding fixed_size_list<float32>."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {emb.shape}")
    n, d = emb.shape
    if not (len(labels) == len(splits) == len(paths) == n):
        raise ValueError("embeddings, labels, splits and paths differ in length")
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "label": pa.array(np.asarray(labels, dtype=np.int64)),
            "split": pa.array([str(s) for s in splits], type=pa.string()),
            "path": pa.array([str(s) for s in paths], type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
        }
    )
    if metadata:
        table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


EMBEDDING_VALUE_TYPES = (pa.float32(), pa.float64())
_SHOWN_ROWS = 5  # bad rows named in an error message


def embedding_splits(path: str | os.PathLike[str]) -> list[str]:
    """The sorted distinct splits of an embeddings Parquet (only its ``split`` column is read), so a
    stage can choose the splits it needs before :func:`read_embeddings` reads (and checks) them."""
    p = require_parquet(path, "embeddings file")
    if "split" not in pq.read_schema(p, memory_map=True).names:
        raise IAAError(f"embeddings file {p} lacks column 'split'")
    column = pq.read_table(p, columns=["split"], memory_map=True).column("split")
    return sorted(str(s) for s in pc.unique(column).to_pylist() if s is not None)


def read_embeddings(
    path: str | os.PathLike[str],
    splits: list[str] | None = None,
    *,
    with_paths: bool = True,
    dim: int | None = None,
) -> EmbeddingTable:
    """Read an embeddings (or features) Parquet, optionally only some splits, and check it.

    The one reader of every stage that takes embeddings, so that bad input stops each of them
    with the same one-line :class:`IAAError` (exit 2) instead of a traceback or, worse, NaN
    results: one non-finite value spreads through every shared sum (class statistics, k-means)
    and distance computed from it. Refused, naming the file and the split(s) read:

    * a missing ``label``, ``split``, ``embedding`` column, or ``path`` when read ``with_paths``;
    * an ``embedding`` column that is not a list of float32 or float64 (strings, integers), or a
      ``label`` column that is not integer;
    * rows whose embedding is null, has a length other than ``dim`` (or, without ``dim``, than
      the most common length), holds a NaN or infinity (also once cast to float32), or is all
      zeros (no direction to L2-normalise); the message gives their count and first file rows
      (0-based row numbers in the Parquet).

    Only the rows read (those of ``splits``) are checked. ``dim`` is the dimension the caller
    needs (e.g. an embedding head's input size); ``with_paths=False`` skips the path strings
    (returned empty), the slowest column to decode, for callers that ignore them.
    """
    p = require_parquet(path, "embeddings file")
    schema = pq.read_schema(p, memory_map=True)
    required = ("label", "split", "embedding") + (("path",) if with_paths else ())
    for col in required:
        if col not in schema.names:
            raise IAAError(f"embeddings file {p} lacks column {col!r}")
    emb_type = schema.field("embedding").type
    is_list = (
        pa.types.is_fixed_size_list(emb_type)
        or pa.types.is_list(emb_type)
        or pa.types.is_large_list(emb_type)
    )
    if not is_list:
        raise IAAError(f"embeddings file {p}: column 'embedding' is {emb_type}, not a list of floats")
    if emb_type.value_type not in EMBEDDING_VALUE_TYPES:
        raise IAAError(
            f"embeddings file {p}: column 'embedding' holds lists of {emb_type.value_type}, "
            "not of float32 or float64"
        )
    if not pa.types.is_integer(schema.field("label").type):
        raise IAAError(f"embeddings file {p}: column 'label' is {schema.field('label').type}, not integer")
    # memory-mapped: the file's pages are read in place, not copied into a fresh buffer first
    # (a 120 MB SOP-sized file opens in 0.35 s instead of 0.8 s)
    columns = ["label", "split", "embedding"] + (["path"] if with_paths else [])
    table = pq.read_table(p, columns=columns, memory_map=True)
    rows = np.arange(len(table), dtype=np.int64)  # file row numbers of the rows kept
    if splits is not None:
        # filter in Arrow before anything becomes Python objects: SOP-sized files hold
        # 120k path strings, and converting only the rows kept halves the read time
        keep = pc.is_in(table.column("split"), value_set=pa.array(list(splits), pa.string()))
        keep = keep.to_numpy(zero_copy_only=False)
        table = table.filter(pa.array(keep))
        rows = rows[keep.astype(bool)]
        if len(table) == 0:
            raise IAAError(f"embeddings file {p} has no rows with split in {splits}")
    read = _present(table.column("split"))
    where = f"embeddings file {p} ({'split' if len(read) == 1 else 'splits'} {', '.join(map(repr, read))})"
    split_values = table.column("split").to_numpy(zero_copy_only=False).astype(object, copy=False)
    found = _RowsRead(where, rows, split_values)
    embeddings = _checked_embeddings(table.column("embedding").combine_chunks(), found, dim)
    labels = table.column("label")
    if labels.null_count:
        raise found.bad(labels.is_null().to_numpy(), "have no label")
    return EmbeddingTable(
        embeddings=embeddings,
        labels=labels.to_numpy().astype(np.int64, copy=False),
        splits=split_values,
        paths=(
            table.column("path").to_numpy(zero_copy_only=False).astype(object, copy=False)
            if with_paths
            else np.full(len(table), "", dtype=object)
        ),
    )


def _present(column: pa.ChunkedArray) -> list[str]:
    return sorted(str(s) for s in pc.unique(column).to_pylist())


@dataclass(frozen=True)
class _RowsRead:
    where: str  # "embeddings file F (split 'test')"
    rows: np.ndarray  # file row number of each row read
    splits: np.ndarray  # split of each row read

    def bad(self, mask: np.ndarray, what: str) -> IAAError:
        """One line: how many of the rows read are bad, their split(s) and first file rows."""
        idx = np.flatnonzero(mask)
        more = ", ..." if len(idx) > _SHOWN_ROWS else ""
        shown = ", ".join(str(int(r)) for r in self.rows[idx[:_SHOWN_ROWS]]) + more
        splits = [repr(str(s)) for s in np.unique(self.splits[idx].astype(str))]
        label = "split" if len(splits) == 1 else "splits"
        return IAAError(
            f"{self.where}: {len(idx)} of {len(self.rows)} rows {what} "
            f"({label} {', '.join(splits)}; file rows {shown})"
        )


def _checked_embeddings(column: pa.Array, found: _RowsRead, dim: int | None) -> np.ndarray:
    """(N, D) float32 of a list column, refusing null, wrong-length, non-finite and all-zero rows."""
    n = len(column)
    if column.null_count:
        raise found.bad(column.is_null().to_numpy(zero_copy_only=False), "have no embedding")
    if pa.types.is_fixed_size_list(column.type):
        d = column.type.list_size
        if dim is not None and d != dim:
            raise found.bad(np.ones(n, dtype=bool), f"have dimension {d}, expected {dim}")
    else:  # variable-length lists: every row must have the same length
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        d = dim if dim is not None else int(np.bincount(lengths).argmax()) if n else 0
        wrong = lengths != d
        if wrong.any():
            raise found.bad(wrong, f"have a dimension other than {d}")
    if d == 0:
        raise IAAError(f"{found.where}: embeddings have dimension 0")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if not values.flags.writeable:  # a view of Arrow's (immutable, here memory-mapped) buffer
        values = values.copy()
    x = values.reshape(n, d)
    nonfinite = ~np.isfinite(x).all(axis=1)
    if nonfinite.any():
        raise found.bad(nonfinite, "have NaN or infinite values")
    zero = (x == 0).all(axis=1)
    if zero.any():
        raise found.bad(zero, "are all zeros (no direction to normalise)")
    return x
