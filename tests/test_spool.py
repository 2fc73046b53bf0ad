"""The spool's writer and reader (``docs/spool.md``): line format, durability across kill -9,
rotation, writer state, the size bound and its alarm, telling a dead writer from a live one."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import orjson
import pytest

from api.spool import (
    SpoolWriter,
    encode_line,
    list_segments,
    proc_start,
    read_lines,
    read_writer,
    writer_is_dead,
)
from archiver.errors import InvalidInput
from tests.helpers import REPO
from tests.live_service import wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="procStart and fdatasync: Linux")


def _records(root: Path) -> list[dict[str, object]]:
    found = []
    for segment in list_segments(root):
        for line in read_lines(segment.path):
            assert line.problem is None, line
            assert line.record is not None
            found.append(line.record)
    return found


def test_a_line_is_crc_space_json_newline_and_readable_at_once(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, fsync_interval_ms=60_000) as writer:
        assert writer.append("snapshot", "4711", {"executionId": "4711", "workflow": {}})
        # readable before any fsync or rotation: the write(2) happened in append
        (segment,) = list_segments(tmp_path)
        assert not segment.closed and segment.path.name.endswith(f"-{writer.name}.open")
        raw = segment.path.read_bytes()
    crc, text = raw[:8], raw[9:-1]
    assert raw[8:9] == b" " and raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert int(crc, 16) == zlib.crc32(text) and crc == crc.lower()
    record = orjson.loads(text)
    assert set(record) == {"v", "kind", "executionId", "at", "body"}
    assert record["v"] == 1 and record["kind"] == "snapshot" and record["executionId"] == "4711"
    assert record["at"].endswith("Z") and len(record["at"]) == 24
    # closing renamed it to .seg
    (segment,) = list_segments(tmp_path)
    assert segment.closed


def test_the_spool_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Records wait in the spool before the service sanitizes them."""
    root = tmp_path / "spool"
    with SpoolWriter(root) as writer:
        assert writer.append("snapshot", "1", {"executionId": "1", "workflow": {}})
    for path in [root, *root.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_bad_kind_or_id_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path) as writer:
        with pytest.raises(InvalidInput) as err:
            writer.append("snapshots", "1", {})
        assert err.value.field == "kind"
        with pytest.raises(InvalidInput):
            writer.append("snapshot", "", {})
    assert list_segments(tmp_path) == []


def test_segments_rotate_by_size_and_age_in_name_order(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, segment_bytes=300, fsync_interval_ms=20) as writer:
        for i in range(12):
            assert writer.append("final-state", f"e{i}", {"status": "success", "pad": "x" * 100})
        # full segments are synced, closed and renamed by the writer's timer, off append's path
        wait_until(
            lambda: len([s for s in list_segments(tmp_path) if s.closed]) >= 5,
            "rotation by size",
            30,
        )
    ids = [r["executionId"] for r in _records(tmp_path)]
    assert ids == [f"e{i}" for i in range(12)]  # name order = append order

    aged = tmp_path / "aged"
    with SpoolWriter(aged, segment_seconds=0.2, fsync_interval_ms=20) as writer:
        writer.append("final-state", "a", {"status": "success"})
        wait_until(lambda: all(s.closed for s in list_segments(aged)), "rotation by age", 30)
        assert writer.append("final-state", "b", {"status": "success"})
        assert len(list_segments(aged)) == 2


def test_writer_state_file(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, fsync_interval_ms=20) as writer:
        writer.append("final-state", "1", {"status": "success"})
        state = wait_until(
            lambda: (s := read_writer(tmp_path, writer.name)) and s["appended"] == 1 and s,
            "the writer's state",
            30,
        )
    assert state["pid"] == os.getpid() and state["host"] == socket.gethostname()
    assert state["procStart"] == proc_start() and isinstance(state["procStart"], int)
    assert state["dropped"] == 0 and state["fullSince"] is None
    assert state["updatedAt"].endswith("Z")
    final = read_writer(tmp_path, writer.name)
    assert final is not None and final["closed"] is True and final["appended"] == 1


