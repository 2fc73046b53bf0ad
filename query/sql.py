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
6. **Limits**: a timer calls ``con.interrupt()`` at the time limit (the connection is then closed);
   results stream through Arrow and stop at ``limit`` rows (``truncated``) or ``max_result_bytes``.
   At most ``max_concurrent`` queries run at once; the others wait for a slot within their time
   limit.

See ``docs/sql.md`` for the tables, example questions and the rules as analysts see them.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
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
    "DEFAULT_TIMEOUT_SECONDS",
    "DENIED_FUNCTIONS",
    "MAX_SQL_CHARS",
    "QueryColumn",
    "QueryResult",
    "SqlSandbox",
    "check_statement",
    "json_value",
]

_log = logging.getLogger(__name__)

DEFAULT_MAX_ROWS: Final = 10_000
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_MEMORY_LIMIT: Final = "1GB"
DEFAULT_MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
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
    }
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
    """What a query returned: at most ``limit`` rows (``truncated`` when there were more)."""

    columns: tuple[QueryColumn, ...]
    table: pa.Table
    truncated: bool
    elapsed_ms: float

    @property
    def row_count(self) -> int:
        return int(self.table.num_rows)

    def rows(self) -> list[list[Any]]:
        """The rows as lists of JSON-ready values (see :func:`json_value`)."""
        columns = [_column_values(self.table.column(i)) for i in range(self.table.num_columns)]
        return [list(row) for row in zip(*columns, strict=True)] if columns else []

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": [c.to_json() for c in self.columns],
            "rows": self.rows(),
            "rowCount": self.row_count,
            "truncated": self.truncated,
            "elapsedMs": round(self.elapsed_ms, 3),
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_NON_STR_KEYS)


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


