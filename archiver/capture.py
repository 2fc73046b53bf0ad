"""The CPU half of capture: normalize → sanitize → canonicalize → hash, plus trigger extraction.

Pure functions with no I/O, so they can be benchmarked and tested alone. ``archiver.archive`` adds
the storage half (content blob → version → execution record).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import orjson

from archiver.canonical import NUMBER_SLOW, canonicalize_checked
from archiver.lru import SizedLRU
from archiver.model import CredentialRef, TriggerSnapshot
from archiver.normalize import Edge, NormalizedWorkflow, normalize_workflow
from archiver.sanitize import NODE_KEPT_KEYS, Sanitizer

__all__ = [
    "PreparedCache",
    "PreparedWorkflow",
    "extract_credential_refs",
    "extract_triggers",
    "prepare_workflow",
    "trigger_kind",
]

# Node fields that define identity and wiring: never rewritten by the sanitizer.
_STRUCTURAL_KEYS = NODE_KEPT_KEYS
_SAFE_INT = 2**53
# PreparedCache keys: orjson bytes of the document. Values orjson prints but prepare refuses or
# converts (datetimes, dataclasses, subclasses) are not cached.
_KEY_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)

_TRIGGER_KINDS: dict[str, str] = {
    "n8n-nodes-base.webhook": "webhook",
    "n8n-nodes-base.formTrigger": "form",
    "n8n-nodes-base.scheduleTrigger": "schedule",
    "n8n-nodes-base.cron": "schedule",
    "n8n-nodes-base.interval": "schedule",
    "n8n-nodes-base.manualTrigger": "manual",
    "n8n-nodes-base.start": "manual",
    "n8n-nodes-base.executeWorkflowTrigger": "subworkflow",
    "n8n-nodes-base.errorTrigger": "error",
    "n8n-nodes-base.n8nTrigger": "event",
    "n8n-nodes-base.emailReadImap": "polling",
    "n8n-nodes-base.rssFeedReadTrigger": "polling",
    "@n8n/n8n-nodes-langchain.chatTrigger": "chat",
    "@n8n/n8n-nodes-langchain.manualChatTrigger": "chat",
    "@n8n/n8n-nodes-langchain.mcpTrigger": "webhook",
}


def trigger_kind(node_type: str) -> str | None:
    """The kind of trigger a node type is, or None when it is not a trigger."""
    kind = _TRIGGER_KINDS.get(node_type)
    if kind is None and node_type.endswith("Trigger"):  # the part after the last dot does
        return "event"
    return kind


@dataclass(frozen=True, slots=True)
class PreparedWorkflow:
    """A workflow ready to store: sanitized structure, its JCS bytes and hash.

    ``structure`` is a private tree equal to what ``structure_jcs`` parses back to; ``workflow``
    is the normalized workflow with that structure and the sanitized pinData in place of what
    was sent (nothing in a prepared workflow is unsanitized).
    """

    workflow: NormalizedWorkflow
    structure: dict[str, Any]
    structure_jcs: bytes
    snapshot_hash: str
    credentials_refs: tuple[CredentialRef, ...]
    triggers: tuple[TriggerSnapshot, ...]
    pin_data: dict[str, Any] | None


def _sanitize_nodes(nodes: list[dict[str, Any]], sanitizer: Sanitizer) -> list[dict[str, Any]]:
    """Sanitize everything but identity and wiring, in one sanitizer call for all nodes."""
    return sanitizer.sanitize_nodes(nodes)[0]


def edge_numbers(edges: list[Edge]) -> int:
    """``canonical.number_flags`` of normalize's edges: exact str and int values, whose only
    unbounded numbers are the target inputs (output indexes count list items)."""
    if not edges:
        return 0
    inputs = [edge["targetInput"] for edge in edges]
    return NUMBER_SLOW if max(inputs) > _SAFE_INT or min(inputs) < -_SAFE_INT else 0


def extract_credential_refs(nodes: list[dict[str, Any]]) -> tuple[CredentialRef, ...]:
    """One reference per distinct credential, with the nodes that use it."""
    found: dict[tuple[str, str | None, str | None], list[str]] = {}
    for node in nodes:
        credentials = node.get("credentials")
        if not credentials:
            continue
        for cred_type, ref in credentials.items():
            found.setdefault((cred_type, ref.get("id"), ref.get("name")), []).append(node["name"])
    return tuple(
        CredentialRef(type=t, id=i, name=n, nodes=tuple(users))
        for (t, i, n), users in sorted(found.items(), key=lambda kv: tuple(map(str, kv[0])))
    )


def extract_triggers(nodes: list[dict[str, Any]]) -> tuple[TriggerSnapshot, ...]:
    triggers: list[TriggerSnapshot] = []
    kinds = _TRIGGER_KINDS
    for node in nodes:
        node_type = node["type"]
        kind = kinds.get(node_type)  # trigger_kind, inline: one call for every node
        if kind is None:
            if not node_type.endswith("Trigger"):
                continue
            kind = "event"
        triggers.append(
            TriggerSnapshot(
                node=node["name"],
                type=node["type"],
                kind=kind,
                node_id=node.get("id"),
                disabled=bool(node.get("disabled", False)),
                webhook_id=node.get("webhookId"),
                parameters=node.get("parameters") or {},
            )
        )
    return tuple(triggers)


def prepare_workflow(document: Any, sanitizer: Sanitizer) -> PreparedWorkflow:
    """Normalize, sanitize, canonicalize and hash one workflow document."""
    return _prepare(document, sanitizer)[0]


def _prepare(document: Any, sanitizer: Sanitizer) -> tuple[PreparedWorkflow, bool]:
    """``prepare_workflow``, and whether orjson parses ``structure_jcs`` back to ``structure``
    exactly (False where the exact printer was needed: integers beyond 2^53 and the like, which
    orjson would read as floats and ``json`` reads as ``canonicalize`` does)."""
    wf = normalize_workflow(document)
    nodes, node_numbers = sanitizer.sanitize_nodes(wf.nodes)
    settings, settings_numbers = sanitizer.sanitize_json(wf.settings, where="settings")
    # ``structure`` becomes exactly what the stored bytes read back as (1.0 → 1 and so on). The
    # sanitizer has looked at every number of the nodes and settings (or remembers them), and
    # normalize built the edges: canonicalize need not walk the tree again.
    jcs, structure, exact = canonicalize_checked(
        {"nodes": nodes, "connections": wf.connections, "settings": settings},
        numbers=node_numbers | settings_numbers | edge_numbers(wf.connections),
    )
    pin_data = sanitizer.sanitize(wf.pin_data) if wf.pin_data else None
    prepared = PreparedWorkflow(
        workflow=_sanitized(wf, structure, pin_data),
        structure=structure,
        structure_jcs=jcs,
        snapshot_hash=hashlib.sha256(jcs).hexdigest(),
        credentials_refs=extract_credential_refs(nodes),
        triggers=extract_triggers(nodes),
        pin_data=pin_data,
    )
    return prepared, exact


def _sanitized(
    wf: NormalizedWorkflow, structure: dict[str, Any], pin_data: dict[str, Any] | None
) -> NormalizedWorkflow:
    """``wf`` with its structure and pinData replaced by their sanitized form: what a prepared
    workflow holds (and PreparedCache keeps) must hold no secret."""
    names = {node["name"] for node in structure["nodes"]}
    edges = structure["connections"]
    return replace(
        wf,
        nodes=structure["nodes"],
        connections=edges,
        settings=structure["settings"],
        pin_data=pin_data,
        dangling_edges=[e for e in edges if e["source"] not in names or e["target"] not in names],
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    """What a hit rebuilds a PreparedWorkflow from: bytes and a few small records.

    No parsed trees: every full garbage collection traverses every tree a process holds, and a
    full cache of trees (64 MiB of 400-node workflows: ~250,000 containers) made each one take
    ~100 ms, paid by whichever capture triggered it. Parsing the bytes again on a hit costs
    ~0.4 ms for a 200 KB structure (tens of µs for a typical one), and each hit gets trees of
    its own that the caller may change.
    """

    structure_jcs: bytes
    exact: bool  # orjson parses structure_jcs back to the structure (else json does)
    snapshot_hash: str
    workflow: NormalizedWorkflow  # structure and pinData emptied: parsed again on a hit
    credentials_refs: tuple[CredentialRef, ...]
    triggers: tuple[TriggerSnapshot, ...]
    pin_data: bytes | None  # orjson bytes of the sanitized pinData

    @classmethod
    def of(cls, prepared: PreparedWorkflow, exact: bool) -> _Entry:
        pin = prepared.pin_data
        return cls(
            structure_jcs=prepared.structure_jcs,
            exact=exact,
            snapshot_hash=prepared.snapshot_hash,
            workflow=replace(
                prepared.workflow,
                nodes=[],
                connections=[],
                settings={},
                pin_data=None,
                dangling_edges=[],
            ),
            credentials_refs=prepared.credentials_refs,
            triggers=prepared.triggers,
            pin_data=None if pin is None else orjson.dumps(pin),
        )

    def size(self) -> int:
        return len(self.structure_jcs) + len(self.pin_data or b"") + 512

    def prepared(self) -> PreparedWorkflow:
        jcs = self.structure_jcs
        structure = orjson.loads(jcs) if self.exact else json.loads(jcs)
        pin_data = None if self.pin_data is None else orjson.loads(self.pin_data)
        return PreparedWorkflow(
            workflow=_sanitized(self.workflow, structure, pin_data),
            structure=structure,
            structure_jcs=jcs,
            snapshot_hash=self.snapshot_hash,
            credentials_refs=self.credentials_refs,
            triggers=self.triggers,
            pin_data=pin_data,
        )


class PreparedCache:
    """Remembers prepared workflows by the SHA-256 of the document as sent.

    Engines send the same workflow for run after run; preparing it is a pure function of the
    document and the sanitizer's key, so a repeat costs a serialization and a hash of the
    document and a parse of the prepared structure. Holds bytes, not trees (see ``_Entry``),
    bounded by their total size; each answer is a tree of its own. Holds nothing unsanitized.

    Known limit: orjson prints NaN and infinities as null, so a document holding one (which
    ``prepare_workflow`` refuses) is answered like its twin with null there if that twin is
    cached. Telling them apart would cost a parse and a comparison of every such document.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._entries: SizedLRU[bytes, _Entry] = SizedLRU(max_bytes, _Entry.size)

    def prepare(self, document: Any, sanitizer: Sanitizer) -> PreparedWorkflow:
        try:
            data = orjson.dumps(document, option=_KEY_OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            return prepare_workflow(document, sanitizer)  # not plain JSON: let it explain why
        key = hashlib.sha256(data).digest()
        hit = self._entries.get(key)
        if hit is not None:
            return hit.prepared()
        prepared, exact = _prepare(document, sanitizer)
        self._entries.put(key, _Entry.of(prepared, exact))
        return prepared
