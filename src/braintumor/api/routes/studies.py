"""Studies: upload a whole series (DICOM files, one zip of them, or a NIfTI volume), read it back, delete it.

Why a route module of its own: a study is one history record (``kind = "study"``) made of many files, so its
upload has its own caps (``max_study_mb`` for the body, ``max_study_files`` files, ``max_study_slices`` slices:
413 past them), its analysis its own budget in the isolated decoder, and its answer its own shape
(:class:`~braintumor.api.schemas.StudyPublic`: one result per scored slice, the study outcome and its reason).
Ownership, atomicity and deletion are the scans' own: the record is stored by :meth:`Storage.add_scan` with all its
files or not at all, reads go through :func:`~braintumor.api.routes.scans.owned_scan` (another user's study is a
404, like a missing one), and ``DELETE /history/{id}`` removes a study as it removes a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Response, UploadFile, status

from braintumor.api.deps import AuditDep, CurrentUser, StorageDep
from braintumor.api.routes.intake import IntakeDep, intake_route
from braintumor.api.routes.scans import ScanId, delete_owned, owned_scan, read_capped
from braintumor.api.schemas import StudyPublic, StudySlice
from braintumor.api.study_analysis import analyse_study
from braintumor.api.study_report import build_study_report
from braintumor.errors import ImageTooLargeError
from braintumor.storage import ScanRecord, Storage, UserRecord

router = APIRouter(tags=["studies"])


def owned_study(storage: Storage, user: UserRecord, study_id: str) -> ScanRecord:
    """The study if ``user`` owns it; 404 otherwise (also for one of the user's single scans)."""
    rec = owned_scan(storage, user, study_id)
    if rec.kind != "study":
        raise HTTPException(status.HTTP_404_NOT_FOUND, "study not found (this id is a scan: GET /history/{id})")
    return rec


def study_detail(rec: ScanRecord) -> StudyPublic:
    """The stored study as the API shows it: every slice with links to its views."""
    result: dict[str, Any] = rec.result
    study = result.get("study", {})
    decision = result.get("decision", {})

    def link(k: int | None, view: str) -> str | None:
        f = rec.files.get(f"slice.{k}.{view}") if k is not None else None
        return f"/files/{f.id}" if f else None

    slices = [
        StudySlice(
            **{name: s.get(name) for name in StudySlice.model_fields if name in s},
            image_url=link(s.get("blob"), "image"),
            overlay_url=link(s.get("blob"), "overlay"),
        )
        for s in result.get("slices", [])
    ]
    where = {(s.series_uid, s.index): s for s in slices}
    top = [where[key] for t in study.get("top_slices", []) if (key := (t["series_uid"], t["index"])) in where]
    return StudyPublic(
        id=rec.id,
        filename=rec.filename,
        created_at=rec.created_at,
        outcome=rec.outcome,  # type: ignore[arg-type]
        p_tumor=rec.p_tumor,
        tumor_type=rec.tumor_type,
        model_name=rec.model_name,
        model_version=rec.model_version,
        threshold=rec.threshold,
        files={},
        report_url=f"/studies/{rec.id}/report.pdf",
        kind="study",
        url=f"/studies/{rec.id}",
        slice_count=len(slices),
        study_uid=study.get("study_uid", ""),
        source_kind=study.get("kind", "dicom"),
        reason=study.get("reason", ""),
        rule=study.get("rule", {}),
        note=study.get("note", ""),
        refer_low=_or(decision.get("refer_low"), rec.threshold),
        refer_high=_or(decision.get("refer_high"), rec.threshold),
        series=study.get("series", []),
        skipped_series=study.get("skipped_series", []),
        problems=result.get("problems", []),
        slices=slices,
        top_slices=top,
        deidentified=bool(result.get("deidentified", False)),
        disclaimer=str(result.get("disclaimer", "")),
    )


def _or(value: Any, default: float) -> float:
    return default if value is None else float(value)


@intake_route(
    router,
    "/studies",
    StudyPublic,
    {
        413: "upload, files, slices or decoded bytes past the site's caps",
        415: "a file that is not DICOM or NIfTI",
        422: "unreadable, several studies, no series kept, or no slice assessable (why is given)",
        503: "no model loaded",
    },
)
async def create_study(
    files: Annotated[
        list[UploadFile],
        File(description="the study: its DICOM files, one zip of them, or one NIfTI volume (.nii / .nii.gz)"),
    ],
    intake: IntakeDep,
) -> StudyPublic:
    """Score a study slice by slice (the gate per slice: a slice without enough brain is *not assessable*), then
    give it one outcome by the study rule (tumor when enough consecutive slices are tumor; see the answer's
    ``rule`` and ``note``: the model was validated on 2-D slices, not studies). One result per slice with links
    to the slice view and its Grad-CAM overlay; the study is kept in your history."""
    settings = intake.settings
    if len(files) > settings.max_study_files:
        raise ImageTooLargeError(f"too many files: {len(files):,}, the cap is {settings.max_study_files:,}")
    payload = await _read_all(files, settings.max_study_bytes)
    name = files[0].filename if len(files) == 1 else None
    rec = await intake.store(partial(analyse_study, payload, name=name))
    intake.created(rec, f"/studies/{rec.id}", "study.create", slices=len(rec.result.get("slices", [])))
    return study_detail(rec)


async def _read_all(files: Sequence[UploadFile], cap: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    left = cap
    for f in files:
        data = await read_capped(f, left, what="study upload")
        left -= len(data)
        out.append((f.filename or f"file{len(out)}", data))
    return out


@router.get("/studies/{study_id}", response_model=StudyPublic)
def get_study(study_id: ScanId, user: CurrentUser, storage: StorageDep, audit: AuditDep) -> StudyPublic:
    """One of your studies with every slice's result."""
    rec = owned_study(storage, user, study_id)
    audit.record("study.view", actor=user.username, target=rec.id)
    return study_detail(rec)


@router.get(
    "/studies/{study_id}/report.pdf", response_class=Response, responses={200: {"content": {"application/pdf": {}}}}
)
def study_report(study_id: ScanId, user: CurrentUser, storage: StorageDep, audit: AuditDep) -> Response:
    """A PDF report of one of your studies: the outcome and the rule, every series, the p(tumor) curve with the
    decision band, and the most suspicious slices with their overlays."""
    rec = owned_study(storage, user, study_id)
    study = study_detail(rec)
    views = {(s.series_uid, s.index): (_linked(storage, s.image_url), _linked(storage, s.overlay_url))
             for s in study.top_slices[:4]}  # fmt: skip
    pdf = build_study_report(study, views)
    audit.record("report.download", actor=user.username, target=rec.id)
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="study-{rec.id}.pdf"'})  # fmt: skip


def _linked(storage: Storage, url: str | None) -> bytes | None:
    """The bytes behind one of the study's own file links (``/files/{id}``), or None."""
    found = storage.get_file(url.rsplit("/", 1)[-1]) if url else None
    return found[1] if found else None


@router.delete("/studies/{study_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_study(study_id: ScanId, user: CurrentUser, storage: StorageDep, audit: AuditDep) -> Response:
    """Delete one of your studies and all of its files."""
    return delete_owned(owned_study(storage, user, study_id), user, storage, audit, "study.delete")
