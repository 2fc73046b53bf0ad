"""``POST /api/query``: one read-only SELECT over the index, in the analyst sandbox (``query.sql``).

The route reads ``{sql, limit?, timeoutMs?}``, takes a place among the running and queued queries
(``query_workers`` + ``query_queue``; none free: 429 ``too_many_queries`` with ``Retry-After`` at
once), and waits for the query's worker process on a thread of its own limiter, never on the
threads other routes use, and answers ``{columns, rows, rowCount, truncated, elapsedMs}``.
Limits come from the settings (``query_max_rows``, ``query_timeout_ms``, ``query_memory_limit``,
``query_max_result_bytes``); a request may ask for less, never for more. Errors:
``query_refused``, ``query_failed``, ``query_limit_exceeded`` (422, with ``limit``: ``time``,
``memory`` or ``result``) and ``too_many_queries`` (429), see ``docs/sql.md``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require_scope
from api.errors import ErrorBody, error_responses
from api.limits import read_json_body
from api.schemas import request_body
from archiver.config import Settings
from archiver.errors import InvalidInput
from archiver.jsonio import loads_strict
from query.sql import MAX_SQL_CHARS, QueryResult, SqlSandbox

__all__ = ["QueryRequest", "QueryResponse", "router"]

router = APIRouter()

_FIELDS = frozenset({"sql", "limit", "timeoutMs"})
_lock = threading.Lock()


class QueryRequest(BaseModel):
    """One analyst query."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sql": "SELECT node_type, count(*) FILTER (WHERE status = 'error') / "
                    "count(*) AS failure_rate FROM node_runs "
                    "WHERE dt >= date_trunc('month', current_date) GROUP BY ALL ORDER BY 2 DESC",
                    "limit": 100,
                }
            ]
        },
    )

    sql: str = Field(
        description="exactly one SELECT over snapshots, final_states, executions, versions, "
        "node_runs, tag_events, annotations, retention_events (see docs/sql.md)",
        max_length=MAX_SQL_CHARS,
    )
    limit: int | None = Field(
        default=None, ge=1, description="most rows to return (default and ceiling: query_max_rows)"
    )
    timeoutMs: int | None = Field(  # noqa: N815 - the wire name
        default=None,
        ge=1,
        description="time limit in ms (default and ceiling: query_timeout_ms)",
    )


class QueryColumnBody(BaseModel):
    name: str
    type: str = Field(description="DuckDB type, e.g. VARCHAR, BIGINT, TIMESTAMP WITH TIME ZONE")


class QueryResponse(BaseModel):
    """The result: rows as arrays in column order (timestamps RFC 3339 UTC)."""

    columns: list[QueryColumnBody]
    rows: list[list[Any]]
    rowCount: int  # noqa: N815
    truncated: bool = Field(description="true when the query had more rows than `limit`")
    elapsedMs: float  # noqa: N815


def sandbox_for(state: Any) -> tuple[SqlSandbox, anyio.CapacityLimiter]:
    """The app's sandbox and the thread limiter its queries wait on (made once per app)."""
    with _lock:
        sandbox: SqlSandbox | None = getattr(state, "sql_sandbox", None)
        if sandbox is None:
            settings: Settings = state.settings
            sandbox = SqlSandbox(
                state.index.catalog,
                max_rows=settings.query_max_rows,
                timeout_seconds=settings.query_timeout_ms / 1000.0,
                memory_limit=settings.query_memory_limit,
                max_concurrent=settings.query_workers,
                max_queued=settings.query_queue,
                max_result_bytes=settings.query_max_result_bytes,
            )
            state.sql_sandbox = sandbox
            # as many threads as admitted queries: admission refuses the rest before a thread
            state.sql_limiter = anyio.CapacityLimiter(sandbox.max_concurrent + sandbox.max_queued)
        limiter: anyio.CapacityLimiter = state.sql_limiter
    return sandbox, limiter


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer", field=name)
    return value


def _parse(data: bytes) -> tuple[str, int | None, int | None]:
    body = loads_strict(data, field="body")
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidInput("unknown field; expected sql, limit, timeoutMs", field="body")
    sql = body.get("sql")
    if not isinstance(sql, str):
        raise InvalidInput("sql is required and must be a string", field="sql")
    return sql, _positive_int(body, "limit"), _positive_int(body, "timeoutMs")


def _run(sandbox: SqlSandbox, sql: str, limit: int | None, timeout_ms: int | None) -> QueryResult:
    return sandbox.run_admitted(
        sql,
        limit=limit,
        timeout_seconds=None if timeout_ms is None else timeout_ms / 1000.0,
        arrow=False,
    )


_ERRORS_422 = (
    "Invalid JSON or field (`invalid_input`); SQL the sandbox refuses (`query_refused`: not one "
    "SELECT, or files, network, extensions or settings outside the index); SQL DuckDB rejects "
    "or fails (`query_failed`); the time, memory or result limit reached "
    "(`query_limit_exceeded`, `limit` says which)."
)


@router.post(
    "/api/query",
    dependencies=[Depends(require_scope("query"))],
    response_model=QueryResponse,
    summary="Run analyst SQL over the index",
    description=(
        "Scope: `query` (or `admin`). Exactly one read-only SELECT over the views `snapshots`, "
        "`final_states`, `executions`, `versions`, `node_runs`, `tag_events`, `annotations`, "
        "`retention_events` (columns in `docs/sql.md`), run "
        "in a fresh, locked DuckDB: no files outside the index, no network, no extensions, no "
        "settings. At most `limit` rows (`truncated` says whether there were more); "
        "stopped at the time limit, memory-bounded in a worker process. Beyond `query_workers` "
        "running and `query_queue` waiting queries: 429 with `Retry-After`."
    ),
    responses={
        **error_responses(401, 403, 413, 415, 429, 503),
        422: {"model": ErrorBody, "description": _ERRORS_422},
    },
    openapi_extra={
        **request_body(QueryRequest, "the query and optional limits"),
        "x-required-scope": "query",
    },
    tags=["query"],
)
async def run_query(request: Request) -> Response:
    data = await read_json_body(request)
    sql, limit, timeout_ms = _parse(data)
    sandbox, limiter = sandbox_for(request.app.state)
    with sandbox.admission():
        result = await anyio.to_thread.run_sync(
            functools.partial(_run, sandbox, sql, limit, timeout_ms), limiter=limiter
        )
    return Response(result.to_json_bytes(), media_type="application/json")
