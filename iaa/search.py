"""Searching FAISS indexes (built by :mod:`iaa.index`): the k nearest neighbours of queries.

Scores are inner products of L2-normalised embeddings (cosine similarity); queries are
normalised copies. Neighbours come back ordered by decreasing score, equal scores by
increasing index id (the row position in the indexed split), so results never depend on
FAISS's internal tie order. For a flat (exact) index the tie rule also holds at the k-th
place: when ties reach the end of what FAISS returned, the search is repeated with a larger
k for those queries until every tied candidate has been seen.

Stage function: :func:`search_stage` writes the k nearest neighbours of every query as a
Parquet table.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iaa.atomic import atomic_path
from iaa.errors import IAAError
from iaa.index import (
    faiss_threads,
    ids_path,
    index_kind,
    l2_normalize,
    read_index,
    read_index_ids,
    read_split,
)
from iaa.io import embedding_splits

NEIGHBOUR_COLUMNS = (
    "query_path",
    "query_label",
    "rank",
    "neighbour_id",
    "score",
    "neighbour_path",
    "neighbour_label",
)

# Extra neighbours fetched from an exact index so that ties at the k-th place can be resolved
# by gallery order without a second search in the common case.
_TIE_MARGIN = 8


@contextlib.contextmanager
def _search_parameters(
    index: faiss.Index, k: int, nprobe: int | None, ef_search: int | None
) -> Iterator[None]:
    """Temporarily set nprobe (IVF) or efSearch (HNSW, at least ``k``) on ``index``."""
    concrete = faiss.downcast_index(index)
    saved: list[tuple[object, str, int]] = []
    if isinstance(concrete, faiss.IndexIVF) and nprobe is not None:
        saved.append((concrete, "nprobe", concrete.nprobe))
        concrete.nprobe = int(nprobe)
    if isinstance(concrete, faiss.IndexHNSW):
        ef = concrete.hnsw.efSearch if ef_search is None else int(ef_search)
        saved.append((concrete.hnsw, "efSearch", concrete.hnsw.efSearch))
        concrete.hnsw.efSearch = max(ef, k)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _order_candidates(
    scores: np.ndarray, ids: np.ndarray, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Drop invalid and excluded ids, then sort each row by (-score, id)."""
    ids = ids.astype(np.int64, copy=True)
    scores = scores.astype(np.float32, copy=True)
    bad = ids < 0
    if exclude is not None:
        bad |= ids == exclude[:, None]
    ids[bad] = -1
    scores[bad] = -np.inf
    key_ids = np.where(bad, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_ids, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    exclude_ids: np.ndarray | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    batch_size: int = 4096,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest index items of each query: ``(scores, ids)``, both shaped (Q, k).

    Rows are sorted by decreasing score, equal scores by increasing id. ``exclude_ids[i]``
    (if given; -1 for none) is never returned for query ``i``: pass ``arange(Q)`` to search a
    set against itself without the query itself. Missing entries (fewer than ``k`` items) have
    id -1 and score -inf. ``nprobe``/``ef_search`` override the values stored in the index.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    x = l2_normalize(queries) if normalize else np.ascontiguousarray(queries, np.float32)
    nq = x.shape[0]
    if exclude_ids is not None:
        exclude_ids = np.asarray(exclude_ids, dtype=np.int64)
        if exclude_ids.shape != (nq,):
            raise ValueError("exclude_ids must hold one id per query")
    ntotal = int(index.ntotal)
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    if ntotal == 0 or nq == 0:
        return out_scores, out_ids
    exact = index_kind(index) == "flat"
    extra = 0 if exclude_ids is None else 1
    first_k = min(ntotal, k + extra + (_TIE_MARGIN if exact else 0))
    work = float(nq) * ntotal * x.shape[1]
    with _search_parameters(index, first_k, nprobe, ef_search), faiss_threads(work):
        for start in range(0, nq, batch_size):
            rows = np.arange(start, min(start + batch_size, nq))
            kk = first_k
            while rows.size:
                scores, ids = index.search(x[rows], kk)
                excl = None if exclude_ids is None else exclude_ids[rows]
                s, i = _order_candidates(scores, ids, excl)
                width = min(k, s.shape[1])
                out_scores[rows, :width] = s[:, :width]
                out_ids[rows, :width] = i[:, :width]
                if not exact or kk >= ntotal:
                    break
                # An item that FAISS did not return scores at most the last returned score; if
                # that equals the k-th kept score, an unseen tie with a lower id may exist.
                last = scores[:, -1]
                kth = s[:, width - 1]
                unresolved = np.isfinite(last) & (kth == last) & (ids[:, -1] >= 0)
                rows = rows[unresolved]
                kk = min(ntotal, 2 * kk)
    return out_scores, out_ids


def _query_split(present: list[str], indexed: pd.DataFrame | None, path: str | os.PathLike[str]) -> str:
    if "query" in present:
        return "query"
    if len(present) == 1:
        return present[0]
    if indexed is not None:
        indexed_splits = sorted(set(indexed["split"]))
        if len(indexed_splits) == 1 and indexed_splits[0] in present:
            return indexed_splits[0]
    raise IAAError(
        f"cannot tell which split of {path} holds the queries (splits present: "
        f"{', '.join(present)}); pass split="
    )


def search_stage(
    index_path: str | os.PathLike[str],
    query_embeddings_path: str | os.PathLike[str],
    k: int,
    out_path: str | os.PathLike[str],
    split: str | None = None,
    *,
    exclude_self: bool | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> pd.DataFrame:
    """Write the ``k`` nearest indexed rows of every query row as a Parquet table; return it.

    Queries are the rows of ``split`` (default: ``query`` if present, else the only split, else
    the split that was indexed). Columns: query_path, query_label, rank (1 = nearest),
    neighbour_id (row of the indexed split), score, and neighbour_path / neighbour_label when
    the index has its sidecar. ``exclude_self`` (default: whether the queries are exactly the
    indexed rows, which needs the sidecar) drops query ``i`` from its own neighbours by id.
    """
    if k < 1:
        raise IAAError(f"k must be at least 1, got {k}")
    index = read_index(index_path)
    indexed = read_index_ids(index_path)
    if indexed is not None and len(indexed) != index.ntotal:
        raise IAAError(
            f"sidecar {ids_path(index_path)} has {len(indexed)} rows, index {index_path} has {index.ntotal}"
        )
    present = embedding_splits(query_embeddings_path)
    chosen = split if split is not None else _query_split(present, indexed, query_embeddings_path)
    queries = read_split(query_embeddings_path, chosen, present)
    if queries.dim != index.d:
        raise IAAError(
            f"queries in {query_embeddings_path} have dimension {queries.dim}, index {index_path} "
            f"has {index.d}"
        )
    same_rows = indexed is not None and np.array_equal(
        indexed["path"].to_numpy(dtype=object), queries.paths.astype(object)
    )
    if exclude_self is None:
        exclude_self = same_rows
    elif exclude_self and len(queries) != index.ntotal:
        raise IAAError("exclude_self needs the queries to be exactly the indexed rows")
    exclude = np.arange(len(queries), dtype=np.int64) if exclude_self else None
    scores, ids = search(
        index, queries.embeddings, k, exclude_ids=exclude, nprobe=nprobe, ef_search=ef_search
    )
    valid = ids >= 0
    q_rows, ranks = np.nonzero(valid)
    neighbour = ids[valid]
    frame = pd.DataFrame(
        {
            "query_path": queries.paths[q_rows].astype(str),
            "query_label": queries.labels[q_rows].astype(np.int64),
            "rank": (ranks + 1).astype(np.int64),
            "neighbour_id": neighbour.astype(np.int64),
            "score": scores[valid].astype(np.float32),
        }
    )
    if indexed is not None:
        frame["neighbour_path"] = indexed["path"].to_numpy(dtype=object)[neighbour].astype(str)
        frame["neighbour_label"] = indexed["label"].to_numpy(dtype=np.int64)[neighbour]
    with atomic_path(out_path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    return frame
