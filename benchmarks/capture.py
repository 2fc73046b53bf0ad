"""Benchmark of capture: the CPU of one snapshot, and the durable path against a real SeaweedFS.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "capture", "metric": "cpu_p99", "value": 1.7, "unit": "ms", "target": 3.0, "n": 3151}

Example::

    .venv/bin/python benchmarks/capture.py            # full run (~1 min on 2 cores)
    .venv/bin/python benchmarks/capture.py --quick    # small run (~10 s)
    .venv/bin/python benchmarks/capture.py --cpu-only --profile   # CPU part, then cProfile

Figures
-------

``cpu_*`` — CPU time (``time.process_time_ns``) of one snapshot as the archive computes it:
``prepare_workflow`` (normalize, sanitize, JCS, SHA-256, credential refs, triggers), the parse of the
JCS structure that ``Archive.capture_snapshot`` does, ``encode_blob`` (zstd) and ``encode_record`` of
the execution record (built as ``Archive.capture_snapshot`` builds it, with small variables and a
webhook trigger payload). Every corpus workflow, the corpus repeated ``--repeat`` times through one
``Sanitizer`` (the first pass finds its memo empty, like a workflow seen for the first time; later
passes find it warm, like a workflow that runs again). ``cpu_first_pass_p99`` is the first pass alone.
``cpu_<step>_p50/p99`` is the breakdown, measured step by step in a separate, identical pass:
``normalize``, ``sanitize`` (``sanitize_nodes`` + settings + pinData), ``jcs_hash`` (canonicalize
with the numbers the sanitizer reported + SHA-256), ``extract`` (credential refs, triggers),
``compress`` (``encode_blob``, zstd level 1) and
``record`` (build the record body, ``encode_record``: digest + JCS + zstd). ``--profile`` adds a
cProfile of the slowest captures and direct timings of each pass of ``canonicalize`` (stderr).

``big_*`` — the same for a generated workflow of ``--big-nodes`` corpus nodes and about
``--big-bytes`` bytes (unique names and ids, chained ``main`` connections): ``big_cpu_*`` repeated
(warm memo), ``big_cpu_cold_*`` with the sanitizer memo cleared before every run,
``big_cpu_repeat_*`` the archive's path for a document it has prepared before (``PreparedCache``:
a serialization and a hash of the document, and a parse of the cached structure's bytes).
Targets (``architecture.md``): p99 <= 3 ms for ``cpu``, ``big_cpu`` and ``big_cpu_repeat``
(every corpus workflow, repeats of a known structure); p99 <= 5 ms for ``big_cpu_cold`` (first
sight of the generated workflow) and ``big_cpu_stream`` / ``big_cpu_stream_edit`` (the 5 %-edit
stream). ``big_cpu_stream_*`` is a stream of ``2 × --big-runs`` captures of the big workflow through the
archive's own CPU path (``PreparedCache``, the blob compressed once per new structure, the
record), starting from an empty sanitizer; before each run the workflow changes with probability
``--change-rate`` like the store workload (``_edit`` is the changed runs, ``_first`` the first
capture). ``prepared_cache_full_gc`` is the wall time of one full garbage collection with a
``PreparedCache`` filled to its bound by versions of the big workflow.

``store_*`` — ``Archive.capture_snapshot`` / ``get_snapshot`` over ``S3Store`` on a ``weed mini``
started by ``tests/seaweedfs.py`` (Object-Lock bucket; COMPLIANCE retention of 1 day unless
``--lock-mode none``), wall time (``perf_counter_ns``). The workload: ``--runs`` executions of
``--workflows`` corpus workflows (spread over the corpus' size range); before each run the
workflow's structure changes with probability ``--change-rate`` (70 % a parameter edit, 20 % an added
node, 10 % a revert to an earlier structure). ``store_capture_new_*`` are captures whose structure
the bucket had not seen (blob PUT + version commit), ``store_capture_repeat_*`` the others;
``store_requests_*`` the S3 requests each kind sends. ``store_get_*`` reads executions back through
a fresh ``Archive`` (blob cache warms up); ``store_get_cold_*`` through one without a blob cache
(always two GETs). Throughput: captures (and gets) per second with 1 and ``--threads`` threads.

``*_host_cpu_pressure`` (Linux PSI, % of the phase's wall time in which some task waited for a
CPU) says how busy the 2-core host was: compare runs only at similar pressure.

The corpus is read from ``../shared/corpus/n8n-workflows`` (``--corpus``). Setup objects are frozen
out of the garbage collector (``gc.freeze``); collections caused by capture itself still count.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import io
import itertools
import pstats
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.archive import SNAPSHOT_KIND, Archive  # noqa: E402
from archiver.canonical import canonicalize_tree  # noqa: E402
from archiver.capture import (  # noqa: E402
    PreparedCache,
    edge_numbers,
    extract_credential_refs,
    extract_triggers,
    prepare_workflow,
    trigger_kind,
)
from archiver.codec import encode_blob, encode_record  # noqa: E402
from archiver.layout import check_id  # noqa: E402
from archiver.model import ExecutionSnapshot, WorkflowSnapshot  # noqa: E402
from archiver.normalize import normalize_workflow, unwrap_workflow  # noqa: E402
from archiver.sanitize import Sanitizer  # noqa: E402
from archiver.store.s3 import S3Config, S3Store  # noqa: E402
from archiver.timeutil import utcnow  # noqa: E402
from benchmarks.jsonlines import Progress as _Progress  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402
from tests.seaweedfs import run_seaweedfs  # noqa: E402

BENCHMARK = "capture"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "n8n-workflows"
# architecture.md "Performance targets": every corpus workflow and repeats of a known structure
# (warm memo, PreparedCache) p99 <= 3 ms; the first sight of the generated 400-node / 200 KB
# workflow and the 5 %-edit stream through the archive's path p99 <= 5 ms.
TARGET_CPU_P99_MS = 3.0
TARGET_CPU_FIRST_SIGHT_P99_MS = 5.0
TARGET_INGEST_P50_MS = 15.0
TARGET_GET_P99_MS = 30.0
BIG_TRIGGERS = 3

VARIABLES = {
    "ENVIRONMENT": "production",
    "API_BASE_URL": "https://api.example.com/v2",
    "SLACK_CHANNEL": "#ops-alerts",
    "RETRY_LIMIT": 3,
}
TRIGGER_DATA = {
    "headers": {
        "host": "n8n.example.com",
        "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "content-type": "application/json",
        "authorization": "Bearer sk_live_51HxExampleExampleExample0000",
    },
    "params": {},
    "query": {"source": "checkout"},
    "body": {
        "id": "evt_1Nexample",
        "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_test_a1", "amount_total": 4200, "currency": "eur"}},
    },
}


# --------------------------------------------------------------------------------------------------
# output


emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)
Progress = partial(_Progress, BENCHMARK)


class CpuPressure:
    """Linux PSI: the share of wall time in which some task waited for a CPU, since creation.

    Over a single-threaded phase this is other load on the host; over a threaded phase it also
    counts our own threads and the SeaweedFS server waiting for each other.
    """

    _PATH = Path("/proc/pressure/cpu")

    def __init__(self) -> None:
        self._start = self._read()
        self._started = time.monotonic()

    @classmethod
    def _read(cls) -> int | None:
        try:
            line = cls._PATH.read_text().splitlines()[0]  # "some avg10=.. avg60=.. total=<us>"
            return int(dict(f.split("=") for f in line.split()[1:])["total"])
        except (OSError, IndexError, KeyError, ValueError):
            return None

    def emit(self, metric: str, n: int) -> None:
        end = self._read()
        if self._start is None or end is None:
            return
        elapsed_us = (time.monotonic() - self._started) * 1e6
        emit(metric, 100.0 * (end - self._start) / max(elapsed_us, 1.0), n, unit="%")


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def emit_latencies(
    prefix: str,
    values: Sequence[float],
    *,
    p50_target: float | None = None,
    p99_target: float | None = None,
    with_max: bool = False,
) -> None:
    n = len(values)
    emit(f"{prefix}_p50", statistics.median(values), n, target=p50_target)
    emit(f"{prefix}_p99", pct(values, 0.99), n, target=p99_target)
    if with_max:
        emit(f"{prefix}_max", max(values), n)


# --------------------------------------------------------------------------------------------------
# corpus and generated workflows


def load_corpus(corpus: Path) -> list[tuple[str, Any]]:
    """(file name, document as published) for every ``*.json`` in ``corpus``."""
    docs = [(p.name, orjson.loads(p.read_bytes())) for p in sorted(corpus.glob("*.json"))]
    if not docs:
        raise SystemExit(f"no *.json workflows in {corpus}")
    return docs


def _node_id(seed: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"execvault-bench:{seed}"))


def _build_big(pool: list[dict[str, Any]], nodes: int, budget: int) -> dict[str, Any]:
    """``nodes`` corpus nodes (in corpus order) of about ``budget`` bytes in all, chained.

    A node is taken when it keeps the running total within the pro-rata budget, so big and small
    nodes mix as they do in the corpus.
    """
    chosen: list[dict[str, Any]] = []
    total = 0
    i = 0
    while len(chosen) < nodes:
        if i >= 50 * len(pool) + nodes:
            raise SystemExit("the corpus has too few nodes small enough for the requested size")
        node = orjson.loads(orjson.dumps(pool[i % len(pool)]))
        i += 1
        size = len(orjson.dumps(node))
        if total + size > budget * (len(chosen) + 1) / nodes * 1.05:
            continue
        k = len(chosen)
        node["name"] = f"{node.get('name', 'Node')} #{k}"
        node["id"] = _node_id(f"node-{k}")
        node["position"] = [240 * (k % 20), 200 * (k // 20)]
        if "webhookId" in node:
            node["webhookId"] = _node_id(f"webhook-{k}")
        chosen.append(node)
        total += size
    connections = {
        a["name"]: {"main": [[{"node": b["name"], "type": "main", "index": 0}]]}
        for a, b in itertools.pairwise(chosen)
    }
    return {
        "id": "bench-big",
        "name": f"capture benchmark: {nodes} corpus nodes",
        "active": True,
        "nodes": chosen,
        "connections": connections,
        "settings": {"executionOrder": "v1", "saveManualExecutions": True},
        "tags": [{"name": "benchmark"}],
    }


def build_big_workflow(
    docs: list[tuple[str, Any]], nodes: int, size: int
) -> tuple[dict[str, Any], int]:
    """A workflow of ``nodes`` corpus nodes, ``size`` JSON bytes give or take 2 %; and its size.

    Only the first ``BIG_TRIGGERS`` trigger nodes of the corpus are used: a big workflow has a
    few triggers, not one per corpus workflow (each trigger also lands in the execution record).
    """
    pool = []
    triggers = 0
    for _, doc in docs:
        for node in unwrap_workflow(doc).get("nodes") or []:
            if not isinstance(node, dict) or not isinstance(node.get("type"), str):
                continue
            if trigger_kind(node["type"]) is not None:
                if triggers >= BIG_TRIGGERS:
                    continue
                triggers += 1
            pool.append(node)
    budget = size
    for _ in range(6):
        wf = _build_big(pool, nodes, budget)
        actual = len(orjson.dumps(wf))
        if abs(actual - size) <= size // 50:
            break
        budget -= actual - size
    return wf, actual


# --------------------------------------------------------------------------------------------------
# the CPU of one capture


def _record_body(
    prepared: Any,
    structure: dict[str, Any],
    sanitizer: Sanitizer,
    execution_id: str,
    workflow_id: object,
    when: datetime,
) -> dict[str, Any]:
    """The execution record body as ``Archive.capture_snapshot`` builds it (version 1.0.0)."""
    exec_id = check_id(execution_id, "executionId")
    wf_id = check_id(workflow_id, "workflowId")
    wf = prepared.workflow
    enabled = [t for t in prepared.triggers if not t.disabled]
    snapshot = ExecutionSnapshot(
        id="es_" + hashlib.sha256(f"execvault:{exec_id}".encode()).hexdigest()[:26],
        execution_id=exec_id,
        workflow_id=wf_id,
        snapshot_version="1.0.0",
        snapshot_hash=prepared.snapshot_hash,
        workflow_snapshot=WorkflowSnapshot(
            id=wf_id,
            name=wf.name,
            description=wf.description,
            active=wf.active,
            nodes=structure["nodes"],
            connections=structure["connections"],
            settings=structure["settings"],
            version="1.0.0",
            tags=tuple(wf.tags),
            version_id=wf.version_id,
        ),
        variables_snapshot=sanitizer.sanitize(VARIABLES),
        credentials_refs=prepared.credentials_refs,
        triggers_snapshot=prepared.triggers,
        user_id="system",
        trigger_type=enabled[0].kind if enabled else "unknown",
        created_at=when,
        version_seq=1,
        trigger_data=sanitizer.sanitize(TRIGGER_DATA),
        pin_data=prepared.pin_data,
        node_identity=wf.node_identity,
        received_at=when,
    )
    return snapshot.record_body()


def big_record_body(prepared: Any, sanitizer: Sanitizer) -> dict[str, Any]:
    """The execution record body of ``prepared`` as ``encode_record`` stamps and canonicalizes it."""
    body = _record_body(prepared, prepared.structure, sanitizer, "exec-0", "wf-bench", utcnow())
    return {**body, "formatVersion": 1, "kind": SNAPSHOT_KIND, "digest": "sha256:" + "0" * 64}


def capture_cpu(doc: Any, sanitizer: Sanitizer, execution_id: str, when: datetime) -> None:
    """Everything capture computes for one snapshot, without storage."""
    prepared = prepare_workflow(doc, sanitizer)
    structure = prepared.structure
    encode_blob(prepared.structure_jcs)  # a new structure; a repeated one skips this
    workflow_id = prepared.workflow.workflow_id or "wf-bench"
    encode_record(
        SNAPSHOT_KIND,
        _record_body(prepared, structure, sanitizer, execution_id, workflow_id, when),
    )


STEPS = ("normalize", "sanitize", "jcs_hash", "extract", "compress", "record")


@dataclass
class _Prepared:
    """What ``prepare_workflow`` returns, rebuilt step by step (duck-typed for ``_record_body``)."""

    workflow: Any
    structure_jcs: bytes
    snapshot_hash: str
    credentials_refs: Any
    triggers: Any
    pin_data: Any


def capture_cpu_steps(
    doc: Any, sanitizer: Sanitizer, execution_id: str, when: datetime
) -> tuple[list[int], str]:
    """``capture_cpu`` split into its steps: CPU ns of each (in ``STEPS`` order), and the hash.

    Mirrors ``archiver.capture.prepare_workflow``; the caller checks the hash against it.
    """
    clock = time.process_time_ns
    t0 = clock()
    wf = normalize_workflow(doc)
    t1 = clock()
    nodes, node_numbers = sanitizer.sanitize_nodes(wf.nodes)
    settings, settings_numbers = sanitizer.sanitize_json(wf.settings, where="settings")
    pin_data = sanitizer.sanitize(wf.pin_data) if wf.pin_data else None
    t2 = clock()
    jcs, structure = canonicalize_tree(
        {"nodes": nodes, "connections": wf.connections, "settings": settings},
        numbers=node_numbers | settings_numbers | edge_numbers(wf.connections),
    )
    snapshot_hash = hashlib.sha256(jcs).hexdigest()
    t3 = clock()
    refs = extract_credential_refs(nodes)
    triggers = extract_triggers(nodes)
    t4 = clock()
    encode_blob(jcs)
    t5 = clock()
    prepared = _Prepared(wf, jcs, snapshot_hash, refs, triggers, pin_data)
    body = _record_body(
        prepared, structure, sanitizer, execution_id, wf.workflow_id or "wf-bench", when
    )
    encode_record(SNAPSHOT_KIND, body)
    t7 = clock()
    return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t7 - t5], snapshot_hash


def _ms(ns: int) -> float:
    return ns / 1e6


def time_cpu(
    docs: Sequence[Any],
    sanitizer: Sanitizer,
    label: str,
    *,
    before: Callable[[], None] | None = None,
) -> list[float]:
    """CPU ms of ``capture_cpu`` for each document, in order."""
    when = utcnow()
    clock = time.process_time_ns
    times: list[float] = []
    progress = Progress(label, len(docs))
    for i, doc in enumerate(docs):
        if before is not None:
            before()
        t0 = clock()
        capture_cpu(doc, sanitizer, f"exec-{i}", when)
        times.append(_ms(clock() - t0))
        progress.tick()
    return times


def time_steps(
    docs: Sequence[Any],
    sanitizer: Sanitizer,
    label: str,
    *,
    before: Callable[[], None] | None = None,
) -> list[list[float]]:
    """Per step (``STEPS`` order), the CPU ms of each document; hashes checked against capture."""
    when = utcnow()
    steps: list[list[float]] = [[] for _ in STEPS]
    expected: dict[int, str] = {}
    progress = Progress(label, len(docs))
    for i, doc in enumerate(docs):
        if before is not None:
            before()
        ns, snapshot_hash = capture_cpu_steps(doc, sanitizer, f"exec-{i}", when)
        want = expected.get(id(doc))
        if want is None:
            want = expected[id(doc)] = prepare_workflow(doc, sanitizer).snapshot_hash
        if snapshot_hash != want:
            raise SystemExit("the step-by-step capture no longer matches prepare_workflow")
        for bucket, value in zip(steps, ns, strict=True):
            bucket.append(_ms(value))
        progress.tick()
    return steps


def time_stream(
    big: dict[str, Any], key: bytes, runs: int, change_rate: float, seed: int
) -> tuple[list[float], list[float]]:
    """CPU ms of each capture of a stream of the big workflow through the archive's own path
    (``PreparedCache``, a new structure compressed once, the record), from an empty sanitizer;
    before each run the workflow changes with probability ``change_rate`` (``_mutate``: parameter
    edits, added nodes, reverts). Returns every capture's time, and those of the changed runs."""
    sanitizer, cache = Sanitizer(key), PreparedCache()
    rng = random.Random(seed)
    current = _copy(big)
    history: list[bytes] = []  # earlier states as bytes: trees would slow every collection
    seen: set[str] = set()
    when = utcnow()
    clock = time.process_time_ns
    times: list[float] = []
    edits: list[float] = []
    progress = Progress("big cpu stream", runs)
    for i in range(runs):
        changed = i > 0 and rng.random() < change_rate
        if changed:
            evolving = _Evolving("bench-big", current, [orjson.loads(h) for h in history[-3:]])
            _mutate(evolving, rng, i)
            history.append(orjson.dumps(current))
            current = evolving.current
        t0 = clock()
        prepared = cache.prepare(current, sanitizer)
        if prepared.snapshot_hash not in seen:
            seen.add(prepared.snapshot_hash)
            encode_blob(prepared.structure_jcs)
        encode_record(
            SNAPSHOT_KIND,
            _record_body(prepared, prepared.structure, sanitizer, f"exec-{i}", "bench-big", when),
        )
        elapsed = _ms(clock() - t0)
        times.append(elapsed)
        if changed:
            edits.append(elapsed)
        del prepared
        progress.tick()
    return times, edits


