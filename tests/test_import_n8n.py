"""``execvault import-n8n``: backfill from n8n's database (docs/n8n-import.md).

n8n's tables are made from the schema a real n8n 2.41.1 created (tests/fixtures/n8n/), on SQLite
and on a real PostgreSQL (Debian's package, a throw-away cluster started here: missing binaries
fail the tests, never skip them). The rows are corpus workflows with run data shaped as n8n
stores it (flatted), including errors, a waiting execution, a retry, a missing execution_data
row and unreadable rows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from api.cli import main
from archiver.archive import Archive
from archiver.errors import InvalidInput, StoreUnavailable
from archiver.final_state import summarize
from archiver.layout import result_key, snapshot_key
from archiver.n8n_import import (
    ImportOptions,
    PostgresSource,
    SqliteSource,
    import_n8n,
    trigger_type_of,
)
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.s3 import S3Store
from tests.helpers import CORPUS, HMAC_KEY
from tests.n8n_db import FIXTURES, N8nDb, days_ago, run_data
from tests.postgres import Postgres, run_postgres

_CORPUS_FILES = {
    "wf-manual": "workflows__Manual__1044_Manual_Automate_Triggered.json",
    "wf-merge": "workflows__Manual__1090_Manual_Code_Automate_Triggered.json",
    "wf-hook": "workflows__Airtable__1120_Airtable_Mindee_Automate_Webhook.json",
}


def corpus_workflow(wf_id: str) -> dict[str, Any]:
    doc = orjson.loads((CORPUS / "n8n-workflows" / _CORPUS_FILES[wf_id]).read_bytes())
    doc["id"] = wf_id
    doc["name"] = doc.get("name") or wf_id
    doc.setdefault("settings", {"executionOrder": "v1"})
    return dict(doc)


@dataclass
class Dataset:
    """What was put into n8n's database and what the archive must then hold."""

    now: datetime
    workflows: dict[str, dict[str, Any]]
    good: dict[str, dict[str, Any]] = field(default_factory=dict)  # exec id → expectations
    bad: dict[str, str] = field(default_factory=dict)  # exec id → words of the reason
    unexecuted_version: str = "v-manual-2"


