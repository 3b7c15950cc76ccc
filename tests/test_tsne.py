"""Fig. 14 (``iaa tsne``): t-SNE of originals and IAA synthetic samples from embeddings Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from iaa.errors import IAAError
from iaa.io import write_embeddings
from iaa.method import ClassStatistics
from iaa.tsne import TSNE_COLUMNS, register, synthetic_points, tsne_figure
from tests.registered_cli import one_line, run_registered


def _cli(argv: list[str]) -> None:
    run_registered(register, argv)


_one_line = one_line


def _tsne_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Train: classes 10..13 with 6 rows each and class 20 with one row; then 4 test rows."""
    rng = np.random.default_rng(5)
    labels = np.array([10, 11, 12, 13] * 6 + [20] + [1, 1, 2, 2])
    centres = {k: rng.standard_normal(8) * 3 for k in np.unique(labels)}
    x = np.stack([centres[k] + rng.standard_normal(8) * 0.3 for k in labels]).astype(np.float32)
    splits = ["train"] * 25 + ["test"] * 4
    write_embeddings(path, x, labels, splits, [f"{i}.png" for i in range(len(labels))])
    return x[:25], labels[:25]


def test_tsne_counts_labels_and_sources(tmp_path: Path) -> None:
    x, labels = _tsne_file(tmp_path / "e.parquet")
    frame = tsne_figure(
        tmp_path / "e.parquet", tmp_path / "t.png", tmp_path / "t.csv",
        classes=3, per_class=4, copies=2, lam=0.5, seed=1, perplexity=5,
    )  # fmt: skip
    csv = pd.read_csv(tmp_path / "t.csv")
    assert tuple(csv.columns) == TSNE_COLUMNS
    assert (tmp_path / "t.png").stat().st_size > 0
    originals, synthetic = csv[csv.kind == "original"], csv[csv.kind == "synthetic"]
    assert len(originals) == 3 * 4 and len(synthetic) == 2 * 3 * 4
    assert originals.label.nunique() == 3 and set(originals.label) <= {10, 11, 12, 13}
    assert (originals.groupby("label").size() == 4).all()
    # every row's label is that of its source row in the file; each original has `copies` synthetics
    np.testing.assert_array_equal(csv.label, labels[csv.source_row])
    assert (synthetic.groupby("source_row").size() == 2).all()
    assert set(synthetic.source_row) == set(originals.source_row)
    assert np.isfinite(csv[["x", "y"]].to_numpy()).all()
    np.testing.assert_allclose(frame.x, csv.x)


def test_synthetic_points_follow_spec_and_spread_grows_with_lam(tmp_path: Path) -> None:
    x, labels = _tsne_file(tmp_path / "e.parquet")
    spread = {}
    for lam in (0.2, 0.8):
        pts = synthetic_points(x, labels, classes=3, per_class=4, copies=3, lam=lam, seed=2)
        offsets = pts.synthetic - pts.originals[pts.synthetic_source]
        spread[lam] = float(np.linalg.norm(offsets, axis=1).mean())
        np.testing.assert_array_equal(pts.synthetic_labels, pts.original_labels[pts.synthetic_source])
        assert len(pts.synthetic) == 3 * len(pts.originals) == 3 * 12
    assert spread[0.8] > spread[0.2]
    assert spread[0.8] / spread[0.2] == pytest.approx(2.0, rel=1e-5)  # same noise, sqrt(0.8/0.2)
    # sigma^2: every row of the class, as ClassStatistics holds it after one update from empty
    stats = ClassStatistics(num_classes=21, dim=8, momentum=1.0)
    stats.update(torch.from_numpy(x), torch.from_numpy(labels))
    np.testing.assert_allclose(pts.variance, stats.var[pts.classes].numpy(), rtol=1e-5, atol=1e-9)
    assert 20 not in pts.classes  # a one-image class is never chosen


def test_tsne_too_few_classes_is_one_line(tmp_path: Path) -> None:
    _tsne_file(tmp_path / "e.parquet")
    with pytest.raises(IAAError) as err:
        _cli(["tsne", str(tmp_path / "e.parquet"), "--out", str(tmp_path / "t.png"),
              "--csv", str(tmp_path / "t.csv"), "--classes", "5"])  # fmt: skip
    assert "needs 5 classes with >= 2 images, found 4" in _one_line(err)
    assert not (tmp_path / "t.png").exists()
