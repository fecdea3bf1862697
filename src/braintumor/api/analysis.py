"""One upload in, everything to store out: sniff, decode, de-identify, predict, render heatmaps.

Why a module of its own: the route only reads the upload and stores what this returns, so the whole CPU-bound
path runs in one worker thread, and nothing is stored unless every step succeeded (an image that is not an MRI,
or a DICOM that cannot be de-identified, leaves no trace).

Everything that touches the uploaded bytes — decoding under :class:`~braintumor.imaging.types.ImageLimits`, DICOM
de-identification, stripping JPEG/PNG metadata — is :func:`parse_upload`, which runs in a child process with a
deadline and a memory ceiling (:func:`braintumor.imaging.untrusted.run_isolated`); the model only ever sees pixels.

Example:
    >>> analysis = analyse(png_bytes, "scan.png", predictor, settings, salt=b"k")  # doctest: +SKIP
    >>> analysis.scan.outcome, [b.kind for b in analysis.blobs]  # doctest: +SKIP
    ('tumor', ['original', 'heatmap', 'overlay', 'cam', 'cam.0', 'cam.1'])
"""

from __future__ import annotations

import io
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from braintumor.api.config import Settings
from braintumor.api.schemas import StoredResult
from braintumor.errors import EmptyImageError, UnsupportedImageError
from braintumor.imaging.io import load_image, sniff_format
from braintumor.imaging.overlay import JET, colour_index, normalise_map, overlay
from braintumor.imaging.pools import thread_pool
from braintumor.imaging.transforms import resize_float
from braintumor.imaging.types import ImageLimits, LoadedImage
from braintumor.imaging.untrusted import run_isolated
from braintumor.inference.predictor import Prediction, Predictor
from braintumor.storage import Blob, NewScan
from braintumor.storage.deid import deidentified_tags, deidentify, strip_metadata

#: What the API takes, every format the imaging core reads (decided by content), and the type it is stored as:
#: BMP and TIFF are stored as a lossless PNG of the decoded pixels (TIFF tags can hold anything, identifiers too).
ACCEPTED = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "bmp": "image/png",
    "tiff": "image/png",
    "dicom": "application/dicom",
}
#: What the decoder child of an upload imports beyond the imaging core (imported once in the fork server).
DECODER_PRELOAD = ("braintumor.imaging.dicom", "braintumor.storage.deid", "dicomanonymizer")
PREVIEW_SIDE = 32
CAM_BLOB_SIDE = 256
DISCLAIMER = "Decision support, not a diagnosis: every result must be reviewed by a qualified clinician."


@dataclass(frozen=True)
class ParsedUpload:
    """What :func:`parse_upload` returns: the pixels, and the bytes to store (cleaned) with their tags."""

    image: LoadedImage
    original: bytes
    tags: dict[str, str]
    deidentified: bool
    burned_in_annotation: bool


@dataclass(frozen=True)
class Analysis:
    """A scan record and its blobs, ready for :meth:`Storage.add_scan`."""

    scan: NewScan
    blobs: list[Blob]


