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

The neighbour sets, their distances and the row ranges come from the exact blocked
k-nearest-neighbour search :func:`iaa.method.neighbors.exact_knn` (tiled GEMM screen, float64
refinement; no C x C matrix, no per-class loop), which this module turns into the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from iaa.method.neighbors import exact_knn

Mode = Literal["neighbor", "identity", "global", "diagonal", "alpha_one", "gamma_one"]
MODES: tuple[str, ...] = ("neighbor", "identity", "global", "diagonal", "alpha_one", "gamma_one")

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
    (None: float64 on CUDA, float32 elsewhere), see :func:`iaa.method.neighbors.exact_knn`.
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
    used by classes without any candidate. The neighbours and the D_m / D_cv row ranges come
    from :func:`iaa.method.neighbors.exact_knn` on ``mean^2`` and ``var``.
    """
    nbrs = exact_knn(
        mean.square(),
        var,
        count > 1,
        k,
        tile=chunk_size,
        screen_dtype=distance_dtype,
        full_row=reference_code,
    )
    if nbrs.index.shape[1] == 0:
        return fallback.expand_as(var).clone()
    nb, ok = nbrs.index, nbrs.dist_x.isfinite()
    # reference: the full D_m row's maximum sits on a sentinel-marked (non-candidate) column
    hi_m = nbrs.x_hi + _REFERENCE_SENTINEL if reference_code else nbrs.x_hi
    d_m = _minmax(nbrs.dist_x, nbrs.x_lo, hi_m)
    d_cv = _minmax(nbrs.dist_y, nbrs.y_lo, nbrs.y_hi)
    # log-weights + softmax: the same normalised w_i, without underflow for small sigma
    log_w = count.log()[nb] - d_m.square() / (2 * sigma_m**2) - d_cv.square() / (2 * sigma_cv**2)
    w = torch.softmax(log_w.masked_fill(~ok, -math.inf), dim=1)
    w = w.masked_fill(~ok, 0.0)
    mixed = torch.nn.functional.embedding_bag(nb, var, per_sample_weights=w, mode="sum")
    return torch.where(ok.any(1, keepdim=True), mixed, fallback.expand_as(var))


def _minmax(d: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Row-wise ``(d - lo) / (hi - lo)``, 0 where the row range is empty."""
    span = (hi - lo).unsqueeze(1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (d - lo.unsqueeze(1)) / safe, torch.zeros_like(d))
