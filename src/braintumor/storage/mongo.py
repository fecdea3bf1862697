"""The MongoDB backend: collections ``users`` and ``history``, GridFS for originals and heatmaps.

Why: the seed ran on MongoDB and some sites already operate one. Layout: ``users`` (unique index on the
lowercased ``username``), ``history`` (one document per scan, index on ``owner_id`` + ``created_at``), and a
GridFS bucket whose files carry ``metadata.scan_id`` / ``owner_id`` / ``kind`` / ``sha256``.

Atomicity without multi-document transactions (a standalone MongoDB has none): ``add_scan`` uploads the
GridFS files first and inserts the ``history`` document last, deleting the uploads if anything fails; deletes
remove the document first and the files after it. A crash can therefore only leave GridFS files without a
document, never a document without files; :meth:`MongoStorage.collect_garbage` removes such orphans once
they are older than ``gc_grace_s`` (so that uploads in flight on another server are never touched). Filename
search is an escaped, literal pattern (``re.escape``), never the user's text as a regex.

Example:
    >>> store = MongoStorage("mongodb://127.0.0.1:27017", "braintumor")  # doctest: +SKIP
    >>> store.ping()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
from collections.abc import Sequence
from typing import Any, Unpack

from pymongo.errors import PyMongoError

from braintumor.storage import base
from braintumor.storage.stats import ScanFacts, Stats, per_day_series

#: Driver errors become :class:`StorageError` without the driver's text (it may hold the URI).
_mongo_errors = base.storage_errors(PyMongoError, what="MongoDB is unavailable")


class MongoStorage:
    """Users, scans and blobs in one MongoDB database (see the module docstring)."""

    backend = "mongodb"

    def __init__(
        self,
        uri: str,
        database: str = "braintumor",
        *,
        timeout_ms: int = 5000,
        gc_grace_s: float = 600.0,
    ) -> None:
        import gridfs
        from pymongo import ASCENDING, DESCENDING, MongoClient
        from pymongo.errors import ConfigurationError, PyMongoError

        self.gc_grace_s = gc_grace_s
        try:
            self._client: Any = MongoClient(
                uri, tz_aware=True, serverSelectionTimeoutMS=timeout_ms, appname="braintumor"
            )
            self._db = self._client[database]
            self._users = self._db["users"]
            self._history = self._db["history"]
            self._files = self._db["fs.files"]
            self._revoked = self._db["revoked_tokens"]
            self._bucket = gridfs.GridFSBucket(self._db)
            self._users.create_index([("username", ASCENDING)], unique=True, name="username_unique")
            # (owner, time) only: SecantusDB mis-applies inclusive range bounds on a third key (_id) of this index.
            self._history.create_index([("owner_id", ASCENDING), ("created_at", DESCENDING)], name="owner_time")
            self._history.create_index([("created_at", ASCENDING)], name="time")
            self._files.create_index([("metadata.scan_id", ASCENDING)], name="scan")
            self._revoked.create_index([("expires_at", ASCENDING)], name="expiry")
            # Records of before the one outcome kept a threshold label and a band: the band is the outcome.
            self._history.update_many({"band": {"$exists": True}}, {"$rename": {"band": "outcome"}})
            self._history.update_many({"label": {"$exists": True}}, {"$unset": {"label": ""}})
            # Records of before studies were stored are all scans.
            self._history.update_many({"kind": {"$exists": False}}, {"$set": {"kind": "scan"}})
        except ConfigurationError as exc:
            raise base.StorageError("invalid MongoDB URI or options") from exc
        except PyMongoError as exc:
            raise base.StorageError(f"cannot reach MongoDB ({type(exc).__name__}); check BRAINTUMOR_MONGO_URI") from exc
        self._role_lock = threading.Lock()
        self.collect_garbage()

    # -- users -------------------------------------------------------------------------------------------
    @_mongo_errors
    def create_user(self, user: base.NewUser) -> base.UserRecord:
        from pymongo.errors import DuplicateKeyError

        record = base.new_user_record(user)
        doc = {**record.__dict__}
        doc["_id"] = doc.pop("id")
        try:
            self._users.insert_one(doc)
        except DuplicateKeyError as exc:
            raise base.UserExistsError(f"user {record.username!r} already exists") from exc
        return record

    @_mongo_errors
    def get_user(self, username: str) -> base.UserRecord | None:
        return _user(self._users.find_one({"username": base.normalise_username(username)}))

    @_mongo_errors
    def get_user_by_id(self, user_id: str) -> base.UserRecord | None:
        return _user(self._users.find_one({"_id": user_id}))

    @_mongo_errors
    def update_credentials(self, user_id: str, **change: Unpack[base.CredentialChange]) -> base.UserRecord:
        password_hash, recovery_hash = change.get("password_hash"), change.get("recovery_hash")
        bump_token_version = change.get("bump_token_version", False)
        from pymongo import ReturnDocument

        update: dict[str, Any] = {}
        fields = {k: v for k, v in (("password_hash", password_hash), ("recovery_hash", recovery_hash)) if v}
        if fields:
            update["$set"] = fields
        if bump_token_version:
            update["$inc"] = {"token_version": 1}
        if update:
            doc = self._users.find_one_and_update({"_id": user_id}, update, return_document=ReturnDocument.AFTER)
        else:
            doc = self._users.find_one({"_id": user_id})
        return base.existing_user(_user(doc))

    @_mongo_errors
    def set_role(self, username: str, role: base.Role) -> base.UserRecord:
        name = base.normalise_username(username)
        with self._role_lock:
            user = base.existing_user(_user(self._users.find_one({"username": name})), name)
            if user.role == "admin" and role != "admin":
                base.refuse_last_admin(user, role, self.count_admins())
                self._users.update_one({"_id": user.id}, {"$set": {"role": role}})
                if self.count_admins() == 0:  # another server demoted the other admin meanwhile
                    self._users.update_one({"_id": user.id}, {"$set": {"role": "admin"}})
                    raise base.LastAdminError("cannot demote the last admin")
            else:
                self._users.update_one({"_id": user.id}, {"$set": {"role": role}})
        return base.UserRecord(**{**user.__dict__, "role": role})

    @_mongo_errors
    def delete_user(self, username: str) -> bool:
        user = _user(self._users.find_one({"username": base.normalise_username(username)}))
        if user is None:
            return False
        base.refuse_last_admin(user, None, self.count_admins())
        ids = [d["_id"] for d in self._history.find({"owner_id": user.id}, {"_id": 1})]
        self._delete_scan_docs(ids)
        self._users.delete_one({"_id": user.id})
        return True

    @_mongo_errors
    def list_users(self, search: str | None = None, offset: int = 0, limit: int = 20) -> base.Page[base.UserSummary]:
        query: dict[str, Any] = {}
        if search:
            query["username"] = {"$regex": re.escape(search.lower())}
        total = self._users.count_documents(query)
        docs = list(self._users.find(query).sort("username", 1).skip(max(0, offset)).limit(max(0, limit)))
        counts = self._scan_counts([d["_id"] for d in docs])
        items = [base.UserSummary(u, counts.get(u.id, 0)) for u in map(_user, docs) if u is not None]
        return base.Page(items, int(total))

    def _scan_counts(self, owner_ids: list[str]) -> dict[str, int]:
        if not owner_ids:
            return {}
        pipeline: list[dict[str, Any]] = [
            {"$match": {"owner_id": {"$in": owner_ids}}},
            {"$group": {"_id": "$owner_id", "n": {"$sum": 1}}},
        ]
        return {d["_id"]: int(d["n"]) for d in self._history.aggregate(pipeline)}

    @_mongo_errors
    def count_admins(self) -> int:
        return int(self._users.count_documents({"role": "admin"}))

    # -- revoked tokens ----------------------------------------------------------------------------------
    @_mongo_errors
    def revoke_token(self, token_id: str, expires_at: dt.datetime) -> None:
        self._revoked.delete_many({"expires_at": {"$lt": base.utcnow()}})
        self._revoked.replace_one({"_id": token_id}, {"_id": token_id, "expires_at": _utc(expires_at)}, upsert=True)

    @_mongo_errors
    def is_token_revoked(self, token_id: str) -> bool:
        return self._revoked.find_one({"_id": token_id}, {"_id": 1}) is not None

    # -- scans -------------------------------------------------------------------------------------------
    @_mongo_errors
    def add_scan(self, scan: base.NewScan, blobs: Sequence[base.Blob]) -> base.ScanRecord:
        if self._users.find_one({"_id": scan.owner_id}, {"_id": 1}) is None:
            raise base.UserNotFoundError("the scan's owner does not exist")
        record = base.new_scan_record(scan, blobs)
        scan_id, files = record.id, record.files
        uploaded: list[str] = []
        try:
            for blob in blobs:
                f = files[blob.kind]
                self._bucket.upload_from_stream_with_id(
                    f.id,
                    f"{scan_id}/{blob.kind}",
                    blob.data,
                    metadata={
                        "scan_id": scan_id,
                        "owner_id": scan.owner_id,
                        "kind": blob.kind,
                        "content_type": blob.content_type,
                        "sha256": f.sha256,
                    },
                )
                uploaded.append(f.id)
            self._history.insert_one(_scan_doc(record))
        except BaseException:
            for file_id in uploaded:
                self._delete_file(file_id)
            raise
        return record

    @_mongo_errors
    def get_scan(self, scan_id: str) -> base.ScanRecord | None:
        return _scan(self._history.find_one({"_id": scan_id}))

    @_mongo_errors
    def list_scans(self, owner_id: str, query: base.ScanQuery) -> base.Page[base.ScanRecord]:
        q: dict[str, Any] = {"owner_id": owner_id}
        if query.search:
            q["filename"] = {"$regex": re.escape(query.search), "$options": "i"}
        if query.outcome:
            q["outcome"] = query.outcome
        if query.kind:
            q["kind"] = query.kind
        span: dict[str, Any] = {}
        if query.date_from:
            span["$gte"] = query.date_from
        if query.date_to:
            span["$lte"] = query.date_to
        if span:
            q["created_at"] = span
        total = self._history.count_documents(q)
        cursor = (
            self._history.find(q)
            .sort([("created_at", -1), ("_id", -1)])
            .skip(max(0, query.offset))
            .limit(max(0, query.limit))
        )
        items = [s for s in map(_scan, cursor) if s is not None]
        return base.Page(items, int(total))

    @_mongo_errors
    def delete_scans(self, owner_id: str, scan_ids: Sequence[str]) -> list[str]:
        if not scan_ids:
            return []
        ids = [d["_id"] for d in self._history.find({"owner_id": owner_id, "_id": {"$in": list(scan_ids)}}, {"_id": 1})]
        return self._delete_scan_docs(ids)

    def _delete_scan_docs(self, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        file_ids = [f["_id"] for f in self._files.find({"metadata.scan_id": {"$in": list(ids)}}, {"_id": 1})]
        self._history.delete_many({"_id": {"$in": list(ids)}})
        for file_id in file_ids:
            self._delete_file(file_id)
        return list(ids)

    def _delete_file(self, file_id: str) -> None:
        from gridfs.errors import NoFile

        with contextlib.suppress(NoFile):
            self._bucket.delete(file_id)

    @_mongo_errors
    def get_file(self, file_id: str) -> tuple[base.FileRecord, bytes] | None:
        doc = self._files.find_one({"_id": file_id})
        if doc is None:
            return None
        meta = doc.get("metadata") or {}
        scan_id, kind = str(meta.get("scan_id", "")), str(meta.get("kind", ""))
        scan = self._history.find_one({"_id": scan_id}, {"files": 1, "owner_id": 1})
        if scan is None or (scan.get("files") or {}).get(kind, {}).get("id") != file_id:
            return None
        data = self._bucket.open_download_stream(file_id).read()
        record = base.FileRecord(
            file_id, scan_id, scan["owner_id"], kind, meta.get("content_type", ""), len(data), meta.get("sha256", "")
        )
        return base.checked_file(record, data)

    # -- statistics and maintenance -------------------------------------------------------------------------
    @_mongo_errors
    def stats(self, days: int = 30) -> Stats:
        users = self._users.count_documents({})
        scans = self._history.count_documents({})
        names = {d["_id"]: d["username"] for d in self._users.find({}, {"username": 1})}
        per_owner = self._history.aggregate([{"$group": {"_id": "$owner_id", "n": {"$sum": 1}}}])
        per_user = sorted(
            ((names.get(d["_id"], "(deleted)"), int(d["n"])) for d in per_owner), key=lambda t: (-t[1], t[0])
        )
        outcomes = {
            d["_id"]: int(d["n"]) for d in self._history.aggregate([{"$group": {"_id": "$outcome", "n": {"$sum": 1}}}])
        }
        since = base.utcnow() - dt.timedelta(days=days + 1)
        pipeline: list[dict[str, Any]] = [
            {"$match": {"created_at": {"$gte": since}}},
            {"$group": {"_id": {"$dateToString": {"format": "%Y-%m-%d", "date": "$created_at"}}, "n": {"$sum": 1}}},
        ]
        per_day = {d["_id"]: int(d["n"]) for d in self._history.aggregate(pipeline)}
        return Stats(int(users), self.count_admins(), int(scans), per_user, outcomes, per_day_series(per_day, days))

    @_mongo_errors
    def scan_facts(self, owner_id: str, date_from: dt.datetime | None = None) -> list[ScanFacts]:
        q: dict[str, Any] = {"owner_id": owner_id}
        if date_from:
            q["created_at"] = {"$gte": date_from}
        fields = {"outcome": 1, "p_tumor": 1, "model_name": 1, "model_version": 1, "threshold": 1, "created_at": 1}
        cursor = self._history.find(q, fields).sort([("created_at", -1), ("_id", -1)])
        return [
            ScanFacts(
                str(d.get("outcome", "")),
                float(d.get("p_tumor", 0.0)),
                f"{d.get('model_name', '')} v{d.get('model_version', '')}",
                float(d.get("threshold", 0.5)),
                _utc(d["created_at"]),
            )
            for d in cursor
        ]

    def ping(self) -> bool:
        from pymongo.errors import PyMongoError

        try:
            self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    @_mongo_errors
    def check(self) -> base.IntegrityReport:
        referenced: set[str] = set()
        for doc in self._history.find({}, {"files": 1}):
            referenced.update(f["id"] for f in (doc.get("files") or {}).values())
        stored = {d["_id"] for d in self._files.find({}, {"_id": 1})}
        return base.IntegrityReport(sorted(referenced - stored), sorted(stored - referenced))

    @_mongo_errors
    def collect_garbage(self) -> int:
        cutoff = base.utcnow() - dt.timedelta(seconds=self.gc_grace_s)
        removed = 0
        for doc in self._files.find({"uploadDate": {"$lte": cutoff}}, {"_id": 1, "metadata": 1}):
            scan_id = (doc.get("metadata") or {}).get("scan_id")
            if scan_id is None or self._history.find_one({"_id": scan_id}, {"_id": 1}) is None:
                self._delete_file(doc["_id"])
                removed += 1
        return removed

    def close(self) -> None:
        self._client.close()


def _user(doc: Any) -> base.UserRecord | None:
    if doc is None:
        return None
    return base.record_from(base.UserRecord, doc, id=doc["_id"], created_at=_utc(doc["created_at"]))


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def _scan_doc(record: base.ScanRecord) -> dict[str, Any]:
    doc = {k: v for k, v in record.__dict__.items() if k not in ("id", "files")}
    doc["_id"] = record.id
    doc["files"] = {
        kind: {"id": f.id, "content_type": f.content_type, "size": f.size, "sha256": f.sha256}
        for kind, f in record.files.items()
    }
    return doc


def _scan(doc: Any) -> base.ScanRecord | None:
    if doc is None:
        return None
    files = {
        kind: base.FileRecord(
            f["id"], doc["_id"], doc["owner_id"], kind, f["content_type"], int(f["size"]), f["sha256"]
        )
        for kind, f in (doc.get("files") or {}).items()
    }
    result = dict(doc.get("result") or {})
    return base.record_from(
        base.ScanRecord, doc, id=doc["_id"], result=result, created_at=_utc(doc["created_at"]), files=files
    )
