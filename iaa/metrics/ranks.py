"""Exact ranks of every query's positives, from which Recall@K, MAP@R and RP follow.

Every metric is a function of the 0-based ranks of a query's positives, and the rank of the
m-th positive p_m (positives sorted by score, then index) is ``(m - 1) + c_m``, where ``c_m``
counts the negatives ranked before p_m. Recall@K needs ``c_1 < K``; MAP@R and RP need ``c_m``
only while ``(m - 1) + c_m < R``. So:

1. Scores of all (query, positive) pairs come from small per-class matrix products; they give
   the sorted positives of every query (:func:`_positive_lists`).
2. One blocked pass over the score matrix (:mod:`iaa.metrics.scan`) counts, per query, the
   negatives ranked before each positive while it matters (:mod:`iaa.metrics.counter`).

Galleries of up to ``DENSE_GALLERY_MAX`` items are ranked from full float64 score rows instead
(:func:`_dense_ranks`). Near-ties are ordered exactly either way (:mod:`iaa.metrics.scores`).
``DENSE_GALLERY_MAX`` is read from this module at call time: set it here
(``iaa.metrics.ranks.DENSE_GALLERY_MAX``); the package's copy is for reading only.
"""

from __future__ import annotations

import numpy as np

from iaa.metrics.counter import _NegativeCounter, _sample_lower_bound
from iaa.metrics.problem import _Problem, _Ranks
from iaa.metrics.scan import DEFAULT_BLOCK_SIZE, _scan
from iaa.metrics.scores import _PAIR_BUDGET, _canonical_scores, _tolerance

# Galleries up to this size are ranked from full score rows (_dense_ranks); larger ones by
# the blocked counting pass, whose memory does not grow with the gallery.
DENSE_GALLERY_MAX = 20_000
_MAX_POSITIVE_TABLE = 1 << 26  # (query, positive) slots of the exact pass: 20 bytes each


