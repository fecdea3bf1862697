"""Backup and restore of the embedded backend: one ``.tar.gz`` with the database, every referenced blob and the
audit log.

Why consistent while the server runs: the snapshot is taken inside a write transaction (writers wait, readers go
on) with SQLite's online backup, so the archive never holds a row without its blob. Restoring checks every blob's
SHA-256 against its name before anything is replaced, and refuses an incomplete archive. The signing secret is
left out on purpose: a restored site signs new tokens with its own key. Archives are written 0600 (they hold the
database).

Example:
    >>> manifest = backup(EmbeddedStorage("data"), "site.tar.gz")  # doctest: +SKIP
    >>> restore("site.tar.gz", "restored")["scans"] == manifest["scans"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from braintumor.storage.base import StorageError, utcnow
from braintumor.storage.database import DB_NAME, SCHEMA_VERSION
from braintumor.storage.sqlite import EmbeddedStorage, timestamp

BACKUP_FORMAT = "braintumor-embedded-backup/1"


def backup(store: EmbeddedStorage, out: str | Path) -> dict[str, Any]:
    """Write a ``.tar.gz`` with a consistent snapshot of the database, every referenced blob and the audit
    log, holding the write lock meanwhile (writers wait; readers go on). Returns the archive's manifest.

    The signing secret is left out on purpose: a restored site signs new tokens with its own key.
    """
    out = Path(out)
    with store.write_transaction() as conn, tempfile.TemporaryDirectory(dir=store.blobs.staging) as tmp:
        snapshot = Path(tmp) / DB_NAME
        reader = store.db.open_connection()
        try:
            dest = sqlite3.connect(snapshot)
            try:
                reader.backup(dest)
            finally:
                dest.close()
        finally:
            reader.close()
        shas = sorted({r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM files")})
        manifest = {
            "format": BACKUP_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_at": timestamp(utcnow()),
            "users": int(conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]),
            "scans": int(conn.execute("SELECT COUNT(*) FROM scans").fetchone()[0]),
            "blobs": len(shas),
        }
        partial = out.with_name(out.name + ".partial")
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # the archive holds the database
        with tarfile.open(partial, "w:gz") as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            tar.add(snapshot, arcname=DB_NAME)
            for sha in shas:
                path = store.blobs.path(sha)
                if not path.is_file():
                    raise StorageError(f"blob {sha[:12]}… is missing; the backup would be incomplete")
                tar.add(path, arcname=f"blobs/{sha[:2]}/{sha}")
            audit = store.data_dir / "audit.log"
            if audit.is_file():
                tar.add(audit, arcname="audit.log")
        partial.replace(out)
    return manifest


def restore(archive: str | Path, data_dir: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Restore a :func:`backup` archive into ``data_dir``, checking every blob's SHA-256.

    Refuses a data directory that already holds a database unless ``force`` (then the old database and blobs
    are replaced; the signing secret, if any, is kept). Returns the archive's manifest.
    """
    target = Path(data_dir)
    if (target / DB_NAME).exists() and not force:
        raise StorageError(f"{target} already holds a database; pass --force to replace it")
    try:
        tar = tarfile.open(archive, "r:gz")  # noqa: SIM115 (closed by the with below; open errors differ)
    except (OSError, tarfile.TarError) as exc:
        raise StorageError(f"cannot read the backup {archive}: not a braintumor backup archive") from exc
    with tar, tempfile.TemporaryDirectory() as tmp:
        names = tar.getnames()
        if "manifest.json" not in names or DB_NAME not in names:
            raise StorageError(f"{archive} is not a braintumor backup (no manifest or database)")
        tar.extractall(tmp, filter="data")
        staging = Path(tmp)
        manifest = json.loads((staging / "manifest.json").read_text())
        if manifest.get("format") != BACKUP_FORMAT:
            raise StorageError(f"{archive} is not a braintumor backup (format {manifest.get('format')!r})")
        for blob in (staging / "blobs").glob("*/*") if (staging / "blobs").is_dir() else []:
            if hashlib.sha256(blob.read_bytes()).hexdigest() != blob.name:
                raise StorageError(f"the backup is damaged: blob {blob.name[:12]}… does not match its checksum")
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
            (target / stale).unlink(missing_ok=True)
        if (target / "blobs").exists():
            shutil.rmtree(target / "blobs")
        shutil.move(str(staging / DB_NAME), target / DB_NAME)
        (target / "blobs").mkdir(mode=0o700)
        if (staging / "blobs").is_dir():
            for folder in (staging / "blobs").iterdir():
                shutil.move(str(folder), target / "blobs" / folder.name)
        if (staging / "audit.log").is_file():
            shutil.move(str(staging / "audit.log"), target / "audit.log")
            (target / "audit.log").chmod(0o600)
    store = EmbeddedStorage(target)
    try:
        report = store.check()
    finally:
        store.close()
    if report.missing_blobs:
        raise StorageError(f"the backup is incomplete: {len(report.missing_blobs)} blob(s) missing")
    return dict(manifest)
