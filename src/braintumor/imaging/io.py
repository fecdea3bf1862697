"""Read an image from a path or bytes, deciding the format by content, never by extension.

The datasets we serve lie about their extensions (``.jpg`` files that are PNG, RGBA and palette images,
16-bit PNGs), and clinical users upload DICOM. :func:`load_image` turns all of them into 8-bit pixels plus
an :class:`ImageMeta` that later stages (letterbox, heatmap mapping, reports) read instead of guessing.

Uploads are hostile input, so every cost is bounded by :class:`ImageLimits` *before* anything is decoded: the
pixels of the frame we decode, its decoded bytes (width × height × channels × bytes per sample), the number of
frames, and for DICOM the nesting depth, element count and declared lengths (see
:func:`braintumor.imaging.dicom_structure.check_structure`). Only one frame is ever decoded: the middle one, except
for animated PNGs, where reaching a later frame means decoding every frame before it, so the default image (the
first) is used.

Example:
    >>> from braintumor.imaging.io import load_image
    >>> img = load_image("scan.dcm")  # doctest: +SKIP
    >>> img.pixels.shape, img.meta.source_format, img.meta.modality  # doctest: +SKIP
    ((64, 64), 'dicom', 'MR')
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from braintumor.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from braintumor.imaging.types import (
    DEFAULT_MAX_PIXELS,
    ImageLimits,
    ImageMeta,
    LoadedImage,
    collapse_gray,
    first_line,
    scale_to_uint8,
)

ImageSource = str | Path | bytes | bytearray | memoryview

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    # DICOM first: its 128-byte preamble may itself hold a TIFF header (dual-personality files).
    (b"DICM", 128, "dicom"),
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
)
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF"}


GZIP_MAGIC = b"\x1f\x8b"


def is_nifti(head: bytes, *, path: str | None = None) -> bool:
    """Whether ``head`` (a file's first bytes) starts a single-file NIfTI-1 or NIfTI-2 image; a gzipped head is
    inflated just enough to look (from ``path`` when given, since 352 compressed bytes may not hold the header)."""
    if head[:2] == GZIP_MAGIC:
        try:
            if path is not None:
                with gzip.open(path, "rb") as fh:
                    head = fh.read(352)
            else:
                head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 352)
        except (OSError, EOFError, zlib.error):
            return False
    return head[344:348] == b"n+1\x00" or head[4:8] == b"n+2\x00"


def sniff_format(head: bytes) -> str | None:
    """Name the image format of ``head`` (the first bytes of a file), or ``None`` if we do not read it.

    DICOM is recognised by its ``DICM`` marker at offset 128, or, for preamble-less files, by a first
    element in group 0x0002 or 0x0008 (either byte order), as some PACS exports are written.
    """
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) >= 8:
        little = head[:2] in (b"\x02\x00", b"\x08\x00") and head[3] == 0
        big = head[:2] in (b"\x00\x02", b"\x00\x08") and head[2] == 0
        if little or big:
            return "dicom"
    return None


def read_bytes(source: ImageSource) -> bytes:
    """Return the raw bytes of ``source`` (a path or a bytes-like object)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"is a directory, not an image: {path}") from exc
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, limits: ImageLimits | None = None
) -> LoadedImage:
    """Decode ``source`` into 8-bit pixels and metadata.

    ``limits`` bounds the work (default: :class:`ImageLimits` with ``max_pixels``). Raises a subclass of
    :class:`~braintumor.errors.ImageError` with a one-line reason for empty, truncated, unsupported, oversized,
    over-complex or pixel-less input.
    """
    limits = limits or ImageLimits(max_pixels=max_pixels)
    data = read_bytes(source)
    if not data:
        raise EmptyImageError("empty input: 0 bytes")
    fmt = sniff_format(data[:256])
    if fmt is None:
        raise UnsupportedImageError(
            "unsupported file type: not JPEG, PNG, BMP, TIFF or DICOM (decided by content, not extension)"
        )
    if fmt == "dicom":
        from braintumor.imaging.dicom import decode_dicom

        return decode_dicom(data, limits=limits)
    try:
        return _decode_raster(data, fmt, limits=limits)
    except (ImageError, MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a decoder failing past the checks below (mode conversion, EXIF parsing …)
        raise CorruptImageError(f"damaged {fmt.upper()}: {first_line(exc)}") from exc


#: Channels and bytes per sample of each PIL mode (what one decoded pixel costs).
_MODE_COST = {
    "1": (1, 1),
    "L": (1, 1),
    "P": (1, 1),
    "LA": (2, 1),
    "PA": (2, 1),
    "La": (2, 1),
    "RGB": (3, 1),
    "YCbCr": (3, 1),
    "LAB": (3, 1),
    "HSV": (3, 1),
    "RGBA": (4, 1),
    "RGBa": (4, 1),
    "RGBX": (4, 1),
    "CMYK": (4, 1),
    "I;16": (1, 2),
    "I;16B": (1, 2),
    "I;16L": (1, 2),
    "I;16N": (1, 2),
    "I": (1, 4),
    "F": (1, 4),
}


def _decode_raster(data: bytes, fmt: str, *, limits: ImageLimits) -> LoadedImage:
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # Our own cap below decides; PIL's global threshold only warns before it errors.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image too large: {exc}") from exc
    except Exception as exc:  # PIL raises many types for damaged headers
        raise CorruptImageError(f"damaged {fmt.upper()} header: {first_line(exc)}") from exc
    width, height = im.size
    what = fmt.upper()
    _check_frame(im, what, limits)
    try:
        # An animated PNG declares its frame count up front (acTL); a TIFF walks its page chain here.
        n_frames = int(getattr(im, "n_frames", 1))
    except Exception as exc:
        raise CorruptImageError(f"damaged {what} frame list: {first_line(exc)}") from exc
    limits.check_frames(what, n_frames)
    notes: list[str] = []
    frame_index = 0
    if n_frames > 1 and fmt == "png":
        # APNG frames build on one another: frame k costs decoding frames 0..k, so take the default image.
        notes.append(f"animated PNG: used frame 1 of {n_frames} (the default image)")
    elif n_frames > 1:
        frame_index = n_frames // 2
        try:
            im.seek(frame_index)
        except Exception as exc:
            raise CorruptImageError(f"damaged {what} frame {frame_index + 1}: {first_line(exc)}") from exc
        # Frames may differ in size (a TIFF with a thumbnail page): cap and report the frame we decode.
        width, height = im.size
        _check_frame(im, what, limits)
        notes.append(f"multi-frame {what}: used frame {frame_index + 1} of {n_frames} (the middle)")
    mode = im.mode
    try:
        im.load()
    except Exception as exc:
        raise CorruptImageError(f"truncated or damaged {fmt.upper()} data: {first_line(exc)}") from exc
    pixels, bit_depth = _to_uint8(im, notes)
    return LoadedImage(
        pixels=pixels,
        meta=ImageMeta(
            source_format=fmt,
            original_size=(width, height),
            mode=mode,
            bit_depth=bit_depth,
            frames=n_frames,
            frame_index=frame_index,
            notes=tuple(notes),
        ),
    )


def _check_frame(im: Image.Image, what: str, limits: ImageLimits) -> None:
    width, height = im.size
    channels, sample_bytes = _MODE_COST.get(im.mode, (4, 4))  # an unlisted mode is costed as the widest
    limits.check_frame(what, width, height, channels, sample_bytes)


def _to_uint8(im: Image.Image, notes: list[str]) -> tuple[np.ndarray, int]:
    """Convert any PIL mode to uint8 gray ``(H, W)`` or RGB ``(H, W, 3)``; return the source bit depth."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        bit_depth = 32 if mode in ("I", "F") else 16
        notes.append(f"{bit_depth}-bit image scaled to 8 bits by its min–max range")
        return scale_to_uint8(arr), bit_depth
    if mode == "1":
        return np.asarray(im.convert("L")), 1
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        notes.append("palette image expanded to colour")
    if mode in ("LA", "PA"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        # Composite on black, the letterbox colour, so transparent borders match our padding.
        background = Image.new("RGB", im.size, (0, 0, 0))
        background.paste(im, mask=im.getchannel("A"))
        im = background
        notes.append("alpha channel composited on black")
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
        notes.append(f"{mode} converted to RGB")
    arr = np.asarray(im)
    return collapse_gray(arr), 8


def describe(image: LoadedImage) -> dict[str, Any]:
    """A JSON-ready summary of an image's metadata (for CLIs, logs and reports)."""
    m = image.meta
    return {
        "format": m.source_format,
        "width": m.original_size[0],
        "height": m.original_size[1],
        "mode": m.mode,
        "bit_depth": m.bit_depth,
        "gray": image.is_gray,
        "modality": m.modality,
        "frames": m.frames,
        "frame_index": m.frame_index,
        "dicom": dict(m.dicom),
        "notes": list(m.notes),
    }
