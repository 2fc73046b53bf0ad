"""A Python client for the execvault service (``docs/client.md``), for engines written in Python.

Three ways to send, one set of methods:

- :class:`ExecVaultClient` — synchronous HTTP (``httpx.Client``);
- :class:`AsyncExecVaultClient` — the same over ``httpx.AsyncClient``;
- :class:`SpoolingClient` / :class:`AsyncSpoolingClient` — ``capture`` and ``final_state`` append
  to a local durable spool (``docs/spool.md``) and return at once; a relay delivers it (in a
  background thread / task of this process with ``deliver=True``, or ``execvault relay``).

Errors are the archive's own (``archiver.errors``): the service's JSON error body
(``{"error", "message", "field"}``, ``api/errors.py``) is mapped back to the class that raised
it — ``not_found`` → :class:`NotFound`, ``immutable_conflict`` → :class:`ImmutableConflict`,
``invalid_input`` → :class:`InvalidInput` with its ``field`` … An HTTP-layer error with no
archive counterpart (401, 403, 408, 413, 415) is a :class:`ServiceError`; a service that cannot be
reached is :class:`ServiceUnreachable` (a :class:`StoreUnavailable`: retry later).

Light on purpose: httpx, orjson and ``archiver.errors`` only (no FastAPI, DuckDB or archive code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

import httpx
import orjson

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
    "AsyncExecVaultClient",
    "AsyncSpoolingClient",
    "CaptureReceipt",
    "ExecVaultClient",
    "FinalStateReceipt",
    "HistoryPage",
    "ServiceError",
    "ServiceUnreachable",
    "SpoolingClient",
    "error_from_response",
]

log = logging.getLogger("execvault.client")
SNAPSHOTS = "/api/execution-snapshots"
# the in-process relay's concurrent requests (api.relay.DEFAULT_LANES; not imported: the client
# stays light): its lanes mostly wait on the network, so 4 cost the engine little CPU
DELIVERY_LANES = 4


class ServiceError(ArchiveError):
    """An HTTP-layer error without an archive counterpart (401, 403, 408, 413, 415, or an answer
    that is not the service's); ``status``, ``code`` and ``field`` as the service sent them."""

    def __init__(self, message: str, *, status: int, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


class ServiceUnreachable(StoreUnavailable):
    """The service did not answer (connection refused, timeout): retry later."""


class CaptureReceipt(TypedDict):
    """The service's answer to a capture; ``created`` is False for an identical re-send."""

    id: str
    executionId: str
    workflowId: str
    snapshotVersion: str
    snapshotHash: str
    createdAt: str
    warnings: list[dict[str, Any]]
    receivedAt: str | None
    created: bool


class FinalStateReceipt(TypedDict):
    """The summary of a recorded final state; ``created`` is False for an identical re-send."""

    executionId: str
    status: str | None
    startedAt: str | None
    finishedAt: str | None
    durationMs: int | None
    nodeCount: int
    errorCount: int
    failedNodes: list[str]
    created: bool


class HistoryPage(TypedDict):
    """One page of a workflow's executions, newest first; ``nextCursor`` continues it."""

    workflowId: str
    items: list[dict[str, Any]]
    nextCursor: str | None


# ---------------------------------------------------------------------------- shared pieces


def _text_time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise InvalidInput("createdAt must be timezone-aware", field="createdAt")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def capture_body(
    workflow: Mapping[str, Any],
    execution_id: str,
    *,
    workflow_id: str | None = None,
    variables: Mapping[str, Any] | None = None,
    trigger_type: str | None = None,
    trigger_data: Any = None,
    user_id: str | None = None,
    created_at: datetime | str | None = None,
    replay_of: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The capture request (``docs/api.md``) for these arguments; ``extra`` adds fields as they
    are (for fields newer than this client)."""
    body: dict[str, Any] = {"executionId": execution_id, "workflow": workflow}
    optional = {
        "workflowId": workflow_id,
        "variables": variables,
        "triggerType": trigger_type,
        "triggerData": trigger_data,
        "userId": user_id,
        "createdAt": _text_time(created_at),
        "replayOf": replay_of,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    body.update(extra or {})
    return body


def _history_params(
    since: datetime | str | None,
    until: datetime | str | None,
    status: Sequence[str],
    trigger_type: Sequence[str],
    version: str | None,
    limit: int,
    cursor: str | None,
) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = [("limit", str(limit))]
    for name, value in (("since", since), ("until", until)):
        text = _text_time(value)
        if text is not None:
            params.append((name, text))
    params += [("status", s) for s in status]
    params += [("triggerType", t) for t in trigger_type]
    if version is not None:
        params.append(("version", version))
    if cursor is not None:
        params.append(("cursor", cursor))
    return params


def _final_path(execution_id: str) -> str:
    return f"{SNAPSHOTS}/{quote(execution_id, safe='')}/final-state"


def error_from_response(status: int, body: Any) -> ArchiveError:
    """The archive error a service answer stands for (the inverse of ``api/errors.py``)."""
    answer = body if isinstance(body, dict) else {}
    code = str(answer.get("error") or f"http_{status}")
    message = str(answer.get("message") or f"HTTP {status}")
    field = answer.get("field") if isinstance(answer.get("field"), str) else None
    simple: dict[str, type[ArchiveError]] = {
        "not_found": NotFound,
        "too_many_queries": QueryBusy,
        "overloaded": Overloaded,
        "store_unavailable": StoreUnavailable,
        "storage_full": StorageFull,
        "integrity_error": IntegrityError,
        "manifest_error": ManifestError,
        "retention_locked": RetentionLocked,
        "unsanitizable_input": SanitizationError,
    }
    with_field: dict[str, type[InvalidInput]] = {
        "invalid_input": InvalidInput,
        "query_refused": QueryRefused,
        "query_failed": QueryFailed,
    }
    if code in simple and status >= 400:
        return simple[code](message)
    if code in with_field:
        return with_field[code](message, field=field)
    if code == "immutable_conflict":
        return ImmutableConflict(message)
    if code == "archived":
        execution_id = answer.get("executionId")
        return ObjectArchived(
            message, execution_id=execution_id if isinstance(execution_id, str) else None
        )
    if code == "query_limit_exceeded":
        return QueryLimitExceeded(message, limit=str(answer.get("limit") or "time"))
    if code == "busy":
        return RunBusy(message)
    if code == "cold_copy_damaged":
        return ColdCopyDamaged(
            message,
            execution_id=str(answer.get("executionId", "")),
            key=str(answer.get("key", "")),
            problem=str(answer.get("problem", "")),
            location=str(answer.get("location", "")),
        )
    if status == 404:
        return NotFound(message)
    return ServiceError(message, status=status, code=code, field=field)


def _result(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_response(response.status_code, body)


def _headers(token: str | None) -> dict[str, str]:
    headers = {"user-agent": "execvault-client/1"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


def _json_request(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"content": orjson.dumps(body), "headers": {"content-type": "application/json"}}


def _unreachable(url: str, err: httpx.TransportError) -> ServiceUnreachable:
    return ServiceUnreachable(
        f"the execvault service at {url} did not answer: {type(err).__name__}"
    )


# ---------------------------------------------------------------------------- sync


class ExecVaultClient:
    """Synchronous client. ``token`` is a bearer token (``execvault token new``); without one
    only a service with no tokens configured (loopback) answers.

    >>> with ExecVaultClient("http://127.0.0.1:8080") as client:  # doctest: +SKIP
    ...     client.capture(workflow, "1001", trigger_type="manual")
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise _unreachable(self.url, err) from err
        return _result(response), response.status_code

    def capture_request(self, body: Mapping[str, Any]) -> CaptureReceipt:
        """Send a capture request as it is (``docs/api.md``)."""
        answer, status = self._call("POST", SNAPSHOTS, **_json_request(body))
        return {**answer, "created": status == 201}  # type: ignore[typeddict-item]

    def capture(
        self,
        workflow: Mapping[str, Any],
        execution_id: str,
        **fields: Any,
    ) -> CaptureReceipt:
        """Capture the pre-execution snapshot of ``execution_id``. Keywords: ``workflow_id``,
        ``variables``, ``trigger_type``, ``trigger_data``, ``user_id``, ``created_at``,
        ``replay_of``, ``extra`` (see :func:`capture_body`)."""
        return self.capture_request(capture_body(workflow, execution_id, **fields))

    def final_state(self, execution_id: str, body: Mapping[str, Any]) -> FinalStateReceipt:
        """Record how ``execution_id`` ended (n8n run data or the plain format)."""
        answer, status = self._call("POST", _final_path(execution_id), **_json_request(body))
        return {**answer, "created": status == 201}  # type: ignore[typeddict-item]

    def get(self, execution_id: str) -> dict[str, Any]:
        """The snapshot of ``execution_id`` with its ``finalState`` (None if not recorded)."""
        answer, _ = self._call("GET", f"{SNAPSHOTS}/{quote(execution_id, safe='')}")
        return dict(answer)

    def history(
        self,
        workflow_id: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        status: Sequence[str] = (),
        trigger_type: Sequence[str] = (),
        version: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> HistoryPage:
        """One page of ``workflow_id``'s executions, newest first (fresh within ~1.5 s)."""
        params = _history_params(since, until, status, trigger_type, version, limit, cursor)
        path = f"{SNAPSHOTS}/workflow/{quote(workflow_id, safe='')}/history"
        answer, _ = self._call("GET", path, params=params)
        return answer  # type: ignore[no-any-return]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExecVaultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- async


class AsyncExecVaultClient:
    """The same methods as :class:`ExecVaultClient`, as coroutines over ``httpx.AsyncClient``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise _unreachable(self.url, err) from err
        return _result(response), response.status_code

    async def capture_request(self, body: Mapping[str, Any]) -> CaptureReceipt:
        answer, status = await self._call("POST", SNAPSHOTS, **_json_request(body))
        return {**answer, "created": status == 201}  # type: ignore[typeddict-item]

    async def capture(
        self, workflow: Mapping[str, Any], execution_id: str, **fields: Any
    ) -> CaptureReceipt:
        return await self.capture_request(capture_body(workflow, execution_id, **fields))

    async def final_state(self, execution_id: str, body: Mapping[str, Any]) -> FinalStateReceipt:
        answer, status = await self._call("POST", _final_path(execution_id), **_json_request(body))
        return {**answer, "created": status == 201}  # type: ignore[typeddict-item]

    async def get(self, execution_id: str) -> dict[str, Any]:
        answer, _ = await self._call("GET", f"{SNAPSHOTS}/{quote(execution_id, safe='')}")
        return dict(answer)

    async def history(
        self,
        workflow_id: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        status: Sequence[str] = (),
        trigger_type: Sequence[str] = (),
        version: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> HistoryPage:
        params = _history_params(since, until, status, trigger_type, version, limit, cursor)
        path = f"{SNAPSHOTS}/workflow/{quote(workflow_id, safe='')}/history"
        answer, _ = await self._call("GET", path, params=params)
        return answer  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncExecVaultClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------- spooling


class _SpoolingBase:
    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        *,
        url: str | None,
        token: str | None,
        deliver: bool,
        defer_seconds: float,
        lanes: int,
        **writer_options: Any,
    ) -> None:
        from api.spool import SpoolWriter

        if deliver and not url:
            raise InvalidInput("deliver=True needs the service's url", field="url")
        self.spool_dir = Path(spool_dir)
        self.url, self.token, self.deliver = url, token, deliver
        self.defer_seconds = defer_seconds
        self.lanes = lanes
        self.writer = SpoolWriter(self.spool_dir, **writer_options)
        self._stop = threading.Event()
        self._relay: Any = None

    def capture(self, workflow: Mapping[str, Any], execution_id: str, **fields: Any) -> bool:
        """Append a capture to the spool; False if it was dropped (spool full). ``createdAt``
        defaults to now, so a late delivery keeps the real capture time."""
        body = capture_body(workflow, execution_id, **fields)
        body.setdefault("createdAt", _text_time(datetime.now(UTC)))
        return self.writer.append("snapshot", execution_id, body)

    def final_state(self, execution_id: str, body: Mapping[str, Any]) -> bool:
        """Append a final state to the spool; False if it was dropped (spool full)."""
        return self.writer.append("final-state", execution_id, body)

    def backlog(self) -> dict[str, Any]:
        """The spool's backlog (``execvault relay status``'s figures)."""
        from api.relay import spool_status

        backlog: dict[str, Any] = spool_status(self.spool_dir)["backlog"]
        return backlog

    def _deliver_loop(self) -> None:
        """The relay, in this process, until closed; waits while another relay holds the lock."""
        from api.relay import Relay, RelayBusy

        assert self.url is not None
        with Relay(
            self.spool_dir,
            self.url,
            token=self.token,
            defer_seconds=self.defer_seconds,
            lanes=self.lanes,
        ) as relay:
            self._relay = relay
            if self._stop.is_set():
                return
            while not self._stop.is_set():
                try:
                    relay.run()
                except RelayBusy:
                    self._stop.wait(2.0)  # another relay delivers this spool: stand by
                except Exception:
                    log.exception("execvault relay thread failed; restarting in 5 s")
                    self._stop.wait(5.0)

    def _stop_delivery(self) -> None:
        self._stop.set()
        relay = self._relay
        if relay is not None:
            relay.stop()


class SpoolingClient(_SpoolingBase):
    """``capture`` / ``final_state`` append to the spool at ``spool_dir`` (durable once they
    return True); with ``deliver=True`` a background thread relays the spool to ``url``
    (``lanes`` requests at once; an execution's records keep their order).
    ``get`` and ``history`` ask the service directly. Writer options (``segment_bytes``,
    ``segment_seconds``, ``fsync_interval_ms``, ``max_bytes``) pass through to the spool.
    """

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        *,
        url: str | None = None,
        token: str | None = None,
        deliver: bool = True,
        defer_seconds: float = 3600.0,
        lanes: int = DELIVERY_LANES,
        **writer_options: Any,
    ) -> None:
        super().__init__(
            spool_dir,
            url=url,
            token=token,
            deliver=deliver,
            defer_seconds=defer_seconds,
            lanes=lanes,
            **writer_options,
        )
        self._client = ExecVaultClient(url, token) if url else None
        self._thread: threading.Thread | None = None
        if deliver:
            self._thread = threading.Thread(
                target=self._deliver_loop, name="execvault-relay", daemon=True
            )
            self._thread.start()

    def _http(self) -> ExecVaultClient:
        if self._client is None:
            raise InvalidInput("reading needs the service's url", field="url")
        return self._client

    def get(self, execution_id: str) -> dict[str, Any]:
        return self._http().get(execution_id)

    def history(self, workflow_id: str, **options: Any) -> HistoryPage:
        return self._http().history(workflow_id, **options)

    def close(self) -> None:
        """Close the writer (its segment is synced and closed), then stop delivery (the requests
        in flight are finished; the rest waits in the spool for the next relay)."""
        self.writer.close()
        self._stop_delivery()
        if self._thread is not None:
            self._thread.join()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> SpoolingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSpoolingClient(_SpoolingBase):
    """The asyncio twin of :class:`SpoolingClient`: ``capture`` / ``final_state`` are plain
    (non-blocking: one buffered ``write``) calls; delivery is a task (the relay's blocking loop
    runs in a worker thread through ``asyncio.to_thread``); ``get`` / ``history`` are
    coroutines. Use ``async with`` (or ``await start()`` … ``await aclose()``)."""

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        *,
        url: str | None = None,
        token: str | None = None,
        deliver: bool = True,
        defer_seconds: float = 3600.0,
        lanes: int = DELIVERY_LANES,
        **writer_options: Any,
    ) -> None:
        super().__init__(
            spool_dir,
            url=url,
            token=token,
            deliver=deliver,
            defer_seconds=defer_seconds,
            lanes=lanes,
            **writer_options,
        )
        self._client = AsyncExecVaultClient(url, token) if url else None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.deliver and self._task is None:
            self._task = asyncio.create_task(asyncio.to_thread(self._deliver_loop))

    def _http(self) -> AsyncExecVaultClient:
        if self._client is None:
            raise InvalidInput("reading needs the service's url", field="url")
        return self._client

    async def get(self, execution_id: str) -> dict[str, Any]:
        return await self._http().get(execution_id)

    async def history(self, workflow_id: str, **options: Any) -> HistoryPage:
        return await self._http().history(workflow_id, **options)

    async def aclose(self) -> None:
        self.writer.close()
        self._stop_delivery()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncSpoolingClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
