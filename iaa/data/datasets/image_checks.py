"""Checking a dataset's images: every file must decode in full and convert to 8-bit RGB.

:func:`to_rgb` is the one conversion every loader uses (``iaa.data.images.load_rgb`` and the
resized cache, :mod:`iaa.data.datasets.resized_cache`). :func:`verify_images` decodes every
image on a thread pool and returns the bad ones; :func:`drop_bad_images` fails naming them, or
drops them with a warning (``--skip-bad-images``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError

from iaa.errors import IAAError

log = logging.getLogger(__name__)

_MISSING = "missing"
_EXAMPLES = 3  # bad files named in a message; the rest are only counted
_CHUNK = 64  # paths per pool task: enough to amortise the task overhead, small enough to balance
# PIL modes of more than 8 bits per sample that ``convert("RGB")`` clips instead of scaling
# (a 16-bit PNG would come out almost all white): 0..65535 is mapped to 0..255.
WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, the one conversion every loader uses (``iaa.data.images.load_rgb``
    and the resized cache), so no image comes out clipped or saturated.

    * RGB: unchanged. L, 1, CMYK, YCbCr, ...: PIL's own ``convert("RGB")``.
    * 16/32-bit integer (I;16, I;16B, I;16L, I;16N, I): ``round(v / 257)``, clipped to 0..255,
      i.e. 0..65535 -> 0..255 (PIL's ``convert`` clips instead: an almost white image).
    * F (float): PIL's convention, values on the 0..255 scale; rounded (PIL's ``convert``
      truncates) and clipped, NaN -> 0.
    * RGBA, LA, PA and P (with or without a transparency entry): the alpha channel is dropped
      and the stored colours are kept, as torchvision's loader (``convert("RGB")``) does; a
      palette image with transparency goes through RGBA, without PIL's warning about it.
    """
    if img.mode == "RGB":
        return img
    if img.mode in WIDE_MODES or img.mode == "F":
        values = np.asarray(img).astype(np.float64)
        if img.mode != "F":
            values /= 257.0
        gray = np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def _check_image(path: Path) -> str | None:
    """None if every pixel decodes (and converts to RGB as the loaders will), else why not.

    ``Image.verify`` reads headers only: a JPEG cut short passed it and failed later inside
    a DataLoader worker. ``load`` decodes the whole file, and PIL refuses a truncated one
    as long as ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False (:func:`verify_images` sees to it).
    """
    try:
        with Image.open(path) as img:
            img.load()
            to_rgb(img)
    except FileNotFoundError:
        return _MISSING
    except UnidentifiedImageError:  # its message repeats the whole path
        return "not an image PIL can read"
    except Exception as err:  # PIL raises many types for a damaged file; all mean "unreadable"
        return _one_line(err)
    return None


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _map_chunked(fn: Callable[[str], str | None], items: Sequence[str], threads: int) -> dict[str, str]:
    """Run ``fn`` over ``items`` on a thread pool (PIL and file I/O release the GIL); keep failures."""

    def run(chunk: Sequence[str]) -> list[tuple[str, str]]:
        return [(item, why) for item in chunk if (why := fn(item)) is not None]

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = pool.map(run, _chunks(items, _CHUNK))
        return dict(pair for chunk in results for pair in chunk)


def verify_images(folder: Path, relpaths: Sequence[str], threads: int) -> dict[str, str]:
    """Relative path -> problem ("missing" or the decoder's complaint) for each bad image.

    Every image is decoded in full, on ``threads`` threads. Should something in the process
    have set ``ImageFile.LOAD_TRUNCATED_IMAGES`` (PIL then pads a file cut short with grey),
    it is switched off for the check and restored afterwards.
    """
    tolerant = ImageFile.LOAD_TRUNCATED_IMAGES
    if tolerant:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; ignoring it while checking images")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        return _map_chunked(lambda rel: _check_image(folder / rel), relpaths, threads)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def drop_bad_images(
    frame: pd.DataFrame, problems: Mapping[str, str], name: str, folder: Path, skip: bool
) -> pd.DataFrame:
    """Fail naming the first few bad files and their count, or (``skip``) drop them with a warning."""
    if not problems:
        return frame
    missing = sorted(p for p, why in problems.items() if why == _MISSING)
    broken = sorted((p, why) for p, why in problems.items() if why != _MISSING)
    parts = []
    if missing:
        parts.append(f"{len(missing)} listed image(s) do not exist (e.g. {', '.join(missing[:_EXAMPLES])})")
    if broken:
        examples = "; ".join(f"{p}: {why}" for p, why in broken[:_EXAMPLES])
        parts.append(f"{len(broken)} image(s) cannot be read (e.g. {examples})")
    detail = " and ".join(parts)
    if not skip:
        raise IAAError(f"{name}: {detail} under {folder}; fix them or pass --skip-bad-images to drop them")
    log.warning("%s: dropping %d bad image(s) from the manifest: %s", name, len(problems), detail)
    kept = frame[~frame["path"].isin(list(problems))].reset_index(drop=True)
    empty = sorted(set(frame["split"]) - set(kept["split"]))
    if empty:
        raise IAAError(f"{name}: no readable images left in split(s) {', '.join(empty)} under {folder}")
    return kept
