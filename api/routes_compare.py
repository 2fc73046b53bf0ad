"""Compare, replay and timeline routes: thin wrappers over ``query.diff`` (and friends).

Every route reads the archive the app keeps in ``app.state.archive`` (and, for the timeline,
the index catalog in ``app.state.index``), calls one query function and serializes its answer.
See ``docs/compare.md`` for the shapes and ``docs/api.md`` for the table of routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require_scope
from api.errors import error_responses
from api.limits import read_json_body
from api.params import ExecutionId, WorkflowId
from api.schemas import request_body
from archiver.archive import Archive
from archiver.errors import InvalidId, InvalidInput, NotFound
from archiver.events import EventLog, check_event_id, check_tag
from archiver.jsonio import loads_strict
from archiver.layout import check_id
from query.catalog import Catalog
from query.diff import check_version_ref, compare_executions, compare_workflow_versions
from query.replay import compare_to_original, prepare_replay_context, validate_for_replay
from query.timeline import workflow_timeline

__all__ = [
    "AnnotationRequest",
    "DiffBody",
    "ReplayContextBody",
    "ReplayValidationBody",
    "TagRequest",
    "TimelineBody",
    "router",
]

router = APIRouter()

_READ = "Scope: `read` (or `admin`)."
_SNAPSHOTS = "/api/execution-snapshots"
read = [Depends(require_scope("read"))]


class _JSON(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.index.catalog()
    return catalog


def _other_execution_id(
    other: Annotated[
        str, Path(alias="otherExecutionId", description="the execution to compare with")
    ],
) -> str:
    return check_id(other, "otherExecutionId")


_VERSION_REF = "a semantic version (`1.2.0`), a sequence number (`3`) or `head`"


def _v1(v1: Annotated[str, Path(description=_VERSION_REF)]) -> str:
    return check_version_ref(v1, "v1")


def _v2(v2: Annotated[str, Path(description=_VERSION_REF)]) -> str:
    return check_version_ref(v2, "v2")


ArchiveDep = Annotated[Archive, Depends(_archive)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
OtherExecutionId = Annotated[str, Depends(_other_execution_id)]
V1 = Annotated[str, Depends(_v1)]
V2 = Annotated[str, Depends(_v2)]


# ---------------------------------------------------------------------------- shapes (docs)


class DiffSideBody(BaseModel):
    snapshotId: str  # noqa: N815
    executionId: str | None  # noqa: N815
    workflowId: str  # noqa: N815
    version: str
    versionSeq: int  # noqa: N815
    snapshotHash: str  # noqa: N815
    createdAt: str | None  # noqa: N815
    triggerType: str | None  # noqa: N815
    replayOf: str | None  # noqa: N815
    status: str | None


class DiffBody(BaseModel):
    """A SnapshotDiff (`docs/compare.md`): structure, context and outcome of two sides."""

    model_config = ConfigDict(extra="allow")

    snapshotId1: str  # noqa: N815
    snapshotId2: str  # noqa: N815
    side1: DiffSideBody
    side2: DiffSideBody
    sameStructure: bool  # noqa: N815
    empty: bool = Field(description="same structure, variables, trigger type and outcome")
    summary: str
    nodesAdded: list[str]  # noqa: N815
    nodesRemoved: list[str]  # noqa: N815
    nodesRenamed: list[dict[str, Any]]  # noqa: N815
    nodesModified: list[dict[str, Any]] = Field(  # noqa: N815
        description="per node: fieldsChanged and changes (JSON Pointer, op, old, new)"
    )
    connectionsAdded: list[dict[str, Any]]  # noqa: N815
    connectionsRemoved: list[dict[str, Any]]  # noqa: N815
    settingsChanged: list[dict[str, Any]]  # noqa: N815
    variablesChanged: list[dict[str, Any]]  # noqa: N815
    credentialsChanged: list[dict[str, Any]]  # noqa: N815
    triggersChanged: list[dict[str, Any]]  # noqa: N815
    secretsChanged: list[dict[str, Any]]  # noqa: N815
    execution: dict[str, Any] | None = Field(
        description="status, errors, item counts, durations and firstDivergence; null for versions"
    )


def _scope(scope: str) -> dict[str, Any]:
    return {"x-required-scope": scope}


# ---------------------------------------------------------------------------- compare


@router.get(
    f"{_SNAPSHOTS}/{{executionId}}/compare/{{otherExecutionId}}",
    dependencies=read,
    response_model=DiffBody,
    summary="Compare two executions",
    description=(
        f"{_READ} The SnapshotDiff from `executionId` to `otherExecutionId`: nodes added, "
        "removed, renamed and modified (JSON Pointer changes), connections, settings, "
        "variables, credential references, triggers, secrets (by marker, never a value), and "
        "the execution side with the first divergence. See `docs/compare.md`."
    ),
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("read"),
    tags=["compare"],
)
def compare_two(
    execution_id: ExecutionId, other: OtherExecutionId, archive: ArchiveDep
) -> Response:
    return _JSON(compare_executions(archive, execution_id, other).to_json())


@router.get(
    f"{_SNAPSHOTS}/workflow/{{workflowId}}/versions/{{v1}}/compare/{{v2}}",
    dependencies=read,
    response_model=DiffBody,
    summary="Compare two versions of a workflow",
    description=(
        f"{_READ} The structural diff between two versions of the workflow's chain; `v1` and "
        "`v2` are each a semantic version (`1.2.0`), a sequence number (`3`) or `head`. "
        "`execution` is null."
    ),
    responses=error_responses(401, 403, 404, 422, 503),
    openapi_extra=_scope("read"),
    tags=["compare"],
)
def compare_versions(workflow_id: WorkflowId, v1: V1, v2: V2, archive: ArchiveDep) -> Response:
    return _JSON(compare_workflow_versions(archive, workflow_id, v1, v2).to_json())


# ---------------------------------------------------------------------------- replay


class ReplayValidationBody(BaseModel):
    """The plan's validateSnapshotForReplay (`docs/compare.md`, "Replay")."""

    model_config = ConfigDict(extra="allow")

    executionId: str  # noqa: N815
    valid: bool = Field(
        description="record and hash verified, structure complete, no dangling edge"
    )
    checks: dict[str, bool]
    issues: list[dict[str, str]] = Field(description="`{severity: error|warning, code, message}`")
    archive: dict[str, Any] = Field(
        description="where the objects are: `tier` (hot, storage-class, cold-copy), `archived`, "
        "`objectsArchived`, `storageClass`, `location`, `restoredUntil`; `needsRestore` is "
        "false (an archived execution that needs a restore answers 409 `archived`)"
    )
    credentialReferences: list[dict[str, Any]] | None = None  # noqa: N815
    mustSupply: list[dict[str, Any]] | None = Field(  # noqa: N815
        default=None, description="redacted values a replay must fill in, by JSON Pointer"
    )


