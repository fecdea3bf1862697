"""Administration: statistics, the user list, roles, account deletion, and sign-in locks.

Why these rules: an admin cannot demote or delete themselves here (no accidental lock-out; self-deletion goes
through ``DELETE /users/me`` with a password), and the storage refuses any change that would leave zero admins
(also under concurrent requests). Admins see aggregate numbers, not other users' scans. They see every running
sign-in lock and back-off and can clear an account's (a user locked out by someone else's guesses); names that
are not accounts are shown as keyed hashes only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi import Path as PathParam

from braintumor.api.deps import FIRST_PAGE, AdminUser, AuditDep, GuardDep, Paging, SecurityDep, StorageDep
from braintumor.api.schemas import (
    DayCount,
    LockPublic,
    LocksCleared,
    RoleUpdate,
    StatsPublic,
    UserAdminView,
    UserPage,
    UserPublic,
    UserScans,
    with_rows,
)
from braintumor.storage import UserNotFoundError, normalise_username

router = APIRouter(prefix="/admin", tags=["admin"])
Username = Annotated[str, PathParam(max_length=64)]


@router.get("/stats", response_model=StatsPublic)
def stats(
    admin: AdminUser, storage: StorageDep, audit: AuditDep, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> StatsPublic:
    """Users, scans, scans per user, the outcome mix, and scans per day over the last ``days`` days."""
    s = storage.stats(days)
    audit.record("admin.stats", actor=admin.username)
    return StatsPublic(**with_rows(s, scans_per_user=UserScans, per_day=DayCount))


@router.get("/users", response_model=UserPage)
def users(
    admin: AdminUser,
    storage: StorageDep,
    audit: AuditDep,
    q: Annotated[str | None, Query(max_length=64, description="plain-text username search")] = None,
    paging: Paging = FIRST_PAGE,
) -> UserPage:
    """Accounts by name, with their number of scans."""
    result = storage.list_users(q or None, paging.offset, paging.page_size)
    audit.record("admin.users", actor=admin.username)
    items = [
        UserAdminView(username=s.user.username, role=s.user.role, created_at=s.user.created_at, scans=s.scans)
        for s in result.items
    ]
    return UserPage(items=items, **paging.counts(result.total))


@router.put("/users/{username}/role", response_model=UserPublic)
def set_role(
    username: Username, body: RoleUpdate, admin: AdminUser, storage: StorageDep, audit: AuditDep
) -> UserPublic:
    """Make a user an admin or a plain user (not yourself; never zero admins)."""
    name = normalise_username(username)
    if name == admin.username and body.role != "admin":
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot demote yourself; ask another admin")
    try:
        user = storage.set_role(name, body.role)
    except UserNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found") from None
    audit.record("admin.set_role", actor=admin.username, target=user.username, role=body.role)
    return UserPublic(username=user.username, role=user.role, created_at=user.created_at)


@router.delete("/users/{username}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_user(username: Username, admin: AdminUser, storage: StorageDep, audit: AuditDep) -> Response:
    """Delete an account with all of its scans and files."""
    name = normalise_username(username)
    if name == admin.username:
        raise HTTPException(status.HTTP_409_CONFLICT, "use DELETE /users/me to delete your own account")
    if not storage.delete_user(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
    audit.record("admin.delete_user", actor=admin.username, target=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/locks", response_model=list[LockPublic])
def locks(
    admin: AdminUser, storage: StorageDep, security: SecurityDep, guard: GuardDep, audit: AuditDep
) -> list[LockPublic]:
    """Running sign-in locks (per account and address) and account back-offs, longest first."""
    known: dict[str, bool] = {}
    out = []
    for lock in guard.locks():
        if lock.username not in known:
            known[lock.username] = storage.get_user(lock.username) is not None
        out.append(
            LockPublic(
                username=security.audit_name(lock.username, known[lock.username]),
                client=lock.client,
                scope="client" if lock.client is not None else "account",
                failures=lock.failures,
                locked_for_s=round(lock.locked_for_s, 1),
            )
        )
    audit.record("admin.locks", actor=admin.username)
    return out


@router.delete("/locks/{username}", response_model=LocksCleared)
def clear_locks(username: Username, admin: AdminUser, guard: GuardDep, audit: AuditDep) -> LocksCleared:
    """Clear every sign-in lock and back-off of an account (from all addresses)."""
    name = normalise_username(username)
    cleared = guard.clear(name)
    audit.record("admin.clear_locks", actor=admin.username, target=name, cleared=cleared)
    return LocksCleared(username=name, cleared=cleared)
