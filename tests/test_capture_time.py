"""Trusted time: client timestamps are bounded, the server stamps ``receivedAt``, retention and
Object Lock count from it, and an archive that already holds extreme dates stays readable."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from api.auth import token_digest
from api.cli import main
from archiver.archive import SNAPSHOT_KIND, Archive
from archiver.codec import encode_record
from archiver.config import load_settings
from archiver.errors import InvalidInput
from archiver.index import ManifestWriter
from archiver.layout import result_key, snapshot_key
from archiver.retention import RetentionPolicy, archive_cold, expire, plan
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.memory import MemoryStore
from archiver.timebounds import EARLIEST, TimeBounds
from archiver.timeutil import format_ts, utcnow
from query import Catalog, executions_by_hash, workflow_history
from query.timeline import workflow_timeline
from tests.helpers import HMAC_KEY
from tests.test_api import Client, make_app
from tests.test_index import workflow

SNAPSHOTS = "/api/execution-snapshots"
INGEST = "evt_time-ingest"
BACKFILL = "evt_time-backfill"
TOKENS = f"{token_digest(INGEST)}:ingest,read;{token_digest(BACKFILL)}:ingest,backfill,read"


def _archive(store: ObjectStore, **kw: Any) -> Archive:
    return Archive(store, Sanitizer(HMAC_KEY), **kw)


def _request(execution_id: str, **extra: Any) -> dict[str, Any]:
    return {"executionId": execution_id, "workflowId": "wf", "workflow": workflow(), **extra}


def _args(execution_id: str) -> dict[str, Any]:
    return {"execution_id": execution_id, "workflow_id": "wf", "workflow": workflow()}


def _keys(store: ObjectStore) -> list[str]:
    return sorted(info.key for info in store.list(""))


def _refused(field: str, call: Callable[[], object]) -> None:
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.field == field


def _out_of_window(now: datetime) -> list[object]:
    return [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
        format_ts(now - timedelta(days=2)),  # older than 24 h without backfill
        format_ts(now + timedelta(hours=1)),  # beyond the 5 min of skew
        1_000,  # epoch ms: 1970
    ]


# ---------------------------------------------------------------------------- createdAt bounds


def test_created_at_out_of_the_window_is_refused_before_anything_is_written(
    store: ObjectStore,
) -> None:
    archive = _archive(store)
    for when in _out_of_window(utcnow()):
        _refused(
            "createdAt",
            lambda when=when: archive.capture_snapshot(  # type: ignore[misc]
                execution_id="e1", workflow=workflow(), workflow_id="wf", created_at=when
            ),
        )
    assert _keys(store) == []  # no blob, no version commit, no record
    near = utcnow() - timedelta(hours=23)
    done = archive.capture_snapshot(
        execution_id="e1", workflow=workflow(), workflow_id="wf", created_at=near
    )
    assert done.created and done.snapshot.created_at == near.replace(
        microsecond=near.microsecond // 1000 * 1000
    )


def test_backfill_reaches_back_to_2000_but_never_into_the_future() -> None:
    store = MemoryStore()
    archive = _archive(store)
    now = utcnow()
    old = now - timedelta(days=400)
    result = archive.capture_snapshot(
        execution_id="old", workflow=workflow(), workflow_id="wf", created_at=old, backfill=True
    )
    assert result.snapshot.created_at < now - timedelta(days=399)
    assert result.snapshot.received_at is not None
    assert result.snapshot.received_at >= now
    before = _keys(store)
    for when in (EARLIEST - timedelta(milliseconds=1), now + timedelta(hours=1)):
        _refused(
            "createdAt",
            lambda when=when: archive.capture_snapshot(  # type: ignore[misc]
                execution_id="e2",
                workflow=workflow(),
                workflow_id="wf",
                created_at=when,
                backfill=True,
            ),
        )
    assert _keys(store) == before


def test_an_identical_resend_after_the_window_is_still_answered_from_the_store() -> None:
    now = [utcnow()]
    archive = _archive(MemoryStore(), clock=lambda: now[0])
    sent = now[0] - timedelta(hours=1)
    first = archive.capture_snapshot(**_args("e"), created_at=sent)
    now[0] += timedelta(days=3)  # the engine retries long after
    again = archive.capture_snapshot(**_args("e"), created_at=sent)
    assert not again.created and again.snapshot == first.snapshot


def test_the_window_is_configurable() -> None:
    settings = load_settings(
        environ={
            "EXECVAULT_CAPTURE_MAX_AGE_SECONDS": "60",
            "EXECVAULT_CAPTURE_MAX_SKEW_SECONDS": "0",
        }
    )
    bounds = settings.time_bounds()
    assert bounds == TimeBounds(max_skew=timedelta(0), max_age=timedelta(seconds=60))
    archive = _archive(MemoryStore(), time_bounds=bounds)
    now = utcnow()
    for when in (now - timedelta(minutes=2), now + timedelta(seconds=5)):
        _refused(
            "createdAt",
            lambda when=when: archive.capture_snapshot(  # type: ignore[misc]
                **_args("e"), created_at=when
            ),
        )
    _refused(
        "capture_max_age_seconds",
        load_settings({"capture_max_age_seconds": -1}).time_bounds,
    )


# ---------------------------------------------------------------------------- over HTTP


def test_http_old_created_at_needs_the_backfill_scope() -> None:
    app, store = make_app(tokens=TOKENS)
    old = format_ts(utcnow() - timedelta(days=30))
    response = Client(app, INGEST).post(SNAPSHOTS, json=_request("1", createdAt=old))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "createdAt"
    assert _keys(store) == []
    for when in ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"):
        response = Client(app, BACKFILL).post(SNAPSHOTS, json=_request("1", createdAt=when))
        assert response.status_code == 422 and response.json()["field"] == "createdAt"
    assert _keys(store) == []
    before = utcnow()
    response = Client(app, BACKFILL).post(SNAPSHOTS, json=_request("1", createdAt=old))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["createdAt"] == old
    received = datetime.fromisoformat(body["receivedAt"])
    assert before - timedelta(seconds=1) <= received <= utcnow()
    got = Client(app, INGEST).get(f"{SNAPSHOTS}/1").json()
    assert got["createdAt"] == old and got["receivedAt"] == body["receivedAt"]


def test_cli_put_backfills_only_when_asked(tmp_path: Path) -> None:
    request = tmp_path / "capture.json"
    old = format_ts(utcnow() - timedelta(days=30))
    request.write_text(json.dumps(_request("7", createdAt=old)))
    key = tmp_path / "hmac.key"
    key.write_text(HMAC_KEY.hex())
    base = ["--store", f"local:{tmp_path / 'data'}", "--hmac-key-file", str(key), "put"]
    refused = CliRunner().invoke(main, [*base, str(request)])
    assert refused.exit_code != 0 and "createdAt" in refused.output
    done = CliRunner().invoke(main, [*base, str(request), "--backfill"])
    assert done.exit_code == 0, done.output


# ---------------------------------------------------------------------------- final state bounds


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"startedAt": "0001-01-01T00:00:00Z"}, "startedAt"),
        ({"finishedAt": "9999-12-31T23:59:59Z"}, "finishedAt"),
        ({"stoppedAt": "9999-12-31T23:59:59Z"}, "stoppedAt"),
        ({"startedAt": "1999-12-31T23:59:59Z"}, "startedAt"),
    ],
)
def test_final_state_times_are_bounded(payload: dict[str, Any], field: str) -> None:
    store = MemoryStore()
    archive = _archive(store)
    archive.capture_snapshot(execution_id="e", workflow=workflow(), workflow_id="wf")
    _refused(
        field,
        lambda: archive.record_final_state("e", {"status": "success", "nodes": {}, **payload}),
    )
    assert store.head(result_key("e")) is None
    late = format_ts(utcnow() + timedelta(hours=2))
    _refused(
        "finishedAt",
        lambda: archive.record_final_state(
            "e", {"status": "success", "nodes": {}, "finishedAt": late}
        ),
    )
    assert archive.record_final_state("e", {"status": "success", "nodes": {}}).created


# ---------------------------------------------------------------------------- receivedAt


def test_receivedat_is_the_servers_clock_and_older_records_stay_readable() -> None:
    store = MemoryStore()
    server_now = utcnow()
    archive = _archive(store, clock=lambda: server_now)
    sent = server_now - timedelta(hours=3)
    snap = archive.capture_snapshot(
        execution_id="new", workflow=workflow(), workflow_id="wf", created_at=sent
    ).snapshot
    assert snap.received_at == server_now
    assert archive.get_snapshot("new").to_json()["receivedAt"] == format_ts(server_now)
    # a record written before servers stamped it: no receivedAt, still read (null)
    body = snap.record_body()
    del body["receivedAt"]
    body["executionId"] = "legacy"
    store.put(snapshot_key("legacy"), encode_record(SNAPSHOT_KIND, body))
    legacy = archive.get_snapshot("legacy")
    assert legacy.received_at is None and legacy.retention_start == legacy.created_at
    assert legacy.to_json()["receivedAt"] is None


# ---------------------------------------------------------------------------- retention


@pytest.mark.parametrize("use_index", [False, True])
def test_a_backfill_expires_by_when_it_was_received_not_by_its_created_at(
    use_index: bool,
) -> None:
    store = MemoryStore()
    archive = _archive(store)
    old = utcnow() - timedelta(days=400)
    with ManifestWriter(store, flush_rows=1) as writer:
        writer.attach(archive)
        archive.capture_snapshot(**_args("backfilled"), created_at=old, backfill=True)
    policy = RetentionPolicy(name="p", keep_days=90)
    if not use_index:  # the index plans from createdAt; expire then checks the record
        assert [d.action for d in plan(store, policy, use_index=False).decisions] == ["hot"]
    report = expire(store, policy, use_index=use_index)
    assert report.expired == []
    assert store.head(snapshot_key("backfilled")) is not None
    # a record without receivedAt (written before it existed) still counts from createdAt
    body = archive.get_snapshot("backfilled").record_body()
    del body["receivedAt"]
    body["executionId"] = "legacy"
    store.put(snapshot_key("legacy"), encode_record(SNAPSHOT_KIND, body))
    report = expire(store, policy, use_index=False)
    assert [e["executionId"] for e in report.expired] == ["legacy"]


def test_a_backfill_moved_to_the_cold_store_keeps_its_receivedat() -> None:
    """Planned from the index (createdAt only), archived to a cold store: the tier event must
    carry receivedAt, or expiry would later count from the backfill's old createdAt."""
    store, cold = MemoryStore(), MemoryStore()
    archive = _archive(store)
    with ManifestWriter(store, flush_rows=1) as writer:
        writer.attach(archive)
        archive.capture_snapshot(
            **_args("backfilled"), created_at=utcnow() - timedelta(days=400), backfill=True
        )
    report = archive_cold(
        store, RetentionPolicy(name="p", hot_days=30, keep_days=1000), cold_store=cold
    )
    assert [m["executionId"] for m in report.moved] == ["backfilled"], report.skipped
    assert store.head(snapshot_key("backfilled")) is None  # only in the cold store now
    expired = expire(store, RetentionPolicy(name="p", keep_days=90), cold_store=cold)
    assert expired.expired == []
    assert cold.head(snapshot_key("backfilled")) is not None


