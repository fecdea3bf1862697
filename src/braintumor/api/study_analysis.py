"""One study upload in, everything to store out: unpack, de-identify, group and order, decode, score, render.

Why a module of its own, beside :mod:`braintumor.api.analysis`: a study is many files (an MR series of DICOM
instances, one zip of them, or one NIfTI volume) that become **one** history record, scored slice by slice with
:func:`braintumor.inference.study.score_series` and given one outcome by its :class:`StudyRule`. The route only
reads the upload and stores what :func:`analyse_study` returns, so nothing is stored unless every step succeeded.

What touches the uploaded bytes — unzipping (entries, sizes and the inflated total capped before and while
inflating), de-identifying every DICOM instance, reading headers into series, decoding every kept slice — is
:func:`parse_study`, run in a child process with a deadline and a memory ceiling
(:func:`braintumor.imaging.untrusted.run_isolated`), like a single upload; the model only sees pixels.

De-identification comes first: each instance is cleaned (the same salted UID mapping as a single DICOM, so the
slices of one study still group) and the series are read from the **cleaned** bytes, so every UID, attribute and
stored file is the de-identified one. The cleaned instances of the scored series are stored (``source.{j}``) so the
study can be exported as DICOM later; a NIfTI volume's header may hold free text, so only its slice views are
kept. Per scored slice ``k`` the record holds ``slice.{k}.image`` (the slice as the model saw it, longest side at
most ``study_render_side``), ``slice.{k}.overlay`` (its Grad-CAM overlay) and ``slice.{k}.cam`` (the map itself,
small, float16: what the study's DICOM Secondary Captures are drawn from).

Refused with a clear 4xx (typed errors): more than one study in one upload, no series the rules keep, no slice
that could be assessed, more files / bytes / slices than the settings allow.

Example:
    >>> analysis = analyse_study([("series.zip", zip_bytes)], predictor, settings, salt=b"k")  # doctest: +SKIP
    >>> analysis.scan.kind, analysis.scan.outcome  # doctest: +SKIP
    ('study', 'tumor')
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from braintumor.api.analysis import DISCLAIMER, NPY, clean_filename, map_npy, overlay_png, png, render_size
from braintumor.api.config import Settings
from braintumor.errors import CorruptImageError, ImageError, ImageTooLargeError, StudyError
from braintumor.imaging.io import is_nifti, sniff_format
from braintumor.imaging.nifti import read_nifti
from braintumor.imaging.pools import thread_pool
from braintumor.imaging.series import FileProblem, Series, SeriesLimits, SkippedSeries, read_dicom_series
from braintumor.imaging.series_rules import DEFAULT_RULES, SeriesRules
from braintumor.imaging.transforms import resize_float
from braintumor.imaging.types import ImageLimits, LoadedImage
from braintumor.imaging.untrusted import run_isolated
from braintumor.inference.predictor import Prediction, Predictor
from braintumor.inference.study import SliceResult, StudyResult, StudyRule, score_series, study_result
from braintumor.storage import Blob, NewScan

_ZIP = b"PK\x03\x04"
#: What the decoder child of a study imports beyond the imaging core (imported once in the fork server).
STUDY_DECODER_PRELOAD = ("braintumor.imaging.dicom", "braintumor.imaging.series", "braintumor.storage.deid",
                         "dicomanonymizer")  # fmt: skip
#: Longest side of each slice's stored Grad-CAM map (``slice.{k}.cam``).
CAM_SIDE = 64
#: How many reasons (skipped series, bad files, refused slices) a 4xx answer quotes before "and N more".
_QUOTED = 3


@dataclass(frozen=True)
class _Decoded:
    """A series' slices decoded in the child: what :meth:`Series.images` yields in the parent (picklable)."""

    images: tuple[LoadedImage | ImageError, ...]

    def __call__(self, _series: Series, _limits: ImageLimits) -> Iterator[LoadedImage | ImageError]:
        yield from self.images


