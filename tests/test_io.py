import fcntl
import os
import stat

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iaa.atomic import atomic_path, exclusive_writer, remove_leftovers
from iaa.errors import IAAError
from iaa.io import (
    embedding_splits,
    read_embeddings,
    read_manifest,
    require_splits,
    write_embeddings,
    write_manifest,
)


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


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1" + b"\0" * 20])
@pytest.mark.parametrize(
    ("reader", "what"),
    [
        (read_manifest, "manifest"),
        (embedding_splits, "embeddings file"),
        (read_embeddings, "embeddings file"),
    ],
)
def test_an_unreadable_parquet_is_one_line_naming_it(tmp_path, content, reader, what):
    """Empty, garbage or footer-less files: pyarrow's ArrowInvalid would end in a traceback."""
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(content)
    with pytest.raises(IAAError, match=f"cannot read {what} .*bad.parquet: not a readable Parquet file"):
        reader(bad)


def test_a_second_writer_of_the_same_output_is_refused_and_the_lock_ends_with_its_holder(tmp_path):
    """Two decodes of one store: the second took the first's live temporary for a leftover and
    deleted it. The writer's lock (flock on .<name>.lock) now refuses the second in one line."""
    target = tmp_path / "store"
    other = os.open(tmp_path / ".store.lock", os.O_RDWR | os.O_CREAT)  # another writer's lock
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    live = tmp_path / ".store.abcd1234.tmp"  # its temporary, named as a leftover would be
    live.mkdir()
    with (
        pytest.raises(IAAError, match=r"another process is writing the decoded store .*store \(it holds"),
        exclusive_writer(target, "decoded store"),
    ):
        remove_leftovers(target)
    assert live.is_dir()  # untouched
    os.close(other)  # the holder ends: its lock goes with it
    # re-entrant in one process
    with exclusive_writer(target, "decoded store"), exclusive_writer(target, "decoded store"):
        assert remove_leftovers(target) == [live]
    assert not live.exists()


def test_atomic_outputs_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    """mkstemp makes 0600 files: without a chmod, results on a shared file system would be
    unreadable to collaborators. The mode is what open() gives: 0666 less the umask."""
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


def test_a_split_asked_for_by_name_must_have_rows():
    require_splits(["train", "test", "test"], ["test", "train"], "manifest m.parquet")
    with pytest.raises(
        IAAError, match=r"^manifest m.parquet has no rows of split\(s\) 'bogus' \(its splits: test, train\)$"
    ):
        require_splits(["train", "test"], ["test", "bogus", "bogus"], "manifest m.parquet")
