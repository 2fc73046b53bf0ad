"""The HTTP service: auth, hardened input handling, idempotency, OpenAPI, and a real server.

Most tests drive the ASGI app in process through httpx's ASGI transport (which streams request
bodies lazily, so a test can see how much of a body the server pulled). ``asgi_raw`` sends a path
exactly as given, for what httpx would normalize away (literal ``..``). The end-to-end tests run
uvicorn on a free loopback port and talk plain HTTP to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio
import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import api.auth
from api.app import create_app
from api.auth import TokenTable, load_tokens, parse_tokens_env, parse_tokens_file, token_digest
from api.errors import STATUS_BY_ERROR
from api.limits import BodyLimitMiddleware
from api.schemas import CaptureRequest
from archiver.archive import Archive
from archiver.config import Settings
from archiver.errors import IntegrityError, InvalidInput, StoreUnavailable
from archiver.request import CAPTURE_FIELDS
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectInfo
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from tests.helpers import REPO, WORKFLOWS, load_corpus

HMAC_KEY = bytes(range(32))
CANARY = "CANARY-7f3e9a"
SNAPSHOTS = "/api/execution-snapshots"

TOKENS = {
    "ingest": "evt_test-ingest-token",
    "read": "evt_test-read-token",
    "admin": "evt_test-admin-token",
    "query": "evt_test-query-token",
}
TOKENS_SETTING = ";".join(f"{token_digest(tok)}:{scope}" for scope, tok in TOKENS.items())


def _workflow(*, url: str = "https://example.com", wf_id: str = "wf-1") -> dict[str, Any]:
    return {
        "id": wf_id,
        "name": "Demo",
        "nodes": [
            {
                "id": "t",
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "parameters": {"path": "hook"},
            },
            {
                "id": "h",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200, 0],
                "parameters": {"url": url},
            },
        ],
        "connections": {"Webhook": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
        "settings": {"executionOrder": "v1"},
    }


def _capture(execution_id: str = "1001", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"executionId": execution_id, "workflow": _workflow()}
    body.update(extra)
    return body


FINAL = {
    "status": "error",
    "startedAt": "2026-05-01T10:00:00.000Z",
    "finishedAt": "2026-05-01T10:00:01.250Z",
    "nodes": [
        {"node": "Webhook", "status": "success", "runs": [{"index": 0, "status": "success"}]},
        {
            "node": "HTTP",
            "status": "error",
            "error": {"message": "401 Unauthorized"},
            "runs": [{"index": 0, "status": "error"}],
        },
    ],
}


# ---------------------------------------------------------------------------- harness


class CountingStore(MemoryStore):
    """A memory store that counts calls, to prove that bad input never reaches storage."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def put(self, key: str, data: bytes) -> bool:
        self.calls += 1
        return super().put(key, data)

    def get(self, key: str) -> bytes:
        self.calls += 1
        return super().get(key)

    def head(self, key: str) -> ObjectInfo | None:
        self.calls += 1
        return super().head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.calls += 1
        return super().list(prefix)


class DownStore(MemoryStore):
    def get(self, key: str) -> bytes:
        raise StoreUnavailable("s3 said 503 after 5 attempts at http://10.0.0.7:9000/bucket")

    def put(self, key: str, data: bytes) -> bool:
        raise StoreUnavailable("s3 said 503 after 5 attempts at http://10.0.0.7:9000/bucket")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        raise StoreUnavailable("s3 said 503")


def make_app(
    store: Any = None, *, tokens: str | None = None, **settings_kw: Any
) -> tuple[FastAPI, Any]:
    store = MemoryStore() if store is None else store
    archive = Archive(store, Sanitizer(HMAC_KEY))
    return create_app(Settings(tokens=tokens, **settings_kw), archive=archive), store


class Client:
    """A synchronous face on httpx.AsyncClient + ASGITransport (one event loop per request)."""

    def __init__(
        self, app: FastAPI, token: str | None = None, *, raise_app_exceptions: bool = True
    ) -> None:
        self.app = app
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.raise_app_exceptions = raise_app_exceptions

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(
                app=self.app, raise_app_exceptions=self.raise_app_exceptions
            )
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=self.headers
            ) as client:
                response = await client.request(method, url, **kw)
                await response.aread()
                return response

        return asyncio.run(go())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)


