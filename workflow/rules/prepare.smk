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


# Every image decoded once, for training to gather from (prepare.decoded_store; iaa/decode.py):
# squashed to the train resize where every pass squashes, at its own size otherwise (CUB).
rule decode:
    input:
        manifest=lambda w: manifest_of(w.bench),
    output:
        store=directory(out("{bench}", "decoded_store")),
    log:
        out("{bench}", "logs", "decode.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        resize=lambda w: bench_config(w.bench)["train"]["resize"],
        square=lambda w: "--square" if bench_config(w.bench)["train"]["square_resize"] else "--no-square",
        interpolation=lambda w: bench_config(w.bench)["train"]["interpolation"],
    threads: config["threads"]["prepare"]
    resources:
        mem_mb=4000,
    shell:
        "iaa --threads {threads} decode --manifest {input.manifest:q} --out {output.store:q}"
        " --resize {params.resize} {params.square} --interpolation {params.interpolation} 2> {log:q}"
