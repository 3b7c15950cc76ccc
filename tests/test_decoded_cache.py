"""The decoded-image cache (iaa.data.decoded_cache) and the torchvision-free preload path.

The reference for every pixel is torchvision's own transform, ``Compose([squash, ToImage])``
as the preload path ran it before it stopped importing torchvision, and PIL's ``resize``
called by hand; the cache must give those bytes whether it is cold, warm or damaged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import iaa.data.sources as sources_module
from iaa.data.decoded_cache import _exclusive, cache_key, cached_decode, default_cache_dir
from iaa.data.images import load_rgb, squash, squash_image
from iaa.data.sources import ImageOptions, ImageSource, _decode_all
from iaa.io import read_manifest, write_manifest

INTERPOLATIONS = ["bilinear", "lanczos"]
PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}
# (width, height, mode, format): shrunk, enlarged, already square at the target, odd modes.
IMAGES = [
    (60, 40, "RGB", "PNG"),
    (20, 45, "RGB", "PNG"),
    (24, 24, "RGB", "PNG"),
    (90, 50, "L", "PNG"),
    (33, 61, "RGBA", "PNG"),
    (70, 70, "P", "PNG"),
    (64, 48, "RGB", "JPEG"),
]
SIZE = 24


def _write_image(path: Path, width: int, height: int, mode: str, fmt: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "P":
        image = image.quantize(64)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)


def _dataset(root: Path, count: int | None = None) -> Path:
    """Images of IMAGES (cycled to ``count``) under ``root``, all in split "train"; the manifest."""
    specs = IMAGES if count is None else [IMAGES[i % len(IMAGES)] for i in range(count)]
    rows = []
    for i, (w, h, mode, fmt) in enumerate(specs):
        name = f"img_{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
        _write_image(root / name, w, h, mode, fmt, seed=i)
        rows.append({"path": name, "label": i % 3, "split": "train", "class_name": f"c{i % 3}"})
    out = root / "manifest.parquet"
    write_manifest(out, pd.DataFrame(rows), root=root)
    return out


def _torchvision_decode(files: list[Path], size: int, interpolation: str) -> torch.Tensor:
    """The preload path as it was: torchvision's squash then ToImage, image by image."""
    prepare = v2.Compose([squash(size, interpolation), v2.ToImage()])
    return torch.stack([prepare(load_rgb(p)).as_subclass(torch.Tensor) for p in files])


