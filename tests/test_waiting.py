"""Executions that wait (n8n's Wait node, webhooks resumed later): reported twice, first
``waiting`` and then the resumed run's end. The waiting report is a create-only progress record,
the final state stays write-once, and every read prefers the final state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.archive import Archive
from archiver.errors import ImmutableConflict, NotFound
from archiver.index import ManifestWriter, rebuild_index, verify
from archiver.layout import execution_prefix, is_progress_key, result_key
from archiver.store.base import ObjectStore
from query import Catalog, workflow_history
from query.sql import SqlSandbox
from query.timeline import version_stats
from tests.test_index import T0, index_rows, make_archive, workflow


def _report(status: str, *, hours: int = 0, **extra: Any) -> dict[str, Any]:
    when = T0 + timedelta(hours=hours)
    body: dict[str, Any] = {
        "status": status,
        "startedAt": T0.isoformat(),
        "nodes": {"Webhook": {"status": "success"}},
        **extra,
    }
    if status not in ("waiting", "running", "new"):
        body["finishedAt"] = when.isoformat()
        body["nodes"] = {**body["nodes"], "HTTP": {"status": status}}
    return body


WAITING = _report("waiting", waitTill=(T0 + timedelta(days=2)).isoformat())


def _capture(archive: Archive, execution_id: str, workflow_id: str = "wf-w") -> None:
    archive.capture_snapshot(
        execution_id=execution_id,
        workflow=workflow(),
        workflow_id=workflow_id,
        created_at=T0,
        backfill=True,
    )


def test_waiting_then_the_end_are_both_kept(store: ObjectStore) -> None:
    archive = make_archive(store)
    _capture(archive, "w-1")
    first = archive.record_final_state("w-1", WAITING)
    assert first.created and first.final_state.status == "waiting"
    assert first.record is not None and is_progress_key(first.record.key)
    again = archive.record_final_state("w-1", WAITING)  # an identical re-send: idempotent
    assert not again.created and again.record is not None
    assert again.record.key == first.record.key
    assert archive.get_final_state("w-1") is None
    outcome = archive.get_outcome("w-1")
    assert outcome is not None and outcome.status == "waiting"

    end = archive.record_final_state("w-1", _report("success", hours=50))  # 409 before
    assert end.created and end.record is not None and end.record.key == result_key("w-1")
    final = archive.get_final_state("w-1")
    assert final is not None and final.status == "success" and len(final.nodes) == 2
    outcome = archive.get_outcome("w-1")
    assert outcome is not None and outcome.status == "success"  # the end wins
    progress = archive.get_progress("w-1")
    assert progress is not None and progress.status == "waiting"  # still kept

    assert not archive.record_final_state("w-1", _report("success", hours=50)).created
    with pytest.raises(ImmutableConflict):  # the final state stays write-once
        archive.record_final_state("w-1", _report("error", hours=50))
    assert not archive.record_final_state("w-1", WAITING).created  # a late identical re-send
    with pytest.raises(ImmutableConflict):  # a new progress report after the end
        archive.record_final_state("w-1", _report("running"))
    keys = [i.key for i in store.list(execution_prefix("w-1"))]
    assert sorted(k.rsplit("/", 1)[-1].split("-")[0] for k in keys) == [
        "progress",
        "result.json.zst",
        "snapshot.json.zst",
    ]


def test_two_waits_are_two_progress_records(store: ObjectStore) -> None:
    archive = make_archive(store)
    _capture(archive, "w-2")
    archive.record_final_state("w-2", WAITING)
    second = _report("waiting", waitTill=(T0 + timedelta(days=3)).isoformat())
    second["nodes"] = {**second["nodes"], "Wait": {"status": "success"}}
    assert archive.record_final_state("w-2", second).created
    progress = [i.key for i in store.list(execution_prefix("w-2")) if is_progress_key(i.key)]
    assert len(progress) == 2


def test_a_final_state_before_its_snapshot_says_to_capture_first(store: ObjectStore) -> None:
    archive = make_archive(store)
    with pytest.raises(NotFound, match="capture the snapshot first") as exc:
        archive.record_final_state("early", _report("success"))
    assert "safe" in str(exc.value)
    assert list(store.list("executions/")) == []  # nothing written
    _capture(archive, "early")
    assert archive.record_final_state("early", _report("success")).created  # retried later


def _final_rows(store: ObjectStore) -> dict[tuple[str, str], dict[str, Any]]:
    rows = {}
    for row in index_rows(store, "final_states"):
        clean = {k: v for k, v in row.items() if k not in ("_part", "part", "recorded_at")}
        rows[(row["execution_id"], row["object_key"])] = clean
    return rows


def test_index_history_sql_and_rebuild_prefer_the_final_state(
    store: ObjectStore, tmp_path: Path, reopen_store: Callable[..., ObjectStore]
) -> None:
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=3) as writer:
        writer.attach(archive)
        for eid in ("w-open", "w-done", "plain"):
            _capture(archive, eid)
        archive.record_final_state("w-open", WAITING)
        archive.record_final_state("w-done", WAITING)
        archive.record_final_state("w-done", _report("success", hours=60))
        archive.record_final_state("plain", _report("error", hours=1))
    live = _final_rows(store)
    assert len(live) == 4  # two progress rows, two final states
    assert len(index_rows(store, "node_runs")) == 4  # from the final states only

    def check(cache: Path) -> None:
        expected = {"w-open": "waiting", "w-done": "success", "plain": "error"}
        with Catalog(reopen_store(store), cache_dir=cache) as catalog:
            page = workflow_history(catalog, "wf-w", limit=10)
            assert {i.execution_id: i.status for i in page.items} == expected
            by_status = {
                s: [i.execution_id for i in workflow_history(catalog, "wf-w", status=s).items]
                for s in ("waiting", "success", "error")
            }
            assert by_status == {"waiting": ["w-open"], "success": ["w-done"], "error": ["plain"]}
            result = SqlSandbox(catalog).run(
                "SELECT execution_id, status FROM executions ORDER BY execution_id"
            )
            assert [tuple(r) for r in result.rows()] == sorted(expected.items())
            stats = version_stats(catalog, "wf-w")
            assert [(s.runs, s.finished, s.successes, s.failures) for s in stats.values()] == [
                (3, 2, 1, 1)
            ]

    check(tmp_path / "live")
    report = verify(store)
    assert report.ok, report.findings()
    assert not report.duplicate_rows

    rebuilt = rebuild_index(store)
    assert rebuilt.ok and rebuilt.rows["final_states"] == 4
    assert _final_rows(store) == live  # the same rows, from the objects alone
    check(tmp_path / "rebuilt")
    assert verify(store).ok


def test_compliance_export_and_holds_cover_progress_records(tmp_path: Path) -> None:
    from archiver.compliance import Selection, export_bundle
    from archiver.holds import _record_keys
    from archiver.store.memory import MemoryStore

    store = MemoryStore()
    archive = make_archive(store)
    _capture(archive, "w-x")
    record = archive.record_final_state("w-x", WAITING).record
    assert record is not None
    bundle = tmp_path / "bundle"
    export_bundle(store, Selection.parse(execution_ids=["w-x"]), bundle)
    assert (bundle / "objects" / record.key).read_bytes() == store.get(record.key)
    keys = [i.key for i in store.list(execution_prefix("w-x"))]
    assert record.key in _record_keys(keys)  # a legal hold reaches it too
