"""The Parquet index: per-day manifests of snapshots, final states and versions (write side).

Objects are the source of truth (invariant 1); the manifests under ``index/`` are an index that can
be thrown away and rebuilt from the objects at any time. Layout (see ``docs/index.md``)::

    index/<table>/dt=YYYY-MM-DD/part-<writer>-<seq:06d>.parquet      table: snapshots | final_states
                                                                             | versions | node_runs

* :class:`ManifestWriter` buffers rows per (table, day) and writes a part when a buffer holds
  ``flush_rows`` rows, when its oldest row is ``flush_seconds`` old, and on ``close()``. A row is
  appended only after its object was written (invariant 2): :meth:`ManifestWriter.attach` registers
  observers that the :class:`~archiver.archive.Archive` calls after the record write returned.
  Parts are created with the store's create-only ``put``; writer ids are random per instance, so
  writers in other threads, processes or machines never collide. A part that cannot be written is
  kept (bytes and key) and retried with the same key, so a write that succeeded without our knowing
  is not duplicated; nothing is dropped without an error in the log.
* :func:`rebuild_index` regenerates every manifest from the objects alone (one compacted part per
  table and day) and then removes the parts that existed before it started; parts that live writers
  create meanwhile are kept.
* :func:`verify` reports objects without rows, rows without objects, objects whose hash or digest
  does not check out, rows that disagree with their object, and duplicate rows.

Readers (``query/``) deduplicate, so a row present in several files (a part and a compacted or
rebuilt file) is returned once (invariant 8).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.dataset as pds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from archiver.archive import (
    FINAL_STATE_KIND,
    SNAPSHOT_KIND,
    Archive,
    CaptureResult,
    FinalStateResult,
    WrittenObject,
)
from archiver.chain import (
    ChainProblem,
    check_day,
    day_digests,
    index_day_parts,
    load_chain,
    read_part_rows,
)
from archiver.codec import (
    DEFAULT_MAX_OBJECT_BYTES,
    KNOWN_FORMAT_VERSIONS,
    decode_blob,
    decode_record,
    decompress,
    record_digest,
)
from archiver.errors import (
    ArchiveError,
    ImmutableConflict,
    IntegrityError,
    InvalidInput,
    ManifestError,
    NotFound,
)
from archiver.final_state import FinalState, summarize
from archiver.journal import IndexJournal, Orphan, find_orphans
from archiver.layout import (
    blob_key,
    execution_prefix,
    is_progress_key,
    result_key,
    snapshot_key,
    version_key,
)
from archiver.model import ExecutionSnapshot, VersionCommit
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.timeutil import utcnow
from archiver.versioning import VERSION_KIND

__all__ = [
    "BLOOM_COLUMNS",
    "FINAL_STATES_SCHEMA",
    "INDEX_FORMAT_VERSION",
    "INDEX_PREFIX",
    "MAX_ERROR_MESSAGE_CHARS",
    "NODE_RUNS_SCHEMA",
    "ROW_KEYS",
    "SCHEMAS",
    "SNAPSHOTS_SCHEMA",
    "TABLES",
    "VERSIONS_SCHEMA",
    "ColdProblem",
    "ManifestWriter",
    "ObjectProblem",
    "ProgressCallback",
    "RebuildReport",
    "RowProblem",
    "VerifyReport",
    "encode_part",
    "final_state_day",
    "final_state_row",
    "node_run_rows",
    "parse_part_key",
    "parse_subset",
    "part_key",
    "rebuild_index",
    "row_day",
    "snapshot_row",
    "subset_bucket",
    "verify",
    "version_row",
]

_log = logging.getLogger(__name__)

INDEX_PREFIX: Final = "index/"
INDEX_FORMAT_VERSION: Final = 1

_TS = pa.timestamp("ms", tz="UTC")

SNAPSHOTS_SCHEMA: Final = pa.schema(
    [
        pa.field("execution_id", pa.string(), nullable=False),
        pa.field("workflow_id", pa.string(), nullable=False),
        pa.field("snapshot_id", pa.string(), nullable=False),
        pa.field("snapshot_hash", pa.string(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("version_seq", pa.int32(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("trigger_type", pa.string()),
        pa.field("created_at", _TS, nullable=False),
        pa.field("node_count", pa.int32(), nullable=False),
        pa.field("workflow_name", pa.string()),
        pa.field("object_key", pa.string(), nullable=False),
        pa.field("blob_key", pa.string(), nullable=False),
        pa.field("stored_bytes", pa.int64(), nullable=False),
        pa.field("raw_bytes", pa.int64(), nullable=False),
        pa.field("format_version", pa.int16(), nullable=False),
        pa.field("replay_of", pa.string()),
    ]
)

FINAL_STATES_SCHEMA: Final = pa.schema(
    [
        pa.field("execution_id", pa.string(), nullable=False),
        pa.field("workflow_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("started_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("duration_ms", pa.int64()),
        pa.field("node_count", pa.int32(), nullable=False),
        pa.field("error_count", pa.int32(), nullable=False),
        pa.field("failed_nodes", pa.list_(pa.string()), nullable=False),
        pa.field("first_failed_node", pa.string()),
        pa.field("object_key", pa.string(), nullable=False),
        pa.field("stored_bytes", pa.int64(), nullable=False),
        pa.field("format_version", pa.int16(), nullable=False),
        pa.field("recorded_at", _TS, nullable=False),
    ]
)

VERSIONS_SCHEMA: Final = pa.schema(
    [
        pa.field("workflow_id", pa.string(), nullable=False),
        pa.field("seq", pa.int32(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("snapshot_hash", pa.string(), nullable=False),
        pa.field("parent_seq", pa.int32()),
        pa.field("parent_version", pa.string()),
        pa.field("parent_hash", pa.string()),
        pa.field("level", pa.string(), nullable=False),
        pa.field("summary", pa.string(), nullable=False),
        pa.field("restores_seq", pa.int32()),
        pa.field("restores_version", pa.string()),
        pa.field("created_at", _TS, nullable=False),
        pa.field("execution_id", pa.string()),
        pa.field("user_id", pa.string()),
    ]
)

NODE_RUNS_SCHEMA: Final = pa.schema(
    [
        pa.field("execution_id", pa.string(), nullable=False),
        pa.field("workflow_id", pa.string(), nullable=False),
        pa.field("node_name", pa.string(), nullable=False),
        pa.field("node_id", pa.string()),
        pa.field("node_type", pa.string()),
        pa.field("run_index", pa.int32(), nullable=False),
        pa.field("execution_index", pa.int32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("started_at", _TS),
        pa.field("duration_ms", pa.float64()),
        pa.field("input_items", pa.int64(), nullable=False),
        pa.field("output_items", pa.int64(), nullable=False),
        pa.field("error_class", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("error_http_code", pa.string()),
        pa.field("object_key", pa.string(), nullable=False),
    ]
)

SCHEMAS: Final[Mapping[str, pa.Schema]] = {
    "snapshots": SNAPSHOTS_SCHEMA,
    "final_states": FINAL_STATES_SCHEMA,
    "versions": VERSIONS_SCHEMA,
    "node_runs": NODE_RUNS_SCHEMA,
}
TABLES: Final = tuple(SCHEMAS)

#: columns that get a Parquet bloom filter (DuckDB uses them to skip row groups on equality)
BLOOM_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "snapshots": ("execution_id", "workflow_id", "snapshot_hash"),
    "final_states": ("execution_id", "workflow_id"),
    "versions": ("workflow_id", "snapshot_hash", "execution_id"),
    "node_runs": ("execution_id", "workflow_id"),
}

#: the order of rows inside a part (workflow first: min/max statistics then prune row groups)
_SORT_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "snapshots": ("workflow_id", "created_at", "execution_id"),
    "final_states": ("workflow_id", "finished_at", "execution_id"),
    "versions": ("workflow_id", "seq"),
    "node_runs": ("workflow_id", "execution_id", "node_name", "run_index"),
}

#: what identifies a row (used by verify to find duplicates; the readers dedupe on the same keys)
ROW_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "snapshots": ("execution_id",),
    # an execution's final state and its progress records (waiting, …) are rows of their own
    "final_states": ("execution_id", "object_key"),
    "versions": ("workflow_id", "seq"),
    "node_runs": ("execution_id", "node_name", "run_index"),
}

ROW_GROUP_ROWS: Final = 4096
MAX_ROWS_PER_PART: Final = 1_000_000
_BLOOM_FPP: Final = 0.01
#: ``node_runs.error_message`` keeps at most this many characters of a (sanitized) error message
MAX_ERROR_MESSAGE_CHARS: Final = 1000

_WRITER_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,63}")
_PART_KEY_RE: Final = re.compile(
    r"index/(?P<table>[a-z_]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/"
    r"part-(?P<writer>[A-Za-z0-9][A-Za-z0-9_]{0,63})-(?P<seq>\d{6,})\.parquet"
)

Row = dict[str, Any]
#: ``progress(stage, done, total)``; ``total`` is None while it is not known yet
ProgressCallback = Callable[[str, int, int | None], None]


# --------------------------------------------------------------------------------------------
# keys and rows
# --------------------------------------------------------------------------------------------


def part_key(table: str, day: date, writer_id: str, seq: int) -> str:
    """``index/<table>/dt=YYYY-MM-DD/part-<writer>-<seq:06d>.parquet``."""
    if table not in SCHEMAS:
        raise ValueError(f"unknown index table {table!r}")
    if _WRITER_ID_RE.fullmatch(writer_id) is None:
        raise ValueError(f"writer id {writer_id!r} must be 1-64 letters, digits or _")
    return f"{INDEX_PREFIX}{table}/dt={day.isoformat()}/part-{writer_id}-{seq:06d}.parquet"


def parse_part_key(key: str) -> tuple[str, date, str, int] | None:
    """(table, day, writer id, seq) of a part key, or None for anything else."""
    match = _PART_KEY_RE.fullmatch(key)
    if match is None or match["table"] not in SCHEMAS:
        return None
    try:
        day = date.fromisoformat(match["dt"])
    except ValueError:
        return None
    return match["table"], day, match["writer"], int(match["seq"])


def final_state_day(finished_at: datetime | None, snapshot_created_at: datetime) -> date:
    """The ``dt`` of a final state (and its node runs): the UTC day of ``finished_at``, but never
    before its snapshot's day (a final state without ``finished_at``: the snapshot's day).

    A run cannot end before it starts, so an earlier ``finished_at`` is a clock skewed or a value
    made up by the engine (a backfill, a fixed example date): the row still sits on or after its
    snapshot's day, where readers look for it. Both inputs come from immutable records, so a
    rebuild places every row in the same day as the live writer.
    """
    day = _utc_day(snapshot_created_at)
    if finished_at is None:
        return day
    return max(day, _utc_day(finished_at))


def _utc_day(value: datetime) -> date:
    return value.astimezone(UTC).date()


def snapshot_row(
    snapshot: ExecutionSnapshot,
    *,
    object_key: str,
    stored_bytes: int,
    blob_key: str,
    raw_bytes: int,
) -> Row:
    """The ``snapshots`` row of one execution snapshot record."""
    return {
        "execution_id": snapshot.execution_id,
        "workflow_id": snapshot.workflow_id,
        "snapshot_id": snapshot.id,
        "snapshot_hash": snapshot.snapshot_hash,
        "version": snapshot.snapshot_version,
        "version_seq": snapshot.version_seq,
        "user_id": snapshot.user_id,
        "trigger_type": snapshot.trigger_type,
        "created_at": snapshot.created_at,
        "node_count": len(snapshot.workflow_snapshot.nodes),
        "workflow_name": snapshot.workflow_snapshot.name,
        "object_key": object_key,
        "blob_key": blob_key,
        "stored_bytes": stored_bytes,
        "raw_bytes": raw_bytes,
        "format_version": snapshot.format_version,
        "replay_of": snapshot.replay_of,
    }


def final_state_row(
    workflow_id: str,
    final: FinalState,
    *,
    snapshot_created_at: datetime,
    object_key: str,
    stored_bytes: int,
    recorded_at: datetime,
) -> Row:
    """The ``final_states`` row of one final-state record.

    ``snapshot_created_at`` is not a column: it only places a final state without ``finished_at``
    in a day (so that a rebuild puts the row in the same partition the live writer did).
    """
    summary = summarize(final)
    return {
        "execution_id": final.execution_id,
        "workflow_id": workflow_id,
        "status": summary["status"],
        "started_at": summary["startedAt"],
        "finished_at": summary["finishedAt"],
        "duration_ms": summary["durationMs"],
        "node_count": summary["nodeCount"],
        "error_count": summary["errorCount"],
        "failed_nodes": list(summary["failedNodes"]),
        "first_failed_node": summary["firstFailedNode"],
        "object_key": object_key,
        "stored_bytes": stored_bytes,
        "format_version": final.format_version,
        "recorded_at": recorded_at,
        "_day": final_state_day(summary["finishedAt"], snapshot_created_at),
    }


def node_run_rows(
    workflow_id: str,
    final: FinalState,
    nodes: Sequence[Mapping[str, Any]],
    *,
    snapshot_created_at: datetime,
    object_key: str,
) -> list[Row]:
    """The ``node_runs`` rows of one final-state record: one per run of each node.

    ``nodes`` are the snapshot's workflow nodes: the final state names nodes, the snapshot knows
    their type (and id, when the engine did not report it). A node without runs has no row. The
    rows share their final state's day, so an execution's node runs sit in one partition.
    """
    by_name = {n.get("name"): n for n in nodes if isinstance(n, Mapping)}
    day = final_state_day(final.finished_at, snapshot_created_at)
    rows: list[Row] = []
    for state in final.nodes:
        node = by_name.get(state.node) or {}
        node_type = node.get("type")
        node_id = state.node_id if state.node_id is not None else node.get("id")
        for run in state.runs:
            error = run.error
            rows.append(
                {
                    "execution_id": final.execution_id,
                    "workflow_id": workflow_id,
                    "node_name": state.node,
                    "node_id": node_id if isinstance(node_id, str) else None,
                    "node_type": node_type if isinstance(node_type, str) else None,
                    "run_index": run.index,
                    "execution_index": run.execution_index,
                    "status": run.status,
                    "started_at": run.started_at,
                    "duration_ms": run.duration_ms,
                    "input_items": run.input_items,
                    "output_items": run.output_items,
                    "error_class": None if error is None else error.name,
                    "error_message": None
                    if error is None
                    else error.message[:MAX_ERROR_MESSAGE_CHARS],
                    "error_http_code": None if error is None else error.http_code,
                    "object_key": object_key,
                    "_day": day,
                }
            )
    return rows


def version_row(commit: VersionCommit) -> Row:
    """The ``versions`` row of one version commit."""
    return {
        "workflow_id": commit.workflow_id,
        "seq": commit.seq,
        "version": commit.version,
        "snapshot_hash": commit.snapshot_hash,
        "parent_seq": commit.parent_seq,
        "parent_version": commit.parent_version,
        "parent_hash": commit.parent_hash,
        "level": commit.level,
        "summary": commit.summary,
        "restores_seq": commit.restores_seq,
        "restores_version": commit.restores_version,
        "created_at": commit.created_at,
        "execution_id": commit.execution_id,
        "user_id": commit.user_id,
    }


def row_day(table: str, row: Mapping[str, Any]) -> date:
    """The UTC day (``dt`` partition) of a row.

    snapshots, versions: ``created_at``. final_states and node_runs: ``final_state_day`` (the day
    of ``finished_at``, never before the day of the execution's snapshot; both come from immutable
    records, so live and rebuilt rows agree).
    """
    if table in ("final_states", "node_runs"):
        day: date = row["_day"]
        return day
    return _utc_day(row["created_at"])


def _sort_value(value: Any) -> tuple[int, Any]:
    return (1, None) if value is None else (0, value)


def encode_part(table: str, rows: Sequence[Mapping[str, Any]], *, writer_id: str = "") -> bytes:
    """Rows of one table and day as Parquet bytes: zstd, statistics, bloom filters, sorted."""
    schema = SCHEMAS[table]
    keys = _SORT_KEYS[table]
    ordered = sorted(rows, key=lambda r: tuple(_sort_value(r.get(k)) for k in keys))
    names = schema.names
    arrays = [pa.array([r.get(n) for r in ordered], type=schema.field(n).type) for n in names]
    metadata = {
        b"execvault.table": table.encode(),
        b"execvault.index_format": str(INDEX_FORMAT_VERSION).encode(),
        b"execvault.writer": writer_id.encode(),
    }
    table_data = pa.Table.from_arrays(arrays, schema=schema.with_metadata(metadata))
    ndv = max(len(ordered), 1)
    sink = pa.BufferOutputStream()
    pq.write_table(
        table_data,
        sink,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        write_statistics=True,
        bloom_filter_options={c: {"ndv": ndv, "fpp": _BLOOM_FPP} for c in BLOOM_COLUMNS[table]},
    )
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _clean(row: Mapping[str, Any]) -> Row:
    return {k: v for k, v in row.items() if not k.startswith("_")}


# --------------------------------------------------------------------------------------------
# the live writer
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Buffer:
    rows: list[Row]
    since: float  # time.monotonic() of the oldest row
    segments: Counter[int] = field(default_factory=Counter)  # journal segments of its rows


@dataclass(slots=True)
class _Part:
    table: str
    day: date
    seq: int
    data: bytes
    rows: int
    attempts: int = 0
    not_before: float = 0.0
    segments: Counter[int] = field(default_factory=Counter)  # journal segments of its rows

    def key(self, writer_id: str) -> str:
        return part_key(self.table, self.day, writer_id, self.seq)


class _PendingVersion:
    """A version row that could not be looked up yet (the store failed): retried later."""

    __slots__ = ("archive", "execution_id", "segment", "seq", "workflow_id")

    def __init__(
        self, archive: Archive, workflow_id: str, seq: int, execution_id: str, segment: int | None
    ) -> None:
        self.archive = archive
        self.workflow_id = workflow_id
        self.seq = seq
        self.execution_id = execution_id
        self.segment = segment


#: object keys a writer remembers having indexed (so an identical re-send adds no second row)
_REMEMBERED_KEYS: Final = 65_536


class ManifestWriter:
    """Buffer index rows per (table, day) and write them as Parquet parts (see module doc).

    Thread-safe. Use as a context manager, or call :meth:`close` at shutdown: rows still buffered
    are written then. ``flush_rows`` / ``flush_seconds`` bound a buffer's size and its oldest
    row's age; a daemon thread writes buffers that are due.

    ``journal_dir`` turns on the journal (``archiver.journal``): the key of every object indexed
    through :meth:`attach` is appended to a local file before the capture returns, and
    :meth:`recover` (also run by the thread, at start and every ``recover_seconds``) indexes the
    objects in the journals of writers that died before writing their rows.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        writer_id: str | None = None,
        flush_rows: int = 1000,
        flush_seconds: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
        retry_max_delay: float = 30.0,
        journal_dir: str | Path | None = None,
        recover_seconds: float = 30.0,
    ) -> None:
        if flush_rows < 1:
            raise ValueError("flush_rows must be at least 1")
        if not flush_seconds > 0:
            raise ValueError("flush_seconds must be positive")
        self.store = store
        self.writer_id = writer_id if writer_id is not None else secrets.token_hex(6)
        if _WRITER_ID_RE.fullmatch(self.writer_id) is None:
            raise ValueError(f"writer id {self.writer_id!r} must be 1-64 letters, digits or _")
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._retry_max_delay = retry_max_delay
        self._buffers: dict[tuple[str, date], _Buffer] = {}
        self._failed: deque[_Part] = deque()  # built parts whose put failed, retried as they are
        self._seq = itertools.count(1)
        self._lock = threading.Lock()  # buffers, failed queue, counters, journal
        self._flush_lock = threading.Lock()  # one flush at a time (thread, flush(), close())
        self._recover_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._archives: list[tuple[Archive, Callable[..., None], Callable[..., None]]] = []
        # (workflow, seq) -> the execution that created that version, learned once per writer
        self._version_creators: dict[tuple[str, int], str | None] = {}
        self._pending_versions: list[_PendingVersion] = []
        self._indexed: OrderedDict[str, None] = OrderedDict()  # object keys indexed (recent)
        self._journal = None if journal_dir is None else IndexJournal(journal_dir, self.writer_id)
        self.journal_dir = None if journal_dir is None else Path(journal_dir)
        self._recover_seconds = recover_seconds
        self._recover_at = time.monotonic() if self._journal is not None else float("inf")
        self.parts_written = 0
        self.rows_written = 0
        self.write_failures = 0
        self.rows_recovered = 0  # rows added by recover() for objects of dead writers
        self._thread = threading.Thread(
            target=self._run, name=f"manifest-writer-{self.writer_id}", daemon=True
        )
        self._thread.start()

    # -- appending ----------------------------------------------------------------------------

    def add_row(self, table: str, row: Mapping[str, Any]) -> None:
        """Buffer one row of ``table``; the object it describes must already be stored."""
        self._add_rows([(table, row)])

    def _add_rows(
        self,
        rows: Sequence[tuple[str, Mapping[str, Any]]],
        journal: Sequence[str] = (),
        segment: int | None = None,
    ) -> int | None:
        """Buffer rows, their objects' keys journaled first (same lock: a segment never loses a
        key whose rows are still buffered). ``segment``: rows of keys journaled earlier. Returns
        the segment the rows belong to (None without a journal)."""
        for table, _ in rows:
            if table not in SCHEMAS:
                raise ValueError(f"unknown index table {table!r}")
        staged = [(table, row_day(table, row), _clean(row)) for table, row in rows]
        wake = False
        with self._lock:
            if self._closed:
                _log.error(
                    "manifest writer %s is closed; %d row(s) not indexed (rebuild-index adds them)",
                    self.writer_id,
                    len(staged),
                )
                return None
            if self._journal is not None and journal and segment is None:
                try:
                    segment = self._journal.append(journal)
                except OSError as err:
                    _log.error(
                        "manifest writer %s: cannot journal %s: %s (a crash before the next "
                        "flush would lose its row until rebuild-index)",
                        self.writer_id,
                        journal,
                        err,
                    )
            for key in journal:
                self._remember(key)
            for table, day, clean in staged:
                buf = self._buffers.get((table, day))
                if buf is None:
                    buf = self._buffers[(table, day)] = _Buffer([], time.monotonic())
                    wake = True
                buf.rows.append(clean)
                if segment is not None and self._journal is not None:
                    buf.segments[segment] += 1
                    self._journal.hold(segment)
                if len(buf.rows) >= self.flush_rows:
                    wake = True
        if wake:
            self._wake.set()
        return segment

    def _remember(self, key: str) -> None:
        """(under the lock) ``key`` is indexed by this writer."""
        self._indexed[key] = None
        self._indexed.move_to_end(key)
        while len(self._indexed) > _REMEMBERED_KEYS:
            self._indexed.popitem(last=False)

    def _known(self, key: str) -> bool:
        with self._lock:
            return key in self._indexed

    def _snapshot_rows(self, result: CaptureResult) -> list[tuple[str, Row]]:
        assert result.record is not None
        snapshot = result.snapshot
        blob = result.blob
        return [
            (
                "snapshots",
                snapshot_row(
                    snapshot,
                    object_key=result.record.key,
                    stored_bytes=result.record.stored_bytes,
                    blob_key=blob.key if blob is not None else blob_key(snapshot.snapshot_hash),
                    raw_bytes=blob.raw_bytes if blob is not None else 0,
                ),
            )
        ]

    def _final_state_rows(
        self, snapshot: ExecutionSnapshot, result: FinalStateResult
    ) -> list[tuple[str, Row]]:
        assert result.record is not None
        rows: list[tuple[str, Row]] = [
            (
                "final_states",
                final_state_row(
                    snapshot.workflow_id,
                    result.final_state,
                    snapshot_created_at=snapshot.created_at,
                    object_key=result.record.key,
                    stored_bytes=result.record.stored_bytes,
                    recorded_at=self._clock(),
                ),
            )
        ]
        if is_progress_key(result.record.key):
            return rows  # a progress report: the final state that ends the run holds node runs
        rows.extend(
            ("node_runs", row)
            for row in node_run_rows(
                snapshot.workflow_id,
                result.final_state,
                snapshot.workflow_snapshot.nodes,
                snapshot_created_at=snapshot.created_at,
                object_key=result.record.key,
            )
        )
        return rows

    def add_snapshot(self, result: CaptureResult) -> None:
        """Index a capture that created its record (``result.created``)."""
        if not result.created or result.record is None:
            return
        self._add_rows(self._snapshot_rows(result))

    def add_final_state(self, snapshot: ExecutionSnapshot, result: FinalStateResult) -> None:
        """Index a final state that was just created: its ``final_states`` row and its
        ``node_runs`` rows (node types come from the snapshot). A progress record (a waiting
        execution's report) gets its ``final_states`` row only: the final state that ends the
        execution holds every node run."""
        if not result.created or result.record is None:
            return
        self._add_rows(self._final_state_rows(snapshot, result))

    def add_version(self, commit: VersionCommit) -> None:
        self.add_row("versions", version_row(commit))

    # -- observers ----------------------------------------------------------------------------

    def attach(self, archive: Archive) -> ManifestWriter:
        """Index everything ``archive`` captures from now on (snapshots, final states, versions).

        The archive calls the observers after the record object was written, so a row never
        precedes its object. An identical re-send (``created=False``) is indexed too unless this
        writer indexed that object already: its first attempt may have stored the object and
        failed before the row was buffered. ``close()`` detaches again.
        """

        def on_capture(result: CaptureResult) -> None:
            try:
                self._index_capture(archive, result)
            except Exception:
                _log.exception("indexing capture %s failed", result.snapshot.execution_id)

        def on_final_state(snapshot: ExecutionSnapshot, result: FinalStateResult) -> None:
            try:
                if result.record is None or (not result.created and self._known(result.record.key)):
                    return
                self._add_rows(
                    self._final_state_rows(snapshot, result), journal=[result.record.key]
                )
            except Exception:
                _log.exception("indexing final state %s failed", snapshot.execution_id)

        archive.snapshot_observers.append(on_capture)
        archive.final_state_observers.append(on_final_state)
        with self._lock:
            self._archives.append((archive, on_capture, on_final_state))
            if self._journal is not None:
                self._recover_at = time.monotonic()  # adopt dead writers' journals now
        self._wake.set()
        return self

    def _index_capture(self, archive: Archive, result: CaptureResult) -> int:
        """The snapshot row and, when this capture created its version, the version row: both
        buffered together, under the snapshot's journal entry. Rows added."""
        if result.record is None or (not result.created and self._known(result.record.key)):
            return 0
        snapshot = result.snapshot
        rows = self._snapshot_rows(result)
        waiting = False
        try:
            commit = self._created_version(archive, snapshot)
        except Exception as err:  # the store failed: keep the version row for later
            _log.warning(
                "version %s/%s of capture %s not indexed yet (%s); retried",
                snapshot.workflow_id,
                snapshot.version_seq,
                snapshot.execution_id,
                err,
            )
            commit, waiting = None, True
        if commit is not None:
            rows.append(("versions", version_row(commit)))
        segment = self._add_rows(rows, journal=[result.record.key])
        if waiting:
            with self._lock:
                if segment is not None and self._journal is not None:
                    self._journal.hold(segment)  # the journal entry outlives the snapshot row
                self._pending_versions.append(
                    _PendingVersion(
                        archive,
                        snapshot.workflow_id,
                        snapshot.version_seq,
                        snapshot.execution_id,
                        segment,
                    )
                )
            self._wake.set()
        return len(rows)

    def detach(self, archive: Archive) -> None:
        with self._lock:
            mine = [entry for entry in self._archives if entry[0] is archive]
            self._archives = [entry for entry in self._archives if entry[0] is not archive]
        for _, on_capture, on_final_state in mine:
            with contextlib.suppress(ValueError):
                archive.snapshot_observers.remove(on_capture)
            with contextlib.suppress(ValueError):
                archive.final_state_observers.remove(on_final_state)

    def _created_version(
        self, archive: Archive, snapshot: ExecutionSnapshot
    ) -> VersionCommit | None:
        """The version commit this capture created, or None (it runs under an existing one).

        A version commit names the execution whose capture created it. The commit is looked up
        once per (workflow, seq) per writer (from the archive's chain cache). Raises when the
        lookup fails (the caller retries later). A version whose creator crashed before its
        record was written is indexed by the next rebuild.
        """
        seq = snapshot.version_seq
        if seq < 1:
            return None
        key = (snapshot.workflow_id, seq)
        with self._lock:
            known = key in self._version_creators
            creator = self._version_creators.get(key)
        if known and creator != snapshot.execution_id:
            return None
        commit = archive.versions.get(snapshot.workflow_id, seq)
        with self._lock:
            self._version_creators[key] = commit.execution_id
        return commit if commit.execution_id == snapshot.execution_id else None

    def _maybe_version(self, archive: Archive, snapshot: ExecutionSnapshot) -> None:
        """Add a ``versions`` row when this capture is the one that created its version."""
        commit = self._created_version(archive, snapshot)
        if commit is not None:
            self.add_version(commit)

    def _retry_versions(self) -> None:
        with self._lock:
            waiting, self._pending_versions = self._pending_versions, []
        keep: list[_PendingVersion] = []
        for entry in waiting:
            try:
                commit = entry.archive.versions.get(entry.workflow_id, entry.seq)
            except NotFound:
                commit = None  # no such version (expired?): nothing to index
            except Exception as err:
                _log.warning(
                    "version %s/%s still not readable: %s", entry.workflow_id, entry.seq, err
                )
                keep.append(entry)
                continue
            if commit is not None:
                with self._lock:
                    self._version_creators[(entry.workflow_id, entry.seq)] = commit.execution_id
            if commit is not None and commit.execution_id == entry.execution_id:
                self._add_rows([("versions", version_row(commit))], segment=entry.segment)
            if entry.segment is not None:
                with self._lock:
                    if self._journal is not None:
                        self._journal.release(Counter({entry.segment: 1}))
        with self._lock:
            self._pending_versions.extend(keep)

    # -- recovery -----------------------------------------------------------------------------

    def recover(self, archive: Archive | None = None, *, workers: int = 8) -> int:
        """Index the objects named in the journals of writers that are gone; rows added.

        Each object is read back through ``archive`` (verified, as a GET would) and indexed
        like a capture: its key goes into this writer's journal with its rows, and the dead
        writer's journal is deleted only when every key of it is done. An object that is gone
        (expired) or does not verify is skipped (logged); a store failure stops the recovery,
        which the writer's thread tries again every ``recover_seconds``. Without a journal, 0.
        A dead writer may have written some of these rows already: those are indexed twice
        (readers return each row once; compaction merges them).
        """
        if self._journal is None or self.journal_dir is None:
            return 0
        if archive is None:
            with self._lock:
                if not self._archives:
                    return 0
                archive = self._archives[0][0]
        with self._recover_lock:
            orphans = find_orphans(self.journal_dir, exclude=self.writer_id)
            added = 0
            try:
                for orphan in orphans:
                    added += self._adopt(archive, orphan, workers)
                    orphan.done()
            finally:
                for orphan in orphans:
                    orphan.release()
            with self._lock:
                self.rows_recovered += added
            return added

    def _adopt(self, archive: Archive, orphan: Orphan, workers: int) -> int:
        todo = [k for k in orphan.keys if not self._known(k)]
        if not todo:
            return 0
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="index-recover") as pool:
            counts = list(pool.map(functools.partial(self._replay_key, archive), todo))
        _log.warning(
            "manifest writer %s: re-indexed %d object(s) (%d rows) of dead writer %s in %.2fs",
            self.writer_id,
            len(todo),
            sum(counts),
            orphan.writer_id,
            time.monotonic() - started,
        )
        return sum(counts)

    def _replay_key(self, archive: Archive, key: str) -> int:
        """Index one journaled object again; rows added. Store failures propagate."""
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "executions":
            _log.error("index journal: ignoring unknown key %r", key)
            return 0
        execution_id, name = parts[2], parts[3]
        try:
            progress = is_progress_key(key) and key.startswith(execution_prefix(execution_id))
            if (
                snapshot_key(execution_id) != key
                and result_key(execution_id) != key
                and not progress
            ):
                raise ManifestError("key is not where its execution id puts it")
            snapshot, stored = archive.read_snapshot_record(execution_id)
            if name == "snapshot.json.zst":
                capture = CaptureResult(
                    snapshot,
                    created=False,
                    record=WrittenObject(key, stored, 0),
                    blob=WrittenObject(
                        blob_key(snapshot.snapshot_hash),
                        0,
                        archive.structure_size(snapshot.snapshot_hash),
                    ),
                )
                return self._index_capture(archive, capture)
            found = archive.read_final_state_record(execution_id, key if progress else None)
            if found is None:
                raise NotFound(key)
            final, stored = found
            result = FinalStateResult(final, False, WrittenObject(key, stored, 0))
            rows = self._final_state_rows(snapshot, result)
            self._add_rows(rows, journal=[key])
            return len(rows)
        except NotFound:
            _log.info("index journal: %s is gone (expired?): not indexed", key)
        except (IntegrityError, InvalidInput, ManifestError) as err:
            _log.error("index journal: %s does not verify (%s): not indexed", key, err)
        return 0

    # -- flushing -----------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        """Rows not yet in a written part (buffered or in a part waiting for a retry)."""
        with self._lock:
            return sum(len(b.rows) for b in self._buffers.values()) + sum(
                p.rows for p in self._failed
            )

    def flush(self) -> int:
        """Write every buffered row now; the number of rows written.

        Raises ManifestError when some part could not be written: its rows stay queued and are
        retried (by the background thread, the next ``flush()`` or ``close()``).
        """
        if self._pending_versions:
            self._retry_versions()
        written = self._flush(due_only=False, retry_now=True)
        with self._lock:
            failed = sum(p.rows for p in self._failed)
            versions = len(self._pending_versions)
        if failed or versions:
            raise ManifestError(
                f"manifest writer {self.writer_id}: {failed} row(s) not written yet, "
                f"{versions} version(s) not looked up yet (kept for retry; see the log)"
            )
        return written

    def _take_due(self, due_only: bool) -> list[tuple[str, date, list[Row], Counter[int]]]:
        now = time.monotonic()
        taken: list[tuple[str, date, list[Row], Counter[int]]] = []
        with self._lock:
            if self._journal is not None:
                self._journal.rotate()
            for (table, day), buf in list(self._buffers.items()):
                if (
                    not due_only
                    or len(buf.rows) >= self.flush_rows
                    or now - buf.since >= self.flush_seconds
                ):
                    del self._buffers[(table, day)]
                    taken.append((table, day, buf.rows, buf.segments))
        return taken

    def _flush(self, *, due_only: bool, retry_now: bool) -> int:
        written = 0
        with self._flush_lock:
            # parts that failed before: same key, same bytes (an unseen success is then a no-op)
            with self._lock:
                retry = list(self._failed)
                self._failed.clear()
            now = time.monotonic()
            for part in retry:
                if not retry_now and part.not_before > now:
                    with self._lock:
                        self._failed.append(part)
                    continue
                written += self._write(part)
            for table, day, rows, segments in self._take_due(due_only):
                starts = range(0, len(rows), MAX_ROWS_PER_PART)
                for start in starts:
                    chunk = rows[start : start + MAX_ROWS_PER_PART]
                    try:
                        data = encode_part(table, chunk, writer_id=self.writer_id)
                    except Exception:
                        # A row that cannot be encoded is a bug; say so loudly, keep the others.
                        # (Its journal entries stay: the next start tries them again.)
                        _log.exception(
                            "manifest writer %s: cannot encode %d %s row(s) for %s; "
                            "they are NOT indexed (rebuild-index restores them)",
                            self.writer_id,
                            len(chunk),
                            table,
                            day,
                        )
                        with self._lock:
                            self.write_failures += 1
                        continue
                    part = _Part(table, day, next(self._seq), data, len(chunk))
                    if start == starts[-1]:
                        part.segments = segments  # released when the last chunk is written
                    written += self._write(part)
        return written

    def _write(self, part: _Part) -> int:
        for _ in range(100):  # bounded: each conflict moves the sequence past existing parts
            key = part.key(self.writer_id)
            try:
                self.store.put(key, part.data)
            except ImmutableConflict:
                # Only when two writers were given the same writer id: skip past their parts.
                _log.warning("manifest part %s exists (shared writer id?); renumbering", key)
                part.seq = self._next_free_seq(part)
                continue
            except Exception as err:
                part.attempts += 1
                delay = min(self._retry_max_delay, 0.1 * 2 ** min(part.attempts, 16))
                part.not_before = time.monotonic() + delay
                with self._lock:
                    self._failed.append(part)
                    self.write_failures += 1
                _log.error(
                    "manifest writer %s: writing %s (%d rows) failed (attempt %d): %s; "
                    "rows kept, retry in %.1fs",
                    self.writer_id,
                    key,
                    part.rows,
                    part.attempts,
                    err,
                    delay,
                )
                self._wake.set()
                return 0
            with self._lock:
                self.parts_written += 1
                self.rows_written += part.rows
                if self._journal is not None and part.segments:
                    self._journal.release(part.segments)
            return part.rows
        raise ManifestError(f"manifest writer {self.writer_id}: cannot find a free part name")

    def _next_free_seq(self, part: _Part) -> int:
        prefix = f"{INDEX_PREFIX}{part.table}/dt={part.day.isoformat()}/part-{self.writer_id}-"
        highest = part.seq
        for info in self.store.list(prefix):
            parsed = parse_part_key(info.key)
            if parsed is not None and parsed[2] == self.writer_id:
                highest = max(highest, parsed[3])
        with self._lock:
            # move the shared counter past everything seen, then take the next number
            current = next(self._seq)
            self._seq = itertools.count(max(current, highest + 1))
            return next(self._seq)

    def _next_deadline(self) -> float:
        now = time.monotonic()
        with self._lock:
            deadlines = [b.since + self.flush_seconds for b in self._buffers.values()]
            deadlines += [p.not_before for p in self._failed]
            if self._pending_versions:
                deadlines.append(now + min(1.0, self.flush_seconds))
            deadlines.append(self._recover_at)
        return max(0.0, min(deadlines) - now)

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=min(self._next_deadline(), self.flush_seconds))
            self._wake.clear()
            with self._lock:
                closed = self._closed
            if closed:
                return
            if time.monotonic() >= self._recover_at and self._archives:
                self._recover_at = time.monotonic() + self._recover_seconds
                try:
                    self.recover()
                except Exception as err:  # the store is down: the next round tries again
                    _log.warning("manifest writer %s: recovery deferred: %s", self.writer_id, err)
            try:
                if self._pending_versions:
                    self._retry_versions()
                self._flush(due_only=True, retry_now=False)
            except Exception:  # never let the thread die: rows would stay buffered forever
                _log.exception("manifest writer %s: flush failed", self.writer_id)

    # -- shutdown -----------------------------------------------------------------------------

    def close(self, *, attempts: int = 3) -> None:
        """Detach, stop the thread, write everything; ManifestError if rows remain unwritten
        (the journal then stays for the next writer to recover)."""
        for archive, _, _ in list(self._archives):
            self.detach(archive)
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        try:
            for attempt in range(attempts):
                try:
                    self.flush()
                    break
                except ManifestError:
                    if attempt + 1 == attempts:
                        raise
                    time.sleep(min(1.0, 0.1 * 2**attempt))
        finally:
            if self._journal is not None:
                with self._lock:
                    keep = bool(self._failed or self._buffers or self._pending_versions)
                    keep = keep or self._journal.pending > 0
                    self._journal.close(keep=keep)

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# reading objects back (rebuild and verify)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectProblem:
    """An object that cannot be read, does not verify, or does not belong where it is."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class ColdProblem:
    """A cold copy (``retention.archive_cold``) that is missing, the wrong size or corrupt."""

    #: cold_copy_missing | cold_copy_truncated | cold_copy_corrupt | cold_store_unreachable
    problem: str
    key: str  # "<cold store url>/<key>"
    detail: str


@dataclass(frozen=True, slots=True)
class RowProblem:
    """An index row that is wrong: its object is missing, or it disagrees with its object."""

    table: str
    key: str  # the row's identity: execution id, or "<workflow>/<seq>"
    part: str  # the part file holding the row
    reason: str


_T = TypeVar("_T")
_R = TypeVar("_R")


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[_T], _R], items: Iterable[_T], window: int
) -> Iterator[_R]:
    """``pool.map`` that keeps at most ``window`` tasks in flight (the input may be huge)."""
    pending: deque[Future[_R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@dataclass(slots=True)
class _ExecutionObjects:
    execution_id: str
    snapshot: ObjectInfo | None = None
    result: ObjectInfo | None = None
    progress: list[ObjectInfo] = field(default_factory=list)

    def objects(self) -> list[ObjectInfo]:
        """Every record of the execution: snapshot, final state, progress records."""
        held = [o for o in (self.snapshot, self.result) if o is not None]
        return held + self.progress


def _executions(
    infos: Iterable[ObjectInfo], problems: list[ObjectProblem]
) -> Iterator[_ExecutionObjects]:
    """Group ``executions/<s>/<id>/<name>`` listings per execution (the listing is key-ordered)."""
    current: _ExecutionObjects | None = None
    for info in infos:
        parts = info.key.split("/")
        if len(parts) != 4:
            continue
        _, shard, execution_id, name = parts
        if name not in ("snapshot.json.zst", "result.json.zst") and not is_progress_key(info.key):
            continue
        try:
            if snapshot_key(execution_id).split("/")[1] != shard:
                raise ValueError
        except (ArchiveError, ValueError):
            problems.append(ObjectProblem(info.key, "object is not where its execution id puts it"))
            continue
        if current is None or current.execution_id != execution_id:
            if current is not None:
                yield current
            current = _ExecutionObjects(execution_id)
        if name == "snapshot.json.zst":
            current.snapshot = info
        elif name == "result.json.zst":
            current.result = info
        else:
            current.progress.append(info)
    if current is not None:
        yield current


def _node_key_fields(node: object) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    return {k: node[k] for k in ("name", "type", "id") if isinstance(node.get(k), str)}


class _BlobCache:
    """(node count, raw bytes, structure) per structure hash, fetched and verified once."""

    def __init__(self, store: ObjectStore, max_size: int) -> None:
        self._store = store
        self._max = max_size
        self._lock = threading.Lock()
        self._known: dict[str, tuple[int, dict[str, Any]] | ObjectProblem] = {}

    def get(self, snapshot_hash: str) -> tuple[int, dict[str, Any]] | ObjectProblem:
        with self._lock:
            found = self._known.get(snapshot_hash)
        if found is not None:
            return found
        key = blob_key(snapshot_hash)
        result: tuple[int, dict[str, Any]] | ObjectProblem
        try:
            raw = decode_blob(self._store.get(key), snapshot_hash, max_size=self._max)
            structure = orjson.loads(raw)
            if not isinstance(structure, dict) or not isinstance(structure.get("nodes"), list):
                raise ManifestError("structure blob is not a {nodes, connections, settings} object")
            # keep only what rows need: each node's name, type and id (node_runs), and empty
            # stand-ins otherwise
            result = (
                len(raw),
                {
                    "nodes": [_node_key_fields(n) for n in structure["nodes"]],
                    "connections": [],
                    "settings": {},
                },
            )
        except NotFound:
            result = ObjectProblem(key, "structure blob is missing")
        except (ArchiveError, orjson.JSONDecodeError) as err:
            result = ObjectProblem(key, f"structure blob does not verify: {err}")
        with self._lock:
            self._known[snapshot_hash] = result
        return result

    def checked(self) -> set[str]:
        with self._lock:
            return set(self._known)


@dataclass(slots=True)
class _Scanned:
    rows: list[tuple[str, Row]] = field(default_factory=list)
    problems: list[ObjectProblem] = field(default_factory=list)


def _read_execution(
    store: ObjectStore, blobs: _BlobCache, max_size: int, objs: _ExecutionObjects
) -> _Scanned:
    out = _Scanned()
    snapshot: ExecutionSnapshot | None = None
    if objs.snapshot is not None:
        key = objs.snapshot.key
        try:
            data = store.get(key)
            body = decode_record(data, SNAPSHOT_KIND, max_size=max_size)
            if body.get("executionId") != objs.execution_id:
                raise ManifestError("record names another execution")
            blob = blobs.get(body["snapshotHash"])
            if isinstance(blob, ObjectProblem):
                out.problems.append(blob)
                raise ManifestError(f"its structure blob is unusable ({blob.reason})")
            raw_bytes, structure = blob
            snapshot = ExecutionSnapshot.from_record(body, structure)
        except NotFound:
            out.problems.append(ObjectProblem(key, "vanished while being read"))
        except (ArchiveError, KeyError, TypeError, ValueError) as err:
            out.problems.append(ObjectProblem(key, f"snapshot record does not verify: {err}"))
        else:
            out.rows.append(
                (
                    "snapshots",
                    snapshot_row(
                        snapshot,
                        object_key=key,
                        stored_bytes=len(data),
                        blob_key=blob_key(snapshot.snapshot_hash),
                        raw_bytes=raw_bytes,
                    ),
                )
            )
    for info in ([objs.result] if objs.result is not None else []) + objs.progress:
        _read_final(store, max_size, objs.execution_id, info, snapshot, out)
    return out


def _read_final(
    store: ObjectStore,
    max_size: int,
    execution_id: str,
    info: ObjectInfo,
    snapshot: ExecutionSnapshot | None,
    out: _Scanned,
) -> None:
    """The rows of one final-state or progress record (a progress record has no node runs)."""
    key = info.key
    progress = is_progress_key(key)
    try:
        data = store.get(key)
        body = decode_record(data, FINAL_STATE_KIND, max_size=max_size)
        body.pop("kind", None)
        final = FinalState.from_json(body)
        if final.execution_id != execution_id:
            raise ManifestError("record names another execution")
        if progress and not key.rsplit("/", 1)[-1].startswith(f"progress-{final.status}-"):
            raise ManifestError("progress record holds another status than its name")
    except NotFound:
        out.problems.append(ObjectProblem(key, "vanished while being read"))
        return
    except (ArchiveError, KeyError, TypeError, ValueError) as err:
        out.problems.append(ObjectProblem(key, f"final-state record does not verify: {err}"))
        return
    if snapshot is None:
        out.problems.append(
            ObjectProblem(key, "final state without a readable snapshot: not indexed")
        )
        return
    recorded = info.last_modified or utcnow()
    out.rows.append(
        (
            "final_states",
            final_state_row(
                snapshot.workflow_id,
                final,
                snapshot_created_at=snapshot.created_at,
                object_key=key,
                stored_bytes=len(data),
                recorded_at=recorded.astimezone(UTC),
            ),
        )
    )
    if progress:
        return
    out.rows.extend(
        ("node_runs", row)
        for row in node_run_rows(
            snapshot.workflow_id,
            final,
            snapshot.workflow_snapshot.nodes,
            snapshot_created_at=snapshot.created_at,
            object_key=key,
        )
    )


def _read_version(store: ObjectStore, max_size: int, info: ObjectInfo) -> _Scanned:
    out = _Scanned()
    try:
        body = decode_record(store.get(info.key), VERSION_KIND, max_size=max_size)
        commit = VersionCommit.from_json(body)
        if version_key(commit.workflow_id, commit.seq) != info.key:
            raise ManifestError("commit names another workflow or sequence number")
    except NotFound:
        out.problems.append(ObjectProblem(info.key, "vanished while being read"))
    except (ArchiveError, KeyError, TypeError, ValueError) as err:
        out.problems.append(ObjectProblem(info.key, f"version commit does not verify: {err}"))
    else:
        out.rows.append(("versions", version_row(commit)))
    return out


def _is_version_key(key: str) -> bool:
    parts = key.split("/")
    return (
        len(parts) == 5
        and parts[0] == "refs"
        and parts[1] == "workflows"
        and parts[3] == "versions"
        and parts[4].endswith(".json.zst")
    )


def _scan_objects(
    store: ObjectStore,
    *,
    workers: int,
    max_size: int,
    progress: ProgressCallback | None,
    on_rows: Callable[[list[tuple[str, Row]]], None],
    problems: list[ObjectProblem],
    blobs: _BlobCache,
    seen: Callable[[ObjectInfo], None] | None = None,
) -> None:
    """Read every execution and version object, verifying each; hand the rows to ``on_rows``."""

    def listing(prefix: str) -> Iterator[ObjectInfo]:
        for info in store.list(prefix):
            if seen is not None:
                seen(info)
            yield info

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="index-scan") as pool:
        done = 0
        read = functools.partial(_read_execution, store, blobs, max_size)
        for scanned in _bounded_map(
            pool, read, _executions(listing("executions/"), problems), workers * 8
        ):
            on_rows(scanned.rows)
            problems.extend(scanned.problems)
            done += 1
            if progress is not None and done % 200 == 0:
                progress("executions", done, None)
        if progress is not None:
            progress("executions", done, done)
        done = 0
        read_v = functools.partial(_read_version, store, max_size)
        versions = (i for i in listing("refs/workflows/") if _is_version_key(i.key))
        for scanned in _bounded_map(pool, read_v, versions, workers * 8):
            on_rows(scanned.rows)
            problems.extend(scanned.problems)
            done += 1
            if progress is not None and done % 200 == 0:
                progress("versions", done, None)
        if progress is not None:
            progress("versions", done, done)


def _list_parts(store: ObjectStore) -> list[ObjectInfo]:
    return [info for info in store.list(INDEX_PREFIX) if parse_part_key(info.key) is not None]


# --------------------------------------------------------------------------------------------
# rebuild
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RebuildReport:
    rows: dict[str, int]  # table -> rows written
    parts_written: list[str]
    parts_removed: list[str]
    parts_kept: int  # parts that appeared while the rebuild ran (live writers): left alone
    problems: list[ObjectProblem]  # objects that could not be indexed (see verify)
    remove_failures: list[ObjectProblem]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.remove_failures


class _Spill:
    """Rows spilled to local Parquet chunks, so a rebuild of millions of rows stays small."""

    def __init__(self, directory: Path, chunk_rows: int = 50_000) -> None:
        self.directory = directory
        self.chunk_rows = chunk_rows
        self._rows: dict[str, list[Row]] = {t: [] for t in SCHEMAS}
        self._chunks = itertools.count()
        self.counts: Counter[str] = Counter()

    def add(self, table: str, row: Row) -> None:
        rows = self._rows[table]
        clean = _clean(row)
        clean["dt"] = row_day(table, row).isoformat()
        rows.append(clean)
        self.counts[table] += 1
        if len(rows) >= self.chunk_rows:
            self._spill(table)

    def _spill(self, table: str) -> None:
        rows = self._rows[table]
        if not rows:
            return
        schema = SCHEMAS[table].append(pa.field("dt", pa.string()))
        data = pa.Table.from_pylist(rows, schema=schema)
        target = self.directory / "chunks" / table
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, target / f"{next(self._chunks):06d}.parquet", compression="lz4")
        rows.clear()

    def days(self, table: str) -> Iterator[tuple[date, list[Row]]]:
        """All rows of ``table`` grouped by day (one pass over the chunks, partitioned on disk)."""
        self._spill(table)
        chunks = self.directory / "chunks" / table
        if not chunks.is_dir():
            return
        staged = self.directory / "staged" / table
        pds.write_dataset(
            pds.dataset(str(chunks), format="parquet"),
            str(staged),
            format="parquet",
            partitioning=pds.partitioning(pa.schema([("dt", pa.string())]), flavor="hive"),
            existing_data_behavior="overwrite_or_ignore",
        )
        shutil.rmtree(chunks)
        for day_dir in sorted(staged.iterdir()):
            day = date.fromisoformat(day_dir.name.removeprefix("dt="))
            table_data = pds.dataset(str(day_dir), format="parquet").to_table()
            rows: list[Row] = table_data.select(SCHEMAS[table].names).to_pylist()
            yield day, rows
            shutil.rmtree(day_dir)


def rebuild_index(
    store: ObjectStore,
    *,
    progress: ProgressCallback | None = None,
    workers: int = 16,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    work_dir: str | Path | None = None,
) -> RebuildReport:
    """Regenerate every manifest from the objects alone; then remove the parts that were there.

    Safe next to live writers: the parts to remove are listed *before* the objects are read, and
    every row in them describes an object written before its part, so the rebuilt parts cover
    them all; parts written after that listing (new captures) are kept. The result is one part
    per table and day (more for days over ``MAX_ROWS_PER_PART`` rows), i.e. a compacted index.
    Objects that do not verify are skipped and reported (``report.problems``).
    """
    old_parts = [info.key for info in _list_parts(store)]
    if progress is not None:
        progress("old-parts", len(old_parts), len(old_parts))
    rebuild_id = "rb" + secrets.token_hex(6)
    problems: list[ObjectProblem] = []
    blobs = _BlobCache(store, max_object_bytes)
    written: list[str] = []
    with tempfile.TemporaryDirectory(
        prefix="execvault-rebuild-", dir=None if work_dir is None else str(work_dir)
    ) as tmp:
        spill = _Spill(Path(tmp))
        lock = threading.Lock()

        def on_rows(rows: list[tuple[str, Row]]) -> None:
            with lock:
                for table, row in rows:
                    spill.add(table, row)

        _scan_objects(
            store,
            workers=workers,
            max_size=max_object_bytes,
            progress=progress,
            on_rows=on_rows,
            problems=problems,
            blobs=blobs,
        )
        seq = itertools.count(1)
        total_days = 0
        for table in TABLES:
            for day, rows in spill.days(table):
                for start in range(0, len(rows), MAX_ROWS_PER_PART):
                    chunk = rows[start : start + MAX_ROWS_PER_PART]
                    key = part_key(table, day, rebuild_id, next(seq))
                    store.put(key, encode_part(table, chunk, writer_id=rebuild_id))
                    written.append(key)
                total_days += 1
                if progress is not None:
                    progress(f"write-{table}", total_days, None)
    removed: list[str] = []
    remove_failures: list[ObjectProblem] = []
    for i, key in enumerate(old_parts, 1):
        try:
            store.delete(key)
        except ArchiveError as err:  # e.g. Object Lock retention on index parts
            remove_failures.append(ObjectProblem(key, f"cannot remove old part: {err}"))
        else:
            removed.append(key)
        if progress is not None and (i % 200 == 0 or i == len(old_parts)):
            progress("remove-old-parts", i, len(old_parts))
    kept = len(_list_parts(store)) - len(written) - len(old_parts) + len(removed)
    return RebuildReport(
        rows={t: spill.counts[t] for t in TABLES},
        parts_written=written,
        parts_removed=removed,
        parts_kept=max(kept, 0),
        problems=problems,
        remove_failures=remove_failures,
    )


# --------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------


#: where retention leaves its write-once tombstones (``archiver.retention``)
_TOMBSTONE_PREFIX: Final = "events/tombstones/"
#: write-once event records (tags, annotations, tombstones, tier events), checked by --read-data
_EVENTS_PREFIX: Final = "events/"
#: storage classes whose objects cannot be read without a restore
_ARCHIVED_CLASSES: Final = frozenset({"GLACIER", "DEEP_ARCHIVE"})
#: how codec.decompress words a frame that is cut short or damaged: a truncated object
_FRAME_ERRORS: Final = (
    "not a zstd frame",
    "corrupt zstd frame",
    "one complete zstd frame",
    "content size does not match",
)


def _tombstoned_names(store: ObjectStore) -> frozenset[str]:
    """Execution ids and blob hashes that retention deleted on purpose, from the tombstone keys
    (``events/tombstones/executions/<s>/<executionId>/…``, ``…/blobs/<h2>/<hash>/…``)."""
    names = set()
    for info in store.list(_TOMBSTONE_PREFIX):
        parts = info.key[len(_TOMBSTONE_PREFIX) :].split("/")
        if len(parts) >= 4 and parts[0] in ("executions", "blobs"):
            names.add(f"{parts[0]}/{parts[2]}")
    return frozenset(names)


def _tombstoned(key: str, tombstones: frozenset[str]) -> bool:
    """Whether the object ``key`` belongs to an execution or blob that has a tombstone."""
    parts = key.split("/")
    if parts[0] == "executions" and len(parts) >= 3:
        return f"executions/{parts[2]}" in tombstones
    if parts[0] == "blobs" and len(parts) >= 4:
        return f"blobs/{parts[3].split('.', 1)[0]}" in tombstones
    return False


def subset_bucket(key: str, total: int) -> int:
    """The 0-based bucket (of ``total``) that ``key`` falls in for ``verify(subset=…)``.

    Stable: SHA-256 of the key, except that both objects of an execution share the bucket of
    ``executions/<executionId>`` (a final state is read together with its snapshot).
    """
    parts = key.split("/")
    unit = f"executions/{parts[2]}" if parts[0] == "executions" and len(parts) >= 3 else key
    return int.from_bytes(hashlib.sha256(unit.encode()).digest()[:8], "big") % total


def parse_subset(text: str, field_name: str = "subset") -> tuple[int, int]:
    """``"N/T"`` → (N, T) with 1 ≤ N ≤ T; InvalidInput naming ``field_name`` otherwise."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*", text)
    if match is None:
        raise InvalidInput("subset must be N/T, e.g. 1/7", field=field_name)
    n, t = int(match[1]), int(match[2])
    if not 1 <= n <= t:
        raise InvalidInput("subset N/T needs 1 <= N <= T", field=field_name)
    return n, t


