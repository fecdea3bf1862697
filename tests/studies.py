"""Synthetic studies built from real slices, for the series, study and CLI tests: real gray slices from
``../shared/data`` wrapped as MR instances with geometry (written in shuffled file order), an enhanced MR object of
many frames, and NIfTI volumes. Nothing is copied into the repository: every file is written under ``tmp_path``.
Imported relatively (``from ..studies import``), like ``dicom_files``.
"""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from braintumor.imaging.io import load_image

from .dicom_files import mr_series


def real_slices(shared_data: Path, n: int, side: int = 128, label: str = "no") -> list[np.ndarray]:
    """``n`` real gray slices of the seed dataset's ``label`` folder, resized to ``side``² (distinct contents)."""
    return gray_slices(sorted((shared_data / "brain_tumor_dataset" / label).iterdir())[:n], side)


def gray_slices(files: list[Path], side: int = 128) -> list[np.ndarray]:
    """The images at ``files`` as gray ``side``² uint8 arrays."""
    from PIL import Image

    out = []
    for f in files:
        pixels = load_image(f).pixels
        gray = pixels if pixels.ndim == 2 else pixels.mean(axis=2).astype(np.uint8)
        out.append(np.asarray(Image.fromarray(gray).resize((side, side))))
    return out


def same_slice(shown: np.ndarray, original: np.ndarray, r: float = 0.999) -> bool:
    """Whether a decoded slice is ``original`` up to the display window (a linear map of its values, clipped)."""
    return shown.shape == original.shape and float(np.corrcoef(shown.ravel(), original.ravel())[0, 1]) > r


def write(datasets: list[Dataset], folder: Path, *, shuffle: int | None = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(len(datasets)))
    if shuffle is not None:
        random.Random(shuffle).shuffle(order)
    paths = []
    for k, i in enumerate(order):  # file names in shuffled order: the reader must not trust them
        path = folder / f"IM{k:04d}"
        datasets[i].save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def enhanced_mr(slices: list[np.ndarray], positions: list[float]) -> Dataset:
    """One Enhanced MR Image object holding ``slices`` as frames, each placed by its per-frame functional group
    at ``positions`` (mm along z), with the window in the shared groups."""
    base = mr_series(slices[:1])[0]
    ds = Dataset()
    ds.file_meta = base.file_meta
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "Rows", "Columns"):
        setattr(ds, keyword, getattr(base, keyword))
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesDescription = generate_uid(), "MR", "T2 AX enhanced"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = len(slices)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    orientation, window = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    window.WindowCenter, window.WindowWidth = 128, 256
    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.FrameVOILUTSequence = DicomSequence([window])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for z in positions:
        plane, item = Dataset(), Dataset()
        plane.ImagePositionPatient = [0, 0, z]
        item.PlanePositionSequence = DicomSequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.stack(slices).astype(np.uint8).tobytes()
    return ds


def nifti_volume(pixels: list[np.ndarray], affine: np.ndarray, path: Path) -> Path:
    """Real slices stacked as an axial RAS volume: slice k (rows anterior→posterior, columns right→left, as shown)
    becomes voxel plane z = k."""
    volume = np.stack([p[::-1, ::-1].T for p in pixels], axis=2).astype(np.int16)  # x, y, z
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path
