"""Every stage that reads embeddings (or features) refuses bad rows with one line and exit 2.

One NaN in one row used to stop ``evaluate`` with one line, ``index``/``search`` with a
traceback, and make ``stats`` write NaN for every class. All of them now go through
:func:`iaa.io.read_embeddings`, which names the file, the split(s) read, the number of bad
rows and their first file rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iaa.cli import main
from iaa.errors import IAAError
from iaa.index import index_stage
from iaa.io import read_embeddings, write_embeddings
from iaa.models.embedder import EmbeddingModel, save_model

DIM = 6
BAD_ROW = 13  # a test row (rows 0-9 are train, 10-19 test)


def _table(rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """20 rows in 4 classes: rows 0-9 train, 10-19 test; every test class has several images."""
    rng = rng or np.random.default_rng(0)
    x = rng.standard_normal((20, DIM)).astype(np.float32)
    labels = np.array([0, 1] * 5 + [2, 3] * 5)
    splits = ["train"] * 10 + ["test"] * 10
    return x, labels, splits, [f"img{i}.png" for i in range(20)]


def _write(path: Path, bad_rows: tuple[int, ...] = (BAD_ROW,), value: float = np.nan) -> Path:
    x, labels, splits, paths = _table()
    for r in bad_rows:
        x[r, 2] = value
    write_embeddings(path, x, labels, splits, paths)
    return path


def _error_line(capsys: pytest.CaptureFixture[str], stage: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"iaa {stage}: error: "), err[0]
    return err[0]


def _assert_names(line: str, path: Path, split: str, count: int, first_row: int) -> None:
    assert str(path) in line
    assert f"split '{split}'" in line
    assert f": {count} of " in line
    assert f"file rows {first_row}" in line and f"split '{split}'; " in line


# --------------------------------------------------------------------------- one test per stage


def test_evaluate_refuses_a_nan_row(tmp_path, capsys) -> None:
    emb, out = _write(tmp_path / "e.parquet"), tmp_path / "metrics.json"
    assert main(["evaluate", str(emb), "--out", str(out), "--no-nmi"]) == 2
    line = _error_line(capsys, "evaluate")
    _assert_names(line, emb, "test", 1, BAD_ROW)
    assert "NaN or infinite" in line
    assert not out.exists()


def test_evaluate_ignores_bad_rows_of_splits_it_does_not_read(tmp_path) -> None:
    emb, out = _write(tmp_path / "e.parquet", bad_rows=(3,)), tmp_path / "metrics.json"
    assert main(["evaluate", str(emb), "--out", str(out), "--no-nmi"]) == 0
    assert json.loads(out.read_text())["final"]["num_queries"] == 10


def test_index_refuses_a_nan_row(tmp_path, capsys) -> None:
    emb, out = _write(tmp_path / "e.parquet"), tmp_path / "test.faiss"
    assert main(["index", str(emb), "--split", "test", "--out", str(out)]) == 2
    _assert_names(_error_line(capsys, "index"), emb, "test", 1, BAD_ROW)
    assert not list(tmp_path.glob("test.*"))  # neither the index nor its sidecar


def test_search_refuses_a_nan_query_row(tmp_path, capsys) -> None:
    index = tmp_path / "test.faiss"
    index_stage(_write(tmp_path / "good.parquet", bad_rows=()), index, split="test")
    query, out = _write(tmp_path / "q.parquet"), tmp_path / "nn.parquet"
    assert main(["search", str(index), "--query", str(query), "--split", "test", "--out", str(out)]) == 2
    _assert_names(_error_line(capsys, "search"), query, "test", 1, BAD_ROW)
    assert not out.exists()


def test_stats_refuses_a_nan_row_instead_of_nan_for_every_class(tmp_path, capsys) -> None:
    emb, out = _write(tmp_path / "e.parquet", bad_rows=(4, 7)), tmp_path / "stats.parquet"
    assert main(["stats", str(emb), "--split", "train", "--out", str(out), "--k", "1"]) == 2
    line = _error_line(capsys, "stats")
    _assert_names(line, emb, "train", 2, 4)
    assert "file rows 4, 7" in line
    assert not out.exists()


def test_train_head_mode_refuses_a_nan_feature_row(tmp_path, capsys) -> None:
    feats = _write(tmp_path / "f.parquet", bad_rows=(2,))
    out, history = tmp_path / "run" / "model.pt", tmp_path / "run" / "history.csv"
    settings = {"mode": "head", "epochs": 1, "batch_size": 4, "samples_per_class": 2, "val_split": "test"}
    code = main(
        ["train", "--loss", "ms", "--method", "baseline", "--features", str(feats), "--out", str(out),
         "--history", str(history), "--settings", json.dumps(settings)]
    )  # fmt: skip
    assert code == 2
    line = _error_line(capsys, "train")
    _assert_names(line, feats, "train", 1, 2)
    assert "(splits 'test', 'train')" in line  # the splits training reads
    assert not out.exists() and not history.exists()


def _head_checkpoint(path: Path, in_dim: int = DIM) -> Path:
    extras = {"epoch": 1, "selection": "last", "selection_recall@1": 0.5, "recipe": "paper"}
    save_model(path, EmbeddingModel(4, in_dim=in_dim), extra=extras)
    return path


def test_export_refuses_a_nan_feature_row(tmp_path, capsys) -> None:
    feats, model = _write(tmp_path / "f.parquet"), _head_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "e.parquet"
    args = ["export", "--benchmark", "synth", "--model", str(model), "--features", str(feats)]
    assert main([*args, "--out", str(out)]) == 2
    _assert_names(_error_line(capsys, "export"), feats, "test", 1, BAD_ROW)
    assert not out.exists()


def test_export_refuses_features_of_another_dimension_than_the_head(tmp_path, capsys) -> None:
    feats = _write(tmp_path / "f.parquet", bad_rows=())
    model, out = _head_checkpoint(tmp_path / "model.pt", in_dim=DIM + 1), tmp_path / "e.parquet"
    args = ["export", "--benchmark", "synth", "--model", str(model), "--features", str(feats)]
    assert main([*args, "--out", str(out)]) == 2
    line = _error_line(capsys, "export")
    assert f"20 of 20 rows have dimension {DIM}, expected {DIM + 1} (splits 'test', 'train'; " in line
    assert line.endswith("file rows 0, 1, 2, 3, 4, ...)")
    assert not out.exists()


# --------------------------------------------------------------------------- one test per kind


def test_infinite_values_and_float64_overflow_are_refused(tmp_path) -> None:
    with pytest.raises(
        IAAError, match=r"1 of 10 rows have NaN or infinite values \(split .*; file rows 13\)"
    ):
        read_embeddings(_write(tmp_path / "inf.parquet", value=np.inf), splits=["test"])
    x, labels, splits, paths = _table()
    table = pa.table(
        {"label": labels, "split": splits, "path": paths,
         "embedding": [list(map(float, row)) for row in x.astype(np.float64)]}
    )  # fmt: skip
    rows = table.column("embedding").to_pylist()
    rows[11][0] = 1e300  # finite in float64, inf in float32
    pq.write_table(
        table.set_column(3, "embedding", pa.array(rows, pa.list_(pa.float64()))), tmp_path / "o.parquet"
    )
    with pytest.raises(
        IAAError, match=r"1 of 20 rows have NaN or infinite values \(split .*; file rows 11\)"
    ):
        read_embeddings(tmp_path / "o.parquet")


def test_all_zero_rows_are_refused(tmp_path) -> None:
    x, labels, splits, paths = _table()
    x[[12, 15]] = 0.0
    write_embeddings(tmp_path / "z.parquet", x, labels, splits, paths)
    with pytest.raises(IAAError) as err:
        read_embeddings(tmp_path / "z.parquet", splits=["test"])
    assert str(err.value) == (
        f"embeddings file {tmp_path / 'z.parquet'} (split 'test'): 2 of 10 rows are all zeros "
        "(no direction to normalise) (split 'test'; file rows 12, 15)"
    )
    assert len(read_embeddings(tmp_path / "z.parquet", splits=["train"])) == 10  # rows not read: not checked


def test_rows_of_another_length_are_refused(tmp_path) -> None:
    x, labels, splits, paths = _table()
    rows = [list(map(float, row)) for row in x]
    rows[5] = rows[5][:-1]
    table = pa.table({"label": labels, "split": splits, "path": paths, "embedding": pa.array(rows)})
    pq.write_table(table, tmp_path / "ragged.parquet")
    with pytest.raises(
        IAAError, match=r"'train'\): 1 of 10 rows have a dimension other than 6 \(split .*; file rows 5\)"
    ):
        read_embeddings(tmp_path / "ragged.parquet", splits=["train"])
    with pytest.raises(IAAError, match=r"10 of 10 rows have a dimension other than 7"):
        read_embeddings(tmp_path / "ragged.parquet", splits=["test"], dim=7)
    assert read_embeddings(tmp_path / "ragged.parquet", splits=["test"]).dim == DIM


@pytest.mark.parametrize(
    "values, kind",
    [
        (pa.array([["1", "2"]] * 3), "lists of string"),
        (pa.array([[1, 2]] * 3), "lists of int64"),
        (pa.array(["1,2"] * 3), "string, not a list of floats"),
    ],
)
def test_an_embedding_column_of_another_type_is_refused(tmp_path, values, kind) -> None:
    table = pa.table(
        {"label": [0, 1, 2], "split": ["test"] * 3, "path": ["a", "b", "c"], "embedding": values}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(IAAError, match=rf"column 'embedding' (is|holds) {kind}"):
        read_embeddings(tmp_path / "t.parquet")


@pytest.mark.parametrize("column", ["embedding", "label", "split", "path"])
def test_a_missing_column_is_named(tmp_path, capsys, column) -> None:
    emb = _write(tmp_path / "e.parquet", bad_rows=())
    pq.write_table(pq.read_table(emb).drop_columns([column]), emb)
    out = tmp_path / "test.faiss"
    assert main(["index", str(emb), "--split", "test", "--out", str(out)]) == 2
    assert f"lacks column '{column}'" in _error_line(capsys, "index")
    assert not out.exists()
    if column == "path":  # a reader that skips paths does not need them
        assert len(read_embeddings(emb, with_paths=False)) == 20


def test_null_embeddings_are_refused(tmp_path) -> None:
    x, labels, splits, paths = _table()
    rows: list[list[float] | None] = [list(map(float, row)) for row in x]
    rows[17] = None
    table = pa.table({"label": labels, "split": splits, "path": paths, "embedding": pa.array(rows)})
    pq.write_table(table, tmp_path / "n.parquet")
    with pytest.raises(IAAError, match=r"1 of 20 rows have no embedding \(split .*; file rows 17\)"):
        read_embeddings(tmp_path / "n.parquet")
