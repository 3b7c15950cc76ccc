rule stats:
    input:
        embeddings=embeddings_of,
    output:
        stats=out("{bench}", "stats", "{run}.parquet"),
        correlation=out("{bench}", "stats", "{run}.correlation.json"),
    log:
        out("{bench}", "logs", "stats", "{run}.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        iaa=lambda w: bench_config(w.bench)["train"]["iaa"],
        pairs=stats_pairs,
    threads: config["threads"]["stats"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} stats {input.embeddings:q} --split train --out {output.stats:q}"
        " --correlation {output.correlation:q} --k {params.iaa[k]} --beta {params.iaa[beta]}"
        " --gamma {params.iaa[gamma]} --tau {params.iaa[tau]} --pairs {params.pairs} 2> {log:q}"
