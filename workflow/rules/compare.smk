def compare_inputs(wildcards):
    runs = [PRETRAINED] + training_runs()
    return [
        out(bench, "metrics", split, f"{run}.json")
        for bench in paper_benchmarks()
        for split in get_benchmark(bench).eval_splits
        for run in runs
    ]


rule compare:
    input:
        metrics=compare_inputs,
    output:
        md=report(
            RESULTS + "/tables/paper_comparison.md",
            caption="../report/paper_comparison.rst",
            category="Comparison with the paper",
        ),
        csv=RESULTS + "/tables/paper_comparison.csv",
    log:
        RESULTS + "/logs/compare.log",
    threads: config["threads"]["compare"]
    resources:
        mem_mb=1000,
    shell:
        "iaa compare --metrics {input.metrics} --out-md {output.md} --out-csv {output.csv} 2> {log}"
