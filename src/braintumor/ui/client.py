"""A small typed HTTP client over the braintumor API (httpx), used by every page of the UI.

Why its own module: the pages never see HTTP. Each call returns a frozen dataclass (``Scan``, ``ScanPage``,
``Stats`` …) or raises :class:`ApiError` carrying the server's own one-line reason, ready to show to a user —
never a traceback, never the token. Network failures become an ``ApiError`` with status 0.

Example:
    >>> api = ApiClient("http://127.0.0.1:8000")  # doctest: +SKIP
    >>> token = api.login("alice", "a long passphrase")  # doctest: +SKIP
    >>> api.with_token(token.access_token).history(page=1).total  # doctest: +SKIP
    3
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import httpx

from braintumor.ui.reading import read
from braintumor.ui.records import (
    BulkDeleted,
    FileLink,
    Health,
    Lock,
    PacsStudyPage,
    Scan,
    ScanPage,
    ScanStats,
    Stats,
    Study,
    Token,
    User,
    UserPage,
)

DEFAULT_API_URL = "http://127.0.0.1:8000"
#: Analysing one scan can take a few seconds on a busy CPU server; everything else is quick.
PREDICT_TIMEOUT_S = 180.0
#: A study is scored slice by slice: hundreds of slices on a busy CPU server take minutes.
STUDY_TIMEOUT_S = 900.0
TIMEOUT_S = 30.0

_FIELD_HINTS = {
    "username": "the username must be 3–32 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "password": "the password is missing or too long (at most 128 characters)",
}


class ApiError(Exception):
    """A refused or failed API call: ``status`` (0 when the server could not be reached) and a readable message.

    >>> str(ApiError(404, "scan not found"))
    'scan not found'
    """

    def __init__(self, status: int, message: str, request_id: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.request_id = request_id
        self.code = code  # the kind of refusal when the server names it (unreadable, not_mri, out_of_scope, …)

    @property
    def unauthorized(self) -> bool:
        """The token is missing, invalid, expired or revoked (sign in again)."""
        return self.status == 401


# -- the client ------------------------------------------------------------------------------------------
def describe(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` for a refused response, with the server's reason made readable."""
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(body, dict):
        request_id = body.get("request_id") or request_id
    if isinstance(detail, list):  # request validation: one line per field, never the submitted values
        lines = []
        for err in detail:
            where = str(err.get("loc", ["", "value"])[-1]) if isinstance(err, dict) else "value"
            lines.append(
                _FIELD_HINTS.get(where) or f"{where}: {err.get('msg', 'invalid') if isinstance(err, dict) else err}"
            )
        message = "; ".join(dict.fromkeys(lines)) or "the request was refused"
    elif isinstance(detail, str) and detail:
        message = detail
    else:
        message = f"the server answered {response.status_code} {response.reason_phrase}".strip()
    message = message[0].upper() + message[1:]
    if response.status_code == 429 and (wait := response.headers.get("retry-after")) and "try again in" not in message:
        message += f" (try again in about {wait} s)"  # the server's message says when, if it knows: not twice
    code = body.get("code") if isinstance(body, dict) else None
    return ApiError(response.status_code, message, request_id, str(code) if code else None)


