# Config validation and the helpers every rule file uses.
import copy
import difflib
import json
import math
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import yaml

from iaa.ablations.experiments import (
    CORRELATION_PAIRS, EXPERIMENTS, TABLE_NOTES, TABLE_NUMERALS, experiment_config, experiment_points,
    primary_split,
)
from iaa.ablations.variants import (
    experiment_name, parse_variant, resolve_variant, split_experiment, variant_name, with_variant,
)
from iaa.benchmarks import get_benchmark as registered_benchmark, register_benchmark
from iaa.checkpoints import EXECUTION_KEYS
from iaa.data.datasets.custom import eval_splits_of
from iaa.data.synth.spec import SynthSpec
from iaa.config import TrainSettings, check_train_settings, coerce_pipeline_config, from_dict
from iaa.errors import IAAError
from iaa.paper import paper_numbers
from iaa.recipes import layered_config
from iaa.runs import PRETRAINED, run_name

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")


def config_error(msg):
    """A mistake in the config, found while reading it: one line on stderr and exit 2, before
    any job runs (Snakemake 9 lets SystemExit through and prints nothing more)."""
    print(f"config: {msg}", file=sys.stderr)
    sys.exit(2)


def checked(fn, *args):
    """``fn(*args)`` while the config is read: its WorkflowError (the same helpers raise them
    from input functions later, where Snakemake reports them) becomes config_error's line."""
    try:
        return fn(*args)
    except WorkflowError as err:
        config_error(str(err))


def schema_problem(data):
    """Validate ``data`` against the schema, filling in its defaults (snakemake.utils.validate):
    None, or the jsonschema ValidationError found."""
    import jsonschema

    try:
        validate(data, SCHEMA)
    except WorkflowError as err:
        cause = err.__cause__ or err.__context__  # raised while handling jsonschema's error
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        return cause
    return None


def key_path(parts):
    """A key's path in the config as the user writes it: ``train.iaa.lam``, ``seeds[1]``."""
    where = ""
    for part in parts:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where


def schema_message(error, root=()):
    """One line for a ValidationError, naming the key by its path in the config (``root`` +
    jsonschema's absolute_path): ``train.loader: 'gpu' is not one of [...]``."""
    where = key_path((*root, *error.absolute_path))
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and schema.get("additionalProperties") is False:
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        if unknown and not schema.get("patternProperties"):
            near = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            key = f"{where}.{unknown[0]}" if where else unknown[0]
            return f"{key}: unknown key ({hint}allowed: {', '.join(allowed)})"
    message = " ".join(error.message.split())
    return f"{where}: {message}" if where else message


# The keys that take +inf (Table IX's sigma = inf row, variant sigma-inf); the schema's
# `type: number` lets NaN and +-inf (YAML .nan, .inf) through everywhere else.
INFINITE_OK = {("train", "iaa", "sigma_m"), ("train", "iaa", "sigma_cv")}


