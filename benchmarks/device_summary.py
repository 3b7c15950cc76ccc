"""What benchmarks/device_check.sh measured, and the wall time it implies (issue 13; not a test).

Reads the ``RESULT`` lines that ``bench_feed.py`` printed into the check's output folder and
prints, as ``SUMMARY`` lines:

* the store-fed and JPEG-fed step rates as fractions of the synthetic-input rate (target:
  the store at >= 95%), and torch.compile's speed-up;
* the aggregate images/s of 1, 2 and 4 concurrent store-fed trainings, and the smallest
  count within 5% of the best: the value for ``IAA_TRAIN_JOBS_PER_GPU``;
* the estimated wall time, on one GPU, of the training that ``config/paper.yaml`` (Table III)
  and ``config/sota.yaml`` (Tables IV-V) plan. The images a run trains come from the same
  layers the workflow reads (the recipe's bundle, ``config/config.yaml``, the config file;
  ``iaa.recipes.layered_config``) and each dataset's official train size: epochs x
  max(1, min(train // batch, max_iterations_per_epoch)) x batch (SPEC 3; ``iaa/train.py``).

Only training steps are counted: not feature extraction, global estimation passes, test
evaluation during training, export, indexing or the stats stage.

Example::

    python benchmarks/device_summary.py /tmp/device_check
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from iaa.benchmarks import get_benchmark
from iaa.config import TrainSettings, from_dict
from iaa.data.datasets import get_reader
from iaa.recipes import deep_merge, layered_config

ROOT = Path(__file__).resolve().parents[1]
_RESULT = re.compile(
    r"^RESULT (?P<tag>\S*) source=(?P<source>\w+)(?: backbone=(?P<backbone>\w+))? batch=(?P<batch>\d+) "
    r"compile=(?P<compile>[01]) on \S+: (?P<rate>[\d.]+) images/s"
)


@dataclass(frozen=True)
class Result:
    """One ``RESULT`` line of bench_feed.py: images/s of one process."""

    tag: str
    source: str
    backbone: str
    batch: int
    compile: bool
    rate: float


def read_results(folder: Path) -> list[Result]:
    """Every RESULT line in ``folder/*.txt``."""
    out = []
    for path in sorted(folder.glob("*.txt")):
        for line in path.read_text(errors="replace").splitlines():
            m = _RESULT.match(line.strip())
            if m is None:
                continue
            out.append(
                Result(
                    m["tag"],
                    m["source"],
                    m["backbone"] or "googlenet",
                    int(m["batch"]),
                    m["compile"] == "1",
                    float(m["rate"]),
                )  # fmt: skip
            )
    return out


@dataclass(frozen=True)
class Workload:
    """The training one benchmark of a config plans: ``runs`` runs of ``images`` each."""

    benchmark: str
    arch: str
    runs: int
    images: int


def planned_workload(configfile: Path, default: Path = ROOT / "config" / "config.yaml") -> list[Workload]:
    """Training images per benchmark of ``configfile`` laid over ``default`` (as Snakemake does).

    Raises IAAError for an unknown benchmark or recipe; KeyError for a dataset without an
    official train size (custom datasets).
    """
    raw = deep_merge(yaml.safe_load(default.read_text()), yaml.safe_load(configfile.read_text()))
    runs = len(raw["seeds"]) * len(raw["losses"]) * len(raw["methods"])
    out = []
    for name in raw["benchmarks"]:
        bench = get_benchmark(name)
        settings = from_dict(TrainSettings, layered_config(raw, name, {}).get("train", {}))
        train = get_reader(bench.dataset).official["train"][0]
        steps = max(1, min(train // settings.batch_size, settings.max_iterations_per_epoch))
        out.append(Workload(name, bench.arch, runs, settings.epochs * steps * settings.batch_size))
    return out


def _rate(results: list[Result], **want: object) -> float | None:
    rates = [r.rate for r in results if all(getattr(r, k) == v for k, v in want.items())]
    return max(rates) if rates else None


def aggregates(results: list[Result]) -> dict[int, float]:
    """Concurrent processes -> summed images/s: tag ``concurrentN`` (N copies), plus the
    single store-fed process as N = 1."""
    out: dict[int, float] = {}
    single = _rate(results, tag="single", source="store", backbone="googlenet", compile=False)
    if single is not None:
        out[1] = single
    for r in results:
        m = re.fullmatch(r"concurrent(\d+)", r.tag)
        if m:
            out[int(m[1])] = out.get(int(m[1]), 0.0) + r.rate
    return dict(sorted(out.items()))


def jobs_per_gpu(agg: dict[int, float], within: float = 0.05) -> int | None:
    """The smallest number of concurrent trainings whose aggregate is within ``within`` of the
    best: more processes than that only add memory and contention."""
    if not agg:
        return None
    best = max(agg.values())
    return min(n for n, rate in agg.items() if rate >= (1 - within) * best)


def summary(folder: Path) -> list[str]:
    """The SUMMARY lines for the results in ``folder``."""
    results = read_results(folder)
    lines = []
    synthetic = _rate(results, tag="single", source="synthetic", backbone="googlenet", compile=False)
    for source in ("store", "jpeg"):
        rate = _rate(results, tag="single", source=source, backbone="googlenet", compile=False)
        if synthetic and rate:
            ratio = f"{rate:.0f} / {synthetic:.0f} = {rate / synthetic:.1%}"
            lines.append(f"{source}-fed / synthetic-input step rate: {ratio}")
    compiled = _rate(results, tag="compile", compile=True)
    store = _rate(results, tag="single", source="store", backbone="googlenet", compile=False)
    if compiled and store:
        speedup = f"{compiled:.0f} vs {store:.0f} images/s ({compiled / store:.2f}x)"
        lines.append(f"torch.compile, store-fed: {speedup}")
    agg = aggregates(results)
    for n, rate in agg.items():
        lines.append(f"{n} concurrent store-fed trainings: {rate:.0f} images/s in all")
    best_n = jobs_per_gpu(agg)
    if best_n is not None:
        lines.append(f"IAA_TRAIN_JOBS_PER_GPU={best_n} (the fewest within 5% of the best aggregate)")
    # GoogLeNet runs go at the measured aggregate; the other backbones at their synthetic-input
    # rate scaled by GoogLeNet's store/synthetic ratio, one process (their concurrency is unmeasured).
    rates = {"googlenet": agg.get(best_n) if best_n else None}
    for arch in ("bn_inception", "resnet50"):
        own = _rate(results, source="synthetic", backbone=arch)
        rates[arch] = own * min(1.0, store / synthetic) if own and store and synthetic else None
    for config in ("paper.yaml", "sota.yaml"):
        work = planned_workload(ROOT / "config" / config)
        head = f"config/{config}: {sum(w.runs * w.images for w in work) / 1e6:.0f} M training images"
        if any(rates.get(w.arch) is None for w in work):
            lines.append(f"{head}; rate of some backbone not measured")
            continue
        hours = sum(w.runs * w.images / rates[w.arch] for w in work) / 3600
        lines.append(f"{head}, about {hours:.1f} h of training on one GPU")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the folder device_check.sh wrote ($OUT)")
    for line in summary(p.parse_args().folder):
        print("SUMMARY", line)


if __name__ == "__main__":
    main()