def fill(db: N8nDb) -> Dataset:
    now = datetime.now(UTC)
    wfs = {wf_id: corpus_workflow(wf_id) for wf_id in _CORPUS_FILES}
    ds = Dataset(now, wfs)
    manual, merge, hook = wfs["wf-manual"], wfs["wf-merge"], wfs["wf-hook"]
    manual2 = copy.deepcopy(manual)
    manual2["nodes"][1]["parameters"]["functionCode"] = "return items; // edited"
    for wf in wfs.values():
        db.workflow(wf, f"v-{wf['id'][3:]}-1", days_ago(30, now))
        db.history(wf, f"v-{wf['id'][3:]}-1", days_ago(30, now))
    db.history(manual2, ds.unexecuted_version, days_ago(9, now))  # saved, never run

    def add(exec_id: int, wf: dict[str, Any], *, status: str, mode: str, age: float, **kw: Any):
        created = days_ago(age, now)
        started = created + timedelta(milliseconds=40)
        stopped = started + timedelta(seconds=1)
        waiting = status == "waiting"
        fail = kw.pop("fail_node", None)
        data = kw.pop("data", None)
        if data is None and kw.get("with_data", True):
            data = run_data(wf, started, fail_node=fail, stop_after=2 if waiting else None)
        db.execution(
            exec_id,
            wf,
            status=status,
            mode=mode,
            created=created,
            started=started,
            stopped=None if waiting else stopped,
            wait_till=now + timedelta(days=3) if waiting else None,
            version_id=f"v-{wf['id'][3:]}-1",
            data=data,
            **kw,
        )
        return created, started, stopped, fail

    def good(exec_id: int, wf: dict[str, Any], **kw: Any) -> None:
        created, started, stopped, fail = add(exec_id, wf, **kw)
        ds.good[str(exec_id)] = {
            "workflowId": wf["id"],
            "status": kw["status"],
            "createdAt": created,
            "startedAt": started,
            "stoppedAt": stopped,
            "failed": [fail] if fail else [],
            "replayOf": kw.get("retry_of"),
            "waiting": kw["status"] == "waiting",
        }

    good(1, manual, status="success", mode="manual", age=20)
    good(
        2,
        merge,
        status="error",
        mode="trigger",
        age=19,
        fail_node="Merge (name + language + greeting)",
    )
    good(3, hook, status="success", mode="webhook", age=18)
    good(4, merge, status="success", mode="retry", age=17, retry_of="2")
    good(5, manual, status="waiting", mode="manual", age=16)
    good(6, hook, status="error", mode="webhook", age=15, fail_node="Mindee")
    add(7, manual, status="success", mode="manual", age=14, with_data=False)
    ds.bad["7"] = "no execution_data row"
    # Postgres' json column holds only valid JSON: there, valid JSON that is no workflow
    broken = '{"nodes": [' if db.kind == "sqlite" else "[1, 2]"
    add(8, hook, status="success", mode="webhook", age=13, workflow_data=broken)
    ds.bad["8"] = "workflowData is not"
    add(9, merge, status="success", mode="manual", age=12, data='["not flatted')
    ds.bad["9"] = "run data"
    good(10, manual, status="canceled", mode="manual", age=11)
    good(11, manual, status="crashed", mode="trigger", age=1.5)
    db.commit()
    return ds


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster for the session (fails, never skips, without one)."""
    with run_postgres() as server:
        yield server


_db_names = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgres"])
def n8n(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[N8nDb, Callable[[], Any]]]:
    """(n8n database to fill, a function opening the importer's source on it)."""
    if request.param == "sqlite":
        path = tmp_path / "database.sqlite"
        db = N8nDb.sqlite(path)
        yield db, lambda: SqliteSource(str(path))
    else:
        server: Postgres = request.getfixturevalue("postgres")
        dsn = server.create_database(f"n8n_{next(_db_names)}")
        db = N8nDb.postgres(dsn)
        yield db, lambda: PostgresSource(dsn)
    db.close()


@pytest.fixture(params=["local", "moto"])
def arc_store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_store_factory: Callable[..., S3Store]
) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return s3_store_factory("moto")


def archive_on(store: ObjectStore) -> Archive:
    return Archive(store, Sanitizer(HMAC_KEY))


def run_import(archive: Archive, open_source: Callable[[], Any], **options: Any) -> Any:
    source = open_source()
    try:
        return import_n8n(archive, source, ImportOptions(**options))
    finally:
        source.close()


def assert_archive_holds(archive: Archive, ds: Dataset) -> None:
    for exec_id, want in ds.good.items():
        snap = archive.get_snapshot(exec_id)
        assert snap.workflow_id == want["workflowId"]
        assert snap.created_at == want["createdAt"]
        assert snap.source == "backfill"
        assert snap.replay_of == want["replayOf"]
        outcome = archive.get_outcome(exec_id)
        assert outcome is not None
        summary = summarize(outcome)
        assert summary["status"] == want["status"], exec_id
        assert summary["failedNodes"] == want["failed"], exec_id
        assert outcome.started_at == want["startedAt"]
        if want["waiting"]:
            assert archive.get_final_state(exec_id) is None
            assert outcome.finished_at is None
        else:
            assert outcome.finished_at == want["stoppedAt"]
    for exec_id in ds.bad:
        assert archive.store.head(snapshot_key(exec_id)) is None, exec_id
        assert archive.store.head(result_key(exec_id)) is None, exec_id


# ------------------------------------------------------------------------------------------
# tests


def test_import_holds_exactly_n8ns_executions(
    n8n: tuple[N8nDb, Callable[[], Any]], arc_store: ObjectStore
) -> None:
    db, open_source = n8n
    ds = fill(db)
    archive = archive_on(arc_store)
    report = run_import(archive, open_source)
    assert report.imported == len(ds.good)
    assert report.in_progress == 1
    assert report.skipped_existing == 0
    failed = {f["executionId"]: f["reason"] for f in report.failed}
    assert set(failed) == set(ds.bad)
    for exec_id, words in ds.bad.items():
        assert words in failed[exec_id]
    assert_archive_holds(archive, ds)
    assert archive.get_snapshot("4").trigger_type == "retry"
    assert archive.get_snapshot("3").trigger_type == "webhook"
    assert archive.get_snapshot("1").workflow_snapshot.version_id == "v-manual-1"
    # the saved version no execution ran: a commit of its own, with n8n's id and time
    chain = archive.version_history("wf-manual")
    assert [c.execution_id for c in chain] == ["1", None]
    saved = chain[1]
    assert (saved.source, saved.engine_version_id) == ("backfill", ds.unexecuted_version)
    assert saved.created_at == days_ago(9, ds.now)
    assert chain[0].source is None and chain[0].engine_version_id is None
    # the executed versions are the executions' own commits: none twice
    assert [c.execution_id for c in archive.version_history("wf-merge")] == ["2"]


