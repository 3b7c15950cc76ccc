"""The ablations' machinery: variant names, the points each table reads (with the paper's
rows), and the table and sweep-figure stages on hand-written metrics and histories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iaa.ablations.experiments import (
    DEFAULTS,
    EXPERIMENTS,
    TABLE_NUMERALS,
    experiment_config,
    experiment_points,
    primary_split,
)
from iaa.ablations.sweeps import sweep_figure_stage
from iaa.ablations.tables import ablation_table_stage, read_value
from iaa.ablations.variants import (
    experiment_name,
    parse_variant,
    resolve_variant,
    split_experiment,
    variant_name,
    with_variant,
)
from iaa.errors import IAAError
from iaa.paper import ablation_numbers

MAIN = {"train": {"embedding_dim": 128, "iaa": {"lam": 0.5, "k": 25, "correction": "auto", "sigma_m": 1.0,
                                                "sigma_cv": 1.0, "copies": 3}}}  # fmt: skip


def test_variant_names_round_trip_and_set_their_keys():
    items = {"k": 10, "corr": "on"}
    name = variant_name(items)
    assert name == "k-10+corr-on" and parse_variant(name) == items
    assert variant_name({"sigma": math.inf}) == "sigma-inf" and parse_variant("sigma-inf") == {
        "sigma": math.inf
    }
    assert variant_name({"lam": 0.0}) == "lam-0" and variant_name({"lam": 0.25}) == "lam-0.25"
    cfg = with_variant(MAIN, "sigma-inf+corr-on")
    assert cfg["train"]["iaa"]["sigma_m"] == cfg["train"]["iaa"]["sigma_cv"] == math.inf
    assert cfg["train"]["iaa"]["correction"] == "on" and MAIN["train"]["iaa"]["correction"] == "auto"
    assert with_variant(MAIN, "dim-64")["train"]["embedding_dim"] == 64
    assert split_experiment(experiment_name("cub200", "lam-0.2")) == ("cub200", "lam-0.2")
    assert split_experiment("cub200-resnet50") == ("cub200-resnet50", None)


@pytest.mark.parametrize("bad", ["lam", "lamda-0.2", "cov-spherical", "k-ten", "k-1+k-2", "lam-nan"])
def test_bad_variants_are_one_line(bad):
    with pytest.raises(IAAError, match="variant") as excinfo:
        parse_variant(bad)
    assert "\n" not in str(excinfo.value)


def test_a_point_equal_to_the_main_run_is_the_main_run():
    assert resolve_variant(MAIN, {"lam": 0.5}) is None  # synth's own λ: Table III's run
    assert resolve_variant(MAIN, {"k": 25, "corr": "on"}) == "corr-on"
    assert resolve_variant(MAIN, {"sigma": 1.0}) is None  # both keys already 1
    assert resolve_variant(MAIN, {"lam": 0.0}) == "lam-0"


def _paper_cells(numeral: str, bench: str) -> set[tuple[str, str]]:
    return {(n.row, n.column) for n in ablation_numbers(numeral, bench)}


@pytest.mark.parametrize("key", [k for k, e in EXPERIMENTS.items() if e.kind == "table" and k != "table7"])
def test_every_table_has_every_cell_of_the_papers(key):
    """Our points cover every published cell of Tables VIII-XII on each paper benchmark."""
    numeral = TABLE_NUMERALS[key]
    for bench in ("cub200", "cars196", "sop", "inshop", "vehicleid"):
        ours = {(p.row, p.column) for p in experiment_points(key, bench, DEFAULTS[key])}
        missing = _paper_cells(numeral, bench) - ours
        assert not missing, (key, bench, missing)


def test_table7_reads_the_other_backbones_runs():
    points = experiment_points("table7", "cub200", DEFAULTS["table7"])
    assert {(p.row, p.column) for p in points} == _paper_cells("VII", "cub200")
    assert {p.benchmark for p in points} == {"cub200-bn_inception", "cub200-resnet50"}
    assert all((p.loss, p.method) == ("ms", "iaa") for p in points)
    synth = experiment_points("table7", "synth", DEFAULTS["table7"])
    assert {p.benchmark for p in synth} == {None} and {p.column for p in synth} == {"MAP@R", "RP"}


def test_experiment_config_refuses_keys_it_does_not_use():
    assert experiment_config("fig6a", {"values": [0.1]}, None) == {"loss": "ms", "values": [0.1]}
    with pytest.raises(IAAError, match="ablations.table9: values not used"):
        experiment_config("table9", {"values": [1]})
    assert primary_split("inshop") == "query" and primary_split("vehicleid") == "test-medium"


def _metrics(path: Path, r1: float, map_r: float = 0.2) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"final": {"recall@1": r1 - 0.01}, "selected": {"recall@1": r1, "map@r": map_r, "rp": 0.3}}
    path.write_text(json.dumps(payload))
    return str(path)


def test_ablation_table_means_stds_and_the_papers_numbers(tmp_path):
    base = [_metrics(tmp_path / f"b{s}.json", v) for s, v in enumerate([0.50, 0.54, 0.58])]
    iaa = [_metrics(tmp_path / f"i{s}.json", v) for s, v in enumerate([0.60, 0.61, 0.65])]
    lam0 = [_metrics(tmp_path / f"l{s}.json", v) for s, v in enumerate([0.40, 0.40, 0.43])]
    spec = {
        "numeral": "IX", "title": "Table IX", "benchmark": "cub200",
        "cells": [
            {"row": "Baseline", "column": "R@1", "source": "metrics", "metric": "recall@1", "paths": base},
            {"row": "lambda=0", "column": "R@1", "source": "metrics", "metric": "recall@1", "paths": lam0},
            {"row": "IAA", "column": "R@1", "source": "metrics", "metric": "recall@1", "paths": iaa},
        ],
    }  # fmt: skip
    ablation_table_stage(spec, tmp_path / "t.md", tmp_path / "t.csv")
    table = pd.read_csv(tmp_path / "t.csv").set_index("row")
    for row, vals in (("Baseline", [50, 54, 58]), ("IAA", [60, 61, 65]), ("lambda=0", [40, 40, 43])):
        assert table.loc[row, "mean"] == pytest.approx(np.mean(vals))
        assert table.loc[row, "std"] == pytest.approx(np.std(vals, ddof=1))
        assert table.loc[row, "seeds"] == 3
    assert table.loc["Baseline", "paper"] == 54.4 and table.loc["IAA", "paper"] == 58.9
    assert table.loc["IAA", "diff"] == pytest.approx(62.0 - 58.9)
    assert math.isnan(table.loc["lambda=0", "paper"])  # the row the paper lacks
    md = (tmp_path / "t.md").read_text()
    assert "| Baseline | 54.0 ± 4.0 (54.4) |" in md and "| lambda=0 | 41.0 ± 1.7 (-) |" in md


def test_table8_reads_the_correlation_pairs(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"spearman_p2": 0.5, "pairs": {"mu-sigma": {"2": 0.625}}}))
    assert read_value(path, "correlation", "mu-sigma/2") == 0.625
    with pytest.raises(IAAError, match="no correlation value 'mu2-sigma2/2'"):
        read_value(path, "correlation", "mu2-sigma2/2")
    with pytest.raises(IAAError, match="cannot read"):
        read_value(tmp_path / "missing.json", "metrics", "recall@1")


def _history(path: Path, secs: float, mem: float, negatives: list[float], share: list[float]) -> str:
    epochs = len(negatives)
    pd.DataFrame({
        "epoch": range(1, epochs + 1), "seconds_per_iteration": [secs] * epochs,
        "peak_memory_mb": [mem] * epochs, "hard_negatives": negatives, "hard_positives": [1.0] * epochs,
        "synthetic_share": share,
    }).to_csv(path, index=False)  # fmt: skip
    return str(path)


def test_sweep_figures_recall_cost_and_mining(tmp_path):
    points = [
        {"series": "baseline", "x": None, "paths": [_metrics(tmp_path / "b.json", 0.5)]},
        {"series": "IAA", "x": 0.0, "paths": [_metrics(tmp_path / "i0.json", 0.52)]},
        {"series": "IAA", "x": 1.0, "paths": [_metrics(tmp_path / "i1a.json", 0.6),
                                              _metrics(tmp_path / "i1b.json", 0.7)]},
    ]  # fmt: skip
    spec = {
        "key": "fig6a",
        "title": "λ",
        "xlabel": "λ",
        "ylabel": "R@1 (%)",
        "benchmark": "synth",
        "loss": "ms",
    }
    sweep_figure_stage({**spec, "points": points}, [tmp_path / "f.png"], [tmp_path / "f.csv"])
    rows = pd.read_csv(tmp_path / "f.csv")
    assert (tmp_path / "f.png").stat().st_size > 5000
    one = rows[(rows.series == "IAA") & (rows.x == 1.0)].iloc[0]
    assert one["mean"] == pytest.approx(65.0) and one["std"] == pytest.approx(np.std([60, 70], ddof=1))

    cost = [
        {"series": "cost", "x": 0.0, "paths": [_history(tmp_path / "h0.csv", 0.1, 100, [5, 5], [0, 0])]},
        {"series": "cost", "x": 3.0, "paths": [_history(tmp_path / "h3.csv", 0.3, 150, [9, 7], [0.5, 0.7])]},
    ]
    sweep_figure_stage({**spec, "key": "fig11", "points": cost}, [tmp_path / "c.png"], [tmp_path / "c.csv"])
    c = pd.read_csv(tmp_path / "c.csv").set_index("x")
    assert c.loc[3.0, "seconds_per_iteration"] == pytest.approx(0.3) and c.loc[0.0, "peak_memory_mb"] == 100

    mining = [{"series": "baseline", "x": None, "paths": [str(tmp_path / "h0.csv")]},
              {"series": "IAA", "x": None, "paths": [str(tmp_path / "h3.csv")]}]  # fmt: skip
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    sweep_figure_stage(
        {**spec, "key": "fig10", "points": mining}, outs, [tmp_path / "a.csv", tmp_path / "b.csv"]
    )
    a = pd.read_csv(tmp_path / "a.csv")
    neg = a[(a.series == "IAA") & (a.quantity == "hard_negatives")]["value"].tolist()
    assert neg == [9, 7]
    assert pd.read_csv(tmp_path / "b.csv")["value"].tolist() == [0.5, 0.7]
    with pytest.raises(IAAError, match="two"):
        sweep_figure_stage({**spec, "key": "fig10", "points": mining}, outs[:1], [tmp_path / "a.csv"])


def test_only_the_runs_table8_reads_pay_for_its_four_distance_pairs(tmp_path):
    from tests.test_pipeline import snakemake

    plan = snakemake(tmp_path, "-n", "-p", "--cores", "2", "all", config=("seeds=[0]",))
    assert plan.returncode == 0, plan.stderr[-2000:]
    stats = {
        line.split(" stats ")[1].split()[0].rsplit("/", 1)[-1]: line
        for line in plan.stdout.splitlines()
        if " stats " in line and "--pairs" in line
    }
    assert "--pairs mu2-sigma,mu-sigma,mu2-sigma2,mu-sigma2" in stats["ms-baseline-seed0.parquet"]
    for name in ("pretrained.parquet", "ms-iaa-seed0.parquet", "triplet-baseline-seed0.parquet"):
        assert stats[name].rstrip().split("--pairs ")[1].split()[0] == "mu2-sigma", name


def test_sweep_values_are_checked_before_any_job():
    with pytest.raises(IAAError, match=r"ablations.fig7a.values: 1.5 must be a whole number \(it sets M\)"):
        experiment_config("fig7a", {"values": [1.5, 2]})
    with pytest.raises(IAAError, match="ablations.fig8.values: '64' is not a number"):
        experiment_config("fig8", {"values": ["64", 128]})
    assert experiment_config("fig7a", {"values": [2.0]})["values"] == [2.0]  # a whole float is fine
    points = experiment_points("fig7a", "synth", {"loss": "ms", "values": [2.0]})
    assert ("copies", 2) in points[-1].items and variant_name(dict(points[-1].items)) == "copies-2"


def test_a_variant_spelt_otherwise_is_refused_not_trained_twice(tmp_path):
    from tests.test_pipeline import snakemake

    target = str(tmp_path / "results/synth/variants/nper-3+corr-off/metrics/test/triplet-iaa-seed0.json")
    plan = snakemake(tmp_path, "-n", "--cores", "2", target)
    said = plan.stdout + plan.stderr
    assert plan.returncode != 0 and "variant 'nper-3+corr-off' is written 'corr-off+nper-3'" in said


def test_loader_cache_without_a_store_fails_before_any_job(tmp_path):
    from tests.test_pipeline import snakemake

    cache = "train={'loader': 'cache', 'mode': 'finetune'}"
    plan = snakemake(tmp_path, "-n", "--cores", "2", "all", config=(cache,))
    said = plan.stdout + plan.stderr
    assert plan.returncode != 0 and "train.loader is cache but prepare.decoded_store is false" in said