def non_finite(node, path=()):
    """The first (path, value) in ``node`` that is NaN or +-inf, but +inf at INFINITE_OK; or None."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        bad = isinstance(node, float) and not math.isfinite(node)
        return (path, node) if bad and not (node == math.inf and path in INFINITE_OK) else None
    for key, value in items:
        if (found := non_finite(value, (*path, key))) is not None:
            return found
    return None


def user_key(bench, path):
    """Where the user set ``path`` of benchmark ``bench``'s config: under
    benchmark_overrides[bench] when set there, else at ``path`` itself."""
    node = _RAW_CONFIG.get("benchmark_overrides", {}).get(bench)
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return key_path(("benchmark_overrides", bench, *path) if node is not None else path)


def get_benchmark(name):
    """The benchmark of an experiment: ``cub200`` itself, or the benchmark a sweep point
    (``cub200/variants/lam-0.2``, iaa.ablations.variants) trains on."""
    return registered_benchmark(split_experiment(name)[0])


def base_experiment(name):
    """The experiment a sweep point shares its manifest, features and backbone with."""
    return split_experiment(name)[0]


SYNTH_BUDGET = yaml.safe_load(open(workflow.source_path("../../config/synth.yaml")))

# --config seeds=[0,1] hands Snakemake strings inside lists and mappings: numbers and
# booleans where the schema types them so (anything else is left for validation to name).
with open(SCHEMA) as _fh:
    _coerced = coerce_pipeline_config(config, yaml.safe_load(_fh))
config.clear()
config.update(_coerced)
# Keep the user's config before defaults are filled in: a benchmark's config is built in
# layers and the result validated (and defaulted) on its own.
_RAW_CONFIG = copy.deepcopy(config)
if (_problem := schema_problem(config)) is not None:
    config_error(schema_message(_problem))
# Datasets of your own become benchmarks under their key, before any name is looked up.
for _name, _spec in config["datasets"].items():
    try:
        register_benchmark(
            _name, arch=_spec["backbone"], recall_k=tuple(_spec["recall_k"]),
            eval_splits=eval_splits_of(_spec["format"], _spec["manifest"]),
        )
    except IAAError as err:
        config_error(f"datasets.{_name}: {err}")
RESULTS = config["results_dir"]
_BENCH_CONFIG = {}


def bench_config(bench):
    """The config for one benchmark, lowest layer first: the schema's defaults (the paper's),
    the recipe's bundle (iaa/recipes.py), the built-in benchmarks' CPU budget
    (config/synth.yaml), the user's config, the user's benchmark_overrides[bench]; for a
    sweep point (``cub200/variants/lam-0.2``), its benchmark's config with the variant's keys
    on top. Validated, and refused with one line when it cannot train, before any job runs."""
    if bench in _BENCH_CONFIG:
        return _BENCH_CONFIG[bench]
    base, variant = split_experiment(bench)
    try:
        if variant is None:
            merged = layered_config(_RAW_CONFIG, bench, SYNTH_BUDGET)
        else:
            canonical = variant_name(parse_variant(variant))
            if canonical != variant:  # one folder per point: another spelling would train again
                raise IAAError(f"variant {variant!r} is written {canonical!r}")
            merged = with_variant(bench_config(base), variant)
    except IAAError as err:
        raise WorkflowError(f"{bench}: {err}" if variant else str(err)) from None
    problem = schema_problem(merged)
    if problem is not None:  # named in benchmark_overrides[bench] when the key is set there
        node = _RAW_CONFIG.get("benchmark_overrides", {}).get(bench)
        for part in problem.absolute_path:
            node = node.get(part) if isinstance(node, dict) else None
        if variant is None and node is not None:
            raise WorkflowError(schema_message(problem, ("benchmark_overrides", bench)))
        raise WorkflowError(f"benchmark {bench}: {schema_message(problem)}")
    # NaN anywhere, +-inf but where a key takes it: the stages would refuse it after hours.
    mine = {k: v for k, v in merged.items() if k != "benchmark_overrides"}  # bench's own: merged in
    if (found := non_finite(mine)) is not None:
        path, value = found
        text = "NaN" if math.isnan(value) else str(value)
        where = user_key(bench, path) if variant is None else f"{bench}: {key_path(path)}"
        raise WorkflowError(f"{where}: {text} is not a number this key takes")
    # The spec the prepare job generates the built-in benchmark from (iaa prepare --synth).
    synth_variant = registered_benchmark(base).synth_variant  # None: a real dataset
    if variant is None and synth_variant is not None:
        try:
            SynthSpec.for_variant(synth_variant, **merged["synth"]["overrides"])
        except IAAError as err:
            also = "" if bench == synth_variant else f" (benchmark {bench})"
            raise WorkflowError(f"{user_key(bench, ('synth', 'overrides'))}: {err}{also}") from None
    try:  # settings that cannot train (e.g. m = 1): one line before any job runs
        check_train_settings(from_dict(TrainSettings, merged["train"]), config["methods"])
    except IAAError as err:
        raise WorkflowError(f"benchmark {bench}: {err}") from None
    train = merged["train"]
    if train["loader"] == "cache" and train["mode"] == "finetune" and not merged["prepare"]["decoded_store"]:
        raise WorkflowError(
            f"benchmark {bench}: train.loader is cache but prepare.decoded_store is false: set "
            "prepare: {decoded_store: true} (or loader: auto)"
        )
    _BENCH_CONFIG[bench] = merged
    return merged


for _bench in config["benchmarks"]:
    try:
        get_benchmark(_bench)
    except IAAError as err:
        config_error(f"benchmarks: {err}")
    checked(bench_config, _bench)


def embed_splits(wildcards):
    """The splits extract and export embed: train and every evaluated one."""
    return ",".join(get_benchmark(wildcards.bench).embed_splits)


def prepare_kind(wildcards):
    """The positional of ``iaa prepare``: the benchmark, or folder/csv for your own images."""
    own = custom_dataset(wildcards.bench)
    return own["format"] if own is not None else wildcards.bench


def settings_json(section):
    """The JSON handed to a stage as --settings; a change of it makes Snakemake rerun the job.
    The train settings carry the recipe's name, so every output can say where it came from."""

    def settings(wildcards):
        cfg = bench_config(wildcards.bench)
        value = dict(cfg[section], recipe=cfg["recipe"]) if section == "train" else cfg[section]
        if section == "train":  # execution settings travel as resources (execution_resource)
            value = {k: v for k, v in value.items() if k not in EXECUTION_KEYS}
        return json.dumps(value, sort_keys=True)

    return settings


