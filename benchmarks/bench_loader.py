"""Batches per second from the decoded store (iaa.data.decoded_store) against the JPEG path (not a test).

Writes ``--images`` generated photo-like JPEGs of 256 x 256 and their manifest under a
temporary folder in /tmp, decodes them once into a store (``write_store``, as ``iaa decode``
does), then times batches of ``--batch`` random rows, in rows/s:

* store ``gather`` into a reused buffer (what the loader thread does per batch);
* ``gather`` + a copy to NCHW-contiguous memory (a stand-in for the host-to-device copy);
* ``CacheLoader`` (background thread, prefetch 2) on ``--device``: on CUDA this includes the
  pinned copy to the GPU;
* ``gather`` + ``random_resized_crop_flip`` to 224 on the CPU (the augmentation that runs on
  the GPU in training: on a CPU-only machine this is the cost that remains);
* the JPEG path: ``ImageDataset`` with ``train_transform(224, 0.16, square_resize=256)``
  through a DataLoader with 0 and 2 worker processes (``--workers``).

The store is read from the page cache (it was just written): the numbers are those of a node
whose RAM holds the store, as a GPU node's does for every benchmark but SOP's full size.

Example::

    python benchmarks/bench_loader.py --images 3000
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from iaa.data.augment import random_resized_crop_flip
from iaa.data.cache_loader import CacheLoader
from iaa.data.decoded_store import DecodedStore
from iaa.data.images import ImageDataset, train_transform
from iaa.data.store_writer import write_store
from iaa.io import write_manifest


def write_jpegs(folder: Path, count: int, size: int, seed: int) -> list[str]:
    """Photo-like JPEGs (smooth colour fields plus noise), ``size`` x ``size``; relative names."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        freq = rng.uniform(0.005, 0.03, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        channels = [127 + 100 * np.sin(freq[c, 0] * xx + freq[c, 1] * yy + phase[c]) for c in range(3)]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, size=(size, size, 3))
        name = f"images/{i:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(folder.parent / name, quality=90)
        names.append(name)
    return names


def rate(batches: list[torch.Tensor], step) -> float:
    """Rows/s of ``step(batch)`` over ``batches`` (after one warm-up batch)."""
    step(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def iterate_rate(iterable, rows: int) -> float:
    t0 = time.perf_counter()
    for _ in iterable:
        pass
    return rows / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3000, help="number of generated JPEGs (default: 3000)")
    p.add_argument("--size", type=int, default=256, help="side of the JPEGs and the store, px")
    p.add_argument("--batch", type=int, default=128, help="rows per batch (default: 128)")
    p.add_argument("--batches", type=int, default=40, help="timed store batches (default: 40)")
    p.add_argument("--jpeg-batches", type=int, default=8, help="timed JPEG-path batches (default: 8)")
    p.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="JPEG DataLoader workers (default: 0 2)"
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    p.add_argument("--device", default=default_device, help="CacheLoader device (default: cuda if present)")
    p.add_argument("--threads", type=int, default=None, help="store decode threads (default: all CPUs)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="bench_loader.", dir="/tmp") as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        names = write_jpegs(root / "images", args.images, args.size, seed=0)
        print(f"wrote {len(names)} JPEGs of {args.size}x{args.size} in {time.perf_counter() - t0:.1f}s")
        frame = pd.DataFrame({"path": names, "label": np.arange(len(names)) % 100, "split": "train"})
        manifest = root / "manifest.parquet"
        write_manifest(manifest, frame.assign(class_name=frame["label"].astype(str)), root)

        t0 = time.perf_counter()
        folder = write_store(
            manifest, Path(tmp) / "store", resize=args.size, square=True, interpolation="bilinear",
            threads=args.threads, progress=False,
        )  # fmt: skip
        took = time.perf_counter() - t0
        cpus = args.threads or os.cpu_count()
        print(f"write_store: {len(names) / took:,.0f} images/s decoded and written ({cpus} threads)")
        store = DecodedStore.open(folder, manifest, resize=args.size, square=True, interpolation="bilinear")

        g = torch.Generator().manual_seed(1)
        batches = [torch.randint(0, len(store), (args.batch,), generator=g) for _ in range(args.batches)]
        buf = torch.empty(args.batch * args.size * args.size * 3, dtype=torch.uint8)
        results = {}
        results["store gather (reused buffer)"] = rate(batches, lambda b: store.gather(b, out=buf))
        nchw = torch.empty(args.batch, 3, args.size, args.size, dtype=torch.uint8)
        results["store gather + NCHW copy"] = rate(batches, lambda b: nchw.copy_(store.gather(b, out=buf)[0]))
        rows = sum(len(b) for b in batches)
        loader = CacheLoader(store, batches, args.device)
        results[f"CacheLoader -> {args.device}"] = iterate_rate(loader, rows)
        crop = batches[: max(2, args.batches // 4)]
        results["store gather + random_resized_crop_flip 224 (CPU)"] = rate(
            crop, lambda b: random_resized_crop_flip(store.gather(b, out=buf)[0], 224)
        )

        transform = train_transform(224, 0.16, square_resize=args.size, interpolation="bilinear")
        dataset = ImageDataset([root / n for n in names], transform)
        jpeg_batches = [b.tolist() for b in batches[: args.jpeg_batches]]
        jpeg_rows = sum(len(b) for b in jpeg_batches)
        for workers in args.workers:
            loader = DataLoader(dataset, batch_sampler=jpeg_batches, num_workers=workers)
            results[f"JPEG DataLoader, {workers} workers"] = iterate_rate(loader, jpeg_rows)

    width = max(len(k) for k in results)
    print(f"\nrows/s, batches of {args.batch} random rows, {torch.get_num_threads()} torch threads:")
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:>9,.0f}")


if __name__ == "__main__":
    main()
