"""The relay: delivers a spool (``docs/spool.md``) to the service, until every record is answered.

One relay per spool (``relay.lock``, an exclusive ``flock``). Segments in name order; a
segment is read in windows of up to ``8 × lanes`` records, each record goes to a lane chosen by
its execution id (a stable hash), the lanes deliver concurrently (each its records in file order,
so an execution's records keep their order), and the next window starts once this one is
answered. The handled offset of each segment — the end of the longest handled prefix, never past
a record still in flight — goes to ``acks/<segment>.ack`` (temporary file + rename) together with
its deferred records, so a restarted relay resumes where it was: at-least-once delivery whose
re-sends the service answers 200 (exactly-once effect).

Answers: 2xx delivered; 408, 429, 5xx, connection errors — and 401/403 or a 4xx that is not the
service's JSON error body (a wrong token or URL: the records are fine, the configuration is not)
— retried forever with exponential backoff and jitter (``tenacity``); 404 on a final state
deferred (its snapshot is not there yet) for ``defer_seconds``; other 4xx rejected into
``rejected/<segment>.jsonl`` with the status and the answer.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx
import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from api.spool import (
    ALARM_EVERY_SECONDS,
    Line,
    Segment,
    atomic_write,
    list_segments,
    read_lines,
    read_writer,
    writer_is_dead,
)
from archiver.errors import InvalidInput, RunBusy

__all__ = [
    "DEFAULT_DEFER_SECONDS",
    "DEFAULT_LANES",
    "Relay",
    "RelayBusy",
    "RelayCounts",
    "describe_status",
    "full_status",
    "relay_running",
    "spool_status",
]

log = logging.getLogger("execvault.relay")

DEFAULT_DEFER_SECONDS: Final = 3600.0
DEFAULT_LANES: Final = 4
WINDOW_PER_LANE: Final = 8  # records read ahead per lane: a window is up to 8 × lanes records
BACKOFF_INITIAL: Final = 0.5
BACKOFF_MAX: Final = 60.0
_ACK_EVERY_SECONDS: Final = 0.5
_ORPHAN_QUIET_SECONDS: Final = 300.0
SNAPSHOTS: Final = "/api/execution-snapshots"


class RelayBusy(RunBusy):
    """Another relay holds the spool's ``relay.lock``."""


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_at(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class RelayCounts:
    """What the relay did (cumulative over its runs on one spool, kept in ``relay.json``)."""

    delivered: int = 0
    retried: int = 0
    rejected: int = 0
    deferred: int = 0
    torn: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "retried": self.retried,
            "rejected": self.rejected,
            "deferred": self.deferred,
            "torn": self.torn,
        }


@dataclass
class _Deferred:
    offset: int
    execution_id: str
    since: float  # wall clock, when first deferred
    tries: int = 0
    next_try: float = 0.0  # monotonic

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "executionId": self.execution_id,
            "since": self.since,
            "tries": self.tries,
        }


@dataclass
class _SegState:
    offset: int = 0
    deferred: list[_Deferred] = field(default_factory=list)
    rejected_offsets: set[int] = field(default_factory=set)
    saved: tuple[int, int] = (-1, -1)  # (offset, deferred count) last written


