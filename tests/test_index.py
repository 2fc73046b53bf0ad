"""The Parquet index, write side: rows after objects, flush rules, writers, rebuild and verify."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archiver.archive import Archive
from archiver.codec import compress, decompress
from archiver.errors import ManifestError, StoreUnavailable
from archiver.index import (
    FINAL_STATES_SCHEMA,
    SNAPSHOTS_SCHEMA,
    VERSIONS_SCHEMA,
    ManifestWriter,
    parse_part_key,
    rebuild_index,
    verify,
)
from archiver.layout import result_key, snapshot_key, version_key
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore

HMAC_KEY = bytes(range(32))
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# shared helpers (test_query.py uses them too)


def make_archive(store: ObjectStore) -> Archive:
    return Archive(store, Sanitizer(HMAC_KEY))


def workflow(url: str = "https://example.com", *, extra: int = 0) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {
            "id": "t",
            "name": "Webhook",
            "type": "n8n-nodes-base.webhook",
            "typeVersion": 2,
            "position": [0, 0],
            "webhookId": "0b7d",
            "parameters": {"path": "hook"},
        },
        {
            "id": "h",
            "name": "HTTP",
            "type": "n8n-nodes-base.httpRequest",
            "typeVersion": 4.2,
            "position": [200, 0],
            "parameters": {"url": url},
        },
    ]
    connections: dict[str, Any] = {
        "Webhook": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}
    }
    for i in range(extra):
        nodes.append(
            {
                "id": f"s{i}",
                "name": f"Step {i}",
                "type": "n8n-nodes-base.set",
                "position": [400 + i, 0],
                "parameters": {},
            }
        )
    return {"name": "Demo", "nodes": nodes, "connections": connections, "settings": {}}


@dataclass(frozen=True)
class Captured:
    execution_id: str
    workflow_id: str
    created_at: datetime
    snapshot_hash: str
    version: str
    trigger_type: str
    status: str | None


def populate(archive: Archive) -> list[Captured]:
    """12 executions: wf-a (9, three versions, over three days, one timestamp tie), wf-b (3).

    wf-b runs wf-a's first structure, so one snapshot hash spans two workflows. Every third
    execution has no final state; statuses alternate between success and error.
    """
    plan: list[tuple[str, str, datetime, dict[str, Any], str]] = []
    for i in range(9):
        wf = (
            workflow()
            if i < 3
            else workflow("https://v2")
            if i < 6
            else workflow("https://v2", extra=1)
        )
        when = T0 + timedelta(hours=10 * i)
        if i == 5:
            when = T0 + timedelta(hours=10 * 4)  # same instant as a-4: ordered by execution id
        plan.append((f"a-{i}", "wf-a", when, wf, "webhook" if i % 2 else "manual"))
    for i in range(3):
        plan.append((f"b-{i}", "wf-b", T0 + timedelta(hours=5 + 20 * i), workflow(), "schedule"))
    captured = []
    for n, (execution_id, workflow_id, when, wf, trigger) in enumerate(plan):
        result = archive.capture_snapshot(
            execution_id=execution_id,
            workflow=wf,
            workflow_id=workflow_id,
            created_at=when,
            backfill=True,
            trigger_type=trigger,
            user_id="u1",
        )
        status = None
        if n % 3 != 2:
            status = "success" if n % 2 == 0 else "error"
            archive.record_final_state(
                execution_id,
                {
                    "status": status,
                    "startedAt": when.isoformat(),
                    "finishedAt": (when + timedelta(seconds=3)).isoformat(),
                    "nodes": {
                        "Webhook": {"status": "success"},
                        "HTTP": {
                            "status": status,
                            **({"error": {"message": "boom"}} if status == "error" else {}),
                        },
                    },
                },
            )
        snap = result.snapshot
        captured.append(
            Captured(
                execution_id,
                workflow_id,
                snap.created_at,
                snap.snapshot_hash,
                snap.snapshot_version,
                trigger,
                status,
            )
        )
    return captured


def index_rows(store: ObjectStore, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as stored (all parts, duplicates included), plus its part key."""
    rows = []
    for info in store.list(f"index/{table}/"):
        data = pq.read_table(pa.BufferReader(store.get(info.key)))
        for row in data.to_pylist():
            row["_part"] = info.key
            rows.append(row)
    return rows


