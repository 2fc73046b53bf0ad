"""Retention learns its facts from the Parquet index: the same plan as from the records, records
read only for what the index lacks, and no deletion resting on an index row alone."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from archiver.archive import Archive
from archiver.events import EventLog, encode_event_part
from archiver.holds import clear_hold, set_hold, sync_object_holds
from archiver.index import ManifestWriter, encode_part
from archiver.layout import blob_key, result_key, snapshot_key
from archiver.retention import (
    RETENTION_EVENTS_SCHEMA,
    RetentionPlan,
    RetentionPolicy,
    Rule,
    archive_cold,
    encode_retention_part,
    expire,
    plan,
    read_index_facts,
    read_tier_events,
    rebuild_retention_index,
    restore_execution,
    scan,
)
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from tests.helpers import capture_received
from tests.test_retention import _workflow

NOW = datetime(2024, 6, 1, tzinfo=UTC)
WORKFLOWS = ("wf-a", "wf-b", "wf-c")
POLICY = RetentionPolicy(
    name="scan-test",
    hot_days=30,
    keep_days=90,
    statuses={"error": Rule(keep_days=730)},
    tags={"baseline": Rule(keep_days="never")},
)


def _capture(archive: Archive, age: int, *, final: bool = True) -> str:
    """Execution ``ex-<age>`` of ``age`` days; ages 32, 64, 96, … fail; no final state if not
    ``final``."""
    workflow_id = WORKFLOWS[age % 3]
    execution_id = f"ex-{age:03d}"
    when = NOW - timedelta(days=age, hours=1)
    capture_received(
        archive, when, execution_id=execution_id, workflow=_workflow(workflow_id, age // 60)
    )
    if final:
        _finish(archive, age)
    return execution_id


def _finish(archive: Archive, age: int) -> None:
    when = NOW - timedelta(days=age, hours=1)
    status = "error" if (age // 8) % 4 == 0 else "success"
    archive.record_final_state(
        f"ex-{age:03d}",
        {
            "status": status,
            "startedAt": when.isoformat(),
            "finishedAt": (when + timedelta(seconds=2)).isoformat(),
            "nodes": {"Webhook": {"status": "success"}, "HTTP": {"status": status}},
        },
    )


AGES = tuple(range(200, 0, -8))  # 25 executions, 8 days apart


def make_indexed(store: ObjectStore, ages: tuple[int, ...] = AGES) -> Archive:
    """Executions of ``ages`` (one without a final state), all indexed; ex-104 tagged
    ``baseline`` (moved there from ex-152), ex-096 tagged ``audit``."""
    archive = Archive(store, Sanitizer(bytes(range(32))))
    with ManifestWriter(store, flush_rows=10_000, flush_seconds=3600.0) as writer:
        writer.attach(archive)
        for age in ages:
            _capture(archive, age, final=age != 48)
    ticks = iter(range(1, 100))
    # one event per second: events of the same millisecond are ordered by their random ids
    events = EventLog(store, clock=lambda: NOW + timedelta(seconds=next(ticks)))
    events.add_tag(archive.get_snapshot("ex-152"), "baseline")
    events.add_tag(archive.get_snapshot("ex-104"), "baseline")
    events.add_tag(archive.get_snapshot("ex-096"), "audit")
    return archive


def _same(a: RetentionPlan, b: RetentionPlan) -> None:
    assert a.decisions == b.decisions
    assert a.expiring_blobs == b.expiring_blobs
    assert a.retained_blobs == b.retained_blobs
    assert a.summary() == b.summary()


class CountingStore:
    """Records the keys read through it (other methods pass through)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.gets: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes) -> bool:
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def _rewrite_row(store: ObjectStore, table: str, match: dict[str, Any], **change: Any) -> None:
    """Replace the index file holding the ``table`` row that matches ``match`` by one where that
    row says ``change`` instead (a corrupted or wrongly written index, for the test)."""
    for info in list(store.list(f"index/{table}/")):
        rows = pq.read_table(io.BytesIO(store.get(info.key))).to_pylist()
        hit = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
        if not hit:
            continue
        for row in hit:
            row.update(change)
        if table == "tag_events":
            data = encode_event_part(table, rows)
        elif table == "retention_events":
            data = encode_retention_part(rows)
        else:
            data = encode_part(table, rows)
        store.delete(info.key)
        store.put(info.key.replace(".parquet", "-x.parquet").replace("/part-", "/lie-"), data)
        return
    raise AssertionError(f"no {table} row {match}")


