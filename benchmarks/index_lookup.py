"""Benchmark of index lookups: history and hash lookups over a generated index of N executions.

Prints one JSON object per line and figure (progress goes to stderr), e.g.::

    {"benchmark": "index_lookup", "metric": "history_busy_p50", "value": 41.2, "unit": "ms",
     "target": 150.0, "n": 30, "rows": 10000000, "items": 50}

Example::

    .venv/bin/python benchmarks/index_lookup.py               # 10 M executions (~3 min; +3 min once to generate)
    .venv/bin/python benchmarks/index_lookup.py --quick       # 200 k executions (~20 s)
    .venv/bin/python benchmarks/index_lookup.py --rows 1000000 --runs 50 --data-dir /tmp/idx

The index
---------

``--rows`` executions (default 10,000,000) over ``--days`` days (365) ending on 2026-11-24, of
``--workflows`` workflows (5,000), written straight as Parquet into a LocalStore directory: one
compacted file per table (``snapshots``, ``final_states``, ``versions``) and day, as
``rebuild_index`` writes them (same schemas, sort order, row groups, zstd, statistics and bloom
filters as ``archiver.index.encode_part``; the first day's files are checked to be byte-identical to
``encode_part``'s). Generated day by day, so memory stays bounded.

Distributions: workflow activity is Zipf-like (exponent 1.1, busiest ~16 % of all runs); 65 % of
workflows are active all year, the others start or retire at a random day; more runs on weekdays
and during working hours, slow growth over the year. Each workflow's structure changes every
7-60 days on average (10 % of changes revert to an earlier structure), which gives its snapshot
hashes and its version chain (a ``versions`` row when an execution first runs a new structure).
99.5 % of executions have a final state (its ``dt`` is the day it finished, so some land on the
next day); ~3 % end in error (per-workflow rates, lognormal, weighted to 3 %), 0.4 % canceled,
0.1 % crashed; durations lognormal (median 1.5 s, capped at 6 h). Execution ids are n8n-style
increasing integers; object keys, blob keys and snapshot ids as the archive makes them.

The index is kept in ``--data-dir`` (default ``~/.cache/execvault-bench/index_lookup``), one
directory per parameter set, and reused when a complete one with the same parameters is there
(``--regenerate`` forces a new one).

Figures
-------

``generated_rows`` (exactly how many executions the index holds), ``generated_final_states``,
``generated_versions``, ``error_rate``, ``generation_time`` (s; ``reused: true`` when it comes
from an earlier run), ``index_bytes`` (MiB on disk), ``index_files``.

``catalog_open_first`` / ``catalog_open_p50``: ``query.catalog.Catalog(LocalStore)`` construction,
which builds the key map from every snapshots and final-states file (``key_map_entries``).

Warm lookups through ``query.history`` on one open catalog (1 warm-up, then ``--runs`` runs;
median and nearest-rank p99, so with 30 runs p99 is the slowest run), target 150 ms:
``history_busy`` / ``history_medium`` / ``history_quiet`` (limit 50; busiest workflow, median one,
least active one with at least 60 runs that is active all year), ``history_busy_page2`` (the next
page through the cursor), ``history_window_busy`` / ``history_window_quiet`` (a 30-day
``since``/``until`` window 120-90 days before the end), ``history_error_busy`` /
``history_error_quiet`` (``status="error"``), ``by_hash_recent`` (the busiest workflow's current
structure) and ``by_hash_old`` (a structure last run 8-10 months ago).

Aggregates through catalog SQL (1 warm-up, ``--agg-runs`` runs): ``aggregate_30d_failure_rate``
(per workflow over the last 30 days, ``final_states`` with a ``dt`` filter, target 2 s),
``aggregate_30d_failure_by_trigger`` (the ``executions`` view, i.e. snapshots joined to final
states, last 30 days, target 2 s), ``aggregate_365d_day_status`` (day × status over the whole
index, no target) and ``aggregate_365d_day_status_raw`` (the same query on ``read_parquet`` over
the files, without the view's deduplication: what the deduplicating view costs).

``host_cpu_pressure`` (Linux PSI) says how busy the shared 2-core host was during the lookups.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.index import (  # noqa: E402
    _BLOOM_FPP,
    _SORT_KEYS,
    BLOOM_COLUMNS,
    INDEX_FORMAT_VERSION,
    ROW_GROUP_ROWS,
    SCHEMAS,
    encode_part,
    part_key,
)
from archiver.store.local import LocalStore  # noqa: E402
from archiver.versioning import next_version  # noqa: E402
from benchmarks.capture import CpuPressure, pct  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402
from query.catalog import Catalog  # noqa: E402
from query.history import HistoryPage, executions_by_hash, workflow_history  # noqa: E402

BENCHMARK = "index_lookup"
TARGET_LOOKUP_MS: Final = 150.0
TARGET_AGGREGATE_MS: Final = 2000.0
GENERATOR_VERSION: Final = 1  # bump when the generated data changes (invalidates caches)
END_DAY: Final = date(2026, 11, 24)
DAY_MS: Final = 86_400_000
MARKER: Final = "bench-index.json"
DEFAULT_DATA_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "execvault-bench/index_lookup"
)

TRIGGERS: Final = (
    ("webhook", 0.40),
    ("schedule", 0.35),
    ("manual", 0.08),
    ("subworkflow", 0.07),
    ("event", 0.07),
    ("form", 0.03),
)
NODE_NAMES: Final = (
    "HTTP Request",
    "Postgres",
    "Slack",
    "Code",
    "Google Sheets",
    "OpenAI",
    "Gmail",
    "Airtable",
    "Set",
    "IF",
    "Merge",
    "Notion",
    "Webhook Response",
    "Split In Batches",
    "Telegram",
)
ID_ALPHABET: Final = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------------------
# output


emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)


class Pressure(CpuPressure):
    """capture.py's PSI reader, reporting under this benchmark's name."""

    def percent(self) -> float | None:
        end = self._read()
        if self._start is None or end is None:
            return None
        elapsed_us = (time.monotonic() - self._started) * 1e6
        return 100.0 * (end - self._start) / max(elapsed_us, 1.0)


# --------------------------------------------------------------------------------------------------
# the generated index: model


@dataclass
class Workflow:
    index: int
    workflow_id: str
    name: str
    weight: float
    first_day: int  # day index (0-based) of its first possible run
    last_day: int  # inclusive
    trigger: str
    users: tuple[str, ...]
    node_names: tuple[str, ...]
    error_p: float
    changes: list[int]  # ms since the index start at which the structure changes
    epoch_hash: list[str]  # structure hash of epoch 0 .. len(changes)
    epoch_nodes: list[int]
    epoch_raw_bytes: list[int]
    # state while generating
    epoch: int = -1
    seq: int = 0
    version: str = ""
    head_hash: str | None = None
    seq_by_hash: dict[str, int] = field(default_factory=dict)  # first seq of each structure
    version_of: dict[int, str] = field(default_factory=dict)  # seq -> version
    last_execution: str | None = None
    count: int = 0
    errors: int = 0


@dataclass
class HashStats:
    workflow: str
    count: int
    first_ms: int
    last_ms: int


def _random_id(rng: random.Random, length: int = 16) -> str:
    return "".join(rng.choices(ID_ALPHABET, k=length))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def build_workflows(n: int, days: int, seed: int) -> list[Workflow]:
    """The workflow population (deterministic for a seed)."""
    rng = random.Random(seed)
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    span_ms = days * DAY_MS
    triggers = [t for t, _ in TRIGGERS]
    trigger_weights = [w for _, w in TRIGGERS]
    people = [f"user-{i:03d}" for i in range(40)]
    out: list[Workflow] = []
    for i in range(n):
        weight = ranks[i] ** -1.1
        roll = rng.random()
        first, last = 0, days - 1
        if roll < 0.20:  # created during the year
            first = rng.randrange(0, max(1, days - 14))
        elif roll < 0.35:  # retired during the year
            last = rng.randrange(min(14, days - 1), days)
        trigger = rng.choices(triggers, trigger_weights)[0]
        users = tuple(rng.sample(people, 3)) if trigger == "manual" else ("system",)
        names = tuple(rng.sample(NODE_NAMES, rng.randint(2, 6)))
        nodes = rng.randint(3, 12) + int(rng.expovariate(1 / 8))
        mean_gap = rng.uniform(7, 60) * DAY_MS
        changes: list[int] = []
        t = first * DAY_MS
        while True:
            t += int(rng.expovariate(1 / mean_gap)) + 1
            if t >= min(span_ms, (last + 1) * DAY_MS):
                break
            changes.append(t)
        hashes = [_sha(f"bench-structure:{seed}:{i}:0")]
        epoch_nodes = [nodes]
        for e in range(1, len(changes) + 1):
            if e >= 2 and rng.random() < 0.10:  # a revert to an earlier structure
                earlier = rng.randrange(e - 1)
                hashes.append(hashes[earlier])
                epoch_nodes.append(epoch_nodes[earlier])
            else:
                hashes.append(_sha(f"bench-structure:{seed}:{i}:{e}"))
                epoch_nodes.append(max(2, epoch_nodes[-1] + rng.choice((-1, 0, 1, 1, 2))))
        raw_per_node = rng.randint(500, 2500)
        out.append(
            Workflow(
                index=i,
                workflow_id=_random_id(rng),
                name=f"{rng.choice(NODE_NAMES)} sync {i}",
                weight=weight,
                first_day=first,
                last_day=last,
                trigger=trigger,
                users=users,
                node_names=names,
                error_p=rng.lognormvariate(0.0, 1.0),
                changes=changes,
                epoch_hash=hashes,
                epoch_nodes=epoch_nodes,
                epoch_raw_bytes=[k * raw_per_node + 1200 for k in epoch_nodes],
            )
        )
    # scale error rates so that the activity-weighted mean is 3 % (capped at 60 % each)
    total = sum(w.weight for w in out)
    mean = sum(w.weight * w.error_p for w in out) / total
    for w in out:
        w.error_p = min(0.6, w.error_p * 0.03 / mean)
    return out


def daily_counts(rows: int, days: int, seed: int) -> list[int]:
    """Executions per day: weekly rhythm, slow growth, noise; sums to exactly ``rows``."""
    rng = random.Random(seed + 1)
    start = END_DAY - timedelta(days=days - 1)
    weights = []
    for d in range(days):
        weekday = (start + timedelta(days=d)).weekday()
        rhythm = 0.7 if weekday >= 5 else 1.12
        growth = 0.85 + 0.3 * d / max(1, days - 1)
        weights.append(rhythm * growth * rng.uniform(0.95, 1.05))
    total = sum(weights)
    exact = [rows * w / total for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(days), key=lambda d: exact[d] - counts[d], reverse=True)
    for d in order[: rows - sum(counts)]:
        counts[d] += 1
    return counts


# --------------------------------------------------------------------------------------------------
# the generated index: writing


def to_table(table: str, rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """Rows (tuples in schema order; timestamps as epoch ms) as an Arrow table of ``table``."""
    schema = SCHEMAS[table]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema.names]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def part_bytes(table: str, data: pa.Table, writer_id: str) -> bytes:
    """``encode_part``'s output for these rows, built from Arrow columns instead of dicts."""
    schema = SCHEMAS[table]
    ordered = data.sort_by([(k, "ascending", "at_end") for k in _SORT_KEYS[table]])
    metadata = {
        b"execvault.table": table.encode(),
        b"execvault.index_format": str(INDEX_FORMAT_VERSION).encode(),
        b"execvault.writer": writer_id.encode(),
    }
    ordered = pa.Table.from_arrays(
        ordered.combine_chunks().columns, schema=schema.with_metadata(metadata)
    )
    ndv = max(ordered.num_rows, 1)
    sink = pa.BufferOutputStream()
    pq.write_table(
        ordered,
        sink,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        write_statistics=True,
        bloom_filter_options={c: {"ndv": ndv, "fpp": _BLOOM_FPP} for c in BLOOM_COLUMNS[table]},
    )
    data_bytes: bytes = sink.getvalue().to_pybytes()
    return data_bytes


