"""SPEC 3's image transforms, the resizing filters, the preloaded path and the resized cache.

Every expected image is computed here with PIL or by hand from the geometry (pixel-edge
coordinates: output pixel x covers source [(x + offset) / scale, (x + offset + 1) / scale)).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from iaa.cli import build_parser
from iaa.data.images import eval_transform, squash, train_transform
from iaa.data.sources import ImageOptions, ImageSource
from iaa.errors import IAAError
from iaa.io import read_manifest, write_manifest
from iaa.prepare import prepare_stage
from tests.test_datasets import make_cub, make_sop

# Eight 50-px vertical stripes across a 400 x 100 image, colours far apart.
PALETTE = np.array(
    [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
        (0, 0, 0),
    ],
    dtype=np.uint8,
)
STRIPE = 50


def _stripes() -> Image.Image:
    index = np.arange(400) // STRIPE
    return Image.fromarray(np.broadcast_to(PALETTE[index], (100, 400, 3)).copy())


def _noise(size: tuple[int, int], seed: int, sigma: float = 40.0) -> Image.Image:
    """A (width, height) RGB image of white noise over a smooth field: fine detail everywhere."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    grey = 128 + 40 * np.sin(xx / 40 + yy / 55) + rng.normal(0, sigma, (h, w))
    return Image.fromarray(
        np.stack([grey, np.roll(grey, 7, 1), 255 - grey], -1).clip(0, 255).astype(np.uint8)
    )


