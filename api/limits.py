"""Request limits, enforced before anything is buffered or stored.

``BodyLimitMiddleware``
    Counts request-body bytes as they arrive and stops at ``max_body_bytes`` (413), and refuses a
    declared ``Content-Length`` above the limit before reading a single byte. The check runs on the
    first read of the body, so a route's authentication (which reads no body) answers first. It
    also bounds the wait for each piece of the body (408): uvicorn has no such timeout. Bodies over
    1 MiB (declared, or once that much arrived) draw their size from a shared budget of
    ``max_inflight_body_bytes``, held until the response is done: parsing JSON costs a multiple of
    its size in memory, so when the budget is spent the next large body is refused at once (503
    ``overloaded`` with ``Retry-After``) instead of the server's memory growing without bound.
``PathGuardMiddleware``
    Checks every path segment under ``/api/`` *as sent* (``raw_path``), before routing: an
    encoded slash (``%2F``), a dot segment (``..``, ``%2e%2e``), an empty segment, a control
    character (``%00``), invalid UTF-8 or an over-long segment is a 422 naming the id it stands in
    for. Without this, ``a%2Fb`` would be decoded into two segments and answered 404.
``read_json_body``
    The body of a JSON route: media type and content coding checked (415), then the bytes, and a
    body that may hold more than ``max_json_values`` JSON values is refused (413) before it is
    parsed (an upper bound from counting ``,``, ``[`` and ``{``: each value but the first follows
    one of them).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_to_bytes

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType, response_for
from archiver.errors import InvalidId, Overloaded
from archiver.layout import MAX_ID_LENGTH

__all__ = [
    "API_PREFIX",
    "LARGE_BODY_BYTES",
    "BodyLimitMiddleware",
    "PathGuardMiddleware",
    "read_json_body",
]

#: bodies above this size count against ``max_inflight_body_bytes``
LARGE_BODY_BYTES: Final = 1024 * 1024
#: bodies this small cannot hold ``max_json_values`` values: not counted
_DEFAULT_MAX_JSON_VALUES: Final = 5_000_000

API_PREFIX: Final = "/api/"
_SNAPSHOTS: Final = ("api", "execution-snapshots")
#: The literal segment that precedes each kind of id in our paths.
_ID_AFTER: Final = {"workflow": "workflowId", "by-hash": "snapshotHash"}
#: Deeper ids, by the literal before them: ``{executionId}/compare/{otherExecutionId}``,
#: ``workflow/{workflowId}/versions/{v1}/compare/{v2}``, ``…/tags/{tag}`` and so on.
_DEEP_ID_AFTER: Final = {
    "executionId": {"compare": "otherExecutionId", "tags": "tag", "annotations": "annotationId"},
    "workflowId": {"versions": "v1", "compare": "v2", "tags": "tag"},
}
_JSON_TYPES: Final = frozenset({"application/json"})


class BodyLimitMiddleware:
    """Pure ASGI middleware: a byte budget and an idle timeout on the request body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        timeout_seconds: float,
        max_inflight_bytes: int | None = None,
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self.max_inflight_bytes = max_inflight_bytes
        #: bytes of large bodies admitted and not yet answered (one event loop: no lock needed)
        self.inflight_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        timeout = self.timeout_seconds
        declared = _content_length(scope)
        received = 0
        body_done = False
        held = 0  # bytes this request holds of the in-flight budget

        def hold(size: int) -> None:
            nonlocal held
            budget = self.max_inflight_bytes
            if budget is None or size <= held or size <= LARGE_BODY_BYTES:
                return
            others = self.inflight_bytes - held
            if others and others + size > budget:  # one body alone is always let through
                raise Overloaded("too many large request bodies are being handled; retry shortly")
            self.inflight_bytes += size - held
            held = size

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                # Only a disconnect can come now (a streaming response may wait long for it).
                return await receive()
            if declared is not None and declared > limit:
                raise PayloadTooLarge(_too_large(limit), field="body")
            hold(max(declared or 0, received))
            try:
                with anyio.fail_after(timeout):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"no request body data for {timeout:g} seconds", field="body"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(_too_large(limit), field="body")
                hold(received)
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.inflight_bytes -= held


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses these before the app sees them
    return None


