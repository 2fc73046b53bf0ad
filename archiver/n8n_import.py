"""Backfill from n8n's own database: past executions and saved versions into the archive.

Reads n8n's tables (``docs/n8n-import.md``; schema of n8n 2.41.1 in ``tests/fixtures/n8n/``):

- ``execution_entity`` (id, workflowId, status, mode, createdAt, startedAt, stoppedAt, waitTill,
  retryOf) joined with ``execution_data`` (workflowData JSON, data = flatted ``IRunExecutionData``)
  → one snapshot per execution (its id, workflow id and ``createdAt`` kept, ``source: backfill``)
  and its final state (a progress record while n8n says it is still ``new``/``running``/``waiting``);
- ``workflow_history`` rows that no imported execution ran → version commits of their own (no
  execution: they never count as one), with n8n's ``versionId`` and ``createdAt``.

Idempotent and resumable without a checkpoint: an execution whose snapshot exists is skipped
("already archived") — whoever wrote it, the live hook included, whose copy differs a little from
n8n's stored one — and only a missing final state is completed. A row that cannot be read
(unparseable JSON, no ``execution_data``) is reported and skipped before anything is written.

SQLite through the standard library; Postgres through psycopg 3 (imported only when used).
"""

from __future__ import annotations

import dataclasses
import queue
import sqlite3
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import orjson

from archiver.archive import Archive
from archiver.capture import trigger_kind
from archiver.errors import (
    ArchiveError,
    ImmutableConflict,
    InvalidInput,
    StorageFull,
    StoreUnavailable,
)
from archiver.final_state import NON_TERMINAL_STATUSES
from archiver.layout import (
    check_id,
    execution_prefix,
    is_progress_key,
    result_key,
    snapshot_key,
)
from archiver.timeutil import format_ts

__all__ = [
    "ImportOptions",
    "ImportReport",
    "N8nSource",
    "PostgresSource",
    "SqliteSource",
    "import_n8n",
    "trigger_type_of",
]

#: n8n's execution mode → the archive's ``triggerType`` (``trigger``: the workflow's trigger kind)
_MODE_TRIGGER: Mapping[str, str] = {
    "manual": "manual",
    "webhook": "webhook",
    "chat": "chat",
    "cli": "cli",
    "retry": "retry",
    "error": "error",
    "integrated": "subworkflow",
    "internal": "internal",
    "evaluation": "evaluation",
}

