"""Storage fixtures: an embedded store filled with one user and one scan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from braintumor.storage import Blob, NewScan, NewUser


def _fill(store: Any) -> tuple[str, str]:
    alice = store.create_user(NewUser("alice", "h", "r"))
    rec = store.add_scan(
        NewScan(alice.id, "a.png", "tumor", 0.9, result={"x": 1}),
        [Blob("original", b"original bytes", "image/png"), Blob("heatmap", b"heat", "image/png")],
    )
    return alice.id, rec.id


@pytest.fixture
def fill() -> Callable[[Any], tuple[str, str]]:
    """``fill(store)``: store the user ``alice`` and one scan with two blobs; returns their ids."""
    return _fill
