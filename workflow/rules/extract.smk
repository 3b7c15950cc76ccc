rule extract:
    input:
        manifest=out("{bench}", "manifest.parquet"),
        backbone=out("{bench}", "models", "pretrained_backbone.pt"),
    output:
        features=out("{bench}", "features", "pretrained.parquet"),
    log:
        out("{bench}", "logs", "extract.log"),
    params:
        image_size=lambda w: bench_config(w.bench)["extract"]["image_size"],
        resize=lambda w: bench_config(w.bench)["extract"]["resize"],
    threads: config["threads"]["extract"]
    resources:
        mem_mb=4000,
    shell:
        "iaa --threads {threads} extract --benchmark {wildcards.bench} --manifest {input.manifest}"
        " --backbone {input.backbone} --out {output.features}"
        " --image-size {params.image_size} --resize {params.resize} 2> {log}"
