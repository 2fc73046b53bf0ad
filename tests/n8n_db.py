"""n8n databases for the import tests and the backfill benchmark, built from the real schema.

The tables come from the DDL a real n8n 2.41.1 created (``tests/fixtures/n8n/*_schema.sql``), so
the importer is tested against n8n's columns and types without n8n itself. Rows are written as
n8n writes them: SQLite times as UTC text ``YYYY-MM-DD HH:MM:SS.fff``, Postgres ``timestamptz``;
``execution_data.data`` as flatted ``IRunExecutionData`` (``flatted_dumps``, a port of the npm
package checked byte for byte in test_final_state).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers import flatted_dumps

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "n8n"
SQLITE_SCHEMA = FIXTURES / "sqlite_schema.sql"
POSTGRES_SCHEMA = FIXTURES / "postgres_schema.sql"


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def run_data(
    workflow: Mapping[str, Any],
    started: datetime,
    *,
    fail_node: str | None = None,
    stop_after: int | None = None,
) -> str:
    """Flatted ``IRunExecutionData`` for ``workflow``'s nodes run in order (sticky notes left out):
    each 5 ms, one item out; ``fail_node`` ends the run with an error there; ``stop_after`` runs
    only that many nodes (a waiting execution)."""
    nodes = [n for n in workflow["nodes"] if not n["type"].endswith("stickyNote")]
    if stop_after is not None:
        nodes = nodes[:stop_after]
    run: dict[str, Any] = {}
    previous: str | None = None
    last = None
    error = None
    for i, node in enumerate(nodes):
        name = node["name"]
        task: dict[str, Any] = {
            "startTime": ms(started) + 5 * i,
            "executionIndex": i,
            "source": [] if previous is None else [{"previousNode": previous}],
            "hints": [],
            "executionTime": 4,
            "executionStatus": "success",
            "data": {"main": [[{"json": {"step": i, "node": name}, "pairedItem": {"item": 0}}]]},
        }
        last = name
        if name == fail_node:
            error = {
                "message": f"{name} failed",
                "name": "NodeOperationError",
                "description": "boom",
                "node": {"name": name, "type": node["type"]},
                "stack": "Error: boom",
            }
            task["executionStatus"] = "error"
            task["error"] = error
            del task["data"]
            run[name] = [task]
            break
        run[name] = [task]
        previous = name
    result: dict[str, Any] = {"runData": run, "lastNodeExecuted": last}
    if error is not None:
        result["error"] = error
    data = {
        "version": 1,
        "startData": {},
        "resultData": result,
        "executionData": {
            "contextData": {},
            "nodeExecutionStack": [],
            "metadata": {},
            "waitingExecution": {},
            "waitingExecutionSource": {},
        },
    }
    return flatted_dumps(data)


class N8nDb:
    """Rows into n8n's tables; ``sqlite`` or ``postgres`` (psycopg connection)."""

    def __init__(self, conn: Any, kind: str) -> None:
        self.conn = conn
        self.kind = kind
        self.p = "?" if kind == "sqlite" else "%s"

    @classmethod
    def sqlite(cls, path: Path) -> N8nDb:
        conn = sqlite3.connect(path)
        conn.executescript(SQLITE_SCHEMA.read_text())
        return cls(conn, "sqlite")

    @classmethod
    def postgres(cls, dsn: str) -> N8nDb:
        import psycopg

        conn = psycopg.connect(dsn, autocommit=True)
        try:
            conn.execute(POSTGRES_SCHEMA.read_text().encode())
        except BaseException:
            conn.close()
            raise
        return cls(conn, "postgres")

    def _time(self, when: datetime | None) -> Any:
        if when is None:
            return None
        if self.kind == "postgres":
            return when
        when = when.astimezone(UTC)
        return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"

    def _insert(self, table: str, row: Mapping[str, Any]) -> None:
        cols = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join(self.p for _ in row)
        self.conn.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', list(row.values()))

    def _many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cols = ", ".join(f'"{c}"' for c in rows[0])
        marks = ", ".join(self.p for _ in rows[0])
        sql = f'INSERT INTO "{table}" ({cols}) VALUES ({marks})'
        if self.kind == "sqlite":
            self.conn.executemany(sql, [list(r.values()) for r in rows])
        else:
            with self.conn.cursor() as cur:
                cur.executemany(sql.encode(), [list(r.values()) for r in rows])

    def workflow(self, workflow: Mapping[str, Any], version_id: str, created: datetime) -> None:
        self._insert(
            "workflow_entity",
            {
                "id": workflow["id"],
                "name": workflow["name"],
                "active": False,
                "nodes": json.dumps(workflow["nodes"]),
                "connections": json.dumps(workflow["connections"]),
                "settings": json.dumps(workflow.get("settings") or {}),
                "versionId": version_id,
                "createdAt": self._time(created),
                "updatedAt": self._time(created),
            },
        )

    def history(self, workflow: Mapping[str, Any], version_id: str, created: datetime) -> None:
        self._insert(
            "workflow_history",
            {
                "versionId": version_id,
                "workflowId": workflow["id"],
                "authors": "Ada Lovelace",
                "createdAt": self._time(created),
                "updatedAt": self._time(created),
                "nodes": json.dumps(workflow["nodes"]),
                "connections": json.dumps(workflow["connections"]),
            },
        )

    def execution_rows(
        self,
        exec_id: int,
        workflow: Mapping[str, Any],
        *,
        status: str,
        mode: str,
        created: datetime,
        started: datetime | None = None,
        stopped: datetime | None = None,
        wait_till: datetime | None = None,
        retry_of: str | None = None,
        version_id: str | None = None,
        workflow_data: str | None = None,
        data: str | None = None,
        with_data: bool = True,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        entity = {
            "id": exec_id,
            "workflowId": workflow["id"],
            "finished": status == "success",
            "mode": mode,
            "retryOf": retry_of,
            "startedAt": self._time(started),
            "stoppedAt": self._time(stopped),
            "waitTill": self._time(wait_till),
            "status": status,
            "createdAt": self._time(created),
            "workflowVersionId": version_id,
        }
        if not with_data:
            return entity, None
        stored = {k: v for k, v in workflow.items() if k not in ("active", "versionId", "tags")}
        return entity, {
            "executionId": exec_id,
            "workflowData": json.dumps(stored) if workflow_data is None else workflow_data,
            "data": data if data is not None else "[]",
            "workflowVersionId": version_id,
        }

    def execution(self, exec_id: int, workflow: Mapping[str, Any], **kw: Any) -> None:
        entity, data = self.execution_rows(exec_id, workflow, **kw)
        self._insert("execution_entity", entity)
        if data is not None:
            self._insert("execution_data", data)

    def executions(self, rows: Sequence[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        self._many("execution_entity", [e for e, _ in rows])
        self._many("execution_data", [d for _, d in rows if d is not None])

    def update(self, sql: str, params: Sequence[Any]) -> None:
        self.conn.execute(sql.replace("?", self.p), list(params))

    def commit(self) -> None:
        if self.kind == "sqlite":
            self.conn.commit()

    def close(self) -> None:
        self.commit()
        self.conn.close()


def days_ago(days: float, now: datetime | None = None) -> datetime:
    base = now or datetime.now(UTC)
    return (base - timedelta(days=days)).replace(microsecond=(base.microsecond // 1000) * 1000)
