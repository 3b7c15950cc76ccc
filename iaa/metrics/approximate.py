"""Ranks from an approximate FAISS index (``index="ivf"`` or ``"hnsw"``), and their accuracy.

Approximate search ranks the top ``max(max K, max R)`` neighbours returned by FAISS instead,
and reports ``approx_recall_vs_exact``: on a seeded sample of queries, the fraction of the
exact top-(max K) neighbours that the index returned.
"""

from __future__ import annotations

import faiss
import numpy as np

from iaa.metrics.problem import _Problem, _Ranks
from iaa.search import search


def _approximate_ranks(
    p: _Problem,
    index: faiss.Index,
    depth: int,
    *,
    nprobe: int | None,
    ef_search: int | None,
) -> _Ranks:
    """Ranks from the top-``depth`` lists of an approximate index (``depth``: not found)."""
    num_pos = p.num_positives
    nq, ng = p.query.shape[0], p.gallery.shape[0]
    valid = num_pos > 0
    k = max(1, min(depth, ng - (1 if p.exclude_self else 0)))
    first = np.full(nq, -1, dtype=np.int64)
    ap = np.zeros(nq, dtype=np.float64)
    rp = np.zeros(nq, dtype=np.float64)
    width = min(k, int(num_pos.max()) if nq else 0)
    step = max(1, (1 << 24) // k)
    for s0 in range(0, nq, step):
        rows = np.arange(s0, min(nq, s0 + step))
        _, ids = search(
            index,
            p.query[rows],
            k,
            exclude_ids=rows if p.exclude_self else None,
            nprobe=nprobe,
            ef_search=ef_search,
            normalize=False,
        )
        rel = (ids >= 0) & (p.gallery_class[np.maximum(ids, 0)] == p.query_class[rows, None])
        first[rows] = np.where(rel.any(axis=1), rel.argmax(axis=1), k)
        if width:
            r = num_pos[rows]
            top = rel[:, :width] & (np.arange(width) < r[:, None])
            hits = np.cumsum(top, axis=1)
            denom = np.maximum(r, 1)
            ap[rows] = np.where(top, hits / np.arange(1, width + 1), 0.0).sum(axis=1) / denom
            rp[rows] = top.sum(axis=1) / denom
    first[~valid] = -1
    ap[~valid] = 0.0
    rp[~valid] = 0.0
    return _Ranks(valid, first, ap, rp)


def _approx_recall_vs_exact(
    p: _Problem,
    index: faiss.Index,
    k: int,
    *,
    sample: int,
    seed: int,
    nprobe: int | None,
    ef_search: int | None,
) -> float:
    nq, ng = p.query.shape[0], p.gallery.shape[0]
    k = min(k, ng - (1 if p.exclude_self else 0))
    if nq == 0 or k <= 0:
        return float("nan")
    rows = np.sort(np.random.default_rng(seed).choice(nq, size=min(sample, nq), replace=False))
    exclude = rows if p.exclude_self else None
    exact = faiss.IndexFlatIP(p.gallery.shape[1])
    exact.add(p.gallery)
    _, truth = search(exact, p.query[rows], k, exclude_ids=exclude, normalize=False)
    _, found = search(
        index,
        p.query[rows],
        k,
        exclude_ids=exclude,
        nprobe=nprobe,
        ef_search=ef_search,
        normalize=False,
    )
    hits = sum(np.intersect1d(t[t >= 0], f[f >= 0], assume_unique=True).size for t, f in zip(truth, found))
    return hits / max(1, int((truth >= 0).sum()))
