"""The relay against a real running service (``execvault serve`` in its own process, local
store): exactly-once effect across kill -9, outages, torn and corrupt lines, conflicts, final
states that come before their snapshot, the lock, SIGTERM, status."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest

from api.auth import new_token, token_digest
from api.relay import Relay, full_status, spool_status
from api.spool import SpoolWriter, encode_line, list_segments, read_writer
from archiver.errors import InvalidInput
from tests.helpers import WORKFLOWS, load_corpus
from tests.live_service import LiveService, run_cli, service_env, start_cli, wait_until
from tests.test_spool import kill_9, start_writer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="flock, /proc: Linux")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LiveService]:
    live = LiveService(tmp_path / "data").start()
    try:
        yield live
    finally:
        live.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _snapshot(i: int, workflow_id: str = "wf-relay") -> dict[str, Any]:
    return {
        "executionId": f"r-{i}",
        "workflowId": workflow_id,
        "workflow": load_corpus(WORKFLOWS[i % len(WORKFLOWS)]),
        "createdAt": _now(),
    }


def _final(i: int) -> dict[str, Any]:
    return {
        "status": "error" if i % 4 == 0 else "success",
        "nodes": {"Step": {"status": "success"}},
    }


def _spool_executions(root: Path, numbers: range, **options: Any) -> None:
    with SpoolWriter(root, **options) as writer:
        for i in numbers:
            assert writer.append("snapshot", f"r-{i}", _snapshot(i))
            assert writer.append("final-state", f"r-{i}", _final(i))


def _relay_args(root: Path, service: LiveService, *more: str) -> list[str]:
    return ["relay", "--spool", str(root), "--url", service.url, "--status-seconds", "0.2", *more]


def _drained(root: Path) -> bool:
    return spool_status(root)["backlog"]["records"] == 0


def _assert_archived_once(service: LiveService, numbers: range) -> None:
    expected = sorted(f"r-{i}" for i in numbers)
    ids = wait_until(
        lambda: (ids := service.history_ids("wf-relay")) and len(ids) >= len(expected) and ids,
        "the index to list every execution",
        60,
    )
    assert sorted(ids) == expected  # every one, none twice
    for i in numbers:
        body = service.http.get(f"/api/execution-snapshots/r-{i}").json()
        assert body["finalState"]["status"] == _final(i)["status"], body["executionId"]


def _relay_json(root: Path) -> dict[str, Any]:
    try:
        value: dict[str, Any] = orjson.loads((root / "relay.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    process.send_signal(sig)
    try:
        code = process.wait(timeout=120)
    finally:
        if process.stderr is not None:
            process.stderr.close()
    return code


@pytest.mark.parametrize("lanes", [1, 4])
def test_kill_9_mid_delivery_then_restart_archives_every_record_exactly_once(
    tmp_path: Path, service: LiveService, lanes: int
) -> None:
    root = tmp_path / "spool"
    numbers = range(150)
    _spool_executions(root, numbers, segment_bytes=256 * 1024)
    total = sum(s.path.stat().st_size for s in list_segments(root))
    relay = start_cli(service.env, _relay_args(root, service, "--lanes", str(lanes)))
    try:
        # the first acknowledgement is written after ~0.5 s of delivering
        wait_until(lambda: list((root / "acks").glob("*.ack")), "a first ack", 120)
    finally:
        kill_9_code = _stop(relay, signal.SIGKILL)
    assert kill_9_code == -signal.SIGKILL
    left = spool_status(root)["backlog"]
    assert 0 < left["bytes"] < total  # killed in the middle of the backlog
    relay = start_cli(service.env, _relay_args(root, service, "--once"))
    assert relay.wait(timeout=600) == 0
    assert relay.stderr is not None
    relay.stderr.close()
    assert _drained(root) and list_segments(root) == []  # delivered segments are deleted
    _assert_archived_once(service, numbers)
    assert list((root / "rejected").iterdir()) == []


@pytest.mark.parametrize("lanes", [1, 4])
def test_an_outage_of_the_service_is_retried_and_the_backlog_drains(
    tmp_path: Path, service: LiveService, lanes: int
) -> None:
    root = tmp_path / "spool"
    relay = start_cli(service.env, _relay_args(root, service, "--lanes", str(lanes)))
    try:
        _spool_executions(root, range(5))
        wait_until(lambda: _drained(root), "the first records to arrive", 120)
        service.stop()
        _spool_executions(root, range(5, 40))
        wait_until(lambda: _relay_json(root).get("counts", {}).get("retried", 0) >= 2, "retries")
        status = _relay_json(root)
        assert status["state"] == "retrying" and "cannot reach" in status["lastError"]
        assert status["backlog"]["records"] > 0 and status["backlog"]["oldestAgeSeconds"] >= 0
        service.start()
        wait_until(lambda: _drained(root), "the backlog to drain after the outage", 180)
    finally:
        assert _stop(relay) == 0  # SIGTERM: a clean exit
    _assert_archived_once(service, range(40))
    assert _relay_json(root)["state"] == "stopped"


def _spool_interleaved(root: Path, numbers: range, **options: Any) -> None:
    """Executions that overlap, as an engine runs them: six at a time, their snapshots, then
    their `waiting` reports, then their ends."""
    with SpoolWriter(root, **options) as writer:
        for start in range(numbers.start, numbers.stop, 6):
            group = range(start, min(start + 6, numbers.stop))
            for i in group:
                assert writer.append("snapshot", f"r-{i}", _snapshot(i))
            for i in group:
                assert writer.append("final-state", f"r-{i}", {"status": "waiting"})
            for i in group:
                assert writer.append("final-state", f"r-{i}", _final(i))


def _assert_waited_then_ended(service: LiveService, numbers: range) -> None:
    """Each execution has its `waiting` progress record and its terminal final state: the
    `waiting` report came before the end (after it, it would have been refused with a 409)."""
    _assert_archived_once(service, numbers)
    for i in numbers:
        assert len(list(service.data.rglob(f"r-{i}/progress-waiting-*.json.zst"))) == 1, i


def test_lanes_keep_each_executions_order_snapshot_waiting_end(
    tmp_path: Path, service: LiveService
) -> None:
    root = tmp_path / "spool"
    numbers = range(24)
    _spool_interleaved(root, numbers)
    with Relay(root, service.url, lanes=4) as relay:
        counts = relay.run(once=True)
    # no final state ever came before its snapshot (deferred), nor a `waiting` after the end
    assert counts.delivered == 72 and counts.deferred == 0 and counts.rejected == 0
    assert _rejected(root) == [] and list_segments(root) == []
    _assert_waited_then_ended(service, numbers)


def test_lanes_send_concurrently_and_each_execution_in_file_order(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    numbers = range(16)
    _spool_interleaved(root, numbers)
    seen: dict[str, list[str]] = {}
    in_flight = most = 0
    changed = threading.Condition()

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        body = orjson.loads(request.content)
        if request.url.path.endswith("/final-state"):
            execution_id, what = unquote(request.url.path.split("/")[-2]), body["status"]
        else:
            execution_id, what = body["executionId"], "snapshot"
        with changed:
            seen.setdefault(execution_id, []).append(what)
            in_flight += 1
            most = max(most, in_flight)
            changed.notify_all()
            # hold each request until four were in flight at once (at most 2 s: the first
            # windows are small, a slow start)
            changed.wait_for(lambda: most >= 4, timeout=2.0)
            in_flight -= 1
        return httpx.Response(201, json={"executionId": execution_id})

    with Relay(root, "http://relay.test", lanes=4, transport=httpx.MockTransport(answer)) as relay:
        counts = relay.run(once=True)
    assert most == 4  # four lanes, four requests in flight, never more
    assert counts.delivered == 48 and counts.deferred == 0 and counts.retried == 0
    for i in numbers:  # each execution's records once each, in file order
        assert seen[f"r-{i}"] == ["snapshot", "waiting", _final(i)["status"]]
    assert list_segments(root) == []


def test_lanes_must_be_one_or_more(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        Relay(tmp_path / "spool", "http://relay.test", lanes=0)
    assert caught.value.field == "lanes"
    from click.testing import CliRunner

    from api.cli import main

    args = ["relay", "--spool", str(tmp_path / "spool"), "--url", "http://x", "--lanes", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--lanes" in result.output


def test_the_ack_never_passes_a_record_still_in_flight(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _spool_interleaved(root, range(6))  # s0..s5, w0..w5, f0..f5 (lines 0..17)
    (segment,) = list_segments(root)
    lines = segment.path.read_bytes().splitlines(keepends=True)
    starts = [sum(len(line) for line in lines[:k]) for k in range(len(lines) + 1)]
    held, release = threading.Event(), threading.Event()
    sent: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if request.url.path.endswith("/final-state"):
            execution_id, what = unquote(request.url.path.split("/")[-2]), body["status"]
        else:
            execution_id, what = body["executionId"], "snapshot"
        sent.append((execution_id, what))
        if (execution_id, what) == ("r-1", "waiting") and not release.is_set():
            held.set()
            release.wait(60)  # line 7 stays in flight until the relay is told to stop
        return httpx.Response(201, json={"executionId": execution_id})

    def ack() -> int:
        path = root / "acks" / f"{segment.stem}.ack"
        return int(orjson.loads(path.read_bytes())["offset"]) if path.exists() else 0

    relay = Relay(root, "http://relay.test", lanes=4, transport=httpx.MockTransport(answer))
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        assert held.wait(60)
        # the other lanes go on: r-0's end (line 12, behind the held line) is delivered ...
        wait_until(lambda: ("r-0", _final(0)["status"]) in sent, "the other lanes")
        # ... and the acknowledgement stops at the record in flight
        wait_until(lambda: ack() == starts[7], "the ack up to the record in flight")
        assert ("r-1", _final(1)["status"]) not in sent  # r-1's end waits behind its waiting
    finally:
        relay.stop()  # then the held request is answered: finished, no other one started
        release.set()
        thread.join(60)
        relay.close()
    assert not thread.is_alive()
    assert starts[7] < ack() < starts[-1] and ("r-1", _final(1)["status"]) not in sent
    before = len(sent)
    with Relay(root, "http://relay.test", lanes=4, transport=httpx.MockTransport(answer)) as again:
        again.run(once=True)
    assert list_segments(root) == [] and _rejected(root) == []
    resent = sent[before:]
    assert ("r-0", "snapshot") not in resent  # acknowledged lines are not sent again
    for i in range(6):  # every record sent, each execution's first sends in file order
        firsts = list(dict.fromkeys(what for eid, what in sent if eid == f"r-{i}"))
        assert firsts == ["snapshot", "waiting", _final(i)["status"]], i


def test_kill_9_mid_delivery_with_lanes_then_restart_keeps_order_and_exactly_once(
    tmp_path: Path, service: LiveService
) -> None:
    root = tmp_path / "spool"
    numbers = range(120)
    _spool_interleaved(root, numbers)  # one segment: its ack lives until it is all delivered
    total = sum(s.path.stat().st_size for s in list_segments(root))
    relay = start_cli(service.env, _relay_args(root, service, "--lanes", "4"))
    try:
        wait_until(lambda: list((root / "acks").glob("*.ack")), "a first ack", 120)
    finally:
        kill_9_code = _stop(relay, signal.SIGKILL)
    assert kill_9_code == -signal.SIGKILL
    left = spool_status(root)["backlog"]
    assert 0 < left["bytes"] < total  # killed in the middle of the backlog
    relay = start_cli(service.env, _relay_args(root, service, "--lanes", "4", "--once"))
    assert relay.wait(timeout=600) == 0
    assert relay.stderr is not None
    relay.stderr.close()
    assert _drained(root) and list_segments(root) == []
    assert list((root / "rejected").iterdir()) == []  # re-sends answered 200, no 409
    _assert_waited_then_ended(service, numbers)


def test_a_dead_writers_torn_last_line_is_dropped_and_its_segment_deleted(
    tmp_path: Path, service: LiveService
) -> None:
    root = tmp_path / "spool"
    with SpoolWriter(root) as writer:
        for i in range(3):
            writer.append("snapshot", f"e{i}", {**_snapshot(i), "executionId": f"e{i}"})
    process, name = start_writer(root, 3, torn=True)  # final states e0..e2 then half a line
    try:
        with Relay(root, service.url) as relay:
            relay.run(once=True)  # the writer lives: its half line is not touched
            assert relay.counts.torn == 0 and relay.counts.rejected == 0
            assert [s.writer for s in list_segments(root)] == [name]
    finally:
        kill_9(process)
    with Relay(root, service.url) as relay:
        counts = relay.run(once=True)
    assert counts.torn == 1 and counts.rejected == 0
    assert counts.delivered == 6  # cumulative over the two runs (relay.json)
    assert list_segments(root) == []
    assert service.http.get("/api/execution-snapshots/e2").json()["finalState"] is not None


def _write_segment(root: Path, stem: str, lines: list[bytes]) -> Path:
    (root / "segments").mkdir(parents=True, exist_ok=True)
    path = root / "segments" / f"{stem}.seg"
    path.write_bytes(b"".join(lines))
    return path


def _rejected(root: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for path in sorted((root / "rejected").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_a_corrupt_line_in_the_middle_is_rejected_a_bad_last_one_dropped(
    tmp_path: Path, service: LiveService
) -> None:
    root = tmp_path / "spool"
    corrupt = bytearray(encode_line("snapshot", "r-1", _snapshot(1)))
    corrupt[40] ^= 0x20
    stem = f"{int(time.time() * 1000):013d}-other.host-1-abc"
    _write_segment(
        root,
        stem,
        [
            encode_line("snapshot", "r-0", _snapshot(0)),
            bytes(corrupt),
            encode_line("snapshot", "r-2", _snapshot(2)),
            bytes(corrupt),  # a bad last line: what a crash mid-write leaves -> dropped
        ],
    )
    with Relay(root, service.url) as relay:
        counts = relay.run(once=True)
    assert counts.delivered == 2 and counts.rejected == 1 and counts.torn == 1
    (entry,) = _rejected(root)
    assert entry["reason"] == "corrupt" and entry["answer"] == {"problem": "crc"}
    assert entry["offset"] > 0 and entry["raw"].startswith(corrupt[:8].decode())
    assert (root / "rejected" / f"{stem}.jsonl").exists()
    assert service.http.get("/api/execution-snapshots/r-2").status_code == 200
    assert list_segments(root) == []


def test_a_conflict_is_rejected_with_the_status_and_the_answer(
    tmp_path: Path, service: LiveService
) -> None:
    root = tmp_path / "spool"
    first = _snapshot(1)
    assert service.http.post("/api/execution-snapshots", json=first).status_code == 201
    other = {**_snapshot(2), "executionId": "r-1"}  # the same id, another workflow
    with SpoolWriter(root) as writer:
        writer.append("snapshot", "r-1", first)  # identical re-send: delivered (200)
        writer.append("snapshot", "r-1", other)
        writer.append("final-state", "r-1", {"status": "success"})
    with Relay(root, service.url) as relay:
        counts = relay.run(once=True)
        relay.run(once=True)  # a second run does not reject it twice
    assert counts.delivered == 2 and counts.rejected == 1
    (entry,) = _rejected(root)
    assert entry["status"] == 409 and entry["reason"] == "immutable_conflict"
    assert entry["answer"]["error"] == "immutable_conflict"
    assert entry["kind"] == "snapshot" and entry["executionId"] == "r-1"
    assert entry["record"]["body"] == other  # kept whole, to fix and send by hand
    body = service.http.get("/api/execution-snapshots/r-1").json()
    assert body["workflowId"] == "wf-relay" and body["finalState"]["status"] == "success"


def test_a_post_run_fallback_for_an_archived_execution_is_no_conflict(
    tmp_path: Path, service: LiveService
) -> None:
    """An engine's end-of-run snapshot (`source: post-run`, taken when the pre-run one came from
    an earlier process) meets the archived pre-run snapshot: nothing is missing, nothing rejected.
    The same record for an execution the archive lacks is captured as it is."""
    root = tmp_path / "spool"
    pre_run = _snapshot(1)
    assert service.http.post("/api/execution-snapshots", json=pre_run).status_code == 201
    late = {**pre_run, "createdAt": _now(), "source": "post-run"}
    unknown = {**_snapshot(2), "source": "post-run"}
    with SpoolWriter(root) as writer:
        writer.append("snapshot", "r-1", late)
        writer.append("final-state", "r-1", _final(1))
        writer.append("snapshot", "r-2", unknown)
    with Relay(root, service.url) as relay:
        counts = relay.run(once=True)
    assert counts.delivered == 3 and counts.rejected == 0 and _rejected(root) == []
    first = service.http.get("/api/execution-snapshots/r-1").json()
    assert first.get("source") is None and first["finalState"]["status"] == _final(1)["status"]
    assert service.http.get("/api/execution-snapshots/r-2").json()["source"] == "post-run"


def test_a_final_state_before_its_snapshot_is_deferred_then_delivered(
    tmp_path: Path, service: LiveService
) -> None:
    root = tmp_path / "spool"
    with SpoolWriter(root) as early:  # an older segment holds the final state ...
        early.append("final-state", "r-7", {"status": "waiting"})
        early.append("final-state", "r-7", _final(7))
        early.append("final-state", "r-8", _final(8))  # ... and one whose snapshot never comes
    with SpoolWriter(root) as late:  # ... a newer one the snapshot
        late.append("snapshot", "r-7", _snapshot(7))
    assert len(list_segments(root)) == 2
    with Relay(root, service.url, defer_seconds=3600) as relay:
        counts = relay.run(once=True)
    assert counts.deferred == 3 and counts.delivered == 3 and counts.rejected == 0
    body = service.http.get("/api/execution-snapshots/r-7").json()
    assert body["finalState"]["status"] == _final(7)["status"]  # waiting, then the end: in order
    status = spool_status(root)
    assert status["backlog"]["deferred"] == 1 and status["backlog"]["records"] == 1
    # after defer_seconds the orphan is rejected, and the segment goes
    with Relay(root, service.url, defer_seconds=0) as relay:
        relay.run(once=True)  # a restarted relay retries the deferred records it finds at once
    (entry,) = _rejected(root)
    assert entry["reason"] == "deferred_expired" and entry["executionId"] == "r-8"
    assert entry["status"] == 404
    assert list_segments(root) == []


def test_one_relay_per_spool_and_status(tmp_path: Path, service: LiveService) -> None:
    root = tmp_path / "spool"
    _spool_executions(root, range(2))
    relay = start_cli(service.env, _relay_args(root, service))
    try:
        wait_until(lambda: _drained(root) and _relay_json(root).get("counts"), "delivery", 120)
        second = run_cli(service.env, *_relay_args(root, service, "--once"))
        assert second.returncode == 3
        assert b"another relay is delivering" in second.stderr
        status = run_cli(service.env, "relay", "status", "--spool", str(root), "--json")
        assert status.returncode == 0, status.stderr
        body = orjson.loads(status.stdout)
        assert body["running"] is True and body["backlog"]["records"] == 0
        assert body["counts"]["delivered"] == 4
        text = run_cli(service.env, "relay", "status", "--spool", str(root))
        assert b"relay:     running" in text.stdout and b"backlog 0 records" in text.stdout
    finally:
        assert _stop(relay) == 0
    assert full_status(root)["running"] is False


def test_status_reports_a_full_spool(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with SpoolWriter(root, max_bytes=600) as writer:
        while writer.append("final-state", "x", {"status": "success", "p": "y" * 100}):
            pass
        writer.append("final-state", "x", {"status": "success"})
    state = read_writer(root, writer.name)
    assert state is not None and state["dropped"] == 2
    result = run_cli(service_env(tmp_path / "data"), "relay", "status", "--spool", str(root))
    assert result.returncode == 1  # a writer is dropping records
    assert b"DROPPED 2 (spool full)" in result.stdout and b"SPOOL FULL since" in result.stdout


def test_every_relay_command_has_help_with_an_example() -> None:
    from click.testing import CliRunner

    from api.cli import main

    for args in (["relay", "--help"], ["relay", "status", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0 and "Example:" in result.output, args


def test_a_wrong_token_is_retried_not_rejected_and_old_records_need_backfill(
    tmp_path: Path,
) -> None:
    reader, ingest, backfill = new_token(), new_token(), new_token()
    tokens = ";".join(
        f"{token_digest(t)}:{scopes}"
        for t, scopes in ((reader, "read"), (ingest, "ingest"), (backfill, "ingest,backfill"))
    )
    live = LiveService(tmp_path / "data", env={"EXECVAULT_TOKENS": tokens}).start()
    root = tmp_path / "spool"
    old = {**_snapshot(1), "createdAt": (datetime.now(UTC) - timedelta(days=2)).isoformat()}
    with SpoolWriter(root) as writer:
        writer.append("snapshot", "r-0", _snapshot(0))
    try:
        # a token without `ingest`: the records are fine, the relay is not -> retried, kept
        with Relay(root, live.url, token=reader) as relay:
            thread = threading.Thread(target=relay.run)
            thread.start()
            wait_until(lambda: relay.counts.retried >= 1, "a retry", 60)
            relay.stop()
            thread.join(timeout=120)
            assert "403" in (relay.last_error or "")
        assert relay.counts.delivered == 0 and _rejected(root) == []
        assert spool_status(root)["backlog"]["records"] == 1
        # an old record (a long outage) is refused to a plain ingest token ...
        with SpoolWriter(root) as writer:
            writer.append("snapshot", "r-1", old)
        with Relay(root, live.url, token=ingest) as relay:
            relay.run(once=True)
        (entry,) = _rejected(root)
        assert entry["status"] == 422 and entry["reason"] == "invalid_input"
        assert entry["answer"]["field"] == "createdAt"
        # ... and accepted with `backfill`
        with SpoolWriter(root) as writer:
            writer.append("snapshot", "r-1", old)
        with Relay(root, live.url, token=backfill) as relay:
            relay.run(once=True)
        assert len(_rejected(root)) == 1 and _drained(root)
        assert (
            live.http.get(
                "/api/execution-snapshots/r-1", headers={"authorization": f"Bearer {reader}"}
            )
            .json()["createdAt"]
            .startswith(old["createdAt"][:10])
        )
    finally:
        live.close()


def test_sigterm_finishes_the_request_in_flight_then_exits(tmp_path: Path) -> None:
    received, answer = threading.Event(), threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            received.set()
            answer.wait(60)  # answered only after the relay got SIGTERM
            body = b'{"executionId": "r-0"}'
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    root = tmp_path / "spool"
    _spool_executions(root, range(3))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        relay = start_cli(
            service_env(tmp_path / "data"), ["relay", "--spool", str(root), "--url", url]
        )
        assert received.wait(120), "the relay sent nothing"
        relay.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signal is handled while the answer is still awaited
        answer.set()
        assert relay.wait(timeout=120) == 0
        assert relay.stderr is not None
        log = relay.stderr.read().decode()
        relay.stderr.close()
    finally:
        answer.set()
        server.shutdown()
        server.server_close()
    assert "SIGTERM, finishing the request in flight" in log
    status = _relay_json(root)
    assert status["state"] == "stopped" and status["counts"]["delivered"] == 1
    (segment,) = list_segments(root)
    first = next(iter(segment.path.read_bytes().splitlines(keepends=True)))
    ack = orjson.loads((root / "acks" / f"{segment.stem}.ack").read_bytes())
    assert ack == {"offset": len(first), "deferred": []}  # acknowledged, nothing more sent
