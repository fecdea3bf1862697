"""DICOM de-identification: identifiers gone (also inside sequences), pixels untouched, UIDs consistent."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from braintumor.data.dicom import IDENTIFYING_TAGS
from braintumor.data.io import load_image
from braintumor.errors import CorruptImageError
from braintumor.storage.deid import SAFE_TAGS, deidentified_tags, deidentify


def _identified(name: str = "MR_small.dcm") -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-123456"
    ds.PatientBirthDate = "19700101"
    ds.PatientAge = "055Y"
    ds.InstitutionName = "St. Example Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.AccessionNumber = "ACC-42"
    ds.StudyDate = "20240102"
    ds.OperatorsName = "Tech^Tom"
    ds.add_new(0x00091001, "LO", "private secret")
    item = Dataset()
    item.PatientName = "Nested^Name"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedStudySequence = Sequence([item])
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.5"
    ds.ReferencedSeriesSequence = Sequence([series])  # not in the profile's table: kept, its items cleaned
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


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
