"""Retention: the policy, the plan (what would move to cold and what would expire), the native S3
lifecycle configuration generated from the same policy, and expiry.

Only :func:`expire`, :func:`archive_cold` and :func:`restore_execution` change storage. The objects are the source of truth: the plan
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
as *retained (locked)*, not as an error. Every deletion is announced by a write-once intent record
and leaves a write-once tombstone under ``events/tombstones/`` and a row in
``index/retention_events/dt=YYYY-MM-DD/``, so a run killed at any point leaves every deleted object
explained and the next run finishes it.

Cold archiving either moves objects to a cold storage class (S3) or, with a ``cold_store`` in the
policy, copies them byte for byte to a second store, verifies the copy, records a tier event and
only then deletes the hot copy (:func:`cold_moved_executions` names the executions moved so).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from archiver.codec import DEFAULT_MAX_OBJECT_BYTES, decode_record, encode_record
from archiver.errors import (
    ArchiveError,
    ColdCopyDamaged,
    IntegrityError,
    InvalidInput,
    NotFound,
    ObjectArchived,
    RetentionLocked,
)
from archiver.events import EVENTS_PREFIX, EventLog, TagEvent
from archiver.holds import HoldSet, active_holds
from archiver.layout import blob_key, check_id, execution_prefix
from archiver.store.base import LockingStore, ObjectStore
from archiver.timeutil import format_ts, parse_ts, utcnow

__all__ = [
    "COLD_COPY",
    "COLD_STORAGE_CLASSES",
    "RETENTION_EVENTS_SCHEMA",
    "ArchiveReport",
    "ColdCopy",
    "ExecutionInfo",
    "ExpiryReport",
    "IndexFacts",
    "LifecycleUnsupported",
    "RetentionPlan",
    "RetentionPolicy",
    "Rule",
    "TierRow",
    "apply_lifecycle",
    "archive_cold",
    "check_cold_copies",
    "cold_moved_executions",
    "expire",
    "index_disagreement",
    "is_cold_moved",
    "lifecycle_configuration",
    "load_policy",
    "normalize_cold_url",
    "open_cold_store",
    "plan",
    "read_index_facts",
    "rebuild_retention_index",
    "recorded_cold_copies",
    "restore_execution",
    "scan",
    "sync_retention_index",
    "tags_reader",
    "tier_status",
]

COLD_STORAGE_CLASSES: Final = ("GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
HOT_STORAGE_CLASSES: Final = frozenset(
    {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "REDUCED_REDUNDANCY"}
)
TOMBSTONE_KIND: Final = "tombstone"
TOMBSTONE_PREFIX: Final = "events/tombstones/"
TIER_KIND: Final = "tier-event"
TIER_PREFIX: Final = "events/tiers/"
#: the pseudo storage class of execution objects that were moved to the cold store
COLD_COPY: Final = "COLD_COPY"
COLD_COPY_TIER: Final = "cold-copy"
_COPY_SUFFIX: Final = "cold-copy"
_UNCOPY_SUFFIX: Final = "cold-restore"
RETENTION_TABLE: Final = "retention_events"
#: the store-wide run lease ``archive`` and ``expire`` take (``archiver/runlock.py``)
RETENTION_LEASE: Final = "retention"
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
        ("tier", pa.string()),
        ("location", pa.string()),
        # added later (parts written before lack them: read as null, see read_index_facts)
        ("snapshot_created_at", _TS),
        ("status", pa.string()),
        ("key_sizes", pa.list_(pa.int64())),
        ("restored_until", _TS),
    ]
)
#: the columns a part must have for its tier-event rows to stand in for the events (scan)
_TIER_FACT_COLUMNS: Final = (
    "object_key",
    "action",
    "tier",
    "execution_id",
    "workflow_id",
    "snapshot_hash",
    "deleted_keys",
    "storage_class",
    "stored_bytes",
    "location",
    "snapshot_created_at",
    "status",
    "key_sizes",
    "restored_until",
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
    #: key → (size, storage class) of the execution's objects (snapshot, result); objects that
    #: live only in the cold store have the pseudo class ``COLD_COPY``
    objects: Mapping[str, tuple[int, str]]
    #: the latest cold-copy tier event of the execution (archive or restore), if any
    copy_event: Mapping[str, Any] | None = None
    copy_event_key: str | None = None
    #: where the snapshot facts came from: ``record`` (the record was read), ``index`` (its
    #: ``snapshots`` row; checked against the record before anything is deleted or recorded)
    #: or ``tier-event`` (what an archive tier event recorded)
    facts_from: str = "record"
    #: ``copy_event`` (then without its digests) or the archive event's facts came from
    #: ``retention_events`` rows: checked against the events before anything is deleted or
    #: recorded (:func:`_confirm_tier`)
    tier_from_index: bool = False
    #: the record's ``receivedAt`` (the server's clock at capture); None when not known (older
    #: records, facts from the index): retention then counts from ``created_at``
    received_at: datetime | None = None

    @property
    def retention_start(self) -> datetime:
        """What ages are counted from: the trusted ``received_at``, else ``created_at``."""
        return self.created_at if self.received_at is None else self.received_at

    @property
    def stored_bytes(self) -> int:
        return sum(size for size, _ in self.objects.values())

    @property
    def cold_location(self) -> str | None:
        """The cold store that holds (or held) copies of the execution's objects."""
        return None if self.copy_event is None else str(self.copy_event["location"])

    @property
    def cold_keys(self) -> tuple[str, ...]:
        return () if self.copy_event is None else tuple(self.copy_event.get("keys", ()))

    @property
    def restored_until(self) -> datetime | None:
        if self.copy_event is None or self.copy_event.get("action") != "restore":
            return None
        return parse_ts(self.copy_event["restoredUntil"], "restoredUntil")


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
    #: executions described by their index rows (no record read) / by reading their records
    from_index: int = 0
    from_records: int = 0
    #: executions whose tier-event facts came from ``retention_events`` rows / tier events read
    tier_from_index: int = 0
    tier_events_read: int = 0


_NEEDS_RESTORE: Final = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def _parse_record(key: str) -> tuple[str, str, str] | None:
    """(execution id, ``<stamp>-<eventId>``, suffix) of an execution's tier event or tombstone key
    ``events/<tiers|tombstones>/executions/<s>/<executionId>/<stamp>-<eventId>[.suffix].json.zst``."""
    parts = key.split("/")
    if len(parts) != 6 or parts[2] != "executions" or not parts[5].endswith(".json.zst"):
        return None
    name, _, suffix = parts[5].removesuffix(".json.zst").partition(".")
    return parts[4], name, suffix


def _stamp_of(name: str) -> str:
    return name.split("-", 1)[0]


def _event_id_of(name: str) -> str:
    return name.split("-", 1)[1] if "-" in name else name


