"""Stage ``decode``: every image of a manifest decoded once into a memory-mappable store.

``iaa decode --manifest M --out DIR --resize N --square --interpolation bilinear`` writes the
store ``iaa.data.decoded_store`` describes (row ``i`` = manifest row ``i``, all splits), which
training then gathers batches from instead of decoding JPEGs. A valid store for the same
manifest and settings is kept ("up to date"); a stale one (another manifest, other settings,
images rewritten since) is rebuilt. Heavy modules are imported when the command runs.

SIGTERM (a scheduler's time limit, ``scancel``) stops it like Ctrl-C: the temporary folder
beside ``--out`` is removed before the process dies of the signal. What a SIGKILL leaves
(``.<name>.<random>.tmp``, ``.<name>.<random>.old``) is removed by the next run for the same
``--out``, each logged with its size, before the free-space check.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from iaa.atomic import exclusive_writer
from iaa.cli_args import nonnegative_int, positive_int
from iaa.preemption import clean_up_on_sigterm

log = logging.getLogger(__name__)

INTERPOLATION_CHOICES = ("bilinear", "lanczos")


@clean_up_on_sigterm("decode")
def decode_stage(
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    resize: int,
    square: bool,
    interpolation: str,
    threads: int | None,
) -> Path:
    """Write (or keep, when up to date) the decoded store of ``manifest_path`` at ``out_dir``.

    ``square``: each image squashed to ``resize`` x ``resize`` with ``interpolation``, as every
    training and evaluation pass does first; not square (CUB): the images at their own sizes
    (``resize`` and ``interpolation`` do not apply). ``threads`` decode in parallel (None or
    0: one per CPU). Returns ``out_dir``.
    """
    from iaa.data.decoded_store import DecodedStore, StaleStoreError, StoreMissingError
    from iaa.data.images import pil_filter
    from iaa.data.store_writer import remove_store_leftovers, write_store

    pil_filter(interpolation)
    out = Path(out_dir)
    with exclusive_writer(out, "decoded store"):  # one writer: a second would delete its live temporary
        remove_store_leftovers(out)  # also when the store turns out up to date
        try:
            DecodedStore.open(
                out,
                manifest_path,
                resize=resize,
                square=square,
                interpolation=interpolation,
                check_images=True,
            )
        except StoreMissingError:
            pass
        except StaleStoreError as err:
            log.info("%s: rebuilding it", err)
        else:
            log.info("decoded store %s is up to date", out)
            return out
        if not square:
            log.info("not square: images kept at their own sizes (--resize and --interpolation do not apply)")
        return write_store(
            manifest_path,
            out,
            resize=resize,
            square=square,
            interpolation=interpolation,
            threads=threads or None,
        )


def _cmd_decode(args: argparse.Namespace) -> None:
    threads = args.decode_threads if args.decode_threads is not None else getattr(args, "threads", None)
    decode_stage(
        args.manifest,
        args.out,
        resize=args.resize,
        square=args.square,
        interpolation=args.interpolation,
        threads=threads,
    )


def register(
    stage: Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser],
) -> None:
    """Add the subcommand ``decode``; ``stage(name, fn, help)`` returns its parser (iaa.cli)."""
    sp = stage(
        "decode",
        _cmd_decode,
        "decode every image of a manifest once into a memory-mapped store that training gathers from",
    )
    sp.add_argument("--manifest", type=Path, required=True, help="the manifest Parquet (prepare)")
    sp.add_argument(
        "--out", type=Path, required=True,
        help="the store's folder (pixels.npy, index.npy when not square, meta.json); replaced "
        "atomically when stale, kept when up to date",
    )  # fmt: skip
    sp.add_argument(
        "--resize", type=positive_int, default=256,
        help="side of the squashed images, in pixels (train.resize; ignored with --no-square) (default: 256)",
    )  # fmt: skip
    sp.add_argument(
        "--square", action=argparse.BooleanOptionalAction, default=True,
        help="squash every image to --resize squared (every benchmark but CUB); --no-square: keep the "
        "original sizes, for training that crops the original (CUB) (default: --square)",
    )  # fmt: skip
    sp.add_argument(
        "--interpolation", choices=INTERPOLATION_CHOICES, default="bilinear",
        help="filter of the squash, as train.interpolation (ignored with --no-square) (default: bilinear)",
    )  # fmt: skip
    sp.add_argument(
        "--decode-threads", type=nonnegative_int, default=None, metavar="N",
        help="threads decoding images, 0: one per CPU (default: the global --threads, else one per CPU)",
    )  # fmt: skip
