# Config validation and the helpers every rule file uses.
import copy
import json

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from iaa.benchmarks import get_benchmark
from iaa.paper import paper_numbers
from iaa.runs import PRETRAINED, run_name

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")

# Keep the user's config before defaults are filled in: per-benchmark overrides are merged
# over it and the merged config is validated (and defaulted) on its own.
_RAW_CONFIG = copy.deepcopy(config)
validate(config, SCHEMA)
RESULTS = config["results_dir"]


def _deep_merge(base, update):
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_BENCH_CONFIG = {}


def bench_config(bench):
    """The config for one benchmark: overrides merged in, validated, defaults filled."""
    if bench not in _BENCH_CONFIG:
        merged = _deep_merge(_RAW_CONFIG, _RAW_CONFIG.get("benchmark_overrides", {}).get(bench, {}))
        validate(merged, SCHEMA)
        _BENCH_CONFIG[bench] = merged
    return _BENCH_CONFIG[bench]


for _bench in config["benchmarks"]:
    get_benchmark(_bench)
    bench_config(_bench)


def settings_json(section):
    """The JSON handed to a stage as --settings; a change of it makes Snakemake rerun the job."""
    return lambda wildcards: json.dumps(bench_config(wildcards.bench)[section], sort_keys=True)


def training_runs():
    return [
        run_name(loss, method, seed)
        for loss in config["losses"]
        for method in config["methods"]
        for seed in config["seeds"]
    ]


def out(bench, *parts):
    return "/".join((RESULTS, bench) + parts)


def manifest_of(bench):
    """Experiments on one dataset (cub200, cub200-resnet50, ...) share its manifest."""
    return out(get_benchmark(bench).base, "manifest.parquet")


def data_root(bench):
    root = bench_config(bench)["data_root"]
    if not root:
        raise WorkflowError(
            f"benchmark {bench} reads a downloaded dataset: set data_root to the folder holding it "
            "(e.g. --config data_root=/data/dml); README.md lists the expected layout"
        )
    return root


def weights_args():
    """Where train/extract look for ImageNet weights (default: $TORCH_HOME/hub/checkpoints)."""
    w = config["weights"]
    return (f"--weights {w['dir']}" if w["dir"] else "") + ("" if w["allow_download"] else " --no-download")


for _bench in config["benchmarks"]:
    if not get_benchmark(_bench).builtin:
        data_root(_bench)  # a missing data_root fails before any job runs


def paper_benchmarks():
    """Configured benchmarks with published numbers to compare with (iaa.paper)."""
    return [b for b in config["benchmarks"] if paper_numbers(b)]


def all_targets():
    targets = []
    for bench in config["benchmarks"]:
        b = get_benchmark(bench)
        targets += [
            out(bench, "tables", "table3.md"),
            out(bench, "tables", "table3.csv"),
            out(bench, "tables", "training_curves.png"),
            out(bench, "tables", "table1.md"),
        ]
        for run in [PRETRAINED] + training_runs():
            targets += [out(bench, "index", run, f"{split}.faiss") for split in b.index_splits]
    if paper_benchmarks():
        targets += [RESULTS + "/tables/paper_comparison.md", RESULTS + "/tables/paper_comparison.csv"]
    return targets


wildcard_constraints:
    bench=r"[a-z0-9][a-z0-9_-]*",
    run=r"pretrained|[a-z]+-(baseline|iaa)-seed\d+",
    loss=r"[a-z]+",
    method=r"baseline|iaa",
    seed=r"\d+",
    split=r"[a-z]+(-[a-z]+)?",
