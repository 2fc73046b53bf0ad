"""DuckDB over the index manifests: views ``snapshots``, ``final_states``, ``versions``, ``executions``.

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
the final state is known.

A table with no files yet is an empty view with the right columns (not an error). Timestamps are
``TIMESTAMP WITH TIME ZONE`` in a session whose time zone is UTC. Results come back through Arrow,
so DuckDB's Python conversion of time zones (which needs ``pytz``) is never used.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]

from archiver.index import SCHEMAS, TABLES
from archiver.store.base import ObjectStore
from query.manifests import ManifestCache

__all__ = ["DEDUP_COLUMNS", "VIEWS", "Catalog"]

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
    "final_states": ("execution_id", "workflow_id", "status", "finished_at", "dt"),
    "versions": ("workflow_id", "seq", "snapshot_hash", "version", "execution_id", "dt"),
}
_DEDUP_ORDER: Final[Mapping[str, str]] = {
    "snapshots": "object_key",
    "final_states": "recorded_at",
    "versions": "created_at",
}

VIEWS: Final = (*TABLES, "executions")

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
LEFT JOIN final_states AS f
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
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_list(arrow_type):
        return _duck_type(arrow_type.value_type) + "[]"
    raise TypeError(f"no DuckDB type for {arrow_type}")  # pragma: no cover - schema is fixed


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _empty_source(table: str) -> str:
    columns = [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in SCHEMAS[table]] + [
        "CAST(NULL AS DATE) AS dt"
    ]
    return f"(SELECT {', '.join(columns)} WHERE false)"


def _file_source(glob: str) -> str:
    return (
        f"read_parquet({_quote_literal(glob)}, hive_partitioning = true, "
        "union_by_name = true, hive_types = {'dt': DATE})"
    )


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
        self._closed = False
        self.refresh(force=True)

    # -- views ----------------------------------------------------------------------------------

    @property
    def index_dir(self) -> str:
        """The local directory DuckDB reads (``<table>/dt=YYYY-MM-DD/*.parquet`` below it)."""
        return str(self.manifests.root)

    def _create_views(self, tables: frozenset[str]) -> None:
        statements = []
        for table in TABLES:
            source = (
                _file_source(self.manifests.glob(table))
                if table in tables
                else _empty_source(table)
            )
            partition = ", ".join(DEDUP_COLUMNS[table])
            statements.append(
                f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {source} "
                f"QUALIFY row_number() OVER (PARTITION BY {partition} "
                f"ORDER BY {_DEDUP_ORDER[table]}) = 1"
            )
        statements.append(_EXECUTIONS_SQL)
        with self.manifests.rw.writing(), self._cursor_lock:
            for statement in statements:
                self._con.execute(statement)
        self._view_tables = tables

    def refresh(self, *, force: bool = False) -> None:
        """Sync the manifest mirror (at most once per ``refresh_seconds`` unless ``force``)."""
        with self._view_lock:
            self.manifests.refresh(force=force)
            tables = self.manifests.tables_with_files
            if tables != self._view_tables:
                self._create_views(tables)

    # -- queries --------------------------------------------------------------------------------

    def arrow(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """Run one query (parameterized: ``?`` or ``$name``) and return an Arrow table."""
        if self._closed:
            raise RuntimeError("catalog is closed")
        self.refresh()
        for attempt in range(3):
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
                if attempt == 2:
                    raise
                _log.info("index query retried after %s", err)
                self.refresh(force=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run one query; rows as dicts (timestamps as aware UTC datetimes)."""
        table = self.arrow(sql, params)
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
