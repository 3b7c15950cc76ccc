"""The decoded-image store (iaa.data.decoded_store), its loader and the ``decode`` stage.

Pixels are checked against the JPEG path's own decoding (``load_rgb`` then ``squash_image``,
which equals torchvision's squash: tests/test_decoded_cache.py), row by row in manifest order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import iaa.data.store_writer as ds
from iaa.data.cache_loader import CacheLoader
from iaa.data.decoded_store import DecodedStore, StaleStoreError, StoreMissingError
from iaa.data.images import load_rgb, squash_image
from iaa.data.store_writer import write_store
from iaa.decode import decode_stage, register
from iaa.errors import IAAError
from iaa.io import write_manifest
from tests.registered_cli import registered_parser

SIZE = 16
# (width, height, mode, format): shrunk, enlarged, already square, odd modes, mixed sizes
IMAGES = [
    (30, 20, "RGB", "PNG"),
    (10, 23, "RGB", "PNG"),
    (16, 16, "RGB", "PNG"),
    (25, 12, "L", "PNG"),
    (17, 31, "RGBA", "PNG"),
    (32, 24, "RGB", "JPEG"),
]


def _write_image(path: Path, width: int, height: int, mode: str, fmt: str, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)


def _dataset(root: Path, count: int = len(IMAGES)) -> Path:
    """``count`` images (IMAGES cycled) under ``root/images``, in train and test; the manifest."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        w, h, mode, fmt = IMAGES[i % len(IMAGES)]
        name = f"images/{i:03d}.{fmt.lower()}"
        _write_image(root / name, w, h, mode, fmt, seed=i)
        rows.append({"path": name, "label": i % 3, "split": "train" if i % 2 else "test", "class_name": "c"})
    manifest = root / "manifest.parquet"
    write_manifest(manifest, pd.DataFrame(rows), root)
    return manifest


def _rewrite_manifest(manifest: Path, frame: pd.DataFrame) -> None:
    write_manifest(manifest, frame, manifest.parent)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "data")