class _Retry(Exception):
    """A delivery attempt to repeat later (service down, busy, full, misconfigured)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: str  # delivered | deferred | rejected
    status: int
    answer: Any = None


class Relay:
    """Deliver the spool at ``spool_dir`` to the service at ``url``.

    ``run()`` takes the lock and loops until :meth:`stop` (or, with ``once``, until nothing is
    left to send now); the requests in flight are finished and acknowledged first. ``lanes``
    requests at most are in flight at once (``1``: one record at a time, in file order).
    """

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        url: str,
        *,
        token: str | None = None,
        defer_seconds: float = DEFAULT_DEFER_SECONDS,
        poll_seconds: float = 0.2,
        status_seconds: float = 2.0,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        lanes: int = DEFAULT_LANES,
    ) -> None:
        if lanes < 1:
            raise InvalidInput("lanes must be 1 or more", field="lanes")
        self.root = Path(spool_dir)
        self.lanes = lanes
        self.max_window = WINDOW_PER_LANE * lanes
        self.url = url.rstrip("/")
        self.defer_seconds = defer_seconds
        self.poll_seconds = poll_seconds
        self.status_seconds = status_seconds
        headers = {"content-type": "application/json", "user-agent": "execvault-relay/1"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max(10, lanes), max_keepalive_connections=lanes),
        )
        # states, counts, deferred and rejected records are shared by the lanes: one lock
        self._mu = threading.RLock()
        self._status_mu = threading.Lock()
        self._window = 1  # slow start: one record first, and again after trouble
        self._last_save = 0.0  # monotonic, the segment's acknowledgement
        self._stop = threading.Event()
        self._states: dict[str, _SegState] = {}
        self._dead_cache: dict[str, tuple[float, bool]] = {}
        self._count_cache: dict[str, tuple[int, int, int]] = {}
        self.counts = RelayCounts()
        self.last_error: str | None = None
        self._retrying = False
        self._lock_fd: int | None = None
        self._last_status = 0.0
        self._last_logged: tuple[int, int, int, int] | None = None
        self._alarmed: dict[str, float] = {}
        self._arrived: set[str] = set()  # snapshots delivered since deferred records were tried
        # the spool holds records before the service sanitizes them: owner-only, like n8n's own
        # database (the relay runs as the same user)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("segments", "writers", "acks", "rejected"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- lifecycle

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _acquire(self) -> None:
        fd = os.open(self.root / "relay.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RelayBusy(
                f"another relay is delivering {self.root} (relay.lock is held)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def run(self, *, once: bool = False) -> RelayCounts:
        """Take the lock and deliver; returns the counts. Raises RelayBusy if another relay runs."""
        self._acquire()
        try:
            previous = _read_json(self.root / "relay.json")
            if isinstance(previous, dict) and isinstance(previous.get("counts"), dict):
                for name, value in previous["counts"].items():
                    if isinstance(value, int) and hasattr(self.counts, name):
                        setattr(self.counts, name, value)
            log.info("relay: delivering %s to %s (%d lanes)", self.root, self.url, self.lanes)
            self._window = 1
            while not self._stop.is_set():
                try:
                    worked = self._pass()
                    if not self._stop.is_set():
                        self._retry_deferred()
                    self._maybe_status()
                except OSError as err:  # the spool's own disk (full, read-only): wait, go on
                    self.last_error = f"spool I/O: {err}"
                    log.error("relay: cannot read or write the spool: %s; retrying in 5 s", err)
                    self._stop.wait(5.0)
                    continue
                if once and not worked and not self._pending_now():
                    break
                if not worked:
                    self._stop.wait(self.poll_seconds)
            self._save_all()
            self._write_status(force=True, state="stopped")
            log.info("relay: stopped (%s)", self._summary())
            return self.counts
        finally:
            self._save_all()
            self._release()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state files

    def _state(self, stem: str) -> _SegState:
        with self._mu:
            return self._load_state(stem)

    def _load_state(self, stem: str) -> _SegState:
        state = self._states.get(stem)
        if state is None:
            state = _SegState()
            raw = _read_json(self.root / "acks" / f"{stem}.ack")
            if isinstance(raw, dict):
                state.offset = int(raw.get("offset", 0))
                for item in raw.get("deferred", []):
                    state.deferred.append(
                        _Deferred(
                            offset=int(item["offset"]),
                            execution_id=str(item["executionId"]),
                            since=float(item["since"]),
                            tries=int(item.get("tries", 0)),
                        )
                    )
                state.deferred.sort(key=lambda d: d.offset)
                state.saved = (state.offset, len(state.deferred))
            with contextlib.suppress(OSError):
                for line in (self.root / "rejected" / f"{stem}.jsonl").read_bytes().splitlines():
                    with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                        state.rejected_offsets.add(int(orjson.loads(line)["offset"]))
            self._states[stem] = state
        return state

    def _save(self, stem: str, *, force: bool = False) -> None:
        with self._mu:
            state = self._states.get(stem)
            if state is None:
                return
            # a record deferred by a lane beyond the acknowledged prefix is read again after a
            # restart (and deferred again): the file lists only those before the offset
            deferred = [d for d in state.deferred if d.offset < state.offset]
            key = (state.offset, len(deferred))
            if key == state.saved and not force:
                return
            body = {"offset": state.offset, "deferred": [d.to_json() for d in deferred]}
            atomic_write(self.root / "acks" / f"{stem}.ack", orjson.dumps(body))
            state.saved = key

    def _save_all(self) -> None:
        with self._mu:
            stems = list(self._states)
        for stem in stems:
            if (self.root / "segments").exists():
                self._save(stem)

    def _reject(self, stem: str, line: Line, reason: str, status: int | None, answer: Any) -> None:
        with self._mu:
            self._reject_locked(stem, line, reason, status, answer)

    def _reject_locked(
        self, stem: str, line: Line, reason: str, status: int | None, answer: Any
    ) -> None:
        state = self._load_state(stem)
        if line.offset in state.rejected_offsets:
            return
        entry: dict[str, Any] = {
            "offset": line.offset,
            "reason": reason,
            "status": status,
            "answer": answer,
            "rejectedAt": _now_text(),
        }
        if line.record is not None:
            entry.update(
                kind=line.record["kind"],
                executionId=line.record["executionId"],
                at=line.record.get("at"),
                record=line.record,
            )
        else:
            entry["raw"] = line.raw.decode("utf-8", "replace")
        target = self.root / "rejected" / f"{stem}.jsonl"
        with os.fdopen(
            os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab"
        ) as file:
            file.write(orjson.dumps(entry) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        state.rejected_offsets.add(line.offset)
        self.counts.rejected += 1
        what = f"{entry.get('kind', 'line')} {entry.get('executionId', '')}".strip()
        log.warning(
            "relay: rejected %s (%s, HTTP %s) -> rejected/%s.jsonl", what, reason, status, stem
        )

    # -- one pass over the spool

    def _closed(self, segment: Segment) -> bool:
        """Closed: renamed to .seg, or its writer is gone (checked at most once a second)."""
        if segment.closed:
            return True
        now = time.monotonic()
        cached = self._dead_cache.get(segment.writer)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        state = read_writer(self.root, segment.writer)
        dead = writer_is_dead(state)
        if state is None:
            # writers make their state file before their first segment; without one, wait
            # until the segment has been quiet for a while (a writer that broke that rule)
            try:
                dead = time.time() - segment.path.stat().st_mtime >= _ORPHAN_QUIET_SECONDS
            except FileNotFoundError:
                dead = False
        self._dead_cache[segment.writer] = (now, dead)
        return dead

    def _pass(self) -> bool:
        worked = False
        for segment in list_segments(self.root):
            if self._stop.is_set():
                break
            worked |= self._deliver_segment(segment)
        return worked

    def _lane(self, execution_id: str) -> int:
        """The lane of an execution: a stable hash, so its records stay in one lane, in order."""
        return zlib.crc32(execution_id.encode()) % self.lanes

    def _deliver_segment(self, segment: Segment) -> bool:
        state = self._state(segment.stem)
        closed = self._closed(segment)
        worked = False
        self._last_save = time.monotonic()
        try:
            size = segment.path.stat().st_size
            while not self._stop.is_set():
                window: list[Line] = []
                for line in read_lines(segment.path, state.offset, max_lines=self._window):
                    # a bad last line of a closed segment is what a crash mid-write leaves
                    last_of_closed = closed and line.record is None and line.end >= size
                    if (line.problem == "torn" or last_of_closed) and not closed:
                        break  # the writer is still writing it
                    window.append(line)
                if not window:
                    break
                worked = True
                if not self._deliver_window(segment.stem, window, closed, size):
                    break  # stopping (or a lane failed: raised)
        except FileNotFoundError:
            return worked  # renamed .open -> .seg under us: next pass
        finally:
            self._save(segment.stem)
        if closed and not self._stop.is_set():
            self._delete_if_done(segment)
        return worked

    def _deliver_window(self, stem: str, window: list[Line], closed: bool, size: int) -> bool:
        """Deliver ``window`` (consecutive lines of one segment) over the lanes; the offset
        advances over the handled prefix only. True when every line was handled."""
        state = self._state(stem)
        done = [False] * len(window)
        lanes: dict[int, list[int]] = {}
        for index, line in enumerate(window):
            if line.record is not None:
                lanes.setdefault(self._lane(line.record["executionId"]), []).append(index)
            elif line.problem == "torn" or (closed and line.end >= size):
                with self._mu:
                    self.counts.torn += 1
                log.warning(
                    "relay: dropped the torn last line of %s (%d bytes, %s; its writer is gone)",
                    stem,
                    line.end - line.offset,
                    line.problem,
                )
                done[index] = True
            else:
                self._reject(stem, line, "corrupt", None, {"problem": line.problem})
                done[index] = True

        errors: list[BaseException] = []

        def lane(indexes: list[int]) -> None:
            try:
                for index in indexes:
                    if self._stop.is_set():
                        return  # finish the request in flight, start no other
                    self._handle(stem, window[index])
                    done[index] = True
            except _Retry:
                return  # stopping while the service was unavailable: resume there next run
            except BaseException as error:  # raised by the window, once the other lanes ended
                errors.append(error)

        with self._mu:
            retried = self.counts.retried
        # a thread per lane and window (cheap next to the requests): daemon threads, as the
        # in-process relay's own, so an engine that exits without closing its client never
        # waits for a lane backing off from a service that is down
        threads = [
            threading.Thread(target=lane, args=(indexes,), name="execvault-lane", daemon=True)
            for indexes in lanes.values()
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                deadline = time.monotonic() + _ACK_EVERY_SECONDS
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()))
                self._advance(state, window, done)
                now = time.monotonic()
                if now - self._last_save >= _ACK_EVERY_SECONDS:
                    self._save(stem)
                    self._last_save = now
                self._maybe_status()
                if not any(thread.is_alive() for thread in threads):
                    break
        finally:
            for thread in threads:  # an ack that cannot be written: the window ends first
                thread.join()
        if errors:
            raise errors[0]  # the spool's disk (OSError) or a defect
        complete = self._advance(state, window, done)
        with self._mu:
            trouble = self.counts.retried > retried
        self._window = 1 if trouble else min(self.max_window, self._window * 2)
        return complete

    def _advance(self, state: _SegState, window: list[Line], done: list[bool]) -> bool:
        """Move the offset to the end of the window's handled prefix; True if all of it."""
        handled = 0
        while handled < len(done) and done[handled]:
            handled += 1
        if handled:
            with self._mu:
                state.offset = max(state.offset, window[handled - 1].end)
        return handled == len(done)

    def _delete_if_done(self, segment: Segment) -> None:
        """Delete a closed segment whose every record is delivered or rejected (and its ack)."""
        with self._mu:
            state = self._load_state(segment.stem)
            if state.deferred:
                return
            with contextlib.suppress(FileNotFoundError):
                if state.offset >= segment.path.stat().st_size:
                    segment.path.unlink()
                    (self.root / "acks" / f"{segment.stem}.ack").unlink(missing_ok=True)
                    self._states.pop(segment.stem, None)
                    self._count_cache.pop(segment.stem, None)
                    log.info("relay: %s fully handled, deleted", segment.stem)

    def _deferred_ids(self) -> set[str]:
        with self._mu:
            return {d.execution_id for s in self._states.values() for d in s.deferred}

    def _handle(self, stem: str, line: Line) -> None:
        """One record, in its lane (an execution's records all go through one lane, in order)."""
        record = line.record
        assert record is not None
        execution_id = record["executionId"]
        if record["kind"] == "final-state" and execution_id in self._deferred_ids():
            self._defer(stem, line, execution_id)  # keep its order behind the earlier one
            return
        outcome = self._send(record)
        if outcome.result == "delivered":
            with self._mu:
                self.counts.delivered += 1
                if record["kind"] == "snapshot":
                    self._arrived.add(execution_id)
        elif outcome.result == "deferred":
            self._defer(stem, line, execution_id)
        else:
            self._reject(
                stem, line, _reason(outcome.answer, outcome.status), outcome.status, outcome.answer
            )

    def _defer(self, stem: str, line: Line, execution_id: str) -> None:
        with self._mu:
            state = self._load_state(stem)
            if any(d.offset == line.offset for d in state.deferred):
                return  # read again after a stop mid-window: deferred already
            item = _Deferred(
                offset=line.offset,
                execution_id=execution_id,
                since=time.time(),
                next_try=time.monotonic() + BACKOFF_INITIAL,
            )
            # in offset order: an execution's deferred records are retried in file order
            bisect.insort(state.deferred, item, key=lambda d: d.offset)
            self.counts.deferred += 1
        self._save(stem, force=True)
        log.info("relay: final state of %s deferred (its snapshot is not there yet)", execution_id)

    def _retry_deferred(self) -> None:
        """Deferred records whose backoff is over — or whose snapshot was just delivered."""
        blocked: set[str] = set()
        clock = time.monotonic()
        with self._mu:
            arrived, self._arrived = self._arrived, set()
        for segment in list_segments(self.root):
            with self._mu:
                state = self._states.get(segment.stem)
                items = list(state.deferred) if state is not None else []
            if state is None or not items:
                continue
            for item in items:
                if self._stop.is_set():
                    return
                due = item.next_try <= clock or item.execution_id in arrived
                if item.execution_id in blocked or not due:
                    blocked.add(item.execution_id)
                    continue
                try:
                    line = next(read_lines(segment.path, item.offset, max_lines=1))
                except (FileNotFoundError, StopIteration):
                    self._drop_deferred(state, item)
                    continue
                if line.record is None:  # cannot happen unless the file changed under us
                    self._drop_deferred(state, item)
                    self._reject(segment.stem, line, "corrupt", None, {"problem": line.problem})
                    continue
                try:
                    outcome = self._send(line.record)
                except _Retry:
                    return
                if outcome.result == "deferred":
                    if time.time() - item.since >= self.defer_seconds:
                        self._drop_deferred(state, item)
                        self._reject(segment.stem, line, "deferred_expired", 404, outcome.answer)
                    else:
                        item.tries += 1
                        delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2**item.tries)
                        item.next_try = time.monotonic() + delay * random.uniform(0.8, 1.2)
                        blocked.add(item.execution_id)
                    continue
                self._drop_deferred(state, item)
                if outcome.result == "delivered":
                    with self._mu:
                        self.counts.delivered += 1
                    log.info("relay: deferred final state of %s delivered", item.execution_id)
                else:
                    self._reject(
                        segment.stem,
                        line,
                        _reason(outcome.answer, outcome.status),
                        outcome.status,
                        outcome.answer,
                    )
            self._save(segment.stem)
            if not state.deferred and self._closed(segment):
                self._delete_if_done(segment)

    def _drop_deferred(self, state: _SegState, item: _Deferred) -> None:
        with self._mu, contextlib.suppress(ValueError):
            state.deferred.remove(item)

    def _pending_now(self) -> bool:
        """Something deliverable is left (not counting deferred records waiting for later)."""
        for segment in list_segments(self.root):
            state = self._state(segment.stem)
            with contextlib.suppress(FileNotFoundError):
                size = segment.path.stat().st_size
                if state.offset < size:
                    if not self._closed(segment):
                        # an open segment whose only rest is a line being written
                        rest = list(read_lines(segment.path, state.offset, max_lines=1))
                        if rest and rest[0].problem == "torn":
                            continue
                    return True
        return False

    # -- HTTP

    def _send(self, record: dict[str, Any]) -> _Outcome:
        """One record, retried until it gets a final answer (or the relay stops: _Retry)."""
        retrying = Retrying(
            retry=retry_if_exception_type(_Retry),
            wait=self._wait,
            stop=lambda _state: self._stop.is_set(),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        outcome: _Outcome = retrying(self._attempt, record)
        with self._mu:
            recovered, self._retrying = self._retrying, False
        if recovered:
            log.info("relay: the service answers again")
        return outcome

    _backoff = wait_exponential_jitter(multiplier=BACKOFF_INITIAL, max=BACKOFF_MAX, jitter=0.5)

    def _wait(self, retry_state: RetryCallState) -> float:
        wait = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _Retry) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, BACKOFF_MAX))
        return wait

    def _sleep(self, seconds: float) -> None:
        self._maybe_status()
        self._stop.wait(seconds)

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        with self._mu:
            self.counts.retried += 1
            self.last_error = str(error)
            self._retrying = True
        next_in = retry_state.upcoming_sleep
        log.warning("relay: %s; retry %d in %.1f s", error, retry_state.attempt_number, next_in)

    def _attempt(self, record: dict[str, Any]) -> _Outcome:
        if self._stop.is_set():  # woken from a backoff sleep to stop: no new request
            raise _Retry("the relay is stopping")
        kind = record["kind"]
        if kind == "snapshot":
            path = SNAPSHOTS
        else:
            path = f"{SNAPSHOTS}/{quote(record['executionId'], safe='')}/final-state"
        try:
            response = self._http.post(path, content=orjson.dumps(record["body"]))
        except httpx.TransportError as err:
            raise _Retry(f"cannot reach {self.url}: {type(err).__name__}: {err}") from err
        status = response.status_code
        if 200 <= status < 300:
            self.last_error = None
            return _Outcome("delivered", status)
        try:
            answer: Any = response.json()
        except ValueError:
            answer = None
        ours = isinstance(answer, dict) and isinstance(answer.get("error"), str)
        if status in (408, 429) or status >= 500:
            retry_after = _retry_after(response.headers.get("retry-after"))
            code = answer.get("error") if ours and isinstance(answer, dict) else ""
            raise _Retry(f"HTTP {status} {code}".rstrip(), retry_after)
        if status in (401, 403):
            raise _Retry(f"HTTP {status}: the token is missing, unknown or lacks a scope")
        if not ours:
            raise _Retry(f"HTTP {status} without the service's error body: is {self.url} right?")
        if status == 404 and kind == "final-state":
            return _Outcome("deferred", status, answer)
        if (
            status == 409
            and kind == "snapshot"
            and record["body"].get("source") == "post-run"
            and isinstance(answer, dict)
            and answer.get("error") == "immutable_conflict"
        ):
            # a fallback snapshot taken when the run ended, for an execution the archive already
            # holds (its pre-run snapshot, from before an n8n restart): nothing is missing
            return _Outcome("delivered", status)
        return _Outcome("rejected", status, answer)

    # -- status

    def _maybe_status(self) -> None:
        if time.monotonic() - self._last_status >= self.status_seconds:
            self._write_status()

    def _write_status(self, *, force: bool = False, state: str | None = None) -> None:
        # lanes backing off call this too: one writer at a time, the others skip (force waits)
        if not self._status_mu.acquire(blocking=force):
            return
        try:
            self._write_status_now(force=force, state=state)
        finally:
            self._status_mu.release()

    def _write_status_now(self, *, force: bool, state: str | None) -> None:
        self._last_status = time.monotonic()
        self._save_all()
        with self._mu:  # a copy: the lanes go on changing the live states
            states = {
                stem: _SegState(
                    offset=s.offset, deferred=[d for d in s.deferred if d.offset < s.offset]
                )
                for stem, s in self._states.items()
            }
            counts = self.counts.to_json()
            retrying, last_error = self._retrying, self.last_error
        status = spool_status(self.root, count_cache=self._count_cache, states=states)
        status.update(
            state=state or ("retrying" if retrying else "delivering"),
            pid=os.getpid(),
            url=self.url,
            counts=counts,
            lastError=last_error,
        )
        with contextlib.suppress(OSError):
            atomic_write(self.root / "relay.json", orjson.dumps(status, option=orjson.OPT_INDENT_2))
        backlog = status["backlog"]
        key = (counts["delivered"], counts["rejected"], backlog["records"], counts["retried"])
        if key != self._last_logged or force:
            self._last_logged = key
            log.info("relay: %s", _describe(status))
        now = time.monotonic()
        for writer in status["writers"]:
            last = self._alarmed.get(writer["writer"])
            if writer["alarm"] and (last is None or now - last >= ALARM_EVERY_SECONDS):
                self._alarmed[writer["writer"]] = now
                log.warning(
                    "relay: writer %s dropped %d records (spool full since %s)",
                    writer["writer"],
                    writer["dropped"],
                    writer["fullSince"],
                )
        _forget_writers(self.root, status)

    def _summary(self) -> str:
        c = self.counts
        return (
            f"delivered {c.delivered}, retried {c.retried}, rejected {c.rejected}, "
            f"deferred {c.deferred}, torn {c.torn}"
        )


