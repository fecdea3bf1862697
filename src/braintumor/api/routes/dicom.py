"""A scan's result as DICOM: ``GET /history/{scan_id}/dicom`` -> a zip of the Comprehensive SR and the heatmap
Secondary Capture, ready to import into a PACS or a DICOM viewer beside the image it was computed from.

Why from what was stored, and only from it: the SR and SC are written by :mod:`braintumor.interop.dicom_out` from
the scan's stored original (the de-identified copy, unless the site keeps identifiers) and its stored answer and
heatmap — the model is not run again, so the files say what the user was shown, and nothing the de-identification
removed can come back (the writers copy patient and study attributes from the source given, and from nothing
else). The stored original is decoded again under the same limits (and in the same isolated child process) as an
upload: it is what the upload became, still bytes from outside.

The route answers like every scan route: 404 for a scan that is not the caller's; 409 for a scan whose upload was
not DICOM (there is no DICOM image for the results to reference); 422 when the stored answer or header cannot be
written as DICOM (the reason in one line).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response, status

from braintumor.api.config import Settings
from braintumor.api.deps import AuditDep, CurrentUser, SettingsDep, StorageDep
from braintumor.api.routes.scans import ScanId, owned_scan
from braintumor.imaging.io import load_image
from braintumor.imaging.types import ImageLimits, LoadedImage
from braintumor.imaging.untrusted import run_isolated
from braintumor.interop.dicom_out import AnalysedSlice, StoredAnswer, heatmap_captures, structured_report
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


def decode_stored(data: bytes, limits: ImageLimits) -> LoadedImage:
    """Decode a stored original under ``limits`` (module level: :func:`run_isolated` calls it by name)."""
    return load_image(data, limits=limits)


def _decode(data: bytes, settings: Settings) -> LoadedImage:
    if not settings.isolate_decoding:
        return decode_stored(data, settings.image_limits)
    return run_isolated(decode_stored, data, settings.image_limits, timeout_s=settings.decode_timeout_s,
                        memory_mb=settings.decode_memory_mb, preload=("braintumor.imaging.dicom",))  # fmt: skip


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
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "this id is a study: DICOM results (SR + Secondary Capture) are written for single DICOM scans only",
        )
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

    limiter: anyio.CapacityLimiter = request.app.state.predict_limiter
    data = await anyio.to_thread.run_sync(build, limiter=limiter)
    audit.record("dicom.download", actor=user.username, target=rec.id)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="scan-{rec.id}-dicom.zip"'},
    )
