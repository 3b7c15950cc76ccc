"""The ``iaa`` command: one subcommand per pipeline stage, each a thin call into its module.

Errors the user can fix (a missing file, a bad setting) are printed as one line and exit
with status 2; anything else is a bug and keeps its traceback. SIGTERM (a scheduler's stop)
unwinds every stage like Ctrl-C, so that what it was writing is removed, and the process then
dies of the signal (:func:`iaa.preemption.clean_up_on_sigterm`; ``train`` has its own handler).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from iaa.cli_args import (
    HelpFormatter,
    ListAction,
    Parser,
    flag01,
    image_args,
    json_dict,
    nonnegative_float,
    nonnegative_int,
    open_unit_interval,
    positive_int,
    positive_int_list,
    str_list,
    unit_interval,
    weight_args,
)
from iaa.cli_commands import (
    cmd_compare,
    cmd_evaluate,
    cmd_export,
    cmd_extract,
    cmd_index,
    cmd_prepare,
    cmd_pretrain,
    cmd_report,
    cmd_search,
    cmd_stats,
    cmd_train,
)
from iaa.errors import IAAError
from iaa.preemption import clean_up_on_sigterm

log = logging.getLogger("iaa")


# Modules whose ``register(stage)`` adds their subcommands (the ablations' tables and figures).
COMMAND_MODULES = (
    "iaa.ablations.tables",
    "iaa.ablations.sweeps",
    "iaa.class_figures",
    "iaa.visualize",
    "iaa.similarity_histogram",
    "iaa.tsne",
    "iaa.decode",
)

DESCRIPTION = "The iaa command: one subcommand per pipeline stage, each a thin call into its module."


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="iaa",
        description=DESCRIPTION,
        epilog="Errors you can fix (a missing file, a bad setting) are one line, exit status 2. "
        "List options take values space- or comma-separated (--recall-k 1 2 4 8, or 1,2,4,8).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch/FAISS/OpenMP threads (default: all CPUs)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log DEBUG messages too (default: INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")

    def stage(name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        sp.set_defaults(func=fn)
        return sp

    sp = stage("prepare", cmd_prepare, "write a benchmark's manifest (and generate synth images)")
    sp.add_argument(
        "benchmark",
        help="benchmark name (synth, cub200, cars196, sop, inshop, ...), or your own images: folder "
        "(--root DIR/<class>/<image>) or csv (--manifest TABLE --root DIR)",
    )
    sp.add_argument("--out", type=Path, required=True, help="manifest Parquet")
    sp.add_argument("--data-dir", type=Path, default=None, help="synth: where images are written")
    sp.add_argument(
        "--seed", type=nonnegative_int, default=0,
        help="synth: random seed of the generated images; folder/csv: of the --test-fraction class split",
    )  # fmt: skip
    sp.add_argument("--synth", type=json_dict, default=None, help="JSON overrides of the synth spec")
    sp.add_argument(
        "--root",
        type=Path,
        default=None,
        help="real datasets: the folder holding the download (CUB_200_2011/, Cars196/, ...); folder/csv: "
        "the folder of your images",
    )
    sp.add_argument(
        "--manifest", type=Path, default=None,
        help="csv: your table (.csv or .parquet) with columns path, label and optionally split",
    )  # fmt: skip
    sp.add_argument(
        "--test-fraction", type=open_unit_interval, default=None,
        help="folder/csv without a split: test a random fraction of the classes (--seed); default: the "
        "second half of the classes in sorted order",
    )  # fmt: skip
    sp.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="drop missing or unreadable images from the manifest (with a warning) instead of failing",
    )
    sp.add_argument(
        "--resized-cache",
        type=Path,
        default=None,
        help="write resized copies here and point the manifest at them",
    )
    sp.add_argument(
        "--cache-size", type=positive_int, default=256, help="side of the cached square copies, in pixels"
    )
    sp.add_argument(
        "--cache-square", action=argparse.BooleanOptionalAction, default=True,
        help="cache copies squashed to --cache-size squared (train.square_resize); --no-cache-square"
        " (CUB, whose training crops the original): keep the originals, no cache",
    )  # fmt: skip
    sp.add_argument(
        "--cache-interpolation", choices=["bilinear", "lanczos"], default="bilinear",
        help="filter of the cached copies (train.interpolation)",
    )  # fmt: skip

    sp = stage("pretrain", cmd_pretrain, "softmax-pretrain the synth backbone on the pretrain classes")
    sp.add_argument("--manifest", type=Path, required=True, help="the synth manifest Parquet (prepare)")
    sp.add_argument("--out", type=Path, required=True, help="backbone checkpoint (.pt)")
    sp.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (initialisation, batches)")
    sp.add_argument("--settings", default=None, help="JSON: the config's pretrain section")

    sp = stage("extract", cmd_extract, "pretrained-backbone features of train and evaluation images")
    sp.add_argument(
        "--benchmark", default=None, help="benchmark name: its backbone and splits, unless given below"
    )
    sp.add_argument("--arch", default=None, help="ImageNet backbone (googlenet, bn_inception, resnet50)")
    sp.add_argument(
        "--splits", action=ListAction, type=str_list, default=None,
        help="splits to embed, e.g. train test (space- or comma-separated)",
    )  # fmt: skip
    sp.add_argument("--manifest", type=Path, required=True, help="the benchmark's manifest Parquet")
    sp.add_argument(
        "--backbone", type=Path, default=None,
        help="backbone checkpoint (synth); default: the benchmark's ImageNet backbone",
    )  # fmt: skip
    weight_args(sp)
    sp.add_argument("--out", type=Path, required=True, help="features Parquet")
    image_args(sp)
    sp.add_argument(
        "--pooling", default="avg", choices=["avg", "max_avg"],
        help="ImageNet BN-Inception/ResNet-50: global average, or max + average (the released code)",
    )  # fmt: skip
    sp.add_argument(
        "--googlenet-transform-input", action=argparse.BooleanOptionalAction, default=True,
        help="ImageNet GoogLeNet: torchvision's input rescaling (the released code: off)",
    )  # fmt: skip

    sp = stage("train", cmd_train, "train one model (loss x method x seed); resumes from checkpoints")
    sp.add_argument(
        "--loss", required=True,
        help="metric-learning loss: contrastive, triplet, ms (the paper's three), or distance_weighted, "
        "margin, circle, norm_softmax, proxy_nca, soft_triple (Table X, pytorch-metric-learning)",
    )  # fmt: skip
    sp.add_argument(
        "--method", required=True, choices=["baseline", "iaa"], help="the loss alone, or with IAA's synthesis"
    )
    sp.add_argument(
        "--seed", type=nonnegative_int, default=0, help="random seed (initialisation, batches, noise)"
    )
    sp.add_argument("--features", type=Path, default=None, help="head mode: features Parquet")
    sp.add_argument("--manifest", type=Path, default=None, help="finetune mode: manifest")
    sp.add_argument("--backbone", type=Path, default=None, help="finetune mode: backbone checkpoint")
    sp.add_argument("--arch", default=None, help="finetune mode: ImageNet backbone (googlenet, ...)")
    sp.add_argument(
        "--decoded-store", type=Path, default=None,
        help="finetune mode: the manifest's decoded store (iaa decode), read when --loader is cache, "
        "or auto on CUDA (default: none, the JPEG files)",
    )  # fmt: skip
    weight_args(sp)
    sp.add_argument("--out", type=Path, required=True, help="final model (.pt)")
    sp.add_argument(
        "--selected", type=Path, default=None,
        help="the model of the epoch train.selection picks (default: selected.pt beside --out)",
    )  # fmt: skip
    sp.add_argument("--history", type=Path, required=True, help="per-epoch history CSV")
    sp.add_argument(
        "--checkpoints", type=Path, default=None,
        help="folder of the per-epoch checkpoints (default: <out dir>/checkpoints)",
    )  # fmt: skip
    sp.add_argument(
        "--settings", default=None,
        help="JSON: the config's train section, as the workflow builds it; its 'recipe' is a label "
        "only (the workflow lays the recipe's bundle, iaa/recipes.py, under your config)",
    )  # fmt: skip
    # Execution settings: how fast, never what is computed (iaa.checkpoints.EXECUTION_KEYS).
    sp.add_argument(
        "--workers", type=nonnegative_int, default=None,
        help="DataLoader worker processes of the JPEG path (default: the settings' train.workers, 0)",
    )  # fmt: skip
    sp.add_argument(
        "--loader", choices=["auto", "workers", "cache"], default=None,
        help="images from JPEGs through DataLoader workers, or from the decoded store augmented on "
        "the device (cache); auto: the store on CUDA when it exists (default: the settings', auto)",
    )  # fmt: skip
    sp.add_argument(
        "--compile", type=flag01, default=None, metavar="0|1",
        help="torch.compile the model on CUDA (default: the settings' train.compile, 0)",
    )  # fmt: skip

    sp = stage("export", cmd_export, "embeddings of train and evaluation images -> Parquet")
    sp.add_argument("--benchmark", default=None, help="benchmark name: its splits, unless --splits")
    sp.add_argument(
        "--splits", action=ListAction, type=str_list, default=None,
        help="splits to embed, e.g. train test (space- or comma-separated)",
    )  # fmt: skip
    sp.add_argument("--model", type=Path, required=True, help="the final model (runs/<run>/model.pt)")
    sp.add_argument(
        "--selected", type=Path, default=None,
        help="the selected model (runs/<run>/selected.pt); needs --out-selected",
    )  # fmt: skip
    sp.add_argument("--features", type=Path, default=None, help="head mode: the features Parquet (extract)")
    sp.add_argument("--manifest", type=Path, default=None, help="finetune mode: the manifest Parquet")
    sp.add_argument("--out", type=Path, required=True, help="the final model's embeddings Parquet")
    sp.add_argument(
        "--out-selected", type=Path, default=None,
        help="the selected model's embeddings Parquet (the final one's again when the epochs agree)",
    )  # fmt: skip
    image_args(sp)

    sp = stage("index", cmd_index, "a FAISS index of one split of an embeddings file")
    sp.add_argument("embeddings", type=Path, help="embeddings (or features) Parquet")
    sp.add_argument("--split", required=True, help="the split whose rows are indexed (test, gallery, ...)")
    sp.add_argument(
        "--kind", default="flat", choices=["flat", "ivf", "hnsw"],
        help="FAISS index: exact (flat), inverted lists (ivf) or graph (hnsw)",
    )  # fmt: skip
    sp.add_argument("--out", type=Path, required=True, help="index file (.faiss)")

    sp = stage("search", cmd_search, "nearest neighbours of query embeddings in a written index")
    sp.add_argument("index", type=Path, help="index file written by 'iaa index' (.faiss)")
    sp.add_argument("--query", type=Path, required=True, help="embeddings Parquet")
    sp.add_argument("--split", default=None, help="query rows of this split only")
    sp.add_argument("--k", type=positive_int, default=10, help="neighbours per query")
    sp.add_argument("--out", type=Path, required=True, help="neighbours Parquet")

    sp = stage("evaluate", cmd_evaluate, "Recall@K, NMI, MAP@R and RP of an embeddings file -> JSON")
    sp.add_argument("embeddings", type=Path, help="the final model's embeddings (or features) Parquet")
    sp.add_argument(
        "--selected", type=Path, default=None,
        help="the selected model's embeddings; without it (or at the same epoch) 'selected' copies 'final'",
    )  # fmt: skip
    sp.add_argument("--out", type=Path, required=True, help="metrics JSON: final and selected models")
    sp.add_argument("--split", default=None, help="test, test-*, or query (query vs gallery)")
    sp.add_argument(
        "--recall-k", type=positive_int_list, action=ListAction, default=[1, 2, 4, 8], metavar="K",
        help="the K of Recall@K, space- or comma-separated (1 2 4 8, or 1,2,4,8; space-separated,"
        " give the embeddings file before it)",
    )  # fmt: skip
    sp.add_argument("--no-nmi", action="store_true", help="skip NMI (k-means on the embeddings: slow on SOP)")
    sp.add_argument(
        "--index", default="flat", choices=["flat", "ivf", "hnsw"],
        help="FAISS index of the neighbour search (flat: exact)",
    )  # fmt: skip
    sp.add_argument("--seed", type=nonnegative_int, default=0, help="k-means seed for NMI")
    sp.add_argument("--nmi-redo", type=positive_int, default=1, help="k-means restarts")

    sp = stage("stats", cmd_stats, "per-class mean, variance, corrected variance and alpha -> Parquet")
    sp.add_argument("embeddings", type=Path, help="embeddings (or features) Parquet")
    sp.add_argument("--split", default="train", help="the split whose classes are summarised")
    sp.add_argument("--out", type=Path, required=True, help="statistics Parquet")
    sp.add_argument("--correlation", type=Path, default=None, help="Table I correlation JSON")
    sp.add_argument(
        "--pairs", type=str_list, action=ListAction, metavar="PAIR",
        default=["mu2-sigma", "mu-sigma", "mu2-sigma2", "mu-sigma2"],
        help="Table VIII's distance pairs in the correlation JSON (mu2-sigma, Table I's, always); each "
        "costs C^2 distances per p (default: all four)",
    )  # fmt: skip
    sp.add_argument(
        "--k", type=positive_int, default=25, help="neighbour correction: neighbouring classes per class"
    )
    sp.add_argument(
        "--beta", type=nonnegative_float, default=0.1, help="neighbour correction: beta (SPEC 2.2)"
    )
    sp.add_argument("--gamma", type=unit_interval, default=0.1, help="neighbour correction: gamma (SPEC 2.2)")
    sp.add_argument(
        "--tau", type=nonnegative_float, default=40.0, help="neighbour correction: temperature tau (SPEC 2.2)"
    )

    sp = stage("report", cmd_report, "the results table (Markdown, CSV) and training curves (PNG)")
    sp.add_argument("--benchmark", required=True, help="benchmark name (the table's title)")
    sp.add_argument(
        "--metrics", type=Path, nargs="+", required=True, help="metrics JSONs (evaluate), space-separated"
    )
    sp.add_argument(
        "--histories",
        type=Path,
        nargs="*",
        default=[],
        help="per-epoch history CSVs (train), space-separated",
    )
    sp.add_argument(
        "--recall-k", type=positive_int_list, action=ListAction, default=[1, 2, 4, 8], metavar="K",
        help="the K of the Recall@K columns, space- or comma-separated",
    )  # fmt: skip
    sp.add_argument(
        "--losses", type=str_list, action=ListAction, metavar="LOSS",
        default=["contrastive", "triplet", "ms"],
        help="losses in the table, in row order, space- or comma-separated",
    )  # fmt: skip
    sp.add_argument("--table-md", type=Path, required=True, help="results table (Markdown)")
    sp.add_argument("--table-csv", type=Path, required=True, help="results table (CSV)")
    sp.add_argument("--curves", type=Path, required=True, help="training curves (PNG)")
    sp.add_argument("--correlations", type=Path, nargs="*", default=[], help="stats correlation JSONs")
    sp.add_argument("--table1-md", type=Path, default=None, help="Table I (Spearman correlation)")

    sp = stage("compare", cmd_compare, "our numbers next to the paper's (Tables III-XII) and the difference")
    sp.add_argument(
        "--metrics",
        type=Path,
        nargs="*",
        default=[],
        help="<results>/<bench>/metrics/<split>/<run>.json (Tables III-VI)",
    )
    sp.add_argument("--out-md", type=Path, required=True, help="comparison table (Markdown)")
    sp.add_argument("--out-csv", type=Path, required=True, help="comparison table (CSV)")
    sp.add_argument(
        "--ablation-tables", type=Path, nargs="+", default=[], metavar="CSV",
        help="long-format ablation tables (Tables VII-XII: table, benchmark, row, column, mean, std,"
        " seeds, paper, diff), space-separated",
    )  # fmt: skip
    # The ablations' tables and figures register their own subcommands (each module's
    # ``register``); those modules import their heavy libraries only when a command runs.
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(stage)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader reports each CPU probe
    if args.threads:
        # Read by torch and FAISS (OpenMP) when the stage imports them; stages import lazily
        # so that light stages (report) do not pay for torch at start-up.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    t0 = time.perf_counter()
    # Nested handlers (train's exit_cleanly_on_sigterm, decode's own): the innermost wins while it runs.
    stage = clean_up_on_sigterm(args.command)(args.func)
    try:
        stage(args)
    except IAAError as err:
        print(f"iaa {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iaa {args.command}: interrupted", file=sys.stderr)
        return 130
    log.info("%s done in %.1fs", args.command, time.perf_counter() - t0)
    return 0