class _CountingLoads:
    """Stands in for ``sources.load_rgb``, counting the images decoded."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> Image.Image:
        self.calls += 1
        return load_rgb(path)


@pytest.fixture
def counted(monkeypatch) -> _CountingLoads:
    counter = _CountingLoads()
    monkeypatch.setattr(sources_module, "load_rgb", counter)
    return counter


# --------------------------------------------------------------------------- PIL vs torchvision


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_squash_image_gives_torchvision_squash_pixels(tmp_path, interpolation):
    _dataset(tmp_path)
    for i, (w, h, _, fmt) in enumerate(IMAGES):
        image = load_rgb(tmp_path / f"img_{i}.{'jpg' if fmt == 'JPEG' else 'png'}")
        ours = np.asarray(squash_image(image, SIZE, interpolation))
        theirs = np.asarray(squash(SIZE, interpolation)(image))
        by_hand = np.asarray(image.resize((SIZE, SIZE), PIL_FILTERS[interpolation]))
        assert ours.shape == (SIZE, SIZE, 3) and ours.dtype == np.uint8
        assert np.array_equal(ours, theirs), (w, h)
        assert np.array_equal(ours, by_hand), (w, h)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_decode_all_equals_the_torchvision_path_bit_for_bit(tmp_path, interpolation):
    manifest = read_manifest(_dataset(tmp_path))
    files = manifest.absolute_paths()
    want = _torchvision_decode(files, SIZE, interpolation)
    assert want.shape == (len(IMAGES), 3, SIZE, SIZE) and want.dtype == torch.uint8
    assert torch.equal(_decode_all(files, SIZE, interpolation), want)
    cache = tmp_path / "decoded"
    cold = _decode_all(files, SIZE, interpolation, cache)
    warm = _decode_all(files, SIZE, interpolation, cache)
    assert torch.equal(cold, want) and torch.equal(warm, want)
    assert warm.is_contiguous() and warm.dtype == torch.uint8


def test_stages_import_no_torchvision():
    code = (
        "import sys, iaa.cli, iaa.train, iaa.export, iaa.extract, iaa.pretrain; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


# --------------------------------------------------------------------------- the cache


def test_second_source_reads_the_cache(tmp_path, counted):
    manifest_path = _dataset(tmp_path, count=10)
    manifest = read_manifest(manifest_path)
    cache = default_cache_dir(manifest_path)
    assert cache == tmp_path / "decoded"
    opts = ImageOptions(20, SIZE, preload=True, cache_dir=cache)
    first = ImageSource(manifest, ("train",), opts)
    assert counted.calls == 10
    entries = sorted(cache.glob("*.npy"))
    assert len(entries) == 1
    second = ImageSource(manifest, ("train",), opts)
    assert counted.calls == 10  # nothing decoded the second time
    assert first.images is not None and second.images is not None
    assert torch.equal(first.images, second.images)
    assert np.array_equal(np.load(entries[0]), first.images.numpy())
    uncached = ImageSource(manifest, ("train",), ImageOptions(20, SIZE, preload=True))
    assert counted.calls == 20 and uncached.images is not None
    assert torch.equal(second.images, uncached.images)
    assert torch.equal(second.images, _torchvision_decode(first.files, SIZE, "bilinear"))
    # and what the sources feed the model is the same too
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(second.eval_batches(4), uncached.eval_batches(4)))


def test_the_key_follows_everything_the_pixels_depend_on(tmp_path):
    files = read_manifest(_dataset(tmp_path)).absolute_paths()
    key = cache_key(files, SIZE, "bilinear")
    assert len(key) == 64 and key == cache_key(list(files), SIZE, "bilinear")
    others = {
        cache_key(files, SIZE + 1, "bilinear"),
        cache_key(files, SIZE, "lanczos"),
        cache_key(files[::-1], SIZE, "bilinear"),
        cache_key(files[:-1], SIZE, "bilinear"),
    }
    assert key not in others and len(others) == 4
    # Same bytes, new modification time: a new key (the file may have been rewritten).
    st = os.stat(files[0])
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache_key(files, SIZE, "bilinear") != key


def test_rewriting_an_image_decodes_again(tmp_path, counted):
    manifest = read_manifest(_dataset(tmp_path))
    opts = ImageOptions(20, SIZE, preload=True, cache_dir=tmp_path / "decoded")
    before = ImageSource(manifest, ("train",), opts)
    assert counted.calls == len(IMAGES)
    target = before.files[1]
    old_mtime = os.stat(target).st_mtime_ns
    _write_image(target, 20, 45, "RGB", "PNG", seed=999)  # new pixels, same size on disk or not
    os.utime(target, ns=(old_mtime + 10**9, old_mtime + 10**9))  # whatever the clock's granularity
    after = ImageSource(manifest, ("train",), opts)
    assert counted.calls == 2 * len(IMAGES)
    assert before.images is not None and after.images is not None
    want = _torchvision_decode(after.files, SIZE, "bilinear")
    assert torch.equal(after.images, want)
    assert not torch.equal(after.images[1], before.images[1])
    assert torch.equal(after.images[0], before.images[0])
    assert len(list((tmp_path / "decoded").glob("*.npy"))) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a numpy file"),
        lambda p: p.write_bytes(p.read_bytes()[:-100]),  # truncated
        lambda p: np.save(p, np.zeros((2, 3, SIZE, SIZE), np.uint8)),  # wrong shape
        lambda p: np.save(p, np.zeros((len(IMAGES), 3, SIZE, SIZE), np.float32)),  # wrong dtype
    ],
    ids=["garbage", "truncated", "shape", "dtype"],
)
def test_a_bad_cache_file_is_replaced_with_a_warning(tmp_path, counted, caplog, damage):
    manifest = read_manifest(_dataset(tmp_path))
    opts = ImageOptions(20, SIZE, preload=True, cache_dir=tmp_path / "decoded")
    good = ImageSource(manifest, ("train",), opts).images
    (entry,) = (tmp_path / "decoded").glob("*.npy")
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="iaa.data.decoded_cache"):
        again = ImageSource(manifest, ("train",), opts).images
    assert counted.calls == 2 * len(IMAGES)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0].getMessage()
    assert "rewriting" in warnings[0].getMessage()
    assert good is not None and again is not None and torch.equal(again, good)
    assert np.array_equal(np.load(entry), good.numpy())  # rewritten, valid again
    caplog.clear()
    ImageSource(manifest, ("train",), opts)
    assert counted.calls == 2 * len(IMAGES) and not caplog.records


def test_an_unwritable_cache_warns_and_still_decodes(tmp_path, caplog):
    files = read_manifest(_dataset(tmp_path)).absolute_paths()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="iaa.data.decoded_cache"):
        got = _decode_all(files, SIZE, "bilinear", blocker / "decoded")  # cannot be a folder
    assert torch.equal(got, _torchvision_decode(files, SIZE, "bilinear"))
    assert any("cannot write" in r.getMessage() for r in caplog.records)


def test_a_wrong_decode_never_enters_the_cache(tmp_path):
    files = read_manifest(_dataset(tmp_path)).absolute_paths()
    with pytest.raises(ValueError, match="expected uint8"):
        cached_decode(files, SIZE, "bilinear", tmp_path / "c", lambda: np.zeros((1, 3, SIZE, SIZE), np.uint8))
    assert not list((tmp_path / "c").glob("*.npy"))


def test_a_job_that_waits_for_the_lock_loads_instead_of_decoding(tmp_path):
    files = read_manifest(_dataset(tmp_path)).absolute_paths()
    cache = tmp_path / "decoded"
    want = _decode_all(files, SIZE, "bilinear").numpy()
    key = cache_key(files, SIZE, "bilinear")
    decodes: list[int] = []
    result: list[np.ndarray] = []

    def decode() -> np.ndarray:
        decodes.append(1)
        return want

    def job() -> None:
        result.append(cached_decode(files, SIZE, "bilinear", cache, decode))

    with _exclusive(cache / f"{key}.lock"):  # another job is decoding these files
        waiter = threading.Thread(target=job)
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()  # blocked on the lock, not decoding
        with open(cache / f"{key}.npy", "wb") as f:
            np.save(f, want)
    waiter.join(timeout=30)
    assert not waiter.is_alive() and not decodes
    assert np.array_equal(result[0], want)
