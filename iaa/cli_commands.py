"""The ``iaa`` command's stage handlers: each turns the parsed arguments into one call of its
stage's module (``iaa/<stage>.py``). The parser is :mod:`iaa.cli`; stages import their
modules lazily so that light commands do not pay for torch at start-up."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from iaa.errors import IAAError

log = logging.getLogger("iaa")


def cmd_prepare(a: argparse.Namespace) -> None:
    from iaa.prepare import prepare_stage

    # --threads: synth worker processes (default 1), or real-dataset checking threads (default all CPUs).
    prepare_stage(
        a.benchmark, a.out, data_dir=a.data_dir, seed=a.seed, workers=a.threads, synth_overrides=a.synth,
        root=a.root, skip_bad_images=a.skip_bad_images, resized_cache=a.resized_cache,
        cache_size=a.cache_size, cache_square=a.cache_square, cache_interpolation=a.cache_interpolation,
        manifest=a.manifest, test_fraction=a.test_fraction,
    )  # fmt: skip


def settings_domains(section: str) -> dict[str, Any]:
    """The domain of each numeric or boolean key of a ``--settings`` section (``train``,
    ``train.iaa``, ``pretrain``): an :class:`iaa.cli_args.Domain`, ``bool``, or a one-item list or
    dict of a Domain (each item or value). The workflow's schema says the same
    (workflow/schemas/config.schema.yaml; tests/test_cli_parser.py checks they agree); a
    by-hand ``--settings`` is checked here, before any work."""
    from iaa.cli_args import (
        FRACTION,
        NONNEGATIVE_FLOAT,
        NONNEGATIVE_INT,
        OPEN_UNIT_INTERVAL,
        POSITIVE_FLOAT,
        POSITIVE_INT,
        POSITIVE_OR_INF,
        UNIT_INTERVAL,
    )

    return {
        "pretrain": {
            "epochs": POSITIVE_INT, "batch_size": POSITIVE_INT, "lr": POSITIVE_FLOAT,
            "weight_decay": NONNEGATIVE_FLOAT, "image_size": POSITIVE_INT, "width": POSITIVE_INT,
        },
        "train": {
            # samples_per_class(_large) >= 2 and < batch_size: iaa.config.check_train_settings
            "epochs": POSITIVE_INT, "batch_size": POSITIVE_INT, "samples_per_class": POSITIVE_INT,
            "samples_per_class_large": POSITIVE_INT, "max_iterations_per_epoch": POSITIVE_INT,
            "lr": POSITIVE_FLOAT, "embedding_lr_multiplier": POSITIVE_FLOAT,
            "weight_decay": NONNEGATIVE_FLOAT, "lr_milestones": [POSITIVE_INT], "lr_gamma": POSITIVE_FLOAT,
            "embedding_dim": POSITIVE_INT, "head_hidden": NONNEGATIVE_INT, "image_size": POSITIVE_INT,
            "resize": POSITIVE_INT, "crop_scale_min": FRACTION, "val_every": POSITIVE_INT,
            "workers": NONNEGATIVE_INT, "val_class_fraction": OPEN_UNIT_INTERVAL,
            "lr_by_loss": {"": POSITIVE_FLOAT}, "loss_lr": POSITIVE_FLOAT,
            "compile": bool, "square_resize": bool, "googlenet_transform_input": bool, "amp": bool,
            "channels_last": bool,
        },
        "train.iaa": {
            "copies": NONNEGATIVE_INT, "lam": NONNEGATIVE_FLOAT, "momentum": UNIT_INTERVAL,
            "start_epoch": NONNEGATIVE_INT, "update_every": POSITIVE_INT,
            "correction_min_classes": NONNEGATIVE_INT, "k": POSITIVE_INT, "beta": NONNEGATIVE_FLOAT,
            "gamma": UNIT_INTERVAL, "tau": NONNEGATIVE_FLOAT, "sigma_m": POSITIVE_OR_INF,
            "sigma_cv": POSITIVE_OR_INF, "copies_by_loss": {"": NONNEGATIVE_INT},
            "estimation_images": NONNEGATIVE_INT, "apply_correction": bool, "sqrt_per_copy": bool,
            "minmax_sentinel": bool, "singleton_mean_zero": bool,
        },
    }[section]  # fmt: skip


def check_settings(settings: Any, section: str) -> None:
    """Refuse a ``--settings`` value outside its key's domain (:func:`settings_domains`) in one
    line naming the key: ``--settings: train.lr must be a number > 0, not -0.1``. A null
    ``samples_per_class_large`` means "unset"."""
    for key, domain in settings_domains(section).items():
        value = getattr(settings, key)
        if value is None and key == "samples_per_class_large":
            continue
        if domain is bool:
            ok, what = isinstance(value, bool), "true or false"
        elif isinstance(domain, list):
            ok, what = (
                isinstance(value, list) and all(map(domain[0].admits, value)),
                f"a list, each {domain[0].what}",
            )
        elif isinstance(domain, dict):
            (inner,) = domain.values()
            ok = isinstance(value, dict) and all(map(inner.admits, value.values()))
            what = f"a mapping, each value {inner.what}"
        else:
            ok, what = domain.admits(value), domain.what
        if not ok:
            raise IAAError(f"--settings: {section}.{key} must be {what}, not {json.dumps(value)}")
    if section == "train":
        check_settings(settings.iaa, "train.iaa")


def cmd_pretrain(a: argparse.Namespace) -> None:
    from iaa.config import PretrainSettings, parse_settings
    from iaa.pretrain import pretrain_stage

    settings = parse_settings(PretrainSettings, a.settings)
    check_settings(settings, "pretrain")
    pretrain_stage(a.manifest, a.out, settings, seed=a.seed)


def cmd_extract(a: argparse.Namespace) -> None:
    from iaa.extract import extract_stage

    extract_stage(
        a.manifest, a.backbone, a.out, benchmark=a.benchmark, image_size=a.image_size,
        resize=a.resize or a.image_size, workers=a.workers, weights=a.weights,
        allow_download=not a.no_download, square=a.square_resize, interpolation=a.interpolation,
        pooling=a.pooling, googlenet_transform_input=a.googlenet_transform_input,
        arch=a.arch, splits=tuple(a.splits) if a.splits else None,
    )  # fmt: skip


def execution_settings(settings, a: argparse.Namespace):
    """``--workers``/``--loader``/``--compile`` given on the command line win over --settings:
    the workflow hands execution settings over apart, so changing them reruns nothing."""
    import dataclasses

    given = {k: getattr(a, k) for k in ("workers", "loader", "compile") if getattr(a, k, None) is not None}
    return dataclasses.replace(settings, **given) if given else settings


def cmd_train(a: argparse.Namespace) -> None:
    from iaa.config import TrainSettings, check_train_settings, parse_settings
    from iaa.train import TrainInputs, train_stage

    settings = execution_settings(parse_settings(TrainSettings, a.settings), a)
    check_settings(settings, "train")  # each key in its domain, then the combinations:
    check_train_settings(settings, (a.method,))  # before any data is read or file written
    train_stage(
        TrainInputs(
            features=a.features,
            manifest=a.manifest,
            backbone=a.backbone,
            arch=a.arch,
            weights=a.weights,
            allow_download=not a.no_download,
            decoded_store=a.decoded_store,
        ),  # fmt: skip
        loss_name=a.loss,
        method=a.method,
        seed=a.seed,
        settings=settings,
        model_out=a.out,
        history_out=a.history,
        checkpoint_dir=a.checkpoints or a.out.parent / "checkpoints",
        selected_out=a.selected,
    )


def cmd_export(a: argparse.Namespace) -> None:
    from iaa.export import export_stage

    export_stage(
        a.model, a.out, benchmark=a.benchmark, splits=tuple(a.splits) if a.splits else None,
        selected=a.selected, out_selected=a.out_selected,
        features=a.features, manifest=a.manifest,
        image_size=a.image_size, resize=a.resize or a.image_size, workers=a.workers,
        square=a.square_resize, interpolation=a.interpolation,
    )  # fmt: skip


def cmd_index(a: argparse.Namespace) -> None:
    from iaa.index import index_stage

    index_stage(a.embeddings, a.out, split=a.split, kind=a.kind)


def cmd_search(a: argparse.Namespace) -> None:
    from iaa.search import search_stage

    search_stage(a.index, a.query, a.k, a.out, split=a.split)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from iaa.evaluate import evaluate_stage

    result = evaluate_stage(
        a.embeddings, a.out, selected=a.selected, recall_k=a.recall_k, split=a.split, nmi=not a.no_nmi,
        index=a.index, seed=a.seed, nmi_redo=a.nmi_redo,
    )  # fmt: skip
    log.info("%s", json.dumps(result, sort_keys=True))


def cmd_stats(a: argparse.Namespace) -> None:
    from iaa.stats import stats_stage

    stats_stage(
        a.embeddings, a.out, split=a.split, k=a.k, beta=a.beta, gamma=a.gamma, tau=a.tau,
        correlation_out=a.correlation, pairs=a.pairs,
    )  # fmt: skip


def cmd_report(a: argparse.Namespace) -> None:
    from iaa.report import report_stage

    report_stage(
        a.benchmark, a.metrics, a.histories, recall_k=a.recall_k, losses=a.losses,
        table_md=a.table_md, table_csv=a.table_csv, curves_png=a.curves,
        correlations=a.correlations, table1_md=a.table1_md,
    )  # fmt: skip


def cmd_compare(a: argparse.Namespace) -> None:
    from iaa.compare import compare_stage

    if not a.metrics and not a.ablation_tables:
        raise IAAError("nothing to compare: give --metrics and/or --ablation-tables")
    compare_stage(a.metrics, a.out_md, a.out_csv, ablation_tables=a.ablation_tables)
