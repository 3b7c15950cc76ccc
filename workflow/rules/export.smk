# Both models of a run (SPEC 2.5 item 12): the final epoch's and the one its selection rule
# picked (the same weights, embedded once, when that is the final epoch).
rule export:
    input:
        unpack(export_inputs),
        model=out("{bench}", "runs", "{run}", "model.pt"),
        selected=out("{bench}", "runs", "{run}", "selected.pt"),
    output:
        embeddings=out("{bench}", "embeddings", "{run}.parquet"),
        selected=out("{bench}", "embeddings", "{run}.selected.parquet"),
    log:
        out("{bench}", "logs", "export", "{run}.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        splits=embed_splits,
        source=lambda w, input: (
            f"--features {shlex.quote(input.features)}"
            if "features" in input.keys()
            else f"--manifest {shlex.quote(input.manifest)}"
        ),
        image_size=lambda w: bench_config(w.bench)["train"]["image_size"],
        resize=lambda w: bench_config(w.bench)["train"]["resize"],
        square=lambda w: (
            "--square-resize" if bench_config(w.bench)["train"]["square_resize"] else "--no-square-resize"
        ),
        interpolation=lambda w: bench_config(w.bench)["train"]["interpolation"],
    threads: config["threads"]["export"]
    resources:
        mem_mb=4000,
        gpu_jobs=1,  # a slot of the GPU (workflow/profiles/gpu: N per GPU)
    shell:
        "iaa --threads {threads} export --splits {params.splits} --model {input.model:q}"
        " --selected {input.selected:q} {params.source} --out {output.embeddings:q}"
        " --out-selected {output.selected:q}"
        " --image-size {params.image_size} --resize {params.resize}"
        " {params.square} --interpolation {params.interpolation} 2> {log:q}"
