"""Errors a user can fix come back as one line naming the file, with exit status 2."""

import subprocess
import sys

import pandas as pd
import pytest

from iaa.cli import main
from iaa.io import write_manifest


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    return err[-1]


def test_missing_manifest_is_named(tmp_path, capsys):
    code = main(["pretrain", "--manifest", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "b.pt")])
    assert code == 2
    assert _one_line_error(capsys).endswith(f"manifest not found: {tmp_path / 'nope.parquet'}")
    assert not (tmp_path / "b.pt").exists()


def test_missing_images_are_counted_and_named(tmp_path, capsys):
    frame = pd.DataFrame(
        {"path": ["a/1.png", "a/2.png"], "label": [0, 0], "split": ["pretrain"] * 2, "class_name": ["a"] * 2}
    )
    write_manifest(tmp_path / "m.parquet", frame, root=tmp_path / "data")
    code = main(["pretrain", "--manifest", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "b.pt")])
    assert code == 2
    line = _one_line_error(capsys)
    assert "2 image(s) listed in the manifest are missing" in line and "a/1.png" in line


def test_unknown_loss_and_bad_settings_are_one_line(tmp_path, capsys):
    args = ["train", "--loss", "arcface", "--method", "iaa", "--out", str(tmp_path / "m.pt")]
    args += ["--history", str(tmp_path / "h.csv"), "--features", str(tmp_path / "f.parquet")]
    assert main([*args, "--settings", '{"mode": "head", "epochz": 1}']) == 2
    assert "epochz" in _one_line_error(capsys)
    assert main([*args, "--settings", '{"mode": "head"}']) == 2
    assert "unknown loss 'arcface'" in _one_line_error(capsys)


def _train_args(tmp_path) -> list[str]:
    return [
        "train", "--loss", "ms", "--method", "iaa", "--features", str(tmp_path / "never-read.parquet"),
        "--out", str(tmp_path / "run" / "model.pt"), "--history", str(tmp_path / "run" / "history.csv"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "extra, names",
    [
        (
            ["--settings", '{"mode": "head", "batch_size": 0}'],
            "--settings: train.batch_size must be a whole number >= 1, not 0",
        ),
        (
            ["--settings", '{"mode": "head", "lr": -0.1}'],
            "--settings: train.lr must be a number > 0, not -0.1",
        ),
        (
            ["--settings", '{"mode": "head", "workers": -1}'],
            "--settings: train.workers must be a whole number >= 0",
        ),
        (
            ["--settings", '{"mode": "head", "compile": 2}'],
            "--settings: train.compile must be true or false, not 2",
        ),
        (["--settings", '{"mode": "head", "lr_milestones": [40, 0]}'], "train.lr_milestones must be a list"),
        (["--settings", '{"mode": "head", "lr_by_loss": {"ms": 0}}'], "train.lr_by_loss must be a mapping"),
        (
            ["--settings", '{"mode": "head", "iaa": {"momentum": 1.5}}'],
            "train.iaa.momentum must be a number from 0 to 1",
        ),
        (
            ["--settings", '{"mode": "head", "batch_size": 4, "samples_per_class": 4}'],
            "train.batch_size (4) must exceed",
        ),
        (
            ["--settings", '{"mode": "head", "iaa": {"sigma_m": -Infinity}}'],
            "train.iaa.sigma_m must be a number > 0, or inf, not -Infinity",
        ),
        (["--settings", '{"mode": "head", "iaa": {"sigma_cv": NaN}}'], "train.iaa.sigma_cv must be"),
    ],
)
def test_train_settings_outside_their_domain_are_one_line(tmp_path, capsys, extra, names):
    """Refused before any data is read or file written: the features file does not exist."""
    assert main([*_train_args(tmp_path), *extra]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("iaa train: error: ") and names in line
    assert not (tmp_path / "run").exists()


def test_sigma_inf_passes_the_settings_check(tmp_path, capsys):
    """Table IX's sigma = inf row (variant sigma-inf) sends Infinity through --settings: it gets
    past the domain check to the missing features file, not refused as out of range."""
    settings = '{"mode": "head", "iaa": {"sigma_m": Infinity, "sigma_cv": Infinity}}'
    assert main([*_train_args(tmp_path), "--settings", settings]) == 2
    line = _one_line_error(capsys)
    assert "--settings" not in line and "file not found" in line, line


def test_pretrain_settings_outside_their_domain_are_one_line(tmp_path, capsys):
    args = ["pretrain", "--manifest", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "b.pt")]
    assert main([*args, "--settings", '{"batch_size": 0}']) == 2
    assert (
        _one_line_error(capsys)
        == "iaa pretrain: error: --settings: pretrain.batch_size must be a whole number >= 1, not 0"
    )
    assert not (tmp_path / "b.pt").exists()


@pytest.mark.parametrize(
    "extra, line",
    [
        (["--workers", "-1"], "iaa train: error: argument --workers: must be a whole number >= 0, not -1"),
        (["--compile", "2"], "iaa train: error: argument --compile: must be 0 or 1, not 2"),
        (
            ["--settings", '{"batch_size": 0}'],
            "iaa train: error: --settings: train.batch_size must be a whole number >= 1, not 0",
        ),
        (
            ["--settings", '{"lr": -1e-4}'],
            "iaa train: error: --settings: train.lr must be a number > 0, not -0.0001",
        ),
    ],
)
def test_the_command_gives_one_line_and_status_2(tmp_path, extra, line):
    """The ``iaa`` command itself, as a tester runs it: one line on stderr, no traceback."""
    run = subprocess.run(
        [sys.executable, "-m", "iaa", *_train_args(tmp_path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == line
    assert not (tmp_path / "run").exists()
