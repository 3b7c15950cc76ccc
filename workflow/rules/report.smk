def report_inputs(wildcards):
    split = get_benchmark(wildcards.bench).eval_splits[0]
    runs = [PRETRAINED] + training_runs()
    return {
        "metrics": [out(wildcards.bench, "metrics", split, f"{run}.json") for run in runs],
        "histories": [out(wildcards.bench, "runs", run, "history.csv") for run in training_runs()],
        "correlations": [out(wildcards.bench, "stats", f"{run}.correlation.json") for run in runs],
    }


rule report:
    input:
        unpack(report_inputs),
    output:
        table_md=out("{bench}", "tables", "table3.md"),
        table_csv=out("{bench}", "tables", "table3.csv"),
        curves=out("{bench}", "tables", "training_curves.png"),
        table1_md=out("{bench}", "tables", "table1.md"),
    log:
        out("{bench}", "logs", "report.log"),
    params:
        recall_k=lambda w: ",".join(map(str, get_benchmark(w.bench).recall_k)),
        losses=",".join(config["losses"]),
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "iaa report --benchmark {wildcards.bench} --metrics {input.metrics}"
        " --histories {input.histories} --recall-k {params.recall_k} --losses {params.losses}"
        " --table-md {output.table_md} --table-csv {output.table_csv} --curves {output.curves}"
        " --correlations {input.correlations} --table1-md {output.table1_md} 2> {log}"
