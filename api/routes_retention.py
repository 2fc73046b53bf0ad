"""Retention routes (scope ``retention``): cold archiving and restore, plan, expiry, legal holds
(``docs/retention.md``).

``POST /api/retention/archive`` runs :func:`archiver.retention.archive_cold` with the configured
policy (``retention_policy_file``); ``{"dryRun": true}`` answers the plan instead.
``POST /api/execution-snapshots/{executionId}/restore`` starts restoring an archived execution:
202 with ``Retry-After`` while the store restores it, 200 when it is readable, idempotent.
``POST /api/retention/expire`` runs :func:`archiver.retention.expire` (``dryRun``: the plan).
``GET/POST /api/retention/holds`` and ``DELETE /api/retention/holds/{scope}/{target}`` list, set
and clear legal holds (:mod:`archiver.holds`); scope ``retention`` or ``compliance``: placing a
legal hold is a compliance officer's job, expiring data is not.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require_scope
from api.errors import error_responses
from api.limits import read_json_body
from api.schemas import request_body
from archiver.config import Settings
from archiver.errors import InvalidInput
from archiver.holds import HOLD_SCOPES, active_holds, check_hold, clear_hold, set_hold
from archiver.jsonio import loads_strict
from archiver.layout import check_id
from archiver.retention import (
    RETENTION_LEASE,
    RetentionPolicy,
    archive_cold,
    expire,
    load_policy,
    plan,
    restore_execution,
)
from archiver.runlock import run_lease
from archiver.store.base import ObjectStore

__all__ = ["RESTORE_RETRY_AFTER_SECONDS", "router"]

router = APIRouter()

RESTORE_RETRY_AFTER_SECONDS = 300
_SCOPE = "Scope: `retention` (or `admin`)."
_HOLD_SCOPE = "Scope: `retention` or `compliance` (or `admin`)."
#: OpenAPI: ``x-required-scope`` names one scope; holds also accept ``compliance``
_HOLD_EXTRA: dict[str, Any] = {
    "x-required-scope": "retention",
    "x-alternative-scopes": ["compliance"],
}
HoldCaller = Annotated[Principal, Depends(require_scope("retention", "compliance"))]


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


class ExpireRequest(BaseModel):
    """Options of an expiry run."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"dryRun": True}]})

    dryRun: bool = Field(  # noqa: N815 - the wire name
        default=False, description="answer the plan (what would expire) and delete nothing"
    )