def cache_gc_ms(big: dict[str, Any], sanitizer: Sanitizer) -> float:
    """Median wall ms of a full garbage collection with a ``PreparedCache`` filled to its bound
    by versions of the big workflow: what the cache adds to every full collection the process
    makes (and so to the capture that triggers one)."""
    cache = PreparedCache()
    gc.collect()
    progress = Progress("filling a PreparedCache", 400)
    for i in range(400):
        doc = _copy(big)
        doc["nodes"][i % len(doc["nodes"])]["parameters"]["benchRevision"] = i
        cache.prepare(doc, sanitizer)
        del doc
        progress.tick()
    walls = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        gc.collect()
        walls.append(_ms(time.perf_counter_ns() - t0))
    return statistics.median(walls)


def emit_steps(prefix: str, steps: list[list[float]]) -> None:
    for name, values in zip(STEPS, steps, strict=True):
        emit(f"{prefix}_{name}_p50", statistics.median(values), len(values))
        emit(f"{prefix}_{name}_p99", pct(values, 0.99), len(values))


def profile(docs: Sequence[Any], sanitizer: Sanitizer, label: str, rounds: int) -> None:
    """cProfile of ``capture_cpu`` over ``docs`` × ``rounds``, top functions to stderr."""
    when = utcnow()
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for r in range(rounds):
        for i, doc in enumerate(docs):
            capture_cpu(doc, sanitizer, f"exec-{r}-{i}", when)
    profiler.disable()
    calls = rounds * len(docs)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(
        f"=== cProfile: {label}, {calls} captures (times are totals; divide by {calls}) ===\n"
    )
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(25)
    print(out.getvalue(), file=sys.stderr, flush=True)


