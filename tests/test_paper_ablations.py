"""The paper's ablation numbers (Tables VII-XII) as transcribed, checked by hand against SPEC 6."""

from __future__ import annotations

from collections import Counter

import pytest

from iaa.paper import TABLE_TITLES
from iaa.paper_ablations import (
    ABLATION_BENCHMARKS,
    ABLATION_COLUMNS,
    ABLATION_ROWS,
    ABLATION_TABLES,
    ABLATION_TITLES,
    AblationNumber,
    ablation_numbers,
)


def _value(table: str, bench: str, row: str, column: str) -> float:
    (hit,) = [n.value for n in ablation_numbers(table, bench) if (n.row, n.column) == (row, column)]
    return hit


def _has(table: str, bench: str, row: str, column: str) -> bool:
    return any((n.row, n.column) == (row, column) for n in ablation_numbers(table, bench))


def test_counts_per_table() -> None:
    counts = Counter(n.table for n in ablation_numbers())
    # VII 2 rows x 2 columns x 3 benchmarks; VIII 4 x 3 x 5; IX 4 rows on all four benchmarks
    # (Baseline, identity, global, IAA) + diagonal on 2 + four rows on SOP, In-Shop only;
    # X 6 x 2 x 2; XI baseline 2 + 4 x 2 x 2; XII 3 x 3 x 2
    assert counts == {"VII": 12, "VIII": 60, "IX": 4 * 4 + 2 + 4 * 2, "X": 24, "XI": 18, "XII": 18}
    assert counts["IX"] == 26
    keys = [(n.table, n.benchmark, n.row, n.column) for n in ablation_numbers()]
    assert len(keys) == len(set(keys))


def test_keys_are_the_agreed_ones() -> None:
    for n in ablation_numbers():
        assert n.benchmark in ABLATION_BENCHMARKS[n.table]
        assert n.row in ABLATION_ROWS[n.table] and n.column in ABLATION_COLUMNS[n.table]
    assert {n.benchmark for n in ablation_numbers()} == {"cub200", "cars196", "sop", "inshop", "vehicleid"}
    assert ABLATION_ROWS["IX"] == (
        "Baseline", "identity", "global", "diagonal", "alpha=0", "alpha=1", "gamma=1", "sigma=inf", "IAA",
    )  # fmt: skip
    assert ABLATION_ROWS["VIII"] == ("mu2-sigma", "mu-sigma", "mu2-sigma2", "mu-sigma2")
    assert ABLATION_ROWS["X"] == (
        "distance_weighted",
        "margin",
        "circle",
        "norm_softmax",
        "proxy_nca",
        "soft_triple",
    )
    assert {n.column for n in ablation_numbers("XI") if n.row == "Baseline"} == {"R@1"}
    assert {n.column for n in ablation_numbers("XI") if n.row != "Baseline"} == {
        "without correction",
        "with correction",
    }
    assert set(ABLATION_TITLES) == set(ABLATION_TABLES) == {"VII", "VIII", "IX", "X", "XI", "XII"}
    assert all(TABLE_TITLES[t] == ABLATION_TITLES[t] for t in ABLATION_TABLES)
    assert TABLE_TITLES["III"].startswith("Table III")


@pytest.mark.parametrize(
    ("table", "bench", "row", "column", "value"),
    [
        # Table VII: BN-Inception CUB 25.5/36.5 ...; ResNet-50 ... SOP 57.9/60.7
        ("VII", "cub200", "BN-Inception", "MAP@R", 25.5),
        ("VII", "cars196", "BN-Inception", "RP", 39.3),
        ("VII", "sop", "ResNet-50", "RP", 60.7),
        ("VII", "cars196", "ResNet-50", "MAP@R", 32.4),
        # Table VIII: first block p=1 0.71 0.70 0.65 0.71 0.59; last block p=3 ... 0.43
        ("VIII", "cub200", "mu2-sigma", "p=1", 0.71),
        ("VIII", "vehicleid", "mu2-sigma", "p=1", 0.59),
        ("VIII", "sop", "mu-sigma", "p=2", 0.63),
        ("VIII", "vehicleid", "mu2-sigma2", "p=2", 0.48),
        ("VIII", "inshop", "mu-sigma2", "p=3", 0.52),
        ("VIII", "vehicleid", "mu-sigma2", "p=3", 0.43),
        # Table IX
        ("IX", "cub200", "Baseline", "R@1", 54.4),
        ("IX", "inshop", "Baseline", "R@1", 86.3),
        ("IX", "cars196", "diagonal", "R@1", 72.3),
        ("IX", "sop", "alpha=0", "R@1", 74.2),
        ("IX", "inshop", "sigma=inf", "R@1", 88.3),
        ("IX", "sop", "IAA", "R@1", 76.9),
        # Table X
        ("X", "cub200", "distance_weighted", "baseline", 57.7),
        ("X", "cars196", "margin", "IAA", 77.6),
        ("X", "cars196", "soft_triple", "baseline", 82.6),
        ("X", "cub200", "proxy_nca", "IAA", 61.0),
        # Table XI
        ("XI", "cars196", "Baseline", "R@1", 69.0),
        ("XI", "cub200", "N=5", "with correction", 57.2),
        ("XI", "cars196", "N=7", "without correction", 70.9),
        ("XI", "cub200", "all", "with correction", 58.7),
        # Table XII
        ("XII", "cub200", "fixed mean", "Contrastive", 55.9),
        ("XII", "cars196", "dynamic mean", "MS", 84.2),
        ("XII", "cars196", "Baseline", "Triplet", 69.0),
    ],
)
def test_hand_chosen_cells(table: str, bench: str, row: str, column: str, value: float) -> None:
    assert _value(table, bench, row, column) == value


def test_dashes_are_no_entry() -> None:
    for bench in ("sop", "inshop"):
        assert not _has("IX", bench, "diagonal", "R@1")
    for row in ("alpha=0", "alpha=1", "gamma=1", "sigma=inf"):
        for bench in ("cub200", "cars196"):
            assert not _has("IX", bench, row, "R@1")
    assert not _has("XI", "cub200", "Baseline", "with correction")
    assert not _has("XI", "cub200", "N=3", "R@1")
    assert ablation_numbers("X", "sop") == []


def test_filters_and_order() -> None:
    assert ablation_numbers("XII", "cars196")[0] == AblationNumber(
        "XII", "cars196", "Baseline", "Triplet", 69.0
    )
    assert [n.row for n in ablation_numbers("IX", "cub200")] == [
        "Baseline",
        "identity",
        "global",
        "diagonal",
        "IAA",
    ]
    assert {n.table for n in ablation_numbers(benchmark="vehicleid")} == {"VIII"}
    assert len(ablation_numbers(benchmark="cub200")) == 4 + 12 + 5 + 12 + 9 + 9
