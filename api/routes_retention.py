"""Retention routes (scope ``retention``): cold archiving and restore (``docs/retention.md``).

``POST /api/retention/archive`` runs :func:`archiver.retention.archive_cold` with the configured
policy (``retention_policy_file``); ``{"dryRun": true}`` answers the plan instead.
``POST /api/execution-snapshots/{executionId}/restore`` starts restoring an archived execution:
202 with ``Retry-After`` while the store restores it, 200 when it is readable, idempotent.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import require_scope
from api.errors import error_responses
from api.limits import read_json_body
from api.schemas import request_body
from archiver.config import Settings
from archiver.errors import InvalidInput
from archiver.jsonio import loads_strict
from archiver.layout import check_id
from archiver.retention import archive_cold, load_policy, plan, restore_execution
from archiver.store.base import ObjectStore

__all__ = ["RESTORE_RETRY_AFTER_SECONDS", "router"]

router = APIRouter()

RESTORE_RETRY_AFTER_SECONDS = 300
_SCOPE = "Scope: `retention` (or `admin`)."


class ArchiveRequest(BaseModel):
    """Options of an archive run."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"dryRun": True}]})

    dryRun: bool = Field(  # noqa: N815 - the wire name
        default=False, description="answer the plan (what would move) and change nothing"
    )


class RestoreRequest(BaseModel):
    """Options of a restore."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"days": 3}]})

    days: int = Field(default=7, ge=1, le=365, description="days the restored copy stays")


def _body(data: bytes, fields: frozenset[str]) -> dict[str, Any]:
    body = loads_strict(data, field="body") if data.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidInput(f"unknown field; expected {', '.join(sorted(fields))}", field="body")
    return body


def _json(value: Any, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(value), status_code=status_code, media_type="application/json", headers=headers
    )


def _store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.archive.store
    return store


@router.post(
    "/api/retention/archive",
    dependencies=[Depends(require_scope("retention"))],
    summary="Move executions past their hot period to cold storage",
    description=(
        f"{_SCOPE} Runs the configured retention policy's cold archiving: every execution past "
        "its `hot_days` is copied onto its own key with the cold storage class and verified; "
        "blobs stay hot; each move is a tier event. 201 with the report when something moved, "
        "200 when nothing had to. `dryRun` answers the plan instead. 422 for a store without "
        "storage classes (local)."
    ),
    responses={
        200: {"description": "Nothing had to move (or the dry-run plan)."},
        201: {"description": "Executions were moved; the report lists them."},
        **error_responses(401, 403, 408, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        **request_body(ArchiveRequest, "options (may be `{}`)"),
        "x-required-scope": "retention",
    },
    tags=["retention"],
)
async def archive(request: Request) -> Response:
    body = _body(await read_json_body(request), frozenset({"dryRun"}))
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dryRun must be true or false", field="dryRun")
    settings: Settings = request.app.state.settings
    store = _store(request)

    def run() -> Response:
        policy = load_policy(settings.retention_policy_file)
        if dry_run:
            return _json(plan(store, policy).to_json(), 200)
        report = archive_cold(store, policy, max_object_bytes=settings.max_object_bytes)
        return _json(report.to_json(), 201 if report.moved else 200)

    return await run_in_threadpool(run)


@router.post(
    "/api/execution-snapshots/{executionId}/restore",
    dependencies=[Depends(require_scope("retention"))],
    summary="Restore an archived execution",
    description=(
        f"{_SCOPE} Starts restoring the execution's objects from GLACIER / DEEP_ARCHIVE. "
        "202 with `Retry-After` while the restore runs (ask again: idempotent), 201 when this "
        "request started a restore the store completed at once, 200 when the execution is "
        'readable (`hot` or `restored`). Body `{"days": N}` (optional) sets how long the '
        "restored copy stays."
    ),
    responses={
        200: {"description": "Readable now: `{executionId, state}` with state hot or restored."},
        201: {"description": "A restore was started and is already complete."},
        202: {"description": "Restoring: retry after `Retry-After` seconds."},
        **error_responses(401, 403, 404, 408, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        **request_body(RestoreRequest, "options (may be `{}`)"),
        "x-required-scope": "retention",
    },
    tags=["retention"],
)
async def restore(
    execution_id: Annotated[
        str, Path(alias="executionId", description="the engine's execution id")
    ],
    request: Request,
) -> Response:
    exec_id = check_id(execution_id, "executionId")
    body = _body(await read_json_body(request), frozenset({"days"}))
    days = body.get("days", 7)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 365:
        raise InvalidInput("days must be an integer from 1 to 365", field="days")
    store = _store(request)

    def run() -> Response:
        before = restore_execution(store, exec_id, days=days, dry_run=True)
        state = restore_execution(store, exec_id, days=days)
        answer = {"executionId": exec_id, "state": state}
        if state == "restoring":
            return _json(answer, 202, {"Retry-After": str(RESTORE_RETRY_AFTER_SECONDS)})
        return _json(answer, 201 if before == "archived" else 200)

    return await run_in_threadpool(run)


@router.get(
    "/api/retention/plan",
    dependencies=[Depends(require_scope("retention"))],
    summary="What the retention policy would move and expire now",
    description=(
        f"{_SCOPE} The configured policy's plan, computed from the objects; changes nothing. "
        "Counts and bytes for: to cold, to expire, held by legal hold, already cold, staying hot, "
        "and the blobs that would expire or are retained."
    ),
    responses={
        200: {"description": "The plan."},
        **error_responses(401, 403, 422, 503),
    },
    openapi_extra={"x-required-scope": "retention"},
    tags=["retention"],
)
async def retention_plan(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    store = _store(request)

    def run() -> Response:
        return _json(plan(store, load_policy(settings.retention_policy_file)).to_json(), 200)

    return await run_in_threadpool(run)
