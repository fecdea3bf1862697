"""One settings object for the API, read from ``BRAINTUMOR_*`` environment variables (or passed in by tests).

Why: the seed hard-coded its signing secret. Here the secret has no default at all: :func:`create_app` refuses
to build an app without one, production refuses to start without ``BRAINTUMOR_SECRET_KEY``, and a development
server gets one generated on first start and kept in ``DATA_DIR/secret.key`` (mode 0600) by
:func:`ensure_secret`. A secret is refused when it is (or contains) a value from ``deploy/env.example`` or a
known placeholder, or when it holds less than 32 random bytes by :func:`secret_weakness`'s estimate; in
production the MongoDB password inside ``BRAINTUMOR_MONGO_URI`` must pass the same test.

Every limit of docs/security.md is a field here, so a site can tighten it without code.

Example:
    >>> key = "Zr4T9qLm2XbV7nKp1sWc8HdYf3GjUe6A0oIuQyRtEw5"
    >>> s = Settings(secret_key=key, data_dir="/tmp/bt", cors_origins="http://localhost:8501,http://a.b")
    >>> s.cors_origins, s.max_upload_bytes
    (['http://localhost:8501', 'http://a.b'], 20971520)
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import stat
import zlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from braintumor.errors import BrainTumorError
from braintumor.imaging.types import ImageLimits

if TYPE_CHECKING:
    from braintumor.imaging.series import SeriesLimits

log = logging.getLogger(__name__)

SECRET_FILE = "secret.key"
#: The values ``deploy/env.example`` ships (a test keeps this set in step with the file): never valid anywhere.
EXAMPLE_VALUES = frozenset(
    {
        'replace-with-the-output-of: python -c "import secrets; print(secrets.token_urlsafe(48))"',
        "replace-with-a-long-random-password",
        "braintumor",
    }
)
#: Fragments that mark a placeholder rather than a secret (compared case-insensitively).
_PLACEHOLDER_WORDS = ("replace-with", "changethis", "changeme", "change-me", "your-secret", "please-change", "example")
_PLACEHOLDERS = {"changethis", "changeme", "secret", "password", "your-secret-key", "please-change"}
MIN_SECRET_BYTES = 32
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")


def secret_weakness(raw: str) -> str | None:
    """Why ``raw`` is not a usable secret, or ``None`` when it is.

    Refused: an example or placeholder value; fewer than 32 bytes once decoded (hex counts 4 bits a character,
    base64 6, anything else 8); a character mix too uniform to be random (below 3.5 bits of entropy per character,
    3 for hex, as in ``"x" * 40``); or one that compresses (``"0123456789abcdef" * 4``). This is an estimate: a
    long passphrase passes. ``secrets.token_urlsafe(48)`` and ``secrets.token_hex(32)`` always pass.

    >>> secret_weakness("x" * 64)
    'it is not random (too few distinct characters)'
    >>> secret_weakness(secrets.token_urlsafe(48)) is None
    True
    """
    text = raw.strip()
    lowered = text.lower()
    if text in EXAMPLE_VALUES or lowered in _PLACEHOLDERS or any(w in lowered for w in _PLACEHOLDER_WORDS):
        return "it is the example or a placeholder value"
    floor = 3.5
    if _HEX.match(text):
        size, floor = len(text) // 2, 3.0  # 16 symbols: at most 4 bits a character
    elif _BASE64.match(text):
        size = len(text.rstrip("=")) * 6 // 8
    else:
        size = len(text.encode())
    if size < MIN_SECRET_BYTES:
        return f"it holds {size} bytes, fewer than {MIN_SECRET_BYTES}"
    counts = Counter(text)
    entropy = -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())
    if entropy < floor:
        return "it is not random (too few distinct characters)"
    if len(zlib.compress(text.encode(), 9)) < 0.8 * len(text):
        return "it is not random (it repeats itself)"
    return None


_SECRET_HELP = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


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
    max_decoded_mb: float = Field(default=32.0, gt=0, le=4096)
    max_frames: int = Field(default=1000, ge=1)
    max_dicom_depth: int = Field(default=16, ge=1, le=64)
    max_dicom_elements: int = Field(default=50_000, ge=10)
    decode_timeout_s: float = Field(default=10.0, gt=0, le=600)
    decode_memory_mb: int = Field(default=1024, ge=64)
    isolate_decoding: bool = True
    max_render_side: int = Field(default=1024, ge=64, le=8192)
    #: ``POST /studies``: the whole upload (all files, or the zip), its files (a zip's entries), its scored slices,
    #: the longest side of each stored slice view, and the isolated decoder's budget for a whole study.
    max_study_mb: float = Field(default=512.0, gt=0, le=8192)
    max_study_files: int = Field(default=1000, ge=1, le=100_000)
    max_study_slices: int = Field(default=1000, ge=1, le=100_000)
    study_render_side: int = Field(default=512, ge=64, le=8192)
    study_timeout_s: float = Field(default=300.0, gt=0, le=3600)
    study_memory_mb: int = Field(default=4096, ge=256)
    overlay_alpha: float = Field(default=0.4, ge=0, le=1)
    keep_dicom_identifiers: bool = False
    allow_registration: bool = True
    #: ``None``: open in development, closed in production until ``braintumor admin create`` made an admin.
    open_registration_before_admin: bool | None = None
    #: ``None``: ``/docs`` in development only (from the bundled Swagger UI, never a CDN).
    docs: bool | None = None
    #: Peers whose ``X-Forwarded-For`` is believed (a reverse proxy's address); empty: the header is ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    token_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    password_min_length: int = Field(default=10, ge=8, le=128)
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    max_concurrent_hashes: int = Field(default=2, ge=1, le=64)
    hash_queue: int = Field(default=8, ge=0, le=1000)
    hash_wait_s: float = Field(default=10.0, gt=0, le=300)
    login_attempts: int = Field(default=5, ge=2)
    lockout_minutes: float = Field(default=15.0, gt=0)
    account_backoff_after: int = Field(default=10, ge=1)
    account_backoff_max_s: float = Field(default=60.0, gt=0, le=3600)
    auth_rate_per_minute: int = Field(default=20, ge=1)
    audit_log: Path | None = None
    log_level: str = "INFO"
    # -- the hospital's PACS (DICOMweb root; set by the site's administrator, never taken from a request) --------
    pacs_url: str | None = None
    pacs_username: str | None = None
    pacs_password: SecretStr | None = None
    pacs_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("pacs_url")
    @classmethod
    def _pacs_root(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("BRAINTUMOR_PACS_URL must be the PACS's DICOMweb root, http(s)://host[:port]/path")
        if parts.username or parts.password:
            raise ValueError("put the PACS credentials in BRAINTUMOR_PACS_USERNAME / _PASSWORD, not in the URL")
        return value

    @model_validator(mode="after")
    def _pacs_credentials(self) -> Settings:
        if self.pacs_password is not None and not self.pacs_username:
            raise ValueError("BRAINTUMOR_PACS_PASSWORD is set without BRAINTUMOR_PACS_USERNAME")
        if self.pacs_password is not None and self.pacs_password.get_secret_value() in EXAMPLE_VALUES:
            raise ValueError("BRAINTUMOR_PACS_PASSWORD is the example value; set the PACS account's real password")
        return self

    @field_validator("cors_origins", "trusted_proxies", mode="before")
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

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (BRAINTUMOR_TRUSTED_PROXIES)") from None
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        why = secret_weakness(value.get_secret_value())
        if why:
            raise ValueError(
                f"BRAINTUMOR_SECRET_KEY is refused: {why}; it must hold at least {MIN_SECRET_BYTES} random bytes "
                f"({_SECRET_HELP})"
            )
        return value

    @model_validator(mode="after")
    def _mongo_password(self) -> Settings:
        if self.mongo_uri is None:
            return self
        try:
            password = urlsplit(self.mongo_uri.get_secret_value()).password
        except ValueError:
            raise ValueError("BRAINTUMOR_MONGO_URI is not a valid URI") from None
        password = unquote(password) if password is not None else None
        if password is not None and password in EXAMPLE_VALUES:
            raise ValueError("the MongoDB password in BRAINTUMOR_MONGO_URI is the example value; set a real one")
        if self.env == "production" and self.storage == "mongodb":
            why = "there is none" if password is None else secret_weakness(password)
            if why:
                raise ValueError(
                    f"the MongoDB password in BRAINTUMOR_MONGO_URI is refused in production: {why} "
                    f"(at least {MIN_SECRET_BYTES} random bytes, e.g. {_SECRET_HELP})"
                )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_study_bytes(self) -> int:
        return int(self.max_study_mb * 1024 * 1024)

    @property
    def study_limits(self) -> SeriesLimits:
        """What one ``POST /studies`` may cost to read and decode: files, slices, decoded bytes (four times the
        upload cap: a compressed series inflates), and each slice held to :attr:`image_limits`."""
        from braintumor.imaging.series import SeriesLimits  # pydicom's reader: only where studies are read

        return SeriesLimits(
            max_files=self.max_study_files,
            max_slices=self.max_study_slices,
            max_total_bytes=self.max_study_bytes * 4,
            image=self.image_limits,
        )

    @property
    def audit_log_path(self) -> Path:
        return self.audit_log or self.data_dir / "audit.log"

    @property
    def image_limits(self) -> ImageLimits:
        """What one upload may cost to decode (docs/security.md, "Limits")."""
        return ImageLimits(
            max_pixels=self.max_pixels,
            max_frame_bytes=int(self.max_decoded_mb * 1024 * 1024),
            max_frames=self.max_frames,
            max_dicom_depth=self.max_dicom_depth,
            max_dicom_elements=self.max_dicom_elements,
            max_inflated_bytes=self.max_upload_bytes * 8,
        )

    @property
    def docs_enabled(self) -> bool:
        return self.env != "production" if self.docs is None else self.docs

    @property
    def registration_before_admin(self) -> bool:
        if self.open_registration_before_admin is None:
            return self.env != "production"
        return self.open_registration_before_admin


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
