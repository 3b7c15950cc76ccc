"""The blocked pass over the score matrix that finds the negatives worth counting.

One pass over the query x gallery score matrix (float32 matmul of 4096 x 4096 query and
gallery blocks, 64 MB each) takes out, per query, the block entries ``>= tau`` (the
threshold of :mod:`iaa.metrics.counter`) with one comparison and ``flatnonzero``, and hands
them to the counter. Queries with nothing left to count are skipped, and so are blocks with
none of them.

In all-vs-all the score matrix is symmetric: each block above the diagonal serves both its
rows and (transposed) its columns, so only half the products are computed. A worker
thread compares and counts one block while BLAS computes the next.

Screening in bfloat16. Where the CPU multiplies bfloat16 much faster than float32 (``SCREEN``),
the pass multiplies blocks in bfloat16 and keeps every entry within a rigorous bound of the
threshold (``_bf16_margin``: 3 units of bfloat16 rounding plus float32's bound); only those
pairs, about one in a thousand on SOP-like data, are re-scored in float32 and counted as
above. A block with too many of them is multiplied again in float32 instead.

``SCREEN`` and ``_BF16_FALLBACK_SHARE`` are read from this module at call time: set them
here (``iaa.metrics.scan.SCREEN``), not on the package, which does not re-export them.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from iaa.metrics.counter import _NegativeCounter
from iaa.metrics.problem import _Problem
from iaa.metrics.scores import _PAIR_BUDGET, _pair_scores

DEFAULT_BLOCK_SIZE = 4096


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
        raise ValueError(f"iaa.metrics.scan.SCREEN must be auto, bfloat16 or float32, not {SCREEN!r}")
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
