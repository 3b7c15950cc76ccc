rule train:
    input:
        unpack(train_inputs),
    output:
        model=out("{bench}", "runs", "{loss}-{method}-seed{seed}", "model.pt"),
        selected=out("{bench}", "runs", "{loss}-{method}-seed{seed}", "selected.pt"),
        history=out("{bench}", "runs", "{loss}-{method}-seed{seed}", "history.csv"),
    log:
        out("{bench}", "logs", "train", "{loss}-{method}-seed{seed}.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        inputs=train_input_args,
        settings=settings_json("train"),
        checkpoints=lambda w: out(w.bench, "runs", f"{w.loss}-{w.method}-seed{w.seed}", "checkpoints"),
    threads: config["threads"]["train"]
    resources:
        mem_mb=4000,
        gpu_jobs=1,  # a slot of the GPU (workflow/profiles/gpu: N per GPU)
        # execution settings: a change never reruns the job (common.smk, execution_resource)
        iaa_workers=execution_resource("workers"),
        iaa_loader=execution_resource("loader"),
        iaa_compile=execution_resource("compile"),
    shell:
        "iaa --threads {threads} train --loss {wildcards.loss} --method {wildcards.method}"
        " --workers {resources.iaa_workers} --loader {resources.iaa_loader} --compile {resources.iaa_compile}"
        " --seed {wildcards.seed} {params.inputs} --out {output.model:q} --selected {output.selected:q}"
        " --history {output.history:q}"
        " --checkpoints {params.checkpoints:q} --settings {params.settings:q} 2> {log:q}"
