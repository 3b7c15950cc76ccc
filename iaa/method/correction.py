"""Neighbour correction of few-sample class covariances (paper Eq. 9-16, SPEC 2.2).

For class ``k`` the candidates are every class except ``k`` itself and classes with at most
one image (those carry no variance). Its neighbours ``N_k`` are the ``K`` candidates with the
smallest mean distance ``D_m(i, k) = ||mean_i^2 - mean_k^2||_2`` (element-wise squares), ties
broken by the lower class index. With ``d_m``/``d_cv`` the rows of ``D_m`` and
``D_cv(i, k) = ||var_i - var_k||_2`` min-max normalised to [0, 1] over the candidates::

    w_i         = n_i exp(-d_m^2 / 2 sigma_m^2 - d_cv^2 / 2 sigma_cv^2)
    var_nb_k    = sum_{i in N_k} w_i var_i / sum_{i in N_k} w_i
    var_global  = sum_{n_k > 1} n_k var_k / sum_{n_k > 1} n_k
    alpha_k     = 1 / (1 + log(1 + beta (n_k - 1)))  if n_k < tau else 0   (1 when n_k <= 1)
    var_cr_k    = (1 - alpha_k) var_k + alpha_k [(1 - gamma) var_nb_k + gamma var_global]

How it stays fast at C ~ 13k classes without a C x C matrix or a per-class loop:

1. Screen: tiles of ``chunk_size`` x ``chunk_size`` classes, one GEMM each for D_m^2 and
   D_cv^2 (features augmented as ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``; the distances are
   symmetric, so each off-diagonal tile serves both of its row blocks). Only per-row
   reductions are kept: the K + 8 smallest D_m^2 and the arg-extremes of D_m and D_cv.
   Memory is O(chunk_size^2 + C K). ``distance_dtype`` defaults to float32 on CPU (a float64
   GEMM is 2-5x slower there) and float64 on CUDA (cheap there, and immune to TF32).
2. Refine in float64: the screened candidates are re-ranked by exact distance (one sampled
   GEMM, no (C, K, D) gather) with ties broken by class index; every value that enters the
   result (neighbour distances, row extremes) is recomputed in float64. Rows whose K-th and
   (K+8)-th screened distances are within the screening error (exact or near ties, e.g.
   duplicated classes) are redone against all candidates from direct differences, so the
   neighbour sets equal those of the float64 definition. The inputs are centred first
   (distances are translation invariant, the expansion's cancellation is not). The one
   residual approximation: a row extreme (min or max) whose runner-up is within float32
   rounding (~1e-6 relative) may be taken from the runner-up, which moves d by that much.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Mode = Literal["neighbor", "identity", "global", "diagonal", "alpha_one", "gamma_one"]
MODES: tuple[str, ...] = ("neighbor", "identity", "global", "diagonal", "alpha_one", "gamma_one")

# Extra float32-screened candidates re-ranked exactly in float64 (absorbs rounding near the K-th).
_SCREEN_MARGIN = 8
# Sentinel the released code adds to D_m for self and single-image classes (SPEC 2.5 item 4).
_REFERENCE_SENTINEL = 1e12


@dataclass(frozen=True)
class CorrectionResult:
    """Output of :func:`neighbor_correction`.

    ``var_corrected`` (C, D) in the dtype of the input ``var``; ``alpha`` (C,) the weight the
    correction term received (1 where Sigma_k was replaced outright); ``var_neighbor`` (C, D)
    float64, or None for modes that never use it; ``var_global`` (D,) float64.
    """

    var_corrected: Tensor
    alpha: Tensor
    var_neighbor: Tensor | None
    var_global: Tensor


def correction_alpha(count: Tensor, *, beta: float = 0.1, tau: float = 40.0) -> Tensor:
    """Eq. 16: ``1 / (1 + log(1 + beta (n - 1)))`` for ``n < tau``, else 0; 1 when ``n <= 1``."""
    n = count.to(torch.float64)
    alpha = 1.0 / (1.0 + torch.log1p(beta * (n - 1.0).clamp_min(0.0)))
    alpha = torch.where(n < tau, alpha, torch.zeros_like(alpha))
    return torch.where(n <= 1, torch.ones_like(alpha), alpha)


def global_variance(var: Tensor, count: Tensor) -> Tensor:
    """Eq. 14: count-weighted mean of the variances of classes with more than one image."""
    n = count.to(torch.float64)
    use = n > 1
    v = var.to(torch.float64)
    if not bool(use.any()):
        return torch.zeros(v.shape[1], dtype=torch.float64, device=v.device)
    return (n[use].unsqueeze(1) * v[use]).sum(0) / n[use].sum()


def neighbor_correction(
    mean: Tensor,
    var: Tensor,
    count: Tensor,
    *,
    k: int = 25,
    beta: float = 0.1,
    gamma: float = 0.1,
    tau: float = 40.0,
    sigma_m: float = 1.0,
    sigma_cv: float = 1.0,
    mode: Mode = "neighbor",
    chunk_size: int = 2048,
    reference_code: bool = False,
    distance_dtype: torch.dtype | None = None,
) -> CorrectionResult:
    """Corrected diagonal covariances ``var_cr`` (C, D) from class means, variances and counts.

    ``count`` is the number of training images per class (e.g. the return value of
    :meth:`ClassStatistics.update` for one pass over the train set), not the accumulated count.
    Classes with ``count <= 1`` are never neighbours, are left out of ``var_global`` and get
    ``alpha = 1``. A class with no candidate at all takes ``var_global`` as its neighbour
    variance. If fewer than ``k`` candidates exist, all of them are used. A row whose
    candidate distances are all equal has ``d = 0`` for them (the min-max range is empty).

    ``mode`` selects the paper's Table IX row:

    - ``"neighbor"``: IAA, the full correction above (row "IAA").
    - ``"identity"``: Sigma_k replaced by the identity, var all ones (row "Identity matrix").
    - ``"global"``: every class uses var_global (row "Global matrix").
    - ``"diagonal"``: no correction, var returned unchanged, alpha = 0 (rows "Diagonal matrix"
      and "alpha = 0 (w/o correction)").
    - ``"alpha_one"``: alpha = 1 for every class, var_cr = (1-gamma) var_nb + gamma var_global
      (row "alpha = 1 (w/o Sigma_k)").
    - ``"gamma_one"``: Eq. 15 with gamma = 1, var_cr = (1-alpha) var + alpha var_global (row
      "gamma = 1"). The table labels that row "w/o Sigma_global", which contradicts Eq. 15 and
      the released code (both weight var_global by gamma); we follow the equation. The
      mixture without the global term is ``mode="neighbor", gamma=0.0``.
    - row "sigma_m = sigma_cv = inf": ``sigma_m=sigma_cv=math.inf`` (weights become n_i).

    ``reference_code=True`` reproduces SPEC 2.5 item 4: the D_m row is min-max normalised over
    the full row in which self and single-image classes carry a +1e12 sentinel, so d_m ~ 0
    for every candidate and only d_cv shapes the weights; D_cv is then normalised over the
    full row as well (self included, so its minimum is 0), as the released code does. Item 5
    (single-image classes keep mean 0) belongs to the caller: zero ``mean[count <= 1]`` first.
    Neighbours are drawn from the candidates in both settings.

    ``chunk_size`` is the screening tile edge; ``distance_dtype`` the screening GEMM dtype
    (None: float64 on CUDA, float32 elsewhere), see the module docstring.
    """
    if mode not in MODES:
        raise ValueError(f"unknown correction mode {mode!r}; expected one of {MODES}")
    if mean.ndim != 2 or var.shape != mean.shape or count.shape != mean.shape[:1]:
        raise ValueError("mean and var must be (C, D) and count (C,)")
    if k < 1 or chunk_size < 1:
        raise ValueError("k and chunk_size must be positive")
    if not (sigma_m > 0 and sigma_cv > 0):
        raise ValueError("sigma_m and sigma_cv must be positive (math.inf allowed)")

    if distance_dtype is None:
        distance_dtype = torch.float64 if var.device.type == "cuda" else torch.float32
    out_dtype = var.dtype
    v64 = var.to(torch.float64)
    n = count.to(device=var.device, dtype=torch.float64)
    var_global = global_variance(v64, n)
    ones = torch.ones_like(n)

    if mode == "identity":
        return CorrectionResult(torch.ones_like(var), ones, None, var_global)
    if mode == "global":
        var_cr = var_global.expand_as(v64).to(out_dtype).clone()
        return CorrectionResult(var_cr, ones, None, var_global)
    if mode == "diagonal":
        return CorrectionResult(var.clone(), torch.zeros_like(n), None, var_global)

    alpha = ones if mode == "alpha_one" else correction_alpha(n, beta=beta, tau=tau)
    if mode == "gamma_one":
        var_nb, g = None, 1.0
        mixed = var_global.expand_as(v64)
    else:
        var_nb, g = (
            neighbor_variance(
                mean.to(torch.float64),
                v64,
                n,
                k=k,
                sigma_m=sigma_m,
                sigma_cv=sigma_cv,
                chunk_size=chunk_size,
                reference_code=reference_code,
                distance_dtype=distance_dtype,
                fallback=var_global,
            ),
            gamma,
        )
        mixed = (1.0 - g) * var_nb + g * var_global
    a = alpha.unsqueeze(1)
    var_cr = (1.0 - a) * v64 + a * mixed
    return CorrectionResult(var_cr.to(out_dtype), alpha, var_nb, var_global)


def neighbor_variance(
    mean: Tensor,
    var: Tensor,
    count: Tensor,
    *,
    k: int,
    sigma_m: float,
    sigma_cv: float,
    chunk_size: int,
    reference_code: bool,
    distance_dtype: torch.dtype,
    fallback: Tensor,
) -> Tensor:
    """Eq. 11-13: the weighted neighbour variance (C, D) float64 for every class.

    Inputs are float64 ``mean`` (C, D), ``var`` (C, D), ``count`` (C,); ``fallback`` (D,) is
    used by classes without any candidate. See the module docstring for the two phases.
    """
    cand = count > 1
    num_cand = int(cand.sum())
    kk = min(k, num_cand)
    if kk == 0:
        return fallback.expand_as(var).clone()

    # Centre on the candidates' centroid: distances are unchanged, the cancellation of the
    # ||a||^2 + ||b||^2 - 2ab expansion (float32 screen and float64 refinement) shrinks.
    centred_m = mean.square()
    centred_m -= centred_m[cand].mean(0)
    centred_v = var - var[cand].mean(0)
    scan = _scan(
        centred_m.to(distance_dtype),
        centred_v.to(distance_dtype),
        cand,
        screen=kk + _SCREEN_MARGIN,
        tile=chunk_size,
        reference_code=reference_code,
    )
    sq_m, sq_v = centred_m.square().sum(1), centred_v.square().sum(1)

    # --- exact neighbours: re-rank the screened columns by float64 distance, ties to index ---
    screened = scan.cols[scan.top_pos]
    screened, by_index = screened.sort(dim=1)  # distinct indices: the sort is deterministic
    valid = scan.top_val.gather(1, by_index).isfinite()
    dist = _pair_dist(centred_m, sq_m, screened).masked_fill_(~valid, math.inf)
    order = dist.argsort(dim=1, stable=True)[:, :kk]  # stable: equal distances keep index order
    nb, nb_dm = screened.gather(1, order), dist.gather(1, order)
    _resolve_ambiguous(nb, nb_dm, scan.top_val, centred_m, cand, distance_dtype)
    nb, by_index = nb.sort(dim=1)
    nb_dm = nb_dm.gather(1, by_index)
    ok = nb_dm.isfinite()
    nb_dcv = _pair_dist(centred_v, sq_v, nb)

    # --- row ranges of D_m and D_cv, recomputed in float64 at the screened arg-extremes ---
    lo_m = nb_dm.masked_fill(~ok, math.inf).amin(1)  # the nearest neighbour
    cv_ext = _pair_dist(centred_v, sq_v, scan.cols[torch.stack([scan.cv_lo_pos, scan.cv_hi_pos], 1)])
    hi_cv = cv_ext[:, 1]
    if reference_code:
        # full row with the +1e12 sentinel on self/single-image columns (self: distance 0)
        far = _pair_dist(centred_m, sq_m, scan.cols[scan.far_pos].unsqueeze(1))[:, 0]
        far = torch.where(scan.far_val.isfinite(), far, torch.zeros_like(far))
        hi_m = far + _REFERENCE_SENTINEL
        lo_cv = torch.zeros_like(lo_m)  # full row, self included
    else:
        hi_m = _pair_dist(centred_m, sq_m, scan.cols[scan.m_hi_pos].unsqueeze(1))[:, 0]
        # the neighbours' exact values keep the ranges consistent if the screen picked a
        # runner-up extreme within float32 rounding
        hi_m = torch.maximum(hi_m, nb_dm.masked_fill(~ok, -math.inf).amax(1))
        lo_cv = torch.minimum(cv_ext[:, 0], nb_dcv.masked_fill(~ok, math.inf).amin(1))
        hi_cv = torch.maximum(hi_cv, nb_dcv.masked_fill(~ok, -math.inf).amax(1))

    d_m = _minmax(nb_dm, lo_m, hi_m)
    d_cv = _minmax(nb_dcv, lo_cv, hi_cv)
    # log-weights + softmax: the same normalised w_i, without underflow for small sigma
    log_w = count.log()[nb] - d_m.square() / (2 * sigma_m**2) - d_cv.square() / (2 * sigma_cv**2)
    w = torch.softmax(log_w.masked_fill(~ok, -math.inf), dim=1)
    w = w.masked_fill(~ok, 0.0)
    mixed = torch.nn.functional.embedding_bag(nb, var, per_sample_weights=w, mode="sum")
    return torch.where(ok.any(1, keepdim=True), mixed, fallback.expand_as(var))


@dataclass
class _Scan:
    """Per-row results of the screening pass, rows in class order; positions index ``cols``.

    ``top_val``/``top_pos`` (C, S): the S smallest screened D_m^2 over valid columns (+inf
    when a row has fewer); ``m_hi_pos``: largest D_m over valid columns; ``cv_lo_pos``/
    ``cv_hi_pos``: smallest/largest D_cv (over valid columns, or over the full row in
    reference mode); ``far_val``/``far_pos``: largest D_m over single-image columns
    (reference mode only).
    """

    cols: Tensor
    top_val: Tensor
    top_pos: Tensor
    m_hi_pos: Tensor
    cv_lo_pos: Tensor
    cv_hi_pos: Tensor
    far_val: Tensor
    far_pos: Tensor


def _scan(
    feat_m: Tensor, feat_v: Tensor, cand: Tensor, *, screen: int, tile: int, reference_code: bool
) -> _Scan:
    """Screen all class pairs tile by tile with GEMMs, keeping only per-row reductions.

    Columns are the candidates (paper) or all classes (released code, which masks the
    non-candidates instead of dropping them). Each GEMM yields squared distances directly
    (features augmented as ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``), which are symmetric, so every
    off-diagonal candidate tile is computed once and reduced along both axes; rows outside the
    columns (single-image classes, paper mode) get rectangular tiles. Running state is kept
    in row-position order (columns first, then the other rows) so tiles update slices.
    """
    num_classes = cand.numel()
    device = cand.device
    cols = torch.arange(num_classes, device=device) if reference_code else cand.nonzero()[:, 0]
    others = cols[:0] if reference_code else (~cand).nonzero()[:, 0]
    num_cols = cols.numel()
    screen = min(screen, num_cols)
    col_invalid = ~cand[cols] if reference_code else None

    def augment(f: Tensor, left: bool) -> Tensor:
        sq, one = f.square().sum(1, keepdim=True), torch.ones_like(f[:, :1])
        return torch.cat([f, sq, one] if left else [-2.0 * f, one, sq], dim=1)

    # rows in position order: the columns first, then the other rows
    row_order = torch.cat([cols, others])
    left_m, right_m = augment(feat_m[row_order], True), augment(feat_m[cols], False)
    left_v, right_v = augment(feat_v[row_order], True), augment(feat_v[cols], False)

    def full(shape: tuple[int, ...], value: float) -> Tensor:
        return torch.full(shape, value, dtype=feat_m.dtype, device=device)

    def zeros(shape: tuple[int, ...]) -> Tensor:
        return torch.zeros(shape, dtype=torch.long, device=device)

    top_val, top_pos = full((num_classes, screen), math.inf), zeros((num_classes, screen))
    m_hi = (full((num_classes,), -math.inf), zeros((num_classes,)))
    cv_lo = (full((num_classes,), math.inf), zeros((num_classes,)))
    cv_hi = (full((num_classes,), -math.inf), zeros((num_classes,)))
    far = (full((num_classes,), -math.inf), zeros((num_classes,)))

    def absorb(rows: slice, d_m: Tensor, d_cv: Tensor, cols0: int, diag: bool) -> None:
        """Fold one tile of squared distances (rows ``rows``, columns from ``cols0``) in."""
        eye = torch.arange(d_m.shape[0], device=device) if diag else None
        inv = col_invalid[cols0 : cols0 + d_m.shape[1]] if col_invalid is not None else None
        if inv is not None:
            # reference: D_m maximum over single-image columns, D_cv range over the full row
            _running_ext(far, rows, d_m.masked_fill(~inv, -math.inf), cols0, largest=True)
            _running_ext(cv_hi, rows, d_cv, cols0, largest=True)
            d_m.masked_fill_(inv, math.inf)
        else:
            # self sits at ~0, so it cannot win a maximum; it is masked before the minima
            _running_ext(m_hi, rows, d_m, cols0, largest=True)
            _running_ext(cv_hi, rows, d_cv, cols0, largest=True)
            if eye is not None:
                d_cv[eye, eye] = math.inf
            _running_ext(cv_lo, rows, d_cv, cols0, largest=False)
        if eye is not None:
            d_m[eye, eye] = math.inf
        top_val[rows], top_pos[rows] = _merge_smallest(d_m, cols0, top_val[rows], top_pos[rows])

    starts = range(0, num_cols, tile)
    for i in starts:
        bi = slice(i, min(i + tile, num_cols))
        for j in starts[i // tile :]:
            bj = slice(j, min(j + tile, num_cols))
            d_m, d_cv = left_m[bi] @ right_m[bj].T, left_v[bi] @ right_v[bj].T
            if i != j:  # the same tile seen from the rows of block j (before in-place masks)
                absorb(bj, d_m.T.contiguous(), d_cv.T.contiguous(), i, diag=False)
            absorb(bi, d_m, d_cv, j, diag=i == j)
    for i in range(num_cols, num_classes, tile):
        rows = slice(i, min(i + tile, num_classes))
        for j in starts:
            bj = slice(j, min(j + tile, num_cols))
            absorb(rows, left_m[rows] @ right_m[bj].T, left_v[rows] @ right_v[bj].T, j, False)

    # back from row-position order to class order
    order = torch.empty(num_classes, dtype=torch.long, device=device)
    order[row_order] = torch.arange(num_classes, device=device)
    return _Scan(
        cols=cols,
        top_val=top_val[order],
        top_pos=top_pos[order],
        m_hi_pos=m_hi[1][order],
        cv_lo_pos=cv_lo[1][order],
        cv_hi_pos=cv_hi[1][order],
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
    nb: Tensor, nb_dm: Tensor, top_val: Tensor, x: Tensor, cand: Tensor, dtype: torch.dtype
) -> None:
    """Redo, exactly and in place, the neighbour search of rows the screen cannot settle.

    The screen keeps the S smallest screened D_m^2; the exact K nearest are guaranteed among
    them when the gap between the K-th and the S-th screened value exceeds twice the
    screening error (or the row has at most S candidates). Rows failing that (exact or near
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
        nb_dm[part] = d.gather(1, order)


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


def _minmax(d: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Row-wise ``(d - lo) / (hi - lo)``, 0 where the row range is empty."""
    span = (hi - lo).unsqueeze(1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (d - lo.unsqueeze(1)) / safe, torch.zeros_like(d))
