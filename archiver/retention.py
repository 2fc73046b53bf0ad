"""Retention: the policy, the plan (what would move to cold and what would expire), the native S3
lifecycle configuration generated from the same policy, and expiry.

Nothing here changes storage except :func:`expire`. The objects are the source of truth: the plan
reads every execution record (``executions/…/snapshot.json.zst``, and ``result.json.zst`` for the
final status), the current tags (``archiver.events``) and the object listing (sizes, storage
classes). See ``docs/retention.md``.

Policy resolution for one execution:

* the default ``hot_days`` / ``keep_days``;
* every override that applies (its workflow, its final status, each tag it currently holds) may set
  ``hot_days`` and/or ``keep_days``; when several apply, the **longest** value wins (``never``,
  i.e. keep forever, beats any number) — retention errs on the side of keeping;
* a legal hold (on the execution, its workflow or one of its current tags) means never expire.

Expiry deletes the snapshot record first, then the final state, then structure blobs that no
retained snapshot references any more. A store that refuses a delete because of Object Lock
(:class:`~archiver.errors.RetentionLocked`) leaves the object in place and the execution is reported
as *retained (locked)*, not as an error. Every deletion leaves a write-once tombstone object under
``events/tombstones/`` and a row in ``index/retention_events/dt=YYYY-MM-DD/``.
"""

from __future__ import annotations

import contextlib
import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from archiver.codec import DEFAULT_MAX_OBJECT_BYTES, decode_record, encode_record
from archiver.errors import ArchiveError, InvalidInput, NotFound, RetentionLocked
from archiver.events import EventLog
from archiver.holds import HoldSet, active_holds
from archiver.layout import blob_key, execution_prefix
from archiver.store.base import ObjectStore
from archiver.timeutil import format_ts, parse_ts, utcnow

__all__ = [
    "COLD_STORAGE_CLASSES",
    "RETENTION_EVENTS_SCHEMA",
    "ArchiveReport",
    "ExecutionInfo",
    "ExpiryReport",
    "LifecycleUnsupported",
    "RetentionPlan",
    "RetentionPolicy",
    "Rule",
    "apply_lifecycle",
    "archive_cold",
    "expire",
    "lifecycle_configuration",
    "load_policy",
    "plan",
    "rebuild_retention_index",
    "restore_execution",
    "scan",
]

COLD_STORAGE_CLASSES: Final = ("GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
HOT_STORAGE_CLASSES: Final = frozenset(
    {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "REDUCED_REDUNDANCY"}
)
TOMBSTONE_KIND: Final = "tombstone"
TOMBSTONE_PREFIX: Final = "events/tombstones/"
TIER_KIND: Final = "tier-event"
TIER_PREFIX: Final = "events/tiers/"
RETENTION_TABLE: Final = "retention_events"
_SNAPSHOT_KIND: Final = "execution-snapshot"
_FINAL_STATE_KIND: Final = "final-state"
_NEVER: Final = "never"

_TS = pa.timestamp("ms", tz="UTC")
RETENTION_EVENTS_SCHEMA: Final = pa.schema(
    [
        ("event_id", pa.string()),
        ("action", pa.string()),
        ("object_kind", pa.string()),
        ("execution_id", pa.string()),
        ("workflow_id", pa.string()),
        ("snapshot_hash", pa.string()),
        ("deleted_keys", pa.list_(pa.string())),
        ("storage_class", pa.string()),
        ("stored_bytes", pa.int64()),
        ("reason", pa.string()),
        ("policy", pa.string()),
        ("created_at", _TS),
        ("object_key", pa.string()),
    ]
)


# --------------------------------------------------------------------------------------------
# the policy


@dataclass(frozen=True, slots=True)
class Rule:
    """An override: None leaves the value to the default; ``keep_days`` may be ``"never"``."""

    hot_days: int | None = None
    keep_days: int | str | None = None


def _days(value: object, field_name: str, *, allow_never: bool) -> int | str | None:
    if value is None:
        return None
    if allow_never and value == _NEVER:
        return _NEVER
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        never = ' or "never"' if allow_never else ""
        raise InvalidInput(f"{field_name} must be a whole number of days{never}", field=field_name)
    return value


def _rule(value: object, where: str) -> Rule:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where} must be a table", field=where)
    unknown = set(value) - {"hot_days", "keep_days"}
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {sorted(unknown)}", field=where)
    hot = _days(value.get("hot_days"), f"{where}.hot_days", allow_never=False)
    keep = _days(value.get("keep_days"), f"{where}.keep_days", allow_never=True)
    assert hot is None or isinstance(hot, int)
    return Rule(hot, keep)


