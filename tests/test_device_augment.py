"""Batched augmentation on the device (iaa.data.device_augment) against torchvision's transforms.

Crop boxes: statistics of 20,000 of our boxes against 20,000 from torchvision's own
``RandomResizedCrop.get_params``. Pixels: crops of images whose values say where they came
from, and torchvision's eval transform on the same images.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from iaa.data.augment import center_crop, random_resized_crop_flip
from iaa.data.device_augment import (
    center_crop_boxes,
    crop_resize,
    eval_crop,
    pad_batch,
    random_resized_crop_flip_device,
    sample_crop_boxes,
)
from iaa.data.images import eval_transform
from tests.test_transforms import _noise, _smooth

N = 20_000
SCALE, RATIO = (0.16, 1.0), (3 / 4, 4 / 3)
# (height, width): square; CUB's usual landscape; tall and narrow (its aspect 1/4 is outside
# RATIO, ~30% of draws end in the fallback); tiny (rounding to whole pixels dominates).
SHAPES = [(256, 256), (375, 500), (400, 100), (8, 8)]
# Two-sample KS at alpha = 0.001 for n = m = N: 1.95 * sqrt(2 / N) = 0.0195. Ours measured
# <= 0.013 on every shape and statistic; means within 1.7 standard errors.
KS_BOUND = 1.95 * math.sqrt(2 / N)
Z_BOUND = 4.0


@cache
def _torchvision_boxes(height: int, width: int) -> np.ndarray:
    """N boxes (x0, y0, x1, y1) from torchvision's RandomResizedCrop.get_params (~1-2.5 s)."""
    image = torch.empty(1, height, width)
    out = np.empty((N, 4))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for k in range(N):
            i, j, h, w = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
            out[k] = (j, i, j + w, i + h)
    return out


def _our_boxes(height: int, width: int, seed: int = 1) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    boxes = sample_crop_boxes(torch.full((N,), height), torch.full((N,), width), generator=g)
    return boxes.double().numpy()


def _old_boxes(height: int, width: int, seed: int = 2) -> np.ndarray:
    """The sampler augment.py had before: area and aspect as fractions of the image's sides,
    each side clamped to fit, a continuous centre; its boxes in pixels."""
    g = dict(generator=torch.Generator().manual_seed(seed))
    area = torch.empty(N).uniform_(*SCALE, **g)
    aspect = torch.empty(N).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), **g).exp()
    w = (area * aspect).sqrt().clamp(max=1.0)
    h = (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(N, **g) * 2 - 1) * (1 - w)
    cy = (torch.rand(N, **g) * 2 - 1) * (1 - h)
    x0, x1 = (cx - w + 1) / 2 * width, (cx + w + 1) / 2 * width
    y0, y1 = (cy - h + 1) / 2 * height, (cy + h + 1) / 2 * height
    return torch.stack([x0, y0, x1, y1], 1).double().numpy()


def _fallback_box(height: int, width: int) -> np.ndarray:
    return sample_crop_boxes(torch.tensor([height]), torch.tensor([width]), attempts=0)[0].double().numpy()


