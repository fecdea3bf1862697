"""The DICOM element stream checked without pydicom, before pydicom reads (or de-identification writes) a byte.

Why: pydicom's reader and writer recurse per sequence level, so a 214 KB slice nested 3000 deep crashed the
server during de-identification. :func:`check_structure` walks the stream iteratively, reading no values, and
refuses sequences nested deeper than a cap, more data elements than a cap, declared lengths that overrun their
container, and deflated data sets that inflate past a cap. The cost is linear in the number of elements.

Example:
    >>> check_structure(b"")  # an empty stream holds nothing to refuse
"""

from __future__ import annotations

import struct
import zlib

from braintumor.errors import DicomStructureError, ImageTooLargeError
from braintumor.imaging.types import ImageLimits, inflate_capped

# -- the walk -----------------------------------------------------------------------------------------
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_PIXEL_DATA = (0x7FE0, 0x0010)
#: VRs whose explicit encoding has two reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL"}
    | {b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)


class _Frame:
    """One open container while walking: the data set, a sequence, an item, or encapsulated pixel data."""

    __slots__ = ("end", "implicit", "kind")

    def __init__(self, kind: str, end: int | None, implicit: bool) -> None:
        self.kind, self.end, self.implicit = kind, end, implicit


def check_structure(data: bytes, limits: ImageLimits | None = None) -> None:
    """Walk the DICOM element stream without pydicom (iteratively, reading no values) and refuse what is nested
    deeper, holds more elements, or declares longer values than ``limits`` allow.

    Raises :class:`~braintumor.errors.DicomStructureError` (or :class:`~braintumor.errors.ImageTooLargeError` for
    an element count or inflated size over its cap). The cost is linear in the number of elements and bounded by
    ``limits.max_dicom_elements``.
    """
    limits = limits or ImageLimits()
    pos = 132 if data[128:132] == b"DICM" else 0
    pos, syntax, counted = _walk_file_meta(data, pos)
    if syntax == _DEFLATED:
        body = _inflate(data[pos:], limits.max_inflated_bytes)
        _walk(body, 0, implicit=False, little=True, limits=limits, counted=counted)
        return
    if syntax is None:
        implicit, little = _guess_encoding(data, pos)
    else:
        implicit, little = syntax == _IMPLICIT_LE, syntax != _EXPLICIT_BE
    _walk(data, pos, implicit=implicit, little=little, limits=limits, counted=counted)


def _walk_file_meta(data: bytes, pos: int) -> tuple[int, str | None, int]:
    """Skip group 0x0002 (always explicit VR little endian); return where the data set starts and its syntax."""
    syntax, counted, n = None, 0, len(data)
    while pos + 8 <= n:
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > n:
                raise DicomStructureError("damaged DICOM: the file meta information is truncated")
            length, header = struct.unpack_from("<I", data, pos + 8)[0], 12
        elif vr in _SHORT_VRS:
            length, header = struct.unpack_from("<H", data, pos + 6)[0], 8
        else:
            raise DicomStructureError("damaged DICOM: unreadable file meta information")
        if length == _UNDEFINED or pos + header + length > n:
            raise DicomStructureError("damaged DICOM: a file meta element overruns the file")
        if elem == 0x0010:
            syntax = data[pos + header : pos + header + length].rstrip(b"\x00 ").decode("ascii", "replace")
        counted += 1
        pos += header + length
    return pos, syntax, counted


def _guess_encoding(data: bytes, pos: int) -> tuple[bool, bool]:
    """Implicit/explicit and byte order of a data set without file meta, guessed the way pydicom does."""
    head = data[pos : pos + 8]
    little = not (len(head) >= 4 and head[0] == 0 and head[1] != 0 and head[2] == 0)
    return not _looks_like_vr(head[4:6]), little


def _looks_like_vr(raw: bytes) -> bool:
    """pydicom's test: two upper-case ASCII letters where an explicit VR would be."""
    return len(raw) == 2 and 0x40 < raw[0] < 0x5B and 0x40 < raw[1] < 0x5B


def _inflate(body: bytes, cap: int) -> bytes:
    """Inflate a deflated data set, refusing one that would grow past ``cap`` bytes (a zip bomb)."""
    try:
        return inflate_capped(body, cap, wbits=-zlib.MAX_WBITS, what="the deflated DICOM data set")
    except zlib.error as exc:
        raise DicomStructureError(f"damaged DICOM: the deflated data set cannot be inflated ({exc})") from exc


