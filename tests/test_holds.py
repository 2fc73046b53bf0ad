"""Legal holds (events, API, CLI) and Object Lock retention derived from the retention policy."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest
from click.testing import CliRunner

from api.app import create_app
from api.cli import main
from archiver.archive import Archive, earliest_keep_days
from archiver.config import Settings
from archiver.errors import InvalidInput, NotFound
from archiver.events import EventLog
from archiver.holds import HOLDS_PREFIX, active_holds, clear_hold, set_hold, sync_object_holds
from archiver.layout import result_key, snapshot_key
from archiver.retention import RetentionPolicy, Rule, expire, plan
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from archiver.store.s3 import S3Store
from tests.helpers import HMAC_KEY, capture_received

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)  # past the default keep_days (365)
KEEP_90 = RetentionPolicy(name="p", keep_days=90)


def _workflow(workflow_id: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "name": f"flow {workflow_id}",
        "nodes": [
            {
                "id": "t",
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "parameters": {"path": "hook"},
            }
        ],
        "connections": {},
    }


def _capture(archive: Archive, execution_id: str, workflow_id: str, when: datetime) -> None:
    capture_received(archive, when, execution_id=execution_id, workflow=_workflow(workflow_id))
    archive.record_final_state(
        execution_id,
        {
            "status": "success",
            "startedAt": when.isoformat(),
            "finishedAt": (when + timedelta(seconds=1)).isoformat(),
            "nodes": {"Webhook": {"status": "success"}},
        },
    )


def _old_history(store: ObjectStore) -> Archive:
    """Five old executions: e1, e2 of wf-a; e3, e4 of wf-b (e4 tagged ``litigation``); e5 of
    wf-c. All past keep_days=90."""
    archive = Archive(store, Sanitizer(HMAC_KEY))
    for n, wf in enumerate(("wf-a", "wf-a", "wf-b", "wf-b", "wf-c"), 1):
        _capture(archive, f"e{n}", wf, OLD + timedelta(minutes=n))
    EventLog(store).add_tag(archive.get_snapshot("e4"), "litigation")
    return archive


def _http(app: Any, method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    async def go() -> Any:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, url, json=body, headers=headers)

    return asyncio.run(go())


def _hold_status(store: ObjectStore, key: str) -> bool:
    assert isinstance(store, S3Store)
    return store.object_lock(key).legal_hold


# --------------------------------------------------------------------------------------------
# holds as data: every store


def test_holds_through_the_api_block_expiry_on_every_store(
    store: ObjectStore, store_backend: str
) -> None:
    archive = _old_history(store)
    app = create_app(Settings(), archive=archive)
    placed = [
        ("execution", "e1", "audit 7"),
        ("workflow", "wf-b", "case 2026-17"),
        ("tag", "litigation", "tagged for court"),
    ]
    for scope, target, reason in placed:
        answer = _http(
            app,
            "POST",
            "/api/retention/holds",
            {"scope": scope, "target": target, "reason": reason},
        )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["hold"]["action"] == "set" and body["hold"]["reason"] == reason
        on_objects = store_backend in ("moto", "seaweedfs")
        assert body["appliedToObjects"] is on_objects
        if not on_objects:
            assert "data only" in body["note"]
    # placing it again changes nothing: 200, no new event
    again = _http(
        app, "POST", "/api/retention/holds", {"scope": "execution", "target": "e1", "reason": "x"}
    )
    assert again.status_code == 200 and again.json()["created"] is False
    assert len(list(store.list(HOLDS_PREFIX))) == 3

    listed = _http(app, "GET", "/api/retention/holds").json()
    assert {(h["scope"], h["target"]) for h in listed["holds"]} == {
        ("execution", "e1"),
        ("workflow", "wf-b"),
        ("tag", "litigation"),
    }

    dry = _http(app, "POST", "/api/retention/expire", {"dryRun": True})
    assert dry.status_code == 200
    assert dry.json()["toExpire"]["executions"] == 2  # e2, e5
    assert dry.json()["heldByLegalHold"]["executions"] == 3
    report = _http(app, "POST", "/api/retention/expire", {})
    assert report.status_code == 201, report.text
    assert {e["executionId"] for e in report.json()["executions"]} == {"e2", "e5"}
    assert report.json()["heldByLegalHold"] == 3
    for kept in ("e1", "e3", "e4"):
        assert archive.get_snapshot(kept).execution_id == kept

    # clearing the workflow hold: e4 stays held by its tag, e3 is free
    cleared = _http(app, "DELETE", "/api/retention/holds/workflow/wf-b?reason=closed")
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["hold"]["action"] == "clear"
    if store_backend in ("moto", "seaweedfs"):
        assert sorted(cleared.json()["objects"]) == [result_key("e3"), snapshot_key("e3")]
        assert {k["key"] for k in cleared.json()["objectsKept"]} == {
            result_key("e4"),
            snapshot_key("e4"),
        }
        assert _hold_status(store, snapshot_key("e4")) is True
        assert _hold_status(store, snapshot_key("e3")) is False
    assert _http(app, "DELETE", "/api/retention/holds/workflow/wf-b").status_code == 404
    report = expire(store, KEEP_90)
    assert [e["executionId"] for e in report.expired] == ["e3"]
    assert sorted(report.held) == ["e1", "e4"]


def test_hold_events_are_write_once_records_and_fold_to_the_latest() -> None:
    store = MemoryStore()
    first = set_hold(store, "workflow", "wf-a", reason="r1", by="alice")
    assert first.created and first.event.by == "alice"
    clear_hold(store, "workflow", "wf-a", by="bob", reason="done")
    assert len(active_holds(store)) == 0
    set_hold(store, "workflow", "wf-a", reason="again", by="carol")
    holds = active_holds(store)
    assert [e.reason for e in holds] == ["again"]
    assert holds.reason_for("x", "wf-a", ()) == "legal hold on workflow wf-a (again)"
    assert holds.reason_for("x", "wf-z", ("t",)) is None
    keys = [i.key for i in store.list(HOLDS_PREFIX)]
    assert len(keys) == 3 and all(k.startswith("events/holds/workflow/wf-a/") for k in keys)
    with pytest.raises(NotFound):
        clear_hold(store, "tag", "nothing-here", by="bob")


def test_policy_file_holds_and_hold_events_count_together() -> None:
    store = MemoryStore()
    _old_history(store)
    policy = RetentionPolicy(name="p", keep_days=90, hold_executions=frozenset({"e2"}))
    set_hold(store, "workflow", "wf-c", reason="r", by="alice")
    decided = {d.execution_id: d for d in plan(store, policy, NOW).decisions}
    assert decided["e2"].action == "held" and "execution e2" in decided["e2"].reason
    assert decided["e5"].action == "held" and "workflow wf-c (r)" in decided["e5"].reason
    assert decided["e1"].action == "expire"


@pytest.mark.parametrize(
    ("scope", "target", "field"),
    [("nope", "x", "scope"), ("execution", "../x", "target"), ("tag", "Not A Tag", "target")],
)
def test_bad_holds_are_refused_naming_the_field(scope: str, target: str, field: str) -> None:
    store = MemoryStore()
    with pytest.raises(InvalidInput) as caught:
        set_hold(store, scope, target, reason="r", by="a")
    assert caught.value.field == field
    with pytest.raises(InvalidInput) as caught:
        set_hold(store, "execution", "e1", reason="  ", by="a")
    assert caught.value.field == "reason"
    assert list(store.list("")) == []  # nothing written


# --------------------------------------------------------------------------------------------
# HTTP: scopes and bodies


def _token_app() -> tuple[Any, ObjectStore]:
    store = MemoryStore()
    archive = _old_history(store)
    tokens = ";".join(
        f"{hashlib.sha256(t.encode()).hexdigest()}:{scopes}"
        for t, scopes in (("evt_r", "read"), ("evt_c", "compliance"), ("evt_ret", "retention"))
    )
    return create_app(Settings(tokens=tokens), archive=archive), store


def test_hold_and_expire_routes_need_their_scopes() -> None:
    app, _ = _token_app()
    hold = {"scope": "execution", "target": "e1", "reason": "r"}
    routes = [
        ("GET", "/api/retention/holds", None),
        ("POST", "/api/retention/holds", hold),
        ("DELETE", "/api/retention/holds/execution/e1", None),
        ("POST", "/api/retention/expire", {"dryRun": True}),
    ]
    for method, url, body in routes:
        assert _http(app, method, url, body).status_code == 401
        assert _http(app, method, url, body, "evt_r").status_code == 403
    # compliance may place and clear holds, not expire
    placed = _http(app, "POST", "/api/retention/holds", hold, "evt_c")
    assert placed.status_code == 201
    assert placed.json()["hold"]["by"].startswith("token:")  # never the token itself
    assert "evt_c" not in placed.text
    assert _http(app, "GET", "/api/retention/holds", None, "evt_c").status_code == 200
    denied = _http(app, "POST", "/api/retention/expire", {}, "evt_c")
    assert denied.status_code == 403 and denied.json()["field"] == "Authorization"
    assert (
        _http(app, "DELETE", "/api/retention/holds/execution/e1", None, "evt_ret").status_code
        == 200
    )
    assert _http(app, "POST", "/api/retention/expire", {}, "evt_ret").status_code == 201
    assert _http(app, "POST", "/api/retention/expire", {}, "evt_ret").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": "e1", "reason": "r"}, "scope"),
        ({"scope": "execution", "reason": "r"}, "target"),
        ({"scope": "execution", "target": "e1"}, "reason"),
        ({"scope": "run", "target": "e1", "reason": "r"}, "scope"),
        ({"scope": "execution", "target": "a/b", "reason": "r"}, "target"),
        ({"scope": "execution", "target": "e1", "reason": ""}, "reason"),
        ({"scope": "execution", "target": "e1", "reason": 7}, "reason"),
        ({"scope": "execution", "target": "e1", "reason": "x" * 1001}, "reason"),
        ({"scope": "execution", "target": "e1", "reason": "r", "extra": 1}, "body"),
        ([1], "body"),
    ],
)
def test_bad_hold_bodies_are_422_naming_the_field(body: Any, field: str) -> None:
    store = MemoryStore()
    app = create_app(Settings(), archive=Archive(store, Sanitizer(HMAC_KEY)))
    answer = _http(app, "POST", "/api/retention/holds", body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert list(store.list("")) == []


def test_bad_expire_and_clear_requests() -> None:
    app = create_app(Settings(), archive=Archive(MemoryStore(), Sanitizer(HMAC_KEY)))
    bad = _http(app, "POST", "/api/retention/expire", {"dryRun": "yes"})
    assert bad.status_code == 422 and bad.json()["field"] == "dryRun"
    bad = _http(app, "DELETE", "/api/retention/holds/everything/e1")
    assert bad.status_code == 422 and bad.json()["field"] == "scope"
    missing = _http(app, "DELETE", "/api/retention/holds/execution/e1")
    assert missing.status_code == 404 and "policy file" in missing.json()["message"]


def test_hold_reasons_are_sanitized() -> None:
    store = MemoryStore()
    app = create_app(Settings(), archive=Archive(store, Sanitizer(HMAC_KEY)))
    secret = "sk_live_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
    answer = _http(
        app,
        "POST",
        "/api/retention/holds",
        {"scope": "workflow", "target": "wf-a", "reason": f"key {secret} leaked"},
    )
    assert answer.status_code == 201
    assert secret not in answer.text
    assert all(secret.encode() not in store.get(i.key) for i in store.list(HOLDS_PREFIX))


# --------------------------------------------------------------------------------------------
# CLI


def _cli_env(store: ObjectStore, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    env = {"EXECVAULT_HMAC_KEY": HMAC_KEY.hex()}
    if isinstance(store, LocalStore):
        return ["--store", f"local:{store.root}"], env
    assert isinstance(store, S3Store)
    cfg = store.config
    env.update(
        {
            "EXECVAULT_S3_ACCESS_KEY_ID": str(cfg.access_key_id),
            "EXECVAULT_S3_SECRET_ACCESS_KEY": str(cfg.secret_access_key),
        }
    )
    if cfg.endpoint_url:
        env["EXECVAULT_S3_ENDPOINT"] = cfg.endpoint_url
    return ["--store", f"s3://{cfg.bucket}/{cfg.prefix}"], env


@pytest.mark.parametrize("backend", ["local", "seaweedfs"])
def test_cli_hold_set_list_clear_blocks_expiry(
    backend: str, tmp_path: Path, s3_store_factory: Callable[..., S3Store]
) -> None:
    store: ObjectStore = (
        LocalStore(tmp_path / "store") if backend == "local" else s3_store_factory(backend)
    )
    _old_history(store)
    base, env = _cli_env(store, tmp_path)
    runner = CliRunner()

    def run(*args: str) -> Any:
        out = runner.invoke(main, [*base, *args], env=env)
        assert out.exit_code == 0, out.output
        return out.output

    placed = json.loads(run("hold", "set", "workflow", "wf-a", "--reason", "case 9", "--by", "ann"))
    assert placed["created"] is True and placed["hold"]["by"] == "ann"
    assert placed["appliedToObjects"] is (backend != "local")
    listed = json.loads(run("hold", "list", "--json"))
    assert [(h["scope"], h["target"]) for h in listed["holds"]] == [("workflow", "wf-a")]
    assert "wf-a" in run("hold", "list")
    expired = json.loads(run("expire", "--policy", _policy_file(tmp_path, 90)))
    assert expired["heldByLegalHold"] == 2 and expired["expired"] == 3
    cleared = json.loads(run("hold", "clear", "workflow", "wf-a", "--reason", "closed"))
    assert cleared["hold"]["action"] == "clear" and cleared["hold"]["by"].startswith("cli:")
    again = runner.invoke(main, [*base, "hold", "clear", "workflow", "wf-a"], env=env)
    assert again.exit_code == 2 and "no legal hold" in again.output
    expired = json.loads(run("expire", "--policy", _policy_file(tmp_path, 90)))
    assert expired["expired"] == 2


def _policy_file(tmp_path: Path, keep_days: int, extra: str = "") -> str:
    path = tmp_path / f"policy-{keep_days}.toml"
    path.write_text(f'[retention]\nname = "p"\nkeep_days = {keep_days}\n{extra}')
    return str(path)


# --------------------------------------------------------------------------------------------
# on the objects themselves (SeaweedFS enforces legal holds and COMPLIANCE retention)


def _raw_delete_refused(bucket: Any, store: S3Store, key: str) -> None:
    raw = bucket.client()
    full = f"{store.config.prefix}/{key}"
    versions = raw.list_object_versions(Bucket=bucket.name, Prefix=full)["Versions"]
    assert versions
    for version in versions:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            raw.delete_object(Bucket=bucket.name, Key=full, VersionId=version["VersionId"])
        assert caught.value.response["Error"]["Code"] == "AccessDenied"


def test_a_held_execution_cannot_be_deleted_even_by_raw_s3_on_seaweedfs(
    s3_bucket_factory: Callable[[str], Any],
) -> None:
    bucket = s3_bucket_factory("seaweedfs")
    store = bucket.store(prefix="arch")
    archive = _old_history(store)
    result = set_hold(store, "execution", "e1", reason="court order", by="legal")
    assert result.applied_to_objects
    assert sorted(result.objects) == [result_key("e1"), snapshot_key("e1")]
    raw = bucket.client()
    held = raw.get_object_legal_hold(Bucket=bucket.name, Key=f"arch/{snapshot_key('e1')}")
    assert held["LegalHold"]["Status"] == "ON"
    _raw_delete_refused(bucket, store, snapshot_key("e1"))
    assert archive.get_snapshot("e1").execution_id == "e1"

    report = expire(store, KEEP_90)
    assert report.held == ["e1"] and len(report.expired) == 4
    cleared = clear_hold(store, "execution", "e1", by="legal")
    assert sorted(cleared.objects) == [result_key("e1"), snapshot_key("e1")]
    assert store.object_lock(snapshot_key("e1")).legal_hold is False
    report = expire(store, KEEP_90)
    assert [e["executionId"] for e in report.expired] == ["e1"]
    with pytest.raises(NotFound):
        archive.get_snapshot("e1")


def test_object_holds_without_object_lock_are_reported_not_applied(
    s3_bucket_factory: Callable[[str], Any],
) -> None:
    bucket = s3_bucket_factory("seaweedfs")
    plain = f"{bucket.name}-plain"
    bucket.client().create_bucket(Bucket=plain)
    import dataclasses

    store = S3Store(dataclasses.replace(bucket.config(), bucket=plain, prefix="p"))
    try:
        _old_history(store)
        result = set_hold(store, "execution", "e1", reason="r", by="a")
        assert result.applied_to_objects is False and "no Object Lock" in (result.note or "")
        assert plan(store, KEEP_90, NOW).to_json()["heldByLegalHold"]["executions"] == 1
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# Object Lock retention from the policy


def test_earliest_keep_days_never_outlasts_the_policy() -> None:
    policy = RetentionPolicy(
        keep_days=365,
        workflows={"wf-long": Rule(keep_days=730), "wf-forever": Rule(keep_days="never")},
        statuses={"error": Rule(keep_days=30)},
        tags={"baseline": Rule(keep_days="never")},
    )
    # a snapshot: the status is not known yet, and an error override shortens it to 30
    assert earliest_keep_days(policy, "wf-x") == 30
    assert earliest_keep_days(policy, "wf-x", "success") == 365
    assert earliest_keep_days(policy, "wf-x", "error") == 30
    # a workflow override applies whatever comes later; others can only lengthen it
    assert earliest_keep_days(policy, "wf-long") == 730
    assert earliest_keep_days(policy, "wf-long", "error") == 730
    assert earliest_keep_days(policy, "wf-forever") is None
    assert earliest_keep_days(RetentionPolicy(keep_days="never"), "w") is None


def test_compliance_retention_follows_the_policy_on_seaweedfs(
    s3_bucket_factory: Callable[[str], Any],
) -> None:
    bucket = s3_bucket_factory("seaweedfs")
    store = bucket.store(prefix="arch", object_lock_mode="COMPLIANCE", object_lock_days=1)
    policy = RetentionPolicy(name="p", keep_days=30, workflows={"wf-long": Rule(keep_days=60)})
    archive = Archive(store, Sanitizer(HMAC_KEY), retention_policy=policy)
    created = NOW - timedelta(days=10)
    written_from = datetime.now(UTC)
    _capture(archive, "short", "wf-a", created)
    _capture(archive, "long", "wf-long", created)
    written_until = datetime.now(UTC)
    raw = bucket.client()

    def retention(key: str) -> dict[str, Any]:
        found: dict[str, Any] = raw.get_object_retention(Bucket=bucket.name, Key=f"arch/{key}")
        got: dict[str, Any] = found["Retention"]
        return got

    for execution_id, days in (("short", 30), ("long", 60)):
        for key in (snapshot_key(execution_id), result_key(execution_id)):
            got = retention(key)
            assert got["Mode"] == "COMPLIANCE"
            expected = archive.get_snapshot(execution_id).created_at + timedelta(days=days)
            assert abs(got["RetainUntilDate"] - expected) < timedelta(seconds=2)
    # blobs (shared) keep the store's default: now + object_lock_days
    blob = next(i.key for i in store.list("blobs/"))
    until = retention(blob)["RetainUntilDate"]
    slack = timedelta(seconds=2)  # the server's clock and rounding to whole seconds
    assert (
        written_from + timedelta(days=1) - slack
        <= until
        <= written_until + timedelta(days=1) + slack
    )
    # an execution whose policy period is already over is written without retention
    _capture(archive, "ancient", "wf-a", NOW - timedelta(days=100))
    assert store.object_lock(snapshot_key("ancient")).mode is None

    # the policy shortened afterwards cannot shorten COMPLIANCE: expiry reports them retained
    report = expire(store, RetentionPolicy(name="p2", keep_days=5))
    assert [e["executionId"] for e in report.expired] == ["ancient"]
    assert {r["object"] for r in report.retained_locked} == {"long", "short"}
    assert all("Object Lock" in r["reason"] for r in report.retained_locked)
    assert archive.get_snapshot("short").execution_id == "short"


def test_captures_of_a_held_workflow_get_the_legal_hold(
    s3_bucket_factory: Callable[[str], Any],
) -> None:
    bucket = s3_bucket_factory("seaweedfs")
    store = bucket.store(prefix="arch", object_lock_mode="GOVERNANCE", object_lock_days=1)
    archive = Archive(store, Sanitizer(HMAC_KEY), retention_policy=KEEP_90)
    assert archive.hold_cache is not None
    _capture(archive, "before", "wf-held", NOW)
    set_hold(store, "workflow", "wf-held", reason="case", by="legal")
    archive.hold_cache.invalidate()  # what the API does after a set
    _capture(archive, "after", "wf-held", NOW)
    _capture(archive, "other", "wf-free", NOW)
    assert store.object_lock(snapshot_key("after")).legal_hold is True
    assert store.object_lock(result_key("after")).legal_hold is True
    assert store.object_lock(snapshot_key("other")).legal_hold is False
    assert store.object_lock(snapshot_key("before")).legal_hold is True  # set_hold applied it
    # a tag hold follows the tag (unique within a workflow); sync puts the objects in line
    _capture(archive, "other-2", "wf-free", NOW)
    EventLog(store).add_tag(archive.get_snapshot("other"), "court")
    set_hold(store, "tag", "court", reason="r", by="legal")
    assert store.object_lock(snapshot_key("other")).legal_hold is True
    EventLog(store).add_tag(archive.get_snapshot("other-2"), "court")  # the tag moves
    clear_hold(store, "workflow", "wf-held", by="legal")
    assert store.object_lock(snapshot_key("after")).legal_hold is False
    report = sync_object_holds(store)
    assert sorted(report.set_on) == [result_key("other-2"), snapshot_key("other-2")]
    assert sorted(report.set_off) == [result_key("other"), snapshot_key("other")]
    assert sync_object_holds(store).set_on == []  # in line now


def test_sync_on_a_store_without_object_lock_does_nothing() -> None:
    report = sync_object_holds(MemoryStore())
    assert report.applied_to_objects is False and report.checked == 0


def test_a_storage_class_move_keeps_the_objects_lock(
    s3_bucket_factory: Callable[[str], Any],
) -> None:
    bucket = s3_bucket_factory("seaweedfs")
    store = bucket.store(prefix="arch", object_lock_mode="GOVERNANCE", object_lock_days=1)
    archive = Archive(store, Sanitizer(HMAC_KEY), retention_policy=RetentionPolicy(keep_days=300))
    created = NOW - timedelta(days=100)
    _capture(archive, "e1", "wf-a", created)
    set_hold(store, "execution", "e1", reason="r", by="legal")
    key = snapshot_key("e1")
    before = store.object_lock(key)
    assert before.legal_hold and before.retain_until is not None
    assert abs(before.retain_until - (created + timedelta(days=300))) < timedelta(seconds=2)
    assert store.set_storage_class(key, "GLACIER_IR") is True
    after = store.object_lock(key)
    assert after.mode == "GOVERNANCE" and after.legal_hold is True
    assert after.retain_until == before.retain_until
