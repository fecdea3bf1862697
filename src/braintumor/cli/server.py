"""``braintumor serve``, ``admin``, ``backup`` and ``restore``: the API server and its operator commands.

Settings come from ``BRAINTUMOR_*`` variables, read when a command runs (a bad value is a one-line error), then
the command's flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from braintumor.cli.common import DATA_DIR, HOST, PORT, add_model_flag, command, group
from braintumor.errors import BrainTumorError


def _server_settings(args: argparse.Namespace) -> Any:
    """Settings from BRAINTUMOR_* variables, overridden by the command's flags."""
    from pydantic import ValidationError

    from braintumor.api.config import ConfigError, Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "model", None) is not None:
        overrides["model_dir"] = args.model
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "BRAINTUMOR_" + "_".join(str(p) for p in first.get("loc", ())).upper()
        raise ConfigError(f"invalid setting {name}: {first.get('msg', 'invalid value')}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    """start the web API (FastAPI + uvicorn)

    Start the API. Settings come from BRAINTUMOR_* variables (see the README); in development a signing secret is
    generated on first start and kept in DATA_DIR/secret.key (mode 0600); with BRAINTUMOR_ENV=production
    BRAINTUMOR_SECRET_KEY is required.
    """
    import uvicorn

    from braintumor.api.app import create_app
    from braintumor.api.config import ensure_secret
    from braintumor.api.logs import configure_logging

    host, port = HOST.value(args.host), PORT.value(args.port)
    settings = _server_settings(args)
    configure_logging(settings.log_level)
    settings = ensure_secret(settings)
    app = create_app(settings)
    where = settings.data_dir if settings.storage == "embedded" else "MongoDB"
    docs = "docs at /docs" if settings.docs_enabled else "docs off"
    print(f"braintumor API on http://{host}:{port} ({docs}; storage: {where})", file=sys.stderr)
    # X-Forwarded-For is resolved by the app, from BRAINTUMOR_TRUSTED_PROXIES only (uvicorn trusts loopback).
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return 0


def _cmd_admin_create(args: argparse.Namespace) -> int:
    """create an admin account (the first one, typically)

    Create an admin. The password is read from the terminal (twice, not echoed), or from the first line of stdin
    with --password-stdin (for scripts: echo "$PW" | braintumor admin create --username NAME --password-stdin);
    without a terminal and without --password-stdin it stops rather than read a password that would be echoed. A
    recovery key is printed once.
    """
    import getpass

    from braintumor.api.accounts import create_account
    from braintumor.api.app import open_configured_storage
    from braintumor.api.logs import AuditLog
    from braintumor.api.security import PolicyError, password_hasher
    from braintumor.storage import UserExistsError, normalise_username

    settings = _server_settings(args)
    interactive = sys.stdin.isatty()
    if not args.password_stdin and not args.promote and not interactive:
        raise BrainTumorError(
            "no terminal to ask the password on: pipe it with --password-stdin (and give --username), "
            'e.g. echo "$PASSWORD" | braintumor admin create --username admin --password-stdin'
        )
    asked = None if args.password_stdin or not interactive else input("admin username [admin]: ")
    username = normalise_username(args.username or asked or "admin")
    storage = open_configured_storage(settings)
    try:
        existing = storage.get_user(username)
        if existing is not None:
            if existing.role == "admin":
                raise BrainTumorError(f"user {username!r} already exists and is an admin")
            owner = _describe_account(storage, existing)
            if not args.promote:
                raise BrainTumorError(
                    f"user {username!r} already exists and was not made by this command ({owner}); it may not be "
                    "yours: choose another --username, or review it with --promote"
                )
            _confirm_promotion(username, owner, storage.count_admins(), args.confirm)
            storage.set_role(username, "admin")
            AuditLog(settings.audit_log_path).record("admin.promote", actor="cli", target=username)
            print(f"{username} is now an admin")
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise BrainTumorError("--password-stdin: the first line of stdin is empty")
        else:
            password = getpass.getpass(f"password for {username}: ")
            if getpass.getpass("repeat the password: ") != password:
                raise BrainTumorError("the passwords differ")
        try:
            _, key = create_account(storage, password_hasher(settings).hash, username, password,
                                    min_length=settings.password_min_length, role="admin")  # fmt: skip
        except PolicyError as exc:
            raise BrainTumorError(str(exc)) from None
        except UserExistsError:
            raise BrainTumorError(f"user {username!r} already exists") from None
        AuditLog(settings.audit_log_path).record("admin.create", actor="cli", target=username)
    finally:
        storage.close()
    print(f"created admin {username}")
    print(f"recovery key (shown once; store it safely): {key}")
    return 0


def _describe_account(storage: Any, user: Any) -> str:
    """Who owns an existing account, as far as the server knows: when it was registered and what it holds."""
    scans = next((s.scans for s in storage.list_users(user.username, 0, 100).items if s.user.id == user.id), 0)
    return f"registered {user.created_at:%Y-%m-%d %H:%M} UTC through the API, role {user.role}, {scans} scan(s)"


def _confirm_promotion(username: str, owner: str, admins: int, confirm: str | None) -> None:
    """Promoting hands admin to whoever knows that account's password: show the account, then ask."""
    print(f"account {username!r}: {owner}.", file=sys.stderr)
    print(
        "Promoting gives administrator rights to whoever holds this account's password and recovery key.",
        file=sys.stderr,
    )
    if admins == 0:
        print(
            "There is no administrator yet: if you did not register this account yourself, someone else may have "
            "registered the name to be promoted; create your admin under another name instead.",
            file=sys.stderr,
        )
    if confirm is not None:
        if normalise_confirm(confirm) != username:
            raise BrainTumorError(f"--confirm {confirm!r} does not name the account {username!r}; nothing changed")
        return
    if not sys.stdin.isatty():
        raise BrainTumorError(
            f"not promoting {username!r} without confirmation: run in a terminal, or add --confirm {username}"
        )
    answer = input(f"type the account name ({username}) to make it an admin, anything else to stop: ")
    if normalise_confirm(answer) != username:
        raise BrainTumorError(f"not confirmed; {username!r} was not promoted")


def normalise_confirm(text: str) -> str:
    """Account names compare case-insensitively, as everywhere."""
    return text.strip().lower()


def _cmd_backup(args: argparse.Namespace) -> int:
    """archive the embedded store (database + files) to a .tar.gz

    Consistent backup of the embedded backend while the server runs (writers wait meanwhile). The signing secret
    is not included.
    """
    from braintumor.storage.backup import backup
    from braintumor.storage.database import DB_NAME
    from braintumor.storage.sqlite import EmbeddedStorage

    if not (Path(args.data_dir) / DB_NAME).is_file():
        raise BrainTumorError(f"no braintumor database in {args.data_dir} (backup covers the embedded backend)")
    store = EmbeddedStorage(args.data_dir)
    try:
        manifest = backup(store, args.out)
    finally:
        store.close()
    print(f"wrote {args.out}: {manifest['users']} users, {manifest['scans']} scans, {manifest['blobs']} files")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    """restore a backup into a data directory (checksums verified)"""
    from braintumor.storage.backup import restore

    manifest = restore(args.archive, args.data_dir, force=args.force)
    print(
        f"restored {manifest['users']} users, {manifest['scans']} scans, {manifest['blobs']} files into "
        f"{args.data_dir} (backup of {manifest['created_at']}); every file's checksum was verified"
    )
    return 0


def add_parser(sub: Any) -> None:
    serve = command(sub, "serve", _cmd_serve)
    HOST.add_to(serve, "--host")
    PORT.add_to(serve, "--port")
    DATA_DIR.add_to(serve, "--data-dir")
    add_model_flag(serve)

    admin = group(sub, "admin", "administer accounts from the command line")
    create = command(admin, "create", _cmd_admin_create)
    create.add_argument("--username", help="account name (asked on a terminal when missing; default admin)")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin (scripts)"
    )
    create.add_argument(
        "--promote",
        action="store_true",
        help="if the account exists, show who registered it and ask before making it an admin",
    )
    create.add_argument(
        "--confirm",
        metavar="USERNAME",
        help="with --promote and no terminal: the account name again, to confirm the promotion",
    )
    DATA_DIR.add_to(create, "--data-dir")

    backup = command(sub, "backup", _cmd_backup)
    backup.add_argument("--data-dir", type=Path, required=True)
    backup.add_argument("--out", type=Path, required=True, metavar="FILE.tar.gz")

    restore = command(sub, "restore", _cmd_restore)
    restore.add_argument("archive", type=Path, metavar="FILE")
    restore.add_argument("--data-dir", type=Path, required=True)
    restore.add_argument("--force", action="store_true", help="replace an existing database")