def _smooth(size: tuple[int, int]) -> Image.Image:
    """A (width, height) RGB image without fine detail (JPEG keeps it nearly exactly)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([128 + 90 * np.sin(xx / 30), 128 + 90 * np.cos(yy / 25), xx * 255 / w], -1)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def _pixels(x: torch.Tensor | Image.Image) -> np.ndarray:
    """(H, W, 3) int array of a CHW uint8 tensor or a PIL image."""
    if isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB")).astype(np.int64)
    return x.as_subclass(torch.Tensor).permute(1, 2, 0).numpy().astype(np.int64)


def _pure(column: np.ndarray, stripe: int) -> bool:
    return bool(np.abs(column - PALETTE[stripe].astype(np.int64)).max() <= 1)


def _columns_match(out: np.ndarray, source_x: np.ndarray) -> list[int]:
    """Stripe index of each output column whose centre maps >= 3 source px from a stripe edge,
    after checking the column's pixels are that stripe's colour; the stripes seen."""
    seen = []
    for x, sx in enumerate(source_x):
        if min(sx % STRIPE, STRIPE - sx % STRIPE) < 3:
            continue  # blended by the filter across the edge
        k = int(sx // STRIPE)
        assert np.abs(out[:, x] - PALETTE[k].astype(np.int64)).max() <= 1, (x, k)
        seen.append(k)
    return sorted(set(seen))


# --------------------------------------------------------------------------- eval transform


def test_square_eval_keeps_the_whole_width_of_a_wide_image():
    out = _pixels(eval_transform(224, 256, square=True)(_stripes()))
    assert out.shape == (224, 224, 3)
    # Squashed to 256 x 256 (x scale 256/400), then a 16-px crop offset on each side.
    centres = (np.arange(224) + 16 + 0.5) * 400 / 256
    assert _columns_match(out, centres) == list(range(8))  # every stripe, the end ones too
    assert np.abs(out[:, 0] - PALETTE[0]).max() <= 1 and np.abs(out[:, 223] - PALETTE[7]).max() <= 1
    # The 0|1 edge (source x 50) lands at output 50 * 256/400 - 16 = 16 and the 6|7 edge (350)
    # at 208; the antialiased filter spans +-1 output px, so one column further on is pure.
    assert _pure(out[:, 14], 0) and _pure(out[:, 17], 1)
    assert _pure(out[:, 206], 6) and _pure(out[:, 209], 7)


def test_cub_eval_keeps_the_aspect_ratio_and_cuts_the_ends():
    out = _pixels(eval_transform(224, 256, square=False)(_stripes()))
    assert out.shape == (224, 224, 3)
    # Shorter side 100 -> 256 (scale 2.56): 1024 x 256; the crop starts at (1024 - 224) / 2 = 400,
    # so it keeps source x in [400 / 2.56, 624 / 2.56) = [156.25, 243.75): stripes 3 and 4 only.
    centres = (np.arange(224) + 400 + 0.5) / 2.56
    assert _columns_match(out, centres) == [3, 4]
    for cut in (0, 1, 2, 5, 6, 7):
        assert np.abs(out - PALETTE[cut].astype(np.int64)).max(axis=-1).min() > 60, cut
    # The 3|4 edge at source x 200 lands at output 200 * 2.56 - 400 = 112; upsampling blends
    # the two source pixels beside it, so columns 111-112 mix and 110 / 113 are pure.
    assert _pure(out[:, 110], 3) and _pure(out[:, 113], 4)
    assert not _pure(out[:, 111], 3) and not _pure(out[:, 112], 4)


# --------------------------------------------------------------------------- train transform


def test_train_crops_come_from_the_squashed_or_the_original_image():
    image = _stripes()
    for seed in range(3):  # default scale: the size is right either way
        torch.manual_seed(seed)
        assert train_transform(64, 0.16, 128)(image).shape == (3, 64, 64)
        assert train_transform(64, 0.16, None)(image).shape == (3, 64, 64)
    # crop_scale_min 1: the crop must cover the whole image at an aspect in [3/4, 4/3].
    # Squashed (128 x 128): the whole square is such a crop. Original (400 x 100): no box of
    # area 40,000 fits, and torchvision falls back to the central box of aspect 4/3 clamped
    # to the height: 133 x 100 at x = (400 - 133) // 2 = 133.
    squashed = image.resize((128, 128), Image.Resampling.BILINEAR).resize((64, 64), Image.Resampling.BILINEAR)
    centre = image.crop((133, 0, 266, 100)).resize((64, 64), Image.Resampling.BILINEAR)
    for square_resize, expected in ((128, squashed), (None, centre)):
        want = _pixels(expected)
        for seed in range(4):  # the flip is random: either orientation, nothing else
            torch.manual_seed(seed)
            got = _pixels(train_transform(64, 1.0, square_resize)(image))
            assert np.array_equal(got, want) or np.array_equal(got, want[:, ::-1]), (square_resize, seed)
    assert not np.array_equal(_pixels(squashed), _pixels(centre))


# --------------------------------------------------------------------------- filters


def test_lanczos_and_bilinear_are_pils_own_filters():
    image = _noise((300, 200), seed=1)
    outs = {}
    for name, pil in (("bilinear", Image.Resampling.BILINEAR), ("lanczos", Image.Resampling.LANCZOS)):
        outs[name] = _pixels(eval_transform(224, 256, square=True, interpolation=name)(image))
        want = _pixels(image.resize((256, 256), pil).crop((16, 16, 240, 240)))
        assert np.array_equal(outs[name], want), name
        torch.manual_seed(0)
        got = _pixels(train_transform(64, 1.0, 128, interpolation=name)(image))
        want = _pixels(image.resize((128, 128), pil).resize((64, 64), pil))
        assert np.array_equal(got, want) or np.array_equal(got, want[:, ::-1]), name
    assert np.abs(outs["bilinear"] - outs["lanczos"]).mean() > 1.0  # high frequencies: filters differ


def test_unknown_interpolation_is_one_line():
    for build in (
        lambda: eval_transform(224, 256, interpolation="bicubic"),
        lambda: train_transform(224, 0.16, 256, interpolation="bicubic"),
    ):
        with pytest.raises(
            IAAError, match="unknown interpolation 'bicubic'; expected one of bilinear, lanczos"
        ):
            build()


def test_image_cli_options_parse():
    parser = build_parser()
    base = ["--manifest", "m", "--out", "o", "--benchmark", "cub200"]
    a = parser.parse_args(["extract", *base])
    assert a.square_resize is True and a.interpolation == "bilinear"
    a = parser.parse_args(
        ["export", "--model", "x", *base, "--no-square-resize", "--interpolation", "lanczos"]
    )
    assert a.square_resize is False and a.interpolation == "lanczos"
    a = parser.parse_args(
        ["prepare", "cub200", "--out", "o", "--no-cache-square", "--cache-interpolation", "lanczos"]
    )
    assert a.cache_square is False and a.cache_interpolation == "lanczos"
    assert parser.parse_args(["prepare", "cub200", "--out", "o"]).cache_square is True


# --------------------------------------------------------------------------- preloaded path


def _manifest(tmp_path: Path, sizes: list[tuple[int, int]]) -> Path:
    paths = []
    for i, size in enumerate(sizes):
        paths.append(f"img_{i}.png")
        _noise(size, seed=10 + i).save(tmp_path / paths[-1])
    frame = pd.DataFrame({"path": paths, "label": 0, "split": "train", "class_name": "a"})
    out = tmp_path / "manifest.parquet"
    write_manifest(out, frame, root=tmp_path)
    return out


def _eval_all(source: ImageSource) -> torch.Tensor:
    return torch.cat([x.as_subclass(torch.Tensor) for x, _ in source.eval_batches(4)])


@pytest.mark.parametrize("interpolation", ["bilinear", "lanczos"])
def test_preloaded_square_eval_equals_the_dataloader_path(tmp_path, interpolation):
    manifest = read_manifest(_manifest(tmp_path, [(60, 40), (40, 70), (33, 33), (90, 50), (48, 48)]))
    opts = dict(image_size=24, resize=32, square=True, interpolation=interpolation)
    preloaded = ImageSource(manifest, ("train",), ImageOptions(**opts, preload=True))
    streamed = ImageSource(manifest, ("train",), ImageOptions(**opts, preload=False))
    assert preloaded.images is not None and streamed.images is None
    got, want = _eval_all(preloaded), _eval_all(streamed)
    assert got.shape == want.shape == (5, 3, 24, 24) and got.dtype == want.dtype == torch.uint8
    assert (got.int() - want.int()).abs().max() <= 1
    # The centre crop of the 32 x 32 squash, by hand with PIL.
    image = Image.open(manifest.root / "img_0.png")
    by_hand = _pixels(squash(32, interpolation)(image).crop((4, 4, 28, 28)))
    assert np.abs(_pixels(got[0]) - by_hand).max() <= 1
    batch, idx = next(preloaded.train_batches([torch.tensor([0, 3])]))
    assert batch.shape == (2, 3, 24, 24) and idx.tolist() == [0, 3]


def test_cub_images_are_not_preloaded_unless_square(tmp_path):
    wide = read_manifest(_manifest(tmp_path, [(60, 40), (40, 40)]))
    opts = ImageOptions(24, 32, square=False, preload=True)
    assert ImageSource(wide, ("train",), opts).images is None  # training must crop the originals
    square_dir = tmp_path / "square"
    square_dir.mkdir()
    squares = read_manifest(_manifest(square_dir, [(40, 40), (50, 50)]))
    preloaded = ImageSource(squares, ("train",), opts)
    assert preloaded.images is not None
    streamed = ImageSource(squares, ("train",), ImageOptions(24, 32, square=False, preload=False))
    assert (_eval_all(preloaded).int() - _eval_all(streamed).int()).abs().max() <= 1


def test_unknown_interpolation_fails_before_decoding(tmp_path):
    manifest = read_manifest(_manifest(tmp_path, [(40, 40)]))
    with pytest.raises(IAAError, match="unknown interpolation 'nearest'"):
        ImageSource(manifest, ("train",), ImageOptions(24, 32, interpolation="nearest"))


# --------------------------------------------------------------------------- resized cache


def _crop(image: Image.Image, box: tuple[int, int, int, int], full: tuple[int, int]) -> np.ndarray:
    """The crop ``box`` (top, left, height, width, in ``full`` = (W, H) pixels) of ``image``,
    scaled to image's own size, resized to 224 x 224 (what RandomResizedCrop does)."""
    top, left, h, w = box
    sx, sy = image.width / full[0], image.height / full[1]
    area = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    return _pixels(image.resize((224, 224), Image.Resampling.BILINEAR, box=area))


