"""DICOM de-identification: identifiers gone (also inside sequences), pixels untouched, UIDs consistent."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from braintumor.errors import CorruptImageError
from braintumor.imaging.dicom_tags import IDENTIFYING_TAGS
from braintumor.imaging.io import load_image
from braintumor.storage.deid import SAFE_TAGS, deidentified_tags, deidentify

from ..dicom_files import encoded, identified


def _sequence(**values: str) -> Sequence:
    """A sequence of one item holding ``values``."""
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return Sequence([item])


def _identified(name: str = "MR_small.dcm") -> bytes:
    values = {"PatientID": "MRN-123456", "PatientAge": "055Y", "AccessionNumber": "ACC-42", "StudyDate": "20240102"}
    ds = identified(name, **values, OperatorsName="Tech^Tom")
    ds.add_new(0x00091001, "LO", "private secret")
    ds.ReferencedStudySequence = _sequence(PatientName="Nested^Name", ReferencedSOPInstanceUID="1.2.3.4")
    # not in the profile's table: kept, its items cleaned
    ds.ReferencedSeriesSequence = _sequence(SeriesInstanceUID="1.2.3.5")
    return encoded(ds)


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm"])
def test_identifiers_removed_pixels_kept(name: str) -> None:
    raw = _identified(name)
    clean = deidentify(raw, salt=b"s")
    ds = pydicom.dcmread(io.BytesIO(clean.data))
    text = clean.data
    for secret in (
        b"Doe^Jane",
        b"MRN-123456",
        b"19700101",
        b"St. Example",
        b"House^",
        b"ACC-42",
        b"Nested^Name",
        b"private secret",
        b"Tech^Tom",
        b"20240102",
    ):
        assert secret not in text, secret
    assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert "PatientAge" not in ds and str(ds.PatientName) == ""
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # PS3.15 says X/Z for Referenced Study Sequence (emptied); a sequence the table keeps has its UIDs replaced.
    assert "ReferencedStudySequence" not in ds or not ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID.startswith("2.25.")
    before, after = load_image(raw), load_image(clean.data)
    assert np.array_equal(before.pixels, after.pixels)
    assert not set(after.meta.dicom) & set(IDENTIFYING_TAGS) - {"StudyInstanceUID", "SeriesInstanceUID"}


def test_uids_are_consistent_per_salt() -> None:
    raw = _identified()
    a1, a2 = (pydicom.dcmread(io.BytesIO(deidentify(raw, salt=b"a").data)) for _ in range(2))
    b = pydicom.dcmread(io.BytesIO(deidentify(raw, salt=b"b").data))
    original = pydicom.dcmread(io.BytesIO(raw))
    assert a1.StudyInstanceUID == a2.StudyInstanceUID != b.StudyInstanceUID
    assert a1.StudyInstanceUID != original.StudyInstanceUID and a1.SOPClassUID == original.SOPClassUID


def test_burned_in_annotation_is_reported() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    buf = io.BytesIO()
    ds.save_as(buf)
    assert deidentify(buf.getvalue(), salt=b"s").burned_in_annotation is True
    assert deidentify(_identified(), salt=b"s").burned_in_annotation is False


def test_unreadable_input_is_refused() -> None:
    with pytest.raises(CorruptImageError):
        deidentify(b"\x00" * 10, salt=b"s")


def test_tag_filter_keeps_only_safe_tags() -> None:
    tags = {"Modality": "MR", "PatientName": "Doe^Jane", "StudyDescription": "Brain of Jane", "PixelSpacing": "1\\1"}
    assert deidentified_tags(tags) == {"Modality": "MR", "PixelSpacing": "1\\1"}
    assert "PatientName" not in SAFE_TAGS


# -- issue 13 item 2: what survived the old tag list ---------------------------------------------------------
def _with_review_findings() -> bytes:
    """MR_small carrying what the security review found in stored files after de-identification."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.preamble = b"DOE^JOHN MRN-777 ".ljust(128, b"\x00")
    ds.file_meta.SourceApplicationEntityTitle = "WARD7-JD"
    ds.PatientName = "DOE^JOHN"
    ds.PerformedLocation = "W7 DOE^JOHN"
    ds.PerformedStationName = "PERF-STN-JD"
    ds.StationName = "STN-JD"
    ds.RequestingPhysician = "Kildare^James"
    ds.ContentSequence = _sequence(ValueType="TEXT", TextValue="Findings for John Doe, 55, Ward 7")
    # not in the profile's table: cleaned by the nested pass
    ds.ProcedureCodeSequence = _sequence(PatientName="NESTED^DOE", CodeMeaning="brain")
    return encoded(ds)


