"""The authorization matrix: every endpoint × {anonymous, other user, owner, admin}, on both backends.

Each cell gets fresh users (and a fresh scan where the endpoint needs one) in an app shared by the module, sends
one request, and checks the status and the effect: a scan, file or report of one user is never readable,
deletable or even confirmed to exist (404, like a missing id) by anybody else — administrators included.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from braintumor.api import Settings, create_app

from .conftest import disc_png

PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "another-long-secret"
SECRET = "mX7cR2pLq9VzK4tBw6NsJ1hYd8GfEa3UoW5iTb0CxQn"
ROLES = ("anonymous", "other", "owner", "admin")
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1, "auth_rate_per_minute": 100_000}
_counter = itertools.count()


@dataclass
class World:
    """One cell's actors: the owner (with one scan when asked), another user, an admin."""

    client: TestClient
    owner: str
    other: str
    admin: str
    headers: dict[str, dict[str, str]]
    scan: dict[str, Any] | None
    recovery_key: str

    @property
    def storage(self) -> Any:
        return self.client.app.state.storage  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # {scan}, {file}, {owner} are filled from the world
    expected: tuple[int, int, int, int]  # anonymous, other, owner, admin
    needs_scan: bool = False
    body: Callable[[World, str], dict[str, Any]] | None = None
    check: Callable[[World, str, Any], None] | None = None


def _private(world: World, role: str, response: Any) -> None:
    """Read-only: the scan still exists, and nobody but its owner learns anything about it."""
    assert world.scan is not None
    assert world.storage.get_scan(world.scan["id"]) is not None
    if role != "owner":
        assert world.scan["id"] not in response.text and world.scan["filename"] not in response.text


def _deleted_by_owner_only(world: World, role: str, response: Any) -> None:
    assert world.scan is not None
    exists = world.storage.get_scan(world.scan["id"]) is not None
    assert exists == (role != "owner"), "only the owner may delete a scan"
    if not exists:
        assert all(world.storage.get_file(f["id"]) is None for f in world.scan["files"].values())


def _not_visible(world: World, role: str, response: Any) -> None:
    assert world.scan is not None
    if role in ("other", "admin"):
        assert world.scan["id"] not in response.text
    if role == "owner":
        assert world.scan["id"] in response.text


def _bulk(world: World, role: str, response: Any) -> None:
    _deleted_by_owner_only(world, role, response)
    if role in ("other", "admin"):
        assert response.json()["deleted"] == []


def _role_unchanged_unless_admin(world: World, role: str, response: Any) -> None:
    user = world.storage.get_user(world.owner)
    assert user.role == ("admin" if role == "admin" else "user")


def _owner_deleted_only_by_admin(world: World, role: str, response: Any) -> None:
    gone = world.storage.get_user(world.owner) is None
    assert gone == (role == "admin")
    if role == "admin":
        assert world.scan is not None and world.storage.get_scan(world.scan["id"]) is None


def _upload(world: World, role: str) -> dict[str, Any]:
    return {"files": {"file": ("new.png", world.client.app.state.test_png, "image/png")}}  # type: ignore[attr-defined]


def _new_account(world: World, role: str) -> dict[str, Any]:
    return {"json": {"username": f"new{next(_counter)}", "password": PASSWORD}}


def _owners_sign_in(world: World, role: str) -> dict[str, Any]:
    return {"data": {"username": world.owner, "password": PASSWORD}}


def _owners_reset(world: World, role: str) -> dict[str, Any]:
    return {"json": {"username": world.owner, "recovery_key": world.recovery_key, "new_password": NEW_PASSWORD}}


def _password_change(world: World, role: str) -> dict[str, Any]:
    return {"json": {"current_password": PASSWORD, "new_password": NEW_PASSWORD}}


def _owners_scan_ids(world: World, role: str) -> dict[str, Any]:
    return {"json": {"ids": [world.scan["id"]] if world.scan else []}}