@dataclass(frozen=True)
class ParsedStudy:
    """What :func:`parse_study` returns: one study's kept series (slices decoded), the series skipped and the files
    refused (with why), and the cleaned DICOM instances to store, by the names the slices refer to."""

    study_uid: str
    kind: str  # "dicom" or "nifti"
    kept: list[Series]
    skipped: list[SkippedSeries]
    problems: list[FileProblem]
    sources: dict[str, bytes]
    deidentified: bool


@dataclass(frozen=True)
class StudyAnalysis:
    """A study record and its blobs, ready for :meth:`Storage.add_scan`."""

    scan: NewScan
    blobs: list[Blob]
    study: StudyResult


# -- in the child: the untrusted bytes ------------------------------------------------------------------------
def unpack(files: Sequence[tuple[str, bytes]], limits: SeriesLimits, max_bytes: int) -> list[tuple[str, bytes]]:
    """The upload's files: the files themselves, or one zip's regular entries (folders, macOS resource forks and
    empty entries left out). Entries, their declared sizes and the inflated total are capped; a zip among other
    files, or a zip in a zip, is refused."""
    zips = [name for name, data in files if data[:4] == _ZIP]
    if not zips:
        return list(files)
    if len(files) > 1:
        raise StudyError("send one zip of the study, or its files, not both")
    name, data = files[0]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [i for i in archive.infolist() if not i.is_dir() and i.file_size and not _resource_fork(i.filename)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise CorruptImageError(f"{clean_filename(name)} is not a readable zip ({type(exc).__name__})") from exc
    if len(entries) > limits.max_files:
        raise ImageTooLargeError(f"too many files in the zip: {len(entries):,}, the cap is {limits.max_files:,}")
    declared = sum(i.file_size for i in entries)
    if declared > max_bytes:
        raise ImageTooLargeError(
            f"the zip inflates to {declared / 1048576:.0f} MB, the cap is {max_bytes / 1048576:g} MB"
        )
    out: list[tuple[str, bytes]] = []
    total = 0
    for info in entries:
        try:
            with archive.open(info) as fh:
                content = fh.read(info.file_size + 1)  # a lying header cannot make us inflate more than declared
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError, EOFError) as exc:
            raise CorruptImageError(f"zip entry {info.filename!r} cannot be read ({type(exc).__name__})") from exc
        if len(content) > info.file_size:
            raise CorruptImageError(f"zip entry {info.filename!r} is larger than its header says")
        total += len(content)
        if total > max_bytes:
            raise ImageTooLargeError(f"the zip inflates past the cap of {max_bytes / 1048576:g} MB")
        if content[:4] == _ZIP:
            raise StudyError(f"zip entry {info.filename!r} is itself a zip: send one flat zip")
        out.append((info.filename, content))
    return out


def _resource_fork(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] in ("DICOMDIR", ".DS_Store")


def parse_study(
    files: Sequence[tuple[str, bytes]],
    limits: SeriesLimits,
    max_bytes: int,
    salt: bytes,
    keep_identifiers: bool,
    rules: SeriesRules | None = None,
) -> ParsedStudy:
    """Unpack, de-identify, read into series, select, and decode every kept slice (see the module docstring).

    Raises typed image errors only; meant to run in :func:`run_isolated`."""
    from braintumor.storage.deid import deidentify

    rules = rules or SeriesRules.from_dict(DEFAULT_RULES)
    entries = unpack(files, limits, max_bytes)
    if not entries:
        raise CorruptImageError("the upload holds no files")
    if len(entries) > limits.max_files:
        raise ImageTooLargeError(f"too many files: {len(entries):,}, the cap is {limits.max_files:,}")
    volumes = [(n, d) for n, d in entries if is_nifti(d[:352])]
    if volumes:
        if len(entries) > 1:
            raise StudyError("send one NIfTI volume per study, without other files")
        name, data = volumes[0]
        volume = read_nifti(data, name=clean_filename(name), limits=limits)
        kept, skipped = rules.select([volume])
        return ParsedStudy("", "nifti", [_decoded(s, limits) for s in kept], skipped, [], {}, False)

    problems: list[FileProblem] = []
    cleaned: list[tuple[str, bytes]] = []
    for name, data in entries:
        label = _entry_name(name)
        if sniff_format(data[:256]) != "dicom":
            problems.append(FileProblem(label, "not a DICOM file (decided by content)"))
            continue
        if keep_identifiers:
            cleaned.append((label, data))
            continue
        try:
            cleaned.append((label, deidentify(data, salt=salt, limits=limits.image).data))
        except ImageError as exc:
            problems.append(FileProblem(label, str(exc)))
    series, unread = read_dicom_series(cleaned, limits=limits)
    problems += unread
    studies = sorted({s.study_uid for s in series})
    if len(studies) > 1:
        raise StudyError(f"the upload holds {len(studies)} studies: send one study per request")
    if not series:
        raise StudyError(f"no DICOM series in the upload: {_quote([p.reason for p in problems])}")
    kept, skipped = rules.select(series)
    by_name = dict(cleaned)
    used = {ref.source for s in kept for ref in s.slices}
    sources = {name: by_name[name] for name in by_name if name in used}
    return ParsedStudy(studies[0], "dicom", [_decoded(s, limits) for s in kept], skipped, problems, sources,
                       not keep_identifiers)  # fmt: skip


