"""Studies, not slices: DICOM instances grouped into series, slices put in anatomical order, series chosen by rules.

Why: clinical teams hold studies (an MR series of 20–200 files, an enhanced MR object of many frames, a NIfTI
volume), while the model reads one 2-D slice. This module turns files into :class:`Series` of ordered
:class:`SliceRef` (each decoded on demand through the single-image DICOM reader, with its structure checks and
pixel caps: there is no second DICOM reader) and decides which series to score.

- **Grouping**: by ``StudyInstanceUID`` then ``SeriesInstanceUID`` (files without them are refused per file).
- **Ordering**: by ``ImagePositionPatient`` projected on the slice normal (the cross product of the two
  ``ImageOrientationPatient`` direction cosines), the way every viewer stacks a series; when a slice lacks
  geometry, by ``InstanceNumber``; else in file order (said in the series' notes). Gaps in ``InstanceNumber`` do
  not matter. An enhanced (multi-frame) object is a series of its frames, placed by its per-frame functional
  groups (``PlanePositionSequence`` / ``PlaneOrientationSequence``).
- **Selection**: by a rule file, :mod:`braintumor.imaging.series_rules`.

Limits (:class:`SeriesLimits`) bound the files, slices and decoded bytes of one call before pixels are decoded.

Example:
    >>> from braintumor.imaging.series_rules import DEFAULT_RULES, SeriesRules
    >>> rules = SeriesRules.from_dict(DEFAULT_RULES)
    >>> series, problems = read_dicom_series(["study/"])  # doctest: +SKIP
    >>> kept, skipped = rules.select(series)  # doctest: +SKIP
    >>> [s.reason for s in skipped]  # doctest: +SKIP
    ['ImageType holds LOCALIZER (excluded by "MR series")']
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.errors import BrainTumorError, ImageError, ImageTooLargeError
from braintumor.imaging.dicom_structure import check_structure
from braintumor.imaging.dicom_tags import int_value
from braintumor.imaging.io import ImageSource, is_nifti, read_bytes, sniff_format
from braintumor.imaging.types import ImageLimits, LoadedImage, first_line


@dataclass(frozen=True)
class SeriesLimits:
    """What one call may read: files, slices over all series, and decoded bytes (rows × columns × bytes per sample
    × slices, from the headers). Each slice is also held to :class:`ImageLimits`. The defaults suit local files."""

    max_files: int = 5000
    max_slices: int = 5000
    max_total_bytes: int = 2 * 1024**3
    image: ImageLimits = field(default_factory=ImageLimits)

    def check_slices(self, slices: int, decoded_bytes: int) -> None:
        if slices > self.max_slices:
            raise ImageTooLargeError(f"too many slices: {slices:,}, the cap is {self.max_slices:,}")
        if decoded_bytes > self.max_total_bytes:
            raise ImageTooLargeError(
                f"too large: {decoded_bytes / 1048576:.0f} MB of slices decoded exceeds the cap of "
                f"{self.max_total_bytes / 1048576:g} MB"
            )


@dataclass(frozen=True)
class SliceRef:
    """One slice of a series, not yet decoded: a single-frame file, one frame of a multi-frame file, or one
    plane of a NIfTI volume. ``position`` is in mm along the slice normal (None when the geometry is missing)."""

    source: str
    frame: int | None = None
    position: float | None = None
    instance_number: int | None = None
    sop_instance_uid: str | None = None


@dataclass
class Series:
    """The slices of one series in anatomical order, with what selection and reports need."""

    study_uid: str
    series_uid: str
    kind: str  # "dicom" or "nifti"
    slices: list[SliceRef]
    attributes: dict[str, Any] = field(default_factory=dict)  # the DICOM attributes rules read
    ordered_by: str = "position"  # "position", "instance_number", "file order" or "volume axis"
    notes: list[str] = field(default_factory=list)
    loader: Any = None  # what decodes the slices (see :meth:`images`)

    @property
    def description(self) -> str:
        return str(self.attributes.get("SeriesDescription", "") or "")

    def images(self, limits: ImageLimits | None = None) -> Iterator[LoadedImage | ImageError]:
        """Decode the slices in order; a slice that fails yields its error instead (the series goes on)."""
        yield from self.loader(self, limits or ImageLimits())


@dataclass(frozen=True)
class SkippedSeries:
    """A series the rules did not select, and why."""

    series: Series
    reason: str


@dataclass(frozen=True)
class FileProblem:
    """A file that could not join a series (unreadable, not DICOM, no pixel data, no UIDs), with the reason."""

    source: str
    reason: str


# -- reading DICOM ----------------------------------------------------------------------------------------
#: Attributes read from every instance (what grouping, ordering and the rules use).
RULE_ATTRIBUTES = (
    "Modality",
    "ImageType",
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "BodyPartExamined",
    "SeriesNumber",
    "SOPClassUID",
)


@dataclass(frozen=True)
class _Instance:
    source: str
    data: bytes | None  # kept for sources given as bytes; files are read again when decoded
    study_uid: str
    series_uid: str
    attributes: dict[str, Any]
    frames: list[SliceRef]
    frame_bytes: int
    multi_frame: bool


def read_dicom_series(
    sources: Sequence[ImageSource | tuple[str, bytes]], *, limits: SeriesLimits | None = None
) -> tuple[list[Series], list[FileProblem]]:
    """Read the headers of DICOM files (paths, or ``(name, bytes)`` pairs), group them into series and order
    their slices. No pixel is decoded here; every file that cannot join a series is a :class:`FileProblem`.

    Raises :class:`~braintumor.errors.ImageTooLargeError` when the files, slices or decoded bytes pass ``limits``.
    """
    limits = limits or SeriesLimits()
    if len(sources) > limits.max_files:
        raise ImageTooLargeError(f"too many files: {len(sources):,}, the cap is {limits.max_files:,}")
    instances: list[_Instance] = []
    problems: list[FileProblem] = []
    for source in sources:
        name, data = _name_and_bytes(source)
        try:
            instances.append(_read_instance(name, data, keep=not isinstance(source, str | Path), limits=limits))
        except BrainTumorError as exc:
            problems.append(FileProblem(name, str(exc)))
    total_slices = sum(len(i.frames) for i in instances)
    limits.check_slices(total_slices, sum(i.frame_bytes * len(i.frames) for i in instances))
    groups: dict[tuple[str, str], list[_Instance]] = {}
    for inst in instances:
        groups.setdefault((inst.study_uid, inst.series_uid), []).append(inst)
    return [_build_series(study, series, members) for (study, series), members in groups.items()], problems


def _name_and_bytes(source: ImageSource | tuple[str, bytes]) -> tuple[str, bytes | None]:
    if isinstance(source, tuple):
        return source[0], source[1]
    if isinstance(source, str | Path):
        return str(source), None
    return "<bytes>", bytes(source)


def _read_instance(name: str, data: bytes | None, *, keep: bool, limits: SeriesLimits) -> _Instance:
    raw = data if data is not None else read_bytes(name)
    if sniff_format(raw[:256]) != "dicom":
        raise ImageError("not a DICOM file")
    check_structure(raw, limits.image)
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(raw), force=True, stop_before_pixels=True)
        study, series = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        attributes = {k: _plain(ds.get(k)) for k in RULE_ATTRIBUTES if ds.get(k) not in (None, "")}
        number = int_value(ds.get("InstanceNumber"))
        sop = str(ds.get("SOPInstanceUID", "") or "") or None
        refs = _frame_refs(ds, name, frames, number, sop)
    except ImageError:
        raise
    except Exception as exc:  # pydicom converts values lazily: a bad IS/DS surfaces here
        raise ImageError(f"damaged DICOM header: {first_line(exc)}") from exc
    if not study or not series:
        raise ImageError("DICOM without StudyInstanceUID/SeriesInstanceUID: cannot tell which series it belongs to")
    if rows <= 0 or cols <= 0:
        raise ImageError(f"DICOM {attributes.get('Modality', 'object')} has no pixel data (not an image)")
    limits.image.check_frame("DICOM", cols, rows, samples, (bits + 7) // 8)
    limits.image.check_frames("DICOM", frames)
    return _Instance(name, raw if keep else None, study, series, attributes, refs,
                     rows * cols * samples * ((bits + 7) // 8), frames > 1)  # fmt: skip


def _frame_refs(ds: Any, name: str, frames: int, number: int | None, sop: str | None) -> list[SliceRef]:
    if frames == 1:
        normal = _normal(ds.get("ImageOrientationPatient"))
        return [SliceRef(name, None, _project(ds.get("ImagePositionPatient"), normal), number, sop)]
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared_normal = _normal(_macro(shared, "PlaneOrientationSequence", "ImageOrientationPatient"))
    top_normal = _normal(ds.get("ImageOrientationPatient"))
    refs = []
    for k in range(frames):
        item = per_frame[k] if k < len(per_frame) else None
        normal = _normal(_macro(item, "PlaneOrientationSequence", "ImageOrientationPatient"))
        for fallback in (shared_normal, top_normal):
            normal = fallback if normal is None else normal
        position = _macro(item, "PlanePositionSequence", "ImagePositionPatient")
        refs.append(SliceRef(name, k, _project(position, normal), k + 1, sop))
    return refs


def _build_series(study: str, series_uid: str, members: list[_Instance]) -> Series:
    refs = [r for m in members for r in m.frames]
    notes: list[str] = []
    if all(r.position is not None for r in refs):
        order = sorted(range(len(refs)), key=lambda i: (refs[i].position, refs[i].instance_number or 0))
        ordered_by = "position"
        positions = [refs[i].position for i in order]
        if len(set(positions)) < len(positions):
            notes.append("several slices share a position (more than one stack or echo in this series)")
    elif all(r.instance_number is not None for r in refs):
        order = sorted(range(len(refs)), key=lambda i: (refs[i].instance_number, i))
        ordered_by = "instance_number"
        notes.append("ordered by InstanceNumber: not every slice has ImagePositionPatient/ImageOrientationPatient")
    else:
        order = list(range(len(refs)))
        ordered_by = "file order"
        notes.append("in file order: slices carry neither a position nor an InstanceNumber")
    first = members[0].attributes
    data = {m.source: m.data for m in members if m.data is not None}
    if any(m.multi_frame for m in members):
        notes.append(f"multi-frame DICOM: {sum(len(m.frames) for m in members)} frames read as slices")
    return Series(study, series_uid, "dicom", [refs[i] for i in order], dict(first), ordered_by, notes,
                  _DicomLoader(data))  # fmt: skip


@dataclass(frozen=True)
class _DicomLoader:
    """Decodes a DICOM series' slices through :func:`~braintumor.imaging.dicom.decode_dicom_frames` (the
    single-image reader's checks and caps), each file parsed once for all its frames."""

    data: dict[str, bytes]

    def __call__(self, series: Series, limits: ImageLimits) -> Iterator[LoadedImage | ImageError]:
        from braintumor.imaging.dicom import decode_dicom_frames

        cache: dict[str, dict[int, LoadedImage] | ImageError] = {}
        for ref in series.slices:
            if ref.frame is None:
                try:
                    raw = self.data.get(ref.source) or read_bytes(ref.source)
                    yield next(decode_dicom_frames(raw, limits=limits))
                except ImageError as exc:
                    yield exc
                continue
            if ref.source not in cache:  # a multi-frame file: decode its frames once, in storage order
                try:
                    raw = self.data.get(ref.source) or read_bytes(ref.source)
                    cache.clear()
                    cache[ref.source] = dict(enumerate(decode_dicom_frames(raw, limits=limits)))
                except ImageError as exc:
                    cache[ref.source] = exc
            got = cache[ref.source]
            yield got if isinstance(got, ImageError) else got[ref.frame]