class ReplayContextBody(BaseModel):
    """The plan's prepareReplayContext (`docs/compare.md`, "Replay")."""

    model_config = ConfigDict(extra="allow")

    executionId: str  # noqa: N815
    snapshotHash: str  # noqa: N815
    structure: dict[str, Any] = Field(
        description="exactly as stored: JCS of it hashes to snapshotHash"
    )
    workflow: dict[str, Any] = Field(description="the same structure in n8n's import shape")
    trigger: dict[str, Any]
    variables: dict[str, Any] | None
    credentials: list[dict[str, Any]]
    pinData: dict[str, Any] | None  # noqa: N815
    mustSupply: list[dict[str, Any]]  # noqa: N815
    originalOutcome: dict[str, Any] | None  # noqa: N815


@router.get(
    f"{_SNAPSHOTS}/{{executionId}}/replay-validation",
    dependencies=read,
    response_model=ReplayValidationBody,
    summary="Check a snapshot for replay",
    description=(
        f"{_READ} Re-reads the record and the structure blob and re-verifies both hashes, checks "
        "the structure is complete and every connection names a node, lists credential "
        "references and the redacted values a replay must supply. A damaged object is reported "
        "(`valid: false`), not an error. An archived execution answers 409 `archived` with the "
        "restore route, as every read of it."
    ),
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("read"),
    tags=["replay"],
)
def replay_validation(execution_id: ExecutionId, archive: ArchiveDep) -> Response:
    return _JSON(validate_for_replay(archive, execution_id))


@router.get(
    f"{_SNAPSHOTS}/{{executionId}}/replay-context",
    dependencies=read,
    response_model=ReplayContextBody,
    summary="Everything a re-run needs",
    description=(
        f"{_READ} The exact structure (its JCS hashes to `snapshotHash`), the same workflow in "
        "n8n's import shape, trigger type and data, non-secret variables, credential "
        "references, pinned data, what must be supplied, and the original outcome."
    ),
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("read"),
    tags=["replay"],
)
def replay_context(execution_id: ExecutionId, archive: ArchiveDep) -> Response:
    return _JSON(prepare_replay_context(archive, execution_id))


