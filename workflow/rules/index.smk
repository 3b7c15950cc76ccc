rule index:
    input:
        embeddings=embeddings_of,
    output:
        index=out("{bench}", "index", "{run}", "{split}.faiss"),
    log:
        out("{bench}", "logs", "index", "{run}.{split}.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        kind=lambda w: bench_config(w.bench)["evaluate"]["index"],
    threads: config["threads"]["index"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} index {input.embeddings:q} --split {wildcards.split}"
        " --kind {params.kind} --out {output.index:q} 2> {log:q}"
