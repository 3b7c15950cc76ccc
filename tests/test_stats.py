"""The stats stage against per-class loops and scipy's Spearman correlation."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from iaa.cli import main
from iaa.io import write_embeddings
from iaa.stats import distance_correlation


def _write(tmp_path, rng):
    counts = [1, 2, 5, 9, 3, 7, 4, 6]  # class 0 has a single image
    labels = np.repeat(np.arange(10, 10 + len(counts)), counts)
    emb = rng.standard_normal((len(labels), 6)).astype(np.float32) * (1 + labels[:, None] % 3)
    splits = ["train"] * len(labels)
    path = tmp_path / "e.parquet"
    write_embeddings(path, np.vstack([emb, emb[:3]]), np.r_[labels, [99, 99, 99]],
                     splits + ["test"] * 3, [f"p{i}" for i in range(len(labels) + 3)])  # fmt: skip
    return path, emb, labels


def test_stats_parquet_matches_per_class_loops(tmp_path, rng):
    path, emb, labels = _write(tmp_path, rng)
    out, corr = tmp_path / "s.parquet", tmp_path / "c.json"
    assert main(["stats", str(path), "--out", str(out), "--correlation", str(corr)]) == 0
    table = pq.read_table(out).to_pandas()
    assert list(table["label"]) == sorted(set(labels))  # the test split is left out
    for _, row in table.iterrows():
        x = emb[labels == row["label"]].astype(np.float64)
        assert row["count"] == len(x)
        np.testing.assert_allclose(row["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row["var"], x.var(0), rtol=1e-5, atol=1e-6)  # biased (Eq. 8)
        n = len(x)
        alpha = 1.0 if n <= 1 else 1 / (1 + np.log(1 + 0.1 * (n - 1)))
        assert row["alpha"] == pytest.approx(alpha)
        assert len(row["var_corrected"]) == 6
    payload = json.loads(corr.read_text())
    assert payload["num_classes"] == 7 and set(payload) >= {f"spearman_p{p}" for p in (1, 2, 3, 4)}


def test_distance_correlation_equals_scipy_spearman_per_class(rng):
    mean = rng.standard_normal((30, 8))
    var = np.abs(mean) ** 2 * 0.5 + rng.random((30, 8)) * 0.3  # correlated with the means
    import torch

    got = distance_correlation(torch.from_numpy(mean), torch.from_numpy(var), ps=(1, 3), chunk_size=7)
    for p in (1, 3):
        rhos = []
        for k in range(30):
            others = [j for j in range(30) if j != k]
            d_m = [np.sum(np.abs(mean[k] ** 2 - mean[j] ** 2) ** p) ** (1 / p) for j in others]
            d_cv = [np.sum(np.abs(var[k] - var[j]) ** p) ** (1 / p) for j in others]
            rhos.append(spearmanr(d_m, d_cv).statistic)
        assert got[p] == pytest.approx(np.mean(rhos), abs=1e-10)
    assert got[1] > 0.3  # the construction makes similar means have similar variances


def _p_norm(x, p):
    return np.sum(np.abs(x) ** p) ** (1 / p)


def test_table8_pairs_equal_float64_loop_with_scipy(rng):
    import torch

    from iaa.stats import PAIRS, pair_correlations

    c = 12
    mean = rng.standard_normal((c, 5))
    var = np.abs(mean) * 0.4 + rng.random((c, 5)) * 0.5
    transforms = {"mu": mean, "mu2": mean**2, "sigma": var, "sigma2": var**2}
    got = pair_correlations(torch.from_numpy(mean), torch.from_numpy(var), ps=(1, 2, 3), chunk_size=5)
    assert set(got) == set(PAIRS) == {"mu2-sigma", "mu-sigma", "mu2-sigma2", "mu-sigma2"}
    for name, (m_kind, cv_kind) in PAIRS.items():
        m, cv = transforms[m_kind], transforms[cv_kind]
        for p in (1, 2, 3):
            rhos = []
            for k in range(c):
                d_m, d_cv = [], []
                for j in range(c):
                    if j != k:
                        d_m.append(_p_norm(m[k] - m[j], p))
                        d_cv.append(_p_norm(cv[k] - cv[j], p))
                rhos.append(spearmanr(d_m, d_cv).statistic)
            assert got[name][p] == pytest.approx(np.mean(rhos), abs=1e-10), (name, p)
    # the first pair is Table I
    assert (
        distance_correlation(torch.from_numpy(mean), torch.from_numpy(var), (1, 2, 3), 5) == got["mu2-sigma"]
    )


def test_correlation_json_has_table8_pairs(tmp_path, rng):
    from iaa.stats import class_table, pair_correlations

    path, emb, labels = _write(tmp_path, rng)
    out, corr = tmp_path / "s.parquet", tmp_path / "c.json"
    assert main(["stats", str(path), "--out", str(out), "--correlation", str(corr)]) == 0
    payload = json.loads(corr.read_text())
    assert set(payload["pairs"]) == {"mu2-sigma", "mu-sigma", "mu2-sigma2", "mu-sigma2"}
    for name in payload["pairs"]:
        assert set(payload["pairs"][name]) == {"1", "2", "3", "4"}
    for p in (1, 2, 3, 4):
        assert payload["pairs"]["mu2-sigma"][str(p)] == payload[f"spearman_p{p}"]
    stats = class_table(emb, labels)
    valid = stats.count > 1
    want = pair_correlations(stats.mean[valid], stats.var[valid])
    for name, values in want.items():
        for p, value in values.items():
            assert payload["pairs"][name][str(p)] == pytest.approx(value, abs=1e-12)