def part_keys(store: ObjectStore) -> list[str]:
    return [i.key for i in store.list("index/")]


class FaultyStore:
    """Delegates to a store; ``fail(key)`` → raise StoreUnavailable instead of that put.

    ``commit_then_fail``: the put happens, yet the caller is told it failed (a lost answer).
    """

    def __init__(
        self,
        inner: ObjectStore,
        fail: Callable[[str], bool],
        *,
        commit_then_fail: bool = False,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail = fail
        self.commit_then_fail = commit_then_fail
        self.list_calls = 0

    def put(self, key: str, data: bytes) -> bool:
        if self.fail(key):
            if self.commit_then_fail:
                self.inner.put(key, data)
            raise StoreUnavailable(f"injected failure writing {key}")
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.list_calls += 1
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def _without(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in names}


def _by_key(rows: list[dict[str, Any]], *key: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[k] for k in key): _without(r, "_part", "recorded_at") for r in rows}


# --------------------------------------------------------------------------------------------
# rows


def test_captures_produce_typed_rows_after_flush(store: ObjectStore) -> None:
    archive = make_archive(store)
    with ManifestWriter(store, flush_seconds=3600, flush_rows=10_000) as writer:
        writer.attach(archive)
        captured = populate(archive)
        assert part_keys(store) == []  # nothing flushed yet: neither count nor age reached
        # snapshots, final states, versions, node runs (two nodes with one run each)
        assert writer.pending_rows == 12 + 8 + 4 + 16
        writer.flush()
        assert writer.pending_rows == 0

    snapshots = index_rows(store, "snapshots")
    assert sorted(r["execution_id"] for r in snapshots) == sorted(c.execution_id for c in captured)
    by_id = {r["execution_id"]: r for r in snapshots}
    for c in captured:
        row = by_id[c.execution_id]
        assert row["workflow_id"] == c.workflow_id
        assert row["snapshot_hash"] == c.snapshot_hash
        assert row["version"] == c.version
        assert row["created_at"] == c.created_at
        assert row["trigger_type"] == c.trigger_type
        assert row["object_key"] == snapshot_key(c.execution_id)
        assert row["_part"].split("/")[2] == f"dt={c.created_at.date().isoformat()}"
        assert row["node_count"] == (3 if c.version == "1.1.0" else 2)
        assert row["stored_bytes"] == store.head(row["object_key"]).size  # type: ignore[union-attr]
        assert row["raw_bytes"] > 0
    finals = {r["execution_id"]: r for r in index_rows(store, "final_states")}
    assert {k: r["status"] for k, r in finals.items()} == {
        c.execution_id: c.status for c in captured if c.status is not None
    }
    failed = finals["a-1"]
    assert failed["failed_nodes"] == ["HTTP"] and failed["first_failed_node"] == "HTTP"
    assert failed["error_count"] == 1 and failed["duration_ms"] == 3000
    assert failed["object_key"] == result_key("a-1")
    versions = sorted(
        (r["workflow_id"], r["seq"], r["version"]) for r in index_rows(store, "versions")
    )
    assert versions == [
        ("wf-a", 1, "1.0.0"),
        ("wf-a", 2, "1.0.1"),
        ("wf-a", 3, "1.1.0"),
        ("wf-b", 1, "1.0.0"),
    ]

    # types as documented: UTC millisecond timestamps, a list of strings, zstd, bloom filters
    first = next(iter(store.list("index/snapshots/"))).key
    parquet = pq.ParquetFile(pa.BufferReader(store.get(first)))
    schema = parquet.schema_arrow
    assert schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
    assert schema.remove_metadata().equals(SNAPSHOTS_SCHEMA)
    column = parquet.metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"
    final_part = next(iter(store.list("index/final_states/"))).key
    final_schema = pq.read_schema(pa.BufferReader(store.get(final_part)))
    assert final_schema.remove_metadata().equals(FINAL_STATES_SCHEMA)
    assert final_schema.field("failed_nodes").type == pa.list_(pa.string())
    version_part = next(iter(store.list("index/versions/"))).key
    assert (
        pq.read_schema(pa.BufferReader(store.get(version_part)))
        .remove_metadata()
        .equals(VERSIONS_SCHEMA)
    )
    for key in part_keys(store):
        parsed = parse_part_key(key)
        assert parsed is not None and parsed[2] == writer.writer_id


