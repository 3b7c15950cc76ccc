rule report:
    input:
        unpack(report_inputs),
    output:
        # report(): what `snakemake --report report.html` shows, captions in workflow/report/
        table_md=report(
            out("{bench}", "tables", "table3.md"),
            caption="../report/table3.rst",
            category="Retrieval results (Table III)",
            subcategory="{bench}",
        ),
        table_csv=report(
            out("{bench}", "tables", "table3.csv"),
            caption="../report/table3_csv.rst",
            category="Retrieval results (Table III)",
            subcategory="{bench}",
        ),
        curves=report(
            out("{bench}", "tables", "training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training curves",
            subcategory="{bench}",
        ),
        table1_md=report(
            out("{bench}", "tables", "table1.md"),
            caption="../report/table1.rst",
            category="Mean-covariance correlation (Table I)",
            subcategory="{bench}",
        ),
    log:
        out("{bench}", "logs", "report.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        recall_k=lambda w: ",".join(map(str, get_benchmark(w.bench).recall_k)),
        losses=",".join(config["losses"]),
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "iaa report --benchmark {wildcards.bench} --metrics {input.metrics:q}"
        " --histories {input.histories:q} --recall-k {params.recall_k} --losses {params.losses}"
        " --table-md {output.table_md:q} --table-csv {output.table_csv:q} --curves {output.curves:q}"
        " --correlations {input.correlations:q} --table1-md {output.table1_md:q} 2> {log:q}"
