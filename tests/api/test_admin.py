"""Administration: statistics, user list, roles (no self-demotion, never zero admins), deleting accounts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest


@pytest.mark.parametrize("backend", ["embedded", "secantus"])
def test_stats_and_user_list(make_api: Any, backend: str, scan_png: bytes, scan_jpeg: bytes) -> None:
    api = make_api(backend)
    root = api.user("root", admin=True)
    alice, bob = api.user("alice"), api.user("bob")
    api.scan(alice, scan_png)
    api.scan(alice, scan_jpeg)
    api.scan(bob, scan_png)
    stats = api.client.get("/admin/stats", headers=root, params={"days": 7}).json()
    assert (stats["users"], stats["admins"], stats["scans"]) == (3, 1, 3)
    assert stats["scans_per_user"][0] == {"username": "alice", "scans": 2}
    assert sum(stats["outcomes"].values()) == 3 and set(stats["outcomes"]) <= {"tumor", "refer", "no_tumor"}
    assert len(stats["per_day"]) == 7
    assert stats["per_day"][-1] == {"date": dt.datetime.now(dt.UTC).date().isoformat(), "scans": 3}
    users = api.client.get("/admin/users", headers=root, params={"page_size": 2}).json()
    assert users["total"] == 3 and users["pages"] == 2
    assert [u["username"] for u in users["items"]] == ["alice", "bob"] and users["items"][0]["scans"] == 2
    found = api.client.get("/admin/users", headers=root, params={"q": "RO"}).json()
    assert [(u["username"], u["role"]) for u in found["items"]] == [("root", "admin")]
    assert api.client.get("/admin/users", headers=root, params={"q": ".*"}).json()["total"] == 0
    assert "password" not in str(users) and "hash" not in str(users)


def test_roles_and_the_last_admin(api: Any) -> None:
    root = api.user("root", admin=True)
    api.user("alice")
    assert api.client.put("/admin/users/root/role", headers=root, json={"role": "user"}).status_code == 409
    assert api.client.put("/admin/users/ghost/role", headers=root, json={"role": "admin"}).status_code == 404
    assert api.client.put("/admin/users/alice/role", headers=root, json={"role": "boss"}).status_code == 422
    r = api.client.put("/admin/users/ALICE/role", headers=root, json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    alice = api.login("alice")
    assert api.client.get("/admin/stats", headers=alice).status_code == 200
    # alice may demote root (not herself); then she is the last admin and cannot be demoted by anyone.
    assert api.client.put("/admin/users/root/role", headers=alice, json={"role": "user"}).status_code == 200
    assert api.client.get("/admin/stats", headers=root).status_code == 403
    assert api.client.put("/admin/users/alice/role", headers=alice, json={"role": "user"}).status_code == 409
    assert api.storage.count_admins() == 1


def test_admin_deletes_a_user_with_their_scans(api: Any, scan_png: bytes) -> None:
    root = api.user("root", admin=True)
    alice = api.user("alice")
    scan = api.scan(alice, scan_png)
    assert api.client.delete("/admin/users/root", headers=root).status_code == 409
    assert api.client.delete("/admin/users/ghost", headers=root).status_code == 404
    assert api.client.delete("/admin/users/alice", headers=root).status_code == 204
    assert api.client.get("/users/me", headers=alice).status_code == 401
    assert api.storage.get_scan(scan["id"]) is None and api.storage.check().ok
    assert api.client.get("/admin/stats", headers=root).json()["scans"] == 0


def test_admins_cannot_read_other_users_scans(api: Any, scan_png: bytes) -> None:
    root = api.user("root", admin=True)
    scan = api.scan(api.user("alice"), scan_png)
    assert api.client.get(f"/history/{scan['id']}", headers=root).status_code == 404
    assert api.client.get(scan["files"]["original"]["url"], headers=root).status_code == 404
    assert api.client.get("/history", headers=root).json()["total"] == 0
