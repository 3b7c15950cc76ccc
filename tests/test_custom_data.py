"""Your own images: ``iaa prepare folder`` and ``iaa prepare csv`` on tiny trees built here."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from iaa.cli import main
from iaa.data.datasets.custom import split_classes
from iaa.errors import IAAError
from iaa.io import read_manifest
from iaa.prepare import prepare_stage

CLASSES = ("ant", "bee", "cat", "dog", "eel", "fox")

ROOT = Path(__file__).resolve().parents[1]


def _image(path: Path, mode: str = "RGB", shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (shade % 256, 80, 160), "L": shade % 256, "CMYK": (shade % 256, 10, 20, 30)}[mode]
    Image.new(mode, (6, 4), color).save(path, format="JPEG" if path.suffix == ".jpg" else None)


def make_tree(root: Path) -> list[str]:
    """Six classes of four images each (one in a nested folder), a grayscale and a CMYK JPEG,
    plus things to skip: a hidden file, a hidden folder, a non-image, a file beside the classes."""
    paths = []
    for c, cls in enumerate(CLASSES):
        for i in range(4):
            rel = f"{cls}/deeper/{i}.jpg" if (cls == "bee" and i == 3) else f"{cls}/{i}.png"
            if cls == "cat" and i == 0:
                rel, mode = f"{cls}/gray.jpg", "L"
            elif cls == "dog" and i == 0:
                rel, mode = f"{cls}/cmyk.jpg", "CMYK"
            else:
                mode = "RGB"
            _image(root / rel, mode, shade=10 * c + i)
            paths.append(rel)
    (root / "ant" / ".DS_Store").write_bytes(b"\0junk")
    _image(root / "eel" / ".thumbs" / "t.png")
    (root / "fox" / "notes.txt").write_text("not an image\n")
    (root / "README.txt").write_text("about my images\n")
    return sorted(paths)


def _table(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def _rows(paths: list[str]) -> list[dict]:
    return [{"path": p, "label": p.split("/")[0]} for p in paths]


# --------------------------------------------------------------------------- folder


def test_folder_counts_labels_and_sorted_half_split(tmp_path, caplog):
    root = tmp_path / "imgs"
    paths = make_tree(root)
    out = tmp_path / "m.parquet"
    with caplog.at_level(logging.INFO):
        frame = prepare_stage("folder", out, root=root, workers=2)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1
    assert "skipped 2 hidden file(s), 2 non-image file(s)" in skipped[0]
    manifest = read_manifest(out)
    assert manifest.root == root.resolve()
    got = manifest.frame
    assert sorted(got["path"]) == paths and len(got) == 24
    assert "bee/deeper/3.jpg" in set(got["path"])
    names = dict(zip(got["class_name"], got["label"], strict=False))
    assert names == {c: i for i, c in enumerate(CLASSES)}
    train = set(got.loc[got["split"] == "train", "class_name"])
    test = set(got.loc[got["split"] == "test", "class_name"])
    assert train == {"ant", "bee", "cat"} and test == {"dog", "eel", "fox"}
    assert len(frame) == 24


def test_folder_random_split_is_disjoint_and_seeded(tmp_path):
    root = tmp_path / "imgs"
    make_tree(root)
    splits = []
    for seed in (1, 1, 2):
        got = prepare_stage("folder", tmp_path / f"m{seed}.parquet", root=root, test_fraction=0.34, seed=seed)
        by = got.groupby("class_name")["split"].nunique()
        assert (by == 1).all()  # each class entirely in one split
        test = frozenset(got.loc[got["split"] == "test", "class_name"])
        assert len(test) == 2
        splits.append(test)
    assert splits[0] == splits[1]


def test_split_classes_edges():
    assert split_classes([3, 1, 2], "x") == {3}
    with pytest.raises(IAAError, match="found 1 class"):
        split_classes(["a"], "x")
    with pytest.raises(IAAError, match="--test-fraction must be between 0 and 1"):
        split_classes(["a", "b"], "x", test_fraction=1.0)
    assert len(split_classes(list("abcd"), "x", test_fraction=0.01)) == 1  # at least one test class


def test_folder_corrupt_image_fails_or_is_skipped(tmp_path, caplog):
    root = tmp_path / "imgs"
    make_tree(root)
    (root / "ant" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "m.parquet"
    with pytest.raises(IAAError, match=r"folder: 1 image\(s\) cannot be read \(e.g. ant/0.png") as err:
        prepare_stage("folder", out, root=root)
    assert "\n" not in str(err.value) and not out.exists()
    with caplog.at_level(logging.WARNING):
        got = prepare_stage("folder", out, root=root, skip_bad_images=True)
    assert len(got) == 23


def test_folder_missing_root_and_empty_root(tmp_path):
    with pytest.raises(IAAError, match="folder: image folder not found"):
        prepare_stage("folder", tmp_path / "m.parquet", root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IAAError, match="folder: no images found"):
        prepare_stage("folder", tmp_path / "m.parquet", root=tmp_path / "empty")
    with pytest.raises(IAAError, match="pass --root DIR"):
        prepare_stage("folder", tmp_path / "m.parquet")


# --------------------------------------------------------------------------- csv


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_without_split_splits_classes(tmp_path, suffix):
    root = tmp_path / "imgs"
    paths = make_tree(root)
    table = _table(tmp_path / f"t{suffix}", _rows(paths))
    got = prepare_stage("csv", tmp_path / "m.parquet", root=root, manifest=table)
    assert len(got) == 24
    assert set(got.loc[got["split"] == "test", "class_name"]) == {"dog", "eel", "fox"}
    assert dict(zip(got["class_name"], got["label"], strict=False)) == {c: i for i, c in enumerate(CLASSES)}


def test_csv_keeps_integer_labels_and_given_query_gallery_split(tmp_path):
    root = tmp_path / "imgs"
    paths = make_tree(root)
    rows = []
    for p in paths:
        cls = CLASSES.index(p.split("/")[0])
        split = "train" if cls < 3 else ("query" if p.endswith(("0.png", "1.png", ".jpg")) else "gallery")
        rows.append({"path": p, "label": 100 + cls, "split": split})
    got = prepare_stage("csv", tmp_path / "m.parquet", root=root, manifest=_table(tmp_path / "t.csv", rows))
    assert set(got["split"]) == {"train", "query", "gallery"}
    assert sorted(got["label"].unique()) == [100, 101, 102, 103, 104, 105]
    assert read_manifest(tmp_path / "m.parquet").frame["label"].dtype == "int64"


def _error(tmp_path, capsys, rows: list[dict] | None, *extra: str) -> str:
    root = tmp_path / "imgs"
    if not root.exists():
        make_tree(root)
    args = ["prepare", "csv", "--root", str(root), "--out", str(tmp_path / "m.parquet")]
    if rows is not None:
        args += ["--manifest", str(_table(tmp_path / "t.csv", rows))]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "m.parquet").exists()
    return err[-1]


def test_csv_bad_tables_fail_with_one_line(tmp_path, capsys):
    paths = make_tree(tmp_path / "imgs")
    rows = _rows(paths)
    line = _error(tmp_path, capsys, [{"path": r["path"], "class": r["label"]} for r in rows])
    assert "csv: " in line and "lacks column(s) label; expected path, label and optionally split" in line
    line = _error(
        tmp_path, capsys, [{**r, "split": "val" if i == 0 else "train"} for i, r in enumerate(rows)]
    )
    assert "has split value 'val'; expected train/test or train/query/gallery" in line
    line = _error(
        tmp_path, capsys, [*rows, {"path": "ant/nope.png", "label": "ant"}, {"path": "x.png", "label": "x"}]
    )
    assert "csv: 2 listed image(s) do not exist (e.g. ant/nope.png, x.png)" in line
    assert "pass --skip-bad-images" in line
    line = _error(tmp_path, capsys, [*rows, rows[0], rows[1]])
    assert "csv: 2 path(s) appear more than once in" in line and f"(e.g. {rows[0]['path']}" in line
    line = _error(tmp_path, capsys, [{**r, "split": "train"} for r in rows])
    assert "has splits train; needs train and test, or train, query and gallery" in line
    line = _error(tmp_path, capsys, None)
    assert (
        line
        == "iaa prepare: error: csv: pass --manifest FILE.csv or FILE.parquet (columns path, label[, split])"
    )


def test_csv_skip_bad_images_drops_missing_paths(tmp_path, caplog):
    root = tmp_path / "imgs"
    rows = _rows(make_tree(root))
    table = _table(tmp_path / "t.csv", [*rows, {"path": "ant/nope.png", "label": "ant"}])
    with caplog.at_level(logging.WARNING):
        got = prepare_stage("csv", tmp_path / "m.parquet", root=root, manifest=table, skip_bad_images=True)
    assert len(got) == 24
    assert any("dropping 1 bad image(s)" in r.getMessage() for r in caplog.records)


def test_single_image_test_class_warns_and_is_counted(tmp_path, caplog):
    root = tmp_path / "imgs"
    rows = _rows(make_tree(root))
    # fox keeps a single image; it tests (second half), where it can never be retrieved.
    rows = [r for r in rows if r["label"] != "fox" or r["path"] == "fox/0.png"]
    with caplog.at_level(logging.WARNING):
        got = prepare_stage(
            "csv", tmp_path / "m.parquet", root=root, manifest=_table(tmp_path / "t.csv", rows)
        )
    assert len(got) == 21
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        "csv: 1 evaluated class(es) have a single image and can never be retrieved (e.g. test:fox)"
        in warnings[0]
    )


def test_cli_prepare_folder_writes_the_manifest(tmp_path):
    root = tmp_path / "imgs"
    make_tree(root)
    out = tmp_path / "m.parquet"
    args = [
        "prepare",
        "folder",
        "--root",
        str(root),
        "--out",
        str(out),
        "--test-fraction",
        "0.5",
        "--seed",
        "3",
    ]
    assert main(args) == 0
    got = read_manifest(out).frame
    assert len(got) == 24 and got.groupby("split")["class_name"].nunique().to_dict() == {
        "test": 3,
        "train": 3,
    }


# --------------------------------------------------------------------------- registry


def test_register_benchmark_makes_a_custom_dataset_a_benchmark(monkeypatch):
    from iaa import benchmarks

    monkeypatch.setattr(benchmarks, "BENCHMARKS", dict(benchmarks.BENCHMARKS))
    bench = benchmarks.register_benchmark("my_birds", arch="resnet50", recall_k=(8, 1, 2))
    assert benchmarks.get_benchmark("my_birds") == bench
    assert (bench.dataset, bench.arch, bench.recall_k, bench.builtin) == (
        "my_birds",
        "resnet50",
        (1, 2, 8),
        False,
    )
    assert benchmarks.register_benchmark("my_birds", arch="resnet50", recall_k=(1, 2, 8)) == bench
    with pytest.raises(IAAError, match="'my_birds' is already registered with other settings"):
        benchmarks.register_benchmark("my_birds")
    for name in ("cub200", "cub200-resnet50", "folder", "synth"):
        with pytest.raises(IAAError, match="is a built-in benchmark or prepare form"):
            benchmarks.register_benchmark(name)
    with pytest.raises(IAAError, match="bad dataset name"):
        benchmarks.register_benchmark("9 lives")
    with pytest.raises(IAAError, match="unknown backbone 'vgg'"):
        benchmarks.register_benchmark("shop", arch="vgg")
    shop = benchmarks.register_benchmark("shop", eval_splits=("query",))
    assert shop.embed_splits == ("train", "query", "gallery")


# --------------------------------------------------------------------------- in the workflow


def _dry_run(workdir: Path, overlay: dict) -> subprocess.CompletedProcess:
    path = workdir / "mine.yaml"
    path.write_text(yaml.safe_dump(overlay))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "-n", "-p", "--cores", "2", "all",
        "--configfile", str(ROOT / "config" / "config.yaml"), str(path),
        "--config", f"results_dir={workdir / 'results'}",
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_dataset_of_your_own_is_a_benchmark_of_the_workflow(tmp_path):
    make_tree(tmp_path / "pics")
    overlay = {
        "benchmarks": ["mine", "mine-resnet50"],
        "seeds": [0],
        "datasets": {"mine": {"format": "folder", "root": str(tmp_path / "pics"), "recall_k": [1, 2]}},
        "train": {"epochs": 40},
    }
    result = _dry_run(tmp_path, overlay)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = {
        p[0]: int(p[1])
        for line in result.stdout.splitlines()
        if len(p := line.split()) == 2 and p[1].isdigit()
    }
    # one manifest shared by both backbones; losses x methods x seeds x 2 experiments
    assert counts["prepare"] == 1 and counts["train"] == 3 * 2 * 1 * 2 and "pretrain" not in counts
    shell = result.stdout
    assert "prepare folder --out" in shell and f"--root {tmp_path / 'pics'}" in shell
    assert "extract --arch googlenet --splits train,test" in shell
    assert "extract --arch resnet50 --splits train,test" in shell
    assert "--recall-k 1,2" in shell


def test_a_misspelt_dataset_or_override_fails_before_any_job(tmp_path):
    make_tree(tmp_path / "pics")
    own = {"mine": {"format": "folder", "root": str(tmp_path / "pics")}}
    result = _dry_run(tmp_path, {"benchmarks": ["mien"], "datasets": own})
    assert result.returncode != 0 and "unknown benchmark 'mien'" in result.stderr + result.stdout
    result = _dry_run(
        tmp_path, {"benchmarks": ["mine"], "datasets": own, "benchmark_overrides": {"mien": {}}}
    )
    assert (
        result.returncode != 0
        and "benchmark_overrides: unknown benchmark 'mien'" in result.stderr + result.stdout
    )
    result = _dry_run(tmp_path, {"benchmarks": ["cub200"], "datasets": {"cub200": own["mine"]}})
    assert result.returncode != 0 and "datasets.cub200" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_stages_take_a_dataset_of_your_own_by_arch_and_splits(tmp_path, monkeypatch):
    """What the workflow runs for `mine`: prepare folder, then extract and export told the
    backbone and the splits (a fresh `iaa` process has no registry of your datasets)."""
    from tests.test_real_pipeline import fake_imagenet_googlenet

    make_tree(tmp_path / "pics")
    weights = fake_imagenet_googlenet(tmp_path, monkeypatch)
    manifest, features = tmp_path / "manifest.parquet", tmp_path / "features.parquet"
    assert main(["prepare", "folder", "--root", str(tmp_path / "pics"), "--out", str(manifest)]) == 0
    rc = main([
        "extract", "--arch", "googlenet", "--splits", "train", "test", "--manifest", str(manifest),
        "--weights", str(weights), "--no-download", "--out", str(features), "--image-size", "32",
        "--resize", "36",
    ])  # fmt: skip
    assert rc == 0
    table = pd.read_parquet(features)
    assert len(table) == 24 and sorted(set(table["split"])) == ["test", "train"]
    assert len(table["embedding"].iloc[0]) == 1024  # GoogLeNet's pooled features