def _json(payload: dict[str, Any]) -> Callable[[World, str], dict[str, Any]]:
    """A body that is the same in every cell: ``payload`` as JSON."""
    return lambda _world, _role: {"json": payload}


def _owners_scan(
    name: str,
    path: str,
    owner: int = 200,
    method: str = "GET",
    check: Callable[[World, str, Any], None] = _private,
) -> Case:
    """A request about the owner's scan: 401 signed out, ``owner`` for its owner, and for anybody else (admins
    included) the 404 of a missing id."""
    return Case(name, method, path, (401, 404, owner, 404), needs_scan=True, check=check)


CASES = (
    Case("health", "GET", "/health", (200, 200, 200, 200)),
    Case("openapi", "GET", "/openapi.json", (200, 200, 200, 200)),
    Case("docs", "GET", "/docs", (200, 200, 200, 200)),
    Case("register", "POST", "/register", (201, 201, 201, 201), body=_new_account),
    Case("token", "POST", "/token", (200, 200, 200, 200), body=_owners_sign_in),
    Case("reset-password", "POST", "/reset-password", (200, 200, 200, 200), body=_owners_reset),
    Case("users/me", "GET", "/users/me", (401, 200, 200, 200)),
    Case("change-password", "POST", "/change-password", (401, 200, 200, 200), body=_password_change),
    Case("delete users/me", "DELETE", "/users/me", (401, 204, 204, 204), body=_json({"password": PASSWORD})),
    Case("predict", "POST", "/predict", (401, 201, 201, 201), body=_upload),
    Case("history", "GET", "/history", (401, 200, 200, 200), needs_scan=True, check=_not_visible),
    Case("history search", "GET", "/history?q=scan", (401, 200, 200, 200), needs_scan=True, check=_not_visible),
    _owners_scan("history/{id}", "/history/{scan}"),
    _owners_scan("report.pdf", "/history/{scan}/report.pdf"),
    _owners_scan("report.pdf identified", "/history/{scan}/report.pdf?identifiers=true"),
    # the scan is a PNG: its owner learns there is no DICOM to answer with, anybody else that there is no scan
    _owners_scan("history/{id}/dicom", "/history/{scan}/dicom", owner=409),
    Case("pacs", "GET", "/pacs", (401, 200, 200, 200)),
    Case("pacs/studies", "GET", "/pacs/studies", (401, 404, 404, 404)),  # no PACS configured here
    Case("pacs analyze", "POST", "/pacs/studies/1.2.3/analyze", (401, 404, 404, 404)),
    _owners_scan("files original", "/files/{original}"),
    _owners_scan("files heatmap", "/files/{heatmap}"),
    _owners_scan("files overlay", "/files/{overlay}"),
    _owners_scan("files cam", "/files/{cam}?download=true"),
    _owners_scan("delete history/{id}", "/history/{scan}", owner=204, method="DELETE", check=_deleted_by_owner_only),
    Case(
        "bulk delete",
        "POST",
        "/history/delete",
        (401, 200, 200, 200),
        needs_scan=True,
        check=_bulk,
        body=_owners_scan_ids,
    ),
    Case("admin/stats", "GET", "/admin/stats", (401, 403, 403, 200)),
    Case("admin/users", "GET", "/admin/users?q=o", (401, 403, 403, 200)),
    Case(
        "admin role",
        "PUT",
        "/admin/users/{owner}/role",
        (401, 403, 403, 200),
        body=_json({"role": "admin"}),
        check=_role_unchanged_unless_admin,
    ),
    Case(
        "admin delete user",
        "DELETE",
        "/admin/users/{owner}",
        (401, 403, 403, 204),
        needs_scan=True,
        check=_owner_deleted_only_by_admin,
    ),
)
BACKENDS = ("embedded", "secantus")
MATRIX = [(b, c, r) for b in BACKENDS for c in CASES for r in ROLES]