def _walk(data: bytes, pos: int, *, implicit: bool, little: bool, limits: ImageLimits, counted: int) -> None:
    n = len(data)
    order = "<" if little else ">"
    tag_fmt, u16, u32 = order + "HH", order + "H", order + "I"
    stack = [_Frame("dataset", n, _first_is_implicit(data, pos, implicit, order))]
    depth = 0
    elements = counted

    def bound() -> int:
        # The innermost defined end: an element may not run past any container that holds it.
        for frame in reversed(stack):
            if frame.end is not None:
                return frame.end
        return n

    def count() -> None:
        nonlocal elements
        elements += 1
        if elements > limits.max_dicom_elements:
            raise ImageTooLargeError(
                f"DICOM too complex: more than {limits.max_dicom_elements:,} data elements (the cap)"
            )

    while stack:
        top = stack[-1]
        if top.end is not None and pos >= top.end:
            if pos > top.end:
                raise DicomStructureError("damaged DICOM: an element runs past the end of its sequence item")
            stack.pop()
            depth -= top.kind == "sequence"
            continue
        if top.end is None and pos >= bound() and bound() < n:
            raise DicomStructureError("damaged DICOM: an undefined-length sequence is not closed inside its item")
        if pos + 8 > n:
            if pos < n and top.kind == "dataset" and not data[pos:].strip(b"\x00"):
                return  # trailing padding
            if top.end is None or pos < n:
                raise DicomStructureError("damaged DICOM: the data ends inside an element or an open sequence")
            return
        tag = struct.unpack_from(tag_fmt, data, pos)
        if tag[0] == 0xFFFE:  # items and delimiters: a 4-byte length, never a VR
            length = struct.unpack_from(u32, data, pos + 4)[0]
            pos += 8
            if top.kind in ("sequence", "pixels") and tag == _ITEM:
                count()
                if length == _UNDEFINED:
                    if top.kind == "pixels":
                        raise DicomStructureError("damaged DICOM: a pixel data fragment has no length")
                    stack.append(_Frame("item", None, _first_is_implicit(data, pos, top.implicit, order)))
                    continue
                if pos + length > bound():
                    raise DicomStructureError(
                        f"damaged DICOM: an item declares {length:,} bytes, more than its container holds"
                    )
                if top.kind == "pixels":
                    pos += length
                else:
                    stack.append(_Frame("item", pos + length, _first_is_implicit(data, pos, top.implicit, order)))
                continue
            if tag == _SEQ_END and top.kind in ("sequence", "pixels") and top.end is None:
                stack.pop()
                depth -= top.kind == "sequence"
                continue
            if tag == _ITEM_END and top.kind == "item" and top.end is None:
                stack.pop()
                continue
            if tag in (_SEQ_END, _ITEM_END) and top.end is not None:
                continue  # a stray delimiter inside a defined length: pydicom skips it too
            raise DicomStructureError(f"damaged DICOM: unexpected ({tag[0]:04X},{tag[1]:04X}) in a {top.kind}")
        if top.kind in ("sequence", "pixels"):
            raise DicomStructureError(f"damaged DICOM: a {top.kind} holds ({tag[0]:04X},{tag[1]:04X}), not an item")
        count()
        if top.implicit:
            vr, length, header = b"", struct.unpack_from(u32, data, pos + 4)[0], 8
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:  # any other VR, known or not, has a 2-byte length (as pydicom reads it)
                if pos + 12 > n:
                    raise DicomStructureError("damaged DICOM: the data ends inside an element header")
                length, header = struct.unpack_from(u32, data, pos + 8)[0], 12
            else:
                length, header = struct.unpack_from(u16, data, pos + 6)[0], 8
        pos += header
        if length == _UNDEFINED:
            if tag == _PIXEL_DATA and vr != b"SQ":
                stack.append(_Frame("pixels", None, top.implicit))
                continue
            if vr not in (b"", b"SQ", b"UN"):
                raise DicomStructureError(f"damaged DICOM: undefined length for a {vr.decode('latin-1')} element")
            depth += 1
            _check_depth(depth, limits)
            # An undefined-length UN is a sequence in implicit VR little endian (PS3.5 6.2.2).
            stack.append(_Frame("sequence", None, top.implicit or vr == b"UN"))
            continue
        if pos + length > bound():
            raise DicomStructureError(
                f"damaged DICOM: element ({tag[0]:04X},{tag[1]:04X}) declares {length:,} bytes, "
                f"more than the {max(0, bound() - pos):,} that remain"
            )
        if vr == b"SQ" or (vr in (b"", b"UN") and data[pos : pos + 4] in (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")):
            depth += 1
            _check_depth(depth, limits)
            stack.append(_Frame("sequence", pos + length, top.implicit or vr == b"UN"))
            continue
        pos += length


def _first_is_implicit(data: bytes, pos: int, implicit: bool, order: str) -> bool:
    """pydicom re-checks the VR encoding at the start of each data set: an explicit file may hold implicit items."""
    if pos + 6 > len(data) or struct.unpack_from(order + "H", data, pos)[0] == 0xFFFE:
        return implicit
    return not _looks_like_vr(data[pos + 4 : pos + 6])


def _check_depth(depth: int, limits: ImageLimits) -> None:
    if depth > limits.max_dicom_depth:
        raise DicomStructureError(
            f"DICOM too complex: sequences nested deeper than {limits.max_dicom_depth} levels (the cap)"
        )
