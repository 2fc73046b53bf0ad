"""Compare, replay and timeline routes: thin wrappers over ``query.diff`` (and friends).

Every route reads the archive the app keeps in ``app.state.archive`` (and, for the timeline,
the index catalog in ``app.state.index``), calls one query function and serializes its answer.
See ``docs/compare.md`` for the shapes and ``docs/api.md`` for the table of routes.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require_scope
from api.errors import error_responses
from archiver.archive import Archive
from archiver.layout import check_id
from query.catalog import Catalog
from query.diff import check_version_ref, compare_executions, compare_workflow_versions
from query.replay import compare_to_original, prepare_replay_context, validate_for_replay
from query.timeline import workflow_timeline

__all__ = ["DiffBody", "ReplayContextBody", "ReplayValidationBody", "TimelineBody", "router"]

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


def _execution_id(
    execution_id: Annotated[
        str, Path(alias="executionId", description="the engine's execution id")
    ],
) -> str:
    return check_id(execution_id, "executionId")


def _other_execution_id(
    other: Annotated[
        str, Path(alias="otherExecutionId", description="the execution to compare with")
    ],
) -> str:
    return check_id(other, "otherExecutionId")


def _workflow_id(
    workflow_id: Annotated[str, Path(alias="workflowId", description="the workflow's id")],
) -> str:
    return check_id(workflow_id, "workflowId")


_VERSION_REF = "a semantic version (`1.2.0`), a sequence number (`3`) or `head`"


def _v1(v1: Annotated[str, Path(description=_VERSION_REF)]) -> str:
    return check_version_ref(v1, "v1")


def _v2(v2: Annotated[str, Path(description=_VERSION_REF)]) -> str:
    return check_version_ref(v2, "v2")


ArchiveDep = Annotated[Archive, Depends(_archive)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
ExecutionId = Annotated[str, Depends(_execution_id)]
OtherExecutionId = Annotated[str, Depends(_other_execution_id)]
WorkflowId = Annotated[str, Depends(_workflow_id)]
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
    responses=error_responses(401, 403, 404, 422, 503),
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
        description="cold-archive status; archiving is not implemented yet (always false)"
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
        "(`valid: false`), not an error."
    ),
    responses=error_responses(401, 403, 404, 422, 503),
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
    responses=error_responses(401, 403, 404, 422, 503),
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
    responses=error_responses(401, 403, 404, 422, 503),
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
