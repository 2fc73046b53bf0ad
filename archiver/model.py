"""The snapshot records: frozen, typed, with camelCase JSON names (the plan's field names).

``ExecutionSnapshot`` is what a reader gets back; on storage it is split in two write-once objects —
the workflow *structure* (content-addressed, shared by every execution of that structure) and the
execution record that points at it (see ``docs/storage-format.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from archiver.timeutil import format_ts, parse_ts

__all__ = [
    "SNAPSHOT_FORMAT_VERSION",
    "CaptureWarning",
    "CredentialRef",
    "ExecutionSnapshot",
    "TriggerSnapshot",
    "VersionCommit",
    "WorkflowSnapshot",
]

SNAPSHOT_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class CredentialRef:
    """A reference to a credential: never its data."""

    type: str
    id: str | None = None
    name: str | None = None
    nodes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.id is not None:
            out["id"] = self.id
        if self.name is not None:
            out["name"] = self.name
        out["nodes"] = list(self.nodes)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            type=data["type"],
            id=data.get("id"),
            name=data.get("name"),
            nodes=tuple(data.get("nodes", ())),
        )


@dataclass(frozen=True, slots=True)
class CaptureWarning:
    """Something odd about the captured workflow that n8n accepts, so capture did too
    (``docs/storage-format.md``, "Warnings"): a code, the field it concerns, a message."""

    code: str
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            code=str(data["code"]),
            field=str(data.get("field", "")),
            message=str(data.get("message", "")),
        )


@dataclass(frozen=True, slots=True)
class TriggerSnapshot:
    """A node that starts the workflow (trigger, webhook, schedule, manual ...)."""

    node: str
    type: str
    kind: str  # webhook | schedule | manual | form | chat | subworkflow | polling | event
    node_id: str | None = None
    disabled: bool = False
    webhook_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "type": self.type, "kind": self.kind}
        if self.node_id is not None:
            out["nodeId"] = self.node_id
        out["disabled"] = self.disabled
        if self.webhook_id is not None:
            out["webhookId"] = self.webhook_id
        out["parameters"] = self.parameters
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            node=data["node"],
            type=data["type"],
            kind=data["kind"],
            node_id=data.get("nodeId"),
            disabled=bool(data.get("disabled", False)),
            webhook_id=data.get("webhookId"),
            parameters=dict(data.get("parameters", {})),
        )


@dataclass(frozen=True, slots=True)
class WorkflowSnapshot:
    """The plan's WorkflowSnapshot: the workflow as executed (sanitized)."""

    id: str
    name: str | None
    description: str | None
    active: bool | None
    nodes: list[dict[str, Any]]
    connections: list[dict[str, Any]]
    settings: dict[str, Any]
    version: str
    tags: tuple[str, ...] = ()
    version_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "active": self.active,
            "nodes": self.nodes,
            "connections": self.connections,
            "settings": self.settings,
            "version": self.version,
            "tags": list(self.tags),
        }
        if self.version_id is not None:
            out["versionId"] = self.version_id
        return out


