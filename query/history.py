"""Lookups over the index: a workflow's history, executions by snapshot hash, version lists.

All SQL is parameterized. Pages are newest first (``created_at DESC, execution_id DESC``) with
keyset pagination: the opaque cursor holds the last row's ``(created_at, execution_id)``, so a page
costs the same wherever it is in the history and never skips or repeats a row when new captures
arrive meanwhile.

Lookups open as few day partitions as they can (see ``_lookup``): the catalog's key map says which
days hold the workflow (or hash) and how many rows each; the newest days are read first, only ids
and times, widening until the page is full; then the full rows and final states of just that page
are read from just the days they can be in. Each query names its files explicitly, so DuckDB never
globs or binds the whole index for a lookup.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import orjson

from archiver.errors import InvalidInput
from archiver.layout import check_hash, check_id
from archiver.model import VersionCommit
from archiver.timeutil import format_ts, parse_ts
from query.catalog import Catalog

__all__ = [
    "MAX_LIMIT",
    "ExecutionItem",
    "HistoryPage",
    "VersionItem",
    "current_version",
    "executions_by_hash",
    "version_list",
    "workflow_history",
]

MAX_LIMIT: Final = 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _shift(day: date, days: int) -> date:
    """``day`` moved by ``days``, clamped to ``date.min`` / ``date.max``: an archive that holds a
    record of year 1 or 9999 (written before captures were bounded) must still answer."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


def _opt_ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


@dataclass(frozen=True, slots=True)
class ExecutionItem:
    """One execution as the index knows it: its snapshot row and, when present, its outcome."""

    execution_id: str
    workflow_id: str
    snapshot_id: str
    snapshot_hash: str
    version: str
    version_seq: int
    user_id: str | None
    trigger_type: str | None
    created_at: datetime
    node_count: int
    workflow_name: str | None
    object_key: str
    stored_bytes: int
    raw_bytes: int
    replay_of: str | None
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    error_count: int | None = None
    failed_nodes: tuple[str, ...] = ()
    first_failed_node: str | None = None

    def to_json(self) -> dict[str, Any]:
        """camelCase, timestamps as RFC 3339 UTC text (the API's shape)."""
        return {
            "executionId": self.execution_id,
            "workflowId": self.workflow_id,
            "id": self.snapshot_id,
            "snapshotHash": self.snapshot_hash,
            "snapshotVersion": self.version,
            "versionSeq": self.version_seq,
            "userId": self.user_id,
            "triggerType": self.trigger_type,
            "createdAt": format_ts(self.created_at),
            "nodeCount": self.node_count,
            "workflowName": self.workflow_name,
            "storedBytes": self.stored_bytes,
            "rawBytes": self.raw_bytes,
            "replayOf": self.replay_of,
            "status": self.status,
            "startedAt": _opt_ts(self.started_at),
            "finishedAt": _opt_ts(self.finished_at),
            "durationMs": self.duration_ms,
            "errorCount": self.error_count,
            "failedNodes": list(self.failed_nodes),
            "firstFailedNode": self.first_failed_node,
        }


@dataclass(frozen=True, slots=True)
class HistoryPage:
    items: list[ExecutionItem]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class VersionItem:
    workflow_id: str
    seq: int
    version: str
    snapshot_hash: str
    parent_seq: int | None
    parent_version: str | None
    parent_hash: str | None
    level: str
    summary: str
    restores_seq: int | None
    restores_version: str | None
    created_at: datetime
    execution_id: str | None
    user_id: str | None

    def to_json(self) -> dict[str, Any]:
        """The version commit's own shape (``VersionCommit.to_json``), less its ``changes``."""
        fields = {f: getattr(self, f) for f in self.__slots__}
        body = VersionCommit(**fields, changes={}).to_json()
        del body["changes"]
        return body


# --------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return limit


def _time(value: datetime | str | None, field: str) -> datetime | None:
    if value is None:
        return None
    return parse_ts(value, field)


def _names(value: str | Sequence[str] | None, field: str) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in items):
        raise InvalidInput(f"{field} must be one or more short strings", field=field)
    return items