# --------------------------------------------------------------------------------------------


def test_plan_from_index_equals_plan_from_records(store: ObjectStore) -> None:
    make_indexed(store)
    from_records = plan(store, POLICY, NOW, use_index=False)
    from_index = plan(store, POLICY, NOW)
    _same(from_records, from_index)
    summary = from_index.summary()
    assert summary["toExpire"]["executions"] > 0 and summary["toCold"]["executions"] > 0
    scanned = scan(store, index=read_index_facts(store))
    assert (scanned.from_index, scanned.from_records) == (len(AGES), 0)
    by_id = {ex.execution_id: ex for ex in scanned.executions}
    assert by_id["ex-104"].tags == ("baseline",) and by_id["ex-152"].tags == ()
    assert by_id["ex-048"].status is None  # no final state
    assert by_id["ex-192"].status == "error" and by_id["ex-200"].status == "success"


def test_lagging_index_gives_the_same_plan(store: ObjectStore) -> None:
    archive = make_indexed(store, AGES[:15])
    # captured while no index writer ran: no rows yet (a writer that lags or died)
    for age in AGES[15:]:
        _capture(archive, age, final=False)
    for age in AGES[15:18]:
        _finish(archive, age)
    _finish(archive, 48)  # an indexed snapshot whose final state has no row
    _rewrite_row(store, "snapshots", {"execution_id": "ex-200"}, stored_bytes=1)  # stale size
    _same(plan(store, POLICY, NOW, use_index=False), plan(store, POLICY, NOW))
    scanned = scan(store, index=read_index_facts(store))
    assert scanned.from_records == len(AGES) - 15 + 1
    assert {ex.execution_id: ex.status for ex in scanned.executions}["ex-048"] == "success"
    truth = plan(store, POLICY, NOW, use_index=False)
    report = expire(store, POLICY, NOW, clock=lambda: NOW)
    assert report.skipped == []
    expired = {e["executionId"] for e in report.expired}
    assert expired == {d.execution_id for d in truth.decisions if d.action == "expire"}


def test_records_are_not_read_for_indexed_executions(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "s")
    archive = make_indexed(inner)
    _capture(archive, 5)  # no row: its records must be read
    store = CountingStore(inner)
    plan(store, POLICY, NOW)
    records = sorted(k.rsplit("/", 2)[1:] for k in store.gets if k.startswith("executions/"))
    assert records == [["ex-005", "result.json.zst"], ["ex-005", "snapshot.json.zst"]]
    assert not [k for k in store.gets if k.startswith("events/workflows/")]  # tags indexed
    assert [k for k in store.gets if k.startswith("index/")]
    store.gets.clear()
    plan(store, POLICY, NOW, use_index=False)
    assert len([k for k in store.gets if k.startswith("executions/")]) == 2 * len(AGES) + 1


