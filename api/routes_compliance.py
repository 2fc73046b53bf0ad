"""Compliance routes (scope ``compliance``): the export bundle as a tar (``docs/compliance.md``).

``GET /api/compliance/export`` builds the bundle of :func:`archiver.compliance.export_bundle` in a
private temporary directory first (so a bad selection, an archived object or an object that does
not verify is an error response, never half a tar), then streams it as an uncompressed tar whose
single folder is ``execvault-export-<time>/``; the directory is removed when the stream ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.auth import require_scope
from api.errors import error_responses
from archiver.compliance import Selection, bundle_name, export_bundle, iter_tar
from archiver.config import Settings
from archiver.store.base import ObjectStore
from archiver.timeutil import utcnow

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/api/compliance/export",
    dependencies=[Depends(require_scope("compliance"))],
    summary="Export a verifiable bundle of executions (tar)",
    description=(
        "Scope: `compliance` (or `admin`). Selects executions by id (`executionId`, repeatable or "
        "comma-separated), by workflow (`workflowId`) and/or by `since`/`until` (RFC 3339, on the "
        "snapshot's createdAt; criteria are ANDed; an empty or open-ended selection is a 422). "
        "Answers `application/x-tar`: one folder holding `objects/` (the stored bytes, verified "
        "before inclusion), `manifest/<table>.jsonl` (the index rows), `bundle.json` (selection, "
        "counts, index chain entries), `README.md` and `SHA256SUMS` (`sha256sum -c SHA256SUMS`). "
        "Archived objects (GLACIER, DEEP_ARCHIVE, or moved to the cold store) are a 409 naming "
        "them, unless "
        "`skipArchived=true` (then listed in bundle.json). 404 for an execution id that was never "
        "captured."
    ),
    responses={
        200: {
            "description": "The bundle as a tar (`Content-Disposition` names the file).",
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(401, 403, 404, 409, 422, 503),
    },
    openapi_extra={"x-required-scope": "compliance"},
    tags=["compliance"],
)
async def export(
    request: Request,
    execution_ids: Annotated[
        list[str] | None,
        Query(alias="executionId", description="execution id(s); repeat or comma-separate"),
    ] = None,
    workflow_id: Annotated[
        str | None, Query(alias="workflowId", description="every execution of this workflow")
    ] = None,
    since: Annotated[str | None, Query(description="RFC 3339, inclusive")] = None,
    until: Annotated[str | None, Query(description="RFC 3339, exclusive")] = None,
    skip_archived: Annotated[
        bool, Query(alias="skipArchived", description="leave out archived objects")
    ] = False,
) -> StreamingResponse:
    selection = Selection.parse(
        execution_ids=execution_ids or (), workflow_id=workflow_id, since=since, until=until
    )
    settings: Settings = request.app.state.settings
    store: ObjectStore = request.app.state.archive.store
    now = utcnow()
    root = bundle_name(now)
    tmp = Path(tempfile.mkdtemp(prefix="execvault-export-"))
    try:
        await run_in_threadpool(
            export_bundle,
            store,
            selection,
            tmp / root,
            skip_archived=skip_archived,
            max_object_bytes=settings.max_object_bytes,
            now=now,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def stream() -> Iterator[bytes]:
        try:
            yield from iter_tar(tmp / root, root, mtime=now.timestamp())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return StreamingResponse(
        stream(),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{root}.tar"'},
        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True),
    )