@dataclass(frozen=True, slots=True)
class ExecutionSnapshot:
    """Everything about what one execution ran, as the plan defines it."""

    id: str
    execution_id: str
    workflow_id: str
    snapshot_version: str
    snapshot_hash: str
    workflow_snapshot: WorkflowSnapshot
    variables_snapshot: dict[str, Any] | None
    credentials_refs: tuple[CredentialRef, ...]
    triggers_snapshot: tuple[TriggerSnapshot, ...]
    user_id: str
    trigger_type: str
    created_at: datetime
    version_seq: int
    trigger_data: Any = None
    pin_data: dict[str, Any] | None = None
    node_identity: str = "id"
    replay_of: str | None = None
    format_version: int = SNAPSHOT_FORMAT_VERSION
    warnings: tuple[CaptureWarning, ...] = ()
    #: when the server received the capture (its own clock); None in records written before
    #: servers stamped it. Retention and Object Lock count from it (``retention_start``).
    received_at: datetime | None = None
    #: how a capture not taken before the run came about (``backfill``, ``post-run``); None for
    #: a pre-run capture (and every record written before the field existed)
    source: str | None = None

    @property
    def retention_start(self) -> datetime:
        """The trusted time retention counts from: ``received_at``, else ``created_at``."""
        return self.created_at if self.received_at is None else self.received_at

    @property
    def nodes_snapshot(self) -> list[dict[str, Any]]:
        return self.workflow_snapshot.nodes

    @property
    def connections_snapshot(self) -> list[dict[str, Any]]:
        return self.workflow_snapshot.connections

    @property
    def settings_snapshot(self) -> dict[str, Any]:
        return self.workflow_snapshot.settings

    def structure(self) -> dict[str, Any]:
        """The hashed part: ``snapshotHash`` = SHA-256(JCS(structure()))."""
        return {
            "nodes": self.nodes_snapshot,
            "connections": self.connections_snapshot,
            "settings": self.settings_snapshot,
        }

    def to_json(self) -> dict[str, Any]:
        """The full snapshot as the API returns it (camelCase)."""
        out: dict[str, Any] = {
            "id": self.id,
            "executionId": self.execution_id,
            "workflowId": self.workflow_id,
            "snapshotVersion": self.snapshot_version,
            "snapshotHash": self.snapshot_hash,
            "workflowSnapshot": self.workflow_snapshot.to_json(),
            "nodesSnapshot": self.nodes_snapshot,
            "connectionsSnapshot": self.connections_snapshot,
            "settingsSnapshot": self.settings_snapshot,
            "variablesSnapshot": self.variables_snapshot,
            "credentialsRefs": [c.to_json() for c in self.credentials_refs],
            "triggersSnapshot": [t.to_json() for t in self.triggers_snapshot],
            "userId": self.user_id,
            "triggerType": self.trigger_type,
            "triggerData": self.trigger_data,
            "pinData": self.pin_data,
            "createdAt": format_ts(self.created_at),
            "receivedAt": None if self.received_at is None else format_ts(self.received_at),
            "versionSeq": self.version_seq,
            "nodeIdentity": self.node_identity,
            "formatVersion": self.format_version,
            "warnings": [w.to_json() for w in self.warnings],
        }
        if self.replay_of is not None:
            out["replayOf"] = self.replay_of
        out["source"] = self.source
        return out

    def record_body(self) -> dict[str, Any]:
        """The execution record as stored: everything but the structure, which lives in its blob."""
        wf = self.workflow_snapshot
        body: dict[str, Any] = {
            "id": self.id,
            "executionId": self.execution_id,
            "workflowId": self.workflow_id,
            "snapshotVersion": self.snapshot_version,
            "versionSeq": self.version_seq,
            "snapshotHash": self.snapshot_hash,
            "workflow": {
                "name": wf.name,
                "description": wf.description,
                "active": wf.active,
                "tags": list(wf.tags),
                "versionId": wf.version_id,
            },
            "variablesSnapshot": self.variables_snapshot,
            "credentialsRefs": [c.to_json() for c in self.credentials_refs],
            "triggersSnapshot": [t.to_json() for t in self.triggers_snapshot],
            "userId": self.user_id,
            "triggerType": self.trigger_type,
            "triggerData": self.trigger_data,
            "pinData": self.pin_data,
            "createdAt": format_ts(self.created_at),
            "nodeIdentity": self.node_identity,
            "replayOf": self.replay_of,
        }
        if self.warnings:  # absent when empty: records without warnings keep their bytes
            body["warnings"] = [w.to_json() for w in self.warnings]
        if self.received_at is not None:
            body["receivedAt"] = format_ts(self.received_at)
        if self.source is not None:  # absent for pre-run captures: older records keep their bytes
            body["source"] = self.source
        return body

    @classmethod
    def from_record(cls, body: Mapping[str, Any], structure: Mapping[str, Any]) -> Self:
        wf = body.get("workflow") or {}
        return cls(
            id=body["id"],
            execution_id=body["executionId"],
            workflow_id=body["workflowId"],
            snapshot_version=body["snapshotVersion"],
            snapshot_hash=body["snapshotHash"],
            workflow_snapshot=WorkflowSnapshot(
                id=body["workflowId"],
                name=wf.get("name"),
                description=wf.get("description"),
                active=wf.get("active"),
                nodes=list(structure["nodes"]),
                connections=list(structure["connections"]),
                settings=dict(structure["settings"]),
                version=body["snapshotVersion"],
                tags=tuple(wf.get("tags") or ()),
                version_id=wf.get("versionId"),
            ),
            variables_snapshot=body.get("variablesSnapshot"),
            credentials_refs=tuple(CredentialRef.from_json(c) for c in body["credentialsRefs"]),
            triggers_snapshot=tuple(TriggerSnapshot.from_json(t) for t in body["triggersSnapshot"]),
            user_id=body["userId"],
            trigger_type=body["triggerType"],
            created_at=parse_ts(body["createdAt"], "createdAt"),
            version_seq=int(body["versionSeq"]),
            trigger_data=body.get("triggerData"),
            pin_data=body.get("pinData"),
            node_identity=body.get("nodeIdentity", "id"),
            replay_of=body.get("replayOf"),
            format_version=int(body.get("formatVersion", SNAPSHOT_FORMAT_VERSION)),
            warnings=tuple(CaptureWarning.from_json(w) for w in body.get("warnings") or ()),
            received_at=(
                None
                if body.get("receivedAt") is None
                else parse_ts(body["receivedAt"], "receivedAt")
            ),
            source=body.get("source"),
        )


