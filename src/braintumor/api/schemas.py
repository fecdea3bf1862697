"""Request and response bodies (the ``UserCreate`` / ``UserPublic`` families of the FastAPI template).

Why separate families: what a client may send (``UserCreate``: a password) and what it may see (``UserPublic``:
no hash, no id, no token version) must never be the same class, so nothing secret can leak by accident.

Example:
    >>> UserCreate(username="Alice_1", password="a long passphrase").username
    'alice_1'
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$"

#: The one answer a scan gets (``braintumor.models.decision.Outcome``; the API does not import the model side).
Outcome = Literal["tumor", "refer", "no_tumor"]
RoleName = Literal["user", "admin"]
#: What a history record is (``braintumor.storage.RecordKind``).
RecordKind = Literal["scan", "study"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- accounts --------------------------------------------------------------------------------------------
class UserCreate(_Strict):
    username: str = Field(pattern=USERNAME_PATTERN, description="3–32 letters, digits, '.', '_' or '-'")
    password: str = Field(min_length=1, max_length=128)

    @field_validator("username")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class UserPublic(BaseModel):
    username: str
    role: RoleName
    created_at: dt.datetime


class Registered(BaseModel):
    user: UserPublic
    recovery_key: str = Field(description="Shown once: the only way to reset a forgotten password. Store it safely.")


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds")


class PasswordChange(_Strict):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=1, max_length=128)


class PasswordReset(_Strict):
    username: str = Field(min_length=1, max_length=64)
    recovery_key: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=1, max_length=128)


class RecoveryKeyIssued(BaseModel):
    recovery_key: str = Field(description="A new recovery key (the one used is no longer valid). Shown once.")
    detail: str


class PasswordConfirm(_Strict):
    password: str = Field(min_length=1, max_length=128)


class Message(BaseModel):
    detail: str


# -- scans -----------------------------------------------------------------------------------------------
class FileLink(BaseModel):
    id: str
    url: str
    content_type: str
    size: int


class MemberOutput(BaseModel):
    """One ensemble member: its probabilities, and what its p(tumor) reads as under the *ensemble's* rule."""

    name: str
    arch: str
    probs: dict[str, float]
    p_tumor: float
    outcome: Outcome = Field(description="this member's p(tumor) under the ensemble's rule (not a rule of its own)")
    heatmap: str | None = Field(
        default=None,
        description="blob kind of this member's Grad-CAM map in the scan's files (cam.N, float16 .npy like cam; "
        "scans stored before maps were kept per member: its overlay PNG, overlay.N)",
    )

    @model_validator(mode="before")
    @classmethod
    def _older(cls, data: Any) -> Any:
        if isinstance(data, dict) and "outcome" not in data:  # records of before the one outcome
            data = {k: v for k, v in data.items() if k != "label"}
            data["outcome"] = "tumor" if float(data.get("p_tumor", 0.0)) >= 0.5 else "no_tumor"
        return data


class HeatmapPreview(BaseModel):
    """The raw class-activation map, max-normalised to 0–1 and downsampled (rows of ``values``)."""

    width: int
    height: int
    values: list[list[float]]


class ImageInfo(BaseModel):
    format: str
    width: int
    height: int
    frames: int = 1
    notes: list[str] = []


class StoredPrediction(BaseModel):
    """The model's answer as stored with a scan (``Prediction.as_dict()``); defaults read older records (whose
    ``band`` was the three-way answer, beside a threshold ``label`` no longer shown)."""

    outcome: Outcome = "no_tumor"
    p_tumor: float = 0.0
    probs: dict[str, float] = {}
    tumor_type: str | None = None
    type_probs: dict[str, float] = {}
    threshold: float | None = None
    refer_low: float | None = None
    refer_high: float | None = None
    members: list[MemberOutput] = []
    model: str = ""
    model_version: str = ""

    @model_validator(mode="before")
    @classmethod
    def _older(cls, data: Any) -> Any:
        if isinstance(data, dict) and "outcome" not in data and "band" in data:
            band = data["band"]
            data = {k: v for k, v in data.items() if k not in ("band", "label")}
            data["outcome"] = band
        return data


