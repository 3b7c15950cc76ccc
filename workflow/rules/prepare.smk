def prepare_args(wildcards):
    """synth: where to generate it; a real dataset: where the download is (config data_root)."""
    bench = get_benchmark(wildcards.bench)
    cfg = bench_config(wildcards.bench)
    if bench.builtin:
        synth = json.dumps(cfg["synth"]["overrides"], sort_keys=True)
        return f"--data-dir {out(wildcards.bench, 'data')} --seed {cfg['synth']['seed']} --synth '{synth}'"
    args = f"--root {data_root(wildcards.bench)}"
    if cfg["prepare"]["resized_cache"]:
        args += f" --resized-cache {out(wildcards.bench, 'cache')} --cache-size {cfg['prepare']['cache_size']}"
        # The cache holds the squashed square both transforms start from; where training crops
        # the original (CUB: square_resize false) it keeps the originals instead (SPEC 3).
        square = "--cache-square" if cfg["train"]["square_resize"] else "--no-cache-square"
        args += f" {square} --cache-interpolation {cfg['train']['interpolation']}"
    if cfg["prepare"]["skip_bad_images"]:
        args += " --skip-bad-images"
    return args


rule prepare:
    output:
        manifest=out("{bench}", "manifest.parquet"),
    log:
        out("{bench}", "logs", "prepare.log"),
    params:
        args=prepare_args,
    threads: config["threads"]["prepare"]
    resources:
        mem_mb=2000,
    shell:
        "iaa --threads {threads} prepare {wildcards.bench} --out {output.manifest} {params.args} 2> {log}"
