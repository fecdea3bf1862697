"""One settings object for the API, read from ``BRAINTUMOR_*`` environment variables (or passed in by tests).

Why: the seed hard-coded its signing secret. Here the secret has no default at all: :func:`create_app` refuses
to build an app without one, production refuses to start without ``BRAINTUMOR_SECRET_KEY``, and a development
server gets one generated on first start and kept in ``DATA_DIR/secret.key`` (mode 0600) by
:func:`ensure_secret`. Placeholder and short secrets are rejected.

Example:
    >>> s = Settings(secret_key="x" * 40, data_dir="/tmp/bt", cors_origins="http://localhost:8501,http://a.b")
    >>> s.cors_origins, s.max_upload_bytes
    (['http://localhost:8501', 'http://a.b'], 20971520)
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from braintumor.errors import BrainTumorError

log = logging.getLogger(__name__)

SECRET_FILE = "secret.key"
_PLACEHOLDERS = {"changethis", "changeme", "secret", "password", "your-secret-key", "please-change"}


class ConfigError(BrainTumorError):
    """The configuration cannot run a server (missing secret, unusable value); the message says which."""


class Settings(BaseSettings):
    """Every knob of the API. Secrets are :class:`~pydantic.SecretStr` so they never print or log."""

    model_config = SettingsConfigDict(env_prefix="BRAINTUMOR_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"
    secret_key: SecretStr | None = None
    data_dir: Path = Path("data")
    storage: Literal["embedded", "mongodb"] = "embedded"
    mongo_uri: SecretStr | None = None
    mongo_database: str = "braintumor"
    mongo_timeout_ms: int = Field(default=5000, ge=100, le=120_000)
    model_dir: Path | None = None
    inference_threads: int | None = Field(default=None, ge=1)
    max_concurrent_predictions: int = Field(default=2, ge=1, le=64)
    cors_origins: Annotated[list[str], NoDecode] = ["http://127.0.0.1:8501"]
    max_upload_mb: float = Field(default=20.0, gt=0, le=1024)
    max_pixels: int = Field(default=40_000_000, ge=1)
    max_render_side: int = Field(default=1024, ge=64, le=8192)
    overlay_alpha: float = Field(default=0.4, ge=0, le=1)
    keep_dicom_identifiers: bool = False
    allow_registration: bool = True
    token_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    password_min_length: int = Field(default=10, ge=8, le=128)
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    login_attempts: int = Field(default=5, ge=1)
    lockout_minutes: float = Field(default=15.0, gt=0)
    auth_rate_per_minute: int = Field(default=20, ge=1)
    audit_log: Path | None = None
    log_level: str = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("CORS origins must be listed explicitly (the UI's origin), not '*'")
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.strip().lower() in _PLACEHOLDERS or len(raw) < 32:
            raise ValueError(
                "BRAINTUMOR_SECRET_KEY must be a random string of at least 32 characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def audit_log_path(self) -> Path:
        return self.audit_log or self.data_dir / "audit.log"


def ensure_secret(settings: Settings) -> Settings:
    """Return ``settings`` with a signing secret: the configured one, else (development only) the one kept in
    ``DATA_DIR/secret.key``, generated on first start with mode 0600.

    Raises :class:`ConfigError` in production when ``BRAINTUMOR_SECRET_KEY`` is not set.
    """
    if settings.secret_key is not None:
        return settings
    if settings.env == "production":
        raise ConfigError("BRAINTUMOR_SECRET_KEY is required when BRAINTUMOR_ENV=production (no default exists)")
    path = settings.data_dir / SECRET_FILE
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)
                log.warning("%s was readable by others; its mode is now 0600", path)
            key = path.read_text().strip()
        else:
            key = secrets.token_urlsafe(48)
            with os.fdopen(fd, "w") as fh:
                fh.write(key + "\n")
            log.info("generated a new signing secret in %s (mode 0600)", path)
    except OSError as exc:
        raise ConfigError(f"cannot read or create the signing secret {path}: {exc.strerror}") from exc
    try:
        return settings.model_copy(update={"secret_key": Settings._strong_secret(SecretStr(key))})
    except ValueError as exc:
        raise ConfigError(f"{path} does not hold a usable secret; delete it to generate a new one") from exc
