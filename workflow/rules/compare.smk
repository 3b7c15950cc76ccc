rule compare:
    input:
        metrics=compare_inputs,
    output:
        md=report(
            f"{RESULTS}/tables/paper_comparison.md",
            caption="../report/paper_comparison.rst",
            category="Comparison with the paper",
        ),
        csv=f"{RESULTS}/tables/paper_comparison.csv",
    log:
        f"{RESULTS}/logs/compare.log",
    conda:
        "../envs/iaa.yaml"
    threads: config["threads"]["compare"]
    resources:
        mem_mb=1000,
    shell:
        "iaa compare --metrics {input.metrics:q} --out-md {output.md:q} --out-csv {output.csv:q} 2> {log:q}"


# The ablations' tables (VII-XII) next to the paper's, for the benchmarks it reports them on.
rule compare_ablations:
    input:
        tables=compare_ablation_inputs,
    output:
        md=report(
            f"{RESULTS}/tables/paper_comparison_ablations.md",
            caption="../report/paper_comparison.rst",
            category="Comparison with the paper",
        ),
        csv=f"{RESULTS}/tables/paper_comparison_ablations.csv",
    log:
        f"{RESULTS}/logs/compare_ablations.log",
    conda:
        "../envs/iaa.yaml"
    threads: config["threads"]["compare"]
    resources:
        mem_mb=1000,
    shell:
        "iaa compare --ablation-tables {input.tables:q} --out-md {output.md:q} --out-csv {output.csv:q} 2> {log:q}"
