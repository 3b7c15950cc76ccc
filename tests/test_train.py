"""Training runs: IAA switches on when the spec says, a killed run resumes exactly, NaN stops cleanly."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import iaa.train as train_module
from iaa.config import IAASettings, TrainSettings
from iaa.errors import TrainingDivergedError
from iaa.io import write_embeddings
from iaa.models.embedder import load_model
from iaa.train import TrainInputs, is_estimation_epoch, train_stage


def _features(path: Path, seed: int = 0) -> Path:
    """Gaussian classes in 16-d: 12 train classes, 6 test classes, 8 samples each."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((18, 16)) * 2
    labels = np.repeat(np.arange(18), 8)
    emb = centres[labels] + rng.standard_normal((len(labels), 16))
    splits = np.where(labels < 12, "train", "test")
    write_embeddings(path, emb, labels, splits, [f"img{i}.png" for i in range(len(labels))])
    return path


def _settings(**kw) -> TrainSettings:
    base = dict(
        mode="head", epochs=4, batch_size=24, samples_per_class=4, lr=1e-3, lr_milestones=[3],
        embedding_dim=8, head_hidden=16, val_split="test",
        iaa=IAASettings(start_epoch=1, update_every=1, copies=2),
    )  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)


def _run(tmp: Path, features: Path, method: str = "iaa", loss: str = "ms", **kw):
    return train_stage(
        TrainInputs(features=features), loss_name=loss, method=method, seed=3, settings=_settings(**kw),
        model_out=tmp / "model.pt", history_out=tmp / "history.csv", checkpoint_dir=tmp / "ckpt",
    )  # fmt: skip


@pytest.mark.parametrize(
    "epoch, due", [(1, False), (30, False), (31, True), (32, False), (33, True), (35, True)]
)
def test_global_estimation_cadence(epoch, due):
    assert is_estimation_epoch(epoch, start_epoch=30, update_every=2) is due


def test_iaa_starts_after_the_first_global_estimation(tmp_path):
    history = _run(tmp_path, _features(tmp_path / "f.parquet"))
    active = [row["iaa_active"] for row in history]
    assert active == [False, True, True, True]
    csv = pd.read_csv(tmp_path / "history.csv")
    assert list(csv["epoch"]) == [1, 2, 3, 4] and csv["estimated"].tolist() == [0, 1, 1, 1]
    model = load_model(tmp_path / "model.pt")
    assert model(torch.zeros(1, 16)).shape == (1, 8)
    assert len(list((tmp_path / "ckpt").glob("epoch_*.pt"))) == 2  # the last two are kept


def test_a_killed_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    full = tmp_path / "full"
    reference = _run(full, features)

    killed = tmp_path / "killed"
    real_save = train_module._save_checkpoint

    def save_then_die(ckpt_dir, model, optimizer, scheduler, scaler, stats, state, rngs, fingerprint, loss):
        real_save(ckpt_dir, model, optimizer, scheduler, scaler, stats, state, rngs, fingerprint, loss)
        if state.epoch == 2:
            raise KeyboardInterrupt  # stands in for SIGKILL right after the checkpoint

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(killed, features)
    assert not (killed / "model.pt").exists()
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    resumed = _run(killed, features)

    a = torch.load(full / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(killed / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]


def test_checkpoints_of_other_settings_are_not_resumed(tmp_path, monkeypatch, caplog):
    features = _features(tmp_path / "f.parquet")
    real_save = train_module._save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        if args[6].epoch == 2:  # state
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "a", features)
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    # the config changed (Snakemake reruns the job): a fresh run, equal to one from scratch
    changed = _run(tmp_path / "a", features, lr=2e-3)
    fresh = _run(tmp_path / "b", features, lr=2e-3)
    assert "trained with other settings" in caplog.text
    assert [r["loss"] for r in changed] == [r["loss"] for r in fresh]