@pytest.mark.parametrize("backend", ["moto", "seaweedfs"])
def test_object_lock_counts_from_receivedat(
    backend: str, s3_bucket_factory: Callable[[str], Any]
) -> None:
    bucket = s3_bucket_factory(backend)
    store = bucket.store(prefix="arch", object_lock_mode="GOVERNANCE", object_lock_days=1)
    archive = _archive(store, retention_policy=RetentionPolicy(name="p", keep_days=30))
    # far dates: 422 before anything is written (no version commit without an execution)
    for when in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"):
        _refused(
            "createdAt",
            lambda when=when: archive.capture_snapshot(  # type: ignore[misc]
                execution_id="far",
                workflow=workflow(),
                workflow_id="wf",
                created_at=when,
                backfill=True,
            ),
        )
    assert _keys(store) == []
    # a backfill of 400 days ago is still locked for 30 days from its arrival
    before = utcnow()
    archive.capture_snapshot(
        execution_id="old",
        workflow=workflow(),
        workflow_id="wf",
        created_at=before - timedelta(days=400),
        backfill=True,
    )
    lock = store.object_lock(snapshot_key("old"))
    assert lock.mode == "GOVERNANCE" and lock.retain_until is not None
    expected = before + timedelta(days=30)
    assert abs(lock.retain_until - expected) < timedelta(minutes=1)
    # a capture dated 5 minutes ahead (the most skew allowed) is locked from its arrival too
    archive.capture_snapshot(
        execution_id="ahead",
        workflow=workflow(),
        workflow_id="wf",
        created_at=utcnow() + timedelta(minutes=4),
    )
    ahead = store.object_lock(snapshot_key("ahead")).retain_until
    assert ahead is not None and ahead <= utcnow() + timedelta(days=30)


