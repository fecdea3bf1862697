"""De-identification of uploads: DICOM by the PS3.15 Basic Application Level Confidentiality Profile, JPEG/PNG by
dropping every metadata segment.

Why here: uploads are stored de-identified by default, so the history, the GridFS/blob store and every backup
hold no patient names, ids, dates or institutions unless a site explicitly keeps DICOM identifiers
(``BRAINTUMOR_KEEP_DICOM_IDENTIFIERS=true``, where its governance allows). Raster metadata is always dropped: it
has no clinical use and a JPEG comment ``Patient DOE^JOHN`` was stored and served before.

DICOM — the profile's attribute table and per-VR actions come from a maintained implementation,
`dicom-anonymizer <https://github.com/KitwareMedical/dicom-anonymizer>`_ (its ``dicomfields_2026c`` table, generated
from PS3.15 Table E.1-1), not from a list of our own. On top of it, recursively through every sequence item:

* the table is applied in every item, not only at the top level (the profile's "K" for sequences means
  *cleaned*); where the profile leaves a choice (``Z/D``, ``X/D``, ``X/Z/D``, ``X/Z/U*``) the one that keeps least
  is taken (empty, or removed), where the library would write a dummy value;
* a safety net empties every person name, date, time, free text (LT/ST/UT) and AE title that remains, and
  replaces every UID that is not a standard (class, transfer syntax …) UID by a ``2.25.`` UID derived from the
  original with a secret salt, so slices of one study still group together but cannot be traced back;
* private tags, curves and overlays (which may carry burned-in text) are removed;
* the 128-byte preamble is zeroed and the file meta information rebuilt from scratch (no source AE title or
  implementation name of the sending system);
* the method is recorded: PatientIdentityRemoved = YES, DeidentificationMethod(+CodeSequence, DCM 113100).

Pixel data is kept byte for byte. Burned-in text in the pixels themselves cannot be removed here: the result
says so (``burned_in_annotation``) when the file declares it. The element stream is checked by
:func:`braintumor.imaging.dicom_structure.check_structure` before pydicom parses or writes anything.

JPEG and PNG are rewritten losslessly (same compressed pixel data, same decoded pixels): JPEG keeps only the
frame, scan, table and restart segments, a JFIF header without thumbnail and Adobe's colour-transform marker
(no EXIF, XMP, ICC, IPTC or COM); PNG keeps only the chunks that define pixels and colour (no tEXt, zTXt, iTXt,
eXIf, tIME, iCCP or animation chunks). Bytes after the end marker are dropped.

Example:
    >>> from pydicom.data import get_testdata_file
    >>> raw = open(get_testdata_file("MR_small.dcm"), "rb").read()
    >>> clean = deidentify(raw, salt=b"site secret")
    >>> import pydicom, io
    >>> ds = pydicom.dcmread(io.BytesIO(clean.data))
    >>> str(ds.PatientName), ds.PatientIdentityRemoved, ds.preamble == bytes(128)
    ('', 'YES', True)
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from braintumor.errors import CorruptImageError, ImageError
from braintumor.imaging.dicom_tags import DESCRIPTIVE_TAGS, FREE_TEXT_TAGS

if TYPE_CHECKING:
    from braintumor.imaging.types import ImageLimits

#: The PS3.15 edition of dicom-anonymizer's attribute table that we apply.
PROFILE_TABLE = "dicomfields_2026c"
PROFILE = "PS3.15 E.1-1 Basic Profile (dicom-anonymizer, 2026c)"  # LO: at most 64 characters
_SAFETY_NET_VRS = frozenset({"PN", "DA", "DT", "TM", "LT", "ST", "UT", "AE"})
#: Tag keywords kept in the stored metadata of a de-identified scan (what :func:`deidentified_tags` lets through).
SAFE_TAGS = frozenset(DESCRIPTIVE_TAGS) - frozenset(FREE_TEXT_TAGS)
# dicom-anonymizer keeps a module-level UID map for its own replacements: one call at a time, emptied after each.
_LIBRARY_LOCK = threading.Lock()

Action = Callable[[Any, tuple[int, int]], None]


@dataclass(frozen=True)
class Deidentified:
    """The cleaned file and what a report should know about the cleaning."""

    data: bytes
    removed: int
    burned_in_annotation: bool


def _profile_rules() -> tuple[dict[tuple[int, int], Action], list[tuple[int, int, int, int, Action]]]:
    """The library's actions per tag, split into single tags and ``(group, element, group mask, element mask)``
    ranges; UID replacement (U) is left to our salted safety net and X/Z/U* becomes X."""
    from dicomanonymizer import simpledicomanonymizer as lib

    # Where the profile offers a choice ("X unless Z or D is required by the IOD"), take the one that keeps the
    # least: the library always picks the dummy value (D); a stored copy needs no IOD conformance for type 3.
    least = {
        lib.empty_or_replace: lib.empty,  # Z/D
        lib.delete_or_replace: lib.delete,  # X/D
        lib.delete_or_empty_or_replace: lib.delete,  # X/Z/D
        lib.delete_or_empty_or_replace_UID: lib.delete,  # X/Z/U*
    }
    single: dict[tuple[int, int], Action] = {}
    ranges: list[tuple[int, int, int, int, Action]] = []
    for tag, chosen in lib.initialize_actions(PROFILE_TABLE).items():
        if chosen is lib.replace_UID:
            continue
        action = least.get(chosen, chosen)
        if len(tag) == 4:
            ranges.append((tag[0], tag[1], tag[2], tag[3], action))
        else:
            single[(tag[0], tag[1])] = action
    return single, ranges


_RULES: tuple[dict[tuple[int, int], Action], list[tuple[int, int, int, int, Action]]] | None = None


def _rules() -> tuple[dict[tuple[int, int], Action], list[tuple[int, int, int, int, Action]]]:
    global _RULES
    if _RULES is None:
        _RULES = _profile_rules()
    return _RULES


def deidentify(data: bytes, *, salt: bytes, limits: ImageLimits | None = None) -> Deidentified:
    """Return a de-identified copy of a DICOM file (see the module docstring).

    ``salt`` keys the UID mapping (the same salt maps the same UID to the same replacement); ``limits`` bounds the
    structure accepted (see :func:`braintumor.imaging.dicom_structure.check_structure`). Raises
    :class:`~braintumor.errors.ImageError` (``CorruptImageError`` …) when the file cannot be parsed, is too
    complex, or cannot be written back: an upload that cannot be cleaned must not be stored.
    """
    import pydicom

    from braintumor.imaging.dicom_structure import check_structure

    check_structure(data, limits)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types on damaged input
        raise CorruptImageError("cannot read this DICOM file to de-identify it") from exc
    try:
        burned = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
        with _LIBRARY_LOCK:
            try:
                removed = _clean(ds, salt)
            finally:
                from dicomanonymizer import simpledicomanonymizer as lib

                lib.dictionary.clear()
        _stamp(ds)
        buf = io.BytesIO()
        complete = "MediaStorageSOPClassUID" in ds.file_meta and "MediaStorageSOPInstanceUID" in ds.file_meta
        ds.save_as(buf, enforce_file_format=complete)
    except ImageError:
        raise
    except Exception as exc:  # writing back can fail on malformed values
        raise CorruptImageError("cannot de-identify this DICOM file; it was not stored") from exc
    return Deidentified(buf.getvalue(), removed, burned)


def _clean(ds: Any, salt: bytes) -> int:
    """Apply the profile and the safety net to ``ds`` and every item nested in it (breadth first, no recursion)."""
    from pydicom.uid import UID

    single, ranges = _rules()
    removed = 0

    def new_uid(old: str) -> str:
        if not old or UID(old).keyword:  # empty, or a standard UID (SOP class, transfer syntax, coding scheme …)
            return old
        digest = hmac.new(salt, old.encode(), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    ds.remove_private_tags()
    pending = [ds]
    while pending:
        dataset = pending.pop()
        for tag in list(dataset.keys()):
            if tag not in dataset:
                continue
            group, element = tag.group, tag.element
            if group & 0xFF00 in (0x5000, 0x6000):  # curves and overlays
                del dataset[tag]
                removed += 1
                continue
            action = single.get((group, element)) or next(
                (a for g, e, gm, em, a in ranges if group & gm == g & gm and element & em == e & em), None
            )
            if action is not None:
                _apply(action, dataset, (group, element))
                removed += 1
                if tag not in dataset:
                    continue
            elem = dataset[tag]
            if elem.VR == "SQ":
                pending.extend(item for item in (elem.value or []))
            elif elem.VR == "UI" and elem.value:
                values = list(elem.value) if elem.VM > 1 else [elem.value]
                mapped = [new_uid(str(v)) for v in values]
                if mapped != [str(v) for v in values]:
                    elem.value = mapped if elem.VM > 1 else mapped[0]
                    removed += 1
            elif elem.VR in _SAFETY_NET_VRS and elem.value not in (None, "", b""):
                elem.value = ""
                removed += 1
    return removed


def _apply(action: Action, dataset: Any, tag: tuple[int, int]) -> None:
    """Run one of the library's actions; where it has no dummy value for a VR (OW, AT …), remove the element."""
    try:
        action(dataset, tag)
    except NotImplementedError:
        del dataset[tag]


