"""The one place where errors become HTTP status codes and error bodies.

Every error response has the same JSON body, whatever raised it::

    {"error": "<code>", "message": "<text for people>", "field": "<culprit or null>"}

``message`` and ``field`` never echo the caller's input (a field names *where* the problem is,
not what was there). Server-side failures (5xx) carry a fixed message; their details go to the
log, never to the client.

Errors that exist only at the HTTP layer are drawn here::

    ApiError
    ├── Unauthorized          401  no or unknown bearer token (WWW-Authenticate: Bearer)
    ├── Forbidden             403  the token lacks the route's scope
    ├── RequestTimeout        408  the body stopped arriving
    ├── PayloadTooLarge       413  the body is over ``max_body_bytes``
    └── UnsupportedMediaType  415  not JSON, or a content coding we do not decode

429, 503 and 507 carry ``Retry-After``.

The archive's own errors (``archiver.errors``) are mapped by ``STATUS_BY_ERROR``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from archiver.errors import (
    ArchiveError,
    ColdCopyDamaged,
    ImmutableConflict,
    IntegrityError,
    InvalidInput,
    ManifestError,
    NotFound,
    ObjectArchived,
    Overloaded,
    QueryBusy,
    QueryFailed,
    QueryLimitExceeded,
    QueryRefused,
    RetentionLocked,
    RunBusy,
    SanitizationError,
    StorageFull,
    StoreUnavailable,
)

__all__ = [
    "RETRY_AFTER_SECONDS",
    "STATUS_BY_ERROR",
    "ApiError",
    "ErrorBody",
    "Forbidden",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_body",
    "error_responses",
    "install_error_handlers",
    "response_for",
    "status_for",
]

log = logging.getLogger("execvault.api")

RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """An error of the HTTP layer itself (auth, limits, media type)."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.headers = dict(headers or {})


class Unauthorized(ApiError):
    """No bearer token, or one that matches no configured digest."""


class Forbidden(ApiError):
    """A valid token without the scope the route needs."""


class RequestTimeout(ApiError):
    """The request body stopped arriving for longer than the configured timeout."""


class PayloadTooLarge(ApiError):
    """The request body is larger than ``max_body_bytes``."""


class UnsupportedMediaType(ApiError):
    """The body is not ``application/json`` or uses a content coding we do not decode."""


#: (error class, status, code, fixed message or None to use the error's own). First match wins.
STATUS_BY_ERROR: tuple[tuple[type[Exception], int, str, str | None], ...] = (
    (Unauthorized, 401, "unauthorized", None),
    (Forbidden, 403, "forbidden", None),
    (RequestTimeout, 408, "request_timeout", None),
    (PayloadTooLarge, 413, "payload_too_large", None),
    (UnsupportedMediaType, 415, "unsupported_media_type", None),
    (ClientDisconnect, 400, "client_disconnected", "the client went away mid-request"),
    (QueryRefused, 422, "query_refused", None),
    (QueryFailed, 422, "query_failed", None),
    (QueryLimitExceeded, 422, "query_limit_exceeded", None),
    (QueryBusy, 429, "too_many_queries", None),
    (InvalidInput, 422, "invalid_input", None),
    (SanitizationError, 422, "unsanitizable_input", None),
    (NotFound, 404, "not_found", None),
    (ImmutableConflict, 409, "immutable_conflict", None),
    (RetentionLocked, 409, "retention_locked", None),
    (ObjectArchived, 409, "archived", None),
    (ColdCopyDamaged, 409, "cold_copy_damaged", None),
    (RunBusy, 409, "busy", None),
    (Overloaded, 503, "overloaded", None),
    (StoreUnavailable, 503, "store_unavailable", "the object store is unavailable; retry later"),
    (
        StorageFull,
        507,
        "storage_full",
        "the store has no space left (disk full or quota reached); nothing was stored, "
        "retry once space is freed",
    ),
    (IntegrityError, 500, "integrity_error", "a stored object failed verification"),
    (ManifestError, 500, "manifest_error", "the index could not be read or written"),
    (ArchiveError, 500, "archive_error", "internal error"),
)