# ---------------------------------------------------------------------------- helpers


def _reason(answer: Any, status: int) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    return f"http_{status}"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def _count_lines(path: Path, offset: int) -> int:
    count = 0
    with path.open("rb") as file:
        file.seek(offset)
        for chunk in iter(lambda: file.read(1 << 20), b""):
            count += chunk.count(b"\n")
    return count


def _first_at(path: Path, offset: int) -> float | None:
    for line in read_lines(path, offset, max_lines=1):
        if line.record is not None:
            return _parse_at(line.record.get("at"))
    return None


def spool_status(
    root: Path,
    *,
    count_cache: dict[str, tuple[int, int, int]] | None = None,
    states: dict[str, _SegState] | None = None,
) -> dict[str, Any]:
    """The spool's backlog and writers, from the files (what ``relay status`` prints)."""
    cache = {} if count_cache is None else count_cache
    records = size_left = segments = deferred = 0
    oldest: float | None = None
    for segment in list_segments(root):
        state = (states or {}).get(segment.stem)
        if state is None:
            raw = _read_json(root / "acks" / f"{segment.stem}.ack")
            state = _SegState()
            if isinstance(raw, dict):
                state.offset = int(raw.get("offset", 0))
                state.deferred = [
                    _Deferred(int(d["offset"]), str(d["executionId"]), float(d["since"]))
                    for d in raw.get("deferred", [])
                ]
        try:
            size = segment.path.stat().st_size
        except FileNotFoundError:
            continue
        segments += 1
        deferred += len(state.deferred)
        # lines are in append order: the segment's oldest waiting record is its first one
        first = min(
            [d.offset for d in state.deferred] + ([state.offset] if state.offset < size else []),
            default=None,
        )
        if first is not None:
            with contextlib.suppress(FileNotFoundError):
                at = _first_at(segment.path, first)
                if at is not None:
                    oldest = at if oldest is None else min(oldest, at)
        if state.offset >= size:
            continue
        size_left += size - state.offset
        cached = cache.get(segment.stem)
        count = 0  # renamed under us: counted on the next call
        if cached is not None and cached[:2] == (state.offset, size):
            count = cached[2]
        else:
            with contextlib.suppress(FileNotFoundError):
                count = _count_lines(segment.path, state.offset)
                cache[segment.stem] = (state.offset, size, count)
        records += count
    writers: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        for path in sorted((root / "writers").glob("*.json")):
            info = _read_json(path)
            if not isinstance(info, dict):
                continue
            dropped = int(info.get("dropped", 0) or 0)
            writers.append(
                {
                    "writer": path.stem,
                    "pid": info.get("pid"),
                    "host": info.get("host"),
                    "alive": not writer_is_dead(info),
                    "appended": info.get("appended"),
                    "dropped": dropped,
                    "fullSince": info.get("fullSince"),
                    "alarm": info.get("fullSince") is not None,
                    "updatedAt": info.get("updatedAt"),
                }
            )
    now = time.time()
    return {
        "updatedAt": _now_text(),
        "backlog": {
            "records": records + deferred,
            "bytes": size_left,
            "segments": segments,
            "deferred": deferred,
            "oldestAt": None
            if oldest is None
            else datetime.fromtimestamp(oldest, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "oldestAgeSeconds": None if oldest is None else round(max(0.0, now - oldest), 3),
        },
        "writers": writers,
    }


def _forget_writers(root: Path, status: dict[str, Any]) -> None:
    """Remove the state files of gone writers that left no segment and dropped nothing."""
    with_segments = {s.writer for s in list_segments(root)}
    for writer in status["writers"]:
        if writer["alive"] or writer["dropped"] or writer["writer"] in with_segments:
            continue
        with contextlib.suppress(OSError):
            (root / "writers" / f"{writer['writer']}.json").unlink()


def _size(count: int) -> str:
    if count < 10_000:
        return f"{count} bytes"
    return f"{count / 1e6:.1f} MB"


def _describe(status: dict[str, Any]) -> str:
    backlog, counts = status["backlog"], status.get("counts", {})
    age = backlog["oldestAgeSeconds"]
    parts = [
        f"backlog {backlog['records']} records / {_size(backlog['bytes'])}",
        f"oldest {age:.0f} s" if age is not None else "nothing waiting",
    ]
    if counts:
        parts.append(
            f"delivered {counts['delivered']}, retried {counts['retried']}, "
            f"rejected {counts['rejected']}, deferred {counts['deferred']}"
        )
    dropped = sum(w["dropped"] for w in status["writers"])
    if dropped:
        parts.append(f"DROPPED {dropped} (spool full)")
    return "; ".join(parts)


def describe_status(status: dict[str, Any]) -> Iterator[str]:
    """Human lines for ``execvault relay status``."""
    running = status.get("running")
    yield f"relay:     {'running' if running else 'not running'}" + (
        f" (pid {status.get('pid')}, {status.get('state')}, {status.get('url')})" if running else ""
    )
    yield f"spool:     {_describe(status)}"
    if status.get("lastError"):
        yield f"last error: {status['lastError']}"
    for writer in status["writers"]:
        alarm = f"  SPOOL FULL since {writer['fullSince']}" if writer["alarm"] else ""
        yield (
            f"writer:    {writer['writer']} ({'alive' if writer['alive'] else 'gone'}) "
            f"appended {writer['appended']}, dropped {writer['dropped']}{alarm}"
        )


def relay_running(root: Path) -> bool:
    """True while some relay holds ``relay.lock``."""
    try:
        fd = os.open(root / "relay.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def full_status(root: Path) -> dict[str, Any]:
    """``relay status``: the live backlog and writers plus the relay's last ``relay.json``."""
    status = spool_status(root)
    saved = _read_json(root / "relay.json")
    running = relay_running(root)
    status["running"] = running
    if isinstance(saved, dict):
        for key in ("counts", "lastError", "pid", "url", "state"):
            status[key] = saved.get(key)
        status["relayUpdatedAt"] = saved.get("updatedAt")
    return status