def _statistics(boxes: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    fallback = np.abs(boxes - _fallback_box(height, width)).max(1) < 1e-6
    return {
        "area": w * h / (height * width),
        "aspect": w / h,
        "centre_x": (boxes[:, 0] + boxes[:, 2]) / (2 * width),
        "centre_y": (boxes[:, 1] + boxes[:, 3]) / (2 * height),
        "fallback": fallback.astype(np.float64),
    }


def _failures(ours: np.ndarray, reference: np.ndarray, height: int, width: int) -> list[str]:
    """The statistics on which ``ours`` is not torchvision's distribution."""
    a, b = _statistics(ours, height, width), _statistics(reference, height, width)
    failed = []
    for name in a:
        se = math.sqrt(a[name].var() / N + b[name].var() / N)
        z = (
            abs(a[name].mean() - b[name].mean()) / se
            if se > 0
            else abs(a[name].mean() - b[name].mean()) * 1e9
        )
        ks = ks_2samp(a[name], b[name]).statistic if name != "fallback" else 0.0
        if z > Z_BOUND or ks > KS_BOUND:
            failed.append(f"{name}: z={z:.1f} ks={ks:.4f}")
    return failed


@pytest.mark.parametrize("shape", SHAPES)
def test_boxes_follow_torchvisions_distribution(shape):
    height, width = shape
    ours, reference = _our_boxes(height, width), _torchvision_boxes(height, width)
    assert _failures(ours, reference, height, width) == []
    # Whole pixels inside the image, as torchvision's (top, left, height, width).
    assert np.array_equal(ours, np.round(ours))
    assert (ours[:, :2] >= 0).all() and (ours[:, 2] <= width).all() and (ours[:, 3] <= height).all()
    assert (ours[:, 2] > ours[:, 0]).all() and (ours[:, 3] > ours[:, 1]).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_the_old_clamped_sampler_fails_the_same_checks(shape):
    """The checks above are sharp enough: augment.py's former sampler fails them on every shape.
    Measured (z of the mean / KS): 256x256 area 26 / 0.13; 375x500 aspect 180 / 0.50;
    400x100 area 514 / 0.80 and fallback rate 0 vs 0.30; 8x8 area 7.3 / 0.11, centre KS 0.18."""
    height, width = shape
    assert _failures(_old_boxes(height, width), _torchvision_boxes(height, width), height, width)


def test_fallback_is_torchvisions_central_crop():
    boxes = sample_crop_boxes(
        torch.tensor([400, 100, 375, 10]), torch.tensor([100, 400, 500, 10]), attempts=0
    )
    # 100 wide: h = round(100 / (3/4)) = 133, top (400 - 133) // 2; 400 wide: w = round(100 * 4/3).
    assert boxes.tolist() == [[0, 133, 100, 266], [133, 0, 266, 100], [0, 0, 500, 375], [0, 0, 10, 10]]


def test_boxes_per_image_sizes_and_generator():
    heights, widths = torch.tensor([8, 400, 375] * 2000), torch.tensor([8, 100, 500] * 2000)
    a = sample_crop_boxes(heights, widths, generator=torch.Generator().manual_seed(5))
    b = sample_crop_boxes(heights, widths, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (6000, 4)
    assert (a[:, 2] <= widths).all() and (a[:, 3] <= heights).all()
    assert (a[0::3, 2:] <= 8).all() and (a[2::3, 2] > 375).any()  # each image's own bounds


# --------------------------------------------------------------------------- pixels


def _coordinates(height: int, width: int) -> torch.Tensor:
    """(1, 3, H, W) float image: channel 0 = row, 1 = column, 2 = row * width + column."""
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1).expand(height, width)
    cols = torch.arange(width, dtype=torch.float32).view(1, -1).expand(height, width)
    return torch.stack([rows, cols, rows * width + cols]).unsqueeze(0)


def test_an_integer_box_at_its_own_size_is_the_slice():
    image = _coordinates(40, 50)
    boxes = torch.tensor([[7.0, 3.0, 27.0, 23.0], [30.0, 20.0, 50.0, 40.0]])  # 20 x 20, one at the corner
    out = crop_resize(image.expand(2, -1, -1, -1), boxes, 20, flip=torch.tensor([False, True]))
    assert torch.equal(out[0], image[0, :, 3:23, 7:27])
    assert torch.equal(out[1], image[0, :, 20:40, 30:50].flip(-1))  # the flip reverses columns


def test_a_box_maps_pixel_centres_like_torchvisions_resized_crop():
    """Enlarging a 15 x 10 box 3x: output pixel k samples x0 + (k + 1/2) * 10 / 30, as
    torchvision's resize; on a linear image the bilinear sample is that coordinate exactly."""
    image = _coordinates(40, 50)
    out = crop_resize(image, torch.tensor([[12.0, 5.0, 22.0, 20.0]]), 30)[0]
    k = torch.arange(30, dtype=torch.float32)
    want_cols = 12 + (k + 0.5) * 10 / 30 - 0.5  # pixel index = edge coordinate - 1/2
    want_rows = 5 + (k + 0.5) * 15 / 30 - 0.5
    assert torch.allclose(out[1, 0], want_cols, atol=1e-4)
    assert torch.allclose(out[0, :, 0], want_rows, atol=1e-4)


def test_enlarging_crop_equals_torchvision_inside_the_box():
    """An enlarging crop of a noise image, against torchvision's PIL resized_crop: inside the
    box only uint8 rounding differs (measured max 1.0 grey level); the outermost output pixels
    differ (measured up to 44) as torchvision's filter sees no pixel outside the box."""
    pil = _noise((500, 375), seed=3)
    x = TF.pil_to_tensor(pil).unsqueeze(0)
    i, j, h, w = 10, 20, 100, 120
    want = TF.pil_to_tensor(TF.resized_crop(pil, i, j, h, w, [224, 224], antialias=True)).float()
    got = crop_resize(x, torch.tensor([[j, i, j + w, i + h]], dtype=torch.float32), 224)[0] * 255
    assert (got - want).abs()[:, 2:-2, 2:-2].max() <= 1.0


def test_square_eval_of_a_squashed_image_is_the_existing_center_crop():
    x = torch.randint(0, 256, (3, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    n = torch.full((3,), 256)
    got = eval_crop(x, n, n, resize=256, size=224, square=True)
    assert torch.equal(got, center_crop(x, 224).float() / 255)


@pytest.mark.parametrize("square", [True, False])
def test_eval_matches_torchvisions_eval_transform(square):
    """One roi_align call against iaa.data.images.eval_transform (PIL, antialiased) on 500 x 375
    and 300 x 260 images. Smooth: measured max 0.7 grey levels (uint8 rounding). White noise
    (sigma 40, the worst case for the filter difference): measured mean 0.3-3.4, 99th percentile
    <= 20 grey levels (roi_align averages ceil(s) bilinear samples, PIL a triangle of width s)."""
    transform = eval_transform(224, 256, square=square)
    for size in [(500, 375), (300, 260)]:
        for pil, mean_bound, p99_bound in [(_smooth(size), 0.5, 1.0), (_noise(size, seed=3), 4.0, 22.0)]:
            want = transform(pil).as_subclass(torch.Tensor).float()
            x = TF.pil_to_tensor(pil).unsqueeze(0)
            got = eval_crop(
                x, torch.tensor([size[1]]), torch.tensor([size[0]]), resize=256, size=224, square=square
            )
            diff = (got[0] * 255 - want).abs()
            assert diff.mean() <= mean_bound and diff.flatten().quantile(0.99) <= p99_bound


def test_center_crop_boxes_follow_torchvisions_integer_sizes():
    # CUB: 500 x 375 -> shorter side 256, longer int(256 * 500 / 375) = 341; crop left round(117/2) = 58.
    box = center_crop_boxes(torch.tensor([375]), torch.tensor([500]), resize=256, size=224, square=False)[0]
    assert torch.allclose(
        box, torch.tensor([58 * 500 / 341, 16 * 375 / 256, 282 * 500 / 341, 240 * 375 / 256])
    )
    box = center_crop_boxes(torch.tensor([100]), torch.tensor([60]), resize=256, size=224, square=True)[0]
    assert torch.allclose(box, torch.tensor([16 * 60 / 256, 16 * 100 / 256, 240 * 60 / 256, 240 * 100 / 256]))


def test_mixed_sizes_in_one_padded_batch_crop_each_image():
    images = [
        TF.pil_to_tensor(_noise((60, 40), seed=1)),
        TF.pil_to_tensor(_noise((33, 70), seed=2)),
        TF.pil_to_tensor(_noise((50, 50), seed=3)),
    ]
    batch, heights, widths = pad_batch(images)
    assert (
        batch.shape == (3, 3, 70, 60) and heights.tolist() == [40, 70, 50] and widths.tolist() == [60, 33, 50]
    )
    # Boxes reaching each image's right and bottom edges, enlarged and shrunk.
    boxes = torch.tensor([[10.0, 5.0, 60.0, 40.0], [3.0, 20.0, 33.0, 70.0], [0.0, 0.0, 50.0, 50.0]])
    for size in (24, 80):
        got = crop_resize(batch, boxes, size, heights=heights, widths=widths)
        for b, image in enumerate(images):
            alone = crop_resize(image.unsqueeze(0), boxes[b : b + 1], size)
            assert torch.allclose(got[b], alone[0], atol=1e-6)
        # Without the extents, samples within half a pixel of an edge read the zero padding.
        unextended = crop_resize(batch, boxes, size)
        assert not torch.allclose(unextended[:2], got[:2], atol=1e-3)
    got = eval_crop(batch, heights, widths, resize=32, size=24, square=False)
    for b, image in enumerate(images):
        alone = eval_crop(
            image.unsqueeze(0), heights[b : b + 1], widths[b : b + 1], resize=32, size=24, square=False
        )
        assert torch.allclose(got[b], alone[0], atol=1e-6)
    out = random_resized_crop_flip_device(
        batch, heights, widths, 24, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (3, 3, 24, 24) and out.dtype == torch.float32


def test_preload_random_resized_crop_flip():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = random_resized_crop_flip(x, 24, generator=torch.Generator().manual_seed(2))
    b = random_resized_crop_flip(x.float() / 255, 24, generator=torch.Generator().manual_seed(2))
    assert a.shape == (16, 3, 24, 24) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6) and a.min() >= 0 and a.max() <= 1
    c = random_resized_crop_flip(x, 24, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(a, c)
