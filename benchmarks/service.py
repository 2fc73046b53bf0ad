"""Benchmark of the HTTP service on SeaweedFS: ingest, final states, retrieval, history, by hash.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "service", "metric": "ingest_p50", "value": 12.1, "unit": "ms", "target": 15.0,
     "n": 1000}

Example::

    .venv/bin/python benchmarks/service.py            # full run (~3 min on 2 cores)
    .venv/bin/python benchmarks/service.py --quick    # small run (~30 s)
    .venv/bin/python benchmarks/service.py --runs 2000 --clients 16

Setup
-----

A throw-away SeaweedFS (``weed mini``, started by ``tests/seaweedfs.py``) with an Object-Lock
bucket (created with boto3; COMPLIANCE retention of 1 day on every write unless ``--lock-mode
none``), and the real service in its own process: ``execvault serve`` on a free loopback port
(uvicorn, access log at info, as shipped), configured by environment variables: store
``s3://<bucket>/archive``, HMAC key, one bearer token with ``ingest,read`` (sent on every request),
index writer with the default flush (1000 rows / 2 s), manifest mirror in a temporary directory.
The client is plain ``httpx`` (keep-alive, one ``httpx.Client`` per client thread); bodies are
serialized before the clock starts. Wall time (``perf_counter_ns``) of one request, response read.

The stream is ``capture.py``'s: ``--workflows`` corpus workflows (20, spread over the corpus' size
range), before each run the workflow changes with probability ``--change-rate`` (0.05: parameter
edit, added node, or revert), unique execution ids, variables and a webhook trigger payload; each
execution then gets a final state (n8n run data of its first nodes; ~3 % end in error).

Figures
-------

``ingest_*``: POST /api/execution-snapshots, one client, ``--runs`` captures (target p50 ≤ 15 ms);
``ingest_new_*`` / ``ingest_repeat_*`` split by whether the structure was new to the bucket;
``ingest_throughput_1c`` captures/s. ``final_state_*``: POST .../{id}/final-state for each of
them, one client. ``ingest_<k>c_*`` / ``ingest_throughput_<k>c`` and ``final_state_<k>c_*`` /
``final_state_throughput_<k>c``: another ``--runs`` captures and their final states from
``--clients`` (8) concurrent clients.

``get_*``: GET /api/execution-snapshots/{id} (snapshot + final state, every object re-verified),
``--reads`` random executions (target p99 ≤ 30 ms); ``get_throughput_<k>c`` gets/s.

``index_freshness_*`` (s): a capture and its final state, then history polled every 25 ms until
the execution is listed with its status, timed from the capture's 2xx; it includes the writer's
flush age (2 s), the catalog's refresh interval (1 s) and the mirror download.

``history_*`` / ``history_error_*`` / ``by_hash_*``: GET .../workflow/{id}/history (limit 50, and
with ``status=error``) over every workflow of the stream, GET .../by-hash/{hash} over every
structure captured, round robin, ``--lookups`` requests each after one warm-up round (target
≤ 150 ms). Before they are timed, every workflow's full history (all pages) and every hash's
executions are checked to be exactly what was captured, after waiting for the index to catch up.

``server_rss`` (MiB, at the end) and ``host_cpu_pressure`` (Linux PSI over the whole run: how busy
the 2-core host was; the server, SeaweedFS and the clients share it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

import boto3
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.capture import (  # noqa: E402
    TRIGGER_DATA,
    VARIABLES,
    CpuPressure,
    Job,
    Workload,
    load_corpus,
    pct,
)
from benchmarks.jsonlines import Progress as _Progress  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402
from tests.seaweedfs import run_seaweedfs  # noqa: E402

BENCHMARK = "service"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "n8n-workflows"
TARGET_INGEST_P50_MS: Final = 15.0
TARGET_GET_P99_MS: Final = 30.0
TARGET_LOOKUP_MS: Final = 150.0
TARGET_FRESHNESS_S: Final = 2.0
SNAPSHOTS: Final = "/api/execution-snapshots"
BUCKET: Final = "service-bench"
ERROR_RATE: Final = 0.03


# --------------------------------------------------------------------------------------------------
# output


emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)
Progress = partial(_Progress, BENCHMARK)


def emit_latencies(
    prefix: str,
    values: Sequence[float],
    *,
    p50_target: float | None = None,
    p99_target: float | None = None,
    unit: str = "ms",
) -> None:
    n = len(values)
    emit(f"{prefix}_p50", statistics.median(values), n, unit=unit, target=p50_target)
    emit(f"{prefix}_p99", pct(values, 0.99), n, unit=unit, target=p99_target)
    log(f"{prefix}: p50 {statistics.median(values):.2f} {unit}, p99 {pct(values, 0.99):.2f} {unit}")


class Pressure(CpuPressure):
    """capture.py's PSI reader, reporting under this benchmark's name."""

    def percent(self) -> float | None:
        end = self._read()
        if self._start is None or end is None:
            return None
        elapsed_us = (time.monotonic() - self._started) * 1e6
        return 100.0 * (end - self._start) / max(elapsed_us, 1.0)


# --------------------------------------------------------------------------------------------------
# the server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Service:
    base_url: str
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=60.0,
            headers={
                "authorization": f"Bearer {self.token}",
                "content-type": "application/json",
            },
        )

    def rss_mib(self) -> float | None:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def run_service(env: dict[str, str], token: str, workdir: Path) -> Iterator[Service]:
    """``execvault serve`` on a free loopback port, until the block ends (then SIGTERM)."""
    log_path = workdir / "service.log"
    for _attempt in range(3):  # a free port can be taken before the server binds it
        port = _free_port()
        with log_path.open("ab") as handle:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from api.cli import main; main()",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        service = Service(f"http://127.0.0.1:{port}", token, process, log_path)
        started = time.monotonic()
        with httpx.Client(base_url=service.base_url, timeout=2.0) as probe:
            while process.poll() is None and time.monotonic() - started < 30:
                try:
                    if probe.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        if process.poll() is None:
            break
        log(f"execvault serve exited during startup; retrying\n{_log_tail(log_path)}")
    else:
        raise SystemExit(f"execvault serve did not start; log {log_path}:\n{_log_tail(log_path)}")
    log(f"execvault serve up in {time.monotonic() - started:.1f} s at {service.base_url}")
    try:
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # uvicorn shuts down; the index writer flushes
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            log(f"execvault serve exited with {process.returncode}")
        report_server_log(log_path)


def report_server_log(path: Path) -> None:
    """Warnings and errors the server logged (access lines and routine start/stop left out)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    notable = [
        line
        for line in lines
        if any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback"))
    ]
    log(f"server log: {len(lines)} lines, {len(notable)} warnings/errors")
    for line in notable[:10]:
        log(f"  server: {line[:300]}")