def test_parts_carry_bloom_filters_duckdb_can_probe(tmp_path: Path) -> None:
    import duckdb

    store = LocalStore(tmp_path / "store")
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        populate(archive)
    part = next(iter(store.list("index/snapshots/dt=2024-03-01/"))).key
    path = str(store.root / part)
    con = duckdb.connect()
    meta = con.execute(
        "SELECT path_in_schema, bloom_filter_offset IS NOT NULL FROM parquet_metadata(?)", [path]
    ).fetchall()
    with_bloom = {name for name, has in meta if has}
    assert {"execution_id", "workflow_id", "snapshot_hash"} <= with_bloom
    probe = con.execute(
        "SELECT bloom_filter_excludes FROM parquet_bloom_probe(?, 'execution_id', 'not-there')",
        [path],
    ).fetchall()
    assert probe == [(True,)]
    con.close()


def test_flush_by_row_count_and_by_age() -> None:
    store = MemoryStore()
    archive = make_archive(store)

    def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
        start = time.monotonic()
        while not condition():
            assert time.monotonic() - start < timeout, "timed out"
            time.sleep(0.01)
        return time.monotonic() - start

    with ManifestWriter(store, flush_rows=3, flush_seconds=3600) as writer:
        writer.attach(archive)
        for i in range(3):
            archive.capture_snapshot(
                execution_id=f"c{i}",
                workflow=workflow(),
                workflow_id="wf",
                created_at=T0,
                backfill=True,
            )
        wait_for(lambda: len(list(store.list("index/snapshots/"))) == 1)
        assert len(index_rows(store, "snapshots")) == 3

    store = MemoryStore()
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=1000, flush_seconds=0.2) as writer:
        writer.attach(archive)
        archive.capture_snapshot(execution_id="x", workflow=workflow(), workflow_id="wf")
        waited = wait_for(lambda: len(list(store.list("index/snapshots/"))) == 1)
        assert 0.1 < waited < 4.0  # due after 0.2 s; generous for a loaded machine
        assert [r["execution_id"] for r in index_rows(store, "snapshots")] == ["x"]


def test_close_writes_what_is_buffered_and_detaches() -> None:
    store = MemoryStore()
    archive = make_archive(store)
    writer = ManifestWriter(store, flush_seconds=3600).attach(archive)
    archive.capture_snapshot(execution_id="e", workflow=workflow(), workflow_id="wf")
    writer.close()
    assert [r["execution_id"] for r in index_rows(store, "snapshots")] == ["e"]
    assert archive.snapshot_observers == [] and archive.final_state_observers == []