class ApiClient:
    """Typed calls to the API at ``base_url``; ``token`` signs the calls that need an account.

    One instance keeps one connection pool; :meth:`with_token` returns a client sharing it.
    """

    def __init__(
        self, base_url: str = DEFAULT_API_URL, token: str | None = None, *, http: httpx.Client | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = http or httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(TIMEOUT_S, connect=5.0))

    def __repr__(self) -> str:  # never print the token
        return f"ApiClient({self.base_url!r}, signed_in={self._token is not None})"

    def with_token(self, token: str | None) -> ApiClient:
        """A client for the same server and pool, signing with ``token``."""
        return ApiClient(self.base_url, token, http=self._http)

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, *, auth: bool = True, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            if not self._token:
                raise ApiError(401, "Please sign in first")
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._http.request(
                method, path, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
            )
        except httpx.TimeoutException:
            raise ApiError(0, f"The analysis server at {self.base_url} did not answer in time; try again") from None
        except httpx.HTTPError:
            raise ApiError(
                0, f"Cannot reach the analysis server at {self.base_url}: check that it is running (braintumor serve)"
            ) from None
        if response.status_code >= 400:
            raise describe(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "The server sent an unreadable answer") from None

    # -- health and accounts -----------------------------------------------------------------------------
    def health(self) -> Health:
        """Server, model and storage status (no account needed; a 503 still carries the body)."""
        try:
            response = self._http.get("/health", timeout=5.0)
        except httpx.HTTPError:
            raise ApiError(0, f"Cannot reach the analysis server at {self.base_url}") from None
        if response.status_code not in (200, 503):
            raise describe(response)
        data = response.json()
        model = data.get("model", {})
        storage = data.get("storage", {})
        return Health(
            status=str(data.get("status", "unavailable")),
            version=str(data.get("version", "?")),
            model_loaded=bool(model.get("loaded")),
            model_name=model.get("name"),
            model_version=model.get("version"),
            model_reason=model.get("reason"),
            card=dict(model.get("card") or {}),
            storage_backend=str(storage.get("backend", "?")),
            storage_reachable=bool(storage.get("reachable")),
        )

    def register(self, username: str, password: str) -> tuple[User, str]:
        """Create an account; returns it and its recovery key (shown once)."""
        data = self._json("POST", "/register", auth=False, json={"username": username, "password": password})
        return read(User, data["user"]), str(data["recovery_key"])

    def login(self, username: str, password: str) -> Token:
        """A bearer token for a username and password (OAuth2 password form)."""
        body = {"username": username, "password": password}
        return read(Token, self._json("POST", "/token", auth=False, data=body))

    def me(self) -> User:
        return read(User, self._json("GET", "/users/me"))

    def change_password(self, current: str, new: str) -> Token:
        """Change the password; older tokens stop working, the returned one replaces them."""
        body = {"current_password": current, "new_password": new}
        return read(Token, self._json("POST", "/change-password", json=body))

    def reset_password(self, username: str, recovery_key: str, new_password: str) -> str:
        """Set a new password with the recovery key; returns the new recovery key (the old one is spent)."""
        body = {"username": username, "recovery_key": recovery_key, "new_password": new_password}
        return str(self._json("POST", "/reset-password", auth=False, json=body)["recovery_key"])

    def delete_account(self, password: str) -> None:
        """Delete the signed-in account with all of its scans."""
        self._request("DELETE", "/users/me", json={"password": password})

    # -- scans -------------------------------------------------------------------------------------------
    def predict(self, filename: str, data: bytes) -> Scan:
        """Analyse one scan (JPEG, PNG, BMP, TIFF or DICOM, decided by content) and store it in the history."""
        files = {"file": (filename, data, "application/octet-stream")}
        return Scan.from_json(self._json("POST", "/predict", files=files, timeout=PREDICT_TIMEOUT_S))

    def history(
        self,
        page: int = 1,
        page_size: int = 20,
        *,
        q: str | None = None,
        outcome: str | None = None,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
        kind: str | None = None,
    ) -> ScanPage:
        """One page of the signed-in user's scans and studies, newest first, filtered (``kind``: scan or study)."""
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        for key, value in (("q", q), ("outcome", outcome), ("kind", kind)):
            if value:
                params[key] = value
        if date_from:
            params["date_from"] = date_from.isoformat()
        if date_to:
            params["date_to"] = date_to.isoformat()
        return read(ScanPage, self._json("GET", "/history", params=params))

    def scan_stats(self, date_from: dt.date | None = None, utc_offset_minutes: int = 0) -> ScanStats:
        """The signed-in user's numbers since ``date_from`` (all time when ``None``), days in the given offset."""
        params: dict[str, str | int] = {"utc_offset_minutes": utc_offset_minutes}
        if date_from:
            params["date_from"] = date_from.isoformat()
        data = self._json("GET", "/history/stats", params=params)
        return ScanStats(
            scans=int(data["scans"]),
            outcomes={str(k): int(v) for k, v in data["outcomes"].items()},
            mean_p_tumor=None if data["mean_p_tumor"] is None else float(data["mean_p_tumor"]),
            models=tuple((str(m["model"]), int(m["scans"])) for m in data["models"]),
            histogram={str(k): tuple(int(n) for n in v) for k, v in data["histogram"].items()},
            per_day=tuple(
                (dt.date.fromisoformat(d["date"]), str(d["outcome"]), int(d["scans"])) for d in data["per_day"]
            ),
            threshold=None if data["threshold"] is None else float(data["threshold"]),
        )

    def scan(self, scan_id: str) -> Scan:
        """One scan with its full result."""
        return Scan.from_json(self._json("GET", f"/history/{quote(scan_id, safe='')}"))

    def delete_scans(self, ids: list[str]) -> BulkDeleted:
        """Delete several scans at once."""
        return read(BulkDeleted, self._json("POST", "/history/delete", json={"ids": ids}))

    def file(self, link: FileLink) -> bytes:
        """The bytes of a stored file (original upload, heatmap, overlay or raw map)."""
        return self._request("GET", link.url).content

    def report(self, scan: Scan) -> bytes:
        """The scan's PDF report."""
        return self._request("GET", scan.report_url).content

    # -- studies -----------------------------------------------------------------------------------------
    def upload_study(self, files: list[tuple[str, bytes]]) -> Study:
        """Analyse one study (its DICOM files, one zip of them, or one NIfTI volume) slice by slice and store it in
        the history."""
        parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
        return Study.from_json(self._json("POST", "/studies", files=parts, timeout=STUDY_TIMEOUT_S))

    def study(self, study_id: str) -> Study:
        """One study with every slice's result."""
        return Study.from_json(self._json("GET", f"/studies/{quote(study_id, safe='')}"))

    def delete_study(self, study_id: str) -> None:
        """Delete one study with all of its slices' files."""
        self._request("DELETE", f"/studies/{quote(study_id, safe='')}")

    # -- the site's PACS ---------------------------------------------------------------------------------
    def pacs_configured(self) -> bool:
        """Whether the site has a PACS configured (the "From PACS" page is offered only then)."""
        return bool(self._json("GET", "/pacs").get("configured"))

    def pacs_studies(self, page: int = 1, page_size: int = 20, **filters: str | None) -> PacsStudyPage:
        """Studies on the site's PACS matching every filter given (``patient_id``, ``patient_name`` with ``*``
        wildcards, ``accession_number``, ``study_date`` YYYYMMDD[-YYYYMMDD], ``modality``)."""
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        params |= {k: v.strip() for k, v in filters.items() if v and v.strip()}
        return read(PacsStudyPage, self._json("GET", "/pacs/studies", params=params))

    def analyze_pacs_study(self, study_uid: str) -> Study:
        """Retrieve a study from the site's PACS, score it as a study and store it in the history."""
        path = f"/pacs/studies/{quote(study_uid, safe='')}/analyze"
        return Study.from_json(self._json("POST", path, timeout=STUDY_TIMEOUT_S))

    def fetch(self, url: str) -> bytes:
        """The bytes the API serves at ``url``, a path it gave (a study slice's view or overlay, a study's report);
        only a path on this server: the token is never sent elsewhere."""
        if not url.startswith("/") or url.startswith("//"):
            raise ApiError(0, f"Not a path on the analysis server: {url[:80]}")
        return self._request("GET", url).content

    # -- administration ----------------------------------------------------------------------------------
    def admin_stats(self, days: int = 30) -> Stats:
        data = self._json("GET", "/admin/stats", params={"days": days})
        return Stats(
            users=int(data["users"]),
            admins=int(data["admins"]),
            scans=int(data["scans"]),
            scans_per_user=tuple((str(u["username"]), int(u["scans"])) for u in data["scans_per_user"]),
            outcomes={str(k): int(v) for k, v in data["outcomes"].items()},
            per_day=tuple((dt.date.fromisoformat(d["date"]), int(d["scans"])) for d in data["per_day"]),
        )

    def admin_locks(self) -> tuple[Lock, ...]:
        """Running sign-in locks and back-offs, longest first."""
        return tuple(read(Lock, d) for d in self._json("GET", "/admin/locks"))

    def clear_locks(self, username: str) -> int:
        """Clear every sign-in lock and back-off of ``username``; returns how many entries went."""
        return int(self._json("DELETE", f"/admin/locks/{quote(username, safe='')}")["cleared"])

    def admin_users(self, q: str | None = None, page: int = 1, page_size: int = 20) -> UserPage:
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        if q:
            params["q"] = q
        return read(UserPage, self._json("GET", "/admin/users", params=params))

    def set_role(self, username: str, role: str) -> User:
        return read(User, self._json("PUT", f"/admin/users/{quote(username, safe='')}/role", json={"role": role}))

    def delete_user(self, username: str) -> None:
        self._request("DELETE", f"/admin/users/{quote(username, safe='')}")
