"""The execution profiles in workflow/profiles: what each rule asks of the machine or cluster.

These run in the ordinary suite (no SLURM needed); test_slurm.py runs the DAG on a real one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.cli import parse_set_resources
from snakemake.profiles import ProfileConfigFileParser

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "workflow" / "profiles"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
BENCHMARKS = ["synth", "synth-fewshot", "cub200", "cars196", "sop", "inshop", "vehicleid"]
BENCHMARKS += ["cub200-resnet50", "sop-bn_inception", "vehicleid-googlenet"]  # other backbones
GPU_RULES = {"pretrain", "extract", "train", "export"}


def workflow_rules() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "--snakefile", str(ROOT / "Snakefile")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split()) - {"all", "ablations"}  # targets: local rules, no job


SWITCHES = ("IAA_SLURM_GPU", "IAA_SLURM_GPU_PARTITION", "IAA_SLURM_CPU_PARTITION", "IAA_TRAIN_JOBS_PER_GPU")


def parsed(profile: str, **env: str) -> dict:
    """The profile as Snakemake reads it (YTE evaluated, mappings flattened to KEY=VALUE),
    with the slurm profile's switches (environment variables) set to ``env`` only."""
    saved = {k: os.environ.pop(k) for k in SWITCHES if k in os.environ}
    os.environ.update(env)
    try:
        with open(PROFILES / profile / "config.yaml") as stream:
            return ProfileConfigFileParser().parse(stream)
    finally:
        for k in SWITCHES:
            os.environ.pop(k, None)
        os.environ.update(saved)


def raw(profile: str) -> dict:
    return yaml.safe_load((PROFILES / profile / "config.yaml").read_text())


def set_resources(profile: str, **env: str) -> dict[str, dict[str, object]]:
    """Per rule, the resources the profile sets (as evaluated by YTE; values as written)."""
    out: dict[str, dict[str, object]] = {}
    for entry in parsed(profile, **env)["set-resources"]:
        rule, rest = entry.split(":", 1)
        key, value = rest.split("=", 1)
        out.setdefault(rule, {})[key] = int(value) if value.isdigit() else value
    return out


def size(expr: object, bench: str) -> object:
    """A resource value for one benchmark, evaluated the way Snakemake evaluates --set-resources."""
    if not isinstance(expr, str):
        return expr
    return eval(expr, {"wildcards": SimpleNamespace(bench=bench)})


def test_local_profile_uses_all_cores_and_fits_the_memory():
    local = parsed("local")
    assert local["cores"] == "all"
    (mem,) = local["resources"]
    name, value = mem.split("=")
    physical_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e6
    assert name == "mem_mb" and 0.5 * physical_mb < int(value) < physical_mb


def test_gpu_profile_shares_the_gpu_between_n_gpu_jobs():
    gpu = parsed("gpu")
    assert gpu["cores"] == "all" and "gpu_jobs=2" in gpu["resources"]
    assert "gpu_jobs=4" in parsed("gpu", IAA_TRAIN_JOBS_PER_GPU="4")["resources"]


def test_slurm_profile_sizes_every_rule_of_the_workflow():
    assert set(set_resources("slurm")) == workflow_rules()


def test_slurm_profiles_differ_only_in_gpu_requests():
    gpu, cpu = set_resources("slurm"), set_resources("slurm-cpu")
    assert {rule for rule, res in gpu.items() if res.get("gpu") == 1} == GPU_RULES
    assert all("gpu" not in res and "gres" not in res for res in cpu.values())
    assert {rule: {k: v for k, v in res.items() if k != "gpu"} for rule, res in gpu.items()} == cpu
    rest = {p: {k: v for k, v in parsed(p).items() if k != "set-resources"} for p in ("slurm", "slurm-cpu")}
    assert rest["slurm"] == rest["slurm-cpu"]
    # No default-resources: one given on the command line (partition, account) would replace it.
    assert "default-resources" not in rest["slurm"]


