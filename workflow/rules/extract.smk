rule extract:
    input:
        unpack(extract_inputs),
    output:
        features=out("{bench}", "features", "pretrained.parquet"),
    log:
        out("{bench}", "logs", "extract.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        splits=embed_splits,
        arch=lambda w: get_benchmark(w.bench).arch,
        backbone=lambda w, input: f"--backbone {shlex.quote(input.backbone)}" if "backbone" in input.keys() else weights_args(),
        image_size=lambda w: bench_config(w.bench)["extract"]["image_size"],
        resize=lambda w: bench_config(w.bench)["extract"]["resize"],
        # the dataset's test transform (SPEC 3): one key for every embedding pass
        square=lambda w: (
            "--square-resize" if bench_config(w.bench)["train"]["square_resize"] else "--no-square-resize"
        ),
        interpolation=lambda w: bench_config(w.bench)["train"]["interpolation"],
        # the recipe's backbone options (pooling, GoogLeNet input), as train builds the model
        options=lambda w: (
            f"--pooling {bench_config(w.bench)['train']['pooling']} --"
            + ("" if bench_config(w.bench)["train"]["googlenet_transform_input"] else "no-")
            + "googlenet-transform-input"
        ),
    threads: config["threads"]["extract"]
    resources:
        mem_mb=4000,
        gpu_jobs=1,  # a slot of the GPU (workflow/profiles/gpu: N per GPU)
        iaa_workers=execution_resource("workers"),  # execution: no rerun when changed
    shell:
        "iaa --threads {threads} extract --arch {params.arch} --splits {params.splits} --manifest {input.manifest:q}"
        " {params.backbone} --out {output.features:q} --image-size {params.image_size}"
        " --resize {params.resize} {params.square} --interpolation {params.interpolation}"
        " {params.options} --workers {resources.iaa_workers} 2> {log:q}"