class PathGuardMiddleware:
    """Pure ASGI middleware: refuse unsafe path segments under ``/api/`` before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = check_raw_path(scope)
            if problem is not None:
                await response_for(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def check_raw_path(scope: Scope) -> InvalidId | None:
    """The first unsafe segment of the request path, as an error naming its id; else None."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes | bytearray):
        raw = str(scope.get("path", "")).encode("utf-8", "surrogateescape")
    raw = bytes(raw).split(b"?", 1)[0]
    if not raw.startswith(API_PREFIX.encode()):
        return None
    segments = raw.split(b"/")[1:]
    if segments and segments[-1] == b"":
        segments.pop()  # a trailing slash: the router redirects it
    names: list[str] = []
    for index, segment in enumerate(segments):
        field = _field_for(names, index)
        if not segment:
            return InvalidId(f"{field} must not be empty", field=field)
        decoded = unquote_to_bytes(segment)
        try:
            text = decoded.decode("utf-8")
        except UnicodeDecodeError:
            return InvalidId(f"{field} is not valid UTF-8", field=field)
        if text in (".", ".."):
            return InvalidId(f"{field} must not be '.' or '..'", field=field)
        if any(c in "/\\" or ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
            return InvalidId(f"{field} must not contain slashes or control characters", field=field)
        if len(text) > MAX_ID_LENGTH:
            return InvalidId(f"{field} is longer than {MAX_ID_LENGTH} characters", field=field)
        names.append(text)
    return None


def _field_for(previous: list[str], index: int) -> str:
    """Name the path segment at ``index`` after the segments ``previous`` (for error bodies)."""
    if tuple(previous[:2]) == _SNAPSHOTS and index >= 2:
        if index == 2:
            return "executionId"
        third = previous[2]
        if index == 3 and third in _ID_AFTER:
            return _ID_AFTER[third]
        # ids alternate with literals: at even indexes under an execution, odd under a workflow
        deep = _DEEP_ID_AFTER.get(_ID_AFTER.get(third, "executionId"), {})
        if index >= 4 and index % 2 == (third in _ID_AFTER) and previous[index - 1] in deep:
            return deep[previous[index - 1]]
    return "path"


async def read_json_body(request: Request) -> bytes:
    """The raw body of a JSON request (the limits above apply while it streams in)."""
    media = request.headers.get("content-type")
    if media is not None:
        main = media.split(";", 1)[0].strip().lower()
        if main not in _JSON_TYPES and not (
            main.startswith("application/") and main.endswith("+json")
        ):
            raise UnsupportedMediaType("send the body as application/json", field="Content-Type")
    coding = request.headers.get("content-encoding")
    if coding is not None and coding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            "compressed request bodies are not accepted", field="Content-Encoding"
        )
    chunks: list[bytes] = []
    async for chunk in request.stream():
        chunks.append(chunk)
    data = b"".join(chunks)
    del chunks
    settings = getattr(request.app.state, "settings", None)
    max_values = getattr(settings, "max_json_values", _DEFAULT_MAX_JSON_VALUES)
    if len(data) // 2 + 1 > max_values and _json_values_at_most(data) > max_values:
        raise PayloadTooLarge(f"the body holds more than {max_values} JSON values", field="body")
    return data


def _json_values_at_most(data: bytes) -> int:
    """An upper bound of the JSON values in ``data``: every value but the first comes after a
    ``,`` or opens after ``[`` / ``{`` ... (object keys are counted as values too)."""
    return 1 + data.count(b",") + data.count(b"[") + data.count(b"{") + data.count(b":")