@router.get(
    f"{_SNAPSHOTS}/{{executionId}}/compare-to-original",
    dependencies=read,
    response_model=DiffBody,
    summary="Compare a replay with its original",
    description=(
        f"{_READ} For an execution captured with `replayOf`: the diff from the original "
        "execution to this one. 404 when the execution is not a replay or its original is "
        "unknown."
    ),
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("read"),
    tags=["replay"],
)
def replay_compare(execution_id: ExecutionId, archive: ArchiveDep) -> Response:
    return _JSON(compare_to_original(archive, execution_id).to_json())


# ---------------------------------------------------------------------------- timeline


class TimelineBody(BaseModel):
    """Versions and executions of a workflow on one axis (`docs/compare.md`, "Timeline")."""

    model_config = ConfigDict(extra="allow")

    workflowId: str  # noqa: N815
    head: dict[str, Any]
    totals: dict[str, int]
    versions: list[dict[str, Any]] = Field(
        description="newest first: each commit with runs, finished, failures, failureRate"
    )
    changePoints: list[dict[str, Any]] = Field(  # noqa: N815
        description="per version: the first failing execution under it, with the version diff"
    )
    axis: list[dict[str, Any]] = Field(description="executions and versions, newest first")
    nextCursor: str | None  # noqa: N815


@router.get(
    f"{_SNAPSHOTS}/workflow/{{workflowId}}/timeline",
    dependencies=read,
    response_model=TimelineBody,
    summary="A workflow's versions and executions on one axis",
    description=(
        f"{_READ} Every version (newest first) with its parent, change summary and the counts "
        "of runs and failures under it; the change points (the first failing execution after "
        "each version change, with the diff from the parent version); and one page of the "
        "axis, executions interleaved with the versions made in that span (`limit`, `cursor` "
        "as for history; `diffs=false` leaves the diffs out). Counts and executions come from "
        "the index (fresh within `index_flush_ms`)."
    ),
    responses=error_responses(401, 403, 404, 422, 503),
    openapi_extra=_scope("read"),
    tags=["read"],
)
def timeline(
    workflow_id: WorkflowId,
    archive: ArchiveDep,
    catalog: CatalogDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    diffs: Annotated[bool, Query(description="attach the version diffs")] = True,
) -> Response:
    return _JSON(
        workflow_timeline(
            archive, catalog, workflow_id, limit=limit, cursor=cursor, with_diffs=diffs
        )
    )


# ---------------------------------------------------------------------------- tags, annotations

_INGEST = "Scope: `ingest` (or `admin`)."
Ingest = Annotated[Principal, Depends(require_scope("ingest"))]


def _events(request: Request) -> EventLog:
    archive: Archive = request.app.state.archive
    return EventLog(
        archive.store,
        sanitize_text=archive.sanitizer.sanitize_text,
        max_object_bytes=archive.max_object_bytes,
    )


EventsDep = Annotated[EventLog, Depends(_events)]


def _tag(tag: Annotated[str, Path(description="1-64 of a-z 0-9 . _ -")]) -> str:
    return check_tag(tag)


def _annotation_id(
    annotation_id: Annotated[str, Path(alias="annotationId", description="ev_ + 20 hex digits")],
) -> str:
    return check_event_id(annotation_id)


TagName = Annotated[str, Depends(_tag)]
AnnotationId = Annotated[str, Depends(_annotation_id)]


class TagRequest(BaseModel):
    """Tag an execution (moving the tag from another execution of its workflow)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"tag": "baseline", "description": "known good"}]},
    )

    tag: str = Field(description="1-64 lowercase letters, digits, `.`, `_`, `-`")
    description: str | None = Field(default=None, max_length=1000)
    userId: str | None = Field(  # noqa: N815
        default=None, description="who tags (default: the token's name)"
    )


class AnnotationRequest(BaseModel):
    """Annotate an execution or one of its nodes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"type": "bug", "text": "times out on big orders", "node": "HTTP"}]
        },
    )

    type: str = Field(default="note", description="note, bug, insight, warning or question")
    text: str = Field(max_length=10_000)
    node: str | None = Field(default=None, description="a node's name or id")
    userId: str | None = Field(default=None)  # noqa: N815


