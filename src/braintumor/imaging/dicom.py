"""DICOM decoding: every quirk in one reader (torchxrayvision's lesson).

Order of operations, as the standard defines the display pipeline (PS3.3 C.11): decode the stored values
(RLE, JPEG lossless, JPEG-LS, JPEG 2000 … through pylibjpeg), pick one frame, apply the Modality LUT
(RescaleSlope/Intercept), then the VOI LUT or the window centre/width when present (else the full range),
then invert MONOCHROME1 so that "bright" always means "more signal". Colour images (RGB, YBR, palette)
become RGB.

Before pydicom sees a byte, :func:`check_structure` walks the element stream iteratively and refuses what
would make pydicom's recursive reader and writer blow up: sequences nested deeper than a cap (a 214 KB slice
nested 3000 deep crashed the server during de-identification), more data elements than a cap, declared
lengths that overrun their container, and deflated data sets that inflate past a cap. Then the frame size,
decoded bytes and frame count are checked from the header before the one frame we use is decoded.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from braintumor.errors import (
    CorruptImageError,
    ImageError,
    NoPixelDataError,
)
from braintumor.imaging.dicom_structure import check_structure
from braintumor.imaging.dicom_tags import DESCRIPTIVE_TAGS, IDENTIFYING_TAGS
from braintumor.imaging.types import ImageLimits, ImageMeta, LoadedImage, collapse_gray, first_line, scale_to_uint8

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def decode_dicom(data: bytes, *, limits: ImageLimits | None = None) -> LoadedImage:
    """Decode a DICOM file's bytes into an 8-bit :class:`LoadedImage` (see the module docstring)."""
    limits = limits or ImageLimits()
    check_structure(data, limits)
    try:
        return _decode(data, limits)
    except (ImageError, MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # pydicom converts values lazily (an unknown VR or a bad number surfaces anywhere), and the Rust RLE
        # decoder panics on some damaged segments with a PanicException, which is a BaseException.
        raise CorruptImageError(f"damaged DICOM: {first_line(exc)}") from exc


def decode_dicom_frames(
    data: bytes, indices: Sequence[int] | None = None, *, limits: ImageLimits | None = None
) -> Iterator[LoadedImage]:
    """Every frame of a DICOM file (or those at ``indices``), each an 8-bit :class:`LoadedImage`, for series and
    multi-frame objects (an enhanced MR is one file of many slices).

    The same checks as :func:`decode_dicom` run once, before any pixel is decoded (structure, frame size, frame
    count); frames are then decoded one at a time, so memory holds one frame. Windowing per frame reads the
    functional groups of an enhanced object (``FrameVOILUTSequence``, ``PixelValueTransformationSequence``) when
    the top level has none.
    """
    limits = limits or ImageLimits()
    check_structure(data, limits)
    try:
        ds, frames = _open(data, limits)
        wanted = list(range(frames)) if indices is None else list(indices)
        if any(not 0 <= i < frames for i in wanted):
            raise CorruptImageError(f"DICOM frame index out of range: the object has {frames} frame(s)")
        from pydicom.pixels.utils import iter_pixels

        own = {macro for macro, keywords in _FRAME_DISPLAY.items() if all(k in ds for k in keywords)}
        stream = iter_pixels(io.BytesIO(data), indices=wanted, transfer_syntax_uid=ds.file_meta.TransferSyntaxUID)
        for index in wanted:
            arr = next(stream)
            notes = [f"frame {index + 1} of {frames}"] if frames > 1 else []
            _frame_display_tags(ds, index, own)
            yield _loaded(arr, ds, frames, index, notes)
    except (ImageError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # as in decode_dicom: lazy value conversion, decoder panics
        raise CorruptImageError(f"damaged DICOM: {first_line(exc)}") from exc


def _open(data: bytes, limits: ImageLimits) -> tuple[Any, int]:
    """Parse the data set and check its pixel header against ``limits``; return it and its frame count."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise CorruptImageError(f"damaged DICOM: {first_line(exc)}") from exc
    _ensure_transfer_syntax(ds)

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        what = ds.get("Modality") or _sop_name(ds) or "object"
        raise NoPixelDataError(f"DICOM {what} has no pixel data (not an image)")

    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) if ds.get("SamplesPerPixel") is not None else 1)
        bits = int(ds.get("BitsAllocated") if ds.get("BitsAllocated") is not None else 8)
    except (TypeError, ValueError) as exc:
        raise CorruptImageError(f"damaged DICOM image header: {first_line(exc)}") from exc
    if not 1 <= bits <= 64 or not 1 <= samples <= 4:
        raise CorruptImageError(f"DICOM declares {bits} bits allocated and {samples} samples per pixel")
    limits.check_frame("DICOM", cols, rows, samples, (bits + 7) // 8)
    limits.check_frames("DICOM", frames)
    return ds, frames


def _decode(data: bytes, limits: ImageLimits) -> LoadedImage:
    ds, frames = _open(data, limits)
    notes: list[str] = []
    index = frames // 2 if frames > 1 else None
    try:
        from pydicom.pixels.utils import pixel_array

        # The transfer syntax is passed on: a preamble-less file has none of its own (see above).
        arr = (
            pixel_array(io.BytesIO(data), index=index, transfer_syntax_uid=ds.file_meta.TransferSyntaxUID)
            if index is not None
            else ds.pixel_array
        )
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # ValueError, RuntimeError, NotImplementedError … and pyo3's PanicException
        raise CorruptImageError(f"cannot decode DICOM pixel data: {first_line(exc)}") from exc
    if index is not None:
        notes.append(f"multi-frame DICOM: used frame {index + 1} of {frames} (the middle)")
    return _loaded(arr, ds, frames, index or 0, notes)


def _loaded(arr: np.ndarray, ds: Any, frames: int, index: int, notes: list[str]) -> LoadedImage:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        pixels = _to_display(arr, ds, photometric, notes)
    except Exception as exc:  # malformed LUTs, unsupported LUT depths …
        raise CorruptImageError(f"cannot apply the DICOM display transforms: {first_line(exc)}") from exc
    modality = str(ds.get("Modality")) if ds.get("Modality") else None
    cols, rows = int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0)
    return LoadedImage(
        pixels=pixels,
        meta=ImageMeta(
            source_format="dicom",
            original_size=(cols, rows),
            mode=photometric,
            bit_depth=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
            modality=modality,
            frames=frames,
            frame_index=index,
            dicom=_tags(ds),
            notes=tuple(notes),
        ),
    )


#: Display attributes an enhanced (multi-frame) object keeps in its functional groups, by the macro holding them.
_FRAME_DISPLAY = {
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth"),
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
}


def _frame_display_tags(ds: Any, index: int, own: set[str]) -> None:
    """Copy frame ``index``'s window and rescale from the functional groups to the top level, where the display
    pipeline reads them (per-frame values win over shared ones; the top level's own values are kept)."""
    groups = []
    for keyword, pick in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", index)):
        seq = ds.get(keyword)
        if seq is not None and len(seq) > pick:
            groups.append(seq[pick])
    for macro, keywords in _FRAME_DISPLAY.items():
        if macro in own:
            continue
        for group in groups:
            items = group.get(macro)
            if items:
                for k in keywords:
                    if k in items[0]:
                        setattr(ds, k, items[0][k].value)


def _to_display(arr: np.ndarray, ds: Any, photometric: str, notes: list[str]) -> np.ndarray:
    from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        notes.append("palette colour expanded with the DICOM colour LUT")
        top = 65535.0 if rgb.dtype.itemsize > 1 else 255.0
        return collapse_gray(scale_to_uint8(rgb, 0.0, top))
    if arr.ndim == 3:  # RGB / YBR (pydicom converts YBR to RGB)
        if arr.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            arr = scale_to_uint8(arr, 0.0, float(2**bits - 1))
        return collapse_gray(np.ascontiguousarray(arr))

    values = apply_modality_lut(arr, ds).astype(np.float64)
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        notes.append("rescale slope/intercept applied")
    if "VOILUTSequence" in ds:
        # The table's range, read through pydicom so that LUT Data stored as OW (bytes) works too.
        item = ds.VOILUTSequence[0]
        descriptor = item.LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        if int(descriptor[2]) == 8:
            # pydicom indexes the table in the entries' dtype, so an 8-bit table of more than 256 entries wraps
            # around; declaring 16-bit entries changes no value (only the table's range is used below).
            item.LUTDescriptor = [int(descriptor[0]), first, 16]
        lut = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds, index=0, prefer_lut=True)
        # The LUT is indexed by integer input values (pydicom warns on float input).
        values = apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0, prefer_lut=True).astype(np.float64)
        out = scale_to_uint8(values, float(lut.min()), float(lut.max()))
        notes.append("VOI LUT applied")
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = _first(ds.WindowCenter)
        width = max(_first(ds.WindowWidth), 1.0)
        # PS3.3 C.11.2.1.2.1, linear function.
        scaled = ((values - (center - 0.5)) / (width - 1.0 if width > 1 else 1.0) + 0.5) * 255.0
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        notes.append(f"window centre {center:g} / width {width:g} applied")
    else:
        out = scale_to_uint8(values)
        notes.append("no VOI window: full value range mapped to 8 bits")
    if photometric == "MONOCHROME1":
        out = 255 - out
        notes.append("MONOCHROME1 inverted")
    return out


def _ensure_transfer_syntax(ds: Any) -> None:
    """Preamble-less files often lack file meta; infer the transfer syntax from how they were read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None or implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _tags(ds: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword in DESCRIPTIVE_TAGS + IDENTIFYING_TAGS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        text = "\\".join(str(v) for v in value) if _is_multi(value) else str(value)
        if keyword == "SOPClassUID":
            text = getattr(value, "name", text)
        out[keyword] = text
    return out


def _sop_name(ds: Any) -> str | None:
    uid = ds.get("SOPClassUID")
    return str(getattr(uid, "name", uid)) if uid else None


def _is_multi(value: Any) -> bool:
    from pydicom.multival import MultiValue

    return isinstance(value, MultiValue | list | tuple)


def _first(value: Any) -> float:
    return float(value[0]) if _is_multi(value) else float(value)
