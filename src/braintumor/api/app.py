"""The application factory: ``create_app(settings)`` builds one independent app, with its own storage, model,
security and audit log — nothing is built at import time (the FastAPI template's regret).

Why the pieces: the model is loaded once here (not per request) and, when none is available, the app still
serves accounts and history while ``/health`` says why and ``/predict`` answers 503. Middleware, outermost
first: the client address (``X-Forwarded-For`` believed only from ``BRAINTUMOR_TRUSTED_PROXIES``), request id +
access log (and a last-resort 500 without exception text), body-size cap (413 before a huge upload is parsed),
CORS for the UI's origin only, security headers (with a Content-Security-Policy that allows nothing on API
answers). ``/docs`` exists in development only (``BRAINTUMOR_DOCS`` overrides) and is served from the bundled
Swagger UI (``swagger-ui-bundle``), never from a CDN; there is no ``/redoc``; in production ``/openapi.json`` is
off with the docs.

Example:
    >>> from braintumor.api.config import Settings
    >>> app = create_app(Settings(secret_key="k" * 40, data_dir="/tmp/bt"))  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import ipaddress
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from braintumor import __version__
from braintumor.api.analysis import DECODER_PRELOAD, parse_upload
from braintumor.api.asgi import HttpMiddleware, ResponseTracking, on_response_start
from braintumor.api.config import ConfigError, Settings
from braintumor.api.errors import install_error_handlers
from braintumor.api.logs import AuditLog, RequestContextMiddleware, request_id_var
from braintumor.api.routes import admin, auth, dicom, health, pacs, scans, studies
from braintumor.api.security import LoginGuard, Security
from braintumor.api.study_analysis import STUDY_DECODER_PRELOAD, parse_study
from braintumor.errors import BrainTumorError
from braintumor.imaging.untrusted import start_ahead
from braintumor.inference.predictor import Predictor
from braintumor.storage import Storage, open_storage

log = logging.getLogger(__name__)
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "inference" / "default_model"
_DESCRIPTION = (
    "Brain MRI tumour detection: upload a scan (JPEG, PNG or DICOM), get the ensemble's answer with a Grad-CAM "
    "heatmap, keep a private history and PDF reports. **Decision support, not a diagnosis.**"
)


def resolve_model_dir(settings: Settings) -> Path | None:
    """``BRAINTUMOR_MODEL_DIR``, else the bundled model when one is shipped, else ``None``."""
    if settings.model_dir is not None:
        return settings.model_dir
    if (BUNDLED_MODEL / "card.json").is_file() or (BUNDLED_MODEL / "ensemble.json").is_file():
        return BUNDLED_MODEL
    return None


def load_predictor(settings: Settings) -> tuple[Predictor | None, str | None]:
    """The predictor, or ``None`` and a reason that is safe to show on ``/health``."""
    path = resolve_model_dir(settings)
    if path is None:
        return None, "no model configured (set BRAINTUMOR_MODEL_DIR) and no bundled model installed"
    try:
        return Predictor.load(path, threads=settings.inference_threads), None
    except BrainTumorError as exc:
        log.error("cannot load the model: %s", exc)
        return None, "the configured model could not be loaded (see the server log)"


def open_configured_storage(settings: Settings) -> Storage:
    """The storage backend the settings name."""
    return open_storage(
        settings.storage,
        data_dir=settings.data_dir,
        mongo_uri=settings.mongo_uri.get_secret_value() if settings.mongo_uri else None,
        mongo_database=settings.mongo_database,
        mongo_timeout_ms=settings.mongo_timeout_ms,
    )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the cap (FastAPI re-raises HTTP errors as they are)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: the limit is {limit / 1048576:g} MB")


class BodyLimitMiddleware(HttpMiddleware):
    """Refuse bodies over ``limit`` bytes (``per_path`` overrides it for exact paths, e.g. ``/studies``, whose
    uploads are whole series): by Content-Length at once, or while streaming."""

    def __init__(self, app: ASGIApp, limit: int, per_path: dict[str, int] | None = None) -> None:
        super().__init__(app)
        self.limit = limit
        self.per_path = dict(per_path or {})

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self.per_path.get(scope.get("path", ""), self.limit)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            status = 413 if length.isdigit() else 400
            detail = BodyTooLarge(cap).detail if status == 413 else "invalid Content-Length"
            await _send_json(send, status, detail)
            return
        received = 0
        sent = ResponseTracking(send)

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(cap)
            return message

        try:
            await self.app(scope, limited, sent)
        except BodyTooLarge as exc:
            if not sent.started:
                await _send_json(send, 413, str(exc.detail))


class TrustedProxyMiddleware:
    """Believe ``X-Forwarded-For`` only when the TCP peer is a configured proxy; then the client is the right-most
    address in the header that is not itself a trusted proxy. Without configured proxies the header is ignored."""

    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self.app = app
        self.trusted = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client and self.trusted and self._is_trusted(client[0]):
            header = b",".join(v for k, v in scope.get("headers") or [] if k == b"x-forwarded-for").decode("latin-1")
            hops = [h.strip() for h in header.split(",") if h.strip()]
            for hop in reversed(hops):
                if not self._is_trusted(hop):
                    try:
                        ipaddress.ip_address(hop)
                    except ValueError:
                        break  # garbage: keep the proxy's own address
                    scope = {**scope, "client": (hop, 0)}
                    break
        await self.app(scope, receive, send)


#: API answers are JSON, files and PDFs: nothing in them may run, load or be framed.
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class SecurityHeadersMiddleware(HttpMiddleware):
    """No sniffing, no framing, no referrer, no caching of responses that may hold patient data, and a CSP (a
    response that sets its own, the docs page, keeps it)."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
    )

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        def add_headers(message: Message) -> None:
            headers = [*message.get("headers", []), *self.HEADERS]
            if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                headers.append((b"content-security-policy", API_CSP))
            message["headers"] = headers

        await self.app(scope, receive, on_response_start(send, add_headers))


