"""Training images/s by input path: synthetic tensors, the decoded store, or JPEGs (not a test).

The training step of ``iaa train`` (``--backbone``, GoogLeNet by default, + 512-d embedding,
MS + IAA with M = 3, Adam; bfloat16 autocast and channels-last on CUDA) fed by one of:

* ``synthetic``: one random uint8 batch already in pinned memory (the GPU's own rate);
* ``store``: ``iaa.data.store_source.StoreSource`` over a decoded store of ``--images``
  generated photo-like JPEGs (gather in a background thread, pinned copy, RandomResizedCrop
  + flip on the device) — ``train.loader: cache``;
* ``jpeg``: ``iaa.data.sources.ImageSource`` over the same JPEGs through a DataLoader with
  ``--workers`` processes — ``train.loader: workers``.

Prints images/s over ``--seconds`` of steps after ``--warmup`` steps, and the peak GPU memory.
Several copies started at once on one GPU measure the aggregate rate of concurrent runs
(benchmarks/device_check.sh). The JPEGs and the store are cached under ``--data`` so the
copies share them (the first process to arrive writes them; run once with ``--prepare-only``).

Example::

    python benchmarks/bench_feed.py --source store --device cuda --seconds 30
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from bench_train import write_jpegs

from iaa.data.decoded_store import DecodedStore
from iaa.data.sources import ImageOptions, ImageSource, model_forward, place_model
from iaa.data.store_source import StoreSource
from iaa.data.store_writer import write_store
from iaa.io import read_manifest, write_manifest
from iaa.losses import build_loss, iaa_call
from iaa.method import synthesize
from iaa.models.embedder import EmbeddingModel


def prepare(data: Path, images: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """JPEGs, their manifest (classes of 8 images, all train) and the decoded store, once."""
    manifest, store = data / "manifest.parquet", data / "store"
    if not manifest.exists():
        (data / "img").mkdir(parents=True, exist_ok=True)
        names = write_jpegs(data / "img", images, size, seed=0)
        frame = pd.DataFrame({"path": [f"img/{n}" for n in names], "label": np.arange(images) // 8,
                              "split": "train", "class_name": "c"})  # fmt: skip
        write_manifest(manifest, frame, data)
    if not store.exists():
        write_store(manifest, store, resize=256, square=True, interpolation="bilinear", progress=False)
    return manifest, store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", choices=["synthetic", "store", "jpeg"], default="store")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", type=Path, default=Path("/tmp/iaa_bench_feed"), help="JPEGs + store (cached)")
    p.add_argument("--images", type=int, default=3000, help="generated JPEGs")
    p.add_argument("--source-size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"))
    p.add_argument("--backbone", choices=["googlenet", "bn_inception", "resnet50"], default="googlenet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=8, help="jpeg: DataLoader workers")
    p.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    p.add_argument("--warmup", type=int, default=5, help="steps before timing")
    p.add_argument("--seconds", type=float, default=30.0, help="time the steps of this many seconds")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile)")
    p.add_argument("--prepare-only", action="store_true", help="write the JPEGs and the store, then exit")
    p.add_argument("--tag", default="", help="a label printed with the result (concurrent copies)")
    p.add_argument("--start-at", type=float, default=0.0, help="unix time at which timing starts, after the "
                   "warm-up: one window for concurrent copies")  # fmt: skip
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    # One folder per image count and size: a cached set of another size is never reused.
    data = a.data / f"{a.images}x{a.source_size[0]}x{a.source_size[1]}"
    manifest, store_dir = prepare(data, a.images, tuple(a.source_size))
    if a.prepare_only:
        print(f"prepared {a.images} JPEGs and their store under {data}")
        return
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    opts = ImageOptions(224, 256, workers=a.workers, square=True, preload=False)
    frame = read_manifest(manifest).frame
    rows = np.arange(len(frame))
    labels_np = frame["label"].to_numpy()
    if a.source == "store":
        store = DecodedStore.open(store_dir, manifest)
        source = StoreSource(store, rows, labels_np, frame["split"].to_numpy(), opts, device)
    elif a.source == "jpeg":
        source = ImageSource(read_manifest(manifest), ("train",), opts)
    model = EmbeddingModel(512, backbone=a.backbone, backbone_kwargs={"pretrained": False})
    place_model(model, device, channels_last=cuda)
    forward = torch.compile(model) if a.compile else model
    model.train()
    loss_fn = build_loss("ms")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    classes = int(labels_np.max()) + 1
    std = torch.rand(classes, 512, device=device) * 0.1
    noise = torch.Generator(device=device).manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def index_batches():
        while True:  # 32 classes x 4 images, as the balanced sampler draws
            chosen = torch.randperm(classes, generator=g)[: a.batch // 4]
            yield (chosen[:, None] * 8 + torch.randint(0, 8, (len(chosen), 4), generator=g)).reshape(-1)

    if a.source == "synthetic":
        pixels = torch.randint(0, 256, (a.batch, 3, 224, 224), dtype=torch.uint8)
        pixels = pixels.pin_memory() if cuda else pixels
        batches = ((pixels, idx) for idx in index_batches())
    elif a.source == "store":
        batches = iter(source.train_batches(index_batches()))
    else:  # the JPEG path lists its batches up front (DataLoader's batch_sampler): a finite run
        batches = iter(source.train_batches(itertools.islice(index_batches(), 4000)))
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step(x: torch.Tensor, idx: torch.Tensor) -> None:
        y = torch.from_numpy(labels_np[idx.numpy()]).to(device)
        z = model_forward(
            forward, x, device, channels_last=cuda, autocast_dtype=torch.bfloat16 if cuda else None
        )
        syn = synthesize(z, y, std, lam=0.8, copies=3, generator=noise)
        loss = iaa_call(loss_fn, F.normalize(z, dim=1), y, F.normalize(syn.embeddings, dim=1), syn.labels,
                        syn.source)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(a.warmup):
        step(*next(batches))
    # Concurrent copies time the same window: keep stepping, untimed, until the agreed start.
    while time.time() < a.start_at:
        step(*next(batches))
    if cuda:
        torch.cuda.synchronize()
    late = a.start_at > 0 and time.time() > a.start_at + 1.0 and a.warmup > 0
    t0, seen = time.perf_counter(), 0
    while time.perf_counter() - t0 < a.seconds:
        x, idx = next(batches)
        step(x, idx)
        seen += len(idx)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""
    print(f"RESULT {a.tag} source={a.source} backbone={a.backbone} batch={a.batch} compile={int(a.compile)} "
          f"on {device}: {seen / elapsed:.1f} images/s over {elapsed:.1f} s{peak}")  # fmt: skip
    if late:
        print(
            f"WARNING: {a.tag}: warm-up ended after --start-at; its window overlaps the others' only in part"
        )


if __name__ == "__main__":
    main()