def check_against_encode_part(table: str, data: pa.Table, writer_id: str, ours: bytes) -> None:
    """The generator writes what the product writes: byte-identical to ``encode_part``."""
    theirs = encode_part(table, data.to_pylist(), writer_id=writer_id)
    if theirs != ours:
        raise SystemExit(
            f"{table}: generated part differs from archiver.index.encode_part "
            f"({len(ours)} vs {len(theirs)} bytes); update part_bytes() to match it"
        )


@dataclass
class Generated:
    rows: int
    final_states: int
    versions: int
    errors: int
    files: int
    bytes: int
    seconds: float
    picks: dict[str, Any]


def _day_ms(day: date) -> int:
    """Epoch milliseconds of a day's 00:00 UTC."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


class Generator:
    """Writes the index day by day (see the module doc for the distributions)."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.days = args.days
        self.workflows = build_workflows(args.workflows, args.days, args.seed)
        self.counts = daily_counts(args.rows, args.days, args.seed)
        self.start = END_DAY - timedelta(days=args.days - 1)
        self.start_ms = _day_ms(self.start)
        self.rng = random.Random(args.seed + 2)
        self.store = LocalStore(root)
        self.writer_id = "rb" + _sha(json.dumps(params_of(args), sort_keys=True))[:12]
        self.seq = 0
        self.files = 0
        self.bytes = 0
        self.executions = 0
        self.final_states = 0
        self.versions = 0
        self.errors = 0
        self.finals_by_day: dict[int, list[tuple[Any, ...]]] = {}
        self.hashes: dict[str, HashStats] = {}
        self.checked: set[str] = set()

    def put(self, table: str, d: int, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        data = to_table(table, rows)
        body = part_bytes(table, data, self.writer_id)
        if table not in self.checked:
            check_against_encode_part(table, data, self.writer_id, body)
            self.checked.add(table)
            log(f"generate: {table} part of {len(rows)} rows is byte-identical to encode_part's")
        self.seq += 1
        self.store.put(
            part_key(table, self.start + timedelta(days=d), self.writer_id, self.seq), body
        )
        self.files += 1
        self.bytes += len(body)

    def _times(self, k: int) -> list[int]:
        """Offsets (ms) into a day: 55 % any time, 45 % in working hours (07-19 UTC)."""
        rng = self.rng
        return [
            rng.randrange(DAY_MS)
            if rng.random() < 0.55
            else rng.randrange(7 * 3_600_000, 19 * 3_600_000)
            for _ in range(k)
        ]

    def _version(
        self, w: Workflow, structure: str, created: int, execution_id: str, user: str
    ) -> tuple[Any, ...]:
        """The versions row of the run that first ran a new structure of ``w``."""
        rng = self.rng
        restores = w.seq_by_hash.get(structure)
        parent = (w.seq, w.version, w.head_hash) if w.seq else (None, None, None)
        w.seq += 1
        if w.seq == 1:
            level, w.version, summary = "initial", "1.0.0", "initial version"
        else:
            level = rng.choices(("patch", "minor", "major"), (0.6, 0.35, 0.05))[0]
            w.version = next_version(w.version, level)
            summary = f"{rng.randint(1, 4)} node(s) changed"
        restores_version = None
        if restores is not None:
            restores_version = w.version_of[restores]
            summary = f"restores {restores_version}: {summary}"
        w.seq_by_hash.setdefault(structure, w.seq)
        w.version_of[w.seq] = w.version
        w.head_hash = structure
        return (
            w.workflow_id,
            w.seq,
            w.version,
            structure,
            *parent,
            level,
            summary,
            restores,
            restores_version,
            created,
            execution_id,
            user,
        )

    def _final(self, w: Workflow, execution_id: str, shard: str, created: int, nodes: int) -> None:
        """Queue the final state of one run under the day it finished (none for 0.5 % of runs)."""
        rng = self.rng
        if rng.random() < 0.005:  # no final state (worker lost, still running ...)
            return
        roll = rng.random()
        if roll < w.error_p:
            status = "error"
        elif roll < w.error_p + 0.004:
            status = "canceled"
        elif roll < w.error_p + 0.005:
            status = "crashed"
        else:
            status = "success"
        failed: list[str] = []
        if status in ("error", "crashed"):
            failed = rng.sample(w.node_names, 2 if rng.random() < 0.1 else 1)
        if status == "error":
            w.errors += 1
            self.errors += 1
        began = created + rng.randint(1, 40)
        duration = min(int(rng.lognormvariate(math.log(1500), 1.3)), 6 * 3_600_000)
        finished = began + duration
        executed = nodes if status == "success" else rng.randint(1, nodes)
        error_count = len(failed) + (1 if failed and rng.random() < 0.2 else 0)
        self.finals_by_day.setdefault((finished - self.start_ms) // DAY_MS, []).append(
            (
                execution_id,
                w.workflow_id,
                status,
                began,
                finished,
                duration,
                executed,
                error_count,
                failed,
                failed[0] if failed else None,
                f"executions/{shard}/{execution_id}/result.json.zst",
                rng.randint(500, 30_000),
                1,
                finished + rng.randint(5, 400),
            )
        )

    def day(self, d: int) -> None:
        rng = self.rng
        day_start = self.start_ms + d * DAY_MS
        active = [w for w in self.workflows if w.first_day <= d <= w.last_day]
        cum: list[float] = []
        acc = 0.0
        for w in active:
            acc += w.weight
            cum.append(acc)
        picked = rng.choices(active, cum_weights=cum, k=self.counts[d])
        times = self._times(len(picked))
        snapshots: list[tuple[Any, ...]] = []
        versions: list[tuple[Any, ...]] = []
        for i in sorted(range(len(picked)), key=times.__getitem__):
            w = picked[i]
            created = day_start + times[i]
            self.executions += 1
            execution_id = str(self.executions)
            epoch = bisect.bisect_right(w.changes, created - self.start_ms)
            user = w.users[0] if len(w.users) == 1 else rng.choice(w.users)
            structure = w.epoch_hash[epoch]
            if epoch != w.epoch:
                w.epoch = epoch
                versions.append(self._version(w, structure, created, execution_id, user))
            stats = self.hashes.get(structure)
            if stats is None:
                self.hashes[structure] = HashStats(w.workflow_id, 1, created, created)
            else:
                stats.count += 1
                stats.last_ms = created
            shard = _sha(execution_id)[:2]
            replay_of = w.last_execution if w.last_execution and rng.random() < 0.002 else None
            nodes = w.epoch_nodes[epoch]
            snapshots.append(
                (
                    execution_id,
                    w.workflow_id,
                    "es_" + _sha(f"execvault:{execution_id}")[:26],
                    structure,
                    w.version,
                    w.seq,
                    user,
                    "manual" if replay_of else w.trigger,
                    created,
                    nodes,
                    w.name,
                    f"executions/{shard}/{execution_id}/snapshot.json.zst",
                    f"blobs/sha256/{structure[:2]}/{structure}.json.zst",
                    rng.randint(650, 1400),
                    w.epoch_raw_bytes[epoch],
                    1,
                    replay_of,
                )
            )
            w.last_execution = execution_id
            w.count += 1
            self._final(w, execution_id, shard, created, nodes)
        self.put("snapshots", d, snapshots)
        finals = self.finals_by_day.pop(d, [])
        self.final_states += len(finals)
        self.put("final_states", d, finals)
        self.versions += len(versions)
        self.put("versions", d, versions)

    def run(self) -> Generated:
        started = last_log = time.monotonic()
        for d in range(self.days):
            self.day(d)
            now = time.monotonic()
            if now - last_log >= 5.0 or d == self.days - 1:
                last_log = now
                elapsed = now - started
                eta = elapsed / (d + 1) * (self.days - d - 1)
                log(
                    f"generate: day {d + 1}/{self.days}, {self.executions:,} executions, "
                    f"{self.bytes / 2**20:.0f} MiB, {elapsed:.0f} s (ETA {eta:.0f} s)"
                )
        for d in sorted(self.finals_by_day):  # runs that finished after the last day
            finals = self.finals_by_day.pop(d)
            self.final_states += len(finals)
            self.put("final_states", d, finals)
        return Generated(
            rows=self.executions,
            final_states=self.final_states,
            versions=self.versions,
            errors=self.errors,
            files=self.files,
            bytes=self.bytes,
            seconds=time.monotonic() - started,
            picks=self.choose_targets(),
        )

    def choose_targets(self) -> dict[str, Any]:
        """The workflows and hashes the lookups ask for, with what the answers must hold."""
        end_ms = self.start_ms + self.days * DAY_MS
        ran = sorted((w for w in self.workflows if w.count), key=lambda w: w.count)
        busy = ran[-1]
        medium = ran[len(ran) // 2]
        all_year = [
            w for w in ran if w.count >= 60 and w.first_day == 0 and w.last_day == self.days - 1
        ]
        quiet = all_year[0] if all_year else ran[0]

        def wf(w: Workflow) -> dict[str, Any]:
            return {"id": w.workflow_id, "runs": w.count, "errors": w.errors}

        recent = busy.head_hash or busy.epoch_hash[0]
        old_from, old_to = end_ms - 300 * DAY_MS, end_ms - 240 * DAY_MS
        old = [
            (h, s)
            for h, s in self.hashes.items()
            if old_from <= s.last_ms <= old_to and s.count >= 60
        ]
        if not old:  # short or small index: any hash not run in the last third
            old = [
                (h, s)
                for h, s in self.hashes.items()
                if s.last_ms < end_ms - self.days * DAY_MS // 3
            ]
        if not old:
            old = list(self.hashes.items())
        old.sort(key=lambda hs: (hs[1].count, hs[0]))
        old_hash, old_stats = old[len(old) // 2]
        return {
            "busy": wf(busy),
            "medium": wf(medium),
            "quiet": wf(quiet),
            "hash_recent": {"hash": recent, "runs": self.hashes[recent].count},
            "hash_old": {
                "hash": old_hash,
                "runs": old_stats.count,
                "last_run": datetime.fromtimestamp(old_stats.last_ms / 1000, UTC).isoformat(),
            },
        }


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rows": args.rows,
        "days": args.days,
        "workflows": args.workflows,
        "seed": args.seed,
        "end_day": END_DAY.isoformat(),
        "generator": GENERATOR_VERSION,
    }


def index_root(args: argparse.Namespace) -> Path:
    p = params_of(args)
    name = f"rows{p['rows']}-days{p['days']}-wf{p['workflows']}-seed{p['seed']}-g{p['generator']}"
    return Path(args.data_dir).expanduser() / name


def load_or_generate(args: argparse.Namespace) -> tuple[Path, Generated, bool]:
    """The index for these parameters: reused when complete, else (re)generated."""
    root = index_root(args)
    marker = root / MARKER
    if marker.exists() and not args.regenerate:
        saved = json.loads(marker.read_text())
        if saved.get("params") == params_of(args):
            log(f"reusing the index in {root} (generated {saved['generated_at']})")
            return root, Generated(**saved["generated"]), True
    if root.exists():
        log(f"removing incomplete or outdated {root}")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    log(f"generating {args.rows:,} executions over {args.days} days into {root}")
    generated = Generator(root, args).run()
    marker.write_text(
        json.dumps(
            {
                "params": params_of(args),
                "generated_at": datetime.now(UTC).isoformat(),
                "generated": generated.__dict__,
            },
            indent=2,
        )
    )
    return root, generated, False


# --------------------------------------------------------------------------------------------------
# measuring


def timed_runs(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    """One warm-up call, then ``runs`` timed calls (ms); the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        result = fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times, result


def emit_runs(
    metric: str, times: Sequence[float], *, target: float | None, rows: int, **extra: Any
) -> None:
    emit(f"{metric}_p50", statistics.median(times), len(times), target=target, rows=rows, **extra)
    emit(f"{metric}_p99", pct(times, 0.99), len(times), target=target, rows=rows, **extra)
    log(f"{metric}: p50 {statistics.median(times):.1f} ms, p99 {pct(times, 0.99):.1f} ms")


def check_page(
    name: str,
    page: HistoryPage,
    expected: int,
    *,
    workflow: str | None = None,
    snapshot_hash: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> None:
    """The page answers the question: right size, right rows, newest first."""
    items = page.items
    problems = []
    if len(items) != expected:
        problems.append(f"{len(items)} items, expected {expected}")
    keys = [(i.created_at, i.execution_id) for i in items]
    if keys != sorted(keys, reverse=True):
        problems.append("not newest first")
    for item in items:
        if workflow is not None and item.workflow_id != workflow:
            problems.append(f"{item.execution_id} is of workflow {item.workflow_id}")
        if snapshot_hash is not None and item.snapshot_hash != snapshot_hash:
            problems.append(f"{item.execution_id} has another hash")
        if status is not None and item.status != status:
            problems.append(f"{item.execution_id} has status {item.status}")
        if since is not None and item.created_at < since:
            problems.append(f"{item.execution_id} is before the window")
        if until is not None and item.created_at >= until:
            problems.append(f"{item.execution_id} is after the window")
    if problems:
        raise SystemExit(f"{name}: wrong answer: {'; '.join(problems[:5])}")


def measure(root: Path, generated: Generated, args: argparse.Namespace) -> None:
    rows = generated.rows
    picks = generated.picks
    store = LocalStore(root, read_only=True)

    opens = []
    catalog: Catalog | None = None
    for i in range(args.opens):
        if catalog is not None:
            catalog.close()
        t0 = time.perf_counter_ns()
        catalog = Catalog(store)
        opens.append((time.perf_counter_ns() - t0) / 1e6)
        log(f"catalog open {i + 1}/{args.opens}: {opens[-1]:.0f} ms")
    assert catalog is not None
    emit("catalog_open_first", opens[0], 1, rows=rows)
    emit("catalog_open_p50", statistics.median(opens), len(opens), rows=rows)
    entries = catalog.scalar("SELECT count(*) FROM _key_days")
    emit("key_map_entries", float(entries), 1, unit="entries", rows=rows)

    pressure = Pressure()
    busy, medium, quiet = picks["busy"], picks["medium"], picks["quiet"]
    for w in (busy, quiet):
        days = catalog.key_days("workflow", w["id"])
        if sum(n for _, n in days) != w["runs"]:
            raise SystemExit(f"key map counts {w['id']} wrong: {sum(n for _, n in days)}")
    end = datetime(END_DAY.year, END_DAY.month, END_DAY.day, tzinfo=UTC) + timedelta(days=1)
    since = end - timedelta(days=120)
    until = since + timedelta(days=30)
    first_page = workflow_history(catalog, busy["id"], limit=50)
    cursor = first_page.next_cursor

    def expect(n: int) -> int:
        return min(50, n)

    lookups: list[tuple[str, Callable[[], HistoryPage], dict[str, Any], int | None]] = [
        (
            "history_busy",
            lambda: workflow_history(catalog, busy["id"], limit=50),
            {"workflow": busy["id"]},
            expect(busy["runs"]),
        ),
        (
            "history_busy_page2",
            lambda: workflow_history(catalog, busy["id"], limit=50, cursor=cursor),
            {"workflow": busy["id"]},
            expect(busy["runs"] - 50),
        ),
        (
            "history_medium",
            lambda: workflow_history(catalog, medium["id"], limit=50),
            {"workflow": medium["id"]},
            expect(medium["runs"]),
        ),
        (
            "history_quiet",
            lambda: workflow_history(catalog, quiet["id"], limit=50),
            {"workflow": quiet["id"]},
            expect(quiet["runs"]),
        ),
        (
            "history_window_busy",
            lambda: workflow_history(catalog, busy["id"], since=since, until=until, limit=50),
            {"workflow": busy["id"], "since": since, "until": until},
            None,
        ),
        (
            "history_window_quiet",
            lambda: workflow_history(catalog, quiet["id"], since=since, until=until, limit=50),
            {"workflow": quiet["id"], "since": since, "until": until},
            None,
        ),
        (
            "history_error_busy",
            lambda: workflow_history(catalog, busy["id"], status="error", limit=50),
            {"workflow": busy["id"], "status": "error"},
            expect(busy["errors"]),
        ),
        (
            "history_error_quiet",
            lambda: workflow_history(catalog, quiet["id"], status="error", limit=50),
            {"workflow": quiet["id"], "status": "error"},
            expect(quiet["errors"]),
        ),
        (
            "by_hash_recent",
            lambda: executions_by_hash(catalog, picks["hash_recent"]["hash"], limit=50),
            {"snapshot_hash": picks["hash_recent"]["hash"]},
            expect(picks["hash_recent"]["runs"]),
        ),
        (
            "by_hash_old",
            lambda: executions_by_hash(catalog, picks["hash_old"]["hash"], limit=50),
            {"snapshot_hash": picks["hash_old"]["hash"]},
            expect(picks["hash_old"]["runs"]),
        ),
    ]
    for name, fn, conditions, expected in lookups:
        times, page = timed_runs(fn, args.runs)
        count = len(page.items) if expected is None else expected
        if expected is None and not 0 < count <= 50:
            log(f"{name}: {count} items in the window")
        check_page(name, page, count, **conditions)
        emit_runs(name, times, target=TARGET_LOOKUP_MS, rows=rows, items=len(page.items))

    last = END_DAY
    first = last - timedelta(days=29)
    aggregates = [
        (
            "aggregate_30d_failure_rate",
            "SELECT workflow_id, count(*) AS runs, "
            "count(*) FILTER (WHERE status = 'error') AS errors, "
            "count(*) FILTER (WHERE status = 'error') / count(*) AS failure_rate "
            "FROM final_states WHERE dt BETWEEN $first AND $last "
            "GROUP BY workflow_id ORDER BY errors DESC, workflow_id LIMIT 20",
            TARGET_AGGREGATE_MS,
        ),
        (
            "aggregate_30d_failure_by_trigger",
            "SELECT trigger_type, count(*) AS runs, "
            "count(*) FILTER (WHERE status = 'error') AS errors, "
            "count(*) FILTER (WHERE status IS NULL) AS unfinished "
            "FROM executions WHERE dt BETWEEN $first AND $last "
            "GROUP BY trigger_type ORDER BY runs DESC",
            TARGET_AGGREGATE_MS,
        ),
        (
            "aggregate_365d_day_status",
            "SELECT dt, status, count(*) AS n FROM final_states GROUP BY dt, status "
            "ORDER BY dt, status",
            None,
        ),
        (  # the same without the view's deduplication: what the view costs
            "aggregate_365d_day_status_raw",
            "SELECT dt, status, count(*) AS n FROM read_parquet("
            + "'"
            + catalog.manifests.glob("final_states").replace("'", "''")
            + "', hive_partitioning = true, hive_types = {'dt': DATE}) "
            "GROUP BY dt, status ORDER BY dt, status",
            None,
        ),
    ]
    for name, sql, target in aggregates:
        params = {"first": first, "last": last} if "$first" in sql else None
        times, result = timed_runs(functools.partial(catalog.rows, sql, params), args.agg_runs)
        if not result:
            raise SystemExit(f"{name}: no rows")
        emit_runs(name, times, target=target, rows=rows, result_rows=len(result))
    share = pressure.percent()
    if share is not None:
        emit("host_cpu_pressure", share, 1, unit="%")
    catalog.close()


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n", 1)[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="200 k executions, fewer runs")
    parser.add_argument(
        "--rows", type=int, help="executions to generate (10,000,000; quick 200,000)"
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--workflows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--runs", type=int, help="timed runs per lookup (30; quick 10)")
    parser.add_argument("--agg-runs", type=int, help="timed runs per aggregate (10; quick 3)")
    parser.add_argument("--opens", type=int, help="catalog opens timed (3; quick 2)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="index cache")
    parser.add_argument("--regenerate", action="store_true", help="generate even if cached")
    parser.add_argument("--generate-only", action="store_true", help="stop after generating")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rows = args.rows or (200_000 if quick else 10_000_000)
    args.runs = args.runs or (10 if quick else 30)
    args.agg_runs = args.agg_runs or (3 if quick else 10)
    args.opens = args.opens or (2 if quick else 3)
    if args.rows < 1 or args.days < 1 or args.workflows < 1:
        parser.error("--rows, --days and --workflows must be positive")

    root, generated, reused = load_or_generate(args)
    extra: dict[str, Any] = {"reused": reused} if reused else {}
    emit("generated_rows", float(generated.rows), generated.rows, unit="rows", days=args.days)
    emit(
        "generated_final_states", float(generated.final_states), generated.final_states, unit="rows"
    )
    emit("generated_versions", float(generated.versions), generated.versions, unit="rows")
    emit(
        "error_rate",
        100.0 * generated.errors / max(generated.final_states, 1),
        generated.final_states,
        unit="%",
    )
    emit("generation_time", generated.seconds, generated.rows, unit="s", **extra)
    emit("index_bytes", generated.bytes / 2**20, generated.files, unit="MiB", files=generated.files)
    emit(
        "index_bytes_per_execution",
        generated.bytes / max(generated.rows, 1),
        generated.rows,
        unit="bytes",
    )
    log(f"targets: {json.dumps(generated.picks)}")
    if args.generate_only:
        return 0
    measure(root, generated, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
