"""Accounts: register (with a recovery key), sign in and out, change or reset a password, delete the account.

Why it looks like this: no user enumeration (sign-in and reset answer the same for an unknown user and a wrong
secret, after the same amount of hashing work, through the same bounded hashing slots), attempt limits per client
and per (account, client) so nobody can lock an owner out from elsewhere (see :class:`LoginGuard`), a warning one
attempt before a lock, and every password change revokes the tokens issued before it. ``POST /logout`` revokes
the token it is called with (or every token of the account). In production self-registration opens only once an
administrator exists, so nobody can squat the name ``admin`` before the operator. The audit log never records a
name that is not an account (someone may have typed a password there), only its keyed hash.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from braintumor.api.accounts import create_account
from braintumor.api.config import Settings
from braintumor.api.deps import (
    AuditDep,
    CurrentUser,
    GuardDep,
    SecurityDep,
    SettingsDep,
    StorageDep,
    client_address,
)
from braintumor.api.logs import AuditLog
from braintumor.api.schemas import (
    PasswordChange,
    PasswordConfirm,
    PasswordReset,
    RecoveryKeyIssued,
    Registered,
    Token,
    UserCreate,
    UserPublic,
)
from braintumor.api.security import (
    LoginGuard,
    Security,
    check_password_policy,
    new_recovery_key,
    normalise_recovery_key,
)
from braintumor.storage import LastAdminError, Storage, UserExistsError, UserRecord, normalise_username

router = APIRouter(tags=["accounts"])


def public(user: UserRecord) -> UserPublic:
    return UserPublic(username=user.username, role=user.role, created_at=user.created_at)


def _refuse_if_locked(guard: LoginGuard, username: str, client: str) -> None:
    wait = guard.locked_for(username, client)
    if wait:
        when = _duration(wait)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed attempts for this account; try again in {when}",
            headers={"Retry-After": str(int(wait) + 1)},
        )


def _duration(seconds: float) -> str:
    """A wait as people say it: ``about 15 minutes``, ``1 minute``, ``40 seconds``.

    >>> _duration(899), _duration(61), _duration(39.2)
    ('about 15 minutes', 'about 1 minute', '40 seconds')
    """
    if seconds >= 60:
        minutes = max(1, round(seconds / 60))
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    whole = int(seconds) + 1
    return f"{whole} second{'s' if whole != 1 else ''}"


def _failed(guard: LoginGuard, username: str, client: str, reason: str) -> str:
    """Count a failure and say, one attempt before it, that the next one locks this account from this address."""
    left = guard.failure(username, client)
    minutes = _duration(guard.lockout_s).removeprefix("about ")
    if left == 1:
        return f"{reason}; one more failed attempt locks sign-in to this account from your address for {minutes}"
    if left == 0:
        return f"{reason}; sign-in to this account from your address is now locked for {minutes}"
    return reason


@dataclass(frozen=True)
class Desk:
    """What the account routes work with: the caller's address, the settings, the storage, the password hashing,
    the sign-in guard and the audit log (a dependency: :data:`DeskDep`). The signed-out routes (register, sign-in,
    reset) begin with :meth:`throttle`."""

    client: str
    settings: Settings
    storage: Storage
    security: Security
    guard: LoginGuard
    audit: AuditLog

    def throttle(self) -> None:
        """Count this request against its address's rate; 429 past it."""
        wait = self.guard.hit(self.client)
        if wait:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "too many requests from this address; try again shortly",
                headers={"Retry-After": str(int(wait) + 1)},
            )


def _desk(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    security: SecurityDep,
    guard: GuardDep,
    audit: AuditDep,
) -> Desk:
    return Desk(client_address(request), settings, storage, security, guard, audit)


DeskDep = Annotated[Desk, Depends(_desk)]


@dataclass(frozen=True)
class PasswordCheck:
    """A signed-in user re-entering the password before a sensitive change: the same locks and warnings as sign-in
    (a dependency: :data:`PasswordCheckDep`)."""

    user: UserRecord
    desk: Desk

    def confirm(self, password: str, action: str, reason: str) -> None:
        """Go on only when ``password`` is the account's; else count the failure, audit ``action``, answer 400."""
        name, desk = self.user.username, self.desk
        _refuse_if_locked(desk.guard, name, desk.client)
        ok, _ = desk.security.verify_password(password, self.user.password_hash)
        if not ok:
            detail = _failed(desk.guard, name, desk.client, reason)
            desk.audit.record(action, actor=name, outcome="failed")
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail)


def _password_check(user: CurrentUser, desk: DeskDep) -> PasswordCheck:
    return PasswordCheck(user, desk)