class StoredResult(BaseModel):
    """The one contract for a scan's stored ``result``: analysis writes it, the scans route and the PDF report read
    it, and the UI client reads it back as :class:`ScanPublic`."""

    prediction: StoredPrediction = StoredPrediction()
    model_card: dict[str, Any] = Field(default={}, description="Predictor.card_summary() of the model that answered")
    heatmap: HeatmapPreview | None = None
    image: ImageInfo = ImageInfo(format="unknown", width=0, height=0)
    dicom: dict[str, str] = {}
    deidentified: bool = False


class ScanSummary(BaseModel):
    id: str
    filename: str
    created_at: dt.datetime
    outcome: Outcome = Field(description="the answer: tumor, refer (for review by a clinician) or no_tumor")
    p_tumor: float
    tumor_type: str | None
    model_name: str
    model_version: str
    threshold: float
    files: dict[str, FileLink] = Field(description="the record's files by kind (empty in a study's summary)")
    report_url: str
    kind: RecordKind = Field(default="scan", description="one image (scan) or a whole study scored slice by slice")
    url: str = Field(default="", description="where the full record is: /history/{id} or /studies/{id}")
    slice_count: int | None = Field(default=None, description="a study's scored slices (None for a scan)")


class ScanPublic(ScanSummary):
    probs: dict[str, float]
    type_probs: dict[str, float]
    refer_low: float
    refer_high: float
    members: list[MemberOutput]
    heatmap: HeatmapPreview | None
    image: ImageInfo
    dicom: dict[str, str] = Field(description="DICOM tags kept with the scan (de-identified unless the site says so)")
    deidentified: bool
    disclaimer: str
    result: dict[str, Any] = Field(description="The model's full output (Prediction.as_dict())")


class ScanPage(BaseModel):
    items: list[ScanSummary]
    total: int
    page: int
    page_size: int
    pages: int


class StudySlice(BaseModel):
    """One slice of a scored series: where it is, what the model said (or why it could not), and its views."""

    series_uid: str
    index: int = Field(description="place in slice order within its series (0 = first of the stack)")
    position: float | None = Field(description="mm along the slice normal (None without geometry)")
    instance_number: int | None
    sop_instance_uid: str | None = Field(description="the (de-identified) instance it came from")
    frame: int | None = Field(description="frame of a multi-frame object, 0-based")
    source: str = Field(description="the file's name inside the upload")
    status: Literal["ok", "not_assessable", "error"]
    reason: str = ""
    outcome: Outcome | None = None
    p_tumor: float | None = None
    tumor_type: str | None = None
    image_url: str | None = Field(default=None, description="the slice as the model saw it (PNG)")
    overlay_url: str | None = Field(default=None, description="its Grad-CAM overlay (PNG)")


class StudySeries(BaseModel):
    """One scored series: its outcome by the study rule, counts, top slices and the p(tumor) curve."""

    series_uid: str
    kind: str
    description: str
    modality: str | None
    ordered_by: str
    notes: list[str]
    outcome: Outcome | None
    reason: str
    slices: int
    assessed: int
    top_slices: list[int]
    p_tumor_curve: list[float | None] = Field(description="p(tumor) per slice in slice order (None: not assessed)")


class SkippedSeriesInfo(BaseModel):
    series_uid: str
    description: str
    reason: str


class FileRefused(BaseModel):
    source: str
    reason: str


class StudyPublic(ScanSummary):
    """A study: the study outcome and its reason under the stated rule, every series, every slice, the top
    slices, and what was skipped or refused (with why)."""

    study_uid: str = Field(description="the (de-identified) StudyInstanceUID; empty for a NIfTI volume")
    source_kind: Literal["dicom", "nifti"]
    reason: str
    rule: dict[str, Any]
    note: str = Field(description="the slice model was validated on 2-D slices, not studies")
    refer_low: float
    refer_high: float
    series: list[StudySeries]
    skipped_series: list[SkippedSeriesInfo]
    problems: list[FileRefused]
    slices: list[StudySlice]
    top_slices: list[StudySlice]
    deidentified: bool
    disclaimer: str