def _stamp(ds: Any) -> None:
    """Zero the preamble, rebuild the file meta information and record what was done."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    old = getattr(ds, "file_meta", None)
    syntax = old.get("TransferSyntaxUID") if old is not None else None
    if syntax is None:
        implicit, little = ds.original_encoding
        syntax = (
            ImplicitVRLittleEndian
            if implicit or implicit is None
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    ds.preamble = bytes(128)
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    ds.DeidentificationMethod = PROFILE
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = DicomSequence([code])


def deidentified_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Keep only the tags that survive de-identification (for the stored record and the default report)."""
    return {k: v for k, v in tags.items() if k in SAFE_TAGS}


# -- raster metadata -----------------------------------------------------------------------------------------
#: PNG chunks that define the pixels and their colour; everything else (text, EXIF, time, ICC, animation) goes.
PNG_KEEP = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD", b"pHYs"}
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """A copy of a JPEG or PNG without metadata (see the module docstring); other formats are refused."""
    if fmt == "jpeg":
        return strip_jpeg(data)
    if fmt == "png":
        return strip_png(data)
    raise CorruptImageError(f"cannot strip metadata from {fmt.upper()}")


def strip_png(data: bytes) -> bytes:
    """Keep the signature and the :data:`PNG_KEEP` chunks (verbatim, CRCs included), up to IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        raise CorruptImageError("not a PNG")
    out, pos, n = [_PNG_SIGNATURE], len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= n:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            raise CorruptImageError("damaged PNG: a chunk runs past the end of the file")
        if kind in PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)
    raise CorruptImageError("damaged PNG: no IEND chunk")


def strip_jpeg(data: bytes) -> bytes:
    """Rewrite the marker stream keeping SOF/DHT/DQT/DRI/SOS/DNL/RST data, JFIF (without thumbnail) and Adobe."""
    if not data.startswith(b"\xff\xd8"):
        raise CorruptImageError("not a JPEG")
    out, pos, n = [b"\xff\xd8"], 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise CorruptImageError("damaged JPEG: a marker was expected")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI: anything after it (appended files, MPO pictures) is dropped
            out.append(b"\xff\xd9")
            return b"".join(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stand-alone markers
            out.append(bytes((0xFF, marker)))
            continue
        if pos + 2 > n:
            raise CorruptImageError("damaged JPEG: truncated segment")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > n:
            raise CorruptImageError("damaged JPEG: a segment runs past the end of the file")
        payload = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xE0 and payload.startswith(b"JFIF\x00") and len(payload) >= 12:
            payload = payload[:12] + b"\x00\x00"  # same header, no thumbnail
        elif (0xE0 <= marker <= 0xEF and not (marker == 0xEE and payload.startswith(b"Adobe"))) or marker == 0xFE:
            continue  # APPn (EXIF, XMP, ICC, IPTC, JFXX thumbnails …) and COM
        out.append(bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload)
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or an RST
            start = pos
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    pos = n
                    break
                if data[pos + 1] == 0 or 0xD0 <= data[pos + 1] <= 0xD7:
                    pos += 2
                    continue
                break
            out.append(data[start:pos])
    raise CorruptImageError("damaged JPEG: no end-of-image marker")