def _longest(values: Iterable[int | str]) -> int | str:
    best: int | str = -1
    for value in values:
        if value == _NEVER:
            return _NEVER
        assert isinstance(value, int) and isinstance(best, int)
        best = max(best, value)
    return best


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days hot before cold archiving, days kept before expiry, overrides and legal holds."""

    name: str = "default"
    hot_days: int = 30
    #: days from creation until an execution may expire; "never" keeps everything
    keep_days: int | str = 365
    #: storage-class transitions of execution objects by age (days, class), oldest tier last
    transitions: tuple[tuple[int, str], ...] = ()
    cold_storage_class: str = "GLACIER_IR"
    workflows: Mapping[str, Rule] = field(default_factory=dict)
    statuses: Mapping[str, Rule] = field(default_factory=dict)
    tags: Mapping[str, Rule] = field(default_factory=dict)
    hold_executions: frozenset[str] = frozenset()
    hold_workflows: frozenset[str] = frozenset()
    hold_tags: frozenset[str] = frozenset()
    abort_multipart_days: int = 7
    #: a second store execution objects are copied to when they go cold (``s3://bucket/prefix``,
    #: ``local:/path``, ``file:///path``); None: storage classes on the hot store (S3) instead
    cold_store: str | None = None

    def __post_init__(self) -> None:
        if self.cold_store is not None:
            normalize_cold_url(self.cold_store)
        if self.cold_storage_class not in COLD_STORAGE_CLASSES:
            raise InvalidInput(
                f"cold_storage_class must be one of {', '.join(COLD_STORAGE_CLASSES)}",
                field="cold_storage_class",
            )
        for days, cls in self.transitions:
            if cls not in COLD_STORAGE_CLASSES:
                raise InvalidInput(
                    f"transition storage class must be one of {', '.join(COLD_STORAGE_CLASSES)}",
                    field="transitions",
                )
            if days < 0:
                raise InvalidInput("transition days must be >= 0", field="transitions")
        if self.abort_multipart_days < 1:
            raise InvalidInput("abort_multipart_days must be >= 1", field="abort_multipart_days")

    @property
    def tiers(self) -> tuple[tuple[int, str], ...]:
        """The transitions, or (hot_days, cold_storage_class) when none are configured."""
        if self.transitions:
            return tuple(sorted(self.transitions))
        return ((self.hot_days, self.cold_storage_class),)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RetentionPolicy:
        section = data.get("retention", data)
        if not isinstance(section, Mapping):
            raise InvalidInput("[retention] must be a table", field="retention")
        known = {
            "name",
            "hot_days",
            "keep_days",
            "cold_storage_class",
            "transitions",
            "workflows",
            "statuses",
            "tags",
            "legal_hold",
            "abort_multipart_days",
            "cold_store",
        }
        unknown = set(section) - known
        if unknown:
            raise InvalidInput(f"unknown retention keys: {sorted(unknown)}", field="retention")
        hot = _days(section.get("hot_days", 30), "hot_days", allow_never=False)
        keep = _days(section.get("keep_days", 365), "keep_days", allow_never=True)
        assert isinstance(hot, int) and keep is not None
        transitions = []
        for item in section.get("transitions", []):
            if not isinstance(item, Mapping) or set(item) != {"days", "storage_class"}:
                raise InvalidInput(
                    'each transition is {days = N, storage_class = "GLACIER"}',
                    field="transitions",
                )
            days = _days(item["days"], "transitions.days", allow_never=False)
            assert isinstance(days, int)
            transitions.append((days, str(item["storage_class"])))
        holds = section.get("legal_hold", {})
        if not isinstance(holds, Mapping) or set(holds) - {"executions", "workflows", "tags"}:
            raise InvalidInput(
                "legal_hold holds executions, workflows and tags lists", field="legal_hold"
            )

        def rules(name: str) -> dict[str, Rule]:
            table = section.get(name, {})
            if not isinstance(table, Mapping):
                raise InvalidInput(f"{name} must be a table", field=name)
            return {str(k): _rule(v, f"{name}.{k}") for k, v in table.items()}

        def ids(name: str) -> frozenset[str]:
            values = holds.get(name, [])
            if not isinstance(values, list):
                raise InvalidInput(f"legal_hold.{name} must be a list", field="legal_hold")
            return frozenset(str(v) for v in values)

        return cls(
            name=str(section.get("name", "default")),
            hot_days=hot,
            keep_days=keep,
            transitions=tuple(transitions),
            cold_storage_class=str(section.get("cold_storage_class", "GLACIER_IR")),
            workflows=rules("workflows"),
            statuses=rules("statuses"),
            tags=rules("tags"),
            hold_executions=ids("executions"),
            hold_workflows=ids("workflows"),
            hold_tags=ids("tags"),
            abort_multipart_days=int(section.get("abort_multipart_days", 7)),
            cold_store=_cold_setting(section.get("cold_store")),
        )

    def resolve(
        self, workflow_id: str, status: str | None, tags: Iterable[str]
    ) -> tuple[int, int | str]:
        """(hot_days, keep_days) for an execution: the longest of the overrides that apply."""
        tag_list = list(tags)
        applicable = [self.workflows.get(workflow_id)]
        if status is not None:
            applicable.append(self.statuses.get(status))
        applicable += [self.tags.get(t) for t in tag_list]
        rules = [r for r in applicable if r is not None]
        hots = [r.hot_days for r in rules if r.hot_days is not None]
        keeps = [r.keep_days for r in rules if r.keep_days is not None]
        hot = max(hots) if hots else self.hot_days
        keep = _longest(keeps) if keeps else self.keep_days
        return hot, keep

    def hold_reason(self, execution_id: str, workflow_id: str, tags: Iterable[str]) -> str | None:
        if execution_id in self.hold_executions:
            return f"legal hold on execution {execution_id}"
        if workflow_id in self.hold_workflows:
            return f"legal hold on workflow {workflow_id}"
        for tag in sorted(tags):
            if tag in self.hold_tags:
                return f"legal hold on tag {tag}"
        return None


def _cold_setting(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("cold_store must be a store URL string", field="cold_store")
    return value


def normalize_cold_url(url: str) -> str:
    """The store URL of a ``cold_store`` setting: ``file:///path`` becomes ``local:/path``;
    ``s3://bucket/prefix``, ``local:/path`` and plain paths are kept (see store_from_url)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("cold_store must be a non-empty store URL", field="cold_store")
    url = url.strip()
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path or parts.query:
            raise InvalidInput(
                f"cold_store {url!r}: expected file:///absolute/path", field="cold_store"
            )
        return "local:" + parts.path
    if "://" in url and not url.startswith("s3://"):
        raise InvalidInput(
            f"cold_store {url!r}: use s3://bucket/prefix, local:/path or file:///path",
            field="cold_store",
        )
    return url