def service_env(server: Any, token: str, workdir: Path, lock_mode: str) -> dict[str, str]:
    """The service's configuration, as environment variables (the way it is deployed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECVAULT_")}
    env.update(
        EXECVAULT_STORE=f"s3://{BUCKET}/archive",
        EXECVAULT_S3_ENDPOINT=server.endpoint_url,
        EXECVAULT_S3_REGION=server.region,
        EXECVAULT_S3_ACCESS_KEY_ID=server.access_key_id,
        EXECVAULT_S3_SECRET_ACCESS_KEY=server.secret_access_key,
        EXECVAULT_HMAC_KEY=secrets.token_hex(32),
        EXECVAULT_TOKENS=f"{hashlib.sha256(token.encode()).hexdigest()}:ingest,read",
        EXECVAULT_INDEX_CACHE_DIR=str(workdir / "index-cache"),
    )
    if lock_mode != "none":
        env.update(EXECVAULT_OBJECT_LOCK_MODE=lock_mode, EXECVAULT_OBJECT_LOCK_DAYS="1")
    return env


# --------------------------------------------------------------------------------------------------
# the stream


@dataclass
class Request:
    """One capture and its final state, bodies serialized ahead of time."""

    job: Job
    capture: bytes
    final_state: bytes
    status: str


def _node_names(workflow: dict[str, Any]) -> list[str]:
    nodes = workflow.get("nodes") or []
    names = [n["name"] for n in nodes if isinstance(n, dict) and isinstance(n.get("name"), str)]
    return names or ["Start"]


def final_state_body(job: Job, rng: random.Random) -> tuple[bytes, str]:
    """n8n run data of the first few nodes; ~3 % of runs fail in one of them."""
    names = _node_names(job.workflow)[:8]
    failed_at = rng.randrange(len(names)) if rng.random() < ERROR_RATE else None
    started = datetime.now(UTC)
    nodes = []
    for i, name in enumerate(names):
        failed = i == failed_at
        run: dict[str, Any] = {
            "index": 0,
            "status": "error" if failed else "success",
            "inputItems": 0 if i == 0 else 1,
            "outputItems": 0 if failed else 1,
        }
        node: dict[str, Any] = {"node": name, "status": run["status"], "runs": [run]}
        if failed:
            node["error"] = {"message": "502 Bad Gateway", "httpCode": "502"}
        nodes.append(node)
        if failed:
            break
    status = "error" if failed_at is not None else "success"
    finished = started + timedelta(milliseconds=rng.randint(80, 4000))
    body = {
        "executionId": job.execution_id,
        "status": status,
        "mode": "webhook",
        "startedAt": started.isoformat().replace("+00:00", "Z"),
        "finishedAt": finished.isoformat().replace("+00:00", "Z"),
        "nodes": nodes,
    }
    return orjson.dumps(body), status


def requests_for(jobs: Sequence[Job], rng: random.Random) -> list[Request]:
    out = []
    for job in jobs:
        capture = orjson.dumps(
            {
                "executionId": job.execution_id,
                "workflowId": job.workflow_id,
                "workflow": job.workflow,
                "variables": VARIABLES,
                "triggerType": "webhook",
                "triggerData": TRIGGER_DATA,
                "userId": "user-7",
            }
        )
        final, status = final_state_body(job, rng)
        out.append(Request(job, capture, final, status))
    return out


class Expected:
    """What the service acknowledged: per execution its workflow, hash and final status."""

    def __init__(self) -> None:
        self.hash_of: dict[str, str] = {}
        self.workflow_of: dict[str, str] = {}
        self.status_of: dict[str, str] = {}
        self._lock = threading.Lock()

    def captured(self, req: Request, response: httpx.Response) -> str:
        if response.status_code != 201:
            raise SystemExit(
                f"capture {req.job.execution_id}: HTTP {response.status_code} {response.text[:300]}"
            )
        body = response.json()
        with self._lock:
            self.hash_of[req.job.execution_id] = body["snapshotHash"]
            self.workflow_of[req.job.execution_id] = req.job.workflow_id
        return str(body["snapshotHash"])

    def finished(self, req: Request, response: httpx.Response) -> None:
        if response.status_code != 201:
            raise SystemExit(
                f"final state {req.job.execution_id}: HTTP {response.status_code} "
                f"{response.text[:300]}"
            )
        with self._lock:
            self.status_of[req.job.execution_id] = req.status

    def by_workflow(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for execution_id, workflow_id in self.workflow_of.items():
            out[workflow_id].add(execution_id)
        return out

    def by_hash(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for execution_id, snapshot_hash in self.hash_of.items():
            out[snapshot_hash].add(execution_id)
        return out


# --------------------------------------------------------------------------------------------------
# phases


def _ms(ns: int) -> float:
    return ns / 1e6


def concurrently(
    service: Service,
    items: Sequence[Request],
    clients: int,
    send: Callable[[httpx.Client, Request], None],
    label: str,
) -> tuple[list[float], float]:
    """``send`` every item from ``clients`` threads, each with its own keep-alive client."""
    progress = Progress(label, len(items))
    feed = iter(items)
    lock = threading.Lock()
    times: list[float] = []

    def worker() -> None:
        with service.client() as http:
            http.get("/healthz")  # connect before the clock runs
            barrier.wait()
            while True:
                with lock:
                    item = next(feed, None)
                if item is None:
                    return
                t0 = time.perf_counter_ns()
                send(http, item)
                elapsed = _ms(time.perf_counter_ns() - t0)
                with lock:
                    times.append(elapsed)
                progress.tick()

    barrier = threading.Barrier(clients + 1)
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(worker) for _ in range(clients)]
        barrier.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
        elapsed_s = time.perf_counter() - started
    return times, elapsed_s


def ingest_sequential(
    http: httpx.Client, reqs: Sequence[Request], expected: Expected, seen: set[str]
) -> None:
    latency: dict[str, list[float]] = {"new": [], "repeat": []}
    progress = Progress("ingest 1 client", len(reqs))
    started = time.perf_counter()
    for req in reqs:
        t0 = time.perf_counter_ns()
        response = http.post(SNAPSHOTS, content=req.capture)
        elapsed = _ms(time.perf_counter_ns() - t0)
        snapshot_hash = expected.captured(req, response)
        latency["repeat" if snapshot_hash in seen else "new"].append(elapsed)
        seen.add(snapshot_hash)
        progress.tick()
    wall = time.perf_counter() - started
    emit_latencies("ingest", latency["new"] + latency["repeat"], p50_target=TARGET_INGEST_P50_MS)
    for kind in ("new", "repeat"):
        if latency[kind]:
            emit_latencies(f"ingest_{kind}", latency[kind])
    emit("ingest_throughput_1c", len(reqs) / wall, len(reqs), unit="captures/s")

    times = []
    progress = Progress("final states 1 client", len(reqs))
    started = time.perf_counter()
    for req in reqs:
        t0 = time.perf_counter_ns()
        response = http.post(
            f"{SNAPSHOTS}/{req.job.execution_id}/final-state", content=req.final_state
        )
        times.append(_ms(time.perf_counter_ns() - t0))
        expected.finished(req, response)
        progress.tick()
    wall = time.perf_counter() - started
    emit_latencies("final_state", times)
    emit("final_state_throughput_1c", len(reqs) / wall, len(reqs), unit="final states/s")


def ingest_concurrent(
    service: Service, reqs: Sequence[Request], clients: int, expected: Expected
) -> None:
    def capture(http: httpx.Client, req: Request) -> None:
        expected.captured(req, http.post(SNAPSHOTS, content=req.capture))

    def finish(http: httpx.Client, req: Request) -> None:
        response = http.post(
            f"{SNAPSHOTS}/{req.job.execution_id}/final-state", content=req.final_state
        )
        expected.finished(req, response)

    times, wall = concurrently(service, reqs, clients, capture, f"ingest {clients} clients")
    emit_latencies(f"ingest_{clients}c", times)
    emit(f"ingest_throughput_{clients}c", len(reqs) / wall, len(reqs), unit="captures/s")
    times, wall = concurrently(service, reqs, clients, finish, f"final states {clients} clients")
    emit_latencies(f"final_state_{clients}c", times)
    emit(
        f"final_state_throughput_{clients}c",
        len(reqs) / wall,
        len(reqs),
        unit="final states/s",
    )


def retrieval(
    service: Service, http: httpx.Client, expected: Expected, args: argparse.Namespace
) -> None:
    rng = random.Random(args.seed + 1)
    ids = sorted(expected.hash_of)
    sample = rng.sample(ids, min(args.reads, len(ids)))

    def check(execution_id: str, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise SystemExit(f"GET {execution_id}: HTTP {response.status_code}")
        body = response.json()
        final = body.get("finalState") or {}
        if (
            body["snapshotHash"] != expected.hash_of[execution_id]
            or final.get("status") != expected.status_of[execution_id]
        ):
            raise SystemExit(f"GET {execution_id}: not what was captured")

    times = []
    progress = Progress("get 1 client", len(sample))
    for execution_id in sample:
        t0 = time.perf_counter_ns()
        response = http.get(f"{SNAPSHOTS}/{execution_id}")
        times.append(_ms(time.perf_counter_ns() - t0))
        check(execution_id, response)
        progress.tick()
    emit_latencies("get", times, p99_target=TARGET_GET_P99_MS)

    items = [Request(Job(i, "", {}), b"", b"", "") for i in sample]

    def get(client: httpx.Client, req: Request) -> None:
        check(req.job.execution_id, client.get(f"{SNAPSHOTS}/{req.job.execution_id}"))

    times, wall = concurrently(service, items, args.clients, get, f"get {args.clients} clients")
    emit(f"get_throughput_{args.clients}c", len(items) / wall, len(items), unit="gets/s")
    emit_latencies(f"get_{args.clients}c", times)


def _all_pages(http: httpx.Client, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 1000}
        if cursor:
            query["cursor"] = cursor
        response = http.get(path, params=query)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: HTTP {response.status_code} {response.text[:300]}")
        page = response.json()
        items.extend(page["items"])
        cursor = page["nextCursor"]
        if not cursor:
            return items


def index_mismatches(http: httpx.Client, expected: Expected) -> list[str]:
    """What history and by-hash answer that differs from what was acknowledged (empty: exact)."""
    problems = []
    for workflow_id, ids in sorted(expected.by_workflow().items()):
        items = _all_pages(http, f"{SNAPSHOTS}/workflow/{workflow_id}/history", {})
        got = {i["executionId"]: i for i in items}
        if len(items) != len(got) or set(got) != ids:
            problems.append(f"history {workflow_id}: {len(got)} of {len(ids)} executions")
        elif any(got[e]["status"] != expected.status_of.get(e) for e in ids):
            problems.append(f"history {workflow_id}: statuses not all indexed yet")
    for snapshot_hash, ids in sorted(expected.by_hash().items()):
        items = _all_pages(http, f"{SNAPSHOTS}/by-hash/{snapshot_hash}", {})
        if {i["executionId"] for i in items} != ids or len(items) != len(ids):
            problems.append(f"by-hash {snapshot_hash[:12]}: {len(items)} of {len(ids)}")
    return problems


def wait_for_index(http: httpx.Client, expected: Expected, timeout: float) -> int:
    """Poll until history and by-hash list exactly what was acknowledged; the checks it took."""
    started = time.monotonic()
    for attempt in itertools.count(1):
        problems = index_mismatches(http, expected)
        waited = time.monotonic() - started
        if not problems:
            return attempt
        if waited > timeout:
            raise SystemExit(f"index not caught up after {waited:.0f} s: {problems[:5]}")
        log(f"waiting for the index: {len(problems)} lookups differ, e.g. {problems[0]}")
        time.sleep(0.5)
    raise AssertionError("unreachable")


def freshness(
    http: httpx.Client, workload: Workload, expected: Expected, args: argparse.Namespace
) -> None:
    rng = random.Random(args.seed + 2)
    samples = []
    for i in range(args.freshness_samples):
        time.sleep(rng.uniform(0.0, 1.0))  # not in step with the writer's flush timer
        req = requests_for(workload.jobs(1), rng)[0]
        path = f"{SNAPSHOTS}/workflow/{req.job.workflow_id}/history"
        response = http.post(SNAPSHOTS, content=req.capture)
        acked = time.perf_counter()
        expected.captured(req, response)
        expected.finished(
            req,
            http.post(f"{SNAPSHOTS}/{req.job.execution_id}/final-state", content=req.final_state),
        )
        while True:
            items = http.get(path, params={"limit": 1}).json()["items"]
            if items and items[0]["executionId"] == req.job.execution_id and items[0]["status"]:
                break
            if time.perf_counter() - acked > 60:
                raise SystemExit(f"{req.job.execution_id} not in the history after 60 s")
            time.sleep(0.025)
        samples.append(time.perf_counter() - acked)
        log(f"freshness {i + 1}/{args.freshness_samples}: {samples[-1]:.2f} s")
    emit(
        "index_freshness_p50",
        statistics.median(samples),
        len(samples),
        unit="s",
        target=TARGET_FRESHNESS_S,
    )
    emit("index_freshness_max", max(samples), len(samples), unit="s", target=TARGET_FRESHNESS_S)


def lookups(http: httpx.Client, expected: Expected, args: argparse.Namespace) -> None:
    workflows = sorted(expected.by_workflow())
    hashes = sorted(expected.by_hash())
    kinds: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
        ("history", [(f"{SNAPSHOTS}/workflow/{w}/history", {"limit": 50}) for w in workflows]),
        (
            "history_error",
            [
                (f"{SNAPSHOTS}/workflow/{w}/history", {"limit": 50, "status": "error"})
                for w in workflows
            ],
        ),
        ("by_hash", [(f"{SNAPSHOTS}/by-hash/{h}", {"limit": 50}) for h in hashes]),
    ]
    for name, calls in kinds:
        for path, params in calls:  # warm-up round
            http.get(path, params=params).raise_for_status()
        times = []
        items = 0
        for path, params in itertools.islice(itertools.cycle(calls), args.lookups):
            t0 = time.perf_counter_ns()
            response = http.get(path, params=params)
            times.append(_ms(time.perf_counter_ns() - t0))
            if response.status_code != 200:
                raise SystemExit(f"GET {path}: HTTP {response.status_code}")
            items += len(response.json()["items"])
        emit_latencies(name, times, p50_target=TARGET_LOOKUP_MS, p99_target=TARGET_LOOKUP_MS)
        emit(f"{name}_items_mean", items / len(times), len(times), unit="items", keys=len(calls))


# --------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    docs = load_corpus(args.corpus)
    log(f"{len(docs)} corpus workflows from {args.corpus}")
    workload = Workload(docs, args.workflows, args.change_rate, args.seed)
    rng = random.Random(args.seed)
    token = secrets.token_urlsafe(32)
    pressure = Pressure()
    with (
        tempfile.TemporaryDirectory(prefix="service-bench-") as tmp,
        run_seaweedfs(Path(tmp) / "weed") as server,
    ):
        workdir = Path(tmp)
        log(f"SeaweedFS up in {server.startup_seconds:.1f} s at {server.endpoint_url}")
        s3 = boto3.session.Session().client("s3", **server.client_kwargs())
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.close()
        env = service_env(server, token, workdir, args.lock_mode)
        with run_service(env, token, workdir) as service, service.client() as http:
            # warm-up (not measured): the bucket's first writes grow a volume, connections open
            warm = Workload(docs, 2, 0.0, args.seed + 99)
            for req in requests_for(
                [
                    Job(f"warm-{j.execution_id}", f"warm-{j.workflow_id}", j.workflow)
                    for j in warm.jobs(5)
                ],
                rng,
            ):
                http.post(SNAPSHOTS, content=req.capture).raise_for_status()
                http.get(f"{SNAPSHOTS}/{req.job.execution_id}").raise_for_status()

            expected = Expected()
            seen: set[str] = set()
            ingest_sequential(http, requests_for(workload.jobs(args.runs), rng), expected, seen)
            ingest_concurrent(
                service, requests_for(workload.jobs(args.runs), rng), args.clients, expected
            )
            emit("structures", len(expected.by_hash()), len(expected.hash_of), unit="structures")
            retrieval(service, http, expected, args)
            freshness(http, workload, expected, args)
            checks = wait_for_index(http, expected, timeout=60)
            log(
                f"history and by-hash list exactly the {len(expected.hash_of)} acknowledged "
                f"executions (check {checks})"
            )
            lookups(http, expected, args)
            rss = service.rss_mib()
            if rss is not None:
                emit("server_rss", rss, 1, unit="MiB")
    share = pressure.percent()
    if share is not None:
        emit("host_cpu_pressure", share, 1, unit="%")


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n", 1)[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a small run (seconds, not minutes)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--runs", type=int, help="captures per ingest phase (1000; quick 100)")
    parser.add_argument("--reads", type=int, help="GETs by id (1000; quick 100)")
    parser.add_argument("--lookups", type=int, help="requests per lookup kind (300; quick 40)")
    parser.add_argument(
        "--freshness-samples", type=int, help="index freshness samples (5; quick 2)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--workflows", type=int, default=20, help="distinct workflows in the mix")
    parser.add_argument(
        "--change-rate", type=float, default=0.05, help="chance a run changes its workflow first"
    )
    parser.add_argument(
        "--lock-mode", choices=["COMPLIANCE", "GOVERNANCE", "none"], default="COMPLIANCE"
    )
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (100 if quick else 1000)
    args.reads = args.reads or (100 if quick else 1000)
    args.lookups = args.lookups or (40 if quick else 300)
    args.freshness_samples = args.freshness_samples or (2 if quick else 5)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
