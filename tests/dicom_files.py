"""DICOM files the tests build, in one place: pydicom's bundled MR slice in its encodings, the same slice with a
made-up identity, and the attack files of issue 13 (a sequence nested thousands deep, an RLE slice declaring far
more pixels than it carries, an animated PNG of thousands of frames).

The imaging tests check the readers on them, the API tests replay them end to end and the fuzzer seeds from
them, so a change to one attack is a change to all three. Imported relatively (``from ..dicom_files import``):
pytest's importlib mode resolves ``tests`` as a package.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MRImageStorage, RLELossless, generate_uid

MR_SMALL_ENCODINGS = (
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
)
"""pydicom's 64×64 MR slice in every lossless encoding it ships (the stored values are the same in all)."""

IDENTITY = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-0042",
    "PatientBirthDate": "19700101",
    "InstitutionName": "St. Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
}
"""The made-up identity every identified test file carries; de-identification must remove each value."""


def encoded(ds: Dataset) -> bytes:
    """``ds`` as the bytes of a DICOM file."""
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def identified(name: str = "MR_small.dcm", **values: Any) -> Dataset:
    """pydicom's ``name`` with :data:`IDENTITY` and ``values`` (more tags, or other values) set on it."""
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in {**IDENTITY, **values}.items():
        setattr(ds, keyword, value)
    return ds


def mr_small_bytes() -> bytes:
    return Path(get_testdata_file("MR_small.dcm")).read_bytes()


def tag(group: int, element: int) -> bytes:
    """A tag as explicit-VR little-endian writes it."""
    return struct.pack("<HH", group, element)


def insert_before_patient(raw: bytes, chunk: bytes) -> bytes:
    """Splice ``chunk`` (elements of groups below 0x0010) into an explicit-VR-LE file, keeping tags sorted."""
    pos = raw.find(tag(0x0010, 0x0010) + b"PN")
    assert pos > 0
    return raw[:pos] + chunk + raw[pos:]


def nested_dicom(depth: int = 3000, *, defined: bool = False) -> bytes:
    """MR_small with ReferencedSeriesSequence items nested ``depth`` deep, each holding a short comment
    (~214–262 KB for 3000), with undefined or ``defined`` lengths."""
    text = tag(0x0020, 0x4000) + b"LT" + struct.pack("<H", 40) + b"Patient DOE^JOHN nested comment text...."
    seq = tag(0x0008, 0x1115) + b"SQ\x00\x00"
    if defined:
        inner = b""
        for _ in range(depth):
            item = tag(0xFFFE, 0xE000) + struct.pack("<I", len(text) + len(inner)) + text + inner
            inner = seq + struct.pack("<I", len(item)) + item
    else:
        opened = seq + b"\xff\xff\xff\xff" + tag(0xFFFE, 0xE000) + b"\xff\xff\xff\xff" + text
        closed = tag(0xFFFE, 0xE00D) + bytes(4) + tag(0xFFFE, 0xE0DD) + bytes(4)
        inner = opened * depth + closed * depth
    return insert_before_patient(mr_small_bytes(), inner)


def rle_bomb(rows: int = 6000, cols: int = 6000) -> bytes:
    """A valid RLE Lossless MR slice of ``rows``×``cols``×16 bits whose two byte planes are runs of zeros
    (~1.1 MB for 6000×6000, which decodes to 72 MB)."""
    full, rest = divmod(rows * cols, 128)
    plane = bytes((0x81, 0x00)) * full  # 0x81: repeat the next byte 128 times (PS3.5 G.3.1)
    if rest:
        plane += bytes((257 - rest, 0)) if rest > 1 else b"\x00\x00"
    plane += b"\x00" * (len(plane) % 2)
    header = struct.pack("<16I", 2, 64, 64 + len(plane), *([0] * 13))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = encapsulate([header + plane + plane])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def animated_png(frames: int, size: int = 16) -> bytes:
    """An APNG whose frames alternate black and white (every frame differs from the one before)."""
    from PIL import Image

    black, white = Image.new("L", (size, size), 0), Image.new("L", (size, size), 255)
    buf = io.BytesIO()
    black.save(buf, "PNG", save_all=True, append_images=[white if i % 2 == 0 else black for i in range(frames - 1)])
    return buf.getvalue()


def mr_series(
    slices: list[Any], *, identity: dict[str, str] | None = None, description: str = "T1 AX"
) -> list[Dataset]:
    """Real 8-bit slices (``(H, W)`` uint8 arrays, e.g. from ``../shared/data``) wrapped as the MR Image Storage
    instances of one new study and series: axial, 0.5 mm pixels, 5 mm apart, with ``identity`` (default
    :data:`IDENTITY`), a study date and an accession number, as a scanner would send them."""
    import numpy as np

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for number, pixels in enumerate(slices, start=1):
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        for keyword, value in (identity if identity is not None else IDENTITY).items():
            setattr(ds, keyword, value)
        ds.PatientSex, ds.StudyDate, ds.StudyTime = "F", "20240229", "101512.345678"
        ds.AccessionNumber, ds.StudyID = "ACC-7", "1"
        ds.StudyDescription, ds.SeriesDescription = "MRI BRAIN", description
        ds.Modality, ds.Manufacturer, ds.BodyPartExamined = "MR", "Example Scanners", "BRAIN"
        ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = 3, number, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 500, 15, 1, 1.5
        ds.SliceThickness, ds.PixelSpacing = 5, [0.5, 0.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 5.0 * number]
        ds.SliceLocation = 5.0 * number
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pixels.tobytes() + b"\x00" * (pixels.size % 2)
        out.append(ds)
    return out
