"""Render a raw class-activation map onto the original scan (NumPy + Pillow only: the server, batch scoring and
the UI all draw heatmaps with this one jet table and this one blend).

Example:
    >>> import numpy as np
    >>> scan = np.zeros((100, 200), np.uint8)
    >>> heat = np.zeros((100, 200), np.float32); heat[40:60, 90:110] = 1
    >>> overlay(scan, heat, alpha=0.4).shape
    (100, 200, 3)
"""

from __future__ import annotations

import numpy as np

from braintumor.imaging.transforms import resize_float, to_rgb


def normalise_map(cam: np.ndarray) -> np.ndarray:
    """Scale a raw map to 0–1 by its maximum (an all-zero map stays zero)."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0)
    top = float(cam.max()) if cam.size else 0.0
    return cam / top if top > 0 else np.zeros_like(cam)


def _jet_lut() -> np.ndarray:
    x = np.linspace(0, 1, 256)
    channels = [np.clip(1.5 - np.abs(4 * x - c), 0, 1) for c in (3, 2, 1)]
    return (np.stack(channels, axis=1) * 255).round().astype(np.uint8)


JET = _jet_lut()
_LUTS = {"jet": JET, "gray": np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)}


def colour_index(cam01: np.ndarray) -> np.ndarray:
    """The row of the colour table each value of a 0–1 map takes (uint8): ``colorize`` is ``table[index]``."""
    index: np.ndarray = np.clip(np.rint(np.asarray(cam01) * 255), 0, 255).astype(np.uint8)
    return index


def colorize(cam01: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map a 0–1 map to an RGB uint8 image with ``colormap`` (``jet`` or ``gray``)."""
    if colormap not in _LUTS:
        raise ValueError(f"unknown colormap {colormap!r}; choose from {', '.join(_LUTS)}")
    # np.take rather than table[index]: the same pixels, several times faster on a scan-sized map (fancy
    # indexing of rows by a 2-D index goes element by element; bench/results-api.md has the upload's figures)
    out: np.ndarray = np.take(_LUTS[colormap], colour_index(cam01), axis=0)
    return out


def overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend the colourised, normalised ``cam`` onto ``image`` (gray or RGB uint8).

    ``cam`` is resized to the image when their sizes differ; ``alpha`` is the heatmap's opacity, scaled
    per pixel by the map's strength so that cold regions leave the scan readable.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (h, w):
        cam = resize_float(cam, (w, h))
    cam01 = normalise_map(cam)
    weight = np.sqrt(cam01)
    weight *= alpha
    # rgb + (heat - rgb) · weight, in place on one float buffer: the same convex blend as
    # rgb · (1 − weight) + heat · weight (so no clipping is needed) with a third of the temporaries.
    out = colorize(cam01, colormap).astype(np.float32)
    out -= rgb
    out *= weight[:, :, None]
    out += rgb
    np.rint(out, out=out)
    blended: np.ndarray = out.astype(np.uint8)
    return blended