# ---------------------------------------------------------------------------- reads


class _Unbounded(TimeBounds):
    """The bounds of a server before this change: anything parse_ts accepts."""

    def check_created_at(self, when: datetime, now: datetime, *, backfill: bool) -> None:
        return None

    def check_sane(self, when: datetime | None, now: datetime, field: str) -> None:
        return None


def test_an_archive_already_holding_year_1_and_9999_still_answers(store: ObjectStore) -> None:
    archive = _archive(store, time_bounds=_Unbounded())
    times = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", format_ts(utcnow())]
    with ManifestWriter(store, flush_rows=1) as writer:
        writer.attach(archive)
        for n, when in enumerate(times):
            digest = archive.capture_snapshot(
                execution_id=f"e{n}", workflow=workflow(), workflow_id="wf", created_at=when
            ).snapshot.snapshot_hash
            archive.record_final_state(
                f"e{n}", {"status": "success", "startedAt": when, "finishedAt": when, "nodes": {}}
            )
    catalog = Catalog(store, None)
    try:
        expected = ["e1", "e2", "e0"]
        for fetch in (
            lambda cursor: workflow_history(catalog, "wf", limit=1, cursor=cursor),
            lambda cursor: workflow_history(
                catalog, "wf", limit=1, cursor=cursor, status="success"
            ),
            lambda cursor: executions_by_hash(catalog, digest, limit=1, cursor=cursor),
        ):
            seen: list[str] = []
            cursor = None
            while True:
                page = fetch(cursor)
                seen += [item.execution_id for item in page.items]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert seen == expected
        timeline = workflow_timeline(archive, catalog, "wf", limit=10)
        runs = [a["executionId"] for a in timeline["axis"] if a["kind"] == "execution"]
        assert runs == expected
    finally:
        catalog.close()


def test_history_over_http_answers_with_extreme_dates_stored() -> None:
    app, store = make_app()
    archive = app.state.archive
    archive.time_bounds = _Unbounded()
    with ManifestWriter(store, flush_rows=1) as writer:
        writer.attach(archive)
        for n, when in enumerate(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"]):
            archive.capture_snapshot(
                execution_id=f"e{n}", workflow=workflow(), workflow_id="wf", created_at=when
            )
    client = Client(app)
    first = client.get(f"{SNAPSHOTS}/workflow/wf/history", params={"limit": 1})
    assert first.status_code == 200, first.text
    cursor = first.json()["nextCursor"]
    second = client.get(f"{SNAPSHOTS}/workflow/wf/history", params={"limit": 1, "cursor": cursor})
    assert second.status_code == 200, second.text
    ids = [i["executionId"] for i in first.json()["items"] + second.json()["items"]]
    assert ids == ["e1", "e0"]