def load_policy(path: str | Path | None) -> RetentionPolicy:
    """The policy in a TOML file (a ``[retention]`` table, or the file's top level)."""
    if path is None:
        return RetentionPolicy()
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise InvalidInput(f"cannot read retention policy: {err}", field="policy") from None
    return RetentionPolicy.from_mapping(data)


# --------------------------------------------------------------------------------------------
# scanning the archive


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    execution_id: str
    workflow_id: str
    created_at: datetime
    snapshot_hash: str
    status: str | None
    tags: tuple[str, ...]
    #: key → (size, storage class) of the execution's objects (snapshot, result)
    objects: Mapping[str, tuple[int, str]]

    @property
    def stored_bytes(self) -> int:
        return sum(size for size, _ in self.objects.values())


@dataclass(frozen=True, slots=True)
class Scan:
    executions: tuple[ExecutionInfo, ...]
    #: blob key → size
    blobs: Mapping[str, int]
    #: final-state objects whose snapshot is gone (an expiry interrupted or refused part-way)
    orphans: Mapping[str, int] = field(default_factory=dict)
    #: archived (GLACIER / DEEP_ARCHIVE) executions without an archive event to describe them:
    #: neither moved nor expired (restore them, or rebuild their events, first)
    unreadable: tuple[str, ...] = ()


_NEEDS_RESTORE: Final = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def _last_archive_event(
    store: ObjectStore, execution_id: str, max_object_bytes: int
) -> dict[str, Any] | None:
    """The snapshot facts the latest ``archive`` tier event of the execution recorded."""
    where = execution_prefix(execution_id).split("/", 1)[1]
    found = None
    for info in sorted(store.list(f"{TIER_PREFIX}executions/{where}"), key=lambda i: i.key):
        with contextlib.suppress(NotFound):
            body = decode_record(store.get(info.key), TIER_KIND, max_size=max_object_bytes)
            if body.get("action") == "archive" and body.get("snapshotCreatedAt"):
                found = body
    if found is None:
        return None
    return {
        "workflowId": found["workflowId"],
        "createdAt": found["snapshotCreatedAt"],
        "snapshotHash": found["snapshotHash"],
        "status": found.get("status"),
    }


