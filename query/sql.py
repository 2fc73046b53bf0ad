"""Analyst SQL: one read-only SELECT over the index views, in a fresh, locked DuckDB per query.

``SqlSandbox(catalog).run(sql)`` answers a :class:`QueryResult` or raises one of
``archiver.errors``' query errors (``QueryRefused``, ``QueryFailed``, ``QueryLimitExceeded``,
``QueryBusy``). Every query gets:

1. **A statement check**, before anything runs: ``duckdb.extract_statements`` must find exactly one
   statement, of type SELECT (``WITH``, ``FROM t``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``
   are SELECTs too), whose text the parser did not rewrite (``PRAGMA x`` comes back as
   ``SELECT * FROM pragma_x()``: refused). COPY, ATTACH, INSTALL/LOAD, EXPORT, CREATE (SECRET ...),
   SET/RESET, PRAGMA, CALL, EXPLAIN and anything after a ``;`` are refused here. Since the index
   directory must be readable, and DuckDB's ``allowed_directories`` also allows *writes*, this
   check is what keeps writes out.
2. **A fresh ``:memory:`` database** (nothing an earlier query did survives: no tables, macros,
   variables or settings) with extension autoload/autoinstall off, community and unsigned
   extensions off, no persistent secrets, ``python_enable_replacements = false`` (a name in the
   query never resolves to a Python variable of this process), ``threads`` and ``memory_limit``
   set, no temporary directory and ``max_temp_directory_size = '0B'`` (nothing spills to disk).
3. **The views** (``snapshots``, ``final_states``, ``versions``, ``node_runs``, ``executions``:
   :func:`query.catalog.view_statements`) over the local index directory (a LocalStore's
   ``index/``, or the catalog's mirror of a remote store), created *before* locking. They name
   the files of the catalog's last refresh explicitly, and deduplicate only days with more than
   one file (mid-compaction): a compacted day is read as fast as a plain ``read_parquet``.
4. **A function check** on the parsed query (``json_serialize_sql``): table functions that change
   the connection's state or take raw pointers (``enable_logging``, ``checkpoint``,
   ``arrow_scan`` ...) and ``query()`` / ``json_execute_serialized_sql()`` (their SQL text would
   escape step 1) are refused.
5. **The lock**: ``allowed_directories = ['<index dir>/']``, ``enable_external_access = false``,
   ``lock_configuration = true``. From here on no file outside the index directory, no URL
   (``s3://``, ``https://``), no extension and no setting can be reached. (DuckDB 1.5.6 has no
   ``allow_extension_repositories`` setting; with autoinstall off, external access off and
   INSTALL refused by step 1, no extension repository is ever contacted.)
6. **A worker process**: steps 2-5 and the query run in a separate process (``spawn``, one of a
   few kept started), whose address space is capped (``RLIMIT_AS``: its size at start plus
   ``memory_limit`` plus 192 MiB): DuckDB's own ``memory_limit`` does not cover lists and strings
   a query materializes (``len(list(range(300000000)))``, ``repeat('x', 1500000000)``), the
   process limit does, and the server's own memory stays out of reach. The worker interrupts the
   query at its time limit; a worker that has not answered 1 s later is killed (and
   replaced): a 422 ``query_limit_exceeded`` naming the limit (``time``, ``memory``, ``result``).
7. **Queueing**: at most ``max_concurrent`` queries run at once (one worker each) and
   ``max_queued`` more wait for a worker (within their time limit); any further query is refused
   at once (``QueryBusy``, 429 with ``Retry-After``). Results stream through Arrow and stop at
   ``limit`` rows (``truncated``) or ``max_result_bytes`` (of Arrow data and of JSON).
8. **Server paths stay hidden**: functions and catalog views that name them
   (``duckdb_settings()``, ``current_setting()``, ``duckdb_views()``, ``sqlite_master`` ...) are
   refused, and the index, store, temporary, home and working directories are replaced by
   ``<index>``, ``<store>``, ``<tmp>``, ``<home>``, ``<cwd>`` in error messages and JSON rows.

See ``docs/sql.md`` for the tables, example questions and the rules as analysts see them.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import datetime as dt
import decimal
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import duckdb
import orjson
import pyarrow as pa  # type: ignore[import-untyped]

from archiver.errors import InvalidInput, QueryBusy, QueryFailed, QueryLimitExceeded, QueryRefused
from query.catalog import VIEW_SCHEMAS, Catalog, view_statements

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_QUEUE",
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_WORKERS",
    "DENIED_FUNCTIONS",
    "MAX_SQL_CHARS",
    "QueryColumn",
    "QueryResult",
    "SqlSandbox",
    "check_statement",
    "json_value",
    "memory_bytes",
    "shutdown_workers",
    "worker_pids",
]

_log = logging.getLogger(__name__)

DEFAULT_MAX_ROWS: Final = 10_000
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_MEMORY_LIMIT: Final = "1GB"
DEFAULT_MAX_RESULT_BYTES: Final = 32 * 1024 * 1024
DEFAULT_WORKERS: Final = 2
DEFAULT_QUEUE: Final = 8
MAX_SQL_CHARS: Final = 100_000
_BATCH_ROWS: Final = 1024
_MAX_MESSAGE_CHARS: Final = 1000

#: table and scalar functions a query may not call (checked on the parsed query, lower case)
DENIED_FUNCTIONS: Final = frozenset(
    {
        # SQL text that would escape the statement check
        "query",
        "json_execute_serialized_sql",
        # raw pointers into this process
        "arrow_scan",
        "arrow_scan_dumb",
        "pandas_scan",
        "python_map_function",
        # state of the connection or database
        "checkpoint",
        "force_checkpoint",
        "truncate_duckdb_logs",
        "import_database",
        "copy_database",
        "add_parquet_key",
        "read_duckdb",
        # settings and catalog entries that name server paths (the index directory, the home,
        # extension and temporary directories, the views' file lists)
        "duckdb_settings",
        "current_setting",
        "duckdb_extensions",
        "duckdb_views",
        "duckdb_temporary_files",
        "duckdb_external_file_cache",
        "duckdb_logs",
        "duckdb_log_contexts",
        "duckdb_databases",
        "pragma_database_list",
    }
)
#: catalog views that show the views' SQL (with their file paths), lower case
DENIED_TABLES: Final = frozenset(
    {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema", "pg_views"}
)
_DENIED_PREFIXES: Final = ("enable_", "disable_", "verify_")

#: the connection's configuration, fixed when it is created
_CONFIG: Final[Mapping[str, str | bool | int]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,
    "max_temp_directory_size": "0B",
    "temp_directory": "",
}


@dataclass(frozen=True, slots=True)
class QueryColumn:
    name: str
    type: str  # DuckDB's name of the type, e.g. VARCHAR, TIMESTAMP WITH TIME ZONE, BIGINT[]

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What a query returned: at most ``limit`` rows (``truncated`` when there were more).

    The rows come from the worker as JSON (``rows_json``, server paths redacted) and/or as an
    Arrow IPC stream (``arrow_ipc``); whichever is missing is derived from the other on demand.
    """

    columns: tuple[QueryColumn, ...]
    row_count: int
    truncated: bool
    elapsed_ms: float
    rows_json: bytes | None = None
    arrow_ipc: bytes | None = None

    @property
    def table(self) -> pa.Table:
        """The rows as an Arrow table (needs ``run(..., arrow=True)``, the default)."""
        if self.arrow_ipc is None:
            raise ValueError("this result was run without arrow=True")
        return pa.ipc.open_stream(pa.py_buffer(self.arrow_ipc)).read_all()

    def rows(self) -> list[list[Any]]:
        """The rows as lists of JSON-ready values (see :func:`json_value`)."""
        if self.arrow_ipc is None:
            rows: list[list[Any]] = orjson.loads(self.rows_json or b"[]")
            return rows
        table = self.table
        columns = [_column_values(table.column(i)) for i in range(table.num_columns)]
        return [list(row) for row in zip(*columns, strict=True)] if columns else []

    def to_json_bytes(self) -> bytes:
        """``{columns, rows, rowCount, truncated, elapsedMs}`` as JSON."""
        rows = self.rows_json
        if rows is None:
            rows = orjson.dumps(self.rows(), option=orjson.OPT_NON_STR_KEYS)
        head = orjson.dumps([c.to_json() for c in self.columns])
        tail = orjson.dumps(
            {
                "rowCount": self.row_count,
                "truncated": self.truncated,
                "elapsedMs": round(self.elapsed_ms, 3),
            }
        )
        return b'{"columns":' + head + b',"rows":' + rows + b"," + tail[1:]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(self.to_json_bytes())
        return body


