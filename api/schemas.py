"""OpenAPI shapes of the request and response bodies (documentation; camelCase as on the wire).

Request bodies are *not* parsed through these models: routes read them with the archive's strict
JSON reader (duplicate keys, NaN, lone surrogates refused) and hand them to the archive, which
validates them and names the offending field (a capture request: ``archiver.request``, shared
with the CLI's ``put``). The models describe the same shapes for
``/docs`` and clients generated from ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "CAPTURE_EXAMPLE",
    "FINAL_STATE_EXAMPLE",
    "CaptureRequest",
    "CaptureResponse",
    "FinalStateRequest",
    "FinalStateResponse",
    "Health",
    "SnapshotResponse",
    "VersionCommitBody",
    "VersionList",
    "request_body",
]

CAPTURE_EXAMPLE: dict[str, Any] = {
    "executionId": "1001",
    "workflowId": "wf-42",
    "triggerType": "webhook",
    "userId": "user-7",
    "workflow": {
        "id": "wf-42",
        "name": "Order sync",
        "nodes": [
            {
                "id": "a1",
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "parameters": {"path": "orders"},
            },
            {
                "id": "b2",
                "name": "HTTP Request",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [220, 0],
                "parameters": {"url": "https://api.example.com/orders"},
                "credentials": {"httpHeaderAuth": {"id": "7", "name": "Shop API"}},
            },
        ],
        "connections": {
            "Webhook": {"main": [[{"node": "HTTP Request", "type": "main", "index": 0}]]}
        },
        "settings": {"executionOrder": "v1"},
    },
}

FINAL_STATE_EXAMPLE: dict[str, Any] = {
    "executionId": "1001",
    "status": "error",
    "mode": "webhook",
    "startedAt": "2026-05-01T10:00:00.000Z",
    "finishedAt": "2026-05-01T10:00:01.250Z",
    "nodes": [
        {
            "node": "Webhook",
            "status": "success",
            "runs": [{"index": 0, "status": "success", "inputItems": 0, "outputItems": 1}],
        },
        {
            "node": "HTTP Request",
            "status": "error",
            "error": {"message": "401 Unauthorized", "httpCode": "401"},
            "runs": [{"index": 0, "status": "error", "inputItems": 1, "outputItems": 0}],
        },
    ],
}


class _Wire(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


_ID = "letters, digits and `. _ - : @`, at most 256 characters, no `..` (numbers accepted)"


class CaptureRequest(_Wire):
    """A capture request: the workflow as it is about to run, with its execution context."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [CAPTURE_EXAMPLE]})

    execution_id: str | int = Field(description=f"the engine's execution id; {_ID}")
    workflow: dict[str, Any] = Field(
        description="the workflow as n8n exports it (`nodes`, `connections`, `settings` ...)"
    )
    workflow_id: str | int | None = Field(
        default=None, description="defaults to the workflow's own `id`"
    )
    variables: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None, description="variables in effect (object, or a list of `{key, value}`)"
    )
    trigger_type: str | None = Field(
        default=None, description="`manual`, `webhook`, `schedule` ... (else inferred)"
    )
    trigger_data: Any = Field(default=None, description="what started the run (sanitized)")
    user_id: str | int | None = Field(default=None, description="who ran it (default `system`)")
    created_at: str | float | None = Field(
        default=None,
        description=(
            "RFC 3339 time or epoch milliseconds (default: now); within 24 h before and 5 min "
            "after the server's clock (`capture_max_age_seconds`, `capture_max_skew_seconds`), "
            "older (back to 2000-01-01) only with the `backfill` scope; else 422"
        ),
    )
    replay_of: str | int | None = Field(
        default=None, description="execution id this run replays, if any"
    )
    source: Literal["backfill", "post-run"] | None = Field(
        default=None,
        description=(
            "how a capture not taken before the run came about: `backfill` (imported from the "
            "engine's database afterwards; needs the `backfill` scope, else 403) or `post-run` "
            "(taken when the run ended); absent for a pre-run capture"
        ),
    )


