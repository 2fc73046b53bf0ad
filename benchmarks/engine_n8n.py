"""Benchmark: the n8n integration inside a real n8n — per-hook cost and webhook latency.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "engine_n8n", "metric": "hook_snapshot_p99", "value": 0.21, "unit": "ms",
     "target": 1.0, "n": 5000}

Example::

    .venv/bin/python benchmarks/engine_n8n.py            # both, ~3 min (n8n installed once, cached)
    .venv/bin/python benchmarks/engine_n8n.py --quick    # fewer calls, ~1.5 min
    .venv/bin/python benchmarks/engine_n8n.py --bench hook

Sub-benchmarks (``--bench``, repeatable; default both):

- ``hook``: n8n 2.41.1 runs the engine workflows with the hook file; the snapshot and final-state
  bodies it spooled (real ``IWorkflowBase`` and ``IRun`` objects, parsed back) and the largest
  corpus workflow are then fed to the hook file's own entry points in n8n's Node (24), with a new
  execution id per call and the group-fsync timer running: wall time per call —
  ``hook_snapshot_p50/_p99/_max`` (the ``workflowExecuteBefore`` handler),
  ``hook_final_state_p50/_p99/_max`` (``workflow.postExecute``), ``hook_large_snapshot_p99``
  (the largest corpus workflow). Target p99 ≤ 1 ms (issue 12).
- ``webhook``: one n8n with the hook file and two identical webhook workflows (Webhook → Set,
  answering the last node); the hook records the first and skips the second
  (``EXECVAULT_WORKFLOWS_DENY``), so "with" and "without" run in the same process, alternately,
  ``--calls`` requests each: end-to-end latency ``webhook_with_p50`` / ``webhook_without_p50`` /
  their p99, and ``webhook_overhead_p50`` (the difference of the medians; target ≤ 2 ms).
  ``webhook_recorded_runs`` checks that the "with" runs were recorded (warm-up included). (Two
  n8n instances, one without the hook file, differed by ±10 ms from each other whatever the hook:
  too noisy to see a millisecond.) The relay is not running: the hooks append to the spool, as
  they do while the archive is down or slow.

Both report ``*_host_cpu_pressure`` (Linux PSI): compare runs at similar pressure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.spool import list_segments, read_lines  # noqa: E402
from benchmarks.capture import CpuPressure, pct  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402
from tests.n8n_engine import HOOK_FILE, WORKFLOWS, N8n, n8n_home  # noqa: E402

BENCHMARK = "engine_n8n"
BENCHES: Final = ("hook", "webhook")
TARGET_HOOK_P99_MS: Final = 1.0
TARGET_WEBHOOK_OVERHEAD_MS: Final = 2.0
CORPUS: Final = ROOT.parent / "shared" / "corpus" / "n8n-workflows"

emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)


def pressure_done(pressure: CpuPressure, metric: str, n: int) -> None:
    end = pressure._read()
    if pressure._start is not None and end is not None:
        elapsed_us = (time.monotonic() - pressure._started) * 1e6
        emit(metric, 100.0 * (end - pressure._start) / max(elapsed_us, 1.0), n, unit="%")


def _largest_corpus_workflow() -> dict[str, Any]:
    best = max(CORPUS.glob("*.json"), key=lambda p: p.stat().st_size)
    return dict(json.loads(best.read_bytes()))


_NODE_BENCH = r"""
const hook = require(process.argv[1]);
const x = hook._execvault;
const input = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const calls = Number(process.argv[3]);
x.integration.lifecycle = true;
const timed = (fn) => { const t = process.hrtime.bigint(); fn(); return Number(process.hrtime.bigint() - t) / 1e6; };
(async () => {
  const out = { snapshot: [], final: [], large: [] };
  for (let i = 0; i < calls; i++) {
    const s = input.snapshots[i % input.snapshots.length];
    const f = input.finals[i % input.finals.length];
    const id = String(1000000 + i);
    out.snapshot.push(timed(() => x.integration.snapshot(id, s.workflow, s.mode, null, {})));
    const t = process.hrtime.bigint();
    await hook.workflow.postExecute[0](f, s.workflow, id);
    out.final.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (i % 10 === 0) {
      out.large.push(timed(() => x.integration.snapshot('L' + id, input.large, 'manual', null, {})));
    }
    if (i % 50 === 0) await new Promise((r) => setImmediate(r)); // let the fsync timer run
  }
  x.integration.writer.close();
  console.log(JSON.stringify(out));
})();
"""


def bench_hook(args: argparse.Namespace, home: Path, workdir: Path) -> None:
    calls = 1000 if args.quick else args.hook_calls
    n8n = N8n(home=home, folder=workdir / "hook-n8n", spool=workdir / "hook-spool")
    n8n.folder.mkdir(parents=True)
    n8n.import_workflows(WORKFLOWS)
    n8n.publish("evEngineHook0001")
    log("hook: starting n8n to record real run data")
    n8n.start()
    try:
        n8n.wait_for_webhook("ev-hook")
        for i in range(20):
            n8n.webhook(
                "ev-hook", {"order": i, "lines": [{"sku": f"A-{j}", "qty": j} for j in range(5)]}
            )
        for workflow_id in ("evEngineOk000001", "evEngineFail0001", "evEngineParent01"):
            n8n.run_manually(workflow_id)
        time.sleep(2)
    finally:
        n8n.stop()
    snapshots, finals = [], []
    for segment in list_segments(n8n.spool):
        for line in read_lines(segment.path):
            if line.record is None:
                continue
            body = line.record["body"]
            if line.record["kind"] == "snapshot":
                snapshots.append(
                    {"workflow": body["workflow"], "mode": body["triggerData"]["mode"]}
                )
            else:
                finals.append(body)
    assert snapshots and finals, "n8n spooled nothing"
    data = workdir / "hook-input.json"
    data.write_text(
        json.dumps({"snapshots": snapshots, "finals": finals, "large": _largest_corpus_workflow()})
    )
    log(f"hook: {calls} calls of each entry point in Node")
    pressure = CpuPressure()
    done = subprocess.run(
        [str(home / "bin" / "node"), "-e", _NODE_BENCH, str(HOOK_FILE), str(data), str(calls)],
        env={"EXECVAULT_SPOOL_DIR": str(workdir / "hook-bench-spool"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name, metric in (("snapshot", "hook_snapshot"), ("final", "hook_final_state")):
        times = out[name]
        emit(f"{metric}_p50", statistics.median(times), len(times))
        emit(f"{metric}_p99", pct(times, 0.99), len(times), target=TARGET_HOOK_P99_MS)
        emit(f"{metric}_max", max(times), len(times))
    emit("hook_large_snapshot_p99", pct(out["large"], 0.99), len(out["large"]))
    emit(
        "hook_large_snapshot_bytes",
        len(json.dumps(_largest_corpus_workflow())),
        1,
        unit="B",
    )
    pressure_done(pressure, "hook_host_cpu_pressure", calls)


def _webhook_workflows(folder: Path) -> None:
    """Two identical webhook workflows (Webhook → Set, answering the last node): the hook file
    records the first and is told to skip the second (EXECVAULT_WORKFLOWS_DENY)."""
    folder.mkdir(parents=True)
    for workflow_id, path in ((WITH_ID, "bench-with"), (WITHOUT_ID, "bench-without")):
        workflow = {
            "id": workflow_id,
            "name": f"bench {path}",
            "active": False,
            "settings": {"executionOrder": "v1"},
            "nodes": [
                {
                    "id": "w",
                    "name": "Webhook",
                    "type": "n8n-nodes-base.webhook",
                    "typeVersion": 2,
                    "position": [0, 0],
                    "webhookId": f"{path}-id",
                    "parameters": {"httpMethod": "POST", "path": path, "responseMode": "lastNode"},
                },
                {
                    "id": "s",
                    "name": "Set",
                    "type": "n8n-nodes-base.set",
                    "typeVersion": 3.4,
                    "position": [220, 0],
                    "parameters": {
                        "assignments": {
                            "assignments": [
                                {"id": "a", "name": "ok", "value": "={{ true }}", "type": "boolean"}
                            ]
                        },
                        "options": {},
                    },
                },
            ],
            "connections": {"Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
        }
        (folder / f"{workflow_id}.json").write_text(json.dumps(workflow))


WITH_ID: Final = "evBenchWith00001"
WITHOUT_ID: Final = "evBenchWithout01"


def bench_webhook(args: argparse.Namespace, home: Path, workdir: Path) -> None:
    calls = 100 if args.quick else args.calls
    n8n = N8n(
        home=home,
        folder=workdir / "webhook-n8n",
        spool=workdir / "webhook-spool",
        extra_env={"EXECVAULT_WORKFLOWS_DENY": WITHOUT_ID},
    )
    n8n.folder.mkdir(parents=True)
    _webhook_workflows(workdir / "webhook-workflows")
    n8n.import_workflows(workdir / "webhook-workflows")
    paths = {True: "bench-with", False: "bench-without"}
    for workflow_id in (WITH_ID, WITHOUT_ID):
        n8n.publish(workflow_id)
    try:
        log("webhook: starting n8n with the hook file (one of two identical workflows denied)")
        n8n.start()
        for path in paths.values():
            n8n.wait_for_webhook(path)
        for i in range(20):  # warm-up: first runs compile code and fill caches
            for path in paths.values():
                n8n.webhook(path, {"warm": i})
        times: dict[bool, list[float]] = {True: [], False: []}
        pressure = CpuPressure()
        for i in range(calls):
            for recorded in (True, False) if i % 2 == 0 else (False, True):
                started = time.perf_counter()
                answer = n8n.webhook(paths[recorded], {"order": i})
                times[recorded].append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, answer.text
        with_p50, without_p50 = statistics.median(times[True]), statistics.median(times[False])
        emit("webhook_with_p50", with_p50, calls)
        emit("webhook_without_p50", without_p50, calls)
        emit("webhook_with_p99", pct(times[True], 0.99), calls)
        emit("webhook_without_p99", pct(times[False], 0.99), calls)
        emit(
            "webhook_overhead_p50", with_p50 - without_p50, calls, target=TARGET_WEBHOOK_OVERHEAD_MS
        )
        recorded_runs = sum(
            1
            for segment in list_segments(n8n.spool)
            for line in read_lines(segment.path)
            if line.record and line.record["kind"] == "snapshot"
        )
        emit("webhook_recorded_runs", recorded_runs, calls, unit="runs")
        pressure_done(pressure, "webhook_host_cpu_pressure", calls)
    finally:
        n8n.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument(
        "--bench", action="append", choices=BENCHES, help="sub-benchmark (repeatable; default all)"
    )
    parser.add_argument("--hook-calls", type=int, default=5000, help="hook: calls per entry point")
    parser.add_argument("--calls", type=int, default=300, help="webhook: requests per instance")
    args = parser.parse_args(argv)
    home = n8n_home()
    workdir = Path(tempfile.mkdtemp(prefix="execvault-engine-n8n-"))
    try:
        for bench in args.bench or BENCHES:
            {"hook": bench_hook, "webhook": bench_webhook}[bench](args, home, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
