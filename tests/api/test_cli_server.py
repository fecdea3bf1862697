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
    code, out, _ = run(capsys, "admin", "create", "--username", "alice", "--promote", "--data-dir", data)
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