def test_slurm_switches_add_gres_partitions_and_train_groups_only():
    """IAA_SLURM_GPU=gres asks for --gres=gpu:1; partitions go to GPU and CPU rules apart;
    IAA_TRAIN_JOBS_PER_GPU=N groups N train jobs on one GPU (gres, a string, is not summed
    over a group) and gives train N times its runtime; every other runtime and memory stays
    as without switches."""
    plain = set_resources("slurm")
    sizes = {r: {k: v for k, v in res.items() if k in ("runtime", "mem_mb")} for r, res in plain.items()}
    env = dict(IAA_SLURM_GPU="gres", IAA_SLURM_GPU_PARTITION="gpuq", IAA_SLURM_CPU_PARTITION="cpuq")
    switched = set_resources("slurm", **env)
    for rule, res in switched.items():
        assert {k: v for k, v in res.items() if k in ("runtime", "mem_mb")} == sizes[rule]
        if rule in GPU_RULES:
            assert res["gres"] == "gpu:1" and "gpu" not in res and res["slurm_partition"] == "gpuq"
        else:
            assert "gres" not in res and res["slurm_partition"] == "cpuq"
    shared = parsed("slurm", IAA_TRAIN_JOBS_PER_GPU="4")
    assert shared["groups"] == ["train=train_gpu"] and shared["group-components"] == ["train_gpu=4"]
    res = set_resources("slurm", IAA_TRAIN_JOBS_PER_GPU="4")
    assert res["train"]["gres"] == "gpu:1" and "gpu" not in res["train"] and res["export"]["gpu"] == 1
    # The plugin runs a group's jobs one after another (--jobs 1 in the allocation; upstream
    # #469) and a group asks for its longest job's time: each train job asks for four runs'.
    for bench in BENCHMARKS:
        assert size(res["train"]["runtime"], bench) == 4 * size(plain["train"]["runtime"], bench)
    assert {r: v for r, v in res.items() if r != "train"} == {r: v for r, v in plain.items() if r != "train"}
    assert "groups" not in parsed("slurm")


@pytest.mark.parametrize(
    ("profile", "env", "message"),
    [
        ("slurm", {"IAA_SLURM_GPU": "gpu"}, "profile slurm: IAA_SLURM_GPU must be gpus or gres, not 'gpu'"),
        *[
            (
                p,
                {"IAA_TRAIN_JOBS_PER_GPU": bad},
                f"profile {p}: IAA_TRAIN_JOBS_PER_GPU must be a whole number >= 1, not {bad!r}",
            )
            for p in ("slurm", "gpu")
            for bad in ("x", "0", " 2", "2.5")
        ],
    ],
)
def test_a_bad_switch_is_one_line_and_exit_2(profile, env, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parsed(profile, **env)
    assert stop.value.code == 2 and capsys.readouterr().err == message + "\n"


@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu"])
def test_slurm_sizes_parse_in_snakemake_and_cover_every_benchmark(profile):
    entries = parsed(profile)["set-resources"]
    assert set(parse_set_resources(entries)) == set(set_resources(profile))  # Snakemake parses them
    for rule, resources in set_resources(profile).items():
        for key in ("runtime", "mem_mb"):
            for bench in BENCHMARKS:
                value = size(resources[key], bench)
                assert isinstance(value, int) and value > 0, (rule, key, bench, value)


def test_slurm_sizes_grow_with_the_dataset():
    res = set_resources("slurm")
    runtime = {b: size(res["train"]["runtime"], b) for b in BENCHMARKS}
    assert runtime["synth"] < runtime["cub200"] <= runtime["cars196"] < runtime["sop"]
    assert runtime["sop"] >= 4 * runtime["cub200"]
    # Sizes follow the dataset, whatever the backbone suffix.
    assert runtime["synth-fewshot"] == runtime["synth"] and runtime["cub200-resnet50"] == runtime["cub200"]
    for rule in ("extract", "train", "export", "evaluate"):
        mem = {b: size(res[rule]["mem_mb"], b) for b in BENCHMARKS}
        assert mem["synth"] < mem["cub200"] <= mem["sop"], rule


@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu"])
def test_dry_run_through_the_slurm_profile(tmp_path, profile):
    """Snakemake resolves each job's resources as sbatch will get them, GPUs only where asked."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    cmd = [
        sys.executable, "-m", "snakemake", "all", "-n", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(tmp_path), "--profile", str(PROFILES / profile),
        "--configfile", str(TINY), "--config", f"results_dir={tmp_path / 'results'}",
        "--default-resources", "slurm_partition=part", "slurm_account=acct",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resources: dict[str, set[str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
        elif line.strip().startswith("resources:") and rule != "all":
            resources.setdefault(rule, set()).add(line.split(":", 1)[1].strip())
    ablations = {"ablation_table", "sweep_figure", "sweep_figure_mining", "class_figures",
                 "similarity_histogram", "visualize", "tsne", "compare_ablations"}  # fmt: skip
    # compare: only with real benchmarks; decode: only with prepare.decoded_store; the
    # ablations' rules: not part of `all`
    assert set(resources) == workflow_rules() - {"compare", "decode"} - ablations
    for rule, lines in resources.items():
        (line,) = lines  # one benchmark: every job of a rule asks for the same
        items = dict(item.split("=", 1) for item in line.split(", "))
        assert items["slurm_partition"] == "part" and items["slurm_account"] == "acct"
        assert int(items["runtime"]) > 0 and int(items["mem_mb"]) > 0
        wants_gpu = profile == "slurm" and rule in GPU_RULES
        assert items.get("gpu") == ("1" if wants_gpu else None), (rule, items)
