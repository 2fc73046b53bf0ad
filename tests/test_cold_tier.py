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
from archiver.errors import ColdCopyDamaged, ObjectArchived, RetentionLocked
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
from tests.helpers import capture_received
from tests.test_api import Client
from tests.test_retention import _workflow

KEY = bytes(range(32))
NOW = datetime(2024, 6, 1, tzinfo=UTC)
COLD_POLICY = RetentionPolicy(name="cold", hot_days=30, keep_days="never", cold_store="memory:")


def _capture(archive: Archive, execution_id: str, created: datetime, status: str) -> None:
    capture_received(archive, created, execution_id=execution_id, workflow=_workflow("wf-a", 0))
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


# --------------------------------------------------------------------------------------------
# an execution's objects move together or not at all


class _Killed(BaseException):
    """Stands for the process dying."""


class _Wrapped:
    """A store whose deletes of final states Object Lock refuses (``refuse``) or whose puts of
    execution records kill the process (``kill_puts``); everything else passes through."""

    def __init__(self, inner: ObjectStore, *, refuse: bool = False, kill_puts: bool = False):
        self.inner, self.url, self.refuse, self.kill_puts = inner, inner.url, refuse, kill_puts

    def delete(self, key: str) -> None:
        if self.refuse and key.endswith("/result.json.zst"):
            raise RetentionLocked(f"{key} is under COMPLIANCE retention")
        self.inner.delete(key)

    def put(self, key: str, data: bytes) -> bool:
        if self.kill_puts and key.startswith("executions/"):
            raise _Killed()
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)


def test_a_refused_deletion_puts_back_what_was_deleted() -> None:
    """A lock that appears between the check and the deletion (or a store without Object Lock
    headers): the snapshot deleted first is put back, the execution stays whole and hot."""
    hot, cold = MemoryStore(), MemoryStore()
    archive = Archive(hot, Sanitizer(KEY))
    _capture(archive, "r-1", NOW - timedelta(days=50), "error")
    assert rebuild_index(hot).ok
    before = {k: hot.get(k) for k in (snapshot_key("r-1"), result_key("r-1"))}
    report = archive_cold(_Wrapped(hot, refuse=True), COLD_POLICY, NOW, cold_store=cold)  # type: ignore[arg-type]
    assert [(r["object"], r["key"]) for r in report.retained_locked] == [("r-1", result_key("r-1"))]
    assert "move together" in report.retained_locked[0]["reason"]
    assert {k: hot.get(k) for k in before} == before
    assert archive.get_snapshot("r-1").execution_id == "r-1"
    checked = verify(hot, cold_store=cold)
    assert checked.ok, checked.findings()


def _locked_history(bucket: Any) -> tuple[ObjectStore, ObjectStore, RetentionPolicy]:
    """On an Object Lock bucket, locks from the policy: an error execution's snapshot lock has
    passed (the fewest days any status keeps it) while its final state's has not (error: 100
    days). ``free-1`` has no lock at all. Dates relative to now: the locks are real."""
    hot = bucket.store(prefix="arch")
    locking = bucket.store(prefix="arch", object_lock_mode="COMPLIANCE", object_lock_days=1)
    cold = bucket.store(prefix="cold")
    policy = RetentionPolicy(
        name="split",
        hot_days=5,
        keep_days=10,
        statuses={"error": Rule(keep_days=100)},
        cold_store=cold.url,
    )
    created = datetime.now(UTC) - timedelta(days=40)
    _capture(Archive(locking, Sanitizer(KEY), retention_policy=policy), "err-1", created, "error")
    _capture(Archive(hot, Sanitizer(KEY)), "free-1", created, "error")
    lock_of = locking.object_lock  # type: ignore[attr-defined]
    assert lock_of(snapshot_key("err-1")).mode is None  # its date had passed: not locked
    assert lock_of(result_key("err-1")).mode == "COMPLIANCE"
    assert rebuild_index(hot).ok
    return hot, cold, policy


@pytest.mark.parametrize("backend", ["moto", "seaweedfs"])
def test_a_partly_locked_execution_stays_hot_whole(
    backend: str, s3_bucket_factory: Callable[[str], Any]
) -> None:
    hot, cold, policy = _locked_history(s3_bucket_factory(backend))
    report = archive_cold(hot, policy, datetime.now(UTC), cold_store=cold)
    assert [m["executionId"] for m in report.moved] == ["free-1"]
    assert [(r["object"], r["key"]) for r in report.retained_locked] == [
        ("err-1", result_key("err-1"))
    ]
    assert "COMPLIANCE retention until" in report.retained_locked[0]["reason"]
    # nothing of it moved: both objects hot, no copy, no tier event
    assert hot.head(snapshot_key("err-1")) is not None
    assert hot.head(result_key("err-1")) is not None
    assert cold.head(snapshot_key("err-1")) is None and cold.head(result_key("err-1")) is None
    assert {b["executionId"] for _, b in read_tier_events(hot)} == {"free-1"}
    assert cold_moved_executions(hot) == {"free-1"}
    checked = verify(hot, cold_store=cold)
    assert checked.ok, checked.findings()
    archive = Archive(hot, Sanitizer(KEY))
    assert archive.get_final_state("err-1") is not None
    # the next run says the same and changes nothing
    again = archive_cold(hot, policy, datetime.now(UTC), cold_store=cold)
    assert again.moved == [] and [r["object"] for r in again.retained_locked] == ["err-1"]


