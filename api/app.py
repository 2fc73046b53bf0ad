"""The HTTP service: thin routes over :class:`archiver.archive.Archive`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from api.errors import install_error_handlers
from archiver.archive import Archive, CaptureResult
from archiver.config import Settings
from archiver.errors import InvalidInput, NotFound
from archiver.jsonio import loads_strict

__all__ = ["create_app"]

_CAPTURE_FIELDS = {
    "executionId",
    "workflowId",
    "workflow",
    "variables",
    "triggerType",
    "triggerData",
    "userId",
    "createdAt",
    "replayOf",
}


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _capture_body(result: CaptureResult) -> dict[str, Any]:
    snap = result.snapshot
    return {
        "id": snap.id,
        "executionId": snap.execution_id,
        "workflowId": snap.workflow_id,
        "snapshotVersion": snap.snapshot_version,
        "snapshotHash": snap.snapshot_hash,
        "createdAt": snap.to_json()["createdAt"],
    }


async def _json_object(request: Request, limit: int) -> dict[str, Any]:
    body = await request.body()
    if len(body) > limit:
        raise InvalidInput("request body too large", field="body")
    value = loads_strict(body)
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    return value


def create_app(settings: Settings, *, archive: Archive | None = None) -> FastAPI:
    """Build the app; nothing connects to anything before this is called."""
    arc = archive or Archive(
        settings.open_store(), settings.sanitizer(), max_object_bytes=settings.max_object_bytes
    )
    app = FastAPI(title="execvault", version="0.1.0", default_response_class=ORJSONResponse)
    install_error_handlers(app)
    app.state.archive = arc
    body_limit = 64 * 1024 * 1024

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "store": arc.store.url}

    @app.post("/api/execution-snapshots", status_code=201)
    async def capture(request: Request) -> Response:
        body = await _json_object(request, body_limit)
        unknown = set(body) - _CAPTURE_FIELDS
        if unknown:
            raise InvalidInput("unknown field", field=sorted(unknown)[0][:64])
        if "workflow" not in body:
            raise InvalidInput("workflow is required", field="workflow")
        if "executionId" not in body:
            raise InvalidInput("executionId is required", field="executionId")
        result = arc.capture_snapshot(
            execution_id=body["executionId"],
            workflow=body["workflow"],
            workflow_id=body.get("workflowId"),
            variables=body.get("variables"),
            trigger_type=body.get("triggerType"),
            trigger_data=body.get("triggerData"),
            user_id=body.get("userId"),
            created_at=body.get("createdAt"),
            replay_of=body.get("replayOf"),
        )
        return ORJSONResponse(_capture_body(result), status_code=201 if result.created else 200)

    @app.post("/api/execution-snapshots/{execution_id}/final-state", status_code=201)
    async def final_state(execution_id: str, request: Request) -> Response:
        body = await _json_object(request, body_limit)
        result = arc.record_final_state(execution_id, body)
        return ORJSONResponse(
            result.final_state.to_json(), status_code=201 if result.created else 200
        )

    @app.get("/api/execution-snapshots/{execution_id}")
    def get_snapshot(execution_id: str) -> Response:
        snap = arc.get_snapshot(execution_id)
        final = arc.get_final_state(execution_id)
        body = snap.to_json()
        body["finalState"] = final.to_json() if final is not None else None
        return ORJSONResponse(body)

    @app.get("/api/execution-snapshots/workflow/{workflow_id}/version")
    def version(workflow_id: str) -> dict[str, Any]:
        head = arc.versions.head(workflow_id)
        if head is None:
            raise NotFound(f"workflow {workflow_id} has no versions")
        return head.to_json()

    @app.get("/api/execution-snapshots/workflow/{workflow_id}/versions")
    def versions(workflow_id: str) -> dict[str, Any]:
        commits = arc.version_history(workflow_id)
        return {"workflowId": workflow_id, "versions": [c.to_json() for c in reversed(commits)]}

    return app
