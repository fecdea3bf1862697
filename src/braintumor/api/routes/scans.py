"""Scans: analyse an upload, browse and delete the history, fetch files and PDF reports.

Why it looks like this: every read goes through :func:`owned_scan` / the file's owner check, and a scan of
another user is answered exactly like a missing one (404), for admins too — administrators manage accounts,
they do not read patients' scans. The upload is read with a hard size cap, analysed in a worker thread
(bounded by ``max_concurrent_predictions``) and stored only when every step succeeded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Response, UploadFile, status
from fastapi import Path as PathParam

from braintumor.api.analysis import DISCLAIMER, analyse
from braintumor.api.deps import AuditDep, CurrentUser, Paging, SettingsDep, StorageDep
from braintumor.api.logs import AuditLog
from braintumor.api.reports import build_report
from braintumor.api.routes.intake import IntakeDep, intake_route
from braintumor.api.schemas import (
    BulkDelete,
    BulkDeleted,
    FileLink,
    ModelCount,
    Outcome,
    OutcomeDayCount,
    RecordKind,
    ScanPage,
    ScanPublic,
    ScanStatsPublic,
    ScanSummary,
    StoredResult,
    with_rows,
)
from braintumor.errors import ImageTooLargeError
from braintumor.storage import ScanQuery, ScanRecord, Storage, UserRecord
from braintumor.storage.stats import summarise_scans

router = APIRouter(tags=["scans"])
ScanId = Annotated[str, PathParam(max_length=64, description="scan id")]
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "application/dicom": "dcm", "application/x-npy": "npy"}
_INLINE = {"image/png", "image/jpeg", "application/pdf"}


# -- conversions -----------------------------------------------------------------------------------------
def _links(rec: ScanRecord) -> dict[str, FileLink]:
    return {
        kind: FileLink(id=f.id, url=f"/files/{f.id}", content_type=f.content_type, size=f.size)
        for kind, f in rec.files.items()
    }


def summary(rec: ScanRecord) -> ScanSummary:
    """A history row: a scan with its files, or a study (its slices' files are listed by ``GET /studies/{id}``)."""
    skip = ("files", "report_url", "url", "slice_count")
    fields = {name: getattr(rec, name) for name in ScanSummary.model_fields if name not in skip}
    if rec.kind == "study":
        count = len(rec.result.get("slices", []))
        where = f"/studies/{rec.id}"
        return ScanSummary(**fields, files={}, report_url=f"{where}/report.pdf", url=where, slice_count=count)
    return ScanSummary(
        **fields, files=_links(rec), report_url=f"/history/{rec.id}/report.pdf", url=f"/history/{rec.id}"
    )


def detail(rec: ScanRecord) -> ScanPublic:
    stored = StoredResult.model_validate(rec.result)
    pred = stored.prediction
    return ScanPublic(
        **summary(rec).model_dump(),
        probs=pred.probs,
        type_probs=pred.type_probs,
        refer_low=rec.threshold if pred.refer_low is None else pred.refer_low,
        refer_high=rec.threshold if pred.refer_high is None else pred.refer_high,
        members=pred.members,
        heatmap=stored.heatmap,
        image=stored.image,
        dicom=stored.dicom,
        deidentified=stored.deidentified,
        disclaimer=DISCLAIMER,
        result=dict(rec.result.get("prediction", {})),
    )


def owned_scan(storage: Storage, user: UserRecord, scan_id: str) -> ScanRecord:
    """The record (scan or study) if ``user`` owns it; 404 otherwise (whether it exists or not)."""
    rec = storage.get_scan(scan_id) if len(scan_id) <= 64 else None
    if rec is None or rec.owner_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "scan not found")
    return rec


def owned_single_scan(storage: Storage, user: UserRecord, scan_id: str) -> ScanRecord:
    """:func:`owned_scan`, for routes that show one image: a study is answered 404 with where it is instead."""
    rec = owned_scan(storage, user, scan_id)
    if rec.kind == "study":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"this id is a study: GET /studies/{rec.id}")
    return rec


def delete_owned(rec: ScanRecord, user: UserRecord, storage: Storage, audit: AuditLog, action: str) -> Response:
    """Delete ``rec`` (found by :func:`owned_scan` or a stricter lookup) with its files, audited as ``action``: 204."""
    storage.delete_scans(user.id, [rec.id])
    audit.record(action, actor=user.username, target=rec.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def read_capped(file: UploadFile, cap: int, *, what: str = "upload") -> bytes:
    """The upload's bytes, refused (413) once they pass ``cap``."""
    chunks, total = [], 0
    while chunk := await file.read(1 << 20):
        total += len(chunk)
        if total > cap:
            raise ImageTooLargeError(f"{what} too large: more than {cap / 1048576:g} MB (the limit)")
        chunks.append(chunk)
    return b"".join(chunks)


# -- routes ----------------------------------------------------------------------------------------------
@intake_route(
    router,
    "/predict",
    ScanPublic,
    {
        413: "upload or image too large",
        415: "not JPEG, PNG or DICOM",
        422: "unreadable image, or not a brain MRI (the reason is given)",
        503: "no model loaded",
    },
)
async def predict(
    file: Annotated[UploadFile, File(description="one JPEG, PNG or DICOM file (format decided by content)")],
    intake: IntakeDep,
) -> ScanPublic:
    """Analyse one scan with the ensemble: the outcome (tumor / refer / no tumor), calibrated probability, tumour
    type, every member's probabilities under the ensemble's rule, the model, and the heatmaps (preview here; PNG,
    overlay, the raw map and one map a member under ``files``)."""
    data = await read_capped(file, intake.settings.max_upload_bytes)
    rec = await intake.store(partial(analyse, data, file.filename))
    intake.created(rec, f"/history/{rec.id}", "scan.create")
    return detail(rec)


@router.get("/history", response_model=ScanPage)
def history(
    user: CurrentUser,
    storage: StorageDep,
    paging: Paging,
    q: Annotated[str | None, Query(max_length=200, description="plain-text filename search")] = None,
    outcome: Outcome | None = None,
    date_from: Annotated[dt.date | None, Query(description="first day (UTC), inclusive")] = None,
    date_to: Annotated[dt.date | None, Query(description="last day (UTC), inclusive")] = None,
    kind: Annotated[RecordKind | None, Query(description="scans or studies only (both when absent)")] = None,
) -> ScanPage:
    """Your scans and studies, newest first, with filename search (plain text), outcome, date and kind filters."""
    if date_from and date_to and date_from > date_to:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "date_from is after date_to")
    start = dt.datetime.combine(date_from, dt.time.min, dt.UTC) if date_from else None
    end = dt.datetime.combine(date_to, dt.time.max, dt.UTC) if date_to else None
    query = ScanQuery(q or None, outcome, start, end, paging.offset, paging.page_size, kind)
    result = storage.list_scans(user.id, query)
    return ScanPage(items=[summary(r) for r in result.items], **paging.counts(result.total))


