"""The run lease: one retention run (archive / expire) per store at a time."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from api.app import create_app
from api.cli import main
from archiver.archive import Archive
from archiver.config import Settings
from archiver.errors import RunBusy
from archiver.retention import RETENTION_LEASE
from archiver.runlock import break_lease, run_lease, take_lease
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from archiver.timeutil import utcnow
from tests.helpers import HMAC_KEY, capture_received


def test_one_run_at_a_time_then_the_next(store: ObjectStore) -> None:
    with run_lease(store, "retention", owner="alice") as first:
        with pytest.raises(RunBusy) as busy:
            take_lease(store, "retention", owner="bob")
        assert "alice" in str(busy.value) and busy.value.holder["runId"] == first.body["runId"]
        with run_lease(store, "other-job"):  # another lease name is independent
            pass
    with run_lease(store, "retention", owner="bob") as second:
        assert second.gen == first.gen + 1
    keys = sorted(i.key for i in store.list("locks/retention/"))
    assert keys == [
        "locks/retention/0000000001.done.json",
        "locks/retention/0000000001.json",
        "locks/retention/0000000002.done.json",
        "locks/retention/0000000002.json",
    ]


def test_racing_runs_exactly_one_wins(store: ObjectStore) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def run() -> None:
        barrier.wait()
        try:
            lease = take_lease(store, "retention")
        except RunBusy:
            outcomes.append("busy")
        else:
            outcomes.append("won")
            time.sleep(0.3)
            lease.release()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["busy"] * 5 + ["won"]


def test_a_lease_whose_holder_stopped_beating_is_taken_over(store: ObjectStore) -> None:
    stuck = take_lease(store, "retention", ttl=600)
    stuck._stop.set()  # its heartbeats stop, as when a process is killed on another machine
    with pytest.raises(RunBusy):
        take_lease(store, "retention")
    later = take_lease(store, "retention", clock=lambda: utcnow() + timedelta(seconds=601))
    assert later.gen == stuck.gen + 1
    later.release()


def test_a_dead_holder_on_this_host_does_not_block() -> None:
    store = MemoryStore()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lease = take_lease(store, "retention")
    lease._stop.set()
    # forge the holder's pid: a process of this host that has exited
    key = f"locks/retention/{lease.gen:010d}.json"
    body = orjson.loads(store.get(key)) | {"pid": int(dead.stdout)}
    store.delete(key)
    store.put(key, orjson.dumps(body))
    assert take_lease(store, "retention").gen == lease.gen + 1


def test_heartbeats_keep_a_long_run_alive() -> None:
    store = MemoryStore()
    with run_lease(store, "retention", ttl=0.4):
        time.sleep(1.0)  # longer than the ttl: only heartbeats keep it
        assert any(".hb-" in i.key for i in store.list("locks/retention/"))
        with pytest.raises(RunBusy):
            take_lease(store, "retention", ttl=0.4)


def test_break_lease(store: ObjectStore) -> None:
    assert break_lease(store, "retention") is None
    stuck = take_lease(store, "retention", owner="stuck")
    stuck._stop.set()
    assert break_lease(store, "retention") == stuck.body
    assert take_lease(store, "retention").gen == stuck.gen + 1


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text("[retention]\nkeep_days = 90\n")
    return path


def _old(store: ObjectStore) -> Archive:
    archive = Archive(store, Sanitizer(HMAC_KEY))
    capture_received(
        archive,
        utcnow() - timedelta(days=400),  # past the default 365
        execution_id="e1",
        workflow={
            "id": "w",
            "nodes": [{"id": "a", "name": "A", "type": "n8n-nodes-base.set"}],
            "connections": {},
        },
    )
    return archive


def test_cli_expire_while_another_run_holds_the_lease(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _old(store)
    base = ["--store", f"local:{store.root}"]
    stuck = take_lease(store, RETENTION_LEASE, owner="cron@elsewhere")
    stuck._stop.set()
    for command in (["expire"], ["archive"]):
        out = CliRunner().invoke(main, [*base, *command, "--policy", str(_policy(tmp_path))])
        assert out.exit_code == 3, out.output
        assert "cron@elsewhere" in out.output and "break" in out.output
    assert len(list(store.list("executions/"))) == 1  # nothing expired
    assert list(store.list("events/tombstones/")) == []
    broke = CliRunner().invoke(main, [*base, "retention", "break-lock"])
    assert broke.exit_code == 0 and "cron@elsewhere" in broke.output
    out = CliRunner().invoke(main, [*base, "expire", "--policy", str(_policy(tmp_path))])
    assert out.exit_code == 0, out.output
    assert orjson.loads(out.output)["expired"] == 1


def test_http_expire_while_another_run_holds_the_lease() -> None:
    store = MemoryStore()
    archive = _old(store)
    token = "evt_ret"
    settings = Settings(tokens=f"{hashlib.sha256(token.encode()).hexdigest()}:retention")
    app = create_app(settings, archive=archive)

    def post(url: str) -> Any:
        async def go() -> Any:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                return await client.post(url, json={}, headers={"Authorization": f"Bearer {token}"})

        return asyncio.run(go())

    with run_lease(store, RETENTION_LEASE, owner="cron"):
        busy = post("/api/retention/expire")
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"] == "busy" and "cron" in busy.json()["message"]
    done = post("/api/retention/expire")
    assert done.status_code == 201, done.text
