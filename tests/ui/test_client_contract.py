"""The UI client's dataclasses stay in step with the API's OpenAPI schema (the UI cannot import the API)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from braintumor.api.app import create_app
from braintumor.api.config import Settings
from braintumor.ui import client

KEY = "Zr4T9qLm2XbV7nKp1sWc8HdYf3GjUe6A0oIuQyRtEw5"
#: Client dataclass -> (schema it reads, client-only fields, schema fields the client does not read).
PAIRS: dict[type[Any], tuple[str, set[str], set[str]]] = {
    client.Scan: ("ScanPublic", {"detailed"}, {"result", "heatmap"}),
    client.FileLink: ("FileLink", set(), set()),
    client.MemberResult: ("MemberOutput", set(), set()),
    client.ScanPage: ("ScanPage", set(), set()),
    client.UserPage: ("UserPage", set(), set()),
    client.User: ("UserAdminView", set(), set()),
    client.Stats: ("StatsPublic", set(), set()),
    client.ScanStats: ("ScanStatsPublic", set(), set()),
    client.Lock: ("LockPublic", set(), set()),
    client.BulkDeleted: ("BulkDeleted", set(), set()),
}


def test_client_dataclasses_match_the_openapi_schema(tmp_path: Path) -> None:
    schemas = create_app(Settings(secret_key=KEY, data_dir=tmp_path)).openapi()["components"]["schemas"]
    for cls, (name, client_only, unread) in PAIRS.items():
        fields = {f.name for f in dataclasses.fields(cls)} - client_only
        assert fields == set(schemas[name]["properties"]) - unread, (cls.__name__, name)
