"""Tags and annotations: append-only events over immutable snapshots (plan 6.2 and 6.4).

Nothing about a snapshot ever changes. Tagging, moving a tag, untagging, annotating and removing an
annotation each write a new write-once **event** object; the current state is the fold of a
workflow's events in order. Layout (``docs/compare.md``, "Tags and annotations")::

    events/workflows/<workflowId>/tags/<ts>-<eventId>.json.zst          tag events
    events/workflows/<workflowId>/annotations/<ts>-<eventId>.json.zst   annotation events
    index/tag_events/dt=YYYY-MM-DD/part-<writer>-000001.parquet          one row per tag event
    index/annotations/dt=YYYY-MM-DD/part-<writer>-000001.parquet         one row per annotation event

``<ts>`` is the event time as ``YYYYMMDDTHHMMSSmmmZ``, so listing a prefix gives the events in
time order (ties broken by the random event id). Events are records like the others
(``codec.encode_record``: JCS, digest, zstd). The objects are the source of truth; each event
also writes a one-row Parquet part (Hive layout, readable by DuckDB as it is), and
``rebuild_event_index`` regenerates those parts from the objects, one part per table and day.

**Tags** are named pointers, unique within a workflow (like git tags): ``production``,
``baseline``, ``last-good``. Adding a tag to an execution moves it there from whichever execution
of the workflow had it (the event records ``previousExecutionId``); removing it is an event too.
The current ``baseline`` of workflow X is the execution named by the last ``add`` of that tag,
unless a ``remove`` came after it.

**Annotations** are notes on a snapshot or one of its nodes: a type (``note``, ``bug``,
``insight``, ``warning``, ``question``), a text, who and when. Removing one is an event naming it.
Texts go through the archive's sanitizer, like everything else that is stored.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Self

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from archiver.codec import DEFAULT_MAX_OBJECT_BYTES, decode_record, encode_record
from archiver.errors import ArchiveError, InvalidInput, NotFound
from archiver.layout import check_id
from archiver.model import ExecutionSnapshot
from archiver.store.base import ObjectStore
from archiver.timeutil import format_ts, parse_ts, utcnow

__all__ = [
    "ANNOTATION_TYPES",
    "EVENT_TABLES",
    "AnnotationEvent",
    "EventLog",
    "TagEvent",
    "check_tag",
    "event_part_key",
    "rebuild_event_index",
]

TAG_KIND: Final = "tag-event"
ANNOTATION_KIND: Final = "annotation-event"
EVENTS_PREFIX: Final = "events/workflows/"
ANNOTATION_TYPES: Final = ("note", "bug", "insight", "warning", "question")
MAX_TEXT: Final = 10_000
MAX_DESCRIPTION: Final = 1_000
_TAG_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_EVENT_ID_RE: Final = re.compile(r"ev_[0-9a-f]{20}")

_TS = pa.timestamp("ms", tz="UTC")
EVENT_TABLES: Final[Mapping[str, pa.Schema]] = {
    "tag_events": pa.schema(
        [
            ("event_id", pa.string()),
            ("action", pa.string()),
            ("workflow_id", pa.string()),
            ("execution_id", pa.string()),
            ("tag", pa.string()),
            ("previous_execution_id", pa.string()),
            ("description", pa.string()),
            ("user_id", pa.string()),
            ("created_at", _TS),
            ("object_key", pa.string()),
        ]
    ),
    "annotations": pa.schema(
        [
            ("event_id", pa.string()),
            ("action", pa.string()),
            ("workflow_id", pa.string()),
            ("execution_id", pa.string()),
            ("annotation_id", pa.string()),
            ("type", pa.string()),
            ("text", pa.string()),
            ("node", pa.string()),
            ("node_id", pa.string()),
            ("user_id", pa.string()),
            ("created_at", _TS),
            ("object_key", pa.string()),
        ]
    ),
}
_PART_RE: Final = re.compile(
    r"index/(?P<table>tag_events|annotations)/dt=\d{4}-\d{2}-\d{2}/part-[A-Za-z0-9_]+-\d{6}\.parquet"
)


def check_tag(value: object, field: str = "tag") -> str:
    """A tag name: 1-64 of lowercase letters, digits and ``. _ -``, starting with a letter/digit."""
    if not isinstance(value, str) or _TAG_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"{field} must be 1-64 lowercase letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)",
            field=field,
        )
    return value


def check_event_id(value: object, field: str = "annotationId") -> str:
    if not isinstance(value, str) or _EVENT_ID_RE.fullmatch(value) is None:
        raise InvalidInput(f"{field} must be an event id (ev_ and 20 hex digits)", field=field)
    return value


def _text(value: object, field: str, limit: int, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", field=field)
    return value


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"


def event_key(workflow_id: str, kind: str, created_at: datetime, event_id: str) -> str:
    return f"{EVENTS_PREFIX}{workflow_id}/{kind}/{_stamp(created_at)}-{event_id}.json.zst"


def event_part_key(table: str, day: date, writer: str) -> str:
    return f"index/{table}/dt={day.isoformat()}/part-{writer}-000001.parquet"


@dataclass(frozen=True, slots=True)
class TagEvent:
    event_id: str
    action: str  # add | remove
    workflow_id: str
    execution_id: str
    tag: str
    created_at: datetime
    user_id: str | None = None
    description: str | None = None
    previous_execution_id: str | None = None  # add: the execution the tag moved from

    def to_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "action": self.action,
            "workflowId": self.workflow_id,
            "executionId": self.execution_id,
            "tag": self.tag,
            "createdAt": format_ts(self.created_at),
            "userId": self.user_id,
            "description": self.description,
            "previousExecutionId": self.previous_execution_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            event_id=data["eventId"],
            action=data["action"],
            workflow_id=data["workflowId"],
            execution_id=data["executionId"],
            tag=data["tag"],
            created_at=parse_ts(data["createdAt"], "createdAt"),
            user_id=data.get("userId"),
            description=data.get("description"),
            previous_execution_id=data.get("previousExecutionId"),
        )

    def row(self, key: str) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "action": self.action,
            "workflow_id": self.workflow_id,
            "execution_id": self.execution_id,
            "tag": self.tag,
            "previous_execution_id": self.previous_execution_id,
            "description": self.description,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "object_key": key,
        }


@dataclass(frozen=True, slots=True)
class AnnotationEvent:
    event_id: str
    action: str  # add | remove
    workflow_id: str
    execution_id: str
    annotation_id: str  # add: its own event id; remove: the annotation removed
    created_at: datetime
    type: str | None = None
    text: str | None = None
    node: str | None = None
    node_id: str | None = None
    user_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "action": self.action,
            "workflowId": self.workflow_id,
            "executionId": self.execution_id,
            "annotationId": self.annotation_id,
            "createdAt": format_ts(self.created_at),
            "type": self.type,
            "text": self.text,
            "node": self.node,
            "nodeId": self.node_id,
            "userId": self.user_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            event_id=data["eventId"],
            action=data["action"],
            workflow_id=data["workflowId"],
            execution_id=data["executionId"],
            annotation_id=data["annotationId"],
            created_at=parse_ts(data["createdAt"], "createdAt"),
            type=data.get("type"),
            text=data.get("text"),
            node=data.get("node"),
            node_id=data.get("nodeId"),
            user_id=data.get("userId"),
        )

    def row(self, key: str) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "action": self.action,
            "workflow_id": self.workflow_id,
            "execution_id": self.execution_id,
            "annotation_id": self.annotation_id,
            "type": self.type,
            "text": self.text,
            "node": self.node,
            "node_id": self.node_id,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "object_key": key,
        }


def encode_event_part(table: str, rows: Iterable[Mapping[str, Any]]) -> bytes:
    schema = EVENT_TABLES[table]
    ordered = sorted(rows, key=lambda r: (r["workflow_id"], r["created_at"], r["event_id"]))
    arrays = [
        pa.array([r.get(n) for r in ordered], type=schema.field(n).type) for n in schema.names
    ]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), sink, compression="zstd")
    data: bytes = sink.getvalue().to_pybytes()
    return data


class EventLog:
    """Write and fold the tag and annotation events of an archive's store."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        sanitize_text: Callable[[str], str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    ) -> None:
        self.store = store
        self._sanitize = sanitize_text or (lambda text: text)
        self._clock = clock
        self._max = max_object_bytes

    # ---------------------------------------------------------------- reading

    def _read(self, workflow_id: str, kind: str, record: str) -> list[tuple[str, dict[str, Any]]]:
        prefix = f"{EVENTS_PREFIX}{check_id(workflow_id, 'workflowId')}/{kind}/"
        out = []
        for info in sorted(self.store.list(prefix), key=lambda i: i.key):
            try:
                body = decode_record(self.store.get(info.key), record, max_size=self._max)
            except NotFound:
                continue
            out.append((info.key, body))
        return out

    def tag_events(self, workflow_id: str) -> list[TagEvent]:
        """Every tag event of the workflow, oldest first."""
        return [TagEvent.from_json(b) for _, b in self._read(workflow_id, "tags", TAG_KIND)]

    def annotation_events(self, workflow_id: str) -> list[AnnotationEvent]:
        """Every annotation event of the workflow, oldest first."""
        return [
            AnnotationEvent.from_json(b)
            for _, b in self._read(workflow_id, "annotations", ANNOTATION_KIND)
        ]

    @staticmethod
    def fold_tags(events: Iterable[TagEvent]) -> dict[str, TagEvent]:
        """tag → the ``add`` event that put it where it is now (removed tags are absent)."""
        current: dict[str, TagEvent] = {}
        for event in events:
            if event.action == "add":
                current[event.tag] = event
            elif current.get(event.tag) is not None and (
                current[event.tag].execution_id == event.execution_id
            ):
                del current[event.tag]
        return current

    def current_tags(self, workflow_id: str) -> dict[str, TagEvent]:
        return self.fold_tags(self.tag_events(workflow_id))

    def tagged(self, workflow_id: str, tag: str) -> TagEvent:
        """The current holder of ``tag`` in the workflow (e.g. its ``baseline``), else NotFound."""
        name = check_tag(tag)
        event = self.current_tags(workflow_id).get(name)
        if event is None:
            raise NotFound(f"workflow {workflow_id} has no execution tagged {name}")
        return event

    @staticmethod
    def fold_annotations(
        events: Iterable[AnnotationEvent],
    ) -> tuple[list[AnnotationEvent], dict[str, AnnotationEvent]]:
        """(annotations still in place, oldest first; removal events by annotation id)."""
        added: dict[str, AnnotationEvent] = {}
        removed: dict[str, AnnotationEvent] = {}
        for event in events:
            if event.action == "add":
                added[event.annotation_id] = event
            else:
                removed[event.annotation_id] = event
        active = [a for aid, a in added.items() if aid not in removed]
        return active, removed

    # ---------------------------------------------------------------- writing

    def _write(self, workflow_id: str, kind: str, record: str, event: Any, table: str) -> str:
        key = event_key(workflow_id, kind, event.created_at, event.event_id)
        self.store.put(key, encode_record(record, event.to_json()))
        day = event.created_at.date()
        part = event_part_key(table, day, event.event_id.replace("ev_", "ev"))
        # the object is what counts: rebuild_event_index restores a row whose part failed
        with contextlib.suppress(ArchiveError):
            self.store.put(part, encode_event_part(table, [event.row(key)]))
        return key

    def _new_id(self) -> str:
        return "ev_" + secrets.token_hex(10)

    def add_tag(
        self,
        snapshot: ExecutionSnapshot,
        tag: object,
        *,
        user_id: object | None = None,
        description: object | None = None,
    ) -> tuple[TagEvent, bool]:
        """Tag ``snapshot`` (moving the tag from another execution of the workflow).

        Returns ``(event, created)``; when the execution already holds the tag nothing is
        written and the event that put it there is returned with ``created`` false.
        """
        name = check_tag(tag)
        user = None if user_id is None else check_id(user_id, "userId")
        text = _text(description, "description", MAX_DESCRIPTION, required=False)
        current = self.current_tags(snapshot.workflow_id).get(name)
        if current is not None and current.execution_id == snapshot.execution_id:
            return current, False
        event = TagEvent(
            event_id=self._new_id(),
            action="add",
            workflow_id=snapshot.workflow_id,
            execution_id=snapshot.execution_id,
            tag=name,
            created_at=self._clock(),
            user_id=user,
            description=None if text is None else self._sanitize(text),
            previous_execution_id=None if current is None else current.execution_id,
        )
        self._write(snapshot.workflow_id, "tags", TAG_KIND, event, "tag_events")
        return event, True

    def remove_tag(
        self, snapshot: ExecutionSnapshot, tag: object, *, user_id: object | None = None
    ) -> TagEvent:
        """Untag ``snapshot`` (an event); NotFound when it does not hold the tag now."""
        name = check_tag(tag)
        user = None if user_id is None else check_id(user_id, "userId")
        current = self.current_tags(snapshot.workflow_id).get(name)
        if current is None or current.execution_id != snapshot.execution_id:
            raise NotFound(f"execution {snapshot.execution_id} is not tagged {name}")
        event = TagEvent(
            event_id=self._new_id(),
            action="remove",
            workflow_id=snapshot.workflow_id,
            execution_id=snapshot.execution_id,
            tag=name,
            created_at=self._clock(),
            user_id=user,
        )
        self._write(snapshot.workflow_id, "tags", TAG_KIND, event, "tag_events")
        return event

    def annotate(
        self,
        snapshot: ExecutionSnapshot,
        *,
        text: object,
        type: object = "note",
        node: object | None = None,
        user_id: object | None = None,
    ) -> AnnotationEvent:
        """Annotate ``snapshot``, or one of its nodes (``node``: its name or its id)."""
        if type not in ANNOTATION_TYPES:
            raise InvalidInput(f"type must be one of {', '.join(ANNOTATION_TYPES)}", field="type")
        body = _text(text, "text", MAX_TEXT, required=True)
        assert body is not None
        user = None if user_id is None else check_id(user_id, "userId")
        node_name = node_id = None
        if node is not None:
            if not isinstance(node, str) or not node:
                raise InvalidInput("node must be a node name or id", field="node")
            for candidate in snapshot.nodes_snapshot:
                if node in (candidate.get("name"), candidate.get("id")):
                    node_name, node_id = candidate.get("name"), candidate.get("id")
                    break
            else:
                raise InvalidInput("node names no node of this snapshot", field="node")
        event_id = self._new_id()
        event = AnnotationEvent(
            event_id=event_id,
            action="add",
            workflow_id=snapshot.workflow_id,
            execution_id=snapshot.execution_id,
            annotation_id=event_id,
            created_at=self._clock(),
            type=str(type),
            text=self._sanitize(body),
            node=node_name,
            node_id=node_id,
            user_id=user,
        )
        self._write(snapshot.workflow_id, "annotations", ANNOTATION_KIND, event, "annotations")
        return event

    def remove_annotation(
        self, snapshot: ExecutionSnapshot, annotation_id: object, *, user_id: object | None = None
    ) -> AnnotationEvent:
        """Remove an annotation of ``snapshot`` (an event); NotFound when it is not in place."""
        aid = check_event_id(annotation_id)
        user = None if user_id is None else check_id(user_id, "userId")
        active, _ = self.fold_annotations(self.annotation_events(snapshot.workflow_id))
        target = next(
            (
                a
                for a in active
                if a.annotation_id == aid and a.execution_id == snapshot.execution_id
            ),
            None,
        )
        if target is None:
            raise NotFound(f"execution {snapshot.execution_id} has no annotation {aid}")
        event = AnnotationEvent(
            event_id=self._new_id(),
            action="remove",
            workflow_id=snapshot.workflow_id,
            execution_id=snapshot.execution_id,
            annotation_id=aid,
            created_at=self._clock(),
            type=target.type,
            node=target.node,
            node_id=target.node_id,
            user_id=user,
        )
        self._write(snapshot.workflow_id, "annotations", ANNOTATION_KIND, event, "annotations")
        return event