def _entry_name(name: str) -> str:
    """A zip entry's or upload's name as shown: the path inside the upload, without control characters."""
    parts = [clean_filename(p) for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts)[-300:] or "upload"


def _decoded(series: Series, limits: SeriesLimits) -> Series:
    return replace(series, loader=_Decoded(tuple(series.images(limits.image))))


# -- in the parent: score, render, build the record -----------------------------------------------------------
def analyse_study(
    files: Sequence[tuple[str, bytes]],
    predictor: Predictor,
    settings: Settings,
    *,
    salt: bytes,
    name: str | None = None,
    rule: StudyRule | None = None,
) -> StudyAnalysis:
    """The whole study pipeline (see the module docstring); raises typed errors only (the API's 4xx)."""
    if not files or not any(data for _, data in files):
        raise CorruptImageError("empty upload: no file or 0 bytes")
    limits = settings.study_limits
    args = (list(files), limits, settings.max_study_bytes, salt, settings.keep_dicom_identifiers)
    if settings.isolate_decoding:
        parsed = run_isolated(
            parse_study,
            *args,
            timeout_s=settings.study_timeout_s,
            memory_mb=settings.study_memory_mb,
            preload=STUDY_DECODER_PRELOAD,
        )
    else:
        parsed = parse_study(*args)
    if not parsed.kept:
        skipped = [f"{k.series.description or k.series.kind}: {k.reason}" for k in parsed.skipped]
        raise StudyError(f"no series to score: {_quote(skipped)}")
    rule = rule or StudyRule()
    renderer = _SliceRenderer(settings)
    scored = [score_series(predictor, s, rule=rule, cam=True, on_slice=renderer) for s in parsed.kept]
    study = study_result(parsed.study_uid, "", scored, parsed.skipped, rule)
    if study.outcome is None:
        reasons = [f"slice {s.index}: {s.reason}" for sr in scored for s in sr.slices if s.reason]
        raise StudyError(f"no slice of the study could be assessed: {_quote(reasons)}")

    blobs = list(renderer.blobs)
    source_index: dict[str, int] = {}
    for j, (source, data) in enumerate(parsed.sources.items()):
        source_index[source] = j
        blobs.append(Blob(f"source.{j}", data, "application/dicom"))
    result = build_study_result(study, parsed, predictor, renderer.kinds, source_index, renderer.type_probs)
    top = study.top_slices(1)
    p_max = top[0][1].p_tumor if top else 0.0
    decision = scored_decision(study)
    filename = clean_filename(name or (files[0][0] if len(files) == 1 else f"{len(files)} files"))
    scan = NewScan(
        owner_id="",
        filename=filename,
        outcome=study.outcome,
        p_tumor=float(p_max or 0.0),
        tumor_type=top[0][1].tumor_type if top and study.outcome == "tumor" else None,
        model_name=decision.model_name if decision else "",
        model_version=decision.model_version if decision else "",
        threshold=decision.decision.threshold if decision else 0.5,
        result=result,
        kind="study",
    )
    return StudyAnalysis(scan, blobs, study)


