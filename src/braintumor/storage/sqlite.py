"""The embedded backend: SQLite for records, content-addressed files for blobs, all in one data directory.

Why: a workstation or a small server should keep a secure history without installing a database server.

Layout of ``data_dir``::

    braintumor.db         SQLite (WAL): users, scans, files
    blobs/ab/abcdef…      one file per distinct content, named by its SHA-256
    tmp/ trash/           staging areas (empty when idle)
    storage.lock          held (shared) by every process that has the store open

Privacy on disk: the database and its ``-wal``/``-shm`` files are created (and on open re-set to) mode 0600, every
connection runs with ``secure_delete`` (deleted rows are overwritten with zeros), and a delete ends with a
``wal_checkpoint(TRUNCATE)``, so a deleted scan's filename does not linger in the write-ahead log. Backups are
written 0600 too.

Atomicity without a server: every write runs inside SQLite's write lock (``BEGIN IMMEDIATE``), which also
serialises writers across processes. ``add_scan`` writes missing blob files (temp file, fsync, rename) and
then commits the rows; a crash in between leaves unreferenced files and no record. Deleting moves the files
that lose their last reference into ``trash/`` before the commit and unlinks them after it, so a concurrent
writer can never reference a file that is about to vanish. When a process opens the store and no other
process has it open (an exclusive ``flock`` succeeds) it rolls interrupted work back: trash still referenced
goes back, unreferenced blobs and staging files are removed.

Example:
    >>> store = EmbeddedStorage("data")  # doctest: +SKIP
    >>> store.check().ok  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from braintumor.storage.base import (
    Blob,
    FileRecord,
    IntegrityReport,
    LastAdminError,
    NewScan,
    NewUser,
    Page,
    Role,
    ScanQuery,
    ScanRecord,
    Stats,
    StorageError,
    UserExistsError,
    UserNotFoundError,
    UserRecord,
    UserSummary,
    new_id,
    normalise_username,
    per_day_series,
    utcnow,
)

DB_NAME = "braintumor.db"
BACKUP_FORMAT = "braintumor-embedded-backup/1"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    recovery_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created_at TEXT NOT NULL,
    token_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS scans (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id),
    filename TEXT NOT NULL,
    label TEXT NOT NULL,
    band TEXT NOT NULL,
    p_tumor REAL NOT NULL,
    tumor_type TEXT,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    threshold REAL NOT NULL,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scans_owner_time ON scans (owner_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS scans_time ON scans (created_at);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    scan_id TEXT NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    UNIQUE (scan_id, kind)
);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, expires_at TEXT NOT NULL);
"""


