"""Timings of IAA's mathematical core (not a test).

(a) ``ClassStatistics.update`` + ``neighbor_correction`` at Stanford Online Products scale
    (59,551 random 512-d embeddings in 11,318 long-tailed classes of 2-12 images);
(b) one loss step, forward + backward, on a batch of embeddings: baseline vs IAA (M copies).

Reports the median of several repeats. Example::

    python benchmarks/bench_core.py --threads 2 --repeats 5

``--write-parquet FILE`` also writes the (a) data as an embeddings Parquet (split ``train``),
so the whole ``iaa stats`` process can be timed on it::

    python benchmarks/bench_core.py --write-parquet /tmp/sop_like.parquet --skip-losses --repeats 1
    /usr/bin/time -v iaa --threads 2 stats /tmp/sop_like.parquet --split train --out /tmp/stats.parquet
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from iaa.io import write_embeddings
from iaa.losses import LOSSES, PairLoss, baseline_call, build_loss, iaa_call
from iaa.method import ClassStatistics, neighbor_correction, synthesize


def long_tailed_sizes(classes: int, images: int, lo: int, hi: int, g: torch.Generator) -> torch.Tensor:
    """Class sizes in [lo, hi] with a power-law tail, summing exactly to ``images``."""
    if not classes * lo <= images <= classes * hi:
        raise ValueError("images must lie between classes*lo and classes*hi")
    support = torch.arange(lo, hi + 1, dtype=torch.float64)
    sizes = support[torch.multinomial(support**-2.0, classes, replacement=True, generator=g)].long()
    while (diff := images - int(sizes.sum())) != 0:  # nudge random classes towards the total
        room = sizes < hi if diff > 0 else sizes > lo
        idx = room.nonzero()[:, 0]
        pick = idx[torch.randperm(idx.numel(), generator=g)[: abs(diff)]]
        sizes[pick] += 1 if diff > 0 else -1
    return sizes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of ``repeats`` calls after one warm-up call.

    CPU time is reported too because on a shared machine the wall clock also counts the
    time other processes hold the cores; with one thread it approximates an idle machine.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def bench_statistics(args: argparse.Namespace, device: torch.device) -> None:
    g = torch.Generator().manual_seed(args.seed)
    sizes = long_tailed_sizes(args.classes, args.images, 2, 12, g)
    labels = torch.repeat_interleave(torch.arange(args.classes), sizes)
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    x = torch.randn(labels.numel(), args.dim, generator=g) * 0.1 + 0.05
    if args.write_parquet:
        n = labels.numel()
        write_embeddings(
            args.write_parquet, x.numpy(), labels.numpy(), ["train"] * n, [f"{i}.jpg" for i in range(n)]
        )
        print(f"wrote {args.write_parquet}")
    labels, x = labels.to(device), x.to(device)
    stats = ClassStatistics(args.classes, args.dim).to(device)
    counts: list[torch.Tensor] = []

    def update() -> None:
        stats.reset()
        counts[:] = [stats.update(x, labels)]

    def correct() -> None:
        neighbor_correction(stats.mean, stats.var, counts[0], chunk_size=args.chunk)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    (w_update, c_update), (w_correct, c_correct) = (
        timed(update, args.repeats, device),
        timed(correct, args.repeats, device),
    )
    med = statistics.median
    print(
        f"(a) N={labels.numel()} C={args.classes} D={args.dim}, median of {args.repeats}: "
        f"update {med(w_update):.3f} s, correction {med(w_correct):.3f} s, "
        f"total {med(w_update) + med(w_correct):.3f} s wall; "
        f"process CPU time: update {med(c_update):.3f} s, correction {med(c_correct):.3f} s"
    )
    if device.type == "cuda":
        print(f"    peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    else:
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"    peak RSS {rss1 / 2**10:.0f} MiB (+{(rss1 - rss0) / 2**10:.0f} MiB during (a))")


def bench_losses(args: argparse.Namespace, device: torch.device) -> None:
    g = torch.Generator().manual_seed(args.seed + 1)
    per_class = 3
    labels = torch.arange(args.batch // per_class).repeat_interleave(per_class).to(device)
    z0 = torch.randn(labels.numel(), args.dim, generator=g).to(device)
    std = (torch.rand(int(labels.max()) + 1, args.dim, generator=g) * 0.1).to(device)
    noise = torch.Generator(device=device).manual_seed(args.seed)
    for name in sorted(LOSSES):
        loss = build_loss(name, num_classes=int(labels.max()) + 1, embedding_dim=args.dim).to(device)

        def baseline(loss: PairLoss = loss) -> None:
            z = z0.clone().requires_grad_(True)
            baseline_call(loss, F.normalize(z, dim=1), labels).backward()

        def iaa(loss: PairLoss = loss) -> None:
            z = z0.clone().requires_grad_(True)
            syn = synthesize(z, labels, std, lam=0.6, copies=args.copies, generator=noise)
            out = iaa_call(
                loss,
                F.normalize(z, dim=1),
                labels,
                F.normalize(syn.embeddings, dim=1),
                syn.labels,
                syn.source,
            )
            out.backward()

        (w_base, c_base), (w_iaa, c_iaa) = (
            timed(baseline, args.loss_repeats, device),
            timed(iaa, args.loss_repeats, device),
        )
        med = statistics.median
        print(
            f"(b) {name:<11} B={labels.numel()} M={args.copies} D={args.dim}: "
            f"baseline {med(w_base) * 1e3:.2f} ms, IAA {med(w_iaa) * 1e3:.2f} ms wall "
            f"(ratio {med(w_iaa) / med(w_base):.2f}); CPU {med(c_base) * 1e3:.2f} vs "
            f"{med(c_iaa) * 1e3:.2f} ms (ratio {med(c_iaa) / med(c_base):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of (a)")
    parser.add_argument("--loss-repeats", type=int, default=30, help="repeats of (b)")
    parser.add_argument("--classes", type=int, default=11318)
    parser.add_argument("--images", type=int, default=59551)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=2048, help="correction tile size")
    parser.add_argument("--batch", type=int, default=180)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-statistics", action="store_true", help="only run (b)")
    parser.add_argument("--skip-losses", action="store_true", help="only run (a)")
    parser.add_argument("--write-parquet", help="also write the (a) data as an embeddings Parquet here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    if not args.skip_statistics:
        bench_statistics(args, device)
    if not args.skip_losses:
        bench_losses(args, device)


if __name__ == "__main__":
    main()
