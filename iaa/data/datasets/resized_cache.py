"""The resized cache: copies of a dataset's images squashed to a square (256 px by default).

:func:`prepare_dataset <iaa.data.datasets.common.prepare_dataset>` builds it with
:func:`build_resized_cache` so later stages read the small files; a marker file
(:data:`CACHE_MARKER`) records the recipe (size, filter) the copies were made with. Not to be
confused with :mod:`iaa.data.decoded_cache` (decoded pixel arrays, one ``.npy`` per file list).

Each copy is written under a temporary name beside it (``.<name>.<random>.tmp``) and renamed
when complete. SIGTERM stops the build like Ctrl-C, removing the temporaries being written;
those a SIGKILL left are removed by the next build of the same cache (only temporaries of the
files it writes, each logged).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from iaa.atomic import atomic_path, exclusive_writer, remove_leftovers
from iaa.data.datasets.image_checks import _MISSING, WIDE_MODES, _map_chunked, _one_line, to_rgb
from iaa.errors import IAAError
from iaa.io import write_json
from iaa.preemption import clean_up_on_sigterm

log = logging.getLogger(__name__)

CACHE_MARKER = ".iaa-cache.json"
# The filters of ``iaa.data.images.INTERPOLATIONS``, as PIL applies them (antialiased when shrinking).
CACHE_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}


def _save_format(path: Path) -> str:
    return Image.registered_extensions().get(path.suffix.lower(), "JPEG")


def _write_atomic(dst: Path, write: Callable[[Path], None]) -> None:
    """``write`` under a temporary name beside ``dst``, renamed on success: no half-written cache files."""
    with atomic_path(dst) as tmp:
        write(tmp)


def _cache_one(src: Path, dst: Path, size: int, resample: Image.Resampling) -> str | None:
    """Squash ``src`` to ``size`` x ``size`` into ``dst`` with filter ``resample``; None on
    success or skip.

    That squash is the first step of SPEC 3's train and eval transforms on every dataset but
    CUB, so the pipeline's own resize of the cached copy is a no-op and its crops are the
    crops of the original, up to JPEG noise.
    """
    try:
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            return None
        with Image.open(src) as img:
            w, h = img.size
            if w <= size and h <= size and img.mode not in WIDE_MODES:
                # Never upscale: the pipeline squashes the original the same way; keep its bytes.
                _write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))
                return None
            if w <= size and h <= size:  # 16-bit: an 8-bit copy, the pixels load_rgb gives
                small = to_rgb(img)
                _write_atomic(dst, lambda tmp: small.save(tmp, format=_save_format(dst)))
                return None
            new = (size, size)
            img.draft(None, new)  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is still >= new
            fmt = _save_format(dst)
            # Anything else is converted as the loaders convert it (16-bit scaled, alpha dropped).
            keep = ("RGB", "L", "CMYK") if fmt == "JPEG" else ("RGB", "L")
            out = img if img.mode in keep else to_rgb(img)
            out = out.resize(new, resample)
            options = {"quality": 95} if fmt == "JPEG" else {}
            _write_atomic(dst, lambda tmp: out.save(tmp, format=fmt, **options))
    except FileNotFoundError:
        return _MISSING
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except Exception as err:  # a file whose header verified but whose pixels do not decode
        return _one_line(err)
    return None


def cache_filter(interpolation: str) -> Image.Resampling:
    """PIL's filter for a ``--cache-interpolation`` name; an unknown name is an IAAError."""
    try:
        return CACHE_FILTERS[interpolation]
    except KeyError:
        known = ", ".join(CACHE_FILTERS)
        raise IAAError(f"unknown --cache-interpolation {interpolation!r}; expected one of {known}") from None


def _cached_recipe(cache_dir: Path) -> dict | None:
    """What the cache's marker says its files are (None: no marker, or an unreadable one)."""
    try:
        recipe = json.loads((cache_dir / CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return recipe if isinstance(recipe, dict) else None


@clean_up_on_sigterm("building the resized cache")
def build_resized_cache(
    folder: Path,
    relpaths: Sequence[str],
    cache_dir: Path,
    size: int,
    threads: int,
    interpolation: str = "bilinear",
) -> dict[str, str]:
    """Write ``cache_dir/<relpath>`` for every image, squashed to ``size`` x ``size``; return
    failures (relative path -> why).

    Files already present and at least as new as their source are kept. A marker file
    records the recipe (size, squash, filter): after a change the old files would look
    fresh, so they are removed before the marker changes, and an interrupted rebuild cannot
    leave a mix (a marker of the old shorter-side caches differs too).
    """
    if size < 1:
        raise IAAError(f"--cache-size must be >= 1, got {size}")
    resample = cache_filter(interpolation)
    if cache_dir.resolve() == folder.resolve():
        raise IAAError(f"the resized cache {cache_dir} is the dataset folder itself; choose another folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_writer(cache_dir, "resized cache"):  # one writer: a second would delete its temporaries
        remove_leftovers(cache_dir / CACHE_MARKER, *(cache_dir / rel for rel in relpaths))
        recipe = {"square_side": size, "interpolation": interpolation}
        previous = _cached_recipe(cache_dir)
        if previous is not None and previous != recipe:
            log.info("resized cache %s holds %s, not %s: rebuilding", cache_dir, previous, recipe)
            _map_chunked(lambda rel: (cache_dir / rel).unlink(missing_ok=True), relpaths, threads)
        write_json(cache_dir / CACHE_MARKER, recipe)
        t0 = time.perf_counter()
        failures = _map_chunked(
            lambda rel: _cache_one(folder / rel, cache_dir / rel, size, resample), relpaths, threads
        )
        log.info(
            "resized cache %s: %d image(s), %d x %d (%s), in %.1fs",
            cache_dir,
            len(relpaths),
            size,
            size,
            interpolation,
            time.perf_counter() - t0,
        )
        return failures
