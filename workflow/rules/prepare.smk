rule prepare:
    output:
        manifest=out("{bench}", "manifest.parquet"),
    log:
        out("{bench}", "logs", "prepare.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        kind=prepare_kind,
        args=prepare_args,
    threads: config["threads"]["prepare"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} prepare {params.kind} --out {output.manifest:q} {params.args} 2> {log:q}"
