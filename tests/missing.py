"""What a test needs and this machine lacks (a dataset, a Debian tool, a server, weight wheels): one rule for all.

CI installs everything the tests use, so there a missing piece is a failure; elsewhere (a laptop without Orthanc)
the test is skipped with the reason, which says how to install it. Imported relatively (``from ..missing import``).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Fail on CI (``CI`` set), skip elsewhere, with ``reason``."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