def test_a_split_left_by_an_earlier_run_is_made_whole(
    s3_bucket_factory: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that did not check the locks and died putting the snapshot back left the snapshot
    only in the cold store and the final state hot (what verify reports as snapshot_unreadable):
    the next run copies the snapshot back instead of leaving the execution split."""
    import archiver.retention as retention

    hot, cold, policy = _locked_history(s3_bucket_factory("seaweedfs"))
    with monkeypatch.context() as patch:
        patch.setattr(retention, "_locks", lambda store, keys: {})
        with pytest.raises(_Killed):
            archive_cold(_Wrapped(hot, kill_puts=True), policy, datetime.now(UTC), cold_store=cold)  # type: ignore[arg-type]
    assert hot.head(snapshot_key("err-1")) is None and hot.head(result_key("err-1")) is not None
    assert "snapshot_unreadable" in {f["problem"] for f in verify(hot, cold_store=cold).findings()}
    report = archive_cold(hot, policy, datetime.now(UTC), cold_store=cold)
    assert [r["object"] for r in report.retained_locked] == ["err-1"]
    assert "whole again" in report.retained_locked[0]["reason"]
    assert hot.head(snapshot_key("err-1")) is not None
    checked = verify(hot, cold_store=cold)
    assert checked.ok, checked.findings()
    assert Archive(hot, Sanitizer(KEY)).get_snapshot("err-1").execution_id == "err-1"


# --------------------------------------------------------------------------------------------
# every read of an archived execution: the same 409 `archived` with the restore route


@pytest.fixture(params=["local", "moto", "seaweedfs"])
def archived_history(
    request: pytest.FixtureRequest, tmp_path: Path, s3_bucket_factory: Callable[[str], Any]
) -> tuple[Archive, ObjectStore | None]:
    """``orig`` archived (a cold copy: local directories, SeaweedFS; the GLACIER storage class:
    moto), ``other`` and ``replay-1`` (a re-run of ``orig``) hot. (archive, cold store or None)."""
    cold: ObjectStore | None
    if request.param == "local":
        hot, cold = LocalStore(tmp_path / "hot"), LocalStore(tmp_path / "cold")
    else:
        bucket = s3_bucket_factory(request.param)
        hot = bucket.store(prefix="hot")
        cold = bucket.store(prefix="cold") if request.param == "seaweedfs" else None
    archive = Archive(hot, Sanitizer(KEY))
    _capture(archive, "orig", NOW - timedelta(days=50), "error")
    _capture(archive, "other", NOW - timedelta(days=2), "success")
    capture_received(
        archive,
        NOW - timedelta(days=1),
        execution_id="replay-1",
        workflow=_workflow("wf-a", 1),
        replay_of="orig",
    )
    if cold is None:
        policy = RetentionPolicy(
            name="cold", hot_days=30, keep_days="never", cold_storage_class="GLACIER"
        )
    else:
        policy = RetentionPolicy(name="cold", hot_days=30, keep_days="never", cold_store=cold.url)
    report = archive_cold(hot, policy, NOW, cold_store=cold)
    assert [m["executionId"] for m in report.moved] == ["orig"]
    archive._blob_cache.clear()
    return archive, cold


READS = (
    "/api/execution-snapshots/orig",
    "/api/execution-snapshots/orig/replay-validation",
    "/api/execution-snapshots/orig/replay-context",
    "/api/execution-snapshots/orig/compare/other",
    "/api/execution-snapshots/other/compare/orig",
    "/api/execution-snapshots/replay-1/compare-to-original",
    "/api/execution-snapshots/orig/tags",
    "/api/execution-snapshots/orig/annotations",
)


def test_every_read_of_an_archived_execution_is_the_same_409(
    archived_history: tuple[Archive, ObjectStore | None],
) -> None:
    archive, cold = archived_history
    client = Client(create_app(Settings(), archive=archive), raise_app_exceptions=False)
    expected = {
        "error": "archived",
        "message": "execution orig is archived in the cold tier; restore it first",
        "field": None,
        "state": "archived",
        "restore": "POST /api/execution-snapshots/orig/restore",
    }
    for url in READS:
        answer = client.get(url)
        assert (answer.status_code, answer.json()) == (409, expected), url
    exported = client.get("/api/compliance/export", params={"executionId": "orig"})
    assert exported.status_code == 409
    assert {k: exported.json()[k] for k in ("error", "state", "restore")} == {
        k: expected[k] for k in ("error", "state", "restore")
    }
    # the library says the same for the final state
    with pytest.raises(ObjectArchived) as final:
        archive.get_final_state("orig")
    assert final.value.execution_id == "orig"
    # after the restore every read works; the validation says where the objects are
    restored = client.post("/api/execution-snapshots/orig/restore", json={"days": 2})
    assert restored.status_code == 201, restored.text
    for url in READS:
        assert client.get(url).status_code == 200, url
    report = client.get("/api/execution-snapshots/orig/replay-validation").json()
    assert report["valid"] is True
    assert "archivingImplemented" not in report["archive"] and "note" not in report["archive"]
    state = report["archive"]
    assert state["archived"] is True and state["needsRestore"] is False
    assert sorted(state["objectsArchived"]) == sorted([snapshot_key("orig"), result_key("orig")])
    if cold is None:
        assert (state["tier"], state["storageClass"]) == ("storage-class", "GLACIER")
    else:
        assert (state["tier"], state["location"]) == ("cold-copy", cold.url)
        assert state["restoredUntil"] is not None
    hot_state = client.get("/api/execution-snapshots/other/replay-validation").json()["archive"]
    assert hot_state["tier"] == "hot" and hot_state["archived"] is False
