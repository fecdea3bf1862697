"""The site's PACS, from the API: ``GET /pacs`` (is one configured?), ``GET /pacs/studies`` (QIDO-RS search) and
``POST /pacs/studies/{uid}/analyze`` (WADO-RS retrieve, then analysed and stored exactly as ``POST /studies`` does:
the same pipeline, through the same :class:`~braintumor.api.routes.intake.Intake`).

Why only the configured one: the PACS's DICOMweb root and its account come from the settings
(``BRAINTUMOR_PACS_URL``, ``_USERNAME``, ``_PASSWORD``), set by the site's administrator; no request can name
another server, so the API cannot be turned into a proxy to anything its host reaches. The client is
:class:`braintumor.interop.pacs.PacsClient` (the same one ``braintumor pacs`` uses).

Failures are one line and never carry the password: no PACS configured -> 404 "no PACS is configured"; the PACS
unreachable -> 503; credentials refused or another error answer from the PACS -> 502. Searches are audited by which
filters were used, never by their values (patient names and ids stay out of the audit log).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from braintumor.api.config import Settings
from braintumor.api.deps import AuditDep, CurrentUser, SettingsDep
from braintumor.api.routes.intake import IntakeDep, intake_route
from braintumor.api.routes.studies import study_detail
from braintumor.api.schemas import PacsStatus, PacsStudy, PacsStudyPage, StudyPublic
from braintumor.api.study_analysis import analyse_study
from braintumor.errors import ImageTooLargeError
from braintumor.interop.pacs import PacsClient, PacsError, encoded_instances

router = APIRouter(tags=["pacs"])
NOT_CONFIGURED = "no PACS is configured (the site's administrator sets BRAINTUMOR_PACS_URL)"
#: Printable text without controls: what a QIDO-RS matching key may hold here.
_TEXT = r"^[^\x00-\x1f\x7f]*$"
_UID = r"^[0-9]+(\.[0-9]+)*$"


def get_pacs(settings: SettingsDep, _user: CurrentUser) -> PacsClient:
    """A client for the configured PACS (signed-in users only); 404 when none is configured."""
    if settings.pacs_url is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_CONFIGURED)
    password = settings.pacs_password.get_secret_value() if settings.pacs_password is not None else None
    try:
        return PacsClient(settings.pacs_url, username=settings.pacs_username or None, password=password,
                          timeout=settings.pacs_timeout_s, retries=1)  # fmt: skip
    except PacsError as exc:  # the settings validate the URL: this is a server-side misconfiguration
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the configured PACS cannot be used: {exc}") from None


PacsDep = Annotated[PacsClient, Depends(get_pacs)]


def pacs_failure(exc: PacsError) -> HTTPException:
    """The HTTP answer to a PACS failure: 503 unreachable, 404 what the PACS does not know, 502 anything else it
    refused (credentials included). The message is :class:`PacsError`'s: the URL without credentials."""
    if exc.status is None:
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif exc.status == 404:
        code = status.HTTP_404_NOT_FOUND
    else:
        code = status.HTTP_502_BAD_GATEWAY
    return HTTPException(code, " ".join(str(exc).split())[:300])


@router.get("/pacs", response_model=PacsStatus)
def pacs_status(settings: SettingsDep, _user: CurrentUser) -> PacsStatus:
    """Whether this site has a PACS configured (nothing about it beyond that)."""
    return PacsStatus(configured=settings.pacs_url is not None)