def test_rerun_imports_nothing_and_completes_what_ended(
    n8n: tuple[N8nDb, Callable[[], Any]], arc_store: ObjectStore
) -> None:
    db, open_source = n8n
    ds = fill(db)
    archive = archive_on(arc_store)
    run_import(archive, open_source)
    before = sorted(i.key for i in arc_store.list(""))
    again = run_import(archive_on(arc_store), open_source)
    assert (again.imported, again.completed) == (0, 0)
    assert again.skipped_existing == len(ds.good)
    assert (again.versions_imported, again.versions_skipped) == (0, 1)
    assert sorted(i.key for i in arc_store.list("")) == before
    # the waiting execution ends in n8n: the next run adds its final state, nothing else
    started = ds.good["5"]["startedAt"]
    workflow = ds.workflows["wf-manual"]
    db.update(
        'UPDATE "execution_entity" SET "status" = ?, "stoppedAt" = ?, "waitTill" = NULL '
        'WHERE "id" = ?',
        ["success", db._time(started + timedelta(seconds=5)), 5],
    )
    db.update(
        'UPDATE "execution_data" SET "data" = ? WHERE "executionId" = ?',
        [run_data(workflow, started), 5],
    )
    db.commit()
    third = run_import(archive_on(arc_store), open_source)
    assert (third.imported, third.completed) == (0, 1)
    final = archive.get_final_state("5")
    assert final is not None and final.status == "success"


@pytest.mark.parametrize(
    ("jobs", "crash"), [(1, ConnectionError), (4, ConnectionError), (4, StoreUnavailable)]
)
def test_an_interrupted_import_resumes(
    tmp_path: Path, arc_store: ObjectStore, jobs: int, crash: type[Exception]
) -> None:
    """The store fails after a snapshot was written and before its final state (a crash):
    the re-run completes that execution and imports the rest, each once."""
    db = N8nDb.sqlite(tmp_path / "database.sqlite")
    ds = fill(db)
    db.close()
    archive = archive_on(arc_store)
    real_put = arc_store.put
    puts = {"results": 0}

    def failing_put(key: str, data: bytes, *args: Any, **kw: Any) -> Any:
        if key.endswith("result.json.zst"):
            puts["results"] += 1
            if puts["results"] == 3:
                raise crash("store went away")
        return real_put(key, data, *args, **kw)

    arc_store.put = failing_put  # type: ignore[method-assign]
    with pytest.raises(crash):  # the store's failure stops the import: no row marked failed
        run_import(archive, lambda: SqliteSource(str(tmp_path / "database.sqlite")), jobs=jobs)
    arc_store.put = real_put  # type: ignore[method-assign]
    resumed = run_import(
        archive_on(arc_store), lambda: SqliteSource(str(tmp_path / "database.sqlite"))
    )
    assert resumed.completed == 1  # the one whose final state the crash lost
    assert resumed.imported + resumed.completed + resumed.skipped_existing == len(ds.good)
    assert resumed.skipped_existing >= 2
    assert {f["executionId"] for f in resumed.failed} == set(ds.bad)
    assert_archive_holds(archive_on(arc_store), ds)


