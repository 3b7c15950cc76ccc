rule prepare:
    output:
        manifest=out("{bench}", "manifest.parquet"),
    log:
        out("{bench}", "logs", "prepare.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        args=prepare_args,
    threads: config["threads"]["prepare"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} prepare {wildcards.bench} --out {output.manifest:q} {params.args} 2> {log:q}"
