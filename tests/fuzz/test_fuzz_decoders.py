"""Fuzzing the decoders and the upload path (issue 13 item 9) with Hypothesis: mutations of small valid DICOM, JPEG
and PNG files (bit flips, interesting integers over length fields, insertions, deletions, repeats, truncation).

Properties: ``load_image`` returns 8-bit pixels or raises an :class:`~braintumor.errors.ImageError`; so do
de-identification and metadata stripping, and a stripped raster decodes to the same pixels; no example runs past
the deadline; memory stays bounded; ``POST /predict`` answers 201 or a 4xx, never a 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from braintumor.errors import ImageError
from braintumor.imaging.io import load_image, sniff_format
from braintumor.imaging.types import ImageLimits
from braintumor.storage.deid import deidentify, strip_metadata

from .conftest import build_seeds

SEEDS = build_seeds()
#: The API's default limits (Settings): what an upload may cost.
LIMITS = ImageLimits(max_frame_bytes=32 * 1024 * 1024, max_frames=1000, max_dicom_depth=16, max_dicom_elements=50_000)
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 6000, 0x7FFFFFFF, 0xFFFFFFFF)


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            data = bytearray(b"\x00")
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(("flip", "byte", "int", "insert", "delete", "repeat", "truncate")))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)))
        elif op == "int":
            width = draw(st.sampled_from((2, 4)))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
            data[pos : pos + width] = value.to_bytes(width, draw(st.sampled_from(("little", "big"))))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 256))]
        elif op == "repeat":
            chunk = bytes(data[pos : pos + draw(st.integers(1, 256))])
            data[pos:pos] = chunk * draw(st.integers(1, 32))
        else:
            del data[pos:]
    return bytes(data)


def save_failure(data: bytes) -> None:
    """Keep a failing input when ``BRAINTUMOR_FUZZ_SAVE`` names a folder (Hypothesis calls this while shrinking)."""
    folder = os.environ.get("BRAINTUMOR_FUZZ_SAVE")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{hashlib.sha1(data).hexdigest()[:16]}.bin").write_bytes(data)


def check_input(data: bytes) -> None:
    """The decoder-side properties for one input (also used by the corpus replay)."""
    try:
        image = load_image(data, limits=LIMITS)
    except ImageError:
        return
    assert image.pixels.dtype == np.uint8 and image.pixels.ndim in (2, 3) and image.pixels.size > 0
    fmt = sniff_format(data[:256])
    if fmt == "dicom":
        with contextlib.suppress(ImageError):
            deidentify(data, salt=b"fuzz", limits=LIMITS)
    elif fmt in ("jpeg", "png"):
        try:
            clean = strip_metadata(data, fmt)
        except ImageError:
            return
        assert np.array_equal(load_image(clean, limits=LIMITS).pixels, image.pixels)


@pytest.fixture(scope="module")
def rss_bound() -> Iterator[None]:
    """Fail the module when the process grew by more than 1 GiB at any moment while fuzzing."""
    proc, peak, done = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    yield
    done.set()
    sampler.join()
    assert peak[0] - base < 1024**3, f"RSS grew by {(peak[0] - base) / 1048576:.0f} MB while fuzzing"


@given(mutated())
def test_decoders_raise_only_typed_errors(rss_bound: None, data: bytes) -> None:
    try:
        check_input(data)
    except BaseException:
        save_failure(data)
        raise


@given(
    st.binary(min_size=0, max_size=2048),
    st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", bytes(128) + b"DICM"]),
)
def test_random_bytes_behind_a_magic_number(rss_bound: None, data: bytes, magic: bytes) -> None:
    try:
        check_input(magic + data)
    except BaseException:
        save_failure(magic + data)
        raise