def rebuild_event_index(
    store: ObjectStore, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
) -> dict[str, Any]:
    """Regenerate ``index/tag_events`` and ``index/annotations`` from the event objects: one part
    per table and day, then the old parts are removed. Returns rows and parts written/removed."""
    old = [i.key for i in store.list("index/") if _PART_RE.fullmatch(i.key)]
    rows: dict[tuple[str, date], list[dict[str, Any]]] = {}
    for info in sorted(store.list(EVENTS_PREFIX), key=lambda i: i.key):
        kind = info.key.split("/")[3] if info.key.count("/") >= 4 else ""
        if kind == "tags":
            tag = TagEvent.from_json(
                decode_record(store.get(info.key), TAG_KIND, max_size=max_object_bytes)
            )
            rows.setdefault(("tag_events", tag.created_at.date()), []).append(tag.row(info.key))
        elif kind == "annotations":
            note = AnnotationEvent.from_json(
                decode_record(store.get(info.key), ANNOTATION_KIND, max_size=max_object_bytes)
            )
            rows.setdefault(("annotations", note.created_at.date()), []).append(note.row(info.key))
    writer = "rbev" + secrets.token_hex(6)
    written = []
    for (table, day), table_rows in sorted(rows.items()):
        key = event_part_key(table, day, writer)
        store.put(key, encode_event_part(table, table_rows))
        written.append(key)
    for key in old:
        store.delete(key)
    return {
        "rows": {t: sum(len(r) for (tt, _), r in rows.items() if tt == t) for t in EVENT_TABLES},
        "partsWritten": written,
        "partsRemoved": old,
    }