def execution_resource(key):
    """A training execution setting (workers, loader, compile: iaa.checkpoints.EXECUTION_KEYS)
    for the shell command. Snakemake reruns a job when its params change, never its resources,
    so these settings, which change how a run is computed but not what, are handed over as
    resources. (They do change the random streams: bit-identical reruns need the same values;
    each run's model.pt records them.)"""

    def value(wildcards):
        v = bench_config(wildcards.bench)["train"][key]
        return int(v) if isinstance(v, bool) else v

    return value


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
    weights = f"--weights {shlex.quote(w['dir'])}" if w["dir"] else ""
    return weights + ("" if w["allow_download"] else " --no-download")


def custom_dataset(bench):
    """The ``datasets`` entry a benchmark reads (your own images), or None."""
    return config["datasets"].get(get_benchmark(bench).base)


for _bench in config["benchmarks"]:
    if not get_benchmark(_bench).builtin and custom_dataset(_bench) is None:
        checked(data_root, _bench)  # a missing data_root fails before any job runs
for _bench in config["benchmark_overrides"]:
    try:  # a misspelt benchmark name would silently override nothing
        get_benchmark(_bench)
    except IAAError as err:
        config_error(f"benchmark_overrides: {err}")


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
        targets += [f"{RESULTS}/tables/paper_comparison.md", f"{RESULTS}/tables/paper_comparison.csv"]
    return targets


# Input functions and shell arguments of the rules (workflow/rules/<rule>.smk). Every path a
# helper writes into a shell command is quoted (shlex.quote), as the rules quote theirs ({x:q}):
# data_root and results_dir may hold spaces and other characters the shell would split on.


