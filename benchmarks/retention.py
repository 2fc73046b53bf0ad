"""Benchmark of retention runs: ``plan``, ``expire`` and ``archive_cold`` over a generated archive.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "retention", "metric": "plan_index_time", "value": 1.9, "unit": "s",
     "n": 1, "executions": 20000, "ops": {"GET": 400, "LIST": 44}}

Example::

    .venv/bin/python benchmarks/retention.py                   # 20,000 executions (~3 min)
    .venv/bin/python benchmarks/retention.py --quick           # 2,000 executions (~20 s)
    .venv/bin/python benchmarks/retention.py --executions 50000 --s3-latency-ms 20

The archive
-----------

``--executions`` captures (default 20,000) through ``archiver.archive.Archive`` on a LocalStore in
a temporary directory, with an ``archiver.index.ManifestWriter`` attached (flushed at the end, so
one part per table and day: what ``compact-index`` leaves), spread evenly over ``--days`` days
(420) before a fixed "now", round robin over ``--workflows`` workflows (12) whose structures
change every ~60 days; 98 % get a final state (4 % error, 1 % crashed, the rest success); a few
tag events (``--tags``, default 30: ``baseline`` and ``release`` moving between executions,
``audit`` on a few, some removed). The policy: hot 30 days, keep 365, ``error`` kept 730,
``baseline`` kept forever, one workflow kept 500 days.

Figures
-------

For each operation, ``<op>_records_time`` is the old way (``use_index=False``: every snapshot
record and final state is read) and ``<op>_index_time`` the new one (facts from the index; records
read only for executions the index lacks, plus one check per execution expired or archived). Each
carries ``ops`` (store requests by operation; a LIST counts one request per 1,000 keys, as S3
pages) and ``requests_per_execution``. Both plans are checked to be identical, and both expiries
to delete the same executions.

- ``plan_records_time`` / ``plan_index_time`` (s; median of ``--runs``), ``index_read_time`` (the
  ``read_index_facts`` part of it).
- ``expire_records_time`` / ``expire_index_time`` (s, one run each on its own copy of the archive).
- ``archive_records_time`` / ``archive_index_time``: ``archive_cold`` to a local cold store (one
  run each on its own copy; most executions go cold in this first run).
- ``plan_after_archive_index_time``: the plan of the archive after ``archive_cold``: executions
  moved to the cold store are described by their tier events, taken from their
  ``retention_events`` rows (the run wrote them at its end); ``plan_after_archive_no_rows_time``
  the same plan with the rows ignored (each tier event read: one GET per cold-moved execution, as
  before the rows held the events' facts). Both plans are checked to be identical.
- ``hold_set_*`` / ``hold_clear_*``: ``set_hold`` / ``clear_hold`` on one workflow (1/12 of the
  executions) through a store that takes object legal holds (counted as ``LEGAL_HOLD``, applied
  to nothing: a LocalStore has no Object Lock); ``records`` is the old way (the index hidden:
  every record read to find the workflow's executions), ``index`` the new one (records read only
  for what the index lacks; ``clear`` reads the released executions' records to confirm them).
- ``*_extrapolated_10m``: requests at 10 M executions (requests per execution × 10 M + the fixed
  ones) and the hours they take one after another at ``--s3-latency-ms`` (15 ms) per request.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archiver.archive import Archive  # noqa: E402
from archiver.events import EventLog  # noqa: E402
from archiver.holds import active_holds, clear_hold, set_hold  # noqa: E402
from archiver.index import ManifestWriter  # noqa: E402
from archiver.retention import (  # noqa: E402
    RetentionPlan,
    RetentionPolicy,
    Rule,
    archive_cold,
    expire,
    plan,
    plan_from_scan,
    read_index_facts,
    scan,
)
from archiver.sanitize import Sanitizer  # noqa: E402
from archiver.store.base import ObjectInfo, ObjectLockState, ObjectStore  # noqa: E402
from archiver.store.local import LocalStore  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402

BENCHMARK = "retention"
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
TEN_M = 10_000_000
LIST_PAGE = 1000


emit = partial(emit_line, BENCHMARK, unit="s", digits=4)
log = partial(log_line, BENCHMARK)


class CountingStore:
    """An ObjectStore that counts the requests made through it (a LIST: one per 1,000 keys)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.ops: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes) -> bool:
        self.ops["PUT"] += 1
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self.ops["GET"] += 1
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        self.ops["HEAD"] += 1
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        n = 0
        for info in self.inner.list(prefix):
            if n % LIST_PAGE == 0:
                self.ops["LIST"] += 1
            n += 1
            yield info
        if n == 0:
            self.ops["LIST"] += 1

    def delete(self, key: str) -> None:
        self.ops["DELETE"] += 1
        self.inner.delete(key)

    def take(self) -> dict[str, int]:
        out = dict(sorted(self.ops.items()))
        self.ops.clear()
        return out


