"""The one place where archive errors become HTTP status codes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from archiver.errors import (
    ArchiveError,
    ImmutableConflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    RetentionLocked,
    StoreUnavailable,
)

__all__ = ["STATUS_BY_ERROR", "install_error_handlers", "status_for"]

STATUS_BY_ERROR: tuple[tuple[type[ArchiveError], int, str], ...] = (
    (InvalidInput, 422, "invalid_input"),
    (NotFound, 404, "not_found"),
    (ImmutableConflict, 409, "immutable_conflict"),
    (RetentionLocked, 409, "retention_locked"),
    (IntegrityError, 500, "integrity_error"),
    (StoreUnavailable, 503, "store_unavailable"),
)


def status_for(err: ArchiveError) -> tuple[int, str]:
    for cls, status, code in STATUS_BY_ERROR:
        if isinstance(err, cls):
            return status, code
    return 500, "archive_error"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ArchiveError)
    async def _archive_error(_: Request, err: ArchiveError) -> JSONResponse:
        status, code = status_for(err)
        body: dict[str, object] = {"error": code, "message": str(err)}
        field = getattr(err, "field", None)
        if field:
            body["field"] = field
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the raw input; name the field only.
        first = err.errors()[0] if err.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")]
        return JSONResponse(
            {
                "error": "invalid_input",
                "message": first.get("msg", "invalid request"),
                "field": ".".join(loc) or None,
            },
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse(
            {"error": "internal_error", "message": "internal error"}, status_code=500
        )