# --------------------------------------------------------------------------------------------
# the statement check
# --------------------------------------------------------------------------------------------


def _message(err: BaseException) -> str:
    """DuckDB's message without the ``LINE n:`` context that quotes the query (first paragraph)."""
    text = str(err).strip().split("\n\n", 1)[0].split("\nLINE ", 1)[0].strip()
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + " …"


def check_statement(sql: object) -> str:
    """The one SELECT statement in ``sql``; QueryRefused / QueryFailed for anything else."""
    if not isinstance(sql, str):
        raise QueryRefused("sql must be a string", field="sql")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRefused(f"the query is longer than {MAX_SQL_CHARS} characters", field="sql")
    if not sql.strip():
        raise QueryRefused("the query is empty", field="sql")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise QueryFailed(_message(err), field="sql") from None
    if len(statements) != 1:
        raise QueryRefused(
            f"exactly one statement is allowed, found {len(statements)}", field="sql"
        )
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        kind = str(statement.type).rsplit(".", 1)[-1]
        raise QueryRefused(f"only SELECT queries are allowed, not {kind}", field="sql")
    if statement.query.strip() != sql.strip():
        # the parser rewrote it: PRAGMA x becomes SELECT * FROM pragma_x()
        raise QueryRefused("only SELECT queries are allowed, not PRAGMA", field="sql")
    return sql