PasswordCheckDep = Annotated[PasswordCheck, Depends(_password_check)]


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=Registered)
def register(body: UserCreate, desk: DeskDep) -> Registered:
    """Create an account. The response holds a recovery key, shown once: keep it to reset a forgotten password."""
    desk.throttle()
    settings, storage = desk.settings, desk.storage
    if not settings.allow_registration:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "self-registration is disabled on this server")
    if not settings.registration_before_admin and storage.count_admins() == 0:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "registration opens once the server has an administrator (the operator runs 'braintumor admin create')",
        )
    try:
        user, key = create_account(
            storage, desk.security.hash_password, body.username, body.password, min_length=settings.password_min_length
        )
    except UserExistsError:
        desk.audit.record("account.register", actor=body.username, outcome="exists")
        raise HTTPException(status.HTTP_409_CONFLICT, "this username is taken") from None
    desk.audit.record("account.register", actor=user.username, target=user.username)
    return Registered(user=public(user), recovery_key=key)


@router.post("/token", response_model=Token)
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], desk: DeskDep) -> Token:
    """OAuth2 password flow: a bearer token for a username and password."""
    desk.throttle()
    client, storage, security, guard = desk.client, desk.storage, desk.security, desk.guard
    name = normalise_username(form.username)[:64]
    _refuse_if_locked(guard, name, client)
    user = storage.get_user(name)
    ok, new_hash = security.verify_password(form.password, user.password_hash if user else None)
    if user is None or not ok:
        detail = _failed(guard, name, client, "incorrect username or password")
        desk.audit.record("account.login", actor=security.audit_name(name, user is not None), outcome="failed")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
    guard.success(name, client)
    if new_hash:  # parameters were raised since this hash was made
        user = storage.update_credentials(user.id, password_hash=new_hash)
    token, lifetime = security.create_token(user.id, user.token_version)
    desk.audit.record("account.login", actor=user.username)
    return Token(access_token=token, expires_in=lifetime)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def logout(
    request: Request,
    user: CurrentUser,
    storage: StorageDep,
    audit: AuditDep,
    everywhere: Annotated[bool, Query(description="revoke every token of this account, not only this one")] = False,
) -> Response:
    """Sign out: this token stops working at once (``everywhere=true``: every token issued to the account)."""
    claims = request.state.token_claims
    if everywhere:
        storage.update_credentials(user.id, bump_token_version=True)
    else:
        storage.revoke_token(str(claims["jti"]), dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC))
    audit.record("account.logout", actor=user.username, everywhere=everywhere)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    """The signed-in account."""
    return public(user)


@router.post("/change-password", response_model=Token)
def change_password(body: PasswordChange, check: PasswordCheckDep) -> Token:
    """Change the password (the current one is required). Older tokens stop working; use the one returned."""
    check.confirm(body.current_password, "account.change_password", "the current password is not correct")
    user, desk = check.user, check.desk
    check_password_policy(body.new_password, user.username, desk.settings.password_min_length)
    updated = desk.storage.update_credentials(
        user.id, password_hash=desk.security.hash_password(body.new_password), bump_token_version=True
    )
    desk.audit.record("account.change_password", actor=user.username)
    token, lifetime = desk.security.create_token(updated.id, updated.token_version)
    return Token(access_token=token, expires_in=lifetime)


@router.post("/reset-password", response_model=RecoveryKeyIssued)
def reset_password(body: PasswordReset, desk: DeskDep) -> RecoveryKeyIssued:
    """Set a new password with the recovery key. Answers the same for an unknown user and a wrong key; on
    success returns a new recovery key (the one used is spent), revokes older tokens and clears the account's
    sign-in locks. Never locked by failed sign-ins: a valid key always resets (160 random bits cannot be guessed;
    the per-address rate limit bounds the cost of trying)."""
    desk.throttle()
    storage, security = desk.storage, desk.security
    name = normalise_username(body.username)[:64]
    user = storage.get_user(name)
    ok, _ = security.verify_password(normalise_recovery_key(body.recovery_key), user.recovery_hash if user else None)
    if user is None or not ok:
        audit_name = security.audit_name(name, user is not None)
        desk.audit.record("account.reset_password", actor=audit_name, outcome="failed")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid username or recovery key")
    check_password_policy(body.new_password, user.username, desk.settings.password_min_length)
    desk.guard.success(name)
    key = new_recovery_key()
    storage.update_credentials(
        user.id,
        password_hash=security.hash_password(body.new_password),
        recovery_hash=security.hash_password(key),
        bump_token_version=True,
    )
    desk.audit.record("account.reset_password", actor=user.username)
    return RecoveryKeyIssued(recovery_key=key, detail="password changed; sign in again with the new password")


@router.delete("/users/me", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_me(body: PasswordConfirm, check: PasswordCheckDep) -> Response:
    """Delete the account with all of its scans and files (the password is required)."""
    check.confirm(body.password, "account.delete", "the password is not correct")
    user = check.user
    try:
        check.desk.storage.delete_user(user.username)
    except LastAdminError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "you are the last administrator: promote someone else first"
        ) from None
    check.desk.audit.record("account.delete", actor=user.username, target=user.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
