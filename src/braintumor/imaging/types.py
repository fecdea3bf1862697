"""The image types every reader and consumer shares: decoded pixels, their metadata, and what decoding may cost.

Why a module of its own: the raster reader (:mod:`braintumor.imaging.io`), the DICOM reader
(:mod:`braintumor.imaging.dicom`), the model's preprocessing and the UI all speak :class:`LoadedImage`; keeping
the types here lets the readers depend on them without depending on each other. The one capped inflation that a
deflated DICOM data set and a gzipped NIfTI volume both go through (:func:`inflate_capped`) lives here for the
same reason.

Example:
    >>> import numpy as np
    >>> image = LoadedImage(np.zeros((4, 6), np.uint8), ImageMeta("png", (6, 4), "L", 8))
    >>> image.is_gray, image.meta.original_size
    (True, (6, 4))
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from braintumor.errors import CorruptImageError, ImageTooLargeError

#: Default cap on decoded pixels (width × height of the frame we decode): 40 MP is far beyond any MRI slice
#: and keeps a hostile upload (a "decompression bomb") from exhausting memory.
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost to decode; checked from headers before any pixel is decoded.

    ``max_pixels`` and ``max_frame_bytes`` bound the one frame we decode (``max_frame_bytes``: width × height ×
    channels × bytes per sample, as stored); ``max_frames`` bounds the frame count a file may declare;
    ``max_dicom_depth``, ``max_dicom_elements`` and ``max_inflated_bytes`` bound the DICOM structure (sequence
    nesting, data elements including sequence items, and a deflated data set once inflated). The defaults suit
    local files; the API passes tighter ones from its settings.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frame_bytes: int = 256 * 1024 * 1024
    max_frames: int = 10_000
    max_dicom_depth: int = 16
    max_dicom_elements: int = 100_000
    max_inflated_bytes: int = 256 * 1024 * 1024

    def check_frame(self, what: str, width: int, height: int, channels: int, bytes_per_sample: int) -> None:
        """Refuse a frame whose size or decoded bytes pass the caps (``what`` names the format in messages)."""
        if width <= 0 or height <= 0:
            raise CorruptImageError(f"{what} declares an empty image ({width}×{height})")
        if width * height > self.max_pixels:
            raise ImageTooLargeError(
                f"image too large: {width}×{height} = {width * height:,} pixels exceeds the cap of {self.max_pixels:,}"
            )
        decoded = width * height * max(1, channels) * max(1, bytes_per_sample)
        if decoded > self.max_frame_bytes:
            raise ImageTooLargeError(
                f"image too large: {width}×{height}×{channels}×{bytes_per_sample} bytes = {decoded / 1048576:.1f} MB "
                f"decoded exceeds the cap of {self.max_frame_bytes / 1048576:g} MB"
            )

    def check_frames(self, what: str, frames: int) -> None:
        if frames < 1:
            raise CorruptImageError(f"{what} declares {frames} frames")
        if frames > self.max_frames:
            raise ImageTooLargeError(f"too many frames: {what} declares {frames:,}, the cap is {self.max_frames:,}")


@dataclass(frozen=True)
class ImageMeta:
    """What we know about an image besides its pixels.

    ``original_size`` is ``(width, height)`` of the decoded pixels, before any resizing; ``mode`` is the
    source's colour model (``"L"``, ``"RGB"``, ``"RGBA"``, ``"P"``, ``"I;16"``, ``"MONOCHROME1"`` …);
    ``notes`` records every lossy or surprising decision made while reading (alpha dropped, middle frame
    chosen, VOI window applied …) so that a report can say it.
    """

    source_format: str
    original_size: tuple[int, int]
    mode: str
    bit_depth: int
    modality: str | None = None
    frames: int = 1
    frame_index: int = 0
    dicom: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels and their metadata.

    ``pixels`` is ``uint8``; shape ``(H, W)`` for grayscale content (including "RGB" files whose three
    channels are equal, as almost all MRI exports are) or ``(H, W, 3)`` for real colour. Use
    :func:`braintumor.imaging.transforms.to_rgb` to get the three channels a backbone expects.
    """

    pixels: np.ndarray
    meta: ImageMeta

    @property
    def is_gray(self) -> bool:
        return self.pixels.ndim == 2


def collapse_gray(arr: np.ndarray) -> np.ndarray:
    """Return ``arr`` as ``(H, W)`` when it is gray (2-D, or three equal channels), else unchanged."""
    if arr.ndim == 3 and arr.shape[2] == 3:
        first = arr[..., 0]
        if np.array_equal(first, arr[..., 1]) and np.array_equal(first, arr[..., 2]):
            return np.ascontiguousarray(first)
    return arr


def scale_to_uint8(arr: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linearly map ``[low, high]`` (default: the array's min and max) onto 0–255, clipping outside."""
    lo = float(np.min(arr)) if low is None else low
    hi = float(np.max(arr)) if high is None else high
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    out = (np.asarray(arr, dtype=np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def inflate_capped(data: bytes, cap: int, *, wbits: int, what: str) -> bytes:
    """``data`` inflated by zlib with ``wbits`` (``-zlib.MAX_WBITS``: a raw deflate stream, ``16 + zlib.MAX_WBITS``:
    gzip), refusing output past ``cap`` bytes (a zip or gzip bomb stops at the cap).

    Raises :class:`~braintumor.errors.ImageTooLargeError` ("``what`` inflates beyond the cap of … MB") when more
    would come out; a damaged stream raises ``zlib.error``, which the caller turns into its own corrupt-input error.

    >>> inflate_capped(zlib.compress(b"slice", wbits=31), 1024, wbits=31, what="the volume")
    b'slice'
    """
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, cap)
    if inflater.unconsumed_tail:
        raise ImageTooLargeError(f"{what} inflates beyond the cap of {cap / 1048576:g} MB")
    return out
