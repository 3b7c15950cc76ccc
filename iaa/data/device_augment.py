"""SPEC 3's train and eval transforms for a whole batch on the batch's device, in a few tensor ops.

Two steps, each vectorised over the batch:

- :func:`sample_crop_boxes` draws RandomResizedCrop's boxes from exactly the distribution of
  ``torchvision.transforms.v2.RandomResizedCrop`` (its ``make_params``/``get_params``): all
  ``attempts`` tries of every image are drawn at once, each image keeps its first try that
  fits, and images where none fits get torchvision's central fallback crop. Only the random
  stream differs: the same generator state does not give torchvision's boxes.
- :func:`crop_resize` crops every box and resizes it to ``size`` x ``size`` with one
  ``torchvision.ops.roi_align`` call, then flips the images asked for with one ``torch.where``.

Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates of each image: pixel (row r, col c)
covers [c, c + 1) x [r, r + 1), so torchvision's crop (top i, left j, height h, width w) is the
box (j, i, j + w, i + h). ``roi_align(aligned=True)`` samples a point x of that frame at pixel
index x - 1/2, i.e. between pixel centres, which is how torchvision's resize (PIL's, and
``interpolate(align_corners=False)``) maps output pixel k of a box to ``x0 + (k + 1/2) * w / size``.

Differences from torchvision (measured in tests/test_device_augment.py):

- Enlarging (box side <= size): the same bilinear samples; inside the box the values agree to
  float rounding. Only output pixels within half a source pixel of the box edge differ:
  torchvision crops first, so its filter sees no pixel outside the box, while roi_align blends in
  the neighbouring pixel of the image (as a resize of the uncropped image would).
- Shrinking (box side > size): torchvision resizes with PIL, which antialiases with a triangle
  filter as wide as the scale factor s. roi_align instead averages ceil(s) x ceil(s) bilinear
  samples per output pixel (``sampling_ratio=-1``, chosen per box and per axis): a box filter of
  width s convolved with the bilinear tent, slightly less smoothing than PIL's for s >= 2
  and slightly more for s just above 1. Against ``iaa.data.images.eval_transform`` on 500 x 375
  and 300 x 260 images: smooth content within 0.7 grey levels (uint8 rounding); white noise of
  sigma 40 (the worst case) 0.3-3.4 grey levels on average, 99th percentile <= 20.

Pixels outside an image of a padded batch (image b occupies [0:h_b, 0:w_b]) are never part of a
box, but a bilinear sample within half a pixel of the image's right or bottom edge reads one
pixel beyond it; given ``heights``/``widths``, :func:`crop_resize` first copies each image's last
column and row into that pixel, so the edge is extended as torchvision's resize extends it.

The random draws use ``generator`` (a ``torch.Generator``) where given, on that generator's device
(CPU or the images' device; boxes then move to the images' device), else the default generator of
the images' device. torchvision is imported on the first call to :func:`crop_resize`, not here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _draw_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def sample_crop_boxes(
    heights: Tensor,
    widths: Tensor,
    *,
    scale: tuple[float, float] = (0.16, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """RandomResizedCrop boxes (B, 4) float32 ``(x0, y0, x1, y1)`` for images of ``heights`` x
    ``widths`` (B,), on ``heights``' device, from torchvision's distribution.

    For each image, ``attempts`` tries: area = U(scale) * H * W (float32 uniform, as
    torchvision draws it), aspect = exp(U(log ratio)) (float32), w = round(sqrt(area * aspect)),
    h = round(sqrt(area / aspect)) (half to even, as Python's ``round``); the first try with
    0 < w <= W and 0 < h <= H is kept and placed at top = randint(0, H - h + 1), left =
    randint(0, W - w + 1). Without one: the central crop of the whole image, narrowed to the
    nearest bound of ``ratio`` when the image's own aspect is outside it (torchvision's fallback).
    """
    device = heights.device
    b = heights.shape[0]
    draw = _draw_device(generator, device)
    hh = heights.to(draw, torch.float64)
    ww = widths.to(draw, torch.float64)
    area = (hh * ww).unsqueeze(1)  # (B, 1)
    n = max(attempts, 1)  # attempts=0: the fallback only
    frac = torch.empty(b, n, device=draw).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float32))  # float32, as torchvision's
    lr = torch.empty(b, n, device=draw).uniform_(
        log_ratio[0].item(), log_ratio[1].item(), generator=generator
    )
    aspect = lr.exp().double()  # exp in float32, then Python float arithmetic (float64)
    target = area * frac.double()
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    ok = (w > 0) & (w <= ww.unsqueeze(1)) & (h > 0) & (h <= hh.unsqueeze(1))
    ok[:, attempts:] = False
    found = ok.any(dim=1)
    first = ok.int().argmax(dim=1, keepdim=True)  # index of the first True (0 where none)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    u = torch.rand(b, 2, dtype=torch.float64, device=draw, generator=generator)
    top = (u[:, 0] * (hh - h + 1)).floor().minimum(hh - h)  # randint(0, H - h + 1)
    left = (u[:, 1] * (ww - w + 1)).floor().minimum(ww - w)

    # Fallback (no try fitted): the central crop, its aspect clamped to ``ratio``.
    lo, hi = min(ratio), max(ratio)
    in_ratio = ww / hh
    fw = torch.where(in_ratio < lo, ww, torch.where(in_ratio > hi, (hh * hi).round(), ww))
    fh = torch.where(in_ratio < lo, (ww / lo).round(), hh)
    ftop = ((hh - fh) / 2).floor()
    fleft = ((ww - fw) / 2).floor()

    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    top, left = torch.where(found, top, ftop), torch.where(found, left, fleft)
    boxes = torch.stack([left, top, left + w, top + h], dim=1)
    return boxes.to(device=device, dtype=torch.float32)


def _to_float(images: Tensor) -> Tensor:
    """uint8 -> float32 / 255; float -> float32 (the same tensor if it is float32 already)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def _extend_edges(x: Tensor, heights: Tensor, widths: Tensor) -> Tensor:
    """Column w_b of image b := column w_b - 1, then row h_b := row h_b - 1 (where inside the
    tensor), so bilinear samples near an image's edge read the edge, not padding. ``x`` is
    returned as it is when no image is smaller than the batch, else a changed copy."""
    _, _, big_h, big_w = x.shape
    hs, ws = heights.to(x.device, torch.long), widths.to(x.device, torch.long)
    cols = (ws < big_w).nonzero().squeeze(1)
    rows = (hs < big_h).nonzero().squeeze(1)
    if cols.numel() == 0 and rows.numel() == 0:  # (one sync; a same-size batch copies nothing)
        return x
    x = x.clone()
    if cols.numel():
        x[cols, :, :, ws[cols]] = x[cols, :, :, ws[cols] - 1]
    if rows.numel():
        x[rows, :, hs[rows], :] = x[rows, :, hs[rows] - 1, :]
    return x


