"""Resource limits: analyst SQL in memory-capped worker processes, a bounded query queue that
never holds the threads other routes use, a budget for large request bodies, a cap on JSON
values, a full disk answered 507, and server paths kept out of what analysts see.

Limits are small here (256 MB, a few seconds) so every test stays well under 30 s.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import orjson
import pytest

from api.routes_query import sandbox_for
from archiver.errors import QueryLimitExceeded, QueryRefused, StorageFull
from archiver.index import ManifestWriter
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from query.catalog import Catalog
from query.sql import SqlSandbox, worker_pids
from tests.helpers import REPO
from tests.test_api import (
    SNAPSHOTS,
    TOKENS,
    TOKENS_SETTING,
    Client,
    _capture,
    assert_error,
    make_app,
)
from tests.test_index import make_archive, populate

MEMORY_LIMIT = "256MB"
LIMIT_BYTES = 256 * 1000**2
#: what a query may cost the host: its limit plus 512 MB (the acceptance bound)
RSS_BOUND = LIMIT_BYTES + 512 * 1024**2
MEMORY_HOGS = [
    "SELECT len(list(range(300000000)))",
    "SELECT length(repeat('x', 1500000000))",
    "SELECT list(range) FROM range(1000000000)",
    "SELECT string_agg(repeat('x', 1000000), '') FROM range(10000)",
]


def _status_kb(pid: int | str, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_worker_rss() -> int:
    """The largest peak RSS of any worker: the live ones (VmHWM) and the reaped (killed) ones."""
    live = [_status_kb(pid, "VmHWM") for pid in worker_pids()]
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return max([reaped, *live])


def measure_memory_hogs() -> dict[str, Any]:
    """Runs the memory hogs in a sandbox of this process and reports what each cost.

    Called in a fresh interpreter by the test below: the peak RSS of reaped children
    (``RUSAGE_CHILDREN``) is a maximum over every child a process ever waited for, so in the
    test process it would also count the n8n, servers and CLIs other tests started."""
    sandbox = SqlSandbox(Catalog(MemoryStore()), timeout_seconds=5.0, memory_limit=MEMORY_LIMIT)
    sandbox.start()
    first = sandbox.run("SELECT 42 AS x").rows()  # the worker is up
    server_before = _status_kb("self", "VmRSS")
    hogs = []
    for sql in MEMORY_HOGS:
        started = time.monotonic()
        try:
            sandbox.run(sql)
            limit = None
        except QueryLimitExceeded as err:
            limit = err.limit
        hogs.append(
            {
                "sql": sql,
                "limit": limit,
                "elapsed": time.monotonic() - started,
                "peak": _peak_worker_rss(),
            }
        )
    return {
        "first": first,
        "hogs": hogs,
        "server_growth": _status_kb("self", "VmRSS") - server_before,
        "next": sandbox.run("SELECT 1 AS one").rows(),
    }


def test_memory_hogs_answer_a_limit_within_the_time_limit_and_memory_stays_bounded() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import orjson, tests.test_resource_limits as t; "
            "print(orjson.dumps(t.measure_memory_hogs()).decode())",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert report["first"] == [[42]]
    for hog in report["hogs"]:
        assert hog["limit"] in ("memory", "time"), hog
        # bounded by the time limit plus the kill grace and a busy machine's slack (unbounded,
        # the first of these ran 103 s)
        assert hog["elapsed"] < 5.0 + 10.0, hog
        assert hog["peak"] < RSS_BOUND, hog
    # the server process itself never held the query's memory
    assert report["server_growth"] < 512 * 1024**2
    # and the next query is served (a killed worker was replaced)
    assert report["next"] == [[1]]


def test_api_memory_hog_is_a_422_naming_the_limit() -> None:
    app, _ = make_app(tokens=TOKENS_SETTING, query_memory_limit=MEMORY_LIMIT, query_timeout_ms=5000)
    client = Client(app, TOKENS["query"])
    started = time.monotonic()
    response = client.post("/api/query", json={"sql": MEMORY_HOGS[0]})
    assert time.monotonic() - started < 5.0 + 10.0  # includes the first worker's start
    body = assert_error(response, 422, code="query_limit_exceeded")
    assert body["limit"] == "memory" and "memory" in body["message"]
    slow = client.post(
        "/api/query", json={"sql": "SELECT count(*) FROM range(100000000000)", "timeoutMs": 500}
    )
    assert assert_error(slow, 422, code="query_limit_exceeded")["limit"] == "time"


def test_result_size_is_capped() -> None:
    sandbox = SqlSandbox(Catalog(MemoryStore()), max_result_bytes=64 * 1024)
    # the JSON of the rows stops at the cap, and says so
    result = sandbox.run("SELECT range AS n, repeat('y', 100) AS s FROM range(5000)", arrow=False)
    body = orjson.loads(result.to_json_bytes())
    assert body["truncated"] and 0 < body["rowCount"] < 5000
    assert len(orjson.dumps(body["rows"])) <= 64 * 1024
    with pytest.raises(QueryLimitExceeded) as raised:
        sandbox.run("SELECT repeat('x', 100000) AS s", arrow=False)
    assert raised.value.limit == "result"


def test_queries_beyond_the_queue_are_refused_at_once_and_never_starve_captures() -> None:
    app, _ = make_app(tokens=TOKENS_SETTING, query_workers=1, query_queue=1, query_timeout_ms=6000)
    sandbox, _ = sandbox_for(app.state)
    sandbox.start()
    slow = {"sql": "SELECT count(*) FROM range(100000000000)", "timeoutMs": 5000}
    query = {"Authorization": f"Bearer {TOKENS['query']}"}
    ingest = {"Authorization": f"Bearer {TOKENS['ingest']}"}

    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            running = [
                asyncio.create_task(client.post("/api/query", json=slow, headers=query))
                for _ in range(2)
            ]
            deadline = time.monotonic() + 10
            while sandbox.in_flight < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert sandbox.in_flight == 2  # one running, one queued
            # the queries hold none of the threads every other route runs on
            borrowed = anyio.to_thread.current_default_thread_limiter().borrowed_tokens
            started = time.monotonic()
            busy = await client.post("/api/query", json={"sql": "SELECT 1"}, headers=query)
            busy_seconds = time.monotonic() - started
            capture = await client.post(SNAPSHOTS, json=_capture(), headers=ingest)
            health = await client.get("/healthz")
            still_running = sandbox.in_flight
            done = await asyncio.gather(*running)
            return {
                "borrowed": borrowed,
                "busy": busy,
                "busy_seconds": busy_seconds,
                "capture": capture.status_code,
                "health": health.status_code,
                "still_running": still_running,
                "done": [r.status_code for r in done],
            }

    out = asyncio.run(go())
    assert out["borrowed"] == 0
    body = assert_error(out["busy"], 429, code="too_many_queries")
    assert "waiting" in body["message"]
    assert int(out["busy"].headers["Retry-After"]) > 0
    # refused at once: before the running query's 5 s limit (still_running below says the same)
    assert out["busy_seconds"] < 5.0
    assert out["capture"] == 201 and out["health"] == 200
    assert out["still_running"] == 2  # the capture completed while both queries were in
    # the running one hits its time limit; the queued one its limit, or no worker in time
    assert out["done"][0] == 422 and out["done"][1] in (422, 429)


def test_a_body_with_too_many_json_values_is_refused_before_parsing() -> None:
    app, _ = make_app(tokens=TOKENS_SETTING, max_json_values=1000)
    client = Client(app, TOKENS["ingest"])
    body = _capture(triggerData={"n": list(range(2000))})
    assert_error(client.post(SNAPSHOTS, json=body), 413, field="body", code="payload_too_large")
    assert client.post(SNAPSHOTS, json=_capture()).status_code == 201


def test_large_bodies_in_flight_are_bounded() -> None:
    mib = 1024 * 1024
    app, _ = make_app(tokens=TOKENS_SETTING, max_inflight_body_bytes=3 * mib)
    ingest = {"Authorization": f"Bearer {TOKENS['ingest']}", "Content-Type": "application/json"}

    async def go() -> tuple[int, httpx.Response, int]:
        release = asyncio.Event()
        arrived = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            yield b'{"executionId": "big", "workflow": "' + b"x" * (2 * mib)
            arrived.set()
            await release.wait()
            yield b'"}'

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post(SNAPSHOTS, content=stalled(), headers=ingest))
            await asyncio.wait_for(arrived.wait(), 10)
            await asyncio.sleep(0.05)  # the 2 MiB chunk reached the middleware
            second = await client.post(
                SNAPSHOTS, content=b'"' + b"y" * (2 * mib) + b'"', headers=ingest
            )
            release.set()
            first_status = (await first).status_code
            third = await client.post(
                SNAPSHOTS, content=b"[" + b"1" * (2 * mib) + b"]", headers=ingest
            )
            return first_status, second, third.status_code

    first, second, third = asyncio.run(go())
    assert first == 422  # not a workflow, but read and answered
    assert_error(second, 503, code="overloaded")
    assert int(second.headers["Retry-After"]) > 0
    assert third == 422  # the budget was given back


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_a_507_and_nothing_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = LocalStore(tmp_path / "store")

    def full(_: int) -> None:
        raise OSError(code, "No space left on device")

    monkeypatch.setattr("archiver.store.local.os.fsync", full)
    with pytest.raises(StorageFull):
        store.put("blobs/aa/x", b"data")
    app, _ = make_app(store, tokens=TOKENS_SETTING)
    response = Client(app, TOKENS["ingest"]).post(SNAPSHOTS, json=_capture())
    body = assert_error(response, 507, code="storage_full")
    assert "space" in body["message"] and str(tmp_path) not in response.text
    assert int(response.headers["Retry-After"]) > 0
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_s3_out_of_space_is_storage_full() -> None:
    from botocore.exceptions import ClientError

    from archiver.store.s3 import _is_retryable, _translate

    for code, status in (("XMinioStorageFull", 507), ("SomethingElse", 507)):
        err = ClientError(
            {
                "Error": {"Code": code, "Message": "full"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "PutObject",
        )
        assert isinstance(_translate(err, "put", key="k"), StorageFull)
        assert not _is_retryable(err)


def test_server_paths_stay_hidden(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        populate(archive)
    with Catalog(store) as catalog:
        sandbox = SqlSandbox(catalog, timeout_seconds=5.0)
        index_dir = catalog.index_dir.rstrip("/")
        for sql in (
            "SELECT * FROM duckdb_settings()",
            "SELECT current_setting('home_directory')",
            "SELECT current_setting('temp_directory')",
            "SELECT sql FROM sqlite_master",
            "SELECT view_definition FROM information_schema.views",
            "SELECT * FROM duckdb_views()",
            "SELECT install_path FROM duckdb_extensions()",
            "SELECT * FROM duckdb_external_file_cache()",
        ):
            with pytest.raises(QueryRefused):
                sandbox.run(sql)
        missing = f"SELECT * FROM read_parquet('{index_dir}/snapshots/nope.parquet')"
        with pytest.raises(Exception) as raised:
            sandbox.run(missing)
        assert "<index>/snapshots/nope.parquet" in str(raised.value)
        assert str(tmp_path) not in str(raised.value)
        rows = sandbox.run(f"SELECT '{index_dir}/x' AS p", arrow=False).to_json_bytes()
        assert b"<index>/x" in rows and str(tmp_path).encode() not in rows
