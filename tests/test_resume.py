"""Resume safety: a run resumes only its own checkpoints (same settings AND inputs), and a
checkpoint whose generator state cannot be restored on this device still resumes, re-seeded.

Head-mode runs on small Gaussian features: a run takes well under a second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import iaa.train as train_module
from iaa.checkpoints import restore_generator, run_fingerprint
from iaa.cli import main
from iaa.config import IAASettings, LossSettings, TrainSettings, to_dict
from iaa.io import write_manifest
from iaa.train import TrainInputs, train_stage
from tests.test_train import _features

EPOCHS = 3


SETTINGS = dict(
    mode="head", epochs=EPOCHS, batch_size=24, samples_per_class=4, lr=1e-3, lr_milestones=[2],
    embedding_dim=8, head_hidden=16, val_split="test", selection="best_test",
    iaa=dict(start_epoch=1, update_every=1, copies=2),
)  # fmt: skip


def _settings(**kw) -> TrainSettings:
    data = {**SETTINGS, **kw}
    return TrainSettings(**{**data, "iaa": IAASettings(**data["iaa"])})


def _run(run: Path, features: Path, **kw) -> list[dict]:
    return train_stage(
        TrainInputs(features=features), loss_name="ms", method="iaa", seed=3, settings=_settings(**kw),
        model_out=run / "model.pt", history_out=run / "history.csv", checkpoint_dir=run / "ckpt",
    )  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _epochs_trained(text: str) -> list[int]:
    """The epochs a log says were trained (one ``epoch N/M loss ...`` line each)."""
    return [int(n) for n in re.findall(r"epoch (\d+)/\d+ loss ", text)]


def _kill_after(monkeypatch, epoch: int):
    """Make the next run die (as if SIGKILLed) right after writing epoch ``epoch``'s checkpoint;
    returns a function that undoes it."""
    real_save = train_module._save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        if args[6].epoch == epoch:  # state
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(train_module, "_save_checkpoint", real_save)


@pytest.fixture
def info(caplog):
    caplog.set_level(logging.INFO, logger="iaa")
    return caplog


# --------------------------------------------------------------------------- changed inputs


def test_a_finished_run_with_rewritten_features_trains_again_from_scratch(tmp_path, info):
    features = _features(tmp_path / "f.parquet", seed=0)
    run = tmp_path / "run"
    first = _run(run, features)
    first_model = _weights(run / "model.pt")
    first_selected = _weights(run / "selected.pt")
    assert _epochs_trained(info.text) == [1, 2, 3]

    _features(features, seed=1)  # same path, same shape, other values (a rerun of extract)
    info.clear()
    second = _run(run, features)
    newest = run / "ckpt" / f"epoch_{EPOCHS:03d}.pt"
    assert f"{newest} was trained with other settings or inputs: starting this run from scratch" in info.text
    assert "resumed from" not in info.text
    assert _epochs_trained(info.text) == [1, 2, 3]  # every epoch trained again
    assert len(second) == EPOCHS and all(row["seconds"] > 0 for row in second)
    assert all(a["loss"] != b["loss"] for a, b in zip(first, second))
    assert not _same(_weights(run / "model.pt"), first_model)
    assert not _same(_weights(run / "selected.pt"), first_selected)

    # ... and it is the run a fresh folder gets from the new features, bit for bit
    fresh = _run(tmp_path / "fresh", features)
    assert [r["loss"] for r in second] == [r["loss"] for r in fresh]
    assert _same(_weights(run / "model.pt"), _weights(tmp_path / "fresh" / "model.pt"))
    assert _same(_weights(run / "selected.pt"), _weights(tmp_path / "fresh" / "selected.pt"))
    history = pd.read_csv(run / "history.csv")
    assert history["loss"].tolist() == pytest.approx([r["loss"] for r in fresh], rel=1e-5)


def test_a_finished_run_with_unchanged_inputs_trains_nothing(tmp_path, info):
    features = _features(tmp_path / "f.parquet")
    run = tmp_path / "run"
    first = _run(run, features)
    model, selected = _weights(run / "model.pt"), _weights(run / "selected.pt")
    history = (run / "history.csv").read_text()

    # the same bytes written again (a new modification time) and the folder moved elsewhere
    shutil.copy(features, tmp_path / "copy.parquet")
    (tmp_path / "copy.parquet").replace(features)
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    info.clear()
    again = _run(moved, features)
    newest = moved / "ckpt" / f"epoch_{EPOCHS:03d}.pt"
    assert f"resumed from {newest} (epoch {EPOCHS})" in info.text
    assert "other settings or inputs" not in info.text
    assert _epochs_trained(info.text) == []  # nothing retrained
    # the history comes back from the checkpoint, seconds included
    assert pd.DataFrame(again).equals(pd.DataFrame(first))
    assert (moved / "history.csv").read_text() == history
    assert _same(_weights(moved / "model.pt"), model)
    assert _same(_weights(moved / "selected.pt"), selected)


def test_a_changed_manifest_or_backbone_changes_the_fingerprint(tmp_path):
    settings = _settings(mode="finetune")
    manifest, backbone = tmp_path / "manifest.parquet", tmp_path / "backbone.pt"
    images = [tmp_path / "img" / f"{i}.jpg" for i in range(2)]
    images[0].parent.mkdir()
    for i, path in enumerate(images):
        path.write_bytes(b"jpeg" * (i + 1))
    frame = pd.DataFrame(
        {
            "path": [f"img/{i}.jpg" for i in range(2)],
            "label": [0, 1],
            "split": "train",
            "class_name": ["a", "b"],
        }
    )
    write_manifest(manifest, frame, tmp_path)
    v1 = manifest.read_bytes()
    backbone.write_bytes(b"backbone v1")
    inputs = TrainInputs(manifest=manifest, backbone=backbone)

    def fingerprint() -> str:
        return run_fingerprint(settings, "ms", "iaa", 3, inputs.identity())

    before = fingerprint()
    assert fingerprint() == before
    write_manifest(manifest, frame.assign(label=[1, 0]), tmp_path)  # other content
    assert fingerprint() != before
    manifest.write_bytes(v1)
    assert fingerprint() == before
    # an image rewritten under the same path (e.g. another cache filter): the manifest's bytes
    # stay, the image's size changes
    images[1].write_bytes(b"jpeg" * 3)
    assert fingerprint() != before
    images[1].write_bytes(b"jpeg" * 2)
    assert fingerprint() == before
    backbone.write_bytes(b"backbone v1 retrained")
    assert fingerprint() != before
    backbone.write_bytes(b"backbone v1")
    assert fingerprint() == before
    arch = TrainInputs(manifest=manifest, arch="googlenet")
    other_weights = TrainInputs(manifest=manifest, arch="googlenet", weights=tmp_path / "w.pth")
    assert arch.identity() != other_weights.identity()
    assert TrainInputs(manifest=manifest, arch="resnet50").identity() != arch.identity()


# --------------------------------------------------------------------------- fingerprint


def _changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, 99]
    if isinstance(value, dict):
        return {**value, "changed": 1}
    if value is None:
        return 3
    raise AssertionError(f"no change for {value!r}")


def test_only_execution_settings_leave_the_fingerprint_unchanged():
    base = TrainSettings()
    reference = run_fingerprint(base, "ms", "iaa", 0, {"features": "1:ab"})
    assert run_fingerprint(dataclasses.replace(base, workers=8), "ms", "iaa", 0, {"features": "1:ab"}) == (
        reference
    )
    assert run_fingerprint(dataclasses.replace(base, lr=2e-4), "ms", "iaa", 0, {"features": "1:ab"}) != (
        reference
    )
    unchanged = []
    for f in dataclasses.fields(TrainSettings):
        value = getattr(base, f.name)
        variants = []
        if isinstance(value, (IAASettings, LossSettings)):
            variants = [
                dataclasses.replace(value, **{g.name: _changed(getattr(value, g.name))})
                for g in dataclasses.fields(value)
            ]
        else:
            variants = [_changed(value)]
        for variant in variants:
            changed = dataclasses.replace(base, **{f.name: variant})
            assert to_dict(changed) != to_dict(base)
            if run_fingerprint(changed, "ms", "iaa", 0, {"features": "1:ab"}) == reference:
                unchanged.append(f.name)
    assert unchanged == ["workers", "loader", "compile"]  # iaa.checkpoints.EXECUTION_KEYS
    for other in (
        run_fingerprint(base, "triplet", "iaa", 0, {"features": "1:ab"}),
        run_fingerprint(base, "ms", "baseline", 0, {"features": "1:ab"}),
        run_fingerprint(base, "ms", "iaa", 1, {"features": "1:ab"}),
        run_fingerprint(base, "ms", "iaa", 0, {"features": "1:cd"}),
        run_fingerprint(base, "ms", "iaa", 0, {}),
    ):
        assert other != reference


def test_a_killed_run_resumes_across_a_change_of_workers_only(tmp_path, monkeypatch, info):
    features = _features(tmp_path / "f.parquet")
    run = tmp_path / "run"
    restore = _kill_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(run, features)
    restore()
    info.clear()
    resumed = _run(run, features, workers=2)
    assert f"resumed from {run / 'ckpt' / 'epoch_002.pt'} (epoch 2)" in info.text
    assert _epochs_trained(info.text) == [3]
    reference = _run(tmp_path / "reference", features)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]
    assert _same(_weights(run / "model.pt"), _weights(tmp_path / "reference" / "model.pt"))


# --------------------------------------------------------------------------- generator state


def test_restore_generator_reseeds_a_state_of_another_device_type(caplog):
    generator = torch.Generator().manual_seed(1)
    cuda_like_state = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: seed + offset
    assert restore_generator(generator, cuda_like_state, "noise", reseed=1234) is False
    expected = torch.Generator().manual_seed(1234)
    assert torch.equal(torch.rand(8, generator=generator), torch.rand(8, generator=expected))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "\n" not in message and "noise" in message and "re-seeded with 1234" in message


def test_restore_generator_restores_a_state_of_the_same_device_type():
    source = torch.Generator().manual_seed(7)
    torch.rand(5, generator=source)
    state = source.get_state()
    generator = torch.Generator().manual_seed(0)
    assert restore_generator(generator, state, "noise", reseed=99) is True
    assert torch.equal(torch.rand(8, generator=generator), torch.rand(8, generator=source))


def test_a_checkpoint_with_another_devices_noise_state_resumes(tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.INFO)
    features = _features(tmp_path / "f.parquet")
    run = tmp_path / "run"
    restore = _kill_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(run, features, epochs=4)
    restore()
    newest = run / "ckpt" / "epoch_002.pt"
    payload = torch.load(newest, map_location="cpu", weights_only=False)
    # the other device type's state: a GPU's (16 bytes: seed + offset) where this run saved a
    # CPU generator's, a CPU's where it ran on a GPU (the device check runs this on CUDA)
    if payload["rng"]["noise"].numel() > 16:
        payload["rng"]["noise"] = torch.zeros(16, dtype=torch.uint8)
    else:
        payload["rng"]["noise"] = torch.Generator().get_state()
    torch.save(payload, newest)

    caplog.clear()
    settings = {**SETTINGS, "epochs": 4}
    rc = main([
        "train", "--loss", "ms", "--method", "iaa", "--seed", "3", "--features", str(features),
        "--out", str(run / "model.pt"), "--history", str(run / "history.csv"),
        "--checkpoints", str(run / "ckpt"), "--settings", json.dumps(settings),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert f"resumed from {newest} (epoch 2)" in caplog.text
    reseeded = [r.getMessage() for r in caplog.records if "re-seeded" in r.getMessage()]
    assert len(reseeded) == 1 and "\n" not in reseeded[0] and "noise" in reseeded[0]
    assert [r.levelno for r in caplog.records if "re-seeded" in r.getMessage()] == [logging.WARNING]
    assert _epochs_trained(caplog.text) == [3, 4]
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4] and history["iaa_active"].tolist() == [0, 1, 1, 1]
    assert (run / "model.pt").exists() and (run / "selected.pt").exists()
