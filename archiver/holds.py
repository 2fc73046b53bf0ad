"""Legal holds as data: write-once hold events, folded into the holds in force now.

A legal hold keeps executions from expiring, whatever the retention policy says. It names a
**scope** and a **target**: one execution (``execution``, its id), every execution of a workflow
(``workflow``, its id) or every execution that currently holds a tag (``tag``, the tag name; tags
are the append-only tag events of :mod:`archiver.events`, so a tag hold follows the tag).

Setting and clearing a hold each write one write-once event (a record like the others: JCS,
digest, zstd, create-only put)::

    events/holds/<scope>/<target>/<ts>-<eventId>.json.zst

holding ``eventId``, ``action`` (``set`` | ``clear``), ``scope``, ``target``, ``reason``, ``by``
(the caller's token name or CLI user, never a token) and ``createdAt``. The holds in force are the
latest event per (scope, target) whose action is ``set`` (:func:`active_holds`). The holds listed
in the retention policy file (``[retention.legal_hold]``) count as well: retention takes the union.

Where the store can (:class:`archiver.store.base.LockingStore`: S3 with an Object Lock bucket),
a hold is also put on the objects themselves: ``PutObjectLegalHold ON`` on the current version of
each matching execution's ``snapshot.json.zst``, ``result.json.zst`` and progress records, so
that not even a raw S3 delete removes them. Clearing puts ``OFF`` on the objects no other hold (event or policy file)
still covers. Memory and local stores keep the hold as data only (``appliedToObjects: false``);
expiry honours it there all the same. :func:`sync_object_holds` brings the objects' legal holds in
line with the holds in force (after a tag moved, or a capture that missed a hold set elsewhere).
"""

from __future__ import annotations

import contextlib
import getpass
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from archiver.codec import DEFAULT_MAX_OBJECT_BYTES, decode_record, encode_record
from archiver.errors import InvalidInput, NotFound, ObjectArchived, ObjectLockUnsupported
from archiver.events import EventLog, check_tag
from archiver.layout import check_id, execution_prefix, is_progress_key, snapshot_key
from archiver.store.base import LockingStore, ObjectStore
from archiver.timeutil import format_ts, parse_ts, utcnow

if TYPE_CHECKING:
    from archiver.retention import ExecutionInfo

__all__ = [
    "HOLDS_PREFIX",
    "HOLD_KIND",
    "HOLD_SCOPES",
    "HoldCache",
    "HoldEvent",
    "HoldResult",
    "HoldSet",
    "PolicyHold",
    "active_holds",
    "check_hold",
    "clear_hold",
    "cli_user",
    "read_hold_events",
    "set_hold",
    "sync_object_holds",
]

HOLD_KIND: Final = "legal-hold-event"
HOLDS_PREFIX: Final = "events/holds/"
HOLD_SCOPES: Final = ("execution", "workflow", "tag")
MAX_REASON: Final = 1_000
MAX_BY: Final = 256
_RECORD_NAMES: Final = ("/snapshot.json.zst", "/result.json.zst")

#: the policy file's holds: ``RetentionPolicy.hold_reason(execution_id, workflow_id, tags)``
PolicyHold = Callable[[str, str, Iterable[str]], "str | None"]


def check_hold(scope: object, target: object) -> tuple[str, str]:
    """(scope, target) checked: an execution or workflow id, or a tag name; else InvalidInput."""
    if scope not in HOLD_SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(HOLD_SCOPES)}", field="scope")
    assert isinstance(scope, str)
    if scope == "tag":
        return scope, check_tag(target, "target")
    return scope, check_id(target, "target")


