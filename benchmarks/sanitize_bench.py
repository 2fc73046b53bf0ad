"""Benchmark of ``archiver.sanitize``: a generated 200 KB / 400-node workflow built from corpus nodes.

Prints one JSON object per line and figure, e.g.::

    {"benchmark": "sanitize", "metric": "p99", "value": 0.9, "unit": "ms", "target": 1.2, "n": 1000}

Figures:

- ``p50``/``p99``/``cpu_p99`` (warm): one ``Sanitizer`` sanitizes the same workflow again and
  again, which is what capture does for a workflow that runs many times (see the memo in
  ``archiver/sanitize.py``). ``p99`` is wall-clock time; ``cpu_p99`` is process CPU time, which
  does not count time the process waited for a CPU while other work ran on the host.
- ``cold_p50``/``cold_p99``: the memo is cleared before every run (``clear_cache``): a workflow
  seen for the first time. Only the classification of object keys stays cached.
- ``corpus_cold_p99``/``corpus_warm_p99``: every corpus workflow once with an empty memo, then
  once more with the memo it left.

``host_cpu_pressure_avg10`` (Linux PSI) says how busy the host was while the benchmark ran.

The corpus is read from ``../shared/corpus/n8n-workflows`` (override with ``--corpus``). Setup
objects are frozen out of the garbage collector (``gc.freeze``) so that collections caused by the
benchmark's own data do not count; collections caused by ``sanitize`` itself still do.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import secrets
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.sanitize import Sanitizer  # noqa: E402
from benchmarks.jsonlines import emit_line  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "n8n-workflows"
TARGET_P99_MS = 1.2


def unwrap(doc: Any) -> list[dict[str, Any]]:
    """The workflows in one export file (an array, a workflow, or {"workflow": ...} wrappers)."""
    if isinstance(doc, list):
        return [w for d in doc for w in unwrap(d)]
    if isinstance(doc, dict):
        if "nodes" not in doc and isinstance(doc.get("workflow"), dict | list):
            return unwrap(doc["workflow"])
        return [doc]
    return []


def load_corpus(corpus: Path) -> list[tuple[str, dict[str, Any]]]:
    workflows = []
    for path in sorted(corpus.glob("*.json")):
        for wf in unwrap(orjson.loads(path.read_bytes())):
            workflows.append((path.name, wf))
    return workflows


def build_workflow(
    workflows: list[tuple[str, dict[str, Any]]], nodes: int = 400, size: int = 200_000
) -> dict[str, Any]:
    """A workflow of ``nodes`` corpus nodes, ``size`` bytes in all (connections included)."""
    budget = size
    for _ in range(4):
        wf = _build(workflows, nodes, budget)
        total = len(orjson.dumps(wf))
        if abs(total - size) < size // 50:
            break
        budget -= total - size
    return wf


def _build(workflows: list[tuple[str, dict[str, Any]]], nodes: int, size: int) -> dict[str, Any]:
    """Repeat corpus nodes (in corpus order) until ``nodes`` nodes of about ``size`` bytes in all.

    A node is taken when it keeps the running total within the pro-rata budget, so big and small
    nodes mix as they do in the corpus; names get a suffix so that they stay unique.
    """
    pool = [n for _, wf in workflows for n in wf.get("nodes", []) if isinstance(n, dict)]
    chosen: list[dict[str, Any]] = []
    total = 0
    i = 0
    while len(chosen) < nodes:
        node = dict(pool[i % len(pool)])
        i += 1
        node_size = len(orjson.dumps(node))
        if total + node_size > size * (len(chosen) + 1) / nodes * 1.05:
            continue
        node["name"] = f"{node.get('name', 'node')} #{len(chosen)}"
        chosen.append(node)
        total += node_size
    connections = {
        a["name"]: {"main": [[{"node": b["name"], "type": "main", "index": 0}]]}
        for a, b in itertools.pairwise(chosen)
    }
    return {
        "name": "sanitize benchmark",
        "nodes": chosen,
        "connections": connections,
        "settings": {"executionOrder": "v1"},
        "pinData": {},
    }


def timed(fn: Any, n: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (process) milliseconds of ``n`` calls."""
    wall, cpu = [], []
    for _ in range(n):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    return wall, cpu


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


emit = partial(emit_line, "sanitize")


def emit_times(prefix: str, wall: list[float], cpu: list[float], target: float | None) -> None:
    emit(f"{prefix}p50", statistics.median(wall), len(wall))
    emit(f"{prefix}p99", pct(wall, 0.99), len(wall), target=target)
    emit(f"{prefix}cpu_p99", pct(cpu, 0.99), len(cpu), target=target)


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some task waited for a CPU (other load on the host)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(f.split("=") for f in line.split()[1:])
    return float(fields["avg10"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("-n", type=int, default=1000, help="runs per figure")
    args = parser.parse_args()

    workflows = load_corpus(args.corpus)
    wf = build_workflow(workflows)
    key = secrets.token_bytes(32)
    sanitizer = Sanitizer(key)
    gc.collect()
    gc.freeze()

    emit("nodes", len(wf["nodes"]), 1, unit="nodes")
    emit("bytes", len(orjson.dumps(wf)), 1, unit="bytes")

    # Warm: the same workflow again and again, as capture sees a workflow that runs often.
    for _ in range(20):
        sanitizer.sanitize(wf)
    emit_times("", *timed(lambda: sanitizer.sanitize(wf), args.n), TARGET_P99_MS)

    # Cold: a workflow never seen before (memo cleared; key classification stays cached).
    def cold() -> None:
        sanitizer.clear_cache()
        sanitizer.sanitize(wf)

    emit_times("cold_", *timed(cold, max(50, args.n // 5)), None)

    # Every corpus workflow once with an empty memo, then once more.
    cold_wall, cold_cpu, warm_wall, warm_cpu = [], [], [], []
    for _, w in workflows:
        sanitizer.clear_cache()
        wall, cpu = timed(lambda w=w: sanitizer.sanitize(w), 1)
        cold_wall += wall
        cold_cpu += cpu
        wall, cpu = timed(lambda w=w: sanitizer.sanitize(w), 1)
        warm_wall += wall
        warm_cpu += cpu
    emit_times("corpus_cold_", cold_wall, cold_cpu, None)
    emit_times("corpus_warm_", warm_wall, warm_cpu, None)
    pressure = cpu_pressure()
    if pressure is not None:
        emit("host_cpu_pressure_avg10", pressure, 1, unit="%")


if __name__ == "__main__":
    main()