class HoldRequest(BaseModel):
    """A legal hold to place."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"scope": "workflow", "target": "wf-payments", "reason": "case 2026-17"},
                {"scope": "execution", "target": "1001", "reason": "audit request"},
            ]
        },
    )

    scope: str = Field(description="`execution`, `workflow` or `tag`")
    target: str = Field(description="the execution id, workflow id or tag name")
    reason: str = Field(description="why (1-1000 characters; sanitized like every stored text)")


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


def _policy(request: Request) -> RetentionPolicy:
    settings: Settings = request.app.state.settings
    return load_policy(settings.retention_policy_file)


async def _dry_run(request: Request) -> bool:
    """The ``{"dryRun": bool}`` body of the archive and expire routes (``{}``: false)."""
    body = _body(await read_json_body(request), frozenset({"dryRun"}))
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dryRun must be true or false", field="dryRun")
    return dry_run


@router.post(
    "/api/retention/archive",
    dependencies=[Depends(require_scope("retention"))],
    summary="Move executions past their hot period to cold storage",
    description=(
        f"{_SCOPE} Runs the configured retention policy's cold archiving: every execution past "
        "its `hot_days` is copied onto its own key with the cold storage class and verified; "
        "blobs stay hot; each move is a tier event. 201 with the report when something moved, "
        "200 when nothing had to. `dryRun` answers the plan instead. With a `cold_store` in the "
        "policy, executions are instead copied there (verified) and removed from the hot store. "
        "422 for a store without storage classes (local) and no `cold_store`."
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
    dry_run = await _dry_run(request)
    settings: Settings = request.app.state.settings
    store = _store(request)

    def run() -> Response:
        policy = _policy(request)
        if dry_run:
            return _json(plan(store, policy).to_json(), 200)
        with run_lease(store, RETENTION_LEASE, owner="api"):
            report = archive_cold(store, policy, max_object_bytes=settings.max_object_bytes)
        return _json(report.to_json(), 201 if report.moved else 200)

    return await run_in_threadpool(run)


@router.post(
    "/api/execution-snapshots/{executionId}/restore",
    dependencies=[Depends(require_scope("retention"))],
    summary="Restore an archived execution",
    description=(
        f"{_SCOPE} Starts restoring the execution's objects from GLACIER / DEEP_ARCHIVE, or "
        "copies them back from the cold store (each copy checked against its recorded digest "
        "first). 202 with `Retry-After` while the restore runs (ask again: idempotent), 201 "
        "when this request started a restore the store completed at once, 200 when the "
        'execution is readable (`hot` or `restored`). Body `{"days": N}` (optional) sets how '
        "long the restored copy stays. A missing or damaged cold copy is 409 "
        "`cold_copy_damaged` naming the key and the problem; nothing is restored."
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
    store = _store(request)

    def run() -> Response:
        return _json(plan(store, _policy(request)).to_json(), 200)

    return await run_in_threadpool(run)


@router.post(
    "/api/retention/expire",
    dependencies=[Depends(require_scope("retention"))],
    summary="Delete what the retention policy lets expire",
    description=(
        f"{_SCOPE} Runs expiry with the configured policy: deletes every execution past its "
        "`keep_days` that no legal hold (hold events or the policy file) covers, leaving a "
        "tombstone for each deletion, and the structure blobs no kept execution references. "
        "Objects Object Lock still retains stay and are listed under `retainedLocked`. 201 with "
        "the report when something was deleted (each deletion wrote a tombstone), 200 when "
        'nothing had to go. `{"dryRun": true}` answers the plan (200) and deletes nothing.'
    ),
    responses={
        200: {"description": "Nothing expired (the report), or the dry-run plan."},
        201: {"description": "Executions or blobs were deleted; the report lists them."},
        **error_responses(401, 403, 408, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        **request_body(ExpireRequest, "options (may be `{}`)"),
        "x-required-scope": "retention",
    },
    tags=["retention"],
)
async def expire_route(request: Request) -> Response:
    dry_run = await _dry_run(request)
    settings: Settings = request.app.state.settings
    store = _store(request)

    def run() -> Response:
        policy = _policy(request)
        if dry_run:
            return _json(
                plan(store, policy, max_object_bytes=settings.max_object_bytes).to_json(), 200
            )
        with run_lease(store, RETENTION_LEASE, owner="api"):
            report = expire(store, policy, max_object_bytes=settings.max_object_bytes)
        return _json(report.to_json(), 201 if report.tombstones else 200)

    return await run_in_threadpool(run)


def _policy_holds(policy: RetentionPolicy) -> list[dict[str, str]]:
    out = [{"scope": "execution", "target": t} for t in sorted(policy.hold_executions)]
    out += [{"scope": "workflow", "target": t} for t in sorted(policy.hold_workflows)]
    out += [{"scope": "tag", "target": t} for t in sorted(policy.hold_tags)]
    return [{**h, "source": "policy"} for h in out]


@router.get(
    "/api/retention/holds",
    summary="The legal holds in force",
    description=(
        f"{_HOLD_SCOPE} `holds`: the holds set through the API or CLI (the `set` event of each, "
        "with reason, who and when); `policyHolds`: those listed in the retention policy file. "
        "Both keep executions from expiring."
    ),
    responses={200: {"description": "The holds."}, **error_responses(401, 403, 422, 503)},
    openapi_extra=_HOLD_EXTRA,
    tags=["retention"],
)
async def list_holds(request: Request, _caller: HoldCaller) -> Response:
    settings: Settings = request.app.state.settings
    store = _store(request)

    def run() -> Response:
        holds = active_holds(store, max_object_bytes=settings.max_object_bytes)
        return _json(
            {
                "holds": [{**e.to_json(), "source": "event"} for e in holds],
                "policyHolds": _policy_holds(_policy(request)),
            },
            200,
        )

    return await run_in_threadpool(run)


def _forget_cached_holds(request: Request) -> None:
    cache = getattr(request.app.state.archive, "hold_cache", None)
    if cache is not None:
        cache.invalidate()


@router.post(
    "/api/retention/holds",
    status_code=201,
    summary="Place a legal hold",
    description=(
        f"{_HOLD_SCOPE} Holds an execution, every execution of a workflow, or every execution "
        "that currently holds a tag: none of them expires while the hold is in force. Recorded "
        "as a write-once hold event; on an S3 store with Object Lock the covered executions' "
        "objects also get their legal hold ON (`appliedToObjects`, `objects`); other stores keep "
        "it as data only (`appliedToObjects: false`, `note`). 201 when placed, 200 when it was "
        "already in force (the objects' holds are put again)."
    ),
    responses={
        200: {"description": "Already in force: `{hold, created: false, ...}`."},
        201: {"description": "Placed: `{hold, created: true, appliedToObjects, objects}`."},
        **error_responses(401, 403, 408, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        **request_body(HoldRequest, "the hold"),
        **_HOLD_EXTRA,
    },
    tags=["retention"],
)
async def place_hold(request: Request, caller: HoldCaller) -> Response:
    body = _body(await read_json_body(request), frozenset({"scope", "target", "reason"}))
    for required in ("scope", "target", "reason"):
        if required not in body:
            raise InvalidInput(f"{required} is required", field=required)
    check_hold(body["scope"], body["target"])
    settings: Settings = request.app.state.settings
    archive = request.app.state.archive
    store = _store(request)

    def run() -> Response:
        result = set_hold(
            store,
            body["scope"],
            body["target"],
            reason=body["reason"],
            by=caller.label[:256],
            sanitize_text=archive.sanitizer.sanitize_text,
            max_object_bytes=settings.max_object_bytes,
        )
        _forget_cached_holds(request)
        return _json(result.to_json(), 201 if result.created else 200)

    return await run_in_threadpool(run)


@router.delete(
    "/api/retention/holds/{scope}/{target}",
    summary="Clear a legal hold",
    description=(
        f"{_HOLD_SCOPE} Clears a hold placed through the API or CLI (a write-once `clear` event; "
        "the `set` event stays). The objects' legal holds are put OFF except where another hold "
        "still covers the execution (`objectsKept`). 404 when no such hold is in force; holds in "
        "the policy file are changed in the file. `reason` (query, optional) is recorded."
    ),
    responses={
        200: {"description": "Cleared: `{hold, appliedToObjects, objects, objectsKept}`."},
        **error_responses(401, 403, 404, 422, 503),
    },
    openapi_extra=_HOLD_EXTRA,
    tags=["retention"],
)
async def remove_hold(
    request: Request,
    caller: HoldCaller,
    scope: Annotated[str, Path(description=f"one of {', '.join(HOLD_SCOPES)}")],
    target: Annotated[str, Path(description="the execution id, workflow id or tag name")],
    reason: Annotated[str | None, Query(max_length=1000, description="why (recorded)")] = None,
) -> Response:
    check_hold(scope, target)
    settings: Settings = request.app.state.settings
    archive = request.app.state.archive
    store = _store(request)

    def run() -> Response:
        result = clear_hold(
            store,
            scope,
            target,
            by=caller.label[:256],
            reason=reason,
            policy_hold=_policy(request).hold_reason,
            sanitize_text=archive.sanitizer.sanitize_text,
            max_object_bytes=settings.max_object_bytes,
        )
        _forget_cached_holds(request)
        return _json(result.to_json(), 200)

    return await run_in_threadpool(run)
