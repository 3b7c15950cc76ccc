"""The paper's qualitative figures (Fig. 12, 13, 14) drawn from embeddings Parquet files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from iaa.errors import IAAError
from iaa.io import write_embeddings, write_manifest
from iaa.method import ClassStatistics
from iaa.visualize import (
    BORDER,
    HISTOGRAM_COLUMNS,
    RETRIEVAL_COLUMNS,
    TILE,
    TSNE_COLUMNS,
    register,
    retrieval_grid,
    similarity_histogram,
    synthetic_points,
    tsne_figure,
)


def _cli(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")

    def stage(name, fn, help):  # the signature of iaa.cli's stage()
        sp = sub.add_parser(name, help=help)
        sp.set_defaults(func=fn)
        return sp

    register(stage)
    args = p.parse_args(argv)
    args.func(args)


def _one_line(err: pytest.ExceptionInfo[IAAError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- Fig. 12


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


# --------------------------------------------------------------------------- Fig. 13

# test rows (after 2 train rows): angle in degrees, class; row 4's image file is missing
ANGLES = [0, 10, 25, 90, 115]
CLASSES = [0, 0, 1, 1, 0]
# per query (test row), with top=2: the retrieved test rows and whether each is right
EXPECTED = {0: ([1, 2], [True, False]), 1: ([0, 2], [True, False]), 2: ([1, 0], [False, False]),
            3: ([4, 2], [False, True]), 4: ([3, 2], [False, False])}  # fmt: skip
OFFSET = 2


def _retrieval_set(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    paths = ["train/t0.png", "train/t1.png"] + [f"c{c}/img{i}.png" for i, c in enumerate(CLASSES)]
    for rel in paths[:-1]:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 9), (30, 60, 230)).save(images / rel)
    rad = np.deg2rad(ANGLES)
    test = np.stack([np.cos(rad), np.sin(rad), np.zeros_like(rad)], axis=1) * 3.0
    train = np.array([[0.0, 0.0, 1.0], [0.0, 0.5, 1.0]])
    emb_dir = tmp_path / "results" / "embeddings"
    emb_dir.mkdir(parents=True)
    out = emb_dir / "run.parquet"
    write_embeddings(
        out, np.concatenate([train, test]), [7, 7] + CLASSES, ["train"] * 2 + ["test"] * 5, paths
    )
    return out


def _colour_at(png: np.ndarray, box: tuple[float, float, float, float], fx: float, fy: float) -> np.ndarray:
    left, top, right, bottom = box
    x = int(left + fx * (right - left))
    y = int(top + fy * (bottom - top))
    return png[y, x, :3].astype(int)


def test_retrieval_grid_ranks_marks_and_frames(tmp_path: Path) -> None:
    emb = _retrieval_set(tmp_path)
    grid = retrieval_grid(
        emb, tmp_path / "g.png", tmp_path / "g.csv", image_root=tmp_path / "images", queries=5, top=2
    )
    csv = pd.read_csv(tmp_path / "g.csv")
    assert tuple(csv.columns) == RETRIEVAL_COLUMNS
    assert len(csv) == 5 * 2
    for q, (retrieved, correct) in EXPECTED.items():
        rows = csv[csv.query_row == q + OFFSET].sort_values("rank")
        assert rows["rank"].tolist() == [1, 2]
        assert rows.retrieved_row.tolist() == [r + OFFSET for r in retrieved]
        assert rows.correct.tolist() == correct
        assert (rows.query_path == f"c{CLASSES[q]}/img{q}.png").all()
        sims = [np.cos(np.deg2rad(ANGLES[q] - ANGLES[r])) for r in retrieved]
        np.testing.assert_allclose(rows.similarity, sims, atol=1e-6)
    pd.testing.assert_frame_equal(csv, grid.frame.reset_index(drop=True), check_dtype=False)

    png = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    edge = (BORDER / 2) / TILE  # the middle of the frame, as a fraction of the tile
    for r, (_, correct) in EXPECTED.items():
        for rank, ok in enumerate(correct, start=1):
            for fx, fy in ((edge, 0.5), (0.5, edge), (1 - edge, 0.5)):
                red, green, blue = _colour_at(png, grid.tiles[(r, rank)], fx, fy)
                if ok:  # green-ish
                    assert green > red + 60 and green > blue + 40, (r, rank, red, green, blue)
                else:  # red-ish
                    assert red > green + 80 and red > blue + 80, (r, rank, red, green, blue)
    # the query tile's frame is neither; its inside is the image (blue)
    red, green, blue = _colour_at(png, grid.tiles[(0, 0)], edge, 0.5)
    assert abs(red - green) < 20 and abs(green - blue) < 20
    red, green, blue = _colour_at(png, grid.tiles[(0, 0)], 0.5, 0.5)
    assert blue > 200 and red < 80
    # row 4's file is missing: a grey tile inside its frame (query of grid row 4), no failure
    red, green, blue = _colour_at(png, grid.tiles[(4, 0)], 0.25, 0.25)
    assert abs(red - green) < 10 and abs(green - blue) < 10 and 150 < red < 230


def test_retrieval_grid_cli_reads_the_root_from_a_manifest(tmp_path: Path) -> None:
    emb = _retrieval_set(tmp_path)
    manifest = tmp_path / "m.parquet"
    frame = pd.DataFrame({"path": ["a.png"], "label": [0], "split": ["test"], "class_name": ["a"]})
    write_manifest(manifest, frame, tmp_path / "images")
    out = tmp_path / "fig" / "grid.png"
    _cli(
        [
            "visualize",
            str(emb),
            "--out",
            str(out),
            "--manifest",
            str(manifest),
            "--queries",
            "2",
            "--top",
            "3",
        ]
    )
    csv = pd.read_csv(out.with_suffix(".csv"))  # default: --out with .csv
    assert len(csv) == 2 * 3 and csv.query_row.nunique() == 2
    assert out.stat().st_size > 0
    # seeded: the same queries again
    again = tmp_path / "again.png"
    _cli(["visualize", str(emb), "--out", str(again), "--image-root", str(tmp_path / "images"),
          "--queries", "2", "--top", "3"])  # fmt: skip
    pd.testing.assert_frame_equal(csv, pd.read_csv(tmp_path / "again.csv"))


def test_retrieval_grid_finds_a_manifest_next_door(tmp_path: Path) -> None:
    emb = _retrieval_set(tmp_path)  # results/embeddings/run.parquet
    frame = pd.DataFrame({"path": ["a.png"], "label": [0], "split": ["test"], "class_name": ["a"]})
    write_manifest(tmp_path / "results" / "manifest.parquet", frame, tmp_path / "images")
    grid = retrieval_grid(emb, tmp_path / "g.png", tmp_path / "g.csv", queries=5, top=2)
    assert grid.frame.correct.tolist() == [c for q in EXPECTED for c in EXPECTED[q][1]]


def test_retrieval_grid_query_vs_gallery(tmp_path: Path) -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.0]])
    splits = ["query", "query", "gallery", "gallery", "gallery"]
    write_embeddings(tmp_path / "e.parquet", x, [0, 1, 0, 1, 1], splits, [f"{i}.png" for i in range(5)])
    grid = retrieval_grid(
        tmp_path / "e.parquet", tmp_path / "g.png", tmp_path / "g.csv", image_root=tmp_path,
        queries=2, top=2, query_split="query", gallery_split="gallery",
    )  # fmt: skip
    f = grid.frame
    assert f[f.query_row == 0].retrieved_row.tolist() == [4, 2]  # identical vector first, not excluded
    assert f[f.query_row == 0].correct.tolist() == [False, True]
    assert f[f.query_row == 1].retrieved_row.tolist() == [3, 2]
    assert f.similarity.iloc[0] == pytest.approx(1.0)


def test_retrieval_grid_without_image_root_is_one_line(tmp_path: Path) -> None:
    emb = _retrieval_set(tmp_path)
    with pytest.raises(IAAError) as err:
        retrieval_grid(emb, tmp_path / "g.png", tmp_path / "g.csv")
    assert "--image-root" in _one_line(err)
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "g.csv").exists()
    with pytest.raises(IAAError, match="give both"):
        retrieval_grid(emb, tmp_path / "g.png", tmp_path / "g.csv", image_root=tmp_path, query_split="test")


# --------------------------------------------------------------------------- Fig. 14


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
