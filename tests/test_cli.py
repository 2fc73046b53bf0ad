"""The ``execvault`` command line: documented commands, a round trip on a local store, serve."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
import uvicorn
from click.testing import CliRunner, Result

from api.auth import parse_tokens_file
from api.cli import is_loopback, main
from archiver.config import FIELDS
from tests.helpers import HMAC_KEY, REPO, WORKFLOWS

RUNS = REPO / "tests" / "fixtures" / "n8n_runs"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _commands(command, path)


ALL_COMMANDS = [(), *_commands(main)]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read EXECVAULT_* variables: start every test from none."""
    for _, var, _ in FIELDS:
        monkeypatch.delenv(var, raising=False)
    for var in ("EXECVAULT_CONFIG", "EXECVAULT_HOST", "EXECVAULT_PORT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    key = tmp_path / "hmac.key"
    key.write_text(HMAC_KEY.hex() + "\n")
    (tmp_path / "data").mkdir()  # read-only commands refuse a store that does not exist
    store = f"local:{tmp_path / 'data'}"
    runner = CliRunner()

    def run(*args: str, input: bytes | None = None) -> Result:
        return runner.invoke(
            main, ["--store", store, "--hmac-key-file", str(key), *args], input=input
        )

    return run


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "execvault")
def test_every_command_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`execvault {' '.join(path)} --help` shows no example"
    example = result.output.split("Example", 1)[1]
    assert "execvault" in example


def test_the_command_list_is_complete() -> None:
    names = {" ".join(p) for p in ALL_COMMANDS if p}
    assert {"serve", "put", "final-state", "get", "log", "token", "token new"} <= names


# ---------------------------------------------------------------------------- round trip


def _workflow(url: str = "https://example.com") -> dict[str, Any]:
    return {
        "id": "wf-cli",
        "name": "CLI demo",
        "nodes": [
            {
                "id": "t",
                "name": "Start",
                "type": "n8n-nodes-base.manualTrigger",
                "typeVersion": 1,
                "position": [0, 0],
                "parameters": {},
            },
            {
                "id": "h",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200, 0],
                "parameters": {"url": url},
            },
        ],
        "connections": {"Start": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
        "settings": {},
    }


def test_put_get_final_state_log_round_trip(cli: Any, tmp_path: Path) -> None:
    workflow = tmp_path / "workflow.json"
    workflow.write_bytes(orjson.dumps(_workflow()))
    put = orjson.loads(_ok(cli("put", str(workflow), "--execution-id", "1001", "--user-id", "u1")))
    assert put["created"] is True
    assert put["executionId"] == "1001" and put["workflowId"] == "wf-cli"
    assert put["snapshotVersion"] == "1.0.0"
    again = orjson.loads(
        _ok(cli("put", str(workflow), "--execution-id", "1001", "--user-id", "u1"))
    )
    assert again["created"] is False and again["snapshotHash"] == put["snapshotHash"]

    # A capture request file (executionId inside), read from stdin.
    request = {"executionId": "1002", "workflow": _workflow("https://example.org")}
    second = orjson.loads(_ok(cli("put", "-", input=orjson.dumps(request))))
    assert second["snapshotVersion"] == "1.0.1"

    final = _ok(cli("final-state", "1001", str(RUNS / "success_3_nodes.json")))
    assert orjson.loads(final)["status"] == "success"

    snapshot = orjson.loads(_ok(cli("get", "1001")))
    assert snapshot["executionId"] == "1001"
    assert snapshot["snapshotHash"] == put["snapshotHash"]
    assert snapshot["userId"] == "u1"
    assert snapshot["finalState"]["status"] == "success"
    assert orjson.loads(_ok(cli("get", "1002")))["finalState"] is None

    log = _ok(cli("log", "wf-cli")).splitlines()
    assert [line.split()[0] for line in log] == ["1.0.1", "1.0.0"]
    assert second["snapshotHash"][:12] in log[0]


