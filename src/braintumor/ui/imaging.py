"""Client-side rendering of a scan and its heatmap, on the imaging core (:mod:`braintumor.imaging`).

Why client-side: the API stores the raw class-activation map (``cam``, float16 ``.npy``, longest side ≤ 256)
beside the original. Blending here makes the opacity slider and the zoom instant — no server call per change —
and it is the server's own code doing it: the scan is read by the core reader (the same pixel cap, DICOM frame
and windowing as the analysis), the map is blended by :func:`braintumor.imaging.overlay.overlay`. This module
adds only what a screen needs: errors worded for display, the zoom window, enlarging and the colour bar.

Example (the blend itself is :func:`braintumor.imaging.overlay.overlay`'s, shown there):
    >>> import numpy as np
    >>> window = view(np.zeros((100, 120), np.uint8), zoom=2.0, center=(0.5, 0.5))
    >>> window.shape, enlarge(window, 240).size
    ((50, 60), (240, 200))
    >>> colorbar(width=256, height=12).shape
    (12, 256, 3)
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from braintumor.errors import ImageError
from braintumor.imaging.io import load_image
from braintumor.imaging.overlay import JET, colorize, normalise_map, overlay
from braintumor.imaging.transforms import resize_float


class DisplayError(Exception):
    """The image cannot be shown in the browser (the server may still have analysed it)."""


def decode(data: bytes) -> np.ndarray:
    """Pixels to show: ``(H, W)`` gray or ``(H, W, 3)`` RGB uint8, as the analysis saw them. Raises
    :class:`DisplayError`."""
    try:
        return load_image(data).pixels
    except ImageError as exc:
        raise DisplayError(f"cannot display this image: {exc}") from None


def load_cam(data: bytes) -> np.ndarray:
    """The raw map from the API's ``.npy`` file (no pickles), as float32."""
    try:
        cam = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DisplayError(f"cannot read the heatmap: {exc}") from None
    if cam.ndim != 2:
        raise DisplayError(f"the heatmap has shape {cam.shape}, expected a 2-D map")
    return np.asarray(cam, dtype=np.float32)


def blend(pixels: np.ndarray, cam: np.ndarray, opacity: float) -> np.ndarray:
    """The heatmap over the scan: ``opacity`` 0 shows the scan alone, 1 the map wherever it is strong."""
    return overlay(pixels, cam, alpha=float(np.clip(opacity, 0, 1)))


def heatmap(pixels: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The map alone, coloured, at the scan's size."""
    h, w = pixels.shape[:2]
    return colorize(normalise_map(resize_float(np.asarray(cam, dtype=np.float32), (w, h))))


def view(pixels: np.ndarray, zoom: float, center: tuple[float, float]) -> np.ndarray:
    """The part of ``pixels`` seen at ``zoom`` (≥ 1) around ``center`` = (x, y) as fractions of the size."""
    zoom = max(1.0, float(zoom))
    h, w = pixels.shape[:2]
    cw, ch = max(1, round(w / zoom)), max(1, round(h / zoom))
    x0 = int(np.clip(round(center[0] * w - cw / 2), 0, w - cw))
    y0 = int(np.clip(round(center[1] * h - ch / 2), 0, h - ch))
    return pixels[y0 : y0 + ch, x0 : x0 + cw]


def enlarge(pixels: np.ndarray, width: int) -> Image.Image:
    """A PIL image ``width`` pixels wide (Lanczos), so both panels of a pair show at the same scale."""
    im = Image.fromarray(pixels)
    if im.width == width:
        return im
    height = max(1, round(im.height * width / im.width))
    return im.resize((width, height), Image.Resampling.LANCZOS)


def colorbar(width: int = 256, height: int = 12) -> np.ndarray:
    """The jet scale, low (blue) to high (red), as an RGB strip."""
    return np.asarray(np.repeat(JET[np.linspace(0, 255, width).astype(np.uint8)][None, :, :], height, axis=0))
