"""Benchmark of compare: the diff of two executions of a 400-node workflow.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "compare", "metric": "e2e_p99", "value": 21.3, "unit": "ms", "target": 50.0, "n": 300}

Example::

    .venv/bin/python benchmarks/compare.py            # full run (~20 s)
    .venv/bin/python benchmarks/compare.py --quick    # small run (~5 s)

Figures
-------

The workload: the generated workflow of ``benchmarks/capture.py`` (``--nodes`` corpus nodes, about
``--bytes`` bytes, unique names and ids, chained connections) captured as execution ``a``; a copy
with scripted edits — 5 % of the nodes with a parameter changed, 2 renamed, 2 removed, 2 added, one
connection rewired, one secret rotated, one setting changed — captured as ``b``. Both have a final
state with every node run once (one item each), ``b`` failing at a node in the middle (the nodes
after it did not run).

``diff_cpu_*`` — ``query.diff.compare`` of the two in-memory snapshots (structure, context and
outcome), CPU time. ``e2e_*`` — ``compare_executions`` over a ``LocalStore`` through a warm
``Archive`` (records and final states read and verified on every call, blobs from its cache) plus
``to_json`` and the ``orjson`` serialization the API sends: what ``GET …/compare/…`` costs minus
HTTP, wall time; the architecture's target, p99 ≤ 50 ms, applies here. ``cold_*`` — the same
through a fresh ``Archive`` each time (two blob reads and decompressions more). ``same_*`` — two
executions of one structure (the structural part is skipped by hash). ``text_*`` — rendering the
diff as ``execvault diff`` prints it.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture import CpuPressure, build_big_workflow, load_corpus, pct  # noqa: E402

from api.cli_compare import render_diff  # noqa: E402
from archiver.archive import Archive  # noqa: E402
from archiver.sanitize import Sanitizer  # noqa: E402
from archiver.store.local import LocalStore  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402
from query.diff import CompareSide, compare, compare_executions  # noqa: E402

BENCHMARK = "compare"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "n8n-workflows"
TARGET_P99_MS = 50.0
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)


class Pressure(CpuPressure):
    """capture.py's PSI reading, reported under this benchmark's name."""

    def emit(self, metric: str, n: int) -> None:
        end = self._read()
        if self._start is None or end is None:
            return
        elapsed_us = (time.monotonic() - self._started) * 1e6
        emit(metric, 100.0 * (end - self._start) / max(elapsed_us, 1.0), n, unit="%")


def emit_latencies(prefix: str, values: Sequence[float], target: float | None = None) -> None:
    emit(f"{prefix}_p50", statistics.median(values), len(values))
    emit(f"{prefix}_p99", pct(values, 0.99), len(values), target=target)


def edited(workflow: dict[str, Any]) -> dict[str, Any]:
    """``workflow`` after the scripted edits (see the module docstring)."""
    wf = copy.deepcopy(workflow)
    nodes = wf["nodes"]
    n = len(nodes)
    for i in range(3, n, 20):  # 5 % parameter edits
        nodes[i].setdefault("parameters", {})["benchmarkNote"] = f"edited {i}"
    renames = {nodes[10]["name"]: nodes[10]["name"] + " (renamed)",
               nodes[11]["name"]: nodes[11]["name"] + " (renamed)"}  # fmt: skip
    for node in nodes:
        node["name"] = renames.get(node["name"], node["name"])
    conns = {renames.get(k, k): v for k, v in wf["connections"].items()}
    for outputs in conns.values():
        for slot in outputs["main"]:
            for target in slot:
                target["node"] = renames.get(target["node"], target["node"])
    removed = {nodes[n - 1]["name"], nodes[n - 2]["name"]}
    wf["nodes"] = nodes = [node for node in nodes if node["name"] not in removed]
    conns = {k: v for k, v in conns.items() if k not in removed}
    for outputs in conns.values():
        for slot in outputs["main"]:
            slot[:] = [t for t in slot if t["node"] not in removed]
    for k in range(2):
        nodes.append({"id": f"bench-added-{k}", "name": f"Added {k}", "type": "n8n-nodes-base.noOp",
                      "typeVersion": 1, "position": [0, 4000 + 200 * k], "parameters": {}})  # fmt: skip
        conns.setdefault(nodes[k]["name"], {"main": [[]]})["main"][0].append(
            {"node": f"Added {k}", "type": "main", "index": 0}
        )
    first = conns[nodes[20]["name"]]["main"][0]
    first[0] = {"node": nodes[40]["name"], "type": "main", "index": 0}  # rewire
    nodes[30].setdefault("parameters", {})["apiKey"] = "sk-live-rotated-9a8b7c6d5e4f3a2b1c0d"
    wf["connections"] = conns
    wf["settings"] = {**wf.get("settings", {}), "timezone": "Europe/Berlin"}
    return wf


def final_state(workflow: dict[str, Any], fail_at: int | None) -> dict[str, Any]:
    nodes = []
    for i, node in enumerate(workflow["nodes"]):
        if fail_at is not None and i > fail_at:
            break
        failed = i == fail_at
        entry: dict[str, Any] = {
            "node": node["name"],
            "status": "error" if failed else "success",
            "runs": [
                {
                    "index": 0,
                    "executionIndex": i,
                    "status": "error" if failed else "success",
                    "startedAt": (T0 + timedelta(milliseconds=i)).isoformat(),
                    "durationMs": 1.0 + (i % 7),
                    "inputItems": 1,
                    "outputItems": 0 if failed else 1,
                    "output": [[]] if failed else [[{"json": {"i": i, "ok": True}}]],
                }
            ],
        }
        if failed:
            entry["error"] = {"message": "401 Unauthorized", "httpCode": "401"}
        nodes.append(entry)
    return {
        "status": "error" if fail_at is not None else "success",
        "startedAt": T0.isoformat(),
        "finishedAt": (T0 + timedelta(seconds=2)).isoformat(),
        "nodes": nodes,
    }


def timed(fn: Callable[[], Any], runs: int, *, cpu: bool = False) -> list[float]:
    clock = time.process_time_ns if cpu else time.perf_counter_ns
    out = []
    for _ in range(runs):
        start = clock()
        fn()
        out.append((clock() - start) / 1e6)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    parser.add_argument("--nodes", type=int, default=400)
    parser.add_argument("--bytes", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    runs = 60 if args.quick else args.runs

    docs = load_corpus(args.corpus)
    big, size = build_big_workflow(docs, args.nodes, args.bytes)
    other = edited(big)
    log(f"workflow: {len(big['nodes'])} nodes, {size} bytes; edited copy: {len(other['nodes'])}")
    sanitizer = Sanitizer(bytes(range(32)))
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "data")
        archive = Archive(store, sanitizer)
        for execution_id, workflow, fail in (
            ("a", big, None),
            ("b", other, len(other["nodes"]) // 2),
            ("a2", big, None),
        ):
            archive.capture_snapshot(
                execution_id=execution_id,
                workflow=workflow,
                workflow_id="bench",
                created_at=T0,
                backfill=True,
            )
            archive.record_final_state(execution_id, final_state(workflow, fail))
        diff = compare_executions(archive, "a", "b")
        body = diff.to_json()
        log(f"diff: {body['summary']}")
        log(f"first divergence: {body['execution']['firstDivergence']['node']}")

        side_a = CompareSide.from_snapshot(archive.get_snapshot("a"), archive.get_final_state("a"))
        side_b = CompareSide.from_snapshot(archive.get_snapshot("b"), archive.get_final_state("b"))
        gc.collect()
        gc.freeze()
        pressure = Pressure()
        emit_latencies("diff_cpu", timed(lambda: compare(side_a, side_b), runs, cpu=True))

        def e2e(x: str = "a", y: str = "b", arc: Archive = archive) -> bytes:
            return orjson.dumps(compare_executions(arc, x, y).to_json())

        emit_latencies("e2e", timed(e2e, runs), TARGET_P99_MS)
        emit("e2e_response_bytes", len(e2e()), 1, unit="bytes")
        emit_latencies(
            "cold",
            timed(lambda: e2e(arc=Archive(LocalStore(Path(tmp) / "data"), sanitizer)), runs // 3),
            TARGET_P99_MS,
        )
        emit_latencies("same", timed(lambda: e2e("a", "a2"), runs))
        emit_latencies("text", timed(lambda: list(render_diff(body)), runs))
        pressure.emit("host_cpu_pressure", runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
