"""Benchmark: captures and /healthz while analyst SQL floods the service.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "query_load", "metric": "capture_loaded_p99", "value": 41.2, "unit": "ms",
     "target": 200.0, "n": 300}

Example::

    .venv/bin/python benchmarks/query_load.py            # ~40 s
    .venv/bin/python benchmarks/query_load.py --quick    # ~20 s
    .venv/bin/python benchmarks/query_load.py --queries 80 --captures 300

Setup: ``execvault serve`` in its own process on a local store (defaults: ``query_workers`` 2,
``query_queue`` 8, ``query_timeout_ms`` 5000, ``query_memory_limit`` 1GB). One client captures
small workflows back to back (and asks ``/healthz`` after each) while ``--queries`` (80) client
threads each post, again and again, a query that runs until its time limit
(``SELECT count(*) FROM range(100000000000)``); a client answered 429 waits ``Retry-After``.

Figures: ``capture_idle_*`` and ``capture_loaded_*`` (p50, p99, ms; the loaded p99 target is
200 ms), ``healthz_loaded_p99``, ``queries_refused`` (429s: on arrival beyond workers + queue,
or after waiting a time limit in the queue), ``queries_refused_at_once_p50`` / ``_p99`` (ms to a
429 on arrival), ``queries_limited`` (422 at the time limit),
``server_rss`` (MiB: the server process, not its query workers) and ``host_cpu_pressure``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.capture import pct  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402
from benchmarks.service import Pressure, run_service  # noqa: E402

BENCHMARK = "query_load"
TARGET_LOADED_P99_MS: Final = 200.0
RUNAWAY: Final = "SELECT count(*) FROM range(100000000000)"

emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)


def _workflow(i: int) -> dict[str, Any]:
    return {
        "name": f"Load {i % 7}",
        "nodes": [
            {
                "id": "t",
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "parameters": {"path": f"p{i % 7}"},
            },
            {
                "id": "s",
                "name": "Set",
                "type": "n8n-nodes-base.set",
                "typeVersion": 3,
                "position": [200, 0],
                "parameters": {"value": i % 3},
            },
        ],
        "connections": {"Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
    }


def _captures(http: httpx.Client, prefix: str, count: int) -> tuple[list[float], list[float]]:
    captures: list[float] = []
    health: list[float] = []
    for i in range(count):
        body = orjson.dumps(
            {"executionId": f"{prefix}-{i}", "workflowId": f"wf-{i % 7}", "workflow": _workflow(i)}
        )
        started = time.perf_counter()
        response = http.post("/api/execution-snapshots", content=body)
        captures.append((time.perf_counter() - started) * 1000)
        if response.status_code not in (200, 201):
            raise SystemExit(f"capture answered {response.status_code}: {response.text}")
        started = time.perf_counter()
        if http.get("/healthz").status_code != 200:
            raise SystemExit("/healthz failed")
        health.append((time.perf_counter() - started) * 1000)
    return captures, health


def run(args: argparse.Namespace) -> None:
    token = secrets.token_urlsafe(24)
    digest = hashlib.sha256(token.encode()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="query-load-") as tmp:
        workdir = Path(tmp)
        env = dict(os.environ)
        env.update(
            {
                "EXECVAULT_STORE": f"local:{workdir / 'store'}",
                "EXECVAULT_HMAC_KEY": secrets.token_hex(32),
                "EXECVAULT_TOKENS": f"{digest}:ingest,read,query",
                "EXECVAULT_QUERY_TIMEOUT_MS": str(args.timeout_ms),
                "EXECVAULT_INDEX_CACHE_DIR": str(workdir / "mirror"),
            }
        )
        with run_service(env, token, workdir) as service, service.client() as http:
            _captures(http, "warm", 20)
            idle, _ = _captures(http, "idle", args.captures)
            emit("capture_idle_p50", statistics.median(idle), len(idle))
            emit("capture_idle_p99", pct(idle, 0.99), len(idle))

            stop = threading.Event()
            statuses: Counter[int] = Counter()
            refused_ms: list[float] = []
            lock = threading.Lock()

            def flood() -> None:
                body = orjson.dumps({"sql": RUNAWAY})
                with service.client() as client:
                    while not stop.is_set():
                        started = time.perf_counter()
                        response = client.post("/api/query", content=body)
                        elapsed = (time.perf_counter() - started) * 1000
                        with lock:
                            statuses[response.status_code] += 1
                            # refused on arrival (queue full), not after waiting in the queue
                            if response.status_code == 429 and "waiting" in response.text:
                                refused_ms.append(elapsed)
                        if response.status_code == 429:  # a client that honours Retry-After
                            stop.wait(float(response.headers.get("Retry-After", "1")))

            threads = [threading.Thread(target=flood, daemon=True) for _ in range(args.queries)]
            pressure = Pressure()
            for thread in threads:
                thread.start()
            time.sleep(2.0)  # every query thread has sent its first query
            loaded, health = _captures(http, "loaded", args.captures)
            stop.set()
            for thread in threads:
                thread.join(timeout=args.timeout_ms / 1000 + 10)
            emit(
                "capture_loaded_p50",
                statistics.median(loaded),
                len(loaded),
                queries=args.queries,
            )
            emit(
                "capture_loaded_p99",
                pct(loaded, 0.99),
                len(loaded),
                target=TARGET_LOADED_P99_MS,
                queries=args.queries,
            )
            emit("healthz_loaded_p99", pct(health, 0.99), len(health))
            total = sum(statuses.values())
            emit("queries_refused", statuses[429], total, unit="requests")
            if refused_ms:
                emit("queries_refused_at_once_p50", statistics.median(refused_ms), len(refused_ms))
                emit("queries_refused_at_once_p99", pct(refused_ms, 0.99), len(refused_ms))
            emit("queries_limited", statuses[422], total, unit="requests")
            rss = service.rss_mib()
            if rss is not None:
                emit("server_rss", rss, 1, unit="MiB")
            percent = pressure.percent()
            if percent is not None:
                emit("host_cpu_pressure", percent, 1, unit="%")
            log(f"query statuses: {dict(statuses)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer captures")
    parser.add_argument("--queries", type=int, default=80, help="concurrent query clients")
    parser.add_argument("--captures", type=int, default=300, help="captures per phase")
    parser.add_argument("--timeout-ms", type=int, default=5000, help="query_timeout_ms")
    args = parser.parse_args(argv)
    if args.quick:
        args.captures = min(args.captures, 100)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
