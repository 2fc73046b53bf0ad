"""DuckDB over the index manifests: views ``snapshots``, ``final_states``, ``versions``,
``node_runs``, ``executions``.

Each table view reads every Parquet file of the table (``<root>/<table>/*/*.parquet``, Hive
partitioned by ``dt``) and returns each row once, even when the same row sits in a part and in a
compacted or rebuilt file (invariant 8): ``QUALIFY row_number() OVER (PARTITION BY <identity and
filter columns>) = 1``. The partition list holds the row's identity (execution id; workflow and
seq for versions) plus columns that are constant for that identity and used in filters
(``workflow_id``, ``snapshot_hash``, ``created_at``, ``dt`` ...). DuckDB turns the window into a
grouped ``arg_min`` and pushes filters on those columns below it, into the Parquet scan (row-group
statistics, bloom filters, ``dt`` partition pruning), so a deduplicating view is as fast as a raw
``read_parquet`` for lookups.

``executions`` is ``snapshots LEFT JOIN final_states``: one row per execution, with its outcome when
the final state is known. An execution that waits also has ``final_states`` rows for its progress
records (status ``waiting`` …); ``executions`` takes the final state (``result.json.zst``) when
there is one, else the latest progress row (``recorded_at``).

Lookups by workflow or snapshot hash go two steps: the catalog keeps a small in-memory *key map*
(``_key_days``: for each snapshots file, each workflow id and snapshot hash in it, with its day and
row count), built from the local files as they appear (each file is read once: it never changes).
``key_days()`` answers "which days hold this workflow/hash, how many rows each" without opening any
Parquet file, and the history queries then open only those days (``list_contains($days, dt)``
prunes the Hive partitions).

A table with no files yet is an empty view with the right columns (not an error). Timestamps are
``TIMESTAMP WITH TIME ZONE`` in a session whose time zone is UTC. Results come back through Arrow,
so DuckDB's Python conversion of time zones (which needs ``pytz``) is never used.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final, TypeVar

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]

from archiver.events import EVENT_TABLES
from archiver.index import SCHEMAS
from archiver.retention import RETENTION_EVENTS_SCHEMA, RETENTION_TABLE
from archiver.store.base import ObjectStore
from query.manifests import ManifestCache

__all__ = [
    "DEDUP_COLUMNS",
    "EVENT_VIEWS",
    "KEY_KINDS",
    "VIEWS",
    "VIEW_SCHEMAS",
    "VIEW_TABLES",
    "Catalog",
    "view_statements",
]

_log = logging.getLogger(__name__)

#: what a table view partitions by to return each row once (identity first, then filter columns)
DEDUP_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "snapshots": (
        "execution_id",
        "workflow_id",
        "snapshot_hash",
        "created_at",
        "dt",
        "version",
        "trigger_type",
        "user_id",
    ),
    "final_states": ("execution_id", "workflow_id", "status", "finished_at", "dt", "object_key"),
    "versions": ("workflow_id", "seq", "snapshot_hash", "version", "execution_id", "dt"),
    "node_runs": ("execution_id", "node_name", "run_index", "workflow_id", "dt"),
    "tag_events": ("event_id", "workflow_id", "dt"),
    "annotations": ("event_id", "workflow_id", "dt"),
    "retention_events": ("event_id", "action", "execution_id", "workflow_id", "dt"),
}
_DEDUP_ORDER: Final[Mapping[str, str]] = {
    "snapshots": "object_key",
    "final_states": "recorded_at",
    "versions": "created_at",
    "node_runs": "object_key",
    "tag_events": "object_key",
    "annotations": "object_key",
    "retention_events": "object_key",
}

#: the append-only tag and annotation events (``archiver.events``): their own parts under
#: ``index/``, outside rebuild_index/verify (``rebuild_event_index`` regenerates them)
EVENT_VIEWS: Final = tuple(EVENT_TABLES)
#: every table a view reads: the index tables, the event tables and retention's tombstones and
#: tier events (``archiver.retention``: ``rebuild_retention_index`` regenerates them)
VIEW_SCHEMAS: Final[Mapping[str, pa.Schema]] = {
    **SCHEMAS,
    **EVENT_TABLES,
    RETENTION_TABLE: RETENTION_EVENTS_SCHEMA,
}
VIEW_TABLES: Final = tuple(VIEW_SCHEMAS)

VIEWS: Final = (*VIEW_TABLES, "executions")

#: key map kinds per table: kind -> the SQL expression of its key
KEY_KINDS: Final[Mapping[str, Mapping[str, str]]] = {
    "snapshots": {"workflow": "workflow_id", "hash": "snapshot_hash"},
    # ids never contain "/", so "<workflow>/<status>" is unambiguous
    "final_states": {
        "final_workflow": "workflow_id",
        "final_status": "workflow_id || '/' || status",
    },
}
_KIND_NAMES: Final = frozenset(k for kinds in KEY_KINDS.values() for k in kinds)
_MAP_CHUNK: Final = 256  # files read per key-map statement

_EXECUTIONS_SQL: Final = """
CREATE OR REPLACE VIEW executions AS
SELECT s.*,
       f.status,
       f.started_at,
       f.finished_at,
       f.duration_ms,
       f.node_count AS executed_node_count,
       f.error_count,
       f.failed_nodes,
       f.first_failed_node,
       f.object_key AS result_key,
       f.stored_bytes AS result_stored_bytes,
       f.recorded_at
