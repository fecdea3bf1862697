"""Backup and restore of the embedded store: a round trip, and damaged archives refused."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from braintumor.storage import ScanQuery, StorageError
from braintumor.storage.backup import backup, restore
from braintumor.storage.sqlite import EmbeddedStorage

Filler = Callable[[EmbeddedStorage], tuple[str, str]]


def test_backup_and_restore_round_trip(tmp_path: Path, fill: Filler) -> None:
    store = EmbeddedStorage(tmp_path / "data")
    owner, scan_id = fill(store)
    (tmp_path / "data" / "audit.log").write_text('{"event": "x"}\n')
    archive = tmp_path / "backup.tar.gz"
    manifest = backup(store, archive)
    assert manifest["users"] == 1 and manifest["scans"] == 1 and manifest["blobs"] == 2
    store.close()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "secret.key" not in names and "braintumor.db" in names and "audit.log" in names

    restored = tmp_path / "restored"
    assert restore(archive, restored)["scans"] == 1
    copy = EmbeddedStorage(restored)
    rec = copy.get_scan(scan_id)
    assert rec is not None and rec.result == {"x": 1}
    assert copy.list_scans(owner, ScanQuery()).total == 1
    found = copy.get_file(rec.files["heatmap"].id)
    assert found is not None and found[1] == b"heat"
    assert copy.check().ok
    copy.close()
    assert (restored / "audit.log").read_text().startswith('{"event"')

    with pytest.raises(StorageError, match="already holds a database"):
        restore(archive, restored)
    assert restore(archive, restored, force=True)["users"] == 1


def test_restore_rejects_damaged_archives(tmp_path: Path, fill: Filler) -> None:
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(StorageError, match="cannot read the backup"):
        restore(bogus, tmp_path / "a")
    store = EmbeddedStorage(tmp_path / "data")
    fill(store)
    archive = tmp_path / "b.tar.gz"
    backup(store, archive)
    store.close()
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            fh = src.extractfile(member)
            if member.name.startswith("blobs/"):
                import io

                data = b"tampered"
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
            else:
                dst.addfile(member, fh)
    with pytest.raises(StorageError, match="does not match its checksum"):
        restore(tampered, tmp_path / "c")
    assert not (tmp_path / "c" / "braintumor.db").exists()