@pytest.fixture(params=["memory", "local"])
def small(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    store: ObjectStore = MemoryStore() if request.param == "memory" else LocalStore(tmp_path / "s")
    make_indexed(store)
    return store


def test_a_lying_created_at_does_not_expire(small: ObjectStore) -> None:
    store = small
    young = "ex-008"
    lie = NOW - timedelta(days=400)
    _rewrite_row(store, "snapshots", {"execution_id": young}, created_at=lie)
    decisions = {d.execution_id: d.action for d in plan(store, POLICY, NOW).decisions}
    assert decisions[young] == "expire"  # the plan believes the index
    truth = {d.execution_id: d.action for d in plan(store, POLICY, NOW, use_index=False).decisions}
    report = expire(store, POLICY, NOW, clock=lambda: NOW)
    assert [s["executionId"] for s in report.skipped] == [young]
    assert "createdAt" in report.skipped[0]["reason"]
    assert store.head(f"executions/{_shard(store, young)}/{young}/snapshot.json.zst") is not None
    expired = {e["executionId"] for e in report.expired}
    assert expired == {e for e, a in truth.items() if a == "expire"}  # the others went
    snapshot = Archive(store, Sanitizer(bytes(range(32)))).get_snapshot(young)
    assert store.head(blob_key(snapshot.snapshot_hash)) is not None


def test_a_lying_status_or_tag_does_not_expire(small: ObjectStore) -> None:
    store = small
    # ex-128 failed (kept 730 days by its status); ex-104 is the baseline (kept for ever)
    _rewrite_row(store, "final_states", {"execution_id": "ex-128"}, status="success")
    _rewrite_row(store, "tag_events", {"execution_id": "ex-104", "tag": "baseline"}, tag="other")
    decisions = {d.execution_id: d.action for d in plan(store, POLICY, NOW).decisions}
    assert decisions["ex-128"] == decisions["ex-104"] == "expire"
    truth = {d.execution_id: d.action for d in plan(store, POLICY, NOW, use_index=False).decisions}
    assert truth["ex-128"] == truth["ex-104"] == "cold"
    report = expire(store, POLICY, NOW, clock=lambda: NOW)
    skipped = {s["executionId"]: s["reason"] for s in report.skipped}
    assert set(skipped) == {"ex-104", "ex-128"}
    assert "status 'success' (record: 'error')" in skipped["ex-128"]
    assert "tags ['other'] (record: ['baseline'])" in skipped["ex-104"]
    # the others expire; ex-152, which the lie leaves holding the baseline, is kept (a lie that
    # keeps is not checked: keeping is the safe side, the next run with a good index expires it)
    expired = {e["executionId"] for e in report.expired}
    assert expired == {e for e, a in truth.items() if a == "expire"} - {"ex-152"}
    left = {ex.execution_id for ex in scan(store).executions}
    assert {"ex-104", "ex-128", "ex-152"} <= left


def test_archive_checks_the_facts_it_records(small: ObjectStore, tmp_path: Path) -> None:
    store = small
    # ex-016 is hot (16 days); the index says 60 days: the plan moves it to the cold store
    _rewrite_row(
        store, "snapshots", {"execution_id": "ex-016"}, created_at=NOW - timedelta(days=60)
    )
    cold = LocalStore(tmp_path / "cold")
    report = archive_cold(store, POLICY, NOW, clock=lambda: NOW, cold_store=cold)
    assert [s["executionId"] for s in report.skipped] == ["ex-016"]
    assert report.moved and "ex-016" not in {m["executionId"] for m in report.moved}
    assert not [k for k, _ in read_tier_events(store) if "/ex-016/" in k]
    assert not [i.key for i in cold.list("executions/") if "/ex-016/" in i.key]
    # what moved recorded the records' facts: a plan from the records agrees on all the others
    truth = list(plan(store, POLICY, NOW, use_index=False).decisions)
    indexed = list(plan(store, POLICY, NOW).decisions)
    assert [d for d in truth if d.execution_id != "ex-016"] == [
        d for d in indexed if d.execution_id != "ex-016"
    ]
    assert {d.execution_id: d.action for d in truth}["ex-016"] == "hot"


def _shard(store: ObjectStore, execution_id: str) -> str:
    keys = [i.key for i in store.list("executions/") if f"/{execution_id}/" in i.key]
    return keys[0].split("/")[1]


# --------------------------------------------------------------------------------------------
# tier events from their retention_events rows

#: the retention_events columns added for the scan (older parts lack them)
TIER_FACT_COLUMNS = ("snapshot_created_at", "status", "key_sizes", "restored_until")


def _tier_gets(store: CountingStore) -> list[str]:
    return [k for k in store.gets if k.startswith("events/tiers/")]


def _cold_policy(tmp_path: Path) -> RetentionPolicy:
    return replace(POLICY, cold_store=f"local:{tmp_path / 'cold'}")


def _truth_expiring(store: ObjectStore, policy: RetentionPolicy, when: datetime = NOW) -> set[str]:
    truth = plan(store, policy, when, use_index=False)
    return {d.execution_id for d in truth.decisions if d.action == "expire"}


def test_plan_after_a_cold_copy_reads_no_tier_event_that_has_a_row(
    store: ObjectStore, tmp_path: Path
) -> None:
    make_indexed(store)
    policy = _cold_policy(tmp_path)
    cold = LocalStore(tmp_path / "cold")
    moved = {
        m["executionId"]
        for m in archive_cold(store, policy, NOW, clock=lambda: NOW, cold_store=cold).moved
    }
    assert len(moved) > 10
    counting = CountingStore(store)
    from_rows = plan(counting, policy, NOW)
    assert _tier_gets(counting) == []
    _same(plan(store, policy, NOW, use_index=False), from_rows)
    assert from_rows.summary()["alreadyCold"]["executions"] == len(moved)
    scanned = scan(store, index=read_index_facts(store))
    assert (scanned.tier_from_index, scanned.tier_events_read) == (len(moved), 0)

    # a restore writes its row at once: the restored execution is described from it as well
    assert restore_execution(store, "ex-040", clock=lambda: NOW, cold_store=cold) == "restored"
    counting.gets.clear()
    from_rows = plan(counting, policy, NOW)
    assert _tier_gets(counting) == []
    _same(plan(store, policy, NOW, use_index=False), from_rows)
    reason = {d.execution_id: d.reason for d in from_rows.decisions}["ex-040"]
    assert reason.startswith("restored from the cold copy until")

    # two months later, expire deletes cold-moved executions only after reading their tier event
    # (the row's word is checked, and the event names the cold copies)
    later = NOW + timedelta(days=60)
    truth = _truth_expiring(store, policy, later)
    assert truth & moved
    counting.gets.clear()
    report = expire(counting, policy, later, clock=lambda: later, cold_store=cold)
    assert report.skipped == []
    assert {e["executionId"] for e in report.expired} == truth
    read = {k.split("/")[4] for k in _tier_gets(counting)}
    assert read == truth & moved
    assert not [i.key for i in cold.list("executions/") if i.key.split("/")[2] in truth]


def test_tier_events_without_rows_are_read_and_give_the_same_plan(
    small: ObjectStore, tmp_path: Path
) -> None:
    store = small
    policy = _cold_policy(tmp_path)
    cold = LocalStore(tmp_path / "cold")
    moved = archive_cold(store, policy, NOW, clock=lambda: NOW, cold_store=cold).moved
    truth = plan(store, policy, NOW, use_index=False)
    counting = CountingStore(store)

    # parts written before the tier-fact columns existed: their events are read
    for info in list(store.list("index/retention_events/")):
        table = pq.read_table(io.BytesIO(store.get(info.key)))
        old = table.drop_columns(list(TIER_FACT_COLUMNS))
        sink = pa.BufferOutputStream()
        pq.write_table(old, sink, compression="zstd")
        store.delete(info.key)
        store.put(info.key.replace("/part-", "/part-old"), sink.getvalue().to_pybytes())
    _same(truth, plan(counting, policy, NOW))
    assert len(_tier_gets(counting)) == len(moved)

    # no rows at all (a run killed before it wrote its part): the same
    for info in list(store.list("index/retention_events/")):
        store.delete(info.key)
    counting.gets.clear()
    _same(truth, plan(counting, policy, NOW))
    assert len(_tier_gets(counting)) == len(moved)

    # rebuilt: the rows (with the facts) are back, no event is read
    assert rebuild_retention_index(store) == len(moved)
    counting.gets.clear()
    _same(truth, plan(counting, policy, NOW))
    assert _tier_gets(counting) == []


def test_plan_after_storage_class_moves_reads_no_tier_event_that_has_a_row(
    s3_store_factory: Callable[..., Any],
) -> None:
    store = s3_store_factory("moto")
    make_indexed(store)
    policy = replace(POLICY, keep_days=150, transitions=((30, "GLACIER_IR"), (100, "GLACIER")))
    report = archive_cold(store, policy, NOW, clock=lambda: NOW)
    by_class: dict[str, set[str]] = {}
    for m in report.moved:
        by_class.setdefault(m["storageClass"], set()).add(m["executionId"])
    assert set(by_class) == {"GLACIER_IR", "GLACIER"}
    counting = CountingStore(store)
    from_rows = plan(counting, policy, NOW)
    assert _tier_gets(counting) == []
    assert not [k for k in counting.gets if k.startswith("executions/")]
    truth = plan(store, policy, NOW, use_index=False)
    _same(truth, from_rows)
    assert from_rows.unreadable == ()
    scanned = scan(store, index=read_index_facts(store))
    assert scanned.tier_from_index == len(by_class["GLACIER"])
    assert scanned.tier_events_read == 0

    # two months later, expiring GLACIER ones reads their archive events first (a LIST, GETs)
    later = NOW + timedelta(days=60)
    expiring = _truth_expiring(store, policy, later)
    assert expiring & by_class["GLACIER"]
    counting.gets.clear()
    expired = expire(counting, policy, later, clock=lambda: later)
    assert expired.skipped == []
    assert {e["executionId"] for e in expired.expired} == expiring
    assert {k.split("/")[4] for k in _tier_gets(counting)} == expiring & by_class["GLACIER"]


def test_a_lying_tier_row_does_not_expire(small: ObjectStore, tmp_path: Path) -> None:
    store = small
    policy = _cold_policy(tmp_path)
    cold = LocalStore(tmp_path / "cold")
    archive_cold(store, policy, NOW, clock=lambda: NOW, cold_store=cold)
    young = "ex-040"  # in the cold store, 40 days old, kept 90
    _rewrite_row(
        store,
        "retention_events",
        {"execution_id": young, "action": "archive"},
        snapshot_created_at=NOW - timedelta(days=400),
    )
    assert {d.execution_id: d.action for d in plan(store, policy, NOW).decisions}[young] == "expire"
    truth = _truth_expiring(store, policy)
    assert young not in truth
    report = expire(store, policy, NOW, clock=lambda: NOW, cold_store=cold)
    assert [s["executionId"] for s in report.skipped] == [young]
    assert "retention_events row" in report.skipped[0]["reason"]
    assert "snapshot_created_at" in report.skipped[0]["reason"]
    assert {e["executionId"] for e in report.expired} == truth
    assert cold.head(f"executions/{_shard(cold, young)}/{young}/snapshot.json.zst") is not None
    # a row that disagrees with its event is never used by a move either
    assert young in {ex.execution_id for ex in scan(store).executions}


def test_retention_events_view_reads_old_and_new_parts(tmp_path: Path) -> None:
    from query.catalog import Catalog
    from query.sql import SqlSandbox

    store = LocalStore(tmp_path / "s")
    make_indexed(store)
    cold = LocalStore(tmp_path / "cold")
    policy = _cold_policy(tmp_path)
    moved = archive_cold(store, policy, NOW, clock=lambda: NOW, cold_store=cold).moved
    rows = []
    for info in list(store.list("index/retention_events/")):
        rows += pq.read_table(io.BytesIO(store.get(info.key))).to_pylist()
        store.delete(info.key)
    rows.sort(key=lambda r: r["execution_id"])
    half = len(rows) // 2
    old_schema = pa.schema([f for f in RETENTION_EVENTS_SCHEMA if f.name not in TIER_FACT_COLUMNS])
    sink = pa.BufferOutputStream()
    old_rows = [{k: v for k, v in r.items() if k not in TIER_FACT_COLUMNS} for r in rows[:half]]
    pq.write_table(pa.Table.from_pylist(old_rows, schema=old_schema), sink)
    day = f"index/retention_events/dt={NOW.date().isoformat()}"
    store.put(f"{day}/part-old-000001.parquet", sink.getvalue().to_pybytes())
    store.put(f"{day}/part-new-000001.parquet", encode_retention_part(rows[half:]))

    sql = (
        "SELECT execution_id, action, status, snapshot_created_at IS NOT NULL AS has_created, "
        "key_sizes FROM retention_events ORDER BY execution_id"
    )
    with Catalog(store) as catalog:
        got = SqlSandbox(catalog).run(sql).rows()
    assert [r[0] for r in got] == [r["execution_id"] for r in rows]
    for row, (_, action, status, has_created, sizes) in zip(rows, got, strict=True):
        assert action == "archive"
        if row in rows[:half]:
            assert (status, has_created, sizes) == (None, False, None)
        else:
            assert has_created and status == row["status"] and sizes == row["key_sizes"]
            assert sizes and all(s > 0 for s in sizes)
    # the scan reads the events of the old part only, and plans the same
    scanned = scan(store, index=read_index_facts(store))
    assert (scanned.tier_events_read, scanned.tier_from_index) == (half, len(moved) - half)
    _same(plan(store, policy, NOW, use_index=False), plan(store, policy, NOW))

    # only old parts: the view still answers (the added columns read as null)
    store.delete(f"{day}/part-new-000001.parquet")
    with Catalog(store) as catalog:
        got = SqlSandbox(catalog).run("SELECT count(*), count(status) FROM retention_events").rows()
    assert got == [[half, 0]]


# --------------------------------------------------------------------------------------------
# holds learn coverage from the index


def test_a_workflow_hold_reads_no_record_the_index_describes(
    s3_store_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_store_factory("moto")
    archive = make_indexed(store)
    _capture(archive, 5)  # no index row: its records are read (ex-005 is of wf-c)
    _capture(archive, 6)  # ex-006 of wf-a, no row either
    # a wf-c execution whose row says wf-a: covered by the set (more held), never released on it
    _rewrite_row(store, "snapshots", {"execution_id": "ex-200"}, workflow_id="wf-a")
    gets: list[str] = []
    real_get = store.get

    def counting_get(key: str) -> bytes:
        gets.append(key)
        return real_get(key)

    monkeypatch.setattr(store, "get", counting_get)
    wf_a = sorted(f"ex-{age:03d}" for age in (*AGES, 6) if age % 3 == 0)

    def records(ids: list[str]) -> list[str]:
        keys = [snapshot_key(e) for e in ids] + [result_key(e) for e in ids if e != "ex-048"]
        return sorted(keys)

    result = set_hold(store, "workflow", "wf-a", reason="case", by="legal")
    assert result.applied_to_objects
    assert sorted(result.objects) == records([*wf_a, "ex-200"])
    read = sorted(k for k in gets if k.startswith("executions/"))
    assert read == records(["ex-005", "ex-006"])  # the two without rows, nothing else

    gets.clear()
    cleared = clear_hold(store, "workflow", "wf-a", by="legal")
    assert sorted(cleared.objects) == records(wf_a)
    assert [k["key"] for k in cleared.kept] == records(["ex-200"])
    assert "workflowId 'wf-a' (record: 'wf-c')" in cleared.kept[0]["reason"]
    assert store.object_lock(snapshot_key("ex-200")).legal_hold is True
    # records read: the ones without rows, and the released ones' (checked before release)
    read = sorted({k for k in gets if k.startswith("executions/")})
    assert read == records(sorted({*wf_a, "ex-005", "ex-200"}))
    # sync releases nothing on the index's word either
    assert sync_object_holds(store).set_off == []
    assert store.object_lock(snapshot_key("ex-200")).legal_hold is True