def test_several_writers_on_one_store_never_collide(
    store: ObjectStore, reopen_store: Callable[..., ObjectStore]
) -> None:
    writers = [
        ManifestWriter(store, flush_rows=7, flush_seconds=3600),
        ManifestWriter(reopen_store(store), flush_rows=7, flush_seconds=3600),
        # two writers misconfigured with one id: they renumber instead of losing rows
        ManifestWriter(reopen_store(store), writer_id="shared", flush_rows=5, flush_seconds=3600),
        ManifestWriter(reopen_store(store), writer_id="shared", flush_rows=5, flush_seconds=3600),
    ]
    assert len({w.writer_id for w in writers[:2]}) == 2

    def feed(n: int, writer: ManifestWriter) -> None:
        for i in range(20):
            writer.add_row(
                "snapshots",
                {
                    "execution_id": f"w{n}-{i}",
                    "workflow_id": "wf",
                    "snapshot_id": "es_x",
                    "snapshot_hash": "0" * 64,
                    "version": "1.0.0",
                    "version_seq": 1,
                    "user_id": "u",
                    "trigger_type": "manual",
                    "created_at": T0,
                    "node_count": 1,
                    "workflow_name": None,
                    "object_key": f"executions/00/w{n}-{i}/snapshot.json.zst",
                    "blob_key": "blobs/sha256/00/x.json.zst",
                    "stored_bytes": 1,
                    "raw_bytes": 1,
                    "format_version": 1,
                    "replay_of": None,
                },
            )

    threads = [threading.Thread(target=feed, args=(n, w)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
    rows = index_rows(store, "snapshots")
    assert sorted(r["execution_id"] for r in rows) == sorted(
        f"w{n}-{i}" for n in range(4) for i in range(20)
    )
    keys = part_keys(store)
    assert len(keys) == len(set(keys)) == sum(w.parts_written for w in writers)


# --------------------------------------------------------------------------------------------
# invariant 2: the row comes after the object


class _CheckingWriter(ManifestWriter):
    """Asserts, for every row it is given, that the object the row points at already exists."""

    def add_row(self, table: str, row: Any) -> None:
        key = (
            row["object_key"]
            if table != "versions"
            else version_key(row["workflow_id"], row["seq"])
        )
        assert self.store.head(key) is not None, f"row for {key} before its object"
        super().add_row(table, row)


def test_rows_come_after_objects_and_a_failed_record_write_leaves_no_row(
    store: ObjectStore,
) -> None:
    failing = FaultyStore(store, lambda key: key == snapshot_key("broken"))
    archive = make_archive(failing)
    with _CheckingWriter(store, flush_seconds=3600) as writer:
        writer.attach(archive)
        archive.capture_snapshot(execution_id="ok-1", workflow=workflow(), workflow_id="wf")
        with pytest.raises(StoreUnavailable):
            # a new structure for a new workflow: blob and version commit are written, the
            # execution record is not
            archive.capture_snapshot(
                execution_id="broken", workflow=workflow("https://b"), workflow_id="wf-new"
            )
        writer.flush()
    assert [r["execution_id"] for r in index_rows(store, "snapshots")] == ["ok-1"]
    assert [r["workflow_id"] for r in index_rows(store, "versions")] == ["wf"]
    # the orphaned version commit is an object without a row; a rebuild indexes it
    report = verify(store)
    assert report.objects_without_rows == [version_key("wf-new", 1)]
    assert not report.ok
    rebuild_index(store)
    assert verify(store).ok


def test_a_failing_flush_keeps_rows_and_retries_without_duplicates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = MemoryStore()
    down = {"index": True}
    # the store commits the part but the answer is lost: the retry must reuse the same key
    store = FaultyStore(
        inner, lambda key: key.startswith("index/") and down["index"], commit_then_fail=True
    )
    archive = make_archive(inner)
    with ManifestWriter(store, flush_seconds=3600) as writer:
        writer.attach(archive)
        archive.capture_snapshot(execution_id="e1", workflow=workflow(), workflow_id="wf")
        with pytest.raises(ManifestError):
            writer.flush()
        assert writer.pending_rows == 2  # snapshot + version, kept for retry
        assert "rows kept" in caplog.text
        down["index"] = False
        assert writer.flush() == 2
        assert writer.pending_rows == 0
    assert len(list(inner.list("index/snapshots/"))) == 1
    assert [r["execution_id"] for r in index_rows(inner, "snapshots")] == ["e1"]

    # a store that refuses the write outright: rows stay queued until it recovers
    inner = MemoryStore()
    down["index"] = True
    store = FaultyStore(inner, lambda key: key.startswith("index/") and down["index"])
    with ManifestWriter(store, flush_seconds=0.05, retry_max_delay=0.05) as writer:
        writer.add_row("versions", _version_row())
        time.sleep(0.4)  # the thread retries in the background and fails each time
        assert writer.pending_rows == 1 and writer.write_failures >= 2
        down["index"] = False
    assert [r["seq"] for r in index_rows(inner, "versions")] == [1]


def _version_row() -> dict[str, Any]:
    return {
        "workflow_id": "wf",
        "seq": 1,
        "version": "1.0.0",
        "snapshot_hash": "a" * 64,
        "parent_seq": None,
        "parent_version": None,
        "parent_hash": None,
        "level": "initial",
        "summary": "initial version",
        "restores_seq": None,
        "restores_version": None,
        "created_at": T0,
        "execution_id": "e",
        "user_id": "u",
    }


# --------------------------------------------------------------------------------------------
# rebuild


def _all_rows(store: ObjectStore) -> dict[str, Any]:
    return {
        "snapshots": _by_key(index_rows(store, "snapshots"), "execution_id"),
        "final_states": _by_key(index_rows(store, "final_states"), "execution_id"),
        "versions": _by_key(index_rows(store, "versions"), "workflow_id", "seq"),
        "node_runs": _by_key(
            index_rows(store, "node_runs"), "execution_id", "node_name", "run_index"
        ),
    }


def test_rebuild_from_objects_alone_reproduces_the_live_index(
    store: ObjectStore, reopen_store: Callable[..., ObjectStore]
) -> None:
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=5) as writer:
        writer.attach(archive)
        populate(archive)
    live = _all_rows(store)
    old_parts = set(part_keys(store))
    assert len(old_parts) > 3

    # A live writer (another process) adds a capture while the rebuild runs, after the rebuild
    # listed the old parts: its part must survive.
    other = make_archive(reopen_store(store))
    late_writer = ManifestWriter(reopen_store(store)).attach(other)
    stages: list[str] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage == "old-parts":
            other.capture_snapshot(
                execution_id="late",
                workflow=workflow(),
                workflow_id="wf-late",
                created_at=T0,
                backfill=True,
            )
            late_writer.flush()
        stages.append(stage)

    report = rebuild_index(store, progress=progress)
    late_writer.close()
    assert {"old-parts", "executions", "versions", "remove-old-parts"} <= set(stages)
    assert report.ok and report.rows == {
        "snapshots": 13,
        "final_states": 8,
        "versions": 5,
        "node_runs": 16,
    }
    assert set(report.parts_removed) == old_parts
    remaining = set(part_keys(store))
    assert not remaining & old_parts
    assert set(report.parts_written) <= remaining
    assert report.parts_kept == 2  # the late snapshot and its version
    # one compacted part per table and day
    days = {(k.split("/")[1], k.split("/")[2]) for k in report.parts_written}
    assert len(days) == len(report.parts_written)

    rebuilt = _all_rows(store)
    assert rebuilt["snapshots"].pop(("late",))["workflow_id"] == "wf-late"
    assert rebuilt["versions"].pop(("wf-late", 1))["version"] == "1.0.0"
    assert rebuilt == live
    assert verify(store).ok


# --------------------------------------------------------------------------------------------
# verify


def test_verify_reports_missing_rows_missing_objects_and_tampering(store: ObjectStore) -> None:
    archive = make_archive(store)
    with ManifestWriter(store, flush_seconds=3600) as writer:
        writer.attach(archive)
        populate(archive)
    report = verify(store)
    assert report.ok, report.summary()
    assert report.objects == {"snapshots": 12, "final_states": 8, "versions": 4, "blobs": 3}
    assert report.rows == {"snapshots": 12, "final_states": 8, "versions": 4, "node_runs": 16}

    # 1. an object without a row: delete the part holding a-0's snapshot row
    part = next(r["_part"] for r in index_rows(store, "snapshots") if r["execution_id"] == "a-0")
    in_part = {r["execution_id"] for r in index_rows(store, "snapshots") if r["_part"] == part}
    store.delete(part)
    report = verify(store)
    assert not report.ok
    assert sorted(report.objects_without_rows) == sorted(snapshot_key(e) for e in in_part)
    rebuild_index(store)
    assert verify(store).ok

    # 2. a row without an object: delete b-2's snapshot record through the store
    store.delete(snapshot_key("b-2"))
    report = verify(store)
    assert [(p.table, p.key) for p in report.rows_without_objects] == [("snapshots", "b-2")]
    assert not report.ok

    # 3. a tampered object: same key, other bytes (delete + put: the store is write-once)
    key = snapshot_key("a-3")
    body = orjson.loads(decompress(store.get(key)))
    body["userId"] = "mallory"
    store.delete(key)
    store.put(key, compress(orjson.dumps(body)))
    report = verify(store)
    assert [p.key for p in report.hash_mismatches] == [key, result_key("a-3")]
    assert "digest" in report.hash_mismatches[0].reason
    assert "without a readable snapshot" in report.hash_mismatches[1].reason

    # a duplicated part: listed, yet not a failure (readers return each row once)
    store.delete(snapshot_key("a-3"))
    store.delete(result_key("a-3"))
    store.delete(snapshot_key("b-2"))
    rebuild_index(store)
    some = part_keys(store)[0]
    parsed = parse_part_key(some)
    assert parsed is not None
    store.put(some.replace(parsed[2], "copy"), store.get(some))
    report = verify(store)
    assert report.ok and report.duplicate_rows


def test_verify_grace_period_skips_objects_still_buffered() -> None:
    store = MemoryStore()
    archive = make_archive(store)
    archive.capture_snapshot(execution_id="fresh", workflow=workflow(), workflow_id="wf")
    assert not verify(store).ok
    assert verify(store, grace_seconds=60).ok


def test_rows_land_in_the_day_of_their_timestamp() -> None:
    store = MemoryStore()
    archive = make_archive(store)
    late = datetime(2024, 3, 1, 23, 59, 59, 999000, tzinfo=UTC)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        archive.capture_snapshot(
            execution_id="e", workflow=workflow(), workflow_id="wf", created_at=late, backfill=True
        )
        # finished after midnight: the final state belongs to the next day
        archive.record_final_state(
            "e", {"status": "success", "finishedAt": "2024-03-02T00:00:01Z", "nodes": {}}
        )
        # no finishedAt: the day of the snapshot (deterministic, so a rebuild agrees)
        archive.capture_snapshot(
            execution_id="f", workflow=workflow(), workflow_id="wf", created_at=late, backfill=True
        )
        archive.record_final_state("f", {"status": "crashed", "nodes": {}})
    days = {
        (table, r["execution_id"]): r["_part"].split("/")[2]
        for table in ("snapshots", "final_states")
        for r in index_rows(store, table)
    }
    assert days == {
        ("snapshots", "e"): "dt=2024-03-01",
        ("snapshots", "f"): "dt=2024-03-01",
        ("final_states", "e"): "dt=2024-03-02",
        ("final_states", "f"): "dt=2024-03-01",
    }
    before = _all_rows(store)
    rebuild_index(store)
    assert _all_rows(store) == before
    assert {parse_part_key(k)[1] for k in part_keys(store)} == {  # type: ignore[index]
        date(2024, 3, 1),
        date(2024, 3, 2),
    }
