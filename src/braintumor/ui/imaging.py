"""Client-side rendering of a scan and its heatmap (NumPy + Pillow; pydicom only for DICOM originals).

Why client-side: the API stores the raw class-activation map (``cam``, float16 ``.npy``, longest side ≤ 256)
beside the original. Blending here makes the opacity slider and the zoom instant — no server call per
change — with the same formula as the server's overlay (``braintumor.explain.overlay``): the jet-coloured,
max-normalised map blended with a per-pixel weight ``opacity · sqrt(map)``, so cold regions stay readable.

DICOM originals are decoded for display only (the frame the model saw: the middle one of a multi-frame
file; Modality LUT, VOI LUT / window, MONOCHROME1 inverted).

Example:
    >>> import numpy as np
    >>> scan = np.zeros((100, 120), np.uint8)
    >>> cam = np.zeros((50, 60), np.float32); cam[20:30, 25:35] = 1
    >>> blend(scan, cam, opacity=0.4).shape
    (100, 120, 3)
    >>> view(blend(scan, cam, 0.4), zoom=2.0, center=(0.5, 0.5)).shape
    (50, 60, 3)
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

DICOM_MAGIC_OFFSET = 128


class DisplayError(Exception):
    """The image cannot be shown in the browser (the server may still have analysed it)."""


def _jet_lut() -> np.ndarray:
    x = np.linspace(0, 1, 256)
    channels = [np.clip(1.5 - np.abs(4 * x - c), 0, 1) for c in (3, 2, 1)]
    return np.asarray((np.stack(channels, axis=1) * 255).round(), dtype=np.uint8)


JET = _jet_lut()


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry ``DICM`` after a 128-byte preamble."""
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def decode(data: bytes) -> np.ndarray:
    """Pixels to show: ``(H, W)`` gray or ``(H, W, 3)`` RGB uint8. Raises :class:`DisplayError`."""
    if is_dicom(data):
        return _decode_dicom(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                return _to_uint8(np.asarray(im, dtype=np.float64))
            if im.mode in ("L", "RGB"):
                return np.asarray(im)
            if im.mode in ("LA", "La"):
                return np.asarray(im.convert("L"))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DisplayError(f"cannot display this image: {exc}") from None


def _decode_dicom(data: bytes) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

        ds = pydicom.dcmread(io.BytesIO(data))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        index = frames // 2 if frames > 1 else None
        arr = ds.pixel_array if index is None else ds.pixel_array[index]
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        if arr.ndim == 3:  # colour
            if photometric.startswith("YBR"):
                from pydicom.pixels.processing import convert_color_space

                arr = convert_color_space(arr, photometric, "RGB")
            return _to_uint8(arr.astype(np.float64))
        values = apply_modality_lut(arr, ds)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            values = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        out = _to_uint8(np.asarray(values, dtype=np.float64))
        return 255 - out if photometric == "MONOCHROME1" else out
    except Exception as exc:  # pydicom raises many types for odd files; the server's heatmap PNGs remain
        raise DisplayError(f"cannot display this DICOM image here ({type(exc).__name__})") from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
    if high <= low:
        return np.zeros(arr.shape, np.uint8)
    return np.asarray(np.clip((arr - low) / (high - low) * 255.0, 0, 255).round(), dtype=np.uint8)


def load_cam(data: bytes) -> np.ndarray:
    """The raw map from the API's ``.npy`` file (no pickles), as float32."""
    try:
        cam = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DisplayError(f"cannot read the heatmap: {exc}") from None
    if cam.ndim != 2:
        raise DisplayError(f"the heatmap has shape {cam.shape}, expected a 2-D map")
    return np.asarray(cam, dtype=np.float32)


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cam`` resized to ``size`` = (width, height), bilinear in float."""
    if cam.shape[::-1] == size:
        return cam
    resized = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to 0–1 by the maximum (negative values clipped; an all-zero map stays zero)."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0)
    top = float(cam.max()) if cam.size else 0.0
    return cam / top if top > 0 else np.zeros_like(cam)


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels


def colorize(cam01: np.ndarray) -> np.ndarray:
    """A 0–1 map as a jet-coloured RGB image."""
    index = np.clip(np.rint(cam01 * 255), 0, 255).astype(np.uint8)
    return np.asarray(JET[index])


def blend(pixels: np.ndarray, cam: np.ndarray, opacity: float) -> np.ndarray:
    """The heatmap over the scan: ``opacity`` 0 shows the scan alone, 1 the map wherever it is strong."""
    rgb = to_rgb(pixels).astype(np.float32)
    h, w = rgb.shape[:2]
    cam01 = normalise(resize_map(cam, (w, h)))
    heat = colorize(cam01).astype(np.float32)
    weight = (float(np.clip(opacity, 0, 1)) * np.sqrt(cam01))[:, :, None]
    return np.asarray(np.clip(rgb * (1 - weight) + heat * weight, 0, 255).round(), dtype=np.uint8)


def heatmap(pixels: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The map alone, coloured, at the scan's size."""
    h, w = pixels.shape[:2]
    return colorize(normalise(resize_map(cam, (w, h))))


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
