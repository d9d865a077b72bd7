"""Qdrant server snapshots through the REST API, against a local server speaking that API subset
(no Qdrant server binary runs here; the embedded client has no snapshot API)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flows.ops.backup_catalog import BackupFailed
from flows.ops.backup_qdrant import restore_snapshot, snapshot_collection
from testkit.ops_services import fake_service

DATA = b"qdrant-snapshot-bytes" * 5000
NAME = "docs-123.snapshot"


def snapshot_routes(checksum: str) -> dict:
    result = {"name": NAME, "creation_time": "2026-11-26T02:30:00", "size": len(DATA), "checksum": checksum}
    return {
        "POST /collections/docs/snapshots": (200, {"result": result, "status": "ok", "time": 0.1}),
        f"/collections/docs/snapshots/{NAME}": (200, DATA),
        f"DELETE /collections/docs/snapshots/{NAME}": (200, {"result": True, "status": "ok"}),
    }


def test_snapshot_is_downloaded_checksummed_and_deleted_on_the_server(tmp_path: Path) -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    with fake_service(snapshot_routes(sha)) as srv:
        assert snapshot_collection(srv.url, "docs", tmp_path / "s", api_key="k") == sha
        asked = [(m, p) for m, p, _ in srv.requests]
    assert (tmp_path / "s").read_bytes() == DATA
    assert asked == [
        ("POST", "/collections/docs/snapshots"),
        ("GET", f"/collections/docs/snapshots/{NAME}"),
        ("DELETE", f"/collections/docs/snapshots/{NAME}"),
    ]


def test_snapshot_checksum_mismatch_and_server_errors_fail(tmp_path: Path) -> None:
    with (
        fake_service(snapshot_routes("0" * 64)) as srv,
        pytest.raises(BackupFailed, match="checksum mismatch"),
    ):
        snapshot_collection(srv.url, "docs", tmp_path / "s")
    with fake_service({}) as srv, pytest.raises(BackupFailed, match="HTTP 404"):
        snapshot_collection(srv.url, "docs", tmp_path / "s")


def test_snapshot_restore_refuses_a_live_collection_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(DATA)
    routes = {
        "/collections/docs": (200, {"result": {"status": "green", "points_count": 12}}),
        "POST /collections/docs/snapshots/upload": (200, {"result": True, "status": "ok"}),
    }
    with fake_service(routes) as srv:
        with pytest.raises(BackupFailed, match="holds 12 points"):
            restore_snapshot(srv.url, "docs", path)
        assert "recovered into docs" in restore_snapshot(srv.url, "docs", path, overwrite=True)
        uploads = [n for m, p, n in srv.requests if m == "POST"]
    assert uploads and uploads[0] > len(DATA)  # the multipart body carried the file