def _check_functions(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    row = con.execute("SELECT json_serialize_sql($sql)", {"sql": sql}).fetchone()
    tree = orjson.loads(row[0]) if row is not None else None
    if not isinstance(tree, dict) or tree.get("error"):
        raise QueryRefused("the query could not be checked (only plain SELECTs)", field="sql")
    for name in _function_names(tree):
        if name in DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
            raise QueryRefused(f"the function {name}() is not allowed", field="sql")


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


# --------------------------------------------------------------------------------------------
# the sandbox
# --------------------------------------------------------------------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _timeout() -> QueryLimitExceeded:
    return QueryLimitExceeded("the query ran longer than its time limit and was interrupted")


class _Vanished(Exception):
    """A manifest file disappeared under the query (a rebuild or compaction removed it)."""


class _SchemaDrift(Exception):
    """The files of a table do not all have the same columns (index formats mixed)."""


_EXPECTED_COLUMNS: Final[Mapping[str, list[str]]] = {
    table: [*schema.names, "dt"] for table, schema in VIEW_SCHEMAS.items()
}


class SqlSandbox:
    """Runs analyst SQL over ``catalog``'s index (see the module doc for the rules).

    ``catalog`` is a :class:`Catalog` or a function returning the current one (a service that
    reopens its catalog). ``max_rows`` / ``timeout_seconds`` are the defaults and the ceilings a
    caller may ask for; ``memory_limit`` and ``threads`` bound each query's DuckDB;
    ``max_concurrent`` queries run at once; a result stops at ``max_result_bytes`` of Arrow data.
    Thread-safe.
    """

    def __init__(
        self,
        catalog: Catalog | Callable[[], Catalog],
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
        max_concurrent: int = 2,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if not timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        self._catalog = catalog
        self.max_rows = max_rows
        self.timeout_seconds = timeout_seconds
        self.memory_limit = memory_limit
        self.threads = threads if threads is not None else max(1, min(2, os.cpu_count() or 1))
        self.max_result_bytes = max_result_bytes
        self._slots = threading.BoundedSemaphore(max_concurrent)
        # Views read only the first file's schema unless the files of a table turned out to
        # differ (then every footer, slower): sticky once seen.
        self._union_by_name = False

    def run(
        self, sql: object, *, limit: int | None = None, timeout_seconds: float | None = None
    ) -> QueryResult:
        """Run one SELECT; at most ``limit`` rows within ``timeout_seconds`` (both capped)."""
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
            raise QueryBusy("too many queries are running; try again later")
        try:
            catalog = self._catalog if isinstance(self._catalog, Catalog) else self._catalog()
            catalog.refresh()
            for attempt in range(4):
                try:
                    table, columns, truncated = self._run_once(catalog, text, limit, deadline)
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
                return QueryResult(columns, table, truncated, elapsed)
        finally:
            self._slots.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> duckdb.DuckDBPyConnection:
        config: dict[str, str | bool | int | float | list[str]] = dict(_CONFIG)
        config["threads"] = self.threads
        config["memory_limit"] = self.memory_limit
        return duckdb.connect(":memory:", config=config)

    def _prepare(
        self,
        con: duckdb.DuckDBPyConnection,
        catalog: Catalog,
        day_files: Mapping[str, Mapping[date, Sequence[str]]],
        sql: str,
    ) -> None:
        """The views over ``day_files``, the function check, then the lock."""
        manifests = catalog.manifests
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        tables = frozenset(table for table, days in day_files.items() if days)
        union = self._union_by_name
        for statement in view_statements(
            manifests, tables, union_by_name=union, day_files=day_files
        ):
            con.execute(statement)
        if not union:
            # the first file decides a view's columns: an older first file would hide newer ones
            for table in sorted(tables):
                described = con.execute(f"DESCRIBE {table}").fetchall()
                if [row[0] for row in described] != _EXPECTED_COLUMNS[table]:
                    raise _SchemaDrift(table)
        _check_functions(con, sql)
        allowed = str(manifests.root).rstrip(os.sep) + os.sep
        con.execute(f"SET allowed_directories = [{_literal(allowed)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def _run_once(
        self, catalog: Catalog, sql: str, limit: int, deadline: float
    ) -> tuple[pa.Table, tuple[QueryColumn, ...], bool]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout()
        con = self._connect()
        timer = threading.Timer(remaining, con.interrupt)
        timer.daemon = True
        timer.start()
        day_files = catalog.day_files()
        listed = {p for days in day_files.values() for paths in days.values() for p in paths}
        try:
            self._prepare(con, catalog, day_files, sql)
            result = con.execute(sql)
            description = result.description or []
            columns = tuple(QueryColumn(str(d[0]), str(d[1])) for d in description)
            reader = result.to_arrow_reader(_BATCH_ROWS)
            batches: list[pa.RecordBatch] = []
            rows = size = 0
            truncated = False
            for batch in reader:
                if size + batch.nbytes > self.max_result_bytes:
                    if not batches:
                        raise QueryLimitExceeded(
                            f"the result is larger than {self.max_result_bytes} bytes; "
                            "select fewer or smaller columns"
                        )
                    truncated = True
                    break
                batches.append(batch)
                rows += batch.num_rows
                size += batch.nbytes
                if rows > limit:
                    truncated = True
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, limit)
            if time.monotonic() > deadline:
                raise _timeout()
            return table, columns, truncated
        except duckdb.InterruptException:
            raise _timeout() from None
        except duckdb.OutOfMemoryException as err:
            raise QueryLimitExceeded(
                f"the query needs more memory than its limit ({self.memory_limit}): "
                + _message(err)
            ) from None
        except duckdb.PermissionException as err:
            raise QueryRefused(
                "the query reaches outside the index (files, network, extensions or settings "
                "are not available): " + _message(err),
                field="sql",
            ) from None
        except duckdb.IOException as err:
            text = str(err)
            if any(path in listed for path in re.findall(r'"([^"]+)"', text)):
                raise _Vanished(text) from None  # one of the index files the views named
            raise QueryFailed(_message(err), field="sql") from None
        except duckdb.InvalidInputException as err:
            if "schema mismatch" in str(err) and not self._union_by_name:
                raise _SchemaDrift(str(err)) from None  # a later file lacks columns
            raise QueryFailed(_message(err), field="sql") from None
        except duckdb.Error as err:
            if isinstance(err, duckdb.InternalException | duckdb.FatalException):
                _log.warning("DuckDB internal error on an analyst query: %s", err)
            raise QueryFailed(_message(err), field="sql") from None
        finally:
            timer.cancel()
            con.close()