def scan(store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES) -> Scan:
    """Every execution (record, status, current tags, objects) and every blob of the store."""
    objects: dict[str, dict[str, tuple[int, str]]] = {}
    for info in store.list("executions/"):
        parts = info.key.split("/")
        if len(parts) != 4:
            continue
        objects.setdefault(parts[2], {})[info.key] = (info.size, info.storage_class or "STANDARD")
    blobs = {info.key: info.size for info in store.list("blobs/")}
    events = EventLog(store, max_object_bytes=max_object_bytes)
    tag_cache: dict[str, dict[str, list[str]]] = {}
    out: list[ExecutionInfo] = []
    orphans: dict[str, int] = {}
    unreadable: list[str] = []
    for execution_id, keys in sorted(objects.items()):
        snap_key = next((k for k in keys if k.endswith("/snapshot.json.zst")), None)
        if snap_key is None:
            orphans.update({k: size for k, (size, _) in keys.items()})
            continue
        status = None
        res_key = next((k for k in keys if k.endswith("/result.json.zst")), None)
        if keys[snap_key][1] in _NEEDS_RESTORE:
            # not readable without a restore: what the archive job recorded when it moved it
            recorded = _last_archive_event(store, execution_id, max_object_bytes)
            if recorded is None:
                unreadable.append(execution_id)
                continue
            body = recorded
            status = recorded.get("status")
        else:
            try:
                body = decode_record(store.get(snap_key), _SNAPSHOT_KIND, max_size=max_object_bytes)
            except NotFound:
                continue
            if res_key is not None:
                with contextlib.suppress(NotFound):
                    final = decode_record(
                        store.get(res_key), _FINAL_STATE_KIND, max_size=max_object_bytes
                    )
                    if final.get("status") is not None:
                        status = str(final["status"])
        workflow_id = str(body["workflowId"])
        if workflow_id not in tag_cache:
            by_exec: dict[str, list[str]] = {}
            for tag, event in events.current_tags(workflow_id).items():
                by_exec.setdefault(event.execution_id, []).append(tag)
            tag_cache[workflow_id] = by_exec
        out.append(
            ExecutionInfo(
                execution_id=execution_id,
                workflow_id=workflow_id,
                created_at=parse_ts(body["createdAt"], "createdAt"),
                snapshot_hash=str(body["snapshotHash"]),
                status=status,
                tags=tuple(sorted(tag_cache[workflow_id].get(execution_id, []))),
                objects=keys,
            )
        )
    return Scan(tuple(out), blobs, orphans, tuple(unreadable))


# --------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True, slots=True)
class Decision:
    execution_id: str
    workflow_id: str
    action: str  # "expire" | "cold" | "hot" | "held" | "keep"
    reason: str
    stored_bytes: int
    target_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "executionId": self.execution_id,
            "workflowId": self.workflow_id,
            "action": self.action,
            "reason": self.reason,
            "storedBytes": self.stored_bytes,
            "targetClass": self.target_class,
        }


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    policy: str
    now: datetime
    decisions: tuple[Decision, ...]
    #: blobs only expiring executions reference (key → size)
    expiring_blobs: Mapping[str, int]
    #: blobs some retained execution references (they stay, and stay hot)
    retained_blobs: Mapping[str, int]
    #: archived executions the plan cannot describe (no archive event): left alone
    unreadable: tuple[str, ...] = ()

    def _of(self, action: str) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    def summary(self) -> dict[str, Any]:
        def block(action: str) -> dict[str, int]:
            items = self._of(action)
            return {"executions": len(items), "bytes": sum(d.stored_bytes for d in items)}

        return {
            "policy": self.policy,
            "now": format_ts(self.now),
            "executions": len(self.decisions),
            "toCold": block("cold"),
            "toExpire": {
                **block("expire"),
                "blobs": len(self.expiring_blobs),
                "blobBytes": sum(self.expiring_blobs.values()),
            },
            "heldByLegalHold": block("held"),
            "alreadyCold": block("keep"),
            "hot": block("hot"),
            "archivedWithoutEvent": len(self.unreadable),
            "blobsRetained": {
                "blobs": len(self.retained_blobs),
                "bytes": sum(self.retained_blobs.values()),
            },
        }

    def to_json(self, *, details: bool = False) -> dict[str, Any]:
        out = self.summary()
        if details:
            out["decisions"] = [d.to_json() for d in self.decisions]
            out["expiringBlobs"] = sorted(self.expiring_blobs)
        return out


def _age_days(now: datetime, created: datetime) -> float:
    return (now - created) / timedelta(days=1)


def _decide(
    policy: RetentionPolicy, ex: ExecutionInfo, now: datetime, holds: HoldSet | None = None
) -> Decision:
    age = _age_days(now, ex.created_at)
    hot, keep = policy.resolve(ex.workflow_id, ex.status, ex.tags)
    held = policy.hold_reason(ex.execution_id, ex.workflow_id, ex.tags)
    if held is None and holds is not None:  # hold events (archiver.holds): the union
        held = holds.reason_for(ex.execution_id, ex.workflow_id, ex.tags)
    size = ex.stored_bytes
    expired = keep != _NEVER and isinstance(keep, int) and age >= keep
    if expired and held is not None:
        return Decision(ex.execution_id, ex.workflow_id, "held", held, size)
    if expired:
        return Decision(
            ex.execution_id,
            ex.workflow_id,
            "expire",
            f"older than keep_days={keep} (age {int(age)} days, status {ex.status or 'none'})",
            size,
        )
    if age < hot:
        return Decision(
            ex.execution_id, ex.workflow_id, "hot", f"younger than hot_days={hot}", size
        )
    target = policy.cold_storage_class
    shift = hot - policy.hot_days
    for days, cls in policy.tiers:
        if age >= days + max(shift, 0):
            target = cls
    classes = {cls for _, cls in ex.objects.values()}
    if classes <= {target}:
        return Decision(ex.execution_id, ex.workflow_id, "keep", f"already {target}", size, target)
    return Decision(
        ex.execution_id,
        ex.workflow_id,
        "cold",
        f"older than hot_days={hot} (age {int(age)} days)",
        size,
        target,
    )