def test_put_a_corpus_workflow(cli: Any) -> None:
    result = orjson.loads(
        _ok(cli("put", str(WORKFLOWS[0]), "--execution-id", "c-1", "--workflow-id", "wf-c"))
    )
    assert result["workflowId"] == "wf-c"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("get", "nope"), "no snapshot"),
        (("get", "../etc"), "executionId"),
        (("log", "nope"), "no versions"),
        (("final-state", "nope", str(RUNS / "success_3_nodes.json")), "no snapshot"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(cli: Any, args: tuple[str, ...], needle: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert needle in result.stderr
    assert "Traceback" not in result.output


# Read-only commands: everything but serve, put, final-state and hold set.
READ_ONLY = [
    ("get", "1001"),
    ("log", "wf-cli"),
    ("history", "wf-cli"),
    ("by-hash", "0" * 64),
    ("verify",),
    ("show", "1001"),
    ("diff", "1001", "1002"),
    ("replay-context", "1001"),
    ("export", "--workflow-id", "wf-1", "-o", "out.tar"),
    ("sql", "SELECT 1"),
    ("seal-index",),
    ("rebuild-index",),
    ("compact-index",),
    ("retention", "plan"),
    ("hold", "list"),
    ("hold", "clear", "execution", "1001"),
    ("expire",),
    ("archive",),
    ("restore", "1001"),
]


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
@pytest.mark.parametrize("store", ["local:{tmp}/absent", "{tmp}/absent"])
def test_read_only_commands_never_create_a_missing_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], store: str
) -> None:
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "hmac.key"
    result = CliRunner().invoke(
        main, ["--store", store.format(tmp=tmp_path), "--hmac-key-file", str(key), *args]
    )
    assert result.exit_code == 2, result.output
    assert "no store at" in result.stderr and "--store / EXECVAULT_STORE" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no key, no output


def test_the_default_store_is_not_created_by_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["get", "1001"])
    assert result.exit_code == 2
    assert "no store at 'local:./execvault-data'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_reads_of_an_existing_store_create_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the key file is where the writer made it; a read from another directory finds no key
    # there and must not leave a new one behind (it would sanitize nothing anyway)
    data, writer_dir, reader_dir = tmp_path / "data", tmp_path / "w", tmp_path / "r"
    writer_dir.mkdir()
    reader_dir.mkdir()
    workflow = writer_dir / "workflow.json"
    workflow.write_bytes(orjson.dumps(_workflow()))
    monkeypatch.chdir(writer_dir)
    put = CliRunner().invoke(
        main, ["--store", f"local:{data}", "put", str(workflow), "--execution-id", "k-1"]
    )
    assert put.exit_code == 0, put.output
    assert (writer_dir / "execvault-hmac.key").exists()
    monkeypatch.chdir(reader_dir)
    for args in (("get", "k-1"), ("history", "wf-cli"), ("verify",), ("log", "wf-cli")):
        result = CliRunner().invoke(main, ["--store", f"local:{data}", *args])
        assert result.exit_code in (0, 1), (args, result.output)
    assert list(reader_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("store", "needle"),
    [
        ("lcoal:./data", "did you mean local:?"),
        ("s3:/bucket", "expected s3://bucket/prefix"),
        ("s3:bucket", "expected s3://bucket/prefix"),
        ("memory", "did you mean memory:?"),
        ("local", "did you mean local:?"),
        ("s3", "did you mean s3://bucket/prefix?"),
        ("memroy:", "did you mean memory:?"),
        ("gs://bucket/x", "unknown store scheme 'gs:'"),
        ("memory:x", "write memory:"),
    ],
)
@pytest.mark.parametrize("command", [("get", "1001"), ("verify",), ("put", "-")])
def test_a_mistyped_store_is_refused_naming_the_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store: str,
    needle: str,
    command: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    request = orjson.dumps({"executionId": "1001", "workflow": _workflow()})
    result = CliRunner().invoke(main, ["--store", store, *command], input=request)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "(field: store)" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_plain_path_store_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hmac.key").write_text(HMAC_KEY.hex() + "\n")
    workflow = tmp_path / "workflow.json"
    workflow.write_bytes(orjson.dumps(_workflow()))
    base = ["--store", "plain/data", "--hmac-key-file", "hmac.key"]
    _ok(CliRunner().invoke(main, [*base, "put", str(workflow), "--execution-id", "1001"]))
    assert (tmp_path / "plain" / "data").is_dir()  # a write creates the store
    got = orjson.loads(_ok(CliRunner().invoke(main, [*base, "get", "1001"])))
    assert got["executionId"] == "1001"


def test_bad_json_file_is_refused_without_echo(cli: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"executionId": "SECRET-CANARY", "executionId": NaN}')
    result = cli("put", str(bad))
    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr
    assert "SECRET-CANARY" not in result.output


def test_put_without_execution_id_is_a_usage_error(cli: Any, tmp_path: Path) -> None:
    workflow = tmp_path / "workflow.json"
    workflow.write_bytes(orjson.dumps(_workflow()))
    result = cli("put", str(workflow))
    assert result.exit_code == 2
    assert "--execution-id" in result.output


