"""Compare, replay and timeline routes (api/routes_compare.py) and their CLI verbs."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI

from api.app import create_app
from api.cli import main
from archiver.archive import Archive
from archiver.config import FIELDS, Settings
from archiver.index import ManifestWriter
from archiver.sanitize import MARKER_PREFIX, Sanitizer
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from tests.helpers import HMAC_KEY
from tests.test_api import (
    SNAPSHOTS,
    TOKENS,
    TOKENS_SETTING,
    Client,
    asgi_raw,
    assert_error,
    make_app,
)

SECRET = "sk-live-4f1c2a9e8b7d6c5a4f3e2d1c"

WORKFLOW: dict[str, Any] = {
    "id": "wf-c",
    "name": "Orders",
    "nodes": [
        {
            "id": "t",
            "name": "Hook",
            "type": "n8n-nodes-base.webhook",
            "typeVersion": 2,
            "parameters": {"path": "orders"},
        },
        {
            "id": "h",
            "name": "HTTP",
            "type": "n8n-nodes-base.httpRequest",
            "parameters": {"url": "https://a.example.com", "apiKey": SECRET},
            "credentials": {"httpHeaderAuth": {"id": "7", "name": "Shop"}},
        },
    ],
    "connections": {"Hook": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
    "settings": {"executionOrder": "v1"},
}


def _changed() -> dict[str, Any]:
    wf = copy.deepcopy(WORKFLOW)
    wf["nodes"][1]["parameters"]["url"] = "https://b.example.com"
    wf["nodes"][1]["parameters"]["apiKey"] = SECRET + "-rotated"
    return wf


def _final(fail: bool) -> dict[str, Any]:
    http: dict[str, Any] = {
        "status": "error" if fail else "success",
        "outputItems": 0 if fail else 1,
    }
    if fail:
        http["error"] = {"message": "401 Unauthorized", "httpCode": "401"}
    return {
        "status": "error" if fail else "success",
        "startedAt": "2026-11-25T10:00:00Z",
        "finishedAt": "2026-11-25T10:00:01Z",
        "nodes": {"Hook": {"status": "success", "outputItems": 1}, "HTTP": http},
    }


def _seed(client: Client) -> None:
    runs = (
        ("e1", WORKFLOW, False, None),
        ("e2", _changed(), True, None),
        ("r1", WORKFLOW, True, "e1"),
    )
    for n, (execution_id, workflow, fail, replay_of) in enumerate(runs, start=1):
        body = {
            "executionId": execution_id,
            "workflow": workflow,
            "createdAt": f"2026-11-25T10:0{n}:00Z",
        }
        if replay_of is not None:
            body["replayOf"] = replay_of
        assert client.post(SNAPSHOTS, json=body).status_code == 201
        response = client.post(f"{SNAPSHOTS}/{execution_id}/final-state", json=_final(fail))
        assert response.status_code == 201


@pytest.fixture
def app() -> FastAPI:
    app, _ = make_app()
    _seed(Client(app))
    return app


@pytest.fixture
def client(app: FastAPI) -> Client:
    return Client(app)


# ---------------------------------------------------------------------------- compare


def test_compare_two_executions(client: Client) -> None:
    response = client.get(f"{SNAPSHOTS}/e1/compare/e2")
    assert response.status_code == 200, response.text
    assert MARKER_PREFIX not in response.text and SECRET not in response.text
    body = response.json()
    assert body["snapshotId1"].startswith("es_") and body["snapshotId2"].startswith("es_")
    assert body["side1"]["executionId"] == "e1" and body["side2"]["executionId"] == "e2"
    assert body["side1"]["version"] == "1.0.0" and body["side2"]["version"] == "1.0.1"
    assert body["empty"] is False and body["sameStructure"] is False
    changes = body["nodesModified"][0]["changes"]
    assert changes == [
        {"path": "/parameters/apiKey", "op": "replace", "kind": "secret", "secret": "changed"},
        {
            "path": "/parameters/url",
            "op": "replace",
            "old": "https://a.example.com",
            "new": "https://b.example.com",
        },
    ]
    first = body["execution"]["firstDivergence"]
    assert first["node"] == "HTTP"
    assert first["error"]["message"] == "401 Unauthorized"


def test_compare_an_execution_with_itself_is_empty(client: Client) -> None:
    body = client.get(f"{SNAPSHOTS}/e2/compare/e2").json()
    assert body["empty"] is True
    assert body["summary"] == "no difference"


def test_compare_unknown_and_bad_ids(client: Client, app: FastAPI) -> None:
    assert_error(client.get(f"{SNAPSHOTS}/e1/compare/nope"), 404, code="not_found")
    assert_error(client.get(f"{SNAPSHOTS}/nope/compare/e1"), 404, code="not_found")
    assert_error(client.get(f"{SNAPSHOTS}/e1/compare/a:b~c"), 422, field="otherExecutionId")
    assert_error(client.get(f"{SNAPSHOTS}/-x/compare/e1"), 422, field="executionId")
    status, _, raw = asgi_raw(app, "GET", f"{SNAPSHOTS}/e1/compare/a%2Fb".encode())
    assert status == 422 and orjson.loads(raw)["field"] == "otherExecutionId"
    status, _, raw = asgi_raw(app, "GET", f"{SNAPSHOTS}/e1/compare/%2e%2e".encode())
    assert status == 422 and orjson.loads(raw)["field"] == "otherExecutionId"


def test_compare_versions(client: Client, app: FastAPI) -> None:
    url = f"{SNAPSHOTS}/workflow/wf-c/versions"
    for v1, v2 in (("1.0.0", "1.0.1"), ("1", "2"), ("1", "1.0.1")):
        response = client.get(f"{url}/{v1}/compare/{v2}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["snapshotId1"] == "wf-c@1.0.0" and body["snapshotId2"] == "wf-c@1.0.1"
        assert body["nodesModified"][0]["node"] == "HTTP"
        assert body["execution"] is None
        assert MARKER_PREFIX not in response.text
    assert client.get(f"{url}/2/compare/1.0.1").json()["empty"] is True
    assert client.get(f"{url}/1/compare/head").json()["empty"] is True  # r1 restored 1.0.0
    assert_error(client.get(f"{url}/1/compare/4"), 404, code="not_found")
    assert_error(client.get(f"{url}/9.9.9/compare/1"), 404, code="not_found")
    assert_error(client.get(f"{SNAPSHOTS}/workflow/nope/versions/1/compare/2"), 404)
    assert_error(client.get(f"{url}/1.0/compare/1"), 422, field="v1")
    assert_error(client.get(f"{url}/1/compare/latest"), 422, field="v2")
    assert_error(
        client.get(f"{SNAPSHOTS}/workflow/-w/versions/1/compare/2"), 422, field="workflowId"
    )
    status, _, raw = asgi_raw(
        app, "GET", f"{SNAPSHOTS}/workflow/wf-c/versions/%00/compare/1".encode()
    )
    assert status == 422 and orjson.loads(raw)["field"] == "v1"
    status, _, raw = asgi_raw(
        app, "GET", f"{SNAPSHOTS}/workflow/wf-c/versions/1/compare/..".encode()
    )
    assert status == 422 and orjson.loads(raw)["field"] == "v2"


READ_ROUTES = [
    f"{SNAPSHOTS}/e1/compare/e2",
    f"{SNAPSHOTS}/workflow/wf-c/versions/1/compare/2",
    f"{SNAPSHOTS}/e1/replay-validation",
    f"{SNAPSHOTS}/e1/replay-context",
    f"{SNAPSHOTS}/r1/compare-to-original",
]


@pytest.fixture
def secured() -> FastAPI:
    app, _ = make_app(tokens=TOKENS_SETTING)
    _seed(Client(app, TOKENS["admin"]))
    return app


@pytest.mark.parametrize("url", READ_ROUTES)
@pytest.mark.parametrize("holder", ["ingest", "read", "query", "admin"])
def test_read_routes_need_the_read_scope(secured: FastAPI, url: str, holder: str) -> None:
    response = Client(secured, TOKENS[holder]).get(url)
    if holder in ("read", "admin"):
        assert response.status_code == 200, response.text
    else:
        assert_error(response, 403, field="Authorization", code="forbidden")
        assert 'scope="read"' in response.headers["www-authenticate"]
    assert_error(Client(secured).get(url), 401, field="Authorization")


# ---------------------------------------------------------------------------- replay


def test_replay_validation(client: Client) -> None:
    response = client.get(f"{SNAPSHOTS}/e1/replay-validation")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is True
    assert body["checks"]["hashVerified"] is True
    assert body["archive"]["tier"] == "hot" and body["archive"]["archived"] is False
    assert [e["pointer"] for e in body["mustSupply"]] == ["/workflow/nodes/1/parameters/apiKey"]
    assert SECRET not in response.text


def test_replay_context(client: Client) -> None:
    response = client.get(f"{SNAPSHOTS}/e1/replay-context")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["snapshotHash"] == client.get(f"{SNAPSHOTS}/e1").json()["snapshotHash"]
    assert body["workflow"]["connections"] == WORKFLOW["connections"]
    assert body["credentials"][0]["id"] == "7"
    assert body["originalOutcome"]["status"] == "success"
    assert SECRET not in response.text
    # the re-run, captured with replayOf, has the original's structure
    rerun = {"executionId": "e1-again", "workflow": body["workflow"], "replayOf": "e1"}
    again = client.post(SNAPSHOTS, json=rerun).json()
    assert again["snapshotHash"] == body["snapshotHash"]
    diff = client.get(f"{SNAPSHOTS}/e1-again/compare-to-original").json()
    assert diff["side1"]["executionId"] == "e1" and diff["sameStructure"] is True


def test_compare_to_original(client: Client) -> None:
    body = client.get(f"{SNAPSHOTS}/r1/compare-to-original").json()
    assert body["side1"]["executionId"] == "e1" and body["side2"]["executionId"] == "r1"
    assert body["execution"]["firstDivergence"]["node"] == "HTTP"
    not_replay = client.get(f"{SNAPSHOTS}/e1/compare-to-original")
    assert "not a replay" in assert_error(not_replay, 404, code="not_found")["message"]


@pytest.mark.parametrize("route", ["replay-validation", "replay-context", "compare-to-original"])
def test_replay_routes_unknown_and_bad_ids(client: Client, app: FastAPI, route: str) -> None:
    assert_error(client.get(f"{SNAPSHOTS}/nope/{route}"), 404, code="not_found")
    assert_error(client.get(f"{SNAPSHOTS}/a~b/{route}"), 422, field="executionId")
    status, _, raw = asgi_raw(app, "GET", f"{SNAPSHOTS}/a%2Fb/{route}".encode())
    assert status == 422 and orjson.loads(raw)["field"] == "executionId"


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for _, var, _ in FIELDS:
        monkeypatch.delenv(var, raising=False)
    key = tmp_path / "hmac.key"
    key.write_text(HMAC_KEY.hex() + "\n")
    store = f"local:{tmp_path / 'data'}"
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, ["--store", store, "--hmac-key-file", str(key), *args])

    for n, (workflow, fail) in enumerate(((WORKFLOW, False), (_changed(), True)), start=1):
        request = tmp_path / f"capture{n}.json"
        request.write_bytes(orjson.dumps({"executionId": f"e{n}", "workflow": workflow}))
        assert run("put", str(request)).exit_code == 0
        final = tmp_path / f"final{n}.json"
        final.write_bytes(orjson.dumps(_final(fail)))
        assert run("final-state", f"e{n}", str(final)).exit_code == 0
    return run


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    assert MARKER_PREFIX not in result.output and SECRET not in result.output
    return result.stdout


def test_cli_diff_text_and_json(cli: Any) -> None:
    text = _ok(cli("diff", "e1", "e2"))
    assert text.splitlines()[1:3] == ["--- a/e1", "+++ b/e2"]
    assert "~ node 'HTTP' (n8n-nodes-base.httpRequest): parameters" in text
    assert "/parameters/apiKey  (secret changed)" in text
    assert '-   "https://a.example.com"' in text and '+   "https://b.example.com"' in text
    assert "! first divergence: 'HTTP' (status, error, output; success → error): 401" in text
    body = orjson.loads(_ok(cli("diff", "e1", "e2", "--json")))
    assert body["execution"]["firstDivergence"]["node"] == "HTTP"
    same = _ok(cli("diff", "e1", "e1"))
    assert "# no difference" in same
    versions = orjson.loads(_ok(cli("diff", "--workflow", "wf-c", "1", "head", "--json")))
    assert versions["snapshotId2"] == "wf-c@1.0.1"


def test_cli_diff_errors(cli: Any) -> None:
    result = cli("diff", "e1", "nope")
    assert result.exit_code == 2 and "error:" in result.output
    result = cli("diff", "--workflow", "wf-c", "1", "1.x")
    assert result.exit_code == 2 and "v2" in result.output


def test_cli_show(cli: Any) -> None:
    text = _ok(cli("show", "e2"))
    assert text.startswith("execution e2\n")
    assert "Version:  1.0.1 (#2)  parent 1.0.0 (#1)" in text
    assert "patch: ~1 node(s) (HTTP)" in text
    assert "error (0 item(s)): 401 Unauthorized" in text
    assert "credential httpHeaderAuth Shop (7) used by HTTP" in text
    assert "Outcome:  error" in text
    body = orjson.loads(_ok(cli("show", "e1", "--json")))
    assert body["executionId"] == "e1" and body["versionCommit"]["seq"] == 1
    assert cli("show", "nope").exit_code == 2


def test_cli_replay_context(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    result = cli("replay-context", "e1", "-o", str(out), "--validate")
    assert result.exit_code == 0, result.output
    assert "1 value(s) to supply" in result.stderr
    body = orjson.loads(out.read_bytes())
    assert body["executionId"] == "e1" and body["mustSupply"][0]["node"] == "HTTP"
    assert SECRET not in out.read_text()
    workflow_only = cli("replay-context", "e1", "--workflow-only")
    assert workflow_only.exit_code == 0 and SECRET not in workflow_only.output
    printed = orjson.loads(workflow_only.stdout)  # markers stay: they are what the hash covers
    assert printed["connections"] == WORKFLOW["connections"]
    request = tmp_path / "rerun.json"
    request.write_bytes(orjson.dumps({"executionId": "e1b", "workflow": printed}))
    put = orjson.loads(_ok(cli("put", str(request))))
    assert put["snapshotHash"] == body["snapshotHash"]
    assert cli("replay-context", "nope").exit_code == 2


# ---------------------------------------------------------------------------- timeline


def _timeline_archive() -> Archive:
    """wf-t: 1.0.0 runs 3 times fine; 1.0.1 (url changed) fails from its second run on; 1.1.0
    (a node added) runs once, fine."""
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    v1 = {**copy.deepcopy(WORKFLOW), "id": "wf-t"}
    v2 = copy.deepcopy(v1)
    v2["nodes"][1]["parameters"]["url"] = "https://b.example.com"
    v3 = copy.deepcopy(v2)
    v3["nodes"].append({"id": "n", "name": "NoOp", "type": "n8n-nodes-base.noOp", "parameters": {}})
    plan = [(v1, False)] * 3 + [(v2, False), (v2, True), (v2, True), (v3, False)]
    with ManifestWriter(archive.store, flush_rows=100) as writer:
        writer.attach(archive)
        for n, (workflow, fail) in enumerate(plan):
            archive.capture_snapshot(
                execution_id=f"t{n}",
                workflow=workflow,
                created_at=T0 + timedelta(hours=n),
                backfill=True,
            )
            archive.record_final_state(f"t{n}", _final(fail))
    return archive


T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def timeline_app() -> FastAPI:
    return create_app(Settings(tokens=TOKENS_SETTING), archive=_timeline_archive())


def test_timeline(timeline_app: FastAPI) -> None:
    response = Client(timeline_app, TOKENS["read"]).get(f"{SNAPSHOTS}/workflow/wf-t/timeline")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["head"]["version"] == "1.1.0"
    assert body["totals"] == {"runs": 7, "finished": 7, "failures": 2}
    counts = [(v["version"], v["runs"], v["failures"], v["failureRate"]) for v in body["versions"]]
    assert counts == [("1.1.0", 1, 0, 0.0), ("1.0.1", 3, 2, 0.6667), ("1.0.0", 3, 0, 0.0)]
    assert body["versions"][1]["parent"]["version"] == "1.0.0"
    assert body["versions"][1]["summary"] == "~1 node(s) (HTTP)"
    [point] = body["changePoints"]
    assert point["version"] == "1.0.1" and point["parent"]["version"] == "1.0.0"
    assert point["firstFailure"]["executionId"] == "t4"
    assert point["firstFailure"]["failedNodes"] == ["HTTP"]
    assert point["newFailure"] is True and point["parentFailureRate"] == 0.0
    assert point["diff"]["nodesModified"][0]["node"] == "HTTP"
    assert MARKER_PREFIX not in response.text
    axis = [(e["kind"], e.get("executionId") if e["kind"] == "execution" else e["version"])
            for e in body["axis"]]  # fmt: skip
    assert axis == [
        ("execution", "t6"),
        ("version", "1.1.0"),
        ("execution", "t5"),
        ("execution", "t4"),
        ("execution", "t3"),
        ("version", "1.0.1"),
        ("execution", "t2"),
        ("execution", "t1"),
        ("execution", "t0"),
        ("version", "1.0.0"),
    ]
    assert body["nextCursor"] is None
    assert body["tags"] == {}


def test_timeline_pages_and_options(timeline_app: FastAPI) -> None:
    client = Client(timeline_app, TOKENS["read"])
    first = client.get(f"{SNAPSHOTS}/workflow/wf-t/timeline?limit=2&diffs=false").json()
    assert "diff" not in first["changePoints"][0]
    assert [e.get("executionId") for e in first["axis"] if e["kind"] == "execution"] == ["t6", "t5"]
    assert [e["version"] for e in first["axis"] if e["kind"] == "version"] == ["1.1.0"]
    second = client.get(
        f"{SNAPSHOTS}/workflow/wf-t/timeline?limit=2&cursor={first['nextCursor']}"
    ).json()
    assert [e.get("executionId") for e in second["axis"] if e["kind"] == "execution"] == [
        "t4",
        "t3",
    ]
    assert [e["version"] for e in second["axis"] if e["kind"] == "version"] == ["1.0.1"]


def test_timeline_errors(timeline_app: FastAPI) -> None:
    client = Client(timeline_app, TOKENS["read"])
    assert_error(client.get(f"{SNAPSHOTS}/workflow/nope/timeline"), 404, code="not_found")
    assert_error(client.get(f"{SNAPSHOTS}/workflow/-x/timeline"), 422, field="workflowId")
    assert_error(client.get(f"{SNAPSHOTS}/workflow/wf-t/timeline?limit=0"), 422)
    assert_error(client.get(f"{SNAPSHOTS}/workflow/wf-t/timeline?cursor=zzz"), 422, field="cursor")
    for holder in ("ingest", "query"):
        forbidden = Client(timeline_app, TOKENS[holder]).get(f"{SNAPSHOTS}/workflow/wf-t/timeline")
        assert_error(forbidden, 403, code="forbidden")
    assert_error(Client(timeline_app).get(f"{SNAPSHOTS}/workflow/wf-t/timeline"), 401)


def test_cli_log_shows_runs_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for _, var, _ in FIELDS:
        monkeypatch.delenv(var, raising=False)
    key = tmp_path / "hmac.key"
    key.write_text(HMAC_KEY.hex() + "\n")
    data = tmp_path / "data"
    source = _timeline_archive()
    target = LocalStore(data)
    for info in source.store.list(""):
        target.put(info.key, source.store.get(info.key))
    args = ["--store", f"local:{data}", "--hmac-key-file", str(key), "log", "wf-t"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["1.1.0", "1.0.1", "1.0.0"]
    assert "3 runs" in lines[1] and "2 failed" in lines[1]
    assert lines[1].endswith("[first failure: t4]")
    assert "1 run " in lines[0] and "0 failed" in lines[0]
    as_json = orjson.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    assert as_json["changePoints"][0]["diff"]["summary"] == "~1 node(s) (HTTP)"
    missing = CliRunner().invoke(main, [*args[:-1], "nope"])
    assert missing.exit_code == 2 and "no versions" in missing.output