def scored_decision(study: StudyResult) -> Prediction | None:
    """One assessed slice's prediction (for the model's name, version and band: the same for every slice)."""
    return next((s.prediction for _, s in study.slices if s.prediction is not None), None)


class _SliceRenderer:
    """The ``on_slice`` hook: the slice view and its overlay as PNG blobs, numbered over the whole study. The PNGs
    are encoded in the render pool (:func:`~braintumor.imaging.pools.thread_pool`, as a single upload's) while the
    next slices are scored; :attr:`blobs` waits for them, in slice order."""

    def __init__(self, settings: Settings) -> None:
        self.side = settings.study_render_side
        self.alpha = settings.overlay_alpha
        self._pending: list[tuple[str, Future[bytes] | bytes, str]] = []
        self.kinds: dict[tuple[str, int], int] = {}  # (series uid, slice index) -> k
        self.type_probs: dict[int, dict[str, float]] = {}

    @property
    def blobs(self) -> list[Blob]:
        return [Blob(kind, d if isinstance(d, bytes) else d.result(), ctype) for kind, d, ctype in self._pending]

    def __call__(self, series: Series, result: SliceResult, image: LoadedImage, prediction: Prediction) -> str:
        k = len(self.kinds)
        self.kinds[(series.series_uid, result.index)] = k
        pixels, size, _ = render_size(image.pixels, self.side)
        pool = thread_pool("render", os.cpu_count() or 1)
        self._pending.append((f"slice.{k}.image", pool.submit(png, pixels), "image/png"))
        if prediction.cam is not None:
            full = np.asarray(prediction.cam, dtype=np.float32)
            cam = resize_float(full, size)
            blended = pool.submit(overlay_png, pixels, cam, self.alpha)
            self._pending.append((f"slice.{k}.overlay", blended, "image/png"))
            self._pending.append((f"slice.{k}.cam", map_npy(full, CAM_SIDE), NPY))
        self.type_probs[k] = dict(prediction.type_probs)
        return f"slice.{k}"


def build_study_result(
    study: StudyResult,
    parsed: ParsedStudy,
    predictor: Predictor,
    kinds: dict[tuple[str, int], int],
    source_index: dict[str, int],
    type_probs: dict[int, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """What the record keeps besides the indexed fields: the study as :meth:`StudyResult.as_dict` gives it, one
    entry per slice (with the blob ``k`` of its views and the index of its stored source file), the files refused,
    the model card and the decision band."""
    slices: list[dict[str, Any]] = []
    for sr, s in study.slices:
        k = kinds.get((sr.series.series_uid, s.index))
        entry = {**s.as_dict(), "series_uid": sr.series.series_uid, "blob": k,
                 "source_file": source_index.get(s.ref.source),
                 "type_probs": (type_probs or {}).get(k, {}) if k is not None else {}}  # fmt: skip
        entry.pop("heatmap", None)
        slices.append(entry)
    decision = scored_decision(study)
    band = decision.as_dict() if decision else {}
    result = {
        "study": {**study.as_dict(), "kind": parsed.kind},
        "slices": slices,
        "problems": [{"source": p.source, "reason": p.reason} for p in parsed.problems],
        "deidentified": parsed.deidentified,
        "model_card": predictor.card_summary(),
        "decision": {key: band.get(key) for key in ("threshold", "refer_low", "refer_high")},
        "disclaimer": DISCLAIMER,
    }
    return result


def _quote(reasons: Sequence[str]) -> str:
    distinct = list(dict.fromkeys(reasons))
    if not distinct:
        return "no reason given"
    more = f" (and {len(distinct) - _QUOTED} more)" if len(distinct) > _QUOTED else ""
    return "; ".join(distinct[:_QUOTED]) + more