def test_never_409_on_an_execution_the_live_hook_archived(
    n8n: tuple[N8nDb, Callable[[], Any]], arc_store: ObjectStore
) -> None:
    """n8n's stored copy differs from what the hook sent (startedAt by a few ms, the workflow's
    database columns): the live records stay, the import reports them as already archived."""
    db, open_source = n8n
    ds = fill(db)
    archive = archive_on(arc_store)
    live_wf = {**ds.workflows["wf-manual"], "active": True, "versionId": "v-manual-1"}
    want = ds.good["1"]
    live_started = want["startedAt"] + timedelta(milliseconds=6)
    archive.capture_snapshot(
        execution_id="1",
        workflow=live_wf,
        trigger_type="manual",
        created_at=live_started.isoformat(),
        backfill=True,
    )
    archive.record_final_state(
        "1",
        {
            "status": "success",
            "mode": "manual",
            "startedAt": live_started.isoformat(),
            "finishedAt": (live_started + timedelta(seconds=1)).isoformat(),
            "nodes": {},
        },
    )
    # the hook took execution 3's snapshot but its final state never arrived
    archive.capture_snapshot(
        execution_id="3",
        workflow=ds.workflows["wf-hook"],
        created_at=live_started.isoformat(),
        backfill=True,
    )
    live_record = arc_store.get(snapshot_key("1"))
    report = run_import(archive, open_source)
    assert report.skipped_existing == 1
    assert report.completed == 1
    assert report.imported == len(ds.good) - 2
    assert {f["executionId"] for f in report.failed} == set(ds.bad)
    assert arc_store.get(snapshot_key("1")) == live_record
    assert archive.get_snapshot("1").source is None
    final3 = archive.get_final_state("3")
    assert final3 is not None and final3.status == "success"


def test_filters_and_dry_run(tmp_path: Path) -> None:
    db = N8nDb.sqlite(tmp_path / "database.sqlite")
    ds = fill(db)
    db.close()
    store = LocalStore(tmp_path / "store")
    source = lambda: SqliteSource(str(tmp_path / "database.sqlite"))  # noqa: E731
    dry = run_import(archive_on(store), source, dry_run=True)
    assert dry.imported == len(ds.good) and dry.dry_run
    assert list(store.list("")) == []
    only = run_import(archive_on(store), source, workflow_ids=("wf-hook",), history=False)
    assert only.imported == 2  # 3 and 6; 8 is unreadable
    assert [f["executionId"] for f in only.failed] == ["8"]
    recent = run_import(archive_on(store), source, since=days_ago(12.5, ds.now))
    assert recent.total == 3  # 9 (unreadable), 10, 11
    assert recent.imported == 2
    first = run_import(archive_on(store), source, until=days_ago(18.5, ds.now), limit=1)
    assert (first.total, first.imported) == (1, 1)


def test_trigger_type_of_the_mode() -> None:
    schedule = {"nodes": [{"type": "n8n-nodes-base.scheduleTrigger", "name": "Every hour"}]}
    assert trigger_type_of("trigger", schedule) == "schedule"
    assert trigger_type_of("trigger", {"nodes": []}) == "trigger"
    assert trigger_type_of("integrated", {}) == "subworkflow"
    assert trigger_type_of("webhook", {}) == "webhook"


def test_real_n8n_rows_import(tmp_path: Path) -> None:
    """Rows a real n8n 2.41.1 wrote (its flatted run data as is): an error in a Code node and
    a corpus workflow's success."""
    fixture = orjson.loads((FIXTURES / "real_executions.json").read_bytes())
    path = tmp_path / "database.sqlite"
    db = N8nDb.sqlite(path)
    for row in fixture["rows"]:
        wf = orjson.loads(row["workflowData"])
        db._insert(
            "workflow_entity",
            {
                "id": wf["id"],
                "name": wf["name"],
                "active": False,
                "nodes": "[]",
                "connections": "{}",
                "versionId": row["workflowVersionId"],
            },
        )
        db._insert(
            "execution_entity",
            {
                k: row[k]
                for k in (
                    "id",
                    "workflowId",
                    "finished",
                    "mode",
                    "retryOf",
                    "startedAt",
                    "stoppedAt",
                    "waitTill",
                    "status",
                    "createdAt",
                    "workflowVersionId",
                )
            },
        )
        db._insert(
            "execution_data",
            {
                "executionId": row["id"],
                "workflowData": row["workflowData"],
                "data": row["data"],
                "workflowVersionId": row["workflowVersionId"],
            },
        )
    db.close()
    archive = archive_on(LocalStore(tmp_path / "store"))
    report = run_import(archive, lambda: SqliteSource(str(path)))
    assert (report.imported, report.failed) == (2, [])
    failed = archive.get_final_state("1")
    assert failed is not None
    assert (failed.status, summarize(failed)["failedNodes"]) == ("error", ["Boom"])
    assert archive.get_snapshot("1").trigger_type == "cli"
    ok = archive.get_final_state("3")
    assert ok is not None and ok.status == "success" and len(ok.nodes) == 3