def _first_item(seq: Any) -> Any:
    return seq[0] if seq is not None and len(seq) else None


def _macro(item: Any, sequence: str, keyword: str) -> Any:
    inner = _first_item(item.get(sequence)) if item is not None else None
    return inner.get(keyword) if inner is not None else None


def _normal(orientation: Any) -> np.ndarray | None:
    """The slice normal from ImageOrientationPatient's row and column direction cosines (None when unusable)."""
    try:
        values = [float(v) for v in orientation] if orientation is not None else []
    except (TypeError, ValueError):
        return None
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        return None
    normal = np.cross(values[:3], values[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else None


def _project(position: Any, normal: np.ndarray | None) -> float | None:
    if normal is None or position is None:
        return None
    try:
        values = [float(v) for v in position]
    except (TypeError, ValueError):
        return None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        return None
    return round(float(np.dot(normal, values)), 4)


def _plain(value: Any) -> Any:
    """A pydicom value as plain Python (multi-values as lists of strings, numbers as numbers)."""
    from pydicom.multival import MultiValue

    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    if isinstance(value, int | float):
        return value
    return str(value)


def sniff_volume_or_dicom(path: str | Path) -> str | None:
    """``"dicom"``, ``"nifti"`` or None for a file, by content (a NIfTI may be gzipped): how batch scoring sends a
    file to the series path or to the single-image path."""
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(352)
    except OSError:
        return None
    if sniff_format(head[:256]) == "dicom":
        return "dicom"
    return "nifti" if is_nifti(head, path=os.fspath(path)) else None
