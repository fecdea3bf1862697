"""The storage interface: users, scans, blobs and statistics, in one small protocol with two backends.

Why one interface: the API must not care whether a site runs the embedded backend (SQLite + content-addressed
files in a data directory, nothing to install) or MongoDB + GridFS; both pass the same contract test suite.
Records are plain frozen dataclasses, so this package imports nothing from the ML side (no numpy, no
onnxruntime) and nothing from the web side.

Guarantees every backend gives:

* ``add_scan`` is atomic: a scan record becomes visible only after all of its blobs are stored, and a failure
  leaves neither (blobs written before a crash are orphans that :meth:`Storage.collect_garbage` removes).
* Deleting a scan (or a user, with all of their scans) removes the record first, then its blobs.
* Usernames are unique (case-insensitive: they are stored lowercased) and the last admin cannot be demoted or
  deleted.
* Filename search is plain text (a substring, case-insensitive), never a pattern.
* A revoked token stays revoked until it expires, across restarts and processes (sign-out is stored, not cached).

Example:
    >>> from braintumor.storage import open_storage
    >>> store = open_storage("embedded", data_dir="data")  # doctest: +SKIP
    >>> user = store.create_user(NewUser("alice", "argon2-hash", "argon2-hash-of-recovery-key"))  # doctest: +SKIP
    >>> scan = store.add_scan(NewScan(owner_id=user.id, filename="a.png", outcome="tumor",
    ...     p_tumor=0.97), [Blob("original", png_bytes, "image/png")])  # doctest: +SKIP
    >>> store.list_scans(user.id, ScanQuery(search="a.")).total  # doctest: +SKIP
    1
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypedDict, TypeVar, Unpack, runtime_checkable

from braintumor.errors import BrainTumorError
from braintumor.storage.stats import ScanFacts, Stats

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")
#: Blob kinds a scan stores: the upload (de-identified when DICOM), the colourised heatmap, the overlay and the raw
#: map as float16 ``.npy``. A study stores ``source.{j}`` (its de-identified DICOM files) and, per scored slice
#: ``k``, ``slice.{k}.image`` and ``slice.{k}.overlay``.
BLOB_KINDS = ("original", "heatmap", "overlay", "cam")
#: What a history record is: one analysed image (``scan``) or a whole study scored slice by slice (``study``).
RecordKind = Literal["scan", "study"]
RECORD_KINDS: tuple[RecordKind, ...] = ("scan", "study")

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
D = TypeVar("D")


class StorageError(BrainTumorError):
    """The storage backend is unreachable or failed (the API answers 503, never the backend's text)."""


class UserExistsError(StorageError, ValueError):
    """A user with this name already exists."""


class UserNotFoundError(StorageError, KeyError):
    """No user with this name or id."""


class LastAdminError(StorageError, ValueError):
    """The change would leave the system without an administrator."""


def new_id() -> str:
    """A random, unguessable record id (128 bits, hex): ids never reveal how many records exist."""
    return secrets.token_hex(16)


def utcnow() -> dt.datetime:
    """Now in UTC, truncated to milliseconds (what MongoDB keeps), so every backend returns the same value."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def normalise_username(name: str) -> str:
    """Usernames compare case-insensitively: ``Alice`` and ``alice`` are one account."""
    return name.strip().lower()


# -- records ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewUser:
    """What :meth:`Storage.create_user` needs; hashes only, never a password."""

    username: str
    password_hash: str
    recovery_hash: str
    role: Role = "user"


@dataclass(frozen=True)
class UserRecord:
    """A stored account. ``token_version`` grows on every password change, which invalidates older tokens."""

    id: str
    username: str
    password_hash: str
    recovery_hash: str
    role: Role
    created_at: dt.datetime
    token_version: int = 0


class CredentialChange(TypedDict, total=False):
    """What :meth:`Storage.update_credentials` may change: new hashes, and whether every issued token is revoked."""

    password_hash: str | None
    recovery_hash: str | None
    bump_token_version: bool


@dataclass(frozen=True)
class UserSummary:
    """A user and their number of scans (the admin listing)."""

    user: UserRecord
    scans: int


@dataclass(frozen=True)
class Blob:
    """Bytes to store with a scan under one ``kind`` (see :data:`BLOB_KINDS`)."""

    kind: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class FileRecord:
    """A stored blob of a scan: ``id`` is what ``GET /files/{id}`` takes, ``sha256`` checks the content."""

    id: str
    scan_id: str
    owner_id: str
    kind: str
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ScanFields:
    """What a scan is, stored and to store: whose, which file, and the model's one answer, ``outcome`` (tumor,
    refer or no_tumor; the fields of :class:`NewScan` and :class:`ScanRecord`, with the defaults an older record
    is read with). ``kind`` says whether the record is one image or a study (:data:`RECORD_KINDS`); a study keeps
    its study outcome, its highest slice p(tumor) and the name of its upload here, the rest in ``result``."""

    owner_id: str
    filename: str
    outcome: str
    p_tumor: float
    tumor_type: str | None = None
    model_name: str = ""
    model_version: str = ""
    threshold: float = 0.5
    _: dataclasses.KW_ONLY
    kind: str = "scan"


@dataclass(frozen=True)
class NewScan(ScanFields):
    """A scan to store. ``result`` is the JSON-ready model output (anything the report or UI needs later)."""

    result: Mapping[str, Any] = field(default_factory=dict)
    created_at: dt.datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ScanRecord(ScanFields):
    """A stored scan with its files (by kind)."""

    id: str
    result: dict[str, Any]
    created_at: dt.datetime
    files: dict[str, FileRecord]


@dataclass(frozen=True)
class ScanQuery:
    """History filters. ``search`` is a plain-text, case-insensitive substring of the filename; ``outcome`` one
    answer; ``date_from`` and ``date_to`` are inclusive UTC bounds; ``kind`` scans or studies only (``None``:
    both); results are newest first."""

    search: str | None = None
    outcome: str | None = None
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None
    offset: int = 0
    limit: int = 20
    kind: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the total number of matches."""

    items: list[T]
    total: int


