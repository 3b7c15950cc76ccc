"""Neighbour correction (SPEC 2.2) against a per-class float64 loop, plus a ground-truth check."""

from __future__ import annotations

import math

import pytest
import torch

from iaa.method import ClassStatistics, neighbor_correction

SENTINEL = 1e12


def _reference(
    mean: torch.Tensor,
    var: torch.Tensor,
    count: torch.Tensor,
    *,
    k: int = 25,
    beta: float = 0.1,
    gamma: float = 0.1,
    tau: float = 40.0,
    sigma_m: float = 1.0,
    sigma_cv: float = 1.0,
    mode: str = "neighbor",
    reference_code: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct transcription of SPEC 2.2 / Table IX, one class at a time. Returns (var_cr, nb)."""
    mean, var = mean.double(), var.double()
    num, dim = mean.shape
    n = [float(c) for c in count]
    cands_all = [j for j in range(num) if n[j] > 1]
    if cands_all:
        glob = sum(n[j] * var[j] for j in cands_all) / sum(n[j] for j in cands_all)
    else:
        glob = torch.zeros(dim, dtype=torch.float64)

    def unit(d: float, lo: float, hi: float) -> float:
        return (d - lo) / (hi - lo) if hi > lo else 0.0

    var_nb = torch.zeros_like(var)
    for c in range(num):
        cands = [j for j in cands_all if j != c]
        if not cands:
            var_nb[c] = glob
            continue
        dm = [(mean[j] ** 2 - mean[c] ** 2).norm().item() for j in range(num)]
        dcv = [(var[j] - var[c]).norm().item() for j in range(num)]
        if reference_code:
            full = [dm[j] + (SENTINEL if j == c or n[j] <= 1 else 0.0) for j in range(num)]
            lo_m, hi_m, lo_cv, hi_cv = min(full), max(full), min(dcv), max(dcv)
        else:
            lo_m, hi_m = min(dm[j] for j in cands), max(dm[j] for j in cands)
            lo_cv, hi_cv = min(dcv[j] for j in cands), max(dcv[j] for j in cands)
        nbrs = sorted(cands, key=lambda j: (dm[j], j))[:k]
        w = [
            n[j]
            * math.exp(
                -(unit(dm[j], lo_m, hi_m) ** 2) / (2 * sigma_m**2)
                - unit(dcv[j], lo_cv, hi_cv) ** 2 / (2 * sigma_cv**2)
            )
            for j in nbrs
        ]
        var_nb[c] = sum(wi * var[j] for wi, j in zip(w, nbrs)) / sum(w)

    def alpha_of(nk: float) -> float:
        if nk <= 1:
            return 1.0
        return 1.0 / (1.0 + math.log(1.0 + beta * (nk - 1))) if nk < tau else 0.0

    if mode == "identity":
        return torch.ones_like(var), var_nb
    if mode == "global":
        return glob.expand_as(var).clone(), var_nb
    if mode == "diagonal":
        return var.clone(), var_nb
    out = torch.zeros_like(var)
    for c in range(num):
        a = 1.0 if mode == "alpha_one" else alpha_of(n[c])
        g = 1.0 if mode == "gamma_one" else gamma
        out[c] = (1 - a) * var[c] + a * ((1 - g) * var_nb[c] + g * glob)
    return out, var_nb


def _stats(num: int, dim: int, seed: int, counts: list[int] | None = None):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(num, dim, generator=g, dtype=torch.float64)
    var = torch.rand(num, dim, generator=g, dtype=torch.float64) + 0.1
    if counts is None:
        pool = torch.tensor([0, 1, 1, 2, 2, 3, 4, 5, 8, 13, 39, 40, 41, 60])
        count = pool[torch.randint(0, pool.numel(), (num,), generator=g)].double()
    else:
        count = torch.tensor(counts, dtype=torch.float64)
    var[count <= 1] = 0.0  # what the estimator leaves for single-image / unseen classes
    return mean, var, count


MODES = ["neighbor", "identity", "global", "diagonal", "alpha_one", "gamma_one"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_modes_match_loop(mode: str, dtype: torch.dtype) -> None:
    mean, var, count = _stats(45, 6, seed=1)
    got = neighbor_correction(mean, var, count, k=7, mode=mode, distance_dtype=dtype)
    want, want_nb = _reference(mean, var, count, k=7, mode=mode)
    torch.testing.assert_close(got.var_corrected, want, rtol=1e-9, atol=1e-12)
    if got.var_neighbor is not None:
        torch.testing.assert_close(got.var_neighbor, want_nb, rtol=1e-9, atol=1e-12)
    glob = (count[count > 1, None] * var[count > 1]).sum(0) / count[count > 1].sum()
    torch.testing.assert_close(got.var_global, glob)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # defaults: K = 25
        {"k": 3, "beta": 0.5, "gamma": 0.3, "tau": 10.0},
        {"k": 5, "sigma_m": math.inf, "sigma_cv": math.inf},  # Table IX "sigma = inf"
        {"k": 5, "sigma_m": 0.05, "sigma_cv": 0.1},  # sharp kernels: stable via log-weights
        {"k": 6, "reference_code": True},
        {"k": 60},  # more than the number of candidates: all of them
    ],
)
def test_neighbor_matches_loop(kwargs: dict) -> None:
    mean, var, count = _stats(50, 5, seed=2)
    got = neighbor_correction(mean, var, count, **kwargs)
    want, want_nb = _reference(mean, var, count, **kwargs)
    torch.testing.assert_close(got.var_neighbor, want_nb, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.var_corrected, want, rtol=1e-9, atol=1e-12)
    n = count
    beta, tau = kwargs.get("beta", 0.1), kwargs.get("tau", 40.0)
    alpha = torch.where(n < tau, 1 / (1 + torch.log(1 + beta * (n - 1).clamp_min(0))), 0.0)
    torch.testing.assert_close(got.alpha, torch.where(n <= 1, 1.0, alpha).double())


def test_reference_code_silences_mean_distance() -> None:
    # SPEC 2.5 item 4: with the sentinel, d_m ~ 0, so sigma_m no longer matters
    mean, var, count = _stats(40, 5, seed=3)
    a = neighbor_correction(mean, var, count, k=6, reference_code=True)
    b = neighbor_correction(mean, var, count, k=6, reference_code=True, sigma_m=1e-3)
    torch.testing.assert_close(a.var_corrected, b.var_corrected, rtol=1e-12, atol=0)
    c = neighbor_correction(mean, var, count, k=6)
    assert not torch.allclose(a.var_corrected, c.var_corrected)


@pytest.mark.parametrize("layout", ["all_equal", "groups"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_go_to_lower_index(layout: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    num, dim = 30, 4
    if layout == "all_equal":  # every D_m is 0: neighbours are the K lowest candidate indices
        mean = torch.randn(1, dim, generator=g, dtype=torch.float64).expand(num, dim).clone()
    else:  # four distinct means, so ties straddle the K-th neighbour
        mean = torch.randn(4, dim, generator=g, dtype=torch.float64)[torch.arange(num) % 4]
    var = torch.rand(num, dim, generator=g, dtype=torch.float64) + 0.1
    count = torch.randint(2, 9, (num,), generator=g).double()
    count[[2, 9]] = 1  # single-image classes are never neighbours
    var[count <= 1] = 0
    got = neighbor_correction(mean, var, count, k=5, distance_dtype=dtype)
    want, want_nb = _reference(mean, var, count, k=5)
    torch.testing.assert_close(got.var_neighbor, want_nb, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.var_corrected, want, rtol=1e-9, atol=1e-12)
    if layout == "all_equal":  # class 0: neighbours 1, 3, 4, 5, 6 (2 is a single image)
        w = count[[1, 3, 4, 5, 6]] * torch.exp(-(_unit_cv(var, 0, [1, 3, 4, 5, 6], count) ** 2) / 2)
        manual = (w[:, None] * var[[1, 3, 4, 5, 6]]).sum(0) / w.sum()
        torch.testing.assert_close(got.var_neighbor[0], manual)


def _unit_cv(var: torch.Tensor, c: int, nbrs: list[int], count: torch.Tensor) -> torch.Tensor:
    d = (var - var[c]).norm(dim=1)
    cands = (count > 1) & (torch.arange(var.shape[0]) != c)
    lo, hi = d[cands].min(), d[cands].max()
    return (d[nbrs] - lo) / (hi - lo)


def test_few_and_no_candidates() -> None:
    mean, var, count = _stats(8, 3, seed=5, counts=[1, 3, 0, 5, 1, 2, 1, 1])
    got = neighbor_correction(mean, var, count, k=25)  # 3 candidates: all used
    want, want_nb = _reference(mean, var, count, k=25)
    torch.testing.assert_close(got.var_neighbor, want_nb)
    torch.testing.assert_close(got.var_corrected, want)
    assert torch.equal(got.alpha[[0, 2, 4, 6, 7]], torch.ones(5, dtype=torch.float64))
    # one candidate: it has no neighbour of its own and falls back to the global variance
    mean, var, count = _stats(4, 3, seed=6, counts=[1, 4, 1, 0])
    got = neighbor_correction(mean, var, count)
    torch.testing.assert_close(got.var_neighbor[1], var[1])  # var_global is var[1] itself
    torch.testing.assert_close(got.var_neighbor[0], var[1])
    # no candidate at all: global is zero, every class gets alpha = 1 and zero variance
    mean, var, count = _stats(5, 3, seed=7, counts=[1, 1, 0, 1, 1])
    got = neighbor_correction(mean, var, count)
    assert torch.equal(got.var_corrected, torch.zeros(5, 3, dtype=torch.float64))


def _dense_reference(mean, var, count, k):
    """Vectorised float64 reference of var_neighbor (full C x C matrices, direct differences)."""
    dm = torch.cdist(mean.square(), mean.square(), compute_mode="donot_use_mm_for_euclid_dist")
    dcv = torch.cdist(var, var, compute_mode="donot_use_mm_for_euclid_dist")
    num = mean.shape[0]
    valid = (count > 1).unsqueeze(0) & ~torch.eye(num, dtype=torch.bool)

    def unit(d):
        lo = d.masked_fill(~valid, math.inf).amin(1, keepdim=True)
        hi = d.masked_fill(~valid, -math.inf).amax(1, keepdim=True)
        return (d - lo) / (hi - lo)

    order = dm.masked_fill(~valid, math.inf).argsort(dim=1, stable=True)[:, :k]
    w = count[order] * torch.exp(-(unit(dm).gather(1, order) ** 2) / 2 - unit(dcv).gather(1, order) ** 2 / 2)
    return (w.unsqueeze(2) * var[order]).sum(1) / w.sum(1, keepdim=True)


@pytest.mark.parametrize("k", [3, 25])
def test_chunked_equals_unchunked_and_dense_reference(k: int) -> None:
    mean, var, count = _stats(300, 12, seed=8)
    dense = _dense_reference(mean, var, count, k)
    full = neighbor_correction(mean, var, count, k=k, chunk_size=4096)
    torch.testing.assert_close(full.var_neighbor, dense, rtol=1e-9, atol=1e-12)
    for chunk in (100, 299):
        part = neighbor_correction(mean, var, count, k=k, chunk_size=chunk)
        torch.testing.assert_close(part.var_corrected, full.var_corrected, rtol=1e-12, atol=0)


def test_output_dtype_follows_var() -> None:
    mean, var, count = _stats(60, 5, seed=8)
    full = neighbor_correction(mean, var, count)
    f32 = neighbor_correction(mean.float(), var.float(), count.float())
    assert f32.var_corrected.dtype == torch.float32
    torch.testing.assert_close(f32.var_corrected, full.var_corrected.float(), rtol=1e-5, atol=0)


def test_two_level_selection_matches_topk() -> None:
    from iaa.method.neighbors import _merge_smallest

    g = torch.Generator().manual_seed(14)
    d = torch.randn(50, 1003, generator=g)
    d[:, 7] = math.inf
    best = torch.randn(50, 12, generator=g) + 1.5
    val, pos = _merge_smallest(d, 2000, best, torch.arange(12).expand(50, 12) + 9000)
    want = torch.cat([best, d], 1).topk(12, dim=1, largest=False).values
    torch.testing.assert_close(val.sort(1).values, want.sort(1).values, rtol=0, atol=0)
    everything = torch.cat([best, d], 1)
    where = torch.where(pos >= 9000, pos - 9000, pos - 2000 + 12)
    torch.testing.assert_close(everything.gather(1, where), val, rtol=0, atol=0)


@pytest.mark.parametrize("full_row", [False, True])
def test_exact_knn_matches_brute_force(full_row: bool) -> None:
    from iaa.method.neighbors import exact_knn

    mean, var, count = _stats(120, 7, seed=15)
    mean[5], mean[9:13] = mean[3], mean[2]  # exact ties around the K-th neighbour
    x, cand, k = mean.square(), count > 1, 6
    got = exact_knn(x, var, cand, k, tile=50, full_row=full_row)
    dx = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    dy = torch.cdist(var, var, compute_mode="donot_use_mm_for_euclid_dist")
    valid = cand.unsqueeze(0) & ~torch.eye(120, dtype=torch.bool)
    want = dx.masked_fill(~valid, math.inf).argsort(dim=1, stable=True)[:, :k].sort(dim=1).values
    assert got.index.dtype == torch.long and torch.equal(got.index, want)
    # float64 expansion: coincident classes (distance 0) come out at ~sqrt(eps) |x|
    close = {"rtol": 1e-9, "atol": 1e-7}
    torch.testing.assert_close(got.dist_x, dx.gather(1, want), **close)
    torch.testing.assert_close(got.dist_y, dy.gather(1, want), **close)
    torch.testing.assert_close(got.x_lo, dx.masked_fill(~valid, math.inf).amin(1), **close)
    if full_row:
        torch.testing.assert_close(got.x_hi, dx.masked_fill(valid, -math.inf).amax(1), **close)
        torch.testing.assert_close(got.y_lo, torch.zeros(120, dtype=torch.float64), **close)
        torch.testing.assert_close(got.y_hi, dy.amax(1), **close)
    else:
        torch.testing.assert_close(got.x_hi, dx.masked_fill(~valid, -math.inf).amax(1), **close)
        torch.testing.assert_close(got.y_lo, dy.masked_fill(~valid, math.inf).amin(1), **close)
        torch.testing.assert_close(got.y_hi, dy.masked_fill(~valid, -math.inf).amax(1), **close)


def test_exact_knn_edge_cases() -> None:
    from iaa.method.neighbors import exact_knn

    x = torch.randn(4, 3, dtype=torch.float64)
    none = exact_knn(x, x, torch.zeros(4, dtype=torch.bool), 3)
    assert none.index.shape == (4, 0) and none.dist_x.shape == (4, 0)
    two = exact_knn(x, x, torch.tensor([True, True, False, False]), 5)  # all candidates, padded
    assert two.index.shape == (4, 2) and torch.equal(two.index[2], torch.tensor([0, 1]))
    assert two.dist_x[0].isinf().sum() == 1 and two.dist_y[0].isinf().sum() == 1
    for bad in (
        lambda: exact_knn(x, x[:3], torch.ones(4, dtype=torch.bool), 2),
        lambda: exact_knn(x, x, torch.ones(4), 2),
        lambda: exact_knn(x, x, torch.ones(4, dtype=torch.bool), 0),
        lambda: exact_knn(x, x, torch.ones(4, dtype=torch.bool), 2, tile=0),
    ):
        with pytest.raises(ValueError):
            bad()


def test_rejects_bad_arguments() -> None:
    mean, var, count = _stats(5, 3, seed=9)
    with pytest.raises(ValueError, match="mode"):
        neighbor_correction(mean, var, count, mode="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        neighbor_correction(mean, var[:, :2], count)
    with pytest.raises(ValueError):
        neighbor_correction(mean, var, count, sigma_m=0.0)


def _manifold_classes(num: int, dim: int, per_class: torch.Tensor, seed: int):
    """Gaussian classes on a smooth 2-D manifold whose variance is a smooth function of the
    squared mean, so classes close in D_m are close in covariance (the paper's premise)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(num, 2, generator=g, dtype=torch.float64)
    freq = torch.randn(2, dim, generator=g, dtype=torch.float64) * 2
    phase = torch.rand(dim, generator=g, dtype=torch.float64) * 2 * math.pi
    mean = torch.cos(t @ freq + phase) * 1.5
    true_var = 0.02 + 0.3 * mean.square()
    labels = torch.repeat_interleave(torch.arange(num), per_class)
    x = mean[labels] + true_var[labels].sqrt() * torch.randn(
        labels.numel(), dim, generator=g, dtype=torch.float64
    )
    return x, labels, true_var


def _rel_error(est: torch.Tensor, true: torch.Tensor) -> float:
    return ((est - true).norm(dim=1) / true.norm(dim=1)).mean().item()


def test_correction_recovers_true_covariance() -> None:
    num, dim = 400, 8
    g = torch.Generator().manual_seed(10)
    few = torch.randint(2, 6, (num,), generator=g)
    x, labels, true_var = _manifold_classes(num, dim, few, seed=11)
    stats = ClassStatistics(num, dim)
    count = stats.update(x, labels)
    res = neighbor_correction(stats.mean, stats.var, count)
    raw_err, cr_err = _rel_error(stats.var, true_var), _rel_error(res.var_corrected, true_var)
    print(f"\n2-5 samples/class: raw rel. error {raw_err:.3f}, corrected {cr_err:.3f}")
    assert cr_err < 0.8 * raw_err

    many = torch.full((num,), 200)
    x, labels, true_var = _manifold_classes(num, dim, many, seed=12)
    stats = ClassStatistics(num, dim)
    count = stats.update(x, labels)
    res = neighbor_correction(stats.mean, stats.var, count)  # n >= tau: alpha = 0
    no_tau = neighbor_correction(stats.mean, stats.var, count, tau=math.inf)  # alpha = 0.25
    raw_err = _rel_error(stats.var, true_var)
    cr_err, no_tau_err = (
        _rel_error(res.var_corrected, true_var),
        _rel_error(no_tau.var_corrected, true_var),
    )
    change = _rel_error(no_tau.var_corrected, stats.var)
    print(
        f"200 samples/class: raw rel. error {raw_err:.3f}, corrected {cr_err:.3f}, "
        f"corrected with tau=inf {no_tau_err:.3f} (moves the estimate by {change:.3f})"
    )
    assert torch.equal(res.var_corrected, stats.var)
    assert no_tau_err < raw_err + 0.03


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    mean, var, count = _stats(300, 12, seed=13)
    cpu = neighbor_correction(mean, var, count, k=9)
    for dtype in (None, torch.float32):
        gpu = neighbor_correction(mean.cuda(), var.cuda(), count.cuda(), k=9, distance_dtype=dtype)
        assert gpu.var_corrected.device.type == "cuda"
        torch.testing.assert_close(gpu.var_corrected.cpu(), cpu.var_corrected, rtol=1e-9, atol=0)
    stats = ClassStatistics(4, 3).cuda()
    stats.update(torch.randn(10, 3, device="cuda"), torch.arange(10, device="cuda") % 4)
    assert stats.mean.device.type == "cuda" and stats.initialized.all()