def crop_resize(
    images: Tensor,
    boxes: Tensor,
    size: int,
    *,
    flip: Tensor | None = None,
    heights: Tensor | None = None,
    widths: Tensor | None = None,
    sampling_ratio: int = -1,
) -> Tensor:
    """Crop box b of image b (``boxes`` (B, 4) ``x0, y0, x1, y1``) and resize it to ``size`` x
    ``size``: (B, 3, size, size) float32 in [0, 1] (uint8 input is divided by 255; float input is
    taken to be in [0, 1]). One ``roi_align(aligned=True)`` call; ``sampling_ratio`` -1 averages
    ceil(box side / size) bilinear samples per output pixel and axis (see the module docstring),
    a positive value that many. ``flip`` (B,) bool: mirror those outputs left-right.
    ``heights``/``widths`` (B,): each image's extent in a padded batch (the module docstring).
    """
    from torchvision.ops import roi_align  # lazy: torchvision costs ~1.5 s to import

    x = _to_float(images)
    if heights is not None and widths is not None:
        x = _extend_edges(x, heights, widths)
    b = x.shape[0]
    index = torch.arange(b, device=x.device, dtype=torch.float32).unsqueeze(1)
    rois = torch.cat([index, boxes.to(x.device, torch.float32)], dim=1)
    out = roi_align(x, rois, (size, size), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    if flip is not None:
        out = torch.where(flip.to(out.device).view(b, 1, 1, 1), out.flip(-1), out)
    return out


def random_resized_crop_flip_device(
    images: Tensor,
    heights: Tensor,
    widths: Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.16, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip(p=1/2) of a padded batch:
    (B, 3, size, size) float32 in [0, 1], on the images' device."""
    boxes = sample_crop_boxes(heights, widths, scale=scale, ratio=ratio, generator=generator)
    draw = _draw_device(generator, images.device)
    flip = torch.rand(images.shape[0], device=draw, generator=generator) < 0.5
    return crop_resize(images, boxes, size, flip=flip, heights=heights, widths=widths)


def center_crop_boxes(heights: Tensor, widths: Tensor, *, resize: int, size: int, square: bool) -> Tensor:
    """The boxes (B, 4) float32, in each original image's pixels, whose crop-and-resize to
    ``size`` is SPEC 3's eval transform (``iaa.data.images.eval_transform``).

    ``square``: squash to resize x resize, center-crop size: the central size/resize of each side.
    Not square (CUB): the shorter side to ``resize`` (the longer to int(resize * long / short), as
    torchvision computes it), center-crop size x size. Crop offsets as torchvision's CenterCrop:
    round((resized - size) / 2), half to even. Needs size <= resize (no padding).
    """
    if size > resize:
        raise ValueError(f"center crop {size} is larger than the resize {resize}")
    hh, ww = heights.to(torch.float64), widths.to(torch.float64)
    if square:
        new_h = torch.full_like(hh, float(resize))
        new_w = new_h
    else:
        short, long = torch.minimum(hh, ww), torch.maximum(hh, ww)
        new_long = (resize * long / short).floor()
        new_h = torch.where(ww <= hh, new_long, float(resize))
        new_w = torch.where(ww <= hh, float(resize), new_long)
    top = ((new_h - size) / 2).round()
    left = ((new_w - size) / 2).round()
    sy, sx = hh / new_h, ww / new_w  # original pixels per resized pixel
    boxes = torch.stack([left * sx, top * sy, (left + size) * sx, (top + size) * sy], dim=1)
    return boxes.to(torch.float32)


def eval_crop(
    images: Tensor, heights: Tensor, widths: Tensor, *, resize: int, size: int, square: bool = True
) -> Tensor:
    """SPEC 3's eval transform of a padded batch in one roi_align call: (B, 3, size, size)
    float32 in [0, 1]. See :func:`center_crop_boxes`."""
    boxes = center_crop_boxes(heights, widths, resize=resize, size=size, square=square)
    return crop_resize(images, boxes, size, heights=heights, widths=widths)


def pad_batch(images: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Images (3, h_b, w_b) of one dtype -> (padded batch (B, 3, max h, max w), heights, widths),
    image b at [0:h_b, 0:w_b], zeros elsewhere (crop_resize extends the edges it needs)."""
    heights = torch.tensor([int(im.shape[-2]) for im in images])
    widths = torch.tensor([int(im.shape[-1]) for im in images])
    first = images[0]
    out = first.new_zeros((len(images), first.shape[0], int(heights.max()), int(widths.max())))
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out, heights, widths


__all__ = [
    "center_crop_boxes",
    "crop_resize",
    "eval_crop",
    "pad_batch",
    "random_resized_crop_flip_device",
    "sample_crop_boxes",
]
