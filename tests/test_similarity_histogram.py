"""Fig. 12 (``iaa similarity-histogram``) drawn from embeddings Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iaa.io import write_embeddings
from iaa.similarity_histogram import HISTOGRAM_COLUMNS, register, similarity_histogram
from tests.registered_cli import one_line, run_registered


def _cli(argv: list[str]) -> None:
    run_registered(register, argv)


_one_line = one_line


def _pairs_file(path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 train rows, then 12 test rows of 4 classes; returns the test embeddings and labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((15, 5)).astype(np.float32)
    labels = np.array([9, 9, 8] + [0, 1, 2, 3] * 3)
    splits = ["train"] * 3 + ["test"] * 12
    write_embeddings(path, x, labels, splits, [f"{i}.png" for i in range(15)])
    return x[3:], labels[3:]


def _loop_similarities(x: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    pos, neg = [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            a, b = x[i].astype(np.float64), x[j].astype(np.float64)
            cos = float(a @ b / (np.sqrt(a @ a) * np.sqrt(b @ b)))
            (pos if labels[i] == labels[j] else neg).append(cos)
    return pos, neg


def test_similarity_histogram_matches_numpy_histogram_of_looped_pairs(tmp_path: Path) -> None:
    bins = 10
    data = {
        "baseline": _pairs_file(tmp_path / "base.parquet", 0),
        "iaa": _pairs_file(tmp_path / "iaa.parquet", 1),
    }
    summary = similarity_histogram(
        tmp_path / "base.parquet", tmp_path / "iaa.parquet", tmp_path / "h.png", tmp_path / "h.csv", bins=bins
    )
    csv = pd.read_csv(tmp_path / "h.csv")
    assert tuple(csv.columns) == HISTOGRAM_COLUMNS
    assert (tmp_path / "h.png").stat().st_size > 0
    for model, (x, labels) in data.items():
        pos, neg = _loop_similarities(x, labels)
        assert len(pos) == 4 * 3 and len(neg) == 66 - 12
        for pair, sims in (("positive", pos), ("negative", neg)):
            rows = csv[(csv.model == model) & (csv.pair == pair)]
            expected, edges = np.histogram(sims, bins=bins, range=(-1, 1), density=True)
            np.testing.assert_allclose(rows.density, expected, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(rows.bin_left, edges[:-1])
            np.testing.assert_allclose(rows.bin_right, edges[1:])
            assert (rows.pairs == len(sims)).all()
            np.testing.assert_allclose(rows.mean_similarity, np.mean(sims))
            assert summary[model][pair] == pytest.approx(np.mean(sims))


def test_similarity_histogram_subsamples_negatives_with_the_seed(tmp_path: Path) -> None:
    _pairs_file(tmp_path / "a.parquet", 0)
    _pairs_file(tmp_path / "b.parquet", 1)
    for name in ("1", "2"):
        _cli(
            [
                "similarity-histogram", "--baseline", str(tmp_path / "a.parquet"),
                "--iaa", str(tmp_path / "b.parquet"), "--out", str(tmp_path / f"{name}.png"),
                "--csv", str(tmp_path / f"{name}.csv"), "--bins", "7", "--max-pairs", "20", "--seed", "3",
            ]
        )  # fmt: skip
    one, two = pd.read_csv(tmp_path / "1.csv"), pd.read_csv(tmp_path / "2.csv")
    pd.testing.assert_frame_equal(one, two)
    assert set(one[one.pair == "negative"].pairs) == {20}
    assert set(one[one.pair == "positive"].pairs) == {12}
    assert len(one) == 4 * 7
