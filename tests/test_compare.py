"""The paper's numbers as transcribed, and the comparison stage against hand-computed values."""

from __future__ import annotations

import json
import math
import statistics
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


def _write(
    root: Path,
    bench: str,
    split: str,
    run: str,
    selected: dict,
    final: dict | None = None,
    selection: str = "best_test",
    recipe: str | None = "released",
) -> Path:
    """A metrics JSON as `iaa evaluate` writes it; ``final`` defaults to numbers compare must ignore."""
    path = root / bench / "metrics" / split / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    final = final if final is not None else {k: 0.01 for k in selected}
    record = {
        "final": {**final, "epoch": 20},
        "selected": {**selected, "epoch": 7},
        "selection": selection,
        "recipe": recipe,
    }
    path.write_text(json.dumps(record))
    return path


FULL = {"recall@1": 0.0, "recall@2": 0.7, "recall@4": 0.8, "recall@8": 0.9, "map@r": 0.2, "rp": 0.3}


def test_compare_uses_the_selected_models_mean_std_and_difference(tmp_path: Path) -> None:
    files = [
        _write(tmp_path, "cub200", "test", "ms-iaa-seed0", {**FULL, "recall@1": 0.60}),
        _write(tmp_path, "cub200", "test", "ms-iaa-seed1", {**FULL, "recall@1": 0.64}),
        _write(tmp_path, "cub200", "test", "pretrained", {"recall@1": 0.4}, selection="last", recipe=None),
        _write(tmp_path, "synth", "test", "ms-iaa-seed0", {"recall@1": 0.9}),
    ]
    table = compare_stage(files, tmp_path / "cmp.md", tmp_path / "cmp.csv")
    values = table[table.kind == "value"]
    r1 = values[(values.table == "III") & (values.metric == "recall@1")].iloc[0]
    assert r1.benchmark == "cub200" and r1.row == "MS+IAA" and r1.seeds == 2
    assert (r1.recipe, r1.selection) == ("released", "best_test")
    assert r1.ours_mean == pytest.approx(62.0)
    assert r1.ours_std == pytest.approx(math.sqrt(((60 - 62) ** 2 + (64 - 62) ** 2) / 1))
    assert r1.difference == pytest.approx(62.0 - 62.1)
    assert set(table.benchmark) == {"cub200"}  # synth and unrun experiments have no published line
    assert set(table.kind) == {"value"}  # no baseline run: no gain
    text = (tmp_path / "cmp.md").read_text()
    assert "| cub200 | test | MS+IAA | released, best test R@1 epoch | 2 | 62.0 ± 2.8 (62.1, -0.1) |" in text
    assert "Table VI" in text and "22.6" in text
    assert "IAA gain" not in text
    csv = pd.read_csv(tmp_path / "cmp.csv")
    assert len(csv) == len(table) and list(csv.columns[:2]) == ["kind", "table"]


def test_iaa_gain_is_paired_by_seed_next_to_the_papers_gain(tmp_path: Path) -> None:
    # selected R@1 and MAP@R per seed; seed 2 has no baseline run, so only seeds 0 and 1 pair
    iaa = {0: (0.61, 0.25), 1: (0.66, 0.24), 2: (0.90, 0.90)}
    base = {0: (0.55, 0.21), 1: (0.57, 0.23)}
    files = []
    for seed, (r1, mapr) in iaa.items():
        files.append(
            _write(tmp_path, "cub200", "test", f"ms-iaa-seed{seed}", {**FULL, "recall@1": r1, "map@r": mapr})
        )
    for seed, (r1, mapr) in base.items():
        files.append(
            _write(
                tmp_path, "cub200", "test", f"ms-baseline-seed{seed}", {**FULL, "recall@1": r1, "map@r": mapr}
            )
        )
    table = compare_stage(files, tmp_path / "cmp.md", tmp_path / "cmp.csv")
    gains = table[table.kind == "gain"].set_index("metric")
    assert set(gains["row"]) == {"MS+IAA"} and set(gains["baseline"]) == {"MS"}

    r1_gain = [100 * (iaa[s][0] - base[s][0]) for s in (0, 1)]  # 6.0 and 9.0 points
    r1 = gains.loc["recall@1"]
    assert r1.seeds == 2
    assert r1.ours_mean == pytest.approx(statistics.mean(r1_gain))
    assert r1.ours_std == pytest.approx(statistics.stdev(r1_gain))
    assert r1.paper == pytest.approx(62.1 - 56.2)  # Table III, CUB R@1: MS+IAA 62.1, MS 56.2
    assert r1.difference == pytest.approx(statistics.mean(r1_gain) - (62.1 - 56.2))
    map_gain = [100 * (iaa[s][1] - base[s][1]) for s in (0, 1)]
    mapr = gains.loc["map@r"]
    assert mapr.table == "VI"
    assert mapr.ours_mean == pytest.approx(statistics.mean(map_gain))
    assert mapr.ours_std == pytest.approx(statistics.stdev(map_gain))
    assert mapr.paper == pytest.approx(22.6 - 20.5)  # Table VI, CUB MAP@R: MS+IAA 22.6, MS 20.5
    assert gains.loc["recall@2"].paper == pytest.approx(73.8 - 68.3)

    text = (tmp_path / "cmp.md").read_text()
    gain_part = text.split("## IAA gain", 1)[1]
    cell = f"{statistics.mean(r1_gain):+.1f} ± {statistics.stdev(r1_gain):.1f} ({62.1 - 56.2:+.1f}, "
    assert f"| cub200 | test | MS | released, best test R@1 epoch | 2 | {cell}" in gain_part
    assert "### Table VI" in gain_part
    csv = pd.read_csv(tmp_path / "cmp.csv")
    assert (csv["kind"] == "gain").sum() == len(gains)
    assert csv.loc[
        (csv["kind"] == "gain") & (csv["metric"] == "recall@1"), "ours_mean"
    ].item() == pytest.approx(statistics.mean(r1_gain), abs=1e-4)


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
