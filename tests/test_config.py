"""The schema is the pipeline's source of defaults; the stage dataclasses must agree with it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from iaa.config import PretrainSettings, TrainSettings, from_dict, parse_settings, to_dict
from iaa.errors import IAAError
from iaa.recipes import layered_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def filled(config: dict) -> dict:
    validate(config, SCHEMA)
    return config


def test_schema_defaults_equal_dataclass_defaults():
    config = filled({})
    # recipe is a provenance label the workflow adds from the top-level key
    assert config["train"] == {k: v for k, v in to_dict(TrainSettings()).items() if k != "recipe"}
    assert config["pretrain"] == to_dict(PretrainSettings())


def test_default_config_file_is_valid_and_round_trips_into_settings():
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    budget = yaml.safe_load((ROOT / "config" / "synth.yaml").read_text())
    config = filled(layered_config(raw, "synth", budget))
    settings = from_dict(TrainSettings, config["train"])
    assert settings.mode == "finetune" and settings.iaa.start_epoch == 6 and settings.epochs == 12
    assert {k: v for k, v in to_dict(settings).items() if k != "recipe"} == config["train"]


@pytest.mark.parametrize(
    "config, key",
    [
        ({"train": {"epochz": 3}}, "epochz"),
        ({"train": {"iaa": {"lamda": 0.5}}}, "lamda"),
        ({"losses": ["contrastive", "arcface"]}, "arcface"),
        ({"train": {"epochs": "many"}}, "many"),
        ({"seedz": [0]}, "seedz"),
    ],
)
def test_config_typos_are_errors_that_name_the_key(config, key):
    with pytest.raises(WorkflowError, match=key):
        validate(config, SCHEMA)


def test_settings_json_rejects_unknown_keys_and_bad_json():
    with pytest.raises(IAAError, match="epochz"):
        parse_settings(TrainSettings, '{"epochz": 1}')
    with pytest.raises(IAAError, match="not valid JSON"):
        parse_settings(TrainSettings, "{epochs: 1")
    assert parse_settings(TrainSettings, '{"iaa": {"copies": 2}}').iaa.copies == 2


@pytest.mark.parametrize(
    "overlay, line",
    [
        (  # an unknown key: named by its path, with the keys allowed there
            "train: {loadr: cache}\n",
            "config: train.loadr: unknown key (did you mean 'loader'? allowed: amp, batch_size,",
        ),
        ("train: {loader: gpu}\n", "config: train.loader: 'gpu' is not one of ['auto', 'workers', 'cache']"),
        ("train: {epochs: many}\n", "config: train.epochs: 'many' is not of type 'integer'"),
        ("seeds: [0, zero]\n", "config: seeds[1]: 'zero' is not of type 'integer'"),
        (  # checked on the benchmark's merged config, named where the user wrote it
            "benchmark_overrides: {synth: {train: {epochs: 0}}}\n",
            "config: benchmark_overrides.synth.train.epochs: 0 is less than the minimum of 1",
        ),
        ("benchmarks: [mien]\n", "config: benchmarks: unknown benchmark 'mien'; known: "),
        # the built-in benchmark's generator spec, built as the prepare job builds it
        (
            "synth: {overrides: {trian_classes: 3}}\n",
            "config: synth.overrides: trian_classes: unknown SynthSpec field (did you mean 'train_classes'?)",
        ),
        ("synth: {overrides: {train_classes: -3}}\n", "config: synth.overrides: train_classes must be >= 1"),
        ("synth: {overrides: {image_size: big}}\n", "config: synth.overrides: image_size must be a"),
        (
            "benchmark_overrides: {synth: {synth: {overrides: {families: 0}}}}\n",
            "config: benchmark_overrides.synth.synth.overrides: families must be >= 1, got 0",
        ),
        # NaN anywhere, +-inf but in sigma_m and sigma_cv (the schema's `number` takes both)
        ("train: {iaa: {lam: .nan}}\n", "config: train.iaa.lam: NaN is not a number this key takes"),
        ("train: {lr: .inf}\n", "config: train.lr: inf is not a number this key takes"),
        ("train: {iaa: {sigma_cv: .nan}}\n", "config: train.iaa.sigma_cv: NaN is not a number"),
        ("train: {losses: {triplet: {margin: -.inf}}}\n", "config: train.losses.triplet.margin: -inf is"),
        (
            "benchmark_overrides: {synth: {train: {iaa: {tau: .inf}}}}\n",
            "config: benchmark_overrides.synth.train.iaa.tau: inf is not a number this key takes",
        ),
        ("ablations: {fig6a: {values: [0.5, .nan]}}\n", "config: ablations.fig6a.values[1]: NaN is"),
        # a benchmark named under ablations, whatever the target
        ("ablations: {benchmarks: [synht]}\n", "config: ablations.benchmarks: unknown benchmark 'synht'"),
        (
            "ablations: {table9: {benchmarks: [synht]}}\n",
            "config: ablations.table9.benchmarks: unknown benchmark 'synht'; known: ",
        ),
    ],
)
def test_workflow_names_a_config_mistake_in_one_line_and_exits_2(tmp_path, overlay, line):
    result = _plan(tmp_path, overlay)
    said = result.stdout + result.stderr
    assert result.returncode == 2, said[-3000:]
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, said[-3000:]
    assert result.stderr.startswith(line), result.stderr
    assert "Traceback" not in said and "schema" not in said
    assert not (tmp_path / "results").exists()


def _plan(tmp_path, overlay, target="all"):
    """``snakemake -n target`` on the tiny config with ``overlay`` on top."""
    path = tmp_path / "overlay.yaml"
    path.write_text(overlay)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(tmp_path), "-n", "--cores", "1", target,
        "--configfile", str(TINY), str(path), "--config", f"results_dir={tmp_path / 'results'}",
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_ablations_target_names_an_unknown_ablation_benchmark_in_one_line(tmp_path):
    result = _plan(tmp_path, "ablations: {table9: {benchmarks: [synht]}}\n", target="ablations")
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr[-3000:]
    assert result.stderr.startswith("config: ablations.table9.benchmarks: unknown benchmark 'synht'")
    assert not (tmp_path / "results").exists()


def test_infinite_sigma_is_accepted_as_table9_sets_it(tmp_path):
    result = _plan(tmp_path, "train: {iaa: {sigma_m: .inf, sigma_cv: .inf}}\n")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert not (tmp_path / "results").exists()
