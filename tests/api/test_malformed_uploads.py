"""A corpus of malformed and hostile uploads: every one is a 4xx with a reason, and nothing is stored."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ..conftest import encode
from .conftest import disc_png

ACCEPTED = "JPEG, PNG, BMP, TIFF and DICOM"  # what a 415 names


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny file whose header declares a gigantic image (a decompression bomb's first step)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def dicom_without_pixels() -> bytes:
    """A Basic Text SR: valid DICOM, no image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.PatientName = "Doe^Jane"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _brain_png() -> bytes:
    return disc_png(128, 50, 100)


def _encode(fmt: str, **kw: Any) -> bytes:
    return encode(np.full((64, 64), 120, np.uint8), fmt, **kw)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("scan.png", _brain_png())
    return buf.getvalue()


def _jpeg() -> bytes:
    return encode(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8), "JPEG")


CORPUS: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "zero bytes": (lambda: b"", 422, "empty"),
    "truncated JPEG": (lambda: _jpeg()[: len(_jpeg()) // 2], 422, "JPEG"),
    "JPEG header only": (lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 20, 422, "JPEG"),
    "truncated PNG": (lambda: _brain_png()[:60], 422, "PNG"),
    "PNG with a bad checksum": (lambda: _brain_png()[:30] + b"\x00" + _brain_png()[31:], 422, "PNG"),
    "huge dimensions (header)": (huge_png, 413, "too large"),
    "zero-size PNG": (lambda: huge_png(0, 0), 422, "PNG"),
    "DICOM without pixels": (dicom_without_pixels, 422, "no pixel data"),
    "truncated DICOM": (lambda: Path(get_testdata_file("MR_truncated.dcm")).read_bytes(), 422, "DICOM"),
    "DICOM preamble only": (lambda: b"\x00" * 128 + b"DICM", 422, "DICOM"),
    "a PDF": (lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF", 415, ACCEPTED),
    "a zip of a PNG": (_zip, 415, ACCEPTED),
    "truncated TIFF": (lambda: _encode("TIFF")[:200], 422, "TIFF"),
    "truncated BMP": (lambda: _encode("BMP")[:100], 422, "BMP"),
    "a GIF": (lambda: _encode("GIF"), 415, ACCEPTED),
    "an SVG with a script": (
        lambda: b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        415,
        ACCEPTED,
    ),
    "plain text": (lambda: b"hello, this is not an image", 415, ACCEPTED),
    "random bytes": (lambda: np.random.default_rng(1).bytes(4096), 415, ACCEPTED),
}


def _nothing_stored(api: Any, headers: dict[str, str]) -> None:
    assert api.client.get("/history", headers=headers).json()["total"] == 0
    assert not any((api.settings.data_dir / "blobs").glob("*/*"))
    assert api.storage.check().ok


@pytest.mark.parametrize("name", list(CORPUS))
def test_malformed_upload_is_refused_with_a_reason(api: Any, name: str) -> None:
    make, status, reason = CORPUS[name]
    headers = api.user("alice")
    r = api.upload(headers, make(), "upload.jpg")
    assert r.status_code == status, (name, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and reason.lower() in detail.lower(), detail
    assert "Traceback" not in r.text and " at 0x" not in r.text and "/work/" not in r.text
    assert "Doe^Jane" not in r.text
    _nothing_stored(api, headers)


def test_pixel_cap_from_settings(make_api: Any) -> None:
    api = make_api(max_pixels=100 * 100)
    headers = api.user("alice")
    r = api.upload(headers, _brain_png())
    assert r.status_code == 413 and "exceeds the cap of 10,000" in r.json()["detail"]
    _nothing_stored(api, headers)


def test_upload_size_cap(make_api: Any) -> None:
    api = make_api(max_upload_mb=0.05)
    headers = api.user("alice")
    big = np.random.default_rng(0).bytes(120_000)
    r = api.upload(headers, _brain_png()[:8] + big)
    assert r.status_code == 413 and "MB" in r.json()["detail"]
    # A declared length over the cap is refused before the body is read.
    r = api.client.post(
        "/predict", headers={**headers, "content-length": str(10 * 1024 * 1024), "content-type": "multipart/form-data"}
    )
    assert r.status_code in (400, 413)
    _nothing_stored(api, headers)


def test_streamed_body_over_the_cap_is_413(make_api: Any) -> None:
    api = make_api(max_upload_mb=0.05)
    headers = api.user("alice")
    chunks = (b"x" * 65536 for _ in range(40))  # no Content-Length: chunked transfer
    r = api.client.post(
        "/predict", headers={**headers, "content-type": "multipart/form-data; boundary=b"}, content=chunks
    )
    assert r.status_code == 413
    _nothing_stored(api, headers)


def test_requests_without_a_file(api: Any) -> None:
    headers = api.user("alice")
    assert api.client.post("/predict", headers=headers).status_code == 422
    assert api.client.post("/predict", headers=headers, json={"file": "x"}).status_code == 422
    r = api.client.post("/predict", headers=headers, files={"other": ("a.png", _brain_png(), "image/png")})
    assert r.status_code == 422
    _nothing_stored(api, headers)


def test_format_is_decided_by_content_not_name_or_type(api: Any) -> None:
    headers = api.user("alice")
    r = api.client.post("/predict", headers=headers, files={"file": ("scan.dcm", _brain_png(), "application/dicom")})
    assert r.status_code == 201 and r.json()["image"]["format"] == "png"
    assert r.json()["files"]["original"]["content_type"] == "image/png"
    dicom = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    buf = io.BytesIO()
    dicom.save_as(buf)
    r = api.client.post("/predict", headers=headers, files={"file": ("photo.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 201 and r.json()["image"]["format"] == "dicom"