def _text(value: object, field: str, limit: int, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", field=field)
    return value


def cli_user() -> str:
    """``cli:<login name>``: who set a hold from the command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli:unknown"


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"


def hold_key(scope: str, target: str, created_at: datetime, event_id: str) -> str:
    return f"{HOLDS_PREFIX}{scope}/{target}/{_stamp(created_at)}-{event_id}.json.zst"


@dataclass(frozen=True, slots=True)
class HoldEvent:
    event_id: str
    action: str  # set | clear
    scope: str
    target: str
    reason: str | None
    by: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "action": self.action,
            "scope": self.scope,
            "target": self.target,
            "reason": self.reason,
            "by": self.by,
            "createdAt": format_ts(self.created_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HoldEvent:
        return cls(
            event_id=str(data["eventId"]),
            action=str(data["action"]),
            scope=str(data["scope"]),
            target=str(data["target"]),
            reason=data.get("reason"),
            by=str(data["by"]),
            created_at=parse_ts(data["createdAt"], "createdAt"),
        )


@dataclass(frozen=True, slots=True)
class HoldSet:
    """The holds in force: (scope, target) → the ``set`` event that placed it."""

    holds: Mapping[tuple[str, str], HoldEvent] = field(default_factory=dict)

    def get(self, scope: str, target: str) -> HoldEvent | None:
        return self.holds.get((scope, target))

    def __iter__(self) -> Iterator[HoldEvent]:
        return iter(sorted(self.holds.values(), key=lambda e: (e.scope, e.target)))

    def __len__(self) -> int:
        return len(self.holds)

    def without(self, scope: str, target: str) -> HoldSet:
        return HoldSet({k: v for k, v in self.holds.items() if k != (scope, target)})

    def reason_for(self, execution_id: str, workflow_id: str, tags: Iterable[str]) -> str | None:
        """Why the execution is held (its id, its workflow, then its current tags), or None."""
        candidates = [("execution", execution_id), ("workflow", workflow_id)]
        candidates += [("tag", t) for t in sorted(tags)]
        for scope, target in candidates:
            event = self.holds.get((scope, target))
            if event is not None:
                return f"legal hold on {scope} {target} ({event.reason})"
        return None


def read_hold_events(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> list[tuple[str, HoldEvent]]:
    """(key, event) of every hold event, in key order (per target: oldest first)."""
    out = []
    for info in sorted(store.list(HOLDS_PREFIX), key=lambda i: i.key):
        with contextlib.suppress(NotFound):
            body = decode_record(store.get(info.key), HOLD_KIND, max_size=max_object_bytes)
            out.append((info.key, HoldEvent.from_json(body)))
    return out


def _latest(store: ObjectStore, scope: str, target: str, max_object_bytes: int) -> HoldEvent | None:
    """The latest event of one (scope, target)."""
    found = None
    for info in sorted(store.list(f"{HOLDS_PREFIX}{scope}/{target}/"), key=lambda i: i.key):
        with contextlib.suppress(NotFound):
            body = decode_record(store.get(info.key), HOLD_KIND, max_size=max_object_bytes)
            found = HoldEvent.from_json(body)
    return found


def fold_holds(events: Iterable[HoldEvent]) -> HoldSet:
    """The latest event per (scope, target) decides; ``set`` means held."""
    latest: dict[tuple[str, str], HoldEvent] = {}
    for event in events:
        latest[(event.scope, event.target)] = event
    return HoldSet({k: e for k, e in latest.items() if e.action == "set"})


def active_holds(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> HoldSet:
    """The holds in force now, from the hold events (one LIST, one GET per event)."""
    return fold_holds(e for _, e in read_hold_events(store, max_object_bytes=max_object_bytes))


class HoldCache:
    """The holds in force, re-read at most every ``ttl_seconds`` (captures consult it).

    A hold set through this process invalidates it at once; one set by another process is seen
    within ``ttl_seconds``.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        ttl_seconds: float = 30.0,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self._max = max_object_bytes
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._holds: HoldSet | None = None
        self._read_at = 0.0

    def current(self) -> HoldSet:
        with self._lock:
            now = self._monotonic()
            if self._holds is None or now - self._read_at >= self.ttl_seconds:
                self._holds = active_holds(self.store, max_object_bytes=self._max)
                self._read_at = now
            return self._holds

    def invalidate(self) -> None:
        with self._lock:
            self._holds = None


# --------------------------------------------------------------------------------------------
# the executions a hold covers, and their objects


@dataclass(frozen=True, slots=True)
class _Covered:
    execution_id: str
    workflow_id: str | None  # None: the record is archived and unreadable here
    tags: tuple[str, ...]
    keys: tuple[str, ...]
    #: what the retention scan said (its facts may come from the index); None: read here
    info: ExecutionInfo | None = None


def _record_keys(keys: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(k for k in keys if k.endswith(_RECORD_NAMES) or is_progress_key(k)))


def _one_execution(store: ObjectStore, execution_id: str, max_object_bytes: int) -> list[_Covered]:
    keys = _record_keys(i.key for i in store.list(execution_prefix(execution_id)))
    if not keys:
        return []
    workflow_id: str | None = None
    tags: tuple[str, ...] = ()
    with contextlib.suppress(NotFound, ObjectArchived):
        body = decode_record(
            store.get(snapshot_key(execution_id)), "execution-snapshot", max_size=max_object_bytes
        )
        workflow_id = str(body["workflowId"])
        current = EventLog(store, max_object_bytes=max_object_bytes).current_tags(workflow_id)
        tags = tuple(sorted(t for t, e in current.items() if e.execution_id == execution_id))
    return [_Covered(execution_id, workflow_id, tags, keys)]


def _covered(
    store: ObjectStore, scope: str, target: str | None, max_object_bytes: int
) -> list[_Covered]:
    """The executions (and their record keys) ``scope``/``target`` covers; every execution when
    ``target`` is None.

    Workflow and tag scopes learn each execution's workflow and tags as retention does
    (``archiver.retention.scan`` with the Parquet index: records read only for executions the
    index does not describe). An object hold is only ever *released* after
    :func:`_index_doubt` confirmed those facts against the records."""
    if scope == "execution" and target is not None:
        return _one_execution(store, target, max_object_bytes)
    from archiver.retention import read_index_facts, scan  # retention imports this module

    scanned = scan(store, max_object_bytes=max_object_bytes, index=read_index_facts(store))
    out = []
    for ex in scanned.executions:
        if target is None or (
            (scope == "workflow" and ex.workflow_id == target)
            or (scope == "tag" and target in ex.tags)
        ):
            keys = _record_keys(ex.objects)
            out.append(_Covered(ex.execution_id, ex.workflow_id, ex.tags, keys, ex))
    return out


def _index_doubt(
    store: ObjectStore,
    item: _Covered,
    tags_of: Callable[[str], Mapping[str, list[str]]],
    max_object_bytes: int,
) -> str | None:
    """Before an object hold is released: None when ``item``'s facts did not come from the
    index or the records confirm them; else why the hold stays (the safe side)."""
    if item.info is None:
        return None
    from archiver.retention import index_disagreement

    why = index_disagreement(store, item.info, tags_of, max_object_bytes)
    return None if why is None else f"{why}: its object hold is left as it is"


def _still_held(item: _Covered, holds: HoldSet, policy_hold: PolicyHold | None) -> str | None:
    if item.workflow_id is None:  # cannot tell: keep the object's hold
        return "unreadable record (archived): its object hold is left as it is"
    reason = holds.reason_for(item.execution_id, item.workflow_id, item.tags)
    if reason is None and policy_hold is not None:
        reason = policy_hold(item.execution_id, item.workflow_id, item.tags)
    return reason


def _no_object_holds(store: ObjectStore) -> str:
    kind = store.url.split(":", 1)[0] or "this"
    return f"{kind} store: the hold is recorded as data only (expiry honours it)"


@dataclass(slots=True)
class HoldResult:
    """What a set or clear did: the event, and what happened to the objects."""

    event: HoldEvent
    #: False: the hold was already in force (set) — nothing new was written
    created: bool
    applied_to_objects: bool
    #: keys whose legal hold was put (set: ON, clear: OFF)
    objects: list[str] = field(default_factory=list)
    #: clear: keys left ON because another hold still covers their execution
    kept: list[dict[str, str]] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hold": self.event.to_json(),
            "created": self.created,
            "appliedToObjects": self.applied_to_objects,
            "objects": self.objects,
        }
        if self.event.action == "clear":
            out["objectsKept"] = self.kept
        if self.note is not None:
            out["note"] = self.note
        return out


