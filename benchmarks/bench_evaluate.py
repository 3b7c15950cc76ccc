"""Time the evaluation metrics on synthetic clustered embeddings.

Each case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its
own; data generation is excluded from the wall time but included in the peak memory. Cases:

* ``sop``: 60,000 x 512 all-vs-all, about 11,000 classes of 2-9 images (Stanford Online
  Products scale): Recall@{1,10,100,1000}, MAP@R and RP, exact. Also times the bare float32
  matrix products of the same half score matrix (``gemm_floor_*``): the floor for any exact
  method built on this BLAS.
* ``sop-nmi``: NMI (FAISS k-means, k = number of classes) on the same data, on its own.
* ``million-exact``: 1,000,000 x 128 (about 180,000 classes under 2,000 superclasses), exact.
  Measured with a subset of fresh queries (default 16,384) against the full 1M gallery and
  extrapolated to 1M queries: linearly for the query/gallery protocol, and halved for
  all-vs-all (which computes half of the symmetric score matrix). Labelled in the output.
* ``million-ivf``: the same queries and gallery through an IVF index (default nlist ~4 sqrt(n),
  nprobe 16): index build timed on its own, search extrapolated the same way.

Every case reports wall and process CPU seconds (all threads) and the load average, since a
shared machine inflates wall times; ``blas`` records the BLAS kernel in use. OpenBLAS picks a
generic AVX2 ("Haswell") kernel on CPUs it does not recognise (e.g. AMD Zen 5);
``--openblas-coretype SkylakeX`` forces its AVX-512 kernel on CPUs that support AVX-512.

Example (2 threads, as on the reference machine)::

    python benchmarks/bench_evaluate.py --threads 2 --cases sop sop-nmi million-exact million-ivf
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RECALL_K = [1, 10, 100, 1000]


def clustered(n: int, dim: int, noise: float, seed: int, min_size: int = 2, max_size: int = 9):
    """Unit class centres plus Gaussian noise of norm about ``noise``; classes of 2-9 items."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_size, max_size + 1, size=n // min_size + 1)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    labels = np.repeat(np.arange(sizes.size), sizes)[:n]
    labels = rng.permutation(labels)
    centres = rng.standard_normal((sizes.size, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[labels]
    x += (noise / np.sqrt(dim)) * rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels, centres


def hierarchical(n: int, dim: int, noise: float, seed: int, superclasses: int = 2000):
    """Like :func:`clustered`, but class centres gather around ``superclasses`` directions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 10, size=n // 2 + 1)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    labels = rng.permutation(np.repeat(np.arange(sizes.size), sizes)[:n])
    sup = rng.standard_normal((superclasses, dim), dtype=np.float32)
    sup /= np.linalg.norm(sup, axis=1, keepdims=True)
    centres = sup[rng.integers(0, superclasses, sizes.size)]
    centres += rng.standard_normal(centres.shape, dtype=np.float32) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[labels]
    x += (noise / np.sqrt(dim)) * rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels, centres


def _gemm_floor(x, block: int) -> None:
    """The float32 products of the upper half of x @ x.T, in the blocks the metrics use."""
    import numpy as np

    n = x.shape[0]
    buf = np.empty(block * block, dtype=np.float32)
    for i0 in range(0, n, block):
        for j0 in range(i0, n, block):
            a, b = x[i0 : i0 + block], x[j0 : j0 + block]
            np.matmul(a, b.T, out=buf[: a.shape[0] * b.shape[0]].reshape(a.shape[0], b.shape[0]))


class Timer:
    """Wall and process CPU seconds (all threads) of a block."""

    def __enter__(self) -> Timer:
        self.wall0 = time.perf_counter()
        self.cpu0 = _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = _cpu() - self.cpu0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "version", "architecture", "num_threads", "filepath")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


def run_case(case: str, args: argparse.Namespace) -> dict:
    import faiss
    import numpy as np

    from iaa import metrics
    from iaa.index import build_index, l2_normalize
    from iaa.metrics import approximate, problem, scan

    faiss.omp_set_num_threads(args.threads)
    scan.SCREEN = args.screen
    out: dict = {"case": case, "loadavg_start": os.getloadavg(), "screen": args.screen}
    if case in ("sop", "sop-nmi"):
        x, labels, _ = clustered(60_000, 512, args.noise_sop, args.seed)
        out["data"] = {"n": 60_000, "dim": 512, "classes": int(np.unique(labels).size)}
        if case == "sop":
            with Timer() as t:
                res = metrics.retrieval_metrics(
                    x, labels, x, labels, ks=RECALL_K, exclude_self=True, nmi=False
                )
            out.update(wall_s=t.wall, cpu_s=t.cpu, metrics=res)
            xn = l2_normalize(x)
            with Timer() as t:
                _gemm_floor(xn, metrics.DEFAULT_BLOCK_SIZE)
            out.update(gemm_floor_wall_s=t.wall, gemm_floor_cpu_s=t.cpu)
        else:
            xn = l2_normalize(x)
            with Timer() as t:
                out["nmi"] = metrics.kmeans_nmi(xn, labels, seed=0, niter=args.nmi_niter)
            out.update(wall_s=t.wall, cpu_s=t.cpu, niter=args.nmi_niter)
    elif case in ("million-exact", "million-ivf"):
        n, sub = 1_000_000, args.million_queries
        g, gl, centres = hierarchical(n, 128, args.noise_million, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        # Fresh queries from the same classes: a row of this score matrix costs what a row
        # of the all-vs-all matrix costs without symmetry.
        ql = gl[rng.choice(n, sub, replace=False)]
        q = centres[ql] + (args.noise_million / np.sqrt(128)) * rng.standard_normal(
            (sub, 128), dtype=np.float32
        )
        out["data"] = {"gallery": n, "queries": sub, "dim": 128, "classes": int(np.unique(gl).size)}
        if case == "million-exact":
            with Timer() as t:
                res = metrics.retrieval_metrics(q, ql, g, gl, ks=RECALL_K, exclude_self=False, nmi=False)
            per_query = t.wall / sub
            out.update(
                wall_s=t.wall,
                cpu_s=t.cpu,
                metrics=res,
                extrapolated_query_gallery_1m_s=per_query * n,
                extrapolated_all_vs_all_1m_s=per_query * n / 2,
                note=f"EXTRAPOLATED from {sub} queries x 1M gallery; all-vs-all computes half "
                "of the symmetric score matrix, hence /2",
            )
        else:
            p = problem._prepare(q, ql, g, gl, exclude_self=False)
            with Timer() as tb:
                index = build_index(
                    p.gallery,
                    "ivf",
                    nlist=args.nlist,
                    nprobe=args.nprobe,
                    seed=args.seed,
                    normalize=False,
                )
            depth = max(RECALL_K[-1], int(p.num_positives.max()))
            with Timer() as ts:
                ranks = approximate._approximate_ranks(p, index, depth, nprobe=None, ef_search=None)
            with Timer() as ta:
                approx = approximate._approx_recall_vs_exact(
                    p, index, RECALL_K[-1], sample=1000, seed=0, nprobe=None, ef_search=None
                )
            valid = ranks.valid
            res = {f"recall@{k}": float(np.mean(ranks.first[valid] < k)) for k in RECALL_K}
            res.update(
                {
                    "map@r": float(ranks.average_precision[valid].mean()),
                    "rp": float(ranks.r_precision[valid].mean()),
                    "approx_recall_vs_exact": approx,
                }
            )
            out.update(
                ivf={"nlist": int(index.nlist), "nprobe": int(index.nprobe)},
                build_wall_s=tb.wall,
                build_cpu_s=tb.cpu,
                search_wall_s=ts.wall,
                search_cpu_s=ts.cpu,
                approx_recall_wall_s=ta.wall,
                metrics=res,
                extrapolated_all_vs_all_1m_s=tb.wall + ts.wall * n / sub,
                note=f"EXTRAPOLATED: build once + search of {sub} queries scaled to 1M queries "
                "(IVF search cost is per query; no symmetry)",
            )
    else:
        raise SystemExit(f"unknown case {case}")
    out["loadavg_end"] = os.getloadavg()
    out["blas"] = _blas_info()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["sop", "sop-nmi", "million-exact", "million-ivf"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-sop", type=float, default=2.3, help="noise norm, 60k case")
    parser.add_argument("--noise-million", type=float, default=1.3, help="noise norm, 1M cases")
    parser.add_argument("--million-queries", type=int, default=16_384)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(n))")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF probes (default min(nlist, 16))")
    parser.add_argument("--nmi-niter", type=int, default=25)
    parser.add_argument("--openblas-coretype", default=None, help="e.g. SkylakeX (AVX-512 CPUs)")
    parser.add_argument(
        "--screen", default="auto", choices=["auto", "bfloat16", "float32"],
        help="iaa.metrics.scan.SCREEN: the blocked pass's product precision before exact re-scoring",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()

    if args.run:
        print(json.dumps(run_case(args.run, args)))
        return

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    if args.openblas_coretype:
        env["OPENBLAS_CORETYPE"] = args.openblas_coretype
    results = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--run", case] + sys.argv[1:]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"case {case} failed")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["process_s"] = time.perf_counter() - start
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
