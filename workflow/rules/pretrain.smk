rule pretrain:
    input:
        manifest=lambda w: manifest_of(w.bench),
    output:
        backbone=out("{bench}", "models", "pretrained_backbone.pt"),
    log:
        out("{bench}", "logs", "pretrain.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        settings=settings_json("pretrain"),
        seed=lambda w: bench_config(w.bench)["synth"]["seed"],
    threads: config["threads"]["pretrain"]
    resources:
        mem_mb=4000,
        gpu_jobs=1,  # a slot of the GPU (workflow/profiles/gpu: N per GPU)
    shell:
        "iaa --threads {threads} pretrain --manifest {input.manifest:q} --out {output.backbone:q}"
        " --seed {params.seed} --settings {params.settings:q} 2> {log:q}"
