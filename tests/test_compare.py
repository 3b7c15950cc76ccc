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


# ----------------------------------------------------------------------------- ablations (VII-XII)

ABLATION_HEADER = "table,benchmark,row,column,mean,std,seeds,paper,diff\n"


def _ablation_csv(path: Path, lines: list[str]) -> Path:
    path.write_text(ABLATION_HEADER + "\n".join(lines) + "\n")
    return path


def _line(table: pd.DataFrame, tab: str, bench: str, row: str, column: str) -> pd.Series:
    hit = table[
        (table.kind == "ablation")
        & (table.table == tab)
        & (table.benchmark == bench)
        & (table.row == row)
        & (table.metric == column)
    ]
    assert len(hit) == 1, (tab, bench, row, column)
    return hit.iloc[0]


def test_compare_ablation_tables(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = [_write(tmp_path, "cub200", "test", "ms-iaa-seed0", {**FULL, "recall@1": 0.60})]
    ix = _ablation_csv(
        tmp_path / "ix.csv",
        [
            # written out of the paper's order; an extra lambda=0 row; a stale paper value for IAA
            "IX,cub200,IAA,R@1,58.0,0.5,3,99.9,-41.9",
            "IX,cub200,lambda=0,R@1,54.0,0.3,3,,",
            "IX,cub200,Baseline,R@1,55.0,1.0,3,54.4,0.6",
            "IX,cub200,alpha=0,R@1,57.5,0.2,3,,",
            "IX,cub200,identity,R@1,51.0,0.0,1,50.8,0.2",
        ],
    )
    x = _ablation_csv(
        tmp_path / "x.csv",
        ["X,cars196,margin,baseline,75.0,0.4,2,75.4,-0.4", "X,cars196,margin,IAA,78.0,0.6,2,,"],
    )
    table = compare_stage(metrics, tmp_path / "cmp.md", tmp_path / "cmp.csv", ablation_tables=[ix, x])
    assert set(table.kind) == {"value", "ablation"}
    assert len(table[table.kind == "value"]) == 5  # Tables III (R@1/2/4) and VI on CUB, unchanged

    ab = table[table.kind == "ablation"]
    # IX/cub200: the paper's rows (Baseline, identity, global, diagonal, IAA), in its order, ours
    # it lacks (alpha=0 is '-' on CUB) in between, our extra lambda=0 last
    ix_rows = list(ab[ab.table == "IX"]["row"])
    assert ix_rows == ["Baseline", "identity", "global", "diagonal", "alpha=0", "IAA", "lambda=0"]
    base = _line(table, "IX", "cub200", "Baseline", "R@1")
    assert (base.ours_mean, base.ours_std, base.seeds, base.paper) == (55.0, 1.0, 3, 54.4)
    assert base.difference == pytest.approx(55.0 - 54.4)
    iaa = _line(table, "IX", "cub200", "IAA", "R@1")
    assert iaa.paper == 58.9 and iaa.difference == pytest.approx(58.0 - 58.9)  # the paper's, not the CSV's
    assert "differs from the paper's" in caplog.text
    lam = _line(table, "IX", "cub200", "lambda=0", "R@1")
    assert lam.ours_mean == 54.0 and math.isnan(lam.paper) and math.isnan(lam.difference)
    glob = _line(table, "IX", "cub200", "global", "R@1")  # the paper's, not run by us
    assert (
        glob.paper == 54.9 and glob.seeds == 0 and math.isnan(glob.ours_mean) and math.isnan(glob.difference)
    )
    assert set(ab[ab.table == "IX"]["benchmark"]) == {"cub200"}  # no SOP/In-Shop lines: not run

    # X/cars196: every paper row, in its order; margin ours
    assert list(dict.fromkeys(ab[ab.table == "X"]["row"])) == [
        "distance_weighted", "margin", "circle", "norm_softmax", "proxy_nca", "soft_triple",
    ]  # fmt: skip
    assert list(ab[ab.table == "X"]["metric"][:2]) == ["baseline", "IAA"]
    m_iaa = _line(table, "X", "cars196", "margin", "IAA")
    assert m_iaa.paper == 77.6 and m_iaa.difference == pytest.approx(78.0 - 77.6)
    assert list(dict.fromkeys(ab["table"])) == ["IX", "X"]

    text = (tmp_path / "cmp.md").read_text()
    assert text.index("## Table VI:") < text.index("## Table IX:") < text.index("## Table X:")
    ix_part = text.split("## Table IX:", 1)[1].split("## Table X:", 1)[0]
    assert "| benchmark | row | seeds | R@1 |" in ix_part
    assert "| cub200 | Baseline | 3 | 55.0 ± 1.0 (54.4, +0.6) |" in ix_part
    assert "| cub200 | identity | 1 | 51.0 (50.8, +0.2) |" in ix_part
    assert "| cub200 | global | - | - (54.9, -) |" in ix_part
    assert "| cub200 | alpha=0 | 3 | 57.5 ± 0.2 (-, -) |" in ix_part
    assert "| cub200 | IAA | 3 | 58.0 ± 0.5 (58.9, -0.9) |" in ix_part
    assert "| cub200 | lambda=0 | 3 | 54.0 ± 0.3 (-, -) |" in ix_part
    assert ix_part.index("| cub200 | IAA |") < ix_part.index("| cub200 | lambda=0 |")
    x_part = text.split("## Table X:", 1)[1]
    assert "| benchmark | row | seeds | baseline | IAA |" in x_part
    assert "| cars196 | margin | 2 | 75.0 ± 0.4 (75.4, -0.4) | 78.0 ± 0.6 (77.6, +0.4) |" in x_part
    assert "| cars196 | circle | - | - (80.8, -) | - (81.0, -) |" in x_part

    csv = pd.read_csv(tmp_path / "cmp.csv")
    assert len(csv) == len(table)
    lam_csv = csv[(csv["kind"] == "ablation") & (csv["row"] == "lambda=0")].iloc[0]
    assert lam_csv["ours_mean"] == 54.0 and math.isnan(lam_csv["paper"]) and lam_csv["metric"] == "R@1"


def test_compare_ablation_correlations_and_column_order(tmp_path: Path) -> None:
    metrics = [_write(tmp_path, "cub200", "test", "ms-iaa-seed0", {**FULL, "recall@1": 0.60})]
    csv = _ablation_csv(
        tmp_path / "abl.csv",
        [
            "VIII,synth,mu2-sigma,p=2,0.812,0.01,2,,",
            "XI,cub200,N=3,with correction,56.0,0.0,1,,",
            "XI,cub200,N=3,without correction,55.0,0.0,1,,",
            "XI,cub200,Baseline,R@1,54.0,0.0,1,,",
        ],
    )
    table = compare_stage(metrics, tmp_path / "cmp.md", tmp_path / "cmp.csv", ablation_tables=[csv])
    ab = table[table.kind == "ablation"]
    # synth: no published numbers, ours alone
    assert list(ab[ab.table == "VIII"]["benchmark"]) == ["synth"]
    assert math.isnan(_line(table, "VIII", "synth", "mu2-sigma", "p=2").paper)
    assert _line(table, "XI", "cub200", "N=3", "with correction").difference == pytest.approx(56.0 - 56.7)
    text = (tmp_path / "cmp.md").read_text()
    assert (
        "| benchmark | row | seeds | p=2 |\n|---|---|---|---|\n| synth | mu2-sigma | 2 | 0.81 ± 0.01 (-, -) |"
        in text
    )
    xi = text.split("## Table XI:", 1)[1]
    assert "| benchmark | row | seeds | R@1 | without correction | with correction |" in xi
    assert "| cub200 | Baseline | 1 | 54.0 (54.4, -0.4) |  |  |" in xi
    assert "| cub200 | N=3 | 1 |  | 55.0 (55.5, -0.5) | 56.0 (56.7, -0.7) |" in xi
    assert "| cub200 | N=5 | - |  | - (55.8, -) | - (57.2, -) |" in xi


def test_compare_ablation_table_errors(tmp_path: Path) -> None:
    metrics = [_write(tmp_path, "cub200", "test", "ms-iaa-seed0", {**FULL, "recall@1": 0.60})]
    bad = tmp_path / "bad.csv"
    bad.write_text("table,benchmark,row,mean\nIX,cub200,IAA,58.0\n")
    with pytest.raises(IAAError, match="lacks columns"):
        compare_stage(metrics, tmp_path / "a.md", tmp_path / "a.csv", ablation_tables=[bad])
    a = _ablation_csv(tmp_path / "a1.csv", ["IX,cub200,IAA,R@1,58.0,0.5,3,,"])
    b = _ablation_csv(tmp_path / "a2.csv", ["IX,cub200,IAA,R@1,57.0,0.5,3,,"])
    with pytest.raises(IAAError, match="given twice"):
        compare_stage(metrics, tmp_path / "a.md", tmp_path / "a.csv", ablation_tables=[a, b])
    c = _ablation_csv(tmp_path / "a3.csv", ["IX,cub200,IAA,R@1,high,0.5,3,,"])
    with pytest.raises(IAAError, match="not a number"):
        compare_stage(metrics, tmp_path / "a.md", tmp_path / "a.csv", ablation_tables=[c])
    assert not (tmp_path / "a.md").exists()
