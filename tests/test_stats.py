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