def clean_filename(name: str | None) -> str:
    """The upload's base name, without paths or control characters, at most 200 characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return base[:200] or "upload"


def analyse(data: bytes, filename: str | None, predictor: Predictor, settings: Settings, *, salt: bytes) -> Analysis:
    """Run the whole pipeline on one upload (see the module docstring); raises typed errors only."""
    if not data:
        raise EmptyImageError("empty upload: 0 bytes")
    fmt = sniff_format(data[:256])
    if fmt not in ACCEPTED:
        what = fmt.upper() if fmt else "not an image"
        raise UnsupportedImageError(
            f"only JPEG, PNG, BMP, TIFF and DICOM are accepted (decided by content); this is {what}"
        )
    args = (data, fmt, settings.image_limits, salt, settings.keep_dicom_identifiers)
    if settings.isolate_decoding:
        parsed = run_isolated(
            parse_upload,
            *args,
            timeout_s=settings.decode_timeout_s,
            memory_mb=settings.decode_memory_mb,
            preload=DECODER_PRELOAD,
        )
    else:
        parsed = parse_upload(*args)
    image = parsed.image
    prediction = predictor.predict(image)

    tags, notes = parsed.tags, list(image.meta.notes) + list(prediction.notes)
    if parsed.burned_in_annotation:
        notes.append("the DICOM declares burned-in annotations: identifying text may remain in the pixels")
    deidentified = parsed.deidentified

    blobs = [Blob("original", parsed.original, ACCEPTED[fmt])]
    preview = None
    member_kinds: list[str | None] = [None] * len(prediction.members)
    if prediction.cam is not None:
        rendered, preview = render_all(image, prediction, settings)
        blobs += rendered
        kinds = {b.kind for b in rendered}
        member_kinds = [k if (k := member_map_kind(i)) in kinds else None for i in range(len(prediction.members))]
    result = build_result(prediction, predictor, image, tags, notes, preview, deidentified, member_kinds)
    scan = NewScan(
        owner_id="",
        filename=clean_filename(filename),
        outcome=prediction.outcome,
        p_tumor=prediction.p_tumor,
        tumor_type=prediction.tumor_type,
        model_name=prediction.model_name,
        model_version=prediction.model_version,
        threshold=prediction.decision.threshold,
        result=result,
    )
    return Analysis(scan, blobs)


def parse_upload(data: bytes, fmt: str, limits: ImageLimits, salt: bytes, keep_identifiers: bool) -> ParsedUpload:
    """Decode an upload and make the copy to store: DICOM de-identified (unless the site keeps identifiers), JPEG
    and PNG without metadata, BMP and TIFF as a PNG of their pixels.

    Raises typed image errors only; meant to run in :func:`run_isolated`."""
    image = load_image(data, limits=limits)
    tags = dict(image.meta.dicom)
    if fmt == "dicom":
        if keep_identifiers:
            return ParsedUpload(image, data, tags, False, False)
        clean = deidentify(data, salt=salt, limits=limits)
        return ParsedUpload(image, clean.data, deidentified_tags(tags), True, clean.burned_in_annotation)
    if fmt in ("bmp", "tiff"):
        return ParsedUpload(image, png(image.pixels), tags, False, False)
    return ParsedUpload(image, strip_metadata(data, fmt), tags, False, False)


def build_result(
    prediction: Prediction,
    predictor: Predictor,
    image: LoadedImage,
    tags: dict[str, str],
    notes: list[str],
    preview: dict[str, Any] | None,
    deidentified: bool,
    member_kinds: list[str | None] | None = None,
) -> dict[str, Any]:
    """What the history keeps besides the indexed fields (a :class:`StoredResult`): the full output, the model
    card, image facts, and which blob holds each member's Grad-CAM map."""
    width, height = image.meta.original_size
    answer = prediction.as_dict()
    for member, kind in zip(answer["members"], member_kinds or [], strict=False):
        member["heatmap"] = kind
    image_info = {"format": image.meta.source_format, "width": width, "height": height,
                  "frames": image.meta.frames, "notes": notes}  # fmt: skip
    result = {"prediction": answer, "model_card": predictor.card_summary(), "heatmap": preview,
              "image": image_info, "dicom": tags, "deidentified": deidentified}  # fmt: skip
    StoredResult.model_validate(result)  # the contract the readers rely on
    return result


def member_map_kind(index: int) -> str:
    """The blob kind of ensemble member ``index``'s Grad-CAM map (``cam.0``, ``cam.1``, …; scans stored before
    maps were kept per member have an overlay PNG a member instead, ``overlay.0``, …)."""
    return f"cam.{index}"


#: The content type of a stored map (float16 ``.npy``).
NPY = "application/x-npy"


def map_size(width: int, height: int, side: int = CAM_BLOB_SIDE) -> tuple[int, int]:
    """``(width, height)`` scaled so that the longest side is at most ``side``: the size a stored map has."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def npy(values: np.ndarray) -> bytes:
    """A map as float16 ``.npy`` (a map is smooth and 0–1: half precision is plenty, half the bytes)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(values).astype(np.float16), allow_pickle=False)
    return buf.getvalue()


