"""The embedded backend's blob store: one file per distinct content under ``blobs/``, named by its SHA-256.

Why apart from the database: files and rows are committed in a fixed order (files first, rows last; rows deleted
first, files after), so a crash can only leave unreferenced files, never a row whose file is missing. This
module owns the files: writing one (temporary file in ``tmp/``, fsync, rename), moving the files that lost their
last reference to ``trash/`` before a delete commits and unlinking them after it, and rolling interrupted work
back when a process opens the store alone (trash still referenced goes back, unreferenced blobs and staging
files are removed). Every ``OSError`` becomes a :class:`~braintumor.storage.base.StorageError`.

Example:
    >>> import hashlib, tempfile
    >>> store = BlobStore(tempfile.mkdtemp())
    >>> sha = hashlib.sha256(b"scan").hexdigest()
    >>> store.write(sha, b"scan"), store.read(sha)
    (True, b'scan')
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from braintumor.storage.base import StorageError, new_id, storage_errors

_os_errors = storage_errors(OSError, what="the blob store failed")


class BlobStore:
    """Content-addressed files in ``root/blobs`` with the staging folders ``tmp`` and ``trash`` beside them."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        try:
            for sub in ("blobs", "tmp", "trash"):
                (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"cannot create the data directory {self.root}: {exc.strerror}") from exc

    @property
    def staging(self) -> Path:
        return self.root / "tmp"

    def path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    @_os_errors
    def stored(self) -> dict[str, Path]:
        """Every blob file on disk, by SHA-256."""
        out = {}
        for folder in (self.root / "blobs").iterdir():
            if folder.is_dir():
                for path in folder.iterdir():
                    out[path.name] = path
        return out

    @_os_errors
    def write(self, sha: str, data: bytes) -> bool:
        """Write a blob file if absent; returns ``True`` when this call created it."""
        target = self.path(sha)
        if target.exists():
            return False
        target.parent.mkdir(exist_ok=True, mode=0o700)
        staged = self.staging / f"{sha}.{new_id()}"
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

    def read(self, sha: str) -> bytes:
        """The blob's bytes; a missing file is a :class:`StorageError` (a record points at it)."""
        try:
            return self.path(sha).read_bytes()
        except OSError as exc:
            raise StorageError("a stored file is missing") from exc

    @_os_errors
    def to_trash(self, sha: str) -> Path | None:
        """Move a blob that lost its last reference into ``trash/`` (before the delete commits)."""
        target = self.root / "trash" / f"{sha}.{new_id()}"
        try:
            self.path(sha).replace(target)
        except FileNotFoundError:
            return None
        return target

    @staticmethod
    def unlink(paths: Iterable[Path]) -> None:
        """Remove trashed files (after the delete committed) or files a failed write created."""
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    @_os_errors
    def remove_orphans(self, referenced: set[str]) -> int:
        """Remove the blobs no record references; returns how many."""
        removed = 0
        for sha, path in self.stored().items():
            if sha not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    @_os_errors
    def recover(self, referenced: set[str]) -> None:
        """Roll interrupted writes and deletes back (only when no other process has the store open)."""
        for staged in self.staging.iterdir():
            if staged.is_dir():
                shutil.rmtree(staged, ignore_errors=True)
            else:
                staged.unlink(missing_ok=True)
        for trashed in (self.root / "trash").iterdir():
            sha = trashed.name.split(".", 1)[0]
            target = self.path(sha)
            if sha in referenced and not target.exists():
                target.parent.mkdir(exist_ok=True)
                trashed.replace(target)
            else:
                trashed.unlink(missing_ok=True)
        self.remove_orphans(referenced)