def _ts(value: dt.datetime) -> str:
    """Fixed-width UTC text, so that SQL string order is time order."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class EmbeddedStorage:
    """SQLite + content-addressed files in ``data_dir`` (created with mode 0700 when missing)."""

    backend = "embedded"

    def __init__(self, data_dir: str | Path, *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.durable = durable
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            for sub in ("blobs", "tmp", "trash"):
                (self.data_dir / sub).mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"cannot create the data directory {self.data_dir}: {exc.strerror}") from exc
        self._db_path = self.data_dir / DB_NAME
        _private_files(self.data_dir)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        with self._connect_new() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self._lock_fh = os.fdopen(os.open(self.data_dir / "storage.lock", os.O_RDWR | os.O_CREAT, 0o600), "a+")
        self._recover_if_alone()

    # -- connections and locks ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect_new(self) -> Iterator[sqlite3.Connection]:
        conn = self._open_connection()
        try:
            yield conn
        finally:
            conn.close()

    def _open_connection(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the database in {self.data_dir}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError("storage is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_connection()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's (cross-process) write lock from the start."""
        with self._write_lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError("the database is busy or unavailable") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _recover_if_alone(self) -> None:
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._lock_fh, fcntl.LOCK_SH)
            return
        try:
            self._recover()
        finally:
            fcntl.flock(self._lock_fh, fcntl.LOCK_SH)

    def _recover(self) -> None:
        """Roll interrupted writes and deletes back (only called when no other process has the store open)."""
        for staged in (self.data_dir / "tmp").iterdir():
            if staged.is_dir():
                shutil.rmtree(staged, ignore_errors=True)
            else:
                staged.unlink(missing_ok=True)
        referenced = self._referenced()
        for trashed in (self.data_dir / "trash").iterdir():
            sha = trashed.name.split(".", 1)[0]
            target = self._blob_path(sha)
            if sha in referenced and not target.exists():
                target.parent.mkdir(exist_ok=True)
                trashed.replace(target)
            else:
                trashed.unlink(missing_ok=True)
        self._remove_orphans(referenced)

    # -- blob files --------------------------------------------------------------------------------------
    def _blob_path(self, sha: str) -> Path:
        return self.data_dir / "blobs" / sha[:2] / sha

    def _stored_blobs(self) -> dict[str, Path]:
        out = {}
        for folder in (self.data_dir / "blobs").iterdir():
            if folder.is_dir():
                for path in folder.iterdir():
                    out[path.name] = path
        return out

    def _referenced(self) -> set[str]:
        return {row[0] for row in self._conn().execute("SELECT DISTINCT sha256 FROM files")}

    def _remove_orphans(self, referenced: set[str]) -> int:
        removed = 0
        for sha, path in self._stored_blobs().items():
            if sha not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _write_blob(self, sha: str, data: bytes) -> bool:
        """Write a blob file if absent; returns ``True`` when this call created it."""
        target = self._blob_path(sha)
        if target.exists():
            return False
        target.parent.mkdir(exist_ok=True, mode=0o700)
        staged = self.data_dir / "tmp" / f"{sha}.{new_id()}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            staged.replace(target)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return True

    # -- users -------------------------------------------------------------------------------------------
    def create_user(self, user: NewUser) -> UserRecord:
        record = UserRecord(
            id=new_id(),
            username=normalise_username(user.username),
            password_hash=user.password_hash,
            recovery_hash=user.recovery_hash,
            role=user.role,
            created_at=utcnow(),
        )
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO users (id, username, password_hash, recovery_hash, role, created_at, token_version)"
                    " VALUES (?, ?, ?, ?, ?, ?, 0)",
                    (
                        record.id,
                        record.username,
                        record.password_hash,
                        record.recovery_hash,
                        record.role,
                        _ts(record.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise UserExistsError(f"user {record.username!r} already exists") from exc
        return record

    def get_user(self, username: str) -> UserRecord | None:
        row = self._conn().execute("SELECT * FROM users WHERE username = ?", (normalise_username(username),))
        return _user(row.fetchone())

    def get_user_by_id(self, user_id: str) -> UserRecord | None:
        return _user(self._conn().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())

    def update_credentials(
        self,
        user_id: str,
        *,
        password_hash: str | None = None,
        recovery_hash: str | None = None,
        bump_token_version: bool = False,
    ) -> UserRecord:
        with self._write() as conn:
            if password_hash is not None:
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            if recovery_hash is not None:
                conn.execute("UPDATE users SET recovery_hash = ? WHERE id = ?", (recovery_hash, user_id))
            if bump_token_version:
                conn.execute("UPDATE users SET token_version = token_version + 1 WHERE id = ?", (user_id,))
            user = _user(conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
        if user is None:
            raise UserNotFoundError("no such user")
        return user

    def set_role(self, username: str, role: Role) -> UserRecord:
        name = normalise_username(username)
        with self._write() as conn:
            user = _user(conn.execute("SELECT * FROM users WHERE username = ?", (name,)).fetchone())
            if user is None:
                raise UserNotFoundError(f"no user {name!r}")
            if user.role == "admin" and role != "admin" and _count_admins(conn) <= 1:
                raise LastAdminError("cannot demote the last admin")
            conn.execute("UPDATE users SET role = ? WHERE id = ?", (role, user.id))
        return UserRecord(**{**user.__dict__, "role": role})

    def delete_user(self, username: str) -> bool:
        name = normalise_username(username)
        trashed: list[Path] = []
        with self._write() as conn:
            user = _user(conn.execute("SELECT * FROM users WHERE username = ?", (name,)).fetchone())
            if user is None:
                return False
            if user.role == "admin" and _count_admins(conn) <= 1:
                raise LastAdminError("cannot delete the last admin")
            ids = [r[0] for r in conn.execute("SELECT id FROM scans WHERE owner_id = ?", (user.id,))]
            trashed = self._delete_scan_rows(conn, ids)
            conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
        _unlink_all(trashed)
        self._truncate_wal()
        return True

    def list_users(self, search: str | None = None, offset: int = 0, limit: int = 20) -> Page[UserSummary]:
        where, params = "", []
        if search:
            where, params = "WHERE instr(u.username, ?) > 0", [search.lower()]
        conn = self._conn()
        total = conn.execute(f"SELECT COUNT(*) FROM users u {where}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT u.*, (SELECT COUNT(*) FROM scans s WHERE s.owner_id = u.id) AS n_scans FROM users u {where} "
            "ORDER BY u.username LIMIT ? OFFSET ?",
            [*params, max(0, limit), max(0, offset)],
        ).fetchall()
        return Page([UserSummary(cast(UserRecord, _user(r)), int(r["n_scans"])) for r in rows], int(total))

    def count_admins(self) -> int:
        return _count_admins(self._conn())

    # -- revoked tokens ----------------------------------------------------------------------------------
    def revoke_token(self, token_id: str, expires_at: dt.datetime) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (_ts(utcnow()),))
            conn.execute(
                "INSERT OR REPLACE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)", (token_id, _ts(expires_at))
            )

    def is_token_revoked(self, token_id: str) -> bool:
        row = self._conn().execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (token_id,)).fetchone()
        return row is not None

    # -- scans -------------------------------------------------------------------------------------------
    def add_scan(self, scan: NewScan, blobs: Sequence[Blob]) -> ScanRecord:
        scan_id = new_id()
        created = scan.created_at or utcnow()
        files: dict[str, FileRecord] = {}
        prepared = []
        for blob in blobs:
            if blob.kind in files:
                raise ValueError(f"two blobs of kind {blob.kind!r}")
            sha = hashlib.sha256(blob.data).hexdigest()
            files[blob.kind] = FileRecord(
                new_id(), scan_id, scan.owner_id, blob.kind, blob.content_type, len(blob.data), sha
            )
            prepared.append((sha, blob.data))
        created_files: list[str] = []
        result_json = json.dumps(dict(scan.result), separators=(",", ":"), allow_nan=False)
        try:
            with self._write() as conn:
                if conn.execute("SELECT 1 FROM users WHERE id = ?", (scan.owner_id,)).fetchone() is None:
                    raise UserNotFoundError("the scan's owner does not exist")
                for sha, data in prepared:
                    if self._write_blob(sha, data):
                        created_files.append(sha)
                conn.execute(
                    "INSERT INTO scans (id, owner_id, filename, label, band, p_tumor, tumor_type, model_name,"
                    " model_version, threshold, result, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        scan_id,
                        scan.owner_id,
                        scan.filename,
                        scan.label,
                        scan.band,
                        float(scan.p_tumor),
                        scan.tumor_type,
                        scan.model_name,
                        scan.model_version,
                        float(scan.threshold),
                        result_json,
                        _ts(created),
                    ),
                )
                conn.executemany(
                    "INSERT INTO files (id, scan_id, kind, content_type, size, sha256) VALUES (?, ?, ?, ?, ?, ?)",
                    [(f.id, scan_id, f.kind, f.content_type, f.size, f.sha256) for f in files.values()],
                )
        except BaseException:
            # Still safe to remove: no committed row can reference a file this call created.
            for sha in created_files:
                self._blob_path(sha).unlink(missing_ok=True)
            raise
        return ScanRecord(
            id=scan_id,
            owner_id=scan.owner_id,
            filename=scan.filename,
            label=scan.label,
            band=scan.band,
            p_tumor=float(scan.p_tumor),
            tumor_type=scan.tumor_type,
            model_name=scan.model_name,
            model_version=scan.model_version,
            threshold=float(scan.threshold),
            result=json.loads(result_json),
            created_at=_parse_ts(_ts(created)),
            files=files,
        )

    def get_scan(self, scan_id: str) -> ScanRecord | None:
        conn = self._conn()
        row = conn.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        if row is None:
            return None
        return self._scans(conn, [row])[0]

    def list_scans(self, owner_id: str, query: ScanQuery) -> Page[ScanRecord]:
        clauses, params = ["owner_id = ?"], [owner_id]
        if query.search:
            # instr() is a plain substring test: no wildcard or pattern in user text means anything.
            clauses.append("instr(lower(filename), ?) > 0")
            params.append(query.search.lower())
        if query.label:
            clauses.append("label = ?")
            params.append(query.label)
        if query.band:
            clauses.append("band = ?")
            params.append(query.band)
        if query.date_from:
            clauses.append("created_at >= ?")
            params.append(_ts(query.date_from))
        if query.date_to:
            clauses.append("created_at <= ?")
            params.append(_ts(query.date_to))
        where = " AND ".join(clauses)
        conn = self._conn()
        total = conn.execute(f"SELECT COUNT(*) FROM scans WHERE {where}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM scans WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*params, max(0, query.limit), max(0, query.offset)],
        ).fetchall()
        return Page(self._scans(conn, rows), int(total))

    def _scans(self, conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[ScanRecord]:
        ids = [r["id"] for r in rows]
        files: dict[str, dict[str, FileRecord]] = {i: {} for i in ids}
        if ids:
            marks = ",".join("?" * len(ids))
            for f in conn.execute(
                f"SELECT f.*, s.owner_id FROM files f JOIN scans s ON s.id = f.scan_id WHERE f.scan_id IN ({marks})",
                ids,
            ):
                files[f["scan_id"]][f["kind"]] = _file(f)
        return [
            ScanRecord(
                id=r["id"],
                owner_id=r["owner_id"],
                filename=r["filename"],
                label=r["label"],
                band=r["band"],
                p_tumor=float(r["p_tumor"]),
                tumor_type=r["tumor_type"],
                model_name=r["model_name"],
                model_version=r["model_version"],
                threshold=float(r["threshold"]),
                result=json.loads(r["result"]),
                created_at=_parse_ts(r["created_at"]),
                files=files[r["id"]],
            )
            for r in rows
        ]

    def delete_scans(self, owner_id: str, scan_ids: Sequence[str]) -> list[str]:
        if not scan_ids:
            return []
        with self._write() as conn:
            marks = ",".join("?" * len(scan_ids))
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM scans WHERE owner_id = ? AND id IN ({marks})", [owner_id, *scan_ids]
                )
            ]
            trashed = self._delete_scan_rows(conn, ids)
        _unlink_all(trashed)
        if ids:
            self._truncate_wal()
        return ids

    def _truncate_wal(self) -> None:
        """Copy the log into the (zero-filled) database and empty it: deleted values leave the ``-wal`` file too.
        Best effort: a reader still inside an old snapshot keeps the log for the next delete to truncate."""
        with self._write_lock, contextlib.suppress(sqlite3.Error):
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def _delete_scan_rows(self, conn: sqlite3.Connection, ids: Sequence[str]) -> list[Path]:
        """Delete scans and their file rows; move blobs that lost their last reference to trash."""
        if not ids:
            return []
        trashed = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            shas = {r[0] for r in conn.execute(f"SELECT sha256 FROM files WHERE scan_id IN ({marks})", chunk)}
            conn.execute(f"DELETE FROM files WHERE scan_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM scans WHERE id IN ({marks})", chunk)
            for sha in shas:
                if conn.execute("SELECT 1 FROM files WHERE sha256 = ? LIMIT 1", (sha,)).fetchone() is None:
                    source = self._blob_path(sha)
                    target = self.data_dir / "trash" / f"{sha}.{new_id()}"
                    with contextlib.suppress(FileNotFoundError):
                        source.replace(target)
                        trashed.append(target)
        return trashed

    def get_file(self, file_id: str) -> tuple[FileRecord, bytes] | None:
        row = (
            self._conn()
            .execute("SELECT f.*, s.owner_id FROM files f JOIN scans s ON s.id = f.scan_id WHERE f.id = ?", (file_id,))
            .fetchone()
        )
        if row is None:
            return None
        record = _file(row)
        try:
            data = self._blob_path(record.sha256).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError("a stored file is missing") from exc
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise StorageError("a stored file is damaged (checksum mismatch)")
        return record, data

    # -- statistics and maintenance -------------------------------------------------------------------------
    def stats(self, days: int = 30) -> Stats:
        conn = self._conn()
        users = conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        scans = conn.execute("SELECT COUNT(*) FROM scans").fetchone()[0]
        per_user = [
            (r[0], int(r[1]))
            for r in conn.execute(
                "SELECT u.username, COUNT(s.id) AS n FROM users u JOIN scans s ON s.owner_id = u.id "
                "GROUP BY u.id ORDER BY n DESC, u.username"
            )
        ]
        labels = {r[0]: int(r[1]) for r in conn.execute("SELECT label, COUNT(*) FROM scans GROUP BY label")}
        bands = {r[0]: int(r[1]) for r in conn.execute("SELECT band, COUNT(*) FROM scans GROUP BY band")}
        since = _ts(utcnow() - dt.timedelta(days=days + 1))
        per_day = {
            r[0]: int(r[1])
            for r in conn.execute(
                "SELECT substr(created_at, 1, 10) AS day, COUNT(*) FROM scans WHERE created_at >= ? GROUP BY day",
                (since,),
            )
        }
        return Stats(
            int(users), _count_admins(conn), int(scans), per_user, labels, bands, per_day_series(per_day, days)
        )

    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except (sqlite3.Error, StorageError):
            return False
        return True

    def check(self) -> IntegrityReport:
        referenced = self._referenced()
        stored = self._stored_blobs()
        return IntegrityReport(
            missing_blobs=sorted(referenced - set(stored)), orphan_blobs=sorted(set(stored) - referenced)
        )

    def collect_garbage(self) -> int:
        with self._write():
            return self._remove_orphans(self._referenced())

    def backup(self, out: str | Path) -> dict[str, Any]:
        """Write a ``.tar.gz`` with a consistent snapshot of the database, every referenced blob and the audit
        log, holding the write lock meanwhile (writers wait; readers go on). Returns the archive's manifest.

        The signing secret is left out on purpose: a restored site signs new tokens with its own key.
        """
        out = Path(out)
        with self._write() as conn, tempfile.TemporaryDirectory(dir=self.data_dir / "tmp") as tmp:
            snapshot = Path(tmp) / DB_NAME
            reader = self._open_connection()
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
                "created_at": _ts(utcnow()),
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
                    path = self._blob_path(sha)
                    if not path.is_file():
                        raise StorageError(f"blob {sha[:12]}… is missing; the backup would be incomplete")
                    tar.add(path, arcname=f"blobs/{sha[:2]}/{sha}")
                audit = self.data_dir / "audit.log"
                if audit.is_file():
                    tar.add(audit, arcname="audit.log")
            partial.replace(out)
        return manifest

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._conns.clear()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
        self._lock_fh.close()


