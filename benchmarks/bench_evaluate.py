"""Time the evaluation metrics on synthetic clustered embeddings.

Each case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its
own; data generation is excluded from the wall time but included in the peak memory. Cases:

* ``sop``: 60,000 x 512 all-vs-all, about 11,000 classes of 2-9 images (Stanford Online
  Products scale): Recall@{1,10,100,1000}, MAP@R and RP, exact. Also times the bare float32
  matrix product of the same half score matrix (``gemm_s``), the floor for any exact method.
* ``sop-nmi``: NMI (FAISS k-means, k = number of classes) on the same data, on its own.
* ``million-exact``: 1,000,000 x 128 (about 180,000 classes under 2,000 superclasses), exact.
  Measured with a subset of fresh queries (default 16,384) against the full 1M gallery and
  extrapolated to 1M queries: linearly for the query/gallery protocol, and halved for
  all-vs-all (which computes half of the symmetric score matrix). Labelled in the output.
* ``million-ivf``: the same queries and gallery through an IVF index (default nlist ~4 sqrt(n),
  nprobe 16): index build timed on its own, search extrapolated the same way.

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


def _gemm_floor(x, block: int) -> float:
    """Seconds for the float32 products of the upper half of x @ x.T in the same blocks."""
    import numpy as np

    n = x.shape[0]
    buf = np.empty(block * block, dtype=np.float32)
    start = time.perf_counter()
    for i0 in range(0, n, block):
        for j0 in range(i0, n, block):
            a, b = x[i0 : i0 + block], x[j0 : j0 + block]
            np.matmul(a, b.T, out=buf[: a.shape[0] * b.shape[0]].reshape(a.shape[0], b.shape[0]))
    return time.perf_counter() - start


def run_case(case: str, args: argparse.Namespace) -> dict:
    import faiss
    import numpy as np

    from iaa import metrics
    from iaa.index import l2_normalize

    faiss.omp_set_num_threads(args.threads)
    out: dict = {"case": case}
    if case in ("sop", "sop-nmi"):
        x, labels, _ = clustered(60_000, 512, args.noise_sop, args.seed)
        out["data"] = {"n": 60_000, "dim": 512, "classes": int(np.unique(labels).size)}
        if case == "sop":
            start = time.perf_counter()
            res = metrics.retrieval_metrics(
                x, labels, x, labels, ks=RECALL_K, exclude_self=True, nmi=False
            )
            out["wall_s"] = time.perf_counter() - start
            out["metrics"] = res
            out["gemm_s"] = _gemm_floor(l2_normalize(x), metrics.DEFAULT_BLOCK_SIZE)
        else:
            xn = l2_normalize(x)
            start = time.perf_counter()
            out["nmi"] = metrics.kmeans_nmi(xn, labels, seed=0, niter=args.nmi_niter)
            out["wall_s"] = time.perf_counter() - start
            out["niter"] = args.nmi_niter
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
        build = 0.0
        if case == "million-ivf":
            from iaa.index import build_index

            start = time.perf_counter()
            index = build_index(g, "ivf", nlist=args.nlist, nprobe=args.nprobe, seed=args.seed)
            build = time.perf_counter() - start
            out["ivf"] = {"nlist": int(index.nlist), "nprobe": int(index.nprobe), "build_s": build}
            del index
        start = time.perf_counter()
        res = metrics.retrieval_metrics(
            q,
            ql,
            g,
            gl,
            ks=RECALL_K,
            exclude_self=False,
            nmi=False,
            index="flat" if case == "million-exact" else "ivf",
            nlist=args.nlist,
            nprobe=args.nprobe,
            seed=args.seed,
        )
        wall = time.perf_counter() - start
        search = wall - build  # retrieval_metrics builds the same index again
        out.update(
            metrics=res,
            wall_s=wall,
            extrapolated_query_gallery_1m_s=build + search * n / sub,
            extrapolated_all_vs_all_1m_s=build
            + search * n / sub / (2 if case == "million-exact" else 1),
            note=f"EXTRAPOLATED from {sub} queries x 1M gallery"
            + (
                "; exact all-vs-all computes half the symmetric matrix, hence /2"
                if build == 0
                else "; build once, search linear in queries"
            ),
        )
    else:
        raise SystemExit(f"unknown case {case}")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=["sop", "sop-nmi", "million-exact", "million-ivf"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-sop", type=float, default=2.3, help="noise norm, 60k case")
    parser.add_argument("--noise-million", type=float, default=1.3, help="noise norm, 1M cases")
    parser.add_argument("--million-queries", type=int, default=16_384)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(n))")
    parser.add_argument(
        "--nprobe", type=int, default=None, help="IVF probes (default min(nlist, 16))"
    )
    parser.add_argument("--nmi-niter", type=int, default=25)
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
