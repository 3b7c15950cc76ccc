"""Values given with snakemake --config arrive as strings inside lists and mappings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from iaa.config import coerce_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def test_strings_become_what_the_schema_types():
    given = {
        "seeds": ["0", "1"],
        "recipe": "released",
        "train": {
            "weight_decay": "4e-4",
            "amp": "false",
            "lr_milestones": ["40", "60"],
            "samples_per_class_large": "3",
            "val_split": "test",
            "lr_by_loss": {"contrastive": "3e-5"},
            "iaa": {"copies": "2", "correction": "on", "copies_by_loss": {"contrastive": "2"}},
        },
        "benchmark_overrides": {"synth": {"train": {"epochs": "5", "iaa": {"lam": "0.7"}}}},
    }
    out = coerce_pipeline_config(given, SCHEMA)
    assert out["seeds"] == [0, 1] and out["recipe"] == "released"
    train = out["train"]
    assert train["weight_decay"] == 4e-4 and train["amp"] is False and train["lr_milestones"] == [40, 60]
    assert train["samples_per_class_large"] == 3 and train["val_split"] == "test"
    assert train["lr_by_loss"] == {"contrastive": 3e-5}
    assert train["iaa"] == {"copies": 2, "correction": "on", "copies_by_loss": {"contrastive": 2}}
    assert out["benchmark_overrides"]["synth"]["train"] == {"epochs": 5, "iaa": {"lam": 0.7}}
    assert given["seeds"] == ["0", "1"]  # a new object; the input is left alone


def test_what_does_not_parse_is_left_for_the_schema_to_name():
    out = coerce_pipeline_config({"seeds": ["zero"], "train": {"epochs": "many"}}, SCHEMA)
    assert out == {"seeds": ["zero"], "train": {"epochs": "many"}}


def test_snakemake_takes_lists_and_mappings_on_the_command_line(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(tmp_path), "-n", "--cores", "2", "all",
        "--configfile", str(ROOT / "config" / "config.yaml"),
        "--config", "seeds=[0,1]", "train={weight_decay: 0.0004, epochs: 8}",
        f"results_dir={tmp_path / 'results'}",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = {
        p[0]: int(p[1])
        for line in result.stdout.splitlines()
        if len(p := line.split()) == 2 and p[1].isdigit()
    }
    assert counts["train"] == 3 * 2 * 2  # losses x methods x the two seeds given
