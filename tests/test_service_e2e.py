"""The service as a user runs it: `execvault serve` in its own process, plain httpx as the client.

No project code is used to talk to the server; only to start it and, afterwards, to run the CLI.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.helpers import HMAC_KEY, REPO, WORKFLOWS

SNAPSHOTS = "/api/execution-snapshots"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECVAULT_")}
    env.update(
        EXECVAULT_STORE=f"local:{data}",
        EXECVAULT_HMAC_KEY=HMAC_KEY.hex(),
        EXECVAULT_INDEX_FLUSH_MS="200",
        EXECVAULT_INDEX_JOURNAL_DIR=str(data.parent / "journal"),
    )
    return env


@contextmanager
def _server(data: Path) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port)],
        cwd=REPO,
        env=_env(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, "execvault serve exited"
                assert time.monotonic() < deadline, "execvault serve did not start"
                time.sleep(0.05)
            yield http, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=REPO,
        env=_env(data),
        capture_output=True,
        timeout=300,
        check=False,
    )


def _all_pages(http: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        response = http.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["nextCursor"]
        if not cursor:
            return items


def test_plain_http_client_archives_the_whole_corpus(tmp_path: Path) -> None:
    data = tmp_path / "data"
    captured: dict[str, dict[str, Any]] = {}
    with _server(data) as (http, _):
        for i, path in enumerate(WORKFLOWS):
            execution_id = f"run-{i:04d}"
            body = (
                b'{"executionId":"'
                + execution_id.encode()
                + b'","workflowId":"wf-'
                + str(i % 7).encode()
                + b'","workflow":'
                + path.read_bytes()
                + b"}"
            )
            response = http.post(
                SNAPSHOTS, content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 201, (path.name, response.text)
            captured[execution_id] = response.json()
            status = "error" if i % 3 == 0 else "success"
            # relative to the capture: some "finish" 30 days before it (an engine clock far
            # behind), most at once; all must show in history (a finish later than the capture
            # is covered by tests/test_query.py: over HTTP it cannot be later than now)
            shift = timedelta(days=-30) if i % 5 == 0 else timedelta(0)
            started = datetime.now(UTC) + shift
            final = {
                "status": status,
                "startedAt": started.isoformat(),
                "finishedAt": (started + timedelta(seconds=1)).isoformat(),
                "nodes": {"Step": {"status": status}},
            }
            response = http.post(f"{SNAPSHOTS}/{execution_id}/final-state", json=final)
            assert response.status_code == 201, response.text

        # Every capture comes back intact.
        for execution_id, receipt in captured.items():
            body = http.get(f"{SNAPSHOTS}/{execution_id}").json()
            assert body["snapshotHash"] == receipt["snapshotHash"]
            assert body["snapshotVersion"] == receipt["snapshotVersion"]
            assert body["finalState"]["status"] in ("success", "error")

        # History and hash lookups list exactly the captured set (the index is fresh in ~200 ms).
        deadline = time.monotonic() + 20
        while True:
            listed = {
                wf: _all_pages(http, f"{SNAPSHOTS}/workflow/wf-{wf}/history") for wf in range(7)
            }
            if sum(len(v) for v in listed.values()) == len(captured) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for wf, items in listed.items():
            expected = {e for e, r in captured.items() if r["workflowId"] == f"wf-{wf}"}
            assert {item["executionId"] for item in items} == expected
            times = [item["createdAt"] for item in items]
            assert times == sorted(times, reverse=True)
            assert all(item["status"] in ("success", "error") for item in items)
        by_hash: dict[str, set[str]] = {}
        for execution_id, receipt in captured.items():
            by_hash.setdefault(receipt["snapshotHash"], set()).add(execution_id)
        for digest, expected in list(by_hash.items())[:40]:
            items = _all_pages(http, f"{SNAPSHOTS}/by-hash/{digest}")
            assert {item["executionId"] for item in items} == expected


def test_kill_9_loses_no_acknowledged_capture_and_rebuild_makes_the_index_exact(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    documents = [path.read_bytes() for path in WORKFLOWS[:40]]
    acknowledged: list[str] = []
    stop = threading.Event()

    def stream(http: httpx.Client) -> None:
        i = 0
        while not stop.is_set():
            execution_id = f"k-{i:05d}"
            body = (
                b'{"executionId":"' + execution_id.encode() + b'","workflowId":"wf-kill",'
                b'"workflow":' + documents[i % len(documents)] + b"}"
            )
            try:
                response = http.post(
                    SNAPSHOTS, content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError:
                return  # the server is gone
            if response.status_code in (200, 201):
                acknowledged.append(execution_id)
            i += 1

    with _server(data) as (http, process):
        writer = threading.Thread(target=stream, args=(http,))
        writer.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        stop.set()
        writer.join(timeout=30)
    assert len(acknowledged) >= 60

    with _server(data) as (http, _):
        for execution_id in acknowledged:
            response = http.get(f"{SNAPSHOTS}/{execution_id}")
            assert response.status_code == 200, (execution_id, response.text)
        # A plain restart heals the index by itself (the journal): history lists every
        # acknowledged capture without rebuild-index.
        deadline = time.monotonic() + 60
        while True:
            listed = {
                i["executionId"] for i in _all_pages(http, f"{SNAPSHOTS}/workflow/wf-kill/history")
            }
            if set(acknowledged) <= listed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert set(acknowledged) - listed == set()

    stored = {p.parent.name for p in (data / "executions").glob("*/*/snapshot.json.zst")}
    assert set(acknowledged) <= stored
    rebuilt = _cli(data, "rebuild-index")
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()
    verified = _cli(data, "verify", "--json")
    assert verified.returncode == 0, verified.stdout.decode()
    report = orjson.loads(verified.stdout)
    assert report["ok"] is True
    assert report["rows"]["snapshots"] == len(stored)
    listed = _cli(data, "history", "wf-kill", "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr.decode()
    assert {i["executionId"] for i in orjson.loads(listed.stdout)["items"]} == stored
