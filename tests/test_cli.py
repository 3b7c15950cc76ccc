"""Errors a user can fix come back as one line naming the file, with exit status 2."""

import pandas as pd

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
