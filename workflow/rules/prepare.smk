rule prepare:
    output:
        manifest=out("{bench}", "manifest.parquet"),
    log:
        out("{bench}", "logs", "prepare.log"),
    params:
        data_dir=lambda w: out(w.bench, "data"),
        seed=lambda w: bench_config(w.bench)["synth"]["seed"],
        synth=lambda w: json.dumps(bench_config(w.bench)["synth"]["overrides"], sort_keys=True),
    threads: config["threads"]["prepare"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} prepare {wildcards.bench} --out {output.manifest}"
        " --data-dir {params.data_dir} --seed {params.seed} --synth {params.synth:q} 2> {log}"