@dataclass(frozen=True)
class IntegrityReport:
    """Consistency of records and blobs: both lists are empty on a healthy store."""

    missing_blobs: list[str]
    orphan_blobs: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing_blobs and not self.orphan_blobs


# -- the interface ---------------------------------------------------------------------------------------
@runtime_checkable
class Storage(Protocol):
    """Users, scans, blobs and statistics. Implementations are thread-safe."""

    backend: str

    # users
    def create_user(self, user: NewUser) -> UserRecord:
        """Store a new account; raises :class:`UserExistsError` when the (lowercased) name is taken."""
        ...

    def get_user(self, username: str) -> UserRecord | None: ...

    def get_user_by_id(self, user_id: str) -> UserRecord | None: ...

    def update_credentials(self, user_id: str, **change: Unpack[CredentialChange]) -> UserRecord:
        """Replace the password and/or recovery hash; ``bump_token_version`` revokes every issued token."""
        ...

    def set_role(self, username: str, role: Role) -> UserRecord:
        """Change a role; raises :class:`LastAdminError` rather than leave zero admins."""
        ...

    def delete_user(self, username: str) -> bool:
        """Delete an account with all of its scans and files; ``False`` when there was no such user."""
        ...

    def list_users(self, search: str | None = None, offset: int = 0, limit: int = 20) -> Page[UserSummary]:
        """Users by name (plain-text substring search), with their scan counts."""
        ...

    def count_admins(self) -> int: ...

    # revoked tokens (sign-out)
    def revoke_token(self, token_id: str, expires_at: dt.datetime) -> None:
        """Refuse the token ``token_id`` (its ``jti``) from now until ``expires_at``; expired entries are purged."""
        ...

    def is_token_revoked(self, token_id: str) -> bool: ...

    # scans and blobs
    def add_scan(self, scan: NewScan, blobs: Sequence[Blob]) -> ScanRecord:
        """Store a scan and its blobs atomically (see the module docstring)."""
        ...

    def get_scan(self, scan_id: str) -> ScanRecord | None: ...

    def list_scans(self, owner_id: str, query: ScanQuery) -> Page[ScanRecord]: ...

    def delete_scans(self, owner_id: str, scan_ids: Sequence[str]) -> list[str]:
        """Delete the given scans of ``owner_id`` (others' ids are ignored); returns the ids deleted."""
        ...

    def get_file(self, file_id: str) -> tuple[FileRecord, bytes] | None:
        """A stored blob and its record, or ``None`` (also when its scan is gone)."""
        ...

    # statistics and maintenance
    def stats(self, days: int = 30) -> Stats: ...

    def scan_facts(self, owner_id: str, date_from: dt.datetime | None = None) -> list[ScanFacts]:
        """The indexed facts of ``owner_id``'s scans since ``date_from`` (all when ``None``), newest first."""
        ...

    def ping(self) -> bool:
        """``True`` when the backend answers (for ``/health``)."""
        ...

    def check(self) -> IntegrityReport:
        """List blobs referenced but missing, and blobs stored but unreferenced."""
        ...

    def collect_garbage(self) -> int:
        """Remove orphan blobs left by a crash; returns how many were removed."""
        ...

    def close(self) -> None: ...


