"""load_image / to_rgb / check_image: every odd mode decodes to the right 8-bit RGB values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.datasets import BadInputError, check_image, load_image, to_rgb


def _rgb(path: Path) -> np.ndarray:
    im = load_image(path)
    assert im.mode == "RGB"
    return np.asarray(im)


def test_rgb_is_unchanged(tmp_path: Path) -> None:
    src = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "a.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "a.png"), src)


def test_grey_8bit_is_replicated(tmp_path: Path) -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    out = _rgb(tmp_path / "g.png")
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_bilevel(tmp_path: Path) -> None:
    bits = np.array([[0, 1, 1, 0]], dtype=bool)
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    out = _rgb(tmp_path / "b.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 255, 0])


def test_grey_16bit_ramp_maps_to_0_255(tmp_path: Path) -> None:
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # 0 .. 65535
    im = Image.fromarray(ramp)
    assert im.mode == "I;16"
    im.save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = _rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], np.arange(256).reshape(16, 16))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_grey_16bit_uses_fixed_scale_not_image_range(tmp_path: Path) -> None:
    # A dim 16-bit image stays dim: 257 * v -> v, whatever the image's own min and max.
    vals = np.array([[257, 50 * 257, 60 * 257]], dtype=np.uint16)
    Image.fromarray(vals).save(tmp_path / "dim.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "dim.png")[0, :, 1], [1, 50, 60])


def test_grey_32bit_int_and_float_modes() -> None:
    ints = Image.fromarray(np.array([[0, 257 * 100, 65535, 70000]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(np.asarray(to_rgb(ints))[0, :, 0], [0, 100, 255, 255])
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(np.asarray(to_rgb(floats))[0, :, 0], [0, 128, 255])
    wide = Image.fromarray(np.array([[-1.0, 0.0, 3.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(np.asarray(to_rgb(wide))[0, :, 0], [0, 64, 255])


def test_cmyk(tmp_path: Path) -> None:
    cmyk = np.array(
        [[[255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0], [0, 0, 0, 255], [0, 0, 0, 0]]],
        dtype=np.uint8,
    )
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    assert Image.open(tmp_path / "c.tif").mode == "CMYK"
    out = _rgb(tmp_path / "c.tif")
    expected = [[0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0], [255, 255, 255]]
    np.testing.assert_array_equal(out[0], expected)


def test_palette(tmp_path: Path) -> None:
    idx = np.array([[0, 1, 2, 1]], dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255] + [0] * (3 * 253))
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = _rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [200, 100, 0], [0, 0, 255], [200, 100, 0]])


def test_palette_with_transparent_index_goes_white(tmp_path: Path) -> None:
    idx = np.array([[0, 1]], dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([10, 20, 30, 0, 0, 0] + [0] * (3 * 254))
    im.save(tmp_path / "pt.png", transparency=1)
    np.testing.assert_array_equal(_rgb(tmp_path / "pt.png")[0], [[10, 20, 30], [255, 255, 255]])


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    px = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 255, 128]]], dtype=np.uint8)
    Image.fromarray(px, mode="RGBA").save(tmp_path / "a.png")
    out = _rgb(tmp_path / "a.png").astype(int)
    # alpha blend: out = a * src + (1 - a) * 255, a = 128 / 255 for the last pixel
    a = 128 / 255
    expected = np.array([[255, 0, 0], [255, 255, 255], [(1 - a) * 255, (1 - a) * 255, 255]])
    np.testing.assert_allclose(out[0], expected, atol=1)


def test_grey_alpha(tmp_path: Path) -> None:
    px = np.array([[[0, 255], [0, 0]]], dtype=np.uint8)
    Image.fromarray(px, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "la.png")[0], [[0, 0, 0], [255, 255, 255]])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = np.zeros((2, 4, 3), dtype=np.uint8)  # 4 wide, 2 high
    im = Image.fromarray(src)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (2, 4)


def test_check_image_returns_size(tmp_path: Path) -> None:
    Image.new("RGB", (7, 3)).save(tmp_path / "x.png")
    assert check_image(tmp_path / "x.png") == (7, 3)


@pytest.mark.parametrize("loader", [check_image, load_image])
def test_bad_files_name_the_file(tmp_path: Path, loader) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(BadInputError, match="not found") as e:
        loader(missing)
    assert e.value.path == missing

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(BadInputError, match="not a readable image") as e:
        loader(garbage)
    assert e.value.path == garbage

    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadInputError, match="corrupt or truncated") as e:
        loader(cut)
    assert e.value.path == cut

    with pytest.raises(BadInputError, match="over the limit of 4,095") as e:
        loader(full, max_pixels=4095)
    assert loader(full, max_pixels=4096) is not None


@pytest.mark.parametrize("loader", [check_image, load_image])
def test_truncated_jpeg_body_is_caught_by_the_check_too(tmp_path: Path, loader) -> None:
    # PIL's JPEG verify() does not decode; check_image decodes at 1/8 scale instead.
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (128, 128, 3), np.uint8)).save(full)
    assert check_image(full) == (128, 128)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadInputError, match="truncated") as e:
        loader(cut)
    assert e.value.path == cut
