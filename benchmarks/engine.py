"""Benchmark: the engine side — spool appends, relay delivery, draining a backlog.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "engine", "metric": "spool_append_p99", "value": 0.041, "unit": "ms",
     "target": 1.0, "n": 20000}

Example::

    .venv/bin/python benchmarks/engine.py                       # every sub-benchmark, ~4 min
    .venv/bin/python benchmarks/engine.py --quick               # small runs, ~40 s
    .venv/bin/python benchmarks/engine.py --bench append        # only the Python spool appends
    .venv/bin/python benchmarks/engine.py --bench delivery --bench drain --executions 2000
    .venv/bin/python benchmarks/engine.py --bench delivery --bench drain --lanes 1 --lanes 4

Sub-benchmarks (``--bench``, repeatable; default all):

- ``append``: ``api.spool.SpoolWriter.append`` of corpus snapshot bodies and small final states,
  with the writer's group-fsync thread running (``fsync_interval_ms`` 200): wall time per call,
  ``spool_append_p50`` / ``_p99`` / ``_p999`` / ``_max`` (target p99 ≤ 1 ms, issue 12), and
  ``spool_append_bytes_p50`` (the line's size); ``spool_append_cpu_p99``: the calling thread's
  CPU time (JSON encoding, CRC, ``write``), without the waits of a busy host.
- ``delivery``: a spool of ``--delivery-executions`` (1,000) executions (snapshot + final state
  each, corpus workflows) delivered by ``api.relay.Relay`` in this process to ``execvault serve``
  on a local store: ``delivery_throughput`` (records/s).
- ``drain``: a backlog of ``--executions`` (10,000) executions built while no relay runs, then
  ``execvault relay --once`` as deployed (its own process): ``drain_seconds`` (until the relay
  exits with the spool empty), ``drain_rate`` (executions/s), ``drain_spool_mib``.

``delivery`` and ``drain`` run once per ``--lanes`` value (repeatable; default 4, the relay's
default), each figure with a ``lanes`` field.

Every phase also reports ``*_host_cpu_pressure`` (Linux PSI, % of wall time some task waited
for a CPU): compare runs at similar pressure. The n8n side (per-hook cost inside n8n, webhook
latency with and without the integration) is ``engine_n8n.py``; backfill rates ``import_n8n.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.relay import Relay, spool_status  # noqa: E402
from api.spool import SpoolWriter  # noqa: E402
from benchmarks.capture import CpuPressure, pct  # noqa: E402
from benchmarks.jsonlines import Progress, emit_line, log_line  # noqa: E402

BENCHMARK = "engine"
BENCHES: Final = ("append", "delivery", "drain")
TARGET_APPEND_P99_MS: Final = 1.0
CORPUS: Final = ROOT.parent / "shared" / "corpus" / "n8n-workflows"

emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)


class Pressure(CpuPressure):
    def done(self, metric: str, n: int, **extra: Any) -> None:
        end = self._read()
        if self._start is not None and end is not None:
            elapsed_us = (time.monotonic() - self._started) * 1e6
            value = 100.0 * (end - self._start) / max(elapsed_us, 1.0)
            emit(metric, value, n, unit="%", **extra)


def _corpus() -> list[bytes]:
    paths = sorted(CORPUS.glob("*.json"))
    if not paths:
        raise SystemExit(f"no corpus workflows in {CORPUS}")
    return [p.read_bytes() for p in paths]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bodies(corpus: list[bytes], i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    n = i % len(corpus)
    snapshot = {
        "executionId": f"e-{i}",
        "workflowId": f"wf-{n}",
        "workflow": orjson.loads(corpus[n]),
        "triggerType": "webhook",
        "createdAt": _now(),
    }
    final = {
        "status": "error" if i % 10 == 0 else "success",
        "startedAt": _now(),
        "finishedAt": _now(),
        "nodes": {"Step": {"status": "success"}},
    }
    return snapshot, final


def _fill(root: Path, corpus: list[bytes], executions: int, label: str) -> None:
    progress = Progress(BENCHMARK, label, executions)
    with SpoolWriter(root) as writer:
        for i in range(executions):
            snapshot, final = _bodies(corpus, i)
            assert writer.append("snapshot", snapshot["executionId"], snapshot)
            assert writer.append("final-state", snapshot["executionId"], final)
            progress.tick()


@contextlib.contextmanager
def _service(workdir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``execvault serve`` (no tokens, loopback) on a local store; yields its URL and env."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECVAULT_")}
    env.update(
        EXECVAULT_STORE=f"local:{workdir / 'store'}",
        EXECVAULT_HMAC_KEY=secrets.token_hex(32),
        EXECVAULT_INDEX_JOURNAL_DIR=str(workdir / "journal"),
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with (workdir / "service.log").open("ab") as handle:
        process = subprocess.Popen(
            [*_CLI, "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=2) as probe:
            while True:
                try:
                    if probe.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"execvault serve did not start; see {workdir}/service.log")
                time.sleep(0.05)
        yield url, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_CLI: Final = [sys.executable, "-c", "from api.cli import main; main()"]


# ---------------------------------------------------------------------------- sub-benchmarks


def bench_append(args: argparse.Namespace, corpus: list[bytes], workdir: Path) -> None:
    count = 2000 if args.quick else args.appends
    bodies = [_bodies(corpus, i) for i in range(min(count, 1000))]
    times: list[float] = []
    cpu_times: list[float] = []
    sizes: list[int] = []
    pressure = Pressure()
    with SpoolWriter(workdir / "append-spool") as writer:
        for i in range(count):
            snapshot, final = bodies[i % len(bodies)]
            kind, body = ("snapshot", snapshot) if i % 2 == 0 else ("final-state", final)
            before = writer._size
            cpu = time.thread_time_ns()
            started = time.perf_counter_ns()
            ok = writer.append(kind, snapshot["executionId"], body)
            times.append((time.perf_counter_ns() - started) / 1e6)
            cpu_times.append((time.thread_time_ns() - cpu) / 1e6)
            assert ok
            sizes.append(writer._size - before if writer._size > before else 0)
    emit("spool_append_p50", statistics.median(times), count)
    emit("spool_append_p99", pct(times, 0.99), count, target=TARGET_APPEND_P99_MS)
    emit("spool_append_p999", pct(times, 0.999), count)
    emit("spool_append_max", max(times), count)
    emit("spool_append_cpu_p99", pct(cpu_times, 0.99), count)
    emit("spool_append_bytes_p50", statistics.median(s for s in sizes if s), count, unit="B")
    pressure.done("append_host_cpu_pressure", count)


def bench_delivery(
    args: argparse.Namespace, corpus: list[bytes], workdir: Path, lanes: int
) -> None:
    executions = 200 if args.quick else args.delivery_executions
    root = workdir / f"delivery-spool-{lanes}"
    _fill(root, corpus, executions, "delivery: spooling")
    with (
        _service(workdir / f"delivery-{lanes}") as (url, _env),
        Relay(root, url, lanes=lanes) as relay,
    ):
        pressure = Pressure()
        started = time.monotonic()
        counts = relay.run(once=True)
        elapsed = time.monotonic() - started
    records = counts.delivered
    assert records == 2 * executions and counts.rejected == 0, counts
    emit("delivery_throughput", records / elapsed, records, unit="records/s", digits=1, lanes=lanes)
    pressure.done("delivery_host_cpu_pressure", records, lanes=lanes)


def bench_drain(args: argparse.Namespace, corpus: list[bytes], workdir: Path, lanes: int) -> None:
    executions = 1000 if args.quick else args.executions
    root = workdir / f"drain-spool-{lanes}"
    _fill(root, corpus, executions, "drain: spooling the backlog")
    mib = sum(p.stat().st_size for p in (root / "segments").iterdir()) / 2**20
    with _service(workdir / f"drain-{lanes}") as (url, env):
        pressure = Pressure()
        started = time.monotonic()
        result = subprocess.run(
            [
                *_CLI,
                "relay",
                "--spool",
                str(root),
                "--url",
                url,
                "--once",
                "--status-seconds",
                "10",
                "--lanes",
                str(lanes),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
            check=False,
        )
        elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"execvault relay exited {result.returncode}")
    backlog = spool_status(root)["backlog"]
    assert backlog["records"] == 0, backlog
    emit("drain_seconds", elapsed, executions, unit="s", digits=1, lanes=lanes)
    emit("drain_rate", executions / elapsed, executions, unit="executions/s", digits=1, lanes=lanes)
    emit("drain_spool_mib", mib, executions, unit="MiB", digits=1, lanes=lanes)
    pressure.done("drain_host_cpu_pressure", executions, lanes=lanes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small runs")
    parser.add_argument(
        "--bench", action="append", choices=BENCHES, help="sub-benchmark (repeatable; default all)"
    )
    parser.add_argument("--appends", type=int, default=20000, help="append: calls")
    parser.add_argument(
        "--delivery-executions", type=int, default=1000, help="delivery: executions"
    )
    parser.add_argument("--executions", type=int, default=10000, help="drain: backlog size")
    parser.add_argument(
        "--lanes",
        type=int,
        action="append",
        help="delivery, drain: the relay's lanes (repeatable: one run each; default 4)",
    )
    args = parser.parse_args(argv)
    corpus = _corpus()
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        for name in args.bench or BENCHES:
            if name == "append":
                log("append ...")
                bench_append(args, corpus, Path(tmp))
                continue
            for lanes in args.lanes or [4]:
                log(f"{name}, {lanes} lanes ...")
                {"delivery": bench_delivery, "drain": bench_drain}[name](
                    args, corpus, Path(tmp), lanes
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
