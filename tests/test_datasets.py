"""The five real dataset readers, on miniature copies of each download's layout built here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iaa.benchmarks import get_benchmark
from iaa.cli import main
from iaa.data.datasets import READERS
from iaa.data.datasets.common import warn_if_unofficial
from iaa.data.datasets.resized_cache import CACHE_MARKER
from iaa.errors import IAAError
from iaa.io import read_manifest
from iaa.prepare import prepare_stage


def _image(path: Path, size: tuple[int, int] = (6, 4), shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade % 256, 80, 160)).save(path)


def _lines(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


# --------------------------------------------------------------------------- miniature layouts


def make_cub(root: Path) -> Path:
    folder = root / "CUB_200_2011"
    images, labels = [], []
    for cls in (1, 2, 101, 102):
        for i in range(2):
            rel = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{i}.jpg"
            _image(folder / "images" / rel, shade=cls)
            images.append(f"{len(images) + 1} {rel}")
            labels.append(f"{len(labels) + 1} {cls}")
    _lines(folder / "images.txt", images)
    _lines(folder / "image_class_labels.txt", labels)
    return folder


def make_cars(root: Path) -> Path:
    from scipy.io import savemat

    folder = root / "Cars196"
    classes = [1, 1, 2, 2, 99, 99, 100, 100]
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    ann = np.zeros((1, len(classes)), dtype=[(f, object) for f in fields])
    for i, cls in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        _image(folder / rel, shade=cls)
        ann[0, i] = (rel, np.uint8(1), np.uint8(1), np.uint8(5), np.uint8(3), np.uint8(cls), np.uint8(i % 2))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = [f"Make Model {c}" for c in range(1, 197)]
    savemat(folder / "cars_annos.mat", {"annotations": ann, "class_names": names})
    return folder


def make_sop(root: Path) -> Path:
    folder = root / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path"
    n = 0
    for split, category, super_id, classes in (("train", "bicycle", 1, (1, 2)), ("test", "chair", 2, (3, 4))):
        rows = [header]
        for cls in classes:
            for i in range(2):
                n += 1
                rel = f"{category}_final/{1000 + cls}_{i}.JPG"
                _image(folder / rel, shade=cls)
                rows.append(f"{n} {cls} {super_id} {rel}")
        _lines(folder / f"Ebay_{split}.txt", rows)
    return folder


def make_inshop(root: Path, list_in_eval: bool = True) -> Path:
    folder = root / "InShop"
    rows = []
    plan = {1: ["train", "train"], 2: ["train", "train"], 3: ["query", "gallery", "gallery"]}
    plan[4] = plan[3]
    for item, statuses in plan.items():
        for j, status in enumerate(statuses):
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{j + 1:02d}_1_front.jpg"
            _image(folder / rel, shade=item)
            rows.append(f"{rel}   id_{item:08d}   {status}")
    listed = folder / ("Eval" if list_in_eval else "") / "list_eval_partition.txt"
    _lines(listed, [str(len(rows)), "image_name item_id evaluation_status", *rows])
    return folder


def make_vehicleid(root: Path) -> Path:
    folder = root / "VehicleID_V1.0"
    split_dir = folder / "train_test_split"
    train = [f"{i:05d} {1 + i // 2}" for i in range(1, 5)]  # vehicles 1, 2, 2, 3
    tests = {v: [f"{100 + 2 * v + i:05d} {v}" for i in range(2)] for v in (10, 11, 12)}
    for row in train + [r for rows in tests.values() for r in rows]:
        _image(folder / "image" / f"{row.split()[0]}.jpg", shade=int(row.split()[1]))
    _lines(split_dir / "train_list.txt", train)
    # Nested like the real lists: small within medium within large.
    _lines(split_dir / "test_list_800.txt", tests[10])
    _lines(split_dir / "test_list_1600.txt", tests[10] + tests[11])
    _lines(split_dir / "test_list_2400.txt", tests[10] + tests[11] + tests[12])
    return folder


MAKERS: dict[str, Callable[[Path], Path]] = {
    "cub200": make_cub,
    "cars196": make_cars,
    "sop": make_sop,
    "inshop": make_inshop,
    "vehicleid": make_vehicleid,
}

# split -> (rows, classes) of each miniature copy
EXPECTED = {
    "cub200": {"train": (4, 2), "test": (4, 2)},
    "cars196": {"train": (4, 2), "test": (4, 2)},
    "sop": {"train": (4, 2), "test": (4, 2)},
    "inshop": {"train": (4, 2), "query": (2, 2), "gallery": (4, 2)},
    "vehicleid": {"train": (4, 3), "test-small": (2, 1), "test-medium": (4, 2), "test-large": (6, 3)},
}


def _prepare(name: str, root: Path, out: Path, **kw) -> pd.DataFrame:
    return prepare_stage(name, out, root=root, workers=2, **kw)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_each_reader_writes_a_manifest_and_warns_about_counts(name, tmp_path, caplog):
    folder = MAKERS[name](tmp_path / "data")
    out = tmp_path / "manifest.parquet"
    with caplog.at_level(logging.WARNING):
        _prepare(name, tmp_path / "data", out)
    manifest = read_manifest(out)
    assert manifest.root == folder.resolve()
    frame = manifest.frame
    got = {s: (len(g), g["label"].nunique()) for s, g in frame.groupby("split")}
    assert got == EXPECTED[name]
    assert all(p.is_file() for p in manifest.absolute_paths())
    assert frame["label"].dtype == np.int64
    assert frame.groupby("label")["class_name"].nunique().eq(1).all()
    # Train and evaluation classes are disjoint (In-Shop's query and gallery share theirs).
    evaluated = set(frame.loc[frame["split"] != "train", "label"])
    assert not evaluated & set(frame.loc[frame["split"] == "train", "label"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"{name}: found ") and "official release" in warnings[0]


def test_labels_splits_and_class_names_keep_the_datasets_own_ids(tmp_path):
    for make in MAKERS.values():
        make(tmp_path)
    cub = _prepare("cub200", tmp_path, tmp_path / "cub.parquet")
    assert set(cub.loc[cub["split"] == "train", "label"]) == {1, 2}
    assert set(cub.loc[cub["split"] == "test", "label"]) == {101, 102}
    assert cub["path"].iloc[0] == "images/001.Bird_1/Bird_1_0.jpg"
    assert cub["class_name"].iloc[0] == "001.Bird_1"

    cars = _prepare("cars196", tmp_path, tmp_path / "cars.parquet")
    assert set(cars.loc[cars["split"] == "test", "label"]) == {99, 100}
    assert cars["path"].iloc[0] == "car_ims/000001.jpg"
    assert cars.set_index("label")["class_name"].to_dict()[99] == "Make Model 99"

    sop = _prepare("sop", tmp_path, tmp_path / "sop.parquet")
    assert set(sop.loc[sop["split"] == "test", "label"]) == {3, 4}
    assert sop["class_name"].iloc[0] == "bicycle_1"

    shop = _prepare("inshop", tmp_path, tmp_path / "inshop.parquet")
    assert set(shop.loc[shop["split"] == "query", "label"]) == {3, 4}
    assert set(shop.loc[shop["split"] == "gallery", "label"]) == {3, 4}
    assert shop["class_name"].iloc[0] == "id_00000001"

    vid = _prepare("vehicleid", tmp_path, tmp_path / "vid.parquet")
    assert vid["path"].iloc[0] == "image/00001.jpg"  # leading zeros survive
    shared = vid[vid["path"] == "image/00120.jpg"]
    assert sorted(shared["split"]) == ["test-large", "test-medium", "test-small"]
    assert set(shared["label"]) == {10}


@pytest.mark.parametrize("in_eval", [True, False], ids=["Eval", "root"])
def test_inshop_list_is_found_in_either_place(tmp_path, in_eval):
    make_inshop(tmp_path, list_in_eval=in_eval)
    frame = _prepare("inshop", tmp_path, tmp_path / "m.parquet")
    assert len(frame) == 10


def test_root_may_be_the_dataset_folder_itself(tmp_path):
    folder = make_cub(tmp_path)
    assert len(_prepare("cub200", folder, tmp_path / "m.parquet")) == 8


@pytest.mark.parametrize("name", sorted(READERS))
def test_official_counts_raise_no_warning(name, caplog):
    reader = READERS[name]
    frames = []
    for split, (images, classes) in reader.official.items():
        n = images if images is not None else 2 * classes
        frames.append(pd.DataFrame({"split": split, "label": np.arange(n) % classes}))
    with caplog.at_level(logging.WARNING):
        assert not warn_if_unofficial(reader, pd.concat(frames))
    assert not caplog.records


def test_real_benchmarks_are_registered():
    assert get_benchmark("inshop").eval_splits == ("query",)
    assert get_benchmark("sop").recall_k == (1, 10, 100, 1000)
    vid = get_benchmark("vehicleid")
    assert vid.eval_splits == ("test-small", "test-medium", "test-large") and vid.recall_k == (1, 5)
    assert all(not get_benchmark(n).builtin and get_benchmark(n).dataset == n for n in READERS)


# --------------------------------------------------------------------------- bad input


def test_missing_root_and_missing_root_option(tmp_path):
    out = tmp_path / "m.parquet"
    with pytest.raises(IAAError, match="dataset root not found: .*nope .*CUB_200_2011/"):
        _prepare("cub200", tmp_path / "nope", out)
    with pytest.raises(IAAError, match="pass --root DIR"):
        prepare_stage("cub200", out)
    with pytest.raises(IAAError, match="pass --data-dir DIR"):
        prepare_stage("synth", out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("cub200", "Caltech"),
        ("cars196", "Stanford AI Lab"),
        ("sop", "cvgl.stanford.edu"),
        ("inshop", "mmlab.ie.cuhk.edu.hk"),
        ("vehicleid", "PKU"),
    ],
)
def test_missing_dataset_folder_says_what_and_where_to_download(name, where, tmp_path):
    reader = READERS[name]
    with pytest.raises(IAAError) as err:
        _prepare(name, tmp_path, tmp_path / "m.parquet")
    message = str(err.value)
    assert f"folder {reader.folder}/ not found in {tmp_path}" in message
    assert reader.layout in message and where in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "relpath"),
    [
        ("cub200", "image_class_labels.txt"),
        ("cars196", "cars_annos.mat"),
        ("sop", "Ebay_test.txt"),
        ("vehicleid", "train_test_split/test_list_1600.txt"),
    ],
)
def test_missing_list_file_is_named(name, relpath, tmp_path):
    folder = MAKERS[name](tmp_path)
    (folder / relpath).unlink()
    with pytest.raises(IAAError, match=f"list file {relpath} not found in {folder}"):
        _prepare(name, tmp_path, tmp_path / "m.parquet")


def test_missing_inshop_list_names_both_places(tmp_path):
    folder = make_inshop(tmp_path)
    (folder / "Eval" / "list_eval_partition.txt").unlink()
    with pytest.raises(IAAError, match=f"list_eval_partition.txt not found in {folder} or {folder / 'Eval'}"):
        _prepare("inshop", tmp_path, tmp_path / "m.parquet")


def test_malformed_list_row_is_named(tmp_path):
    folder = make_cub(tmp_path)
    labels = folder / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("3 2\n", "3 two\n"))
    with pytest.raises(
        IAAError, match=r"line 3 of .*image_class_labels.txt: label is not an integer \('two'\)"
    ):
        _prepare("cub200", tmp_path, tmp_path / "m.parquet")


def test_missing_image_is_named_and_nothing_is_written(tmp_path):
    folder = make_cub(tmp_path)
    (folder / "images/002.Bird_2/Bird_2_1.jpg").unlink()
    out = tmp_path / "m.parquet"
    with pytest.raises(IAAError) as err:
        _prepare("cub200", tmp_path, out)
    assert "1 listed image(s) do not exist (e.g. images/002.Bird_2/Bird_2_1.jpg)" in str(err.value)
    assert "--skip-bad-images" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".m.parquet*"))


def test_corrupt_images_are_counted_or_skipped(tmp_path, caplog):
    folder = make_sop(tmp_path)
    bad = ["bicycle_final/1001_0.JPG", "chair_final/1004_1.JPG"]
    (folder / bad[0]).write_bytes(b"not an image")
    (folder / bad[1]).write_bytes(b"")
    out = tmp_path / "m.parquet"
    with pytest.raises(IAAError) as err:
        _prepare("sop", tmp_path, out)
    message = str(err.value)
    assert "2 image(s) cannot be read" in message and bad[0] in message and bad[1] in message
    assert "\n" not in message and not out.exists()

    with caplog.at_level(logging.WARNING):
        frame = _prepare("sop", tmp_path, out, skip_bad_images=True)
    assert len(frame) == 6 and not set(bad) & set(frame["path"])
    assert len(read_manifest(out).frame) == 6
    assert any("dropping 2 bad image(s)" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- resized cache


def test_resized_cache_squashes_big_images_and_skips_fresh_ones(tmp_path, caplog):
    folder = make_sop(tmp_path / "data")
    big = "bicycle_final/1001_0.JPG"
    _image(folder / big, size=(600, 400))
    cache, out = tmp_path / "cache", tmp_path / "m.parquet"
    _prepare("sop", tmp_path / "data", out, resized_cache=cache)
    manifest = read_manifest(out)
    assert manifest.root == cache.resolve()
    assert all(p.is_file() for p in manifest.absolute_paths())
    with Image.open(cache / big) as img:
        assert img.size == (256, 256) and img.format == "JPEG"  # squashed: SPEC 3's first step
    small = "bicycle_final/1002_0.JPG"
    assert (cache / small).read_bytes() == (folder / small).read_bytes()  # never upscaled
    assert not list(cache.rglob("*.tmp"))

    stamp = (cache / big).stat().st_mtime_ns
    _prepare("sop", tmp_path / "data", out, resized_cache=cache)
    assert (cache / big).stat().st_mtime_ns == stamp  # fresh: skipped

    _prepare("sop", tmp_path / "data", out, resized_cache=cache, cache_size=128)
    with Image.open(cache / big) as img:
        assert img.size == (128, 128)
    assert '"square_side": 128' in (cache / CACHE_MARKER).read_text()

    stamp = (cache / big).stat().st_mtime_ns
    _prepare(
        "sop", tmp_path / "data", out, resized_cache=cache, cache_size=128, cache_interpolation="lanczos"
    )
    assert (cache / big).stat().st_mtime_ns != stamp  # another filter: rebuilt
    assert '"interpolation": "lanczos"' in (cache / CACHE_MARKER).read_text()


def test_no_cache_square_reads_the_originals(tmp_path, caplog):
    folder = make_cub(tmp_path / "data")
    _image(folder / "images/001.Bird_1/Bird_1_0.jpg", size=(600, 400))
    cache, out = tmp_path / "cache", tmp_path / "m.parquet"
    with caplog.at_level(logging.INFO):
        _prepare("cub200", tmp_path / "data", out, resized_cache=cache, cache_square=False)
    assert read_manifest(out).root == folder.resolve()
    assert not cache.exists() or not any(cache.rglob("*.jpg"))
    assert any("no resized cache" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)


def test_bad_cache_interpolation_is_one_line(tmp_path):
    make_cub(tmp_path)
    with pytest.raises(
        IAAError, match="unknown --cache-interpolation 'cubic'; expected one of bilinear, lanczos"
    ):
        _prepare(
            "cub200",
            tmp_path,
            tmp_path / "m.parquet",
            resized_cache=tmp_path / "c",
            cache_interpolation="cubic",
        )


# --------------------------------------------------------------------------- CLI


def test_cli_prepare_reports_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "m.parquet"
    code = main(["prepare", "cars196", "--root", str(tmp_path), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("iaa prepare: error: cars196: folder Cars196/ not found")
    assert not out.exists()

    make_cars(tmp_path)
    args = ["--threads", "2", "prepare", "cars196", "--root", str(tmp_path), "--out", str(out)]
    assert main([*args, "--resized-cache", str(tmp_path / "cache"), "--cache-size", "64"]) == 0
    assert read_manifest(out).root == (tmp_path / "cache").resolve()
