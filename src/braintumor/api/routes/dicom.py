"""A scan's result as DICOM: ``GET /history/{scan_id}/dicom`` -> a zip of the Comprehensive SR and the heatmap
Secondary Capture, ready to import into a PACS or a DICOM viewer beside the image it was computed from.

Why from what was stored, and only from it: the SR and SC are written by :mod:`braintumor.interop.dicom_out` from
the scan's stored original (the de-identified copy, unless the site keeps identifiers) and its stored answer and
heatmap — the model is not run again, so the files say what the user was shown, and nothing the de-identification
removed can come back (the writers copy patient and study attributes from the source given, and from nothing
else). The stored original is decoded again under the same limits (and in the same isolated child process) as an
upload: it is what the upload became, still bytes from outside.

A study (``kind = study``) gets one SR per scored series — the series' answer by the study rule, referencing every
assessed slice's stored instance — and one Secondary Capture per assessed slice, drawn from the slice's stored
map over the stored instance's pixels; a NIfTI study has no DICOM to reference (409).

The route answers like every scan route: 404 for a scan that is not the caller's; 409 for a scan whose upload was
not DICOM (there is no DICOM image for the results to reference); 422 when the stored answer or header cannot be
written as DICOM (the reason in one line).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response, status

from braintumor.api.config import Settings
from braintumor.api.deps import AuditDep, CurrentUser, SettingsDep, StorageDep
from braintumor.api.routes.intake import in_predict_slot
from braintumor.api.routes.scans import ScanId, owned_scan
from braintumor.imaging.io import load_image
from braintumor.imaging.types import ImageLimits, LoadedImage
from braintumor.imaging.untrusted import run_isolated
from braintumor.interop.answers import StoredAnswer
from braintumor.interop.dicom_out import AnalysedSlice, heatmap_captures, structured_report
from braintumor.models.decision import Outcome
from braintumor.storage import ScanRecord, Storage

router = APIRouter(tags=["scans"])
DICOM = "application/dicom"


class DicomWriteError(ValueError):
    """The stored scan cannot be written as DICOM (its header or its kept answer); the message says why."""


@dataclass(frozen=True)
class DicomResultFiles:
    """The zip's entries, ``SR_<uid>.dcm`` then ``SC_<uid>.dcm`` (names never collide: SOP Instance UIDs)."""

    entries: tuple[tuple[str, bytes], ...]

    def zip(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in self.entries:
                archive.writestr(name, data)
        return buf.getvalue()


def _blob(storage: Storage, rec: ScanRecord, kind: str) -> bytes | None:
    link = rec.files.get(kind)
    found = storage.get_file(link.id) if link is not None else None
    return found[1] if found is not None else None


#: What the decoder child of an export imports beyond the imaging core (imported once in the fork server).
EXPORT_DECODER_PRELOAD = ("braintumor.imaging.dicom",)


def decode_stored(data: bytes, limits: ImageLimits) -> LoadedImage:
    """Decode a stored original under ``limits`` (module level: :func:`run_isolated` calls it by name)."""
    return load_image(data, limits=limits)


def _decode(data: bytes, settings: Settings) -> LoadedImage:
    if not settings.isolate_decoding:
        return decode_stored(data, settings.image_limits)
    return run_isolated(decode_stored, data, settings.image_limits, timeout_s=settings.decode_timeout_s,
                        memory_mb=settings.decode_memory_mb, preload=EXPORT_DECODER_PRELOAD)  # fmt: skip


def _part10(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_results(original: bytes, cam: bytes | None, answer: dict[str, Any], settings: Settings) -> DicomResultFiles:
    """The SR (and, when the scan kept its heatmap, the SC) of one stored DICOM scan; raises
    :class:`DicomWriteError` with the reason when they cannot be written, image errors when the original cannot be
    decoded."""
    heatmap = None
    if cam is not None:
        try:
            heatmap = np.load(io.BytesIO(cam), allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise DicomWriteError(f"the scan's stored heatmap cannot be read ({exc})") from None
    image = _decode(original, settings)
    try:
        analysed = AnalysedSlice.from_bytes(original, image, StoredAnswer.from_dict(answer, cam=heatmap))
        files = [structured_report([analysed])]
        if heatmap is not None:
            files += heatmap_captures([analysed], alpha=settings.overlay_alpha)
        entries = tuple((f"{'SC' if i else 'SR'}_{ds.SOPInstanceUID}.dcm", _part10(ds)) for i, ds in enumerate(files))
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomWriteError(f"the scan's results cannot be written as DICOM: {reason}") from None
    return DicomResultFiles(entries)


def decode_sources(sources: list[bytes], limits: ImageLimits) -> list[list[LoadedImage]]:
    """Every frame of each stored study instance, under ``limits`` (module level: :func:`run_isolated` calls it)."""
    from braintumor.imaging.dicom import decode_dicom_frames

    return [list(decode_dicom_frames(data, limits=limits)) for data in sources]


def study_dicom_results(rec: ScanRecord, storage: Storage, settings: Settings) -> DicomResultFiles:
    """One SR per scored series of a stored DICOM study (the series' answer by the study rule, referencing every
    assessed slice) and one heatmap Secondary Capture per assessed slice, from the stored (de-identified)
    instances, the stored slice answers and their stored maps; raises :class:`DicomWriteError` with the reason."""
    from braintumor.interop.study_out import finding_of

    slices = [s for s in rec.result.get("slices", []) if s.get("status") == "ok" and s.get("source_file") is not None]
    used = sorted({int(s["source_file"]) for s in slices})
    blobs = [_blob(storage, rec, f"source.{j}") for j in used]
    if not slices or any(b is None for b in blobs):
        raise DicomWriteError("the study has no stored DICOM instance with an assessed slice")
    sources = [b for b in blobs if b is not None]
    if settings.isolate_decoding:
        frames = run_isolated(decode_sources, sources, settings.image_limits, timeout_s=settings.study_timeout_s,
                              memory_mb=settings.study_memory_mb, preload=EXPORT_DECODER_PRELOAD)  # fmt: skip
    else:
        frames = decode_sources(sources, settings.image_limits)
    decoded = dict(zip(used, frames, strict=True))
    headers: dict[int, Any] = {}  # each instance's header parsed once, whatever its frames
    series = {s["series_uid"]: s for s in rec.result.get("study", {}).get("series", [])}
    by_series: dict[str, list[AnalysedSlice]] = {}
    try:
        for entry in slices:
            j, k = int(entry["source_file"]), entry.get("blob")
            cam_bytes = _blob(storage, rec, f"slice.{k}.cam") if k is not None else None
            cam = np.load(io.BytesIO(cam_bytes), allow_pickle=False).astype(np.float32) if cam_bytes else None
            answer = {**entry, "model": rec.model_name, "model_version": rec.model_version}
            image = decoded[j][int(entry.get("frame") or 0)]
            kept = StoredAnswer.from_dict(answer, cam=cam)
            if j not in headers:
                headers[j] = AnalysedSlice.from_bytes(sources[used.index(j)], image, kept).source
            by_series.setdefault(entry["series_uid"], []).append(AnalysedSlice(headers[j], image, kept))
        files: list[Any] = []
        for uid, analysed in by_series.items():
            outcome = series.get(uid, {}).get("outcome") or rec.outcome
            files.append(structured_report(analysed, finding=finding_of(cast(Outcome, outcome), analysed)))
            files += heatmap_captures(
                [a for a in analysed if a.prediction.cam is not None], alpha=settings.overlay_alpha
            )
    except (ValueError, AttributeError, KeyError, TypeError, IndexError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomWriteError(f"the study's results cannot be written as DICOM: {reason}") from None
    named = ((f"{'SR' if ds.Modality == 'SR' else 'SC'}_{ds.SOPInstanceUID}.dcm", _part10(ds)) for ds in files)
    return DicomResultFiles(tuple(named))


# -- the route ---------------------------------------------------------------------------------------------------
@router.get(
    "/history/{scan_id}/dicom",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "a zip: SR_<uid>.dcm and SC_<uid>.dcm"},
        404: {"description": "no such scan of yours"},
        409: {"description": "the scan's upload was not DICOM: there is no DICOM image to reference"},
        422: {"description": "the stored scan cannot be written as DICOM (the reason is given)"},
    },
)
async def scan_dicom(
    request: Request, scan_id: ScanId, user: CurrentUser, storage: StorageDep, settings: SettingsDep, audit: AuditDep
) -> Response:
    """One of your DICOM scans' results as DICOM of its study: a Comprehensive SR (TID 1500: outcome, p(tumor),
    tumor type, the model as observer device; unverified, not for diagnostic use) and a Secondary Capture of the
    heatmap overlay, both referencing the stored (de-identified) original, in one zip. Built from what was stored:
    the model is not run again."""
    rec = owned_scan(storage, user, scan_id)
    if rec.kind == "study":
        return await _study_dicom(request, rec, user.username, storage, settings, audit)
    link = rec.files.get("original")
    if link is None or link.content_type != DICOM:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "this scan was not a DICOM upload, so there is no DICOM image for an SR or a Secondary Capture to "
            "reference; only DICOM uploads have DICOM results",
        )

    def build() -> bytes:
        original = _blob(storage, rec, "original")
        if original is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the scan's original file is gone")
        answer = dict(rec.result.get("prediction") or {})
        try:
            return dicom_results(original, _blob(storage, rec, "cam"), answer, settings).zip()
        except DicomWriteError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)[:300]) from None

    data = await in_predict_slot(request, build)
    audit.record("dicom.download", actor=user.username, target=rec.id)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="scan-{rec.id}-dicom.zip"'},
    )


async def _study_dicom(request: Request, rec: ScanRecord, username: str, storage: Storage, settings: Settings,
                       audit: Any) -> Response:  # fmt: skip
    if rec.result.get("study", {}).get("kind") != "dicom":
        why = "this study was a NIfTI volume: there is no DICOM image for an SR or a Secondary Capture to reference"
        raise HTTPException(status.HTTP_409_CONFLICT, f"{why}; only DICOM studies have DICOM results")

    def build() -> bytes:
        try:
            return study_dicom_results(rec, storage, settings).zip()
        except DicomWriteError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)[:300]) from None

    data = await in_predict_slot(request, build)
    audit.record("dicom.download", actor=username, target=rec.id)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="study-{rec.id}-dicom.zip"'})  # fmt: skip
