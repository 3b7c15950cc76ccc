"""Fig. 13 (``iaa visualize``), the retrieval grid, drawn from embeddings Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iaa.errors import IAAError
from iaa.io import write_embeddings, write_manifest
from iaa.visualize import BORDER, RETRIEVAL_COLUMNS, TILE, register, retrieval_grid
from tests.registered_cli import one_line, run_registered


def _cli(argv: list[str]) -> None:
    run_registered(register, argv)


_one_line = one_line


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