_EXECUTION_COLUMNS = (
    'e."id", e."workflowId", e."status", e."mode", e."createdAt", e."startedAt", '
    'e."stoppedAt", e."waitTill", e."retryOf", d."workflowData"{text}, d."data", '
    'd."executionId" IS NOT NULL, {version}'
)


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One execution as n8n's database holds it (times as aware UTC datetimes)."""

    id: str
    workflow_id: str
    status: str
    mode: str
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    wait_till: datetime | None
    retry_of: str | None
    workflow_data: str | None
    data: str | None
    has_data: bool
    #: the saved version it ran (``execution_entity.workflowVersionId``, n8n 2.x)
    version_id: str | None = None
    #: why the row cannot be read (a time that is not one): reported, never imported
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One saved version (``workflow_history``)."""

    version_id: str
    workflow_id: str
    created_at: datetime
    nodes: str
    connections: str
    name: str | None


@dataclass(frozen=True, slots=True)
class ImportOptions:
    workflow_ids: tuple[str, ...] = ()
    since: datetime | None = None  # n8n's createdAt, inclusive
    until: datetime | None = None  # exclusive
    limit: int | None = None
    dry_run: bool = False
    history: bool = True
    jobs: int = 4  # writer threads (each workflow on one of them, in order)
    #: prepended to n8n's execution ids (and retryOf): the n8n hook's EXECVAULT_EXECUTION_ID_PREFIX
    id_prefix: str = ""


@dataclass
class ImportReport:
    """What an import did; ``to_json`` is the ``--json`` summary."""

    total: int = 0
    imported: int = 0
    completed: int = 0  # snapshot there, final state added
    skipped_existing: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    versions_imported: int = 0
    versions_skipped: int = 0
    versions_failed: list[dict[str, str]] = field(default_factory=list)
    in_progress: int = 0  # imported with a progress record (n8n says still running/waiting)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def rate(self) -> float:
        done = self.imported + self.completed + self.skipped_existing + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "executions": self.total,
            "imported": self.imported,
            "completed": self.completed,
            "skippedExisting": self.skipped_existing,
            "inProgress": self.in_progress,
            "failed": len(self.failed),
            "failures": self.failed,
            "versionsImported": self.versions_imported,
            "versionsSkipped": self.versions_skipped,
            "versionsFailed": self.versions_failed,
            "seconds": round(self.seconds, 3),
            "executionsPerSecond": round(self.rate, 1),
        }


def _unreadable(row: tuple[Any, ...], problem: str) -> ExecutionRow:
    return ExecutionRow(
        id=str(row[0]),
        workflow_id=str(row[1]),
        status="unknown",
        mode="",
        created_at=datetime.min.replace(tzinfo=UTC),
        started_at=None,
        stopped_at=None,
        wait_till=None,
        retry_of=None,
        workflow_data=None,
        data=None,
        has_data=False,
        problem=problem,
    )


class N8nSource(Protocol):
    """Read access to one n8n database."""

    def count(self, options: ImportOptions) -> int: ...

    def executions(self, options: ImportOptions) -> Iterator[ExecutionRow]: ...

    def history(self, options: ImportOptions) -> list[HistoryRow]: ...

    def workflow_settings(self) -> dict[str, tuple[str | None, str | None]]: ...

    def executed_versions(self) -> set[str]: ...

    def close(self) -> None: ...


def _utc(value: object, column: str) -> datetime | None:
    """A time column: SQLite's ``YYYY-MM-DD HH:MM:SS.fff`` text (UTC) or a driver datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{column} is not a time", field=column) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):  # a json/jsonb column read by the driver
        return orjson.dumps(value).decode()
    return str(value)


