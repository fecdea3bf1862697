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


@dataclass(frozen=True)
class Scan:
    """A scan from the history or ``/predict``; the fields after ``report_url`` are filled for one scan's detail
    (``detailed``), not in list pages."""

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
    detailed: bool = False
    kind: str = "scan"  # "scan" or "study" (a study's page is ``GET /studies/{id}``)
    url: str = ""
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
        files = {
            k: FileLink(str(v["id"]), str(v["url"]), str(v["content_type"]), int(v["size"]))
            for k, v in data["files"].items()
        }
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
            id=str(data["id"]),
            filename=str(data["filename"]),
            created_at=_when(data["created_at"]),
            outcome=str(data["outcome"]),
            p_tumor=float(data["p_tumor"]),
            tumor_type=data.get("tumor_type"),
            model_name=str(data["model_name"]),
            model_version=str(data["model_version"]),
            threshold=float(data["threshold"]),
            files=files,
            report_url=str(data["report_url"]),
            detailed="members" in data,
            kind=str(data.get("kind", "scan")),
            url=str(data.get("url", "")),
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
