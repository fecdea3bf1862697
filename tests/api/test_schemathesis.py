"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis): never a 5xx, and every
response matches what the schema documents. A bounded number of examples per operation keeps this under a
minute."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)

from braintumor.api.routes import admin, auth, dicom, health, pacs, scans, studies

MAX_EXAMPLES = 20
OPERATIONS = sorted(
    (method, route.path)
    for module in (auth, scans, studies, dicom, pacs, admin, health)
    for route in module.router.routes
    if isinstance(route, APIRoute)
    for method in route.methods
)


def test_every_route_is_fuzzed(api: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    documented = sorted((r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations())
    assert documented == OPERATIONS


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(make_api: Any, method: str, path: str, scan_png: bytes) -> None:
    api = make_api()
    headers = api.user("fuzzer", admin=True)  # admin, so that admin routes are exercised beyond 403
    api.user("someone")
    api.scan(headers, scan_png)
    operation = schemathesis.openapi.from_asgi("/openapi.json", api.app)[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            headers=headers,
            checks=[
                not_a_server_error,
                response_schema_conformance,
                content_type_conformance,
                response_headers_conformance,
            ],
        )

    fuzz()
