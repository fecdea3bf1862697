"""Inputs the fuzzer (or the review) found, kept as regression cases: each goes through the decoder properties and
the isolated upload parser. Named cases must give the outcome recorded here; any other file in ``corpus/`` (a new
finding) must give pixels or a typed error."""

from __future__ import annotations

from pathlib import Path

import pytest

from braintumor.api.analysis import parse_upload
from braintumor.errors import ImageError
from braintumor.imaging.io import sniff_format
from braintumor.imaging.untrusted import run_isolated

from .conftest import CORPUS
from .test_fuzz_decoders import LIMITS, check_input

CASES = sorted(CORPUS.glob("*.bin"))
#: stem -> the error class the upload parser raises, or "stored" (parsed; the stored copy must hold no "DOE").
EXPECTED = {
    "dicom-nested-20-deep": "DicomStructureError",
    "dicom-nested-20-deep-defined": "DicomStructureError",
    "dicom-rle-declares-6000x6000x16": "ImageTooLargeError",
    "dicom-unknown-vr": "CorruptImageError",  # found by the fuzzer: pydicom's NotImplementedError escaped untyped
    "dicom-rle-decoder-panic": "CorruptImageError",  # found by the long pass: pylibjpeg-rle panics (BaseException)
    "jpeg-comment-exif-trailer": "stored",
    "png-actl-declares-4000-frames": "ImageTooLargeError",
}


def test_every_named_case_is_in_the_corpus() -> None:
    assert set(EXPECTED) <= {p.stem for p in CASES}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case(path: Path) -> None:
    data = path.read_bytes()
    check_input(data)
    fmt = sniff_format(data[:256]) or "unknown"
    try:
        parsed = run_isolated(parse_upload, data, fmt, LIMITS, b"salt", False, timeout_s=30, memory_mb=1024)
    except ImageError as exc:
        outcome = type(exc).__name__
    else:
        outcome = "stored"
        assert b"DOE" not in parsed.original
    assert outcome == EXPECTED.get(path.stem, outcome)
