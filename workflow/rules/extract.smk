def extract_inputs(wildcards):
    """synth: the backbone its pretrain stage wrote; a real dataset: ImageNet weights (no file rule)."""
    inputs = {"manifest": manifest_of(wildcards.bench)}
    if get_benchmark(wildcards.bench).builtin:
        inputs["backbone"] = out(wildcards.bench, "models", "pretrained_backbone.pt")
    return inputs


rule extract:
    input:
        unpack(extract_inputs),
    output:
        features=out("{bench}", "features", "pretrained.parquet"),
    log:
        out("{bench}", "logs", "extract.log"),
    params:
        backbone=lambda w, input: f"--backbone {input.backbone}" if "backbone" in input.keys() else weights_args(),
        image_size=lambda w: bench_config(w.bench)["extract"]["image_size"],
        resize=lambda w: bench_config(w.bench)["extract"]["resize"],
        workers=lambda w: bench_config(w.bench)["train"]["workers"],
    threads: config["threads"]["extract"]
    resources:
        mem_mb=4000,
    shell:
        "iaa --threads {threads} extract --benchmark {wildcards.bench} --manifest {input.manifest}"
        " {params.backbone} --out {output.features} --image-size {params.image_size}"
        " --resize {params.resize} --workers {params.workers} 2> {log}"
