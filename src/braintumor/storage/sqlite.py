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
import dataclasses
import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack, cast

from braintumor.storage import base
from braintumor.storage.blobs import BlobStore
from braintumor.storage.database import Database
from braintumor.storage.stats import ScanFacts, Stats, per_day_series

_db_errors = base.storage_errors(sqlite3.Error, OSError, what="the embedded database failed")


def timestamp(value: dt.datetime) -> str:
    """Fixed-width UTC text, so that SQL string order is time order."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parsetimestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class EmbeddedStorage:
    """SQLite + content-addressed files in ``data_dir`` (created with mode 0700 when missing)."""

    backend = "embedded"

    def __init__(self, data_dir: str | Path, *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.durable = durable
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise base.StorageError(f"cannot create the data directory {self.data_dir}: {exc.strerror}") from exc
        self.blobs = BlobStore(self.data_dir, durable=durable)
        self.db = Database(self.data_dir, durable=durable)
        self.db.when_alone(lambda: self.blobs.recover(self._referenced()))

    def _conn(self) -> sqlite3.Connection:
        return self.db.connection()

    def write_transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction, holding SQLite's (cross-process) write lock from the start."""
        return self.db.transaction()

    def _referenced(self) -> set[str]:
        return {row[0] for row in self._conn().execute("SELECT DISTINCT sha256 FROM files")}

    # -- users -------------------------------------------------------------------------------------------
    @_db_errors
    def create_user(self, user: base.NewUser) -> base.UserRecord:
        record = base.new_user_record(user)
        try:
            with self.write_transaction() as conn:
                conn.execute(
                    "INSERT INTO users (id, username, password_hash, recovery_hash, role, created_at, token_version)"
                    " VALUES (?, ?, ?, ?, ?, ?, 0)",
                    (
                        record.id,
                        record.username,
                        record.password_hash,
                        record.recovery_hash,
                        record.role,
                        timestamp(record.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise base.UserExistsError(f"user {record.username!r} already exists") from exc
        return record

    @_db_errors
    def get_user(self, username: str) -> base.UserRecord | None:
        row = self._conn().execute("SELECT * FROM users WHERE username = ?", (base.normalise_username(username),))
        return _user(row.fetchone())

    @_db_errors
    def get_user_by_id(self, user_id: str) -> base.UserRecord | None:
        return _user(self._conn().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())

    @_db_errors
    def update_credentials(self, user_id: str, **change: Unpack[base.CredentialChange]) -> base.UserRecord:
        password_hash, recovery_hash = change.get("password_hash"), change.get("recovery_hash")
        bump_token_version = change.get("bump_token_version", False)
        with self.write_transaction() as conn:
            if password_hash is not None:
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            if recovery_hash is not None:
                conn.execute("UPDATE users SET recovery_hash = ? WHERE id = ?", (recovery_hash, user_id))
            if bump_token_version:
                conn.execute("UPDATE users SET token_version = token_version + 1 WHERE id = ?", (user_id,))
            user = _user(conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
        return base.existing_user(user)

    @_db_errors
    def set_role(self, username: str, role: base.Role) -> base.UserRecord:
        name = base.normalise_username(username)
        with self.write_transaction() as conn:
            row = conn.execute("SELECT * FROM users WHERE username = ?", (name,)).fetchone()
            user = base.existing_user(_user(row), name)
            base.refuse_last_admin(user, role, _count_admins(conn))
            conn.execute("UPDATE users SET role = ? WHERE id = ?", (role, user.id))
        return base.UserRecord(**{**user.__dict__, "role": role})

    @_db_errors
    def delete_user(self, username: str) -> bool:
        name = base.normalise_username(username)
        trashed: list[Path] = []
        with self.write_transaction() as conn:
            user = _user(conn.execute("SELECT * FROM users WHERE username = ?", (name,)).fetchone())
            if user is None:
                return False
            base.refuse_last_admin(user, None, _count_admins(conn))
            ids = [r[0] for r in conn.execute("SELECT id FROM scans WHERE owner_id = ?", (user.id,))]
            trashed = self._delete_scan_rows(conn, ids)
            conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
        self.blobs.unlink(trashed)
        self.db.truncate_wal()
        return True

    @_db_errors
    def list_users(self, search: str | None = None, offset: int = 0, limit: int = 20) -> base.Page[base.UserSummary]:
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
        return base.Page(
            [base.UserSummary(cast(base.UserRecord, _user(r)), int(r["n_scans"])) for r in rows], int(total)
        )

    @_db_errors
    def count_admins(self) -> int:
        return _count_admins(self._conn())

    # -- revoked tokens ----------------------------------------------------------------------------------
    @_db_errors
    def revoke_token(self, token_id: str, expires_at: dt.datetime) -> None:
        with self.write_transaction() as conn:
            conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (timestamp(base.utcnow()),))
            conn.execute(
                "INSERT OR REPLACE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)",
                (token_id, timestamp(expires_at)),
            )

    @_db_errors
    def is_token_revoked(self, token_id: str) -> bool:
        row = self._conn().execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (token_id,)).fetchone()
        return row is not None

    # -- scans -------------------------------------------------------------------------------------------
    @_db_errors
    def add_scan(self, scan: base.NewScan, blobs: Sequence[base.Blob]) -> base.ScanRecord:
        record = base.new_scan_record(scan, blobs)
        data = {record.files[blob.kind].sha256: blob.data for blob in blobs}
        result_json = json.dumps(record.result, separators=(",", ":"), allow_nan=False)
        created_files: list[Path] = []
        try:
            with self.write_transaction() as conn:
                if conn.execute("SELECT 1 FROM users WHERE id = ?", (scan.owner_id,)).fetchone() is None:
                    raise base.UserNotFoundError("the scan's owner does not exist")
                for sha, content in data.items():
                    if self.blobs.write(sha, content):
                        created_files.append(self.blobs.path(sha))
                conn.execute(
                    "INSERT INTO scans (id, owner_id, filename, outcome, p_tumor, tumor_type, model_name,"
                    " model_version, threshold, result, created_at, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.owner_id,
                        record.filename,
                        record.outcome,
                        record.p_tumor,
                        record.tumor_type,
                        record.model_name,
                        record.model_version,
                        record.threshold,
                        result_json,
                        timestamp(record.created_at),
                        record.kind,
                    ),
                )
                conn.executemany(
                    "INSERT INTO files (id, scan_id, kind, content_type, size, sha256) VALUES (?, ?, ?, ?, ?, ?)",
                    [(f.id, record.id, f.kind, f.content_type, f.size, f.sha256) for f in record.files.values()],
                )
        except BaseException:
            # Still safe to remove: no committed row can reference a file this call created.
            self.blobs.unlink(created_files)
            raise
        return dataclasses.replace(record, result=json.loads(result_json))

    @_db_errors
    def get_scan(self, scan_id: str) -> base.ScanRecord | None:
        conn = self._conn()
        row = conn.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        if row is None:
            return None
        return self._scans(conn, [row])[0]

    @_db_errors
    def list_scans(self, owner_id: str, query: base.ScanQuery) -> base.Page[base.ScanRecord]:
        clauses, params = ["owner_id = ?"], [owner_id]
        if query.search:
            # instr() is a plain substring test: no wildcard or pattern in user text means anything.
            clauses.append("instr(lower(filename), ?) > 0")
            params.append(query.search.lower())
        if query.outcome:
            clauses.append("outcome = ?")
            params.append(query.outcome)
        if query.kind:
            clauses.append("kind = ?")
            params.append(query.kind)
        if query.date_from:
            clauses.append("created_at >= ?")
            params.append(timestamp(query.date_from))
        if query.date_to:
            clauses.append("created_at <= ?")
            params.append(timestamp(query.date_to))
        where = " AND ".join(clauses)
        conn = self._conn()
        total = conn.execute(f"SELECT COUNT(*) FROM scans WHERE {where}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM scans WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*params, max(0, query.limit), max(0, query.offset)],
        ).fetchall()
        return base.Page(self._scans(conn, rows), int(total))

    def _scans(self, conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[base.ScanRecord]:
        ids = [r["id"] for r in rows]
        files: dict[str, dict[str, base.FileRecord]] = {i: {} for i in ids}
        if ids:
            marks = ",".join("?" * len(ids))
            for f in conn.execute(
                f"SELECT f.*, s.owner_id FROM files f JOIN scans s ON s.id = f.scan_id WHERE f.scan_id IN ({marks})",
                ids,
            ):
                files[f["scan_id"]][f["kind"]] = _file(f)
        return [
            base.record_from(
                base.ScanRecord,
                r,
                result=json.loads(r["result"]),
                created_at=_parsetimestamp(r["created_at"]),
                files=files[r["id"]],
            )
            for r in rows
        ]

    @_db_errors
    def delete_scans(self, owner_id: str, scan_ids: Sequence[str]) -> list[str]:
        if not scan_ids:
            return []
        with self.write_transaction() as conn:
            marks = ",".join("?" * len(scan_ids))
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM scans WHERE owner_id = ? AND id IN ({marks})", [owner_id, *scan_ids]
                )
            ]
            trashed = self._delete_scan_rows(conn, ids)
        self.blobs.unlink(trashed)
        if ids:
            self.db.truncate_wal()
        return ids

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
                    target = self.blobs.to_trash(sha)
                    if target is not None:
                        trashed.append(target)
        return trashed

    @_db_errors
    def get_file(self, file_id: str) -> tuple[base.FileRecord, bytes] | None:
        row = (
            self._conn()
            .execute("SELECT f.*, s.owner_id FROM files f JOIN scans s ON s.id = f.scan_id WHERE f.id = ?", (file_id,))
            .fetchone()
        )
        if row is None:
            return None
        record = _file(row)
        return base.checked_file(record, self.blobs.read(record.sha256))

    # -- statistics and maintenance -------------------------------------------------------------------------
    @_db_errors
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
        outcomes = {r[0]: int(r[1]) for r in conn.execute("SELECT outcome, COUNT(*) FROM scans GROUP BY outcome")}
        since = timestamp(base.utcnow() - dt.timedelta(days=days + 1))
        per_day = {
            r[0]: int(r[1])
            for r in conn.execute(
                "SELECT substr(created_at, 1, 10) AS day, COUNT(*) FROM scans WHERE created_at >= ? GROUP BY day",
                (since,),
            )
        }
        return Stats(int(users), _count_admins(conn), int(scans), per_user, outcomes, per_day_series(per_day, days))

    @_db_errors
    def scan_facts(self, owner_id: str, date_from: dt.datetime | None = None) -> list[ScanFacts]:
        since = timestamp(date_from) if date_from else ""
        rows = self._conn().execute(
            "SELECT outcome, p_tumor, model_name, model_version, threshold, created_at FROM scans"
            " WHERE owner_id = ? AND created_at >= ? ORDER BY created_at DESC, id DESC",
            (owner_id, since),
        )
        return [ScanFacts(r[0], float(r[1]), f"{r[2]} v{r[3]}", float(r[4]), _parsetimestamp(r[5])) for r in rows]

    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except (sqlite3.Error, base.StorageError):
            return False
        return True

    @_db_errors
    def check(self) -> base.IntegrityReport:
        referenced = self._referenced()
        stored = self.blobs.stored()
        return base.IntegrityReport(
            missing_blobs=sorted(referenced - set(stored)), orphan_blobs=sorted(set(stored) - referenced)
        )

    @_db_errors
    def collect_garbage(self) -> int:
        with self.write_transaction():
            return self.blobs.remove_orphans(self._referenced())

    def close(self) -> None:
        self.db.close()


def _count_admins(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetchone()[0])


def _user(row: Any) -> base.UserRecord | None:
    if row is None:
        return None
    return base.record_from(base.UserRecord, row, created_at=_parsetimestamp(row["created_at"]))


def _file(row: Any) -> base.FileRecord:
    return base.record_from(base.FileRecord, row)