def post_raw(client: Client, url: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(url, content=body, headers={"Content-Type": "application/json", **headers})


def asgi_raw(
    app: FastAPI, method: str, raw_path: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Call the app with ``raw_path`` exactly as sent (``path`` decoded as uvicorn does)."""

    async def go() -> tuple[int, dict[str, str], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 5000),
        }
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        start = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return (
            start["status"],
            {k.decode(): v.decode() for k, v in start["headers"]},
            body,
        )

    return asyncio.run(go())


def assert_error(
    response: httpx.Response, status: int, *, field: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    # query_limit_exceeded also names the limit (time, memory, result)
    extra = {"limit"} if body.get("error") == "query_limit_exceeded" else set()
    assert set(body) - extra == {"error", "message", "field"}, body
    if field is not None:
        assert body["field"] == field, body
    if code is not None:
        assert body["error"] == code, body
    assert CANARY not in response.text
    assert "Traceback" not in response.text
    return body


@pytest.fixture
def app() -> FastAPI:
    return make_app()[0]


@pytest.fixture
def client(app: FastAPI) -> Client:
    return Client(app)


# ---------------------------------------------------------------------------- auth


ROUTES = [
    ("POST", SNAPSHOTS, "ingest"),
    ("POST", f"{SNAPSHOTS}/1001/final-state", "ingest"),
    ("GET", f"{SNAPSHOTS}/1001", "read"),
    ("GET", f"{SNAPSHOTS}/workflow/wf-1/version", "read"),
    ("GET", f"{SNAPSHOTS}/workflow/wf-1/versions", "read"),
]


@pytest.fixture
def secured() -> FastAPI:
    app, _ = make_app(tokens=TOKENS_SETTING)
    Client(app, TOKENS["admin"]).post(SNAPSHOTS, json=_capture())
    return app


@pytest.mark.parametrize(("method", "url", "scope"), ROUTES)
def test_no_token_is_401_with_www_authenticate(
    secured: FastAPI, method: str, url: str, scope: str
) -> None:
    response = Client(secured).request(method, url, json=FINAL)
    body = assert_error(response, 401, field="Authorization", code="unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "token" in body["message"]


@pytest.mark.parametrize(
    "header",
    ["Bearer evt_wrong", "Bearer ", "Basic dXNlcjpwYXNz", "bearer", "Bearer " + "x" * 5000],
)
def test_invalid_token_is_401(secured: FastAPI, header: str) -> None:
    response = Client(secured).get(f"{SNAPSHOTS}/1001", headers={"Authorization": header})
    assert_error(response, 401, field="Authorization")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_token_is_not_echoed(secured: FastAPI) -> None:
    response = Client(secured, f"evt_{CANARY}").get(f"{SNAPSHOTS}/1001")
    assert_error(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(("method", "url", "scope"), ROUTES)
@pytest.mark.parametrize("holder", ["ingest", "read", "query", "admin"])
def test_scopes_per_route(secured: FastAPI, method: str, url: str, scope: str, holder: str) -> None:
    body = FINAL if url.endswith("final-state") else _capture()
    response = Client(secured, TOKENS[holder]).request(method, url, json=body)
    if holder in (scope, "admin"):
        assert response.status_code in (200, 201), response.text
    else:
        assert_error(response, 403, field="Authorization", code="forbidden")
        assert f'scope="{scope}"' in response.headers["www-authenticate"]


def test_open_routes_need_no_token(secured: FastAPI) -> None:
    client = Client(secured)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_no_tokens_configured_allows_everything(client: Client) -> None:
    assert client.post(SNAPSHOTS, json=_capture()).status_code == 201
    assert client.get(f"{SNAPSHOTS}/1001").status_code == 200
    # A token sent to an open service is ignored, not refused.
    assert Client(client.app, "anything").get(f"{SNAPSHOTS}/1001").status_code == 200


def test_auth_is_checked_before_the_body_is_read(secured: FastAPI) -> None:
    pulled: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for i in range(1000):
            pulled.append(i)
            yield b"x" * 1024

    response = Client(secured).post(SNAPSHOTS, content=body())
    assert_error(response, 401)
    assert pulled == []


def test_tokens_file(tmp_path: Path) -> None:
    ingest, admin = "evt_file-ingest", "evt_file-admin"
    path = tmp_path / "tokens"
    path.write_text(
        "# execvault tokens\n\n"
        f"{token_digest(ingest)} ingest   # the engine\n"
        f"{token_digest(admin).upper()} admin,read\n"
    )
    entries = parse_tokens_file(path)
    assert [e.name for e in entries] == ["the engine", None]
    assert [sorted(e.scopes) for e in entries] == [["ingest"], ["admin", "read"]]
    app, _ = make_app(tokens_file=str(path))
    assert Client(app, ingest).post(SNAPSHOTS, json=_capture()).status_code == 201
    assert Client(app, ingest).get(f"{SNAPSHOTS}/1001").status_code == 403
    assert Client(app, admin).get(f"{SNAPSHOTS}/1001").status_code == 200


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("evt_plain-token:ingest", "tokens[1]"),  # a token in clear, not a digest
        (f"{'a' * 64}:ingest;{'b' * 63}:read", "tokens[2]"),
        (f"{'a' * 64}:everything", "tokens[1]"),
        (f"{'a' * 64}:", "tokens[1]"),
        (f"{'a' * 64}", "tokens[1]"),
        (f"{'a' * 64}:read;{'A' * 64}:ingest", "tokens"),  # the same digest twice
    ],
)
def test_bad_token_configuration_is_refused(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_tokens(Settings(tokens=text))
    assert info.value.field == field
    with pytest.raises(InvalidInput):
        make_app(tokens=text)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("", "tokens_file"),  # configured but empty: refuse rather than run open
        ("# only comments\n\n", "tokens_file"),
        ("evt_plain-token ingest\n", "tokens_file:1"),
        (f"\n{'a' * 64}\n", "tokens_file:2"),
        (f"{'a' * 64} ingest,nope\n", "tokens_file:1"),
    ],
)
def test_bad_tokens_file_is_refused(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(InvalidInput) as info:
        parse_tokens_file(path)
    assert info.value.field == field


def test_missing_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        make_app(tokens_file=str(tmp_path / "absent"))
    assert info.value.field == "tokens_file"


def test_env_tokens_accept_newlines_and_spaces() -> None:
    entries = parse_tokens_env(f" {'a' * 64}:ingest, read ;\n{'b' * 64}:admin\n")
    assert [sorted(e.scopes) for e in entries] == [["ingest", "read"], ["admin"]]


def test_every_digest_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)
    table = load_tokens(Settings(tokens=TOKENS_SETTING))
    for token in (TOKENS["ingest"], TOKENS["admin"], "evt_unknown"):
        calls.clear()
        table.lookup(token)
        assert len(calls) == len(TOKENS)  # no early exit on a match


def test_admin_implies_every_scope() -> None:
    table = load_tokens(Settings(tokens=f"{token_digest('t')}:admin"))
    for scope in api.auth.SCOPES:
        assert table.authorize("t", scope).authenticated
    assert TokenTable().authorize(None, "admin").scopes == frozenset(api.auth.SCOPES)


# ---------------------------------------------------------------------------- bad bodies


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"executionId": "1", "workflow": {', "body"),
        (b'{"executionId": "1", "x": NaN}', "body"),
        (b'{"executionId": "1", "x": Infinity}', "body"),
        (b'{"executionId": "1", "x": -Infinity}', "body"),
        (b'{"executionId": "1", "executionId": "2"}', "executionId"),
        (b'{"executionId": "\\ud800", "workflow": {}}', "body"),
        (b'{"executionId": "\\udc00x"}', "body"),
        (b'{"executionId": "\xff\xfe"}', "body"),
        (b'{"executionId": "1"} trailing', "body"),
        (b"", "body"),
        (b"   ", "body"),
        (b"[1, 2]", "body"),
        (b'"a string"', "body"),
        (b"null", "body"),
        (b"[" * 2000 + b"]" * 2000, "body"),
    ],
)
def test_malformed_json_is_422_naming_the_field(client: Client, body: bytes, field: str) -> None:
    body = body.replace(b'"1"', f'"{CANARY}"'.encode(), 1)
    assert_error(post_raw(client, SNAPSHOTS, body), 422, field=field, code="invalid_input")
    assert_error(post_raw(client, f"{SNAPSHOTS}/1001/final-state", body), 422, field=field)


def test_deeply_nested_but_valid_json_is_422(client: Client) -> None:
    deep: dict[str, Any] = {"a": None}
    for _ in range(600):
        deep = {"a": deep}
    body = _capture(triggerData=deep)
    assert_error(client.post(SNAPSHOTS, json=body), 422, field="body")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"executionId": [CANARY]}, "executionId"),
        ({"executionId": True}, "executionId"),
        ({"executionId": {"id": CANARY}}, "executionId"),
        ({"executionId": f"{CANARY}/../x"}, "executionId"),
        ({"executionId": "a" * 257}, "executionId"),
        ({"executionId": ""}, "executionId"),
        ({"workflowId": 1.5}, "workflowId"),
        ({"workflowId": f"{CANARY} x"}, "workflowId"),
        ({"userId": f"{CANARY}\n"}, "userId"),
        ({"replayOf": [1]}, "replayOf"),
        ({"triggerType": 7}, "triggerType"),
        ({"triggerType": CANARY * 20}, "triggerType"),
        ({"createdAt": f"{CANARY} yesterday"}, "createdAt"),
        ({"createdAt": -5}, "createdAt"),
        ({"variables": CANARY}, "variables"),
        ({"variables": [CANARY]}, "variables[0]"),
        ({"unknownField": 1}, "unknownField"),
        ({"\u0000bad": 1}, "<key>"),
    ],
)
def test_wrong_types_are_422_naming_the_field(
    client: Client, change: dict[str, Any], field: str | None
) -> None:
    body = assert_error(client.post(SNAPSHOTS, json=_capture(**change)), 422, field=field)
    if field is None:
        assert body["field"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workflow": _workflow()}, "executionId"),
        ({"executionId": "1"}, "workflow"),
        ({"executionId": "1", "workflow": CANARY}, None),
        ({"executionId": "1", "workflow": [CANARY]}, None),
        ({"executionId": "1", "workflow": {"nodes": CANARY}}, None),
        ({"executionId": "1", "workflow": {**_workflow(), "nodes": [{"name": CANARY}]}}, None),
    ],
)
def test_missing_or_malformed_workflow_is_422(
    client: Client, body: dict[str, Any], field: str | None
) -> None:
    error = assert_error(client.post(SNAPSHOTS, json=body), 422, field=field)
    assert error["field"], error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": [CANARY]}, "status"),
        ({"status": "success", "startedAt": CANARY}, "startedAt"),
        ({"status": "success", "executionId": "other"}, "executionId"),
        ({"status": "success", "nodes": CANARY}, "nodes"),
        ({"status": "success", "data": f"[{CANARY}"}, "data"),
    ],
)
def test_bad_final_state_is_422(client: Client, body: dict[str, Any], field: str) -> None:
    client.post(SNAPSHOTS, json=_capture())
    response = client.post(f"{SNAPSHOTS}/1001/final-state", json=body)
    error = assert_error(response, 422)
    assert error["field"] is not None and error["field"].startswith(field), error


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({"Content-Type": "text/plain"}, 415, "Content-Type"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415, "Content-Type"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, 415, "Content-Encoding"),
    ],
)
def test_wrong_content_type_is_415(
    client: Client, headers: dict[str, str], status: int, field: str
) -> None:
    response = client.post(SNAPSHOTS, content=orjson.dumps(_capture()), headers=headers)
    assert_error(response, status, field=field, code="unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "application/vnd.n8n+json"],
)
def test_json_media_types_are_accepted(client: Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(SNAPSHOTS, content=orjson.dumps(_capture()), headers=headers)
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------------------- paths

BAD_SEGMENTS = [
    "a%2Fb",
    "a%2fb",
    "%2F",
    "..%2F..%2Fetc",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e",
    "%00",
    "a%00b",
    "a%0Ab",
    "a%0d%0a",
    "%7F",
    "a%5Cb",
    "%ff",
    "%c0%ae%c0%ae",
    "a" * 257,
    "a%20b",
    "a%252Fb",
    "%25",
    "a%3Fb",
    "%E2%80%AE",
]


@pytest.fixture
def counted() -> tuple[FastAPI, CountingStore]:
    app, store = make_app(CountingStore())
    return app, store


@pytest.mark.parametrize("segment", BAD_SEGMENTS)
@pytest.mark.parametrize(
    ("method", "template", "field"),
    [
        ("GET", SNAPSHOTS + "/{}", "executionId"),
        ("POST", SNAPSHOTS + "/{}/final-state", "executionId"),
        ("GET", SNAPSHOTS + "/workflow/{}/version", "workflowId"),
        ("GET", SNAPSHOTS + "/workflow/{}/versions", "workflowId"),
    ],
)
def test_unsafe_path_ids_are_422_before_any_storage_call(
    counted: tuple[FastAPI, CountingStore], segment: str, method: str, template: str, field: str
) -> None:
    app, store = counted
    raw = template.format(segment).encode()
    status, headers, body = asgi_raw(app, method, raw, {"content-type": "application/json"})
    assert status == 422, (raw, body)
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)
    assert set(error) == {"error", "message", "field"}
    assert error["field"] == field
    assert segment.lower() not in body.decode().lower() or len(segment) < 4
    assert store.calls == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/execution-snapshots/../execution-snapshots/1001",
        b"/api/execution-snapshots/./1001",
        b"/api/execution-snapshots/1001/../../x",
        b"/api/execution-snapshots//final-state",
        b"/api/execution-snapshots/workflow//versions",
        b"/api/%2e%2e/execution-snapshots/1001",
    ],
)
def test_literal_dot_and_empty_segments_are_422(
    counted: tuple[FastAPI, CountingStore], raw: bytes
) -> None:
    app, store = counted
    status, _, body = asgi_raw(app, "GET", raw)
    assert status == 422, body
    assert store.calls == 0


def test_unsafe_ids_through_httpx(client: Client) -> None:
    for segment in ("a%2Fb", "%2e%2e", "%00"):
        assert_error(client.get(f"{SNAPSHOTS}/{segment}"), 422, field="executionId")


def test_safe_unusual_ids_are_accepted(client: Client) -> None:
    for exec_id in ("a.b", "x:y@z", "A-1_2", "1" * 256, "%41bc"):
        response = client.post(SNAPSHOTS, json=_capture(unquote(exec_id)))
        assert response.status_code == 201, response.text
        assert client.get(f"{SNAPSHOTS}/{exec_id}").status_code == 200


# ---------------------------------------------------------------------------- limits


def test_declared_oversize_body_is_413_before_any_byte_is_read() -> None:
    app, store = make_app(CountingStore(), max_body_bytes=1024)
    pulled: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for i in range(10_000):
            pulled.append(i)
            yield b" " * 1024

    response = Client(app).post(
        SNAPSHOTS,
        content=body(),
        headers={"Content-Type": "application/json", "Content-Length": str(10_000 * 1024)},
    )
    assert_error(response, 413, field="body", code="payload_too_large")
    assert pulled == []
    assert store.calls == 0


def test_streamed_oversize_body_is_413_without_buffering_it() -> None:
    limit = 64 * 1024
    app, store = make_app(CountingStore(), max_body_bytes=limit)
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:  # chunked: no Content-Length
        while True:
            pulled.append(1)
            yield b" " * 1024

    response = Client(app).post(
        SNAPSHOTS, content=endless(), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, field="body")
    assert len(pulled) <= limit // 1024 + 2  # stopped right after the limit
    assert store.calls == 0


def test_body_at_the_limit_is_accepted() -> None:
    body = orjson.dumps(_capture())
    app, _ = make_app(max_body_bytes=len(body))
    assert post_raw(Client(app), SNAPSHOTS, body).status_code == 201
    app, _ = make_app(max_body_bytes=len(body) - 1)
    assert_error(post_raw(Client(app), SNAPSHOTS, body), 413)


def test_the_default_limit_is_64_mib() -> None:
    assert Settings().max_body_bytes == 64 * 1024 * 1024


def test_stalled_body_is_408() -> None:
    app, _ = make_app(body_timeout_seconds=1)

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"executionId": '
        await asyncio.sleep(3)
        yield b'"1"}'

    started = time.monotonic()
    response = Client(app).post(
        SNAPSHOTS, content=stalled(), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 408, code="request_timeout")
    assert time.monotonic() - started < 2.9


def test_body_timeout_ends_with_the_body() -> None:
    """After the body, the only thing left to receive is a disconnect: no timeout on that wait
    (a streaming response listens for it for as long as it streams)."""

    async def slow_streamer(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

        async def listen_for_disconnect() -> None:
            await receive()

        async with anyio.create_task_group() as group:
            group.start_soon(listen_for_disconnect)
            await anyio.sleep(1.0)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})

    guarded = BodyLimitMiddleware(slow_streamer, max_body_bytes=1024, timeout_seconds=0.3)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=guarded)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post("/", content=b"{}")

    response = asyncio.run(go())
    assert response.status_code == 200 and response.content == b"done"


# ---------------------------------------------------------------------------- not found


def test_unknown_ids_are_404(client: Client) -> None:
    assert_error(client.get(f"{SNAPSHOTS}/nope"), 404, code="not_found")
    assert_error(client.post(f"{SNAPSHOTS}/nope/final-state", json=FINAL), 404)
    assert_error(client.get(f"{SNAPSHOTS}/workflow/nope/version"), 404)
    assert_error(client.get(f"{SNAPSHOTS}/workflow/nope/versions"), 404)


def test_unknown_routes_and_methods_use_the_error_shape(client: Client) -> None:
    assert_error(client.get("/nope"), 404, code="not_found")
    assert_error(client.get(f"{SNAPSHOTS}/1001/nope"), 404)
    response = client.request("DELETE", f"{SNAPSHOTS}/1001")
    assert_error(response, 405, code="method_not_allowed")
    assert "GET" in response.headers["allow"]


# ---------------------------------------------------------------------------- idempotency


def test_capture_201_then_200_then_409(client: Client) -> None:
    first = client.post(SNAPSHOTS, json=_capture())
    assert first.status_code == 201
    body = first.json()
    assert set(body) == {
        "id",
        "executionId",
        "workflowId",
        "snapshotVersion",
        "snapshotHash",
        "createdAt",
        "warnings",
        "receivedAt",
    }
    assert body["warnings"] == []
    assert body["executionId"] == "1001" and body["workflowId"] == "wf-1"
    assert body["snapshotVersion"] == "1.0.0" and len(body["snapshotHash"]) == 64
    again = client.post(SNAPSHOTS, json=_capture())
    assert again.status_code == 200
    assert again.json() == body
    changed = _capture()
    changed["workflow"] = _workflow(url="https://example.org")
    assert_error(client.post(SNAPSHOTS, json=changed), 409, code="immutable_conflict")
    assert client.get(f"{SNAPSHOTS}/1001").json()["snapshotHash"] == body["snapshotHash"]


@pytest.mark.parametrize(
    ("odd", "warning"),
    [
        (lambda n: n.update(id="[CENSORED]"), ("duplicate-node-id", "nodes[1].id")),
        (lambda n: n.update(id="REPLACE_WITH_NODE_ID"), ("duplicate-node-id", "nodes[1].id")),
        (lambda n: n.pop("id"), None),
    ],
    ids=["censored-ids", "replace-with-ids", "no-ids"],
)
def test_workflows_n8n_accepts_are_captured_with_warnings(
    client: Client, odd: Any, warning: tuple[str, str] | None
) -> None:
    """Shared placeholder ids, missing ids and an empty name are no reason to refuse a capture:
    the structure is kept as given and what is odd is reported (response and GET alike)."""
    workflow = _workflow()
    for node in workflow["nodes"]:
        odd(node)
    workflow["nodes"].append(
        {"id": "e", "name": "", "type": "n8n-nodes-base.noOp", "parameters": {}}
    )
    workflow["connections"]["HTTP"] = {"main": [[{"node": "", "type": "main", "index": 0}]]}
    response = client.post(SNAPSHOTS, json=_capture(workflow=workflow))
    assert response.status_code == 201, response.text
    expected = [("empty-node-name", "nodes[2].name")] + ([warning] if warning else [])
    warnings = response.json()["warnings"]
    assert [(w["code"], w["field"]) for w in warnings] == expected
    assert all(set(w) == {"code", "field", "message"} and w["message"] for w in warnings)
    got = client.get(f"{SNAPSHOTS}/1001").json()
    assert got["warnings"] == warnings
    assert [n["name"] for n in got["nodesSnapshot"]] == ["Webhook", "HTTP", ""]
    assert [n.get("id") for n in got["nodesSnapshot"]] == [
        *(n.get("id") for n in workflow["nodes"][:2]),
        "e",
    ]
    assert len(got["connectionsSnapshot"]) == 2


def test_the_documented_capture_fields_are_the_parsed_ones() -> None:
    documented = {f.alias or n for n, f in CaptureRequest.model_fields.items()}
    assert documented == set(CAPTURE_FIELDS)


def test_capture_with_explicit_time_is_idempotent(client: Client) -> None:
    sent = _capture(createdAt="2026-05-01T10:00:00Z", userId="u1", triggerType="manual")
    first = client.post(SNAPSHOTS, json=sent)
    assert first.status_code == 201
    assert first.json()["createdAt"] == "2026-05-01T10:00:00.000Z"
    assert client.post(SNAPSHOTS, json=sent).json() == first.json()
    assert_error(client.post(SNAPSHOTS, json={**sent, "createdAt": "2026-05-02T10:00:00Z"}), 409)


def test_final_state_201_then_200_then_409(client: Client) -> None:
    assert_error(client.post(f"{SNAPSHOTS}/1001/final-state", json=FINAL), 404)
    client.post(SNAPSHOTS, json=_capture())
    first = client.post(f"{SNAPSHOTS}/1001/final-state", json=FINAL)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "executionId": "1001",
        "status": "error",
        "startedAt": "2026-05-01T10:00:00.000Z",
        "finishedAt": "2026-05-01T10:00:01.250Z",
        "durationMs": 1250,
        "nodeCount": 2,
        "errorCount": 1,
        "failedNodes": ["HTTP"],
    }
    again = client.post(f"{SNAPSHOTS}/1001/final-state", json=FINAL)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert_error(
        client.post(f"{SNAPSHOTS}/1001/final-state", json={**FINAL, "status": "success"}), 409
    )
    snapshot = client.get(f"{SNAPSHOTS}/1001").json()
    assert snapshot["finalState"]["status"] == "error"


def test_n8n_run_data_is_accepted_as_final_state(client: Client) -> None:
    client.post(SNAPSHOTS, json=_capture())
    run = (REPO / "tests" / "fixtures" / "n8n_runs" / "success_3_nodes.json").read_bytes()
    response = post_raw(client, f"{SNAPSHOTS}/1001/final-state", run)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "success"


def test_waiting_report_then_the_end(client: Client) -> None:
    client.post(SNAPSHOTS, json=_capture())
    waiting = {"status": "waiting", "waitTill": "2026-05-02T10:00:00Z", "nodes": FINAL["nodes"][:1]}
    first = client.post(f"{SNAPSHOTS}/1001/final-state", json=waiting)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "waiting"
    assert client.post(f"{SNAPSHOTS}/1001/final-state", json=waiting).status_code == 200
    assert client.get(f"{SNAPSHOTS}/1001").json()["finalState"]["status"] == "waiting"
    end = client.post(f"{SNAPSHOTS}/1001/final-state", json=FINAL)  # 409 before
    assert end.status_code == 201, end.text
    assert client.get(f"{SNAPSHOTS}/1001").json()["finalState"]["status"] == "error"
    assert_error(
        client.post(f"{SNAPSHOTS}/1001/final-state", json={**FINAL, "status": "success"}), 409
    )
    assert_error(
        client.post(f"{SNAPSHOTS}/1001/final-state", json={**waiting, "status": "running"}), 409
    )


def test_final_state_before_its_snapshot_is_404_saying_capture_first(client: Client) -> None:
    body = assert_error(client.post(f"{SNAPSHOTS}/1001/final-state", json=FINAL), 404)
    assert "capture the snapshot first" in body["message"] and "safe" in body["message"]
    client.post(SNAPSHOTS, json=_capture())
    assert client.post(f"{SNAPSHOTS}/1001/final-state", json=FINAL).status_code == 201


def test_n8n_rest_response_with_flatted_data_keeps_its_status(client: Client) -> None:
    from tests.test_final_state import load, rest_response

    client.post(SNAPSHOTS, json=_capture())
    response = client.post(
        f"{SNAPSHOTS}/1001/final-state", json=rest_response(load("success_3_nodes"))
    )
    assert response.status_code == 201, response.text
    assert (response.json()["status"], response.json()["nodeCount"]) == ("crashed", 3)


def test_misspelt_final_state_field_is_422(client: Client) -> None:
    client.post(SNAPSHOTS, json=_capture())
    body = {key: value for key, value in FINAL.items() if key != "finishedAt"}
    body["finishedAT"] = FINAL["finishedAt"]
    assert_error(client.post(f"{SNAPSHOTS}/1001/final-state", json=body), 422, field="finishedAT")
    assert client.get(f"{SNAPSHOTS}/1001").json()["finalState"] is None  # nothing stored


def test_responses_are_camel_case(client: Client) -> None:
    client.post(SNAPSHOTS, json=_capture(variables={"region": "eu"}))
    client.post(f"{SNAPSHOTS}/1001/final-state", json=FINAL)
    snapshot = client.get(f"{SNAPSHOTS}/1001").json()
    for key in ("executionId", "workflowSnapshot", "nodesSnapshot", "finalState", "versionSeq"):
        assert key in snapshot
    assert not [k for k in snapshot if "_" in k]
    versions = client.get(f"{SNAPSHOTS}/workflow/wf-1/versions").json()
    assert versions["workflowId"] == "wf-1"
    assert [v["version"] for v in versions["versions"]] == ["1.0.0"]
    head = client.get(f"{SNAPSHOTS}/workflow/wf-1/version").json()
    assert head["version"] == "1.0.0" and head["snapshotHash"] == snapshot["snapshotHash"]


def test_versions_come_newest_first(client: Client) -> None:
    client.post(SNAPSHOTS, json=_capture("1"))
    changed = _capture("2")
    changed["workflow"] = _workflow(url="https://example.org")
    assert client.post(SNAPSHOTS, json=changed).json()["snapshotVersion"] == "1.0.1"
    versions = client.get(f"{SNAPSHOTS}/workflow/wf-1/versions").json()["versions"]
    assert [v["version"] for v in versions] == ["1.0.1", "1.0.0"]
    assert client.get(f"{SNAPSHOTS}/workflow/wf-1/version").json()["version"] == "1.0.1"


# ---------------------------------------------------------------------------- server faults


def test_store_down_is_503_with_retry_after() -> None:
    app, _ = make_app(DownStore())
    client = Client(app)
    for response in (
        client.post(SNAPSHOTS, json=_capture()),
        client.get(f"{SNAPSHOTS}/1001"),
        client.get(f"{SNAPSHOTS}/workflow/wf-1/versions"),
    ):
        body = assert_error(response, 503, code="store_unavailable")
        assert int(response.headers["retry-after"]) > 0
        assert "10.0.0.7" not in body["message"]


class ExplodingArchive(Archive):
    def get_snapshot(self, execution_id: object) -> Any:
        raise RuntimeError(f"{CANARY} secret detail at /srv/execvault/data")

    def version_history(self, workflow_id: object) -> Any:
        raise IntegrityError(f"{CANARY} blob hash mismatch")


def test_unexpected_errors_are_500_without_details() -> None:
    archive = ExplodingArchive(MemoryStore(), Sanitizer(HMAC_KEY))
    app = create_app(Settings(), archive=archive)
    client = Client(app, raise_app_exceptions=False)
    body = assert_error(client.get(f"{SNAPSHOTS}/1001"), 500, code="internal_error")
    assert body["message"] == "internal error"
    body = assert_error(
        client.get(f"{SNAPSHOTS}/workflow/wf-1/versions"), 500, code="integrity_error"
    )
    assert "secret" not in body["message"]


# ---------------------------------------------------------------------------- OpenAPI


def test_openapi_documents_every_route_with_scopes_and_errors(app: FastAPI) -> None:
    document = Client(app).get("/openapi.json").json()
    paths = document["paths"]
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert routes
    for route in routes:
        assert route.path in paths, route.path
        for method in route.methods or ():
            operation = paths[route.path][method.lower()]
            assert operation.get("summary"), route.path
            if route.path == "/healthz":
                continue
            scope = operation["x-required-scope"]
            assert f"`{scope}`" in operation["description"]
            assert {"401", "403", "422", "503"} <= set(operation["responses"]), route.path
            assert operation["security"] == [{"bearerToken": []}]
            for status in ("401", "403", "422"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}
            if method == "POST":
                assert "requestBody" in operation
                assert {"200", "201", "409", "413", "415"} <= set(operation["responses"])
    scopes = {
        (method, path): op.get("x-required-scope")
        for path, item in paths.items()
        for method, op in item.items()
    }
    assert scopes == {
        ("get", "/healthz"): None,
        ("post", SNAPSHOTS): "ingest",
        ("post", SNAPSHOTS + "/{executionId}/final-state"): "ingest",
        ("get", SNAPSHOTS + "/{executionId}"): "read",
        ("get", SNAPSHOTS + "/workflow/{workflowId}/version"): "read",
        ("get", SNAPSHOTS + "/workflow/{workflowId}/versions"): "read",
        ("get", SNAPSHOTS + "/workflow/{workflowId}/history"): "read",
        ("get", SNAPSHOTS + "/by-hash/{snapshotHash}"): "read",
        ("get", SNAPSHOTS + "/{executionId}/compare/{otherExecutionId}"): "read",
        ("get", SNAPSHOTS + "/workflow/{workflowId}/versions/{v1}/compare/{v2}"): "read",
        ("get", SNAPSHOTS + "/{executionId}/replay-validation"): "read",
        ("get", SNAPSHOTS + "/{executionId}/replay-context"): "read",
        ("get", SNAPSHOTS + "/{executionId}/compare-to-original"): "read",
        ("get", SNAPSHOTS + "/workflow/{workflowId}/timeline"): "read",
        ("post", SNAPSHOTS + "/{executionId}/tags"): "ingest",
        ("get", SNAPSHOTS + "/{executionId}/tags"): "read",
        ("delete", SNAPSHOTS + "/{executionId}/tags/{tag}"): "ingest",
        ("get", SNAPSHOTS + "/workflow/{workflowId}/tags"): "read",
        ("get", SNAPSHOTS + "/workflow/{workflowId}/tags/{tag}"): "read",
        ("post", SNAPSHOTS + "/{executionId}/annotations"): "ingest",
        ("get", SNAPSHOTS + "/{executionId}/annotations"): "read",
        ("delete", SNAPSHOTS + "/{executionId}/annotations/{annotationId}"): "ingest",
        ("post", "/api/query"): "query",
        ("post", "/api/retention/archive"): "retention",
        ("get", "/api/retention/plan"): "retention",
        ("post", SNAPSHOTS + "/{executionId}/restore"): "retention",
        ("post", "/api/retention/expire"): "retention",
        ("get", "/api/retention/holds"): "retention",
        ("post", "/api/retention/holds"): "retention",
        ("delete", "/api/retention/holds/{scope}/{target}"): "retention",
        ("get", "/api/compliance/export"): "compliance",
    }
    capture_schema = paths[SNAPSHOTS]["post"]["requestBody"]["content"]["application/json"]
    assert {"executionId", "workflow"} <= set(capture_schema["schema"]["properties"])
    assert document["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"


def test_docs_page_renders(client: Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text


def test_docs_api_md_names_every_route_and_error_code(app: FastAPI) -> None:
    text = (REPO / "docs" / "api.md").read_text()
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            assert f"`{method.upper()} {path}`" in text, (method, path)
            scope = operation.get("x-required-scope")
            if scope:
                assert f"| `{method.upper()} {path}` | `{scope}` |" in text, (method, path)
    for _, status, code, _ in STATUS_BY_ERROR:
        assert f"`{code}`" in text, code
        assert f"| {status} |" in text, status


# ---------------------------------------------------------------------------- fuzz

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
ids = st.one_of(st.text(max_size=300), st.integers(), json_values)
capture_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"executionId": ids, "workflow": json_values},
        optional={
            "workflowId": ids,
            "variables": json_values,
            "triggerType": json_values,
            "triggerData": json_values,
            "userId": ids,
            "createdAt": json_values,
            "replayOf": ids,
        },
    ),
    st.fixed_dictionaries(
        {
            "executionId": st.text(min_size=1, max_size=8),
            "workflow": st.fixed_dictionaries(
                {
                    "nodes": st.lists(
                        st.fixed_dictionaries(
                            {"name": st.text(max_size=5), "type": st.text(max_size=30)},
                            optional={"parameters": json_values, "position": json_values},
                        ),
                        max_size=4,
                    ),
                    "connections": json_values,
                },
                optional={"id": ids, "settings": json_values},
            ),
        }
    ),
)


@cache
def _fuzz_app() -> FastAPI:
    app, _ = make_app()
    Client(app).post(SNAPSHOTS, json=_capture("fuzz-1"))
    return app


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=capture_bodies)
def test_fuzz_capture_bodies_never_5xx(body: Any) -> None:
    client = Client(_fuzz_app(), raise_app_exceptions=False)
    response = client.post(
        SNAPSHOTS, content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "message", "field"}


@settings(max_examples=100, deadline=None)
@given(body=json_values)
def test_fuzz_final_state_bodies_never_5xx(body: Any) -> None:
    client = Client(_fuzz_app(), raise_app_exceptions=False)
    response = client.post(f"{SNAPSHOTS}/fuzz-1/final-state", content=json.dumps(body))
    assert response.status_code < 500, response.text


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200))
def test_fuzz_raw_bytes_never_5xx(body: bytes) -> None:
    client = Client(_fuzz_app(), raise_app_exceptions=False)
    response = post_raw(client, SNAPSHOTS, body)
    assert response.status_code < 500, response.text


@settings(max_examples=200, deadline=None)
@given(
    segment=st.text(min_size=1, max_size=300),
    template=st.sampled_from(
        [
            SNAPSHOTS + "/{}",
            SNAPSHOTS + "/{}/final-state",
            SNAPSHOTS + "/workflow/{}/version",
            SNAPSHOTS + "/workflow/{}/versions",
            SNAPSHOTS + "/{}/{}",
        ]
    ),
)
def test_fuzz_path_ids_never_5xx(segment: str, template: str) -> None:
    app = _fuzz_app()
    raw = template.replace("{}", quote(segment, safe="")).encode()
    method = "POST" if raw.endswith(b"final-state") else "GET"
    status, _, body = asgi_raw(app, method, raw, {"content-type": "application/json"})
    assert status < 500, body
    assert status in (200, 404, 405, 422), (status, body)
    # Raw, unencoded text where it survives as a URL (what a sloppy client might send).
    printable = "".join(c for c in segment if 0x20 < ord(c) < 0x7F and c not in "?#")
    if printable:
        status, _, body = asgi_raw(app, method, template.replace("{}", printable).encode())
        assert status < 500, body


# ---------------------------------------------------------------------------- real server


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """uvicorn in a thread, on a free loopback port, over a local store in tmp_path."""
    archive = Archive(LocalStore(tmp_path / "data"), Sanitizer(HMAC_KEY))
    app = create_app(
        Settings(tokens=TOKENS_SETTING, max_body_bytes=2 * 1024 * 1024), archive=archive
    )
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", server_header=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _raw_http(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(request)
        chunks = []
        while True:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_end_to_end_over_real_http(live_server: str) -> None:
    ingest = {"Authorization": f"Bearer {TOKENS['ingest']}"}
    read = {"Authorization": f"Bearer {TOKENS['read']}"}
    with httpx.Client(base_url=live_server, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        captured = {}
        for i, path in enumerate(WORKFLOWS[:15]):
            document = load_corpus(path)
            execution_id = f"e2e-{i}"
            body = {"executionId": execution_id, "workflowId": f"wf-{i}", "workflow": document}
            response = http.post(SNAPSHOTS, json=body, headers=ingest)
            assert response.status_code == 201, (path.name, response.text)
            captured[execution_id] = response.json()
            assert http.post(SNAPSHOTS, json=body, headers=ingest).status_code == 200
            final = {"status": "success", "finishedAt": "2026-05-01T10:00:00Z"}
            response = http.post(
                f"{SNAPSHOTS}/{execution_id}/final-state", json=final, headers=ingest
            )
            assert response.status_code == 201, response.text
        for execution_id, summary in captured.items():
            response = http.get(f"{SNAPSHOTS}/{execution_id}", headers=read)
            assert response.status_code == 200
            snapshot = response.json()
            for key, value in summary.items():
                assert snapshot[key] == value
            structure = {
                "nodes": snapshot["nodesSnapshot"],
                "connections": snapshot["connectionsSnapshot"],
                "settings": snapshot["settingsSnapshot"],
            }
            assert _jcs_sha256(structure) == summary["snapshotHash"]
            assert snapshot["finalState"]["status"] == "success"
        assert http.get(f"{SNAPSHOTS}/e2e-0").status_code == 401
        assert http.get(f"{SNAPSHOTS}/e2e-0", headers=ingest).status_code == 403
        assert http.get(f"{SNAPSHOTS}/a%2Fb", headers=read).status_code == 422


def _jcs_sha256(value: Any) -> str:
    import rfc8785

    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


def test_real_server_error_paths(live_server: str) -> None:
    token = f"Authorization: Bearer {TOKENS['admin']}\r\n".encode()
    for path in (
        b"/api/execution-snapshots/../x/1",
        b"/api/execution-snapshots/%2e%2e/final-state",
    ):
        reply = _raw_http(
            live_server,
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + token + b"Connection: close\r\n\r\n",
        )
        assert reply.startswith(b"HTTP/1.1 422"), reply[:200]
    # Garbage and broken framing are refused by uvicorn itself: 400, no trace.
    for request in (
        b"garbage\r\n\r\n",
        b"GET /api/execution-snapshots/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/execution-snapshots HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ):
        reply = _raw_http(live_server, request)
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
        assert b"Traceback" not in reply
    # Oversize, declared: refused before the body is sent (no 100-continue).
    reply = _raw_http(
        live_server,
        b"POST /api/execution-snapshots HTTP/1.1\r\nHost: x\r\n"
        + token
        + b"Content-Type: application/json\r\nContent-Length: 999999999\r\n"
        + b"Expect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"100 Continue" not in reply
    # Oversize, chunked.
    with httpx.Client(base_url=live_server, timeout=30) as http:

        def chunks() -> Iterator[bytes]:
            for _ in range(3 * 1024):
                yield b" " * 1024

        response = http.post(
            SNAPSHOTS,
            content=chunks(),
            headers={
                "Authorization": f"Bearer {TOKENS['admin']}",
                "Content-Type": "application/json",
            },
        )
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
    assert (
        b"server: uvicorn"
        not in _raw_http(
            live_server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ).lower()
    )


def test_execvault_serve_subprocess(tmp_path: Path) -> None:
    """The CLI's serve, configured by environment, with a token: capture and read back."""
    token = "evt_subprocess-admin"
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "EXECVAULT_STORE": f"local:{tmp_path / 'data'}",
        "EXECVAULT_HMAC_KEY": HMAC_KEY.hex(),
        "EXECVAULT_TOKENS": f"{token_digest(token)}:admin",
    }
    env.pop("EXECVAULT_CONFIG", None)
    env.pop("EXECVAULT_TOKENS_FILE", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from api.cli import main; main()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=base, timeout=10) as http:
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "execvault serve did not start"
                time.sleep(0.1)
            headers = {"Authorization": f"Bearer {token}"}
            assert http.post(SNAPSHOTS, json=_capture()).status_code == 401
            response = http.post(SNAPSHOTS, json=_capture(), headers=headers)
            assert response.status_code == 201, response.text
            assert http.get(f"{SNAPSHOTS}/1001", headers=headers).json()["executionId"] == "1001"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
