"""Request ids, the access log and the audit log.

Why: an operator must be able to follow one request through the logs (``X-Request-ID``, echoed back and put on
every log line), and a site must be able to answer "who viewed, downloaded or deleted what" (the audit log:
JSON lines, mode 0600). Neither ever holds a password, a token, a query string (search text can be a patient's
name), a filename or a DICOM tag: only methods, route paths, ids, usernames, statuses and timings.

Example:
    >>> audit = AuditLog(None)
    >>> audit.record("scan.view", actor="alice", target="0f3c…")  # doctest: +SKIP
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from braintumor.api.asgi import HttpMiddleware, on_response_start

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("braintumor.api.access")
audit_logger = logging.getLogger("braintumor.audit")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request) so formats can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with the request id on every line (called by ``braintumor serve``, not by the factory)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # it logs query strings; ours does not


class RequestContextMiddleware(HttpMiddleware):
    """Pure ASGI: sets the request id (a sane incoming ``X-Request-ID`` or a new one), returns it as a header and
    writes one access-log line per request (method, path without query, status, duration, username)."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _VALID_ID.match(incoming) else secrets.token_hex(8)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = [500]

        def add_id(message: Message) -> None:
            status[0] = message["status"]
            message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]

        try:
            await self.app(scope, receive, on_response_start(send, add_id))
        finally:
            ms = (time.perf_counter() - start) * 1000
            user = scope["state"].get("username", "-")
            access_log.info(
                "%s %s %d %.1fms user=%s", scope.get("method", "-"), scope.get("path", "-"), status[0], ms, user
            )
            request_id_var.reset(token)


class AuditLog:
    """Append-only JSON lines (``path`` created with mode 0600; ``None`` logs to the ``braintumor.audit`` logger
    only). Each line: time, request id, actor, action, target, outcome and a few safe fields."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))

    def record(
        self, action: str, *, actor: str | None, target: str | None = None, outcome: str = "ok", **fields: Any
    ) -> None:
        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id_var.get(),
            "actor": actor,
            "action": action,
            "target": target,
            "outcome": outcome,
            **fields,
        }
        line = json.dumps(entry, separators=(",", ":"), default=str)
        audit_logger.info(line)
        if self.path is not None:
            with self._lock, self.path.open("a") as fh:
                fh.write(line + "\n")