def prepare_args(wildcards):
    """synth: where to generate it; a real dataset: where the download is (config data_root)."""
    bench = get_benchmark(wildcards.bench)
    cfg = bench_config(wildcards.bench)
    if bench.builtin:
        synth = json.dumps(cfg["synth"]["overrides"], sort_keys=True)
        data_dir = shlex.quote(out(wildcards.bench, "data"))
        return f"--data-dir {data_dir} --seed {cfg['synth']['seed']} --synth {shlex.quote(synth)}"
    own = custom_dataset(wildcards.bench)
    if own is None:
        args = f"--root {shlex.quote(data_root(wildcards.bench))}"
    else:
        args = f"--root {shlex.quote(own['root'])} --seed {own['seed']}"
        args += f" --manifest {shlex.quote(own['manifest'])}" if own["manifest"] else ""
        args += f" --test-fraction {own['test_fraction']}" if own["test_fraction"] else ""
    if cfg["prepare"]["resized_cache"]:
        cache = shlex.quote(out(wildcards.bench, "cache"))
        args += f" --resized-cache {cache} --cache-size {cfg['prepare']['cache_size']}"
        # The cache holds the squashed square both transforms start from; where training crops
        # the original (CUB: square_resize false) it keeps the originals instead (SPEC 3).
        square = "--cache-square" if cfg["train"]["square_resize"] else "--no-cache-square"
        args += f" {square} --cache-interpolation {cfg['train']['interpolation']}"
    if cfg["prepare"]["skip_bad_images"]:
        args += " --skip-bad-images"
    return args


def extract_inputs(wildcards):
    """synth: the backbone its pretrain stage wrote; a real dataset: ImageNet weights (no file rule)."""
    inputs = {"manifest": manifest_of(wildcards.bench)}
    if get_benchmark(wildcards.bench).builtin:
        inputs["backbone"] = out(wildcards.bench, "models", "pretrained_backbone.pt")
    return inputs


def train_inputs(wildcards):
    """Head mode trains on extracted features; finetune mode on images, from synth's pretrained
    backbone or (real datasets) the benchmark's ImageNet backbone."""
    base = base_experiment(wildcards.bench)  # a sweep point reads its benchmark's
    if bench_config(wildcards.bench)["train"]["mode"] == "head":
        return {"features": out(base, "features", "pretrained.parquet")}
    inputs = {"manifest": manifest_of(wildcards.bench)}
    if get_benchmark(wildcards.bench).builtin:
        inputs["backbone"] = out(base, "models", "pretrained_backbone.pt")
    if bench_config(wildcards.bench)["prepare"]["decoded_store"]:
        inputs["decoded_store"] = out(get_benchmark(wildcards.bench).base, "decoded_store")
    return inputs


def export_inputs(wildcards):
    """train's inputs but the decoded store, which export does not read (it embeds with the
    eval transform from the images): toggling the store must not re-export."""
    return {k: v for k, v in train_inputs(wildcards).items() if k != "decoded_store"}


def train_input_args(wildcards, input):
    args = " ".join(f"--{name.replace('_', '-')} {shlex.quote(path)}" for name, path in input.items())
    bench = get_benchmark(wildcards.bench)
    if "manifest" in input.keys() and not bench.builtin:
        args += f" --arch {bench.arch} {weights_args()}"
    return args


def embeddings_of(wildcards):
    """The pretrained row is evaluated on the extracted features, the others on exports."""
    if wildcards.run == PRETRAINED:
        return out(wildcards.bench, "features", "pretrained.parquet")
    return out(wildcards.bench, "embeddings", f"{wildcards.run}.parquet")


def selected_embeddings_of(wildcards):
    """A trained run's selected model's embeddings (the pretrained row has none)."""
    if wildcards.run == PRETRAINED:
        return []
    return out(wildcards.bench, "embeddings", f"{wildcards.run}.selected.parquet")


def report_inputs(wildcards):
    splits = get_benchmark(wildcards.bench).eval_splits
    runs = [PRETRAINED] + training_runs()
    return {
        "metrics": [out(wildcards.bench, "metrics", s, f"{run}.json") for s in splits for run in runs],
        "histories": [out(wildcards.bench, "runs", run, "history.csv") for run in training_runs()],
        "correlations": [out(wildcards.bench, "stats", f"{run}.correlation.json") for run in runs],
    }