def _body(data: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    value = loads_strict(data, field="body")
    if not isinstance(value, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    unknown = sorted(set(value) - allowed)
    if unknown:
        name = unknown[0]
        raise InvalidInput(
            "unknown field", field=name if len(name) <= 64 and name.isprintable() else "<key>"
        )
    return value


def _user(body: Mapping[str, Any], principal: Principal) -> str | None:
    user = body.get("userId")
    if user is not None:
        return check_id(user, "userId")
    try:
        return None if principal.name is None else check_id(principal.name, "userId")
    except InvalidId:
        return None


def _created_responses(what: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": f"Nothing new: the {what} was already in place."},
        201: {"description": f"The {what} event was stored."},
        **error_responses(401, 403, 404, 408, 409, 413, 415, 422, 503),
    }


def _execution_tags(events: EventLog, archive: Archive, execution_id: str) -> dict[str, Any]:
    snap = archive.get_snapshot(execution_id)
    history = events.tag_events(snap.workflow_id)
    current = events.fold_tags(history)
    return {
        "executionId": snap.execution_id,
        "workflowId": snap.workflow_id,
        "tags": sorted(t for t, e in current.items() if e.execution_id == snap.execution_id),
        "events": [e.to_json() for e in history if e.execution_id == snap.execution_id],
    }


@router.post(
    f"{_SNAPSHOTS}/{{executionId}}/tags",
    status_code=201,
    summary="Tag an execution",
    description=(
        f"{_INGEST} Tags are unique within a workflow (`production`, `baseline` …): tagging "
        "moves the tag here from the execution that had it. An event is appended; nothing is "
        "rewritten. 200 when the execution already holds the tag."
    ),
    responses=_created_responses("tag"),
    openapi_extra={**request_body(TagRequest, "the tag"), **_scope("ingest")},
    tags=["tags"],
)
async def add_tag(
    execution_id: ExecutionId,
    request: Request,
    principal: Ingest,
    archive: ArchiveDep,
    events: EventsDep,
) -> Response:
    body = _body(await read_json_body(request), frozenset({"tag", "description", "userId"}))
    if "tag" not in body:
        raise InvalidInput("tag is required", field="tag")

    def run() -> Response:
        snap = archive.get_snapshot(execution_id)
        event, created = events.add_tag(
            snap, body["tag"], user_id=_user(body, principal), description=body.get("description")
        )
        return _JSON(
            {"event": event.to_json(), **_execution_tags(events, archive, execution_id)},
            status_code=201 if created else 200,
        )

    return await run_in_threadpool(run)


@router.delete(
    f"{_SNAPSHOTS}/{{executionId}}/tags/{{tag}}",
    summary="Untag an execution",
    description=(
        f"{_INGEST} Appends a `remove` event (the tag's history stays). 404 when the execution "
        "does not hold the tag now. Optional `userId` query parameter."
    ),
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("ingest"),
    tags=["tags"],
)
def remove_tag(
    execution_id: ExecutionId,
    tag: TagName,
    principal: Ingest,
    archive: ArchiveDep,
    events: EventsDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=256)] = None,
) -> Response:
    snap = archive.get_snapshot(execution_id)
    event = events.remove_tag(snap, tag, user_id=_user({"userId": user_id}, principal))
    return _JSON({"event": event.to_json(), **_execution_tags(events, archive, execution_id)})


@router.get(
    f"{_SNAPSHOTS}/{{executionId}}/tags",
    dependencies=read,
    summary="An execution's tags and their history",
    description=f"{_READ} The tags the execution holds now, and every tag event about it.",
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("read"),
    tags=["tags"],
)
def execution_tags(execution_id: ExecutionId, archive: ArchiveDep, events: EventsDep) -> Response:
    return _JSON(_execution_tags(events, archive, execution_id))


def _known_workflow(archive: Archive, workflow_id: str) -> None:
    if archive.versions.head(workflow_id) is None:
        raise NotFound(f"workflow {workflow_id} has no versions")


@router.get(
    f"{_SNAPSHOTS}/workflow/{{workflowId}}/tags",
    dependencies=read,
    summary="A workflow's tags and their history",
    description=(
        f"{_READ} Each tag with the execution that holds it now (and the event that put it "
        "there), and every tag event of the workflow, oldest first."
    ),
    responses=error_responses(401, 403, 404, 422, 503),
    openapi_extra=_scope("read"),
    tags=["tags"],
)
def workflow_tags(workflow_id: WorkflowId, archive: ArchiveDep, events: EventsDep) -> Response:
    _known_workflow(archive, workflow_id)
    history = events.tag_events(workflow_id)
    current = events.fold_tags(history)
    return _JSON(
        {
            "workflowId": workflow_id,
            "tags": {tag: e.to_json() for tag, e in sorted(current.items())},
            "events": [e.to_json() for e in history],
        }
    )


