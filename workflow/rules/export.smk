rule export:
    input:
        unpack(train_inputs),
        model=out("{bench}", "runs", "{run}", "model.pt"),
    output:
        embeddings=out("{bench}", "embeddings", "{run}.parquet"),
    log:
        out("{bench}", "logs", "export", "{run}.log"),
    params:
        source=lambda w, input: (
            f"--features {input.features}" if "features" in input.keys() else f"--manifest {input.manifest}"
        ),
        image_size=lambda w: bench_config(w.bench)["train"]["image_size"],
        resize=lambda w: bench_config(w.bench)["train"]["resize"],
    threads: config["threads"]["export"]
    resources:
        mem_mb=4000,
    shell:
        "iaa --threads {threads} export --benchmark {wildcards.bench} --model {input.model}"
        " {params.source} --out {output.embeddings}"
        " --image-size {params.image_size} --resize {params.resize} 2> {log}"
