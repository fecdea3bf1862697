"""Typed errors to HTTP answers, in one place.

Why: the seed returned exception text (paths, driver messages, stack traces) to clients. Here each typed error
(:mod:`braintumor.errors`, :mod:`braintumor.storage`) maps to one status code; the body carries only the error's
user-facing reason (already written for users) or, for server-side failures, a generic sentence and the request
id to quote. Validation errors never echo the submitted values (they may be passwords).

=============================== ====== =============================================
error                            status body
=============================== ====== =============================================
ImageTooLargeError                413    the reason (size, decoded bytes, frames, elements and cap)
UnsupportedImageError             415    the reason (formats accepted)
other ImageError                  422    the reason (empty, truncated, no pixels, nested too
                                         deep, decoding past its time or memory budget …)
NotAnMRIError, OutOfScopeError   422    the input gate's reason
InvalidRequestError, PolicyError  400    the reason
UserExistsError, LastAdminError   409    the reason
UserNotFoundError                 404    "not found"
ServiceBusyError                  503    the reason, with ``Retry-After``
StorageError                      503    "storage unavailable" + request id
ModelLoadError                    503    "model unavailable" + request id
anything else                     500    "internal error" + request id
=============================== ====== =============================================

Every body is ``{"detail", "request_id"}``, plus ``code`` when the error names its kind (``unreadable``,
``unsupported``, ``too_large``, ``not_mri``, ``out_of_scope``), so clients show each kind apart.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from braintumor.api.logs import request_id_var
from braintumor.api.security import PolicyError
from braintumor.errors import (
    BrainTumorError,
    ImageError,
    ImageTooLargeError,
    InvalidRequestError,
    ModelLoadError,
    NotAnMRIError,
    ServiceBusyError,
    UnsupportedImageError,
)
from braintumor.storage import LastAdminError, StorageError, UserExistsError, UserNotFoundError

log = logging.getLogger(__name__)

#: (error classes, status, show the error's own message?): one row per answer, as in the table above; the first
#: row that matches wins (a subclass, such as ImageTooLargeError of ImageError, comes before its base).
ERROR_STATUS: tuple[tuple[tuple[type[BaseException], ...], int, bool], ...] = (
    ((ImageTooLargeError,), 413, True),
    ((UnsupportedImageError,), 415, True),
    ((ImageError, NotAnMRIError), 422, True),
    ((InvalidRequestError, PolicyError), 400, True),
    ((UserExistsError, LastAdminError), 409, True),
    ((UserNotFoundError,), 404, False),
    ((ServiceBusyError,), 503, True),
    ((StorageError, ModelLoadError), 503, False),
)
_GENERIC = {404: "not found", 503: "the service is temporarily unavailable"}
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")


def status_for(exc: BaseException) -> tuple[int, bool]:
    """The HTTP status of a typed error and whether its message may be shown."""
    for classes, status, show in ERROR_STATUS:
        if isinstance(exc, classes):
            return status, show
    return (400, True) if isinstance(exc, BrainTumorError) else (500, False)


def public_message(exc: BaseException) -> str:
    """An error's one-line reason, without object reprs, capped at 300 characters."""
    text = " ".join(str(exc).split())
    return _OBJECT_REPR.sub("the input", text)[:300] or type(exc).__name__


def _body(detail: object, code: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"detail": detail, "request_id": request_id_var.get()}
    if code:
        body["code"] = code
    return body


async def _typed(request: Request, exc: Exception) -> JSONResponse:
    status, show = status_for(exc)
    if isinstance(exc, ServiceBusyError):
        headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(_body(public_message(exc)), status_code=status, headers=headers)
    if status >= 500:
        log.error("%s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        detail = _GENERIC.get(status, "internal error")
        detail = f"{detail}; quote request id {request_id_var.get()} when reporting it"
    else:
        detail = public_message(exc) if show else _GENERIC.get(status, "request refused")
    code = exc.code if isinstance(exc, BrainTumorError) and status < 500 else None
    return JSONResponse(_body(detail, code), status_code=status)


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "invalid")), "type": str(e.get("type", "invalid"))}
        for e in exc.errors()
    ]
    return JSONResponse(jsonable_encoder(_body(errors)), status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        _body(f"internal error; quote request id {request_id_var.get()} when reporting it"), status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(BrainTumorError, _typed)
    app.add_exception_handler(PolicyError, _typed)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
