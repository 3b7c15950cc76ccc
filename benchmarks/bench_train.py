"""Training throughput of the paper's protocol, and the image loader's rate (not a test).

(a) Loader: decode + train augmentation (SPEC 3: resize 256 x 256, RandomResizedCrop 224,
    flip) through the DataLoader, images/s, on generated JPEGs of ``--source-size`` (CUB's
    images are about 500 x 375) and on their resized cache (shorter side 256, as
    ``iaa prepare --resized-cache`` writes it).
(b) Training step: a backbone (random init: the step costs the same as with ImageNet
    weights) + 512-d embedding on random 224-px batches, forward, loss, backward, Adam step;
    baseline vs IAA (M synthetic copies per embedding), images/s. On CUDA it runs as
    ``iaa train`` does there: bfloat16 autocast and channels-last (``--no-amp`` to compare).

Examples::

    python benchmarks/bench_train.py --threads 2 --batch 32 --steps 3
    python benchmarks/bench_train.py --device cuda --batch 128 --steps 30 --skip-loader
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from iaa.data.datasets.resized_cache import build_resized_cache
from iaa.data.images import ImageDataset, train_transform
from iaa.data.sources import model_forward, place_model
from iaa.losses import baseline_call, build_loss, iaa_call
from iaa.method import synthesize
from iaa.models.embedder import EmbeddingModel


def write_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[str]:
    """Photo-like JPEGs (smooth colour fields plus noise) of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    names = []
    for i in range(count):
        freq = rng.uniform(0.005, 0.03, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        channels = [127 + 100 * np.sin(freq[c, 0] * xx + freq[c, 1] * yy + phase[c]) for c in range(3)]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, size=(h, w, 3))
        name = f"img_{i:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name, quality=90)
        names.append(name)
    return names


def loader_rate(files: list[Path], workers: int, batch: int, epochs: int = 2) -> float:
    """Images/s of decode + train transform through the DataLoader (mean of ``epochs`` passes)."""
    dataset = ImageDataset(files, train_transform(224, 0.16, square_resize=256, interpolation="bilinear"))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False)
    rates = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        seen = sum(x.shape[0] for x, _ in loader)
        rates.append(seen / (time.perf_counter() - t0))
    return statistics.mean(rates)


def bench_loader(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, cache = Path(tmp) / "src", Path(tmp) / "cache"
        src.mkdir()
        names = write_jpegs(src, args.images, tuple(args.source_size), args.seed)
        build_resized_cache(src, names, cache, 256, threads=max(1, args.threads))
        for label, folder in (("originals", src), ("resized cache", cache)):
            files = [folder / n for n in names]
            rate = loader_rate(files, args.workers, args.loader_batch)
            print(
                f"(a) loader, {label} ({Image.open(files[0]).size[0]}x{Image.open(files[0]).size[1]}), "
                f"{args.workers} workers: {rate:.0f} images/s"
            )


def bench_step(args: argparse.Namespace, device: torch.device) -> None:
    for method in ("baseline", "iaa"):
        time_step(args, device, method)


def time_step(args: argparse.Namespace, device: torch.device, method: str) -> None:
    torch.manual_seed(args.seed)
    classes = args.batch // 4
    labels = torch.arange(classes).repeat_interleave(4).to(device)
    amp = device.type == "cuda" and not args.no_amp
    model = EmbeddingModel(512, backbone=args.arch, backbone_kwargs={"pretrained": False})
    channels_last = device.type == "cuda" and not args.no_amp
    place_model(model, device, channels_last)
    model.train()
    loss_fn = build_loss(args.loss, num_classes=classes, embedding_dim=512).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=4e-4)
    std = torch.rand(classes, 512, device=device) * 0.1
    noise = torch.Generator(device=device).manual_seed(args.seed)
    pixels = torch.randint(0, 256, (args.batch, 3, 224, 224), dtype=torch.uint8)
    if device.type == "cuda":
        pixels = pixels.pin_memory()
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:  # the step of iaa.train's loop
        z = model_forward(
            model, pixels, device, channels_last=channels_last, autocast_dtype=torch.bfloat16 if amp else None
        )
        anchors = F.normalize(z, dim=1)
        if method == "iaa":
            syn = synthesize(z, labels, std, lam=0.8, copies=args.copies, generator=noise)
            loss = iaa_call(
                loss_fn, anchors, labels, F.normalize(syn.embeddings, dim=1), syn.labels, syn.source
            )
        else:
            loss = baseline_call(loss_fn, anchors, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    extra = ""
    if device.type == "cuda":
        extra = f", peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    print(
        f"(b) {args.arch} {args.loss} {method:<8} batch {args.batch} at 224 px on {device}"
        f"{' (bf16 autocast, channels-last)' if amp else ''}: {med * 1e3:.1f} ms/step median of "
        f"{args.steps}, {args.batch / med:.1f} images/s{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="googlenet", choices=["googlenet", "bn_inception", "resnet50"])
    parser.add_argument("--loss", default="ms")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-amp", action="store_true", help="CUDA: float32, channels-first")
    parser.add_argument("--images", type=int, default=192, help="(a): JPEGs generated")
    parser.add_argument("--source-size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"))
    parser.add_argument("--workers", type=int, default=2, help="(a): DataLoader workers")
    parser.add_argument("--loader-batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--skip-step", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    if device.type == "cuda":
        print(f"GPU {torch.cuda.get_device_name(0)}")
    if not args.skip_loader:
        bench_loader(args)
    if not args.skip_step:
        bench_step(args, device)


if __name__ == "__main__":
    main()