def compare_inputs(wildcards):
    runs = [PRETRAINED] + training_runs()
    return [
        out(bench, "metrics", split, f"{run}.json")
        for bench in paper_benchmarks()
        for split in get_benchmark(bench).eval_splits
        for run in runs
    ]


# The ablations (workflow/rules/ablations.smk; iaa/ablations/): which runs each table and
# figure reads, as file paths, and the spec its subcommand draws from them.
SWEEP_FIGURES = {key: e for key, e in EXPERIMENTS.items() if e.kind == "figure" and key != "fig10"}
SWEEP_STEMS = {e.file: key for key, e in SWEEP_FIGURES.items()}


# The built-in benchmarks' scaled-down sweeps (config/synth.yaml, key ablations): under the
# user's ablations section, for synth and synth-fewshot only.
SYNTH_ABLATIONS = SYNTH_BUDGET.get("ablations", {})


def ablation_config(key, bench=None):
    """Experiment ``key``'s settings on ``bench``: iaa.ablations.experiments.DEFAULTS, then a
    built-in benchmark's scaled sweep, then the config's ablations[key]."""
    scaled = SYNTH_ABLATIONS.get(key) if bench is not None and get_benchmark(bench).builtin else None
    try:
        return experiment_config(key, scaled, config["ablations"].get(key))
    except IAAError as err:
        raise WorkflowError(str(err)) from None


def ablation_benchmarks(key):
    return ablation_config(key).get("benchmarks") or config["ablations"]["benchmarks"] or config["benchmarks"]


def ablation_seeds(bench):
    """The config's ablations.seeds, else (built-in benchmarks) the scaled sweep's, else seeds."""
    scaled = SYNTH_ABLATIONS.get("seeds") if get_benchmark(bench).builtin else None
    return config["ablations"]["seeds"] or scaled or config["seeds"]


def point_files(bench, point):
    """The files of one table cell or figure point, one per seed."""
    target = point.benchmark or bench
    variant = resolve_variant(bench_config(target), dict(point.items)) if point.items else None
    exp = experiment_name(target, variant)
    runs = [run_name(point.loss, point.method, seed) for seed in ablation_seeds(bench)]
    if point.source == "metrics":
        return [out(exp, "metrics", primary_split(target), f"{run}.json") for run in runs]
    if point.source == "correlation":
        return [out(exp, "stats", f"{run}.correlation.json") for run in runs]
    return [out(exp, "runs", run, "history.csv") for run in runs]


def _spec_points(bench, key):
    return [(p, point_files(bench, p)) for p in experiment_points(key, bench, ablation_config(key, bench))]


def stats_pairs(wildcards):
    """Table VIII's four distance pairs for the runs it reads (the benchmarks and baseline loss
    of ablations.table8), Table I's alone for every other run: each pair costs C^2 distances
    per p, hours on SOP's 11k classes."""
    table8 = ablation_config("table8")
    run = wildcards.run
    if wildcards.bench in ablation_benchmarks("table8") and run.startswith(f"{table8['loss']}-baseline-"):
        return ",".join(CORRELATION_PAIRS)
    return "mu2-sigma"


def ablation_table_inputs(wildcards):
    return sorted({f for _, files in _spec_points(wildcards.bench, wildcards.table) for f in files})


def ablation_table_spec(wildcards):
    key = wildcards.table
    cells = [
        {"row": p.row, "column": p.column, "source": p.source, "metric": p.metric, "paths": files}
        for p, files in _spec_points(wildcards.bench, key)
    ]
    spec = {
        "numeral": TABLE_NUMERALS[key], "title": EXPERIMENTS[key].title, "benchmark": wildcards.bench,
        "cells": cells, "note": TABLE_NOTES.get(key, ""),
    }
    return json.dumps(spec)


def sweep_figure_inputs(wildcards, key=None):
    key = key or SWEEP_STEMS[wildcards.figure]
    return sorted({f for _, files in _spec_points(wildcards.bench, key) for f in files})