def test_checkpoints_are_ordered_by_epoch_number_not_name(tmp_path):
    from iaa.preemption import list_checkpoints, newest_checkpoint

    for epoch in (998, 999, 1000, 1001):
        (tmp_path / f"epoch_{epoch:03d}.pt").touch()
    (tmp_path / "epoch_x.pt").touch()
    assert [p.name for p in list_checkpoints(tmp_path)][-2:] == ["epoch_1000.pt", "epoch_1001.pt"]
    assert newest_checkpoint(tmp_path).name == "epoch_1001.pt"


def test_nan_loss_stops_with_epoch_and_iteration_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    real_build = train_module.build_loss

    def poisoned(name, **kw):
        loss = real_build(name, **kw)
        calls = {"n": 0}
        real_forward = loss.forward

        def forward(*args):
            calls["n"] += 1
            value = real_forward(*args)
            return value * float("nan") if calls["n"] > 1 else value  # iteration 1 of epoch 2

        loss.forward = forward
        return loss

    monkeypatch.setattr(train_module, "build_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, iteration 1.*epoch 1"):
        _run(tmp_path, features, batch_size=96, samples_per_class=8)  # 1 iteration/epoch
    assert not (tmp_path / "model.pt").exists()
    assert [p.name for p in (tmp_path / "ckpt").glob("*.pt")] == ["epoch_001.pt"]


NEW_COLUMNS = [
    "hard_positives",
    "hard_negatives",
    "synthetic_share",
    "seconds_per_iteration",
    "peak_memory_mb",
]


def test_history_has_mining_time_and_memory_columns(tmp_path):
    history = _run(tmp_path, _features(tmp_path / "f.parquet"), epochs=2)
    csv = pd.read_csv(tmp_path / "history.csv")
    assert set(NEW_COLUMNS) <= set(csv.columns)
    assert (csv["hard_negatives"] > 0).all() and (csv["seconds_per_iteration"] > 0).all()
    assert (csv["peak_memory_mb"] > 0).all()
    # epoch 1 is a baseline epoch (no copies): no synthetic pair; epoch 2 has IAA on
    assert [r["iaa_active"] for r in history] == [False, True]
    assert csv["synthetic_share"][0] == 0 and 0 < csv["synthetic_share"][1] < 1


def _proxies(path: Path) -> dict[str, torch.Tensor]:
    from iaa.preemption import list_checkpoints

    return torch.load(list_checkpoints(path)[-1], weights_only=True)["loss"]


def test_a_proxy_loss_trains_its_proxies_and_writes_the_new_columns(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    built = {}
    real_build = train_module.build_loss

    def keep(name, **kw):
        built["loss"] = real_build(name, **kw)
        built["start"] = {k: v.detach().clone() for k, v in built["loss"].state_dict().items()}
        return built["loss"]

    monkeypatch.setattr(train_module, "build_loss", keep)
    _run(tmp_path, features, loss="proxy_nca", epochs=2)
    csv = pd.read_csv(tmp_path / "history.csv")
    assert set(NEW_COLUMNS) <= set(csv.columns) and len(csv) == 2
    assert csv["hard_negatives"].tolist() == [0, 0]  # proxy losses mine no pairs
    assert csv["synthetic_share"].isna().all()
    assert (csv["seconds_per_iteration"] > 0).all() and (csv["peak_memory_mb"] > 0).all()
    start, saved = built["start"], _proxies(tmp_path / "ckpt")
    assert list(saved) == ["loss.proxies"] and saved["loss.proxies"].shape == (12, 8)
    assert not torch.equal(saved["loss.proxies"], start["loss.proxies"])  # the proxies learned


def test_a_killed_proxy_loss_run_resumes_its_proxies(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    reference = _run(tmp_path / "full", features, loss="soft_triple", epochs=3)
    real_save = train_module._save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        if args[6].epoch == 1:  # state
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", features, loss="soft_triple", epochs=3)
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    resumed = _run(tmp_path / "killed", features, loss="soft_triple", epochs=3)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]
    a, b = _proxies(tmp_path / "full" / "ckpt"), _proxies(tmp_path / "killed" / "ckpt")
    assert torch.equal(a["loss.fc"], b["loss.fc"])
