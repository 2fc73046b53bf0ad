"""The Python client (``api/client.py``) against a real running service: sync, async, spooling,
the archive's own exceptions for the service's errors, and the CLI's ``put``/``final-state``
with ``--url`` and ``--spool``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from api.auth import new_token, token_digest
from api.client import (
    AsyncExecVaultClient,
    AsyncSpoolingClient,
    ExecVaultClient,
    ServiceError,
    ServiceUnreachable,
    SpoolingClient,
    error_from_response,
)
from api.relay import spool_status
from archiver.errors import (
    ImmutableConflict,
    InvalidInput,
    NotFound,
    ObjectArchived,
    Overloaded,
    QueryLimitExceeded,
    StorageFull,
    StoreUnavailable,
)
from tests.helpers import REPO, WORKFLOWS, load_corpus
from tests.live_service import LiveService, free_port, run_cli, wait_until


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    live = LiveService(tmp_path_factory.mktemp("client") / "data").start()
    try:
        yield live
    finally:
        live.close()


def _workflow(i: int) -> dict[str, Any]:
    value: dict[str, Any] = load_corpus(WORKFLOWS[i])
    return value


FINAL = {"status": "success", "nodes": {"Step": {"status": "success"}}}


def _history_ids(client: ExecVaultClient, workflow_id: str, count: int) -> list[str]:
    def ids() -> list[str] | None:
        items = client.history(workflow_id, limit=100)["items"]
        return [i["executionId"] for i in items] if len(items) >= count else None

    found: list[str] = wait_until(ids, f"{count} executions in {workflow_id}'s history", 60)
    return found


def test_sync_client_round_trip_and_errors(service: LiveService) -> None:
    with ExecVaultClient(service.url) as client:
        first = client.capture(_workflow(0), "c-1", workflow_id="wf-client", trigger_type="manual")
        assert first["created"] is True and first["executionId"] == "c-1"
        assert len(first["snapshotHash"]) == 64
        again = client.capture(_workflow(0), "c-1", workflow_id="wf-client", trigger_type="manual")
        assert again["created"] is False and again["snapshotHash"] == first["snapshotHash"]
        final = client.final_state("c-1", FINAL)
        assert final["created"] is True and final["status"] == "success"
        got = client.get("c-1")
        assert got["snapshotHash"] == first["snapshotHash"]
        assert got["finalState"]["status"] == "success"
        assert _history_ids(client, "wf-client", 1) == ["c-1"]
        assert client.history("wf-client", status=["error"])["items"] == []
        since = datetime.now(UTC) - timedelta(hours=1)
        assert client.history("wf-client", since=since, trigger_type=["manual"])["items"]

        with pytest.raises(NotFound):
            client.get("no-such-execution")
        with pytest.raises(FileNotFoundError):  # NotFound is one too
            client.final_state("no-such-execution", FINAL)
        with pytest.raises(ImmutableConflict):
            client.capture(_workflow(1), "c-1", workflow_id="wf-client")
        with pytest.raises(InvalidInput) as err:
            client.capture(_workflow(2), "c-2", extra={"bogus": 1})
        assert err.value.field == "bogus"
        with pytest.raises(InvalidInput) as err:
            client.capture(_workflow(2), "c/2")
        assert err.value.field is not None


def test_an_unreachable_service_is_a_store_unavailable_to_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ExecVaultClient(url, timeout=5) as client, pytest.raises(ServiceUnreachable) as err:
        client.get("1")
    assert isinstance(err.value, StoreUnavailable)


def test_tokens_and_scopes(tmp_path: Path) -> None:
    ingest, read = new_token(), new_token()
    tokens = f"{token_digest(ingest)}:ingest;{token_digest(read)}:read"
    live = LiveService(tmp_path / "data", env={"EXECVAULT_TOKENS": tokens}).start()
    try:
        with ExecVaultClient(live.url) as anonymous, pytest.raises(ServiceError) as err:
            anonymous.capture(_workflow(3), "t-1", workflow_id="wf-t")
        assert err.value.status == 401 and err.value.code == "unauthorized"
        with ExecVaultClient(live.url, read) as reader, pytest.raises(ServiceError) as err:
            reader.capture(_workflow(3), "t-1", workflow_id="wf-t")
        assert err.value.status == 403
        with ExecVaultClient(live.url, ingest) as writer:
            assert writer.capture(_workflow(3), "t-1", workflow_id="wf-t")["created"]
        with ExecVaultClient(live.url, read) as reader:
            assert reader.get("t-1")["executionId"] == "t-1"
    finally:
        live.close()


def test_error_bodies_map_back_to_the_archive_errors() -> None:
    def err(status: int, code: str, **more: Any) -> Exception:
        return error_from_response(status, {"error": code, "message": "m", "field": None, **more})

    assert isinstance(err(404, "not_found"), NotFound)
    assert isinstance(err(409, "immutable_conflict"), ImmutableConflict)
    archived = err(409, "archived", executionId="9")
    assert isinstance(archived, ObjectArchived) and archived.execution_id == "9"
    limit = err(422, "query_limit_exceeded", limit="memory")
    assert isinstance(limit, QueryLimitExceeded) and limit.limit == "memory"
    assert isinstance(err(503, "overloaded"), Overloaded)
    assert isinstance(err(507, "storage_full"), StorageFull)
    invalid = error_from_response(422, {"error": "invalid_input", "message": "m", "field": "x"})
    assert isinstance(invalid, InvalidInput) and invalid.field == "x"
    other = error_from_response(502, None)  # a proxy's page, not the service
    assert isinstance(other, ServiceError) and other.status == 502


def test_async_client(service: LiveService) -> None:
    async def scenario() -> None:
        async with AsyncExecVaultClient(service.url) as client:
            receipts = await asyncio.gather(
                *(client.capture(_workflow(i), f"a-{i}", workflow_id="wf-async") for i in range(5))
            )
            assert all(r["created"] for r in receipts)
            finals = await asyncio.gather(*(client.final_state(f"a-{i}", FINAL) for i in range(5)))
            assert {f["executionId"] for f in finals} == {f"a-{i}" for i in range(5)}
            got = await client.get("a-3")
            assert got["finalState"]["status"] == "success"
            with pytest.raises(NotFound):
                await client.get("a-99")
            with pytest.raises(ImmutableConflict):
                await client.capture(_workflow(9), "a-1", workflow_id="wf-async")
            for _ in range(600):
                page = await client.history("wf-async")
                if len(page["items"]) == 5:
                    break
                await asyncio.sleep(0.1)
            assert sorted(i["executionId"] for i in page["items"]) == [f"a-{i}" for i in range(5)]

    asyncio.run(scenario())


def test_spooling_client_delivers_in_a_background_thread(
    tmp_path: Path, service: LiveService
) -> None:
    root = tmp_path / "spool"
    with SpoolingClient(root, url=service.url) as client:
        for i in range(10):
            # the final state first: the relay defers it until its snapshot is there
            assert client.final_state(f"s-{i}", FINAL)
            assert client.capture(_workflow(i), f"s-{i}", workflow_id="wf-spooled")
        wait_until(lambda: client.backlog()["records"] == 0, "the spool to drain", 120)
        got = client.get("s-9")
        assert got["finalState"]["status"] == "success"
        # createdAt is the append time, not the delivery time
        assert got["createdAt"] <= got["receivedAt"]
    with ExecVaultClient(service.url) as reader:
        assert len(_history_ids(reader, "wf-spooled", 10)) == 10


def test_spooling_client_without_delivery_only_appends(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with SpoolingClient(root, deliver=False) as client:
        assert client.capture(_workflow(0), "n-1")
        with pytest.raises(InvalidInput):
            client.get("n-1")
    assert spool_status(root)["backlog"]["records"] == 1
    with pytest.raises(InvalidInput) as err:
        SpoolingClient(root, deliver=True)
    assert err.value.field == "url"


def test_async_spooling_client(tmp_path: Path, service: LiveService) -> None:
    root = tmp_path / "spool"

    async def scenario() -> None:
        async with AsyncSpoolingClient(root, url=service.url) as client:
            for i in range(5):
                assert client.capture(_workflow(i), f"as-{i}", workflow_id="wf-aspool")
                assert client.final_state(f"as-{i}", FINAL)
            for _ in range(1200):
                if client.backlog()["records"] == 0:
                    break
                await asyncio.sleep(0.1)
            got = await client.get("as-4")
            assert got["finalState"]["status"] == "success"

    asyncio.run(scenario())
    assert spool_status(root)["backlog"]["records"] == 0


def test_cli_put_and_final_state_with_url_and_spool(tmp_path: Path, service: LiveService) -> None:
    workflow = tmp_path / "wf.json"
    workflow.write_bytes(WORKFLOWS[4].read_bytes())
    final = tmp_path / "final.json"
    final.write_bytes(orjson.dumps(FINAL))
    env = {**service.env, "EXECVAULT_STORE": f"local:{tmp_path / 'never'}"}

    put = run_cli(
        env,
        "put",
        str(workflow),
        "--execution-id",
        "cli-1",
        "--workflow-id",
        "wf-cli",
        "--url",
        service.url,
    )
    assert put.returncode == 0, put.stderr
    assert orjson.loads(put.stdout)["created"] is True
    done = run_cli(env, "final-state", "cli-1", str(final), "--url", service.url)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["status"] == "success"
    conflict = run_cli(env, "put", str(workflow), "--execution-id", "cli-1",
                       "--workflow-id", "wf-other", "--url", service.url)  # fmt: skip
    assert conflict.returncode == 2 and b"error:" in conflict.stderr

    spool = tmp_path / "spool"
    for args in (
        [
            "put",
            str(workflow),
            "--execution-id",
            "cli-2",
            "--workflow-id",
            "wf-cli",
            "--spool",
            str(spool),
        ],
        ["final-state", "cli-2", str(final), "--spool", str(spool)],
    ):
        result = run_cli(env, *args)
        assert result.returncode == 0, result.stderr
        assert orjson.loads(result.stdout)["spooled"] is True
    assert spool_status(spool)["backlog"]["records"] == 2
    relay = run_cli(env, "relay", "--spool", str(spool), "--url", service.url, "--once")
    assert relay.returncode == 0, relay.stderr
    assert b"delivered 2" in relay.stderr  # the readable progress line
    body = service.http.get("/api/execution-snapshots/cli-2").json()
    assert body["finalState"]["status"] == "success"
    assert not (tmp_path / "never").exists()  # neither mode opened the store


def test_the_client_stays_light() -> None:
    code = (
        "import sys, api.client\n"
        "heavy = {'fastapi', 'duckdb', 'pyarrow', 'boto3', 'starlette', 'query'}\n"
        "loaded = {m.split('.')[0] for m in sys.modules} & heavy\n"
        "inside = {m for m in sys.modules if m.startswith('archiver.')} - {'archiver.errors'}\n"
        "assert not loaded and not inside, (loaded, inside)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