def map_npy(cam: np.ndarray, side: int = CAM_BLOB_SIDE) -> bytes:
    """A Grad-CAM map as float16 ``.npy``, longest side at most ``side``: a map is smooth, so this is all a viewer
    (or a DICOM Secondary Capture made later) needs to draw it at the scan's size."""
    height, width = cam.shape[:2]
    return npy(resize_float(np.asarray(cam, dtype=np.float32), map_size(width, height, side)))


def render_size(pixels: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int], float]:
    """``pixels`` with their longest side at most ``side`` (bilinear), their (width, height) and the scale."""
    height, width = pixels.shape[:2]
    scale = min(1.0, side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0:
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    return pixels, size, scale


def render_all(image: LoadedImage, prediction: Prediction, settings: Settings) -> tuple[list[Blob], dict[str, Any]]:
    """The heatmap and overlay PNGs (longest side at most ``max_render_side``), the raw map (:func:`map_npy`), one
    map a member when there are several (one member's map is the ensemble's), and a 32×32 preview for the
    response.

    The two PNGs are encoded at once in a thread pool (zlib releases the GIL), the maps and the preview meanwhile
    in this thread. The heatmap is a palette PNG of the colour table's indices: the same pixels as its RGB form, a
    third of the bytes to deflate. A member's map is stored, not its overlay: the viewer blends it as it blends
    the ensemble's (the same :func:`~braintumor.imaging.overlay.overlay`). An overlay PNG a member was most of an
    upload's time on a scan-sized slice (two more full-size RGB PNGs: ``bench/results-api.md``).
    """
    if prediction.cam is None:
        raise ValueError("render_all needs a prediction made with its heatmap")
    pixels, size, _ = render_size(image.pixels, settings.max_render_side)
    shown = resize_float(np.asarray(prediction.cam, dtype=np.float32), size)
    pool = thread_pool("render", os.cpu_count() or 1)
    heatmap = pool.submit(indexed_png, colour_index(normalise_map(shown)), JET)
    overlaid = pool.submit(overlay_png, pixels, shown, settings.overlay_alpha)
    maps = [Blob("cam", map_npy(prediction.cam), NPY)]
    if len(prediction.members) > 1:
        small = map_size(*image.meta.original_size)
        maps += [Blob(member_map_kind(i), npy(cam), NPY) for i, m in enumerate(prediction.members)
                 if (cam := m.map_at(small)) is not None]  # fmt: skip
    tiny = normalise_map(resize_float(prediction.cam, (PREVIEW_SIDE, PREVIEW_SIDE)))
    preview = {"width": PREVIEW_SIDE, "height": PREVIEW_SIDE, "values": np.round(tiny.astype(np.float64), 3).tolist()}
    pngs = [Blob("heatmap", heatmap.result(), "image/png"), Blob("overlay", overlaid.result(), "image/png")]
    return [*pngs, *maps], preview


def overlay_png(pixels: np.ndarray, cam: np.ndarray, alpha: float) -> bytes:
    """``cam`` blended onto ``pixels`` (:func:`~braintumor.imaging.overlay.overlay`) as a PNG."""
    return png(overlay(pixels, cam, alpha=alpha))


def png(pixels: np.ndarray) -> bytes:
    """``pixels`` as a PNG, compressed for speed (zlib level 1)."""
    # zlib level 1: the four PNGs of an upload (heatmap, overlay, one overlay a member) were a third of /predict's
    # time at level 4, for files about 5% smaller (measured on the seed's slices, bench/results-api.md).
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def indexed_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """``palette[indices]`` (a ``(256, 3)`` colour table) as a palette PNG, compressed for speed (zlib level 1):
    decoded, the same pixels as the RGB image, from a third of the bytes."""
    buf = io.BytesIO()
    rows = np.ascontiguousarray(indices, dtype=np.uint8)
    image = Image.frombytes("P", (rows.shape[1], rows.shape[0]), rows.tobytes())
    image.putpalette(np.asarray(palette, dtype=np.uint8).tobytes())
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()