REVIEW_FINDINGS = (
    b"DOE^JOHN",
    b"MRN-777",
    b"WARD7-JD",
    b"John Doe",
    b"PERF-STN-JD",
    b"STN-JD",
    b"Kildare",
    b"NESTED^DOE",
)


def test_review_findings_are_gone_and_the_preamble_is_zero() -> None:
    raw = _with_review_findings()
    assert all(secret in raw for secret in REVIEW_FINDINGS)
    clean = deidentify(raw, salt=b"s")
    for secret in REVIEW_FINDINGS:
        assert secret not in clean.data, secret
    assert clean.data[:128] == bytes(128) and clean.data[128:132] == b"DICM"
    ds = pydicom.dcmread(io.BytesIO(clean.data))
    assert ds.PatientIdentityRemoved == "YES" and "dicom-anonymizer" in ds.DeidentificationMethod
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    for keyword in ("PerformedLocation", "PerformedStationName", "StationName", "RequestingPhysician"):
        assert not ds.get(keyword), keyword
    assert np.array_equal(load_image(raw).pixels, load_image(clean.data).pixels)


def test_the_profile_table_is_the_librarys() -> None:
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    from braintumor.storage.deid import PROFILE_TABLE

    assert PROFILE_TABLE == "dicomfields_2026c"
    assert (0x0040, 0x0243) in table.X_TAGS  # Performed Location: the standard's row, not one of ours
    assert (0x0040, 0xA730) in table.D_TAGS  # Content Sequence


def _jpeg_with_metadata(pixels: np.ndarray) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x013B] = "DOE^JOHN"  # Artist
    exif[0x010E] = "MRN-777 brain"  # ImageDescription
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90, exif=exif.tobytes(), comment=b"Patient DOE^JOHN")
    data = buf.getvalue()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>DOE^JOHN</x:xmpmeta>"
    app1 = b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
    return data[:2] + app1 + data[2:] + b"trailing DOE^JOHN"


def test_jpeg_metadata_is_dropped_losslessly(brain_gray: np.ndarray) -> None:
    from braintumor.storage.deid import strip_metadata

    raw = _jpeg_with_metadata(brain_gray)
    assert raw.count(b"DOE^JOHN") >= 3 and b"MRN-777" in raw
    clean = strip_metadata(raw, "jpeg")
    assert b"DOE^JOHN" not in clean and b"MRN-777" not in clean and b"Exif" not in clean
    assert np.array_equal(load_image(raw).pixels, load_image(clean).pixels)
    assert strip_metadata(clean, "jpeg") == clean


def test_progressive_jpeg_keeps_every_scan(brain_gray: np.ndarray, encoder: Any) -> None:
    from braintumor.storage.deid import strip_metadata

    raw = encoder(brain_gray, "JPEG", quality=85, progressive=True, comment=b"DOE^JOHN")
    clean = strip_metadata(raw, "jpeg")
    assert b"DOE^JOHN" not in clean and clean.count(b"\xff\xda") == raw.count(b"\xff\xda") > 1
    assert np.array_equal(load_image(raw).pixels, load_image(clean).pixels)


def test_png_text_chunks_are_dropped_losslessly(brain_gray: np.ndarray) -> None:
    from PIL import Image, PngImagePlugin

    from braintumor.storage.deid import strip_metadata

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Patient DOE^JOHN")
    info.add_text("Author", "MRN-777", zip=True)
    info.add_itxt("Description", "Ward 7 JohnDoe", lang="en")
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x013B] = "Kildare"
    Image.fromarray(brain_gray).save(buf, "PNG", pnginfo=info, exif=exif.tobytes())
    raw = buf.getvalue() + b"DOE^JOHN after IEND"
    clean = strip_metadata(raw, "png")
    for secret in (b"DOE^JOHN", b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"JohnDoe", b"Kildare"):
        assert secret not in clean, secret
    assert np.array_equal(load_image(raw).pixels, load_image(clean).pixels)


def test_real_jpegs_and_pngs_strip_without_changing_a_pixel(shared_data: Any) -> None:
    from braintumor.imaging.io import sniff_format
    from braintumor.storage.deid import strip_metadata

    files = (
        sorted((shared_data / "br35h").rglob("*.jp*g"))[::25]
        + sorted((shared_data / "brain_tumor_dataset").rglob("*.*"))[::10]
    )
    checked = 0
    for path in files:
        raw = path.read_bytes()
        fmt = sniff_format(raw[:256])
        if fmt not in ("jpeg", "png"):
            continue
        clean = strip_metadata(raw, fmt)
        assert np.array_equal(load_image(raw).pixels, load_image(clean).pixels), path.name
        checked += 1
    assert checked > 50
