"""Exact k-nearest-neighbour search between classes, without a C x C distance matrix.

:func:`exact_knn` finds, for every class ``c``, the ``K`` candidate classes ``i != c`` with the
smallest Euclidean distance ``||x_i - x_c||`` (ties broken by the lower class index), the
companion distances ``||y_i - y_c||`` to those neighbours, and the row ranges (minimum and
maximum) of both distances. The neighbour correction (:mod:`iaa.method.correction`, paper
Eq. 9-13) calls it with ``x = mean^2`` (element-wise) and ``y = var``, i.e. ``D_m`` and ``D_cv``.

How it stays fast at C ~ 13k classes without a C x C matrix or a per-class loop:

1. Screen: tiles of ``tile`` x ``tile`` classes, one GEMM each for the squared x and y
   distances (features augmented as ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``; the distances are
   symmetric, so each off-diagonal tile serves both of its row blocks). Only per-row
   reductions are kept: the K + 8 smallest x distances and the arg-extremes of both
   distances. Memory is O(tile^2 + C K). ``screen_dtype`` defaults to float32 on CPU (a
   float64 GEMM is 2-5x slower there) and float64 on CUDA (cheap there, and immune to TF32).
2. Refine in float64: the screened candidates are re-ranked by exact distance (one sampled
   GEMM, no (C, K, D) gather) with ties broken by class index; every value that is returned
   (neighbour distances, row extremes) is recomputed in float64. Rows whose K-th and
   (K+8)-th screened distances are within the screening error (exact or near ties, e.g.
   duplicated classes) are redone against all candidates from direct differences, so the
   neighbour sets equal those of the float64 definition. The inputs are centred first
   (distances are translation invariant, the expansion's cancellation is not). The one
   residual approximation: a row extreme (min or max) whose runner-up is within float32
   rounding (~1e-6 relative) may be taken from the runner-up, which moves it by that much.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

# Extra float32-screened candidates re-ranked exactly in float64 (absorbs rounding near the K-th).
_SCREEN_MARGIN = 8


@dataclass(frozen=True)
class ClassNeighbors:
    """Output of :func:`exact_knn` for C classes and ``K = min(k, number of candidates)``.

    All tensors are on the device of the inputs; distances are float64.

    - ``index`` (C, K) int64: row ``c`` holds the neighbours of class ``c`` in ascending class
      index. A row with fewer than K neighbours (a candidate class when K is the number of
      candidates) is padded with arbitrary class indices whose distances are +inf.
    - ``dist_x`` / ``dist_y`` (C, K): ``||x_i - x_c||`` / ``||y_i - y_c||`` for ``i = index[c]``,
      +inf at padding.
    - ``x_lo``, ``x_hi``, ``y_lo``, ``y_hi`` (C,): row ranges. ``x_lo`` is the nearest
      neighbour's distance. With ``full_row=False`` the others are the maximum of the x
      distance and the minimum and maximum of the y distance over the row's candidates
      (itself excluded). With ``full_row=True`` (the released code's normalisation):
      ``x_hi`` is the largest x distance to a non-candidate column of the row (the class
      itself and the classes that are not candidates; 0 when there is none), ``y_lo`` is 0
      (the class itself) and ``y_hi`` the largest y distance over all classes. A row without
      any neighbour has an empty range (``lo = +inf``).
    """

    index: Tensor
    dist_x: Tensor
    dist_y: Tensor
    x_lo: Tensor
    x_hi: Tensor
    y_lo: Tensor
    y_hi: Tensor


def exact_knn(
    x: Tensor,
    y: Tensor,
    candidates: Tensor,
    k: int,
    *,
    tile: int = 2048,
    screen_dtype: torch.dtype | None = None,
    full_row: bool = False,
) -> ClassNeighbors:
    """The exact ``k`` nearest candidate classes of every class under ``||x_i - x_c||``.

    ``x`` (C, Dx) and ``y`` (C, Dy) are per-class feature vectors, any floating dtype (cast to
    float64; pass float64 to avoid a copy). ``candidates`` (C,) bool marks the classes that
    may be neighbours; a class is never its own neighbour. Neighbours are ranked by the x
    distance with ties broken by the lower class index; ``y`` only contributes the companion
    distances and ranges of :class:`ClassNeighbors`. If fewer than ``k`` candidates exist, all
    of them are used (K = 0 when there is none: empty (C, 0) results).

    ``tile`` is the screening tile edge (memory O(tile^2 + C K)); ``screen_dtype`` the dtype
    of the screening GEMMs (None: float64 on CUDA, float32 elsewhere). Neither changes the
    result beyond the rounding of the float64 refinement.

    Exact: the screen only proposes K + 8 candidates per row; they are re-ranked by float64
    distance, and rows where the screen's rounding could have swapped the K-th neighbour
    with an unproposed class (gap between the K-th and the last proposed value within the
    error bound of the screening GEMM) are searched again over all candidates from direct
    float64 differences. So the neighbour sets and their distances are those of the float64
    definition, whatever ``screen_dtype``; see the module docstring. The returned distances
    come from the float64 expansion ``|a|^2 + |b|^2 - 2ab``: near-coincident classes carry an
    absolute error up to ~sqrt(eps) |x| (~1e-8), but identical rows give bitwise-equal
    values, so exact ties stay exact.

    Raises ``ValueError`` if ``x`` or ``y`` is not 2-D, their numbers of rows differ,
    ``candidates`` is not a (C,) bool tensor, or ``k`` or ``tile`` is not positive.
    """
    if x.ndim != 2 or y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError("x and y must be (C, D) with the same number of rows C")
    if candidates.shape != x.shape[:1] or candidates.dtype != torch.bool:
        raise ValueError("candidates must be a (C,) bool tensor")
    if k < 1 or tile < 1:
        raise ValueError("k and tile must be positive")
    if screen_dtype is None:
        screen_dtype = torch.float64 if x.device.type == "cuda" else torch.float32
    x, y = x.to(torch.float64), y.to(torch.float64)
    cand = candidates
    kk = min(k, int(cand.sum()))
    if kk == 0:
        num = x.shape[0]
        empty = torch.empty((num, 0), dtype=torch.float64, device=x.device)
        lo = torch.full((num,), math.inf, dtype=torch.float64, device=x.device)
        hi = torch.full((num,), -math.inf, dtype=torch.float64, device=x.device)
        index = torch.empty((num, 0), dtype=torch.long, device=x.device)
        return ClassNeighbors(index, empty, empty.clone(), lo, hi, lo.clone(), hi.clone())

    # Centre on the candidates' centroid: distances are unchanged, the cancellation of the
    # ||a||^2 + ||b||^2 - 2ab expansion (float32 screen and float64 refinement) shrinks.
    centred_x = x - x[cand].mean(0)
    centred_y = y - y[cand].mean(0)
    scan = _scan(
        centred_x.to(screen_dtype),
        centred_y.to(screen_dtype),
        cand,
        screen=kk + _SCREEN_MARGIN,
        tile=tile,
        full_row=full_row,
    )
    sq_x, sq_y = centred_x.square().sum(1), centred_y.square().sum(1)

    # --- exact neighbours: re-rank the screened columns by float64 distance, ties to index ---
    screened = scan.cols[scan.top_pos]
    screened, by_index = screened.sort(dim=1)  # distinct indices: the sort is deterministic
    valid = scan.top_val.gather(1, by_index).isfinite()
    dist = _pair_dist(centred_x, sq_x, screened).masked_fill_(~valid, math.inf)
    order = dist.argsort(dim=1, stable=True)[:, :kk]  # stable: equal distances keep index order
    nb, nb_dx = screened.gather(1, order), dist.gather(1, order)
    _resolve_ambiguous(nb, nb_dx, scan.top_val, centred_x, cand, screen_dtype)
    nb, by_index = nb.sort(dim=1)
    nb_dx = nb_dx.gather(1, by_index)
    ok = nb_dx.isfinite()
    nb_dy = _pair_dist(centred_y, sq_y, nb)

    # --- row ranges of both distances, recomputed in float64 at the screened arg-extremes ---
    lo_x = nb_dx.masked_fill(~ok, math.inf).amin(1)  # the nearest neighbour
    y_ext = _pair_dist(centred_y, sq_y, scan.cols[torch.stack([scan.y_lo_pos, scan.y_hi_pos], 1)])
    hi_y = y_ext[:, 1]
    if full_row:
        # largest x distance over the non-candidate columns (self: distance 0)
        far = _pair_dist(centred_x, sq_x, scan.cols[scan.far_pos].unsqueeze(1))[:, 0]
        hi_x = torch.where(scan.far_val.isfinite(), far, torch.zeros_like(far))
        lo_y = torch.zeros_like(lo_x)  # full row, self included
    else:
        hi_x = _pair_dist(centred_x, sq_x, scan.cols[scan.x_hi_pos].unsqueeze(1))[:, 0]
        # the neighbours' exact values keep the ranges consistent if the screen picked a
        # runner-up extreme within float32 rounding
        hi_x = torch.maximum(hi_x, nb_dx.masked_fill(~ok, -math.inf).amax(1))
        lo_y = torch.minimum(y_ext[:, 0], nb_dy.masked_fill(~ok, math.inf).amin(1))
        hi_y = torch.maximum(hi_y, nb_dy.masked_fill(~ok, -math.inf).amax(1))
    nb_dy = nb_dy.masked_fill(~ok, math.inf)
    return ClassNeighbors(nb, nb_dx, nb_dy, lo_x, hi_x, lo_y, hi_y)


@dataclass
class _Scan:
    """Per-row results of the screening pass, rows in class order; positions index ``cols``.

    ``top_val``/``top_pos`` (C, S): the S smallest screened squared x distances over valid
    columns (+inf when a row has fewer); ``x_hi_pos``: largest x distance over valid columns;
    ``y_lo_pos``/``y_hi_pos``: smallest/largest y distance (over valid columns, or over the
    full row in ``full_row`` mode); ``far_val``/``far_pos``: largest x distance over
    non-candidate columns (``full_row`` mode only).
    """

    cols: Tensor
    top_val: Tensor
    top_pos: Tensor
    x_hi_pos: Tensor
    y_lo_pos: Tensor
    y_hi_pos: Tensor
    far_val: Tensor
    far_pos: Tensor


def _scan(feat_x: Tensor, feat_y: Tensor, cand: Tensor, *, screen: int, tile: int, full_row: bool) -> _Scan:
    """Screen all class pairs tile by tile with GEMMs, keeping only per-row reductions.

    Columns are the candidates, or all classes with ``full_row`` (the non-candidates are
    masked instead of dropped). Each GEMM yields squared distances directly
    (features augmented as ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``), which are symmetric, so every
    off-diagonal candidate tile is computed once and reduced along both axes; rows outside the
    columns (non-candidates, without ``full_row``) get rectangular tiles. Running state is kept
    in row-position order (columns first, then the other rows) so tiles update slices.
    """
    num_classes = cand.numel()
    device = cand.device
    cols = torch.arange(num_classes, device=device) if full_row else cand.nonzero()[:, 0]
    others = cols[:0] if full_row else (~cand).nonzero()[:, 0]
    num_cols = cols.numel()
    screen = min(screen, num_cols)
    col_invalid = ~cand[cols] if full_row else None

    def augment(f: Tensor, left: bool) -> Tensor:
        sq, one = f.square().sum(1, keepdim=True), torch.ones_like(f[:, :1])
        return torch.cat([f, sq, one] if left else [-2.0 * f, one, sq], dim=1)

    # rows in position order: the columns first, then the other rows
    row_order = torch.cat([cols, others])
    left_x, right_x = augment(feat_x[row_order], True), augment(feat_x[cols], False)
    left_y, right_y = augment(feat_y[row_order], True), augment(feat_y[cols], False)

    def full(shape: tuple[int, ...], value: float) -> Tensor:
        return torch.full(shape, value, dtype=feat_x.dtype, device=device)

    def zeros(shape: tuple[int, ...]) -> Tensor:
        return torch.zeros(shape, dtype=torch.long, device=device)

    top_val, top_pos = full((num_classes, screen), math.inf), zeros((num_classes, screen))
    x_hi = (full((num_classes,), -math.inf), zeros((num_classes,)))
    y_lo = (full((num_classes,), math.inf), zeros((num_classes,)))
    y_hi = (full((num_classes,), -math.inf), zeros((num_classes,)))
    far = (full((num_classes,), -math.inf), zeros((num_classes,)))

    def absorb(rows: slice, d_x: Tensor, d_y: Tensor, cols0: int, diag: bool) -> None:
        """Fold one tile of squared distances (rows ``rows``, columns from ``cols0``) in."""
        eye = torch.arange(d_x.shape[0], device=device) if diag else None
        inv = col_invalid[cols0 : cols0 + d_x.shape[1]] if col_invalid is not None else None
        if inv is not None:
            # full row: x maximum over non-candidate columns, y range over the full row
            _running_ext(far, rows, d_x.masked_fill(~inv, -math.inf), cols0, largest=True)
            _running_ext(y_hi, rows, d_y, cols0, largest=True)
            d_x.masked_fill_(inv, math.inf)
        else:
            # self sits at ~0, so it cannot win a maximum; it is masked before the minima
            _running_ext(x_hi, rows, d_x, cols0, largest=True)
            _running_ext(y_hi, rows, d_y, cols0, largest=True)
            if eye is not None:
                d_y[eye, eye] = math.inf
            _running_ext(y_lo, rows, d_y, cols0, largest=False)
        if eye is not None:
            d_x[eye, eye] = math.inf
        top_val[rows], top_pos[rows] = _merge_smallest(d_x, cols0, top_val[rows], top_pos[rows])

    starts = range(0, num_cols, tile)
    for i in starts:
        bi = slice(i, min(i + tile, num_cols))
        for j in starts[i // tile :]:
            bj = slice(j, min(j + tile, num_cols))
            d_x, d_y = left_x[bi] @ right_x[bj].T, left_y[bi] @ right_y[bj].T
            if i != j:  # the same tile seen from the rows of block j (before in-place masks)
                absorb(bj, d_x.T.contiguous(), d_y.T.contiguous(), i, diag=False)
            absorb(bi, d_x, d_y, j, diag=i == j)
    for i in range(num_cols, num_classes, tile):
        rows = slice(i, min(i + tile, num_classes))
        for j in starts:
            bj = slice(j, min(j + tile, num_cols))
            absorb(rows, left_x[rows] @ right_x[bj].T, left_y[rows] @ right_y[bj].T, j, False)

    # back from row-position order to class order
    order = torch.empty(num_classes, dtype=torch.long, device=device)
    order[row_order] = torch.arange(num_classes, device=device)
    return _Scan(
        cols=cols,
        top_val=top_val[order],
        top_pos=top_pos[order],
        x_hi_pos=x_hi[1][order],
        y_lo_pos=y_lo[1][order],
        y_hi_pos=y_hi[1][order],
        far_val=far[0][order],
        far_pos=far[1][order],
    )


# Group size of the two-level selection in _merge_smallest.
_GROUP = 8


def _merge_smallest(d: Tensor, cols0: int, best_val: Tensor, best_pos: Tensor) -> tuple[Tensor, Tensor]:
    """The S smallest of a tile row (columns from ``cols0``) and the running best (R, S).

    Two-level selection, ~3x cheaper than ``topk`` over the whole row on CPU: split the row
    into strided groups of ``_GROUP`` columns, keep the S groups with the smallest minima (the
    S smallest entries lie in them: a group holding one of them has a minimum no larger than
    it, and each group minimum is a distinct entry), then select among those groups' entries,
    the few leftover columns and the running best. The selected values equal those of a full
    ``topk`` (with exact ties the positions may differ; ties are resolved later).
    """
    rows, width = d.shape
    screen = best_val.shape[1]
    groups = width // _GROUP
    if groups <= 2 * screen:  # too narrow to gain: plain selection
        pos = torch.arange(width, device=d.device).expand(rows, width)
        cand_val, cand_pos = d, pos
    else:
        main = d[:, : groups * _GROUP].view(rows, _GROUP, groups)  # column = t * groups + q
        _, grp = main.amin(dim=1).topk(screen, dim=1, largest=False, sorted=False)
        offsets = groups * torch.arange(_GROUP, device=d.device)
        cand_pos = (grp.unsqueeze(2) + offsets).view(rows, screen * _GROUP)
        rest = torch.arange(groups * _GROUP, width, device=d.device).expand(rows, -1)
        cand_pos = torch.cat([cand_pos, rest], dim=1)
        cand_val = d.gather(1, cand_pos)
    val = torch.cat([best_val, cand_val], dim=1)
    pos = torch.cat([best_pos, cand_pos + cols0], dim=1)
    val, keep = torch.topk(val, screen, dim=1, largest=False, sorted=False)
    return val, pos.gather(1, keep)


def _running_ext(best: tuple[Tensor, Tensor], rows: slice, d: Tensor, cols0: int, *, largest: bool) -> None:
    """Update a running row-wise arg-extreme (value, column position) with one tile."""
    val, idx = d.max(dim=1) if largest else d.min(dim=1)
    old_val, old_pos = best[0][rows], best[1][rows]
    better = val > old_val if largest else val < old_val
    best[0][rows] = torch.where(better, val, old_val)
    best[1][rows] = torch.where(better, idx + cols0, old_pos)


def _resolve_ambiguous(
    nb: Tensor, nb_dx: Tensor, top_val: Tensor, x: Tensor, cand: Tensor, dtype: torch.dtype
) -> None:
    """Redo, exactly and in place, the neighbour search of rows the screen cannot settle.

    The screen keeps the S smallest screened squared x distances; the exact K nearest are
    guaranteed among them when the gap between the K-th and the S-th screened value exceeds
    twice the screening error (or the row has at most S candidates). Rows failing that (exact or near
    ties around the K-th neighbour, e.g. duplicated classes) get float64 distances to every
    candidate from direct differences, then (distance, class index) order.
    """
    kk = nb.shape[1]
    screened = top_val.sort(dim=1).values.to(torch.float64)
    num_valid = int(cand.sum()) - cand.long()
    norms = x.square().sum(1)
    # rounding bound of the screening GEMM over dim + 2 terms, with generous headroom
    tol = 32 * torch.finfo(dtype).eps * math.sqrt(x.shape[1] + 2) * (norms + norms[cand].max())
    gap = screened[:, -1] - screened[:, kk - 1]
    rows = ((num_valid > screened.shape[1]) & (gap <= 2 * tol)).nonzero()[:, 0]
    cols = cand.nonzero()[:, 0]
    for part in rows.split(256):
        d = torch.cdist(x[part], x[cols], compute_mode="donot_use_mm_for_euclid_dist")
        d[cols.unsqueeze(0) == part.unsqueeze(1)] = math.inf  # self
        order = d.argsort(dim=1, stable=True)[:, :kk]
        nb[part] = cols[order]
        nb_dx[part] = d.gather(1, order)


def _pair_dist(x: Tensor, sq: Tensor, other: Tensor) -> Tensor:
    """float64 ``||x[r] - x[other[r, j]]||`` (C, S) via one sampled GEMM (no (C, S, D) gather).

    ``sq`` holds the squared row norms of ``x``. The same computation for identical rows of
    ``x`` gives bitwise-equal results, so exact ties stay exact (then broken by class index).
    """
    num, width = other.shape
    crow = torch.arange(0, num * width + 1, width, device=x.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": fine for this use
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow,
            other.reshape(-1),
            torch.zeros(num * width, dtype=x.dtype, device=x.device),
            size=(num, x.shape[0]),
        )
    dots = torch.sparse.sampled_addmm(pattern, x, x.T, beta=0.0).values().view(num, width)
    return (sq.unsqueeze(1) + sq[other] - 2.0 * dots).clamp_min_(0.0).sqrt_()
