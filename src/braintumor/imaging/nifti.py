"""NIfTI volumes (``.nii``, ``.nii.gz``, as in BraTS-style research data) read as a series of axial slices.

Why here, beside the DICOM reader: a volume must reach the model as the same 8-bit 2-D slices a DICOM series
gives, in the same orientation (anterior at the top, the patient's right on the image's left, as radiology shows
an axial slice and as the training slices are), under the same caps. nibabel reads the header and the voxels
(imported only when a volume is read); the axial axis comes from the affine, not from the array's order: the
volume is brought to the closest canonical (RAS+) orientation by flips and axis swaps only (no resampling), so its
third axis runs inferior → superior and slice 0 is the lowest.

Hostile input is bounded like every other upload: the format is decided by content (gzip, then the NIfTI-1/2
magic), a gzipped file is inflated with a cap, the header's dimensions are checked against
:class:`~braintumor.imaging.series.SeriesLimits` (slices, bytes) and the per-slice
:class:`~braintumor.imaging.types.ImageLimits` before a voxel is read.

Intensities: one window for the whole volume, from its lowest value (the background stays black) to the 99.5th
percentile of the voxels above it (a few bright voxels do not set the scale), so that an edge slice with little
tissue stays dark instead of being stretched to full contrast; the input gate then calls it not assessable.

Example:
    >>> series = read_nifti("volume.nii.gz")  # doctest: +SKIP
    >>> len(series.slices), series.ordered_by  # doctest: +SKIP
    (155, 'volume axis')
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.errors import CorruptImageError, ImageError, UnsupportedImageError
from braintumor.imaging.io import GZIP_MAGIC, ImageSource, is_nifti, read_bytes
from braintumor.imaging.series import Series, SeriesLimits, SliceRef
from braintumor.imaging.types import ImageLimits, ImageMeta, LoadedImage, first_line, inflate_capped, scale_to_uint8


def read_nifti(source: ImageSource, *, name: str | None = None, limits: SeriesLimits | None = None) -> Series:
    """Read a NIfTI volume's header and voxels into a :class:`Series` of axial slices (see the module docstring).

    Raises an :class:`~braintumor.errors.ImageError` subclass with a one-line reason for what is not a single-file
    NIfTI, damaged, not 3-D, or past the limits.
    """
    limits = limits or SeriesLimits()
    label = name or (str(source) if isinstance(source, str | Path) else "<bytes>")
    raw = _inflate(read_bytes(source), limits)
    if not is_nifti(raw[:352]):
        raise UnsupportedImageError("not a NIfTI-1/NIfTI-2 single-file image (.nii or .nii.gz)")
    import nibabel as nibabel_module

    nibabel: Any = nibabel_module  # partly untyped; used through Any
    version = 1 if raw[344:348] == b"n+1\x00" else 2
    klass: Any = nibabel.Nifti1Image if version == 1 else nibabel.Nifti2Image
    try:
        header = (nibabel.Nifti1Header if version == 1 else nibabel.Nifti2Header).from_fileobj(_Reader(raw))
        shape = tuple(int(d) for d in header.get_data_shape())
        itemsize = int(np.dtype(header.get_data_dtype()).itemsize)
    except Exception as exc:
        raise CorruptImageError(f"damaged NIfTI header: {first_line(exc)}") from exc
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise UnsupportedImageError(f"NIfTI of shape {shape}: expected one 3-D volume")
    total = int(np.prod(shape)) * itemsize
    if int(header["vox_offset"]) + total > len(raw):
        raise CorruptImageError(f"truncated NIfTI: the header declares {total:,} bytes of voxels, the file is shorter")
    try:
        image = klass.from_bytes(raw)
        canonical = nibabel.as_closest_canonical(image)
        affine = np.asarray(canonical.affine, dtype=np.float64)
        sx, sy, sz = (int(d) for d in canonical.shape[:3])
    except Exception as exc:
        raise CorruptImageError(f"damaged NIfTI: {first_line(exc)}") from exc
    limits.image.check_frame("NIfTI", sx, sy, 1, 1)
    limits.check_slices(sz, sx * sy * sz * max(itemsize, 1))
    notes = ["NIfTI volume: axial slices along the affine's inferior→superior axis, slice 0 the lowest"]
    codes = "".join(nibabel.aff2axcodes(image.affine))
    if codes != "RAS":
        notes.append(f"reoriented from {codes} to RAS by flips and axis swaps (no resampling)")
    slices = [
        SliceRef(label, k, round(float((affine @ np.array([0.0, 0.0, k, 1.0]))[2]), 4), k + 1, None) for k in range(sz)
    ]
    return Series("", "", "nifti", slices, {}, "volume axis", notes, _NiftiLoader(canonical, codes))


@dataclass
class _NiftiLoader:
    image: Any
    codes: str

    def __call__(self, series: Series, _limits: ImageLimits) -> Iterator[LoadedImage | ImageError]:
        try:
            volume = np.asanyarray(self.image.dataobj, dtype=np.float32)
        except Exception as exc:
            error = CorruptImageError(f"cannot read the NIfTI voxels: {first_line(exc)}")
            for _ in series.slices:
                yield error
            return
        finite = volume[np.isfinite(volume)]
        low = float(finite.min()) if finite.size else 0.0
        above = finite[finite > low]
        lo, hi = low, float(np.percentile(above, 99.5)) if above.size else low
        for ref in series.slices:
            assert ref.frame is not None
            plane = np.nan_to_num(volume[:, :, ref.frame], nan=lo)
            # RAS axes (x to the right, y to the front): rows from anterior to posterior, columns from the
            # patient's right to left.
            pixels = scale_to_uint8(plane[::-1, ::-1].T, lo, hi) if hi > lo else np.zeros(plane.T.shape, np.uint8)
            height, width = pixels.shape
            yield LoadedImage(
                np.ascontiguousarray(pixels),
                ImageMeta(
                    source_format="nifti",
                    original_size=(width, height),
                    mode="L",
                    bit_depth=8 * volume.dtype.itemsize,
                    modality="MR",
                    frames=len(series.slices),
                    frame_index=ref.frame,
                    notes=(f"slice {ref.frame + 1} of {len(series.slices)}", f"volume window {lo:g}–{hi:g}"),
                ),
            )


class _Reader:
    """A file-like view of bytes for nibabel's header reader (``read`` only)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        out = self._data[self._pos : end]
        self._pos += len(out)
        return out


def _inflate(data: bytes, limits: SeriesLimits) -> bytes:
    """A gzipped file inflated with a cap (a gzip bomb stops at the cap), or the bytes as they are."""
    if data[:2] != GZIP_MAGIC:
        return data
    cap = limits.max_total_bytes + 1024 * 1024  # voxels plus a header and extensions
    try:
        return inflate_capped(data, cap, wbits=16 + zlib.MAX_WBITS, what="the gzipped volume")
    except zlib.error as exc:
        raise CorruptImageError(f"damaged gzip data: {exc}") from exc
