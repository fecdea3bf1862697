"""Accounts: register (with a recovery key), sign in, change or reset a password, delete the account.

Why it looks like this: no user enumeration (sign-in and reset answer the same for an unknown user and a wrong
secret, after the same amount of hashing work), attempt limits per client and per username, and every password
change revokes the tokens issued before it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from braintumor.api.deps import (
    AuditDep,
    CurrentUser,
    GuardDep,
    SecurityDep,
    SettingsDep,
    StorageDep,
    client_address,
)
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
from braintumor.api.security import LoginGuard, check_password_policy, new_recovery_key, normalise_recovery_key
from braintumor.storage import LastAdminError, NewUser, UserExistsError, UserRecord, normalise_username

router = APIRouter(tags=["accounts"])


def public(user: UserRecord) -> UserPublic:
    return UserPublic(username=user.username, role=user.role, created_at=user.created_at)


def _throttle(guard: LoginGuard, request: Request) -> None:
    wait = guard.hit(client_address(request))
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many requests from this address; try again shortly",
            headers={"Retry-After": str(int(wait) + 1)},
        )


def _refuse_if_locked(guard: LoginGuard, username: str) -> None:
    wait = guard.locked_for(username)
    if wait:
        minutes = max(1, round(wait / 60))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed attempts for this account; try again in about {minutes} minute(s)",
            headers={"Retry-After": str(int(wait) + 1)},
        )


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=Registered)
def register(
    body: UserCreate,
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    security: SecurityDep,
    guard: GuardDep,
    audit: AuditDep,
) -> Registered:
    """Create an account. The response holds a recovery key, shown once: keep it to reset a forgotten password."""
    _throttle(guard, request)
    if not settings.allow_registration:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "self-registration is disabled on this server")
    check_password_policy(body.password, body.username, settings.password_min_length)
    key = new_recovery_key()
    try:
        user = storage.create_user(
            NewUser(body.username, security.hash_password(body.password), security.hash_password(key))
        )
    except UserExistsError:
        audit.record("account.register", actor=body.username, outcome="exists")
        raise HTTPException(status.HTTP_409_CONFLICT, "this username is taken") from None
    audit.record("account.register", actor=user.username, target=user.username)
    return Registered(user=public(user), recovery_key=key)


@router.post("/token", response_model=Token)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    storage: StorageDep,
    security: SecurityDep,
    guard: GuardDep,
    audit: AuditDep,
) -> Token:
    """OAuth2 password flow: a bearer token for a username and password."""
    _throttle(guard, request)
    name = normalise_username(form.username)[:64]
    _refuse_if_locked(guard, name)
    user = storage.get_user(name)
    ok, new_hash = security.verify_password(form.password, user.password_hash if user else None)
    if user is None or not ok:
        guard.failure(name)
        audit.record("account.login", actor=name, outcome="failed")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "incorrect username or password", headers={"WWW-Authenticate": "Bearer"}
        )
    guard.success(name)
    if new_hash:  # parameters were raised since this hash was made
        user = storage.update_credentials(user.id, password_hash=new_hash)
    token, lifetime = security.create_token(user.id, user.token_version)
    audit.record("account.login", actor=user.username)
    return Token(access_token=token, expires_in=lifetime)


@router.get("/users/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    """The signed-in account."""
    return public(user)


@router.post("/change-password", response_model=Token)
def change_password(
    body: PasswordChange,
    user: CurrentUser,
    settings: SettingsDep,
    storage: StorageDep,
    security: SecurityDep,
    guard: GuardDep,
    audit: AuditDep,
) -> Token:
    """Change the password (the current one is required). Older tokens stop working; use the one returned."""
    _refuse_if_locked(guard, user.username)
    ok, _ = security.verify_password(body.current_password, user.password_hash)
    if not ok:
        guard.failure(user.username)
        audit.record("account.change_password", actor=user.username, outcome="failed")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the current password is not correct")
    check_password_policy(body.new_password, user.username, settings.password_min_length)
    updated = storage.update_credentials(
        user.id, password_hash=security.hash_password(body.new_password), bump_token_version=True
    )
    audit.record("account.change_password", actor=user.username)
    token, lifetime = security.create_token(updated.id, updated.token_version)
    return Token(access_token=token, expires_in=lifetime)


@router.post("/reset-password", response_model=RecoveryKeyIssued)
def reset_password(
    body: PasswordReset,
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    security: SecurityDep,
    guard: GuardDep,
    audit: AuditDep,
) -> RecoveryKeyIssued:
    """Set a new password with the recovery key. Answers the same for an unknown user and a wrong key; on
    success returns a new recovery key (the one used is spent) and revokes older tokens."""
    _throttle(guard, request)
    name = normalise_username(body.username)[:64]
    _refuse_if_locked(guard, name)
    user = storage.get_user(name)
    ok, _ = security.verify_password(normalise_recovery_key(body.recovery_key), user.recovery_hash if user else None)
    if user is None or not ok:
        guard.failure(name)
        audit.record("account.reset_password", actor=name, outcome="failed")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid username or recovery key")
    check_password_policy(body.new_password, user.username, settings.password_min_length)
    guard.success(name)
    key = new_recovery_key()
    storage.update_credentials(
        user.id,
        password_hash=security.hash_password(body.new_password),
        recovery_hash=security.hash_password(key),
        bump_token_version=True,
    )
    audit.record("account.reset_password", actor=user.username)
    return RecoveryKeyIssued(recovery_key=key, detail="password changed; sign in again with the new password")


@router.delete("/users/me", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_me(
    body: PasswordConfirm,
    user: CurrentUser,
    storage: StorageDep,
    security: SecurityDep,
    guard: GuardDep,
    audit: AuditDep,
) -> Response:
    """Delete the account with all of its scans and files (the password is required)."""
    _refuse_if_locked(guard, user.username)
    ok, _ = security.verify_password(body.password, user.password_hash)
    if not ok:
        guard.failure(user.username)
        audit.record("account.delete", actor=user.username, outcome="failed")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the password is not correct")
    try:
        storage.delete_user(user.username)
    except LastAdminError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "you are the last administrator: promote someone else first"
        ) from None
    audit.record("account.delete", actor=user.username, target=user.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