def _in_subset(key: str, subset: tuple[int, int] | None) -> bool:
    return subset is None or subset_bucket(key, subset[1]) == subset[0] - 1


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify` found. ``ok`` when nothing is missing, broken or inconsistent.

    Duplicate rows (the same execution or version in several files) are listed but do not make
    the report fail: readers return each row once, and compaction or a rebuild removes them.
    :meth:`findings` names every problem (``corrupt_object``, ``truncated_object``,
    ``deleted_object``, ``day_removed``, ``day_altered``, ``chain_broken`` …).
    """

    read_data: bool = True
    subset: tuple[int, int] | None = None
    objects: dict[str, int] = field(default_factory=dict)  # kind -> objects checked
    objects_read: int = 0  # object bodies read and verified (0 without read_data)
    archived_not_read: int = 0  # objects in GLACIER / DEEP_ARCHIVE: need a restore to be read
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows read
    parts: int = 0
    objects_without_rows: list[str] = field(default_factory=list)
    rows_without_objects: list[RowProblem] = field(default_factory=list)
    hash_mismatches: list[ObjectProblem] = field(default_factory=list)
    #: objects whose stored size differs from their index row's ``stored_bytes``
    size_mismatches: list[ObjectProblem] = field(default_factory=list)
    row_mismatches: list[RowProblem] = field(default_factory=list)
    duplicate_rows: list[RowProblem] = field(default_factory=list)
    unreadable_parts: list[ObjectProblem] = field(default_factory=list)
    #: rows whose objects retention deleted on purpose (a tombstone says so): not a problem
    expired_rows: list[RowProblem] = field(default_factory=list)
    #: rows of executions moved to the cold store (``retention.cold_moved_executions``): not a
    #: problem, a restore brings the objects back
    cold_rows: list[RowProblem] = field(default_factory=list)
    #: cold copies checked in their cold stores (exist with the recorded size) / re-read and
    #: re-hashed (``read_data``), and what was wrong with them
    cold_copies: int = 0
    cold_copies_read: int = 0
    cold_problems: list[ColdProblem] = field(default_factory=list)
    #: the index chain (``archiver.chain``): broken links, removed or altered sealed days
    chain_problems: list[ChainProblem] = field(default_factory=list)
    #: informational: days that gained late rows, expired rows dropped by a rebuild, unsealed days
    chain_notes: list[ChainProblem] = field(default_factory=list)
    chain_entries: int = 0
    chain_head: str | None = None

    @property
    def ok(self) -> bool:
        return not (
            self.objects_without_rows
            or self.rows_without_objects
            or self.hash_mismatches
            or self.size_mismatches
            or self.row_mismatches
            or self.unreadable_parts
            or self.cold_problems
            or self.chain_problems
        )

    def findings(self) -> list[dict[str, str]]:
        """Every problem, named: ``{"problem", "key", "detail"}`` (an object once, by its worst)."""
        out: list[dict[str, str]] = []
        seen: set[str] = set()
        for p in self.hash_mismatches:
            if "without a readable snapshot" in p.reason:
                name = "snapshot_unreadable"
            elif any(text in p.reason for text in _FRAME_ERRORS):
                name = "truncated_object"
            else:
                name = "corrupt_object"
            out.append({"problem": name, "key": p.key, "detail": p.reason})
            seen.add(p.key)
        for p in self.size_mismatches:
            if p.key not in seen:
                name = "truncated_object" if "truncated" in p.reason else "corrupt_object"
                out.append({"problem": name, "key": p.key, "detail": p.reason})
        for r in self.rows_without_objects:
            out.append(
                {"problem": "deleted_object", "key": f"{r.table}/{r.key}", "detail": r.reason}
            )
        for key in self.objects_without_rows:
            out.append({"problem": "object_without_row", "key": key, "detail": "no index row"})
        for r in self.row_mismatches:
            out.append({"problem": "row_mismatch", "key": f"{r.table}/{r.key}", "detail": r.reason})
        for p in self.unreadable_parts:
            out.append({"problem": "unreadable_part", "key": p.key, "detail": p.reason})
        for cp in self.cold_problems:
            out.append({"problem": cp.problem, "key": cp.key, "detail": cp.detail})
        for c in self.chain_problems:
            out.append({"problem": c.problem, "key": c.where, "detail": c.detail})
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "readData": self.read_data,
            "subset": None if self.subset is None else f"{self.subset[0]}/{self.subset[1]}",
            "objects": dict(self.objects),
            "objectsRead": self.objects_read,
            "archivedNotRead": self.archived_not_read,
            "rows": dict(self.rows),
            "parts": self.parts,
            "objectsWithoutRows": len(self.objects_without_rows),
            "rowsWithoutObjects": len(self.rows_without_objects),
            "hashMismatches": len(self.hash_mismatches),
            "sizeMismatches": len(self.size_mismatches),
            "rowMismatches": len(self.row_mismatches),
            "duplicateRows": len(self.duplicate_rows),
            "unreadableParts": len(self.unreadable_parts),
            "expiredRows": len(self.expired_rows),
            "coldRows": len(self.cold_rows),
            "coldCopies": self.cold_copies,
            "coldCopiesRead": self.cold_copies_read,
            "coldProblems": len(self.cold_problems),
            "chainProblems": len(self.chain_problems),
            "chainNotes": len(self.chain_notes),
            "chainEntries": self.chain_entries,
            "chainHead": self.chain_head,
        }

    def to_json(self) -> dict[str, Any]:
        """The summary, every finding by name, and the informational lists."""
        return {
            **self.summary(),
            "findings": self.findings(),
            "chainNotes": [
                {"problem": c.problem, "key": c.where, "detail": c.detail} for c in self.chain_notes
            ],
            "expiredRows": [f"{r.table}/{r.key}" for r in self.expired_rows],
            "coldRows": [f"{r.table}/{r.key}" for r in self.cold_rows],
            "duplicateRows": [f"{r.table}/{r.key}: {r.reason}" for r in self.duplicate_rows],
        }


# columns compared between a row and the row rebuilt from its object
_COMPARED: Final[Mapping[str, tuple[str, ...]]] = {
    "snapshots": (
        "workflow_id",
        "snapshot_id",
        "snapshot_hash",
        "version",
        "version_seq",
        "created_at",
        "object_key",
        "blob_key",
    ),
    "final_states": ("workflow_id", "status", "finished_at", "object_key"),
    "versions": ("version", "snapshot_hash", "parent_seq", "created_at"),
    "node_runs": ("workflow_id", "node_id", "node_type", "status", "object_key"),
}
#: tables whose rows are derived from another table's objects (not counted as objects)
_DERIVED: Final = frozenset({"node_runs"})


def _row_identity(table: str, row: Mapping[str, Any]) -> str:
    return "/".join(str(row[k]) for k in ROW_KEYS[table])


def _row_object_key(table: str, row: Mapping[str, Any]) -> str:
    if table == "versions":
        return version_key(row["workflow_id"], row["seq"])
    key: str = row["object_key"]
    return key


def _check_event(store: ObjectStore, max_size: int, key: str) -> ObjectProblem | None:
    """Verify one event record (tag, annotation, tombstone, tier event): envelope and digest."""
    try:
        body = orjson.loads(decompress(store.get(key), max_size=max_size))
        if not isinstance(body, dict):
            raise IntegrityError("not a JSON object")
        if body.get("formatVersion") not in KNOWN_FORMAT_VERSIONS:
            raise IntegrityError(f"unknown formatVersion {body.get('formatVersion')!r}")
        digest = body.pop("digest", None)
        if digest != record_digest(body):
            raise IntegrityError(f"{body.get('kind')} record digest mismatch")
    except NotFound:
        return None  # removed meanwhile
    except (ArchiveError, orjson.JSONDecodeError) as err:
        return ObjectProblem(key, f"event record does not verify: {err}")
    return None


def verify(
    store: ObjectStore,
    *,
    progress: ProgressCallback | None = None,
    workers: int = 16,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    grace_seconds: float = 0.0,
    read_data: bool = True,
    subset: tuple[int, int] | None = None,
    today: date | None = None,
    cold_store: ObjectStore | None = None,
) -> VerifyReport:
    """Check the index against the objects, the index chain, and (``read_data``) every object.

    Always (structural, no object bodies read):

    * objects without rows: execution snapshot, final-state and version objects with no row
      (objects younger than ``grace_seconds`` are skipped: live writers may still buffer them);
    * rows without objects (deleted objects): rows whose object (or, for snapshots, structure
      blob) is gone and that no tombstone explains;
    * size mismatches: objects whose listed size differs from their row's ``stored_bytes``;
    * the chain (``archiver.chain``): broken links or gaps, sealed days whose rows are gone
      (``day_removed``) or differ (``day_altered``);
    * duplicate rows (informational);
    * cold copies (``retention.archive_cold`` to a cold store): each copy the latest tier event of
      a not-expired execution records exists in its cold store with the recorded size (the
      cold store is opened from the event's location; ``cold_store`` stands in for one that
      cannot be opened by URL, e.g. a memory store).

    With ``read_data`` (the library default) every object is read too: hash mismatches (record
    digests, blob SHA-256, zstd frames, objects not where their content says they belong), rows
    that disagree with their object, final states missing node runs, cold copies re-read and
    re-hashed against their recorded digests. ``subset=(N, T)`` reads
    only the objects in bucket N of T (:func:`subset_bucket`): T runs with N = 1…T read
    everything once; the structural checks still cover everything.
    """
    if subset is not None and not (1 <= subset[0] <= subset[1]):
        raise InvalidInput("subset N/T needs 1 <= N <= T", field="subset")
    report = VerifyReport(read_data=read_data, subset=subset if read_data else None)
    sel = subset if read_data else None
    tombstones = _tombstoned_names(store)
    chain = load_chain(store)
    report.chain_problems.extend(chain.problems)
    report.chain_entries = len(chain.entries)
    report.chain_head = chain.head
    latest = chain.latest()
    last_complete = (today or utcnow().date()) - timedelta(days=1)

    # 1. the index as it is now, day by day: rows of the core tables, digests of every table
    indexed: dict[str, dict[str, tuple[Row, str]]] = {t: {} for t in SCHEMAS}
    counts: dict[str, Counter[str]] = {t: Counter() for t in SCHEMAS}
    by_day = index_day_parts(store.list(INDEX_PREFIX))
    total_parts = sum(len(parts) for parts in by_day.values())
    report.parts = sum(1 for parts in by_day.values() for t, _ in parts if t in SCHEMAS)
    done = 0
    for day in sorted(set(by_day) | set(latest)):
        day_rows: dict[str, list[Row]] = {}
        for table, info in by_day.get(day, []):
            done += 1
            try:
                rows = read_part_rows(store, info.key)
            except NotFound:
                continue  # removed meanwhile (a rebuild or compaction)
            except Exception as err:
                report.unreadable_parts.append(ObjectProblem(info.key, f"unreadable part: {err}"))
                continue
            day_rows.setdefault(table, []).extend(rows)
            if table in SCHEMAS:
                for row in rows:
                    try:
                        identity = _row_identity(table, row)
                    except KeyError:
                        report.unreadable_parts.append(
                            ObjectProblem(info.key, f"part lacks the {table} key columns")
                        )
                        break
                    counts[table][identity] += 1
                    indexed[table].setdefault(identity, (row, info.key))
            if progress is not None and (done % 100 == 0 or done == total_parts):
                progress("parts", done, total_parts)
        entry = latest.get(day)
        current = day_digests(
            day_rows,
            tombstoned=tombstones,
            sealed_at=None if entry is None else entry.created_at,
        )
        findings, _ = check_day(day, entry, current)
        for finding in findings:
            if finding.problem in ("day_removed", "day_altered"):
                report.chain_problems.append(finding)
            elif finding.problem != "day_unsealed" or day <= last_complete:
                report.chain_notes.append(finding)
    for table in TABLES:
        report.rows[table] = sum(counts[table].values())
        for identity, n in counts[table].items():
            if n > 1:
                report.duplicate_rows.append(
                    RowProblem(table, identity, indexed[table][identity][1], f"{n} rows")
                )

    # 2. the listing: every object there is, with its size and storage class
    problems: list[ObjectProblem] = []
    present: dict[str, ObjectInfo] = {}
    young: set[str] = set()
    cutoff = time.time() - grace_seconds

    def listing(prefix: str) -> Iterator[ObjectInfo]:
        for info in store.list(prefix):
            present[info.key] = info
            modified = info.last_modified
            if grace_seconds > 0 and modified is not None and modified.timestamp() > cutoff:
                young.add(info.key)
            yield info

    executions = list(_executions(listing("executions/"), problems))
    version_infos = [i for i in listing("refs/workflows/") if _is_version_key(i.key)]
    blob_infos = [i for i in listing("blobs/sha256/") if i.key.endswith(".json.zst")]
    report.hash_mismatches.extend(problems)  # objects not where their execution id puts them
    if progress is not None:
        progress("listing", len(present), len(present))

    # 3. structural: rows -> objects (deleted, sizes), objects -> rows
    from archiver.retention import cold_moved_executions  # retention builds on the index's peers

    cold_moved = cold_moved_executions(store)
    indexed_keys: set[str] = set()
    for table in TABLES:
        for identity, (row, part) in indexed[table].items():
            try:
                object_key = _row_object_key(table, row)
                keys = [object_key]
                if table == "snapshots":
                    keys.append(row["blob_key"])
            except (ArchiveError, KeyError, TypeError):
                report.row_mismatches.append(RowProblem(table, identity, part, "malformed row"))
                continue
            indexed_keys.add(object_key)
            missing = [k for k in keys if k not in present]
            if missing and all(_tombstoned(k, tombstones) for k in missing):
                report.expired_rows.append(
                    RowProblem(table, identity, part, f"expired by retention: {missing}")
                )
            elif (
                missing
                and row.get("execution_id") in cold_moved
                and all(k.startswith("executions/") for k in missing)
            ):
                report.cold_rows.append(
                    RowProblem(table, identity, part, f"moved to the cold store: {missing}")
                )
            elif missing:
                report.rows_without_objects.append(
                    RowProblem(table, identity, part, f"missing object(s): {missing}")
                )
            elif table in ("snapshots", "final_states"):
                size = present[object_key].size
                stored = row.get("stored_bytes")
                if isinstance(stored, int) and size != stored:
                    cut = " (truncated)" if size < stored else ""
                    report.size_mismatches.append(
                        ObjectProblem(
                            object_key, f"{size} bytes stored, its index row says {stored}{cut}"
                        )
                    )
    without_rows: set[str] = set()
    for objs in executions:
        for held in objs.objects():
            if held.key not in indexed_keys and held.key not in young:
                without_rows.add(held.key)
                report.objects_without_rows.append(held.key)
    for info in version_infos:
        if info.key not in indexed_keys and info.key not in young:
            without_rows.add(info.key)
            report.objects_without_rows.append(info.key)
    report.objects = {
        "snapshots": sum(1 for o in executions if o.snapshot is not None),
        "final_states": sum((o.result is not None) + len(o.progress) for o in executions),
        "versions": len(version_infos),
        "blobs": len(blob_infos),
    }
    from archiver.retention import check_cold_copies

    report.cold_copies, report.cold_copies_read, cold_found = check_cold_copies(
        store,
        read_data=read_data,
        cold_store=cold_store,
        selected=lambda key: _in_subset(key, sel),
        max_object_bytes=max_object_bytes,
    )
    report.cold_problems.extend(ColdProblem(*found) for found in cold_found)
    report.objects_read += report.cold_copies_read
    if not read_data:
        return report

    # 4. read the objects (all, or the subset), each verified, turned into the rows they imply
    def cold(info: ObjectInfo | None) -> bool:
        return info is not None and info.storage_class in _ARCHIVED_CLASSES

    blobs = _BlobCache(store, max_object_bytes)
    expected: dict[str, dict[str, Row]] = {t: {} for t in SCHEMAS}
    object_counts: Counter[str] = Counter()
    chosen: list[_ExecutionObjects] = []
    for objs in executions:
        key = (objs.objects() or [ObjectInfo("", 0)])[0].key
        if not _in_subset(key, sel):
            continue
        if any(cold(o) for o in objs.objects()):
            report.archived_not_read += len(objs.objects())
            continue
        chosen.append(objs)
    read_ok: set[str] = set()

    def take(scanned: _Scanned) -> None:
        for table, row in scanned.rows:
            expected[table][_row_identity(table, row)] = row
            if table not in _DERIVED:
                object_counts[table] += 1
                read_ok.add(_row_object_key(table, row))
        report.hash_mismatches.extend(scanned.problems)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify-read") as pool:
        read = functools.partial(_read_execution, store, blobs, max_object_bytes)
        for i, scanned in enumerate(_bounded_map(pool, read, chosen, workers * 8), 1):
            take(scanned)
            if progress is not None and (i % 200 == 0 or i == len(chosen)):
                progress("executions", i, len(chosen))
        report.objects_read += sum(len(o.objects()) for o in chosen)
        versions = [i for i in version_infos if _in_subset(i.key, sel)]
        read_v = functools.partial(_read_version, store, max_object_bytes)
        for i, scanned in enumerate(_bounded_map(pool, read_v, versions, workers * 8), 1):
            take(scanned)
            if progress is not None and (i % 200 == 0 or i == len(versions)):
                progress("versions", i, len(versions))
        report.objects_read += len(versions)
        # blobs of the subset not read with an execution (shared, or referenced by none)
        checked = blobs.checked()
        todo = [
            info.key.rsplit("/", 1)[-1].removesuffix(".json.zst")
            for info in blob_infos
            if _in_subset(info.key, sel)
        ]
        report.objects_read += len(todo)
        todo = [digest for digest in todo if digest not in checked]
        for i, result in enumerate(_bounded_map(pool, blobs.get, todo, workers * 8), 1):
            if isinstance(result, ObjectProblem):
                report.hash_mismatches.append(result)
            if progress is not None and (i % 200 == 0 or i == len(todo)):
                progress("blobs", i, len(todo))
        events = [i.key for i in store.list(_EVENTS_PREFIX) if _in_subset(i.key, sel)]
        check = functools.partial(_check_event, store, max_object_bytes)
        for i, problem in enumerate(_bounded_map(pool, check, events, workers * 8), 1):
            if problem is not None:
                report.hash_mismatches.append(problem)
            if progress is not None and (i % 200 == 0 or i == len(events)):
                progress("events", i, len(events))
        report.objects_read += len(events)
    object_counts["blobs"] = len(blobs.checked())
    if events:
        object_counts["events"] = len(events)
    report.objects = dict(object_counts)

    # 5. compare what the objects say with the rows
    for table in TABLES:
        have = indexed[table]
        for identity, row in expected[table].items():
            found = have.get(identity)
            object_key = _row_object_key(table, row)
            if found is None:
                if object_key not in young and object_key not in without_rows:
                    without_rows.add(object_key)  # a final state misses its node runs: once
                    report.objects_without_rows.append(object_key)
                continue
            actual, part = found
            different = [c for c in _COMPARED[table] if actual.get(c) != row.get(c)]
            if different:
                report.row_mismatches.append(
                    RowProblem(table, identity, part, f"differs from its object in {different}")
                )
        for identity, (row, part) in have.items():
            if identity in expected[table]:
                continue
            try:
                object_key = _row_object_key(table, row)
            except (ArchiveError, KeyError, TypeError):
                continue  # reported as malformed above
            if object_key in read_ok:
                # the object was read and verifies, yet did not produce this row
                report.row_mismatches.append(
                    RowProblem(table, identity, part, "its object describes something else")
                )
    return report