def canonical_passes(label: str, value: Any, runs: int = 50) -> None:
    """Median ms of each pass ``canonicalize`` may make over ``value``, and which ones it makes.

    Uses private names of ``archiver.canonical``; says so and returns if they have changed.
    """
    import archiver.canonical as canonical

    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        utf16 = canonical._needs_utf16_sort(out)
        numbers = canonical._scan(value, check_keys=False)  # what the sanitizer reports
        passes: dict[str, Callable[[], object]] = {
            "orjson.dumps": lambda: orjson.dumps(value, option=orjson.OPT_SORT_KEYS),
            "_needs_utf16_sort": lambda: canonical._needs_utf16_sort(out),
            "_high_keys": lambda: canonical._high_keys(out),
            "_scan": lambda: canonical._scan(value, check_keys=utf16),
            "sha256": lambda: hashlib.sha256(out).hexdigest(),
            "canonicalize (walks)": lambda: canonical.canonicalize(value),
            "canonicalize_tree (numbers given, as capture)": lambda: canonical.canonicalize_tree(
                value, numbers=numbers
            ),
        }
    except AttributeError as err:
        log(f"canonical passes: archiver.canonical changed ({err}); skipped")
        return
    timings = []
    for name, fn in passes.items():
        samples = []
        for _ in range(runs):
            t0 = time.process_time_ns()
            fn()
            samples.append(_ms(time.process_time_ns() - t0))
        timings.append(f"{name} {statistics.median(samples):.3f}")
    taken = f"flags {canonical._scan(value, check_keys=utf16)}, utf16 keys possible: {utf16}"
    log(f"canonicalize passes, {label} ({len(out)} bytes): {'; '.join(timings)} ms; {taken}")


