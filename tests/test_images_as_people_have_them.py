"""Images as people have them (issue 12): cut-short JPEGs, 16-bit PNGs, transparency, EXIF.

Expected pixels are computed here independently of the code under test (``round(v * 255 /
65535)`` for 16-bit values), and the damaged files are made the way they happen: a valid
JPEG whose bytes stop half-way.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from iaa.data.datasets import READERS
from iaa.data.datasets import image_checks as image_checks_module
from iaa.data.datasets.image_checks import to_rgb, verify_images
from iaa.data.images import load_rgb
from iaa.errors import IAAError
from iaa.io import read_manifest
from tests.test_datasets import MAKERS, _prepare, make_sop

SIXTEEN_BIT = np.array([[0, 32896, 65535]], dtype=np.uint16)
EIGHT_BIT = np.rint(SIXTEEN_BIT.astype(np.float64) * 255 / 65535).astype(np.uint8)  # 0, 128, 255


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def _truncated_jpeg(path: Path) -> None:
    """A valid 64 x 48 JPEG of noise (every byte carries data), cut after half its bytes."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])


def _sixteen_bit_png(path: Path, size: tuple[int, int], value: int) -> None:
    """A 16-bit grayscale PNG, every pixel ``value`` (0..65535); written at ``path`` whatever its
    suffix (PIL reads a file by its content)."""
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


# --------------------------------------------------------------------------- 16-bit and odd modes


