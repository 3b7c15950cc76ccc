"""`snakemake ablations` end to end on the tiny synth (head mode, one seed): every table and
figure file is written, every table has the paper's rows, and a second run has nothing to do."""

from __future__ import annotations

import pandas as pd
import pytest

from iaa.ablations.experiments import EXPERIMENTS, TABLE_NUMERALS
from iaa.paper import ablation_numbers
from tests.test_pipeline import snakemake

pytestmark = pytest.mark.slow

FIGURES = [
    "fig3_mean_vs_covariance_distance", "fig5_distance_to_global_covariance", "fig6a_recall_vs_lambda",
    "fig6b_recall_vs_k", "fig7a_recall_vs_copies", "fig7b_recall_vs_interval",
    "fig8_recall_vs_embedding_size", "fig9a_alpha_vs_count", "fig9b_recall_vs_beta", "fig10a_hard_negatives",
    "fig10b_synthetic_share", "fig11_cost_vs_copies", "fig12_similarity_histograms",
    "fig13_retrieval_examples", "fig14_tsne",
]  # fmt: skip


def test_ablations_on_tiny_synth_build_every_table_and_figure(tmp_path):
    overlay = tmp_path / "one_seed.yaml"
    # one seed, and one or two points per sweep (the scaled synth sweeps of config/synth.yaml otherwise);
    # the tables keep every row of the paper
    overlay.write_text(
        "seeds: [0]\n"
        "ablations:\n"
        "  table11: {images: [3, 5, 7]}\n"
        "  fig6a: {values: [0, 1]}\n  fig6b: {values: [5]}\n  fig7a: {values: [1]}\n"
        "  fig7b: {values: [2]}\n  fig8: {values: [8]}\n  fig9b: {values: [0.5]}\n  fig11: {values: [1]}\n"
    )
    result = snakemake(tmp_path, "--cores", "2", "ablations", overlays=(overlay,))
    assert result.returncode == 0, result.stderr[-4000:]
    root = tmp_path / "results" / "synth"
    for stem in FIGURES:
        png, csv = root / "figures" / f"{stem}.png", root / "figures" / f"{stem}.csv"
        assert png.stat().st_size > 5_000, stem
        assert len(pd.read_csv(csv)) > 0, stem
    for key, e in EXPERIMENTS.items():
        if e.kind != "table":
            continue
        table = pd.read_csv(root / "tables" / f"{key}.csv")
        assert table["mean"].notna().all(), key
        published = {(n.row, n.column) for n in ablation_numbers(TABLE_NUMERALS[key])}
        if key == "table7":  # synth has one backbone: its own
            assert set(table["row"]) == {"synth CNN"} and set(table["column"]) == {"MAP@R", "RP"}
            continue
        assert {r for r, _ in published} <= set(table["row"]), key
        assert (root / "tables" / f"{key}.md").read_text().count("\n|") >= table["row"].nunique()
    assert (tmp_path / "results" / "tables" / "paper_comparison_ablations.md").exists()
    again = snakemake(tmp_path, "-n", "--cores", "2", "ablations", overlays=(overlay,))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