@pytest.mark.parametrize("interpolation", ["bilinear", "lanczos"])
def test_square_rows_equal_squashed_manifest_rows(data: Path, tmp_path: Path, interpolation: str) -> None:
    out = write_store(
        data, tmp_path / "store", resize=SIZE, square=True, interpolation=interpolation, threads=2
    )
    store = DecodedStore.open(out, data, resize=SIZE, square=True, interpolation=interpolation)
    frame = pd.read_parquet(data)
    assert len(store) == len(frame)
    for i, rel in enumerate(frame["path"]):
        expected = np.asarray(squash_image(load_rgb(data.parent / rel), SIZE, interpolation))
        np.testing.assert_array_equal(store.image(i), expected)
    rows = np.array([4, 0, 5, 0, 2])
    images, heights, widths = store.gather(rows)
    assert images.shape == (5, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert heights.tolist() == [SIZE] * 5 and widths.tolist() == [SIZE] * 5
    for b, r in enumerate(rows):
        np.testing.assert_array_equal(images[b].permute(1, 2, 0).numpy(), store.image(int(r)))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rows"] == len(frame) and meta["square"] and meta["resize"] == SIZE
    assert meta["total_bytes"] == sum(p.stat().st_size for p in out.iterdir() if p.name != "meta.json")


def test_not_square_rows_are_the_originals_padded_in_a_batch(data: Path, tmp_path: Path) -> None:
    out = write_store(
        data, tmp_path / "store", resize=SIZE, square=False, interpolation="bilinear", threads=2
    )
    store = DecodedStore.open(out, data, square=False)
    frame = pd.read_parquet(data)
    originals = [np.asarray(load_rgb(data.parent / rel)) for rel in frame["path"]]
    for i, original in enumerate(originals):
        np.testing.assert_array_equal(store.image(i), original)
    rows = torch.tensor([1, 4, 0, 1])
    buf = torch.full((20_000,), 7, dtype=torch.uint8)  # dirty: padding must be zeroed
    images, heights, widths = store.gather(rows, out=buf)
    hmax = max(originals[r].shape[0] for r in rows.tolist())
    wmax = max(originals[r].shape[1] for r in rows.tolist())
    assert images.shape == (4, 3, hmax, wmax)
    assert images.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()
    for b, r in enumerate(rows.tolist()):
        h, w = originals[r].shape[:2]
        assert (heights[b].item(), widths[b].item()) == (h, w)
        np.testing.assert_array_equal(images[b, :, :h, :w].permute(1, 2, 0).numpy(), originals[r])
        assert int(images[b, :, h:, :].sum()) == 0 and int(images[b, :, :, w:].sum()) == 0
    with pytest.raises(ValueError, match="needs"):
        store.gather(rows, out=torch.empty(10, dtype=torch.uint8))
    with pytest.raises(IndexError, match="out of range"):
        store.gather([len(store)])


def _refusal(fn) -> str:
    with pytest.raises(StaleStoreError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and "iaa decode --manifest" in message
    return message


def test_changed_manifest_is_refused_in_one_line(data: Path, tmp_path: Path) -> None:
    out = write_store(data, tmp_path / "store", resize=SIZE, square=True, interpolation="bilinear", threads=1)
    frame = pd.read_parquet(data)
    open_ = lambda **kw: DecodedStore.open(out, data, **kw)  # noqa: E731
    open_(resize=SIZE, square=True, interpolation="bilinear")
    assert "resize 16, 32 was asked" in _refusal(lambda: open_(resize=32))
    assert "interpolation" in _refusal(lambda: open_(interpolation="lanczos"))
    assert "square=False" in _refusal(lambda: open_(square=False))

    _rewrite_manifest(data, frame.iloc[::-1])  # rows reordered
    assert "reordered" in _refusal(open_)
    extra = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    _rewrite_manifest(data, extra)  # a row added
    assert f"{len(frame)} rows, the manifest {len(frame) + 1}" in _refusal(open_)
    relabelled = frame.assign(label=frame["label"] + 1)
    _rewrite_manifest(data, relabelled)  # same paths, file rewritten
    assert "rewritten" in _refusal(open_)

    _rewrite_manifest(data, frame)
    DecodedStore.open(out, data)  # identical content again: accepted
    with open(out / "pixels.npy", "ab") as f:  # a file of the store changed size
        f.write(b"\0")
    assert "file sizes" in _refusal(open_)
    shutil.rmtree(out)
    with pytest.raises(StoreMissingError, match="no decoded store"):
        open_()


def test_too_small_disk_fails_before_writing(data: Path, tmp_path: Path, monkeypatch) -> None:
    def tiny(path):
        return shutil._ntuple_diskusage(total=10**6, used=10**6 - 1000, free=1000)

    monkeypatch.setattr(ds.shutil, "disk_usage", tiny)
    decoded = []
    monkeypatch.setattr(ds, "load_rgb", lambda p: decoded.append(p) or load_rgb(p))
    parent = tmp_path / "stores"
    parent.mkdir()
    with pytest.raises(IAAError) as info:
        write_store(data, parent / "store", resize=SIZE, square=True, interpolation="bilinear")
    message = str(info.value)
    assert "\n" not in message and "1000 B free" in message and str(parent) in message
    assert not decoded and list(parent.iterdir()) == []


def test_failure_mid_write_leaves_no_folder(data: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []

    def failing(path: Path):
        calls.append(path)
        if len(calls) == 4:
            raise IAAError(f"image cannot be decoded: {path}")
        return load_rgb(path)

    monkeypatch.setattr(ds, "load_rgb", failing)
    parent = tmp_path / "stores"
    parent.mkdir()
    with pytest.raises(IAAError, match="cannot be decoded"):
        write_store(data, parent / "store", resize=SIZE, square=True, interpolation="bilinear", threads=2)
    assert list(parent.iterdir()) == []

    # an existing store survives a failed rebuild untouched
    monkeypatch.setattr(ds, "load_rgb", load_rgb)
    write_store(data, parent / "store", resize=SIZE, square=True, interpolation="bilinear", threads=1)
    calls.clear()
    monkeypatch.setattr(ds, "load_rgb", failing)
    with pytest.raises(IAAError):
        write_store(data, parent / "store", resize=SIZE, square=True, interpolation="lanczos", threads=1)
    assert [p.name for p in parent.iterdir()] == ["store"]
    DecodedStore.open(parent / "store", data, interpolation="bilinear")


def test_loader_yields_the_batches_asked_for_in_order(data: Path, tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "many", count=40)
    out = write_store(manifest, tmp_path / "store", resize=SIZE, square=True, interpolation="bilinear")
    store = DecodedStore.open(out, manifest)
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, 40, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g) for _ in range(25)
    ]
    got = list(CacheLoader(store, iter(batches), "cpu", prefetch=2))
    assert len(got) == len(batches)
    for (images, heights, widths, idx), asked in zip(got, batches):
        assert torch.equal(idx, asked)
        expected, _, _ = store.gather(asked)
        assert torch.equal(images, expected) and heights.shape == widths.shape == asked.shape


def test_loader_propagates_a_read_error_and_stops_when_closed(data: Path, tmp_path: Path) -> None:
    out = write_store(data, tmp_path / "store", resize=SIZE, square=True, interpolation="bilinear")
    store = DecodedStore.open(out, data)

    class Broken:
        def __init__(self) -> None:
            self.pixels = store.pixels
            self.calls = 0

        def __getattr__(self, name):
            return getattr(store, name)

        def gather(self, rows, out=None):
            self.calls += 1
            if self.calls == 3:
                raise OSError("Input/output error reading pixels.npy")
            return store.gather(rows, out)

    loader = CacheLoader(Broken(), [torch.tensor([i]) for i in range(6)], "cpu")
    it = iter(loader)
    assert next(it)[3].tolist() == [0] and next(it)[3].tolist() == [1]
    with pytest.raises(OSError, match="Input/output error"):
        next(it)

    drawn = []

    def endless():
        i = 0
        while True:
            drawn.append(i)
            yield torch.tensor([i % len(store)])
            i += 1

    it = iter(CacheLoader(store, endless(), "cpu", prefetch=2))
    next(it)
    it.close()  # the thread stops: the sampler is drawn no further
    settled = len(drawn)
    assert settled <= 2 + 3
    import time

    time.sleep(0.3)
    assert len(drawn) == settled


def _parser():
    return registered_parser(register)


def test_decode_cli_writes_keeps_and_rebuilds(data: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "store"
    argv = ["decode", "--manifest", str(data), "--out", str(out), "--resize", str(SIZE)]
    args = _parser().parse_args([*argv, "--no-square", "--interpolation", "lanczos"])
    assert (args.square, args.interpolation, args.resize, args.decode_threads) == (
        False,
        "lanczos",
        SIZE,
        None,
    )
    args = _parser().parse_args(argv)
    assert (args.square, args.interpolation) == (True, "bilinear")
    caplog.set_level(logging.INFO)
    args.func(args)
    assert DecodedStore.open(out, data, resize=SIZE, square=True, interpolation="bilinear")
    written = (out / "meta.json").stat().st_mtime_ns
    caplog.clear()
    args.func(args)
    assert "up to date" in caplog.text and (out / "meta.json").stat().st_mtime_ns == written
    caplog.clear()
    args = _parser().parse_args([*argv, "--interpolation", "lanczos"])
    args.func(args)
    assert "rebuilding" in caplog.text
    assert DecodedStore.open(out, data, interpolation="lanczos")
    # an image rewritten since: rebuilt by the stage
    first = data.parent / pd.read_parquet(data)["path"][0]
    _write_image(first, 30, 20, "RGB", "PNG", seed=99)
    caplog.clear()
    decode_stage(data, out, resize=SIZE, square=True, interpolation="lanczos", threads=1)
    assert f"image {first} was rewritten since the store was written" in caplog.text
    np.testing.assert_array_equal(
        DecodedStore.open(out, data).image(0), np.asarray(squash_image(load_rgb(first), SIZE, "lanczos"))
    )
    with pytest.raises(SystemExit):
        _parser().parse_args([*argv, "--interpolation", "cubic"])


def _rewrite_in_place(image: Path) -> None:
    """Another picture under the same name, its mtime surely different from the recorded one."""
    before = image.stat()
    _write_image(image, 30, 20, "RGB", "PNG", seed=1234)
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


def test_an_image_rewritten_after_decoding_is_refused_naming_it(data: Path, tmp_path: Path) -> None:
    out = write_store(data, tmp_path / "store", resize=SIZE, square=True, interpolation="bilinear", threads=1)
    stats = np.load(out / "image_stats.npy")
    assert stats.shape == (len(IMAGES), 2) and json.loads((out / "meta.json").read_text())["format"] == 2
    DecodedStore.open(out, data, check_images=True)  # unchanged: accepted
    rewritten = data.parent / pd.read_parquet(data)["path"][2]
    _rewrite_in_place(rewritten)
    message = _refusal(lambda: DecodedStore.open(out, data, check_images=True))
    assert f"image {rewritten} was rewritten since the store was written" in message
    assert "--resize 16 --square --interpolation bilinear" in message
    DecodedStore.open(out, data)  # without the check (nothing else changed): opened
    rewritten.unlink()
    assert f"image {rewritten} is missing" in _refusal(
        lambda: DecodedStore.open(out, data, check_images=True)
    )


def test_a_format_1_store_is_refused_with_the_rebuild_command(data: Path, tmp_path: Path) -> None:
    out = write_store(data, tmp_path / "store", resize=SIZE, square=True, interpolation="lanczos", threads=1)
    meta = json.loads((out / "meta.json").read_text())
    meta["format"] = 1  # as written before image_stats.npy existed
    (out / "meta.json").write_text(json.dumps(meta))
    message = _refusal(lambda: DecodedStore.open(out, data, check_images=True))
    assert "format 1, this version reads 2" in message and "--interpolation lanczos" in message


def test_leftovers_of_a_killed_decode_are_removed_and_nothing_else(
    data: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    parent = tmp_path / "stores"
    parent.mkdir()
    planted = parent / ".store.a943vu1q.tmp"  # mkdtemp's name for the temporary folder
    planted.mkdir()
    (planted / "pixels.npy").write_bytes(b"\0" * 5000)
    aside = parent / ".store.x_7k2m9p.old"  # an old store moved aside, the rename done
    (aside / "store").mkdir(parents=True)
    (aside / "store" / "pixels.npy").write_bytes(b"\0" * 100)
    kept = [
        parent / ".store.a943vu1.tmp",  # 7 random characters: not mkdtemp's
        parent / ".store2.a943vu1q.tmp",  # another output's
        parent / ".store.a943vu1q.tmp.bak",
        parent / "store.a943vu1q.tmp",
        parent / ".store.A943VU1Q.tmp",
    ]
    for path in kept:
        path.write_text("x")
    seen = []
    check_space = ds._check_space
    monkeypatch.setattr(ds, "_check_space", lambda *a: seen.append(planted.exists()) or check_space(*a))
    caplog.set_level(logging.INFO)
    write_store(data, parent / "store", resize=SIZE, square=True, interpolation="bilinear", threads=1)
    assert seen == [False]  # removed before the free-space check
    assert sorted(parent.iterdir()) == sorted([parent / "store", *kept])
    assert f"removed leftover {planted} (4.9 KiB) from an interrupted run" in caplog.text
    assert f"removed leftover {aside} (100 B) from an interrupted run" in caplog.text
    # the stage removes them also when the store is up to date
    planted.mkdir()
    decode_stage(data, parent / "store", resize=SIZE, square=True, interpolation="bilinear", threads=1)
    assert "up to date" in caplog.text and not planted.exists()


# `python -c SLOW_DECODE <iaa arguments>`: iaa's own main(), each image's decoding slowed.
SLOW_DECODE = """
import sys, time
import iaa.data.store_writer as w
load = w.load_rgb
w.load_rgb = lambda path: (time.sleep(0.3), load(path))[1]
from iaa.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_decode_leaves_no_temporary(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", count=40)
    parent = tmp_path / "stores"
    cmd = [sys.executable, "-c", SLOW_DECODE, "decode", "--decode-threads", "1", "--manifest", str(data),
           "--out", str(parent / "store"), "--resize", str(SIZE)]  # fmt: skip
    log = tmp_path / "log.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 60
        while not list(parent.glob(".store.*.tmp")):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no temporary folder within 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert returncode == -signal.SIGTERM, log.read_text()  # died of the signal: 143 in a shell
    assert list(parent.iterdir()) == []
    assert "received SIGTERM: decode stopped; its temporary files are removed" in log.read_text()
