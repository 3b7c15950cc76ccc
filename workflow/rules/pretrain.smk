rule pretrain:
    input:
        manifest=lambda w: manifest_of(w.bench),
    output:
        backbone=out("{bench}", "models", "pretrained_backbone.pt"),
    log:
        out("{bench}", "logs", "pretrain.log"),
    params:
        settings=settings_json("pretrain"),
        seed=lambda w: bench_config(w.bench)["synth"]["seed"],
    threads: config["threads"]["pretrain"]
    resources:
        mem_mb=4000,
    shell:
        "iaa --threads {threads} pretrain --manifest {input.manifest} --out {output.backbone}"
        " --seed {params.seed} --settings {params.settings:q} 2> {log}"