def plan_from_scan(
    policy: RetentionPolicy, scanned: Scan, now: datetime, holds: HoldSet | None = None
) -> RetentionPlan:
    decisions = tuple(_decide(policy, ex, now, holds) for ex in scanned.executions)
    by_id = {ex.execution_id: ex for ex in scanned.executions}
    retained: set[str] = set()
    expiring: set[str] = set()
    for decision in decisions:
        key = blob_key(by_id[decision.execution_id].snapshot_hash)
        (expiring if decision.action == "expire" else retained).add(key)
    expiring -= retained
    return RetentionPlan(
        policy=policy.name,
        now=now,
        decisions=decisions,
        expiring_blobs={k: scanned.blobs[k] for k in sorted(expiring) if k in scanned.blobs},
        retained_blobs={k: scanned.blobs[k] for k in sorted(retained) if k in scanned.blobs},
        unreadable=scanned.unreadable,
    )


def plan(
    store: ObjectStore,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> RetentionPlan:
    """What would move to cold storage and what would expire under ``policy``; changes nothing."""
    when = utcnow() if now is None else now
    holds = active_holds(store, max_object_bytes=max_object_bytes)
    return plan_from_scan(policy, scan(store, max_object_bytes=max_object_bytes), when, holds)


# --------------------------------------------------------------------------------------------
# the native S3 lifecycle configuration


def lifecycle_configuration(policy: RetentionPolicy, prefix: str = "") -> dict[str, Any]:
    """The S3 ``LifecycleConfiguration`` equivalent to the policy's cold tiers.

    Execution objects move to the cold storage classes by age. Blobs get no transition (they stay
    hot while referenced), the index none (DuckDB reads it). There is **no Expiration** rule:
    expiry depends on final status, tags and legal holds, which a lifecycle filter cannot see, so
    it is ``execvault expire``'s job. A last rule aborts incomplete multipart uploads.
    Per-workflow/status/tag ``hot_days`` overrides cannot be expressed by key prefix either; the
    rule uses the default ``hot_days``.
    """
    base = prefix.strip("/")
    base = f"{base}/" if base else ""
    transitions = [{"Days": days, "StorageClass": cls} for days, cls in policy.tiers]
    return {
        "Rules": [
            {
                "ID": f"execvault-{policy.name}-executions-to-cold",
                "Filter": {"Prefix": f"{base}executions/"},
                "Status": "Enabled",
                "Transitions": transitions,
            },
            {
                "ID": f"execvault-{policy.name}-abort-incomplete-multipart",
                "Filter": {"Prefix": base},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {
                    "DaysAfterInitiation": policy.abort_multipart_days
                },
            },
        ]
    }


class LifecycleUnsupported(ArchiveError):
    """The store cannot run lifecycle transitions (SeaweedFS answers 501 NotImplemented)."""


def apply_lifecycle(store: ObjectStore, policy: RetentionPolicy) -> dict[str, Any]:
    """Put :func:`lifecycle_configuration` on the store's bucket; returns what was applied.

    Raises :class:`LifecycleUnsupported` when the server does not implement lifecycle rules, and
    InvalidInput for stores that are not S3 buckets.
    """
    put = getattr(store, "put_bucket_lifecycle", None)
    config = getattr(store, "config", None)
    if put is None or config is None:
        raise InvalidInput(f"{store.url} is not an S3 bucket: it has no lifecycle", field="store")
    configuration = lifecycle_configuration(policy, str(config.prefix))
    if not put(configuration):
        raise LifecycleUnsupported(
            f"{store.url}: the server answered 501 NotImplemented to "
            "PutBucketLifecycleConfiguration: it does not run lifecycle transitions "
            "(SeaweedFS does not). Nothing was changed; cold archiving on this store needs "
            "explicit copies (execvault archive, not implemented yet)"
        )
    return configuration


# --------------------------------------------------------------------------------------------
# expiry


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"


def tombstone_key(kind: str, name: str, created_at: datetime, event_id: str) -> str:
    """``events/tombstones/executions/<s>/<executionId>/<ts>-<eventId>.json.zst`` or
    ``events/tombstones/blobs/<h[0:2]>/<hash>/<ts>-<eventId>.json.zst``."""
    if kind == "execution":
        where = "executions/" + execution_prefix(name).split("/", 1)[1]
    else:
        where = f"blobs/{name[:2]}/{name}/"
    return f"{TOMBSTONE_PREFIX}{where}{_stamp(created_at)}-{event_id}.json.zst"


def retention_part_key(day: datetime, writer: str) -> str:
    return f"index/{RETENTION_TABLE}/dt={day.date().isoformat()}/part-{writer}-000001.parquet"


def encode_retention_part(rows: Iterable[Mapping[str, Any]]) -> bytes:
    schema = RETENTION_EVENTS_SCHEMA
    ordered = sorted(rows, key=lambda r: (r["created_at"], r["event_id"]))
    arrays = [
        pa.array([r.get(n) for r in ordered], type=schema.field(n).type) for n in schema.names
    ]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), sink, compression="zstd")
    data: bytes = sink.getvalue().to_pybytes()
    return data