class CaptureResponse(_Wire):
    id: str = Field(description="the snapshot's id (stable for an execution id)")
    execution_id: str
    workflow_id: str
    snapshot_version: str = Field(description="semver of the workflow structure, e.g. `1.2.0`")
    snapshot_hash: str = Field(description="SHA-256 (hex) of the JCS form of the structure")
    created_at: str = Field(description="RFC 3339, UTC, milliseconds")
    warnings: list[dict[str, str]] = Field(
        default_factory=list,
        description="what is odd about the workflow but accepted, as n8n accepts it: "
        "`{code, field, message}` items (docs/storage-format.md)",
    )
    received_at: str | None = Field(
        description="when the server took the capture (its clock); retention counts from it"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "es_0f3c9a1b2d4e5f60718293a4b5",
                    "executionId": "1001",
                    "workflowId": "wf-42",
                    "snapshotVersion": "1.0.0",
                    "snapshotHash": "9f2c" + "0" * 60,
                    "createdAt": "2026-05-01T10:00:00.000Z",
                    "warnings": [],
                    "receivedAt": "2026-05-01T10:00:00.120Z",
                }
            ]
        },
    )


class FinalStateRequest(_Wire):
    """How the execution ended: n8n's run result (``IRun``, also with "flatted" ``data``) or the
    plain format of ``docs/final-state.md``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [FINAL_STATE_EXAMPLE]},
    )


class FinalStateResponse(_Wire):
    execution_id: str
    status: str = Field(description="success, error, crashed, canceled, waiting, running ...")
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    node_count: int
    error_count: int = Field(description="failed node runs (error or crashed)")
    failed_nodes: list[str]


class SnapshotResponse(_Wire):
    """The full snapshot as captured (sanitized), with its final state when one was recorded."""

    model_config = ConfigDict(extra="allow")

    id: str
    execution_id: str
    workflow_id: str
    snapshot_version: str
    snapshot_hash: str
    workflow_snapshot: dict[str, Any]
    nodes_snapshot: list[dict[str, Any]]
    connections_snapshot: list[dict[str, Any]]
    settings_snapshot: dict[str, Any]
    variables_snapshot: dict[str, Any] | None
    credentials_refs: list[dict[str, Any]]
    triggers_snapshot: list[dict[str, Any]]
    user_id: str
    trigger_type: str
    created_at: str
    received_at: str | None = Field(
        description="when the server took the capture (null in records older than the field)"
    )
    version_seq: int
    warnings: list[dict[str, str]] = Field(
        default_factory=list, description="`{code, field, message}` items; `[]` when none"
    )
    final_state: dict[str, Any] | None = Field(
        description="the final state; until one is recorded, the latest progress report "
        "(status waiting, running or new), else null"
    )


class VersionCommitBody(_Wire):
    """One version of a workflow: a commit with a parent, like git."""

    model_config = ConfigDict(extra="allow")

    workflow_id: str
    seq: int
    version: str
    snapshot_hash: str
    parent: dict[str, Any] | None
    level: str = Field(description="initial, major, minor or patch")
    summary: str
    changes: dict[str, Any]
    restores: dict[str, Any] | None
    created_at: str
    execution_id: str | None
    user_id: str | None


class VersionList(_Wire):
    workflow_id: str
    versions: list[VersionCommitBody] = Field(description="newest first")


class ExecutionSummary(_Wire):
    """One execution as the index lists it (snapshot row joined with its final state)."""

    model_config = ConfigDict(extra="allow")

    execution_id: str
    workflow_id: str
    snapshot_hash: str
    snapshot_version: str
    created_at: str
    status: str | None = Field(
        description="the final state's status; waiting/running/new while only a progress "
        "report exists; null until either is recorded"
    )


class ExecutionPage(_Wire):
    """A page of executions, newest first; pass ``nextCursor`` back as ``cursor`` for the next."""

    items: list[ExecutionSummary]
    next_cursor: str | None = Field(description="null on the last page")


class Health(_Wire):
    status: str = Field(examples=["ok"])


def request_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body that the route reads itself."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
