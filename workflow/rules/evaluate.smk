# One JSON per run and split: the final and the selected model's metrics (iaa/provenance.py).
rule evaluate:
    input:
        embeddings=embeddings_of,
        selected=selected_embeddings_of,
    output:
        metrics=out("{bench}", "metrics", "{split}", "{run}.json"),
    log:
        out("{bench}", "logs", "evaluate", "{run}.{split}.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        recall_k=lambda w: ",".join(map(str, get_benchmark(w.bench).recall_k)),
        nmi=lambda w: "" if bench_config(w.bench)["evaluate"]["nmi"] else "--no-nmi",
        nmi_redo=lambda w: bench_config(w.bench)["evaluate"]["nmi_redo"],
        selected=lambda w, input: f"--selected {shlex.quote(input.selected)}" if input.selected else "",
    threads: config["threads"]["evaluate"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} evaluate {input.embeddings:q} {params.selected} --split {wildcards.split}"
        " --recall-k {params.recall_k} {params.nmi} --nmi-redo {params.nmi_redo}"
        " --out {output.metrics:q} 2> {log:q}"