class LastResortMiddleware:
    """Turn any exception that escaped the handlers into a generic 500 inside the request's context (so the
    body carries the request id and never the exception's text)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = ResponseTracking(send)
        try:
            await self.app(scope, receive, sent)
        except Exception as exc:
            log.error("unhandled %s on %s", type(exc).__name__, scope.get("path"), exc_info=exc)
            if sent.started or scope["type"] != "http":
                raise
            await _send_json(send, 500, f"internal error; quote request id {request_id_var.get()} when reporting it")


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "request_id": request_id_var.get()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_docs(app: FastAPI) -> bool:
    """``/docs`` (Swagger UI) from the installed ``swagger-ui-bundle`` package, with a CSP that lets only its own
    files and its one inline start-up script run. Returns ``False`` (and serves nothing) when the bundle is
    missing: the page is never loaded from a CDN."""
    try:
        swagger_ui_path = importlib.import_module("swagger_ui_bundle").swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is None or not (Path(str(swagger_ui_path)) / "swagger-ui-bundle.js").is_file():
        log.warning("swagger-ui-bundle is not installed: /docs is off (it is never loaded from a CDN)")
        return False
    from fastapi.staticfiles import StaticFiles

    docs = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="braintumor API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
    )
    redirect = get_swagger_ui_oauth2_redirect_html()

    async def local_docs() -> HTMLResponse:
        return _with_csp(docs)

    async def oauth2_redirect() -> HTMLResponse:
        return _with_csp(redirect)

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    app.add_api_route("/docs", local_docs, include_in_schema=False)
    app.add_api_route("/docs/oauth2-redirect", oauth2_redirect, include_in_schema=False)
    return True


_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    """A copy of ``page`` whose CSP allows same-origin files plus exactly its inline scripts (by SHA-256)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    csp = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return HTMLResponse(bytes(page.body), headers={"Content-Security-Policy": csp})


def start_decoders() -> None:
    """The isolated decoders' fork server and a spare child, started with everything every route's decoder child
    imports, when the app starts: the first upload, study or export does not wait for them, and no route's first
    call restarts the server for modules another route's call left out."""
    funcs = (parse_upload, parse_study, dicom.decode_stored, dicom.decode_sources)
    start_ahead(funcs, (*DECODER_PRELOAD, *STUDY_DECODER_PRELOAD, *dicom.EXPORT_DECODER_PRELOAD))


def create_app(settings: Settings, predictor: Predictor | None = None) -> FastAPI:
    """Build the API from one settings object (``predictor``: an already loaded model, e.g. in tests).

    Raises :class:`~braintumor.api.config.ConfigError` without a signing secret, and
    :class:`~braintumor.storage.StorageError` when the storage cannot be opened.
    """
    if settings.secret_key is None:
        raise ConfigError(
            "no signing secret: set BRAINTUMOR_SECRET_KEY (or start with 'braintumor serve', which keeps a "
            "generated one in the data directory for development)"
        )
    storage = open_configured_storage(settings)
    model_error = None
    if predictor is None:
        predictor, model_error = load_predictor(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.isolate_decoding:
            start_decoders()
        yield
        app.state.storage.close()

    app = FastAPI(
        title="braintumor",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled or settings.env != "production" else None,
    )
    app.state.settings = settings
    app.state.storage = storage
    app.state.predictor = predictor
    app.state.model_error = model_error
    app.state.security = Security(settings)
    app.state.guard = LoginGuard(
        rate_per_minute=settings.auth_rate_per_minute,
        attempts=settings.login_attempts,
        lockout_s=settings.lockout_minutes * 60,
        backoff_after=settings.account_backoff_after,
        backoff_max_s=settings.account_backoff_max_s,
    )
    app.state.audit = AuditLog(settings.audit_log_path)
    app.state.deid_salt = scans.deid_salt(settings.secret_key.get_secret_value())
    app.state.predict_limiter = anyio.CapacityLimiter(settings.max_concurrent_predictions)

    install_error_handlers(app)
    for module in (auth, scans, studies, dicom, pacs, admin, health):
        app.include_router(module.router)
    if settings.docs_enabled:
        install_docs(app)

    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=False,
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Content-Disposition", "Location"],
    )
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_upload_bytes + (1 << 20),
        per_path={"/studies": settings.max_study_bytes + (1 << 20)},
    )
    app.add_middleware(LastResortMiddleware)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies)
    return app