# ---------------------------------------------------------------------------- serve


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_run(app: Any, **kwargs: Any) -> None:
        calls.append({"app": app, **kwargs})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_serve_refuses_public_binding_without_tokens(
    cli: Any, uvicorn_calls: list[dict[str, Any]], host: str
) -> None:
    result = cli("serve", "--host", host)
    assert result.exit_code == 2
    assert "no API tokens are configured" in result.output
    assert "refusing to bind" in result.output
    assert uvicorn_calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_serve_binds_loopback_without_tokens(
    cli: Any, uvicorn_calls: list[dict[str, Any]], host: str
) -> None:
    _ok(cli("serve", "--host", host, "--port", "9123"))
    assert [(c["host"], c["port"]) for c in uvicorn_calls] == [(host, 9123)]


def test_serve_binds_anywhere_with_tokens(
    cli: Any, uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXECVAULT_TOKENS", f"{'a' * 64}:ingest")
    _ok(cli("serve", "--host", "0.0.0.0"))
    monkeypatch.delenv("EXECVAULT_TOKENS")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{'b' * 64} read # dashboard\n")
    _ok(cli("serve", "--host", "0.0.0.0", "--tokens-file", str(tokens)))
    assert [c["host"] for c in uvicorn_calls] == ["0.0.0.0", "0.0.0.0"]
    assert all(c["server_header"] is False for c in uvicorn_calls)


def test_serve_refuses_a_broken_tokens_file(
    cli: Any, uvicorn_calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("evt_a-token-in-clear ingest\n")
    result = cli("serve", "--host", "0.0.0.0", "--tokens-file", str(tokens))
    assert result.exit_code == 2
    assert "SHA-256 digest" in result.stderr
    assert "evt_a-token-in-clear" not in result.output
    assert uvicorn_calls == []


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    assert is_loopback("localhost") and is_loopback("LOCALHOST")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("localhost.example.com")


# ---------------------------------------------------------------------------- tokens


def test_token_new_prints_a_token_once_with_its_digest_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["token", "new", "--scopes", "read,ingest", "--name", "ci"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    token = lines["token"].strip()
    file_line = lines["tokens-file line"].strip()
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert file_line == f"{digest} ingest,read # ci"
    assert lines["EXECVAULT_TOKENS"].strip() == f"{digest}:ingest,read"
    assert "shown only now" in result.stderr
    path = tmp_path / "tokens"
    path.write_text(file_line + "\n")
    (entry,) = parse_tokens_file(path)
    assert entry.name == "ci" and entry.scopes == {"ingest", "read"}
    other = CliRunner().invoke(main, ["token", "new", "--scopes", "read"])
    assert other.stdout.splitlines()[0] != result.stdout.splitlines()[0]


@pytest.mark.parametrize("scopes", ["", "bogus", "read,bogus", ","])
def test_token_new_refuses_unknown_scopes(scopes: str) -> None:
    result = CliRunner().invoke(main, ["token", "new", "--scopes", scopes])
    assert result.exit_code == 2
    assert "token:" not in result.stdout


def test_token_new_refuses_a_name_that_breaks_the_file() -> None:
    result = CliRunner().invoke(main, ["token", "new", "--scopes", "read", "--name", "a # b"])
    assert result.exit_code == 2
    assert "token:" not in result.stdout


# ---------------------------------------------------------------------------- put = HTTP capture


def _odd_workflow() -> dict[str, Any]:
    """Shared with its node ids censored to one placeholder (n8n imports and runs it)."""
    workflow = _workflow()
    for node in workflow["nodes"]:
        node["id"] = "[CENSORED]"
    return workflow


GOOD_REQUESTS = [
    {"executionId": "p-1", "workflow": _workflow()},
    {
        "executionId": "p-2",
        "workflow": [_workflow()],
        "workflowId": "wf-other",
        "variables": [{"key": "region", "value": "eu"}],
        "triggerType": "manual",
        "triggerData": {"q": 1},
        "userId": 7,
        "createdAt": "2026-05-01T10:00:00Z",
        "replayOf": "p-0",
    },
    {"executionId": 3, "workflow": _odd_workflow(), "createdAt": 1777629600000, "userId": None},
]

BAD_REQUESTS = [
    ({"executionId": "b-1", "workflow": _workflow(), "triggertype": "manual"}, "triggertype"),
    ({"executionId": "b-2", "workflow": _workflow(), "trigger_type": "manual"}, "trigger_type"),
    ({"executionId": "b-3", "workflow": _workflow(), "\u0000bad": 1}, "<key>"),
    ({"executionId": "b-4"}, "workflow"),
    ({"executionId": "b-5", "workflow": None}, "workflow"),
    ({"executionId": "b-6", "workflow": _workflow(), "triggerType": 7}, "triggerType"),
    ({"executionId": "b-7", "workflow": _workflow(), "createdAt": "yesterday"}, "createdAt"),
    ({"executionId": "b/8", "workflow": _workflow()}, "executionId"),
    ({"executionId": "b-9", "workflow": {**_workflow(), "nodes": [{"name": 3}]}}, "nodes[0].name"),
    ({"executionId": "b-10", "workflow": _workflow(), "variables": "x"}, "variables"),
]


def _http() -> Any:
    from tests.test_api import Client, make_app

    return Client(make_app()[0])


@pytest.mark.parametrize(("body", "field"), BAD_REQUESTS, ids=lambda v: str(v)[:24])
def test_put_and_http_capture_refuse_the_same_bodies_naming_the_same_field(
    cli: Any, body: dict[str, Any], field: str
) -> None:
    response = _http().post("/api/execution-snapshots", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    result = cli("put", "-", input=orjson.dumps(body))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert result.stderr.rstrip().endswith(f"(field: {field})"), result.stderr
    assert "Traceback" not in result.output


def test_put_and_http_capture_store_the_same_record_for_the_same_body(cli: Any) -> None:
    http = _http()
    for body in GOOD_REQUESTS:
        body = {**body, "createdAt": body.get("createdAt") or "2026-05-02T08:00:00Z"}
        response = http.post("/api/execution-snapshots", json=body)
        assert response.status_code == 201, response.text
        # the HTTP client is an open server (every scope): put needs its --backfill for old dates
        put = orjson.loads(_ok(cli("put", "-", "--backfill", input=orjson.dumps(body))))
        assert put["created"] is True
        assert put["warnings"] == response.json()["warnings"]
        execution_id = str(body["executionId"])
        via_http = http.get(f"/api/execution-snapshots/{execution_id}").json()
        via_cli = orjson.loads(_ok(cli("get", execution_id)))
        # the same record but for the time each server received it
        assert via_cli.pop("receivedAt") and via_http.pop("receivedAt")
        assert via_cli == via_http
    assert via_cli["nodeIdentity"] == "name"  # the last one: every id the same placeholder
    assert [w["code"] for w in via_cli["warnings"]] == ["duplicate-node-id"]


def test_put_options_set_the_request_fields(cli: Any, tmp_path: Path) -> None:
    """A workflow export plus options is the request {executionId, workflow, ...} they spell."""
    workflow = tmp_path / "workflow.json"
    workflow.write_bytes(orjson.dumps(_workflow()))
    args = ("--execution-id", "o-1", "--workflow-id", "wf-o", "--trigger-type", "manual")
    _ok(cli("put", str(workflow), *args, "--user-id", "u9"))
    got = orjson.loads(_ok(cli("get", "o-1")))
    assert (got["workflowId"], got["triggerType"], got["userId"]) == ("wf-o", "manual", "u9")
    # options override a request file's fields; its unknown fields are refused all the same
    request = tmp_path / "request.json"
    request.write_bytes(orjson.dumps({"executionId": "o-2", "workflow": _workflow()}))
    _ok(cli("put", str(request), "--execution-id", "o-3", "--trigger-type", "webhook"))
    assert orjson.loads(_ok(cli("get", "o-3")))["triggerType"] == "webhook"
    assert cli("get", "o-2").exit_code == 2
    request.write_bytes(orjson.dumps({"executionId": "o-4", "workflow": _workflow(), "x": 1}))
    result = cli("put", str(request), "--trigger-type", "webhook")
    assert result.exit_code == 2 and "(field: x)" in result.stderr


def test_verify_prints_plain_text_and_json_on_request(cli: Any, tmp_path: Path) -> None:
    workflow = tmp_path / "workflow.json"
    workflow.write_bytes(orjson.dumps(_workflow()))
    _ok(cli("put", str(workflow), "--execution-id", "1001"))
    for args in (
        ("verify",),
        ("verify", "--read-data"),
        ("verify", "--read-data", "--subset", "1/2"),
    ):
        text = _ok(cli(*args))
        assert not any(token in text for token in ("{'", "False", "True", "None")), text
        assert "objects:  snapshots 1, " in text and "blobs 1" in text
        assert text.rstrip().endswith("OK")
    assert "read:     " in _ok(cli("verify", "--read-data"))
    report = orjson.loads(_ok(cli("verify", "--json")))
    assert report["ok"] is True and report["readData"] is False
    assert report["objects"]["snapshots"] == 1
