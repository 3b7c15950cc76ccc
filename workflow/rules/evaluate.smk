def selected_embeddings_of(wildcards):
    """A trained run's selected model's embeddings (the pretrained row has none)."""
    if wildcards.run == PRETRAINED:
        return []
    return out(wildcards.bench, "embeddings", f"{wildcards.run}.selected.parquet")


# One JSON per run and split: the final and the selected model's metrics (iaa/provenance.py).
rule evaluate:
    input:
        embeddings=embeddings_of,
        selected=selected_embeddings_of,
    output:
        metrics=out("{bench}", "metrics", "{split}", "{run}.json"),
    log:
        out("{bench}", "logs", "evaluate", "{run}.{split}.log"),
    params:
        recall_k=lambda w: ",".join(map(str, get_benchmark(w.bench).recall_k)),
        nmi=lambda w: "" if bench_config(w.bench)["evaluate"]["nmi"] else "--no-nmi",
        nmi_redo=lambda w: bench_config(w.bench)["evaluate"]["nmi_redo"],
        selected=lambda w, input: f"--selected {input.selected}" if input.selected else "",
    threads: config["threads"]["evaluate"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} evaluate {input.embeddings} {params.selected} --split {wildcards.split}"
        " --recall-k {params.recall_k} {params.nmi} --nmi-redo {params.nmi_redo}"
        " --out {output.metrics} 2> {log}"