def restore(archive: str | Path, data_dir: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Restore a :meth:`EmbeddedStorage.backup` archive into ``data_dir``, checking every blob's SHA-256.

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


def _private_files(data_dir: Path) -> None:
    """Create the database file 0600 before SQLite does (its ``-wal`` and ``-shm`` take the database's mode) and
    tighten files an older version created 0644."""
    db = data_dir / DB_NAME
    try:
        os.close(os.open(db, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (db, data_dir / f"{DB_NAME}-wal", data_dir / f"{DB_NAME}-shm", data_dir / "storage.lock"):
            if path.exists() and path.stat().st_mode & 0o077:
                path.chmod(0o600)
    except OSError as exc:
        raise StorageError(f"cannot create the database in {data_dir}: {exc.strerror}") from exc


def _count_admins(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetchone()[0])


def _user(row: Any) -> UserRecord | None:
    if row is None:
        return None
    return UserRecord(
        id=row["id"],
        username=row["username"],
        password_hash=row["password_hash"],
        recovery_hash=row["recovery_hash"],
        role=row["role"],
        created_at=_parse_ts(row["created_at"]),
        token_version=int(row["token_version"]),
    )


def _file(row: Any) -> FileRecord:
    return FileRecord(
        id=row["id"],
        scan_id=row["scan_id"],
        owner_id=row["owner_id"],
        kind=row["kind"],
        content_type=row["content_type"],
        size=int(row["size"]),
        sha256=row["sha256"],
    )


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