@router.get(
    f"{_SNAPSHOTS}/workflow/{{workflowId}}/tags/{{tag}}",
    dependencies=read,
    summary="The execution a tag names (e.g. the current baseline)",
    description=(
        f"{_READ} The execution of the workflow that holds `tag` now, with the event and the "
        "snapshot's version, hash and outcome. 404 when no execution holds it."
    ),
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("read"),
    tags=["tags"],
)
def tagged_execution(
    workflow_id: WorkflowId, tag: TagName, archive: ArchiveDep, events: EventsDep
) -> Response:
    _known_workflow(archive, workflow_id)
    event = events.tagged(workflow_id, tag)
    snap = archive.get_snapshot(event.execution_id)
    final = archive.get_final_state(event.execution_id)
    return _JSON(
        {
            "workflowId": workflow_id,
            "tag": tag,
            "executionId": event.execution_id,
            "since": event.to_json()["createdAt"],
            "event": event.to_json(),
            "snapshotVersion": snap.snapshot_version,
            "versionSeq": snap.version_seq,
            "snapshotHash": snap.snapshot_hash,
            "createdAt": snap.to_json()["createdAt"],
            "status": None if final is None else final.status,
        }
    )


def _execution_annotations(events: EventLog, archive: Archive, execution_id: str) -> dict[str, Any]:
    snap = archive.get_snapshot(execution_id)
    history = [
        e for e in events.annotation_events(snap.workflow_id) if e.execution_id == execution_id
    ]
    active, removed = events.fold_annotations(history)
    return {
        "executionId": snap.execution_id,
        "workflowId": snap.workflow_id,
        "annotations": [a.to_json() for a in active],
        "removed": [
            {**a.to_json(), "removedBy": removed[a.annotation_id].to_json()}
            for a in history
            if a.action == "add" and a.annotation_id in removed
        ],
    }


@router.post(
    f"{_SNAPSHOTS}/{{executionId}}/annotations",
    status_code=201,
    summary="Annotate an execution or one of its nodes",
    description=(
        f"{_INGEST} Appends an annotation event: `type` (note, bug, insight, warning, "
        "question), `text` (sanitized like everything stored), optional `node` (a node's name "
        "or id in this snapshot), `userId` (default: the token's name)."
    ),
    responses=_created_responses("annotation"),
    openapi_extra={**request_body(AnnotationRequest, "the annotation"), **_scope("ingest")},
    tags=["annotations"],
)
async def annotate(
    execution_id: ExecutionId,
    request: Request,
    principal: Ingest,
    archive: ArchiveDep,
    events: EventsDep,
) -> Response:
    body = _body(await read_json_body(request), frozenset({"type", "text", "node", "userId"}))

    def run() -> Response:
        snap = archive.get_snapshot(execution_id)
        event = events.annotate(
            snap,
            text=body.get("text"),
            type=body.get("type", "note"),
            node=body.get("node"),
            user_id=_user(body, principal),
        )
        return _JSON({"annotation": event.to_json()}, status_code=201)

    return await run_in_threadpool(run)


@router.get(
    f"{_SNAPSHOTS}/{{executionId}}/annotations",
    dependencies=read,
    summary="An execution's annotations",
    description=f"{_READ} The annotations in place, oldest first, and the removed ones.",
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("read"),
    tags=["annotations"],
)
def list_annotations(execution_id: ExecutionId, archive: ArchiveDep, events: EventsDep) -> Response:
    return _JSON(_execution_annotations(events, archive, execution_id))


@router.delete(
    f"{_SNAPSHOTS}/{{executionId}}/annotations/{{annotationId}}",
    summary="Remove an annotation",
    description=(
        f"{_INGEST} Appends a `remove` event naming the annotation (which stays in the "
        "history). 404 when the execution has no such annotation in place."
    ),
    responses=error_responses(401, 403, 404, 409, 422, 503),
    openapi_extra=_scope("ingest"),
    tags=["annotations"],
)
def remove_annotation(
    execution_id: ExecutionId,
    annotation_id: AnnotationId,
    principal: Ingest,
    archive: ArchiveDep,
    events: EventsDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=256)] = None,
) -> Response:
    snap = archive.get_snapshot(execution_id)
    event = events.remove_annotation(
        snap, annotation_id, user_id=_user({"userId": user_id}, principal)
    )
    return _JSON({"event": event.to_json()})