class _SqlSource:
    """The queries both databases share; subclasses bind parameters and times."""

    table_prefix: str = ""
    _param = "?"
    _as_text = ""  # Postgres: json columns read as text (the driver would parse them)
    _batch = 500

    def _t(self, name: str) -> str:
        return f'"{self.table_prefix}{name}"'

    def _time_param(self, when: datetime) -> object:
        raise NotImplementedError

    def _where(self, options: ImportOptions, alias: str = "e") -> tuple[str, list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        if options.workflow_ids:
            clauses.append(
                f'{alias}."workflowId" IN ({", ".join(self._param for _ in options.workflow_ids)})'
            )
            params.extend(options.workflow_ids)
        if options.since is not None:
            clauses.append(f'{alias}."createdAt" >= {self._param}')
            params.append(self._time_param(options.since))
        if options.until is not None:
            clauses.append(f'{alias}."createdAt" < {self._param}')
            params.append(self._time_param(options.until))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return where, params

    def _query(self, sql: str, params: Sequence[object]) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    def count(self, options: ImportOptions) -> int:
        where, params = self._where(options)
        sql = f"SELECT COUNT(*) FROM {self._t('execution_entity')} e{where}"
        (n,) = next(self._query(sql, params))
        total = int(n)
        return total if options.limit is None else min(total, options.limit)

    def executions(self, options: ImportOptions) -> Iterator[ExecutionRow]:
        where, params = self._where(options)
        version = (
            'e."workflowVersionId"'
            if self._has_column("execution_entity", "workflowVersionId")
            else "NULL"
        )
        sql = (
            f"SELECT {_EXECUTION_COLUMNS.format(version=version, text=self._as_text)} FROM {self._t('execution_entity')} e "
            f'LEFT JOIN {self._t("execution_data")} d ON d."executionId" = e."id"'
            f'{where} ORDER BY e."id"'
        )
        if options.limit is not None:
            sql += f" LIMIT {int(options.limit)}"
        for row in self._query(sql, params):
            try:
                yield self._execution(row)
            except InvalidInput as err:
                yield _unreadable(row, f"{err} (field: {err.field})")

    def _execution(self, row: tuple[Any, ...]) -> ExecutionRow:
        (eid, wf, status, mode, created, started, stopped, wait, retry, wdata, data, has, ver) = row
        created_at = _utc(created, "createdAt") or _utc(started, "startedAt")
        if created_at is None:
            raise InvalidInput("the execution has no createdAt", field="createdAt")
        return ExecutionRow(
            id=str(eid),
            workflow_id=str(wf),
            status=str(status or "unknown"),
            mode=str(mode or ""),
            created_at=created_at,
            started_at=_utc(started, "startedAt"),
            stopped_at=_utc(stopped, "stoppedAt"),
            wait_till=_utc(wait, "waitTill"),
            retry_of=None if retry is None else str(retry),
            workflow_data=_text(wdata),
            data=_text(data),
            has_data=bool(has),
            version_id=None if ver is None else str(ver),
        )

    def history(self, options: ImportOptions) -> list[HistoryRow]:
        # every saved version up to --until (one saved before --since may be what ran after it)
        where, params = self._where(dataclasses.replace(options, since=None), alias="h")
        sql = (
            f'SELECT h."versionId", h."workflowId", h."createdAt", h."nodes"{self._as_text}, '
            f'h."connections"{self._as_text}, h."name" FROM {self._t("workflow_history")} h{where} '
            'ORDER BY h."createdAt", h."versionId"'
        )
        return [
            HistoryRow(
                version_id=str(v),
                workflow_id=str(w),
                created_at=_utc(c, "createdAt") or datetime.now(UTC),
                nodes=_text(n) or "[]",
                connections=_text(k) or "{}",
                name=None if name is None else str(name),
            )
            for v, w, c, n, k, name in self._query(sql, params)
        ]

    def workflow_settings(self) -> dict[str, tuple[str | None, str | None]]:
        """Each workflow's current (name, settings JSON): n8n keeps no past settings."""
        sql = f'SELECT "id", "name", "settings"{self._as_text} FROM {self._t("workflow_entity")}'
        return {str(i): (_text(n), _text(s)) for i, n, s in self._query(sql, [])}

    def _has_column(self, table: str, column: str) -> bool:
        raise NotImplementedError

    def executed_versions(self) -> set[str]:
        """The ``versionId`` of every version some execution in the database ran (n8n ≥ 1.x
        records it in ``execution_entity.workflowVersionId``; empty when the column is absent)."""
        if not self._has_column("execution_entity", "workflowVersionId"):
            return set()
        sql = (
            f'SELECT DISTINCT "workflowVersionId" FROM {self._t("execution_entity")} '
            'WHERE "workflowVersionId" IS NOT NULL'
        )
        return {str(v) for (v,) in self._query(sql, [])}


class SqliteSource(_SqlSource):
    """n8n's ``database.sqlite``, opened read-only (n8n may keep running)."""

    def __init__(self, path: str, *, table_prefix: str = "") -> None:
        self.table_prefix = table_prefix
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def _time_param(self, when: datetime) -> object:
        # n8n's SQLite columns hold UTC text "YYYY-MM-DD HH:MM:SS.fff": compare as text
        return (
            when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"
        )

    def _query(self, sql: str, params: Sequence[object]) -> Iterator[tuple[Any, ...]]:
        cursor = self._conn.execute(sql, list(params))
        try:
            while rows := cursor.fetchmany(self._batch):
                yield from rows
        finally:
            cursor.close()

    def _has_column(self, table: str, column: str) -> bool:
        rows = self._conn.execute(f"PRAGMA table_info({self._t(table)})").fetchall()
        return any(r[1] == column for r in rows)

    def close(self) -> None:
        self._conn.close()


class PostgresSource(_SqlSource):
    """n8n's Postgres database (psycopg 3); rows are streamed with a server-side cursor."""

    _param = "%s"
    _as_text = "::text"

    def __init__(self, dsn: str, *, table_prefix: str = "", schema: str | None = None) -> None:
        import psycopg  # only when Postgres is used

        self.table_prefix = table_prefix
        self._conn = psycopg.connect(dsn, autocommit=False)
        self._conn.read_only = True
        if schema:
            with self._conn.cursor() as cur:
                cur.execute("SELECT set_config('search_path', %s, false)", [schema])
        self._cursors = 0

    def _time_param(self, when: datetime) -> object:
        return when

    def _query(self, sql: str, params: Sequence[object]) -> Iterator[tuple[Any, ...]]:
        self._cursors += 1
        with self._conn.cursor(name=f"execvault_import_{self._cursors}") as cur:
            cur.itersize = self._batch
            cur.execute(sql.encode(), list(params))
            yield from cur

    def _has_column(self, table: str, column: str) -> bool:
        sql = (
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s "
            "AND table_schema = ANY (current_schemas(false))"
        )
        return any(True for _ in self._query(sql, [self.table_prefix + table, column]))

    def close(self) -> None:
        self._conn.rollback()
        self._conn.close()


def trigger_type_of(mode: str, workflow: Mapping[str, Any]) -> str | None:
    """The ``triggerType`` of an execution in n8n's ``mode``; for ``trigger`` (schedules, polls,
    app events) the kind of the workflow's first enabled trigger node, None when it has none
    (the archive then infers it)."""
    mapped = _MODE_TRIGGER.get(mode)
    if mapped is not None:
        return mapped
    if mode == "trigger":
        for node in workflow.get("nodes") or ():
            if isinstance(node, Mapping) and not node.get("disabled"):
                kind = trigger_kind(str(node.get("type", "")))
                if kind is not None:
                    return kind
        return "trigger"
    return mode[:64] or None


def _final_payload(row: ExecutionRow) -> dict[str, Any]:
    """n8n's REST shape of the execution (``docs/final-state.md``), built from its row."""
    inner: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "mode": row.mode or None,
        "startedAt": None if row.started_at is None else format_ts(row.started_at),
        "stoppedAt": None if row.stopped_at is None else format_ts(row.stopped_at),
        "data": row.data,
    }
    if row.wait_till is not None:
        inner["waitTill"] = format_ts(row.wait_till)
    return {"data": {k: v for k, v in inner.items() if v is not None}}


