"""Retention: policy, plan, lifecycle configuration."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from api.cli import main
from archiver.archive import Archive
from archiver.errors import InvalidInput, NotFound, ObjectArchived
from archiver.events import EventLog
from archiver.layout import blob_key, execution_prefix, snapshot_key
from archiver.retention import (
    RETENTION_EVENTS_SCHEMA,
    ExpiryReport,
    LifecycleUnsupported,
    RetentionPolicy,
    Rule,
    apply_lifecycle,
    archive_cold,
    cold_moved_executions,
    expire,
    lifecycle_configuration,
    load_policy,
    normalize_cold_url,
    open_cold_store,
    plan,
    read_tier_events,
    read_tombstones,
    rebuild_retention_index,
    restore_execution,
    sync_retention_index,
)
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from tests.helpers import capture_received

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2024, 6, 1, tzinfo=UTC)
DAYS = 120
WORKFLOWS = ("wf-a", "wf-b", "wf-c")


def _workflow(workflow_id: str, variant: int) -> dict[str, Any]:
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
            },
            {
                "id": "h",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200, 0],
                "parameters": {"url": f"https://example.com/{workflow_id}/{variant}"},
            },
        ],
        "connections": {"Webhook": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
    }


@dataclass(frozen=True)
class History:
    archive: Archive
    #: execution id -> (workflow id, age in days, status)
    executions: dict[str, tuple[str, int, str]]


def make_history(store: ObjectStore) -> History:
    """One execution a day for 120 days, round robin over three workflows; every 5th fails;
    the structure of each workflow changes every 40 days; wf-a's execution of day 100 is tagged
    ``baseline``."""
    archive = Archive(store, Sanitizer(bytes(range(32))))
    executions: dict[str, tuple[str, int, str]] = {}
    for age in range(DAYS, 0, -1):
        workflow_id = WORKFLOWS[age % 3]
        execution_id = f"ex-{age:03d}"
        when = NOW - timedelta(days=age, hours=1)
        capture_received(
            archive, when, execution_id=execution_id, workflow=_workflow(workflow_id, age // 40)
        )
        status = "error" if age % 5 == 0 else "success"
        archive.record_final_state(
            execution_id,
            {
                "status": status,
                "startedAt": when.isoformat(),
                "finishedAt": (when + timedelta(seconds=2)).isoformat(),
                "nodes": {"Webhook": {"status": "success"}, "HTTP": {"status": status}},
            },
        )
        executions[execution_id] = (workflow_id, age, status)
    EventLog(store).add_tag(archive.get_snapshot("ex-102"), "baseline")
    return History(archive, executions)


@pytest.fixture(params=["memory", "local"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> History:
    store: ObjectStore = MemoryStore() if request.param == "memory" else LocalStore(tmp_path / "s")
    return make_history(store)


POLICY_TOML = """
[retention]
name = "test"
hot_days = 30
keep_days = 90
cold_storage_class = "GLACIER_IR"

[retention.statuses.error]
keep_days = 110

[retention.workflows.wf-c]
hot_days = 60

[retention.tags.baseline]
keep_days = "never"

