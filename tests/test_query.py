"""The read path: DuckDB views over the manifests, history, hash lookups, the manifest mirror."""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pytest

from archiver.errors import InvalidId, InvalidInput
from archiver.index import ManifestWriter, parse_part_key, rebuild_index
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from query import (
    Catalog,
    HistoryPage,
    ManifestCache,
    current_version,
    executions_by_hash,
    version_list,
    workflow_history,
)
from tests.test_index import T0, Captured, FaultyStore, make_archive, populate, workflow


def _indexed(store: ObjectStore) -> list[Captured]:
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=4) as writer:  # several parts per day
        writer.attach(archive)
        return populate(archive)


def _newest_first(items: list[Captured]) -> list[str]:
    ordered = sorted(items, key=lambda c: (c.created_at, c.execution_id), reverse=True)
    return [c.execution_id for c in ordered]


def _all_pages(fetch: Callable[[str | None], HistoryPage]) -> list[list[str]]:
    pages = []
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        pages.append([item.execution_id for item in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_history_newest_first_with_filters_and_cursor_pagination(
    store: ObjectStore, tmp_path: Path
) -> None:
    captured = _indexed(store)
    wf_a = [c for c in captured if c.workflow_id == "wf-a"]
    with Catalog(store, cache_dir=tmp_path / "cache") as catalog:
        page = workflow_history(catalog, "wf-a", limit=50)
        assert [i.execution_id for i in page.items] == _newest_first(wf_a)
        assert page.next_cursor is None
        # a-4 and a-5 share a timestamp: the execution id breaks the tie, descending
        ids = [i.execution_id for i in page.items]
        assert ids.index("a-5") == ids.index("a-4") - 1

        item = {i.execution_id: i for i in page.items}
        by_id = {c.execution_id: c for c in captured}
        for execution_id, got in item.items():
            want = by_id[execution_id]
            assert (got.created_at, got.snapshot_hash, got.version, got.trigger_type) == (
                want.created_at,
                want.snapshot_hash,
                want.version,
                want.trigger_type,
            )
            assert got.status == want.status
        assert item["a-1"].failed_nodes == ("HTTP",) and item["a-1"].error_count == 1
        assert item["a-1"].to_json()["createdAt"] == "2024-03-01T20:00:00.000Z"

        # cursor pagination: pages of 4 (and of 1) give exactly the same set, in order
        for size in (4, 1):
            pages = _all_pages(
                lambda cur, size=size: workflow_history(catalog, "wf-a", limit=size, cursor=cur)
            )
            assert [x for p in pages for x in p] == _newest_first(wf_a)
            assert all(len(p) == size for p in pages[:-1])

        def ids_of(**filters: Any) -> list[str]:
            return [i.execution_id for i in workflow_history(catalog, "wf-a", **filters).items]

        assert ids_of(status="error") == _newest_first([c for c in wf_a if c.status == "error"])
        assert ids_of(status=["error", "success"]) == _newest_first(
            [c for c in wf_a if c.status is not None]
        )
        assert ids_of(trigger_type="webhook") == _newest_first(
            [c for c in wf_a if c.trigger_type == "webhook"]
        )
        assert ids_of(version="1.0.1") == _newest_first([c for c in wf_a if c.version == "1.0.1"])
        since, until = T0 + timedelta(hours=20), T0 + timedelta(hours=50)
        assert ids_of(since=since, until=until) == _newest_first(
            [c for c in wf_a if since <= c.created_at < until]
        )
        assert ids_of(since="2024-03-02T00:00:00Z") == _newest_first(
            [c for c in wf_a if c.created_at >= T0.replace(day=2, hour=0)]
        )
        paged = _all_pages(
            lambda cur: workflow_history(catalog, "wf-a", status="success", limit=2, cursor=cur)
        )
        assert [x for p in paged for x in p] == ids_of(status="success")
        assert workflow_history(catalog, "nobody").items == []

        # by hash: wf-b runs wf-a's first structure
        first_hash = by_id["a-0"].snapshot_hash
        same = [c for c in captured if c.snapshot_hash == first_hash]
        assert {c.workflow_id for c in same} == {"wf-a", "wf-b"}
        pages = _all_pages(lambda cur: executions_by_hash(catalog, first_hash, limit=2, cursor=cur))
        assert [x for p in pages for x in p] == _newest_first(same)
        hits = executions_by_hash(catalog, first_hash).items
        assert {i.execution_id: i.status for i in hits} == {c.execution_id: c.status for c in same}

        versions = version_list(catalog, "wf-a")
        assert [(v.seq, v.version, v.level) for v in versions] == [
            (3, "1.1.0", "minor"),
            (2, "1.0.1", "patch"),
            (1, "1.0.0", "initial"),
        ]
        assert versions[0].parent_version == "1.0.1" and versions[0].execution_id == "a-6"
        head = current_version(catalog, "wf-a")
        assert head is not None and head.version == "1.1.0"
        assert current_version(catalog, "nobody") is None

        # the executions view: one row per execution, with its outcome
        rows = catalog.rows(
            "SELECT execution_id, status FROM executions WHERE workflow_id = ? "
            "ORDER BY created_at DESC, execution_id DESC",
            ["wf-a"],
        )
        assert [r["execution_id"] for r in rows] == _newest_first(wf_a)
        assert {r["execution_id"]: r["status"] for r in rows} == {
            c.execution_id: c.status for c in wf_a
        }


def test_bad_arguments_are_refused_before_any_query() -> None:
    with Catalog(MemoryStore()) as catalog:
        page = workflow_history(catalog, "wf", limit=1)
        assert page.items == []
        for bad in ("../x", "a/b", "", "x" * 300):
            with pytest.raises(InvalidId):
                workflow_history(catalog, bad)
        with pytest.raises(InvalidId):
            executions_by_hash(catalog, "ABC")
        for limit in (0, -1, 1001):
            with pytest.raises(InvalidInput) as err:
                workflow_history(catalog, "wf", limit=limit)
            assert err.value.field == "limit"
        for cursor in ("garbage!", "e30", "W10"):
            with pytest.raises(InvalidInput) as err:
                workflow_history(catalog, "wf", cursor=cursor)
            assert err.value.field == "cursor"
        with pytest.raises(InvalidInput):
            workflow_history(catalog, "wf", since="yesterday")
        with pytest.raises(InvalidInput):
            workflow_history(catalog, "wf", status="x" * 100)
        # a value is a value, never SQL
        assert workflow_history(catalog, "wf", trigger_type="x' OR '1'='1").items == []


def test_a_cursor_belongs_to_its_listing() -> None:
    store = MemoryStore()
    captured = _indexed(store)
    with Catalog(store) as catalog:
        cursor = executions_by_hash(catalog, captured[0].snapshot_hash, limit=1).next_cursor
        assert cursor is not None
        with pytest.raises(InvalidInput):
            workflow_history(catalog, "wf-a", cursor=cursor)


def test_empty_index_then_fresh_rows(store: ObjectStore) -> None:
    with Catalog(store, refresh_seconds=0) as catalog:
        for view in ("snapshots", "final_states", "versions", "executions"):
            assert catalog.rows(f"SELECT * FROM {view}") == []
        assert catalog.scalar("SELECT count(*) FROM executions") == 0
        assert workflow_history(catalog, "wf-a").items == []
        assert version_list(catalog, "wf-a") == []
        captured = _indexed(store)
        assert len(workflow_history(catalog, "wf-a").items) == 9
        assert catalog.scalar("SELECT count(*) FROM executions") == len(captured)
        assert catalog.scalar("SELECT count(*) FROM final_states") == 8
        assert catalog.scalar("SELECT count(*) FROM versions") == 4


def test_same_rows_in_two_files_are_returned_once(store: ObjectStore) -> None:
    captured = _indexed(store)
    # as if a compaction wrote the day's rows into a new file and had not removed the parts yet
    for info in list(store.list("index/")):
        parsed = parse_part_key(info.key)
        assert parsed is not None
        store.put(info.key.replace(parsed[2], "compacted"), store.get(info.key))
    with Catalog(store) as catalog:
        raw = catalog.scalar(
            "SELECT count(*) FROM read_parquet($glob)",
            {"glob": catalog.manifests.glob("snapshots")},
        )
        assert raw == 2 * len(captured)
        assert catalog.scalar("SELECT count(*) FROM snapshots") == len(captured)
        assert catalog.scalar("SELECT count(*) FROM executions") == len(captured)
        assert catalog.scalar("SELECT count(*) FROM final_states") == 8
        assert catalog.scalar("SELECT count(*) FROM versions") == 4
        wf_a = [c for c in captured if c.workflow_id == "wf-a"]
        assert [i.execution_id for i in workflow_history(catalog, "wf-a").items] == _newest_first(
            wf_a
        )
        assert len(version_list(catalog, "wf-a")) == 3


def test_rebuilt_index_answers_like_the_live_one(store: ObjectStore, tmp_path: Path) -> None:
    captured = _indexed(store)
    hashes = sorted({c.snapshot_hash for c in captured})

    def answers(catalog: Catalog) -> Any:
        return (
            [i.to_json() for wf in ("wf-a", "wf-b") for i in workflow_history(catalog, wf).items],
            [i.to_json() for h in hashes for i in executions_by_hash(catalog, h).items],
            [v.to_json() for v in version_list(catalog, "wf-a")],
            catalog.rows("SELECT * EXCLUDE (recorded_at) FROM executions ORDER BY execution_id"),
        )

    with Catalog(store, cache_dir=tmp_path / "c", refresh_seconds=0) as catalog:
        live = answers(catalog)
        old = {i.key for i in store.list("index/")}
        report = rebuild_index(store)
        assert set(report.parts_removed) == old
        rebuilt = answers(catalog)
        if not isinstance(store, LocalStore):
            # the mirror follows: new files in, old ones out (deleted from disk after a grace)
            assert catalog.manifests.files == {
                k.removeprefix("index/") for k in report.parts_written
            }
    assert rebuilt == live


def test_mirror_downloads_each_part_once_and_refreshes_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import query.manifests

    now = [1000.0]  # the mirror's clock, moved by hand: a loaded machine cannot make this flaky
    monkeypatch.setattr(query.manifests, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    store = FaultyStore(MemoryStore(), lambda _key: False)
    _indexed(store.inner)
    parts = len(list(store.inner.list("index/")))
    catalog = Catalog(store, cache_dir=tmp_path / "mirror", refresh_seconds=1.0)
    try:
        assert catalog.manifests.downloads == parts
        lists = store.list_calls
        for _ in range(20):
            workflow_history(catalog, "wf-a")
            now[0] += 0.04
        assert store.list_calls == lists  # within refresh_seconds: no listing at all
        now[0] += 1.05
        workflow_history(catalog, "wf-a")
        assert store.list_calls == lists + 1
        assert catalog.manifests.downloads == parts  # nothing new: nothing downloaded
    finally:
        catalog.close()
    # a second catalog on the same cache directory reuses the files already there
    with Catalog(store, cache_dir=tmp_path / "mirror") as again:
        assert again.manifests.downloads == 0
        assert len(workflow_history(again, "wf-a").items) == 9


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_concurrent_queries_while_the_index_changes(kind: str, tmp_path: Path) -> None:
    store: ObjectStore = MemoryStore() if kind == "memory" else LocalStore(tmp_path / "data")
    _indexed(store)
    errors: list[BaseException] = []
    stop = threading.Event()
    with Catalog(store, cache_dir=tmp_path / "m", refresh_seconds=0) as catalog:

        def reader() -> None:
            try:
                while not stop.is_set():
                    assert len(workflow_history(catalog, "wf-a").items) == 9
                    assert catalog.scalar("SELECT count(*) FROM versions") == 4
            except BaseException as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(3):  # new files appear, old ones vanish, under the readers' feet
            rebuild_index(store)
        stop.set()
        for t in threads:
            t.join()
    assert errors == [], repr(errors[:1])


def test_plain_pyarrow_and_plain_duckdb_read_the_local_index(tmp_path: Path) -> None:
    """No project code on the read side: the folder alone answers "executions of X, newest first"."""
    store = LocalStore(tmp_path / "data")
    captured = _indexed(store)
    expected = _newest_first([c for c in captured if c.workflow_id == "wf-a"])
    index = tmp_path / "data" / "index"

    dataset = pds.dataset(str(index / "snapshots"), format="parquet", partitioning="hive")
    table = dataset.to_table(filter=pc.field("workflow_id") == "wf-a").sort_by(
        [("created_at", "descending"), ("execution_id", "descending")]
    )
    assert table.column("execution_id").to_pylist() == expected
    assert str(table.schema.field("created_at").type) == "timestamp[ms, tz=UTC]"

    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT s.execution_id, f.status
        FROM read_parquet('{index}/snapshots/*/*.parquet', hive_partitioning = true) AS s
        LEFT JOIN read_parquet('{index}/final_states/*/*.parquet', hive_partitioning = true) AS f
          USING (execution_id)
        WHERE s.workflow_id = 'wf-a'
        ORDER BY s.created_at DESC, s.execution_id DESC
        """
    ).fetchall()
    con.close()
    assert [r[0] for r in rows] == expected
    assert {r[0]: r[1] for r in rows} == {
        c.execution_id: c.status for c in captured if c.workflow_id == "wf-a"
    }


def test_local_store_is_read_in_place(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    _indexed(store)
    with Catalog(store, cache_dir=tmp_path / "unused") as catalog:
        assert catalog.index_dir == str(tmp_path / "data" / "index")
        assert catalog.manifests.downloads == 0
        assert not (tmp_path / "unused").exists()
        assert len(workflow_history(catalog, "wf-b").items) == 3


def test_mirror_removes_files_whose_keys_are_gone_after_a_grace(tmp_path: Path) -> None:
    store = MemoryStore()
    _indexed(store)
    mirror = ManifestCache(store, tmp_path / "m", refresh_seconds=0, grace_seconds=0.2)
    mirror.refresh()
    before = set(mirror.files)
    on_disk = {p.relative_to(mirror.root).as_posix() for p in mirror.root.rglob("*.parquet")}
    assert on_disk == before and before
    report = rebuild_index(store)
    mirror.refresh()
    after = {k.removeprefix("index/") for k in report.parts_written}
    assert mirror.files == after
    assert (mirror.root / next(iter(before))).exists()  # still there for queries under way
    time.sleep(0.25)
    mirror.refresh()
    on_disk = {p.relative_to(mirror.root).as_posix() for p in mirror.root.rglob("*.parquet")}
    assert on_disk == after
    mirror.close()


def test_final_states_recorded_days_after_the_start_are_found(store: ObjectStore) -> None:
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        # late-4 finished 30 days before its capture (clock skew, a backfill, a fixed example
        # date), late-5 three days after: both are found wherever their day partitions are
        plan = [(0, 12), (1, None), (2, 2), (30, 30), (40, 10), (41, 44)]
        for i, (started, finished) in enumerate(plan):
            when = T0 + timedelta(days=started)
            archive.capture_snapshot(
                execution_id=f"late-{i}",
                workflow=workflow(),
                workflow_id="wf",
                created_at=when,
                backfill=True,
            )
            if finished is not None:
                archive.record_final_state(
                    f"late-{i}",
                    {
                        "status": "error" if i == 0 else "success",
                        "finishedAt": (T0 + timedelta(days=finished)).isoformat(),
                        "nodes": {},
                    },
                )
    expected = {
        "late-5": "success",
        "late-4": "success",
        "late-3": "success",
        "late-2": "success",
        "late-1": None,
        "late-0": "error",
    }
    with Catalog(store) as catalog:
        page = workflow_history(catalog, "wf")
        assert {i.execution_id: i.status for i in page.items} == expected
        assert [i.execution_id for i in page.items] == list(expected)
        # page by page: each page looks for its final states separately
        pages = _all_pages(lambda cur: workflow_history(catalog, "wf", limit=1, cursor=cur))
        assert [x for p in pages for x in p] == list(expected)
        errors = workflow_history(catalog, "wf", status="error", limit=1)
        assert [(i.execution_id, i.status) for i in errors.items] == [("late-0", "error")]
        assert errors.next_cursor is None
        successes = workflow_history(catalog, "wf", status="success")
        assert [i.execution_id for i in successes.items] == ["late-5", "late-4", "late-3", "late-2"]
        head = executions_by_hash(catalog, page.items[0].snapshot_hash, limit=2)
        assert [(i.execution_id, i.status) for i in head.items] == [
            ("late-5", "success"),
            ("late-4", "success"),
        ]
        by_hash = executions_by_hash(
            catalog, page.items[0].snapshot_hash, limit=2, cursor=head.next_cursor
        )
        assert [(i.execution_id, i.status) for i in by_hash.items] == [
            ("late-3", "success"),
            ("late-2", "success"),
        ]
        rest = executions_by_hash(catalog, page.items[0].snapshot_hash, cursor=by_hash.next_cursor)
        assert [(i.execution_id, i.status) for i in rest.items] == [
            ("late-1", None),
            ("late-0", "error"),
        ]
