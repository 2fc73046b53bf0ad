"""Manifest compaction: the parts of each (table, day) merged into one file (``docs/index.md``).

Live writers leave many small parts per day (one per flush; one per tag or annotation event).
:func:`compact_index` merges the parts of every complete day into ONE file, deduplicated and sorted
the way :func:`archiver.index.encode_part` sorts (same Parquet layout, bloom filters, row groups
and metadata as any other part), then retires the parts it replaced in two steps::

    1. put   index/<table>/dt=D/part-cmp<12 hex>-000001.parquet        (create-only)
    2. put   index/_compactions/<table>/dt=D/<ts>-cmp<12 hex>.json     (write-once record:
                                                                        output(s), replaced parts)
    3. later run, once the record is ``grace_seconds`` old: for each replaced part, check that the
       output exists and holds every row identity of the part, then delete the part; when all of
       its parts are gone, delete the record.

Readers deduplicate (invariant 8), so between 1 and 3 a row sitting in a part *and* in the output
is returned once; nothing is rewritten, only new files are added and superseded ones removed.

Safety, whatever happens in between:

* a part is deleted only when it is listed in a record whose output exists and contains all of the
  part's row identities (checked right before the delete), so every row always stays in some file;
* killed after 1 and before 2: the output is an ordinary file of its day that duplicates rows; the
  next run compacts it together with the parts (and retires it);
* two compactors racing: each writes its own output and record; the worst case is duplicate rows
  for a while, which readers drop and a later run merges;
* parts written while a run is going are not in its listing: they are left for the next run;
* a record whose output is gone (replaced by a later compaction, or removed by ``rebuild_index``)
  is obsolete: it is deleted and its parts, if any remain, count as ordinary parts again.

Tables: the four index tables and the event tables of :mod:`archiver.events` (``tag_events``,
``annotations``), whose rows have an identity their readers deduplicate on. ``retention_events``
is left alone: no view reads it, it gets one part per retention run, and
``rebuild_retention_index`` is what rewrites it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from archiver.errors import ArchiveError, InvalidInput, NotFound
from archiver.events import EVENT_TABLES, encode_event_part
from archiver.index import (
    INDEX_PREFIX,
    MAX_ROWS_PER_PART,
    SCHEMAS,
    ProgressCallback,
    encode_part,
    part_key,
)
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.timeutil import format_ts, utcnow

__all__ = [
    "COMPACTABLE_TABLES",
    "COMPACTIONS_PREFIX",
    "DEFAULT_GRACE_SECONDS",
    "IDENTITY_COLUMNS",
    "CompactionReport",
    "compact_index",
]

_log = logging.getLogger(__name__)

#: where the write-once compaction records live (outside every table folder: no reader globs it)
COMPACTIONS_PREFIX: Final = f"{INDEX_PREFIX}_compactions/"
DEFAULT_GRACE_SECONDS: Final = 3600.0
RECORD_KIND: Final = "index-compaction"
RECORD_FORMAT: Final = 1

#: what makes two rows "the same row" for the readers: the columns the views partition by to
#: return each row once (``query.catalog.DEDUP_COLUMNS`` without ``dt``, which a day shares).
#: Identity first; the rest are constant for an identity. A test keeps the two in step.
IDENTITY_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "snapshots": (
        "execution_id",
        "workflow_id",
        "snapshot_hash",
        "created_at",
        "version",
        "trigger_type",
        "user_id",
    ),
    "final_states": ("execution_id", "workflow_id", "status", "finished_at", "object_key"),
    "versions": ("workflow_id", "seq", "snapshot_hash", "version", "execution_id"),
    "node_runs": ("execution_id", "node_name", "run_index", "workflow_id"),
    "tag_events": ("event_id", "workflow_id"),
    "annotations": ("event_id", "workflow_id"),
}
#: of several copies of a row, keep the one the readers return (``ORDER BY`` of their dedup)
_KEEP_FIRST: Final[Mapping[str, str]] = {
    "snapshots": "object_key",
    "final_states": "recorded_at",
    "versions": "created_at",
    "node_runs": "object_key",
    "tag_events": "object_key",
    "annotations": "object_key",
}
_TABLE_SCHEMAS: Final[Mapping[str, pa.Schema]] = {**SCHEMAS, **EVENT_TABLES}
COMPACTABLE_TABLES: Final = tuple(_TABLE_SCHEMAS)

#: a file the readers read: ``index/<table>/dt=YYYY-MM-DD/<name>.parquet``
_FILE_RE: Final = re.compile(
    r"index/(?P<table>[a-z_]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/[A-Za-z0-9][A-Za-z0-9._=-]*\.parquet"
)
_RECORD_RE: Final = re.compile(
    r"index/_compactions/(?P<table>[a-z_]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/[A-Za-z0-9._-]+\.json"
)

Row = dict[str, Any]
Identity = tuple[Any, ...]


@dataclass(slots=True)
class CompactionReport:
    """What :func:`compact_index` did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    #: one entry per (table, day) compacted: table, day, parts, rowsIn, rows, outputs, record
    compacted: list[dict[str, Any]] = field(default_factory=list)
    #: table -> rows written into compacted files
    rows: dict[str, int] = field(default_factory=dict)
    #: parts deleted (listed in a record older than the grace period, checked against its output)
    parts_deleted: list[str] = field(default_factory=list)
    #: records still within their grace period (their parts are kept for now)
    records_pending: int = 0
    #: records finished (every part they replaced is gone) or obsolete (output gone): deleted
    records_removed: list[str] = field(default_factory=list)
    #: days left alone or parts kept for a reason that needs a look (each ``{key, reason}``)
    problems: list[dict[str, str]] = field(default_factory=list)
    #: deletes the store refused (e.g. Object Lock on index parts)
    delete_failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.delete_failures

    @property
    def parts_replaced(self) -> int:
        return sum(int(c["parts"]) for c in self.compacted)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dryRun": self.dry_run,
            "daysCompacted": len(self.compacted),
            "partsReplaced": self.parts_replaced,
            "rows": dict(self.rows),
            "compacted": list(self.compacted),
            "partsDeleted": list(self.parts_deleted),
            "recordsPending": self.records_pending,
            "recordsRemoved": list(self.records_removed),
            "problems": list(self.problems),
            "deleteFailures": list(self.delete_failures),
        }