@router.get(
    "/pacs/studies",
    response_model=PacsStudyPage,
    responses={
        404: {"description": "no PACS is configured"},
        502: {"description": "the PACS refused the request (e.g. its credentials)"},
        503: {"description": "the PACS is unreachable"},
    },
)
def search_studies(
    pacs: PacsDep,
    user: CurrentUser,
    audit: AuditDep,
    patient_id: Annotated[str | None, Query(max_length=64, pattern=_TEXT)] = None,
    patient_name: Annotated[
        str | None, Query(max_length=64, pattern=_TEXT, description="DICOM name match: * and ? wildcards")
    ] = None,
    accession_number: Annotated[str | None, Query(max_length=16, pattern=_TEXT)] = None,
    study_date: Annotated[
        str | None, Query(pattern=r"^(\d{8})?(-(\d{8})?)?$", description="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    ] = None,
    modality: Annotated[str | None, Query(pattern=r"^[A-Z0-9]{1,16}$", description="in the study, e.g. MR")] = None,
    page: Annotated[int, Query(ge=1, le=1000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PacsStudyPage:
    """Studies on the site's PACS matching every filter given (QIDO-RS), one page at a time in the PACS's order."""
    filters = {"patient_id": patient_id, "patient_name": patient_name, "accession_number": accession_number,
               "study_date": study_date, "modality": modality}  # fmt: skip
    given = {k: v.strip() for k, v in filters.items() if v and v.strip()}
    try:
        found = pacs.search_studies(**given, limit=page_size + 1, offset=(page - 1) * page_size)
    except PacsError as exc:
        audit.record("pacs.search", actor=user.username, outcome="failed", filters=sorted(given))
        raise pacs_failure(exc) from None
    audit.record("pacs.search", actor=user.username, filters=sorted(given), studies=min(len(found), page_size))
    items = [
        PacsStudy(study_uid=s.study_uid, patient_id=s.patient_id, patient_name=s.patient_name,
                  study_date=s.study_date, accession_number=s.accession_number, description=s.description,
                  modalities=list(s.modalities), series=s.series, instances=s.instances)
        for s in found[:page_size]
    ]  # fmt: skip
    return PacsStudyPage(items=items, page=page, page_size=page_size, more=len(found) > page_size)


def retrieve_for_analysis(pacs: PacsClient, study_uid: str, settings: Settings) -> list[tuple[str, bytes]]:
    """The study's image instances as DICOM files, held to the caps of ``POST /studies`` (instances counted by a
    QIDO-RS search before anything is retrieved, then the bytes)."""
    try:
        instances = pacs.search_instances(study_uid)
        if not instances:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"study {study_uid} is not on the PACS")
        if len(instances) > settings.max_study_files:
            raise ImageTooLargeError(
                f"the study has {len(instances):,} instances, the cap is {settings.max_study_files:,}"
            )
        retrieved = encoded_instances(pacs.retrieve_study(study_uid))
    except PacsError as exc:
        raise pacs_failure(exc) from None
    if not retrieved.files:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            f"study {study_uid} has no image instance to analyse ({retrieved.passed_over} without "
                            f"pixels, {len(retrieved.unreadable)} unreadable)")  # fmt: skip
    total = sum(len(data) for _, data in retrieved.files)
    if total > settings.max_study_bytes:
        raise ImageTooLargeError(f"the study holds {total / 1048576:,.0f} MB of images, the cap is "
                                 f"{settings.max_study_mb:g} MB")  # fmt: skip
    return list(retrieved.files)


@intake_route(
    router,
    "/pacs/studies/{study_uid}/analyze",
    StudyPublic,
    {
        404: "no PACS is configured, or the study is not on it",
        413: "more instances or bytes than a study may have (the site's caps)",
        422: "no image instance, several studies, no series kept, or no slice assessable",
        502: "the PACS refused the request (e.g. its credentials)",
        503: "the PACS is unreachable, or no model is loaded",
    },
)
async def analyze_study(
    study_uid: Annotated[str, PathParam(max_length=64, pattern=_UID, description="Study Instance UID")],
    pacs: PacsDep,
    intake: IntakeDep,
) -> StudyPublic:
    """Retrieve a study from the site's PACS (WADO-RS) and analyse it exactly like an uploaded study
    (``POST /studies``: de-identified unless the site keeps identifiers, scored slice by slice, one outcome by the
    study rule) into your history. Nothing is written back to the PACS."""
    payload = await run_in_threadpool(retrieve_for_analysis, pacs, study_uid, intake.settings)
    rec = await intake.store(partial(analyse_study, payload, name="PACS study"))
    intake.created(rec, f"/studies/{rec.id}", "pacs.analyze", instances=len(payload))
    return study_detail(rec)
