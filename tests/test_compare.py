"""The paper's numbers as transcribed, and the comparison stage against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from iaa.compare import compare_stage
from iaa.errors import IAAError
from iaa.paper import PAPER_NUMBERS, paper_numbers


def _value(table: str, bench: str, split: str, row: str, metric: str) -> float:
    (hit,) = [
        p.value
        for p in PAPER_NUMBERS
        if (p.table, p.benchmark, p.split, p.row, p.metric) == (table, bench, split, row, metric)
    ]
    return hit


def test_paper_numbers_spot_checks_against_spec() -> None:
    # 6 rows x 14 columns, 2 x 12, 2 x 6, 6 x 8 numbers in Tables III, IV, V, VI
    counts = pd.Series([p.table for p in PAPER_NUMBERS]).value_counts().to_dict()
    assert counts == {"III": 84, "IV": 24, "V": 12, "VI": 48}
    assert _value("III", "cars196", "test", "MS+IAA", "recall@1") == 84.2
    assert _value("III", "sop", "test", "Triplet", "recall@100") == 94.9
    assert _value("III", "inshop", "query", "Contrastive+IAA", "recall@20") == 98.2
    assert _value("III", "vehicleid", "test-medium", "Triplet", "recall@5") == 93.3
    assert _value("IV", "cub200-resnet50", "test", "MS+IAA", "recall@4") == 86.4
    assert _value("IV", "inshop-bn_inception", "query", "MS+IAA", "recall@1") == 92.0
    assert _value("V", "vehicleid-resnet50", "test-large", "MS+IAA", "recall@5") == 96.9
    assert _value("V", "vehicleid-bn_inception", "test-small", "MS+IAA", "recall@1") == 95.4
    assert _value("VI", "cars196", "test", "MS+IAA", "map@r") == 27.6
    assert _value("VI", "inshop", "query", "Triplet", "rp") == 63.2
    assert {p.benchmark for p in paper_numbers("cub200")} == {"cub200"}


def _write(root: Path, bench: str, split: str, run: str, values: dict) -> Path:
    path = root / bench / "metrics" / split / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


FULL = {"recall@1": 0.0, "recall@2": 0.7, "recall@4": 0.8, "recall@8": 0.9, "map@r": 0.2, "rp": 0.3}


def test_compare_mean_std_and_difference(tmp_path: Path) -> None:
    files = [
        _write(tmp_path, "cub200", "test", "ms-iaa-seed0", {**FULL, "recall@1": 0.60}),
        _write(tmp_path, "cub200", "test", "ms-iaa-seed1", {**FULL, "recall@1": 0.64}),
        _write(tmp_path, "cub200", "test", "pretrained", {"recall@1": 0.4}),
        _write(tmp_path, "synth", "test", "ms-iaa-seed0", {"recall@1": 0.9}),
    ]
    table = compare_stage(files, tmp_path / "cmp.md", tmp_path / "cmp.csv")
    r1 = table[(table.table == "III") & (table.metric == "recall@1")].iloc[0]
    assert r1.benchmark == "cub200" and r1.row == "MS+IAA" and r1.seeds == 2
    assert r1.ours_mean == pytest.approx(62.0)
    assert r1.ours_std == pytest.approx(math.sqrt(((60 - 62) ** 2 + (64 - 62) ** 2) / 1))
    assert r1.difference == pytest.approx(62.0 - 62.1)
    assert set(table.benchmark) == {"cub200"}  # synth and unrun experiments have no published line
    text = (tmp_path / "cmp.md").read_text()
    assert "62.0 ± 2.8 (62.1, -0.1)" in text
    assert "Table VI" in text and "22.6" in text
    assert len(pd.read_csv(tmp_path / "cmp.csv")) == len(table)


def test_compare_rejects_foreign_paths(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(IAAError, match="expected"):
        compare_stage([bad], tmp_path / "a.md", tmp_path / "a.csv")


def test_compare_missing_metric_is_an_error(tmp_path: Path) -> None:
    files = [_write(tmp_path, "cub200", "test", "ms-iaa-seed0", {"recall@1": 0.6})]
    with pytest.raises(IAAError, match="recall@2"):
        compare_stage(files, tmp_path / "a.md", tmp_path / "a.csv")
    assert not (tmp_path / "a.md").exists()
