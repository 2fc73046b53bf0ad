"""The index heals by itself: after kill -9 and a plain restart, and while the store fails.

Defect 9 of "Green again": rows buffered at a kill were lost until someone ran rebuild-index; an
idempotent retry that found its object already stored wrote no row; a version row was dropped
when its commit could not be read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.archive import Archive
from archiver.errors import StoreUnavailable
from archiver.index import ManifestWriter, verify
from archiver.journal import find_orphans
from archiver.layout import result_key, snapshot_key, version_key
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from archiver.store.s3 import S3Store
from query.catalog import Catalog
from query.history import workflow_history
from tests.conftest import S3Bucket, S3Faults

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from crash_matrix import run_matrix  # noqa: E402

HMAC_KEY = bytes(range(32))
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def workflow(extra: int = 0) -> dict[str, Any]:
    nodes = [
        {"id": "t", "name": "Start", "type": "n8n-nodes-base.manualTrigger", "parameters": {}},
        {"id": "s", "name": "Set", "type": "n8n-nodes-base.set", "parameters": {"v": 1}},
    ]
    nodes += [
        {"id": f"x{i}", "name": f"X{i}", "type": "n8n-nodes-base.noOp", "parameters": {}}
        for i in range(extra)
    ]
    return {
        "id": "wf-heal",
        "name": "heal",
        "nodes": nodes,
        "connections": {"Start": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
    }


FINAL = {
    "status": "success",
    "startedAt": NOW.isoformat(),
    "finishedAt": (NOW + timedelta(seconds=2)).isoformat(),
    "nodes": {"Start": {"status": "success"}, "Set": {"status": "success"}},
}


def indexed(store: ObjectStore, table: str, column: str = "execution_id") -> list[str]:
    catalog = Catalog(store, refresh_seconds=0.0)
    try:
        return sorted(str(r[column]) for r in catalog.rows(f"SELECT {column} FROM {table}"))
    finally:
        catalog.close()


# ------------------------------------------------------------------------ kill -9 and restart


@pytest.mark.parametrize("backend", ["local", "seaweedfs"])
def test_kill_9_matrix_index_equals_acknowledged_after_a_plain_restart(
    backend: str, tmp_path: Path, s3_bucket_factory: Callable[[str], S3Bucket]
) -> None:
    """5 seeded kills per store while 3 clients ingest; each restart is a plain start (the
    writer recovers dead writers' journals by itself). No rebuild, no manual command."""
    if backend == "local":
        spec: dict[str, Any] = {"kind": "local", "root": str(tmp_path / "store")}
    else:
        bucket = s3_bucket_factory("seaweedfs")
        spec = {
            "kind": "s3",
            "config": {
                "bucket": bucket.name,
                "endpoint_url": bucket.endpoint_url,
                "access_key_id": bucket.access_key_id,
                "secret_access_key": bucket.secret_access_key,
                "region": bucket.region,
            },
        }
    result = run_matrix(spec, str(tmp_path / "journal"), kills=5, seed=20261207, max_acks=60)
    assert result.acked_snapshots >= 5 * 5 // 2
    assert result.missing_snapshots == [], result
    assert result.missing_final_states == [], result


def test_a_journal_of_a_dead_writer_is_indexed_by_the_next_writer(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    journal = tmp_path / "journal"
    archive = Archive(store, Sanitizer(HMAC_KEY))
    dead = ManifestWriter(store, flush_seconds=3600, journal_dir=journal).attach(archive)
    for i in range(4):
        archive.capture_snapshot(execution_id=f"d-{i}", workflow=workflow(i), created_at=NOW)
        archive.record_final_state(f"d-{i}", FINAL)
    assert dead.pending_rows > 0
    die(dead, archive)
    assert indexed(store, "snapshots") == []

    restarted = Archive(store, Sanitizer(HMAC_KEY))
    with ManifestWriter(store, flush_seconds=0.2, journal_dir=journal) as writer:
        writer.attach(restarted)  # a plain start: the writer's thread recovers by itself
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            not p.name.startswith(writer.writer_id) for p in journal.iterdir()
        ):
            time.sleep(0.05)
        assert writer.rows_recovered > 0
    ids = [f"d-{i}" for i in range(4)]
    assert indexed(store, "snapshots") == ids
    assert indexed(store, "final_states") == ids
    assert indexed(store, "versions", "seq") == ["1", "2", "3", "4"]
    catalog = Catalog(store, refresh_seconds=0.0)
    try:
        page = workflow_history(catalog, "wf-heal", limit=10)
    finally:
        catalog.close()
    assert sorted(i.execution_id for i in page.items) == ids
    report = verify(store)
    assert report.objects_without_rows == [] and report.ok, report.findings()
    assert list(journal.iterdir()) == []  # clean close: nothing left to recover


def test_recovery_waits_while_the_store_is_down_and_keeps_the_journal(tmp_path: Path) -> None:
    store = FlakyStore(LocalStore(tmp_path / "store"))
    journal = tmp_path / "journal"
    archive = Archive(store, Sanitizer(HMAC_KEY))
    dead = ManifestWriter(store, flush_seconds=3600, journal_dir=journal).attach(archive)
    archive.capture_snapshot(execution_id="w-1", workflow=workflow(), created_at=NOW)
    die(dead, archive)

    writer = ManifestWriter(store, flush_seconds=0.2, journal_dir=journal)
    try:
        store.down = True
        with pytest.raises(StoreUnavailable):
            writer.recover(Archive(store, Sanitizer(HMAC_KEY)))
        assert [o.writer_id for o in _orphans(journal, writer)] == [dead.writer_id]
        store.down = False
        assert writer.recover(Archive(store, Sanitizer(HMAC_KEY))) >= 1
        assert _orphans(journal, writer) == []
        writer.flush()
    finally:
        writer.close()
    assert indexed(store, "snapshots") == ["w-1"]


def die(writer: ManifestWriter, archive: Archive) -> None:
    """What kill -9 leaves behind: buffered rows gone, the journal files and lock file not
    (the lock itself is released by the kernel)."""
    writer.detach(archive)
    with writer._lock:
        writer._closed = True
        writer._buffers.clear()
    writer._wake.set()
    writer._journal.close(keep=True)  # type: ignore[union-attr]


def _orphans(journal: Path, writer: ManifestWriter) -> list[Any]:
    found = find_orphans(journal, exclude=writer.writer_id)
    for orphan in found:
        orphan.release()
    return found


# ------------------------------------------------------------------------ with the service up


class FlakyStore:
    """A store whose chosen operations fail: after a put that *did* store (a lost answer), on
    the next get of a key prefix, or on everything while ``down``."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.down = False
        self.lose_answer_of: set[str] = set()  # keys whose next put stores, then raises
        self.fail_next_get: list[str] = []  # prefixes: the next get under each raises
        self.arm_on_put: dict[str, str] = {}  # key put -> prefix whose next get then fails

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("injected: the store is down")

    def put(self, key: str, data: bytes) -> bool:
        self._check()
        created = self.inner.put(key, data)
        if key in self.arm_on_put:
            self.fail_next_get.append(self.arm_on_put.pop(key))
        if key in self.lose_answer_of:
            self.lose_answer_of.discard(key)
            raise StoreUnavailable("injected: the answer to this put was lost")
        return created

    def get(self, key: str) -> bytes:
        self._check()
        for prefix in self.fail_next_get:
            if key.startswith(prefix):
                self.fail_next_get.remove(prefix)
                raise StoreUnavailable("injected: get failed")
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        self._check()
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._check()
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._check()
        self.inner.delete(key)


@pytest.fixture(params=["memory", "local"])
def flaky(request: pytest.FixtureRequest, tmp_path: Path) -> FlakyStore:
    inner: ObjectStore = (
        MemoryStore() if request.param == "memory" else LocalStore(tmp_path / "store")
    )
    return FlakyStore(inner)


def test_a_final_state_retry_that_finds_its_record_stored_still_writes_its_row(
    flaky: FlakyStore,
) -> None:
    archive = Archive(flaky, Sanitizer(HMAC_KEY))
    with ManifestWriter(flaky, flush_seconds=3600) as writer:
        writer.attach(archive)
        archive.capture_snapshot(execution_id="f-1", workflow=workflow(), created_at=NOW)
        flaky.lose_answer_of.add(result_key("f-1"))
        with pytest.raises(StoreUnavailable):
            archive.record_final_state("f-1", FINAL)  # stored, but the caller hears 5xx
        again = archive.record_final_state("f-1", FINAL)  # the engine's retry
        assert not again.created
        writer.flush()
    assert indexed(flaky, "final_states") == ["f-1"]
    assert indexed(flaky, "node_runs") == ["f-1", "f-1"]


def test_a_capture_retry_that_finds_its_record_stored_still_writes_its_rows(
    flaky: FlakyStore,
) -> None:
    archive = Archive(flaky, Sanitizer(HMAC_KEY))
    with ManifestWriter(flaky, flush_seconds=3600) as writer:
        writer.attach(archive)
        flaky.lose_answer_of.add(snapshot_key("c-1"))
        with pytest.raises(StoreUnavailable):
            archive.capture_snapshot(execution_id="c-1", workflow=workflow(), created_at=NOW)
        again = archive.capture_snapshot(execution_id="c-1", workflow=workflow(), created_at=NOW)
        assert not again.created
        # a plain duplicate delivery of an execution this writer indexed adds no second row
        archive.capture_snapshot(execution_id="c-1", workflow=workflow(), created_at=NOW)
        writer.flush()
    assert indexed(flaky, "snapshots") == ["c-1"]
    assert indexed(flaky, "versions", "execution_id") == ["c-1"]


def test_a_version_row_is_not_dropped_when_its_commit_cannot_be_read(flaky: FlakyStore) -> None:
    archive = Archive(flaky, Sanitizer(HMAC_KEY))
    with ManifestWriter(flaky, flush_seconds=3600) as writer:
        writer.attach(archive)
        archive.capture_snapshot(execution_id="v-1", workflow=workflow(), created_at=NOW)
        # the writer's lookup of the new commit (right after the record is stored) fails once
        flaky.arm_on_put[snapshot_key("v-2")] = version_key("wf-heal", 1).rsplit("/", 1)[0]
        archive.capture_snapshot(execution_id="v-2", workflow=workflow(1), created_at=NOW)
        assert not flaky.fail_next_get  # the fault was hit
        writer.flush()  # retries the lookup
    assert indexed(flaky, "versions", "execution_id") == ["v-1", "v-2"]
    assert indexed(flaky, "snapshots") == ["v-1", "v-2"]


def test_moto_lost_put_answer_of_a_final_state_is_still_indexed(
    s3_store_factory: Callable[..., S3Store], s3_faults: Callable[[S3Store], S3Faults]
) -> None:
    """The S3 case: the PUT is committed but answered 500; the store's retry meets 412 and an
    identical object, so the write reports "already stored" (created=False)."""
    store = s3_store_factory("moto")
    archive = Archive(store, Sanitizer(HMAC_KEY))
    with ManifestWriter(store, flush_seconds=3600) as writer:
        writer.attach(archive)
        archive.capture_snapshot(execution_id="m-1", workflow=workflow(), created_at=NOW)
        faults = s3_faults(store)
        faults.fail("PutObject", 500, "InternalError")
        result = archive.record_final_state("m-1", FINAL)
        faults.remove()
        assert not result.created  # what the store saw: the object was already there
        writer.flush()
    assert indexed(store, "final_states") == ["m-1"]