def _put_holds(
    store: ObjectStore, keys: Iterable[str], on: bool, done: list[str]
) -> tuple[bool, str | None]:
    """Put the legal hold on every key; (applied, note). Keys gone meanwhile are skipped."""
    if not isinstance(store, LockingStore):
        return False, _no_object_holds(store)
    try:
        for key in keys:
            try:
                store.set_legal_hold(key, on)
            except NotFound:
                continue
            done.append(key)
    except ObjectLockUnsupported as err:
        return False, str(err)
    return True, None


class _Writer:
    def __init__(
        self,
        store: ObjectStore,
        clock: Callable[[], datetime],
        sanitize_text: Callable[[str], str] | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.sanitize = sanitize_text or (lambda text: text)

    def write(
        self,
        action: str,
        scope: str,
        target: str,
        reason: str | None,
        by: str,
        after: HoldEvent | None,
    ) -> HoldEvent:
        when = self.clock()
        if after is not None and when <= after.created_at:
            # strictly after the target's latest event, so key order is event order
            when = after.created_at + timedelta(milliseconds=1)
        event = HoldEvent(
            event_id="ev_" + secrets.token_hex(10),
            action=action,
            scope=scope,
            target=target,
            reason=None if reason is None else self.sanitize(reason),
            by=by,
            created_at=when,
        )
        key = hold_key(scope, target, event.created_at, event.event_id)
        self.store.put(key, encode_record(HOLD_KIND, event.to_json()))
        return event


def set_hold(
    store: ObjectStore,
    scope: object,
    target: object,
    *,
    reason: object,
    by: object,
    clock: Callable[[], datetime] = utcnow,
    sanitize_text: Callable[[str], str] | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> HoldResult:
    """Place a legal hold (a ``set`` event), then put it on the covered executions' objects.

    Idempotent: when the hold is already in force no event is written (``created`` false) and
    the objects' legal holds are put again (which also covers executions captured since). A hold
    may name an execution or workflow that has no captures yet: it covers them when they come.
    """
    scope_, target_ = check_hold(scope, target)
    why = _text(reason, "reason", MAX_REASON, required=True)
    who = _text(by, "by", MAX_BY, required=True)
    assert who is not None
    latest = _latest(store, scope_, target_, max_object_bytes)
    current = latest if latest is not None and latest.action == "set" else None
    created = current is None
    if current is None:
        # the data hold first: from here on expiry keeps these executions
        writer = _Writer(store, clock, sanitize_text)
        current = writer.write("set", scope_, target_, why, who, latest)
    result = HoldResult(current, created, applied_to_objects=False)
    if not isinstance(store, LockingStore):
        result.note = _no_object_holds(store)
        return result
    keys = [k for item in _covered(store, scope_, target_, max_object_bytes) for k in item.keys]
    result.applied_to_objects, result.note = _put_holds(store, keys, True, result.objects)
    return result


def clear_hold(
    store: ObjectStore,
    scope: object,
    target: object,
    *,
    by: object,
    reason: object = None,
    policy_hold: PolicyHold | None = None,
    clock: Callable[[], datetime] = utcnow,
    sanitize_text: Callable[[str], str] | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> HoldResult:
    """Clear a legal hold set by an event; NotFound when it is not in force.

    The objects' legal holds are cleared first (except where another hold event or the policy
    file's ``policy_hold`` still covers the execution), then the ``clear`` event is written: a
    failure part-way leaves the hold in force, and clearing again finishes the job.
    """
    scope_, target_ = check_hold(scope, target)
    why = _text(reason, "reason", MAX_REASON, required=False)
    who = _text(by, "by", MAX_BY, required=True)
    assert who is not None
    holds = active_holds(store, max_object_bytes=max_object_bytes)
    current = holds.get(scope_, target_)
    if current is None:
        raise NotFound(
            f"no legal hold is set on {scope_} {target_} (holds in the retention policy file are "
            "changed in the file)"
        )
    others = holds.without(scope_, target_)
    released: list[str] = []
    kept: list[dict[str, str]] = []
    applied: bool = False
    note: str | None = _no_object_holds(store)
    if isinstance(store, LockingStore):
        from archiver.retention import tags_reader

        tags_of = tags_reader(store, max_object_bytes)
        to_release: list[str] = []
        for item in _covered(store, scope_, target_, max_object_bytes):
            still = _still_held(item, others, policy_hold)
            if still is None:
                still = _index_doubt(store, item, tags_of, max_object_bytes)
            if still is None:
                to_release += item.keys
            else:
                kept += [{"key": k, "reason": still} for k in item.keys]
        applied, note = _put_holds(store, to_release, False, released)
    event = _Writer(store, clock, sanitize_text).write("clear", scope_, target_, why, who, current)
    return HoldResult(event, True, applied, released, kept, note)


@dataclass(slots=True)
class SyncReport:
    checked: int = 0
    set_on: list[str] = field(default_factory=list)
    set_off: list[str] = field(default_factory=list)
    applied_to_objects: bool = True
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "checkedObjects": self.checked,
            "setOn": self.set_on,
            "setOff": self.set_off,
            "appliedToObjects": self.applied_to_objects,
        }
        if self.note is not None:
            out["note"] = self.note
        return out


def sync_object_holds(
    store: ObjectStore,
    *,
    policy_hold: PolicyHold | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> SyncReport:
    """Make every execution record's legal hold match the holds in force (events and the policy
    file's ``policy_hold``): ON where held, OFF where not. Reads each object's lock (one HEAD),
    writes only what differs. Memory and local stores: nothing to do (``appliedToObjects``
    false)."""
    report = SyncReport()
    if not isinstance(store, LockingStore):
        report.applied_to_objects, report.note = False, _no_object_holds(store)
        return report
    from archiver.retention import tags_reader

    tags_of = tags_reader(store, max_object_bytes)
    holds = active_holds(store, max_object_bytes=max_object_bytes)
    items = _covered(store, "workflow", None, max_object_bytes)
    for n, item in enumerate(items, 1):
        if item.workflow_id is None:  # archived and unreadable: left as it is
            continue
        want = _still_held(item, holds, policy_hold) is not None
        doubt: str | None = None if want else ""  # "": not checked yet
        for key in item.keys:
            report.checked += 1
            try:
                state = store.object_lock(key)
            except NotFound:
                continue
            if state.legal_hold == want:
                continue
            if doubt == "":  # a release: only on facts the records confirm
                doubt = _index_doubt(store, item, tags_of, max_object_bytes)
            if doubt is not None and not want:
                continue
            applied, note = _put_holds(
                store, [key], want, report.set_on if want else report.set_off
            )
            if not applied:
                report.applied_to_objects, report.note = False, note
                return report
        if progress is not None:
            progress(n, len(items))
    return report