@dataclass(frozen=True, slots=True)
class _Record:
    key: str
    table: str
    day: date
    created_at: datetime
    outputs: tuple[str, ...]
    replaced: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# keys, records, rows
# --------------------------------------------------------------------------------------------


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"


def _record_key(table: str, day: date, when: datetime, compactor: str) -> str:
    return f"{COMPACTIONS_PREFIX}{table}/dt={day.isoformat()}/{_stamp(when)}-{compactor}.json"


def _output_key(table: str, day: date, compactor: str, seq: int) -> str:
    if table in SCHEMAS:
        return part_key(table, day, compactor, seq)
    # event tables: the same pattern (rebuild_event_index and the readers accept it)
    return f"{INDEX_PREFIX}{table}/dt={day.isoformat()}/part-{compactor}-{seq:06d}.parquet"


def _encode_record(
    table: str,
    day: date,
    when: datetime,
    compactor: str,
    outputs: Sequence[str],
    replaced: Sequence[str],
    rows: int,
) -> bytes:
    body = {
        "kind": RECORD_KIND,
        "format": RECORD_FORMAT,
        "table": table,
        "day": day.isoformat(),
        "createdAt": format_ts(when),
        "compactor": compactor,
        "rows": rows,
        "outputs": list(outputs),
        "replaced": sorted(replaced),
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _decode_record(key: str, data: bytes) -> _Record:
    body = orjson.loads(data)
    if not isinstance(body, dict) or body.get("kind") != RECORD_KIND:
        raise ValueError("not a compaction record")
    if body.get("format") != RECORD_FORMAT:
        raise ValueError(f"unknown compaction record format {body.get('format')!r}")
    created = datetime.fromisoformat(str(body["createdAt"]).replace("Z", "+00:00"))
    outputs = tuple(str(k) for k in body["outputs"])
    replaced = tuple(str(k) for k in body["replaced"])
    table, day = str(body["table"]), date.fromisoformat(str(body["day"]))
    folder = f"{INDEX_PREFIX}{table}/dt={day.isoformat()}/"
    if not outputs or any(not k.startswith(folder) for k in (*outputs, *replaced)):
        raise ValueError("record names files outside its table and day")
    return _Record(key, table, day, created.astimezone(UTC), outputs, replaced)


def _read_table(store: ObjectStore, key: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A manifest file as an Arrow table (NotFound when it is gone)."""
    data = store.get(key)
    try:
        wanted = None if columns is None else list(columns)
        return pq.read_table(pa.BufferReader(data), columns=wanted)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise _Unreadable(f"not readable Parquet: {err}") from err


class _Unreadable(Exception):
    """A part that pyarrow cannot read, or whose columns are not the table's."""


def _identities(table: str, data: pa.Table) -> set[Identity]:
    """Row identities of a file (timestamps as their integer value: much cheaper to convert)."""
    columns = []
    for name in IDENTITY_COLUMNS[table]:
        column = data.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    return set(zip(*columns, strict=True))


def _file_identities(store: ObjectStore, table: str, key: str) -> set[Identity]:
    return _identities(table, _read_table(store, key, IDENTITY_COLUMNS[table]))


def _order_value(value: Any) -> tuple[int, Any]:
    return (1, None) if value is None else (0, value)


def _merge(table: str, parts: Iterable[pa.Table]) -> list[Row]:
    """Every row of ``parts`` once (by reader identity), the copy the readers would return."""
    keep = _KEEP_FIRST[table]
    identity = IDENTITY_COLUMNS[table]
    chosen: dict[Identity, Row] = {}
    for data in parts:
        for row in data.to_pylist():
            key = tuple(row[c] for c in identity)
            have = chosen.get(key)
            if have is None or _order_value(row[keep]) < _order_value(have[keep]):
                chosen[key] = row
    return list(chosen.values())


def _encode(table: str, rows: Sequence[Row], compactor: str) -> bytes:
    if table in SCHEMAS:
        return encode_part(table, rows, writer_id=compactor)
    return encode_event_part(table, rows)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Listing:
    #: (table, day) -> file keys in that day folder
    files: dict[tuple[str, date], list[str]] = field(default_factory=dict)
    records: list[ObjectInfo] = field(default_factory=list)


def _list(store: ObjectStore, tables: frozenset[str]) -> _Listing:
    listing = _Listing()
    for info in store.list(INDEX_PREFIX):
        if info.key.startswith(COMPACTIONS_PREFIX):
            match = _RECORD_RE.fullmatch(info.key)
            if match is not None and match["table"] in tables:
                listing.records.append(info)
            continue
        match = _FILE_RE.fullmatch(info.key)
        if match is None or match["table"] not in tables:
            continue
        try:
            day = date.fromisoformat(match["dt"])
        except ValueError:
            continue
        listing.files.setdefault((match["table"], day), []).append(info.key)
    listing.records.sort(key=lambda i: i.key)  # per table and day, oldest first
    return listing


def _load_records(
    store: ObjectStore, infos: Iterable[ObjectInfo], report: CompactionReport
) -> list[_Record]:
    records = []
    for info in infos:
        try:
            records.append(_decode_record(info.key, store.get(info.key)))
        except NotFound:
            continue  # finished and removed by another run meanwhile
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as err:
            report.problems.append({"key": info.key, "reason": f"unreadable record: {err}"})
    return records


def _check_tables(tables: Iterable[str] | None) -> frozenset[str]:
    if tables is None:
        return frozenset(COMPACTABLE_TABLES)
    chosen = frozenset(tables)
    unknown = sorted(chosen - set(COMPACTABLE_TABLES))
    if unknown:
        raise InvalidInput(
            f"cannot compact {unknown}: tables are {', '.join(COMPACTABLE_TABLES)}", field="tables"
        )
    return chosen


def compact_index(
    store: ObjectStore,
    *,
    tables: Iterable[str] | None = None,
    days: Iterable[date] | None = None,
    before: date | None = None,
    include_today: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    min_parts: int = 2,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> CompactionReport:
    """Merge the parts of each (table, day) into one file; delete parts replaced long enough ago.

    Days: ``days`` if given; else every day before ``before`` (default: today, UTC — a day still
    being written is left alone; ``include_today`` takes today too). A day is compacted when it
    holds at least ``min_parts`` files not already replaced by an earlier compaction. Parts that a
    record replaced are deleted once the record is ``grace_seconds`` old (0: in this same run),
    each after checking that the record's output holds all its rows. ``dry_run`` only reports
    which days would be compacted and how many parts are due for deletion.

    ``progress(stage, done, total)``: ``list``, ``written`` (a day's output is stored, its record
    not yet), ``compact`` (a day is done), ``delete`` (parts removed).
    """
    if min_parts < 2:
        raise InvalidInput("min_parts must be at least 2", field="min_parts")
    if grace_seconds < 0:
        raise InvalidInput("grace_seconds must not be negative", field="grace_seconds")
    chosen = _check_tables(tables)
    now = clock().astimezone(UTC)
    if days is not None:
        wanted_days: frozenset[date] | None = frozenset(days)
        limit = None
    else:
        wanted_days = None
        limit = before if before is not None else now.date() + timedelta(days=int(include_today))
    report = CompactionReport(dry_run=dry_run)
    listing = _list(store, chosen)
    if progress is not None:
        n = sum(len(v) for v in listing.files.values())
        progress("list", n, n)

    def selected(day: date) -> bool:
        if wanted_days is not None:
            return day in wanted_days
        return limit is None or day < limit

    records = _load_records(
        store, (i for i in listing.records if selected(_record_day(i.key))), report
    )
    todo = _plan(listing, records, chosen, selected, min_parts)
    compactor = "cmp" + secrets.token_hex(6)
    for i, (table, day, inputs) in enumerate(todo, 1):
        if dry_run:
            report.compacted.append(
                {"table": table, "day": day.isoformat(), "parts": len(inputs), "outputs": []}
            )
            continue
        _compact_day(store, table, day, inputs, compactor, now, report, progress, i, len(todo))
        if progress is not None:
            progress("compact", i, len(todo))
    if not dry_run and todo:
        # the records just written (due at once when grace_seconds is 0)
        fresh = _list(store, chosen)
        records = _load_records(
            store, (i for i in fresh.records if selected(_record_day(i.key))), report
        )
    _retire(store, records, grace_seconds, clock, dry_run, report, progress)
    return report


def _record_day(key: str) -> date:
    match = _RECORD_RE.fullmatch(key)
    assert match is not None  # listed through _RECORD_RE
    try:
        return date.fromisoformat(match["dt"])
    except ValueError:
        return date.min


def _plan(
    listing: _Listing,
    records: Sequence[_Record],
    tables: frozenset[str],
    selected: Callable[[date], bool],
    min_parts: int,
) -> list[tuple[str, date, list[str]]]:
    """(table, day, input files) of each day to compact, oldest day first."""
    todo = []
    for (table, day), keys in sorted(listing.files.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if table not in tables or not selected(day):
            continue
        present = set(keys)
        # parts an earlier compaction replaced, whose output is still there: already covered
        covered = {
            k
            for r in records
            if r.table == table and r.day == day and present.issuperset(r.outputs)
            for k in r.replaced
        }
        inputs = sorted(present - covered)
        if len(inputs) >= min_parts:
            todo.append((table, day, inputs))
    return todo


def _compact_day(
    store: ObjectStore,
    table: str,
    day: date,
    inputs: Sequence[str],
    compactor: str,
    now: datetime,
    report: CompactionReport,
    progress: ProgressCallback | None,
    done: int,
    total: int,
) -> None:
    schema = _TABLE_SCHEMAS[table]
    parts: list[pa.Table] = []
    read: list[str] = []
    for key in inputs:
        try:
            data = _read_table(store, key)
        except NotFound:
            continue  # removed since the listing (another compaction, a rebuild): covered there
        except _Unreadable as err:
            report.problems.append({"key": key, "reason": f"{err}; day left as it is"})
            return
        if set(data.column_names) != set(schema.names):
            report.problems.append(
                {
                    "key": key,
                    "reason": "columns differ from the current index format; day left as it is "
                    "(rebuild-index rewrites it)",
                }
            )
            return
        parts.append(data)
        read.append(key)
    if len(read) < 2:
        return  # nothing left to merge
    rows_in = sum(p.num_rows for p in parts)
    rows = _merge(table, parts)
    outputs = []
    for seq, start in enumerate(range(0, max(len(rows), 1), MAX_ROWS_PER_PART), 1):
        key = _output_key(table, day, compactor, seq)
        store.put(key, _encode(table, rows[start : start + MAX_ROWS_PER_PART], compactor))
        outputs.append(key)
    if progress is not None:
        progress("written", done, total)
    record = _record_key(table, day, now, compactor)
    store.put(record, _encode_record(table, day, now, compactor, outputs, read, len(rows)))
    report.compacted.append(
        {
            "table": table,
            "day": day.isoformat(),
            "parts": len(read),
            "rowsIn": rows_in,
            "rows": len(rows),
            "outputs": outputs,
            "record": record,
        }
    )
    report.rows[table] = report.rows.get(table, 0) + len(rows)


def _retire(
    store: ObjectStore,
    records: Sequence[_Record],
    grace_seconds: float,
    clock: Callable[[], datetime],
    dry_run: bool,
    report: CompactionReport,
    progress: ProgressCallback | None,
) -> None:
    """Delete the parts of records older than the grace period (oldest record first)."""
    cutoff = clock().astimezone(UTC) - timedelta(seconds=grace_seconds)
    due = [r for r in records if r.created_at <= cutoff]
    report.records_pending += len(records) - len(due)
    total = sum(len(r.replaced) for r in due)
    done = 0
    for record in sorted(due, key=lambda r: (r.created_at, r.key)):
        if dry_run:
            done += len(record.replaced)
            report.parts_deleted.extend(k for k in record.replaced if store.head(k) is not None)
            continue
        remaining = _retire_one(store, record, report)
        done += len(record.replaced)
        if progress is not None:
            progress("delete", done, total)
        if remaining == 0:
            try:
                store.delete(record.key)
            except ArchiveError as err:
                report.delete_failures.append({"key": record.key, "reason": str(err)})
            else:
                report.records_removed.append(record.key)


def _retire_one(store: ObjectStore, record: _Record, report: CompactionReport) -> int:
    """Delete the record's parts that its output covers; the number of parts still there."""
    table = record.table
    covered: set[Identity] = set()
    try:
        for output in record.outputs:
            covered |= _file_identities(store, table, output)
    except NotFound:
        # the output was replaced by a later compaction or removed by a rebuild: this record is
        # obsolete, and whatever parts it names are ordinary parts again
        _log.info("compaction record %s is obsolete (its output is gone)", record.key)
        return 0
    except _Unreadable as err:
        report.problems.append({"key": record.key, "reason": f"output unreadable: {err}"})
        return len(record.replaced)
    remaining = 0
    outputs = set(record.outputs)
    for key in record.replaced:
        if key in outputs:  # pragma: no cover - never written that way
            continue
        try:
            mine = _file_identities(store, table, key)
        except NotFound:
            continue  # already gone
        except _Unreadable as err:
            report.problems.append({"key": key, "reason": f"kept: {err}"})
            remaining += 1
            continue
        missing = mine - covered
        if missing:
            report.problems.append(
                {
                    "key": key,
                    "reason": f"kept: {len(missing)} row(s) are not in {sorted(outputs)[0]}",
                }
            )
            remaining += 1
            continue
        try:
            store.delete(key)
        except ArchiveError as err:  # e.g. Object Lock on index parts
            report.delete_failures.append({"key": key, "reason": str(err)})
            remaining += 1
        else:
            report.parts_deleted.append(key)
    return remaining
