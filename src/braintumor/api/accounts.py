"""Account creation, in one place for the register route and ``braintumor admin create`` (the template's ``crud``).

Why shared: both must apply the same password policy, hash the password and a fresh recovery key the same way and
store them as one record; only who asks (a visitor, the operator) and the role differ. The caller hashes through
the path it owns — the API's bounded hashing slots, or the CLI's own hasher.

Example:
    >>> user, key = create_account(store, hasher.hash, "alice", "a long passphrase", min_length=10)  # doctest: +SKIP
    >>> user.role, len(key.split("-"))  # doctest: +SKIP
    ('user', 8)
"""

from __future__ import annotations

from collections.abc import Callable

from braintumor.api.security import check_password_policy, new_recovery_key
from braintumor.storage import NewUser, Role, Storage, UserRecord


def create_account(
    storage: Storage,
    hash_secret: Callable[[str], str],
    username: str,
    password: str,
    *,
    min_length: int,
    role: Role = "user",
) -> tuple[UserRecord, str]:
    """Store a new account and return it with its recovery key (to show once).

    Raises :class:`~braintumor.api.security.PolicyError` for a password the policy refuses and
    :class:`~braintumor.storage.UserExistsError` when the name is taken.
    """
    check_password_policy(password, username, min_length)
    key = new_recovery_key()
    user = storage.create_user(NewUser(username, hash_secret(password), hash_secret(key), role=role))
    return user, key
