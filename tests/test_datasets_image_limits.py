"""Decoded-cost limits: thin, huge and 16-bit images are refused from their header alone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hostile_images import png_header
from PIL import Image

from xmodal.datasets import BadInputError, ImageLimits, check_image, load_dataset, load_image
from xmodal.datasets.images import cost_problem, open_header


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_thin_image_is_refused_by_its_aspect_ratio(tmp_path: Path) -> None:
    thin = _write(tmp_path / "thin.png", png_header(20_000, 1))
    assert thin.stat().st_size < 200
    for loader in (check_image, load_image):
        with pytest.raises(BadInputError, match=r"aspect ratio of 20,000:1.*max_aspect") as e:
            loader(thin)
        assert e.value.path == thin


def test_25_million_by_1_is_an_error_not_an_overflow(tmp_path: Path) -> None:
    line = _write(tmp_path / "line.png", png_header(25_000_000, 1))
    with pytest.raises(BadInputError, match="aspect ratio"):
        load_image(line)
    # Even with the aspect ratio allowed, the resized size is refused.
    limits = ImageLimits(max_aspect=1e9)
    with pytest.raises(BadInputError, match=r"resized to 256.*max_resized_pixels"):
        load_image(line, limits)


def test_resized_pixels_follow_the_encoders_shorter_side() -> None:
    im = open_header(io.BytesIO(png_header(1000, 100)))  # 10:1
    assert cost_problem(im, ImageLimits()) is None  # 256 x 2560 = 655,360 pixels
    problem = cost_problem(im, ImageLimits(resize=1024))  # 1024 x 10240
    assert problem is not None and "10,485,760 pixels" in problem and "resized to 1024" in problem


@pytest.mark.parametrize(
    ("colour_type", "bit_depth", "bytes_per_pixel"),
    [(0, 8, 3), (0, 16, 3), (2, 8, 3), (2, 16, 6), (6, 8, 4), (6, 16, 8)],
)
def test_decoded_bytes_count_16_bit_samples_twice(
    colour_type: int, bit_depth: int, bytes_per_pixel: int
) -> None:
    im = open_header(io.BytesIO(png_header(5000, 5000, bit_depth, colour_type)))
    budget = 25_000_000 * bytes_per_pixel
    assert cost_problem(im, ImageLimits(max_decoded_bytes=budget)) is None
    problem = cost_problem(im, ImageLimits(max_decoded_bytes=budget - 1))
    assert problem is not None and f"{budget:,} bytes decoded" in problem


def test_16_bit_conversion_is_exact_in_integers(tmp_path: Path) -> None:
    values = np.arange(0, 65536, 7, dtype=np.uint16)[: 90 * 100].reshape(90, 100)
    Image.fromarray(values).save(tmp_path / "g16.png")
    out = np.asarray(load_image(tmp_path / "g16.png"))[..., 0]
    np.testing.assert_array_equal(out, np.rint(values / 257.0).astype(np.uint8))


def test_readers_skip_costly_images_with_the_limit_named(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    _write(tmp_path / "thin.png", png_header(20_000, 1))
    (tmp_path / "data.jsonl").write_text(
        '{"image": "ok.png", "captions": ["red"]}\n{"image": "thin.png", "captions": ["line"]}\n'
    )
    with pytest.raises(BadInputError, match=r"data.jsonl:2: .*thin.png.*max_aspect"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path, on_bad="skip")
    assert ds.ids == ["ok.png"]
    assert len(ds.skipped) == 1 and "data.jsonl:2" in ds.skipped[0]