# -- rules every backend applies the same way ------------------------------------------------------------------
def storage_errors(*kinds: type[BaseException], what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn a backend's own errors (``kinds``) into :class:`StorageError` with ``what`` and the error's class name,
    never its text (a driver's message may hold a URI or a path); typed storage errors pass through."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except StorageError:
                raise
            except kinds as exc:
                raise StorageError(f"{what} ({type(exc).__name__})") from exc

        return wrapper

    return decorate


def record_from(cls: type[D], row: Any, **given: Any) -> D:
    """A record (``cls``) from a database row or document: the ``given`` values, then for each other field the
    row's value (a number as ``int``/``float``), or the field's default when the row has none.

    >>> record_from(FileRecord, {"id": "f", "scan_id": "s", "owner_id": "o", "kind": "cam",
    ...     "content_type": "application/x-npy", "size": "3", "sha256": "ab"}).size
    3
    """
    keys = set(row.keys())
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            values[f.name] = given[f.name]
        elif f.name in keys:
            value = row[f.name]
            values[f.name] = value if value is None else _NUMBERS.get(str(f.type), _same)(value)
    return cls(**values)


def _same(value: Any) -> Any:
    return value


#: Record fields stored as numbers, by annotation: read back as Python numbers whatever the backend returns.
_NUMBERS: dict[str, Callable[[Any], Any]] = {"int": int, "float": float}


def new_user_record(user: NewUser) -> UserRecord:
    """The record :meth:`Storage.create_user` stores: a fresh id, the lowercased name, created now."""
    name = normalise_username(user.username)
    return record_from(UserRecord, vars(user), id=new_id(), username=name, created_at=utcnow())


def new_scan_record(scan: NewScan, blobs: Sequence[Blob]) -> ScanRecord:
    """The record :meth:`Storage.add_scan` stores: fresh ids, one file record per blob (one blob per kind), the
    time truncated to milliseconds."""
    scan_id = new_id()
    created = scan.created_at or utcnow()
    files: dict[str, FileRecord] = {}
    for blob in blobs:
        if blob.kind in files:
            raise ValueError(f"two blobs of kind {blob.kind!r}")
        sha = hashlib.sha256(blob.data).hexdigest()
        files[blob.kind] = FileRecord(
            new_id(), scan_id, scan.owner_id, blob.kind, blob.content_type, len(blob.data), sha
        )
    created = created.replace(microsecond=created.microsecond // 1000 * 1000)
    return record_from(ScanRecord, vars(scan), id=scan_id, result=dict(scan.result), created_at=created, files=files)


def existing_user(user: UserRecord | None, name: str | None = None) -> UserRecord:
    """``user`` as found by id, or by ``name``; :class:`UserNotFoundError` when there is none."""
    if user is None:
        raise UserNotFoundError(f"no user {name!r}" if name else "no such user")
    return user


def refuse_last_admin(user: UserRecord, new_role: Role | None, admins: int) -> None:
    """The last-admin rule: refuse to demote (``new_role``) or delete (``None``) the only admin left."""
    if user.role == "admin" and new_role != "admin" and admins <= 1:
        raise LastAdminError("cannot demote the last admin" if new_role else "cannot delete the last admin")


def checked_file(record: FileRecord, data: bytes) -> tuple[FileRecord, bytes]:
    """A blob as read back, after its checksum check: a damaged file is refused, never served."""
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise StorageError("a stored file is damaged (checksum mismatch)")
    return record, data
