"""The DICOM structure check and the header limits: hostile files are refused before pydicom parses a byte.

The replays of issue 13 (items 1 and 4) build the attack files here: a real MR slice with a sequence nested 3000
deep (undefined and defined lengths), an RLE slice declaring 6000×6000×16 bits in 1.1 MB, and friends.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import MRImageStorage, generate_uid

from braintumor.errors import CorruptImageError, DicomStructureError, ImageTooLargeError
from braintumor.imaging.dicom_structure import check_structure
from braintumor.imaging.io import load_image
from braintumor.imaging.types import ImageLimits
from braintumor.storage.deid import deidentify

from ..dicom_files import MR_SMALL_ENCODINGS, insert_before_patient, mr_small_bytes, nested_dicom, rle_bomb, tag


@pytest.mark.parametrize("name", MR_SMALL_ENCODINGS)
def test_real_files_pass_the_structure_check(name: str) -> None:
    check_structure(Path(get_testdata_file(name)).read_bytes())


@pytest.mark.parametrize("defined", [False, True], ids=["undefined-lengths", "defined-lengths"])
def test_deep_nesting_is_refused_in_well_under_a_second(defined: bool) -> None:
    """Issue 13 item 1: a 3000-deep sequence raised RecursionError (a 500) or crashed de-identification."""
    data = nested_dicom(3000, defined=defined)
    assert len(data) < 300_000
    for step in (load_image, lambda d: deidentify(d, salt=b"s")):
        start = time.perf_counter()
        with pytest.raises(DicomStructureError, match="nested deeper than 16 levels"):
            step(data)
        assert time.perf_counter() - start < 0.5


def test_nesting_attack_in_a_fresh_process_stays_small(tmp_path: Path) -> None:
    """The same replay in its own interpreter (on the old code it died of a stack overflow): typed error for both
    the decoder and de-identification, and a peak RSS far from the gigabytes seen in the review."""
    path = tmp_path / "nested.dcm"
    path.write_bytes(nested_dicom(3000, defined=True))
    code = (
        "import json, sys, time\n"
        "from braintumor.imaging.io import load_image\n"
        "from braintumor.storage.deid import deidentify\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "out = {}\n"
        "for name, step in (('load', load_image), ('deid', lambda d: deidentify(d, salt=b's'))):\n"
        "    for _ in range(2):  # the second run is timed: the first pays this interpreter's lazy imports\n"
        "        t = time.perf_counter()\n"
        "        try:\n"
        "            step(data); out[name] = 'accepted'\n"
        "        except Exception as exc:\n"
        "            out[name] = type(exc).__name__\n"
        "        out[name + '_s'] = time.perf_counter() - t\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "out['maxrss_mb'] = int(hwm.split()[1]) / 1024  # this process's peak (ru_maxrss would include the parent)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["load"] == out["deid"] == "DicomStructureError"
    assert out["load_s"] < 0.5 and out["deid_s"] < 0.5
    assert out["maxrss_mb"] < 400


def test_shallow_nesting_is_accepted_and_the_cap_is_configurable() -> None:
    data = nested_dicom(5)
    assert load_image(data).pixels.shape == (64, 64)
    with pytest.raises(DicomStructureError, match="deeper than 4"):
        load_image(data, limits=ImageLimits(max_dicom_depth=4))


def test_element_count_is_capped() -> None:
    many = tag(0x0008, 0x1115) + b"SQ\x00\x00\xff\xff\xff\xff"
    item = tag(0xFFFE, 0xE000) + struct.pack("<I", 0)
    data = insert_before_patient(mr_small_bytes(), many + item * 5000 + tag(0xFFFE, 0xE0DD) + bytes(4))
    with pytest.raises(ImageTooLargeError, match="more than 1,000 data elements"):
        check_structure(data, ImageLimits(max_dicom_elements=1000))
    check_structure(data)  # 5000 empty items are fine under the default cap


def test_declared_lengths_may_not_overrun() -> None:
    raw = mr_small_bytes()
    lying = tag(0x0008, 0x1030) + b"LO" + struct.pack("<H", 0xFFF0) + b"Brain"  # StudyDescription "65520 bytes"
    data = raw[: raw.find(tag(0x0010, 0x0010) + b"PN")] + lying
    with pytest.raises(DicomStructureError, match="declares 65,520 bytes"):
        check_structure(data)
    item_too_long = (
        tag(0x0008, 0x1115) + b"SQ\x00\x00" + struct.pack("<I", 16) + tag(0xFFFE, 0xE000) + struct.pack("<I", 4096)
    )
    with pytest.raises(DicomStructureError, match="more than its container holds"):
        check_structure(insert_before_patient(raw, item_too_long + bytes(8)))


def test_a_deflated_data_set_may_not_inflate_past_the_cap() -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    head = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(head), meta, enforce_standard=True)
    body = tag(0x0008, 0x0060) + b"CS" + struct.pack("<H", 2) + b"MR"
    body += tag(0x0008, 0x1030) + b"UT\x00\x00" + struct.pack("<I", 8 << 20) + bytes(8 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = bytes(128) + b"DICM" + head.getvalue() + packer.compress(body) + packer.flush()
    assert len(bomb) < 20_000
    with pytest.raises(ImageTooLargeError, match="inflates beyond the cap of 1 MB"):
        check_structure(bomb, ImageLimits(max_inflated_bytes=1 << 20))


def test_rle_slice_declaring_6000x6000x16_is_refused_before_decoding() -> None:
    """Issue 13 item 4: 1.1 MB of RLE declaring 72 MB of pixels cost +1.16 GB; the header check refuses it."""
    data = rle_bomb()
    assert len(data) < 1_200_000
    limits = ImageLimits(max_frame_bytes=32 * 1024 * 1024)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"6000×6000×1×2 bytes = 68\.7 MB decoded exceeds the cap of 32 MB"):
        load_image(data, limits=limits)
    assert time.perf_counter() - start < 0.5


def test_small_rle_decodes_and_frame_counts_are_capped() -> None:
    assert load_image(rle_bomb(64, 64)).pixels.shape == (64, 64)
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.NumberOfFrames = 5000
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(ImageTooLargeError, match="declares 5,000, the cap is 1,000"):
        load_image(buf.getvalue(), limits=ImageLimits(max_frames=1000))


def test_damaged_headers_are_typed_errors() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.BitsAllocated = 0
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(CorruptImageError, match="bits allocated"):
        load_image(buf.getvalue())