FROM snapshots AS s
LEFT JOIN (
    SELECT * FROM final_states
    QUALIFY row_number() OVER (
        PARTITION BY execution_id, workflow_id
        ORDER BY object_key NOT LIKE '%/result.json.zst', recorded_at DESC, object_key DESC
    ) = 1
) AS f
  ON f.execution_id = s.execution_id AND f.workflow_id = s.workflow_id
"""


def _duck_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_int16(arrow_type):
        return "SMALLINT"
    if pa.types.is_int32(arrow_type):
        return "INTEGER"
    if pa.types.is_int64(arrow_type):
        return "BIGINT"
    if pa.types.is_float64(arrow_type):
        return "DOUBLE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_list(arrow_type):
        return _duck_type(arrow_type.value_type) + "[]"
    raise TypeError(f"no DuckDB type for {arrow_type}")  # pragma: no cover - schema is fixed


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _empty_source(table: str) -> str:
    columns = [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in VIEW_SCHEMAS[table]] + [
        "CAST(NULL AS DATE) AS dt"
    ]
    return f"(SELECT {', '.join(columns)} WHERE false)"


def _file_source(glob: str, *, union_by_name: bool = True) -> str:
    union = "union_by_name = true, " if union_by_name else ""
    return (
        f"read_parquet({_quote_literal(glob)}, hive_partitioning = true, "
        f"{union}hive_types = {{'dt': DATE}})"
    )


_T = TypeVar("_T")


def _dedup_sql(source: str, table: str) -> str:
    partition = ", ".join(DEDUP_COLUMNS[table])
    return (
        f"SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {partition} "
        f"ORDER BY {_DEDUP_ORDER[table]}) = 1"
    )


def _list_source(paths: Sequence[str], *, union_by_name: bool) -> str:
    union = "union_by_name = true, " if union_by_name else ""
    files = "[" + ", ".join(_quote_literal(p) for p in paths) + "]"
    return f"read_parquet({files}, hive_partitioning = true, {union}hive_types = {{'dt': DATE}})"


#: tables that gained columns after parts were written: their views always have every column
#: (older parts read them as null), also when no file has them yet
_PADDED_TABLES: Final = frozenset({RETENTION_TABLE})


def _padded(table: str, body: str, union_by_name: bool) -> str:
    """``body`` with every column of ``table``'s schema, in schema order. Only with
    ``union_by_name``: without it a view shows the first file's columns, which is how the
    sandbox notices files of older formats (it then turns ``union_by_name`` on)."""
    if table not in _PADDED_TABLES or not union_by_name:
        return body
    return f"SELECT * FROM {_empty_source(table)} UNION ALL BY NAME SELECT * FROM ({body})"


def view_statements(
    manifests: ManifestCache,
    tables: frozenset[str],
    *,
    union_by_name: bool = True,
    day_files: Mapping[str, Mapping[date, Sequence[str]]] | None = None,
) -> list[str]:
    """``CREATE OR REPLACE VIEW`` statements for every view in :data:`VIEWS` over ``manifests``.

    A table in ``tables`` reads its files (glob); any other table is an empty view with the
    right columns. Used by :class:`Catalog` and by the analyst sandbox (``query.sql``).
    ``union_by_name`` reads every file's footer when the view is bound (files of different
    index formats then still line up by column name); without it only the first file's schema
    is read, which is much cheaper for a connection that lives for one query.

    ``day_files`` (``table -> day -> paths``, see :meth:`Catalog.day_files`) pins each view to
    exactly those files instead of a glob, and deduplicates only the days that have more than
    one file: a single file never holds a row twice, so the days compaction has finished with
    (nearly all of them) are read as they are, at the speed of a plain ``read_parquet``.
    """
    statements = []
    for table in VIEW_TABLES:
        if day_files is not None:
            days = day_files.get(table, {})
            single = [p for paths in days.values() if len(paths) == 1 for p in paths]
            multi = [p for paths in days.values() if len(paths) > 1 for p in paths]
            branches = []
            if single:
                branches.append(
                    f"SELECT * FROM {_list_source(single, union_by_name=union_by_name)}"
                )
            if multi:
                source = _list_source(multi, union_by_name=union_by_name)
                branches.append(f"SELECT * FROM ({_dedup_sql(source, table)})")
            if not branches:
                branches.append(f"SELECT * FROM {_empty_source(table)}")
            body = _padded(table, " UNION ALL BY NAME ".join(branches), union_by_name)
            statements.append(f"CREATE OR REPLACE VIEW {table} AS {body}")
            continue
        source = (
            _file_source(manifests.glob(table), union_by_name=union_by_name)
            if table in tables
            else _empty_source(table)
        )
        body = _padded(table, _dedup_sql(source, table), union_by_name)
        statements.append(f"CREATE OR REPLACE VIEW {table} AS {body}")
    statements.append(_EXECUTIONS_SQL)
    return statements


def _day_of(rel: str) -> date | None:
    parts = rel.split("/")
    try:
        return date.fromisoformat(parts[1].removeprefix("dt="))
    except (IndexError, ValueError):  # pragma: no cover - the mirror only keeps valid names
        return None


def _normalize(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


class Catalog:
    """A DuckDB connection with the index views over ``store``'s manifests.

    Thread-safe: every call runs on its own cursor; refreshing the manifest mirror and re-creating
    views are serialized against running queries. ``cache_dir`` is where manifests of a remote
    store are mirrored (see :class:`query.manifests.ManifestCache`); a LocalStore is read in place.
    """

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        refresh_seconds: float = 1.0,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.store = store
        self.manifests = ManifestCache(store, cache_dir, refresh_seconds=refresh_seconds)
        config: dict[str, str | bool | int | float | list[str]] = {
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        if threads is not None:
            config["threads"] = threads
        if memory_limit is not None:
            config["memory_limit"] = memory_limit
        self._con = duckdb.connect(":memory:", config=config)
        self._con.execute("SET GLOBAL TimeZone = 'UTC'")
        # Manifest files never change once written (new files get new names): caching their
        # footers is safe and makes warm lookups cheaper.
        self._con.execute("SET GLOBAL parquet_metadata_cache = true")
        self._cursor_lock = threading.Lock()
        self._view_lock = threading.Lock()
        self._view_tables: frozenset[str] | None = None
        self._mapped: set[str] = set()
        self._by_day: dict[str, dict[date, list[str]]] = {t: {} for t in VIEW_TABLES}
        self._con.execute(
            "CREATE TABLE _key_days (file VARCHAR, kind VARCHAR, key VARCHAR, dt DATE, n BIGINT)"
        )
        self._closed = False
        self.refresh(force=True)

    # -- views ----------------------------------------------------------------------------------

    @property
    def index_dir(self) -> str:
        """The local directory DuckDB reads (``<table>/dt=YYYY-MM-DD/*.parquet`` below it)."""
        return str(self.manifests.root)

    def _create_views(self, tables: frozenset[str]) -> None:
        statements = view_statements(self.manifests, tables)
        with self.manifests.rw.writing(), self._cursor_lock:
            for statement in statements:
                self._con.execute(statement)
        self._view_tables = tables

    def refresh(self, *, force: bool = False) -> None:
        """Sync the manifest mirror (at most once per ``refresh_seconds`` unless ``force``)."""
        with self._view_lock:
            changed = self.manifests.refresh(force=force)
            tables = self.manifests.tables_with_files
            if tables != self._view_tables:
                self._create_views(tables)
            if changed or force:
                by_day: dict[str, dict[date, list[str]]] = {t: {} for t in VIEW_TABLES}
                root = self.manifests.root
                for rel in sorted(self.manifests.files):
                    day = _day_of(rel)
                    if day is not None:
                        table = rel.split("/", 1)[0]
                        by_day[table].setdefault(day, []).append(str(root / rel))
                self._by_day = by_day
                self._update_key_map()

    # -- day-restricted reads (the lookups' fast path) ------------------------------------------

    def day_files(self) -> Mapping[str, Mapping[date, Sequence[str]]]:
        """``table -> day -> local paths`` as of the last refresh (one consistent snapshot)."""
        return self._by_day

    def files_for(
        self,
        table: str,
        *,
        days: Iterable[date] | None = None,
        first: date | None = None,
        before: date | None = None,
    ) -> list[str]:
        """Local paths of ``table``'s files in ``days`` (or in ``first`` <= day < ``before``)."""
        by_day = self._by_day[table]
        if days is not None:
            return [path for day in days for path in by_day.get(day, ())]
        return [
            path
            for day, paths in by_day.items()
            if (first is None or day >= first) and (before is None or day < before)
            for path in paths
        ]

    @staticmethod
    def source(table: str, param: str = "files") -> str:
        """A deduplicated ``table`` over the file list in parameter ``$param`` (see files_for)."""
        reader = (
            f"read_parquet(${param}, hive_partitioning = true, union_by_name = true, "
            "hive_types = {'dt': DATE})"
        )
        return f"({_dedup_sql(reader, table)})"

    def retrying(self, run: Callable[[], _T], attempts: int = 5) -> _T:
        """Run a lookup; if a file it named vanished meanwhile, refresh and run it again.

        (A mirror keeps removed files a while, so this is for a LocalStore read in place, where
        a rebuild or compaction in another process deletes files whenever it likes.)
        """
        for attempt in range(attempts):
            try:
                return run()
            except duckdb.IOException as err:
                if attempt + 1 == attempts:
                    raise
                _log.info("index lookup retried after %s", err)
                time.sleep(0.02 * attempt)
                self.refresh(force=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _update_key_map(self) -> None:
        root = self.manifests.root
        files = {
            str(root / rel) for rel in self.manifests.files if rel.split("/", 1)[0] in KEY_KINDS
        }
        gone = sorted(self._mapped - files)
        new = sorted(files - self._mapped)
        with self._cursor_lock:
            cursor = self._con.cursor()
        try:
            for start in range(0, len(gone), _MAP_CHUNK):
                chunk = gone[start : start + _MAP_CHUNK]
                cursor.execute(
                    "DELETE FROM _key_days WHERE list_contains($files, file)", {"files": chunk}
                )
                self._mapped.difference_update(chunk)
            for table in KEY_KINDS:
                mine = [f for f in new if f.startswith(str(root / table) + os.sep)]
                for start in range(0, len(mine), _MAP_CHUNK):
                    self._map_files(cursor, table, mine[start : start + _MAP_CHUNK])
        finally:
            cursor.close()

    def _map_files(self, cursor: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> None:
        kinds = KEY_KINDS[table]
        selects = " UNION ALL ".join(
            f"SELECT filename, '{kind}', k{i}, dt, count(*) FROM source GROUP BY filename, k{i}, dt"
            for i, kind in enumerate(kinds)
        )
        keys = ", ".join(f"{expr} AS k{i}" for i, expr in enumerate(kinds.values()))
        sql = (
            f"INSERT INTO _key_days WITH source AS MATERIALIZED (SELECT filename, dt, {keys} "
            "FROM read_parquet($files, hive_partitioning = true, hive_types = {'dt': DATE}, "
            "filename = true)) " + selects
        )
        try:
            with self.manifests.reading():
                cursor.execute(sql, {"files": files})
        except duckdb.IOException:
            if len(files) == 1:
                return  # vanished (a rebuild removed it): nothing to map
            for one in files:  # find the file that vanished, map the others
                self._map_files(cursor, table, [one])
            return
        self._mapped.update(files)

    def key_days(
        self,
        kind: str,
        key: str | Sequence[str],
        *,
        first: date | None = None,
        last: date | None = None,
    ) -> list[tuple[date, int]]:
        """Days holding rows whose ``kind`` key is ``key`` (or any of several), newest first,
        with an upper bound of their row count (a row in two files is counted twice).

        Kinds: ``workflow``, ``hash`` (snapshots); ``final_workflow``, ``final_status``
        (final states; the latter keyed ``<workflow>/<status>``). Reads no Parquet file.
        """
        if kind not in _KIND_NAMES:
            raise ValueError(f"unknown key kind {kind!r}")
        keys = [key] if isinstance(key, str) else list(key)
        conditions = ["kind = $kind", "list_contains($keys, key)"]
        params: dict[str, Any] = {"kind": kind, "keys": keys}
        if first is not None:
            conditions.append("dt >= $first")
            params["first"] = first
        if last is not None:
            conditions.append("dt <= $last")
            params["last"] = last
        rows = self.rows(
            f"SELECT dt, sum(n)::BIGINT AS n FROM _key_days WHERE {' AND '.join(conditions)} "
            "GROUP BY dt ORDER BY dt DESC",
            params,
        )
        return [(r["dt"], r["n"]) for r in rows]

    # -- queries --------------------------------------------------------------------------------

    def arrow(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        retry: bool = True,
    ) -> pa.Table:
        """Run one query (parameterized: ``?`` or ``$name``) and return an Arrow table.

        ``retry``: when a file vanished under the query (a rebuild), refresh and run it again;
        pointless for queries over an explicit file list (see :meth:`retrying`).
        """
        if self._closed:
            raise RuntimeError("catalog is closed")
        self.refresh()
        attempts = 5 if retry else 1
        for attempt in range(attempts):
            try:
                with self.manifests.reading():
                    with self._cursor_lock:
                        cursor = self._con.cursor()
                    try:
                        return cursor.execute(sql, params).to_arrow_table()
                    finally:
                        cursor.close()
            except duckdb.IOException as err:
                # a file vanished between glob and read (a rebuild or compaction removed it)
                if attempt + 1 == attempts:
                    raise
                _log.info("index query retried after %s", err)
                time.sleep(0.02 * attempt)
                self.refresh(force=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def rows(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        retry: bool = True,
    ) -> list[dict[str, Any]]:
        """Run one query; rows as dicts (timestamps as aware UTC datetimes)."""
        table = self.arrow(sql, params, retry=retry)
        return [{k: _normalize(v) for k, v in row.items()} for row in table.to_pylist()]

    def scalar(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        table = self.arrow(sql, params)
        if table.num_rows == 0:
            return None
        return _normalize(table.column(0)[0].as_py())

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cursor_lock:
            self._con.close()
        self.manifests.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