def test_a_full_spool_drops_counts_and_alarms_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="execvault.spool")
    with SpoolWriter(tmp_path, max_bytes=1000, fsync_interval_ms=20) as writer:
        appended = 0
        while writer.append("final-state", f"e{appended}", {"status": "success", "p": "x" * 80}):
            appended += 1
        assert 5 <= appended <= 12  # bounded: stops at about max_bytes
        assert not writer.append("final-state", "late", {"status": "success"})
        assert writer.dropped == 2 and writer.full_since is not None
        state = wait_until(
            lambda: (s := read_writer(tmp_path, writer.name)) and s["dropped"] == 2 and s,
            "the drops in the writer's state",
            30,
        )
        assert state["fullSince"] is not None
    alarms = [r for r in caplog.records if "spool full" in r.getMessage()]
    assert len(alarms) == 1 and "is the relay running?" in alarms[0].getMessage()
    assert len(_records(tmp_path)) == appended


_WRITER_SCRIPT = """
import os, sys, time
from api.spool import SpoolWriter
writer = SpoolWriter(sys.argv[1], fsync_interval_ms=60_000)
for i in range(int(sys.argv[2])):
    writer.append("final-state", f"e{i}", {"status": "success"})
if sys.argv[3] == "torn":
    os.write(writer._fd, b"0badc0de {\\"v\\":1,\\"kind\\":\\"final-st")
print(writer.name, flush=True)
time.sleep(600)
"""


def start_writer(root: Path, count: int, torn: bool = False) -> tuple[subprocess.Popen[str], str]:
    """A writer in its own process that appends ``count`` records (and a torn half line) and
    then sleeps (kill it); returns the process and the writer's name."""
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER_SCRIPT, str(root), str(count), "torn" if torn else "-"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    name = process.stdout.readline().strip()
    assert name, "the writer did not start"
    return process, name


def kill_9(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def test_records_survive_kill_9_of_the_writer_and_it_is_then_dead(tmp_path: Path) -> None:
    process, name = start_writer(tmp_path, 200)
    try:
        assert not writer_is_dead(read_writer(tmp_path, name))
    finally:
        kill_9(process)
    # no fsync ever ran (interval 10 min) and no close: the page cache has every line
    assert [r["executionId"] for r in _records(tmp_path)] == [f"e{i}" for i in range(200)]
    (segment,) = list_segments(tmp_path)
    assert not segment.closed  # left .open; the relay decides it is closed
    assert writer_is_dead(read_writer(tmp_path, name))


def test_writer_dead_rules() -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "procStart": proc_start()}
    assert not writer_is_dead(me)
    assert writer_is_dead({**me, "procStart": me["procStart"] + 1})  # type: ignore[operator]  # a reused pid
    assert writer_is_dead({**me, "closed": True})
    assert writer_is_dead(None)  # no state file: writers make it before their first segment
    assert not writer_is_dead({**me, "pid": 1, "host": "another-host", "procStart": None})
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    assert writer_is_dead({**me, "pid": gone.pid})


def test_the_reader_flags_torn_and_corrupt_lines(tmp_path: Path) -> None:
    good = encode_line("final-state", "1", {"status": "success"})
    bad = bytearray(encode_line("final-state", "2", {"status": "success"}))
    bad[20] ^= 1
    path = tmp_path / "x.seg"
    path.write_bytes(good + bytes(bad) + b"not a record\n" + good + good[:-5])
    lines = list(read_lines(path))
    assert [line.problem for line in lines] == [None, "crc", "format", None, "torn"]
    assert lines[1].offset == len(good) and lines[-1].end == path.stat().st_size
    resumed = list(read_lines(path, lines[3].offset))
    assert [line.problem for line in resumed] == [None, "torn"]


def test_threads_append_whole_lines(tmp_path: Path) -> None:
    def work(n: int) -> None:
        for i in range(300):
            assert writer.append("final-state", f"t{n}-{i}", {"status": "success", "n": "x" * n})

    with SpoolWriter(tmp_path, segment_bytes=20_000, fsync_interval_ms=5) as writer:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = [str(r["executionId"]) for r in _records(tmp_path)]  # every line verified
    assert sorted(ids) == sorted(f"t{n}-{i}" for n in range(4) for i in range(300))
    for n in range(4):  # each thread's records in its own order
        mine = [x for x in ids if x.startswith(f"t{n}-")]
        assert mine == [f"t{n}-{i}" for i in range(300)]
