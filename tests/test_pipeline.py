"""The Snakemake workflow: planning, config errors, and end-to-end runs on a tiny synth."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
RULES = ["prepare", "pretrain", "extract", "train", "export", "index", "evaluate", "stats", "report"]


def snakemake(
    workdir: Path, *args: str, config: tuple[str, ...] = (), overlays: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` (its own .snakemake) with results under it."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(TINY), *map(str, overlays),
        "--config", f"results_dir={workdir / 'results'}", *config, *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_dry_run_plans_every_rule(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "8", "all")
    assert result.returncode == 0, result.stderr
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    for rule in RULES:
        assert counts.get(rule, 0) > 0, f"no {rule} job planned:\n{result.stdout}"
    assert counts["train"] == 3 * 2 * 2  # losses x methods x seeds of the tiny config


@pytest.mark.parametrize(
    "override, key",
    [
        ("train={'epochz': 3}", "epochz"),
        ("losses=['contrastive', 'arcface']", "arcface"),
        ("seeds='zero'", "zero"),
    ],
)
def test_config_typo_fails_before_any_job_and_names_the_key(tmp_path, override, key):
    result = snakemake(tmp_path, "--cores", "1", "all", config=(override,))
    assert result.returncode != 0
    assert key in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_whole_pipeline_on_tiny_synth_then_nothing_to_do(tmp_path):
    result = snakemake(tmp_path, "--cores", "2", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    tables = tmp_path / "results" / "synth" / "tables"
    table = pd.read_csv(tables / "table3.csv").query("models == 'final'").set_index("method")
    assert list(table.index) == [
        "Pretrained", "Contrastive", "Contrastive+IAA", "Triplet", "Triplet+IAA", "MS", "MS+IAA",
    ]  # fmt: skip
    assert (table.loc["MS+IAA", "seeds"], table.loc["Pretrained", "seeds"]) == (2, 1)
    for col in ["R@1 mean", "R@2 mean", "R@4 mean", "R@8 mean", "NMI mean", "MAP@R mean", "RP mean"]:
        assert table[col].between(0, 100).all(), col
    assert (table["R@8 mean"] >= table["R@1 mean"]).all()
    assert "MS+IAA" in (tables / "table3.md").read_text()
    assert (tables / "training_curves.png").stat().st_size > 10_000
    table1 = (tables / "table1.md").read_text()
    assert "| Pretrained | 1 |" in table1 and "| MS+IAA | 2 |" in table1
    record = json.loads((tmp_path / "results/synth/metrics/test/ms-iaa-seed1.json").read_text())
    metrics = record["final"]
    assert metrics["num_queries"] == metrics["num_gallery"] > 0
    assert record["selected"]["num_queries"] == metrics["num_queries"] and record["selection"] in (
        "last", "best_test", "best_val",
    )  # fmt: skip
    emb = pd.read_parquet(tmp_path / "results/synth/embeddings/ms-iaa-seed1.parquet")
    assert set(emb["split"]) == {"train", "test"} and len(emb["embedding"].iloc[0]) == 16
    selected = pd.read_parquet(tmp_path / "results/synth/embeddings/ms-iaa-seed1.selected.parquet")
    assert selected["path"].tolist() == emb["path"].tolist()

    again = snakemake(tmp_path, "--cores", "2", "all")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    # Execution settings are not results: changing each of them plans no job (issue 13).
    for change in (
        "train={'workers': 3}", "train={'loader': 'workers'}", "train={'compile': True}",
        "threads={'train': 2, 'extract': 2, 'export': 2, 'evaluate': 2, 'stats': 2}",
    ):  # fmt: skip
        plan = snakemake(tmp_path, "-n", "--cores", "2", "all", config=(change,))
        said = plan.stdout + plan.stderr
        assert plan.returncode == 0 and "Nothing to be done" in said, (change, plan.stdout)

    # `snakemake --report`: one self-contained HTML file holding the tables and the plot.
    report = snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    external = r"<script[^>]*\ssrc=|<link[^>]*\shref=|\ssrc=[\"']?https?:|url\([\"']?https?:|@import"
    assert re.findall(external, html) == []  # scripts, styles and results all inline
    results = {Path(path).name: entry for path, entry in _report_results(html).items()}
    assert set(results) == {"table3.md", "table3.csv", "training_curves.png", "table1.md"}
    for name, entry in results.items():  # embedded byte for byte as data URIs
        assert base64.b64decode(entry["data_uri"].split("base64,", 1)[1]) == (tables / name).read_bytes()
    assert "MS+IAA" in results["table3.md"]["caption"]  # the tables show in their captions
    assert "<table" in results["table3.csv"]["caption"]
    assert "| MS+IAA | 2 |" in results["table1.md"]["caption"]
    assert "IAA: Intra-class Adaptive Augmentation" in html  # workflow/report/workflow.rst


def _report_results(html: str) -> dict:
    """The results a Snakemake HTML report embeds, by path: name, caption, data_uri, ..."""
    match = re.search(r'<script id="results">\s*var results = (.*?);?\s*</script>', html, re.S)
    assert match, "no results in the report"
    return json.loads(match.group(1))


@pytest.mark.slow
def test_released_recipe_on_tiny_synth_reports_final_and_selected_epochs(tmp_path):
    overlay = tmp_path / "released.yaml"
    overlay.write_text("recipe: released\nseeds: [0]\n")
    result = snakemake(tmp_path, "--cores", "2", "all", overlays=(overlay,))
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results" / "synth"
    markdown = (results / "tables" / "table3.md").read_text()
    assert "recipe: released" in markdown and "best test R@1" in markdown
    table = pd.read_csv(results / "tables" / "table3.csv")
    assert set(table["models"]) == {"final", "selected"} and set(table["recipe"].dropna()) == {"released"}
    for run in ("contrastive-baseline-seed0", "ms-iaa-seed0", "triplet-iaa-seed0"):
        record = json.loads((results / "metrics" / "test" / f"{run}.json").read_text())
        assert record["selection"] == "best_test" and record["recipe"] == "released"
        history = pd.read_csv(results / "runs" / run / "history.csv")
        # the selected epoch is the first with the best per-epoch test R@1 (released run.py)
        best = int(history.loc[history["selection_recall@1"].idxmax(), "epoch"])
        assert record["selected"]["epoch"] == best and record["final"]["epoch"] == len(history)
        checkpoint = torch.load(results / "runs" / run / "selected.pt", weights_only=False)
        assert (
            checkpoint["settings"]["sampler"] == "released" and checkpoint["settings"]["recipe"] == "released"
        )


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["paper", "released"])
def test_finetune_mode_trains_the_backbone_on_images(tmp_path, recipe):
    """The paper's protocol: backbone + embedding trained end-to-end on augmented images; the
    released recipe's estimation pass goes through the training transforms."""
    target = "results/synth/metrics/test/ms-iaa-seed0.json"
    overlay = tmp_path / "finetune.yaml"
    overlay.write_text(f"recipe: {recipe}\nseeds: [0]\ntrain: {{mode: finetune, epochs: 2}}\n")
    result = snakemake(tmp_path, "--cores", "2", str(tmp_path / target), overlays=(overlay,))
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "results/synth/logs/train/ms-iaa-seed0.log").read_text()
    assert "global estimation" in log and f"(recipe {recipe})" in log
    # Finetune mode reads images, not extracted features.
    assert not (tmp_path / "results/synth/features").exists()
    model = torch.load(tmp_path / "results/synth/runs/ms-iaa-seed0/model.pt", weights_only=False)
    assert model["config"]["backbone"] == "synth"
    assert json.loads((tmp_path / target).read_text())["selected"]["recall@1"] > 0


@pytest.mark.slow
def test_paths_with_a_space_and_non_ascii_characters(tmp_path):
    """Every path in every shell command is quoted: a results_dir (and working directory)
    holding a space and a non-ASCII character neither splits an argument nor leaves a
    stray file named after half the path."""
    workdir, results = tmp_path / "work ü dir", tmp_path / "res ü dir"
    target = results / "synth" / "tables" / "table3.md"
    result = snakemake(workdir, "--cores", "2", str(target), config=(f"results_dir={results}",))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MS+IAA" in target.read_text()
    assert (results / "synth" / "manifest.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res ü dir", "work ü dir"]
    assert [p.name for p in workdir.iterdir()] == [".snakemake"]  # no file named after half a path


def test_snakemake_lint_reports_no_findings():
    """`snakemake --lint`: a conda environment and a log on every rule, helpers in common.smk,
    no path built with `+` (read as an absolute path)."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Lints for" not in output, output[-5000:]
    assert "Congratulations, your workflow is in a good condition!" in output