def test_cub_cache_keeps_crops_as_sharp_as_the_original(tmp_path, caplog):
    folder = make_cub(tmp_path / "data")
    rel = "images/001.Bird_1/Bird_1_0.jpg"
    _noise((500, 375), seed=3).save(folder / rel, quality=95)
    original = Image.open(folder / rel).convert("RGB")
    out, cache = tmp_path / "m.parquet", tmp_path / "cache"
    with caplog.at_level(logging.INFO):
        prepare_stage(
            "cub200", out, root=tmp_path / "data", workers=2, resized_cache=cache, cache_square=False
        )
    assert any("no resized cache" in r.getMessage() for r in caplog.records)
    manifest = read_manifest(out)
    stored = Image.open(manifest.root / rel).convert("RGB")  # what training will read
    tolerance = 3.0  # grey levels, mean absolute difference
    torch.manual_seed(0)
    for _ in range(3):  # small crops: the ones a downscaled copy blurs most
        box = RandomResizedCrop.get_params(original, scale=(0.16, 0.25), ratio=(3 / 4, 4 / 3))
        want = _crop(original, box, original.size)
        assert np.abs(_crop(stored, box, original.size) - want).mean() <= tolerance
        # The old cache: shorter side 375 -> 256 (500 -> 341); the same box is visibly blurrier.
        old = original.resize((341, 256), Image.Resampling.LANCZOS)
        assert np.abs(_crop(old, box, original.size) - want).mean() > tolerance


@pytest.mark.parametrize(
    ("interpolation", "pil"), [("bilinear", Image.Resampling.BILINEAR), ("lanczos", Image.Resampling.LANCZOS)]
)
def test_square_cache_stores_the_squashed_image(tmp_path, interpolation, pil):
    folder = make_sop(tmp_path / "data")
    rel = "bicycle_final/1001_0.JPG"
    _smooth((500, 375)).save(folder / rel, format="JPEG", quality=95)
    original = Image.open(folder / rel).convert("RGB")
    out, cache = tmp_path / "m.parquet", tmp_path / "cache"
    prepare_stage(
        "sop", out, root=tmp_path / "data", workers=2, resized_cache=cache, cache_interpolation=interpolation
    )
    manifest = read_manifest(out)
    assert manifest.root == cache.resolve()
    stored = Image.open(manifest.root / rel).convert("RGB")
    assert stored.size == (256, 256)
    want = _pixels(original.resize((256, 256), pil))
    assert np.abs(_pixels(stored) - want).mean() <= 1.5  # JPEG noise only
    # The pipeline's own squash to 256 x 256 leaves the cached copy as it is.
    assert np.array_equal(_pixels(squash(256, interpolation)(stored)), _pixels(stored))
