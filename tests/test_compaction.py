"""Manifest compaction: one file per table and day, no row lost or doubled, whatever happens."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from archiver.compaction import (
    COMPACTABLE_TABLES,
    COMPACTIONS_PREFIX,
    IDENTITY_COLUMNS,
    compact_index,
)
from archiver.errors import StoreUnavailable
from archiver.events import EventLog
from archiver.index import ManifestWriter, encode_part, parse_part_key, rebuild_index, verify
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from query import Catalog, executions_by_hash, version_list, workflow_history
from query.catalog import DEDUP_COLUMNS
from query.sql import SqlSandbox
from tests.test_index import T0, make_archive, populate, workflow

# populate() spreads its executions over 2024-03-01 … 03-04; "now" is well after that
LATER = datetime(2024, 4, 1, 12, 0, tzinfo=UTC)


def _later() -> datetime:
    return LATER


def _fill(store: ObjectStore) -> None:
    """The 12 executions of ``populate`` in parts of 2 rows, plus tag and annotation events
    (one part each) on two days: most (table, day) folders hold several parts."""
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=2) as writer:
        writer.attach(archive)
        populate(archive)
    ticks = iter(T0 + timedelta(hours=7 * i) for i in range(100))
    events = EventLog(store, clock=lambda: next(ticks))
    a0 = archive.get_snapshot("a-0")
    a1 = archive.get_snapshot("a-1")
    for snapshot in (a0, a1, a0, a1):
        events.add_tag(snapshot, "baseline")
    events.annotate(a1, text="slow", type="note")
    events.annotate(a1, text="HTTP 500", type="bug", node="HTTP")


def _extra_part(store: ObjectStore, folder: str) -> None:
    """One more part in ``folder`` (a copy of one that is there: duplicate rows), so that the
    folder surely holds two whatever the writer's flush timing did."""
    first = next(iter(store.list(folder + "/"))).key
    store.put(f"{folder}/part-extra-000001.parquet", store.get(first))


def _folders(store: ObjectStore) -> Counter[str]:
    """Files per ``<table>/dt=…`` folder."""
    found: Counter[str] = Counter()
    for info in store.list("index/"):
        if info.key.endswith(".parquet"):
            found[info.key.rsplit("/", 1)[0]] += 1
    return found


def _records(store: ObjectStore) -> list[str]:
    return [i.key for i in store.list(COMPACTIONS_PREFIX)]