def test_cli_import_summary_history_and_exit_code(tmp_path: Path) -> None:
    db = N8nDb.sqlite(tmp_path / "database.sqlite")
    ds = fill(db)
    db.close()
    base = ["--store", str(tmp_path / "store"), "--hmac-key-file", str(tmp_path / "key")]
    runner = CliRunner()
    args = [*base, "import-n8n", "--sqlite", str(tmp_path / "database.sqlite"), "--json"]
    done = runner.invoke(main, args)
    assert done.exit_code == 1, done.output  # three bad rows
    summary = orjson.loads(done.stdout)
    assert summary["imported"] == len(ds.good)
    assert summary["failed"] == 3 and summary["versionsImported"] == 1
    assert summary["executionsPerSecond"] > 0
    again = orjson.loads(runner.invoke(main, args).stdout)
    assert (again["imported"], again["skippedExisting"]) == (0, len(ds.good))
    # the saved version is no execution: history lists the executions only
    listed = runner.invoke(main, [*base, "history", "wf-manual", "--json"])
    assert listed.exit_code == 0, listed.output
    items = orjson.loads(listed.stdout)["items"]
    assert sorted(i["executionId"] for i in items) == ["1", "10", "11", "5"]
    text = runner.invoke(main, [*base, "import-n8n", "--sqlite", str(tmp_path / "database.sqlite")])
    assert "skipped:   8 already archived" in text.stdout
    assert "execution 7: no execution_data row" in text.stdout
    both = runner.invoke(main, [*base, "import-n8n"])
    assert both.exit_code == 2 and "exactly one of" in both.output


def test_source_field_rules(tmp_path: Path) -> None:
    archive = archive_on(LocalStore(tmp_path / "store"))
    wf = corpus_workflow("wf-manual")
    with pytest.raises(InvalidInput) as refused:
        archive.capture_snapshot(execution_id="a", workflow=wf, source="backfill")
    assert refused.value.field == "source"
    with pytest.raises(InvalidInput):
        archive.capture_snapshot(execution_id="a", workflow=wf, source="later")
    late = archive.capture_snapshot(execution_id="b", workflow=wf, source="post-run")
    assert late.snapshot.source == "post-run"
    assert archive.get_snapshot("b").to_json()["source"] == "post-run"
    plain = archive.capture_snapshot(execution_id="c", workflow=wf)
    assert "source" not in plain.snapshot.record_body()
    assert archive.get_snapshot("c").to_json()["source"] is None
    # same structure, same hash, whatever the source
    assert plain.snapshot.snapshot_hash == late.snapshot.snapshot_hash
    again = archive.capture_snapshot(execution_id="b", workflow=wf, source="post-run")
    assert not again.created


