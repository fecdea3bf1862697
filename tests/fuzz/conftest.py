"""Fuzzing profiles and seeds.

``ci`` (the default, part of ``make test``): 1000 examples per decoder target and 40 uploads, derandomized (the
same inputs every run), well under a minute on 2 cores. ``long`` (``BRAINTUMOR_FUZZ=long``;
``BRAINTUMOR_FUZZ_EXAMPLES`` and ``BRAINTUMOR_FUZZ_UPLOADS`` set the counts): the random pass run by hand. Set
``BRAINTUMOR_FUZZ_SAVE=DIR`` to keep every failing input there; the minimal ones go to ``corpus/``, which
``test_corpus.py`` replays on every run.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image, PngImagePlugin
from pydicom.data import get_testdata_file

from ..dicom_files import MR_SMALL_ENCODINGS, encoded

CORPUS = Path(__file__).parent / "corpus"
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile(
    "ci", max_examples=1000, deadline=5000, derandomize=True, database=None, suppress_health_check=_SLOW_OK
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("BRAINTUMOR_FUZZ_EXAMPLES", "20000")),
    deadline=5000,
    database=None,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get("BRAINTUMOR_FUZZ", "ci"))
UPLOADS = int(os.environ.get("BRAINTUMOR_FUZZ_UPLOADS", "40"))

MR_SEEDS = (*MR_SMALL_ENCODINGS, "MR_truncated.dcm")


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def build_seeds() -> list[bytes]:
    """Small valid files of every kind the upload path reads: DICOM (all MR_small encodings, with a nested
    sequence), baseline and progressive JPEG with metadata, PNG gray/RGB/palette/16-bit/with text/animated."""
    seeds = [Path(get_testdata_file(name)).read_bytes() for name in MR_SEEDS]
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    item = pydicom.Dataset()
    item.PatientName, item.TextValue = "DOE^JOHN", "nested"
    ds.ContentSequence = pydicom.Sequence([item])
    seeds.append(encoded(ds))
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8))
    rgb = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "DOE^JOHN")
    seeds += [
        _save(gray, "JPEG", quality=80, comment=b"DOE^JOHN"),
        _save(rgb, "JPEG", quality=70, progressive=True),
        _save(gray, "PNG"),
        _save(rgb, "PNG", pnginfo=info),
        _save(gray.convert("P"), "PNG"),
        _save(Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)), "PNG"),
        _save(gray, "PNG", save_all=True, append_images=[rgb.convert("L").resize((32, 24))], duration=5),
    ]
    return seeds


@pytest.fixture(scope="session")
def seeds() -> list[bytes]:
    return build_seeds()
