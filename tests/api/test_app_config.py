"""Settings and hardening: no default secret, production refuses to start, CORS, headers, no leaked errors."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from braintumor.api import ConfigError, Settings, create_app
from braintumor.api.config import ensure_secret

SECRET = "kR5tY8uW2qZ7xN4vB1mC9sL3dH6gJ0fPaEoIiUtQwKn"


def test_there_is_no_default_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAINTUMOR_SECRET_KEY", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.secret_key is None
    with pytest.raises(ConfigError, match="no signing secret"):
        create_app(settings)


@pytest.mark.parametrize(
    "value",
    ["changethis", "secret", "short-but-random-ish", "k" * 40, "test-secret-" + "x" * 40, "0123456789abcdef" * 4],
)
def test_weak_secrets_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 random bytes"):
        Settings(secret_key=value)


def _example_values() -> dict[str, str]:
    text = (Path(__file__).resolve().parents[2] / "deploy" / "env.example").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_the_example_secret_does_not_start_production(tmp_path: Path) -> None:
    """Replays issue 13 item 6: the placeholder of deploy/env.example passed validation and signed tokens."""
    example = _example_values()
    with pytest.raises(ValidationError, match="example or a placeholder"):
        Settings(env="production", secret_key=example["BRAINTUMOR_SECRET_KEY"], data_dir=tmp_path)
    for weak in ("x" * 31, "short", "ab" * 30):
        with pytest.raises(ValidationError, match="BRAINTUMOR_SECRET_KEY is refused"):
            Settings(env="production", secret_key=weak, data_dir=tmp_path)
    good = "pQ8rT3vX6zB1nM4kW7cY0sL2dH5gJ9fAeUoIiRtEwZn"
    assert Settings(env="production", secret_key=good, data_dir=tmp_path).secret_key is not None


def test_the_example_mongo_password_is_refused(tmp_path: Path) -> None:
    """The compose file builds BRAINTUMOR_MONGO_URI from MONGO_ROOT_PASSWORD: its example value must not pass."""
    example = _example_values()
    user, password = example["MONGO_ROOT_USER"], example["MONGO_ROOT_PASSWORD"]
    uri = f"mongodb://{user}:{password}@mongo:27017/?authSource=admin"
    base = {"secret_key": SECRET, "data_dir": tmp_path, "storage": "mongodb"}
    for env in ("development", "production"):
        with pytest.raises(ValidationError, match="example value"):
            Settings(**base, env=env, mongo_uri=uri)
    with pytest.raises(ValidationError, match="refused in production"):
        Settings(**base, env="production", mongo_uri="mongodb://braintumor:hunter2hunter2@mongo:27017/")
    with pytest.raises(ValidationError, match="there is none"):
        Settings(**base, env="production", mongo_uri="mongodb://mongo:27017/")
    strong = "mongodb://braintumor:Vb7Qp2Xz9Lr4Tn6Kc1Wm8Sd3Hf5Gj0AeUoIiRtEwYqPs@mongo:27017/?authSource=admin"
    assert Settings(**base, env="production", mongo_uri=strong).mongo_uri is not None


def test_production_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="required"):
        ensure_secret(Settings(env="production", data_dir=tmp_path))
    assert not (tmp_path / "secret.key").exists()


def test_development_generates_and_keeps_a_private_secret(tmp_path: Path) -> None:
    first = ensure_secret(Settings(data_dir=tmp_path / "d"))
    path = tmp_path / "d" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = ensure_secret(Settings(data_dir=tmp_path / "d"))
    assert first.secret_key is not None and second.secret_key is not None
    assert first.secret_key.get_secret_value() == second.secret_key.get_secret_value()
    assert len(first.secret_key.get_secret_value()) >= 48
    assert "*" not in repr(first) or "get_secret_value" not in repr(first)
    assert first.secret_key.get_secret_value() not in repr(first)
    path.chmod(0o644)
    ensure_secret(Settings(data_dir=tmp_path / "d"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRAINTUMOR_SECRET_KEY", "eQ3vL8pZ1xN6cT9rB4kW7sD2mY5hG0fJaUoIiRtEwKn")
    monkeypatch.setenv("BRAINTUMOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BRAINTUMOR_STORAGE", "mongodb")
    monkeypatch.setenv("BRAINTUMOR_MONGO_URI", "mongodb://user:pw@127.0.0.1:1")
    monkeypatch.setenv("BRAINTUMOR_CORS_ORIGINS", "http://127.0.0.1:8501, https://ui.example")
    monkeypatch.setenv("BRAINTUMOR_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("BRAINTUMOR_KEEP_DICOM_IDENTIFIERS", "true")
    s = Settings()
    assert s.storage == "mongodb" and s.data_dir == tmp_path and s.max_upload_bytes == 5 * 1024 * 1024
    assert s.cors_origins == ["http://127.0.0.1:8501", "https://ui.example"] and s.keep_dicom_identifiers
    assert "pw" not in repr(s)
    monkeypatch.setenv("BRAINTUMOR_CORS_ORIGINS", "*")
    with pytest.raises(ValidationError, match="explicitly"):
        Settings()


def test_unreachable_mongodb_is_a_clear_error(tmp_path: Path) -> None:
    from braintumor.storage import StorageError

    settings = Settings(
        secret_key=SECRET,
        data_dir=tmp_path,
        storage="mongodb",
        mongo_uri="mongodb://u:topsecret@127.0.0.1:1",
        mongo_timeout_ms=300,
    )
    with pytest.raises(StorageError) as info:
        create_app(settings)
    assert "topsecret" not in str(info.value) and "BRAINTUMOR_MONGO_URI" in str(info.value)


def test_cors_allows_only_the_ui_origin(api: Any) -> None:
    ok = api.client.options(
        "/history", headers={"Origin": "http://127.0.0.1:8501", "Access-Control-Request-Method": "GET"}
    )
    assert ok.headers.get("access-control-allow-origin") == "http://127.0.0.1:8501"
    bad = api.client.options(
        "/history", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in bad.headers
    plain = api.client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_security_headers_and_request_ids(api: Any) -> None:
    r = api.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    weird = api.client.get("/health", headers={"X-Request-ID": "bad id\twith spaces" * 10})
    assert weird.headers["x-request-id"] != "bad id\twith spaces" * 10


def test_no_exception_text_reaches_clients(api: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    headers = api.user("alice")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail /srv/data/patient-jane.db")

    monkeypatch.setattr(api.storage, "list_scans", boom)
    r = api.client.get("/history", headers=headers)
    assert r.status_code == 500
    assert "secret detail" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
    assert r.json()["request_id"] == r.headers["x-request-id"] and r.headers["x-request-id"] in r.json()["detail"]
    assert "secret detail" in caplog.text  # the server log keeps the details for the operator

    from braintumor.storage import StorageError

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("cannot reach mongodb://user:pw@db")

    monkeypatch.setattr(api.storage, "list_scans", down)
    r = api.client.get("/history", headers=headers)
    assert r.status_code == 503 and "pw@" not in r.text and "temporarily unavailable" in r.text


def test_validation_errors_do_not_echo_input(api: Any) -> None:
    r = api.client.post("/register", json={"username": "x", "password": "hunter2-secret", "extra": "y"})
    assert r.status_code == 422 and "hunter2-secret" not in r.text
    r = api.client.post("/register", json={"username": "alice", "password": ["hunter2-secret"]})
    assert r.status_code == 422 and "hunter2-secret" not in r.text


def test_logs_hold_no_secrets(api: Any, caplog: Any, scan_png: bytes) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    key = api.register("alice")
    headers = api.login("alice")
    api.scan(headers, scan_png, "Jane_Doe_MRI.png")
    api.client.get("/history", headers=headers, params={"q": "Jane_Doe"})
    token = headers["Authorization"].split()[1]
    server_side = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    for secret in ("correct-horse-battery", key, token, "Jane_Doe"):
        assert secret not in server_side, secret
    assert "GET /history 200" in server_side and "user=alice" in server_side


def test_api_never_imports_torch(smoke_export: Path) -> None:
    code = (
        "import sys\n"
        "from braintumor.api import Settings, create_app\n"
        "import tempfile\n"
        f"model = {str(smoke_export)!r}\n"
        f"app = create_app(Settings(secret_key={SECRET!r}, data_dir=tempfile.mkdtemp(), model_dir=model))\n"
        "assert app.state.predictor is not None\n"
        "import braintumor.api.reports, braintumor.api.analysis\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docs_work_offline_when_the_bundle_is_installed(api: Any) -> None:
    pytest.importorskip("swagger_ui_bundle")
    page = api.client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn." not in page.text
    assert api.client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert api.client.get("/openapi.json").json()["info"]["title"] == "braintumor"


def test_every_log_line_carries_the_request_id(api: Any) -> None:
    import logging

    from braintumor.api.logs import RequestIdFilter

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(getattr(record, "request_id", "?"))

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("braintumor.api.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        api.client.get("/health", headers={"X-Request-ID": "trace-42"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert seen == ["trace-42"]


def test_api_answers_carry_a_content_security_policy(api: Any) -> None:
    r = api.client.get("/health")
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_docs_are_local_with_a_strict_csp_and_there_is_no_redoc(api: Any) -> None:
    """Issue 13 item 8: /docs and /redoc loaded scripts from a CDN without integrity."""
    assert api.client.get("/redoc").status_code == 404
    page = api.client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower()
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert api.client.get("/docs/oauth2-redirect").headers["content-security-policy"].count("'sha256-") >= 1


def test_production_serves_no_docs(make_api: Any) -> None:
    api = make_api(env="production")
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/docs-assets/swagger-ui-bundle.js"):
        assert api.client.get(path).status_code == 404, path
    assert make_api(env="production", docs=True).client.get("/docs").status_code == 200


def test_forwarded_for_is_believed_only_from_configured_proxies(make_api: Any) -> None:
    """Issue 13 item 8: X-Forwarded-For from loopback was trusted, so one client could rotate its address past the
    rate limit and the per-address lockout."""
    from fastapi.testclient import TestClient

    api = make_api(auth_rate_per_minute=3)
    local = TestClient(api.app, client=("127.0.0.1", 40000))
    codes = [
        local.post("/token", data={"username": "a", "password": "b"}, headers={"X-Forwarded-For": f"10.0.0.{i}"})
        for i in range(5)
    ]
    assert [r.status_code for r in codes] == [401, 401, 401, 429, 429]

    proxied = make_api(auth_rate_per_minute=3, trusted_proxies="127.0.0.1")
    via_proxy = TestClient(proxied.app, client=("127.0.0.1", 40000))
    spread = [
        via_proxy.post("/token", data={"username": "a", "password": "b"}, headers={"X-Forwarded-For": f"10.0.0.{i}"})
        for i in range(5)
    ]
    assert [r.status_code for r in spread] == [401] * 5  # five real clients behind the proxy
    spoofed = [  # a client that prepends its own "address" is still counted by the one the proxy saw
        via_proxy.post(
            "/token", data={"username": "a", "password": "b"}, headers={"X-Forwarded-For": f"6.6.6.{i}, 10.0.0.99"}
        )
        for i in range(5)
    ]
    assert [r.status_code for r in spoofed] == [401, 401, 401, 429, 429]
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(secret_key=SECRET, trusted_proxies="proxy.example")


def test_the_app_starts_the_decoders_with_what_every_route_imports(make_api: Any) -> None:
    """When the app starts, the isolated decoders' fork server is (re)started importing every route's decoder
    modules: no first upload, study or export waits for it, or restarts it for what another route left out. The
    server left by earlier tests is stopped first (they may have preloaded these modules themselves), and the
    probe lives in a module that imports none of them."""
    from braintumor.imaging import untrusted

    routes = ("braintumor.api.analysis", "braintumor.api.study_analysis", "braintumor.api.routes.dicom",
              "braintumor.imaging.series", "dicomanonymizer")  # fmt: skip
    untrusted.restart_forkserver()
    assert untrusted.run_isolated(untrusted.imported_modules, routes, timeout_s=60) == []  # the probe can fail
    untrusted.restart_forkserver()
    make_api()
    assert untrusted.run_isolated(untrusted.imported_modules, routes, timeout_s=60) == list(routes)
