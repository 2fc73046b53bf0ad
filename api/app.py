"""The HTTP service: thin routes over :class:`archiver.archive.Archive`.

Each route checks its caller's scope, reads and checks its input, calls one archive function and
serializes the answer. Limits, auth and error mapping live in ``api.limits``, ``api.auth`` and
``api.errors``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, load_tokens, require_scope
from api.errors import Forbidden, error_responses, install_error_handlers
from api.limits import BodyLimitMiddleware, PathGuardMiddleware, read_json_body
from api.params import ExecutionId, WorkflowId
from api.routes_compare import router as compare_router
from api.routes_compliance import router as compliance_router
from api.routes_query import router as query_router
from api.routes_query import sandbox_for
from api.routes_retention import router as retention_router
from api.schemas import (
    CaptureRequest,
    CaptureResponse,
    ExecutionPage,
    FinalStateRequest,
    FinalStateResponse,
    Health,
    SnapshotResponse,
    VersionCommitBody,
    VersionList,
    request_body,
)
from archiver.archive import Archive, CaptureResult, FinalStateResult
from archiver.config import Settings
from archiver.errors import InvalidInput, NotFound
from archiver.final_state import summarize
from archiver.index import ManifestWriter
from archiver.jsonio import loads_strict
from archiver.layout import check_hash
from archiver.request import parse_capture_request
from archiver.timeutil import format_ts
from query.catalog import Catalog
from query.history import HistoryPage, executions_by_hash, workflow_history
from query.sql import shutdown_workers

__all__ = ["ORJSONResponse", "create_app"]

log = logging.getLogger("execvault.api")

VERSION = "0.1.0"


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# ---------------------------------------------------------------------------- bodies


def _json_object(data: bytes) -> dict[str, Any]:
    value = loads_strict(data, field="body")
    if not isinstance(value, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    return value


def _capture(archive: Archive, data: bytes, backfill: bool = False) -> CaptureResult:
    request = parse_capture_request(_json_object(data))
    if request.fields.get("source") == "backfill" and not backfill:
        raise Forbidden("a capture marked source backfill needs the backfill scope", field="source")
    return archive.capture_snapshot(**request.arguments(), backfill=backfill)


def _record_final_state(archive: Archive, execution_id: str, data: bytes) -> FinalStateResult:
    return archive.record_final_state(execution_id, _json_object(data))


def capture_body(result: CaptureResult) -> dict[str, Any]:
    snap = result.snapshot
    return {
        "id": snap.id,
        "executionId": snap.execution_id,
        "workflowId": snap.workflow_id,
        "snapshotVersion": snap.snapshot_version,
        "snapshotHash": snap.snapshot_hash,
        "createdAt": format_ts(snap.created_at),
        "warnings": [w.to_json() for w in snap.warnings],
        "receivedAt": None if snap.received_at is None else format_ts(snap.received_at),
    }


def final_state_body(result: FinalStateResult) -> dict[str, Any]:
    final = result.final_state
    summary = summarize(final)
    started, finished = summary["startedAt"], summary["finishedAt"]
    return {
        "executionId": final.execution_id,
        "status": summary["status"],
        "startedAt": format_ts(started) if started is not None else None,
        "finishedAt": format_ts(finished) if finished is not None else None,
        "durationMs": summary["durationMs"],
        "nodeCount": summary["nodeCount"],
        "errorCount": summary["errorCount"],
        "failedNodes": summary["failedNodes"],
    }


# ---------------------------------------------------------------------------- the app

_INGEST = "Scope: `ingest` (or `admin`)."
#: who may capture (``ingest``); one that also holds ``backfill`` may send old ``createdAt`` times
_CAPTURE_CALLER = require_scope("ingest")
_READ = "Scope: `read` (or `admin`)."


def _scope(scope: str) -> dict[str, Any]:
    return {"x-required-scope": scope}


def _created(model: type[Any], what: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": model, "description": f"Identical re-send: the {what} already stored."},
        201: {"model": model, "description": f"The {what} was stored."},
    }


class IndexService:
    """The index side of the service: a manifest writer on the archive, a catalog for reads.

    Started and stopped by the app's lifespan (uvicorn, or a TestClient used as a context
    manager): the writer flushes what it buffered on shutdown.
    """

    def __init__(self, archive: Archive, settings: Settings) -> None:
        self._archive = archive
        self._settings = settings
        self._lock = threading.Lock()
        self.writer: ManifestWriter | None = None
        self._catalog: Catalog | None = None

    def start(self) -> None:
        store = self._archive.store
        # The journal lets this start index what a killed predecessor acknowledged but had not
        # written to the index yet (ManifestWriter.recover, in the writer's thread).
        self.writer = ManifestWriter(
            store,
            flush_rows=self._settings.index_flush_rows,
            flush_seconds=self._settings.index_flush_ms / 1000.0,
            journal_dir=self._settings.journal_dir(store),
        ).attach(self._archive)

    def catalog(self) -> Catalog:
        with self._lock:
            if self._catalog is None:
                # Refresh the manifest view twice a second: with the writer's flush interval
                # (index_flush_ms, default 1 s) a capture shows in history within ~1.5 s.
                self._catalog = Catalog(
                    self._archive.store, self._settings.index_cache_dir, refresh_seconds=0.5
                )
            return self._catalog

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.detach(self._archive)
            self.writer.close()
            self.writer = None
        with self._lock:
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None


def _page_body(page: HistoryPage) -> dict[str, Any]:
    return {"items": [i.to_json() for i in page.items], "nextCursor": page.next_cursor}


def create_app(settings: Settings, *, archive: Archive | None = None) -> FastAPI:
    """Build the app; nothing connects to anything before this is called."""
    tokens = load_tokens(settings)
    arc = archive
    if arc is None:
        arc = settings.open_archive()
    index = IndexService(arc, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        index.start()
        # the analyst SQL workers import DuckDB now, not on the first query
        sandbox_for(app.state)[0].start()
        try:
            yield
        finally:
            await run_in_threadpool(index.stop)
            await run_in_threadpool(shutdown_workers)

    if tokens.open:
        log.warning("no API tokens configured: every request is allowed (loopback use only)")
    app = FastAPI(
        title="execvault",
        version=VERSION,
        summary="Immutable, git-like archive of workflow execution snapshots.",
        description=(
            "Bearer-token auth with scopes (see each route). Errors are "
            '`{"error", "message", "field"}` and never echo the input. See `docs/api.md`.'
        ),
        default_response_class=ORJSONResponse,
        debug=False,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Outermost last: the path guard runs first, then the body limit wraps every body read.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        timeout_seconds=float(settings.body_timeout_seconds),
        max_inflight_bytes=settings.max_inflight_body_bytes,
    )
    app.add_middleware(PathGuardMiddleware)
    app.state.archive = arc
    app.state.index = index
    app.state.tokens = tokens
    app.state.settings = settings
    app.include_router(query_router)
    app.include_router(retention_router)
    app.include_router(compliance_router)

    ingest = [Depends(require_scope("ingest"))]
    read = [Depends(require_scope("read"))]

    @app.get(
        "/healthz",
        response_model=Health,
        summary="Liveness check",
        description="Open (no token). Says the process is serving; it does not probe the store.",
        tags=["service"],
    )
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/api/execution-snapshots",
        status_code=201,
        summary="Capture a pre-execution snapshot",
        description=(
            f"{_INGEST} Stores the sanitized workflow, versioned, write-once. "
            "An identical re-send answers 200 with the same body; different content for an "
            "existing `executionId` is a 409. `createdAt` must be within "
            "`capture_max_age_seconds` (24 h) before and `capture_max_skew_seconds` (5 min) "
            "after the server's clock; older only with the `backfill` scope (422 otherwise)."
        ),
        responses={
            **_created(CaptureResponse, "snapshot"),
            **error_responses(401, 403, 408, 409, 413, 415, 422, 503, 507),
        },
        openapi_extra={**request_body(CaptureRequest, "the capture request"), **_scope("ingest")},
        tags=["ingest"],
    )
    async def capture(
        request: Request, caller: Annotated[Principal, Depends(_CAPTURE_CALLER)]
    ) -> Response:
        data = await read_json_body(request)
        result = await run_in_threadpool(_capture, arc, data, caller.has("backfill"))
        return ORJSONResponse(capture_body(result), status_code=201 if result.created else 200)

    @app.post(
        "/api/execution-snapshots/{executionId}/final-state",
        dependencies=ingest,
        status_code=201,
        summary="Record an execution's final state",
        description=(
            f"{_INGEST} A second write-once record next to the snapshot (which is never "
            "rewritten). Identical re-send → 200, different content → 409, no snapshot yet → "
            "404 (capture it first; re-sending later is safe). A `waiting`, `running` or `new` "
            "report is a create-only progress record: the execution can still end, and a "
            "progress report after the end → 409."
        ),
        responses={
            **_created(FinalStateResponse, "final state"),
            **error_responses(401, 403, 404, 408, 409, 413, 415, 422, 503, 507),
        },
        openapi_extra={
            **request_body(FinalStateRequest, "n8n run data or the plain final-state format"),
            **_scope("ingest"),
        },
        tags=["ingest"],
    )
    async def final_state(execution_id: ExecutionId, request: Request) -> Response:
        data = await read_json_body(request)
        result = await run_in_threadpool(_record_final_state, arc, execution_id, data)
        return ORJSONResponse(final_state_body(result), status_code=201 if result.created else 200)

    @app.get(
        "/api/execution-snapshots/{executionId}",
        dependencies=read,
        response_model=SnapshotResponse,
        summary="Get a snapshot (and its final state)",
        description=(
            f"{_READ} Two object reads, both re-verified against their hashes. A snapshot in a "
            "cold storage class answers 409 `archived` with the restore route to call."
        ),
        responses=error_responses(401, 403, 404, 409, 422, 503),
        openapi_extra=_scope("read"),
        tags=["read"],
    )
    def get_snapshot(execution_id: ExecutionId) -> Response:
        body = arc.get_snapshot(execution_id).to_json()
        final = arc.get_outcome(execution_id)  # the final state, else the latest progress
        body["finalState"] = final.to_json() if final is not None else None
        return ORJSONResponse(body)

    @app.get(
        "/api/execution-snapshots/workflow/{workflowId}/version",
        dependencies=read,
        response_model=VersionCommitBody,
        summary="A workflow's current version",
        description=f"{_READ} The head of the workflow's version chain.",
        responses=error_responses(401, 403, 404, 422, 503),
        openapi_extra=_scope("read"),
        tags=["read"],
    )
    def version(workflow_id: WorkflowId) -> Response:
        head = arc.versions.head(workflow_id)
        if head is None:
            raise NotFound(f"workflow {workflow_id} has no versions")
        return ORJSONResponse(head.to_json())

    @app.get(
        "/api/execution-snapshots/workflow/{workflowId}/versions",
        dependencies=read,
        response_model=VersionList,
        summary="A workflow's versions, newest first",
        description=f"{_READ} Every version commit with its parent, level and change summary.",
        responses=error_responses(401, 403, 404, 422, 503),
        openapi_extra=_scope("read"),
        tags=["read"],
    )
    def versions(workflow_id: WorkflowId) -> Response:
        commits = arc.version_history(workflow_id)
        return ORJSONResponse(
            {"workflowId": workflow_id, "versions": [c.to_json() for c in reversed(commits)]}
        )

    @app.get(
        "/api/execution-snapshots/workflow/{workflowId}/history",
        dependencies=read,
        response_model=ExecutionPage,
        summary="A workflow's executions, newest first",
        description=(
            f"{_READ} From the index (fresh within about `index_flush_ms` + 0.5 s, default 1.5 s). Filters: "
            "`since`/`until` (RFC 3339), `status` and `triggerType` (repeatable), `version`; "
            "keyset pagination with `cursor`."
        ),
        responses=error_responses(401, 403, 422, 503),
        openapi_extra=_scope("read"),
        tags=["read"],
    )
    def history(
        workflow_id: WorkflowId,
        since: Annotated[str | None, Query(description="RFC 3339, inclusive")] = None,
        until: Annotated[str | None, Query(description="RFC 3339, exclusive")] = None,
        status: Annotated[list[str] | None, Query()] = None,
        trigger_type: Annotated[list[str] | None, Query(alias="triggerType")] = None,
        version: Annotated[str | None, Query(description="semantic version, e.g. 1.2.0")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        page = workflow_history(
            index.catalog(),
            workflow_id,
            since=since,
            until=until,
            status=status,
            trigger_type=trigger_type,
            version=version,
            limit=limit,
            cursor=cursor,
        )
        return ORJSONResponse({"workflowId": workflow_id, **_page_body(page)})

    @app.get(
        "/api/execution-snapshots/by-hash/{snapshotHash}",
        dependencies=read,
        response_model=ExecutionPage,
        summary="Executions that ran one workflow structure",
        description=(
            f"{_READ} Every execution whose `snapshotHash` is the given SHA-256 (any workflow), "
            "newest first, from the index; keyset pagination with `cursor`."
        ),
        responses=error_responses(401, 403, 422, 503),
        openapi_extra=_scope("read"),
        tags=["read"],
    )
    def by_hash(
        snapshot_hash: Annotated[str, Path(alias="snapshotHash", description="64 hex digits")],
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        digest = check_hash(snapshot_hash)
        page = executions_by_hash(index.catalog(), digest, limit=limit, cursor=cursor)
        return ORJSONResponse({"snapshotHash": digest, **_page_body(page)})

    app.include_router(compare_router)  # after the routes above: theirs win any tie
    return app
