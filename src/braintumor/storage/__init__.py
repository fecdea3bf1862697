"""Storage: one small interface (users, scans, blobs, stats) with an embedded and a MongoDB backend.

Imports nothing from the ML side. Pick a backend with :func:`open_storage`.

Example:
    >>> from braintumor.storage import open_storage
    >>> store = open_storage("embedded", data_dir="data")  # doctest: +SKIP
    >>> store.ping()  # doctest: +SKIP
    True
"""

from __future__ import annotations

from pathlib import Path

from braintumor.storage.base import (
    BLOB_KINDS,
    ROLES,
    Blob,
    CredentialChange,
    FileRecord,
    IntegrityReport,
    LastAdminError,
    NewScan,
    NewUser,
    Page,
    Role,
    ScanQuery,
    ScanRecord,
    Storage,
    StorageError,
    UserExistsError,
    UserNotFoundError,
    UserRecord,
    UserSummary,
    normalise_username,
)
from braintumor.storage.stats import ScanFacts, ScanStats, Stats

BACKENDS = ("embedded", "mongodb")


def open_storage(
    backend: str,
    *,
    data_dir: str | Path | None = None,
    mongo_uri: str | None = None,
    mongo_database: str = "braintumor",
    mongo_timeout_ms: int = 5000,
) -> Storage:
    """Open the ``embedded`` backend (needs ``data_dir``) or the ``mongodb`` one (needs ``mongo_uri``).

    Raises :class:`StorageError` with a one-line reason when the backend is unknown or unreachable.
    """
    if backend == "embedded":
        if data_dir is None:
            raise StorageError("the embedded backend needs a data directory")
        from braintumor.storage.sqlite import EmbeddedStorage

        return EmbeddedStorage(data_dir)
    if backend == "mongodb":
        if not mongo_uri:
            raise StorageError("the mongodb backend needs BRAINTUMOR_MONGO_URI")
        from braintumor.storage.mongo import MongoStorage

        return MongoStorage(mongo_uri, mongo_database, timeout_ms=mongo_timeout_ms)
    raise StorageError(f"unknown storage backend {backend!r}; choose from {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "BLOB_KINDS",
    "ROLES",
    "Blob",
    "CredentialChange",
    "FileRecord",
    "IntegrityReport",
    "LastAdminError",
    "NewScan",
    "NewUser",
    "Page",
    "Role",
    "ScanFacts",
    "ScanQuery",
    "ScanRecord",
    "ScanStats",
    "Stats",
    "Storage",
    "StorageError",
    "UserExistsError",
    "UserNotFoundError",
    "UserRecord",
    "UserSummary",
    "normalise_username",
    "open_storage",
]