@dataclass(slots=True)
class ExpiryReport:
    policy: str
    #: executions whose objects were deleted: {executionId, deletedKeys, storedBytes, tombstone}
    expired: list[dict[str, Any]] = field(default_factory=list)
    #: objects Object Lock kept: {executionId or blob, key, reason}
    retained_locked: list[dict[str, Any]] = field(default_factory=list)
    #: executions past keep_days under a legal hold
    held: list[str] = field(default_factory=list)
    expired_blobs: list[str] = field(default_factory=list)
    tombstones: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "expired": len(self.expired),
            "expiredBytes": sum(int(e["storedBytes"]) for e in self.expired),
            "expiredBlobs": len(self.expired_blobs),
            "heldByLegalHold": len(self.held),
            "retainedLocked": self.retained_locked,
            "tombstones": len(self.tombstones),
            "executions": self.expired,
        }


class _Expirer:
    def __init__(
        self, store: ObjectStore, policy: RetentionPolicy, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.rows: list[dict[str, Any]] = []
        self.report = ExpiryReport(policy.name)

    def delete_all(self, keys: Iterable[str], owner: str) -> tuple[list[str], str | None]:
        """Delete ``keys`` in order; stop at the first one Object Lock keeps."""
        deleted: list[str] = []
        for key in keys:
            try:
                self.store.delete(key)
            except RetentionLocked as err:
                self.report.retained_locked.append(
                    {"object": owner, "key": key, "reason": f"Object Lock: {err}"}
                )
                return deleted, key
            deleted.append(key)
        return deleted, None

    def tombstone(
        self,
        kind: str,
        *,
        execution_id: str | None,
        workflow_id: str | None,
        snapshot_hash: str | None,
        deleted: list[str],
        stored_bytes: int,
        reason: str,
    ) -> str:
        event_id = "ev_" + secrets.token_hex(10)
        now = self.clock()
        body = {
            "eventId": event_id,
            "action": "expire",
            "objectKind": kind,
            "executionId": execution_id,
            "workflowId": workflow_id,
            "snapshotHash": snapshot_hash,
            "deletedKeys": deleted,
            "storedBytes": stored_bytes,
            "reason": reason,
            "policy": self.policy.name,
            "createdAt": format_ts(now),
        }
        name = execution_id if kind != "blob" else snapshot_hash
        assert name is not None
        key = tombstone_key("execution" if kind != "blob" else "blob", name, now, event_id)
        self.store.put(key, encode_record(TOMBSTONE_KIND, body))
        self.rows.append(_row(body, key))
        self.report.tombstones.append(key)
        return key

    def write_index(self) -> None:
        by_day: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows:
            by_day.setdefault(row["created_at"].date().isoformat(), []).append(row)
        writer = "ret" + secrets.token_hex(8)
        for rows in by_day.values():
            key = retention_part_key(rows[0]["created_at"], writer)
            # the tombstones are what counts: rebuild_retention_index restores a lost part
            with contextlib.suppress(ArchiveError):
                self.store.put(key, encode_retention_part(rows))


def _row(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {
        "event_id": body["eventId"],
        "action": body["action"],
        "object_kind": body.get("objectKind", "execution"),
        "execution_id": body.get("executionId"),
        "workflow_id": body.get("workflowId"),
        "snapshot_hash": body.get("snapshotHash"),
        "deleted_keys": list(body.get("deletedKeys") or body.get("keys") or []),
        "storage_class": body.get("storageClass"),
        "stored_bytes": body.get("storedBytes"),
        "reason": body["reason"],
        "policy": body["policy"],
        "created_at": parse_ts(body["createdAt"], "createdAt"),
        "object_key": key,
    }


def expire(
    store: ObjectStore,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> ExpiryReport:
    """Delete what ``policy`` lets expire at ``now``, leaving a tombstone for each deletion.

    Never deletes an execution under legal hold, an object Object Lock still retains (reported in
    ``retained_locked``, not raised), or a blob that a retained execution references. Re-running
    converges: what is gone is not planned again, an interrupted execution (snapshot deleted,
    final state left) is finished.
    """
    scanned = scan(store, max_object_bytes=max_object_bytes)
    holds = active_holds(store, max_object_bytes=max_object_bytes)
    result = plan_from_scan(policy, scanned, clock() if now is None else now, holds)
    job = _Expirer(store, policy, clock)
    by_id = {ex.execution_id: ex for ex in scanned.executions}
    still_referenced: set[str] = set()
    for decision in result.decisions:
        ex = by_id[decision.execution_id]
        if decision.action == "held":
            job.report.held.append(ex.execution_id)
        if decision.action != "expire":
            still_referenced.add(blob_key(ex.snapshot_hash))
            continue
        # the snapshot first: once it is gone the execution is expired; a final state left behind
        # by a lock is an orphan the next run finishes
        keys = sorted(ex.objects, key=lambda k: not k.endswith("/snapshot.json.zst"))
        deleted, locked = job.delete_all(keys, ex.execution_id)
        if not deleted:
            still_referenced.add(blob_key(ex.snapshot_hash))
            continue
        size = sum(ex.objects[k][0] for k in deleted)
        tomb = job.tombstone(
            "execution",
            execution_id=ex.execution_id,
            workflow_id=ex.workflow_id,
            snapshot_hash=ex.snapshot_hash,
            deleted=deleted,
            stored_bytes=size,
            reason=decision.reason
            + ("" if locked is None else f"; {locked} retained by Object Lock"),
        )
        job.report.expired.append(
            {
                "executionId": ex.execution_id,
                "deletedKeys": deleted,
                "storedBytes": size,
                "tombstone": tomb,
            }
        )
    for key, size in sorted(scanned.orphans.items()):
        execution_id = key.split("/")[2]
        deleted, _ = job.delete_all([key], execution_id)
        if deleted:
            job.tombstone(
                "final-state",
                execution_id=execution_id,
                workflow_id=None,
                snapshot_hash=None,
                deleted=deleted,
                stored_bytes=size,
                reason="final state of an execution whose snapshot already expired",
            )
    for key, size in sorted(result.expiring_blobs.items()):
        if key in still_referenced:
            continue
        digest = key.rsplit("/", 1)[-1].split(".", 1)[0]
        deleted, _ = job.delete_all([key], f"blob {digest}")
        if deleted:
            job.report.expired_blobs.append(key)
            job.tombstone(
                "blob",
                execution_id=None,
                workflow_id=None,
                snapshot_hash=digest,
                deleted=deleted,
                stored_bytes=size,
                reason="no retained execution references this structure",
            )
    job.write_index()
    return job.report


def read_tombstones(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> list[tuple[str, dict[str, Any]]]:
    """(key, body) of every tombstone, in key order."""
    out = []
    for info in store.list(TOMBSTONE_PREFIX):
        with contextlib.suppress(NotFound):
            out.append(
                (
                    info.key,
                    decode_record(store.get(info.key), TOMBSTONE_KIND, max_size=max_object_bytes),
                )
            )
    return out


def rebuild_retention_index(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> int:
    """Rewrite ``index/retention_events`` from the tombstones (one part per day); rows written."""
    old = [i.key for i in store.list(f"index/{RETENTION_TABLE}/")]
    rows = [
        _row(body, key) for key, body in read_tombstones(store, max_object_bytes=max_object_bytes)
    ]
    rows += [
        _row(body, key) for key, body in read_tier_events(store, max_object_bytes=max_object_bytes)
    ]
    by_day: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_day.setdefault(row["created_at"].date().isoformat(), []).append(row)
    writer = "rebuild" + secrets.token_hex(6)
    new = set()
    for day_rows in by_day.values():
        key = retention_part_key(day_rows[0]["created_at"], writer)
        store.put(key, encode_retention_part(day_rows))
        new.add(key)
    for key in old:
        if key not in new:
            store.delete(key)
    return len(rows)


# --------------------------------------------------------------------------------------------
# cold archiving by storage class, and restore


def read_tier_events(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> list[tuple[str, dict[str, Any]]]:
    """(key, body) of every tier event (archive, restore), in key order."""
    out = []
    for info in store.list(TIER_PREFIX):
        with contextlib.suppress(NotFound):
            out.append(
                (
                    info.key,
                    decode_record(store.get(info.key), TIER_KIND, max_size=max_object_bytes),
                )
            )
    return out


def _tier_event(
    job: _Expirer,
    action: str,
    ex_id: str,
    wf_id: str | None,
    keys: list[str],
    cls: str,
    why: str,
    ex: ExecutionInfo | None = None,
) -> str:
    event_id = "ev_" + secrets.token_hex(10)
    now = job.clock()
    body = {
        "eventId": event_id,
        "action": action,
        "objectKind": "execution",
        "executionId": ex_id,
        "workflowId": wf_id,
        "keys": keys,
        "storageClass": cls,
        "reason": why,
        "policy": job.policy.name,
        "createdAt": format_ts(now),
    }
    if ex is not None:  # what a later scan needs when the snapshot itself is not readable
        body.update(
            snapshotCreatedAt=format_ts(ex.created_at),
            snapshotHash=ex.snapshot_hash,
            status=ex.status,
        )
    where = execution_prefix(ex_id).split("/", 1)[1]
    key = f"{TIER_PREFIX}executions/{where}{_stamp(now)}-{event_id}.json.zst"
    job.store.put(key, encode_record(TIER_KIND, body))
    job.rows.append(_row(body, key))
    return key


@dataclass(slots=True)
class ArchiveReport:
    policy: str
    #: {executionId, storageClass, keys, event}
    moved: list[dict[str, Any]] = field(default_factory=list)
    already_cold: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "moved": len(self.moved),
            "alreadyCold": self.already_cold,
            "executions": self.moved,
        }


def _storage(store: ObjectStore, method: str) -> Callable[..., Any]:
    fn = getattr(store, method, None)
    if fn is None:
        raise InvalidInput(
            f"{store.url} has no storage classes (only S3 stores can archive to cold)",
            field="store",
        )
    result: Callable[..., Any] = fn
    return result


def archive_cold(
    store: ObjectStore,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    progress: Callable[[int, int], None] | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> ArchiveReport:
    """Move every execution past its hot period to its cold storage class (S3 stores).

    Each object is copied onto itself with the new class and verified (S3Store.set_storage_class);
    blobs are never moved. A move is recorded as a tier event object and an index row
    (``index/retention_events``, action ``archive``). Re-running skips what is already cold, so a
    killed run is simply run again.
    """
    set_class = _storage(store, "set_storage_class")
    scanned = scan(store, max_object_bytes=max_object_bytes)
    result = plan_from_scan(policy, scanned, clock() if now is None else now)
    by_id = {ex.execution_id: ex for ex in scanned.executions}
    job = _Expirer(store, policy, clock)
    report = ArchiveReport(policy.name)
    todo = [d for d in result.decisions if d.action == "cold"]
    report.already_cold = sum(1 for d in result.decisions if d.action == "keep")
    for n, decision in enumerate(todo, 1):
        ex = by_id[decision.execution_id]
        target = decision.target_class
        assert target is not None
        moved = [
            k for k in sorted(ex.objects) if ex.objects[k][1] != target and set_class(k, target)
        ]
        event = _tier_event(
            job, "archive", ex.execution_id, ex.workflow_id, moved, target, decision.reason, ex
        )
        report.moved.append(
            {
                "executionId": ex.execution_id,
                "storageClass": target,
                "keys": moved,
                "event": event,
            }
        )
        if progress is not None:
            progress(n, len(todo))
    job.write_index()
    return report


def restore_execution(
    store: ObjectStore,
    execution_id: str,
    *,
    days: int = 7,
    clock: Callable[[], datetime] = utcnow,
    policy_name: str = "default",
    dry_run: bool = False,
) -> str:
    """Start restoring an archived execution's objects; the overall state after:

    ``hot`` (nothing to restore), ``restoring`` (come back later) or ``restored`` (readable);
    with ``dry_run`` the state now (``archived`` too) and nothing is started. Idempotent; the first request that starts a restore records a tier event (``restore``).
    """
    restore = _storage(store, "restore")
    state_of = _storage(store, "restore_state")
    keys = [i.key for i in store.list(execution_prefix(execution_id))]
    if not any(k.endswith("/snapshot.json.zst") for k in keys):
        raise NotFound(f"no snapshot for execution {execution_id}")
    before = {k: state_of(k) for k in keys}
    if dry_run:  # the state now, ``archived`` included; nothing is started
        now_states = set(before.values())
        for state in ("archived", "restoring", "restored"):
            if state in now_states:
                return state
        return "hot"
    after = {k: (restore(k, days) if s == "archived" else s) for k, s in before.items()}
    started = [k for k, s in before.items() if s == "archived"]
    if started:
        job = _Expirer(store, RetentionPolicy(name=policy_name), clock)
        _tier_event(job, "restore", execution_id, None, started, "STANDARD", f"restore {days} days")
        job.write_index()
    states = set(after.values())
    if "restoring" in states or "archived" in states:
        return "restoring"
    if "restored" in states:
        return "restored"
    return "hot"