def test_http_source_backfill_needs_the_backfill_scope() -> None:
    from api.auth import token_digest
    from tests.test_api import Client, make_app

    ingest, backfill = "evt_src-ingest", "evt_src-backfill"
    tokens = f"{token_digest(ingest)}:ingest,read;{token_digest(backfill)}:ingest,backfill,read"
    app, store = make_app(tokens=tokens)
    body = {"executionId": "1", "workflow": corpus_workflow("wf-manual"), "source": "backfill"}
    refused = Client(app, ingest).post("/api/execution-snapshots", json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["field"] == "source"
    assert list(store.list("")) == []
    done = Client(app, backfill).post("/api/execution-snapshots", json=body)
    assert done.status_code == 201, done.text
    assert Client(app, ingest).get("/api/execution-snapshots/1").json()["source"] == "backfill"
    resent = Client(app, backfill).post("/api/execution-snapshots", json=body)
    assert resent.status_code == 200
    other = Client(app, backfill).post(
        "/api/execution-snapshots", json={**body, "source": "post-run"}
    )
    assert other.status_code == 409
    unsourced = {k: v for k, v in body.items() if k != "source"}
    assert Client(app, backfill).post("/api/execution-snapshots", json=unsourced).status_code == 409
    late = Client(app, ingest).post(
        "/api/execution-snapshots", json={**body, "executionId": "2", "source": "post-run"}
    )
    assert late.status_code == 201, late.text
    bad = Client(app, ingest).post(
        "/api/execution-snapshots", json={**body, "executionId": "3", "source": "later"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "source"


def test_cli_import_from_postgres(tmp_path: Path, postgres: Postgres) -> None:
    dsn = postgres.create_database("n8n_cli")
    db = N8nDb.postgres(dsn)
    ds = fill(db)
    db.close()
    base = ["--store", str(tmp_path / "store"), "--hmac-key-file", str(tmp_path / "key")]
    args = [*base, "import-n8n", "--postgres", dsn, "--json", "--jobs", "2"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 1, done.output
    summary = orjson.loads(done.stdout)
    assert (summary["imported"], summary["failed"]) == (len(ds.good), len(ds.bad))
    got = CliRunner().invoke(main, [*base, "get", "2"])
    body = orjson.loads(got.stdout)
    assert body["source"] == "backfill" and body["finalState"]["status"] == "error"
    assert body["triggerType"] == "manual"  # mode trigger: the workflow's manual trigger node


def test_a_live_capture_racing_the_import_is_not_a_409(tmp_path: Path) -> None:
    """The hook captures execution 1 after the import's HEAD found nothing: the import's
    capture meets the live record (a 409 inside) and reports it as already archived."""
    db = N8nDb.sqlite(tmp_path / "database.sqlite")
    ds = fill(db)
    db.close()
    store = LocalStore(tmp_path / "store")
    archive = archive_on(store)
    archive.capture_snapshot(
        execution_id="1",
        workflow={**ds.workflows["wf-manual"], "active": True},
        created_at=ds.good["1"]["startedAt"].isoformat(),
        backfill=True,
    )
    live = store.get(snapshot_key("1"))
    real_head = store.head
    store.head = lambda key: None if key == snapshot_key("1") else real_head(key)  # type: ignore[method-assign]
    report = run_import(archive, lambda: SqliteSource(str(tmp_path / "database.sqlite")))
    assert report.skipped_existing == 1
    assert "1" not in {f["executionId"] for f in report.failed}
    assert store.get(snapshot_key("1")) == live


def test_an_execution_id_prefix_matches_the_hooks(tmp_path: Path) -> None:
    """`--execution-id-prefix` gives the ids the n8n hook gives with the same
    EXECVAULT_EXECUTION_ID_PREFIX: several n8n databases side by side in one archive."""
    db = N8nDb.sqlite(tmp_path / "database.sqlite")
    ds = fill(db)
    db.close()
    base = ["--store", str(tmp_path / "store"), "--hmac-key-file", str(tmp_path / "key")]
    runner = CliRunner()
    args = [*base, "import-n8n", "--sqlite", str(tmp_path / "database.sqlite"), "--json"]
    eu = orjson.loads(runner.invoke(main, [*args, "--execution-id-prefix", "eu:"]).stdout)
    us = orjson.loads(runner.invoke(main, [*args, "--execution-id-prefix", "us:"]).stdout)
    assert eu["imported"] == us["imported"] == len(ds.good)  # the same n8n ids, no collision
    listed = runner.invoke(main, [*base, "history", "wf-manual", "--json"])
    ids = sorted(i["executionId"] for i in orjson.loads(listed.stdout)["items"])
    assert ids == sorted(f"{p}:{n}" for p in ("eu", "us") for n in ("1", "10", "11", "5"))
    retried = {i: want["replayOf"] for i, want in ds.good.items() if want.get("replayOf")}
    assert retried
    for execution_id, retry_of in retried.items():
        got = runner.invoke(main, [*base, "get", f"eu:{execution_id}"])
        assert got.exit_code == 0, got.output
        assert orjson.loads(got.stdout)["replayOf"] == f"eu:{retry_of}"
    bad = runner.invoke(main, [*args, "--execution-id-prefix", "../"])
    assert bad.exit_code == 2 and "--execution-id-prefix" in bad.output