class HoldingStore(CountingStore):
    """A CountingStore that takes object legal holds (counted, applied to nothing): what
    ``set_hold`` / ``clear_hold`` do on S3 with Object Lock, on a LocalStore. With ``hide_index``
    it lists nothing under ``index/`` (the way before holds read the index)."""

    def __init__(self, inner: ObjectStore, *, hide_index: bool = False) -> None:
        super().__init__(inner)
        self.hide_index = hide_index

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if self.hide_index and prefix.startswith("index"):
            self.ops["LIST"] += 1
            return iter(())
        return super().list(prefix)

    @property
    def object_lock_enabled(self) -> bool:
        return False

    def put_locked(
        self,
        key: str,
        data: bytes,
        *,
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> bool:
        return self.put(key, data)

    def set_legal_hold(self, key: str, on: bool) -> None:
        self.ops["LEGAL_HOLD"] += 1

    def object_lock(self, key: str) -> ObjectLockState:  # pragma: no cover - sync is not timed
        raise NotImplementedError


def _workflow(workflow_id: str, variant: int) -> dict[str, Any]:
    nodes = [
        {
            "id": "t",
            "name": "Webhook",
            "type": "n8n-nodes-base.webhook",
            "typeVersion": 2,
            "position": [0, 0],
            "parameters": {"path": f"hook-{workflow_id}"},
        }
    ]
    connections: dict[str, Any] = {}
    for n in range(1, 4 + variant % 3):
        nodes.append(
            {
                "id": f"n{n}",
                "name": f"Step {n}",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200 * n, 0],
                "parameters": {"url": f"https://example.com/{workflow_id}/{variant}/{n}"},
            }
        )
        prev = "Webhook" if n == 1 else f"Step {n - 1}"
        connections[prev] = {"main": [[{"node": f"Step {n}", "type": "main", "index": 0}]]}
    return {
        "id": workflow_id,
        "name": f"flow {workflow_id}",
        "nodes": nodes,
        "connections": connections,
    }


def policy() -> RetentionPolicy:
    return RetentionPolicy(
        name="bench",
        hot_days=30,
        keep_days=365,
        workflows={"wf-03": Rule(keep_days=500)},
        statuses={"error": Rule(keep_days=730)},
        tags={"baseline": Rule(keep_days="never")},
    )