def _has_progress(archive: Archive, execution_id: str, status: str) -> bool:
    return any(
        is_progress_key(i.key) and f"progress-{status}-" in i.key
        for i in archive.store.list(execution_prefix(execution_id))
    )


class _Failure(Exception):
    """A row that cannot be imported: reported, skipped."""


#: errors of the archive, not of a row: they stop the import instead of failing row after row
_FATAL = (StoreUnavailable, StorageFull)


def _load_workflow(row: ExecutionRow) -> dict[str, Any]:
    if not row.has_data:
        raise _Failure("no execution_data row (n8n pruned or never stored its data)")
    try:
        workflow = orjson.loads(row.workflow_data or "")
    except orjson.JSONDecodeError:
        raise _Failure("execution_data.workflowData is not valid JSON") from None
    if not isinstance(workflow, dict):
        raise _Failure("execution_data.workflowData is not a JSON object")
    if workflow.get("versionId") is None and row.version_id is not None:
        workflow["versionId"] = row.version_id  # n8n 2.x keeps it beside workflowData
    return workflow


def _import_one(
    archive: Archive, row: ExecutionRow, dry_run: bool, id_prefix: str = ""
) -> tuple[str, bool]:
    """Import one execution: (``imported``, ``completed`` (final state added) or ``existing``;
    whether a progress record was written for an execution n8n says is still running)."""
    exec_id = check_id(id_prefix + row.id, "executionId")
    status = row.status
    if row.problem is not None:
        raise _Failure(row.problem)
    snapshot_there = archive.store.head(snapshot_key(exec_id)) is not None
    if snapshot_there:
        if archive.store.head(result_key(exec_id)) is not None:
            return "existing", False
        if status in NON_TERMINAL_STATUSES and _has_progress(archive, exec_id, status):
            return "existing", False
    workflow = _load_workflow(row)
    payload = _final_payload(row)
    # everything is checked before anything is written: no snapshot without its final state
    try:
        final = archive.check_final_state(exec_id, payload)
    except ArchiveError as err:
        raise _Failure(f"run data: {err} (field: {getattr(err, 'field', None)})") from None
    if dry_run:
        return ("existing" if snapshot_there else "imported"), False
    created = False
    if not snapshot_there:
        try:
            result = archive.capture_snapshot(
                execution_id=exec_id,
                workflow=workflow,
                workflow_id=row.workflow_id,
                trigger_type=trigger_type_of(row.mode, workflow),
                created_at=format_ts(row.created_at),
                replay_of=None if row.retry_of is None else id_prefix + row.retry_of,
                source="backfill",
                backfill=True,
            )
        except ImmutableConflict:
            # the live hook captured it since the HEAD above (its copy differs): it stays
            return "existing", False
        created = result.created
    try:
        archive.record_final_state(exec_id, payload, checked=final)
    except ImmutableConflict:
        # the live hook wrote its own (slightly different) report meanwhile: it stays
        return ("imported" if created else "existing"), False
    return ("imported" if created else "completed"), status in NON_TERMINAL_STATUSES