@pytest.fixture(scope="module")
def matrix_clients(
    tmp_path_factory: pytest.TempPathFactory, api_predictor: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], TestClient]]:
    """One app per backend for the whole module (cells isolate themselves with fresh users)."""
    import secrets

    from braintumor.imaging.io import load_image  # noqa: F401  (the PNG below must decode)

    clients: dict[str, TestClient] = {}
    dbs: list[tuple[str, str]] = []

    def get(backend: str) -> TestClient:
        if backend not in clients:
            fields: dict[str, Any] = {"secret_key": SECRET, "data_dir": tmp_path_factory.mktemp("matrix"), **FAST}
            if backend == "secantus":
                uri = request.getfixturevalue("secantus_uri")
                name = f"braintumor_matrix_{secrets.token_hex(4)}"
                dbs.append((uri, name))
                fields |= {"storage": "mongodb", "mongo_uri": uri, "mongo_database": name}
            client = TestClient(create_app(Settings(**fields), predictor=api_predictor))
            client.__enter__()
            client.app.state.test_png = disc_png(96, 40, 90)  # type: ignore[attr-defined]
            # A permanent admin, so that per-cell admins may always delete themselves.
            client.post("/register", json={"username": "keeper", "password": PASSWORD})
            client.app.state.storage.set_role("keeper", "admin")  # type: ignore[attr-defined]
            clients[backend] = client
        return clients[backend]

    yield get
    for client in clients.values():
        client.__exit__(None, None, None)
    from pymongo import MongoClient

    for uri, name in dbs:
        mc: Any = MongoClient(uri)
        mc.drop_database(name)
        mc.close()


def _world(client: TestClient, needs_scan: bool) -> World:
    k = next(_counter)
    names = {"owner": f"owner{k}", "other": f"other{k}", "admin": f"admin{k}"}
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    key = ""
    for role, name in names.items():
        r = client.post("/register", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        if role == "owner":
            key = r.json()["recovery_key"]
        if role == "admin":
            client.app.state.storage.set_role(name, "admin")  # type: ignore[attr-defined]
        token = client.post("/token", data={"username": name, "password": PASSWORD}).json()["access_token"]
        headers[role] = {"Authorization": f"Bearer {token}"}
    scan = None
    if needs_scan:
        files = {"file": ("scan-owner.png", client.app.state.test_png, "image/png")}  # type: ignore[attr-defined]
        r = client.post("/predict", headers=headers["owner"], files=files)
        assert r.status_code == 201, r.text
        scan = r.json()
    return World(client, names["owner"], names["other"], names["admin"], headers, scan, key)


@pytest.mark.parametrize(("backend", "case", "role"), MATRIX, ids=[f"{b}-{c.name}-{r}" for b, c, r in MATRIX])
def test_authorization_matrix(backend: str, case: Case, role: str, matrix_clients: Callable[[str], TestClient]) -> None:
    client = matrix_clients(backend)
    world = _world(client, case.needs_scan)
    path = case.path.replace("{owner}", world.owner)
    if world.scan is not None:
        path = path.replace("{scan}", world.scan["id"])
        for kind, f in world.scan["files"].items():
            path = path.replace("{" + kind + "}", f["id"])
    kwargs = case.body(world, role) if case.body else {}
    response = client.request(case.method, path, headers=world.headers[role], **kwargs)
    expected = case.expected[ROLES.index(role)]
    assert response.status_code == expected, (case.name, role, response.text[:300])
    assert "Traceback" not in response.text
    if case.check is not None:
        case.check(world, role, response)


def test_another_users_scan_looks_exactly_like_a_missing_one(matrix_clients: Callable[[str], TestClient]) -> None:
    client = matrix_clients("embedded")
    world = _world(client, needs_scan=True)
    assert world.scan is not None
    theirs = client.get(f"/history/{world.scan['id']}", headers=world.headers["other"]).json()
    missing = client.get("/history/" + "0" * 32, headers=world.headers["other"]).json()
    assert theirs["detail"] == missing["detail"] == "scan not found"


def test_matrix_size() -> None:
    assert len(MATRIX) == len(BACKENDS) * len(CASES) * len(ROLES) >= 200