def sweep_figure_spec(wildcards, key=None):
    key = key or SWEEP_STEMS[wildcards.figure]
    e = EXPERIMENTS[key]
    points = [
        {"series": p.row, "x": p.x, "source": p.source, "metric": p.metric, "paths": files}
        for p, files in _spec_points(wildcards.bench, key)
    ]
    spec = {
        "key": key, "title": e.title, "xlabel": e.xlabel, "ylabel": e.ylabel, "benchmark": wildcards.bench,
        "loss": ablation_config(key, wildcards.bench)["loss"], "points": points,
    }
    return json.dumps(spec)


def figure_embeddings(wildcards, key, method):
    """Figs. 12-14: the selected model's embeddings of the experiment's loss, first seed."""
    run = run_name(ablation_config(key, wildcards.bench)["loss"], method, ablation_seeds(wildcards.bench)[0])
    return out(wildcards.bench, "embeddings", f"{run}.selected.parquet")


def visualize_splits(wildcards):
    split = primary_split(wildcards.bench)
    if split == "query":
        return "--query-split query --gallery-split gallery"
    return f"--split {split}"


def compare_ablation_inputs(wildcards):
    return [
        out(bench, "tables", f"{key}.csv")
        for key, e in EXPERIMENTS.items()
        if e.kind == "table"
        for bench in ablation_benchmarks(key)
    ]


def ablation_targets():
    """Every table and figure of `snakemake ablations`, for each experiment's benchmarks."""
    targets = []
    for key, e in EXPERIMENTS.items():
        for bench in ablation_benchmarks(key):
            if e.kind == "table":
                targets += [out(bench, "tables", f"{key}.{ext}") for ext in ("md", "csv")]
            elif key == "fig10":
                targets += [out(bench, "figures", f"fig10{p}.png") for p in ("a_hard_negatives", "b_synthetic_share")]
            else:
                targets.append(out(bench, "figures", f"{e.file}.png"))
    for key, stem in (("fig3", "fig3_mean_vs_covariance_distance"), ("fig12", "fig12_similarity_histograms"),
                      ("fig13", "fig13_retrieval_examples"), ("fig14", "fig14_tsne")):
        targets += [out(bench, "figures", f"{stem}.png") for bench in ablation_benchmarks(key)]
    targets += [f"{RESULTS}/tables/paper_comparison_ablations.md"]
    return targets


for _key in EXPERIMENTS.keys() | {"fig3", "fig5", "fig9a", "fig12", "fig13", "fig14"}:
    checked(ablation_config, _key)  # a key an experiment does not use fails before any job runs
# Every benchmark named under ablations: known, and its config one that can train.
for _key, _section in [(None, config["ablations"])] + sorted(config["ablations"].items()):
    _where = "ablations.benchmarks" if _key is None else f"ablations.{_key}.benchmarks"
    for _bench in (_section.get("benchmarks") or []) if isinstance(_section, dict) else []:
        try:
            get_benchmark(_bench)
        except IAAError as err:
            config_error(f"{_where}: {err}")
        checked(bench_config, _bench)
for _key in ("fig5", "fig9a"):
    if config["ablations"].get(_key, {}).get("benchmarks"):
        config_error(f"ablations.{_key}: drawn with fig3 by one rule; set fig3's benchmarks instead")


wildcard_constraints:
    bench=r"[a-z0-9][a-z0-9_-]*(/variants/[a-z0-9_.+-]+)?",
    run=r"pretrained|[a-z_]+-(baseline|iaa)-seed\d+",
    loss=r"[a-z_]+",
    method=r"baseline|iaa",
    seed=r"\d+",
    split=r"[a-z]+(-[a-z]+)?",
    table=r"table(7|8|9|10|11|12)",
    figure="|".join(SWEEP_STEMS),