def _function_names(tree: object) -> Iterator[str]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = node.get("function_name")
            if isinstance(name, str):
                yield name.lower()
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _table_names(tree: object) -> Iterator[tuple[str, str]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = node.get("table_name")
            if isinstance(name, str):
                schema = node.get("schema_name")
                yield name.lower(), schema.lower() if isinstance(schema, str) else ""
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_functions(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    row = con.execute("SELECT json_serialize_sql($sql)", {"sql": sql}).fetchone()
    tree = orjson.loads(row[0]) if row is not None else None
    if not isinstance(tree, dict) or tree.get("error"):
        raise QueryRefused("the query could not be checked (only plain SELECTs)", field="sql")
    for name in _function_names(tree):
        if name in DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
            raise QueryRefused(f"the function {name}() is not allowed", field="sql")
    for name, schema in _table_names(tree):
        if name in DENIED_TABLES or (schema == "information_schema" and name == "views"):
            raise QueryRefused(f"the catalog table {name} is not available", field="sql")


# --------------------------------------------------------------------------------------------
# JSON values
# --------------------------------------------------------------------------------------------


def _iso_duration(value: Any) -> str:
    months, days, nanos = value.months, value.days, value.nanoseconds
    seconds = decimal.Decimal(nanos) / decimal.Decimal(1_000_000_000)
    text = format(seconds.normalize(), "f") if seconds else "0"
    return f"P{months}M{days}DT{text}S"


def json_value(value: Any) -> Any:
    """A Python value from Arrow as JSON-ready data.

    Timestamps with a zone: RFC 3339 in UTC with ``Z`` (milliseconds, or microseconds when they
    matter); without one, ISO 8601. Dates and times: ISO 8601. DECIMAL/HUGEINT: a JSON number
    (integers exact; integers beyond 64 bits as strings). INTERVAL: an ISO 8601 duration
    (``P1M2DT3.5S``). BLOB: base64. UUID: text. Lists, structs and maps recursively.
    """
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dt.datetime):
        spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
        if value.tzinfo is None:
            return value.isoformat(timespec=spec)
        utc = value.astimezone(dt.UTC).replace(tzinfo=None)
        return utc.isoformat(timespec=spec) + "Z"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"PT{format(decimal.Decimal(value.total_seconds()).normalize(), 'f')}S"
    if isinstance(value, decimal.Decimal):
        if value == value.to_integral_value():
            return json_value(int(value))
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if hasattr(value, "nanoseconds") and hasattr(value, "months"):
            return _iso_duration(value)
        return [json_value(v) for v in value]
    return str(value)


_CONVERSION_ERRORS: Final = (ValueError, OverflowError, pa.ArrowException)


def _scalar_value(scalar: pa.Scalar) -> Any:
    """One value the slow way: what Python cannot hold (a date or timestamp beyond its range,
    such as DuckDB's ``infinity``) becomes Arrow's text for it, or null."""
    try:
        return json_value(scalar.as_py(maps_as_pydicts="lossy"))
    except _CONVERSION_ERRORS:
        pass
    kind = scalar.type
    if pa.types.is_map(kind):
        return {
            str(_scalar_value(entry["key"])): _scalar_value(entry["value"])
            for entry in scalar.values
        }
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_scalar_value(item) for item in scalar.values]
    if pa.types.is_struct(kind):
        return {kind.field(i).name: _scalar_value(scalar[i]) for i in range(kind.num_fields)}
    try:
        return scalar.cast(pa.string()).as_py()
    except _CONVERSION_ERRORS:
        return None


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    try:
        values = column.to_pylist(maps_as_pydicts="lossy")
    except _CONVERSION_ERRORS:
        return [_scalar_value(column[i]) for i in range(len(column))]
    return [json_value(v) for v in values]


