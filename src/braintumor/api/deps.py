"""Dependencies, each declared once as an ``Annotated`` alias (the FastAPI template's ``deps.py``).

Why: routes stay thin and read like a contract — ``def history(user: CurrentUser, storage: StorageDep)`` says
who may call it and what it touches. Everything comes from ``app.state``, set by :func:`create_app`, so tests
build as many independent apps as they like.

Example:
    >>> from fastapi import APIRouter
    >>> router = APIRouter()
    >>> @router.get("/whoami")
    ... def whoami(user: CurrentUser) -> str:
    ...     return user.username
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ConfigDict, Field

from braintumor.api.config import Settings
from braintumor.api.logs import AuditLog
from braintumor.api.security import LoginGuard, Security
from braintumor.inference.predictor import Predictor
from braintumor.storage import Storage, UserRecord

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _from_state(name: str) -> Callable[[Request], Any]:
    """A dependency returning ``app.state.<name>`` (set once by :func:`~braintumor.api.app.create_app`)."""

    def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = f"get_{name}"
    return dependency


def get_predictor(request: Request) -> Predictor:
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "no model is loaded, so scans cannot be analysed; set BRAINTUMOR_MODEL_DIR to an exported model "
            "folder (see GET /health for the reason)",
        )
    return predictor


SettingsDep = Annotated[Settings, Depends(_from_state("settings"))]
StorageDep = Annotated[Storage, Depends(_from_state("storage"))]
SecurityDep = Annotated[Security, Depends(_from_state("security"))]
GuardDep = Annotated[LoginGuard, Depends(_from_state("guard"))]
AuditDep = Annotated[AuditLog, Depends(_from_state("audit"))]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]


def get_current_user(request: Request, token: TokenDep, storage: StorageDep, security: SecurityDep) -> UserRecord:
    """The user of a valid, unexpired, unrevoked bearer token, else 401."""
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not signed in", headers=_UNAUTHORIZED)
    try:
        claims = security.decode_token(token)
    except jwt.InvalidTokenError:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token", headers=_UNAUTHORIZED) from None
    user = storage.get_user_by_id(str(claims["sub"]))
    if user is None or user.token_version != claims["tv"]:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token", headers=_UNAUTHORIZED)
    if storage.is_token_revoked(str(claims.get("jti", ""))):  # signed out
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token", headers=_UNAUTHORIZED)
    request.state.username = user.username
    request.state.token_claims = claims
    return user


CurrentUser = Annotated[UserRecord, Depends(get_current_user)]


def get_admin(user: CurrentUser) -> UserRecord:
    """The current user if an admin, else 403."""
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrators only")
    return user


AdminUser = Annotated[UserRecord, Depends(get_admin)]


def client_address(request: Request) -> str:
    """The peer address used for rate limits and lockouts: the TCP peer, or the address a configured proxy
    reported (``BRAINTUMOR_TRUSTED_PROXIES``, resolved by :class:`~braintumor.api.app.TrustedProxyMiddleware`)."""
    return request.client.host if request.client else "unknown"


class PageQuery(BaseModel):
    """``page`` and ``page_size`` of a counted listing (the history, the admin's user list): what the storage is
    asked for, and the counts every such page answers with (:data:`Paging`)."""

    model_config = ConfigDict(frozen=True)
    page: int = Field(default=1, ge=1, le=100_000)
    page_size: int = Field(default=20, ge=1, le=100)

    @property
    def offset(self) -> int:
        """How many rows come before this page."""
        return (self.page - 1) * self.page_size

    def counts(self, total: int) -> dict[str, int]:
        """The page's ``total``, ``page``, ``page_size`` and ``pages`` fields, for ``total`` rows in all."""
        return {
            "total": total,
            "page": self.page,
            "page_size": self.page_size,
            "pages": math.ceil(total / self.page_size),
        }


#: The two query parameters, in the place of the route's parameter list where this one stands.
Paging = Annotated[PageQuery, Query()]
#: Their defaults, for a ``Paging`` parameter after others that have one.
FIRST_PAGE = PageQuery()
