import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iaa.errors import IAAError
from iaa.io import atomic_path, read_embeddings, read_manifest, write_embeddings, write_manifest


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out" / "table.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_replaces_an_existing_file_only_when_complete(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"


def test_embeddings_round_trip_with_the_documented_schema(tmp_path, rng):
    emb = rng.standard_normal((7, 5)).astype(np.float32)
    labels = np.arange(7) % 3
    splits = ["train"] * 4 + ["test"] * 3
    paths = [f"img/{i}.png" for i in range(7)]
    write_embeddings(tmp_path / "e.parquet", emb, labels, splits, paths)
    schema = pq.read_schema(tmp_path / "e.parquet")
    assert schema.field("label").type == pa.int64()
    assert schema.field("split").type == pa.string()
    assert schema.field("path").type == pa.string()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 5)
    table = read_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(table.embeddings, emb)
    np.testing.assert_array_equal(table.labels, labels)
    test = read_embeddings(tmp_path / "e.parquet", splits=["test"])
    assert len(test) == 3 and list(test.paths) == paths[4:]


def test_missing_inputs_are_one_line_errors_naming_the_path(tmp_path):
    with pytest.raises(IAAError, match="embeddings file not found: .*nope.parquet"):
        read_embeddings(tmp_path / "nope.parquet")
    with pytest.raises(IAAError, match="manifest not found"):
        read_manifest(tmp_path / "m.parquet")
    write_embeddings(tmp_path / "e.parquet", np.zeros((1, 2)), [0], ["train"], ["x"])
    with pytest.raises(IAAError, match=r"no rows with split in \['test'\]"):
        read_embeddings(tmp_path / "e.parquet", splits=["test"])


def test_manifest_keeps_its_root(tmp_path):
    frame = pd.DataFrame(
        {
            "path": ["a/1.png", "b/2.png"],
            "label": [3, 4],
            "split": ["train", "test"],
            "class_name": ["a", "b"],
        }
    )
    write_manifest(tmp_path / "m.parquet", frame, root=tmp_path / "data")
    manifest = read_manifest(tmp_path / "m.parquet")
    assert manifest.root == (tmp_path / "data").resolve()
    assert manifest.absolute_paths()[1] == (tmp_path / "data").resolve() / "b/2.png"
    assert list(manifest.split("test")["label"]) == [4]
