"""train.loader: cache: images from the decoded store, augmented on the device (here the CPU),
through the same interface as the JPEG path; and the loader rule (auto / workers / cache)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from iaa.config import IAASettings, TrainSettings
from iaa.data.decoded_store import DecodedStore, StaleStoreError
from iaa.data.sources import ImageOptions, ImageSource
from iaa.data.store_source import StoreSource
from iaa.data.store_writer import write_store
from iaa.errors import IAAError
from iaa.io import read_manifest, write_manifest
from iaa.run_inputs import TrainInputs, _image_sources, use_store
from iaa.train import train_stage
from tests.test_decoded_store import IMAGES, _rewrite_in_place, _write_image


def _manifest(root: Path, classes: int = 6, per_class: int = 6) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(classes):
        for i in range(per_class):
            w, h, mode, fmt = IMAGES[(c + i) % len(IMAGES)]
            name = f"images/{c}_{i}.{fmt.lower()}"
            _write_image(root / name, w + 10, h + 10, mode, fmt, seed=c * 100 + i)
            rows.append(
                {"path": name, "label": c, "split": "train" if c < 4 else "test", "class_name": str(c)}
            )
    path = root / "manifest.parquet"
    write_manifest(path, pd.DataFrame(rows), root)
    return path


def test_store_source_eval_batches_equal_the_jpeg_paths_center_crop(tmp_path):
    manifest = _manifest(tmp_path / "data")
    store_dir = write_store(manifest, tmp_path / "store", resize=24, square=True, interpolation="bilinear")
    store = DecodedStore.open(store_dir, manifest, resize=24, square=True, interpolation="bilinear")
    opts = ImageOptions(20, 24, square=True, preload=False)
    frame = read_manifest(manifest).frame
    rows = np.flatnonzero(frame["split"].isin(["test"]).to_numpy())
    ours = StoreSource(store, rows, frame["label"].to_numpy()[rows], frame["split"].to_numpy()[rows], opts,
                       torch.device("cpu"))  # fmt: skip
    jpeg = ImageSource(read_manifest(manifest), ("test",), opts)
    assert len(ours) == len(jpeg) == 12 and np.array_equal(ours.labels, jpeg.labels)
    got = torch.cat([x for x, _ in ours.eval_batches(5)])
    want = torch.cat([x for x, _ in jpeg.eval_batches(5)])
    assert got.shape == want.shape == (12, 3, 20, 20)
    # the same squashed pixels, the same centre crop: equal up to uint8 rounding
    torch.testing.assert_close(
        got, want.float() / 255 if want.dtype == torch.uint8 else want, atol=1 / 255, rtol=0
    )


def test_store_source_train_batches_keep_the_samplers_order(tmp_path):
    manifest = _manifest(tmp_path / "data")
    store = DecodedStore.open(write_store(manifest, tmp_path / "s", resize=24, square=True,
                                          interpolation="bilinear"), manifest)  # fmt: skip
    rows = np.arange(24)
    frame = read_manifest(manifest).frame
    src = StoreSource(store, rows, frame["label"].to_numpy()[:24], frame["split"].to_numpy()[:24],
                      ImageOptions(16, 24), torch.device("cpu"))  # fmt: skip
    batches = [torch.tensor([3, 1, 7]), torch.tensor([0, 23]), torch.tensor([5])]
    out = list(src.train_batches(batches))
    assert [idx.tolist() for _, idx in out] == [b.tolist() for b in batches]
    assert [tuple(x.shape) for x, _ in out] == [(3, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    assert all(x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 for x, _ in out)


def test_loader_rule():
    cpu, cuda, store = torch.device("cpu"), torch.device("cuda"), Path("store")
    s = TrainSettings()
    assert use_store(s, store, cuda) and not use_store(s, store, cpu) and not use_store(s, None, cuda)
    assert use_store(dataclasses.replace(s, loader="cache"), store, cpu)
    assert not use_store(dataclasses.replace(s, loader="workers"), store, cuda)
    with pytest.raises(IAAError, match="prepare.decoded_store"):
        use_store(dataclasses.replace(s, loader="cache"), None, cpu)


def test_training_refuses_a_store_whose_image_was_rewritten_in_place(tmp_path):
    manifest = _manifest(tmp_path / "data")
    store = write_store(manifest, tmp_path / "store", resize=24, square=True, interpolation="bilinear")
    settings = TrainSettings(image_size=20, resize=24, loader="cache")
    inputs = TrainInputs(manifest=manifest, decoded_store=store)
    opts = ImageOptions(20, 24, square=True, preload=False)
    sources = _image_sources(read_manifest(manifest), opts, inputs, settings)  # unchanged: accepted
    assert len(sources(("test",))) == 12
    image = manifest.parent / read_manifest(manifest).frame["path"].iloc[7]
    _rewrite_in_place(image)  # e.g. rotated by a clean-up script, same name
    with pytest.raises(StaleStoreError) as info:  # an IAAError: `iaa train` prints it, exit status 2
        _image_sources(read_manifest(manifest), opts, inputs, settings)
    message = str(info.value)
    assert "\n" not in message and f"image {image} was rewritten since the store was written" in message
    assert f"rebuild it with `iaa decode --manifest {manifest} --out {store} --resize 24 --square" in message


@pytest.mark.slow
def test_finetune_run_reads_the_store_and_refuses_a_stale_one(tmp_path, monkeypatch):
    from tests.test_real_pipeline import fake_imagenet_googlenet

    torch.set_num_threads(1)
    manifest = _manifest(tmp_path / "data")
    weights = fake_imagenet_googlenet(tmp_path, monkeypatch)
    store = write_store(manifest, tmp_path / "store", resize=36, square=True, interpolation="bilinear")
    settings = TrainSettings(
        epochs=2, batch_size=8, samples_per_class=2, embedding_dim=8, image_size=32, resize=36, lr=1e-4,
        lr_milestones=[2], loader="cache", iaa=IAASettings(start_epoch=0, update_every=1),
    )  # fmt: skip
    inputs = TrainInputs(manifest=manifest, arch="googlenet", weights=weights, allow_download=False,
                         decoded_store=store)  # fmt: skip
    run = tmp_path / "run"
    history = train_stage(
        inputs, loss_name="ms", method="iaa", seed=0, settings=settings, model_out=run / "model.pt",
        history_out=run / "history.csv", checkpoint_dir=run / "ckpt",
    )  # fmt: skip
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert history[-1]["iaa_active"] == 1 and np.isfinite(history[-1]["val_recall@1"])
    frame = read_manifest(manifest).frame.iloc[::-1]  # the manifest rewritten: rows reordered
    write_manifest(manifest, frame, manifest.parent)
    with pytest.raises(StaleStoreError, match="iaa decode"):
        train_stage(
            inputs, loss_name="ms", method="iaa", seed=0, settings=settings, model_out=run / "m2.pt",
            history_out=run / "h2.csv", checkpoint_dir=run / "ckpt2",
        )  # fmt: skip


def test_the_workflow_decodes_once_and_hands_the_store_to_training(tmp_path):
    from tests.test_pipeline import snakemake

    config = ("train={'mode': 'finetune'}", "prepare={'decoded_store': True}")
    plan = snakemake(tmp_path, "-n", "-p", "--cores", "2", "all", config=config)
    assert plan.returncode == 0, plan.stderr[-2000:]
    store = tmp_path / "results" / "synth" / "decoded_store"
    assert f"decode --manifest {tmp_path}/results/synth/manifest.parquet --out {store}" in plan.stdout
    trains = [line for line in plan.stdout.splitlines() if " train --loss " in line]
    assert trains and all(f"--decoded-store {store}" in line for line in trains)
    assert plan.stdout.count(" decode --manifest ") == 1  # once for every run of the benchmark