@dataclass(frozen=True, slots=True)
class VersionCommit:
    """One link of a workflow's version chain (git-like: a commit with a parent)."""

    workflow_id: str
    seq: int
    version: str
    snapshot_hash: str
    parent_seq: int | None
    parent_version: str | None
    parent_hash: str | None
    level: str  # initial | major | minor | patch
    summary: str
    changes: dict[str, Any]
    created_at: datetime
    execution_id: str | None = None
    user_id: str | None = None
    restores_seq: int | None = None
    restores_version: str | None = None
    #: ``backfill`` for a version imported from the engine's own history (no execution ran it
    #: in the archive); None otherwise
    source: str | None = None
    #: the engine's id of this version (n8n's ``versionId``), when imported from its history
    engine_version_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        parent = None
        if self.parent_seq is not None:
            parent = {
                "seq": self.parent_seq,
                "version": self.parent_version,
                "snapshotHash": self.parent_hash,
            }
        restores = None
        if self.restores_seq is not None:
            restores = {"seq": self.restores_seq, "version": self.restores_version}
        out: dict[str, Any] = {
            "workflowId": self.workflow_id,
            "seq": self.seq,
            "version": self.version,
            "snapshotHash": self.snapshot_hash,
            "parent": parent,
            "level": self.level,
            "summary": self.summary,
            "changes": self.changes,
            "restores": restores,
            "createdAt": format_ts(self.created_at),
            "executionId": self.execution_id,
            "userId": self.user_id,
        }
        if self.source is not None:  # absent unless set: older commits keep their bytes
            out["source"] = self.source
        if self.engine_version_id is not None:
            out["engineVersionId"] = self.engine_version_id
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        parent = data.get("parent") or {}
        restores = data.get("restores") or {}
        return cls(
            workflow_id=data["workflowId"],
            seq=int(data["seq"]),
            version=data["version"],
            snapshot_hash=data["snapshotHash"],
            parent_seq=parent.get("seq"),
            parent_version=parent.get("version"),
            parent_hash=parent.get("snapshotHash"),
            level=data["level"],
            summary=data["summary"],
            changes=dict(data.get("changes") or {}),
            created_at=parse_ts(data["createdAt"], "createdAt"),
            execution_id=data.get("executionId"),
            user_id=data.get("userId"),
            restores_seq=restores.get("seq"),
            restores_version=restores.get("version"),
            source=data.get("source"),
            engine_version_id=data.get("engineVersionId"),
        )
