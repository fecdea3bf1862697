"""The web API: FastAPI app factory, settings, security, storage-backed routes (no torch).

Example:
    >>> from braintumor.api import Settings, create_app
    >>> app = create_app(Settings(secret_key="k" * 40, data_dir="data"))  # doctest: +SKIP
"""

from braintumor.api.app import create_app
from braintumor.api.config import ConfigError, Settings

__all__ = ["ConfigError", "Settings", "create_app"]
