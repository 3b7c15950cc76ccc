# Config validation and the helpers every rule file uses.
import copy
import json

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import yaml

from iaa.benchmarks import get_benchmark
from iaa.config import TrainSettings, check_train_settings, from_dict
from iaa.errors import IAAError
from iaa.paper import paper_numbers
from iaa.recipes import layered_config
from iaa.runs import PRETRAINED, run_name

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
SYNTH_BUDGET = yaml.safe_load(open(workflow.source_path("../../config/synth.yaml")))

# Keep the user's config before defaults are filled in: a benchmark's config is built in
# layers and the result validated (and defaulted) on its own.
_RAW_CONFIG = copy.deepcopy(config)
validate(config, SCHEMA)
RESULTS = config["results_dir"]
_BENCH_CONFIG = {}


def bench_config(bench):
    """The config for one benchmark, lowest layer first: the schema's defaults (the paper's),
    the recipe's bundle (iaa/recipes.py), the built-in benchmarks' CPU budget
    (config/synth.yaml), the user's config, the user's benchmark_overrides[bench]."""
    if bench not in _BENCH_CONFIG:
        try:
            merged = layered_config(_RAW_CONFIG, bench, SYNTH_BUDGET)
        except IAAError as err:
            raise WorkflowError(str(err)) from None
        validate(merged, SCHEMA)
        try:  # settings that cannot train (e.g. m = 1): one line before any job runs
            check_train_settings(from_dict(TrainSettings, merged["train"]), config["methods"])
        except IAAError as err:
            raise WorkflowError(f"benchmark {bench}: {err}") from None
        _BENCH_CONFIG[bench] = merged
    return _BENCH_CONFIG[bench]


for _bench in config["benchmarks"]:
    get_benchmark(_bench)
    bench_config(_bench)


def settings_json(section):
    """The JSON handed to a stage as --settings; a change of it makes Snakemake rerun the job.
    The train settings carry the recipe's name, so every output can say where it came from."""

    def settings(wildcards):
        cfg = bench_config(wildcards.bench)
        value = dict(cfg[section], recipe=cfg["recipe"]) if section == "train" else cfg[section]
        return json.dumps(value, sort_keys=True)

    return settings


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
