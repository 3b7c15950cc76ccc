# IAA pipeline: prepare -> pretrain (synth) -> extract -> train -> export -> index -> evaluate
# (+ stats) -> report, and compare (our numbers next to the paper's) for real benchmarks.
# `snakemake --cores 8 all` rebuilds every configured benchmark's table; see README.md.

from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/ablations.smk"


localrules:
    all,
    ablations,


rule all:
    input:
        all_targets(),
    default_target: True