[retention.legal_hold]
executions = ["ex-099"]
workflows = []
tags = []
"""


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "retention.toml"
    path.write_text(POLICY_TOML)
    return path


def _expected(executions: dict[str, tuple[str, int, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"expire": set(), "held": set(), "cold": set(), "hot": set()}
    for eid, (wf, age, status) in executions.items():
        keep = 110 if status == "error" else 90
        hot = 60 if wf == "wf-c" else 30
        if eid == "ex-102":  # baseline: never expires
            keep = 10**9
        if age >= keep:
            out["held" if eid == "ex-099" else "expire"].add(eid)
        elif age >= hot:
            out["cold"].add(eid)
        else:
            out["hot"].add(eid)
    return out


# --------------------------------------------------------------------------------------------
# policy


def test_policy_from_toml(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path))
    assert policy.name == "test"
    assert policy.hot_days == 30 and policy.keep_days == 90
    assert policy.statuses["error"] == Rule(None, 110)
    assert policy.workflows["wf-c"] == Rule(60, None)
    assert policy.tags["baseline"].keep_days == "never"
    assert policy.hold_executions == frozenset({"ex-099"})
    assert load_policy(None) == RetentionPolicy()


def test_overrides_resolve_to_the_longest() -> None:
    policy = RetentionPolicy(
        keep_days=90,
        statuses={"error": Rule(keep_days=200)},
        workflows={"w": Rule(hot_days=10, keep_days=120)},
        tags={"baseline": Rule(keep_days="never")},
    )
    assert policy.resolve("x", "success", []) == (30, 90)
    assert policy.resolve("w", "success", []) == (10, 120)
    assert policy.resolve("w", "error", []) == (10, 200)
    assert policy.resolve("w", "error", ["baseline"]) == (10, "never")


@pytest.mark.parametrize(
    "text",
    [
        "[retention]\nhot_days = -1\n",
        "[retention]\nkeep_days = 'forever'\n",
        "[retention]\ncold_storage_class = 'STANDARD'\n",
        "[retention]\nbogus = 1\n",
        "[retention.statuses.error]\nkeep = 3\n",
        "[retention.legal_hold]\nexecutions = 'x'\n",
        "[retention]\ntransitions = [{days = 1}]\n",
    ],
)
def test_bad_policies_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput):
        load_policy(path)


# --------------------------------------------------------------------------------------------
# plan


def test_plan_over_120_days(history: History, tmp_path: Path) -> None:
    store = history.archive.store
    before = sorted((i.key, i.size) for i in store.list(""))
    result = plan(store, load_policy(_policy(tmp_path)), NOW)
    assert sorted((i.key, i.size) for i in store.list("")) == before  # nothing changed
    got: dict[str, set[str]] = {"expire": set(), "held": set(), "cold": set(), "hot": set()}
    for decision in result.decisions:
        got[decision.action].add(decision.execution_id)
    assert got == _expected(history.executions)
    assert got["expire"] and got["cold"] and got["hot"]
    assert "ex-102" not in got["expire"] and "ex-099" in got["held"]
    summary = result.summary()
    sizes = {
        eid: sum(i.size for i in store.list(execution_prefix(eid))) for eid in history.executions
    }
    assert summary["toExpire"]["executions"] == len(got["expire"])
    assert summary["toExpire"]["bytes"] == sum(sizes[e] for e in got["expire"])
    assert summary["toCold"]["bytes"] == sum(sizes[e] for e in got["cold"])
    # the oldest structure (days 120..81) is only referenced by expiring executions, except
    # wf-*'s held / baseline / failed-and-younger-than-110 ones
    for key in result.expiring_blobs:
        assert key not in result.retained_blobs
    assert summary["toExpire"]["blobs"] == len(result.expiring_blobs)


def test_blobs_of_retained_snapshots_never_expire(tmp_path: Path) -> None:
    store = MemoryStore()
    archive = Archive(store, Sanitizer(bytes(range(32))))
    for n, age in enumerate((200, 10)):
        capture_received(
            archive, NOW - timedelta(days=age), execution_id=f"e{n}", workflow=_workflow("w", 0)
        )
    result = plan(store, RetentionPolicy(keep_days=90), NOW)
    assert [d.action for d in result.decisions] == ["expire", "hot"]
    assert result.expiring_blobs == {}
    assert len(result.retained_blobs) == 1


def test_cli_plan(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    make_history(store)
    runner = CliRunner()
    args = ["--store", f"local:{store.root}", "retention", "plan", "--policy"]
    out = runner.invoke(main, [*args, str(_policy(tmp_path)), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["policy"] == "test"
    assert data["executions"] == DAYS
    text = runner.invoke(main, [*args, str(_policy(tmp_path))])
    assert text.exit_code == 0, text.output
    assert "expire" in text.output and "move to cold" in text.output


# --------------------------------------------------------------------------------------------
# lifecycle configuration


def test_lifecycle_configuration_shape() -> None:
    policy = RetentionPolicy(transitions=((30, "GLACIER_IR"), (180, "DEEP_ARCHIVE")))
    config = lifecycle_configuration(policy, "archive/")
    rules = {r["ID"]: r for r in config["Rules"]}
    cold = rules["execvault-default-executions-to-cold"]
    assert cold["Filter"] == {"Prefix": "archive/executions/"}
    assert cold["Transitions"] == [
        {"Days": 30, "StorageClass": "GLACIER_IR"},
        {"Days": 180, "StorageClass": "DEEP_ARCHIVE"},
    ]
    assert "Expiration" not in cold
    abort = rules["execvault-default-abort-incomplete-multipart"]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert not any("blobs/" in r["Filter"]["Prefix"] for r in config["Rules"])


def test_infra_lifecycle_json_is_the_default_policy() -> None:
    stored = json.loads((REPO / "infra" / "lifecycle.json").read_text())
    assert stored == lifecycle_configuration(RetentionPolicy())
    out = CliRunner().invoke(main, ["retention", "lifecycle-json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == stored


def test_moto_accepts_the_lifecycle(s3_bucket_factory: Callable[[str], Any]) -> None:
    bucket = s3_bucket_factory("moto")
    client = bucket.client()
    config = lifecycle_configuration(RetentionPolicy(transitions=((30, "GLACIER_IR"),)))
    client.put_bucket_lifecycle_configuration(Bucket=bucket.name, LifecycleConfiguration=config)
    got = client.get_bucket_lifecycle_configuration(Bucket=bucket.name)
    assert {r["ID"] for r in got["Rules"]} == {r["ID"] for r in config["Rules"]}


def test_apply_lifecycle_on_moto(s3_store_factory: Callable[..., Any]) -> None:
    store = s3_store_factory("moto")
    applied = apply_lifecycle(store, RetentionPolicy())
    assert applied["Rules"][0]["Filter"]["Prefix"] == f"{store.config.prefix}/executions/"
    got = store.client.get_bucket_lifecycle_configuration(Bucket=store.config.bucket)
    assert {r["ID"] for r in got["Rules"]} == {r["ID"] for r in applied["Rules"]}


def test_seaweedfs_501_on_transitions_is_reported_clearly(
    s3_store_factory: Callable[..., Any],
) -> None:
    store = s3_store_factory("seaweedfs")
    with pytest.raises(LifecycleUnsupported, match=r"501 NotImplemented.*does not run lifecycle"):
        apply_lifecycle(store, RetentionPolicy())


def test_apply_lifecycle_needs_an_s3_store() -> None:
    with pytest.raises(InvalidInput, match="not an S3 bucket"):
        apply_lifecycle(MemoryStore(), RetentionPolicy())


# --------------------------------------------------------------------------------------------
# expiry


def _check_expired(history: History, report: ExpiryReport, tmp_path: Path) -> None:
    store = history.archive.store
    expected = _expected(history.executions)
    assert {e["executionId"] for e in report.expired} == expected["expire"]
    assert sorted(report.held) == sorted(expected["held"])
    assert report.retained_locked == []
    tombstoned = {
        body["executionId"]
        for _, body in read_tombstones(store)
        if body["objectKind"] == "execution"
    }
    assert tombstoned == expected["expire"]
    for execution_id in history.executions:
        if execution_id in expected["expire"]:
            assert list(store.list(execution_prefix(execution_id))) == []
        else:  # every retained execution still reads, blob included
            history.archive._blob_cache.clear()
            assert history.archive.get_snapshot(execution_id).execution_id == execution_id
    remaining = {
        blob_key(history.archive.get_snapshot(e).snapshot_hash)
        for e in history.executions
        if e not in expected["expire"]
    }
    assert remaining <= {i.key for i in store.list("blobs/")}
    for key in report.expired_blobs:
        assert key not in remaining
    # one index row per tombstone, under index/retention_events/dt=.../
    parts = [i.key for i in store.list("index/retention_events/")]
    assert parts and all(k.startswith("index/retention_events/dt=") for k in parts)
    rows = sum(pq.read_table(io.BytesIO(store.get(k))).num_rows for k in parts)
    assert rows == len(report.tombstones)
    row = pq.read_table(io.BytesIO(store.get(parts[0]))).to_pylist()[0]
    assert row["policy"] == "test" and row["action"] == "expire" and row["reason"]


def test_expire_local(history: History, tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path))
    report = expire(history.archive.store, policy, NOW)
    _check_expired(history, report, tmp_path)
    assert report.expired_blobs  # the oldest wf-b structure is referenced by nothing retained
    again = expire(history.archive.store, policy, NOW)
    assert again.expired == [] and again.expired_blobs == [] and again.tombstones == []
    assert rebuild_retention_index(history.archive.store) == len(report.tombstones)


@pytest.mark.parametrize("backend", ["moto", "seaweedfs"])
def test_expire_on_s3(backend: str, s3_store_factory: Callable[..., Any], tmp_path: Path) -> None:
    history = make_history(s3_store_factory(backend))
    report = expire(history.archive.store, load_policy(_policy(tmp_path)), NOW)
    _check_expired(history, report, tmp_path)


def test_locked_objects_are_retained_not_errors(
    s3_bucket_factory: Callable[[str], Any],
) -> None:
    """SeaweedFS enforces Object Lock COMPLIANCE: expiry reports the locked execution as
    retained, keeps the structure blob it shares with expired ones, and expires the rest."""
    bucket = s3_bucket_factory("seaweedfs")
    plain = bucket.store(prefix="arch")
    locked = bucket.store(prefix="arch", object_lock_mode="COMPLIANCE", object_lock_days=1)
    old = (NOW - timedelta(days=200)).isoformat()
    capture_received(
        Archive(locked, Sanitizer(bytes(range(32)))),
        old,
        execution_id="locked-1",
        workflow=_workflow("w", 0),
    )
    archive = Archive(plain, Sanitizer(bytes(range(32))))
    for n in range(2):
        capture_received(archive, old, execution_id=f"free-{n}", workflow=_workflow("w", 0))
    report = expire(plain, RetentionPolicy(name="p", keep_days=90), NOW)
    assert {e["executionId"] for e in report.expired} == {"free-0", "free-1"}
    assert [r["object"] for r in report.retained_locked] == ["locked-1"]
    assert "Object Lock" in report.retained_locked[0]["reason"]
    assert report.expired_blobs == []
    assert archive.get_snapshot("locked-1").execution_id == "locked-1"  # blob kept as well
    with pytest.raises(NotFound):
        archive.get_snapshot("free-0")


def test_cli_expire(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    history = make_history(store)
    base = ["--store", f"local:{store.root}", "expire", "--policy", str(_policy(tmp_path))]
    dry = CliRunner().invoke(main, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["toExpire"]["executions"] > 0
    assert len(list(store.list("executions/"))) == 2 * DAYS  # nothing deleted
    out = CliRunner().invoke(main, base)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["expired"] == json.loads(dry.output)["toExpire"]["executions"]
    assert data["tombstones"] >= data["expired"]
    assert history.executions


# --------------------------------------------------------------------------------------------
# cold archiving by storage class, restore (moto emulates storage classes and RestoreObject)


def test_archive_and_restore_on_moto(s3_store_factory: Callable[..., Any], tmp_path: Path) -> None:
    store = s3_store_factory("moto")
    history = make_history(store)
    policy = RetentionPolicy(
        name="cold",
        keep_days="never",
        transitions=((30, "GLACIER_IR"), (90, "GLACIER")),
    )
    report = archive_cold(store, policy, NOW)
    moved = {m["executionId"]: m["storageClass"] for m in report.moved}
    expected = {
        e: ("GLACIER" if age >= 90 else "GLACIER_IR")
        for e, (_, age, _) in history.executions.items()
        if age >= 30
    }
    assert moved == expected
    classes = {i.key: i.storage_class for i in store.list("")}
    for execution_id, cls in expected.items():
        for key in (k for k in classes if k.startswith(execution_prefix(execution_id))):
            assert classes[key] == cls
    assert {c for k, c in classes.items() if k.startswith("blobs/")} == {"STANDARD"}
    # GLACIER_IR reads at once; GLACIER needs a restore first
    history.archive._blob_cache.clear()
    assert history.archive.get_snapshot("ex-050").execution_id == "ex-050"
    with pytest.raises(ObjectArchived) as archived:
        history.archive.get_snapshot("ex-100")
    assert archived.value.execution_id == "ex-100"
    # over HTTP: 409 saying how to restore, never a 500
    from api.app import create_app
    from archiver.config import Settings
    from tests.test_api import Client

    response = Client(create_app(Settings(), archive=history.archive)).get(
        "/api/execution-snapshots/ex-100"
    )
    assert response.status_code == 409
    assert response.json()["error"] == "archived"
    assert response.json()["state"] == "archived"
    assert response.json()["restore"] == "POST /api/execution-snapshots/ex-100/restore"
    # re-running moves nothing; the plan now sees them as already cold
    again = archive_cold(store, policy, NOW)
    assert again.moved == [] and again.already_cold == len(expected)
    assert plan(store, policy, NOW).summary()["toCold"]["executions"] == 0
    # restore: idempotent, then readable
    assert restore_execution(store, "ex-100") == "restored"  # moto restores at once
    assert restore_execution(store, "ex-100") == "restored"
    assert history.archive.get_snapshot("ex-100").execution_id == "ex-100"
    assert restore_execution(store, "ex-010") == "hot"
    with pytest.raises(NotFound):
        restore_execution(store, "nope")
    # every move and the one restore are events in the index
    events = read_tier_events(store)
    assert sorted(b["action"] for _, b in events).count("restore") == 1
    assert sum(1 for _, b in events if b["action"] == "archive") == len(expected)
    rows = [
        r
        for i in store.list("index/retention_events/")
        for r in pq.read_table(io.BytesIO(store.get(i.key))).to_pylist()
    ]
    assert len(rows) == len(events)
    assert {r["storage_class"] for r in rows if r["action"] == "archive"} == {
        "GLACIER",
        "GLACIER_IR",
    }
    # expiry still knows archived executions (from their archive events) and deletes them
    expired = expire(store, RetentionPolicy(name="short", keep_days=110), NOW)
    assert {e["executionId"] for e in expired.expired} == {
        e for e, (_, age, _) in history.executions.items() if age >= 110
    }
    assert plan(store, policy, NOW).summary()["archivedWithoutEvent"] == 0


def test_archive_needs_storage_classes() -> None:
    with pytest.raises(InvalidInput, match="no storage classes"):
        archive_cold(MemoryStore(), RetentionPolicy())


# --------------------------------------------------------------------------------------------
# HTTP routes (scope retention)


def _http(app: Any, method: str, url: str, body: Any, token: str | None = None) -> Any:
    import asyncio

    import httpx

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, url, json=body, headers=headers)

    return asyncio.run(go())


def test_routes_archive_and_restore_on_moto(
    s3_store_factory: Callable[..., Any], tmp_path: Path
) -> None:
    from api.app import create_app
    from archiver.config import Settings

    store = s3_store_factory("moto")
    archive = Archive(store, Sanitizer(bytes(range(32))))
    old = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    capture_received(archive, old, execution_id="old-1", workflow=_workflow("w", 0))
    archive.capture_snapshot(execution_id="new-1", workflow=_workflow("w", 0))
    policy = tmp_path / "p.toml"
    policy.write_text('[retention]\nhot_days = 30\ncold_storage_class = "GLACIER"\n')
    app = create_app(Settings(retention_policy_file=str(policy)), archive=archive)
    dry = _http(app, "POST", "/api/retention/archive", {"dryRun": True})
    assert dry.status_code == 200 and dry.json()["toCold"]["executions"] == 1
    planned = _http(app, "GET", "/api/retention/plan", None)
    assert planned.status_code == 200 and planned.json()["toCold"]["executions"] == 1
    first = _http(app, "POST", "/api/retention/archive", {})
    assert first.status_code == 201, first.text
    assert [m["executionId"] for m in first.json()["executions"]] == ["old-1"]
    assert _http(app, "POST", "/api/retention/archive", {}).status_code == 200  # idempotent
    url = "/api/execution-snapshots/old-1/restore"
    started = _http(app, "POST", url, {"days": 2})
    assert started.status_code == 201 and started.json()["state"] == "restored"
    again = _http(app, "POST", url, {})
    assert again.status_code == 200 and again.json()["state"] == "restored"
    hot = _http(app, "POST", "/api/execution-snapshots/new-1/restore", {})
    assert hot.status_code == 200 and hot.json()["state"] == "hot"
    assert _http(app, "POST", "/api/execution-snapshots/nope/restore", {}).status_code == 404
    bad = _http(app, "POST", url, {"days": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "days"


def test_restore_in_progress_is_202_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    import api.routes_retention as routes
    from api.app import create_app
    from archiver.config import Settings

    states = iter(["archived", "restoring"])
    monkeypatch.setattr(routes, "restore_execution", lambda *a, **k: next(states))
    app = create_app(Settings(), archive=Archive(MemoryStore(), Sanitizer(bytes(range(32)))))
    answer = _http(app, "POST", "/api/execution-snapshots/x-1/restore", {})
    assert answer.status_code == 202
    assert answer.headers["retry-after"] == str(routes.RESTORE_RETRY_AFTER_SECONDS)
    assert answer.json() == {"executionId": "x-1", "state": "restoring"}


def test_routes_need_the_retention_scope() -> None:
    import hashlib

    from api.app import create_app
    from archiver.config import Settings

    digest = hashlib.sha256(b"evt_reader").hexdigest()
    app = create_app(
        Settings(tokens=f"{digest}:read"),
        archive=Archive(MemoryStore(), Sanitizer(bytes(range(32)))),
    )
    for url in ("/api/retention/archive", "/api/execution-snapshots/e/restore"):
        assert _http(app, "POST", url, {}).status_code == 401
        assert _http(app, "POST", url, {}, "evt_reader").status_code == 403
    assert _http(app, "GET", "/api/retention/plan", None).status_code == 401
    assert _http(app, "GET", "/api/retention/plan", None, "evt_reader").status_code == 403


def test_verify_counts_expired_rows_as_expired_not_missing(
    history: History, tmp_path: Path
) -> None:
    from archiver.index import rebuild_index, verify

    store = history.archive.store
    assert rebuild_index(store).ok  # the index as it was before expiry: a row per execution
    report = expire(store, load_policy(_policy(tmp_path)), NOW)
    assert report.expired
    checked = verify(store)
    assert checked.rows_without_objects == []
    expired_ids = {e["executionId"] for e in report.expired}
    assert {p.key for p in checked.expired_rows if p.table == "snapshots"} == expired_ids
    assert checked.ok
    # an object deleted without a tombstone is still a problem
    survivor = next(e for e in history.executions if e not in expired_ids)
    store.delete(snapshot_key(survivor))
    assert not verify(store).ok


# --------------------------------------------------------------------------------------------
# cold tier on stores without storage classes: verified copies to a cold store


def test_policy_cold_store_setting(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f'[retention]\ncold_store = "file://{tmp_path}/cold"\n')
    policy = load_policy(path)
    assert policy.cold_store == f"file://{tmp_path}/cold"
    assert normalize_cold_url(policy.cold_store) == f"local:{tmp_path}/cold"
    assert open_cold_store(policy.cold_store).url == f"local:{tmp_path}/cold"
    assert load_policy(None).cold_store is None
    for bad in ("cold_store = 3", 'cold_store = "ftp://host/x"', 'cold_store = ""'):
        path.write_text(f"[retention]\n{bad}\n")
        with pytest.raises(InvalidInput) as err:
            load_policy(path)
        assert err.value.field == "cold_store"
    with pytest.raises(InvalidInput, match="memory"):
        open_cold_store("memory:")


def _cold_policy(**kwargs: Any) -> RetentionPolicy:
    base: dict[str, Any] = {
        "name": "cold",
        "hot_days": 30,
        "keep_days": 90,
        "cold_store": "memory:",
        "statuses": {"error": Rule(keep_days=110)},
        "tags": {"baseline": Rule(keep_days="never")},
        "hold_executions": frozenset({"ex-099"}),
    }
    base.update(kwargs)
    return RetentionPolicy(**base)


@pytest.fixture(params=["memory", "local"])
def cold_pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[History, ObjectStore]:
    if request.param == "memory":
        return make_history(MemoryStore()), MemoryStore()
    return make_history(LocalStore(tmp_path / "hot")), LocalStore(tmp_path / "cold")


def test_cold_copy_archive_read_restore_expire(cold_pair: tuple[History, ObjectStore]) -> None:
    history, cold = cold_pair
    store = history.archive.store
    policy = _cold_policy()
    planned = plan(store, policy, NOW).to_json(details=True)
    to_cold = {d["executionId"] for d in planned["decisions"] if d["action"] == "cold"}
    assert to_cold and {
        d["targetClass"] for d in planned["decisions"] if d["action"] == "cold"
    } == {"COLD_COPY"}
    hot_bytes = {k: store.get(k) for eid in to_cold for k in _keys(store, eid)}
    ticks = []

    report = archive_cold(
        store, policy, NOW, cold_store=cold, progress=lambda n, t: ticks.append((n, t))
    )
    assert {m["executionId"] for m in report.moved} == to_cold
    assert ticks[-1] == (len(to_cold), len(to_cold))
    # byte for byte in the cold store, gone from the hot one; blobs never move
    for key, data in hot_bytes.items():
        assert cold.get(key) == data
        assert store.head(key) is None
    assert list(cold.list("blobs/")) == []
    assert cold_moved_executions(store) == to_cold
    events = [b for _, b in read_tier_events(store)]
    assert {(b["action"], b["tier"], b["location"]) for b in events} == {
        ("archive", "cold-copy", cold.url)
    }
    # reads answer archived (HTTP 409 with the restore link), not 404
    moved_id = sorted(to_cold)[0]
    with pytest.raises(ObjectArchived) as archived:
        history.archive.get_snapshot(moved_id)
    assert archived.value.execution_id == moved_id
    from api.app import create_app
    from archiver.config import Settings
    from tests.test_api import Client

    response = Client(create_app(Settings(), archive=history.archive)).get(
        f"/api/execution-snapshots/{moved_id}"
    )
    assert response.status_code == 409
    assert response.json()["restore"] == f"POST /api/execution-snapshots/{moved_id}/restore"
    with pytest.raises(NotFound):
        history.archive.get_snapshot("never-was")
    # the plan sees them as already cold; re-running moves nothing
    assert plan(store, policy, NOW).summary()["alreadyCold"]["executions"] == len(to_cold)
    assert archive_cold(store, policy, NOW, cold_store=cold).moved == []
    # restore: copied back (verified), readable, left hot for its days, idempotent
    assert restore_execution(store, moved_id, cold_store=cold, dry_run=True) == "archived"
    restored = restore_execution(store, moved_id, cold_store=cold, days=3, clock=lambda: NOW)
    assert restored == "restored"
    assert restore_execution(store, moved_id, cold_store=cold, clock=lambda: NOW) == "restored"
    assert history.archive.get_snapshot(moved_id).execution_id == moved_id
    final = history.archive.get_final_state(moved_id)
    assert final is not None and final.status == history.executions[moved_id][2]
    assert moved_id not in cold_moved_executions(store)
    assert archive_cold(store, policy, NOW, cold_store=cold).moved == []  # restored for 3 days
    again = archive_cold(store, policy, NOW + timedelta(days=4), cold_store=cold)
    assert moved_id in {m["executionId"] for m in again.moved}  # then cold again
    # expiry 60 days later deletes cold copies as well, each with its tombstone
    later = NOW + timedelta(days=60)
    expired = expire(store, policy, later, cold_store=cold)
    cold_expired = {e["executionId"] for e in expired.expired if e.get("deletedColdKeys")}
    assert cold_expired and cold_expired <= to_cold
    for execution_id in cold_expired:
        assert list(cold.list(execution_prefix(execution_id))) == []
        with pytest.raises(NotFound):  # expired: 404, no longer archived
            history.archive.get_snapshot(execution_id)
    bodies = {b["executionId"]: b for _, b in read_tombstones(store) if b.get("executionId")}
    for execution_id in cold_expired:
        assert bodies[execution_id]["deletedColdKeys"] and bodies[execution_id]["state"] == "done"
    assert not cold_expired & cold_moved_executions(store)
    with pytest.raises(NotFound):
        restore_execution(store, sorted(cold_expired)[0], cold_store=cold, dry_run=True)
    # the index has a row per tombstone and tier event (cold deletions name the cold store)
    rows = [
        r
        for i in store.list("index/retention_events/")
        for r in pq.read_table(io.BytesIO(store.get(i.key))).to_pylist()
    ]
    records = read_tombstones(store) + read_tier_events(store)
    assert {r["object_key"] for r in rows} == {k for k, _ in records}
    cold_rows = [r for r in rows if r["action"] == "expire" and r["tier"] == "cold-copy"]
    assert cold_rows and all(r["location"] == cold.url for r in cold_rows)
    assert all(any(k.startswith(cold.url) for k in r["deleted_keys"]) for r in cold_rows)


def _keys(store: ObjectStore, execution_id: str) -> list[str]:
    return [i.key for i in store.list(execution_prefix(execution_id))]


def test_restore_of_expired_cold_execution_is_not_found() -> None:
    history, cold = make_history(MemoryStore()), MemoryStore()
    store = history.archive.store
    policy = _cold_policy(keep_days=100, statuses={})
    archive_cold(store, policy, NOW, cold_store=cold)
    assert "ex-095" in cold_moved_executions(store)
    expire(store, policy, NOW + timedelta(days=10), cold_store=cold)
    with pytest.raises(NotFound):
        restore_execution(store, "ex-095", cold_store=cold)


def test_cold_store_on_a_store_with_storage_classes_copies(
    s3_store_factory: Callable[..., Any],
) -> None:
    """moto has storage classes; a configured cold store still means copies (the documented
    choice), and the hot objects stay STANDARD until deleted."""
    store = s3_store_factory("moto")
    archive = Archive(store, Sanitizer(bytes(range(32))))
    old = (NOW - timedelta(days=50)).isoformat()
    capture_received(archive, old, execution_id="old-1", workflow=_workflow("w", 0))
    cold = MemoryStore()
    report = archive_cold(store, _cold_policy(), NOW, cold_store=cold)
    assert [m["tier"] for m in report.moved] == ["cold-copy"]
    assert store.head(snapshot_key("old-1")) is None and cold.head(snapshot_key("old-1"))


def test_cli_and_http_with_a_local_cold_store(tmp_path: Path) -> None:
    from api.app import create_app
    from archiver.config import Settings

    store = LocalStore(tmp_path / "store")
    make_history(store)
    policy = tmp_path / "p.toml"
    policy.write_text(
        f'[retention]\nname = "cli"\nhot_days = 30\nkeep_days = "never"\n'
        f'cold_store = "file://{tmp_path}/cold"\n'
    )
    base = ["--store", f"local:{store.root}"]
    out = CliRunner().invoke(main, [*base, "archive", "--policy", str(policy)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["moved"] == len([e for e in data["executions"] if e["tier"] == "cold-copy"]) > 0
    assert "archive:" in out.stderr  # progress
    cold = LocalStore(tmp_path / "cold")
    assert cold.head(snapshot_key("ex-050")) is not None
    restored = CliRunner().invoke(main, [*base, "restore", "ex-050"])
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["state"] == "restored"
    archive = Archive(store, Sanitizer(bytes(range(32))))
    assert archive.get_snapshot("ex-050").execution_id == "ex-050"
    # HTTP restore: 201 when it copied back, then 200
    app = create_app(Settings(retention_policy_file=str(policy)), archive=archive)
    url = "/api/execution-snapshots/ex-060/restore"
    assert _http(app, "GET", "/api/execution-snapshots/ex-060", None).status_code == 409
    first = _http(app, "POST", url, {})
    assert first.status_code == 201 and first.json()["state"] == "restored"
    assert _http(app, "POST", url, {}).status_code == 200
    assert _http(app, "GET", "/api/execution-snapshots/ex-060", None).status_code == 200
    assert _http(app, "POST", "/api/retention/archive", {}).status_code == 200  # restored stay


def test_cold_copy_keeps_locked_hot_objects(s3_bucket_factory: Callable[[str], Any]) -> None:
    """SeaweedFS enforces COMPLIANCE: a locked execution is neither copied nor recorded (its
    objects move together or not at all), it stays hot (reported), reads keep working."""
    bucket = s3_bucket_factory("seaweedfs")
    plain = bucket.store(prefix="arch")
    locked = bucket.store(prefix="arch", object_lock_mode="COMPLIANCE", object_lock_days=1)
    old = (NOW - timedelta(days=50)).isoformat()
    capture_received(
        Archive(locked, Sanitizer(bytes(range(32)))),
        old,
        execution_id="locked-1",
        workflow=_workflow("w", 0),
    )
    capture_received(
        Archive(plain, Sanitizer(bytes(range(32)))),
        old,
        execution_id="free-1",
        workflow=_workflow("w", 0),
    )
    cold = bucket.store(prefix="cold")
    report = archive_cold(plain, _cold_policy(), NOW, cold_store=cold)
    assert [r["object"] for r in report.retained_locked] == ["locked-1"]
    assert cold.head(snapshot_key("locked-1")) is None
    assert plain.head(snapshot_key("locked-1")) is not None
    assert plain.head(snapshot_key("free-1")) is None
    archive = Archive(plain, Sanitizer(bytes(range(32))))
    assert archive.get_snapshot("locked-1").execution_id == "locked-1"
    again = archive_cold(plain, _cold_policy(), NOW, cold_store=cold)
    assert again.moved == [] and {r["object"] for r in again.retained_locked} == {"locked-1"}
    assert sum(1 for _, b in read_tier_events(plain) if b["executionId"] == "locked-1") == 0


# --------------------------------------------------------------------------------------------
# kill-safety of expiry: an intent before every deletion


class _DiesOnDelete:
    """Deletes normally until the ``n``-th delete, which raises instead of happening."""

    def __init__(self, inner: ObjectStore, n: int, *, after: bool = False) -> None:
        self.inner, self.n, self.after, self.url = inner, n, after, inner.url

    def delete(self, key: str) -> None:
        self.n -= 1
        if self.n == 0:
            if self.after:  # the deletion happens, the process dies before the tombstone
                self.inner.delete(key)
            raise KeyboardInterrupt
        self.inner.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("after", [False, True])
def test_expire_killed_around_a_deletion_leaves_it_explained(
    history: History, tmp_path: Path, after: bool
) -> None:
    from archiver.index import rebuild_index, verify

    store = history.archive.store
    assert rebuild_index(store).ok
    policy = load_policy(_policy(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        expire(_DiesOnDelete(store, 3, after=after), policy, NOW)  # type: ignore[arg-type]
    intents = [b for _, b in read_tombstones(store, include_intents=True)]
    assert intents and all(b["state"] in ("intent", "done") for b in intents)
    # every object gone so far is explained (an intent or a tombstone): no row points at nothing
    assert verify(store).rows_without_objects == []
    # the next run finishes the interrupted deletion and converges on what one run does
    report = expire(store, policy, NOW)
    assert report.completed == ([] if not after else report.completed) and (
        bool(report.completed) == after
    )
    _check_expired_after_rerun(history, store, tmp_path)
    assert verify(store).ok


def _check_expired_after_rerun(history: History, store: ObjectStore, tmp_path: Path) -> None:
    expected = _expected(history.executions)
    tombstoned = {
        b["executionId"] for _, b in read_tombstones(store) if b["objectKind"] == "execution"
    }
    assert tombstoned == expected["expire"]
    for execution_id in history.executions:
        present = list(store.list(execution_prefix(execution_id)))
        assert (not present) == (execution_id in expected["expire"]), execution_id
    intents = read_tombstones(store, include_intents=True)
    closed = {b["eventId"] for _, b in intents if b["state"] != "intent"}
    assert all(b["eventId"] in closed for _, b in intents)  # no intent left open
    again = expire(store, load_policy(_policy(tmp_path)), NOW)
    assert again.expired == [] and again.tombstones == []


def test_retention_index_catches_up_after_a_killed_run(tmp_path: Path) -> None:
    history = make_history(MemoryStore())
    store = history.archive.store
    policy = load_policy(_policy(tmp_path))

    class NoIndex(_DiesOnDelete):
        def put(self, key: str, data: bytes) -> bool:
            if key.startswith("index/"):
                raise KeyboardInterrupt  # killed just before the part is written
            return self.inner.put(key, data)

    with pytest.raises(KeyboardInterrupt):
        expire(NoIndex(store, 10**6), policy, NOW)  # type: ignore[arg-type]
    assert list(store.list("index/retention_events/")) == []
    assert sync_retention_index(store) == len(read_tombstones(store)) > 0
    assert sync_retention_index(store) == 0


def test_verify_does_not_flag_cold_moved_executions() -> None:
    from archiver.index import rebuild_index, verify

    history, cold = make_history(MemoryStore()), MemoryStore()
    store = history.archive.store
    assert rebuild_index(store).ok
    archive_cold(store, _cold_policy(keep_days="never"), NOW, cold_store=cold)
    assert cold_moved_executions(store)
    checked = verify(store, cold_store=cold)  # a memory cold store cannot be opened by URL
    assert checked.rows_without_objects == [] and checked.ok


# --------------------------------------------------------------------------------------------
# analyst SQL over retention_events


def test_retention_events_are_queryable_with_sql(store: ObjectStore) -> None:
    from query.catalog import Catalog
    from query.sql import SqlSandbox

    archive = Archive(store, Sanitizer(bytes(range(32))))
    for n, age in enumerate((200, 150, 40, 5)):
        capture_received(
            archive, NOW - timedelta(days=age), execution_id=f"s-{n}", workflow=_workflow("w", n)
        )
    cold = MemoryStore()
    policy = _cold_policy(keep_days=100)
    archive_cold(store, policy, NOW, cold_store=cold)
    expire(store, policy, NOW, cold_store=cold)
    with Catalog(store) as catalog:
        sandbox = SqlSandbox(catalog)
        rows = sandbox.run(
            "SELECT action, object_kind, execution_id, tier, location FROM retention_events "
            "ORDER BY action, object_kind, execution_id"
        ).rows()
    assert rows == [
        ["archive", "execution", "s-2", "cold-copy", cold.url],
        ["expire", "blob", None, None, None],
        ["expire", "blob", None, None, None],
        ["expire", "execution", "s-0", None, None],
        ["expire", "execution", "s-1", None, None],
    ]


def test_retention_events_view_has_the_columns() -> None:
    from query.catalog import Catalog
    from query.sql import SqlSandbox

    with Catalog(MemoryStore()) as catalog:
        result = SqlSandbox(catalog).run("SELECT * FROM retention_events")
        assert result.rows() == []
        names = [c.name for c in result.columns]
        assert names[: len(RETENTION_EVENTS_SCHEMA.names)] == RETENTION_EVENTS_SCHEMA.names


def test_cli_sql_reads_retention_events(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    make_history(store)
    expire(store, load_policy(_policy(tmp_path)), NOW)
    out = CliRunner().invoke(
        main,
        [
            "--store",
            f"local:{store.root}",
            "sql",
            "--format",
            "json",
            "SELECT action, count(*) AS n FROM retention_events GROUP BY action",
        ],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["rows"] == [["expire", len(read_tombstones(store))]]


# --------------------------------------------------------------------------------------------
# the race between expire deleting a structure blob and a capture starting to use it


class _CapturesBeforeBlobDelete:
    """A store that, just before ``expire`` deletes a structure blob, lets a capture of that very
    structure happen (it sees the blob, writes its record, checks again: all before the
    deletion)."""

    def __init__(self, inner: ObjectStore, capture: Callable[[], None]) -> None:
        self.inner, self.url, self.capture = inner, inner.url, capture

    def delete(self, key: str) -> None:
        if key.startswith("blobs/") and self.capture is not None:
            capture, self.capture = self.capture, None  # type: ignore[assignment]
            capture()
        self.inner.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _old_structure(store: ObjectStore) -> tuple[Archive, str]:
    archive = Archive(store, Sanitizer(bytes(range(32))))
    for n in range(2):
        capture_received(
            archive,
            NOW - timedelta(days=200 + n),
            execution_id=f"old-{n}",
            workflow=_workflow("w", 7),
        )
    return archive, archive.get_snapshot("old-0").snapshot_hash


def test_expire_puts_back_a_blob_a_capture_started_using(store: ObjectStore) -> None:
    _, digest = _old_structure(store)
    policy = RetentionPolicy.from_mapping({"hot_days": 30, "keep_days": 100})

    def capture() -> None:
        capture_received(
            Archive(store, Sanitizer(bytes(range(32)))),
            NOW,
            execution_id="new-1",
            workflow=_workflow("w", 7),
        )

    report = expire(_CapturesBeforeBlobDelete(store, capture), policy, NOW)  # type: ignore[arg-type]
    assert sorted(e["executionId"] for e in report.expired) == ["old-0", "old-1"]
    assert report.restored_blobs == [blob_key(digest)] and report.expired_blobs == []
    assert report.to_json()["restoredBlobs"] == 1
    fresh = Archive(store, Sanitizer(bytes(range(32))))
    assert fresh.get_snapshot("new-1").snapshot_hash == digest  # the structure is readable
    with pytest.raises(NotFound):
        fresh.get_snapshot("old-0")


class _BlobExpiresDuringCapture:
    """A store on which the structure blob disappears (an expiry elsewhere) right after the
    capture asked for it and before its record is written."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.url, self.armed = inner, inner.url, True

    def put(self, key: str, data: bytes) -> bool:
        if self.armed and key.endswith("/snapshot.json.zst"):
            self.armed = False
            for info in list(self.inner.list("blobs/")):
                self.inner.delete(info.key)
        return self.inner.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_capture_puts_back_a_blob_expired_while_it_ran(store: ObjectStore) -> None:
    _, digest = _old_structure(store)
    racing = Archive(_BlobExpiresDuringCapture(store), Sanitizer(bytes(range(32))))  # type: ignore[arg-type]
    capture_received(racing, NOW, execution_id="new-2", workflow=_workflow("w", 7))
    assert store.head(blob_key(digest)) is not None
    fresh = Archive(store, Sanitizer(bytes(range(32))))
    assert fresh.get_snapshot("new-2").snapshot_hash == digest