# the worker process
# --------------------------------------------------------------------------------------------

#: headroom above ``memory_limit`` in a worker's address-space limit (Arrow, JSON, stacks)
_WORKER_HEADROOM: Final = 192 * 1024 * 1024
#: how long a fresh worker may take to import DuckDB and say it is ready
_STARTUP_SECONDS: Final = 60.0
#: a worker that did not answer this long after its time limit is killed (DuckDB checks for
#: the interrupt between vectors; a busy host may keep a niced worker off the CPU a while)
_KILL_GRACE_SECONDS: Final = 1.0
#: a worker whose address space grew this far beyond its start is replaced after the query
_RECYCLE_GROWTH: Final = 512 * 1024 * 1024
_UNITS: Final = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_UNITS_I: Final = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def memory_bytes(text: str) -> int:
    """``'1GB'`` / ``'256MiB'`` / ``'512 MB'`` as bytes (DuckDB's units: GB = 10^9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else "?"
    factor = _UNITS.get(unit) or _UNITS_I.get(unit)
    if match is None or factor is None:
        raise InvalidInput(
            "a memory limit is a number with a unit (e.g. 1GB, 512MB)", field="query_memory_limit"
        )
    return int(float(match.group(1)) * factor)


@dataclass(frozen=True, slots=True)
class _Task:
    """One query for a worker: everything it needs, nothing it could reach on its own."""

    sql: str
    statements: tuple[str, ...]
    check_tables: tuple[str, ...]  # views whose columns are checked (first-file schema)
    root: str  # the index directory (allowed_directories)
    listed: frozenset[str]  # the index files the views name
    limit: int
    seconds: float
    memory_limit: str
    address_space: int  # bytes of address space above the worker's start
    threads: int
    max_result_bytes: int
    arrow: bool  # send the rows as Arrow IPC
    json: bool  # send the rows as JSON (redacted)
    redact: tuple[tuple[str, str], ...]  # (server path, placeholder), longest first


def _redact(text: str, redact: Sequence[tuple[str, str]]) -> str:
    for path, placeholder in redact:
        text = text.replace(path, placeholder)
    return text


def _vm_bytes(name: str = "VmSize") -> int:
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0


def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - not glibc
        return None


def _worker_main(conn: Connection) -> None:
    """The worker process: answers tasks until its pipe closes (its parent went away)."""
    import resource
    import signal

    libc = _libc()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the server, which kills us
    # Die with the server, also mid-query (PR_SET_PDEATHSIG would follow the server *thread*
    # that started us, and those come and go).
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    base = _vm_bytes()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        limit = base + task.address_space
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            outcome = _execute(task)
        except MemoryError:
            outcome = (
                "error",
                "limit",
                "the query needs more memory than its limit",
                None,
                "memory",
            )
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
            if libc is not None:
                with contextlib.suppress(Exception):
                    libc.malloc_trim(0)
        try:
            conn.send((*outcome, _vm_bytes() - base))
        except (OSError, ValueError):
            return


def _execute(task: _Task) -> tuple[Any, ...]:
    """Run ``task`` in this process: ``("ok", ...)`` or ``("error", kind, message, field, limit)``."""
    config: dict[str, str | bool | int | float | list[str]] = dict(_CONFIG)
    config["threads"] = task.threads
    config["memory_limit"] = task.memory_limit
    started = time.monotonic()
    con = duckdb.connect(":memory:", config=config)
    timer = threading.Timer(task.seconds, con.interrupt)
    timer.daemon = True
    timer.start()

    def error(
        kind: str, message: str, field: str | None = None, limit: str | None = None
    ) -> tuple[Any, ...]:
        return ("error", kind, _redact(message, task.redact), field, limit)

    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        for statement in task.statements:
            con.execute(statement)
        for table in task.check_tables:
            # the first file decides a view's columns: an older first file would hide newer ones
            described = con.execute(f"DESCRIBE {table}").fetchall()
            if [row[0] for row in described] != _EXPECTED_COLUMNS[table]:
                return error("drift", table)
        _check_functions(con, task.sql)
        con.execute(f"SET allowed_directories = [{_literal(task.root)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        result = con.execute(task.sql)
        description = result.description or []
        columns = [(str(d[0]), str(d[1])) for d in description]
        reader = result.to_arrow_reader(_BATCH_ROWS)
        batches: list[pa.RecordBatch] = []
        rows = size = 0
        truncated = False
        for batch in reader:
            if size + batch.nbytes > task.max_result_bytes:
                # the rows of this batch that still fit (its size is shared evenly by its rows)
                room = task.max_result_bytes - size
                keep = batch.num_rows * room // batch.nbytes if batch.nbytes else 0
                if keep > 0:
                    batches.append(batch.slice(0, keep))
                    rows += keep
                if not rows:
                    return error("limit", _too_large(task.max_result_bytes), limit="result")
                truncated = True
                break
            batches.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
            if rows > task.limit:
                truncated = True
                break
        table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, task.limit)
        del batches
        if time.monotonic() - started > task.seconds:
            return error("limit", _TIME_MESSAGE, limit="time")
        rows_json: bytes | None = None
        if task.json:
            rows_json, kept = _rows_json(table, task.max_result_bytes)
            if kept < table.num_rows:
                if kept == 0:
                    return error("limit", _too_large(task.max_result_bytes), limit="result")
                table = table.slice(0, kept)
                truncated = True
            for path, placeholder in task.redact:
                rows_json = rows_json.replace(path.encode(), placeholder.encode())
        ipc: bytes | None = None
        if task.arrow:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            ipc = sink.getvalue().to_pybytes()
        return ("ok", columns, int(table.num_rows), truncated, rows_json, ipc)
    except QueryRefused as err:
        return error("refused", str(err), err.field)
    except duckdb.InterruptException:
        return error("limit", _TIME_MESSAGE, limit="time")
    except duckdb.OutOfMemoryException as err:
        return error(
            "limit",
            f"the query needs more memory than its limit ({task.memory_limit}): {_message(err)}",
            limit="memory",
        )
    except duckdb.PermissionException as err:
        return error(
            "refused",
            "the query reaches outside the index (files, network, extensions or settings "
            "are not available): " + _message(err),
            "sql",
        )
    except duckdb.IOException as err:
        text = str(err)
        if any(path in task.listed for path in re.findall(r'"([^"]+)"', text)):
            return error("vanished", text)  # one of the index files the views named
        return error("failed", _message(err), "sql")
    except duckdb.InvalidInputException as err:
        if "schema mismatch" in str(err) and task.check_tables:
            return error("drift", str(err))  # a later file lacks columns
        return error("failed", _message(err), "sql")
    except duckdb.Error as err:
        if isinstance(err, duckdb.InternalException | duckdb.FatalException):
            _log.warning("DuckDB internal error on an analyst query: %s", err)
        return error("failed", _message(err), "sql")
    finally:
        timer.cancel()
        con.close()


_TIME_MESSAGE: Final = "the query ran longer than its time limit and was interrupted"


def _too_large(limit: int) -> str:
    return f"the result is larger than {limit} bytes; select fewer or smaller columns"


def _rows_json(table: pa.Table, max_bytes: int) -> tuple[bytes, int]:
    """The rows of ``table`` as one JSON array, cut after the last row that fits ``max_bytes``."""
    columns = [_column_values(table.column(i)) for i in range(table.num_columns)]
    rows = zip(*columns, strict=True) if columns else iter(())
    parts: list[bytes] = []
    size = 2
    for row in rows:
        part = orjson.dumps(list(row), option=orjson.OPT_NON_STR_KEYS)
        size += len(part) + 1
        if size > max_bytes:
            break
        parts.append(part)
    return b"[" + b",".join(parts) + b"]", len(parts)


class _Worker:
    """One worker process (``python -c``, not multiprocessing: the server's ``__main__`` is never
    imported again) and the parent's end of its socket pair."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["MALLOC_ARENA_MAX"] = "2"  # each malloc arena reserves 64 MiB of address space
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # niced: a query never takes the CPU from captures, reads or /healthz
        code = (
            "import os, sys; os.nice(10); "
            "from query.sql import _worker_entry; _worker_entry(int(sys.argv[1]))"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.ready = False
        self.dead = False
        self.growth = 0

    def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            if not self.conn.poll(_STARTUP_SECONDS):
                raise EOFError
            self.ready = self.conn.recv()[0] == "ready"
        except (EOFError, OSError):
            self.kill()
            raise QueryFailed("the query worker did not start; try again") from None

    def call(self, task: _Task) -> tuple[Any, ...]:
        """Send ``task``; its outcome, or QueryLimitExceeded when the worker was killed/died."""
        try:
            self.conn.send(task)
            answered = self.conn.poll(task.seconds + _KILL_GRACE_SECONDS)
        except (EOFError, OSError):
            answered = True  # recv below reports the death
        if not answered:
            self.kill()
            raise QueryLimitExceeded(_TIME_MESSAGE + " (its worker was stopped)", limit="time")
        try:
            outcome: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise QueryLimitExceeded(
                f"the query's worker ended while it ran (out of memory at {task.memory_limit} "
                "or crashed)",
                limit="memory",
            ) from None
        self.growth = outcome[-1]
        return outcome[:-1]

    @property
    def healthy(self) -> bool:
        return not self.dead and self.process.poll() is None and self.growth < _RECYCLE_GROWTH

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.dead = True
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        with contextlib.suppress(OSError):
            self.conn.close()


def _worker_entry(fd: int) -> None:
    """``python -c`` entry of a worker: serve the socket ``fd``."""
    _worker_main(Connection(fd))


class _Idle:
    """Started workers nobody is using, shared by every sandbox of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self.keep = 1

    def take(self) -> _Worker:
        with self._lock:
            while self._workers:
                worker = self._workers.pop()
                if worker.healthy:
                    return worker
                worker.kill()
        return _Worker()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._workers]

    def give(self, worker: _Worker) -> None:
        """Keep ``worker`` for the next query; a killed or bloated one is replaced right away
        (the replacement imports DuckDB while nobody waits for it)."""
        healthy = worker.healthy
        with self._lock:
            if len(self._workers) < self.keep:
                self._workers.append(worker if healthy else _Worker())
                if healthy:
                    return
        worker.kill()

    def fill(self, count: int) -> None:
        """Start workers until ``count`` are idle (they import DuckDB in the background)."""
        with self._lock:
            self.keep = max(self.keep, count)
            missing = count - len(self._workers)
            self._workers.extend(_Worker() for _ in range(max(0, missing)))

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.kill()


_IDLE: Final = _Idle()
atexit.register(_IDLE.close)


# --------------------------------------------------------------------------------------------
# the sandbox
# --------------------------------------------------------------------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _Vanished(Exception):
    """A manifest file disappeared under the query (a rebuild or compaction removed it)."""


class _SchemaDrift(Exception):
    """The files of a table do not all have the same columns (index formats mixed)."""


_EXPECTED_COLUMNS: Final[Mapping[str, list[str]]] = {
    table: [*schema.names, "dt"] for table, schema in VIEW_SCHEMAS.items()
}


def _redactions(catalog: Catalog) -> tuple[tuple[str, str], ...]:
    """Server paths that never reach an analyst, longest first (the index may sit in the store)."""
    pairs: dict[str, str] = {}
    for path, placeholder in (
        (catalog.index_dir, "<index>"),
        (getattr(catalog.store, "root", None), "<store>"),
        (tempfile.gettempdir(), "<tmp>"),
        (str(Path.home()), "<home>"),
        (str(Path.cwd()), "<cwd>"),
    ):
        if path is None:
            continue
        for variant in {str(path), os.path.realpath(str(path))}:
            text = variant.rstrip(os.sep)
            if len(text) > 1:
                pairs.setdefault(text, placeholder)
    return tuple(sorted(pairs.items(), key=lambda item: -len(item[0])))


class SqlSandbox:
    """Runs analyst SQL over ``catalog``'s index (see the module doc for the rules).

    ``catalog`` is a :class:`Catalog` or a function returning the current one (a service that
    reopens its catalog). ``max_rows`` / ``timeout_seconds`` are the defaults and the ceilings a
    caller may ask for; ``memory_limit`` and ``threads`` bound each query's DuckDB and worker
    process; ``max_concurrent`` queries run at once (one worker process each) and at most
    ``max_queued`` more wait for one (any beyond: QueryBusy at once); a result stops at
    ``max_result_bytes`` (of Arrow data, and of JSON). Thread-safe.
    """

    def __init__(
        self,
        catalog: Catalog | Callable[[], Catalog],
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
        max_concurrent: int = DEFAULT_WORKERS,
        max_queued: int = DEFAULT_QUEUE,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if not timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if max_concurrent < 1 or max_queued < 0:
            raise ValueError("max_concurrent must be at least 1, max_queued at least 0")
        self._catalog = catalog
        self.max_rows = max_rows
        self.timeout_seconds = timeout_seconds
        self.memory_limit = memory_limit
        self._address_space = memory_bytes(memory_limit) + _WORKER_HEADROOM
        self.threads = threads if threads is not None else max(1, min(2, os.cpu_count() or 1))
        self.max_result_bytes = max_result_bytes
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._admitted = threading.BoundedSemaphore(max_concurrent + max_queued)
        self._count_lock = threading.Lock()
        self._in_flight = 0
        # Views read only the first file's schema unless the files of a table turned out to
        # differ (then every footer, slower): sticky once seen.
        self._union_by_name = False

    def start(self) -> None:
        """Start the worker processes now rather than on the first query (a server does)."""
        _IDLE.fill(self.max_concurrent)

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """A place among the running and queued queries, or QueryBusy at once."""
        if not self._admitted.acquire(blocking=False):
            raise QueryBusy(
                f"{self.max_concurrent} queries are running and {self.max_queued} waiting; "
                "try again later"
            )
        with self._count_lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._in_flight -= 1
            self._admitted.release()

    @property
    def in_flight(self) -> int:
        """Queries admitted and not finished (running or waiting for a worker)."""
        return self._in_flight

    def run(
        self,
        sql: object,
        *,
        limit: int | None = None,
        timeout_seconds: float | None = None,
        arrow: bool = True,
        json: bool = True,
    ) -> QueryResult:
        """Run one SELECT; at most ``limit`` rows within ``timeout_seconds`` (both capped).

        ``arrow`` / ``json``: which forms of the rows to bring back (``result.table``,
        ``result.to_json_bytes()``); the other is derived on demand.
        """
        with self.admission():
            return self.run_admitted(
                sql, limit=limit, timeout_seconds=timeout_seconds, arrow=arrow, json=json
            )

    def run_admitted(
        self,
        sql: object,
        *,
        limit: int | None = None,
        timeout_seconds: float | None = None,
        arrow: bool = True,
        json: bool = True,
    ) -> QueryResult:
        """:meth:`run` for a caller that holds :meth:`admission` already."""
        started = time.monotonic()
        if limit is None:
            limit = self.max_rows
        if not 1 <= limit <= self.max_rows:
            raise InvalidInput(f"limit must be between 1 and {self.max_rows}", field="limit")
        if timeout_seconds is None:
            timeout_seconds = self.timeout_seconds
        if not 0 < timeout_seconds <= self.timeout_seconds:
            raise InvalidInput(
                f"the time limit must be positive and at most {self.timeout_seconds:g} s",
                field="timeoutMs",
            )
        text = check_statement(sql)
        deadline = started + timeout_seconds
        if not self._slots.acquire(timeout=timeout_seconds):
            raise QueryBusy("no query worker became free within the time limit; try again later")
        try:
            catalog = self._catalog if isinstance(self._catalog, Catalog) else self._catalog()
            catalog.refresh()
            for attempt in range(4):
                try:
                    result = self._run_once(catalog, text, limit, deadline, arrow, json)
                except _SchemaDrift:
                    if self._union_by_name:
                        raise QueryFailed(
                            "the index files of a table disagree on their columns"
                        ) from None
                    _log.info("index files with different columns: views read every footer now")
                    self._union_by_name = True
                    continue
                except _Vanished as err:
                    if attempt == 2 or time.monotonic() >= deadline:
                        raise QueryFailed(
                            "the index changed under the query (a rebuild or compaction); "
                            "run it again"
                        ) from err
                    catalog.refresh(force=True)
                    continue
                elapsed = (time.monotonic() - started) * 1000.0
                return dataclasses.replace(result, elapsed_ms=elapsed)
        finally:
            self._slots.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _task(
        self, catalog: Catalog, sql: str, limit: int, seconds: float, arrow: bool, json: bool
    ) -> _Task:
        manifests = catalog.manifests
        day_files = catalog.day_files()
        tables = frozenset(table for table, days in day_files.items() if days)
        union = self._union_by_name
        statements = view_statements(manifests, tables, union_by_name=union, day_files=day_files)
        listed = frozenset(
            p for days in day_files.values() for paths in days.values() for p in paths
        )
        return _Task(
            sql=sql,
            statements=tuple(statements),
            check_tables=() if union else tuple(sorted(tables)),
            root=str(manifests.root).rstrip(os.sep) + os.sep,
            listed=listed,
            limit=limit,
            seconds=seconds,
            memory_limit=self.memory_limit,
            address_space=self._address_space,
            threads=self.threads,
            max_result_bytes=self.max_result_bytes,
            arrow=arrow,
            json=json,
            redact=_redactions(catalog),
        )

    def _run_once(
        self, catalog: Catalog, sql: str, limit: int, deadline: float, arrow: bool, json: bool
    ) -> QueryResult:
        worker = _IDLE.take()
        try:
            ready_from = time.monotonic()
            worker.wait_ready()
            # the worker's start-up (importing DuckDB) does not count against the query
            deadline += time.monotonic() - ready_from
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QueryLimitExceeded(_TIME_MESSAGE, limit="time")
            task = self._task(catalog, sql, limit, remaining, arrow, json)
            outcome = worker.call(task)
        finally:
            _IDLE.give(worker)
        if outcome[0] == "ok":
            _, columns, rows, truncated, rows_json, ipc = outcome
            return QueryResult(
                tuple(QueryColumn(name, kind) for name, kind in columns),
                rows,
                truncated,
                0.0,
                rows_json=rows_json,
                arrow_ipc=ipc,
            )
        _, kind, message, field, which = outcome
        if kind == "refused":
            raise QueryRefused(message, field=field)
        if kind == "limit":
            raise QueryLimitExceeded(message, limit=which or "time")
        if kind == "vanished":
            raise _Vanished(message)
        if kind == "drift":
            if self._union_by_name:
                raise QueryFailed("the index files of a table disagree on their columns")
            raise _SchemaDrift(message)
        raise QueryFailed(message, field=field)


def worker_pids() -> list[int]:
    """Process ids of the idle worker processes (tests read their peak memory)."""
    return _IDLE.pids()


def shutdown_workers() -> None:
    """Kill the idle worker processes (a server on shutdown; busy ones end with their query)."""
    _IDLE.close()