def generate(root: Path, args: argparse.Namespace) -> dict[str, int]:
    """The archive of ``args.executions`` executions with its index, in ``root``."""
    store = LocalStore(root)
    received = [NOW]  # the archive's clock: each execution is received when it was created
    archive = Archive(store, Sanitizer(bytes(range(32))), clock=lambda: received[0])
    writer = ManifestWriter(store, flush_rows=1_000_000, flush_seconds=3600.0)
    writer.attach(archive)
    span = timedelta(days=args.days)
    total = args.executions
    finals = 0
    started = time.monotonic()
    for n in range(total):
        workflow_id = f"wf-{n % args.workflows:02d}"
        when = NOW - span + span * (n / total)
        age = (NOW - when).days
        execution_id = f"{100000 + n}"
        received[0] = when
        archive.capture_snapshot(
            execution_id=execution_id,
            workflow=_workflow(workflow_id, age // 60 + n % args.workflows),
            created_at=when.isoformat(),
        )
        if n % 50 != 7:  # 98 % get a final state
            status = "error" if n % 25 == 3 else "crashed" if n % 100 == 11 else "success"
            archive.record_final_state(
                execution_id,
                {
                    "status": status,
                    "startedAt": when.isoformat(),
                    "finishedAt": (when + timedelta(seconds=3)).isoformat(),
                    "nodes": {"Webhook": {"status": "success"}, "Step 1": {"status": status}},
                },
            )
            finals += 1
        if (n + 1) % 2000 == 0:
            log(f"generate: {n + 1}/{total} ({time.monotonic() - started:.0f} s)")
    writer.close()
    events = EventLog(store)
    step = max(1, total // max(1, args.tags))
    for k in range(args.tags):
        execution_id = f"{100000 + (k * step + 13) % total}"
        snapshot = archive.get_snapshot(execution_id)
        tag = ("baseline", "release", "audit")[k % 3]
        events.add_tag(snapshot, tag)
        if k % 7 == 6:
            events.remove_tag(snapshot, tag)
    return {"executions": total, "final_states": finals}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def per_execution(ops: dict[str, int], executions: int) -> float:
    return sum(ops.values()) / max(1, executions)


def extrapolate(
    name: str, ops: dict[str, int], fixed: int, executions: int, latency: float
) -> None:
    """Requests at 10 M executions: the per-execution part scaled, the ``fixed`` requests (the
    index files: one per table and day, as many at 10 M over the same days) as measured."""
    per = (sum(ops.values()) - fixed) / max(1, executions)
    requests = per * TEN_M + fixed
    emit(
        f"{name}_extrapolated_10m",
        requests * latency / 3600.0,
        1,
        unit="h",
        requests=round(requests),
        fixed_requests=fixed,
        requests_per_execution=round(per, 4),
        latency_ms=latency * 1000,
    )


def same_plan(a: RetentionPlan, b: RetentionPlan) -> bool:
    return (
        a.decisions == b.decisions
        and a.expiring_blobs == b.expiring_blobs
        and a.retained_blobs == b.retained_blobs
    )


def measure(base: Path, info: dict[str, int], args: argparse.Namespace) -> None:
    n = info["executions"]
    latency = args.s3_latency_ms / 1000.0
    pol = policy()
    store = CountingStore(LocalStore(base / "hot"))
    parts = read_index_facts(store).parts  # index files: a fixed cost (per table and day)
    store.take()

    # plan: the old way (every record) and the new one (the index)
    results: dict[bool, RetentionPlan] = {}
    for use_index in (False, True):
        label = "index" if use_index else "records"
        times = []
        ops: dict[str, int] = {}
        for _ in range(args.runs):
            seconds, results[use_index] = timed(
                lambda u=use_index: plan(store, pol, NOW, use_index=u)
            )
            times.append(seconds)
            ops = store.take()
        emit(
            f"plan_{label}_time",
            statistics.median(times),
            len(times),
            executions=n,
            ops=ops,
            requests_per_execution=round(per_execution(ops, n), 4),
            per_execution_ms=round(1000 * statistics.median(times) / n, 4),
        )
        log(f"plan ({label}): {statistics.median(times):.2f} s, {ops}")
        extrapolate(f"plan_{label}", ops, parts if use_index else 0, n, latency)
    if not same_plan(results[False], results[True]):
        raise SystemExit("the plan from the index differs from the plan from the records")
    summary = results[True].summary()
    log(
        f"plan: {summary['toExpire']['executions']} expire, {summary['toCold']['executions']} "
        f"to cold, {summary['hot']['executions']} hot, {summary['heldByLegalHold']['executions']} held"
    )
    seconds, facts = timed(lambda: read_index_facts(store))
    emit(
        "index_read_time",
        seconds,
        1,
        parts=facts.parts,
        ops=store.take(),
        snapshot_rows=len(facts.snapshots),
        final_state_rows=len(facts.final_states),
    )

    # expire and archive_cold, each on its own copy of the archive
    expired: dict[bool, set[str]] = {}
    for use_index in (False, True):
        label = "index" if use_index else "records"
        copy = base / f"expire-{label}"
        shutil.copytree(base / "hot", copy)
        counting = CountingStore(LocalStore(copy))
        seconds, report = timed(
            lambda c=counting, u=use_index: expire(c, pol, NOW, clock=lambda: NOW, use_index=u)
        )
        ops = counting.take()
        expired[use_index] = {e["executionId"] for e in report.expired}
        emit(
            f"expire_{label}_time",
            seconds,
            1,
            executions=n,
            expired=len(report.expired),
            skipped=len(report.skipped),
            ops=ops,
            requests_per_execution=round(per_execution(ops, n), 4),
        )
        log(f"expire ({label}): {seconds:.2f} s, {len(report.expired)} expired, {ops}")
        extrapolate(f"expire_{label}", ops, parts if use_index else 0, n, latency)
        shutil.rmtree(copy)
    if expired[False] != expired[True]:
        raise SystemExit("expire from the index deleted other executions than from the records")

    for use_index in (False, True):
        label = "index" if use_index else "records"
        copy = base / f"archive-{label}"
        shutil.copytree(base / "hot", copy)
        counting = CountingStore(LocalStore(copy))
        cold = LocalStore(base / f"cold-{label}")
        seconds, report = timed(
            lambda c=counting, u=use_index, k=cold: archive_cold(
                c, pol, NOW, clock=lambda: NOW, cold_store=k, use_index=u
            )
        )
        ops = counting.take()
        emit(
            f"archive_{label}_time",
            seconds,
            1,
            executions=n,
            moved=len(report.moved),
            skipped=len(report.skipped),
            ops=ops,
            requests_per_execution=round(per_execution(ops, n), 4),
        )
        log(f"archive ({label}): {seconds:.2f} s, {len(report.moved)} moved, {ops}")
        extrapolate(f"archive_{label}", ops, parts if use_index else 0, n, latency)
        if use_index:
            after: dict[str, RetentionPlan] = {}
            for kind in ("no_rows", "index"):
                seconds, after[kind] = timed(
                    lambda c=counting, k=kind: (
                        plan_without_rows(c, pol) if k == "no_rows" else plan(c, pol, NOW)
                    )
                )
                ops = counting.take()
                emit(
                    f"plan_after_archive_{kind}_time",
                    seconds,
                    1,
                    executions=n,
                    already_cold=after[kind].summary()["alreadyCold"]["executions"],
                    ops=ops,
                    requests_per_execution=round(per_execution(ops, n), 4),
                )
                log(f"plan after archive ({kind}): {seconds:.2f} s, {ops}")
                extrapolate(f"plan_after_archive_{kind}", ops, parts, n, latency)
            if not same_plan(after["no_rows"], after["index"]):
                raise SystemExit("the plan from the retention_events rows differs")
        shutil.rmtree(copy)
        shutil.rmtree(base / f"cold-{label}")


def plan_without_rows(store: ObjectStore, pol: RetentionPolicy) -> RetentionPlan:
    """``plan`` as before the ``retention_events`` rows held the tier events' facts."""
    facts = replace(read_index_facts(store), tier_events={})
    scanned = scan(store, index=facts)
    return plan_from_scan(pol, scanned, NOW, active_holds(store))


def measure_holds(base: Path, n: int) -> None:
    """set_hold / clear_hold of one workflow, with the index hidden (before) and read (after)."""
    for label, hide in (("records", True), ("index", False)):
        copy = base / f"holds-{label}"
        shutil.copytree(base / "hot", copy)
        store = HoldingStore(LocalStore(copy), hide_index=hide)
        for action in ("set", "clear"):

            def run(s: HoldingStore = store, a: str = action) -> Any:
                if a == "set":
                    return set_hold(s, "workflow", "wf-00", reason="bench", by="bench")
                return clear_hold(s, "workflow", "wf-00", by="bench")

            seconds, result = timed(run)
            ops = store.take()
            emit(
                f"hold_{action}_{label}_time",
                seconds,
                1,
                executions=n,
                objects=len(result.objects),
                kept=len(result.kept),
                ops=ops,
                requests=sum(ops.values()),
            )
            log(f"hold {action} ({label}): {seconds:.2f} s, {len(result.objects)} objects, {ops}")
        shutil.rmtree(copy)


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="2,000 executions, one run")
    parser.add_argument("--executions", type=int, help="executions to generate (20,000)")
    parser.add_argument("--days", type=int, default=420, help="spread over this many days")
    parser.add_argument("--workflows", type=int, default=12)
    parser.add_argument("--tags", type=int, default=30, help="tag events")
    parser.add_argument("--runs", type=int, help="timed plan runs (3; quick 1)")
    parser.add_argument(
        "--s3-latency-ms", type=float, default=15.0, help="per request, for the 10 M estimate"
    )
    parser.add_argument("--keep", type=Path, help="generate into this directory and keep it")
    args = parser.parse_args(argv)
    args.executions = args.executions or (2000 if args.quick else 20_000)
    args.runs = args.runs or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        log(f"generating {args.executions} executions in {base}")
        seconds, info = timed(lambda: generate(base / "hot", args))
        emit("generation_time", seconds, 1, **info)
        measure(base, info, args)
        measure_holds(base, info["executions"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
