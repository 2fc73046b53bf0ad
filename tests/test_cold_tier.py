"""The cold tier as the user meets it: reads of archived executions (one 409 everywhere), verify
of the cold copies, restore of a damaged copy, and an execution's objects moving together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from archiver.archive import Archive
from archiver.config import Settings
from archiver.errors import ColdCopyDamaged, RetentionLocked
from archiver.index import rebuild_index, verify
from archiver.layout import result_key, snapshot_key
from archiver.retention import (
    RetentionPolicy,
    Rule,
    archive_cold,
    cold_moved_executions,
    read_tier_events,
    restore_execution,
)
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from tests.test_api import Client
from tests.test_retention import _workflow

KEY = bytes(range(32))
NOW = datetime(2024, 6, 1, tzinfo=UTC)
COLD_POLICY = RetentionPolicy(name="cold", hot_days=30, keep_days="never", cold_store="memory:")


def _capture(archive: Archive, execution_id: str, created: datetime, status: str) -> None:
    archive.capture_snapshot(
        execution_id=execution_id, workflow=_workflow("wf-a", 0), created_at=created.isoformat()
    )
    archive.record_final_state(
        execution_id,
        {
            "status": status,
            "startedAt": created.isoformat(),
            "finishedAt": (created + timedelta(seconds=2)).isoformat(),
            "nodes": {"Webhook": {"status": "success"}, "HTTP": {"status": status}},
        },
    )


@pytest.fixture(params=["local", "moto", "seaweedfs"])
def cold_pair(
    request: pytest.FixtureRequest, tmp_path: Path, s3_bucket_factory: Callable[[str], Any]
) -> Iterator[tuple[ObjectStore, ObjectStore]]:
    """(hot store, cold store): two local directories, or two prefixes of one S3 bucket."""
    if request.param == "local":
        yield LocalStore(tmp_path / "hot"), LocalStore(tmp_path / "cold")
        return
    bucket = s3_bucket_factory(request.param)
    yield bucket.store(prefix="hot"), bucket.store(prefix="cold")


def _archived(hot: ObjectStore, cold: ObjectStore, ids: tuple[str, ...]) -> Archive:
    archive = Archive(hot, Sanitizer(KEY))
    for n, execution_id in enumerate(ids):
        _capture(archive, execution_id, NOW - timedelta(days=50 + n), "success")
    assert rebuild_index(hot).ok
    policy = RetentionPolicy(name="cold", hot_days=30, keep_days="never", cold_store=cold.url)
    report = archive_cold(hot, policy, NOW, cold_store=cold)
    assert {m["executionId"] for m in report.moved} == set(ids)
    assert cold_moved_executions(hot) == set(ids)
    return archive


def _replace(store: ObjectStore, key: str, data: bytes) -> None:
    store.delete(key)
    store.put(key, data)


# --------------------------------------------------------------------------------------------
# verify covers the cold copies; restore of a damaged copy is a clear 409


def test_verify_checks_cold_copies_and_restore_refuses_damaged_ones(
    cold_pair: tuple[ObjectStore, ObjectStore],
) -> None:
    hot, cold = cold_pair
    archive = _archived(hot, cold, ("c-1", "c-2", "c-3"))
    clean = verify(hot, cold_store=cold)
    assert clean.ok, clean.findings()
    assert clean.cold_copies == 6 and clean.cold_copies_read == 6
    # one copy corrupted (same size: only re-reading finds it), one deleted
    data = cold.get(snapshot_key("c-1"))
    _replace(cold, snapshot_key("c-1"), data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    cold.delete(result_key("c-2"))
    structural = verify(hot, cold_store=cold, read_data=False)
    assert not structural.ok
    assert [(f["problem"], f["key"]) for f in structural.findings()] == [
        ("cold_copy_missing", f"{cold.url}/{result_key('c-2')}")
    ]
    full = verify(hot, cold_store=cold)
    assert not full.ok
    assert sorted((f["problem"], f["key"]) for f in full.findings()) == sorted(
        [
            ("cold_copy_corrupt", f"{cold.url}/{snapshot_key('c-1')}"),
            ("cold_copy_missing", f"{cold.url}/{result_key('c-2')}"),
        ]
    )
    # restoring them: our own error naming the problem, nothing copied back, no restore event
    with pytest.raises(ColdCopyDamaged) as corrupt:
        restore_execution(hot, "c-1", cold_store=cold)
    assert (corrupt.value.problem, corrupt.value.key) == ("digest_mismatch", snapshot_key("c-1"))
    with pytest.raises(ColdCopyDamaged) as missing:
        restore_execution(hot, "c-2", cold_store=cold)
    assert (missing.value.problem, missing.value.key) == ("missing", result_key("c-2"))
    for execution_id in ("c-1", "c-2"):  # all or nothing: the intact copy stayed cold too
        assert hot.head(snapshot_key(execution_id)) is None
        assert hot.head(result_key(execution_id)) is None
    assert not any(b["action"] == "restore" for _, b in read_tier_events(hot))
    # over HTTP: 409 with a JSON body naming the problem (the route opens the cold store itself)
    if not isinstance(cold, MemoryStore):
        client = Client(create_app(Settings(), archive=archive), raise_app_exceptions=False)
        for execution_id, problem, key in (
            ("c-1", "digest_mismatch", snapshot_key("c-1")),
            ("c-2", "missing", result_key("c-2")),
        ):
            answer = client.post(f"/api/execution-snapshots/{execution_id}/restore", json={})
            assert answer.status_code == 409, answer.text
            body = answer.json()
            assert body["error"] == "cold_copy_damaged"
            assert (body["problem"], body["key"], body["location"]) == (problem, key, cold.url)
        # the intact one restores
        ok = client.post("/api/execution-snapshots/c-3/restore", json={})
        assert ok.status_code == 201 and ok.json()["state"] == "restored"
    assert verify(hot, cold_store=cold).cold_copies == 6


def test_verify_reports_a_cold_store_it_cannot_open() -> None:
    hot, cold = MemoryStore(), MemoryStore()
    _archived(hot, cold, ("m-1",))
    assert verify(hot, cold_store=cold).ok
    blind = verify(hot)  # a memory: cold store cannot be opened by URL
    assert [f["problem"] for f in blind.findings()] == ["cold_store_unreachable"]