def run_cpu(args: argparse.Namespace, docs: list[tuple[str, Any]]) -> None:
    documents = [doc for _, doc in docs]
    key = secrets.token_bytes(32)
    pressure = CpuPressure()

    # corpus: every workflow, the corpus repeated R times through one sanitizer
    sanitizer = Sanitizer(key)
    stream = documents * args.repeat
    times = time_cpu(stream, sanitizer, "corpus cpu")
    emit_latencies("cpu", times, p99_target=TARGET_CPU_P99_MS, with_max=True)
    emit("cpu_first_pass_p99", pct(times[: len(documents)], 0.99), len(documents))
    emit("cpu_first_pass_max", max(times[: len(documents)]), len(documents))
    steps = time_steps(stream, Sanitizer(key), "corpus breakdown")
    emit_steps("cpu", steps)

    # the generated 200 KB / 400-node workflow
    big, big_size = build_big_workflow(docs, args.big_nodes, args.big_bytes)
    emit("big_nodes", len(big["nodes"]), 1, unit="nodes")
    emit("big_bytes", big_size, 1, unit="bytes")
    big_sanitizer = Sanitizer(key)
    capture_cpu(big, big_sanitizer, "warm-up", utcnow())
    times = time_cpu([big] * args.big_runs, big_sanitizer, "big cpu")
    emit_latencies("big_cpu", times, p99_target=TARGET_CPU_P99_MS, with_max=True)
    cold_runs = max(20, args.big_runs // 5)
    times = time_cpu(
        [big] * cold_runs, big_sanitizer, "big cpu cold", before=big_sanitizer.clear_cache
    )
    emit_latencies("big_cpu_cold", times, p99_target=TARGET_CPU_FIRST_SIGHT_P99_MS)
    steps = time_steps([big] * args.big_runs, big_sanitizer, "big breakdown")
    emit_steps("big_cpu", steps)
    # The archive's own path for a workflow it has prepared before (PreparedCache: one
    # serialization and one hash of the document instead of normalize/sanitize/JCS/compress).
    cache = PreparedCache()
    cache.prepare(big, big_sanitizer)
    clock = time.process_time_ns
    repeat: list[float] = []
    for _ in range(args.big_runs):
        t0 = clock()
        cache.prepare(big, big_sanitizer)
        repeat.append(_ms(clock() - t0))
    emit_latencies("big_cpu_repeat", repeat, p99_target=TARGET_CPU_P99_MS)
    stream, edits = time_stream(big, key, args.big_runs * 2, args.change_rate, args.seed)
    emit_latencies(
        "big_cpu_stream", stream, p99_target=TARGET_CPU_FIRST_SIGHT_P99_MS, with_max=True
    )
    emit("big_cpu_stream_first", stream[0], 1)
    emit_latencies("big_cpu_stream_edit", edits, p99_target=TARGET_CPU_FIRST_SIGHT_P99_MS)
    emit("prepared_cache_full_gc", cache_gc_ms(big, big_sanitizer), 5)
    pressure.emit("cpu_host_cpu_pressure", len(stream) + args.big_runs)

    if args.profile:
        # the tail: the corpus workflows at or above the warm p99, and the big one
        warm = time_cpu(documents, sanitizer, "tail selection")
        cut = pct(warm, 0.99)
        tail = [doc for doc, t in zip(documents, warm, strict=True) if t >= cut]
        names = [name for (name, _), t in zip(docs, warm, strict=True) if t >= cut]
        log(f"profiling the {len(tail)} slowest corpus workflows (>= {cut:.2f} ms): {names}")
        profile(tail, sanitizer, "slowest corpus workflows (warm memo)", 50)
        profile([big], big_sanitizer, "generated big workflow (warm memo)", 100)
        for name, doc in zip(names, tail, strict=True):
            canonical_passes(f"structure of {name}", prepare_workflow(doc, sanitizer).structure)
        prepared = prepare_workflow(big, big_sanitizer)
        canonical_passes("structure of the big workflow", prepared.structure)
        canonical_passes("record of the big workflow", big_record_body(prepared, big_sanitizer))


# --------------------------------------------------------------------------------------------------
# the durable path against SeaweedFS


@dataclass
class Job:
    execution_id: str
    workflow_id: str
    workflow: dict[str, Any]


@dataclass
class _Evolving:
    """One workflow whose structure changes now and then; earlier states kept for reverts."""

    workflow_id: str
    current: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def _mutate(wf: _Evolving, rng: random.Random, revision: int) -> None:
    doc = _copy(wf.current)
    nodes = [n for n in doc.get("nodes") or [] if isinstance(n, dict)]
    roll = rng.random()
    if roll < 0.10 and wf.history:  # a revert to an earlier structure
        wf.history.append(wf.current)
        wf.current = _copy(rng.choice(wf.history[:-1] or wf.history))
        return
    if roll < 0.30 or not nodes:  # an added node, wired after an existing one
        name = f"Bench step {revision}"
        doc.setdefault("nodes", []).append(
            {
                "id": _node_id(f"{wf.workflow_id}-{revision}"),
                "name": name,
                "type": "n8n-nodes-base.noOp",
                "typeVersion": 1,
                "position": [240 * len(nodes), 600],
                "parameters": {},
            }
        )
        connections = doc.setdefault("connections", {})
        if nodes and isinstance(connections, dict):
            source = rng.choice(nodes)["name"]
            edge = {"node": name, "type": "main", "index": 0}
            outputs = connections.get(source)
            if outputs is None:
                connections[source] = {"main": [[edge]]}
            elif isinstance(outputs.get("main"), list) and outputs["main"]:
                main = outputs["main"]
                main[0] = [*(main[0] or []), edge]
    else:  # a parameter edit
        node = rng.choice(nodes)
        params = node.get("parameters")
        if not isinstance(params, dict):
            params = node["parameters"] = {}
        params["benchRevision"] = revision
    wf.history.append(wf.current)
    wf.current = doc


class Workload:
    """Runs of ``count`` corpus workflows; each run may change its workflow first."""

    def __init__(
        self, docs: list[tuple[str, Any]], count: int, change_rate: float, seed: int
    ) -> None:
        by_size = sorted(docs, key=lambda d: len(orjson.dumps(d[1])))
        step = max(1, len(by_size) // count)
        picked = [unwrap_workflow(doc) for _, doc in by_size[step // 2 :: step][:count]]
        self.workflows = [
            _Evolving(f"wf-{i:02d}", {**_copy(doc), "id": f"wf-{i:02d}"})
            for i, doc in enumerate(picked)
        ]
        self.change_rate = change_rate
        self.rng = random.Random(seed)
        self.executions = 0
        self.revisions = 0

    def jobs(self, runs: int) -> list[Job]:
        out = []
        for _ in range(runs):
            wf = self.rng.choice(self.workflows)
            if self.rng.random() < self.change_rate:
                self.revisions += 1
                _mutate(wf, self.rng, self.revisions)
            self.executions += 1
            out.append(Job(f"exec-{self.executions:07d}", wf.workflow_id, wf.current))
        return out


class RequestCounter:
    """Counts the S3 requests an S3Store sends, by operation."""

    def __init__(self, store: S3Store) -> None:
        self.counts: Counter[str] = Counter()
        self._events = store.client.meta.events
        self._id = f"capture-bench-{uuid.uuid4().hex}"
        handler: Any = self._on_send
        self._events.register("before-send.s3", handler, unique_id=self._id)

    def _on_send(self, event_name: str, **_: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)

    def remove(self) -> None:
        self._events.unregister("before-send.s3", unique_id=self._id)


def _capture(archive: Archive, job: Job) -> Any:
    return archive.capture_snapshot(
        execution_id=job.execution_id,
        workflow=job.workflow,
        workflow_id=job.workflow_id,
        variables=VARIABLES,
        trigger_type="webhook",
        trigger_data=TRIGGER_DATA,
    )


def _threaded(
    fn: Callable[[Any], Any], items: Sequence[Any], threads: int, label: str
) -> tuple[list[float], float]:
    """Run ``fn`` over ``items`` on ``threads`` threads: per-call wall ms, and the elapsed seconds."""
    progress = Progress(label, len(items))

    def timed(item: Any) -> float:
        t0 = time.perf_counter_ns()
        fn(item)
        elapsed = _ms(time.perf_counter_ns() - t0)
        progress.tick()
        return elapsed

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        times = list(pool.map(timed, items))
    return times, time.perf_counter() - started


@contextlib.contextmanager
def seaweedfs_store(lock_mode: str) -> Iterator[S3Store]:
    """An S3Store on a fresh Object-Lock bucket of a throw-away SeaweedFS, warmed up."""
    with (
        tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp,
        run_seaweedfs(Path(tmp)) as server,
    ):
        log(f"SeaweedFS up in {server.startup_seconds:.1f} s at {server.endpoint_url}")
        client = boto3.session.Session().client("s3", **server.client_kwargs())
        bucket = "capture-bench"
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        client.close()
        lock: dict[str, Any] = {}
        if lock_mode != "none":
            lock = {"object_lock_mode": lock_mode, "object_lock_days": 1}
        store = S3Store(
            S3Config(
                bucket=bucket,
                prefix="archive",
                endpoint_url=server.endpoint_url,
                region=server.region,
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,
                **lock,
            )
        )
        # A bucket's first write grows a volume (~0.2 s) and opens the connection: not measured.
        store.put("warm-up/first", b"warm-up")
        store.get("warm-up/first")
        try:
            yield store
        finally:
            store.close()


def run_store(args: argparse.Namespace, docs: list[tuple[str, Any]]) -> None:
    sanitizer = Sanitizer(secrets.token_bytes(32))
    workload = Workload(docs, args.workflows, args.change_rate, args.seed)
    with seaweedfs_store(args.lock_mode) as store:
        pressure = CpuPressure()
        archive = Archive(store, sanitizer)
        counter = RequestCounter(store)

        # sequential captures: latency by kind, requests by kind, single-threaded throughput
        jobs = workload.jobs(args.runs)
        seen: set[str] = set()
        latency: dict[str, list[float]] = {"new": [], "repeat": []}
        requests: dict[str, Counter[str]] = {"new": Counter(), "repeat": Counter()}
        expected: dict[str, str] = {}
        progress = Progress("store capture", len(jobs))
        started = time.perf_counter()
        for job in jobs:
            before = counter.snapshot()
            t0 = time.perf_counter_ns()
            result = _capture(archive, job)
            elapsed = _ms(time.perf_counter_ns() - t0)
            snapshot_hash = result.snapshot.snapshot_hash
            kind = "repeat" if snapshot_hash in seen else "new"
            seen.add(snapshot_hash)
            latency[kind].append(elapsed)
            requests[kind].update(counter.snapshot() - before)
            expected[job.execution_id] = snapshot_hash
            progress.tick()
        wall = time.perf_counter() - started
        counter.remove()

        all_times = latency["new"] + latency["repeat"]
        emit("store_structures", len(seen), len(jobs), unit="structures")
        emit_latencies("store_capture", all_times, p50_target=TARGET_INGEST_P50_MS)
        for kind in ("new", "repeat"):
            if not latency[kind]:
                continue
            emit_latencies(f"store_capture_{kind}", latency[kind])
            n = len(latency[kind])
            ops = {op: round(c / n, 2) for op, c in sorted(requests[kind].items())}
            emit(
                f"store_requests_{kind}",
                sum(requests[kind].values()) / n,
                n,
                unit="requests",
                ops=ops,
            )
        emit("store_capture_throughput_1t", len(jobs) / wall, len(jobs), unit="captures/s")

        # the same mix on several threads
        more = workload.jobs(args.runs)
        times, elapsed_s = _threaded(
            lambda job: _capture(archive, job), more, args.threads, "store capture threads"
        )
        for job in more:
            expected[job.execution_id] = ""
        emit(
            f"store_capture_throughput_{args.threads}t",
            len(more) / elapsed_s,
            len(more),
            unit="captures/s",
        )
        emit_latencies(f"store_capture_{args.threads}t", times)

        # reads by execution id: a fresh reader (its blob cache warms up), one without a cache
        rng = random.Random(args.seed + 1)
        executed = [job.execution_id for job in jobs]
        sample = rng.sample(executed, min(args.reads, len(executed)))
        for label, reader in (
            ("store_get", Archive(store, sanitizer)),
            ("store_get_cold", Archive(store, sanitizer, blob_cache_size=0)),
        ):
            progress = Progress(label, len(sample))
            times = []
            for execution_id in sample:
                t0 = time.perf_counter_ns()
                snap = reader.get_snapshot(execution_id)
                times.append(_ms(time.perf_counter_ns() - t0))
                if snap.snapshot_hash != expected[execution_id]:
                    raise SystemExit(f"{execution_id}: read back another snapshot")
                progress.tick()
            emit_latencies(label, times, p99_target=TARGET_GET_P99_MS)

        reader = Archive(store, sanitizer)
        times, elapsed_s = _threaded(reader.get_snapshot, sample, args.threads, "store get threads")
        emit(
            f"store_get_throughput_{args.threads}t",
            len(sample) / elapsed_s,
            len(sample),
            unit="gets/s",
        )
        pressure.emit("store_host_cpu_pressure", 2 * len(jobs) + 3 * len(sample))


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n", 1)[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--quick", action="store_true", help="a small run (seconds, not minutes)")
    parser.add_argument(
        "--repeat", type=int, help="passes over the corpus for cpu_* (default 5; quick 1)"
    )
    parser.add_argument("--big-nodes", type=int, default=400)
    parser.add_argument("--big-bytes", type=int, default=200_000)
    parser.add_argument("--big-runs", type=int, help="runs of the big workflow (500; quick 50)")
    parser.add_argument("--runs", type=int, help="durable captures per phase (1000; quick 100)")
    parser.add_argument("--workflows", type=int, default=20, help="distinct workflows in the mix")
    parser.add_argument(
        "--change-rate", type=float, default=0.05, help="chance a run changes its workflow first"
    )
    parser.add_argument("--reads", type=int, help="get_snapshot calls per figure (1000; quick 100)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--lock-mode", choices=["COMPLIANCE", "GOVERNANCE", "none"], default="COMPLIANCE"
    )
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--cpu-only", action="store_true", help="skip the SeaweedFS part")
    parser.add_argument("--store-only", action="store_true", help="skip the CPU part")
    parser.add_argument(
        "--profile", action="store_true", help="after the CPU part, cProfile the slowest captures"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.repeat = args.repeat or (1 if quick else 5)
    args.big_runs = args.big_runs or (50 if quick else 500)
    args.runs = args.runs or (100 if quick else 1000)
    args.reads = args.reads or (100 if quick else 1000)

    docs = load_corpus(args.corpus)
    log(f"{len(docs)} corpus workflows from {args.corpus}")
    gc.collect()
    gc.freeze()
    if not args.store_only:
        run_cpu(args, docs)
    if not args.cpu_only:
        run_store(args, docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