def _history_workflow(
    row: HistoryRow, settings: Mapping[str, tuple[str | None, str | None]]
) -> dict[str, Any]:
    name, settings_json = settings.get(row.workflow_id, (None, None))
    try:
        nodes = orjson.loads(row.nodes)
        connections = orjson.loads(row.connections)
        wf_settings = orjson.loads(settings_json) if settings_json else {}
    except orjson.JSONDecodeError:
        raise _Failure("workflow_history nodes/connections are not valid JSON") from None
    return {
        "id": row.workflow_id,
        "name": row.name or name,
        "nodes": nodes,
        "connections": connections,
        "settings": wf_settings if isinstance(wf_settings, dict) else {},
        "versionId": row.version_id,
    }


Progress = Callable[[int, int], None]


def import_n8n(
    archive: Archive,
    source: N8nSource,
    options: ImportOptions | None = None,
    *,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ImportReport:
    """Import n8n's executions (and its unexecuted saved versions) into ``archive``.

    Executions are read oldest first (by n8n's id), each saved version placed just before the
    first execution created after it, so every workflow's chain reads in n8n's order. With
    ``options.jobs`` > 1 that many threads write, each workflow's items always on the same one
    (in order); an error that is not a bad row (the store gone) stops the import and is raised
    after the items in flight are done. ``progress(done, total)`` is called after each execution.
    """
    options = options or ImportOptions()
    report = ImportReport(dry_run=options.dry_run)
    start = clock()
    report.total = source.count(options)
    pending: deque[HistoryRow] = deque()
    settings: dict[str, tuple[str | None, str | None]] = {}
    ran_versions: set[str] = set()
    if options.history:
        pending = deque(source.history(options))
        if pending:
            settings = source.workflow_settings()
            ran_versions = source.executed_versions()
    lock = threading.Lock()
    done = [0]
    if progress is not None:
        progress(0, report.total)

    def execution(row: ExecutionRow) -> None:
        failure: dict[str, str] = {}
        try:
            outcome, waiting = _import_one(archive, row, options.dry_run, options.id_prefix)
        except (_Failure, ArchiveError) as err:
            if isinstance(err, _FATAL):
                raise  # not the row's fault: stop (a re-run resumes)
            outcome, waiting = "failed", False
            failure = {"executionId": row.id, "reason": _reason(err)}
        with lock:
            if outcome == "failed":
                report.failed.append(failure)
            elif outcome == "imported":
                report.imported += 1
            elif outcome == "completed":
                report.completed += 1
            else:
                report.skipped_existing += 1
            report.in_progress += int(waiting)
            done[0] += 1
            if progress is not None:
                progress(done[0], report.total)

    def version(row: HistoryRow) -> None:
        outcome, reason = _import_version(archive, row, settings, options.dry_run)
        with lock:
            if outcome == "failed":
                report.versions_failed.append({"versionId": row.version_id, "reason": reason})
            elif outcome == "imported":
                report.versions_imported += 1
            else:
                report.versions_skipped += 1

    with _Workers(max(1, options.jobs)) as workers:

        def flush_history(before: datetime | None) -> None:
            while pending and (before is None or pending[0].created_at <= before):
                row = pending.popleft()
                if row.version_id not in ran_versions:
                    workers.submit(row.workflow_id, partial(version, row))

        for row in source.executions(options):
            if row.problem is None:
                flush_history(row.created_at)
            workers.submit(row.workflow_id, partial(execution, row))
        if options.limit is None:
            # versions saved after the last execution; with --limit they wait for the next run
            flush_history(None)
    report.failed.sort(key=lambda f: (len(f["executionId"]), f["executionId"]))  # n8n's order
    report.seconds = clock() - start
    return report


class _Workers:
    """Threads with a bounded queue each; a key (the workflow id) always goes to the same one, so
    each workflow's items run in the order given. The first unexpected error stops every worker
    (items still queued are dropped: a re-run does them) and is raised on exit."""

    def __init__(self, jobs: int) -> None:
        self._jobs = jobs
        self._queues: list[queue.Queue[Callable[[], None] | None]] = []
        self._threads: list[threading.Thread] = []
        self._failed = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> _Workers:
        if self._jobs > 1:
            for i in range(self._jobs):
                q: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=64)
                thread = threading.Thread(
                    target=self._run, args=(q,), name=f"import-n8n-{i}", daemon=True
                )
                self._queues.append(q)
                self._threads.append(thread)
                thread.start()
        return self

    def _run(self, q: queue.Queue[Callable[[], None] | None]) -> None:
        while (item := q.get()) is not None:
            if self._failed.is_set():
                continue  # drain, so the reader never blocks on a full queue
            try:
                item()
            except BaseException as err:
                self._error = self._error or err
                self._failed.set()

    def submit(self, key: str, item: Callable[[], None]) -> None:
        if self._failed.is_set():
            raise _Stopped
        if not self._queues:
            item()
            return
        self._queues[zlib.crc32(key.encode()) % self._jobs].put(item)

    def __exit__(self, kind: object, error: object, tb: object) -> bool:
        if kind is not None and kind is not _Stopped:
            self._failed.set()  # the reader failed (or was interrupted): drop what is queued
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise self._error
        return kind is _Stopped  # a worker's error was raised above; nothing else is swallowed


class _Stopped(Exception):
    """The reader stops submitting: a worker failed (its error is raised by ``_Workers``)."""


def _import_version(
    archive: Archive,
    row: HistoryRow,
    settings: Mapping[str, tuple[str | None, str | None]],
    dry_run: bool,
) -> tuple[str, str]:
    """One saved version: (``imported``, ``skipped`` or ``failed``; the reason of a failure)."""
    try:
        workflow = _history_workflow(row, settings)
        if dry_run:
            return "imported", ""
        _, created = archive.record_engine_version(
            workflow=workflow,
            workflow_id=row.workflow_id,
            created_at=format_ts(row.created_at),
            engine_version_id=row.version_id,
        )
    except (_Failure, ArchiveError) as err:
        if isinstance(err, _FATAL):
            raise
        return "failed", _reason(err)
    return ("imported" if created else "skipped"), ""


def _reason(err: Exception) -> str:
    where = getattr(err, "field", None)
    text = str(err)
    return f"{text} (field: {where})" if where and where not in text else text
