def embeddings_of(wildcards):
    """The pretrained row is evaluated on the extracted features, the others on exports."""
    if wildcards.run == PRETRAINED:
        return out(wildcards.bench, "features", "pretrained.parquet")
    return out(wildcards.bench, "embeddings", f"{wildcards.run}.parquet")


rule index:
    input:
        embeddings=embeddings_of,
    output:
        index=out("{bench}", "index", "{run}", "{split}.faiss"),
    log:
        out("{bench}", "logs", "index", "{run}.{split}.log"),
    params:
        kind=lambda w: bench_config(w.bench)["evaluate"]["index"],
    threads: config["threads"]["index"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} index {input.embeddings} --split {wildcards.split}"
        " --kind {params.kind} --out {output.index} 2> {log}"
