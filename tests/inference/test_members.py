"""Member helpers: numpy's BLAS is held to one thread while a batch is scored, and released after; the batch the
graph gets is, byte for byte, each image letterboxed and made RGB (however it is written into the batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from braintumor.imaging.io import load_image
from braintumor.imaging.transforms import Placement, letterbox, letterbox_rgb_into, to_rgb
from braintumor.imaging.types import ImageMeta, LoadedImage
from braintumor.inference.members import preprocess_batch, single_threaded_blas


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_runs_on_one_thread_inside_and_as_before_after() -> None:
    before = _blas_threads()
    assert before, "numpy links a BLAS that threadpoolctl can see"

    @single_threaded_blas
    def inside(x: int) -> tuple[int, list[int]]:
        return x + 1, _blas_threads()

    result, threads = inside(1)
    assert result == 2 and set(threads) == {1}
    assert _blas_threads() == before
    assert inside.__name__ == "inside"  # functools.wraps: docs and tracebacks name the real function


def _reference_batch(images: list[LoadedImage], size: int) -> tuple[np.ndarray, list[Placement]]:
    """What the serving input is defined as: each image letterboxed, made RGB, stacked."""
    boxed = [letterbox(im.pixels, size) for im in images]
    return np.stack([to_rgb(b) for b, _ in boxed]), [p for _, p in boxed]


def test_the_batch_is_letterbox_then_rgb_byte_for_byte(shared_data: Path) -> None:
    rng = np.random.default_rng(0)
    files = sorted((shared_data / "brain_tumor_dataset" / "yes").iterdir())[:6]
    synthetic = [
        rng.integers(0, 256, (90, 300), dtype=np.uint8),  # wide: padding above and below
        rng.integers(0, 256, (300, 90, 3), dtype=np.uint8),  # tall colour: padding left and right
        rng.integers(0, 256, (224, 224), dtype=np.uint8),  # already the input size: no resize
        rng.integers(0, 256, (7, 5), dtype=np.uint8),  # tiny: upscaled
    ]
    images = [load_image(f) for f in files] + [
        LoadedImage(a, ImageMeta("png", (a.shape[1], a.shape[0]), "L" if a.ndim == 2 else "RGB", 8)) for a in synthetic
    ]
    for batch in (images, images[:1], images[-3:]):
        got, placements = preprocess_batch(batch, 224)
        want, want_placements = _reference_batch(batch, 224)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        assert np.array_equal(got, want) and placements == want_placements


def test_letterbox_into_a_slot_refuses_what_to_rgb_refuses() -> None:
    out = np.empty((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        letterbox_rgb_into(np.zeros((10, 10, 4), np.uint8), out)
    with pytest.raises(ValueError, match="non-empty"):
        letterbox_rgb_into(np.zeros((0, 10), np.uint8), out)