@router.get("/history/stats", response_model=ScanStatsPublic)
def history_stats(
    user: CurrentUser,
    storage: StorageDep,
    date_from: Annotated[dt.date | None, Query(description="first day, inclusive (in the given UTC offset)")] = None,
    utc_offset_minutes: Annotated[int, Query(ge=-840, le=840, description="the viewer's time zone")] = 0,
) -> ScanStatsPublic:
    """Your scans at a glance (the Dashboard): outcomes, mean p(tumor), models, probability histogram, per day."""
    shift = dt.timedelta(minutes=utc_offset_minutes)
    start = dt.datetime.combine(date_from, dt.time.min, dt.UTC) - shift if date_from else None
    stats = summarise_scans(storage.scan_facts(user.id, start), utc_offset_minutes)
    return ScanStatsPublic(**with_rows(stats, models=ModelCount, per_day=OutcomeDayCount))


@router.get("/history/{scan_id}", response_model=ScanPublic)
def get_scan(scan_id: ScanId, user: CurrentUser, storage: StorageDep, audit: AuditDep) -> ScanPublic:
    """One of your scans with its full result (a study's is ``GET /studies/{id}``)."""
    rec = owned_single_scan(storage, user, scan_id)
    audit.record("scan.view", actor=user.username, target=rec.id)
    return detail(rec)


@router.delete("/history/{scan_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_scan(scan_id: ScanId, user: CurrentUser, storage: StorageDep, audit: AuditDep) -> Response:
    """Delete one of your scans (or studies) and its files."""
    return delete_owned(owned_scan(storage, user, scan_id), user, storage, audit, "scan.delete")


@router.post("/history/delete", response_model=BulkDeleted)
def delete_scans(body: BulkDelete, user: CurrentUser, storage: StorageDep, audit: AuditDep) -> BulkDeleted:
    """Delete several of your scans at once; ids that are not yours are reported as not found."""
    wanted = list(dict.fromkeys(i for i in body.ids if len(i) <= 64))
    deleted = storage.delete_scans(user.id, wanted)
    for scan_id in deleted:
        audit.record("scan.delete", actor=user.username, target=scan_id)
    gone = set(deleted)
    return BulkDeleted(deleted=deleted, not_found=[i for i in body.ids if i not in gone])


@router.get(
    "/files/{file_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "application/dicom": {}}}},
)
def get_file(
    file_id: Annotated[str, PathParam(max_length=64, description="file id (from a scan's files)")],
    user: CurrentUser,
    storage: StorageDep,
    audit: AuditDep,
    download: bool = False,
) -> Response:
    """A stored file of one of your scans: the original upload (de-identified if DICOM), the heatmap, the
    overlay or the raw map (``.npy``)."""
    found = storage.get_file(file_id) if len(file_id) <= 64 else None
    if found is None or found[0].owner_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    record, data = found
    audit.record("file.download", actor=user.username, target=record.id, scan=record.scan_id, kind=record.kind)
    name = f"{record.scan_id}-{record.kind}.{_EXTENSIONS.get(record.content_type, 'bin')}"
    inline = record.content_type in _INLINE and not download
    return Response(
        data,
        media_type=record.content_type,
        headers={
            "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
            "ETag": f'"{record.sha256}"',
        },
    )


@router.get(
    "/history/{scan_id}/report.pdf", response_class=Response, responses={200: {"content": {"application/pdf": {}}}}
)
def report(
    scan_id: ScanId,
    user: CurrentUser,
    storage: StorageDep,
    settings: SettingsDep,
    audit: AuditDep,
    identifiers: Annotated[
        bool, Query(description="show stored patient identifiers (only kept when the site keeps them)")
    ] = False,
) -> Response:
    """A PDF report of one of your scans (de-identified view unless ``identifiers=true``)."""
    rec = owned_single_scan(storage, user, scan_id)
    images: dict[str, bytes] = {}
    for kind in ("original", "heatmap", "overlay"):
        f = rec.files.get(kind)
        found = storage.get_file(f.id) if f else None
        if found is not None:
            images[kind] = found[1]
    pdf = build_report(rec, images, identifiers=identifiers, max_pixels=settings.max_pixels)
    audit.record("report.download", actor=user.username, target=rec.id, identifiers=identifiers)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="report-{rec.id}.pdf"'},
    )


def deid_salt(secret: str) -> bytes:
    """The UID-mapping salt for de-identification, derived from the signing secret (stable per site)."""
    return hmac.new(secret.encode(), b"braintumor dicom uid salt", hashlib.sha256).digest()
