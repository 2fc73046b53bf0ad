"""A run lease in the store: one ``archive`` / ``expire`` run at a time, across machines.

Retention jobs are idempotent and converge when re-run, but two running *at the same time* may
both finish the same intent (two tombstones for one deletion) or both record the same move. The
lease keeps them apart with nothing but create-only writes (no lock service, no deletes: leases
are write-once records like everything else, and stay readable as a log of runs)::

    locks/<name>/<gen:010d>.json                   taken: {runId, owner, host, pid, startedAt}
    locks/<name>/<gen:010d>.hb-<n:06d>.json        heartbeats while the run lives
    locks/<name>/<gen:010d>.done.json              released (or .broken.json: taken over)

To take the lease, a run reads the newest generation ``G``. When ``G`` is neither released nor
broken and was seen alive (taken or heartbeat, by the store's clock) less than ``ttl`` seconds
ago, the run is refused with :class:`RunBusy`. Otherwise it creates ``G+1`` with a create-only
put: of two runs racing for it, exactly one wins, the other is refused. While held, a daemon
thread writes a heartbeat every ``ttl / 4`` seconds, so a long run keeps its lease and a killed
one loses it after ``ttl`` (or at once, when the dead run was on this host: its pid is gone).
``break_lease`` marks a stuck generation broken so the next run may take over.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from archiver.errors import ArchiveError, ImmutableConflict, NotFound, RunBusy
from archiver.store.base import ObjectStore
from archiver.timeutil import format_ts, utcnow

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "RunBusy",
    "RunLease",
    "break_lease",
    "run_lease",
    "take_lease",
]

DEFAULT_TTL_SECONDS: Final = 600.0
LOCKS_PREFIX: Final = "locks/"
_KEY_RE: Final = re.compile(r"(?P<gen>\d{10})(?:\.(?P<mark>hb-\d{6}|done|broken))?\.json")


@dataclass(frozen=True, slots=True)
class _Generation:
    gen: int
    body: dict[str, Any]
    closed: bool
    last_seen: datetime | None


def _prefix(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,40}", name):
        raise ValueError(f"bad lease name {name!r}")
    return f"{LOCKS_PREFIX}{name}/"


def _newest(store: ObjectStore, name: str) -> _Generation | None:
    prefix = _prefix(name)
    marks: dict[int, list[tuple[str | None, datetime | None]]] = {}
    for info in store.list(prefix):
        m = _KEY_RE.fullmatch(info.key[len(prefix) :])
        if m is not None:
            marks.setdefault(int(m["gen"]), []).append((m["mark"], info.last_modified))
    if not marks:
        return None
    gen = max(marks)
    body: dict[str, Any] = {}
    with contextlib.suppress(NotFound, ValueError):
        body = orjson.loads(store.get(f"{prefix}{gen:010d}.json"))
    seen = [
        when for mark, when in marks[gen] if when is not None and mark not in ("done", "broken")
    ]
    return _Generation(
        gen=gen,
        body=body,
        closed=any(mark in ("done", "broken") for mark, _ in marks[gen]),
        last_seen=max(seen) if seen else None,
    )


def _dead_here(body: dict[str, Any]) -> bool:
    """The holder ran on this host and its process is gone."""
    if body.get("host") != socket.gethostname() or not isinstance(body.get("pid"), int):
        return False
    if body["pid"] == os.getpid():
        return False  # this very process: a lease of ours still running elsewhere in it
    try:
        os.kill(body["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RunLease:
    """A taken lease; :meth:`release` (or leaving the ``with``) ends it."""

    def __init__(
        self,
        store: ObjectStore,
        name: str,
        gen: int,
        body: dict[str, Any],
        ttl: float,
    ) -> None:
        self.store, self.name, self.gen, self.body, self.ttl = store, name, gen, body, ttl
        self._stop = threading.Event()
        self._beats = 0
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{name}", daemon=True)
        self._thread.start()

    def _key(self, mark: str = "") -> str:
        return f"{_prefix(self.name)}{self.gen:010d}{mark}.json"

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            self._beats += 1
            with contextlib.suppress(ArchiveError):  # a missed beat is retried next time
                self.store.put(
                    self._key(f".hb-{self._beats:06d}"),
                    orjson.dumps({"runId": self.body["runId"], "at": format_ts(utcnow())}),
                )

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(ImmutableConflict):
            self.store.put(
                self._key(".done"),
                orjson.dumps({"runId": self.body["runId"], "at": format_ts(utcnow())}),
            )

    def __enter__(self) -> RunLease:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def take_lease(
    store: ObjectStore,
    name: str,
    *,
    owner: str = "",
    ttl: float = DEFAULT_TTL_SECONDS,
    clock: Callable[[], datetime] = utcnow,
) -> RunLease:
    """Take the lease ``name`` or raise :class:`RunBusy` naming who holds it."""
    newest = _newest(store, name)
    if newest is not None and not newest.closed:
        alive = newest.last_seen is not None and (
            (clock() - newest.last_seen).total_seconds() < ttl
        )
        if alive and not _dead_here(newest.body):
            holder = newest.body
            raise RunBusy(
                f"another {name} run is in progress (run {holder.get('runId')}, "
                f"{holder.get('owner') or 'unknown'} on {holder.get('host')}, "
                f"started {holder.get('startedAt')}); try again later, or break its lease "
                "if it is stuck",
                holder=holder,
            )
    gen = 1 if newest is None else newest.gen + 1
    body = {
        "runId": secrets.token_hex(8),
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "startedAt": format_ts(clock()),
    }
    key = f"{_prefix(name)}{gen:010d}.json"
    try:
        store.put(key, orjson.dumps(body))
    except ImmutableConflict:
        raise RunBusy(f"another {name} run took the lease at the same moment") from None
    return RunLease(store, name, gen, body, ttl)


@contextlib.contextmanager
def run_lease(
    store: ObjectStore, name: str, *, owner: str = "", ttl: float = DEFAULT_TTL_SECONDS
) -> Iterator[RunLease]:
    """``with run_lease(store, "retention"): ...`` — one such run at a time."""
    lease = take_lease(store, name, owner=owner, ttl=ttl)
    try:
        yield lease
    finally:
        lease.release()


def break_lease(store: ObjectStore, name: str) -> dict[str, Any] | None:
    """Mark the newest open generation of ``name`` broken (its holder is stuck or gone); the
    holder's body, or None when nothing was open."""
    newest = _newest(store, name)
    if newest is None or newest.closed:
        return None
    with contextlib.suppress(ImmutableConflict):
        store.put(
            f"{_prefix(name)}{newest.gen:010d}.broken.json",
            orjson.dumps({"at": format_ts(utcnow()), "broken": newest.body}),
        )
    return newest.body
