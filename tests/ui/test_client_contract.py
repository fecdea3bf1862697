"""The UI client's dataclasses stay in step with the API's OpenAPI schema (the UI cannot import the API)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from braintumor.api.app import create_app
from braintumor.api.config import Settings
from braintumor.ui import records

KEY = "Zr4T9qLm2XbV7nKp1sWc8HdYf3GjUe6A0oIuQyRtEw5"
#: Client dataclass -> (schema it reads, client-only fields, schema fields the client does not read).
PAIRS: dict[type[Any], tuple[str, set[str], set[str]]] = {
    records.Scan: ("ScanPublic", {"detailed"}, {"result", "heatmap"}),
    records.FileLink: ("FileLink", set(), set()),
    records.MemberResult: ("MemberOutput", set(), set()),
    records.ScanPage: ("ScanPage", set(), set()),
    records.UserPage: ("UserPage", set(), set()),
    records.User: ("UserAdminView", set(), set()),
    records.Stats: ("StatsPublic", set(), set()),
    records.ScanStats: ("ScanStatsPublic", set(), set()),
    records.Lock: ("LockPublic", set(), set()),
    records.BulkDeleted: ("BulkDeleted", set(), set()),
    records.Study: ("StudyPublic", set(), set()),
    records.StudySlice: ("StudySlice", set(), set()),
    records.StudySeries: ("StudySeries", set(), set()),
    records.SkippedSeries: ("SkippedSeriesInfo", set(), set()),
    records.RefusedFile: ("FileRefused", set(), set()),
    records.PacsStudy: ("PacsStudy", set(), set()),
    records.PacsStudyPage: ("PacsStudyPage", set(), set()),
}


def test_client_dataclasses_match_the_openapi_schema(tmp_path: Path) -> None:
    schemas = create_app(Settings(secret_key=KEY, data_dir=tmp_path)).openapi()["components"]["schemas"]
    for cls, (name, client_only, unread) in PAIRS.items():
        fields = {f.name for f in dataclasses.fields(cls)} - client_only
        assert fields == set(schemas[name]["properties"]) - unread, (cls.__name__, name)