def _tier_names(store: ObjectStore, prefix: str) -> dict[str, list[tuple[str, str, str]]]:
    """execution id → its tier events (name, suffix, key), oldest first (keys only)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for info in store.list(prefix):
        parsed = _parse_record(info.key)
        if parsed is not None:
            out.setdefault(parsed[0], []).append((parsed[1], parsed[2], info.key))
    for names in out.values():
        names.sort()
    return out


def _only_copies(
    tiers: Mapping[str, list[tuple[str, str, str]]],
) -> dict[str, list[tuple[str, str, str]]]:
    """The cold-copy tier events (archive and restore) of :func:`_tier_names`."""
    out = {}
    for execution_id, names in tiers.items():
        copies = [n for n in names if n[1] in (_COPY_SUFFIX, _UNCOPY_SUFFIX)]
        if copies:
            out[execution_id] = copies
    return out


def _copy_names(store: ObjectStore, prefix: str) -> dict[str, list[tuple[str, str, str]]]:
    """execution id → its cold-copy tier events (name, suffix, key), oldest first (keys only)."""
    return _only_copies(_tier_names(store, prefix))


def _outcome_names(store: ObjectStore, prefix: str) -> dict[str, list[str]]:
    """execution id → names of its expiry tombstones that record a deletion (not intents)."""
    out: dict[str, list[str]] = {}
    for info in store.list(prefix):
        parsed = _parse_record(info.key)
        if parsed is not None and parsed[2] == "":
            out.setdefault(parsed[0], []).append(parsed[1])
    return out


def _moved(copies: list[tuple[str, str, str]], outcomes: Iterable[str]) -> bool:
    """Whether the latest cold-copy event is an archive the execution has not expired since."""
    if not copies or copies[-1][1] != _COPY_SUFFIX:
        return False
    moved_at = _stamp_of(copies[-1][0])
    return not any(_stamp_of(name) >= moved_at for name in outcomes)


def cold_moved_executions(store: ObjectStore) -> set[str]:
    """Executions whose objects were moved to a cold store (``archive_cold`` with a cold store)
    and not restored or expired since: their hot objects are gone on purpose, the cold store holds
    them (index rows of these executions point at objects a restore brings back). Keys only: two
    LISTs, no object is read."""
    copies = _copy_names(store, f"{TIER_PREFIX}executions/")
    if not copies:
        return set()
    outcomes = _outcome_names(store, f"{TOMBSTONE_PREFIX}executions/")
    return {e for e, names in copies.items() if _moved(names, outcomes.get(e, ()))}


def is_cold_moved(store: ObjectStore, execution_id: str) -> bool:
    """Whether one execution is in :func:`cold_moved_executions` (one or two LISTs)."""
    where = execution_prefix(execution_id).split("/", 1)[1]
    copies = _copy_names(store, f"{TIER_PREFIX}executions/{where}").get(execution_id, [])
    if not copies or copies[-1][1] != _COPY_SUFFIX:
        return False
    outcomes = _outcome_names(store, f"{TOMBSTONE_PREFIX}executions/{where}")
    return _moved(copies, outcomes.get(execution_id, ()))


def tier_status(
    store: ObjectStore,
    execution_id: str,
    *,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> dict[str, Any]:
    """Where a *readable* execution's objects are, for reports (replay validation): ``tier``
    (``hot``, ``storage-class`` or ``cold-copy``), ``archived`` (some object is in a cold
    storage class, or a copy in the cold store stands for it), ``objectsArchived`` (those keys),
    ``storageClass`` / ``location`` and ``restoredUntil`` (a restored cold copy). An execution
    that needs a restore is not readable: its reads raise ObjectArchived instead, so
    ``needsRestore`` is false here. One HEAD per record and one LIST of its tier events (and one
    GET of its latest cold-copy event, when it has one)."""
    exec_id = check_id(execution_id, "executionId")
    status: dict[str, Any] = {
        "tier": "hot",
        "archived": False,
        "needsRestore": False,
        "objectsArchived": [],
        "storageClass": None,
        "location": None,
        "restoredUntil": None,
    }
    prefix = execution_prefix(exec_id)
    for key in (f"{prefix}snapshot.json.zst", f"{prefix}result.json.zst"):
        info = store.head(key)
        cls = None if info is None else info.storage_class
        if cls is not None and cls not in HOT_STORAGE_CLASSES:
            status.update(tier="storage-class", archived=True, storageClass=cls)
            status["objectsArchived"].append(key)
    where = prefix.split("/", 1)[1]
    copies = _copy_names(store, f"{TIER_PREFIX}executions/{where}").get(exec_id, [])
    if copies and not status["archived"]:
        outcomes = _outcome_names(store, f"{TOMBSTONE_PREFIX}executions/{where}")
        if not any(_stamp_of(o) >= _stamp_of(copies[-1][0]) for o in outcomes.get(exec_id, ())):
            with contextlib.suppress(NotFound):
                event = decode_record(
                    store.get(copies[-1][2]), TIER_KIND, max_size=max_object_bytes
                )
                status.update(
                    tier=COLD_COPY_TIER,
                    archived=True,
                    objectsArchived=[str(k) for k in event.get("keys", ())],
                    location=event.get("location"),
                    restoredUntil=event.get("restoredUntil"),
                )
    return status


@dataclass(frozen=True, slots=True)
class ColdCopy:
    """What the latest cold-copy tier event of an execution says its cold store holds."""

    execution_id: str
    event_key: str
    #: ``archive`` (the hot objects are gone) or ``restore`` (copied back; the cold copy stays)
    action: str
    location: str
    keys: tuple[str, ...]
    sizes: Mapping[str, int]
    digests: Mapping[str, str]


def recorded_cold_copies(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> list[ColdCopy]:
    """Every execution's cold copy that should exist now: the latest cold-copy event (archive
    or restore) of each execution not expired since. Two LISTs and one GET per such execution
    (the event: its keys, sizes and digests)."""
    copies = _copy_names(store, f"{TIER_PREFIX}executions/")
    if not copies:
        return []
    outcomes = _outcome_names(store, f"{TOMBSTONE_PREFIX}executions/")
    out: list[ColdCopy] = []
    for execution_id in sorted(copies):
        name, _, key = copies[execution_id][-1]
        if any(_stamp_of(o) >= _stamp_of(name) for o in outcomes.get(execution_id, ())):
            continue  # expired since: its cold copy went with it
        try:
            body = decode_record(store.get(key), TIER_KIND, max_size=max_object_bytes)
        except NotFound:
            continue
        out.append(
            ColdCopy(
                execution_id=execution_id,
                event_key=key,
                action=str(body.get("action")),
                location=str(body["location"]),
                keys=tuple(str(k) for k in body.get("keys", ())),
                sizes={str(k): int(v) for k, v in body.get("sizes", {}).items()},
                digests={str(k): str(v) for k, v in body.get("digests", {}).items()},
            )
        )
    return out


def check_cold_copies(
    store: ObjectStore,
    *,
    read_data: bool = True,
    cold_store: ObjectStore | None = None,
    selected: Callable[[str], bool] | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> tuple[int, int, list[tuple[str, str, str]]]:
    """Check every recorded cold copy (:func:`recorded_cold_copies`) in its cold store:
    structurally (it exists with the recorded size: one LIST of the cold store's ``executions/``
    per location) and, with ``read_data``, by reading it again (SHA-256 against the recorded
    digest, and the record's own digest). ``selected(key)``: which copies to read.

    Returns (copies checked, copies read, problems as ``(problem, "<location>/<key>", detail)``
    with problem ``cold_copy_missing``, ``cold_copy_truncated``, ``cold_copy_corrupt`` or
    ``cold_store_unreachable``)."""
    copies = recorded_cold_copies(store, max_object_bytes=max_object_bytes)
    job = _Job(store, RetentionPolicy(), utcnow, cold_store=cold_store)
    problems: list[tuple[str, str, str]] = []
    listed: dict[str, dict[str, int] | None] = {}
    checked = read = 0
    for copy in copies:
        try:
            cold = job.cold(copy.location)
            if copy.location not in listed:
                listed[copy.location] = {i.key: i.size for i in cold.list("executions/")}
        except ArchiveError as err:
            if listed.get(copy.location, {}) is not None:
                problems.append(
                    ("cold_store_unreachable", copy.location, f"cannot open or list it: {err}")
                )
            listed[copy.location] = None
            continue
        sizes = listed[copy.location]
        if sizes is None:
            continue
        for key in copy.keys:
            checked += 1
            where = f"{cold.url}/{key}"
            recorded = copy.sizes.get(key)
            if key not in sizes:
                problems.append(
                    ("cold_copy_missing", where, f"execution {copy.execution_id}: no such object")
                )
                continue
            if recorded is not None and sizes[key] != recorded:
                name = "cold_copy_truncated" if sizes[key] < recorded else "cold_copy_corrupt"
                problems.append(
                    (name, where, f"{sizes[key]} bytes stored, its tier event says {recorded}")
                )
                continue
            if not read_data or (selected is not None and not selected(key)):
                continue
            read += 1
            try:
                data = _read_cold_copy(cold, copy.execution_id, key, copy.sizes, copy.digests)
                kind = _KIND_OF.get(key.rsplit("/", 1)[-1])
                if kind is not None:
                    decode_record(data, kind, max_size=max_object_bytes)
            except ColdCopyDamaged as err:
                name = "cold_copy_missing" if err.problem == "missing" else "cold_copy_corrupt"
                problems.append((name, where, str(err)))
            except ArchiveError as err:
                problems.append(("cold_copy_corrupt", where, f"does not verify: {err}"))
    return checked, read, problems


class _TierEvents:
    """Tier events by key: from their ``retention_events`` rows (``index``) where there is one,
    else read (and counted)."""

    def __init__(self, store: ObjectStore, index: IndexFacts | None, max_object_bytes: int):
        self.store = store
        self.rows: Mapping[str, TierRow] = {} if index is None else index.tier_events
        self.max_object_bytes = max_object_bytes
        self.read = 0
        self.from_rows = 0

    def body(self, key: str) -> tuple[dict[str, Any] | None, bool]:
        """(the event, or None if it is gone; whether it came from its row)."""
        row = self.rows.get(key)
        if row is not None:
            self.from_rows += 1
            return row.event(), True
        self.read += 1
        try:
            return decode_record(
                self.store.get(key), TIER_KIND, max_size=self.max_object_bytes
            ), False
        except NotFound:
            return None, False

    def archive_facts(self, keys: Iterable[str]) -> tuple[dict[str, Any] | None, bool]:
        """The snapshot facts the latest ``archive`` event among ``keys`` (one execution's tier
        events) recorded, or None; whether a row was used."""
        used = False
        for key in sorted(keys, reverse=True):
            body, from_row = self.body(key)
            used = used or from_row
            if (
                body is not None
                and body.get("action") == "archive"
                and body.get("snapshotCreatedAt")
            ):
                return _facts(body), used
        return None, used


def _last_archive_event(
    store: ObjectStore, execution_id: str, max_object_bytes: int
) -> dict[str, Any] | None:
    """The snapshot facts the latest ``archive`` tier event of the execution recorded (read)."""
    where = execution_prefix(execution_id).split("/", 1)[1]
    keys = [i.key for i in store.list(f"{TIER_PREFIX}executions/{where}")]
    return _TierEvents(store, None, max_object_bytes).archive_facts(keys)[0]


def _facts(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "workflowId": body["workflowId"],
        "createdAt": body["snapshotCreatedAt"],
        "receivedAt": body.get("snapshotReceivedAt"),
        "snapshotHash": body["snapshotHash"],
        "status": body.get("status"),
    }


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Parquet files of the index tables the scan reads (any name in a day folder, as the readers)
_FACT_PART_RE: Final = re.compile(
    r"index/(?P<table>snapshots|final_states|tag_events|retention_events)/dt=\d{4}-\d{2}-\d{2}/"
    r"[A-Za-z0-9][A-Za-z0-9._=-]*\.parquet"
)
_FACT_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "snapshots": (
        "execution_id",
        "workflow_id",
        "created_at",
        "snapshot_hash",
        "object_key",
        "stored_bytes",
    ),
    "final_states": ("execution_id", "status", "object_key", "stored_bytes"),
    "tag_events": (
        "event_id",
        "action",
        "workflow_id",
        "execution_id",
        "tag",
        "previous_execution_id",
        "created_at",
        "object_key",
    ),
    RETENTION_TABLE: _TIER_FACT_COLUMNS,
}


@dataclass(frozen=True, slots=True)
class SnapshotFact:
    """What a ``snapshots`` row says about an execution's record."""

    workflow_id: str
    created_at: datetime
    snapshot_hash: str
    object_key: str
    stored_bytes: int


@dataclass(frozen=True, slots=True)
class TierRow:
    """What a ``retention_events`` row says about a tier event: the fields :func:`scan` reads
    from the event (the row's ``object_key`` is the event's key). Not the digests: archiving and
    restoring read the event itself."""

    action: str
    tier: str | None
    execution_id: str | None
    workflow_id: str | None
    snapshot_hash: str | None
    keys: tuple[str, ...]
    key_sizes: tuple[int | None, ...]
    storage_class: str | None
    stored_bytes: int | None
    location: str | None
    snapshot_created_at: datetime | None
    status: str | None
    restored_until: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TierRow:
        return cls(
            action=row["action"],
            tier=row["tier"],
            execution_id=row["execution_id"],
            workflow_id=row["workflow_id"],
            snapshot_hash=row["snapshot_hash"],
            keys=tuple(row["deleted_keys"] or ()),
            key_sizes=tuple(row["key_sizes"] or ()),
            storage_class=row["storage_class"],
            stored_bytes=row["stored_bytes"],
            location=row["location"],
            snapshot_created_at=row["snapshot_created_at"],
            status=row["status"],
            restored_until=row["restored_until"],
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TierRow:
        """The row :func:`rebuild_retention_index` writes for the event ``body``."""
        return cls.from_row(_fact_columns(body))

    def event(self) -> dict[str, Any]:
        """The event's body as far as the scan reads it (``from_body(row.event()) == row``)."""
        body: dict[str, Any] = {
            "action": self.action,
            "objectKind": "execution",
            "executionId": self.execution_id,
            "workflowId": self.workflow_id,
            "keys": list(self.keys),
            "sizes": {
                k: s for k, s in zip(self.keys, self.key_sizes, strict=False) if s is not None
            },
            "status": self.status,
        }
        optional = {
            "tier": self.tier,
            "snapshotHash": self.snapshot_hash,
            "storageClass": self.storage_class,
            "storedBytes": self.stored_bytes,
            "location": self.location,
            "snapshotCreatedAt": _optional_format(self.snapshot_created_at),
            "restoredUntil": _optional_format(self.restored_until),
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


def _optional_format(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


@dataclass(frozen=True, slots=True)
class IndexFacts:
    """The facts retention needs, as the Parquet index (``docs/index.md``) holds them.

    Only a hint: :func:`scan` uses a row only when its ``object_key`` and ``stored_bytes`` match
    the listed object, reads the record otherwise, and expiry checks every execution it deletes
    against its record. An execution whose rows disagree with each other has none here.
    """

    #: execution id → its ``snapshots`` row
    snapshots: Mapping[str, SnapshotFact] = field(default_factory=dict)
    #: execution id → (status, object_key, stored_bytes) of its ``final_states`` row
    final_states: Mapping[str, tuple[str, str, int]] = field(default_factory=dict)
    #: object key of a tag event → the event (``tag_events`` rows)
    tag_events: Mapping[str, TagEvent] = field(default_factory=dict)
    #: object key of a tier event → what its ``retention_events`` row says (parts written
    #: before the row held the event's facts are skipped: those events are read)
    tier_events: Mapping[str, TierRow] = field(default_factory=dict)
    #: index files read / files that could not be read (skipped: their executions are read)
    parts: int = 0
    unreadable_parts: tuple[str, ...] = ()


def _ms_datetimes(column: Any) -> list[datetime]:
    return [_EPOCH + timedelta(milliseconds=int(ms)) for ms in column.cast(pa.int64()).to_pylist()]


def _ms_optional(column: Any) -> list[datetime | None]:
    return [
        None if ms is None else _EPOCH + timedelta(milliseconds=int(ms))
        for ms in column.cast(pa.int64()).to_pylist()
    ]


def read_index_facts(store: ObjectStore, *, workers: int = 8) -> IndexFacts:
    """Read the ``snapshots``, ``final_states``, ``tag_events`` and ``retention_events`` files of
    the index (only the columns retention needs; ``workers`` parallel GETs). A file that cannot
    be read is skipped (listed in ``unreadable_parts``): the scan then reads the records of the
    executions it would have described. Rows of one identity that disagree (a broken writer) are
    dropped. ``retention_events`` parts written before their rows held the tier events' facts
    are skipped (the scan reads those events)."""
    infos = [i for i in store.list("index/") if _FACT_PART_RE.fullmatch(i.key)]

    def read(key: str) -> tuple[str, Any]:
        table = key.split("/", 2)[1]
        try:
            data = store.get(key)
            if table == RETENTION_TABLE:
                part = pq.ParquetFile(pa.BufferReader(data))
                if not set(_TIER_FACT_COLUMNS) <= set(part.schema_arrow.names):
                    return table, None  # an older part: its tier events are read instead
                rows = part.read(columns=list(_TIER_FACT_COLUMNS))
                return table, rows.filter(pc.starts_with(rows.column("object_key"), TIER_PREFIX))
            return table, pq.read_table(pa.BufferReader(data), columns=list(_FACT_COLUMNS[table]))
        except NotFound:
            return table, None  # replaced meanwhile (compaction): its rows are in another file
        except Exception:  # any unreadable file: its executions are read instead
            return table, key

    snapshots: dict[str, SnapshotFact] = {}
    finals: dict[str, tuple[str, str, int]] = {}
    tags: dict[str, TagEvent] = {}
    tiers: dict[str, TierRow] = {}
    conflicts: set[tuple[str, str]] = set()
    unreadable: list[str] = []
    interned: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for table, got in pool.map(read, [i.key for i in infos]):
            if got is None:
                continue
            if isinstance(got, str):
                unreadable.append(got)
                continue
            cols = {name: got.column(name) for name in _FACT_COLUMNS[table]}
            if table == "snapshots":
                rows = zip(
                    cols["execution_id"].to_pylist(),
                    cols["workflow_id"].to_pylist(),
                    _ms_datetimes(cols["created_at"]),
                    cols["snapshot_hash"].to_pylist(),
                    cols["object_key"].to_pylist(),
                    cols["stored_bytes"].to_pylist(),
                    strict=True,
                )
                for eid, wf, created, shash, okey, size in rows:
                    wf = interned.setdefault(wf, wf)
                    fact = SnapshotFact(wf, created, shash, okey, int(size))
                    if snapshots.setdefault(eid, fact) != fact:
                        conflicts.add((table, eid))
            elif table == RETENTION_TABLE:
                lists = {n: cols[n].to_pylist() for n in _TIER_FACT_COLUMNS if n not in _TIMES}
                lists.update({n: _ms_optional(cols[n]) for n in _TIMES})
                for n, okey in enumerate(lists["object_key"]):
                    row = {name: column[n] for name, column in lists.items()}
                    for name in _INTERNED:
                        if row[name] is not None:
                            row[name] = interned.setdefault(row[name], row[name])
                    tier = TierRow.from_row(row)
                    if tiers.setdefault(okey, tier) != tier:
                        conflicts.add((table, okey))
            elif table == "final_states":
                rows2 = zip(
                    cols["execution_id"].to_pylist(),
                    cols["status"].to_pylist(),
                    cols["object_key"].to_pylist(),
                    cols["stored_bytes"].to_pylist(),
                    strict=True,
                )
                for eid, status, okey, size in rows2:
                    if not okey.endswith("/result.json.zst"):
                        continue  # a progress record's row (waiting …): not the outcome
                    status = interned.setdefault(status, status)
                    entry = (status, okey, int(size))
                    if finals.setdefault(eid, entry) != entry:
                        conflicts.add((table, eid))
            else:
                created_at = _ms_datetimes(cols["created_at"])
                names = ("event_id", "action", "workflow_id", "execution_id", "tag")
                values = [cols[n].to_pylist() for n in names]
                previous = cols["previous_execution_id"].to_pylist()
                for n, okey in enumerate(cols["object_key"].to_pylist()):
                    event = TagEvent(
                        event_id=values[0][n],
                        action=values[1][n],
                        workflow_id=values[2][n],
                        execution_id=values[3][n],
                        tag=values[4][n],
                        created_at=created_at[n],
                        previous_execution_id=previous[n],
                    )
                    if tags.setdefault(okey, event) != event:
                        conflicts.add((table, okey))
    for table, name in conflicts:
        if table == "snapshots":
            snapshots.pop(name, None)
        elif table == "final_states":
            finals.pop(name, None)
        elif table == RETENTION_TABLE:
            tiers.pop(name, None)
        else:
            tags.pop(name, None)
    return IndexFacts(
        snapshots,
        finals,
        tags,
        tiers,
        parts=len(infos),
        unreadable_parts=tuple(sorted(unreadable)),
    )


_TIMES: Final = ("snapshot_created_at", "restored_until")
_INTERNED: Final = ("action", "tier", "workflow_id", "storage_class", "location", "status")


def _current_tags(
    store: ObjectStore, index: IndexFacts | None, max_object_bytes: int
) -> dict[str, dict[str, list[str]]]:
    """workflow id → execution id → the tags it holds now: the fold of every workflow's tag
    events (``archiver.events``), listed in one LIST of ``events/workflows/``; an event's body
    comes from its ``tag_events`` row when the index has one for that key, else from the object."""
    by_workflow: dict[str, list[str]] = {}
    for info in store.list(EVENTS_PREFIX):
        parts = info.key.split("/")
        if len(parts) == 5 and parts[3] == "tags" and parts[4].endswith(".json.zst"):
            by_workflow.setdefault(parts[2], []).append(info.key)
    out: dict[str, dict[str, list[str]]] = {}
    for workflow_id, keys in by_workflow.items():
        events: list[TagEvent] = []
        for key in sorted(keys):
            event = None if index is None else index.tag_events.get(key)
            if event is None or event.workflow_id != workflow_id:
                try:
                    body = decode_record(store.get(key), "tag-event", max_size=max_object_bytes)
                except NotFound:
                    continue
                event = TagEvent.from_json(body)
            events.append(event)
        held: dict[str, list[str]] = {}
        for tag, event in EventLog.fold_tags(events).items():
            held.setdefault(event.execution_id, []).append(tag)
        out[workflow_id] = held
    return out


def scan(
    store: ObjectStore,
    *,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    index: IndexFacts | None = None,
) -> Scan:
    """Every execution (record, status, current tags, objects) and every blob of the store.

    The listing of ``executions/`` says which objects exist (sizes, storage classes). With
    ``index`` (:func:`read_index_facts`), an execution whose ``snapshots`` row names the listed
    snapshot object with its size is described from the row (and its status from its
    ``final_states`` row, when that names the listed final state), without reading the record;
    executions the index does not describe (rows missing or not matching) are read as without
    one, so the result is the same. Executions moved to a cold store are included from their
    archive tier event (their objects have the pseudo class ``COLD_COPY``); the cold store itself
    is not read. A tier event (named by the one LIST of ``events/tiers/``) is taken from its
    ``retention_events`` row when ``index`` has one for its key (``tier_from_index``: checked
    against the event before anything is deleted or recorded), else read.
    """
    objects: dict[str, dict[str, tuple[int, str]]] = {}
    for info in store.list("executions/"):
        parts = info.key.split("/")
        if len(parts) != 4:
            continue
        objects.setdefault(parts[2], {})[info.key] = (info.size, info.storage_class or "STANDARD")
    blobs = {info.key: info.size for info in store.list("blobs/")}
    tiers = _tier_names(store, f"{TIER_PREFIX}executions/")
    copies = _only_copies(tiers)
    outcomes = _outcome_names(store, f"{TOMBSTONE_PREFIX}executions/") if copies else {}
    events = _TierEvents(store, index, max_object_bytes)
    tag_map: dict[str, dict[str, list[str]]] | None = None
    out: list[ExecutionInfo] = []
    orphans: dict[str, int] = {}
    unreadable: list[str] = []
    from_index = from_records = tier_rows = 0
    for execution_id in sorted(set(objects) | set(copies)):
        keys = dict(objects.get(execution_id, {}))
        ex_copies = copies.get(execution_id, [])
        copy_event: dict[str, Any] | None = None
        tier_row = False
        if ex_copies:
            copy_event, tier_row = events.body(ex_copies[-1][2])
        moved = copy_event is not None and _moved(ex_copies, outcomes.get(execution_id, ()))
        if moved:
            assert copy_event is not None
            sizes = copy_event.get("sizes", {})
            for key in copy_event.get("keys", ()):
                keys.setdefault(key, (int(sizes.get(key, 0)), COLD_COPY))
        if not keys:
            continue
        snap_key = next((k for k in keys if k.endswith("/snapshot.json.zst")), None)
        if snap_key is None:
            orphans.update({k: size for k, (size, _) in keys.items()})
            continue
        status = None
        res_key = next((k for k in keys if k.endswith("/result.json.zst")), None)
        source = "record"
        fact = None if index is None else index.snapshots.get(execution_id)
        if keys[snap_key][1] == COLD_COPY:
            assert copy_event is not None
            body = _facts(copy_event)
            status = copy_event.get("status")
            source = "tier-event"
        elif keys[snap_key][1] in _NEEDS_RESTORE:
            # not readable without a restore: what the archive job recorded when it moved it
            recorded, used = events.archive_facts(t[2] for t in tiers.get(execution_id, ()))
            tier_row = tier_row or used
            if recorded is None:
                unreadable.append(execution_id)
                continue
            body = recorded
            status = recorded.get("status")
            source = "tier-event"
        else:
            if (
                fact is not None
                and fact.object_key == snap_key
                and fact.stored_bytes == keys[snap_key][0]
            ):
                body = {
                    "workflowId": fact.workflow_id,
                    "createdAt": fact.created_at,
                    "snapshotHash": fact.snapshot_hash,
                }
                source = "index"
                from_index += 1
            else:
                try:
                    body = decode_record(
                        store.get(snap_key), _SNAPSHOT_KIND, max_size=max_object_bytes
                    )
                except NotFound:
                    continue
                from_records += 1
            if res_key is not None and keys[res_key][1] != COLD_COPY:
                row = None
                if source == "index":
                    assert index is not None
                    row = index.final_states.get(execution_id)
                if row is not None and row[1] == res_key and row[2] == keys[res_key][0]:
                    status = row[0]
                else:
                    with contextlib.suppress(NotFound):
                        final = decode_record(
                            store.get(res_key), _FINAL_STATE_KIND, max_size=max_object_bytes
                        )
                        if final.get("status") is not None:
                            status = str(final["status"])
            elif moved and copy_event is not None:
                status = copy_event.get("status")
        workflow_id = str(body["workflowId"])
        if tag_map is None:
            tag_map = _current_tags(store, index, max_object_bytes)
        out.append(
            ExecutionInfo(
                execution_id=execution_id,
                workflow_id=workflow_id,
                created_at=parse_ts(body["createdAt"], "createdAt"),
                received_at=_received_at(body),
                snapshot_hash=str(body["snapshotHash"]),
                status=None if status is None else str(status),
                tags=tuple(sorted(tag_map.get(workflow_id, {}).get(execution_id, []))),
                objects=keys,
                copy_event=copy_event,
                copy_event_key=ex_copies[-1][2] if copy_event is not None else None,
                facts_from=source,
                tier_from_index=tier_row,
            )
        )
        tier_rows += tier_row
    return Scan(
        tuple(out),
        blobs,
        orphans,
        tuple(unreadable),
        from_index=from_index,
        from_records=from_records,
        tier_from_index=tier_rows,
        tier_events_read=events.read,
    )


def tags_reader(
    store: ObjectStore, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> Callable[[str], dict[str, list[str]]]:
    """workflow id → (execution id → the tags it holds now), read from the workflow's tag event
    objects (not the index), each workflow once."""
    cache: dict[str, dict[str, list[str]]] = {}

    def tags_of(workflow_id: str) -> dict[str, list[str]]:
        if workflow_id not in cache:
            held: dict[str, list[str]] = {}
            with contextlib.suppress(ArchiveError):
                log = EventLog(store, max_object_bytes=max_object_bytes)
                for tag, event in log.current_tags(workflow_id).items():
                    held.setdefault(event.execution_id, []).append(tag)
            cache[workflow_id] = held
        return cache[workflow_id]

    return tags_of


def index_disagreement(
    store: ObjectStore,
    ex: ExecutionInfo,
    tags_of: Callable[[str], Mapping[str, list[str]]] | None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> str | None:
    """None when what :func:`scan` took from the index about ``ex`` (snapshot facts, status,
    with ``tags_of`` its tags; tier-event facts from ``retention_events`` rows) is what the
    records and events themselves say, or when nothing came from the index; else what differs.
    Reads the records (2 GETs) and the tier event(s) only for what came from the index."""
    ex, why = _confirm_tier(store, ex, max_object_bytes)
    if why is None and ex.facts_from == "index":
        why = _record_disagreement(store, ex, tags_of, max_object_bytes)
    return why


def _confirm_tier(
    store: ObjectStore, ex: ExecutionInfo, max_object_bytes: int
) -> tuple[ExecutionInfo, str | None]:
    """``ex`` with its tier facts as the tier events themselves say them, when the scan took them
    from ``retention_events`` rows (its cold-copy event read whole, digests included: 1 GET; the
    archive event of an execution in GLACIER / DEEP_ARCHIVE: a LIST and its events), and None;
    or ``ex`` and what differs. Executions described without rows come back as they are."""
    if not ex.tier_from_index:
        return ex, None
    copy_event = ex.copy_event
    if ex.copy_event_key is not None and ex.copy_event is not None:
        copy_event, _ = _TierEvents(store, None, max_object_bytes).body(ex.copy_event_key)
        if copy_event is None:
            return ex, f"its tier event {ex.copy_event_key} is gone"
        found, said = TierRow.from_body(copy_event), TierRow.from_body(ex.copy_event)
        differ = [
            f.name for f in fields(TierRow) if getattr(found, f.name) != getattr(said, f.name)
        ]
        if differ:
            return ex, (
                f"the retention_events row of {ex.copy_event_key} disagrees with the event: "
                + ", ".join(differ)
            )
    snap_key = next(k for k in ex.objects if k.endswith("/snapshot.json.zst"))
    if ex.facts_from == "tier-event" and ex.objects[snap_key][1] != COLD_COPY:
        recorded = _last_archive_event(store, ex.execution_id, max_object_bytes)
        said_facts = (ex.workflow_id, ex.created_at, ex.snapshot_hash, ex.status)
        found_facts = None
        if recorded is not None:
            status = recorded.get("status")
            found_facts = (
                str(recorded["workflowId"]),
                parse_ts(recorded["createdAt"], "createdAt"),
                str(recorded["snapshotHash"]),
                None if status is None else str(status),
            )
        if found_facts != said_facts:
            return ex, "the retention_events rows disagree with the execution's archive event"
    return replace(ex, copy_event=copy_event, tier_from_index=False), None


def _snapshot_body(
    store: ObjectStore, ex: ExecutionInfo, max_object_bytes: int
) -> dict[str, Any] | None:
    """The execution's snapshot record, or None when it cannot be read (the caller then reads it
    again and reports why)."""
    snap_key = next(k for k in ex.objects if k.endswith("/snapshot.json.zst"))
    try:
        return decode_record(store.get(snap_key), _SNAPSHOT_KIND, max_size=max_object_bytes)
    except (NotFound, ArchiveError):
        return None


def _younger_by_received_at(
    policy: RetentionPolicy,
    ex: ExecutionInfo,
    record: Mapping[str, Any] | None,
    now: datetime,
    holds: HoldSet | None,
) -> str | None:
    """Why an execution planned to expire from facts without ``receivedAt`` (index rows, tier
    events of older writers) is kept after all: its record (or full tier event) names a later
    ``receivedAt``, the trusted time retention counts from (a backfill's ``createdAt`` is old)."""
    if ex.received_at is not None:
        return None
    source: Mapping[str, Any] | None = record
    if source is None and ex.copy_event is not None:
        source = {"receivedAt": ex.copy_event.get("snapshotReceivedAt")}
    received = None if source is None else _received_at(source)
    if received is None:
        return None
    if _decide(policy, replace(ex, received_at=received), now, holds).action == "expire":
        return None
    return f"kept: retention counts from its receivedAt {format_ts(received)}, not its createdAt"


def _record_disagreement(
    store: ObjectStore,
    ex: ExecutionInfo,
    tags_of: Callable[[str], Mapping[str, list[str]]] | None,
    max_object_bytes: int,
    *,
    snapshot: Mapping[str, Any] | None = None,
    final: Mapping[str, Any] | None = None,
) -> str | None:
    """None when the execution's records (and, with ``tags_of``, its tag events read from the
    objects) say what ``ex`` says; otherwise what differs. ``snapshot`` / ``final``: bodies the
    caller already read (they are read here otherwise)."""
    snap_key = next(k for k in ex.objects if k.endswith("/snapshot.json.zst"))
    res_key = next(
        (
            k
            for k, (_, c) in ex.objects.items()
            if k.endswith("/result.json.zst") and c != COLD_COPY
        ),
        None,
    )
    try:
        if snapshot is None:
            snapshot = decode_record(store.get(snap_key), _SNAPSHOT_KIND, max_size=max_object_bytes)
        status = None
        if res_key is not None:
            if final is None:
                with contextlib.suppress(NotFound):
                    final = decode_record(
                        store.get(res_key), _FINAL_STATE_KIND, max_size=max_object_bytes
                    )
            if final is not None and final.get("status") is not None:
                status = str(final["status"])
        elif ex.copy_event is not None and COLD_COPY in {c for _, c in ex.objects.values()}:
            status = ex.copy_event.get("status")  # as scan: the moved final state's status
        found: dict[str, Any] = {
            "workflowId": str(snapshot.get("workflowId")),
            "createdAt": format_ts(parse_ts(snapshot.get("createdAt"), "createdAt")),
            "snapshotHash": str(snapshot.get("snapshotHash")),
            "status": status,
        }
    except NotFound:
        return "its snapshot record is gone"
    except ArchiveError as err:
        return f"its record cannot be read ({err})"
    said: dict[str, Any] = {
        "workflowId": ex.workflow_id,
        "createdAt": format_ts(ex.created_at),
        "snapshotHash": ex.snapshot_hash,
        "status": ex.status,
    }
    if tags_of is not None:
        found["tags"] = sorted(tags_of(found["workflowId"]).get(ex.execution_id, []))
        said["tags"] = sorted(ex.tags)
    differ = [
        f"{name} {said[name]!r} (record: {found[name]!r})"
        for name in said
        if said[name] != found[name]
    ]
    if not differ:
        return None
    return "the index disagrees with the record: " + ", ".join(differ)


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


def _received_at(body: Mapping[str, Any]) -> datetime | None:
    """A snapshot record's (or its facts') ``receivedAt``, or None where it has none."""
    value = body.get("receivedAt")
    return None if value is None else parse_ts(value, "receivedAt")


def _decide(
    policy: RetentionPolicy,
    ex: ExecutionInfo,
    now: datetime,
    holds: HoldSet | None = None,
    *,
    cold_copy: bool = False,
) -> Decision:
    age = _age_days(now, ex.retention_start)
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
    classes = {cls for _, cls in ex.objects.values()}
    target = policy.cold_storage_class
    if cold_copy:
        target = COLD_COPY
        until = ex.restored_until
        if until is not None and now < until and COLD_COPY not in classes:
            why = f"restored from the cold copy until {format_ts(until)}"
            return Decision(ex.execution_id, ex.workflow_id, "keep", why, size, target)
    elif COLD_COPY in classes:  # in a cold store: storage classes do not apply
        why = f"copied to the cold store {ex.cold_location}"
        return Decision(ex.execution_id, ex.workflow_id, "keep", why, size, COLD_COPY)
    else:
        shift = hot - policy.hot_days
        for days, cls in policy.tiers:
            if age >= days + max(shift, 0):
                target = cls
    if classes <= {target}:
        why = f"already {target}" if not cold_copy else f"copied to {ex.cold_location}"
        return Decision(ex.execution_id, ex.workflow_id, "keep", why, size, target)
    return Decision(
        ex.execution_id,
        ex.workflow_id,
        "cold",
        f"older than hot_days={hot} (age {int(age)} days)",
        size,
        target,
    )


def plan_from_scan(
    policy: RetentionPolicy,
    scanned: Scan,
    now: datetime,
    holds: HoldSet | None = None,
    *,
    cold_copy: bool | None = None,
) -> RetentionPlan:
    """The plan over a scan; ``cold_copy`` (default: the policy has a ``cold_store``) makes the
    cold target the cold store instead of a storage class."""
    copying = policy.cold_store is not None if cold_copy is None else cold_copy
    decisions = tuple(
        _decide(policy, ex, now, holds, cold_copy=copying) for ex in scanned.executions
    )
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


def _scan(store: ObjectStore, max_object_bytes: int, use_index: bool) -> Scan:
    index = read_index_facts(store) if use_index else None
    return scan(store, max_object_bytes=max_object_bytes, index=index)


def plan(
    store: ObjectStore,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    use_index: bool = True,
) -> RetentionPlan:
    """What would move to cold storage and what would expire under ``policy``; changes nothing.

    ``use_index``: learn the snapshot facts of indexed executions from the Parquet index instead
    of reading every record (the same plan; records are read for what the index lacks)."""
    when = utcnow() if now is None else now
    holds = active_holds(store, max_object_bytes=max_object_bytes)
    return plan_from_scan(policy, _scan(store, max_object_bytes, use_index), when, holds)


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
            "explicit copies: set cold_store in the retention policy and run execvault archive"
        )
    return configuration


# --------------------------------------------------------------------------------------------
# expiry


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"


def _unstamp(stamp: str) -> datetime:
    return datetime.strptime(stamp[:-1] + "000+0000", "%Y%m%dT%H%M%S%f%z")


def tombstone_key(
    kind: str, name: str, created_at: datetime, event_id: str, suffix: str = ""
) -> str:
    """``events/tombstones/executions/<s>/<executionId>/<ts>-<eventId>[.suffix].json.zst`` or
    ``events/tombstones/blobs/<h[0:2]>/<hash>/<ts>-<eventId>[.suffix].json.zst``; the suffix is
    ``intent`` (written before a deletion) or ``void`` (the intent deleted nothing)."""
    if kind == "execution":
        where = "executions/" + execution_prefix(name).split("/", 1)[1]
    else:
        where = f"blobs/{name[:2]}/{name}/"
    dot = f".{suffix}" if suffix else ""
    return f"{TOMBSTONE_PREFIX}{where}{_stamp(created_at)}-{event_id}{dot}.json.zst"


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
    #: intents an interrupted run left, finished by this one (their tombstones)
    completed: list[str] = field(default_factory=list)
    #: blobs deleted, then put back because an execution captured meanwhile references them
    restored_blobs: list[str] = field(default_factory=list)
    #: executions the plan (from the index) let expire but whose records disagree with the
    #: index: not deleted; {executionId, reason}
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "expired": len(self.expired),
            "expiredBytes": sum(int(e["storedBytes"]) for e in self.expired),
            "expiredBlobs": len(self.expired_blobs),
            "heldByLegalHold": len(self.held),
            "retainedLocked": self.retained_locked,
            "tombstones": len(self.tombstones),
            "completedIntents": len(self.completed),
            "restoredBlobs": len(self.restored_blobs),
            "skipped": self.skipped,
            "executions": self.expired,
        }


def _snapshot_first(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: (not k.endswith("/snapshot.json.zst"), k))


class _Job:
    """One retention run: the stores, the policy, the clock and what the run did."""

    def __init__(
        self,
        store: ObjectStore,
        policy: RetentionPolicy,
        clock: Callable[[], datetime],
        *,
        cold_store: ObjectStore | None = None,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.max_object_bytes = max_object_bytes
        self.report = ExpiryReport(policy.name)
        self._colds: dict[str, ObjectStore] = {}
        self._given = cold_store
        if cold_store is not None:
            self._colds[cold_store.url] = cold_store
            if policy.cold_store is not None:
                self._colds[normalize_cold_url(policy.cold_store)] = cold_store

    def cold(self, location: str | None = None) -> ObjectStore:
        """The cold store at ``location`` (an event's), else the policy's; opened once."""
        where = location or self.policy.cold_store
        if where is None and self._given is not None:
            return self._given
        if where is None:
            raise InvalidInput("no cold store configured (policy cold_store)", field="cold_store")
        where = normalize_cold_url(where)
        if where not in self._colds:
            opened = open_cold_store(where, like=self.store)
            self._colds[where] = self._colds.setdefault(opened.url, opened)
        return self._colds[where]

    def has_cold(self) -> bool:
        return bool(self._colds) or self.policy.cold_store is not None

    # -- expiry: intent, deletion, tombstone --------------------------------------------------

    def expire_objects(
        self,
        kind: str,
        *,
        execution_id: str | None,
        workflow_id: str | None,
        snapshot_hash: str | None,
        hot_keys: list[str],
        sizes: Mapping[str, int],
        reason: str,
        cold_location: str | None = None,
        cold_keys: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """Write the intent, delete, write the tombstone; None when nothing was deleted."""
        intent = self.intend(
            kind,
            execution_id=execution_id,
            workflow_id=workflow_id,
            snapshot_hash=snapshot_hash,
            hot_keys=hot_keys,
            sizes=sizes,
            reason=reason,
            cold_location=cold_location,
            cold_keys=cold_keys,
        )
        return self.carry_out(intent)

    def _tomb_key(self, body: Mapping[str, Any], when: datetime, suffix: str) -> str:
        kind = "blob" if body["objectKind"] == "blob" else "execution"
        name = body["snapshotHash"] if kind == "blob" else body["executionId"]
        return tombstone_key(kind, str(name), when, str(body["eventId"]), suffix)

    def carry_out(self, intent: Mapping[str, Any], *, note: str = "") -> dict[str, Any] | None:
        """Delete what ``intent`` planned (the first key first: if Object Lock keeps it, nothing
        else is deleted) and write its tombstone, or a ``void`` record when nothing was deleted."""
        owner = intent.get("executionId") or f"blob {intent.get('snapshotHash')}"
        plan = [(self.store, k, False) for k in intent.get("plannedKeys", [])]
        if intent.get("plannedColdKeys"):
            cold = self.cold(intent.get("coldStore"))
            plan += [(cold, k, True) for k in intent["plannedColdKeys"]]
        deleted: list[str] = []
        deleted_cold: list[str] = []
        refused: list[str] = []
        for n, (where, key, is_cold) in enumerate(plan):
            try:
                where.delete(key)
            except RetentionLocked as err:
                label = f"{where.url}/{key}" if is_cold else key
                self.report.retained_locked.append(
                    {"object": owner, "key": label, "reason": f"Object Lock: {err}"}
                )
                refused.append(label)
                if n == 0:  # the execution (or blob) itself stays: nothing else is deleted
                    break
                continue
            (deleted_cold if is_cold else deleted).append(key)
        now = self.clock()
        sizes = intent.get("sizes", {})
        body = {
            **{k: v for k, v in intent.items() if k not in ("plannedKeys", "plannedColdKeys")},
            "state": "done" if deleted or deleted_cold else "void",
            "deletedKeys": deleted,
            "deletedColdKeys": deleted_cold,
            "storedBytes": sum(int(sizes.get(k, 0)) for k in [*deleted, *deleted_cold]),
            "reason": str(intent["reason"])
            + note
            + (f"; {', '.join(refused)} retained by Object Lock" if refused else ""),
            "createdAt": format_ts(now),
        }
        if not deleted and not deleted_cold:
            self.store.put(self._tomb_key(body, now, "void"), encode_record(TOMBSTONE_KIND, body))
            return None
        key = self._tomb_key(body, now, "")
        self.store.put(key, encode_record(TOMBSTONE_KIND, body))
        self.report.tombstones.append(key)
        return {**body, "tombstone": key}

    def intend(
        self,
        kind: str,
        *,
        execution_id: str | None,
        workflow_id: str | None,
        snapshot_hash: str | None,
        hot_keys: list[str],
        sizes: Mapping[str, int],
        reason: str,
        cold_location: str | None = None,
        cold_keys: list[str] | None = None,
    ) -> dict[str, Any]:
        """Write (and return) the intent record of a deletion, before anything is deleted."""
        cold_keys = cold_keys or []
        if cold_keys:
            self.cold(cold_location)  # fail before the intent if the cold store cannot be opened
        now = self.clock()
        intent = {
            "eventId": "ev_" + secrets.token_hex(10),
            "action": "expire",
            "state": "intent",
            "objectKind": kind,
            "executionId": execution_id,
            "workflowId": workflow_id,
            "snapshotHash": snapshot_hash,
            "plannedKeys": hot_keys,
            "coldStore": cold_location if cold_keys else None,
            "plannedColdKeys": cold_keys,
            "sizes": dict(sizes),
            "reason": reason,
            "policy": self.policy.name,
            "createdAt": format_ts(now),
        }
        self.store.put(self._tomb_key(intent, now, "intent"), encode_record(TOMBSTONE_KIND, intent))
        return intent

    def void(self, intent: Mapping[str, Any], note: str) -> None:
        """Close an intent that deleted nothing (a ``void`` record, not a tombstone)."""
        now = self.clock()
        body = {
            **intent,
            "state": "void",
            "deletedKeys": [],
            "deletedColdKeys": [],
            "reason": f"{intent['reason']} ({note})",
            "createdAt": format_ts(now),
        }
        self.store.put(self._tomb_key(body, now, "void"), encode_record(TOMBSTONE_KIND, body))

    def finish_intents(self) -> dict[str, dict[str, Any]]:
        """Intents an interrupted run left without a tombstone: when the first planned object is
        gone the deletion had begun, so it is finished and its tombstone written; otherwise a
        ``void`` record closes the intent and this run's plan decides afresh. Blob intents whose
        blob is still there are returned (blob key → intent): the caller decides them once it
        knows which blobs retained executions reference."""
        pending: dict[str, dict[str, Any]] = {}
        groups: dict[str, dict[str, str]] = {}
        for info in self.store.list(TOMBSTONE_PREFIX):
            folder, _, file = info.key.rpartition("/")
            name, _, suffix = file.removesuffix(".json.zst").partition(".")
            groups.setdefault(f"{folder}/{_event_id_of(name)}", {})[suffix] = info.key
        for found in groups.values():
            if set(found) != {"intent"}:
                continue
            try:
                intent = decode_record(
                    self.store.get(found["intent"]), TOMBSTONE_KIND, max_size=self.max_object_bytes
                )
            except NotFound:
                continue
            planned = [(self.store, k) for k in intent.get("plannedKeys", [])]
            if intent.get("plannedColdKeys"):
                cold = self.cold(intent.get("coldStore"))
                planned += [(cold, k) for k in intent["plannedColdKeys"]]
            begun = bool(planned) and planned[0][0].head(planned[0][1]) is None
            if begun:
                done = self.carry_out(intent, note=" (finished after an interrupted run)")
                if done is not None:
                    self.report.completed.append(str(done["tombstone"]))
            elif intent.get("objectKind") == "blob" and intent.get("plannedKeys"):
                pending[str(intent["plannedKeys"][0])] = intent
            else:
                self.void(intent, "interrupted before deleting; re-planned")
        return pending


def _optional_ts(value: object, name: str) -> datetime | None:
    return None if value is None else parse_ts(value, name)


def _fact_columns(body: Mapping[str, Any]) -> dict[str, Any]:
    """The row columns of a tombstone or tier event that :class:`TierRow` holds."""
    location = body.get("coldStore") or body.get("location")
    plain = list(body.get("deletedKeys") or body.get("keys") or [])
    cold = list(body.get("deletedColdKeys") or [])
    sizes = body.get("sizes") or {}
    status = body.get("status")
    stored = body.get("storedBytes")
    return {
        "action": body["action"],
        "execution_id": body.get("executionId"),
        "workflow_id": body.get("workflowId"),
        "snapshot_hash": body.get("snapshotHash"),
        "deleted_keys": plain + [f"{location}/{k}" for k in cold],
        "storage_class": body.get("storageClass"),
        "stored_bytes": None if stored is None else int(stored),
        "tier": body.get("tier") or ("cold-copy" if body.get("deletedColdKeys") else None),
        "location": location,
        "snapshot_created_at": _optional_ts(body.get("snapshotCreatedAt"), "snapshotCreatedAt"),
        "status": None if status is None else str(status),
        "key_sizes": [None if sizes.get(k) is None else int(sizes[k]) for k in [*plain, *cold]],
        "restored_until": _optional_ts(body.get("restoredUntil"), "restoredUntil"),
    }


def _row(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {
        "event_id": body["eventId"],
        "object_kind": body.get("objectKind", "execution"),
        "reason": body["reason"],
        "policy": body["policy"],
        "created_at": parse_ts(body["createdAt"], "createdAt"),
        "object_key": key,
        **_fact_columns(body),
    }


def _indexed_record(key: str) -> bool:
    """Tombstones of deletions and tier events are index rows; intents and void records not."""
    file = key.rsplit("/", 1)[-1].removesuffix(".json.zst")
    suffix = file.partition(".")[2]
    return suffix in ("", _COPY_SUFFIX, _UNCOPY_SUFFIX)


def _write_rows(store: ObjectStore, rows: list[dict[str, Any]]) -> None:
    by_day: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_day.setdefault(row["created_at"].date().isoformat(), []).append(row)
    writer = "ret" + secrets.token_hex(8)
    for day_rows in by_day.values():
        key = retention_part_key(day_rows[0]["created_at"], writer)
        # the tombstones and tier events are what counts: the next run or
        # rebuild_retention_index restores a lost part
        with contextlib.suppress(ArchiveError):
            store.put(key, encode_retention_part(day_rows))


def sync_retention_index(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> int:
    """Add the rows of every tombstone and tier event that ``index/retention_events`` lacks (a run
    killed before it wrote its part); rows added. Reads the parts' ``object_key`` column and the
    listings; only the missing records are read."""
    indexed: set[str] = set()
    for info in store.list(f"index/{RETENTION_TABLE}/"):
        with contextlib.suppress(NotFound):
            table = pq.read_table(io.BytesIO(store.get(info.key)), columns=["object_key"])
            indexed.update(table.column("object_key").to_pylist())
    rows = []
    for prefix, kind in ((TOMBSTONE_PREFIX, TOMBSTONE_KIND), (TIER_PREFIX, TIER_KIND)):
        for info in store.list(prefix):
            if info.key in indexed or not _indexed_record(info.key):
                continue
            with contextlib.suppress(NotFound):
                body = decode_record(store.get(info.key), kind, max_size=max_object_bytes)
                rows.append(_row(body, info.key))
    _write_rows(store, rows)
    return len(rows)


def expire(
    store: ObjectStore,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    cold_store: ObjectStore | None = None,
    progress: Callable[[int, int], None] | None = None,
    use_index: bool = True,
) -> ExpiryReport:
    """Delete what ``policy`` lets expire at ``now``, leaving a tombstone for each deletion.

    Never deletes an execution under legal hold, an object Object Lock still retains (reported in
    ``retained_locked``, not raised), or a blob that a retained execution references. Executions
    copied to a cold store are deleted there too (``cold_store``, else the one their archive event
    names). Every deletion is announced by an intent record first, so a run killed at any point
    leaves every deleted object explained; re-running converges: intents left behind are
    finished, what is gone is not planned again, an interrupted execution is finished.

    ``use_index``: plan from the Parquet index (see :func:`scan`); an execution planned from its
    index rows is deleted only after its records (and its workflow's tag events) confirm every
    fact the decision rests on, else it is kept and listed in ``skipped``.
    """
    job = _Job(store, policy, clock, cold_store=cold_store, max_object_bytes=max_object_bytes)
    blob_intents = job.finish_intents()
    scanned = _scan(store, max_object_bytes, use_index)
    holds = active_holds(store, max_object_bytes=max_object_bytes)
    at = clock() if now is None else now
    result = plan_from_scan(policy, scanned, at, holds)
    by_id = {ex.execution_id: ex for ex in scanned.executions}
    # the blobs' intents before any execution is deleted: a run killed after deleting the last
    # execution that referenced a blob still leaves the blob's deletion to finish
    for key, size in sorted(result.expiring_blobs.items()):
        if key not in blob_intents:
            blob_intents[key] = job.intend(
                "blob",
                execution_id=None,
                workflow_id=None,
                snapshot_hash=key.rsplit("/", 1)[-1].split(".", 1)[0],
                hot_keys=[key],
                sizes={key: size},
                reason="no retained execution references this structure",
            )
    still_referenced: set[str] = set()
    todo = [d for d in result.decisions if d.action == "expire"]
    done = 0
    tags_of = tags_reader(store, max_object_bytes)

    for decision in result.decisions:
        ex = by_id[decision.execution_id]
        if decision.action == "held":
            job.report.held.append(ex.execution_id)
        if decision.action != "expire":
            still_referenced.add(blob_key(ex.snapshot_hash))
            continue
        if ex.facts_from == "index" or ex.tier_from_index:  # never on the index alone
            ex, why = _confirm_tier(store, ex, max_object_bytes)
            record = None
            if why is None and ex.facts_from == "index":
                record = _snapshot_body(store, ex, max_object_bytes)
                why = _record_disagreement(store, ex, tags_of, max_object_bytes, snapshot=record)
            if why is None:
                why = _younger_by_received_at(policy, ex, record, at, holds)
            if why is not None:
                job.report.skipped.append({"executionId": ex.execution_id, "reason": why})
                still_referenced.add(blob_key(ex.snapshot_hash))
                with contextlib.suppress(NotFound, ArchiveError):
                    real = decode_record(
                        store.get(next(k for k in ex.objects if k.endswith("/snapshot.json.zst"))),
                        _SNAPSHOT_KIND,
                        max_size=max_object_bytes,
                    )
                    still_referenced.add(blob_key(str(real.get("snapshotHash", ""))))
                done += 1
                if progress is not None:
                    progress(done, len(todo))
                continue
        # the snapshot first: once it is gone the execution is expired; a final state left behind
        # by a lock is an orphan the next run finishes
        hot_keys = _snapshot_first(k for k, (_, c) in ex.objects.items() if c != COLD_COPY)
        cold_keys = _snapshot_first(ex.cold_keys) if ex.cold_location else []
        sizes = {k: size for k, (size, _) in ex.objects.items()}
        outcome = job.expire_objects(
            "execution",
            execution_id=ex.execution_id,
            workflow_id=ex.workflow_id,
            snapshot_hash=ex.snapshot_hash,
            hot_keys=hot_keys,
            sizes=sizes,
            reason=decision.reason,
            cold_location=ex.cold_location,
            cold_keys=cold_keys,
        )
        done += 1
        if progress is not None:
            progress(done, len(todo))
        if outcome is None:
            still_referenced.add(blob_key(ex.snapshot_hash))
            continue
        entry = {
            "executionId": ex.execution_id,
            "deletedKeys": outcome["deletedKeys"],
            "storedBytes": outcome["storedBytes"],
            "tombstone": outcome["tombstone"],
        }
        if outcome["deletedColdKeys"]:
            entry["coldStore"] = outcome["coldStore"]
            entry["deletedColdKeys"] = outcome["deletedColdKeys"]
        job.report.expired.append(entry)
    for key, size in sorted(scanned.orphans.items()):
        job.expire_objects(
            "final-state",
            execution_id=key.split("/")[2],
            workflow_id=None,
            snapshot_hash=None,
            hot_keys=[key],
            sizes={key: size},
            reason="final state of an execution whose snapshot already expired",
        )
    kept_bytes: dict[str, bytes] = {}
    for key, intent in sorted(blob_intents.items()):
        if key in still_referenced:
            job.void(intent, "a retained execution references it")
            continue
        with contextlib.suppress(NotFound):
            kept_bytes[key] = store.get(key)  # to put back if a capture started using it
        if job.carry_out(intent) is not None:
            job.report.expired_blobs.append(key)
    _put_back_blobs(store, scanned, kept_bytes, job.report, max_object_bytes)
    sync_retention_index(store, max_object_bytes=max_object_bytes)
    return job.report


def _put_back_blobs(
    store: ObjectStore,
    scanned: Scan,
    deleted: Mapping[str, bytes],
    report: ExpiryReport,
    max_object_bytes: int,
) -> None:
    """Close the race with capture: an execution captured after the scan may reference a
    structure blob this run just deleted (its capture saw the blob before the deletion). Every
    snapshot record the scan did not see is read; a blob one of them references is put back,
    byte for byte. (Capture covers the other order: it checks its blob again after writing the
    record, ``Archive._recheck_blob``.)"""
    gone = {k: v for k, v in deleted.items() if k in report.expired_blobs}
    if not gone:
        return
    known = {ex.execution_id for ex in scanned.executions}
    for info in store.list("executions/"):
        parts = info.key.split("/")
        if len(parts) != 4 or parts[3] != "snapshot.json.zst" or parts[2] in known:
            continue
        try:
            body = decode_record(store.get(info.key), _SNAPSHOT_KIND, max_size=max_object_bytes)
        except (NotFound, ArchiveError):
            continue
        key = blob_key(str(body.get("snapshotHash", "")))
        if key in gone and store.head(key) is None:
            store.put(key, gone[key])
            report.expired_blobs.remove(key)
            report.restored_blobs.append(key)


def read_tombstones(
    store: ObjectStore,
    *,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    include_intents: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """(key, body) of every tombstone (of a deletion; with ``include_intents`` the intent and
    ``void`` records too), in key order."""
    out = []
    for info in store.list(TOMBSTONE_PREFIX):
        if not include_intents and not _indexed_record(info.key):
            continue
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
# cold archiving (storage classes, or verified copies to a cold store), and restore


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


#: S3Config fields a cold ``s3://`` store shares with the hot S3 store it is opened beside
_S3_SHARED: Final = (
    "endpoint_url",
    "region",
    "access_key_id",
    "secret_access_key",
    "object_lock_mode",
    "object_lock_days",
    "max_attempts",
    "retry_base_delay",
    "retry_max_delay",
    "connect_timeout",
    "read_timeout",
)


def open_cold_store(url: str, like: ObjectStore | None = None) -> ObjectStore:
    """The cold store a ``cold_store`` URL names (store_from_url conventions, plus
    ``file:///path``). An ``s3://`` cold store beside an S3 hot store uses the hot store's
    endpoint, region, credentials and Object Lock settings (another bucket or prefix)."""
    from archiver.store.factory import store_from_url

    where = normalize_cold_url(url)
    if where.startswith("memory:"):
        raise InvalidInput(
            "a memory: cold store cannot be opened by URL; pass the store object",
            field="cold_store",
        )
    options: dict[str, Any] = {}
    config = getattr(like, "config", None)
    if where.startswith("s3://") and config is not None and hasattr(config, "endpoint_url"):
        options = {name: getattr(config, name) for name in _S3_SHARED}
    return store_from_url(where, field="cold_store", **options)


def _tier_key(execution_id: str, when: datetime, event_id: str, suffix: str = "") -> str:
    where = execution_prefix(execution_id).split("/", 1)[1]
    dot = f".{suffix}" if suffix else ""
    return f"{TIER_PREFIX}executions/{where}{_stamp(when)}-{event_id}{dot}.json.zst"


def _write_tier(
    job: _Job,
    execution_id: str,
    fields: Mapping[str, Any],
    *,
    suffix: str = "",
    after: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Write a tier event; its time is later than the record named ``after`` (same execution),
    so the newest event of an execution is always the last in key order."""
    event_id = "ev_" + secrets.token_hex(10)
    now = job.clock()
    if after is not None:
        parsed = _parse_record(after)
        if parsed is not None and _stamp(now) <= _stamp_of(parsed[1]):
            now = _unstamp(_stamp_of(parsed[1])) + timedelta(milliseconds=1)
    body = {
        "eventId": event_id,
        "objectKind": "execution",
        "executionId": execution_id,
        **fields,
        "policy": job.policy.name,
        "createdAt": format_ts(now),
    }
    key = _tier_key(execution_id, now, event_id, suffix)
    job.store.put(key, encode_record(TIER_KIND, body))
    return key, body


def _snapshot_facts(ex: ExecutionInfo) -> dict[str, Any]:
    """What a later scan needs when the snapshot itself is not readable (or not here)."""
    return {
        "snapshotCreatedAt": format_ts(ex.created_at),
        **({} if ex.received_at is None else {"snapshotReceivedAt": format_ts(ex.received_at)}),
        "snapshotHash": ex.snapshot_hash,
        "status": ex.status,
    }


@dataclass(slots=True)
class ArchiveReport:
    policy: str
    #: {executionId, storageClass or tier + location, keys, event}
    moved: list[dict[str, Any]] = field(default_factory=list)
    already_cold: int = 0
    #: hot objects Object Lock kept after their verified cold copy: {object, key, reason}
    retained_locked: list[dict[str, Any]] = field(default_factory=list)
    #: executions that could not be copied (e.g. in GLACIER: restore first), or whose records
    #: disagree with the index the plan came from: {executionId, reason}
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "moved": len(self.moved),
            "alreadyCold": self.already_cold,
            "retainedLocked": self.retained_locked,
            "skipped": self.skipped,
            "executions": self.moved,
        }


def _storage(store: ObjectStore, method: str) -> Callable[..., Any]:
    fn = getattr(store, method, None)
    if fn is None:
        raise InvalidInput(
            f"{store.url} has no storage classes: set cold_store in the retention policy "
            "(a second store execution objects are copied to)",
            field="store",
        )
    result: Callable[..., Any] = fn
    return result


def _latest_plain_event(
    store: ObjectStore, execution_id: str, max_object_bytes: int
) -> dict[str, Any] | None:
    where = execution_prefix(execution_id).split("/", 1)[1]
    keys = sorted(
        i.key
        for i in store.list(f"{TIER_PREFIX}executions/{where}")
        if (p := _parse_record(i.key)) is not None and p[2] == ""
    )
    if not keys:
        return None
    with contextlib.suppress(NotFound):
        return decode_record(store.get(keys[-1]), TIER_KIND, max_size=max_object_bytes)
    return None


def archive_cold(
    store: ObjectStore,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    progress: Callable[[int, int], None] | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    cold_store: ObjectStore | None = None,
    use_index: bool = True,
) -> ArchiveReport:
    """Move every execution past its hot period to cold storage.

    With a cold store (``cold_store``, or the policy's ``cold_store``): each object is copied
    byte for byte to the cold store (create-only), read back and verified (SHA-256 and the record
    digest), the move is recorded as a tier event (``tier: "cold-copy"``), and only then is the
    hot copy deleted (a copy Object Lock keeps stays, reported in ``retained_locked``). Without
    one, on S3 stores: each object is copied onto itself with the new storage class and verified
    (S3Store.set_storage_class); the tier event is written first, so no moved object lacks one.
    Blobs are never moved. Re-running finishes what a killed run left (idempotent).

    ``use_index``: plan from the Parquet index (see :func:`scan`); the snapshot facts a tier
    event records are checked against the records first (read anyway to copy them), and an
    execution whose records disagree is left hot and listed in ``skipped``.
    """
    job = _Job(store, policy, clock, cold_store=cold_store, max_object_bytes=max_object_bytes)
    copying = job.has_cold()
    set_class = None if copying else _storage(store, "set_storage_class")
    cold = job.cold() if copying else None
    scanned = _scan(store, max_object_bytes, use_index)
    holds = active_holds(store, max_object_bytes=max_object_bytes)
    result = plan_from_scan(
        policy, scanned, clock() if now is None else now, holds, cold_copy=copying
    )
    by_id = {ex.execution_id: ex for ex in scanned.executions}
    report = ArchiveReport(policy.name)
    todo = [d for d in result.decisions if d.action == "cold"]
    report.already_cold = sum(1 for d in result.decisions if d.action == "keep")
    for n, decision in enumerate(todo, 1):
        # facts from retention_events rows are checked against the tier events (and the whole
        # cold-copy event read, digests included) before a move rests on them
        ex, why = _confirm_tier(store, by_id[decision.execution_id], max_object_bytes)
        if why is not None:
            report.skipped.append({"executionId": ex.execution_id, "reason": why})
        elif cold is not None:
            _copy_to_cold(job, cold, ex, decision.reason, report)
        else:
            assert set_class is not None and decision.target_class is not None
            _move_class(job, set_class, ex, decision.target_class, decision.reason, report)
        if progress is not None:
            progress(n, len(todo))
    sync_retention_index(store, max_object_bytes=max_object_bytes)
    return report


def _move_class(
    job: _Job,
    set_class: Callable[..., Any],
    ex: ExecutionInfo,
    target: str,
    reason: str,
    report: ArchiveReport,
) -> None:
    keys = sorted(k for k, (_, cls) in ex.objects.items() if cls != target)
    if ex.facts_from == "index":  # the tier event records these facts: from the records
        record = _snapshot_body(job.store, ex, job.max_object_bytes)
        why = _record_disagreement(job.store, ex, None, job.max_object_bytes, snapshot=record)
        if why is not None:
            report.skipped.append({"executionId": ex.execution_id, "reason": why})
            return
        if record is not None:  # the index has no receivedAt: the tier event must
            ex = replace(ex, received_at=_received_at(record))
    last = _latest_plain_event(job.store, ex.execution_id, job.max_object_bytes)
    if (
        last is not None
        and last.get("action") == "archive"
        and last.get("storageClass") == target
        and set(keys) <= set(last.get("keys", ()))
    ):
        event = "(recorded by an earlier run)"
    else:
        event, _ = _write_tier(
            job,
            ex.execution_id,
            {
                "action": "archive",
                "tier": "storage-class",
                "workflowId": ex.workflow_id,
                "keys": keys,
                "storageClass": target,
                "reason": reason,
                **_snapshot_facts(ex),
            },
        )
    moved = [k for k in keys if set_class(k, target)]
    report.moved.append(
        {"executionId": ex.execution_id, "storageClass": target, "keys": moved, "event": event}
    )


_KIND_OF: Final = {"snapshot.json.zst": _SNAPSHOT_KIND, "result.json.zst": _FINAL_STATE_KIND}


def _verified_copy(
    source: ObjectStore,
    target: ObjectStore,
    key: str,
    max_object_bytes: int,
    data: bytes | None = None,
) -> tuple[str, int]:
    """Copy ``key`` byte for byte (create-only: an identical copy already there is fine), read it
    back and verify it (same SHA-256, the record's own digest); (sha256 hex, size). ``data``: the
    source's bytes when the caller has read them already."""
    if data is None:
        data = source.get(key)
    digest = hashlib.sha256(data).hexdigest()
    target.put(key, data)
    back = target.get(key)
    if hashlib.sha256(back).hexdigest() != digest:
        raise IntegrityError(f"copy of {key} to {target.url} does not verify (SHA-256)")
    kind = _KIND_OF.get(key.rsplit("/", 1)[-1])
    if kind is not None:
        decode_record(back, kind, max_size=max_object_bytes)  # the record digest verifies
    return digest, len(data)


def _locks(store: ObjectStore, keys: Iterable[str]) -> dict[str, str]:
    """key → why Object Lock keeps it from being deleted now (retention in the future, or a
    legal hold); empty on stores without Object Lock. One HEAD per key on a locking store."""
    if not isinstance(store, LockingStore):
        return {}
    now = utcnow()
    out: dict[str, str] = {}
    for key in keys:
        try:
            state = store.object_lock(key)
        except NotFound:
            continue
        if state.legal_hold:
            out[key] = "legal hold ON"
        elif state.mode and state.retain_until is not None and state.retain_until > now:
            out[key] = f"{state.mode} retention until {format_ts(state.retain_until)}"
    return out


def _rejoin(job: _Job, ex: ExecutionInfo, keys: list[str]) -> str:
    """Copy back (verified) the objects of ``ex`` an earlier run left only in the cold store
    while others stayed hot (a split execution); a note on what happened."""
    event = ex.copy_event or {}
    try:
        cold = job.cold(ex.cold_location)
        for key in keys:
            data = _read_cold_copy(
                cold, ex.execution_id, key, event.get("sizes", {}), event.get("digests", {})
            )
            _verified_copy(cold, job.store, key, job.max_object_bytes, data)
    except ArchiveError as err:
        return f"; its cold-only objects could not be copied back: {err}"
    return f"; copied back from the cold store so it is whole again: {', '.join(keys)}"


def _copy_to_cold(
    job: _Job, cold: ObjectStore, ex: ExecutionInfo, reason: str, report: ArchiveReport
) -> None:
    """Copy, verify, record, then delete the hot copies of one execution: all of its objects
    or none (a split execution, its snapshot cold and its final state hot, reads as neither)."""
    hot_keys = sorted(k for k, (_, cls) in ex.objects.items() if cls != COLD_COPY)
    locked = _locks(job.store, hot_keys)
    if locked:  # nothing is copied or recorded: the execution stays hot, whole
        cold_only = sorted(k for k, (_, cls) in ex.objects.items() if cls == COLD_COPY)
        note = _rejoin(job, ex, cold_only) if cold_only else ""
        for key, lock in locked.items():
            report.retained_locked.append(
                {
                    "object": ex.execution_id,
                    "key": key,
                    "reason": f"Object Lock: {lock}; none of the execution's objects moved "
                    f"(they move together){note}",
                }
            )
        return
    previous = ex.copy_event
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    if previous is not None and previous.get("location") == cold.url:
        digests.update({k: v for k, v in previous.get("digests", {}).items() if k not in hot_keys})
        sizes.update({k: v for k, v in previous.get("sizes", {}).items() if k not in hot_keys})
    read: dict[str, bytes] = {}
    try:
        for key in hot_keys:
            read[key] = job.store.get(key)
        if ex.facts_from == "index":  # the tier event records these facts: from the records
            bodies: dict[str, dict[str, Any]] = {}
            for key in hot_keys:
                kind = _KIND_OF.get(key.rsplit("/", 1)[-1])
                if kind is not None:
                    bodies[kind] = decode_record(read[key], kind, max_size=job.max_object_bytes)
            why = _record_disagreement(
                job.store,
                ex,
                None,
                job.max_object_bytes,
                snapshot=bodies.get(_SNAPSHOT_KIND),
                final=bodies.get(_FINAL_STATE_KIND),
            )
            if why is not None:
                report.skipped.append({"executionId": ex.execution_id, "reason": why})
                return
            if _SNAPSHOT_KIND in bodies:  # the index has no receivedAt: the tier event must
                ex = replace(ex, received_at=_received_at(bodies[_SNAPSHOT_KIND]))
        for key in hot_keys:
            digests[key], sizes[key] = _verified_copy(
                job.store, cold, key, job.max_object_bytes, read[key]
            )
    except ObjectArchived:
        report.skipped.append(
            {"executionId": ex.execution_id, "reason": "in a cold storage class: restore first"}
        )
        return
    keys = sorted(digests)
    fields = {
        "action": "archive",
        "tier": COLD_COPY_TIER,
        "workflowId": ex.workflow_id,
        "keys": keys,
        "location": cold.url,
        "digests": digests,
        "sizes": sizes,
        "storedBytes": sum(sizes.values()),
        "reason": reason,
        **_snapshot_facts(ex),
    }
    same = (
        previous is not None
        and previous.get("action") == "archive"
        and previous.get("location") == cold.url
        and previous.get("digests") == digests
    )
    changed = not same
    if same:  # a run killed after the event: the copy is recorded already
        assert ex.copy_event_key is not None
        event = ex.copy_event_key
    else:
        event, _ = _write_tier(
            job, ex.execution_id, fields, suffix=_COPY_SUFFIX, after=ex.copy_event_key
        )
    kept: list[str] = []
    deleted: list[str] = []
    for key in _snapshot_first(hot_keys):  # only now: the cold copy is verified and recorded
        try:
            job.store.delete(key)
            deleted.append(key)
        except RetentionLocked as err:
            # refused after all (a lock or hold placed since the check): put back what was
            # deleted, so the execution stays whole in the hot store (reads keep using it)
            for back in deleted:
                job.store.put(back, read[back])
            kept = hot_keys
            report.retained_locked.append(
                {
                    "object": ex.execution_id,
                    "key": key,
                    "reason": f"Object Lock: {err}; none of the execution's objects moved "
                    "(they move together)",
                }
            )
            break
    if deleted and not kept:
        changed = True
    if changed:
        entry = {
            "executionId": ex.execution_id,
            "tier": COLD_COPY_TIER,
            "location": cold.url,
            "keys": keys,
            "event": event,
        }
        if kept:
            entry["retainedHot"] = kept
        report.moved.append(entry)


def restore_execution(
    store: ObjectStore,
    execution_id: str,
    *,
    days: int = 7,
    clock: Callable[[], datetime] = utcnow,
    policy_name: str = "default",
    dry_run: bool = False,
    cold_store: ObjectStore | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
) -> str:
    """Restore an archived execution's objects; the overall state after:

    ``hot`` (nothing to restore), ``restoring`` (come back later) or ``restored`` (readable);
    with ``dry_run`` the state now (``archived`` too) and nothing is started. Idempotent; the
    request that restores records a tier event (``restore``).

    An execution moved to a cold store is copied back (verified against the digests its archive
    event recorded; create-only puts) and stays hot for ``days`` (archive_cold leaves it alone
    until then). Otherwise, on S3: ``RestoreObject`` for objects in GLACIER / DEEP_ARCHIVE.
    """
    check_id(execution_id, "executionId")
    where = execution_prefix(execution_id).split("/", 1)[1]
    copies = _copy_names(store, f"{TIER_PREFIX}executions/{where}").get(execution_id, [])
    if copies:
        state = _restore_copy(
            store,
            execution_id,
            copies,
            days=days,
            clock=clock,
            policy_name=policy_name,
            dry_run=dry_run,
            cold_store=cold_store,
            max_object_bytes=max_object_bytes,
        )
        if state is not None:
            return state
    keys = [i.key for i in store.list(execution_prefix(execution_id))]
    if not any(k.endswith("/snapshot.json.zst") for k in keys):
        raise NotFound(f"no snapshot for execution {execution_id}")
    if getattr(store, "restore", None) is None:
        return "hot"  # a store without storage classes: hot where it is
    restore = _storage(store, "restore")
    state_of = _storage(store, "restore_state")
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
        job = _Job(store, RetentionPolicy(name=policy_name), clock)
        key, body = _write_tier(
            job,
            execution_id,
            {
                "action": "restore",
                "tier": "storage-class",
                "workflowId": None,
                "keys": started,
                "storageClass": "STANDARD",
                "reason": f"restore {days} days",
            },
        )
        _write_rows(store, [_row(body, key)])
    states = set(after.values())
    if "restoring" in states or "archived" in states:
        return "restoring"
    if "restored" in states:
        return "restored"
    return "hot"


def _restore_copy(
    store: ObjectStore,
    execution_id: str,
    copies: list[tuple[str, str, str]],
    *,
    days: int,
    clock: Callable[[], datetime],
    policy_name: str,
    dry_run: bool,
    cold_store: ObjectStore | None,
    max_object_bytes: int,
) -> str | None:
    """Restore from the cold store; None when the execution is not (or no longer) there."""
    latest_key = copies[-1][2]
    latest = decode_record(store.get(latest_key), TIER_KIND, max_size=max_object_bytes)
    keys = [str(k) for k in latest.get("keys", ())]
    missing = [k for k in keys if store.head(k) is None]
    if latest.get("action") == "restore":
        return None if missing else _restored_state(latest, clock)
    where = execution_prefix(execution_id).split("/", 1)[1]
    outcomes = _outcome_names(store, f"{TOMBSTONE_PREFIX}executions/{where}")
    if not _moved(copies, outcomes.get(execution_id, ())):
        return None  # expired since: only hot objects (if any) count
    if dry_run:
        return "archived" if missing else "hot"
    job = _Job(store, RetentionPolicy(name=policy_name), clock, cold_store=cold_store)
    cold = job.cold(str(latest["location"]))
    digests = latest.get("digests", {})
    # every copy is read and checked before anything is put back: all of them, or none
    sizes = latest.get("sizes", {})
    good = {key: _read_cold_copy(cold, execution_id, key, sizes, digests) for key in missing}
    for key in missing:
        digest, _ = _verified_copy(cold, store, key, max_object_bytes, good[key])
        assert digest == digests.get(key)
    until = clock() + timedelta(days=days)
    key, body = _write_tier(
        job,
        execution_id,
        {
            "action": "restore",
            "tier": COLD_COPY_TIER,
            "workflowId": latest.get("workflowId"),
            "keys": keys,
            "location": latest["location"],
            "digests": digests,
            "sizes": latest.get("sizes", {}),
            "restoredUntil": format_ts(until),
            "reason": f"restore {days} days from the cold copy",
        },
        suffix=_UNCOPY_SUFFIX,
        after=latest_key,
    )
    _write_rows(store, [_row(body, key)])
    return "restored"


def _read_cold_copy(
    cold: ObjectStore,
    execution_id: str,
    key: str,
    sizes: Mapping[str, Any],
    digests: Mapping[str, Any],
) -> bytes:
    """The bytes of ``key`` in the cold store, checked against the size and SHA-256 the
    execution's cold-copy event recorded; ColdCopyDamaged naming the problem otherwise."""

    def damaged(problem: str, what: str) -> ColdCopyDamaged:
        return ColdCopyDamaged(
            f"execution {execution_id}: the cold copy of {key} in {cold.url} {what}; "
            "nothing was restored (`execvault verify` checks every cold copy)",
            execution_id=execution_id,
            key=key,
            problem=problem,
            location=cold.url,
        )

    try:
        data = cold.get(key)
    except NotFound:
        raise damaged("missing", "is missing") from None
    except IntegrityError as err:  # a store that checks its own checksums
        raise damaged("digest_mismatch", f"cannot be read intact ({err})") from None
    size = sizes.get(key)
    if isinstance(size, int) and len(data) != size:
        raise damaged("size_mismatch", f"holds {len(data)} bytes, its archive event says {size}")
    if hashlib.sha256(data).hexdigest() != digests.get(key):
        raise damaged("digest_mismatch", "does not match the SHA-256 its archive event recorded")
    return data


def _restored_state(event: Mapping[str, Any], clock: Callable[[], datetime]) -> str:
    until = event.get("restoredUntil") if event.get("action") == "restore" else None
    return "restored" if until and clock() < parse_ts(until, "restoredUntil") else "hot"
