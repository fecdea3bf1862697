"""Deployment: the compose stack validates, images keep secrets out, and `make run` works from a fresh clone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .missing import missing
from .servers import free_port

REPO = Path(__file__).resolve().parents[1]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (the CI script installs it with apt-get)"
        missing(reason)
    return path


def test_compose_file_validates(tmp_path: Path) -> None:
    compose = _need("docker-compose")
    shutil.copy(REPO / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    shutil.copy(REPO / "deploy" / "env.example", tmp_path / ".env")
    proc = subprocess.run([compose, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / ".env").unlink()
    proc = subprocess.run([compose, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode != 0  # no .env: no secrets, no stack


def test_stack_keeps_mongo_private_and_secrets_out_of_images() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    mongo = text.split("  mongo:")[1].split("\n  api:")[0]
    assert "ports:" not in mongo.replace('# no "ports:"', "")
    assert "MONGO_INITDB_ROOT_PASSWORD" in mongo and "volumes:" in mongo and "healthcheck:" in mongo
    for name in ("Dockerfile.api", "Dockerfile.ui"):
        dockerfile = (REPO / "deploy" / name).read_text()
        assert "SECRET_KEY=" not in dockerfile and "HEALTHCHECK" in dockerfile
    assert "pip install '.[serve]'" in (REPO / "deploy" / "Dockerfile.api").read_text()
    assert "pip install '.[ui]'" in (REPO / "deploy" / "Dockerfile.ui").read_text()
    assert "-e '.[serve,ui]'" in (REPO / "Makefile").read_text()  # the same extras as the images
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".env", ".git", ".venv"} <= set(ignored)


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"make run exited early with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout:.0f} s")


def _post(url: str, data: bytes, headers: dict[str, str]) -> dict[str, object]:
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


@pytest.mark.integration
@pytest.mark.slow
def test_make_run_from_a_fresh_clone(tmp_path: Path, shared_data: Path) -> None:
    """Clone, `make run`, wait for /health and the UI, one real prediction through the API, Ctrl-C."""
    _need("git")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    (clone.parent / "shared").symlink_to(shared_data.parent)  # ../shared beside the clone, as in CI
    api_port, ui_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BRAINTUMOR_")},
        "BRAINTUMOR_PORT": str(api_port),
        "BRAINTUMOR_UI_PORT": str(ui_port),
        "BRAINTUMOR_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{api_port}/health", proc, 600)
        _wait(f"http://127.0.0.1:{ui_port}/_stcore/health", proc, 120)
        api = f"http://127.0.0.1:{api_port}"
        _post(f"{api}/register", json.dumps({"username": "clinician1", "password": "Correct-horse-42!"}).encode(),
              {"Content-Type": "application/json"})  # fmt: skip
        token = _post(f"{api}/token", b"username=clinician1&password=Correct-horse-42%21",
                      {"Content-Type": "application/x-www-form-urlencoded"})["access_token"]  # fmt: skip
        scan = next((shared_data / "brain_tumor_dataset" / "yes").iterdir())
        boundary = "----braintumor"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{scan.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + scan.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
        result = _post(f"{api}/predict", body, headers)
        assert json.dumps(result)
        # the README's admin command, as written, beside the running app (issue 14 item 4)
        admin = subprocess.run(
            ["bash", "-c", "printf '%s\\n' \"$PASSWORD\" | make admin ARGS=\"--username admin --password-stdin\""],
            cwd=clone, env={**env, "PASSWORD": "Correct-mare-77!"}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert admin.returncode == 0 and "created admin admin" in admin.stdout, admin.stdout + admin.stderr
        assert "GetPassWarning" not in admin.stderr and "Correct-mare" not in admin.stdout + admin.stderr
        admin_token = _post(f"{api}/token", b"username=admin&password=Correct-mare-77%21",
                            {"Content-Type": "application/x-www-form-urlencoded"})["access_token"]  # fmt: skip
        assert admin_token
        assert (tmp_path / "data" / "secret.key").is_file()
        assert oct((tmp_path / "data" / "secret.key").stat().st_mode & 0o777) == "0o600"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # make re-raises the interrupt (−SIGINT) or reports the interrupted recipe; the app itself exits 0
    assert proc.returncode in (0, 2, 130, -signal.SIGINT)
    for port in (api_port, ui_port):  # both services stopped with it
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_make_test_checks_the_system_tools_it_needs(tmp_path: Path) -> None:
    """Without Chromium or pdftotext and no way to install them, `make test` stops at once and names the command
    (issue 14 item 5); as root with apt-get it installs them (what CI and fresh containers get)."""
    make = _need("make")
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "id").symlink_to(shutil.which("id") or "/usr/bin/id")  # no apt-get, no chromium on this PATH
    proc = subprocess.run(
        [make, "-s", "-C", str(REPO), "system-tools", "SYSTEM_TOOLS=no-such-browser:no-such-package"],
        env={"PATH": str(bare)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert (
        "make test needs these system packages" in proc.stdout and "apt-get install -y no-such-package" in proc.stdout
    )
    present = subprocess.run([make, "-s", "-C", str(REPO), "system-tools", "SYSTEM_TOOLS=sh:dash"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert present.returncode == 0 and present.stdout == ""
