"""What the API answers, as frozen dataclasses the UI pages use (``Scan``, ``ScanPage``, ``Stats`` …).

Why apart from the client: these mirror the API's response schemas field by field (the UI imports nothing of the
API; ``tests/ui/test_client_contract.py`` keeps them in step with the OpenAPI schema), while :mod:`.client` is the
HTTP side. Each ``from_json`` reads one response body.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class User:
    """An account as the API shows it (``scans`` only in the admin list)."""

    username: str
    role: str
    created_at: dt.datetime
    scans: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        scans = data.get("scans")
        return cls(
            str(data["username"]), str(data["role"]), _when(data["created_at"]), None if scans is None else int(scans)
        )

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
    """A stored file of a scan (``kind``: original, heatmap, overlay, cam)."""

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


def _summary(data: dict[str, Any], *, kind: str) -> dict[str, Any]:
    """The fields every history record has (the API's ``ScanSummary``), read once for scans and studies."""
    files = {
        k: FileLink(str(v["id"]), str(v["url"]), str(v["content_type"]), int(v["size"]))
        for k, v in (data.get("files") or {}).items()
    }
    return {
        "id": str(data["id"]),
        "filename": str(data["filename"]),
        "created_at": _when(data["created_at"]),
        "outcome": str(data["outcome"]),
        "p_tumor": float(data["p_tumor"]),
        "tumor_type": data.get("tumor_type"),
        "model_name": str(data["model_name"]),
        "model_version": str(data["model_version"]),
        "threshold": float(data["threshold"]),
        "files": files,
        "report_url": str(data["report_url"]),
        "kind": str(data.get("kind", kind)),
        "url": str(data.get("url", "")),
        "slice_count": None if data.get("slice_count") is None else int(data["slice_count"]),
    }


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
        members = tuple(
            MemberResult(
                str(m["name"]),
                str(m["arch"]),
                float(m["p_tumor"]),
                str(m["outcome"]),
                dict(m.get("probs", {})),
                m.get("heatmap"),
            )
            for m in data.get("members", [])
        )
        return cls(
            **_summary(data, kind="scan"),
            detailed="members" in data,
            probs={str(k): float(v) for k, v in data.get("probs", {}).items()},
            type_probs={str(k): float(v) for k, v in data.get("type_probs", {}).items()},
            refer_low=data.get("refer_low"),
            refer_high=data.get("refer_high"),
            members=members,
            image=dict(data.get("image") or {}),
            dicom={str(k): str(v) for k, v in (data.get("dicom") or {}).items()},
            deidentified=bool(data.get("deidentified", False)),
            disclaimer=str(data.get("disclaimer", "")),
        )


@dataclass(frozen=True)
class ScanPage:
    """One page of the history."""

    items: tuple[Scan, ...]
    total: int
    page: int
    page_size: int
    pages: int


@dataclass(frozen=True)
class UserPage:
    """One page of the admin's user list."""

    items: tuple[User, ...]
    total: int
    page: int
    page_size: int
    pages: int


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySlice:
        p, position = data.get("p_tumor"), data.get("position")
        number, frame = data.get("instance_number"), data.get("frame")
        return cls(
            series_uid=str(data["series_uid"]),
            index=int(data["index"]),
            position=None if position is None else float(position),
            instance_number=None if number is None else int(number),
            sop_instance_uid=data.get("sop_instance_uid"),
            frame=None if frame is None else int(frame),
            source=str(data.get("source", "")),
            status=str(data["status"]),
            reason=str(data.get("reason") or ""),
            outcome=data.get("outcome"),
            p_tumor=None if p is None else float(p),
            tumor_type=data.get("tumor_type"),
            image_url=data.get("image_url"),
            overlay_url=data.get("overlay_url"),
        )


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySeries:
        return cls(
            series_uid=str(data["series_uid"]),
            kind=str(data["kind"]),
            description=str(data.get("description") or ""),
            modality=data.get("modality"),
            ordered_by=str(data.get("ordered_by") or ""),
            notes=tuple(str(n) for n in data.get("notes") or ()),
            outcome=data.get("outcome"),
            reason=str(data.get("reason") or ""),
            slices=int(data["slices"]),
            assessed=int(data["assessed"]),
            top_slices=tuple(int(k) for k in data.get("top_slices") or ()),
            p_tumor_curve=tuple(None if p is None else float(p) for p in data.get("p_tumor_curve") or ()),
        )


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
        return cls(
            **_summary(data, kind="study"),
            study_uid=str(data.get("study_uid") or ""),
            source_kind=str(data.get("source_kind", "dicom")),
            reason=str(data.get("reason") or ""),
            rule=dict(data.get("rule") or {}),
            note=str(data.get("note") or ""),
            refer_low=float(data["refer_low"]),
            refer_high=float(data["refer_high"]),
            series=tuple(StudySeries.from_json(s) for s in data.get("series") or ()),
            skipped_series=tuple(
                SkippedSeries(str(s["series_uid"]), str(s.get("description") or ""), str(s["reason"]))
                for s in data.get("skipped_series") or ()
            ),
            problems=tuple(RefusedFile(str(p["source"]), str(p["reason"])) for p in data.get("problems") or ()),
            slices=tuple(StudySlice.from_json(s) for s in data.get("slices") or ()),
            top_slices=tuple(StudySlice.from_json(s) for s in data.get("top_slices") or ()),
            deidentified=bool(data.get("deidentified", False)),
            disclaimer=str(data.get("disclaimer") or ""),
        )


@dataclass(frozen=True)
class PacsStudy:
    """One study on the site's PACS as its search returns it (``GET /pacs/studies``)."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    description: str
    modalities: tuple[str, ...]
    series: int | None
    instances: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PacsStudy:
        def text(key: str) -> str:
            return str(data.get(key) or "")

        def count(key: str) -> int | None:
            return None if data.get(key) is None else int(data[key])

        return cls(
            study_uid=text("study_uid"),
            patient_id=text("patient_id"),
            patient_name=text("patient_name"),
            study_date=text("study_date"),
            accession_number=text("accession_number"),
            description=text("description"),
            modalities=tuple(str(m) for m in data.get("modalities") or ()),
            series=count("series"),
            instances=count("instances"),
        )


@dataclass(frozen=True)
class PacsStudyPage:
    """One page of a PACS search; ``more`` when the PACS has more matches after it."""

    items: tuple[PacsStudy, ...]
    page: int
    page_size: int
    more: bool
