def train_inputs(wildcards):
    """Head mode trains on extracted features; finetune mode on images, from synth's pretrained
    backbone or (real datasets) the benchmark's ImageNet backbone."""
    if bench_config(wildcards.bench)["train"]["mode"] == "head":
        return {"features": out(wildcards.bench, "features", "pretrained.parquet")}
    inputs = {"manifest": manifest_of(wildcards.bench)}
    if get_benchmark(wildcards.bench).builtin:
        inputs["backbone"] = out(wildcards.bench, "models", "pretrained_backbone.pt")
    return inputs


def train_input_args(wildcards, input):
    args = " ".join(f"--{name} {path}" for name, path in input.items())
    bench = get_benchmark(wildcards.bench)
    if "manifest" in input.keys() and not bench.builtin:
        args += f" --arch {bench.arch} {weights_args()}"
    return args


rule train:
    input:
        unpack(train_inputs),
    output:
        model=out("{bench}", "runs", "{loss}-{method}-seed{seed}", "model.pt"),
        selected=out("{bench}", "runs", "{loss}-{method}-seed{seed}", "selected.pt"),
        history=out("{bench}", "runs", "{loss}-{method}-seed{seed}", "history.csv"),
    log:
        out("{bench}", "logs", "train", "{loss}-{method}-seed{seed}.log"),
    params:
        inputs=train_input_args,
        settings=settings_json("train"),
        checkpoints=lambda w: out(w.bench, "runs", f"{w.loss}-{w.method}-seed{w.seed}", "checkpoints"),
    threads: config["threads"]["train"]
    resources:
        mem_mb=4000,
    shell:
        "iaa --threads {threads} train --loss {wildcards.loss} --method {wildcards.method}"
        " --seed {wildcards.seed} {params.inputs} --out {output.model} --selected {output.selected}"
        " --history {output.history}"
        " --checkpoints {params.checkpoints} --settings {params.settings:q} 2> {log}"
