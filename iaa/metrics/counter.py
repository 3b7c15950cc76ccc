"""Per query, how many negatives rank before each of its positives: the counts behind the ranks.

The rank of a query's m-th positive p_m is ``(m - 1) + c_m``, where ``c_m`` counts the
negatives ranked before p_m (:mod:`iaa.metrics.ranks`). :class:`_NegativeCounter` keeps, per
query, a threshold ``tau`` just below the score of its lowest positive that still matters.
The blocked pass (:mod:`iaa.metrics.scan`) hands it the block entries ``>= tau``; for each
such negative, the number of the query's positives ranked before it updates a small
per-query histogram, and ``tau`` rises as positives stop mattering (rank >= R for MAP@R,
first-positive rank >= max K for Recall@K). Queries with nothing left to count get
``tau = +inf``. Beforehand, a fixed sample of 256 gallery items bounds the counts from below
(:func:`_sample_lower_bound`), so the positives of badly ranked queries (untrained
embeddings) are dropped from the start.
"""

from __future__ import annotations

import numpy as np

from iaa.metrics.problem import _Problem
from iaa.metrics.scores import _PAIR_BUDGET, _canonical_scores, _tolerance

_SAMPLE_SIZE = 256  # gallery items used to bound counts from below before the blocked pass
_SAMPLE_MARGIN = 1e-4  # at least; see _sample_lower_bound


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