class BulkDelete(_Strict):
    ids: list[str] = Field(min_length=1, max_length=500)


class BulkDeleted(BaseModel):
    deleted: list[str]
    not_found: list[str]


# -- admin and health ------------------------------------------------------------------------------------
class RoleUpdate(_Strict):
    role: RoleName


class UserAdminView(UserPublic):
    scans: int


class UserPage(BaseModel):
    items: list[UserAdminView]
    total: int
    page: int
    page_size: int
    pages: int


class LockPublic(BaseModel):
    """A sign-in lock or back-off. ``username`` is the account, or ``unknown:<hash>`` for a name that is not one
    (it may be a password typed into the wrong field); ``client`` is ``None`` for the account-wide back-off."""

    username: str
    client: str | None
    scope: Literal["client", "account"]
    failures: int
    locked_for_s: float


class LocksCleared(BaseModel):
    username: str
    cleared: int


class UserScans(BaseModel):
    username: str
    scans: int


class DayCount(BaseModel):
    date: dt.date
    scans: int


def with_rows(stats: Any, **rows: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``stats`` (a dataclass of :mod:`braintumor.storage.stats`) as a response's keywords, each one
    named in ``rows`` turned from tuples into that row model (a tuple's items in the order of the model's fields).

    >>> with_rows(dataclasses.make_dataclass("S", ["per_day"])([("2024-01-02", 3)]), per_day=DayCount)
    {'per_day': [DayCount(date=datetime.date(2024, 1, 2), scans=3)]}
    """
    fields = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    for name, model in rows.items():
        fields[name] = [model(**dict(zip(model.model_fields, row, strict=True))) for row in fields[name]]
    return fields


class StatsPublic(BaseModel):
    users: int
    admins: int
    scans: int
    scans_per_user: list[UserScans]
    outcomes: dict[str, int]
    per_day: list[DayCount]


class OutcomeDayCount(BaseModel):
    date: dt.date
    outcome: Outcome
    scans: int


class ModelCount(BaseModel):
    model: str = Field(description="name vVERSION")
    scans: int


class ScanStatsPublic(BaseModel):
    """Your scans at a glance (the Dashboard), computed by the server instead of paging through the history."""

    scans: int
    outcomes: dict[str, int]
    mean_p_tumor: float | None
    models: list[ModelCount] = Field(description="scans per model, most first")
    histogram: dict[str, list[int]] = Field(description="per outcome, scans in 20 bins of p(tumor) (0–5 %, …)")
    per_day: list[OutcomeDayCount]
    threshold: float | None = Field(description="the operating threshold of the newest scan's model")


class ModelHealth(BaseModel):
    loaded: bool
    name: str | None = None
    version: str | None = None
    reason: str | None = None
    card: dict[str, Any] | None = None


class StorageHealth(BaseModel):
    backend: str
    reachable: bool


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: str
    model: ModelHealth
    storage: StorageHealth


# -- the hospital's PACS (issue 16) ----------------------------------------------------------------------------
class PacsStatus(BaseModel):
    """Whether the site configured a PACS (the UI shows its "from PACS" page only then)."""

    configured: bool


class PacsStudy(BaseModel):
    """One study as the PACS's QIDO-RS search returns it (empty strings where the PACS has no value)."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str = Field(description="YYYYMMDD as the PACS keeps it")
    accession_number: str
    description: str
    modalities: list[str]
    series: int | None
    instances: int | None


class PacsStudyPage(BaseModel):
    items: list[PacsStudy]
    page: int
    page_size: int
    more: bool = Field(description="the PACS has more matching studies after this page")
