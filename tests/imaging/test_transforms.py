"""Letterbox geometry, mapping square maps back to the original image, channel conversions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from braintumor.imaging.transforms import Placement, letterbox, resize_float, to_gray, to_rgb


def nonzero_box(arr: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the non-zero pixels."""
    mask = arr.any(axis=2) if arr.ndim == 3 else arr > 0
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(
    ("height", "width", "size", "box"),
    [
        (100, 200, 224, (0, 56, 224, 112)),  # wide
        (200, 100, 224, (56, 0, 112, 224)),  # tall
        (300, 300, 224, (0, 0, 224, 224)),  # square, downscaled
        (50, 50, 224, (0, 0, 224, 224)),  # square, upscaled
        (10, 20, 224, (0, 56, 224, 112)),  # small, upscaled
        (100, 201, 224, (0, 56, 224, 111)),  # odd padding: the extra row goes to the bottom
        (201, 100, 224, (56, 0, 111, 224)),  # odd padding: the extra column goes to the right
        (224, 112, 224, (56, 0, 112, 224)),  # already the right size: no resampling
    ],
)
@pytest.mark.parametrize("channels", [None, 3])
def test_letterbox_keeps_aspect_centres_and_pads_with_zeros(
    height: int, width: int, size: int, box: tuple[int, int, int, int], channels: int | None
) -> None:
    shape = (height, width) if channels is None else (height, width, channels)
    pixels = np.full(shape, 200, np.uint8)

    boxed, placement = letterbox(pixels, size)

    assert boxed.shape == ((size, size) if channels is None else (size, size, channels))
    assert boxed.dtype == np.uint8
    assert placement.size == size
    assert placement.original_size == (width, height)
    assert placement.content_box == box
    left, top, w, h = box
    # aspect kept: the longer side becomes `size`, the other is scaled by the same factor (rounded)
    scale = size / max(width, height)
    assert max(w, h) == size
    assert (w, h) == (round(width * scale), round(height * scale))
    # content exactly where the box says, padding exactly zero
    assert nonzero_box(boxed) == box
    inside = boxed[top : top + h, left : left + w]
    assert np.all(inside == 200)
    outside = boxed.copy()
    outside[top : top + h, left : left + w] = 0
    assert not outside.any()
    # centred: padding differs by at most one pixel, the extra one on the right/bottom
    assert 0 <= (size - left - w) - left <= 1
    assert 0 <= (size - top - h) - top <= 1
    assert placement.scale == pytest.approx(w / width)


def test_letterbox_content_matches_a_plain_resize(brain_gray: np.ndarray) -> None:
    boxed, placement = letterbox(brain_gray, 128)
    left, top, w, h = placement.content_box
    expected = np.asarray(Image.fromarray(brain_gray).resize((w, h), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(boxed[top : top + h, left : left + w], expected)
    assert placement.scale == pytest.approx(128 / 256)


def test_letterbox_rgb_content_keeps_colour() -> None:
    pixels = np.zeros((60, 120, 3), np.uint8)
    pixels[..., 0] = 250
    boxed, placement = letterbox(pixels, 64)
    left, top, w, h = placement.content_box
    assert (left, top, w, h) == (0, 16, 64, 32)
    assert np.all(boxed[top : top + h, left : left + w] == [250, 0, 0])
    assert not boxed[:top].any() and not boxed[top + h :].any()


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (0, 0), (0, 10, 3), (10,), (2, 2, 2, 2)])
def test_letterbox_rejects_empty_or_malformed_arrays(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        letterbox(np.zeros(shape, np.uint8), 224)


@pytest.mark.parametrize("size", [0, -5])
def test_letterbox_rejects_a_non_positive_size(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        letterbox(np.zeros((4, 4), np.uint8), size)


@pytest.mark.parametrize(
    ("height", "width", "point"),
    [(300, 600, (450, 75)), (600, 300, (40, 500)), (150, 168, (120, 30)), (1427, 1920, (1500, 1000))],
)
def test_unmap_puts_a_marker_back_where_it_belongs(height: int, width: int, point: tuple[int, int]) -> None:
    size = 224
    _, placement = letterbox(np.ones((height, width), np.uint8), size)
    left, top, _, _ = placement.content_box
    x0, y0 = point
    # the square-map position of original pixel (x0, y0) (pixel centres), as a smooth blob
    sx = left + (x0 + 0.5) * placement.scale - 0.5
    sy = top + (y0 + 0.5) * placement.scale - 0.5
    yy, xx = np.mgrid[0:size, 0:size]
    square = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * 3.0**2)).astype(np.float32)

    back = placement.unmap(square)

    assert back.shape == (height, width)
    assert back.dtype == np.float32
    y, x = np.unravel_index(int(np.argmax(back)), back.shape)
    tolerance = max(2.0, 1.5 / placement.scale)  # one square-map pixel covers 1/scale original pixels
    assert abs(x - x0) <= tolerance and abs(y - y0) <= tolerance, (x, y, point)


def test_unmap_drops_the_padding() -> None:
    _, placement = letterbox(np.ones((100, 200), np.uint8), 224)
    square = np.zeros((224, 224), np.float32)
    square[:56] = 9.0  # padding rows only
    square[168:] = 9.0
    square[56:168] = 1.0
    back = placement.unmap(square)
    assert back.shape == (100, 200)
    np.testing.assert_allclose(back, 1.0)


def test_unmap_rejects_a_wrong_size_map() -> None:
    placement = Placement(224, (200, 100), (0, 56, 224, 112))
    with pytest.raises(ValueError, match="224"):
        placement.unmap(np.zeros((200, 200), np.float32))
    with pytest.raises(ValueError):
        placement.unmap(np.zeros((224, 112), np.float32))


def test_to_rgb_shapes() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = to_rgb(gray)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)
    np.testing.assert_array_equal(to_rgb(gray[..., None]), rgb)
    colour = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(colour), colour)
    with pytest.raises(ValueError):
        to_rgb(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        to_rgb(np.zeros((3, 4, 2), np.uint8))


def test_to_gray_shapes_and_luminance() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_gray(gray) is gray
    np.testing.assert_array_equal(to_gray(to_rgb(gray)), gray)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    colour[0, 1] = (0, 255, 0)
    colour[1, 0] = (0, 0, 255)
    colour[1, 1] = (255, 255, 255)
    out = to_gray(colour)
    assert out.shape == (2, 2) and out.dtype == np.uint8
    # ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B
    assert abs(int(out[0, 0]) - 76) <= 1
    assert abs(int(out[0, 1]) - 150) <= 1
    assert abs(int(out[1, 0]) - 29) <= 1
    assert out[1, 1] == 255


def test_resize_float() -> None:
    values = np.linspace(0, 1, 20 * 10, dtype=np.float32).reshape(10, 20)
    out = resize_float(values, (40, 30))
    assert out.shape == (30, 40) and out.dtype == np.float32
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert resize_float(values, (20, 10)) is values  # no-op when already at size
    with pytest.raises(ValueError):
        resize_float(np.zeros((2, 2, 2), np.float32), (4, 4))