def _positive_lists(p: _Problem, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's first ``width`` positives in rank order: (float32 scores, gallery ids).

    Padding is score -inf and id G, which no comparison ever ranks before a real item.
    Positives whose float32 scores are within the tolerance of a neighbour in the list are
    ordered by their canonical scores (then gallery index) instead.
    """
    nq, ng = p.query.shape[0], p.gallery.shape[0]
    pos_scores = np.full((nq, width), -np.inf, dtype=np.float32)
    pos_ids = np.full((nq, width), ng, dtype=np.int64)
    c = p.num_classes
    tol = _tolerance(p.query.shape[1])
    q_order = np.argsort(p.query_class, kind="stable")
    g_order = np.argsort(p.gallery_class, kind="stable")  # ascending ids within a class
    q_count = np.bincount(p.query_class, minlength=c)
    g_count = np.bincount(p.gallery_class, minlength=c)
    q_first = np.cumsum(q_count) - q_count
    g_first = np.cumsum(g_count) - g_count
    self_ = 1 if p.exclude_self else 0
    usable = np.flatnonzero((q_count > 0) & (g_count > self_))
    # Classes with the same (queries, gallery items) shape are scored in one batched product.
    shape_key = q_count[usable] * (ng + 1) + g_count[usable]
    order = np.argsort(shape_key, kind="stable")
    usable, shape_key = usable[order], shape_key[order]
    groups = np.split(usable, np.flatnonzero(np.diff(shape_key)) + 1) if usable.size else []
    dim = p.query.shape[1]
    for group in groups:
        m, n = int(q_count[group[0]]), int(g_count[group[0]])
        keep = min(width, n - self_)
        look = min(keep + 1, n - self_)  # the kept places and the first one after them
        per_batch = max(1, min(_PAIR_BUDGET // (m * n), 8 * _PAIR_BUDGET // ((m + n) * dim)))
        row_step = m if m * n <= _PAIR_BUDGET else max(1, _PAIR_BUDGET // n)
        for b0 in range(0, group.size, per_batch):
            cls = group[b0 : b0 + per_batch]
            q_idx = q_order[q_first[cls][:, None] + np.arange(m)]  # (B, m)
            g_idx = g_order[g_first[cls][:, None] + np.arange(n)]  # (B, n)
            g_vec_t = p.gallery[g_idx].transpose(0, 2, 1)  # (B, D, n)
            for r0 in range(0, m, row_step):
                r1 = min(m, r0 + row_step)
                rows = q_idx[:, r0:r1]
                scores = np.matmul(p.query[rows], g_vec_t)  # (B, r, n)
                if p.exclude_self:  # same class order on both sides: item r is column r
                    local = np.arange(r0, r1)
                    scores[:, local - r0, local] = -np.inf
                rank = np.argsort(-scores, axis=2, kind="stable")
                ids = np.broadcast_to(g_idx[:, None, :], scores.shape)
                if look > 1:
                    top = np.take_along_axis(scores, rank[:, :, :look], axis=2)
                    close = ((top[:, :, :-1].astype(np.float64) - top[:, :, 1:]) <= tol).any(axis=2)
                    if close.any():
                        bi, ri = np.nonzero(close)
                        qq = np.repeat(rows[bi, ri], n)
                        gg = g_idx[bi].reshape(-1)
                        canon = _canonical_scores(p, qq, gg).reshape(bi.size, n)
                        canon[~np.isfinite(scores[bi, ri])] = -np.inf  # the query itself
                        rank[bi, ri] = np.lexsort((g_idx[bi], -canon), axis=1)
                rank = rank[:, :, :keep]
                pos_scores[rows, :keep] = np.take_along_axis(scores, rank, axis=2)
                pos_ids[rows, :keep] = np.take_along_axis(ids, rank, axis=2)
    return pos_scores, pos_ids


def _exact_ranks(
    p: _Problem,
    *,
    recall_cap: int | None,
    need_map: bool,
    block_size: int = DEFAULT_BLOCK_SIZE,
    symmetric: bool | None = None,
    overlap: bool = True,
) -> _Ranks:
    if p.gallery.shape[0] <= DENSE_GALLERY_MAX:
        return _dense_ranks(p, recall_cap=recall_cap, need_map=need_map)
    num_pos = p.num_positives
    valid = num_pos > 0
    nq = num_pos.size
    first = np.full(nq, -1, dtype=np.int64)
    ap = np.zeros(nq, dtype=np.float64)
    rp = np.zeros(nq, dtype=np.float64)
    if not valid.any():
        return _Ranks(valid, first, ap, rp)
    width = int(num_pos.max()) if need_map else 1
    if nq * (width + 1) > _MAX_POSITIVE_TABLE:
        raise ValueError(
            f"MAP@R needs the positives of every query: {nq} queries x up to {width} positives "
            f"is too many; evaluate Recall@K only, or with an approximate index"
        )
    pos_scores, pos_ids = _positive_lists(p, width)
    lower = _sample_lower_bound(p, pos_scores) if need_map else np.zeros((nq, width), dtype=np.int32)
    counter = _NegativeCounter(
        p, pos_scores, pos_ids, recall_cap=recall_cap, need_map=need_map, lower_bound=lower
    )
    _scan(p, counter, block_size, p.exclude_self if symmetric is None else symmetric, overlap)
    c = counter.counts(0, nq)
    first[valid] = c[valid, 0]
    if recall_cap is not None:
        np.minimum(first, recall_cap, out=first)
    if need_map:
        m = np.arange(width)
        rank = m + c  # 0-based rank of each positive
        relevant = rank < num_pos[:, None]
        denom = np.maximum(num_pos, 1)
        ap = np.where(relevant, (m + 1) / (rank + 1), 0.0).sum(axis=1) / denom
        rp = relevant.sum(axis=1) / denom
        ap[~valid] = 0.0
        rp[~valid] = 0.0
    return _Ranks(valid, first, ap, rp)


def _dense_ranks(p: _Problem, *, recall_cap: int | None, need_map: bool) -> _Ranks:
    """Exact ranks from full float64 score rows, for galleries up to ``DENSE_GALLERY_MAX``.

    Each block of query rows is scored against the whole gallery in float64 and sorted
    (stable, so equal scores keep gallery order). Adjacent scores closer than the float64
    error bound are recomputed with ``_canonical_scores`` and the row re-sorted, so exact
    ties rank by gallery index. Unlike the blocked pass, its cost does not depend on how
    the embeddings are spread: a collapsed model is evaluated as fast as a good one.
    """
    nq, ng = p.query.shape[0], p.gallery.shape[0]
    num_pos = p.num_positives
    valid = num_pos > 0
    first = np.full(nq, -1, dtype=np.int64)
    ap = np.zeros(nq, dtype=np.float64)
    rp = np.zeros(nq, dtype=np.float64)
    if not valid.any():
        return _Ranks(valid, first, ap, rp)
    gallery64 = p.gallery.astype(np.float64)
    tol = 4.0 * p.query.shape[1] * 2.0**-52
    rows_per_block = max(1, _PAIR_BUDGET // max(ng, 1))
    for r0 in range(0, nq, rows_per_block):
        rows = np.arange(r0, min(nq, r0 + rows_per_block))
        scores = p.query[rows].astype(np.float64) @ gallery64.T
        if p.exclude_self:
            scores[np.arange(rows.size), rows] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        ranked = np.take_along_axis(scores, order, axis=1)
        near = (ranked[:, :-1] - ranked[:, 1:]) <= tol
        near &= np.isfinite(ranked[:, 1:])
        for b in np.flatnonzero(near.any(axis=1)):  # rows with ties only: few on real data
            tie = np.zeros(ng, dtype=bool)
            tie[:-1] |= near[b]
            tie[1:] |= near[b]
            cols = order[b, tie]
            scores[b, cols] = _canonical_scores(p, np.full(cols.size, rows[b]), cols)
            order[b] = np.lexsort((np.arange(ng), -scores[b]))
        relevant = p.gallery_class[order] == p.query_class[rows, None]
        if p.exclude_self:
            relevant &= order != rows[:, None]
        has = relevant.any(axis=1)
        first[rows[has]] = relevant[has].argmax(axis=1)
        if need_map:
            r = num_pos[rows]
            width = int(r.max()) if r.size else 0
            rel = relevant[:, :width]
            within = np.arange(width)[None, :] < r[:, None]
            hits = np.cumsum(rel, axis=1)
            precision = hits / np.arange(1, width + 1)[None, :]
            denom = np.maximum(r, 1)
            ap[rows] = np.where(rel & within, precision, 0.0).sum(axis=1) / denom
            rp[rows] = (rel & within).sum(axis=1) / denom
    first[~valid] = -1
    ap[~valid] = 0.0
    rp[~valid] = 0.0
    if recall_cap is not None:
        np.minimum(first, recall_cap, out=first)
    return _Ranks(valid, first, ap, rp)
