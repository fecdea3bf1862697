"""The server-side commands: serve (secret handling), admin create, backup and restore."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from braintumor.cli import main

PASSWORD = "correct-horse-battery"
FAST_ENV = {
    "BRAINTUMOR_ARGON2_TIME_COST": "1",
    "BRAINTUMOR_ARGON2_MEMORY_KIB": "1024",
    "BRAINTUMOR_ARGON2_PARALLELISM": "1",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("BRAINTUMOR_SECRET_KEY", "BRAINTUMOR_ENV", "BRAINTUMOR_STORAGE", "BRAINTUMOR_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)


def test_serve_refuses_production_without_a_secret(tmp_path: Path) -> None:
    env = {**os.environ, "BRAINTUMOR_ENV": "production", "BRAINTUMOR_DATA_DIR": str(tmp_path)}
    env.pop("BRAINTUMOR_SECRET_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "braintumor: error: BRAINTUMOR_SECRET_KEY is required when BRAINTUMOR_ENV=production (no default exists)"
    ]
    assert not (tmp_path / "secret.key").exists()


def test_serve_reports_bad_settings_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "BRAINTUMOR_MAX_UPLOAD_MB": "-3", "BRAINTUMOR_SECRET_KEY": "hunter2hunter2"}
    proc = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "serve", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "braintumor: error: invalid setting BRAINTUMOR_" in proc.stderr and "hunter2" not in proc.stderr


def test_admin_create(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast_env: None
) -> None:
    data = tmp_path / "data"
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    code, out, err = run(capsys, "admin", "create", "--username", "Root", "--password-stdin", "--data-dir", data)
    assert code == 0, err
    assert "created admin root" in out and "recovery key" in out
    from braintumor.storage.sqlite import EmbeddedStorage

    store = EmbeddedStorage(data)
    user = store.get_user("root")
    assert user is not None and user.role == "admin" and PASSWORD not in user.password_hash
    store.close()

    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    code, _, err = run(capsys, "admin", "create", "--username", "other", "--password-stdin", "--data-dir", data)
    assert code == 2 and "at least 10 characters" in err and len(err.strip().splitlines()) == 1

    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = run(capsys, "admin", "create", "--username", "root", "--password-stdin", "--data-dir", data)
    assert code == 2 and "already exists" in err

    store = EmbeddedStorage(data)
    from braintumor.storage import NewUser

    store.create_user(NewUser("alice", "h", "r"))
    store.close()
    code, out, _ = run(
        capsys, "admin", "create", "--username", "alice", "--promote", "--confirm", "alice", "--data-dir", data
    )
    assert code == 0 and "alice is now an admin" in out
    assert '"action":"admin.create"' in (data / "audit.log").read_text()


def test_backup_and_restore_commands(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fast_env: None, make_api: Any, scan_png: bytes
) -> None:
    api = make_api()
    headers = api.user("alice")
    scan = api.scan(headers, scan_png)
    archive = tmp_path / "b.tar.gz"
    code, out, err = run(capsys, "backup", "--data-dir", api.settings.data_dir, "--out", archive)
    assert code == 0, err
    assert "1 users, 1 scans, 4 files" in out
    target = tmp_path / "restored"
    code, out, err = run(capsys, "restore", archive, "--data-dir", target)
    assert code == 0 and "checksum was verified" in out, err
    code, _, err = run(capsys, "restore", archive, "--data-dir", target)
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "backup", "--data-dir", tmp_path / "empty", "--out", tmp_path / "x.tar.gz")
    assert code == 2 and "no braintumor database" in err

    from braintumor.storage.sqlite import EmbeddedStorage

    store = EmbeddedStorage(target)
    rec = store.get_scan(scan["id"])
    assert rec is not None and store.check().ok
    found = store.get_file(scan["files"]["original"]["id"])
    assert found is not None and found[1] == scan_png
    store.close()


def _squat(data: Path) -> None:
    """An attacker registers 'admin' through the API before the operator runs admin create."""
    from fastapi.testclient import TestClient

    from braintumor.api import Settings, create_app

    settings = Settings(
        secret_key="nS4vB8qW1xZ6cR3tY9mK2pL7dH5gJ0fAeUoIiQtEwXr",
        data_dir=data,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
    )
    with TestClient(create_app(settings, predictor=None)) as client:
        assert client.post("/register", json={"username": "admin", "password": "attacker-owns-this"}).status_code == 201


def test_admin_create_never_promotes_a_squatted_name_silently(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast_env: None
) -> None:
    """Issue 13 item 7: 'admin create --username admin' suggested --promote, which handed admin to the account (and
    password) of whoever had registered 'admin' first."""
    from braintumor.storage.sqlite import EmbeddedStorage

    data = tmp_path / "data"
    _squat(data)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = run(capsys, "admin", "create", "--username", "admin", "--password-stdin", "--data-dir", data)
    assert code == 2 and "was not made by this command" in err and "registered " in err and "0 scan(s)" in err
    assert "may not be yours" in err

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, no --confirm
    code, _, err = run(capsys, "admin", "create", "--username", "admin", "--promote", "--data-dir", data)
    assert code == 2 and "without confirmation" in err and "There is no administrator yet" in err

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda _prompt: "yes")  # a terminal, but not the account's name
    code, _, err = run(capsys, "admin", "create", "--username", "admin", "--promote", "--data-dir", data)
    assert code == 2 and "not confirmed" in err
    code, _, err = run(
        capsys, "admin", "create", "--username", "admin", "--promote", "--confirm", "root", "--data-dir", data
    )
    assert code == 2 and "does not name the account" in err

    store = EmbeddedStorage(data)
    user = store.get_user("admin")
    assert user is not None and user.role == "user" and store.count_admins() == 0
    store.close()

    monkeypatch.setattr("builtins.input", lambda _prompt: "Admin")  # typed the name: a deliberate promotion
    code, out, err = run(capsys, "admin", "create", "--username", "admin", "--promote", "--data-dir", data)
    assert code == 0 and "admin is now an admin" in out and "registered " in err


def test_serve_ignores_forwarded_for_from_loopback(tmp_path: Path) -> None:
    """Issue 13 item 8: uvicorn believed X-Forwarded-For from 127.0.0.1, so rotating it dodged the rate limit."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BRAINTUMOR_")},
        **FAST_ENV,
        "BRAINTUMOR_AUTH_RATE_PER_MINUTE": "3",
        "BRAINTUMOR_MODEL_DIR": str(tmp_path / "no-model"),
    }
    log = (tmp_path / "server.log").open("wb")
    cmd = [sys.executable, "-m", "braintumor.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
        codes = [
            httpx.post(
                url + "/token", data={"username": "a", "password": "b"}, headers={"X-Forwarded-For": f"10.1.1.{i}"}
            ).status_code
            for i in range(5)
        ]
        assert codes == [401, 401, 401, 429, 429]
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_admin_create_with_a_piped_password(tmp_path: Path, fast_env: None) -> None:
    """Issue 14 item 4: piping works with --password-stdin (no GetPassWarning, no prompt eating the password); piping
    without it is a one-line error instead of an echoed prompt."""
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "braintumor.cli", "admin", "create", "--data-dir", str(data)]
    env = {**os.environ, **FAST_ENV}
    piped = subprocess.run([*cmd, "--password-stdin"], input=PASSWORD + "\n", env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "created admin admin" in piped.stdout and "Warning" not in piped.stderr and PASSWORD not in piped.stdout
    without = subprocess.run([*cmd, "--username", "second"], input=PASSWORD + "\n", env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert without.returncode == 2 and "--password-stdin" in without.stderr
    assert len(without.stderr.strip().splitlines()) == 1 and "Warning" not in without.stderr
    empty = subprocess.run([*cmd, "--username", "third", "--password-stdin"], input="", env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert empty.returncode == 2 and "empty" in empty.stderr
