"""The real-dataset path end to end on a miniature CUB: prepare (with the resized cache),
extract with "ImageNet" GoogLeNet weights found by the weight loader, fine-tune with IAA,
export and evaluate. The weights are a random GoogLeNet saved under a registered name
whose SHA-256 prefix the test computes, so the checksum path is the real one."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from iaa.config import IAASettings, TrainSettings
from iaa.evaluate import evaluate_stage
from iaa.export import export_stage
from iaa.extract import extract_stage
from iaa.io import read_embeddings, read_manifest
from iaa.models import weights as weights_module
from iaa.prepare import prepare_stage
from iaa.train import TrainInputs, train_stage

pytestmark = pytest.mark.slow


def make_mini_cub(root: Path, rng: np.random.Generator) -> None:
    """4 train classes (ids <= 100) x 8 images and 3 test classes (> 100) x 5, 40 x 30 px."""
    folder = root / "CUB_200_2011"
    images, labels = [], []
    for cls, count in [(1, 8), (2, 8), (3, 8), (4, 8), (101, 5), (102, 5), (103, 5)]:
        colour = rng.integers(0, 256, size=3)
        for i in range(count):
            rel = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{i}.jpg"
            pixels = np.clip(colour + rng.normal(0, 40, size=(30, 40, 3)), 0, 255).astype(np.uint8)
            (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / "images" / rel)
            images.append(f"{len(images) + 1} {rel}")
            labels.append(f"{len(labels) + 1} {cls}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")


def fake_imagenet_googlenet(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    tmp = folder / "tmp.pth"
    torch.save(net.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = tmp.rename(folder / f"googlenet-{digest}.pth")
    entry = dataclasses.replace(weights_module.WEIGHTS["googlenet"], file=path.name)
    monkeypatch.setitem(weights_module.WEIGHTS, "googlenet", entry)
    return path


def test_miniature_cub_through_every_stage(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    make_mini_cub(tmp_path / "data", np.random.default_rng(0))
    weights = fake_imagenet_googlenet(tmp_path, monkeypatch)
    manifest = tmp_path / "manifest.parquet"
    prepare_stage("cub200", manifest, root=tmp_path / "data", resized_cache=tmp_path / "cache", cache_size=36)
    assert read_manifest(manifest).root == (tmp_path / "cache").resolve()

    features = tmp_path / "features.parquet"
    extract_stage(
        manifest, None, features, benchmark="cub200", image_size=32, resize=36, weights=weights,
        allow_download=False,
    )  # fmt: skip
    table = read_embeddings(features)
    assert table.embeddings.shape == (32 + 15, 1024) and set(table.splits) == {"train", "test"}

    settings = TrainSettings(
        epochs=2, batch_size=8, samples_per_class=4, embedding_dim=16, image_size=32, resize=36,
        lr=1e-4, lr_milestones=[2], iaa=IAASettings(start_epoch=0, update_every=1, lam=0.8),
    )  # fmt: skip
    model_out = tmp_path / "run" / "model.pt"
    history = train_stage(
        TrainInputs(manifest=manifest, arch="googlenet", weights=weights, allow_download=False),
        loss_name="ms", method="iaa", seed=0, settings=settings, model_out=model_out,
        history_out=tmp_path / "run" / "history.csv", checkpoint_dir=tmp_path / "run" / "ckpt",
    )  # fmt: skip
    assert [r["iaa_active"] for r in history] == [1, 1]  # estimation at epoch 1, synthesis from then
    assert all(np.isfinite(r["loss"]) for r in history)

    embeddings = tmp_path / "emb.parquet"
    assert (
        export_stage(model_out, embeddings, benchmark="cub200", manifest=manifest, image_size=32, resize=36)
        == 47
    )
    metrics = evaluate_stage(embeddings, tmp_path / "m.json", recall_k=[1, 2], split="test", seed=0)["final"]
    assert metrics["num_queries"] == 15 and metrics["num_classes"] == 3
    assert 0.0 <= metrics["recall@1"] <= metrics["recall@2"] <= 1.0
