"""The archive: capture snapshots and final states into a write-once store, read them back.

Write order (invariant 2): content blob → version commit → execution record → (index row, via the
observers). A crash between two steps leaves at worst an unreferenced blob or version, never a
record that points at nothing.

Object Lock (stores with :class:`~archiver.store.base.LockingStore` and a lock mode configured):
execution records (``snapshot.json.zst``, ``result.json.zst``) are locked until ``receivedAt`` (the
server's clock when it took the capture; ``createdAt`` in older records) + the fewest days the retention policy can keep them (:func:`earliest_keep_days`), so expiry can
delete them exactly when the policy allows; ``"never"`` falls back to the store's default
(now + ``object_lock_days``), as do blobs, version commits and events. A record of an execution
under a legal hold (its id or workflow, in a hold event or the policy file) is written with the
legal hold ON in the same request; the hold events are read through a :class:`HoldCache`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from archiver.capture import PreparedCache, PreparedWorkflow
from archiver.codec import (
    DEFAULT_MAX_OBJECT_BYTES,
    decode_blob,
    decode_record,
    encode_blob,
    encode_record,
    record_digest,
)
from archiver.errors import (
    ImmutableConflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    ObjectArchived,
)
from archiver.final_state import NON_TERMINAL_STATUSES, FinalState, parse_final_state
from archiver.holds import HoldCache
from archiver.layout import (
    blob_key,
    check_id,
    execution_prefix,
    is_progress_key,
    progress_key,
    result_key,
    snapshot_key,
)
from archiver.model import CaptureWarning, ExecutionSnapshot, VersionCommit, WorkflowSnapshot
from archiver.request import CAPTURE_SOURCES
from archiver.sanitize import Sanitizer
from archiver.store.base import LockingStore, ObjectStore
from archiver.timebounds import TimeBounds
from archiver.timeutil import parse_ts, utcnow
from archiver.versioning import VersionChains

if TYPE_CHECKING:
    from archiver.retention import RetentionPolicy

__all__ = ["Archive", "CaptureResult", "FinalStateResult", "WrittenObject", "earliest_keep_days"]

_log = logging.getLogger(__name__)

SNAPSHOT_KIND = "execution-snapshot"
FINAL_STATE_KIND = "final-state"

# Fields a re-send may leave out and the server fills in: not part of "same content".
# ``warnings`` are derived from the structure (which the hash covers): a re-send of a record
# stored before warnings existed, or by a build that words them differently, is the same capture.
_SERVER_FIELDS = frozenset(
    {"id", "createdAt", "receivedAt", "snapshotVersion", "versionSeq", "warnings"}
)


@dataclass(frozen=True, slots=True)
class WrittenObject:
    """An object a capture wrote; ``stored_bytes`` is 0 when it already existed and was reused."""

    key: str
    stored_bytes: int
    raw_bytes: int


@dataclass(frozen=True, slots=True)
class CaptureResult:
    snapshot: ExecutionSnapshot
    created: bool  # False: an identical snapshot was already stored (idempotent re-send)
    record: WrittenObject | None = None
    blob: WrittenObject | None = None


@dataclass(frozen=True, slots=True)
class FinalStateResult:
    final_state: FinalState
    created: bool
    record: WrittenObject | None = None


_UNKNOWN = object()  # a status not known yet (the snapshot is written before the run ends)


def earliest_keep_days(
    policy: RetentionPolicy, workflow_id: str, status: object = _UNKNOWN
) -> int | None:
    """The fewest days ``policy`` can keep an execution of ``workflow_id`` (None: never expires).

    Overrides only lengthen one another (the longest wins), but an override replaces the default,
    so a status or tag override shorter than the default can let an execution expire earlier than
    ``keep_days``. The lock must never outlast the policy: with the status unknown (a snapshot)
    every status override counts as possible, and tags (added later) always do.
    """

    def keep(rule: Any) -> int | str | None:
        return None if rule is None else rule.keep_days

    fixed = [keep(policy.workflows.get(workflow_id))]
    if status is not _UNKNOWN and status is not None:
        fixed.append(keep(policy.statuses.get(str(status))))
    fixed_days = [k for k in fixed if k is not None]
    if fixed_days:  # later overrides can only lengthen these
        if any(k == "never" for k in fixed_days):
            return None
        return max(int(k) for k in fixed_days)
    possible: list[int | str] = [policy.keep_days]
    if status is _UNKNOWN:
        possible += [k for k in (keep(r) for r in policy.statuses.values()) if k is not None]
    possible += [k for k in (keep(r) for r in policy.tags.values()) if k is not None]
    days = [int(k) for k in possible if k != "never"]
    return min(days) if days else None


def _archived(exec_id: str) -> ObjectArchived:
    """The one error of every read of an archived execution (API: 409 ``archived`` with the
    restore route)."""
    return ObjectArchived(
        f"execution {exec_id} is archived in the cold tier; restore it first",
        execution_id=exec_id,
    )


def _lock_until(start: datetime, days: int, now: datetime) -> datetime:
    """``start`` + ``days``, from a start no later than ``now`` (a record written before captures
    were bounded may say year 9999: its lock must still end) and never overflowing."""
    try:
        return min(start, now) + timedelta(days=days)
    except OverflowError:
        return now + timedelta(days=days)


SnapshotObserver = Callable[[CaptureResult], None]
FinalStateObserver = Callable[[ExecutionSnapshot, FinalStateResult], None]


class Archive:
    """Capture and read execution snapshots. Stores and keys are passed in, never global."""

    def __init__(
        self,
        store: ObjectStore,
        sanitizer: Sanitizer,
        *,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        clock: Callable[[], datetime] = utcnow,
        blob_cache_size: int = 256,
        retention_policy: RetentionPolicy | None = None,
        hold_cache: HoldCache | None = None,
        time_bounds: TimeBounds | None = None,
    ) -> None:
        self.store = store
        #: how far client timestamps may stray from ``clock`` (``archiver.timebounds``)
        self.time_bounds = time_bounds or TimeBounds()
        #: the policy execution records are locked by (None: the store's default retention)
        self.retention_policy = retention_policy
        #: the legal holds in force, for records written on a locking store
        self.hold_cache = hold_cache
        if hold_cache is None and isinstance(store, LockingStore) and store.object_lock_enabled:
            self.hold_cache = HoldCache(store, max_object_bytes=max_object_bytes)
        self.sanitizer = sanitizer
        self.max_object_bytes = max_object_bytes
        self._clock = clock
        self._blob_cache: OrderedDict[str, bytes] = OrderedDict()
        self._blob_cache_size = blob_cache_size
        self._prepared = PreparedCache()
        self._cache_lock = threading.Lock()
        self.versions = VersionChains(store, self._structure_by_hash)
        self.snapshot_observers: list[SnapshotObserver] = []
        self.final_state_observers: list[FinalStateObserver] = []

    # ------------------------------------------------------------------ structure blobs

    def _structure_jcs(self, snapshot_hash: str) -> bytes:
        with self._cache_lock:
            cached = self._blob_cache.get(snapshot_hash)
            if cached is not None:
                self._blob_cache.move_to_end(snapshot_hash)
                return cached
        raw = decode_blob(
            self.store.get(blob_key(snapshot_hash)), snapshot_hash, max_size=self.max_object_bytes
        )
        self._remember(snapshot_hash, raw)
        return raw

    def _remember(self, snapshot_hash: str, raw: bytes) -> None:
        """Cache structure bytes under their hash; callers pass only bytes verified against it."""
        with self._cache_lock:
            self._blob_cache[snapshot_hash] = raw
            while len(self._blob_cache) > self._blob_cache_size:
                self._blob_cache.popitem(last=False)

    def _structure_by_hash(self, snapshot_hash: str) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self._structure_jcs(snapshot_hash))
        return parsed

    def _write_blob(self, prepared: PreparedWorkflow) -> WrittenObject:
        """Store the structure once (``stored_bytes`` is 0 when it was already stored).

        Asked of the store every time (one HEAD), never of a memory of earlier captures: retention
        may have expired the blob since, and a record must never point at a missing object.
        """
        key = blob_key(prepared.snapshot_hash)
        if self.store.head(key) is not None:
            return WrittenObject(key, 0, len(prepared.structure_jcs))
        data = encode_blob(prepared.structure_jcs)
        try:
            self.store.put(key, data)
        except ImmutableConflict:
            # Same content compressed by another zstd build: fine if the stored blob verifies.
            decode_blob(self.store.get(key), prepared.snapshot_hash, max_size=self.max_object_bytes)
        if hashlib.sha256(prepared.structure_jcs).hexdigest() == prepared.snapshot_hash:
            self._remember(prepared.snapshot_hash, prepared.structure_jcs)  # verified bytes only
        return WrittenObject(key, len(data), len(prepared.structure_jcs))

    def _recheck_blob(self, prepared: PreparedWorkflow) -> None:
        """After the record is written, ask again for a blob that was already stored: an
        ``expire`` run that scanned before the record existed may have deleted it in between.
        Put back (same bytes) if so. ``expire`` covers the other order: after deleting blobs it
        reads the records its scan did not see and puts back what they reference."""
        key = blob_key(prepared.snapshot_hash)
        if self.store.head(key) is None:
            _log.warning("structure blob %s vanished during capture (expiry?): put back", key)
            with contextlib.suppress(ImmutableConflict):  # put back by expire meanwhile
                self.store.put(key, encode_blob(prepared.structure_jcs))

    # ------------------------------------------------------------------ capture

    def capture_snapshot(
        self,
        *,
        execution_id: object,
        workflow: Any,
        workflow_id: object | None = None,
        variables: Any = None,
        trigger_type: str | None = None,
        trigger_data: Any = None,
        user_id: object | None = None,
        created_at: object | None = None,
        replay_of: object | None = None,
        source: object | None = None,
        backfill: bool = False,
    ) -> CaptureResult:
        """Store the pre-execution snapshot of ``execution_id``; idempotent for identical input.

        ``created_at`` must lie in the window of :attr:`time_bounds` around the server's clock;
        ``backfill`` (the caller has the ``backfill`` scope) allows older times, back to
        ``archiver.timebounds.EARLIEST``. The record also carries ``receivedAt``, the clock's
        time now, whatever ``created_at`` says.

        ``source`` marks a capture not taken before the run (``archiver.request.CAPTURE_SOURCES``):
        ``"backfill"`` needs ``backfill`` (the scope), and its structure, when the workflow's
        chain already holds it, runs under that version rather than a new head (a backfill
        reaches into the past: it must not append "restores" commits to a live chain).
        """
        exec_id = check_id(execution_id, "executionId")
        prepared = self._prepared.prepare(workflow, self.sanitizer)
        wf_id_raw = workflow_id if workflow_id is not None else prepared.workflow.workflow_id
        if wf_id_raw is None:
            raise InvalidInput(
                "workflowId is required (in the request or the workflow)", field="workflowId"
            )
        wf_id = check_id(wf_id_raw, "workflowId")
        user = "system" if user_id is None else check_id(user_id, "userId")
        replay = None if replay_of is None else check_id(replay_of, "replayOf")
        if source is not None and source not in CAPTURE_SOURCES:
            raise InvalidInput(
                "source must be one of: " + ", ".join(CAPTURE_SOURCES), field="source"
            )
        if source == "backfill" and not backfill:
            raise InvalidInput(
                "source backfill needs the backfill scope (execvault put --backfill)",
                field="source",
            )
        now = self._clock()
        when = now if created_at is None else parse_ts(created_at, "createdAt")
        if trigger_type is None:
            enabled = [t for t in prepared.triggers if not t.disabled]
            trigger_type = enabled[0].kind if enabled else "unknown"
        elif not isinstance(trigger_type, str) or not trigger_type or len(trigger_type) > 64:
            raise InvalidInput("triggerType must be a short string", field="triggerType")
        variables_clean = self._variables(variables)
        trigger_clean = self.sanitizer.sanitize(trigger_data) if trigger_data is not None else None

        structure = prepared.structure
        wf = prepared.workflow

        def build(commit: VersionCommit | None) -> ExecutionSnapshot:
            version = commit.version if commit else "0.0.0"
            return ExecutionSnapshot(
                id="es_" + hashlib.sha256(f"execvault:{exec_id}".encode()).hexdigest()[:26],
                execution_id=exec_id,
                workflow_id=wf_id,
                snapshot_version=version,
                snapshot_hash=prepared.snapshot_hash,
                workflow_snapshot=WorkflowSnapshot(
                    id=wf_id,
                    name=wf.name,
                    description=wf.description,
                    active=wf.active,
                    nodes=structure["nodes"],
                    connections=structure["connections"],
                    settings=structure["settings"],
                    version=version,
                    tags=tuple(wf.tags),
                    version_id=wf.version_id,
                ),
                variables_snapshot=variables_clean,
                credentials_refs=prepared.credentials_refs,
                triggers_snapshot=prepared.triggers,
                user_id=user,
                trigger_type=trigger_type,
                created_at=when,
                version_seq=commit.seq if commit else 0,
                trigger_data=trigger_clean,
                pin_data=prepared.pin_data,
                node_identity=wf.node_identity,
                replay_of=replay,
                warnings=tuple(CaptureWarning.from_json(w) for w in wf.warnings),
                received_at=now,
                source=None if source is None else str(source),
            )

        # A re-send must not move the version chain: answer it from what is stored.
        existing = self._existing_snapshot(exec_id)
        if existing is not None:
            same = self._same_or_conflict(existing[0], build(None), created_at is not None)
            return self._resent(same, existing[1])

        # before anything is written: no blob, version or record for a time out of bounds
        self.time_bounds.check_created_at(when, now, backfill=backfill)
        blob = self._write_blob(prepared)
        commit = self.versions.assign(
            wf_id,
            prepared.snapshot_hash,
            structure,
            created_at=when,
            execution_id=exec_id,
            user_id=user,
            reuse=source == "backfill",
        )
        snapshot = build(commit)
        data = encode_record(SNAPSHOT_KIND, snapshot.record_body())
        key = snapshot_key(exec_id)
        try:
            created = self._put_record(key, data, snapshot, _UNKNOWN)
        except ImmutableConflict:
            # Someone stored this execution between our read and our write.
            existing = self._existing_snapshot(exec_id)
            if existing is None:
                raise
            same = self._same_or_conflict(existing[0], snapshot, created_at is not None)
            return self._resent(same, existing[1])
        if not created:
            return self._resent(CaptureResult(snapshot, created=False), len(data))
        if blob.stored_bytes == 0:
            self._recheck_blob(prepared)
        result = CaptureResult(
            snapshot, created=True, record=WrittenObject(key, len(data), 0), blob=blob
        )
        for observer in self.snapshot_observers:
            observer(result)
        return result

    def record_engine_version(
        self,
        *,
        workflow: Any,
        workflow_id: object,
        created_at: object,
        engine_version_id: object,
    ) -> tuple[VersionCommit, bool]:
        """A version the engine saved (n8n's ``workflow_history``) as a commit of the workflow's
        chain, with no execution: ``(commit, created)``. Idempotent: when the chain already holds
        the structure, that commit is returned (``created=False``) and nothing is written; a
        backfill, so ``created_at`` may be old (back to ``timebounds.EARLIEST``)."""
        wf_id = check_id(workflow_id, "workflowId")
        engine_id = check_id(engine_version_id, "versionId")
        prepared = self._prepared.prepare(workflow, self.sanitizer)
        now = self._clock()
        when = parse_ts(created_at, "createdAt")
        self.time_bounds.check_created_at(when, now, backfill=True)
        before = self.versions.head(wf_id)
        held = [
            c for c in self.versions.history(wf_id) if c.snapshot_hash == prepared.snapshot_hash
        ]
        if held:
            return held[-1], False
        blob = self._write_blob(prepared)
        commit = self.versions.assign(
            wf_id,
            prepared.snapshot_hash,
            prepared.structure,
            created_at=when,
            reuse=True,
            source="backfill",
            engine_version_id=engine_id,
        )
        if blob.stored_bytes == 0:
            self._recheck_blob(prepared)
        return commit, before is None or commit.seq != before.seq

    def _variables(self, variables: Any) -> dict[str, Any] | None:
        if variables is None:
            return None
        if isinstance(variables, list):
            as_dict: dict[str, Any] = {}
            for i, item in enumerate(variables):
                if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                    raise InvalidInput(
                        "variables as a list need {key, value} objects", field=f"variables[{i}]"
                    )
                as_dict[item["key"]] = item.get("value")
            variables = as_dict
        if not isinstance(variables, dict):
            raise InvalidInput(
                "variables must be an object or a list of {key, value}", field="variables"
            )
        clean: dict[str, Any] = self.sanitizer.sanitize(variables)
        return clean

    def _existing_snapshot(self, execution_id: str) -> tuple[ExecutionSnapshot, int] | None:
        try:
            return self.read_snapshot_record(execution_id)
        except NotFound:
            return None

    def _resent(self, result: CaptureResult, stored_bytes: int) -> CaptureResult:
        """An identical re-send: answered from the stored record, and told to the observers too
        (with ``created=False``): the first attempt may have stored the record and then failed
        before its index row was buffered (a lost answer, a crash), so the index may lack it."""
        snap = result.snapshot
        resent = CaptureResult(
            snap,
            created=False,
            record=WrittenObject(snapshot_key(snap.execution_id), stored_bytes, 0),
            blob=WrittenObject(
                blob_key(snap.snapshot_hash), 0, len(self._structure_jcs(snap.snapshot_hash))
            ),
        )
        for observer in self.snapshot_observers:
            observer(resent)
        return resent

    @staticmethod
    def _same_or_conflict(
        existing: ExecutionSnapshot, candidate: ExecutionSnapshot, time_given: bool
    ) -> CaptureResult:
        ignore = _SERVER_FIELDS if not time_given else _SERVER_FIELDS - {"createdAt"}
        a = {k: v for k, v in existing.record_body().items() if k not in ignore}
        b = {k: v for k, v in candidate.record_body().items() if k not in ignore}
        if a != b:
            raise ImmutableConflict(
                f"execution {existing.execution_id} already has a different snapshot",
                key=snapshot_key(existing.execution_id),
            )
        return CaptureResult(existing, created=False)

    # ------------------------------------------------------------------ final state

    def check_final_state(self, execution_id: object, payload: Mapping[str, Any]) -> FinalState:
        """Parse and check a final-state payload as :meth:`record_final_state` would (sanitized,
        times within bounds), writing nothing: for a caller that must know a record is good
        before it writes anything (``archiver.n8n_import``); hand the result to
        ``record_final_state(..., checked=...)`` to store it without parsing it again."""
        exec_id = check_id(execution_id, "executionId")
        if not isinstance(payload, Mapping):
            raise InvalidInput("final state must be a JSON object", field="body")
        final = parse_final_state(payload, execution_id=exec_id, sanitize=self.sanitizer.sanitize)
        now = self._clock()
        finished = "finishedAt" if payload.get("finishedAt") is not None else "stoppedAt"
        self.time_bounds.check_sane(final.started_at, now, "startedAt")
        self.time_bounds.check_sane(final.finished_at, now, finished)
        return final

    def record_final_state(
        self,
        execution_id: object,
        payload: Mapping[str, Any],
        *,
        checked: FinalState | None = None,
    ) -> FinalStateResult:
        """Store how ``execution_id`` ended, once. The snapshot must exist; it is never rewritten.

        A non-terminal report (``waiting``, ``running``, ``new``: an execution that waits is
        reported again when it ends) is stored as its own create-only progress record, named by
        its content: an identical report is idempotent, the terminal final state stays write-once.
        ``checked``: what :meth:`check_final_state` made of this ``payload`` (not parsed again).
        """
        exec_id = check_id(execution_id, "executionId")
        if not isinstance(payload, Mapping):
            raise InvalidInput("final state must be a JSON object", field="body")
        if checked is not None and checked.execution_id != exec_id:
            raise InvalidInput(
                "the checked final state is another execution's", field="executionId"
            )
        try:
            snapshot = self.get_snapshot(exec_id)
        except NotFound:
            if self.store.head(snapshot_key(exec_id)) is not None:
                raise  # the snapshot is there, something it needs is not
            raise NotFound(
                f"no snapshot for execution {exec_id}: capture the snapshot first "
                "(POST /api/execution-snapshots); sending this final state again afterwards "
                "is safe (an identical re-send is idempotent)"
            ) from None
        final = checked if checked is not None else self.check_final_state(exec_id, payload)
        body = final.to_json()
        data = encode_record(FINAL_STATE_KIND, body)
        if final.status in NON_TERMINAL_STATUSES:
            key = progress_key(exec_id, final.status, record_digest(body).removeprefix("sha256:"))
            ended = result_key(exec_id)
            if self.store.head(key) is None and self.store.head(ended) is not None:
                raise ImmutableConflict(
                    f"execution {exec_id} already has its final state; "
                    f"a {final.status} report cannot follow it",
                    key=ended,
                )
            try:
                created = self._put_record(key, data, snapshot, final.status)
            except ImmutableConflict:
                created = False  # the same body (the key is its digest), other bytes
        else:
            key = result_key(exec_id)
            try:
                created = self._put_record(key, data, snapshot, final.status)
            except ImmutableConflict:
                raise ImmutableConflict(
                    f"execution {exec_id} already has a different final state", key=key
                ) from None
        result = FinalStateResult(final, created, WrittenObject(key, len(data), 0))
        # An identical re-send (created=False) is told too: its first attempt may have stored the
        # record without its index row being buffered (see _resent).
        for observer in self.final_state_observers:
            observer(snapshot, result)
        return result

    # ------------------------------------------------------------------ Object Lock

    def _put_record(
        self, key: str, data: bytes, snapshot: ExecutionSnapshot, status: object
    ) -> bool:
        """Write an execution record; on a locking store with its own retain-until date (from
        the policy) and, for a held execution, its legal hold."""
        store = self.store
        if not isinstance(store, LockingStore) or not store.object_lock_enabled:
            return self.store.put(key, data)
        retain_until = None  # the store's default: now + object_lock_days
        policy = self.retention_policy
        if policy is not None:
            days = earliest_keep_days(policy, snapshot.workflow_id, status)
            if days is not None:
                retain_until = _lock_until(snapshot.retention_start, days, self._clock())
        return store.put_locked(
            key, data, retain_until=retain_until, legal_hold=self._held(snapshot) is not None
        )

    def _held(self, snapshot: ExecutionSnapshot) -> str | None:
        """Why the execution is under a legal hold now (its id or its workflow), or None."""
        policy = self.retention_policy
        if policy is not None:
            reason = policy.hold_reason(snapshot.execution_id, snapshot.workflow_id, ())
            if reason is not None:
                return reason
        if self.hold_cache is None:
            return None
        return self.hold_cache.current().reason_for(snapshot.execution_id, snapshot.workflow_id, ())

    # ------------------------------------------------------------------ reads

    def get_snapshot(self, execution_id: object) -> ExecutionSnapshot:
        """The execution record (GET, verified) and its structure blob (verified when read; the
        process keeps verified blobs by hash); IntegrityError for a record that names another
        execution."""
        return self.read_snapshot_record(execution_id)[0]

    def read_snapshot_record(self, execution_id: object) -> tuple[ExecutionSnapshot, int]:
        """:meth:`get_snapshot` and the size of the record as stored."""
        exec_id = check_id(execution_id, "executionId")
        data = self.snapshot_record(exec_id)
        body = decode_record(data, SNAPSHOT_KIND, max_size=self.max_object_bytes)
        if body.get("executionId") != exec_id:
            # a valid record copied under another execution's key: never served as this one
            raise IntegrityError(
                f"the snapshot record stored for execution {exec_id} names another execution"
            )
        structure = self._structure_by_hash(body["snapshotHash"])
        return ExecutionSnapshot.from_record(body, structure), len(data)

    def snapshot_record(self, execution_id: object) -> bytes:
        """The stored bytes of the execution's snapshot record, as they are (not decoded).

        NotFound for an unknown execution; ObjectArchived (with the execution id, so the API
        answers 409 ``archived`` with the restore route) for one in the cold tier."""
        exec_id = check_id(execution_id, "executionId")
        data = self._read_record(snapshot_key(exec_id), exec_id)
        if data is None:
            raise NotFound(f"no snapshot for execution {exec_id}")
        return data

    def _read_record(self, key: str, exec_id: str) -> bytes | None:
        """The bytes of one of the execution's records; None when absent. Archived — in a cold
        storage class (S3 answers InvalidObjectState), or moved to the cold store (one LIST of
        its tier events, only when the object is missing) — is the same ObjectArchived for
        every record of every execution."""
        try:
            return self.store.get(key)
        except NotFound:
            self._raise_if_cold_moved(exec_id)
            return None
        except ObjectArchived:
            raise _archived(exec_id) from None

    def _raise_if_cold_moved(self, exec_id: str) -> None:
        """A missing object of an execution retention moved to its cold store is archived (409
        with the restore route), not unknown: one LIST of its tier events (archiver.retention)."""
        from archiver.retention import is_cold_moved  # retention builds on this module's peers

        if is_cold_moved(self.store, exec_id):
            raise _archived(exec_id)

    def get_final_state(self, execution_id: object) -> FinalState | None:
        found = self.read_final_state_record(execution_id)
        return None if found is None else found[0]

    def read_final_state_record(
        self, execution_id: object, key: str | None = None
    ) -> tuple[FinalState, int] | None:
        """The final state (verified; IntegrityError when it names another execution) and the
        size of its record as stored; None when the execution has none. ``key`` reads one of the
        execution's progress records instead (a waiting execution's report)."""
        exec_id = check_id(execution_id, "executionId")
        if key is None:
            key = result_key(exec_id)
        elif not (is_progress_key(key) and key.startswith(execution_prefix(exec_id))):
            raise InvalidInput("not a progress record of this execution", field="key")
        data = self._read_record(key, exec_id)
        if data is None:
            return None
        body = decode_record(data, FINAL_STATE_KIND, max_size=self.max_object_bytes)
        body.pop("kind", None)
        final = FinalState.from_json(body)
        if final.execution_id != exec_id:
            raise IntegrityError(
                f"the final-state record stored for execution {exec_id} names another execution"
            )
        return final, len(data)

    def structure_size(self, snapshot_hash: str) -> int:
        """Bytes of the canonical structure ``snapshot_hash`` (read and verified once)."""
        return len(self._structure_jcs(snapshot_hash))

    def get_progress(self, execution_id: object) -> FinalState | None:
        """The latest non-terminal report of ``execution_id`` (by store write time, then key), or
        None when it has none."""
        exec_id = check_id(execution_id, "executionId")
        infos = [i for i in self.store.list(execution_prefix(exec_id)) if is_progress_key(i.key)]
        epoch = datetime.min.replace(tzinfo=UTC)
        for info in sorted(infos, key=lambda i: (i.last_modified or epoch, i.key), reverse=True):
            # the same verified read as the final state's (a record naming another execution
            # is an IntegrityError); None when it was removed meanwhile (retention)
            found = self.read_final_state_record(exec_id, info.key)
            if found is not None:
                return found[0]
        return None

    def get_outcome(self, execution_id: object) -> FinalState | None:
        """The final state when the execution has ended, else its latest progress report."""
        final = self.get_final_state(execution_id)
        return final if final is not None else self.get_progress(execution_id)

    def snapshot_version(self, workflow_id: object) -> str:
        """The head version of a workflow's chain; NotFound when it has none."""
        wf_id = check_id(workflow_id, "workflowId")
        head = self.versions.head(wf_id)
        if head is None:
            raise NotFound(f"workflow {wf_id} has no versions")
        return head.version

    def version_history(self, workflow_id: object) -> list[VersionCommit]:
        wf_id = check_id(workflow_id, "workflowId")
        commits = self.versions.history(wf_id)
        if not commits:
            raise NotFound(f"workflow {wf_id} has no versions")
        return commits
