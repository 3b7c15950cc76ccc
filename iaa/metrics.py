"""Retrieval and clustering metrics for deep metric learning: Recall@K, MAP@R, R-precision, NMI.

Conventions (all functions):

* Embeddings are L2-normalised copies, so the score of a pair is its cosine similarity
  (inner product). A query's *positives* are the gallery items of its class, its
  *negatives* all other gallery items.
* The gallery is ranked by decreasing score; equal scores rank by increasing gallery index.
* ``exclude_self=True`` is the all-vs-all protocol: query ``i`` *is* gallery item ``i`` and is
  never its own neighbour (excluded by index, not by distance, so an exact duplicate elsewhere
  in the gallery still counts). Otherwise (query/gallery protocol) nothing is excluded.
* A query with R = 0 positives (a singleton class in all-vs-all) is left out of every retrieval
  metric and counted in ``num_queries_without_match``.
* Recall@K: fraction of queries whose first positive ranks within the top K. MAP@R (Musgrave et
  al. 2020): ``(1/R) sum_{i<=R} P(i) rel(i)``. RP: fraction of the top R that are positives.

Exact algorithm. Every metric is a function of the 0-based ranks of a query's positives, and
the rank of the m-th positive p_m (positives sorted by score, then index) is ``(m - 1) + c_m``,
where ``c_m`` counts the negatives ranked before p_m. Recall@K needs ``c_1 < K``; MAP@R and RP
need ``c_m`` only while ``(m - 1) + c_m < R``. So:

1. Scores of all (query, positive) pairs come from small per-class matrix products; they give
   the sorted positives of every query.
2. One blocked pass over the score matrix (float32 matmul of 4096 x 4096 query and gallery
   blocks, 64 MB each) keeps, per query, a threshold ``tau`` just below the score of its
   lowest positive that still matters. Block entries ``>= tau`` are taken out with one
   comparison and ``flatnonzero``; for each such negative, the number of the query's
   positives ranked before it updates a small per-query histogram, and ``tau`` rises as
   positives stop mattering (rank >= R for MAP@R, first-positive rank >= max K for Recall@K).
   Queries with nothing left to count are skipped, and so are blocks with none of them; a
   fixed sample of 256 gallery items bounds the counts from below beforehand, so the
   positives of badly ranked queries (untrained embeddings) are dropped from the start.
3. In all-vs-all the score matrix is symmetric: each block above the diagonal serves both its
   rows and (transposed) its columns, so only half the products are computed. A worker
   thread compares and counts one block while BLAS computes the next.

Exactness. Float32 scores decide the order of two items only when they differ by more than
a rigorous bound on float32 rounding (``2.02 * D * 2**-24`` for unit vectors of dimension D).
Closer pairs, exact duplicates included, are re-scored in float64 from exactly computed
products summed in sorted order, so identical vectors tie exactly and the tie goes to the
lower gallery index. The result is the ranking by exact (float64) dot product of the
normalised float32 embeddings, ties by gallery index, whatever BLAS does.

Screening in bfloat16. Where the CPU multiplies bfloat16 much faster than float32 (``SCREEN``),
step 2 multiplies blocks in bfloat16 and keeps every entry within a rigorous bound of the
threshold (``_bf16_margin``: 3 units of bfloat16 rounding plus float32's bound); only those
pairs, about one in a thousand on SOP-like data, are re-scored in float32 and counted as
above. A block with too many of them is multiplied again in float32 instead.

Approximate search (``index="ivf"`` or ``"hnsw"``) ranks the top ``max(max K, max R)``
neighbours returned by FAISS instead, and reports ``approx_recall_vs_exact``: on a seeded
sample of queries, the fraction of the exact top-(max K) neighbours that the index returned.

NMI clusters the evaluated embeddings with FAISS k-means (k = number of classes) and compares
cluster ids with labels: mutual information over the arithmetic mean of the two entropies,
as scikit-learn's default, computed here from the contingency table.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np

from iaa.index import INDEX_KINDS, build_index, faiss_threads, l2_normalize, search

DEFAULT_BLOCK_SIZE = 4096
# Galleries up to this size are ranked from full score rows (_dense_ranks); larger ones by
# the blocked counting pass, whose memory does not grow with the gallery.
DENSE_GALLERY_MAX = 20_000
DEFAULT_KMEANS_NITER = 25  # faiss.Kmeans default, as used by pytorch-metric-learning
_PAIR_BUDGET = 1 << 22  # entries per temporary array in the sparse and per-class steps
_SAMPLE_SIZE = 256  # gallery items used to bound counts from below before the blocked pass
_SAMPLE_MARGIN = 1e-4  # at least; see _sample_lower_bound
_MAX_POSITIVE_TABLE = 1 << 26  # (query, positive) slots of the exact pass: 20 bytes each


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RecallAtK:
    recall: dict[int, float]  # K -> Recall@K over queries with at least one positive
    num_queries: int  # all queries
    num_queries_without_match: int  # queries with no positive, left out of ``recall``


@dataclass(frozen=True)
class MapAtR:
    map_at_r: float
    r_precision: float
    num_queries: int
    num_queries_without_match: int


@dataclass(frozen=True)
class _Problem:
    query: np.ndarray  # (Q, D) float32, unit rows
    gallery: np.ndarray  # (G, D) float32, unit rows; the same array as query with exclude_self
    query_class: np.ndarray  # (Q,) int64 class ids, dense and shared with gallery_class
    gallery_class: np.ndarray  # (G,)
    num_classes: int  # distinct labels over query and gallery
    num_positives: np.ndarray  # (Q,) R: gallery items of the query's class, itself excluded
    exclude_self: bool


@dataclass(frozen=True)
class _Ranks:
    valid: np.ndarray  # (Q,) bool: R > 0
    first: np.ndarray  # (Q,) int64: 0-based rank of the first positive (capped); -1 if not valid
    average_precision: np.ndarray  # (Q,) float64 per-query MAP@R (0 where not valid)
    r_precision: np.ndarray  # (Q,) float64


def _labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _prepare(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    exclude_self: bool,
) -> _Problem:
    q = l2_normalize(query)
    ql = _labels(query_labels, q.shape[0], "query_labels")
    if exclude_self:
        same = np.shape(gallery) == q.shape and np.array_equal(np.asarray(gallery_labels), ql)
        if not same:
            raise ValueError("with exclude_self=True the gallery must be the query set itself")
        g, gl = q, ql
    else:
        g = l2_normalize(gallery)
        gl = _labels(gallery_labels, g.shape[0], "gallery_labels")
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"query dimension {q.shape[1]} differs from gallery dimension {g.shape[1]}")
    classes = np.unique(np.concatenate([ql, gl]))
    qc = np.searchsorted(classes, ql).astype(np.int64)
    gc = qc if exclude_self else np.searchsorted(classes, gl).astype(np.int64)
    per_class = np.bincount(gc, minlength=classes.size)
    num_pos = per_class[qc] - (1 if exclude_self else 0)
    return _Problem(q, g, qc, gc, int(classes.size), num_pos.astype(np.int64), exclude_self)


# --------------------------------------------------------------------------- exact ranks


def _tolerance(dim: int) -> float:
    """Bound on |a - b| where a, b are two computations of the same score of unit vectors.

    Any float32 summation order of ``dim`` products of unit vectors errs by at most
    ``dim * 2**-24`` (times the norms, which are at most 1 up to rounding); two such results
    differ by at most twice that. The slack covers the norms and the float64 re-scoring.
    """
    return 2.0 * 1.01 * dim * 2.0**-24 + 1e-12


def _canonical_scores(p: _Problem, q_ids: np.ndarray, g_ids: np.ndarray) -> np.ndarray:
    """Scores of pairs recomputed in float64, identical for identical vectors.

    Products of two float32 values are exact in float64, and ``einsum`` sums them in a fixed
    order for a given dimension, so the result is a function of the two vectors alone and
    exact duplicates tie exactly. Used only for pairs whose float32 scores are too close to
    order safely (all of them when a collapsed model maps everything to one point, hence
    no per-pair sort here: that made such embeddings take minutes).
    """
    return _pair_scores(p.query, p.gallery, q_ids, g_ids, np.float64)


def _pair_scores(
    query: np.ndarray, gallery: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, dtype: type
) -> np.ndarray:
    """Scores of (query, gallery) pairs computed in ``dtype``, in chunks of bounded memory."""
    out = np.empty(q_ids.size, dtype=dtype)
    step = max(1, _PAIR_BUDGET // max(1, query.shape[1]))
    for s0 in range(0, q_ids.size, step):
        s1 = min(q_ids.size, s0 + step)
        a = query[q_ids[s0:s1]].astype(dtype, copy=False)
        b = gallery[g_ids[s0:s1]].astype(dtype, copy=False)
        out[s0:s1] = np.einsum("ij,ij->i", a, b)
    return out


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


def _sample_lower_bound(p: _Problem, pos_scores: np.ndarray) -> np.ndarray:
    """Lower bounds on the counts c[q, m] (negatives ranked before positive m), shape (Q, W).

    Counts the negatives among a fixed sample of the gallery that beat positive m by a margin
    far above rounding. This lets the blocked pass skip, from the start, positives ranked too
    far down to matter, typical of untrained embeddings.
    """
    nq, ng = p.query.shape[0], p.gallery.shape[0]
    width = pos_scores.shape[1]
    direct = min(width, 64)  # bounds for later positives reuse the 64th: c is nondecreasing
    margin = max(_SAMPLE_MARGIN, 2 * _tolerance(p.query.shape[1]))
    sample = np.unique(np.linspace(0, ng - 1, num=min(ng, _SAMPLE_SIZE)).round().astype(np.int64))
    g_sample = p.gallery[sample]
    g_class = p.gallery_class[sample]
    bound = np.zeros((nq, width), dtype=np.int32)
    step = max(1, _PAIR_BUDGET // (sample.size * direct))
    for s0 in range(0, nq, step):
        s1 = min(nq, s0 + step)
        scores = (p.query[s0:s1] @ g_sample.T).astype(np.float64)
        scores[g_class[None, :] == p.query_class[s0:s1, None]] = -np.inf  # positives, self
        thresholds = pos_scores[s0:s1, :direct].astype(np.float64) + margin
        bound[s0:s1, :direct] = (scores[:, None, :] > thresholds[:, :, None]).sum(axis=2)
    if direct < width:
        bound[:, direct:] = bound[:, direct - 1 : direct]
    return bound


class _NegativeCounter:
    """Per query: how many negatives rank before each of its positives, while that matters."""

    def __init__(
        self,
        p: _Problem,
        pos_scores: np.ndarray,
        pos_ids: np.ndarray,
        *,
        recall_cap: int | None,
        need_map: bool,
        lower_bound: np.ndarray,  # (Q, W): lower bounds on the counts
    ) -> None:
        self.p = p
        self.pos_scores = pos_scores
        self.pos_ids = pos_ids
        self.recall_cap = recall_cap
        self.need_map = need_map
        self.lower_bound = lower_bound
        self.tol = _tolerance(p.query.shape[1])
        nq, self.width = pos_scores.shape
        # hist[q, m]: negatives with exactly m of q's positives ranked before them.
        self.hist = np.zeros((nq, self.width + 1), dtype=np.int32)
        # tau[q]: block scores below it cannot rank before a positive that still matters
        # (+inf: nothing left to count for q).
        self.tau = np.full(nq, np.inf, dtype=np.float32)
        self.alive = np.zeros(nq, dtype=np.int64)  # leading positives still counted
        self.refresh(0, nq)

    def counts(self, lo: int, hi: int) -> np.ndarray:
        """c[q, m]: negatives ranked before positive m (exact while it matters, else a bound)."""
        c = np.cumsum(self.hist[lo:hi, : self.width], axis=1)
        return np.maximum(c, self.lower_bound[lo:hi], out=c)

    def refresh(self, lo: int, hi: int) -> None:
        num_pos = self.p.num_positives[lo:hi]
        c = self.counts(lo, hi)
        if self.need_map:  # (m + c_m) strictly increases with m, so the live ones are a prefix
            alive = ((np.arange(self.width) + c) < num_pos[:, None]).sum(axis=1)
        else:
            alive = np.zeros(hi - lo, dtype=np.int64)
        recall_live = num_pos > 0
        if self.recall_cap is not None:
            recall_live &= c[:, 0] < self.recall_cap
        alive = np.where(alive > 0, alive, recall_live.astype(np.int64))
        alive[num_pos <= 0] = 0
        tau = np.full(hi - lo, np.inf, dtype=np.float32)
        live = np.flatnonzero(alive)
        # Listed positives are in canonical order, so their float32 scores may rise by up to
        # one tolerance along the list; a negative that ranks before a live one scores at
        # least (last live score - 2 tolerances) in float32.
        last = self.pos_scores[lo + live, alive[live] - 1].astype(np.float64)
        tau[live] = last - 2 * self.tol
        self.tau[lo:hi] = tau
        self.alive[lo:hi] = alive

    def _before(self, qi: np.ndarray, gj: np.ndarray, v: np.ndarray, width: int) -> np.ndarray:
        """Number of the first ``width`` positives of query qi ranked before negative gj."""
        ps = self.pos_scores[qi, :width].astype(np.float64)
        pi = self.pos_ids[qi, :width]
        diff = ps - v[:, None].astype(np.float64)
        before = diff > self.tol
        close = np.abs(diff) <= self.tol
        if close.any():
            r, m = np.nonzero(close)
            neg = _canonical_scores(self.p, qi[r], gj[r])
            pos = _canonical_scores(self.p, qi[r], pi[r, m])
            before[r, m] = (pos > neg) | ((pos == neg) & (pi[r, m] < gj[r]))
        return before.sum(axis=1)

    def add(self, q_ids: np.ndarray, g_ids: np.ndarray, scores: np.ndarray, lo: int, hi: int) -> None:
        """Count candidate pairs (all with query ids in [lo, hi)); positives are ignored."""
        negative = self.p.gallery_class[g_ids] != self.p.query_class[q_ids]
        if not negative.all():
            q_ids, g_ids, scores = q_ids[negative], g_ids[negative], scores[negative]
        if q_ids.size == 0:
            return
        # Only the live leading positives matter; a negative ranked after all of them lands in
        # bin ``wmax``, which over-counts positives that no longer matter and never others.
        wmax = int(self.alive[q_ids].max())
        if wmax == 0:
            return
        bins = self.width + 1
        total = np.zeros((hi - lo) * bins, dtype=np.int64)
        step = max(1, _PAIR_BUDGET // wmax)
        for s0 in range(0, q_ids.size, step):
            qi, gj, v = q_ids[s0 : s0 + step], g_ids[s0 : s0 + step], scores[s0 : s0 + step]
            before = self._before(qi, gj, v, wmax)
            total += np.bincount((qi - lo) * bins + before, minlength=total.size)
        self.hist[lo:hi] += total.reshape(hi - lo, bins)
        self.refresh(lo, hi)


def _block_plan(
    nq: int, ng: int, block: int, symmetric: bool, tau: np.ndarray
) -> Iterator[tuple[int, int, int, int, bool, bool]]:
    """Blocks (i0, i1, j0, j1, rows_live, cols_live) still worth computing, in scan order.

    Symmetric: query set == gallery, pair (i, j) is seen in block (I, J) with I <= J, rows of
    the block as queries and (for I < J) its columns too. Liveness only ever goes from true
    to false, so reading ``tau`` while it is being updated can only keep a block, never lose
    one that is needed.
    """

    def live(lo: int, hi: int) -> bool:
        return bool(np.isfinite(tau[lo:hi]).any())

    for i0 in range(0, nq, block):
        i1 = min(nq, i0 + block)
        for j0 in range(i0 if symmetric else 0, ng, block):
            j1 = min(ng, j0 + block)
            rows_live = live(i0, i1)
            cols_live = symmetric and j0 != i0 and live(j0, j1)
            if rows_live or cols_live:
                yield i0, i1, j0, j1, rows_live, cols_live
            elif not symmetric:
                break


def _bf16_margin(dim: int) -> float:
    """Bound on |bfloat16-screened score - float32 score| for unit vectors of dimension ``dim``.

    Rounding both inputs to bfloat16 (unit roundoff u = 2**-9) moves each product by at most
    (2u + u^2) of its size, and the products' sizes sum to at most 1 (Cauchy-Schwarz); the
    float32 accumulation adds at most ``dim * 2**-24``, rounding the result to bfloat16 at most
    u, and the float32 score it is compared with errs by ``dim * 2**-24`` itself.
    """
    u = 2.0**-9
    return 1.02 * (2 * u + u * u + u + 2 * dim * 2.0**-24) + 1e-6


# Screen the blocked pass's scores in bfloat16 where this CPU multiplies it clearly faster
# than float32 (AVX512-BF16 or AMX: 3-4x on the reference machine): every pair within
# _bf16_margin of a query's threshold is then re-scored in float32, so results stay exact.
# "auto" decides with a short timing on first use; "bfloat16"/"float32" force a path.
SCREEN = "auto"
_BF16_FALLBACK_SHARE = 256  # more than 1/256 of a block's pairs to re-score: use float32 there


@functools.cache
def _bf16_is_faster() -> bool:
    import torch

    a, b = torch.randn(1024, 512), torch.randn(2048, 512)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y.T
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            x @ y.T
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(a.bfloat16(), b.bfloat16()) * 1.5 < best(a, b)


def _use_bf16() -> bool:
    if SCREEN not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"metrics.SCREEN must be auto, bfloat16 or float32, not {SCREEN!r}")
    return SCREEN == "bfloat16" or (SCREEN == "auto" and _bf16_is_faster())


def _float32_scores(
    query: np.ndarray, gallery: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray
) -> np.ndarray:
    """Float32 scores of (query, gallery) pairs; any summation order is within _tolerance."""
    return _pair_scores(query, gallery, q_ids, g_ids, np.float32)


def _bf16_keys(thresholds: np.ndarray) -> np.ndarray:
    """int16 keys k with: bfloat16 score s >= threshold t  implies  bits(s) >= k, for t >= 0.

    Non-negative floats order like their bit patterns, and a bfloat16 is the upper half of a
    float32's bits: the truncated threshold is at most t, so nothing at or above t is lost.
    """
    t = np.ascontiguousarray(thresholds, dtype=np.float32)
    return (t.view(np.int32) >> 16).astype(np.int16)


def _scan(p: _Problem, counter: _NegativeCounter, block: int, symmetric: bool, overlap: bool = True) -> None:
    """The blocked pass over the query x gallery score matrix (see the module docstring).

    With ``overlap``, a worker thread compares and counts one block while the main thread
    (and BLAS) computes the next one, into the other of two score buffers. Where bfloat16 is
    faster (``SCREEN``), blocks are multiplied in bfloat16 and only the pairs that may reach a
    query's threshold are re-scored in float32 (a block with too many falls back to float32).
    """
    q, g = p.query, p.gallery
    gallery = q if symmetric else g
    nq, ng = q.shape[0], g.shape[0]
    block = max(1, int(block))
    bf16 = _use_bf16()
    slots = 2 if overlap else 1
    # float32 score buffers: for every block, or (bfloat16 screening) made on a first fallback
    buffers: list[np.ndarray | None] = [
        None if bf16 else np.empty(block * block, np.float32) for _ in range(slots)
    ]
    mask_buf = np.empty(block * block, dtype=np.bool_)
    tau = counter.tau
    if bf16:
        import torch

        q_bf16 = torch.from_numpy(q).to(torch.bfloat16)
        g_bf16 = q_bf16 if symmetric else torch.from_numpy(g).to(torch.bfloat16)
        margin = _bf16_margin(q.shape[1])

    def side(scores: np.ndarray, q_lo: int, g_lo: int, transposed: bool) -> None:
        # transposed: rows of ``scores`` are gallery items, columns are queries.
        rows, cols = scores.shape
        mask = mask_buf[: scores.size].reshape(rows, cols)
        if transposed:
            n_q = cols
            np.greater_equal(scores, tau[q_lo : q_lo + cols][None, :], out=mask)
        else:
            n_q = rows
            np.greater_equal(scores, tau[q_lo : q_lo + rows][:, None], out=mask)
        hot = np.flatnonzero(mask)
        flat_scores = scores.reshape(-1)
        for h0 in range(0, hot.size, _PAIR_BUDGET):
            part = hot[h0 : h0 + _PAIR_BUDGET]
            r, c = np.divmod(part, cols)
            q_ids, g_ids = (c + q_lo, r + g_lo) if transposed else (r + q_lo, c + g_lo)
            counter.add(q_ids, g_ids, flat_scores[part], q_lo, q_lo + n_q)

    def side_bf16(bits: np.ndarray, scores_bf16, q_lo: int, g_lo: int, transposed: bool) -> bool:
        """``side`` on bfloat16 scores (``bits``: their int16 view); False if too many pairs."""
        rows, cols = bits.shape
        n_q = cols if transposed else rows
        thresholds = tau[q_lo : q_lo + n_q].astype(np.float64) - margin
        mask = mask_buf[: bits.size].reshape(rows, cols)
        keys = _bf16_keys(np.maximum(thresholds, 0.0))
        np.greater_equal(bits, keys[None, :] if transposed else keys[:, None], out=mask)
        negative = np.flatnonzero(thresholds < 0)  # rare: compare those in float32
        if negative.size:
            if transposed:
                sub = scores_bf16[:, negative].float().numpy()
                mask[:, negative] = sub >= thresholds[negative][None, :]
            else:
                sub = scores_bf16[negative].float().numpy()
                mask[negative] = sub >= thresholds[negative][:, None]
        hot = np.flatnonzero(mask)
        if hot.size * _BF16_FALLBACK_SHARE > bits.size:
            return False
        r, c = np.divmod(hot, cols)
        q_ids, g_ids = (c + q_lo, r + g_lo) if transposed else (r + q_lo, c + g_lo)
        exact = _float32_scores(q, gallery, q_ids, g_ids)  # self never gets here: its bf16 score is -inf
        keep = exact >= tau[q_ids]
        if keep.any():
            counter.add(q_ids[keep], g_ids[keep], exact[keep], q_lo, q_lo + n_q)
        return True

    def float32_block(i0: int, i1: int, j0: int, j1: int, slot: int) -> np.ndarray:
        if buffers[slot] is None:
            buffers[slot] = np.empty(block * block, dtype=np.float32)
        scores = buffers[slot][: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
        np.matmul(q[i0:i1], gallery[j0:j1].T, out=scores)
        if p.exclude_self:  # query i is gallery item i
            both = np.arange(max(i0, j0), min(i1, j1))
            scores[both - i0, both - j0] = -np.inf
        return scores

    def count(
        scores, i0: int, i1: int, j0: int, j1: int, rows_live: bool, cols_live: bool, slot: int
    ) -> None:
        if not bf16:
            if rows_live:
                side(scores, i0, j0, transposed=False)
            if cols_live:
                side(scores, j0, i0, transposed=True)
            return
        bits = scores.view(torch.int16).numpy()
        fallback = None
        for live, args in ((rows_live, (i0, j0, False)), (cols_live, (j0, i0, True))):
            if live and not side_bf16(bits, scores, *args):
                if fallback is None:  # crowded block (e.g. collapsed embeddings): float32
                    fallback = float32_block(i0, i1, j0, j1, slot)
                side(fallback, *args)

    pending: list[Future[None] | None] = [None] * slots
    with ThreadPoolExecutor(max_workers=1) if overlap else contextlib.nullcontext() as pool:
        for n, (i0, i1, j0, j1, rows_live, cols_live) in enumerate(
            _block_plan(nq, ng, block, symmetric, tau)
        ):
            slot = n % slots
            if pending[slot] is not None:
                pending[slot].result()  # its buffer is about to be overwritten
            if bf16:
                scores = q_bf16[i0:i1] @ g_bf16[j0:j1].T
                lo, hi = max(i0, j0), min(i1, j1)
                if p.exclude_self and lo < hi:
                    both = torch.arange(lo, hi)
                    scores[both - i0, both - j0] = -torch.inf
            else:
                scores = float32_block(i0, i1, j0, j1, slot)
            job = (scores, i0, i1, j0, j1, rows_live, cols_live, slot)
            if pool is None:
                count(*job)
            else:
                pending[slot] = pool.submit(count, *job)
        for pending_job in pending:
            if pending_job is not None:
                pending_job.result()


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


# --------------------------------------------------------------------------- approximate ranks


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


# --------------------------------------------------------------------------- public API


def _check_ks(ks: Sequence[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise ValueError(f"recall K values must be positive integers, got {list(ks)}")
    return out


def _recall_values(ranks: _Ranks, ks: list[int]) -> dict[int, float]:
    first = ranks.first[ranks.valid]
    if first.size == 0:
        return {k: float("nan") for k in ks}
    return {k: float(np.mean(first < k)) for k in ks}


def first_positive_ranks(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    exclude_self: bool,
    cap: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> np.ndarray:
    """0-based rank of each query's first positive; -1 for queries without one.

    With ``cap``, ranks of ``cap`` or more are reported as ``cap`` (and cost less to find).
    """
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    return _exact_ranks(p, recall_cap=cap, need_map=False, block_size=block_size).first


def recall_at_k(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int],
    *,
    exclude_self: bool,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> RecallAtK:
    """Exact Recall@K for each K in ``ks`` (see the module docstring for conventions)."""
    kvals = _check_ks(ks)
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    ranks = _exact_ranks(p, recall_cap=kvals[-1], need_map=False, block_size=block_size)
    return RecallAtK(
        recall=_recall_values(ranks, kvals),
        num_queries=int(ranks.valid.size),
        num_queries_without_match=int((~ranks.valid).sum()),
    )


def map_at_r_and_rp(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    exclude_self: bool,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> MapAtR:
    """Exact MAP@R and R-precision, averaged over queries with at least one positive."""
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    # recall_cap=0: the first positive matters only as far as MAP@R needs it.
    ranks = _exact_ranks(p, recall_cap=0, need_map=True, block_size=block_size)
    valid = ranks.valid
    nan = float("nan")
    return MapAtR(
        map_at_r=float(ranks.average_precision[valid].mean()) if valid.any() else nan,
        r_precision=float(ranks.r_precision[valid].mean()) if valid.any() else nan,
        num_queries=int(valid.size),
        num_queries_without_match=int((~valid).sum()),
    )


def nmi_from_clusters(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information of two labelings (arithmetic-mean normalisation).

    Same value and edge cases as scikit-learn's ``normalized_mutual_info_score``: 1.0 when both
    labelings are a single group (or empty), 0.0 when the mutual information is 0.
    """
    a = np.asarray(labels).ravel()
    b = np.asarray(clusters).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labels and clusters differ in length: {a.size} vs {b.size}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ka = int(ai.max()) + 1 if a.size else 0
    kb = int(bi.max()) + 1 if b.size else 0
    if ka == kb and ka <= 1:
        return 1.0
    if ka == 1 or kb == 1:
        return 0.0
    n = float(a.size)
    pair, n_ij = np.unique(ai.astype(np.int64) * kb + bi, return_counts=True)
    row = np.bincount(ai, minlength=ka).astype(np.float64)
    col = np.bincount(bi, minlength=kb).astype(np.float64)
    n_ij = n_ij.astype(np.float64)
    outer = row[pair // kb] * col[pair % kb]
    mi = float(np.sum(n_ij / n * (np.log(n_ij) + math.log(n) - np.log(outer))))
    if mi <= 1e-15:
        return 0.0

    def entropy(counts: np.ndarray) -> float:
        prob = counts / n
        return float(-np.sum(prob * np.log(prob)))

    return mi / ((entropy(row) + entropy(col)) / 2.0)


def kmeans_clusters(
    embeddings: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    niter: int = DEFAULT_KMEANS_NITER,
    nredo: int = 1,
) -> np.ndarray:
    """Cluster ids from FAISS k-means on the L2-normalised embeddings (all points used)."""
    x = l2_normalize(embeddings)
    n, d = x.shape
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    km = faiss.Kmeans(
        d,
        int(k),
        niter=int(niter),
        nredo=int(nredo),
        seed=int(seed),
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, -(-n // k) + 1),
    )
    with faiss_threads(float(n) * k * d * (niter + 1) * nredo):
        km.train(x)
        _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def kmeans_nmi(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    niter: int = DEFAULT_KMEANS_NITER,
    nredo: int = 1,
) -> float:
    """NMI between labels and FAISS k-means clusters, k = number of distinct labels."""
    lab = _labels(labels, np.asarray(embeddings).shape[0], "labels")
    k = int(np.unique(lab).size)
    return nmi_from_clusters(lab, kmeans_clusters(embeddings, k, seed=seed, niter=niter, nredo=nredo))


def retrieval_metrics(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ks: Sequence[int],
    exclude_self: bool,
    nmi: bool = True,
    index: str = "flat",
    seed: int = 0,
    nmi_niter: int = DEFAULT_KMEANS_NITER,
    nmi_redo: int = 1,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int | None = None,
    approx_sample: int = 1000,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> dict[str, float | int]:
    """All metrics of one protocol as a JSON-ready dict.

    Keys: ``recall@K`` for each K, ``map@r``, ``rp``, ``nmi`` (if ``nmi``), ``num_queries``,
    ``num_gallery``, ``num_classes`` (distinct labels over query and gallery),
    ``num_queries_without_match``, and ``approx_recall_vs_exact`` for an approximate
    ``index``. Retrieval metrics average over the queries that have a positive (NaN if none).
    ``index="flat"`` is exact; ``"ivf"``/``"hnsw"`` search a FAISS index built with ``nlist``,
    ``nprobe``, ``hnsw_m``, ``ef_search`` and ``seed``. NMI runs k-means with ``seed``,
    ``nmi_niter`` iterations and ``nmi_redo`` restarts on the query set (all-vs-all) or on
    query and gallery together.
    """
    kvals = _check_ks(ks)
    if index not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {index!r}; expected one of {', '.join(INDEX_KINDS)}")
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    approx: float | None = None
    if index == "flat":
        ranks = _exact_ranks(p, recall_cap=kvals[-1], need_map=True, block_size=block_size)
    else:
        built = build_index(
            p.gallery,
            index,
            nlist=nlist,
            nprobe=nprobe,
            m=hnsw_m,
            ef_search=ef_search if ef_search is not None else 128,
            seed=seed,
            normalize=False,
        )
        depth = max(kvals[-1], int(p.num_positives.max()) if p.num_positives.size else 0)
        ranks = _approximate_ranks(p, built, depth, nprobe=nprobe, ef_search=ef_search)
        approx = _approx_recall_vs_exact(
            p, built, kvals[-1], sample=approx_sample, seed=seed, nprobe=nprobe, ef_search=ef_search
        )
    valid = ranks.valid
    nan = float("nan")
    out: dict[str, float | int] = {f"recall@{k}": v for k, v in _recall_values(ranks, kvals).items()}
    out["map@r"] = float(ranks.average_precision[valid].mean()) if valid.any() else nan
    out["rp"] = float(ranks.r_precision[valid].mean()) if valid.any() else nan
    if nmi:
        if exclude_self:
            emb, lab = p.query, p.query_class
        else:
            emb = np.concatenate([p.query, p.gallery])
            lab = np.concatenate([p.query_class, p.gallery_class])
        out["nmi"] = kmeans_nmi(emb, lab, seed=seed, niter=nmi_niter, nredo=nmi_redo)
    out["num_queries"] = int(p.query.shape[0])
    out["num_gallery"] = int(p.gallery.shape[0])
    out["num_classes"] = p.num_classes
    out["num_queries_without_match"] = int((~valid).sum())
    if approx is not None:
        out["approx_recall_vs_exact"] = approx
    return out
