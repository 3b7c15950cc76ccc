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
from iaa.errors import IAAError
from iaa.paper import paper_numbers
from iaa.recipes import deep_merge, layered_config, recipe_config
from tests.test_datasets import make_cars, make_cub, make_inshop, make_sop, make_vehicleid

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    for make in (make_cub, make_cars, make_sop, make_inshop, make_vehicleid):
        make(root)
    return root


def dry_run(
    config: str, data_root: Path, workdir: Path, seeds: list[int], *extra: str, target: str = "all"
) -> dict[str, int]:
    overlay = workdir / "seeds.yaml"
    overlay.write_text(yaml.safe_dump({"seeds": seeds}))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "-n", "--cores", "8", target,
        "--configfile", str(ROOT / "config" / config), str(overlay),
        "--config", f"data_root={data_root}", f"results_dir={workdir / 'results'}", *extra,
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.parametrize("seeds, recipe", [([0], "paper"), ([0, 1, 2], "paper"), ([0, 1, 2], "released")])
def test_paper_config_plans_thirty_training_jobs_per_seed(data_root, tmp_path, seeds, recipe):
    counts = dry_run("paper.yaml", data_root, tmp_path, seeds, f"recipe={recipe}")
    assert counts["train"] == 30 * len(seeds)  # 5 datasets x 3 losses x {baseline, IAA}
    assert counts["prepare"] == 5 and counts["extract"] == 5 and counts["compare"] == 1
    assert "pretrain" not in counts  # ImageNet backbones: no pretrain stage


@pytest.mark.parametrize("recipe", ["paper", "released"])
def test_sota_config_plans_ms_iaa_per_backbone_and_shares_manifests(data_root, tmp_path, recipe):
    # batch 256 of 3 images per class (SOP, In-Shop) passes the checks made before any job runs
    counts = dry_run("sota.yaml", data_root, tmp_path, [0], f"recipe={recipe}")
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


def layered(name: str, bench: str, **extra) -> dict:
    """The validated config of ``bench`` when running ``config/<name>`` (merged over the
    default config.yaml, as Snakemake does), with ``extra`` top-level keys (--config)."""
    raw = deep_merge(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), load(name))
    raw = deep_merge(raw, extra)
    budget = yaml.safe_load((ROOT / "config" / "synth.yaml").read_text())
    config = layered_config(raw, bench, budget)
    validate(config, SCHEMA)
    return config


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize("bench", ["cub200", "cars196", "sop", "inshop", "vehicleid"])
@pytest.mark.parametrize("recipe", ["paper", "released"])
def test_real_benchmarks_never_take_the_synth_cpu_budget(bench, recipe):
    # config.yaml is always loaded under a --configfile: its synth budget must not leak
    train = layered("paper.yaml", bench, recipe=recipe)["train"]
    assert (train["epochs"], train["embedding_dim"], train["image_size"], train["resize"]) == (
        100,
        512,
        224,
        256,
    )
    assert train["max_iterations_per_epoch"] == 300 and train["iaa"]["start_epoch"] == 30


def test_paper_recipe_per_dataset():
    cub, cars, sop, inshop = (
        layered("paper.yaml", b)["train"] for b in ("cub200", "cars196", "sop", "inshop")
    )
    assert cars["iaa"]["lam"] == 0.8 and cars["lr"] == 1e-4 and cars["embedding_lr_multiplier"] == 10
    assert (
        cars["lr_milestones"] == [40, 60]
        and cars["weight_decay"] == 4e-4
        and cars["iaa"]["update_every"] == 4
    )
    assert sop["iaa"]["lam"] == 0.6 and inshop["iaa"]["lam"] == 0.6
    assert sop["batch_size"] == 180 and sop["samples_per_class"] == 3
    assert cub["lr_by_loss"] == {"contrastive": 3e-5} and cub["square_resize"] is False
    assert cars["square_resize"] is True and cars["selection"] == "last" and cars["sampler"] == "balanced"
    assert inshop["val_split"] == "query"
    for bench in ("sop-bn_inception", "inshop-resnet50"):
        t = layered("sota.yaml", bench)["train"]
        assert t["batch_size"] == 256 and t["samples_per_class"] == 3 and t["iaa"]["lam"] == 0.5
        assert t["pooling"] == "avg"
    assert layered("sota.yaml", "cub200-resnet50")["train"]["batch_size"] == 256


def test_released_recipe_per_dataset():
    cub, cars, sop, inshop = (
        layered("paper.yaml", b, recipe="released")["train"] for b in ("cub200", "cars196", "sop", "inshop")
    )
    for t in (cub, cars, sop, inshop):
        assert t["embedding_lr_multiplier"] == 1.0 and t["weight_decay"] == 1e-5
        assert t["lr_milestones"] == [40, 60, 80] and t["amp"] is False and t["selection"] == "best_test"
        assert t["head_init"] == "kaiming_fan_out" and t["interpolation"] == "lanczos"
        assert t["googlenet_transform_input"] is False and t["sampler"] == "released"
        assert t["samples_per_class_large"] == 3 and t["pooling"] == "avg"  # GoogLeNet: average pool
        ia = t["iaa"]
        assert ia["update_every"] == 2 and ia["estimation_transform"] == "train"
        assert ia["apply_correction"] is False and ia["sqrt_per_copy"] is True
        assert ia["minmax_sentinel"] is True and ia["singleton_mean_zero"] is True
    assert cub["lr"] == 5e-5 and cub["lr_by_loss"] == {"contrastive": 3e-5} and cub["square_resize"] is False
    assert cars["lr"] == 5e-5 and cars["iaa"]["lam"] == 0.8
    assert sop["lr"] == 1e-4 and sop["batch_size"] == 180 and sop["iaa"]["lam"] == 0.6
    assert sop["iaa"]["copies_by_loss"] == {"contrastive": 2} and inshop["iaa"]["copies_by_loss"] == {
        "contrastive": 2
    }
    assert inshop["samples_per_class"] == 3
    for bench in ("sop-bn_inception", "inshop-resnet50", "cub200-resnet50"):
        t = layered("sota.yaml", bench, recipe="released")["train"]
        assert t["batch_size"] == 256 and t["pooling"] == "max_avg"
    assert layered("sota.yaml", "sop-resnet50", recipe="released")["train"]["iaa"]["lam"] == 0.5


def test_a_key_the_user_sets_wins_over_the_recipe():
    # mappings merge key by key: one loss's M is changed by naming it
    over = {
        "benchmark_overrides": {"sop": {"train": {"lr": 3e-4, "iaa": {"copies_by_loss": {"contrastive": 3}}}}}
    }
    sop = layered("paper.yaml", "sop", recipe="released", **over)["train"]
    assert (
        sop["lr"] == 3e-4 and sop["iaa"]["copies_by_loss"] == {"contrastive": 3} and sop["batch_size"] == 180
    )
    cars = layered("paper.yaml", "cars196", recipe="released", train={"interpolation": "bilinear"})["train"]
    assert cars["interpolation"] == "bilinear" and cars["sampler"] == "released"


def test_synth_takes_its_budget_over_either_recipe():
    for recipe in ("paper", "released"):
        t = layered("config.yaml", "synth", recipe=recipe)["train"]
        assert t["epochs"] == 12 and t["lr"] == 3e-4 and t["lr_milestones"] == [6, 9]
    assert layered("config.yaml", "synth-fewshot")["train"]["batch_size"] == 120


def test_unknown_recipe_is_one_line():
    with pytest.raises(IAAError, match="unknown recipe 'relased'"):
        recipe_config("relased", "cub200")