def _canon(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _stored_rows(store: ObjectStore) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every stored row of every compactable table (with its day), counted."""
    rows: dict[str, Counter[tuple[Any, ...]]] = {t: Counter() for t in COMPACTABLE_TABLES}
    for info in store.list("index/"):
        table = info.key.split("/")[1]
        if table not in rows or not info.key.endswith(".parquet"):
            continue
        day = info.key.split("/")[2]
        for row in pq.read_table(pa.BufferReader(store.get(info.key))).to_pylist():
            rows[table][(day, *sorted((k, _canon(v)) for k, v in row.items()))] += 1
    return rows


def _distinct(rows: dict[str, Counter[tuple[Any, ...]]]) -> dict[str, set[tuple[Any, ...]]]:
    return {t: set(c) for t, c in rows.items()}


def _answers(catalog: Catalog) -> dict[str, Any]:
    """What users see: history and by-hash pages, versions, and counts over every view."""
    out: dict[str, Any] = {}
    for wf in ("wf-a", "wf-b"):
        out[f"history {wf}"] = [i.to_json() for i in workflow_history(catalog, wf).items]
        out[f"errors {wf}"] = [
            i.execution_id for i in workflow_history(catalog, wf, status="error").items
        ]
        out[f"versions {wf}"] = [v.to_json() for v in version_list(catalog, wf)]
    hashes = {row["snapshot_hash"] for row in catalog.rows("SELECT snapshot_hash FROM snapshots")}
    for h in sorted(hashes):
        out[f"hash {h}"] = [i.execution_id for i in executions_by_hash(catalog, h).items]
    for view in (*COMPACTABLE_TABLES, "executions"):
        out[f"count {view}"] = catalog.scalar(f"SELECT count(*) FROM {view}")
    out["by day"] = catalog.rows(
        "SELECT dt, status, count(*) AS n FROM executions GROUP BY ALL ORDER BY ALL"
    )
    # the analyst sandbox reads single-file days without deduplicating them
    sandbox = SqlSandbox(catalog)
    for view in (*COMPACTABLE_TABLES, "executions"):
        out[f"sql {view}"] = sandbox.run(
            f"SELECT dt, count(*) FROM {view} GROUP BY dt ORDER BY dt"
        ).rows()
    return out


def _assert_converged(store: ObjectStore, rows: dict[str, set[tuple[Any, ...]]]) -> None:
    """One file per table and day, no record left, every row exactly once, verify clean."""
    assert set(_folders(store).values()) == {1}
    assert _records(store) == []
    after = _stored_rows(store)
    assert _distinct(after) == rows
    assert all(n == 1 for counter in after.values() for n in counter.values())
    report = verify(store)
    assert report.ok, report.summary()
    assert report.duplicate_rows == []


# --------------------------------------------------------------------------------------------


def test_identity_columns_are_what_the_readers_deduplicate_on() -> None:
    assert set(IDENTITY_COLUMNS) == set(COMPACTABLE_TABLES)
    for table, columns in IDENTITY_COLUMNS.items():
        assert columns == tuple(c for c in DEDUP_COLUMNS[table] if c != "dt")


def test_compaction_keeps_every_row_and_leaves_one_file_per_day(store: ObjectStore) -> None:
    _fill(store)
    before = _stored_rows(store)
    folders = _folders(store)
    assert max(folders.values()) > 1
    assert {k.split("/")[1] for k in folders} == set(COMPACTABLE_TABLES)

    first = compact_index(store, clock=_later)  # default grace: nothing deleted yet
    assert first.ok, first.to_json()
    compacted = {f"index/{c['table']}/dt={c['day']}" for c in first.compacted}
    assert compacted == {folder for folder, n in folders.items() if n > 1}
    assert first.parts_deleted == [] and first.records_pending == len(first.compacted)
    expected: Counter[str] = Counter()
    for table, counter in before.items():
        expected[table] += sum(1 for r in counter if f"index/{table}/{r[0]}" in compacted)
    assert first.rows == {t: n for t, n in expected.items() if n}
    # parts and their merged file side by side: every row still there, nothing lost
    assert _distinct(_stored_rows(store)) == _distinct(before)
    assert all(folders[f] + 1 == n for f, n in _folders(store).items() if f in compacted)
    record = json.loads(store.get(_records(store)[0]))
    assert record["kind"] == "index-compaction" and record["replaced"] and record["outputs"]

    # each merged file is an index part like any other: same schema, sorted, bloom filters
    for entry in first.compacted:
        if entry["table"] != "snapshots":
            continue
        (output,) = entry["outputs"]
        parsed = parse_part_key(output)
        assert parsed is not None and parsed[2].startswith("cmp")
        meta = pq.ParquetFile(pa.BufferReader(store.get(output))).metadata
        assert meta.metadata[b"execvault.table"] == b"snapshots"
        data = pq.read_table(pa.BufferReader(store.get(output)))
        rows = data.to_pylist()
        assert store.get(output) == encode_part("snapshots", rows, writer_id=parsed[2])

    second = compact_index(store, clock=_later, grace_seconds=0)
    assert second.ok, second.to_json()
    assert second.compacted == []
    assert len(second.parts_deleted) == first.parts_replaced
    _assert_converged(store, _distinct(before))


def test_answers_are_identical_before_during_and_after(store: ObjectStore, tmp_path: Path) -> None:
    _fill(store)
    with Catalog(store, cache_dir=tmp_path / "cache", refresh_seconds=3600) as catalog:
        before = _answers(catalog)
        assert before["count snapshots"] == 12 and before["count tag_events"] == 4
        parts_before = set(catalog.manifests.files)

        compact_index(store, clock=_later)  # during: parts and merged files side by side
        catalog.refresh(force=True)
        assert set(catalog.manifests.files) > parts_before
        assert _answers(catalog) == before

        report = compact_index(store, clock=_later, grace_seconds=0)
        catalog.refresh(force=True)
        assert _answers(catalog) == before
        # deleted parts are gone from the mirror's file list and from the key map
        gone = {k.removeprefix("index/") for k in report.parts_deleted}
        assert gone and gone <= parts_before
        files = set(catalog.manifests.files)
        assert files == {i.key.removeprefix("index/") for i in store.list("index/")} - {
            i.key.removeprefix("index/") for i in store.list(COMPACTIONS_PREFIX)
        }
        assert not files & gone
        mapped = {r["file"] for r in catalog.rows("SELECT DISTINCT file FROM _key_days")}
        root = catalog.manifests.root
        assert mapped == {
            str(root / f) for f in files if f.split("/")[0] in ("snapshots", "final_states")
        }
    with Catalog(store, cache_dir=tmp_path / "cache2") as fresh:
        assert _answers(fresh) == before


def test_a_query_whose_files_vanish_is_answered_from_the_rest(
    store: ObjectStore, tmp_path: Path
) -> None:
    """The catalog chose its files; compaction deletes some of them before the query reads."""
    _fill(store)
    with Catalog(store, cache_dir=tmp_path / "cache", refresh_seconds=3600) as catalog:
        before = _answers(catalog)
        report = compact_index(store, clock=_later, grace_seconds=0)
        assert report.parts_deleted
        if isinstance(store, LocalStore):  # read in place: the files really are gone
            assert not all((catalog.manifests.root / f).exists() for f in catalog.manifests.files)
        assert _answers(catalog) == before
        catalog.refresh(force=True)
        assert _answers(catalog) == before


def test_a_crash_between_output_and_record_leaves_duplicates_that_the_next_run_merges(
    store: ObjectStore, tmp_path: Path
) -> None:
    _fill(store)
    rows = _distinct(_stored_rows(store))

    def crash(stage: str, done: int, total: int | None) -> None:
        if stage == "written":
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        compact_index(store, clock=_later, progress=crash, grace_seconds=0)
    assert _records(store) == []
    duplicated = _stored_rows(store)
    assert _distinct(duplicated) == rows
    assert any(n > 1 for c in duplicated.values() for n in c.values())  # the orphan output
    with Catalog(store, cache_dir=tmp_path / "cache") as catalog:
        assert catalog.scalar("SELECT count(*) FROM snapshots") == 12
        assert catalog.scalar("SELECT count(*) FROM node_runs") == len(rows["node_runs"])
        assert len(workflow_history(catalog, "wf-a").items) == 9
    assert verify(store).ok

    compact_index(store, clock=_later, grace_seconds=0)
    _assert_converged(store, rows)


@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize("stage", ["list", "written", "compact", "delete"])
def test_killed_at_any_stage_a_rerun_converges(stage: str, kind: str, tmp_path: Path) -> None:
    store: ObjectStore = MemoryStore() if kind == "memory" else LocalStore(tmp_path / "store")
    _fill(store)
    rows = _distinct(_stored_rows(store))
    calls = Counter[str]()

    def kill(at: str, done: int, total: int | None) -> None:
        calls[at] += 1
        if at == stage and calls[at] == 2 - (stage == "list"):
            raise RuntimeError(f"killed at {at}")

    with pytest.raises(RuntimeError, match="killed"):
        compact_index(store, clock=_later, progress=kill, grace_seconds=0)
    assert _distinct(_stored_rows(store)) == rows  # nothing lost at any point
    compact_index(store, clock=_later, grace_seconds=0)
    _assert_converged(store, rows)


class _Failing:
    """A store whose record writes or part deletes fail (after ``allow`` successful deletes)."""

    def __init__(self, inner: ObjectStore, *, records: bool = False, allow: int = -1) -> None:
        self.inner = inner
        self.url = inner.url
        self.records = records
        self.allow = allow

    def put(self, key: str, data: bytes) -> bool:
        if self.records and key.startswith(COMPACTIONS_PREFIX):
            raise StoreUnavailable(f"injected failure writing {key}")
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        if self.allow == 0:
            raise StoreUnavailable(f"injected failure deleting {key}")
        self.allow -= 1
        self.inner.delete(key)


def test_store_failures_mid_run_lose_nothing() -> None:
    store = MemoryStore()
    _fill(store)
    rows = _distinct(_stored_rows(store))
    with pytest.raises(StoreUnavailable):
        compact_index(_Failing(store, records=True), clock=_later, grace_seconds=0)
    assert _distinct(_stored_rows(store)) == rows
    report = compact_index(_Failing(store, allow=3), clock=_later, grace_seconds=0)
    assert not report.ok and report.delete_failures
    assert len(report.parts_deleted) + len(report.records_removed) == 3
    assert _distinct(_stored_rows(store)) == rows
    compact_index(store, clock=_later, grace_seconds=0)
    _assert_converged(store, rows)


def test_rerunning_changes_nothing() -> None:
    store = MemoryStore()
    _fill(store)
    compact_index(store, clock=_later, grace_seconds=0)
    keys = [i.key for i in store.list("")]
    again = compact_index(store, clock=_later, grace_seconds=0)
    assert again.ok and again.compacted == [] and again.parts_deleted == []
    assert [i.key for i in store.list("")] == keys


def test_two_compactors_racing_lose_no_row(store: ObjectStore) -> None:
    """B runs from start to end while A has written its outputs but not its records."""
    _fill(store)
    rows = _distinct(_stored_rows(store))
    raced = threading.Event()

    def race(stage: str, done: int, total: int | None) -> None:
        if stage == "written" and not raced.is_set():
            raced.set()
            b = compact_index(store, clock=_later, grace_seconds=0)
            assert b.ok, b.to_json()
            assert _distinct(_stored_rows(store)) == rows

    a = compact_index(store, clock=_later, grace_seconds=0, progress=race)
    assert raced.is_set()
    assert _distinct(_stored_rows(store)) == rows
    assert a.ok, a.to_json()
    compact_index(store, clock=_later, grace_seconds=0)
    compact_index(store, clock=_later, grace_seconds=0)
    _assert_converged(store, rows)


def test_threads_compacting_at_once_lose_no_row() -> None:
    store = MemoryStore()
    _fill(store)
    rows = _distinct(_stored_rows(store))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            compact_index(store, clock=_later, grace_seconds=0)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _distinct(_stored_rows(store)) == rows
    for _ in range(3):
        compact_index(store, clock=_later, grace_seconds=0)
    _assert_converged(store, rows)


def test_parts_written_during_a_run_are_left_for_the_next(store: ObjectStore) -> None:
    _fill(store)
    archive = make_archive(store)
    late: list[str] = []

    def capture_meanwhile(stage: str, done: int, total: int | None) -> None:
        if stage == "list" and not late:
            with ManifestWriter(store) as writer:
                writer.attach(archive)
                archive.capture_snapshot(
                    execution_id="late-1",
                    workflow=workflow(),
                    workflow_id="wf-a",
                    created_at=T0 + timedelta(minutes=1),
                    backfill=True,
                )
            late.extend(
                i.key
                for i in store.list("index/snapshots/dt=2024-03-01/")
                if writer.writer_id in i.key
            )

    report = compact_index(store, clock=_later, grace_seconds=0, progress=capture_meanwhile)
    assert late and report.ok
    assert store.head(late[0]) is not None  # not compacted, not deleted
    assert _folders(store)["index/snapshots/dt=2024-03-01"] == 2
    rows = _distinct(_stored_rows(store))
    compact_index(store, clock=_later, grace_seconds=0)
    _assert_converged(store, rows)
    assert any(("execution_id", "late-1") in r for r in rows["snapshots"])


def test_only_complete_days_unless_today_is_included() -> None:
    store = MemoryStore()
    _fill(store)
    day3 = "index/snapshots/dt=2024-03-03"
    _extra_part(store, day3)
    folders = _folders(store)

    def multi(day: str) -> set[tuple[str, str]]:
        return {(f.split("/")[1], day) for f, n in folders.items() if n > 1 and day in f}

    def on_day_two() -> datetime:
        return datetime(2024, 3, 2, 12, 0, tzinfo=UTC)

    report = compact_index(store, clock=on_day_two, grace_seconds=0)
    assert {(c["table"], c["day"]) for c in report.compacted} == multi("2024-03-01")
    assert ("tag_events", "2024-03-01") in multi("2024-03-01")  # an event is a part
    report = compact_index(store, clock=on_day_two, grace_seconds=0, include_today=True)
    assert {(c["table"], c["day"]) for c in report.compacted} == multi("2024-03-02")
    folders = _folders(store)
    report = compact_index(store, days=[date(2024, 3, 3)], tables=["snapshots"], grace_seconds=0)
    assert [(c["table"], c["day"]) for c in report.compacted] == [("snapshots", "2024-03-03")]
    after = _folders(store)
    assert after[day3] == 1
    assert {f: n for f, n in after.items() if f != day3} == {
        f: n for f, n in folders.items() if f != day3
    }


def test_a_part_is_deleted_only_when_a_present_output_holds_all_its_rows() -> None:
    store = MemoryStore()
    _fill(store)
    _extra_part(store, "index/snapshots/dt=2024-03-01")
    report = compact_index(store, clock=_later, tables=["snapshots"], days=[T0.date()])
    (entry,) = report.compacted
    (output,) = entry["outputs"]
    # a part written later (rows the output does not hold), then named in a forged record
    archive = make_archive(store)
    with ManifestWriter(store, writer_id="late") as writer:
        writer.attach(archive)
        archive.capture_snapshot(
            execution_id="late-1",
            workflow=workflow(),
            workflow_id="wf-a",
            created_at=T0,
            backfill=True,
        )
    late = "index/snapshots/dt=2024-03-01/part-late-000001.parquet"
    forged = {
        "kind": "index-compaction",
        "format": 1,
        "table": "snapshots",
        "day": "2024-03-01",
        "createdAt": "2024-03-05T00:00:00.000Z",
        "compactor": "cmpforged",
        "rows": 1,
        "outputs": [output],
        "replaced": [late],
    }
    store.put(
        f"{COMPACTIONS_PREFIX}snapshots/dt=2024-03-01/0-forged.json", json.dumps(forged).encode()
    )
    # and one whose output never existed
    ghost = {**forged, "outputs": ["index/snapshots/dt=2024-03-01/part-cmpghost-000001.parquet"]}
    ghost_key = f"{COMPACTIONS_PREFIX}snapshots/dt=2024-03-01/1-ghost.json"
    store.put(ghost_key, json.dumps(ghost).encode())

    report = compact_index(
        store, clock=_later, tables=["snapshots"], days=[T0.date()], grace_seconds=0
    )
    assert store.head(late) is not None
    assert any(p["key"] == late and "not in" in p["reason"] for p in report.problems)
    assert ghost_key in report.records_removed  # obsolete: its parts are ordinary parts again
    assert store.head(output) is not None


def test_object_lock_store_compacts_its_index(s3_bucket_factory: Callable[[str], Any]) -> None:
    """Index parts are exempt from Object Lock (the records stay locked): compaction deletes
    them. A store that locks its index parts too keeps them; compaction says so, readers agree."""
    bucket = s3_bucket_factory("seaweedfs")
    locked = bucket.store(prefix="a", object_lock_mode="GOVERNANCE", object_lock_days=1)
    _fill(locked)
    rows = _distinct(_stored_rows(locked))
    report = compact_index(locked, clock=_later, grace_seconds=0)
    assert report.ok, report.to_json()
    _assert_converged(locked, rows)

    strict = bucket.store(
        prefix="b",
        object_lock_mode="GOVERNANCE",
        object_lock_days=1,
        object_lock_exempt_prefixes=(),
    )
    _fill(strict)
    rows = _distinct(_stored_rows(strict))
    report = compact_index(strict, clock=_later, grace_seconds=0)
    assert not report.ok and report.delete_failures and report.parts_deleted == []
    assert _distinct(_stored_rows(strict)) == rows
    with Catalog(strict) as catalog:
        assert catalog.scalar("SELECT count(*) FROM snapshots") == 12
        assert len(workflow_history(catalog, "wf-a").items) == 9
    again = compact_index(strict, clock=_later, grace_seconds=0)
    assert again.compacted == []  # covered by the merged files: not merged a second time


def test_rebuild_after_compaction_and_records_it_leaves_behind(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _fill(store)
    compact_index(store, clock=_later)  # records pending
    assert _records(store)
    rebuilt = rebuild_index(store)
    assert rebuilt.ok
    assert verify(store).ok
    # the index tables' records are obsolete now (a rebuild replaced their outputs); the event
    # tables' (rebuild_index leaves them alone) are carried out
    report = compact_index(store, clock=_later, grace_seconds=0)
    assert report.ok and report.parts_deleted
    assert {k.split("/")[1] for k in report.parts_deleted} <= {"tag_events", "annotations"}
    assert _records(store) == []
    assert verify(store).ok


def test_cli_compact_index(tmp_path: Path) -> None:
    from api.cli import main

    store = LocalStore(tmp_path / "store")
    _fill(store)
    base = ["--store", f"local:{store.root}", "compact-index"]
    keys = [i.key for i in store.list("")]
    dry = CliRunner().invoke(main, [*base, "--dry-run", "--json", "--include-today"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["dryRun"] and plan["daysCompacted"] > 0
    assert [i.key for i in store.list("")] == keys
    out = CliRunner().invoke(main, [*base, "--grace-seconds", "0", "--json"])
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["ok"] and body["daysCompacted"] == plan["daysCompacted"]
    assert set(_folders(store).values()) == {1}
    text = CliRunner().invoke(main, base)
    assert text.exit_code == 0 and "compacted 0 day(s)" in text.stdout
    bad = CliRunner().invoke(main, [*base, "--grace-seconds", "-1"])
    assert bad.exit_code == 2


def test_the_index_chain_still_checks_out_after_compaction() -> None:
    """Sealed days keep their digests: compaction changes how rows are split into files only."""
    from archiver.chain import seal

    store = MemoryStore()
    _fill(store)
    seal(store, now=LATER)
    compact_index(store, clock=_later)
    during = verify(store)
    assert during.ok and during.chain_problems == [], during.summary()
    compact_index(store, clock=_later, grace_seconds=0)
    after = verify(store)
    assert after.ok and after.chain_problems == [], after.summary()
    assert set(_folders(store).values()) == {1}
