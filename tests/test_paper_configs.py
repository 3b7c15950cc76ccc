"""config/paper.yaml and config/sota.yaml plan the paper's experiments over a miniature data root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from iaa.benchmarks import get_benchmark
from iaa.paper import paper_numbers
from tests.test_datasets import make_cars, make_cub, make_inshop, make_sop, make_vehicleid

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    for make in (make_cub, make_cars, make_sop, make_inshop, make_vehicleid):
        make(root)
    return root


def dry_run(config: str, data_root: Path, workdir: Path, seeds: list[int]) -> dict[str, int]:
    overlay = workdir / "seeds.yaml"
    overlay.write_text(yaml.safe_dump({"seeds": seeds}))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "-n", "--cores", "8", "all",
        "--configfile", str(ROOT / "config" / config), str(overlay),
        "--config", f"data_root={data_root}", f"results_dir={workdir / 'results'}",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_paper_config_plans_thirty_training_jobs_per_seed(data_root, tmp_path, seeds):
    counts = dry_run("paper.yaml", data_root, tmp_path, seeds)
    assert counts["train"] == 30 * len(seeds)  # 5 datasets x 3 losses x {baseline, IAA}
    assert counts["prepare"] == 5 and counts["extract"] == 5 and counts["compare"] == 1
    assert "pretrain" not in counts  # ImageNet backbones: no pretrain stage


def test_sota_config_plans_ms_iaa_per_backbone_and_shares_manifests(data_root, tmp_path):
    counts = dry_run("sota.yaml", data_root, tmp_path, [0])
    assert counts["train"] == 10  # 5 datasets x {BN-Inception, ResNet-50}, MS+IAA
    assert counts["prepare"] == 5  # one manifest per dataset, shared by both backbones


@pytest.mark.parametrize("name", ["paper.yaml", "sota.yaml"])
def test_configs_are_valid_and_cover_published_numbers(name):
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(config, SCHEMA)
    covered = {p.table for b in config["benchmarks"] for p in paper_numbers(b)}
    assert covered == ({"III", "VI"} if name == "paper.yaml" else {"IV", "V"})
    for bench in config["benchmarks"]:
        assert get_benchmark(bench).arch == ("googlenet" if name == "paper.yaml" else bench.split("-")[1])


def test_paper_hyper_parameters_per_dataset():
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    over = config["benchmark_overrides"]
    assert config["train"]["iaa"]["lam"] == 0.8  # CUB and Cars
    assert over["sop"]["train"]["iaa"]["lam"] == 0.6 and over["inshop"]["train"]["iaa"]["lam"] == 0.6
    assert over["sop"]["train"]["batch_size"] == 180 and over["sop"]["train"]["samples_per_class"] == 3
    assert over["cub200"]["train"]["lr_by_loss"] == {"contrastive": 3e-5}
    assert over["cub200"]["train"]["square_resize"] is False