#: Codes used for errors raised by the framework itself (routing, methods).
_HTTP_CODES: Mapping[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
}


def status_for(err: Exception) -> tuple[int, str]:
    """The HTTP status and error code for ``err`` (500 for anything unexpected)."""
    for cls, status, code, _ in STATUS_BY_ERROR:
        if isinstance(err, cls):
            return status, code
    return 500, "internal_error"


def _message_for(err: Exception) -> str:
    for cls, _, _, fixed in STATUS_BY_ERROR:
        if isinstance(err, cls):
            return fixed if fixed is not None else str(err)
    return "internal error"


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "field": field}


def response_for(err: Exception) -> JSONResponse:
    """The JSON error response for ``err``; also used by middleware outside the routes."""
    status, code = status_for(err)
    headers: dict[str, str] = {}
    if isinstance(err, ApiError):
        headers.update(err.headers)
    if status in (429, 503, 507):
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    if status >= 500:
        log.error("%s while serving a request", code, exc_info=err)
        field = None
    else:
        field = getattr(err, "field", None)
    body = error_body(code, _message_for(err), field if isinstance(field, str) else None)
    if isinstance(err, ObjectArchived):
        body["state"] = "archived"
        if err.execution_id is not None:
            body["restore"] = f"POST /api/execution-snapshots/{err.execution_id}/restore"
    if isinstance(err, QueryLimitExceeded):
        body["limit"] = err.limit
    if isinstance(err, ColdCopyDamaged):
        body.update(
            executionId=err.execution_id, key=err.key, problem=err.problem, location=err.location
        )
    return JSONResponse(body, status_code=status, headers=headers or None)


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="machine-readable code, e.g. `invalid_input`")
    message: str = Field(description="what went wrong, for people; never echoes the input")
    field: str | None = Field(
        default=None, description="where the problem is (a field or JSON path), when known"
    )


_DESCRIPTIONS: Mapping[int, str] = {
    401: "No bearer token, or an unknown one (`WWW-Authenticate: Bearer`).",
    403: "The token lacks the scope this route needs.",
    404: "No such execution, workflow or route.",
    408: "The request body stopped arriving.",
    409: "Different content for a record that already exists (records are write-once); an "
    "archived execution (`archived`, with the `restore` route to call); a damaged cold copy "
    "(`cold_copy_damaged`).",
    413: "The request body is larger than the configured limit.",
    415: "The body is not `application/json`, or it is compressed.",
    422: "Invalid JSON, a wrong type or value, or an unsafe id; `field` names it.",
    429: "Too many requests of this kind are running or queued; retry after `Retry-After` seconds.",
    500: "A server fault (never a client mistake); details are logged, not returned.",
    503: "The object store is unavailable, or too many large bodies are in flight "
    "(`overloaded`); retry after `Retry-After` seconds.",
    507: "The store has no space left (`storage_full`); retry after `Retry-After` seconds.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries that document ``statuses`` on a route."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        for status in sorted(statuses)
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ArchiveError)
    async def _archive_error(_: Request, err: ArchiveError) -> JSONResponse:
        return response_for(err)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return response_for(err)

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(_: Request, err: ClientDisconnect) -> JSONResponse:
        return response_for(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        # Routing errors (404 unknown path, 405 wrong method ...) in our shape, headers kept.
        status = err.status_code if 400 <= err.status_code < 500 else 500
        code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        message = str(err.detail) if status < 500 else "internal error"
        return JSONResponse(
            error_body(code, message), status_code=status, headers=dict(err.headers or {}) or None
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the raw input; name the field only.
        errors = err.errors()
        first: Mapping[str, Any] = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")]
        return JSONResponse(
            error_body(
                "invalid_input", str(first.get("msg", "invalid request")), ".".join(loc) or None
            ),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        return response_for(err)