def _encode_cursor(kind: str, created_at: datetime, execution_id: str) -> str:
    ms = (created_at - _EPOCH) // timedelta(milliseconds=1)
    raw = orjson.dumps([kind, ms, execution_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(kind: str, cursor: str) -> tuple[datetime, str]:
    bad = InvalidInput("cursor is not one this listing returned", field="cursor")
    if not isinstance(cursor, str) or len(cursor) > 1024:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise bad from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != kind
        or isinstance(value[1], bool)
        or not isinstance(value[1], int)
        or not isinstance(value[2], str)
    ):
        raise bad
    try:
        when = _EPOCH + timedelta(milliseconds=value[1])
        execution_id = check_id(value[2], "cursor")
    except (OverflowError, InvalidInput):
        raise bad from None
    return when, execution_id


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------

_SNAPSHOT_COLUMNS: Final = (
    "execution_id, workflow_id, snapshot_id, snapshot_hash, version, version_seq, user_id, "
    "trigger_type, created_at, node_count, workflow_name, object_key, stored_bytes, raw_bytes, "
    "replay_of"
)
_FINAL_COLUMNS: Final = (
    "status",
    "started_at",
    "finished_at",
    "duration_ms",
    "error_count",
    "failed_nodes",
    "first_failed_node",
)


#: what a final_states row needs besides ``_FINAL_COLUMNS`` to pick an execution's outcome
_PICK_COLUMNS: Final = "object_key, recorded_at"


def _ended(row: Mapping[str, Any] | None) -> bool:
    """Whether ``row`` is an execution's final state (not one of its progress records)."""
    return row is not None and str(row.get("object_key") or "").endswith("/result.json.zst")


def _prefer(found: dict[str, dict[str, Any]], row: dict[str, Any]) -> None:
    """Keep per execution its final state over its progress rows (an execution that waited has
    both), else its latest progress row (``recorded_at``, then object key)."""

    def rank(r: Mapping[str, Any]) -> tuple[bool, datetime, str]:
        return (_ended(r), r.get("recorded_at") or _EPOCH, str(r.get("object_key") or ""))

    current = found.get(row["execution_id"])
    if current is None or rank(row) > rank(current):
        found[row["execution_id"]] = row


class _Where:
    """Conditions and their named parameters, built together (never any value in the SQL)."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: dict[str, Any] = {}

    def add(self, condition: str, **params: Any) -> None:
        self.conditions.append(condition)
        self.params.update(params)

    def add_in(self, column: str, name: str, values: Sequence[Any]) -> None:
        """``column IN ($name0, $name1, ...)``: constants DuckDB pushes into the Parquet scan."""
        names = [f"{name}{i}" for i in range(len(values))]
        self.conditions.append(f"{column} IN ({', '.join('$' + n for n in names)})")
        self.params.update(zip(names, values, strict=True))

    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "true"


@dataclass(frozen=True, slots=True)
class _Window:
    """Where a page may come from: a time range and the position after the cursor."""

    since: datetime | None
    until: datetime | None
    after: tuple[datetime, str] | None

    @property
    def first_day(self) -> date | None:
        return None if self.since is None else self.since.astimezone(UTC).date()

    @property
    def last_day(self) -> date | None:
        days = []
        if self.until is not None:
            days.append(self.until.astimezone(UTC).date())
        if self.after is not None:
            days.append(self.after[0].astimezone(UTC).date())
        return min(days) if days else None

    def apply(self, where: _Where) -> None:
        if self.since is not None:
            where.add("s.created_at >= $since", since=self.since)
        if self.until is not None:
            where.add("s.created_at < $until", until=self.until)
        if self.after is not None:
            where.add(
                "(s.created_at < $after_ts OR (s.created_at = $after_ts AND s.execution_id < $after_id))",
                after_ts=self.after[0],
                after_id=self.after[1],
            )


def _window(
    kind: str, since: datetime | str | None, until: datetime | str | None, cursor: str | None
) -> _Window:
    return _Window(
        _time(since, "since"),
        _time(until, "until"),
        None if cursor is None else _decode_cursor(kind, cursor),
    )


def _item(row: dict[str, Any], final: dict[str, Any] | None) -> ExecutionItem:
    outcome = final or {}
    failed = outcome.get("failed_nodes") or ()
    return ExecutionItem(
        execution_id=row["execution_id"],
        workflow_id=row["workflow_id"],
        snapshot_id=row["snapshot_id"],
        snapshot_hash=row["snapshot_hash"],
        version=row["version"],
        version_seq=row["version_seq"],
        user_id=row["user_id"],
        trigger_type=row["trigger_type"],
        created_at=row["created_at"],
        node_count=row["node_count"],
        workflow_name=row["workflow_name"],
        object_key=row["object_key"],
        stored_bytes=row["stored_bytes"],
        raw_bytes=row["raw_bytes"],
        replay_of=row["replay_of"],
        status=outcome.get("status"),
        started_at=outcome.get("started_at"),
        finished_at=outcome.get("finished_at"),
        duration_ms=outcome.get("duration_ms"),
        error_count=outcome.get("error_count"),
        failed_nodes=tuple(failed),
        first_failed_node=outcome.get("first_failed_node"),
    )


def _page(
    kind: str, rows: list[dict[str, Any]], finals: dict[str, dict[str, Any]], limit: int
) -> HistoryPage:
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_item(r, finals.get(r["execution_id"])) for r in rows]
    next_cursor = None
    if more and items:
        last = items[-1]
        next_cursor = _encode_cursor(kind, last.created_at, last.execution_id)
    return HistoryPage(items, next_cursor)


def _batches(days: list[tuple[date, int]], wanted: Callable[[], int]) -> Iterator[list[date]]:
    """Days to open next, newest first: enough for what is still ``wanted()``, by the counts.

    Counts come from the key map and may overcount (filters, duplicates), so rounds repeat; each
    is at least twice as wide as the last, which bounds the rounds to about log2(days).
    """
    i, min_batch = 0, 1
    while i < len(days):
        need = wanted()
        if need <= 0:
            return
        batch: list[date] = []
        counted = 0
        while i < len(days) and (counted < need or len(batch) < min_batch):
            batch.append(days[i][0])
            counted += days[i][1]
            i += 1
        yield batch
        min_batch = 2 * len(batch)


def _lookup(
    catalog: Catalog,
    kind: str,
    key: str,
    where: _Where,
    window: _Window,
    limit: int,
    *,
    workflow_id: str | None = None,
    statuses: list[str] | None = None,
) -> HistoryPage:
    """Newest-first page of snapshots matching ``where``, with their final states.

    1. the key map names the days holding ``key`` (no Parquet file opened);
    2. rounds over the newest days read only ids and times (``execution_id``, ``created_at``) of
       the matching rows; with a status filter, the matching final states of the days in play
       are read once each and the ids intersected;
    3. the full rows of just the page are read from just the page's days, and their final states
       (unless step 2 read them already) from the days they can be in (see ``_finals``).
    Days hold disjoint time ranges (``dt`` is the UTC day of ``created_at``), so rounds, each
    sorted newest first, concatenate into one sorted list.
    """
    wanted = limit + 1

    def run() -> HistoryPage:
        days = catalog.key_days(kind, key, first=window.first_day, last=window.last_day)
        picked: list[dict[str, Any]] = []
        matched: dict[str, dict[str, Any]] = {}  # final states with a wanted status, by id
        finals_from: date | None = None  # ... read for every day >= this
        for batch in _batches(days, lambda: wanted - len(picked)):
            files = catalog.files_for("snapshots", days=batch)
            if not files:
                continue
            params = {**where.params, "files": files}
            sql = (
                "SELECT s.execution_id, s.workflow_id, s.created_at, s.dt "
                f"FROM {catalog.source('snapshots')} AS s "
                f"WHERE {where.sql()} ORDER BY s.created_at DESC, s.execution_id DESC"
            )
            if statuses is None:
                sql += " LIMIT $limit"
                params["limit"] = wanted - len(picked)
            rows = catalog.rows(sql, params, retry=False)
            if statuses is not None:
                low = _shift(min(batch), -1)
                if finals_from is None or low < finals_from:
                    matched.update(
                        _matching_finals(catalog, workflow_id, statuses, low, finals_from)
                    )
                    finals_from = low
                rows = [r for r in rows if r["execution_id"] in matched]
            picked.extend(rows[: wanted - len(picked)])
        page = picked[:limit]
        full = _full_rows(catalog, page)
        finals = matched if statuses is not None else _finals(catalog, page, workflow_id)
        rows = [full[r["execution_id"]] for r in picked if r["execution_id"] in full]
        if len(picked) > limit:
            rows.append(picked[limit])  # only its presence matters: there is a next page
        return _page("h" if kind == "workflow" else "x", rows, finals, limit)

    return catalog.retrying(run)


def _matching_finals(
    catalog: Catalog,
    workflow_id: str | None,
    statuses: list[str],
    first: date,
    before: date | None,
) -> dict[str, dict[str, Any]]:
    """The workflow's final states with one of ``statuses`` in ``first`` <= day < ``before``, by
    execution id; only the days the key map names for (workflow, status) are read."""
    where = _Where()
    where.add_in("status", "status", statuses)
    if workflow_id is not None:
        where.add("workflow_id = $wf", wf=workflow_id)
        last = None if before is None else _shift(before, -1)
        days = catalog.key_days(
            "final_status", [f"{workflow_id}/{s}" for s in statuses], first=first, last=last
        )
        files = catalog.files_for("final_states", days=[d for d, _ in days])
    else:
        files = catalog.files_for("final_states", first=first, before=before)
    if not files:
        return {}
    rows = catalog.rows(
        f"SELECT execution_id, {', '.join(_FINAL_COLUMNS)}, {_PICK_COLUMNS} "
        f"FROM {catalog.source('final_states')} WHERE {where.sql()}",
        {**where.params, "files": files},
        retry=False,
    )
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        _prefer(best, row)
    # an execution matched by a progress row (waiting …) counts with its outcome: read all its
    # rows from the days it can have any (it may have ended, or moved on, later)
    pending = sorted(eid for eid, row in best.items() if not _ended(row))
    if pending:
        for row in _rows_of(catalog, workflow_id, pending, first):
            _prefer(best, row)
    return {eid: row for eid, row in best.items() if row["status"] in statuses}


def _rows_of(
    catalog: Catalog, workflow_id: str | None, execution_ids: list[str], first: date
) -> list[dict[str, Any]]:
    """Every final_states row of ``execution_ids`` on or after ``first``."""
    if workflow_id is not None:
        days = [d for d, _ in catalog.key_days("final_workflow", [workflow_id], first=first)]
        files = catalog.files_for("final_states", days=days)
    else:
        files = catalog.files_for("final_states", first=first)
    if not files:
        return []
    where = _Where()
    if workflow_id is not None:
        where.add("workflow_id = $wf", wf=workflow_id)
    where.add_in("execution_id", "id", execution_ids)
    return catalog.rows(
        f"SELECT execution_id, {', '.join(_FINAL_COLUMNS)}, {_PICK_COLUMNS} "
        f"FROM {catalog.source('final_states')} WHERE {where.sql()}",
        {**where.params, "files": files},
        retry=False,
    )


def _full_rows(catalog: Catalog, page: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if not page:
        return {}
    files = catalog.files_for("snapshots", days=sorted({r["dt"] for r in page}))
    where = _Where()
    # the workflow filter lets row-group statistics skip most of each day (rows are sorted by it)
    where.add_in("workflow_id", "wf", sorted({r["workflow_id"] for r in page}))
    where.add_in("execution_id", "id", [r["execution_id"] for r in page])
    rows = catalog.rows(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM {catalog.source('snapshots')} WHERE {where.sql()}",
        {**where.params, "files": files},
        retry=False,
    )
    return {r["execution_id"]: r for r in rows}


#: most executions finish within this many days of their start: their final states are looked
#: for there first, and in later days only for the executions still missing
_FINISH_WINDOW_DAYS: Final = 7


def _finals(
    catalog: Catalog, page: list[dict[str, Any]], workflow_id: str | None
) -> dict[str, dict[str, Any]]:
    """The final states of the executions of one page.

    A final state's day is its finish day, never before its snapshot's day
    (``archiver.index.final_state_day``; one day earlier is still read, for indexes written before
    that rule), but possibly any time later. Only days where the key map has
    final states of the page's workflows are read: first up to ``_FINISH_WINDOW_DAYS`` after the
    page's newest day, then, for executions not found yet, the days after that.
    """
    if not page:
        return {}
    first = _shift(min(r["dt"] for r in page), -1)
    near_end = _shift(max(r["dt"] for r in page), _FINISH_WINDOW_DAYS)
    workflows = (
        [workflow_id] if workflow_id is not None else sorted({r["workflow_id"] for r in page})
    )
    days = [d for d, _ in catalog.key_days("final_workflow", workflows, first=first)]
    found: dict[str, dict[str, Any]] = {}
    for chosen in ([d for d in days if d <= near_end], [d for d in days if d > near_end]):
        missing = [r for r in page if not _ended(found.get(r["execution_id"]))]
        files = catalog.files_for("final_states", days=chosen)
        if not missing or not files:
            continue
        where = _Where()
        where.add_in("workflow_id", "wf", sorted({r["workflow_id"] for r in missing}))
        where.add_in("execution_id", "id", [r["execution_id"] for r in missing])
        rows = catalog.rows(
            f"SELECT execution_id, {', '.join(_FINAL_COLUMNS)}, {_PICK_COLUMNS} "
            f"FROM {catalog.source('final_states')} WHERE {where.sql()}",
            {**where.params, "files": files},
            retry=False,
        )
        for row in rows:
            _prefer(found, row)
    return found


# --------------------------------------------------------------------------------------------
# public lookups
# --------------------------------------------------------------------------------------------


def workflow_history(
    catalog: Catalog,
    workflow_id: str,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    status: str | Sequence[str] | None = None,
    trigger_type: str | Sequence[str] | None = None,
    version: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> HistoryPage:
    """The executions of ``workflow_id``, newest first.

    ``since`` (inclusive) and ``until`` (exclusive) bound ``created_at``; ``status`` and
    ``trigger_type`` take one value or several; ``status`` only matches executions whose final
    state is recorded. ``cursor`` is a page's ``next_cursor``.
    """
    wf = check_id(workflow_id, "workflowId")
    limit = _limit(limit)
    statuses = _names(status, "status")
    triggers = _names(trigger_type, "triggerType")
    if version is not None and (not isinstance(version, str) or not 0 < len(version) <= 64):
        raise InvalidInput("version must be a short string", field="version")
    window = _window("h", since, until, cursor)
    where = _Where()
    where.add("s.workflow_id = $wf", wf=wf)
    window.apply(where)
    if triggers is not None:
        where.add_in("s.trigger_type", "trigger", triggers)
    if version is not None:
        where.add("s.version = $version", version=version)
    return _lookup(catalog, "workflow", wf, where, window, limit, workflow_id=wf, statuses=statuses)


def executions_by_hash(
    catalog: Catalog,
    snapshot_hash: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> HistoryPage:
    """Every execution that ran the structure ``snapshot_hash`` (any workflow), newest first."""
    digest = check_hash(snapshot_hash)
    limit = _limit(limit)
    window = _window("x", None, None, cursor)
    where = _Where()
    where.add("s.snapshot_hash = $hash", hash=digest)
    window.apply(where)
    return _lookup(catalog, "hash", digest, where, window, limit)


def _version_item(row: dict[str, Any]) -> VersionItem:
    return VersionItem(
        workflow_id=row["workflow_id"],
        seq=row["seq"],
        version=row["version"],
        snapshot_hash=row["snapshot_hash"],
        parent_seq=row["parent_seq"],
        parent_version=row["parent_version"],
        parent_hash=row["parent_hash"],
        level=row["level"],
        summary=row["summary"],
        restores_seq=row["restores_seq"],
        restores_version=row["restores_version"],
        created_at=row["created_at"],
        execution_id=row["execution_id"],
        user_id=row["user_id"],
    )


_VERSION_COLUMNS: Final = (
    "workflow_id, seq, version, snapshot_hash, parent_seq, parent_version, parent_hash, level, "
    "summary, restores_seq, restores_version, created_at, execution_id, user_id"
)


def version_list(catalog: Catalog, workflow_id: str) -> list[VersionItem]:
    """Every indexed version of ``workflow_id``, newest (highest seq) first."""
    wf = check_id(workflow_id, "workflowId")
    rows = catalog.rows(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE workflow_id = $wf ORDER BY seq DESC",
        {"wf": wf},
    )
    return [_version_item(r) for r in rows]


def current_version(catalog: Catalog, workflow_id: str) -> VersionItem | None:
    """The indexed head of ``workflow_id``'s chain (highest seq), or None."""
    wf = check_id(workflow_id, "workflowId")
    rows = catalog.rows(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE workflow_id = $wf "
        "ORDER BY seq DESC LIMIT 1",
        {"wf": wf},
    )
    return _version_item(rows[0]) if rows else None
