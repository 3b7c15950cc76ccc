"""Training settings: those that cannot train are refused in one line (``iaa train`` and the
workflow, before any job), and the recipe options meant for training reach it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import iaa.estimation as estimation_module
import iaa.train as train_module
from iaa.cli import main
from iaa.config import IAASettings, TrainSettings
from iaa.data.sources import embed_all
from iaa.data.synth import SynthSpec, write_synth
from iaa.models.backbone import SynthConvNet, save_backbone
from iaa.train import TrainInputs, train_stage
from tests.test_train import _features

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def _cli_train(tmp: Path, settings: dict, method: str = "iaa", features: Path | None = None) -> int:
    features = features or tmp / "never-read.parquet"  # refusals come before any data is read
    return main([
        "train", "--loss", "ms", "--method", method, "--seed", "0", "--features", str(features),
        "--out", str(tmp / "run" / "model.pt"), "--history", str(tmp / "run" / "history.csv"),
        "--settings", json.dumps(settings),
    ])  # fmt: skip


# --------------------------------------------------------------------------- refusals: iaa train


@pytest.mark.parametrize(
    "settings, method, names",
    [
        ({"samples_per_class": 1, "mode": "head", "batch_size": 8}, "iaa", ["train.samples_per_class "]),
        ({"samples_per_class": 1, "mode": "head", "batch_size": 8}, "baseline", ["train.samples_per_class "]),
        (
            {"samples_per_class": 4, "mode": "head", "batch_size": 4},
            "iaa",
            ["train.batch_size (4)", "train.samples_per_class (4)"],
        ),
        ({"samples_per_class_large": 1, "mode": "head"}, "iaa", ["train.samples_per_class_large "]),
        (
            {"samples_per_class_large": 8, "mode": "head", "batch_size": 8},
            "iaa",
            ["train.batch_size (8)", "train.samples_per_class_large (8)"],
        ),
        (
            {"mode": "head", "epochs": 3, "iaa": {"start_epoch": 3}},
            "iaa",
            ["train.iaa.start_epoch (3)", "train.epochs (3)"],
        ),
        ({"mode": "head", "epochs": 3, "iaa": {"start_epoch": 7}}, "iaa", ["train.iaa.start_epoch (7)"]),
        ({"mode": "head", "selection": "best_test", "val_split": None}, "iaa", ["train.val_split"]),
        ({"mode": "head", "selection": "best_vall"}, "iaa", ["train.selection is 'best_vall'", "best_val"]),
        ({"mode": "head", "sampler": "mdr"}, "iaa", ["train.sampler is 'mdr'"]),
        (
            {"mode": "head", "iaa": {"estimation_transform": "crop"}},
            "iaa",
            ["train.iaa.estimation_transform"],
        ),
    ],
)
def test_iaa_train_refuses_settings_that_cannot_train(tmp_path, capsys, settings, method, names):
    assert _cli_train(tmp_path, settings, method) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("iaa train: error:")]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    assert "never-read" not in err  # refused before looking for the data
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_baseline_run_may_end_before_iaa_would_start(tmp_path, capsys):
    features = _features(tmp_path / "f.parquet")
    settings = {
        "mode": "head", "epochs": 2, "batch_size": 24, "samples_per_class": 4, "embedding_dim": 8,
        "lr_milestones": [5], "iaa": {"start_epoch": 2},
    }  # fmt: skip
    assert _cli_train(tmp_path, settings, "baseline", features) == 0, capsys.readouterr().err
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and history["iaa_active"].tolist() == [0, 0]
    assert (tmp_path / "run" / "model.pt").exists()


# --------------------------------------------------------------------------- refusals: workflow


def _dry_run(workdir: Path, overlay: str) -> subprocess.CompletedProcess:
    path = workdir / "overlay.yaml"
    path.write_text(overlay)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(TINY), str(path),
        "--config", f"results_dir={workdir / 'results'}", "-n", "--cores", "1", "all",
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "overlay, expected",
    [
        # the schema's minimum catches m = 1, naming the key by its path in the config
        (
            "train: {samples_per_class: 1}\n",
            "config: train.samples_per_class: 1 is less than the minimum of 2",
        ),
        (
            "train: {samples_per_class: 4, batch_size: 4}\n",
            "benchmark synth: train.batch_size (4) must exceed train.samples_per_class (4)",
        ),
        ("train: {epochs: 3, iaa: {start_epoch: 3}}\n", "benchmark synth: train.iaa.start_epoch (3)"),
        (  # the benchmark's own override makes it trainable
            "train: {samples_per_class: 4, batch_size: 4}\n"
            "benchmark_overrides: {synth: {train: {batch_size: 16}}}\n",
            None,
        ),
        ("methods: [baseline]\ntrain: {epochs: 3, iaa: {start_epoch: 3}}\n", None),
    ],
)
def test_workflow_refuses_settings_that_cannot_train_before_any_job(tmp_path, overlay, expected):
    result = _dry_run(tmp_path, overlay)
    output = result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
    if expected is None:  # fixed by a benchmark override, or no IAA run: planned
        assert result.returncode == 0, output[-3000:]
        assert "train" in result.stdout
        return
    # a config mistake: one line on stderr, exit 2, nothing else printed
    assert result.returncode == 2, output[-3000:]
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, output[-3000:]
    line = result.stderr.strip()
    assert expected in line, line
    if "benchmark" in expected:  # our own check: the whole reason on that one line
        assert line.startswith("config: benchmark synth: "), line
        assert line.endswith(("no negatives", "every IAA run would be a baseline run")), line


# --------------------------------------------------------------------------- options reach training


def _settings(**kw) -> TrainSettings:
    base = dict(
        mode="head", epochs=3, batch_size=24, samples_per_class=4, lr=1e-3, lr_milestones=[10],
        embedding_lr_multiplier=1.0, embedding_dim=8, head_hidden=16, val_split="test",
        iaa=IAASettings(start_epoch=1, update_every=1, copies=3),
    )  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)


def _run(tmp: Path, inputs: TrainInputs, loss: str, settings: TrainSettings) -> list[dict]:
    return train_stage(
        inputs, loss_name=loss, method="iaa", seed=1, settings=settings,
        model_out=tmp / "model.pt", history_out=tmp / "history.csv", checkpoint_dir=tmp / "ckpt",
    )  # fmt: skip


def test_copies_and_lr_by_loss_reach_the_contrastive_run_only(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    real = train_module.synthesize
    asked: list[int] = []  # the M of each synthesize call
    drawn: list[tuple[int, int]] = []

    def recording(z, y, std, *, copies: int, **kw):
        out = real(z, y, std, copies=copies, **kw)
        asked.append(copies)
        drawn.append((len(out.labels), len(y)))
        return out

    monkeypatch.setattr(train_module, "synthesize", recording)
    settings = _settings(
        iaa=IAASettings(start_epoch=1, update_every=1, copies=3, copies_by_loss={"contrastive": 2}),
        lr_by_loss={"contrastive": 3e-5},
    )
    history = _run(tmp_path / "contrastive", TrainInputs(features=features), "contrastive", settings)
    assert asked and set(asked) == {2}
    assert all(n_synth == 2 * batch for n_synth, batch in drawn)  # M copies of every original
    assert [row["lr"] for row in history] == [3e-5] * 3
    assert [row["iaa_active"] for row in history] == [False, True, True]

    asked.clear()
    drawn.clear()
    history = _run(tmp_path / "ms", TrainInputs(features=features), "ms", settings)
    assert asked and set(asked) == {3}
    assert all(n_synth == 3 * batch for n_synth, batch in drawn)
    assert [row["lr"] for row in history] == [1e-3] * 3


def test_the_released_sampler_reaches_training(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    real = train_module.build_sampler
    kinds: list[str] = []

    def recording(kind, *args):
        kinds.append(kind)
        return real(kind, *args)

    monkeypatch.setattr(train_module, "build_sampler", recording)
    _run(tmp_path / "run", TrainInputs(features=features), "ms", _settings(sampler="released"))
    assert kinds == ["released"]


def _synth_images(tmp: Path) -> tuple[Path, Path]:
    """A tiny synth image set (6 train, 6 test classes of 16x16 images) and a random backbone."""
    spec = SynthSpec.for_variant(
        "synth", pretrain_classes=2, train_classes=6, test_classes=6, pretrain_images=(2, 2),
        train_images=(6, 6), test_images=(4, 4), families=3, pretrain_families=0, image_size=16,
    )  # fmt: skip
    manifest = tmp / "manifest.parquet"
    write_synth(tmp / "synth", manifest, spec, seed=0)
    torch.manual_seed(0)
    backbone = tmp / "backbone.pt"
    save_backbone(str(backbone), SynthConvNet(width=4), "synth", {"width": 4})
    return manifest, backbone


def test_estimation_transform_train_embeds_training_crops_in_finetune_mode(tmp_path, monkeypatch):
    manifest, backbone = _synth_images(tmp_path)
    real = estimation_module.embed_train_transform
    passes: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(model, source, device, channels_last):
        out = real(model, source, device, channels_last)
        passes.append((out, embed_all(model, source, 512, device)))  # the eval pass, for comparison
        return out

    monkeypatch.setattr(estimation_module, "embed_train_transform", recording)
    settings = _settings(
        mode="finetune", epochs=2, batch_size=12, image_size=16, resize=16, embedding_dim=8, head_hidden=0,
        iaa=IAASettings(start_epoch=1, update_every=1, copies=2, estimation_transform="train"),
    )  # fmt: skip
    inputs = TrainInputs(manifest=manifest, backbone=backbone)
    history = _run(tmp_path / "train", inputs, "ms", settings)
    assert [row["estimated"] for row in history] == [0, 1]
    assert len(passes) == 1  # the one estimation (epoch 2) went through the training transforms
    crops, eval_pass = passes[0]
    assert crops.shape == eval_pass.shape == (36, 8)
    assert not torch.allclose(crops, eval_pass)  # random crops and flips, not the center crop

    passes.clear()
    eval_settings = _settings(
        mode="finetune", epochs=2, batch_size=12, image_size=16, resize=16, embedding_dim=8, head_hidden=0,
        iaa=IAASettings(start_epoch=1, update_every=1, copies=2, estimation_transform="eval"),
    )  # fmt: skip
    history = _run(tmp_path / "eval", inputs, "ms", eval_settings)
    assert [row["estimated"] for row in history] == [0, 1] and passes == []


def test_history_records_the_rate_each_epoch_trained_at(tmp_path):
    # MultiStepLR with milestone 2 decays after epoch 2's step: epochs 1 and 2 train at the
    # base rate, epoch 3 at base * gamma (0.2, the schema's default)
    features = _features(tmp_path / "f.parquet")
    settings = _settings(lr_milestones=[2])
    history = _run(tmp_path / "run", TrainInputs(features=features), "ms", settings)
    assert [row["lr"] for row in history] == pytest.approx([1e-3, 1e-3, 2e-4])
