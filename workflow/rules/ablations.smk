# The paper's ablations (Tables VII-XII, Figs. 3-14): `snakemake ablations`, or one file.
# A sweep point is a training run of the experiment <bench>/variants/<variant> (the train,
# export, evaluate and stats rules serve it through the {bench} wildcard); a point whose
# settings equal the benchmark's own reads the main-table run instead of training it again.


rule ablation_table:
    input:
        ablation_table_inputs,
    output:
        md=report(
            out("{bench}", "tables", "{table}.md"),
            caption="../report/ablation_table.rst",
            category="Ablations: tables",
            subcategory="{bench}",
        ),
        csv=out("{bench}", "tables", "{table}.csv"),
    log:
        out("{bench}", "logs", "ablations", "{table}.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        spec=ablation_table_spec,
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "iaa ablation-table --spec {params.spec:q} --out-md {output.md:q} --out-csv {output.csv:q} 2> {log:q}"


rule sweep_figure:
    input:
        sweep_figure_inputs,
    output:
        png=report(
            out("{bench}", "figures", "{figure}.png"),
            caption="../report/sweep_figure.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        csv=out("{bench}", "figures", "{figure}.csv"),
    log:
        out("{bench}", "logs", "ablations", "{figure}.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        spec=sweep_figure_spec,
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "iaa sweep-figure --spec {params.spec:q} --out-png {output.png:q} --out-csv {output.csv:q} 2> {log:q}"


# Fig. 10 has two panels from the same histories: the hard negatives kept per batch (a) and
# the share of mined pairs that are synthetic (b).
rule sweep_figure_mining:
    input:
        lambda w: sweep_figure_inputs(w, "fig10"),
    output:
        png_a=report(
            out("{bench}", "figures", "fig10a_hard_negatives.png"),
            caption="../report/fig10.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        csv_a=out("{bench}", "figures", "fig10a_hard_negatives.csv"),
        png_b=report(
            out("{bench}", "figures", "fig10b_synthetic_share.png"),
            caption="../report/fig10.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        csv_b=out("{bench}", "figures", "fig10b_synthetic_share.csv"),
    log:
        out("{bench}", "logs", "ablations", "fig10.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        spec=lambda w: sweep_figure_spec(w, "fig10"),
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "iaa sweep-figure --spec {params.spec:q} --out-png {output.png_a:q} {output.png_b:q}"
        " --out-csv {output.csv_a:q} {output.csv_b:q} 2> {log:q}"


# Figs. 3/4, 5 and 9a: class statistics of the pretrained features (the stats stage's table).
rule class_figures:
    input:
        stats=lambda w: out(w.bench, "stats", f"{PRETRAINED}.parquet"),
    output:
        scatter=report(
            out("{bench}", "figures", "fig3_mean_vs_covariance_distance.png"),
            caption="../report/fig3.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        scatter_csv=out("{bench}", "figures", "fig3_mean_vs_covariance_distance.csv"),
        distance=report(
            out("{bench}", "figures", "fig5_distance_to_global_covariance.png"),
            caption="../report/fig5.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        distance_csv=out("{bench}", "figures", "fig5_distance_to_global_covariance.csv"),
        alpha=report(
            out("{bench}", "figures", "fig9a_alpha_vs_count.png"),
            caption="../report/fig9a.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        alpha_csv=out("{bench}", "figures", "fig9a_alpha_vs_count.csv"),
    log:
        out("{bench}", "logs", "ablations", "class_figures.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        betas=lambda w: " ".join(map(str, ablation_config("fig9a", w.bench)["values"])),
        tau=lambda w: bench_config(w.bench)["train"]["iaa"]["tau"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "iaa class-figures --stats {input.stats:q} --scatter-png {output.scatter:q}"
        " --scatter-csv {output.scatter_csv:q} --global-png {output.distance:q}"
        " --global-csv {output.distance_csv:q} --alpha-png {output.alpha:q} --alpha-csv {output.alpha_csv:q}"
        " --betas {params.betas} --tau {params.tau} 2> {log:q}"


# Figs. 12-14 read the exported embeddings of the selected models of one seed.
rule similarity_histogram:
    input:
        baseline=lambda w: figure_embeddings(w, "fig12", "baseline"),
        iaa=lambda w: figure_embeddings(w, "fig12", "iaa"),
    output:
        png=report(
            out("{bench}", "figures", "fig12_similarity_histograms.png"),
            caption="../report/fig12.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        csv=out("{bench}", "figures", "fig12_similarity_histograms.csv"),
    log:
        out("{bench}", "logs", "ablations", "fig12.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        split=lambda w: primary_split(w.bench),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "iaa similarity-histogram --baseline {input.baseline:q} --iaa {input.iaa:q} --split {params.split}"
        " --out {output.png:q} --csv {output.csv:q} 2> {log:q}"


rule visualize:
    input:
        embeddings=lambda w: figure_embeddings(w, "fig13", "iaa"),
        manifest=lambda w: manifest_of(w.bench),
    output:
        png=report(
            out("{bench}", "figures", "fig13_retrieval_examples.png"),
            caption="../report/fig13.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        csv=out("{bench}", "figures", "fig13_retrieval_examples.csv"),
    log:
        out("{bench}", "logs", "ablations", "fig13.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        splits=visualize_splits,
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "iaa visualize {input.embeddings:q} --manifest {input.manifest:q} {params.splits}"
        " --out {output.png:q} --csv {output.csv:q} 2> {log:q}"


rule tsne:
    input:
        embeddings=lambda w: figure_embeddings(w, "fig14", "iaa"),
    output:
        png=report(
            out("{bench}", "figures", "fig14_tsne.png"),
            caption="../report/fig14.rst",
            category="Ablations: figures",
            subcategory="{bench}",
        ),
        csv=out("{bench}", "figures", "fig14_tsne.csv"),
    log:
        out("{bench}", "logs", "ablations", "fig14.log"),
    conda:
        "../envs/iaa.yaml"
    params:
        iaa=lambda w: bench_config(w.bench)["train"]["iaa"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "iaa tsne {input.embeddings:q} --split train --copies {params.iaa[copies]} --lam {params.iaa[lam]}"
        " --out {output.png:q} --csv {output.csv:q} 2> {log:q}"


rule ablations:
    input:
        ablation_targets(),
