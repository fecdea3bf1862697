"""What the API answers, as frozen dataclasses the UI pages use (``Scan``, ``ScanPage``, ``Stats`` …).

Why apart from the client: these mirror the API's response schemas field by field (the UI imports nothing of the
API; ``tests/ui/test_client_contract.py`` keeps them in step with the OpenAPI schema), while :mod:`.client` is the
HTTP side. Each is read from a response body by :func:`.reading.read`, by its fields' types; ``Scan`` and ``Study``
say in ``from_json`` what their types cannot (which kind a record is when the answer does not say).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from braintumor.imaging.dicom_tags import StudySummary
from braintumor.ui.reading import read


@dataclass(frozen=True)
class User:
    """An account as the API shows it (``scans`` only in the admin list)."""

    username: str
    role: str
    created_at: dt.datetime
    scans: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Token:
    """A bearer token and its lifetime in seconds."""

    access_token: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True)
class FileLink:
    """A stored file of a scan (``kind``: original, heatmap, overlay, cam, cam.N a member)."""

    id: str
    url: str
    content_type: str
    size: int


@dataclass(frozen=True)
class MemberResult:
    """One ensemble member: its probabilities, what its p(tumor) reads as under the ensemble's rule, and which of
    the scan's files is its overlay (``None`` for a single model, whose map is the scan's)."""

    name: str
    arch: str
    p_tumor: float
    outcome: str
    probs: dict[str, float]
    heatmap: str | None = None


@dataclass(frozen=True)
class Record:
    """What every history row is (the API's ``ScanSummary``): a scan or a study (``kind``), its answer, its files
    and where its full record (``url``) and its report are."""

    id: str
    filename: str
    created_at: dt.datetime
    outcome: str
    p_tumor: float
    tumor_type: str | None
    model_name: str
    model_version: str
    threshold: float
    files: dict[str, FileLink]
    report_url: str
    kind: str  # "scan" or "study" (a study's page is ``GET /studies/{id}``)
    url: str
    slice_count: int | None  # a study's scored slices


@dataclass(frozen=True)
class Scan(Record):
    """A scan from the history or ``/predict``; the fields after ``url`` are filled for one scan's detail
    (``detailed``), not in list pages."""

    detailed: bool = False
    probs: dict[str, float] = field(default_factory=dict)
    type_probs: dict[str, float] = field(default_factory=dict)
    refer_low: float | None = None
    refer_high: float | None = None
    members: tuple[MemberResult, ...] = ()
    image: dict[str, Any] = field(default_factory=dict)
    dicom: dict[str, str] = field(default_factory=dict)
    deidentified: bool = False
    disclaimer: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scan:
        """A scan, detailed when the answer has its members (``/predict``, one scan's page)."""
        return read(cls, data, kind="scan", detailed="members" in data)


@dataclass(frozen=True)
class Paging:
    """Where a page of a paged list stands (what the API's ``ScanPage`` and ``UserPage`` share)."""

    total: int
    page: int
    page_size: int
    pages: int


@dataclass(frozen=True)
class ScanPage(Paging):
    """One page of the history."""

    items: tuple[Scan, ...]


@dataclass(frozen=True)
class UserPage(Paging):
    """One page of the admin's user list."""

    items: tuple[User, ...]


@dataclass(frozen=True)
class Stats:
    """Site-wide numbers for administrators."""

    users: int
    admins: int
    scans: int
    scans_per_user: tuple[tuple[str, int], ...]
    outcomes: dict[str, int]
    per_day: tuple[tuple[dt.date, int], ...]


@dataclass(frozen=True)
class ScanStats:
    """The signed-in user's scans at a glance (``/history/stats``, for the Dashboard)."""

    scans: int
    outcomes: dict[str, int]
    mean_p_tumor: float | None
    models: tuple[tuple[str, int], ...]
    histogram: dict[str, tuple[int, ...]]
    per_day: tuple[tuple[dt.date, str, int], ...]
    threshold: float | None


@dataclass(frozen=True)
class Lock:
    """A sign-in lock (``scope`` ``client``: one account from one address) or an account-wide back-off; a name that
    is not an account is ``unknown:<hash>``."""

    username: str
    client: str | None
    scope: str
    failures: int
    locked_for_s: float


@dataclass(frozen=True)
class Health:
    """``/health``: is the model loaded (and which), is the storage reachable."""

    status: str
    version: str
    model_loaded: bool
    model_name: str | None
    model_version: str | None
    model_reason: str | None
    card: dict[str, Any]
    storage_backend: str
    storage_reachable: bool


@dataclass(frozen=True)
class BulkDeleted:
    """What a bulk delete removed, and the ids it did not find."""

    deleted: tuple[str, ...]
    not_found: tuple[str, ...]


@dataclass(frozen=True)
class StudySlice:
    """One slice of a scored series: where it is, what the model said (``status`` ``ok``) or why it could not
    (``not_assessable``, ``error``, with the ``reason``), and the URLs of its view and Grad-CAM overlay."""

    series_uid: str
    index: int
    position: float | None
    instance_number: int | None
    sop_instance_uid: str | None
    frame: int | None
    source: str
    status: str
    reason: str = ""
    outcome: str | None = None
    p_tumor: float | None = None
    tumor_type: str | None = None
    image_url: str | None = None
    overlay_url: str | None = None


@dataclass(frozen=True)
class StudySeries:
    """One scored series: its outcome by the study rule with the reason, how many slices were assessed, its top
    slices (indices) and p(tumor) per slice in slice order (``None``: not assessed)."""

    series_uid: str
    kind: str
    description: str
    modality: str | None
    ordered_by: str
    notes: tuple[str, ...]
    outcome: str | None
    reason: str
    slices: int
    assessed: int
    top_slices: tuple[int, ...]
    p_tumor_curve: tuple[float | None, ...]


@dataclass(frozen=True)
class SkippedSeries:
    """A series of the upload the series rules left out, and why."""

    series_uid: str
    description: str
    reason: str


@dataclass(frozen=True)
class RefusedFile:
    """A file of the upload that could not be used (not DICOM, unreadable …), and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class Study(Record):
    """A whole study scored slice by slice (``POST /studies``, ``GET /studies/{id}``): the study outcome with its
    reason under the stated ``rule`` (and the ``note`` that the model was validated on 2-D slices, not studies),
    every series and slice, the top slices, and what was skipped or refused."""

    study_uid: str
    source_kind: str
    reason: str
    rule: dict[str, Any]
    note: str
    refer_low: float
    refer_high: float
    series: tuple[StudySeries, ...]
    skipped_series: tuple[SkippedSeries, ...]
    problems: tuple[RefusedFile, ...]
    slices: tuple[StudySlice, ...]
    top_slices: tuple[StudySlice, ...]
    deidentified: bool
    disclaimer: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Study:
        return read(cls, data, kind="study", source_kind="dicom")


#: One study on the site's PACS as its search returns it (``GET /pacs/studies``): the record the PACS client
#: builds from the QIDO-RS answer, kept once in the imaging core.
PacsStudy = StudySummary


@dataclass(frozen=True)
class PacsStudyPage:
    """One page of a PACS search; ``more`` when the PACS has more matches after it."""

    items: tuple[PacsStudy, ...]
    page: int
    page_size: int
    more: bool
