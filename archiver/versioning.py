"""Git-like version chains per workflow, assigned race-free with create-only writes.

Each workflow has commits ``refs/workflows/<id>/versions/<seq>``, seq = 1, 2, 3 ... with no gaps.
A capture whose structure hash differs from the head's creates commit head+1, naming the head as
its parent. Two writers that race for the same seq both try a create-only PUT: exactly one wins, the
loser re-reads the winner and retries on top of it (or adopts it, when it holds the same hash). No
lock service, no read-modify-write.

Semantic version rules (``docs/versioning.md``): a removed node or connection, or a node whose type
changed → major; otherwise an added node or connection → minor; anything else (parameters,
settings, positions, names, credential references ...) → patch. The first version is 1.0.0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archiver.codec import decode_record, encode_record
from archiver.errors import ImmutableConflict, IntegrityError, NotFound
from archiver.layout import check_id, version_key, version_seq_from_key, versions_prefix
from archiver.model import VersionCommit
from archiver.normalize import node_keys, shared_ids
from archiver.store.base import ObjectStore

__all__ = ["StructureChange", "VersionChains", "classify_change", "next_version"]

VERSION_KIND = "version"


@dataclass(frozen=True, slots=True)
class StructureChange:
    level: str  # major | minor | patch | none
    nodes_added: tuple[str, ...]
    nodes_removed: tuple[str, ...]
    nodes_modified: tuple[str, ...]
    nodes_renamed: tuple[tuple[str, str], ...]
    type_changed: tuple[str, ...]
    connections_added: int
    connections_removed: int
    settings_changed: bool

    def summary(self) -> str:
        parts: list[str] = []

        def names(items: tuple[str, ...]) -> str:
            shown = ", ".join(items[:3])
            return shown + (f" +{len(items) - 3} more" if len(items) > 3 else "")

        if self.nodes_added:
            parts.append(f"+{len(self.nodes_added)} node(s) ({names(self.nodes_added)})")
        if self.nodes_removed:
            parts.append(f"-{len(self.nodes_removed)} node(s) ({names(self.nodes_removed)})")
        if self.type_changed:
            parts.append(f"type changed: {names(self.type_changed)}")
        if self.nodes_renamed:
            parts.append("renamed: " + ", ".join(f"{a} → {b}" for a, b in self.nodes_renamed[:3]))
        if self.nodes_modified:
            parts.append(f"~{len(self.nodes_modified)} node(s) ({names(self.nodes_modified)})")
        if self.connections_added:
            parts.append(f"+{self.connections_added} connection(s)")
        if self.connections_removed:
            parts.append(f"-{self.connections_removed} connection(s)")
        if self.settings_changed:
            parts.append("settings changed")
        return "; ".join(parts) or "no structural change"

    def to_json(self) -> dict[str, Any]:
        return {
            "nodesAdded": list(self.nodes_added),
            "nodesRemoved": list(self.nodes_removed),
            "nodesModified": list(self.nodes_modified),
            "nodesRenamed": [list(p) for p in self.nodes_renamed],
            "typeChanged": list(self.type_changed),
            "connectionsAdded": self.connections_added,
            "connectionsRemoved": self.connections_removed,
            "settingsChanged": self.settings_changed,
        }


def _edge_set(structure: Mapping[str, Any], keys: list[str]) -> set[tuple[Any, ...]]:
    """Edges with endpoints by node identity (``keys``, one per node), so a rename is not a
    rewire. An edge names a node; where several nodes share that name, it reaches the last of
    them (as in n8n)."""
    by_name = {n["name"]: key for n, key in zip(structure["nodes"], keys, strict=True)}
    return {
        (
            by_name.get(e["source"], "name:" + e["source"]),
            e["type"],
            e["sourceOutput"],
            by_name.get(e["target"], "name:" + e["target"]),
            e["targetInput"],
            e.get("targetType"),
        )
        for e in structure["connections"]
    }


def classify_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> StructureChange:
    """How ``new`` differs from ``old`` (both ``{nodes, connections, settings}``)."""
    # An id is an identity only where one node on each side holds it.
    shared = shared_ids(old["nodes"]) | shared_ids(new["nodes"])
    old_keys = node_keys(old["nodes"], shared)
    new_keys = node_keys(new["nodes"], shared)
    old_nodes = dict(zip(old_keys, old["nodes"], strict=True))
    new_nodes = dict(zip(new_keys, new["nodes"], strict=True))
    added = tuple(new_nodes[k]["name"] for k in new_nodes if k not in old_nodes)
    removed = tuple(old_nodes[k]["name"] for k in old_nodes if k not in new_nodes)
    modified: list[str] = []
    renamed: list[tuple[str, str]] = []
    type_changed: list[str] = []
    for key, node in new_nodes.items():
        before = old_nodes.get(key)
        if before is None or before == node:
            continue
        if before.get("type") != node.get("type"):
            type_changed.append(node["name"])
        elif before.get("name") != node.get("name"):
            renamed.append((before["name"], node["name"]))
            rest_before = {k: v for k, v in before.items() if k != "name"}
            rest_after = {k: v for k, v in node.items() if k != "name"}
            if rest_before != rest_after:
                modified.append(node["name"])
        else:
            modified.append(node["name"])
    old_edges, new_edges = _edge_set(old, old_keys), _edge_set(new, new_keys)
    conn_added = len(new_edges - old_edges)
    conn_removed = len(old_edges - new_edges)
    settings_changed = old["settings"] != new["settings"]
    if removed or type_changed or conn_removed:
        level = "major"
    elif added or conn_added:
        level = "minor"
    elif modified or renamed or settings_changed:
        level = "patch"
    else:
        level = "none"
    return StructureChange(
        level=level,
        nodes_added=added,
        nodes_removed=removed,
        nodes_modified=tuple(modified),
        nodes_renamed=tuple(renamed),
        type_changed=tuple(type_changed),
        connections_added=conn_added,
        connections_removed=conn_removed,
        settings_changed=settings_changed,
    )


def next_version(current: str, level: str) -> str:
    major, minor, patch = (int(p) for p in current.split("."))
    if level == "major":
        return f"{major + 1}.0.0"
    if level == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


class _Chain:
    def __init__(self) -> None:
        self.commits: dict[int, VersionCommit] = {}
        self.by_hash: dict[str, int] = {}  # first seq that held each hash
        self.lock = threading.Lock()
        self.loaded = False

    @property
    def head(self) -> VersionCommit | None:
        return self.commits[max(self.commits)] if self.commits else None

    def add(self, commit: VersionCommit) -> None:
        self.commits[commit.seq] = commit
        self.by_hash.setdefault(commit.snapshot_hash, commit.seq)


class VersionChains:
    """Reads and extends every workflow's chain in one store; safe across threads and processes."""

    def __init__(
        self,
        store: ObjectStore,
        load_structure: Callable[[str], Mapping[str, Any]],
    ) -> None:
        self._store = store
        self._load_structure = load_structure
        self._chains: dict[str, _Chain] = {}
        self._guard = threading.Lock()

    def _chain(self, workflow_id: str) -> _Chain:
        with self._guard:
            chain = self._chains.get(workflow_id)
            if chain is None:
                chain = self._chains[workflow_id] = _Chain()
            return chain

    def _read(self, workflow_id: str, seq: int) -> VersionCommit | None:
        try:
            data = self._store.get(version_key(workflow_id, seq))
        except NotFound:
            return None
        commit = VersionCommit.from_json(decode_record(data, VERSION_KIND))
        if commit.seq != seq or commit.workflow_id != workflow_id:
            raise IntegrityError(f"version commit {workflow_id}/{seq} names another place")
        return commit

    def _refresh(self, workflow_id: str, chain: _Chain) -> None:
        """Bring the cached chain up to the store's head (list once, then probe seq+1)."""
        if not chain.loaded:
            for info in self._store.list(versions_prefix(workflow_id)):
                seq = version_seq_from_key(info.key)
                if seq not in chain.commits:
                    commit = self._read(workflow_id, seq)
                    if commit is not None:
                        chain.add(commit)
            chain.loaded = True
        while True:
            nxt = (max(chain.commits) + 1) if chain.commits else 1
            commit = self._read(workflow_id, nxt)
            if commit is None:
                return
            chain.add(commit)

    def head(self, workflow_id: str) -> VersionCommit | None:
        check_id(workflow_id, "workflowId")
        chain = self._chain(workflow_id)
        with chain.lock:
            self._refresh(workflow_id, chain)
            return chain.head

    def history(self, workflow_id: str) -> list[VersionCommit]:
        """Every commit, oldest first."""
        check_id(workflow_id, "workflowId")
        chain = self._chain(workflow_id)
        with chain.lock:
            self._refresh(workflow_id, chain)
            return [chain.commits[s] for s in sorted(chain.commits)]

    def get(self, workflow_id: str, seq: int) -> VersionCommit:
        for commit in self.history(workflow_id):
            if commit.seq == seq:
                return commit
        raise NotFound(f"workflow {workflow_id} has no version #{seq}")

    def assign(
        self,
        workflow_id: str,
        snapshot_hash: str,
        structure: Mapping[str, Any],
        *,
        created_at: datetime,
        execution_id: str | None = None,
        user_id: str | None = None,
        reuse: bool = False,
        source: str | None = None,
        engine_version_id: str | None = None,
    ) -> VersionCommit:
        """The commit that ``snapshot_hash`` runs under: the head if equal, else a new one.

        ``reuse`` (a backfill: a structure from the past): the latest commit that holds
        ``snapshot_hash`` when the chain has one, instead of a new head that "restores" it."""
        check_id(workflow_id, "workflowId")
        chain = self._chain(workflow_id)
        with chain.lock:
            while True:
                self._refresh(workflow_id, chain)
                head = chain.head
                if head is not None and head.snapshot_hash == snapshot_hash:
                    return head
                if reuse:
                    held = [c for c in chain.commits.values() if c.snapshot_hash == snapshot_hash]
                    if held:
                        return max(held, key=lambda c: c.seq)
                commit = self._new_commit(
                    workflow_id,
                    chain,
                    head,
                    snapshot_hash,
                    structure,
                    created_at=created_at,
                    execution_id=execution_id,
                    user_id=user_id,
                    source=source,
                    engine_version_id=engine_version_id,
                )
                try:
                    self._store.put(
                        version_key(workflow_id, commit.seq),
                        encode_record(VERSION_KIND, commit.to_json()),
                    )
                except ImmutableConflict:
                    continue  # another writer took this seq: re-read and build on top of it
                chain.add(commit)
                return commit

    def _new_commit(
        self,
        workflow_id: str,
        chain: _Chain,
        head: VersionCommit | None,
        snapshot_hash: str,
        structure: Mapping[str, Any],
        **meta: Any,
    ) -> VersionCommit:
        if head is None:
            return VersionCommit(
                workflow_id=workflow_id,
                seq=1,
                version="1.0.0",
                snapshot_hash=snapshot_hash,
                parent_seq=None,
                parent_version=None,
                parent_hash=None,
                level="initial",
                summary="initial version",
                changes={},
                **meta,
            )
        change = classify_change(self._load_structure(head.snapshot_hash), structure)
        level = change.level if change.level != "none" else "patch"
        restores = chain.by_hash.get(snapshot_hash)
        summary = change.summary()
        restores_version = None
        if restores is not None:
            restores_version = chain.commits[restores].version
            summary = f"restores {restores_version}: {summary}"
        return VersionCommit(
            workflow_id=workflow_id,
            seq=head.seq + 1,
            version=next_version(head.version, level),
            snapshot_hash=snapshot_hash,
            parent_seq=head.seq,
            parent_version=head.version,
            parent_hash=head.snapshot_hash,
            level=level,
            summary=summary,
            changes=change.to_json(),
            restores_seq=restores,
            restores_version=restores_version,
            **meta,
        )
