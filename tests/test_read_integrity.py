"""Reads check the key against the content, and caches hold only verified bytes.

Defect 10 of "Green again": a valid record copied under another execution's key was served as
that execution (GET ft-22 answered ``executionId: ft-23``).
"""

from __future__ import annotations

from typing import Any

import pytest

from api.app import create_app
from archiver.archive import Archive
from archiver.codec import compress, decompress
from archiver.config import Settings
from archiver.errors import IntegrityError
from archiver.layout import blob_key, result_key, snapshot_key, version_key
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.memory import MemoryStore
from query.replay import validate_for_replay
from tests.test_api import Client

HMAC_KEY = bytes(range(32))


def workflow(extra: int = 0) -> dict[str, Any]:
    nodes = [
        {"id": "t", "name": "Start", "type": "n8n-nodes-base.manualTrigger", "parameters": {}},
        {"id": "s", "name": "Set", "type": "n8n-nodes-base.set", "parameters": {"v": extra}},
    ]
    return {
        "id": "wf-a",
        "name": "a",
        "nodes": nodes,
        "connections": {"Start": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
    }


FINAL = {"status": "success", "nodes": {"Start": {"status": "success"}}}


def overwrite(store: ObjectStore, key: str, data: bytes) -> None:
    store.delete(key)
    store.put(key, data)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def archive(store: MemoryStore) -> Archive:
    arc = Archive(store, Sanitizer(HMAC_KEY))
    for execution_id in ("ft-22", "ft-23"):
        arc.capture_snapshot(execution_id=execution_id, workflow=workflow())
        arc.record_final_state(execution_id, FINAL)
    return arc


def test_a_snapshot_record_under_another_executions_key_is_never_served(
    store: MemoryStore, archive: Archive
) -> None:
    overwrite(store, snapshot_key("ft-22"), store.get(snapshot_key("ft-23")))
    for reader in (archive, Archive(store, Sanitizer(HMAC_KEY))):
        with pytest.raises(IntegrityError, match="names another execution"):
            reader.get_snapshot("ft-22")
    assert archive.get_snapshot("ft-23").execution_id == "ft-23"
    client = Client(create_app(Settings(), archive=archive), raise_app_exceptions=False)
    response = client.get("/api/execution-snapshots/ft-22")
    assert response.status_code == 500
    assert response.json()["error"] == "integrity_error"
    assert "ft-23" not in response.text
    report = validate_for_replay(archive, "ft-22")
    assert report["valid"] is False
    assert [i["code"] for i in report["issues"]] == ["record_misplaced"]


def test_a_final_state_under_another_executions_key_is_never_served(
    store: MemoryStore, archive: Archive
) -> None:
    overwrite(store, result_key("ft-22"), store.get(result_key("ft-23")))
    with pytest.raises(IntegrityError, match="names another execution"):
        archive.get_final_state("ft-22")
    client = Client(create_app(Settings(), archive=archive), raise_app_exceptions=False)
    response = client.get("/api/execution-snapshots/ft-22")
    assert response.status_code == 500 and "ft-23" not in response.text


def test_a_version_commit_under_another_seq_or_workflow_is_refused(store: MemoryStore) -> None:
    archive = Archive(store, Sanitizer(HMAC_KEY))
    archive.capture_snapshot(execution_id="e1", workflow=workflow(0))
    archive.capture_snapshot(execution_id="e2", workflow=workflow(1))
    overwrite(store, version_key("wf-a", 1), store.get(version_key("wf-a", 2)))
    with pytest.raises(IntegrityError, match="names another place"):
        Archive(store, Sanitizer(HMAC_KEY)).version_history("wf-a")


def test_a_corrupted_blob_is_refused_on_every_read_not_cached(store: MemoryStore) -> None:
    """Only verified bytes enter the structure cache: a blob that fails verification is
    refused again on the next read (not remembered), and served once the right bytes are back."""
    writer = Archive(store, Sanitizer(HMAC_KEY))
    snap = writer.capture_snapshot(execution_id="b1", workflow=workflow()).snapshot
    key = blob_key(snap.snapshot_hash)
    good = store.get(key)
    overwrite(store, key, compress(decompress(good).replace(b'"Set"', b'"Sat"')))
    reader = Archive(store, Sanitizer(HMAC_KEY))
    for _ in range(2):
        with pytest.raises(IntegrityError, match="hash mismatch"):
            reader.get_snapshot("b1")
    overwrite(store, key, good)
    assert reader.get_snapshot("b1").snapshot_hash == snap.snapshot_hash


def test_a_corrupted_version_commit_is_refused_on_every_read_not_cached(
    store: MemoryStore,
) -> None:
    Archive(store, Sanitizer(HMAC_KEY)).capture_snapshot(execution_id="c1", workflow=workflow())
    key = version_key("wf-a", 1)
    good = store.get(key)
    overwrite(store, key, compress(decompress(good).replace(b"1.0.0", b"9.0.0")))
    reader = Archive(store, Sanitizer(HMAC_KEY))
    for _ in range(2):
        with pytest.raises(IntegrityError, match="digest"):
            reader.version_history("wf-a")
    overwrite(store, key, good)
    assert [c.version for c in reader.version_history("wf-a")] == ["1.0.0"]