def test_sixteen_bit_png_loads_scaled_not_white(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(SIXTEEN_BIT).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # what PIL makes of a 16-bit PNG
        assert _pixels(img.convert("RGB"))[0, 1, 0] == 255  # the bug: clipped, not scaled
    got = load_rgb(path)
    assert got.mode == "RGB"
    assert _pixels(got).tolist() == [[[int(v)] * 3 for v in EIGHT_BIT[0]]]
    assert EIGHT_BIT[0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_every_wide_integer_mode_maps_0_65535_to_0_255(mode):
    if mode == "I":
        img = Image.fromarray(SIXTEEN_BIT.astype(np.int32))
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        img = Image.frombytes(mode, (3, 1), SIXTEEN_BIT.astype(dtype).tobytes())
    assert img.mode == mode
    assert _pixels(to_rgb(img))[0, :, 0].tolist() == [0, 128, 255]


def test_float_images_use_pils_0_255_scale_clipped():
    values = np.array([[-5.0, 0.0, 128.4, 254.6, 300.0]], dtype=np.float32)
    got = _pixels(to_rgb(Image.fromarray(values, mode="F")))
    assert got[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def _png_roundtrip(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    return Image.open(buf)


def test_transparency_is_dropped_keeping_the_stored_colours_without_warnings():
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # colour 0 is fully transparent
    la = Image.fromarray(np.array([[[90, 0], [180, 255]]], dtype=np.uint8), mode="LA")
    pa = Image.fromarray(np.array([[[0, 0], [1, 255]]], dtype=np.uint8), mode="PA")
    pa.putpalette([10, 20, 30, 200, 100, 50])
    rgba = Image.fromarray(np.array([[[1, 2, 3, 0], [4, 5, 6, 255]]], dtype=np.uint8), mode="RGBA")
    expected = {
        "P": [[10, 20, 30], [200, 100, 50]],
        "LA": [[90, 90, 90], [180, 180, 180]],
        "PA": [[10, 20, 30], [200, 100, 50]],
        "RGBA": [[1, 2, 3], [4, 5, 6]],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for img in (palette, _png_roundtrip(palette), la, _png_roundtrip(la), pa, rgba):
            got = to_rgb(img)
            assert got.mode == "RGB"
            assert _pixels(got)[0].tolist() == expected[img.mode], img.mode


def test_exif_rotated_photo_is_read_as_stored(tmp_path):
    """Documented behaviour (README "Images"): no EXIF transpose, as torchvision's loaders."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to display
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (60, 40), (10, 200, 30)).save(path, exif=exif.tobytes())
    with Image.open(path) as img:
        assert img.getexif()[0x0112] == 6
    assert load_rgb(path).size == (60, 40)


# --------------------------------------------------------------------------- truncated JPEGs


def test_truncated_jpeg_passes_a_header_check_but_not_a_full_decode(tmp_path):
    path = tmp_path / "cut.jpg"
    _truncated_jpeg(path)
    with Image.open(path) as img:
        img.verify()  # what prepare used to do: no complaint
    with pytest.raises(IAAError, match=r"^image cannot be decoded: .*cut\.jpg \(.*truncated"):
        load_rgb(path)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_prepare_names_a_truncated_jpeg_or_drops_it(name, tmp_path, caplog):
    folder = MAKERS[name](tmp_path / "data")
    listed = READERS[name].read(folder)
    bad = str(listed.loc[listed["split"] == "train", "path"].iloc[0])
    _truncated_jpeg(folder / bad)
    out = tmp_path / "m.parquet"
    with pytest.raises(IAAError) as err:
        _prepare(name, tmp_path / "data", out)
    message = str(err.value)
    assert "\n" not in message and not out.exists()
    assert message.startswith(f"{name}: 1 image(s) cannot be read (e.g. {bad}: ")
    assert "truncated" in message and "--skip-bad-images" in message

    with caplog.at_level(logging.WARNING):
        frame = _prepare(name, tmp_path / "data", out, skip_bad_images=True)
    assert bad not in set(frame["path"]) and bad not in set(read_manifest(out).frame["path"])
    assert len(frame) == (listed["path"] != bad).sum()
    dropped = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(dropped) == 1 and "\n" not in dropped[0]
    assert dropped[0].startswith(f"{name}: dropping 1 bad image(s) from the manifest: ") and bad in dropped[0]


def test_truncated_jpeg_is_refused_even_when_pil_was_told_to_tolerate_it(tmp_path, monkeypatch, caplog):
    path = tmp_path / "cut.jpg"
    _truncated_jpeg(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with caplog.at_level(logging.WARNING):
        problems = verify_images(tmp_path, ["cut.jpg"], threads=2)
    assert list(problems) == ["cut.jpg"] and "truncated" in problems["cut.jpg"]
    assert any("LOAD_TRUNCATED_IMAGES" in r.getMessage() for r in caplog.records)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it


def test_full_decode_check_still_runs_in_parallel(tmp_path, monkeypatch):
    seen: set[int] = set()

    def slow_check(path: Path) -> str | None:
        seen.add(threading.get_ident())
        time.sleep(0.002)
        return None

    monkeypatch.setattr(image_checks_module, "_check_image", slow_check)
    assert verify_images(tmp_path, [f"{i}.jpg" for i in range(400)], threads=4) == {}
    assert len(seen) > 1


# --------------------------------------------------------------------------- the resized cache


@pytest.mark.parametrize("size", [(600, 400), (6, 4)], ids=["squashed", "small"])
def test_prepares_cached_copy_of_a_sixteen_bit_image_is_not_white(size, tmp_path):
    folder = make_sop(tmp_path / "data")
    rel = "bicycle_final/1001_0.JPG"
    _sixteen_bit_png(folder / rel, size, 32896)  # mid-grey: 128 in 8 bits
    cache, out = tmp_path / "cache", tmp_path / "m.parquet"
    _prepare("sop", tmp_path / "data", out, resized_cache=cache)
    with Image.open(cache / rel) as img:  # read plainly, not through load_rgb
        assert img.mode in ("RGB", "L")
        plain = _pixels(img.convert("RGB")).astype(int)
    assert np.abs(plain - 128).max() <= 2
    assert np.abs(_pixels(load_rgb(cache / rel)).astype(int) - 128).max() <= 2
    assert np.abs(_pixels(load_rgb(folder / rel)).astype(int) - 128).max() == 0
