"""The embedded backend's database file: schema, connections, write transactions, the process lock, privacy.

Why apart from the queries (:mod:`.sqlite`): how SQLite is opened decides what the store guarantees. Every
connection runs with foreign keys, ``secure_delete`` (deleted rows are overwritten with zeros) and a busy timeout;
the database and its ``-wal``/``-shm`` files are created (and on open re-set to) mode 0600; every write runs
inside SQLite's write lock (``BEGIN IMMEDIATE``), which also serialises writers across processes; after deletes
:meth:`Database.truncate_wal` empties the write-ahead log, so deleted values do not linger there. Every process
that has the store open holds ``storage.lock`` shared; one that gets it exclusively is alone and may roll
interrupted work back (:meth:`Database.when_alone`).

Example:
    >>> import tempfile
    >>> db = Database(tempfile.mkdtemp())
    >>> with db.transaction() as conn:
    ...     conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
    0
    >>> db.close()
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from braintumor.storage.base import StorageError

DB_NAME = "braintumor.db"
SCHEMA_VERSION = 3
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
    outcome TEXT NOT NULL,
    p_tumor REAL NOT NULL,
    tumor_type TEXT,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    threshold REAL NOT NULL,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'scan' CHECK (kind IN ('scan', 'study'))
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


class Database:
    """``braintumor.db`` in ``data_dir``: thread-local connections, one writer at a time."""

    def __init__(self, data_dir: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.durable = durable
        _private_files(self.data_dir)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        try:
            with contextlib.closing(self.open_connection()) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                _migrate(conn)
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            self._lock_fh = os.fdopen(os.open(self.data_dir / "storage.lock", os.O_RDWR | os.O_CREAT, 0o600), "a+")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the database in {self.data_dir} ({type(exc).__name__})") from exc

    def open_connection(self) -> sqlite3.Connection:
        """A new connection with the store's pragmas (the caller closes it)."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the database in {self.data_dir}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, closed by :meth:`close`)."""
        if self._closed:
            raise StorageError("storage is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.open_connection()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's (cross-process) write lock from the start."""
        with self._write_lock:
            conn = self.connection()
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

    def when_alone(self, recover: Callable[[], None]) -> None:
        """Run ``recover`` if no other process has the store open, then hold the lock shared like everyone."""
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._lock_fh, fcntl.LOCK_SH)
            return
        try:
            recover()
        finally:
            fcntl.flock(self._lock_fh, fcntl.LOCK_SH)

    def truncate_wal(self) -> None:
        """Copy the log into the (zero-filled) database and empty it: deleted values leave the ``-wal`` file too.
        Best effort: a reader still inside an old snapshot keeps the log for the next delete to truncate."""
        with self._write_lock, contextlib.suppress(sqlite3.Error):
            self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

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


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older database to :data:`SCHEMA_VERSION`. Version 1 kept two answers per scan, a threshold
    ``label`` and a ``band``; version 2 keeps the band's three-way answer as ``outcome`` and drops the label;
    version 3 adds ``kind`` (``scan`` or ``study``; every older record is a scan)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(scans)")}
    if "band" in columns or "kind" not in columns:
        conn.execute("BEGIN IMMEDIATE")
        if "band" in columns:
            conn.execute("ALTER TABLE scans RENAME COLUMN band TO outcome")
            conn.execute("ALTER TABLE scans DROP COLUMN label")
        if "kind" not in columns:
            conn.execute(
                "ALTER TABLE scans ADD COLUMN kind TEXT NOT NULL DEFAULT 'scan' CHECK (kind IN ('scan', 'study'))"
            )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")


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
