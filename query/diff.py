"""Compare two executions (or two versions) of workflows: the plan's ``SnapshotDiff``, and more.

A diff has two halves (``docs/compare.md``):

* the **structure** — nodes added, removed, renamed and modified (each change an RFC 6901 JSON
  Pointer with its old and new value), connections added and removed, settings and variables
  changed, with views for credential references, triggers and secrets;
* the **execution** — status changes per node, errors that appeared or disappeared, item-count and
  duration changes, and the *first divergence*: the earliest node, in execution order, whose
  status, error or output differs.

Nodes are matched by id, then by name, then by content (their fields other than name, id and
position), so a renamed node is a rename and not a removal plus an addition. Connections are
compared by the identities of their endpoints, so a rename never shows up as a rewire.

Secrets are already HMAC markers in storage (``docs/sanitizing.md``). The diff compares them by
marker, says ``"secret": "changed"`` / ``"unchanged"`` / ``"added"`` / ``"removed"``, and never
prints a marker: every marker in a rendered diff is replaced by ``<secret>``. The in-memory diff
keeps the exact values, so :func:`apply_structural_diff` rebuilds the second structure from the
first one exactly (a property test holds this).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from archiver.archive import Archive
from archiver.capture import trigger_kind
from archiver.codec import decode_blob
from archiver.errors import InvalidInput, NotFound
from archiver.final_state import FinalState, NodeError, NodeState
from archiver.layout import blob_key, check_id
from archiver.model import ExecutionSnapshot, VersionCommit
from archiver.normalize import edge_sort_key
from archiver.sanitize import MARKER_PREFIX, MARKER_RE
from archiver.timeutil import format_ts

__all__ = [
    "SECRET_MASK",
    "AddedNode",
    "Change",
    "CompareSide",
    "CredentialChange",
    "Divergence",
    "ExecutionDiff",
    "NodeModification",
    "NodeRename",
    "RemovedNode",
    "SnapshotDiff",
    "TriggerChange",
    "apply_changes",
    "apply_structural_diff",
    "check_version_ref",
    "compare",
    "compare_executions",
    "compare_structures",
    "compare_workflow_versions",
    "load_structure",
    "resolve_version",
]

#: What a rendered diff shows in place of a secret marker.
SECRET_MASK: Final = "<secret>"

#: Node durations are timing noise unless they move by this much (both must hold).
DURATION_MIN_DELTA_MS: Final = 100.0
DURATION_MIN_RATIO: Final = 1.5

_MARKER_BYTES: Final = MARKER_PREFIX.encode()
_ABSENT: Final[Any] = object()  # "no value here" (a JSON null is a value)
_POSITIONAL: Final = frozenset({"position"})


# --------------------------------------------------------------------------------------------
# JSON helpers: strict equality, pointers, masking
# --------------------------------------------------------------------------------------------


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: Python's ``==`` without its ``True == 1`` (and key order never matters).

    ``1`` and ``1.0`` are equal here, as they are in canonical JSON (both print as ``1``).
    """
    if a is b:
        return True
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if a != b:
        return False
    if isinstance(a, dict | list):
        try:
            return _dumps(a) == _dumps(b) or _deep_same(a, b)
        except (TypeError, orjson.JSONEncodeError):
            return _deep_same(a, b)
    return True


def _deep_same(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_deep_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_deep_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


def escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape_pointer(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _has_marker(value: Any) -> bool:
    if isinstance(value, str):
        return MARKER_PREFIX in value
    if isinstance(value, dict | list):
        try:
            return _MARKER_BYTES in orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            return False
    return False


def _markers(value: Any) -> list[str]:
    if isinstance(value, str):
        return MARKER_RE.findall(value) if MARKER_PREFIX in value else []
    if isinstance(value, dict | list) and _has_marker(value):
        return MARKER_RE.findall(orjson.dumps(value).decode())
    return []


def mask(value: Any) -> Any:
    """``value`` with every secret marker replaced by :data:`SECRET_MASK` (a new tree)."""
    if isinstance(value, str):
        return MARKER_RE.sub(SECRET_MASK, value) if MARKER_PREFIX in value else value
    if isinstance(value, dict):
        if not _has_marker(value):
            return value
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        if not _has_marker(value):
            return value
        return [mask(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# changes (RFC 6901 pointers, applied in order with RFC 6902 add/remove/replace semantics)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One change at ``path`` (a JSON Pointer into the compared object).

    ``op`` is ``add`` (``old`` absent), ``remove`` (``new`` absent) or ``replace``. Applied in
    order with RFC 6902 semantics, a list of changes turns the old object into the new one; in a
    list, a ``remove`` names the old index and an ``add`` the new one. ``secret`` is set when
    either value holds a secret marker: ``changed``, ``unchanged`` (only the text around the
    secret changed), ``added`` or ``removed``.
    """

    path: str
    op: str
    old: Any = _ABSENT
    new: Any = _ABSENT
    secret: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "op": self.op}
        old = _ABSENT if self.old is _ABSENT else mask(self.old)
        new = _ABSENT if self.new is _ABSENT else mask(self.new)
        if self.secret is not None:
            out["kind"] = "secret"
            out["secret"] = self.secret
            if old is not _ABSENT and new is not _ABSENT and _same(old, new):
                return out  # nothing but the secret itself changed: show neither side
        if old is not _ABSENT:
            out["old"] = old
        if new is not _ABSENT:
            out["new"] = new
        return out


def _change(path: str, op: str, old: Any = _ABSENT, new: Any = _ABSENT) -> Change:
    secret: str | None = None
    old_m = [] if old is _ABSENT else _markers(old)
    new_m = [] if new is _ABSENT else _markers(new)
    if old_m or new_m:
        if old_m and new_m:
            secret = "unchanged" if old_m == new_m else "changed"
        else:
            secret = "added" if new_m else "removed"
    return Change(path, op, old, new, secret)


def _diff_values(a: Any, b: Any, path: str, out: list[Change]) -> None:
    if _same(a, b):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key, va in a.items():
            p = f"{path}/{escape_pointer(str(key))}"
            if key in b:
                _diff_values(va, b[key], p, out)
            else:
                out.append(_change(p, "remove", old=va))
        for key, vb in b.items():
            if key not in a:
                out.append(_change(f"{path}/{escape_pointer(str(key))}", "add", new=vb))
        return
    if isinstance(a, list) and isinstance(b, list):
        _diff_lists(a, b, path, out)
        return
    out.append(_change(path, "replace", old=a, new=b))


def _diff_lists(a: list[Any], b: list[Any], path: str, out: list[Change]) -> None:
    """Common prefix and suffix stay; the middles are compared pairwise, then the longer one's
    tail is removed (from the end, old indexes) or added (new indexes)."""
    n, m = len(a), len(b)
    prefix = 0
    while prefix < n and prefix < m and _same(a[prefix], b[prefix]):
        prefix += 1
    suffix = 0
    while (
        suffix < n - prefix and suffix < m - prefix and _same(a[n - 1 - suffix], b[m - 1 - suffix])
    ):
        suffix += 1
    mid_a, mid_b = n - prefix - suffix, m - prefix - suffix
    common = min(mid_a, mid_b)
    for i in range(prefix, prefix + common):
        _diff_values(a[i], b[i], f"{path}/{i}", out)
    for i in range(prefix + mid_a - 1, prefix + common - 1, -1):
        out.append(_change(f"{path}/{i}", "remove", old=a[i]))
    for i in range(prefix + common, prefix + mid_b):
        out.append(_change(f"{path}/{i}", "add", new=b[i]))


def diff_values(a: Any, b: Any) -> list[Change]:
    """The changes that turn ``a`` into ``b`` (pointers relative to them)."""
    out: list[Change] = []
    _diff_values(a, b, "", out)
    return out


def apply_changes(document: Any, changes: Iterable[Change]) -> Any:
    """Apply ``changes`` in order to a deep copy of ``document``; return the result."""
    doc = copy.deepcopy(document)
    for change in changes:
        value = copy.deepcopy(change.new)
        if change.path == "":
            if change.op == "remove":
                raise InvalidInput("cannot remove the whole document", field="path")
            doc = value
            continue
        tokens = [unescape_pointer(t) for t in change.path.split("/")[1:]]
        parent = doc
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        if isinstance(parent, list):
            index = int(last)
            if change.op == "add":
                parent.insert(index, value)
            elif change.op == "remove":
                del parent[index]
            else:
                parent[index] = value
        elif change.op == "remove":
            del parent[last]
        else:
            parent[last] = value
    return doc


# --------------------------------------------------------------------------------------------
# the diff records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompareSide:
    """One side of a comparison: a snapshot (with its final state, if any) or a version."""

    snapshot_id: str
    workflow_id: str
    version: str
    version_seq: int
    snapshot_hash: str
    structure: Mapping[str, Any]
    execution_id: str | None = None
    created_at: str | None = None
    trigger_type: str | None = None
    trigger_data: Any = None
    variables: Mapping[str, Any] | None = None
    pin_data: Any = None
    final_state: FinalState | None = None
    replay_of: str | None = None

    @classmethod
    def from_snapshot(
        cls, snapshot: ExecutionSnapshot, final_state: FinalState | None = None
    ) -> CompareSide:
        return cls(
            snapshot_id=snapshot.id,
            workflow_id=snapshot.workflow_id,
            version=snapshot.snapshot_version,
            version_seq=snapshot.version_seq,
            snapshot_hash=snapshot.snapshot_hash,
            structure=snapshot.structure(),
            execution_id=snapshot.execution_id,
            created_at=format_ts(snapshot.created_at),
            trigger_type=snapshot.trigger_type,
            trigger_data=snapshot.trigger_data,
            variables=snapshot.variables_snapshot,
            pin_data=snapshot.pin_data,
            final_state=final_state,
            replay_of=snapshot.replay_of,
        )

    @classmethod
    def from_version(cls, commit: VersionCommit, structure: Mapping[str, Any]) -> CompareSide:
        return cls(
            snapshot_id=f"{commit.workflow_id}@{commit.version}",
            workflow_id=commit.workflow_id,
            version=commit.version,
            version_seq=commit.seq,
            snapshot_hash=commit.snapshot_hash,
            structure=structure,
            created_at=format_ts(commit.created_at),
        )

    def to_json(self) -> dict[str, Any]:
        final = self.final_state
        return {
            "snapshotId": self.snapshot_id,
            "executionId": self.execution_id,
            "workflowId": self.workflow_id,
            "version": self.version,
            "versionSeq": self.version_seq,
            "snapshotHash": self.snapshot_hash,
            "createdAt": self.created_at,
            "triggerType": self.trigger_type,
            "replayOf": self.replay_of,
            "status": None if final is None else final.status,
        }


@dataclass(frozen=True, slots=True)
class AddedNode:
    name: str
    node_id: str | None
    type: str
    index: int  # position in the second structure's node list
    node: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.node_id,
            "type": self.type,
            "index": self.index,
            "node": mask(self.node),
        }


@dataclass(frozen=True, slots=True)
class RemovedNode:
    name: str
    node_id: str | None
    type: str
    index: int  # position in the first structure's node list

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.node_id, "type": self.type, "index": self.index}


@dataclass(frozen=True, slots=True)
class NodeRename:
    old_name: str
    new_name: str
    node_id: str | None
    matched_by: str  # id | content (a node matched by name keeps its name)
    index1: int
    index2: int

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.old_name,
            "to": self.new_name,
            "nodeId": self.node_id,
            "matchedBy": self.matched_by,
        }


@dataclass(frozen=True, slots=True)
class NodeModification:
    """A node present on both sides whose fields (other than its name) changed."""

    node: str  # its name on side 2
    node_id: str | None
    type: str
    matched_by: str  # id | name | content
    fields_changed: tuple[str, ...]
    changes: tuple[Change, ...]  # pointers relative to the node: /parameters/url, /typeVersion
    index1: int
    index2: int
    previous_name: str | None = None  # set when the node was also renamed

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "nodeId": self.node_id,
            "type": self.type,
            "matchedBy": self.matched_by,
            "fieldsChanged": list(self.fields_changed),
            "changes": [c.to_json() for c in self.changes],
        }
        if self.previous_name is not None:
            out["previousName"] = self.previous_name
        return out


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """A credential reference of a node present on both sides: swapped, added or removed."""

    node: str
    node_id: str | None
    credential_type: str
    change: str  # swapped | added | removed
    old: Mapping[str, Any] | None
    new: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "nodeId": self.node_id,
            "credentialType": self.credential_type,
            "change": self.change,
            "old": None if self.old is None else dict(self.old),
            "new": None if self.new is None else dict(self.new),
        }


@dataclass(frozen=True, slots=True)
class TriggerChange:
    """A trigger node added, removed or modified; or the execution's trigger type changed."""

    change: str  # added | removed | modified | triggerType
    node: str | None = None
    node_id: str | None = None
    kind: str | None = None  # webhook | schedule | manual ... (the trigger's kind)
    fields_changed: tuple[str, ...] = ()
    old: str | None = None  # for triggerType
    new: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"change": self.change}
        if self.change == "triggerType":
            out.update(old=self.old, new=self.new)
            return out
        out.update(node=self.node, nodeId=self.node_id, kind=self.kind)
        if self.change == "modified":
            out["fieldsChanged"] = list(self.fields_changed)
        return out


@dataclass(frozen=True, slots=True)
class SecretChange:
    where: str  # node | settings | variables
    path: str
    change: str  # changed | added | removed (| unchanged: only the text around it changed)
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"where": self.where, "path": self.path, "change": self.change}
        if self.node is not None:
            out["node"] = self.node
        return out


# ---- the execution side


def _error_json(error: NodeError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    out: dict[str, Any] = {"message": mask(error.message)}
    if error.name is not None:
        out["name"] = error.name
    if error.http_code is not None:
        out["httpCode"] = error.http_code
    if error.description is not None:
        out["description"] = mask(error.description)
    return out


def _same_error(a: NodeError | None, b: NodeError | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.message, a.name, a.http_code, a.description) == (
        b.message,
        b.name,
        b.http_code,
        b.description,
    )


@dataclass(frozen=True, slots=True)
class NodeStatusChange:
    node: str
    node_id: str | None
    old: str | None  # None: the node did not run on that side
    new: str | None

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "nodeId": self.node_id, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class ErrorChange:
    node: str
    old: NodeError | None
    new: NodeError | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node}
        if self.old is not None and self.new is not None:
            out["old"] = _error_json(self.old)
            out["new"] = _error_json(self.new)
        else:
            error = self.new if self.new is not None else self.old
            out.update(_error_json(error) or {})
        return out


@dataclass(frozen=True, slots=True)
class ItemCountChange:
    node: str
    input_old: int
    input_new: int
    output_old: int
    output_new: int

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "inputItems": {"old": self.input_old, "new": self.input_new},
            "outputItems": {"old": self.output_old, "new": self.output_new},
        }


@dataclass(frozen=True, slots=True)
class DurationChange:
    node: str
    old_ms: float
    new_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "oldMs": self.old_ms,
            "newMs": self.new_ms,
            "deltaMs": round(self.new_ms - self.old_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class Divergence:
    """The earliest node, in execution order, whose status, error or output differs."""

    node: str
    node_id: str | None
    position: int  # in the merged execution order, from 0
    reasons: tuple[str, ...]  # status | error | output | runs | notRun1 | notRun2
    status1: str | None
    status2: str | None
    error1: NodeError | None
    error2: NodeError | None

    def to_json(self) -> dict[str, Any]:
        error = self.error2 if self.error2 is not None else self.error1
        return {
            "node": self.node,
            "nodeId": self.node_id,
            "position": self.position,
            "reasons": list(self.reasons),
            "status1": self.status1,
            "status2": self.status2,
            "error": _error_json(error),
            "error1": _error_json(self.error1),
            "error2": _error_json(self.error2),
        }


@dataclass(frozen=True, slots=True)
class ExecutionDiff:
    has_final_state1: bool
    has_final_state2: bool
    status1: str | None
    status2: str | None
    duration1_ms: float | None
    duration2_ms: float | None
    error1: NodeError | None
    error2: NodeError | None
    node_status_changes: tuple[NodeStatusChange, ...] = ()
    errors_appeared: tuple[ErrorChange, ...] = ()
    errors_disappeared: tuple[ErrorChange, ...] = ()
    errors_changed: tuple[ErrorChange, ...] = ()
    item_count_changes: tuple[ItemCountChange, ...] = ()
    output_changes: tuple[str, ...] = ()  # nodes whose output items (content) differ
    duration_changes: tuple[DurationChange, ...] = ()
    first_divergence: Divergence | None = None

    @property
    def empty(self) -> bool:
        """No difference in outcome (durations are timing noise and never count)."""
        return (
            self.has_final_state1 == self.has_final_state2
            and self.status1 == self.status2
            and _same_error(self.error1, self.error2)
            and not self.node_status_changes
            and not self.errors_appeared
            and not self.errors_disappeared
            and not self.errors_changed
            and not self.item_count_changes
            and not self.output_changes
            and self.first_divergence is None
        )

    def to_json(self) -> dict[str, Any]:
        delta = None
        if self.duration1_ms is not None and self.duration2_ms is not None:
            delta = round(self.duration2_ms - self.duration1_ms, 3)
        return {
            "finalState1": self.has_final_state1,
            "finalState2": self.has_final_state2,
            "status1": self.status1,
            "status2": self.status2,
            "statusChanged": self.status1 != self.status2,
            "durationMs1": self.duration1_ms,
            "durationMs2": self.duration2_ms,
            "durationDeltaMs": delta,
            "error1": _error_json(self.error1),
            "error2": _error_json(self.error2),
            "nodeStatusChanges": [c.to_json() for c in self.node_status_changes],
            "errorsAppeared": [c.to_json() for c in self.errors_appeared],
            "errorsDisappeared": [c.to_json() for c in self.errors_disappeared],
            "errorsChanged": [c.to_json() for c in self.errors_changed],
            "itemCountChanges": [c.to_json() for c in self.item_count_changes],
            "outputChanged": list(self.output_changes),
            "durationChanges": [c.to_json() for c in self.duration_changes],
            "firstDivergence": None
            if self.first_divergence is None
            else self.first_divergence.to_json(),
        }


@dataclass(frozen=True, slots=True)
class SnapshotDiff:
    """The plan's SnapshotDiff (``snapshotId1`` … ``variablesChanged``) and what the issue adds."""

    side1: CompareSide
    side2: CompareSide
    nodes_added: tuple[AddedNode, ...] = ()
    nodes_removed: tuple[RemovedNode, ...] = ()
    nodes_renamed: tuple[NodeRename, ...] = ()
    nodes_modified: tuple[NodeModification, ...] = ()
    #: set only when nodes present on both sides changed their relative order: for each position
    #: of the second node list, the index of that node in the first list (-1: an added node)
    node_order: tuple[int, ...] | None = None
    connections_added: tuple[Mapping[str, Any], ...] = ()
    connections_removed: tuple[Mapping[str, Any], ...] = ()
    settings_changed: tuple[Change, ...] = ()
    variables_changed: tuple[Change, ...] = ()
    credentials_changed: tuple[CredentialChange, ...] = ()
    triggers_changed: tuple[TriggerChange, ...] = ()
    secrets_changed: tuple[SecretChange, ...] = ()
    secrets_unchanged: int = 0
    trigger_data_changed: bool = False
    pin_data_changed: bool = False
    execution: ExecutionDiff | None = None
    _renames: Mapping[int, str] = field(default_factory=dict, repr=False)

    @property
    def snapshot_id1(self) -> str:
        return self.side1.snapshot_id

    @property
    def snapshot_id2(self) -> str:
        return self.side2.snapshot_id

    @property
    def structure_empty(self) -> bool:
        return not (
            self.nodes_added
            or self.nodes_removed
            or self.nodes_renamed
            or self.nodes_modified
            or self.node_order is not None
            or self.connections_added
            or self.connections_removed
            or self.settings_changed
        )

    @property
    def empty(self) -> bool:
        """Same structure, variables, trigger type and outcome (durations and trigger data,
        which differ from run to run, do not count)."""
        return (
            self.structure_empty
            and not self.variables_changed
            and not self.triggers_changed
            and (self.execution is None or self.execution.empty)
        )

    def summary(self) -> str:
        parts: list[str] = []

        def names(items: Sequence[str]) -> str:
            shown = ", ".join(items[:3])
            return shown + (f" +{len(items) - 3} more" if len(items) > 3 else "")

        if self.nodes_added:
            parts.append(
                f"+{len(self.nodes_added)} node(s) ({names([n.name for n in self.nodes_added])})"
            )
        if self.nodes_removed:
            parts.append(
                f"-{len(self.nodes_removed)} node(s) "
                f"({names([n.name for n in self.nodes_removed])})"
            )
        if self.nodes_renamed:
            parts.append(
                "renamed: "
                + ", ".join(f"{r.old_name} → {r.new_name}" for r in self.nodes_renamed[:3])
            )
        if self.nodes_modified:
            parts.append(
                f"~{len(self.nodes_modified)} node(s) "
                f"({names([m.node for m in self.nodes_modified])})"
            )
        if self.node_order is not None:
            parts.append("node order changed")
        if self.connections_added:
            parts.append(f"+{len(self.connections_added)} connection(s)")
        if self.connections_removed:
            parts.append(f"-{len(self.connections_removed)} connection(s)")
        if self.settings_changed:
            parts.append("settings changed")
        if self.variables_changed:
            parts.append(f"{len(self.variables_changed)} variable change(s)")
        changed_secrets = [s for s in self.secrets_changed if s.change != "unchanged"]
        if changed_secrets:
            parts.append(f"{len(changed_secrets)} secret(s) changed")
        for t in self.triggers_changed:
            if t.change == "triggerType":
                parts.append(f"trigger {t.old} → {t.new}")
        ex = self.execution
        if ex is not None and not ex.empty:
            if ex.status1 != ex.status2:
                parts.append(f"status {ex.status1} → {ex.status2}")
            if ex.first_divergence is not None:
                parts.append(f"first divergence: {ex.first_divergence.node}")
        return "; ".join(parts) or "no difference"

    def to_json(self) -> dict[str, Any]:
        order = None
        if self.node_order is not None:
            order = [n.get("name") for n in self.side2.structure["nodes"]]
        return {
            "snapshotId1": self.snapshot_id1,
            "snapshotId2": self.snapshot_id2,
            "side1": self.side1.to_json(),
            "side2": self.side2.to_json(),
            "sameStructure": self.side1.snapshot_hash == self.side2.snapshot_hash,
            "empty": self.empty,
            "summary": self.summary(),
            "nodesAdded": [n.name for n in self.nodes_added],
            "nodesRemoved": [n.name for n in self.nodes_removed],
            "nodesRenamed": [r.to_json() for r in self.nodes_renamed],
            "nodesModified": [m.to_json() for m in self.nodes_modified],
            "addedNodes": [n.to_json() for n in self.nodes_added],
            "removedNodes": [n.to_json() for n in self.nodes_removed],
            "nodeOrder": order,
            "connectionsAdded": [dict(e) for e in self.connections_added],
            "connectionsRemoved": [dict(e) for e in self.connections_removed],
            "settingsChanged": [c.to_json() for c in self.settings_changed],
            "variablesChanged": [c.to_json() for c in self.variables_changed],
            "credentialsChanged": [c.to_json() for c in self.credentials_changed],
            "triggersChanged": [t.to_json() for t in self.triggers_changed],
            "secretsChanged": [s.to_json() for s in self.secrets_changed],
            "secretsUnchanged": self.secrets_unchanged,
            "triggerDataChanged": self.trigger_data_changed,
            "pinDataChanged": self.pin_data_changed,
            "execution": None if self.execution is None else self.execution.to_json(),
        }


# --------------------------------------------------------------------------------------------
# node matching
# --------------------------------------------------------------------------------------------


def _node_id(node: Mapping[str, Any]) -> str | None:
    value = node.get("id")
    return value if isinstance(value, str) and value else None


def _name_key(node: Mapping[str, Any]) -> Any:
    name = node.get("name")
    try:
        hash(name)
    except TypeError:  # not a name a structure holds; never equal to another node's
        return ("unhashable", id(node))
    return name


def _content_key(node: Mapping[str, Any], drop: frozenset[str]) -> bytes:
    try:
        return _dumps({k: v for k, v in node.items() if k not in drop})
    except (TypeError, orjson.JSONEncodeError):
        return repr(sorted(node.items())).encode()


def match_nodes(
    a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]
) -> list[tuple[int, int, str]]:
    """Pairs ``(index in a, index in b, matchedBy)``: by id, then name, then content.

    Only an id that one node on each side holds matches: ids several nodes share (placeholders
    such as ``[CENSORED]``) are left to the name. Nodes sharing a name pair up in list order.
    Content is every field but name and id (first exactly, then also ignoring position); equal
    candidates pair up in list order.
    """
    pairs: list[tuple[int, int, str]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    a_ids = Counter(_node_id(node) for node in a)
    b_by_id: dict[str, list[int]] = {}
    for j, node in enumerate(b):
        node_id = _node_id(node)
        if node_id is not None:
            b_by_id.setdefault(node_id, []).append(j)
    for i, node in enumerate(a):
        node_id = _node_id(node)
        if node_id is None or a_ids[node_id] != 1:
            continue
        found = b_by_id.get(node_id)
        if found is not None and len(found) == 1:
            pairs.append((i, found[0], "id"))
            used_a.add(i)
            used_b.add(found[0])
    b_by_name: dict[Any, list[int]] = {}
    for j, node in enumerate(b):
        if j not in used_b:
            b_by_name.setdefault(_name_key(node), []).append(j)
    for i, node in enumerate(a):
        if i in used_a:
            continue
        free = b_by_name.get(_name_key(node))
        if free:
            j = free.pop(0)
            pairs.append((i, j, "name"))
            used_a.add(i)
            used_b.add(j)
    for drop in (frozenset({"name", "id"}), frozenset({"name", "id", "position"})):
        if len(used_a) == len(a) or len(used_b) == len(b):
            break
        candidates: dict[bytes, list[int]] = {}
        for j, node in enumerate(b):
            if j not in used_b:
                candidates.setdefault(_content_key(node, drop), []).append(j)
        for i, node in enumerate(a):
            if i in used_a:
                continue
            free = candidates.get(_content_key(node, drop))
            while free and free[0] in used_b:
                free.pop(0)
            if free:
                j = free.pop(0)
                pairs.append((i, j, "content"))
                used_a.add(i)
                used_b.add(j)
    pairs.sort(key=lambda p: p[1])
    return pairs


# --------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------


def _edge_key(edge: Mapping[str, Any], ident: Mapping[str, str]) -> tuple[Any, ...]:
    source, target = edge["source"], edge["target"]
    return (
        ident.get(source, "?" + str(source)),
        edge["type"],
        edge["sourceOutput"],
        ident.get(target, "?" + str(target)),
        edge["targetInput"],
        edge.get("targetType"),
    )


def _creds(node: Mapping[str, Any]) -> Mapping[str, Any]:
    creds = node.get("credentials")
    return creds if isinstance(creds, dict) else {}


def _trigger_kind(node: Mapping[str, Any]) -> str | None:
    node_type = node.get("type")
    return trigger_kind(node_type) if isinstance(node_type, str) else None


def _distinct_markers(*values: Any) -> set[str]:
    found: set[str] = set()
    for value in values:
        found.update(_markers(value))
    return found


@dataclass(slots=True)
class _Structural:
    added: list[AddedNode]
    removed: list[RemovedNode]
    renamed: list[NodeRename]
    modified: list[NodeModification]
    order: tuple[int, ...] | None
    conn_added: list[Mapping[str, Any]]
    conn_removed: list[Mapping[str, Any]]
    settings: list[Change]
    credentials: list[CredentialChange]
    triggers: list[TriggerChange]
    secrets: list[SecretChange]
    name_map: dict[str, str]  # side-1 node name → side-2 node name, for matched nodes
    renames: dict[int, str]  # side-1 index → new name


def _structural(a: Mapping[str, Any], b: Mapping[str, Any]) -> _Structural:
    a_nodes: Sequence[Mapping[str, Any]] = a.get("nodes") or []
    b_nodes: Sequence[Mapping[str, Any]] = b.get("nodes") or []
    pairs = match_nodes(a_nodes, b_nodes)
    matched_a = {i for i, _, _ in pairs}
    matched_b = {j for _, j, _ in pairs}
    out = _Structural([], [], [], [], None, [], [], [], [], [], [], {}, {})

    for i, j, how in pairs:
        na, nb = a_nodes[i], b_nodes[j]
        name_a, name_b = na.get("name"), nb.get("name")
        if isinstance(name_a, str) and isinstance(name_b, str):
            out.name_map[name_a] = name_b
        if name_a != name_b:
            out.renamed.append(NodeRename(str(name_a), str(name_b), _node_id(nb), how, i, j))
            out.renames[i] = str(name_b)
        if _same(na, nb):
            continue
        rest_a = {k: v for k, v in na.items() if k != "name"}
        rest_b = {k: v for k, v in nb.items() if k != "name"}
        changes = diff_values(rest_a, rest_b)
        if not changes:
            continue
        fields = tuple(
            dict.fromkeys(unescape_pointer(c.path.split("/")[1]) for c in changes if c.path)
        )
        out.modified.append(
            NodeModification(
                node=str(name_b),
                node_id=_node_id(nb),
                type=str(nb.get("type")),
                matched_by=how,
                fields_changed=fields,
                changes=tuple(changes),
                index1=i,
                index2=j,
                previous_name=None if name_a == name_b else str(name_a),
            )
        )
        for c in changes:
            if c.secret is not None:
                out.secrets.append(SecretChange("node", c.path, c.secret, str(name_b)))
        creds_a, creds_b = _creds(na), _creds(nb)
        for cred_type in dict.fromkeys([*creds_a, *creds_b]):
            old, new = creds_a.get(cred_type), creds_b.get(cred_type)
            if old is not None and new is not None and _same(old, new):
                continue
            kind = (
                "swapped"
                if old is not None and new is not None
                else ("added" if new is not None else "removed")
            )
            out.credentials.append(
                CredentialChange(str(name_b), _node_id(nb), str(cred_type), kind, old, new)
            )
        kind_a, kind_b = _trigger_kind(na), _trigger_kind(nb)
        if kind_a is not None or kind_b is not None:
            trigger_fields = tuple(f for f in fields if f not in _POSITIONAL)
            if trigger_fields:
                out.triggers.append(
                    TriggerChange(
                        "modified", str(name_b), _node_id(nb), kind_b or kind_a, trigger_fields
                    )
                )

    for i, node in enumerate(a_nodes):
        if i not in matched_a:
            out.removed.append(
                RemovedNode(str(node.get("name")), _node_id(node), str(node.get("type")), i)
            )
            gone = _trigger_kind(node)
            if gone is not None:
                out.triggers.append(
                    TriggerChange("removed", str(node.get("name")), _node_id(node), gone)
                )
    for j, node in enumerate(b_nodes):
        if j not in matched_b:
            out.added.append(
                AddedNode(str(node.get("name")), _node_id(node), str(node.get("type")), j, node)
            )
            new_kind = _trigger_kind(node)
            if new_kind is not None:
                out.triggers.append(
                    TriggerChange("added", str(node.get("name")), _node_id(node), new_kind)
                )

    # Relative order of the nodes on both sides: pairs are sorted by j; i must rise too.
    firsts = [i for i, _, _ in pairs]
    if any(x > y for x, y in itertools.pairwise(firsts)):
        by_j = {j: i for i, j, _ in pairs}
        out.order = tuple(by_j.get(j, -1) for j in range(len(b_nodes)))

    # An edge names a node; where several nodes share the name it reaches the last (as in n8n).
    paired_a = {i: j for i, j, _ in pairs}
    ident_a = {
        str(node.get("name")): f"m{paired_a[i]}" if i in paired_a else f"a{i}"
        for i, node in enumerate(a_nodes)
    }
    ident_b = {
        str(node.get("name")): f"m{j}" if j in matched_b else f"b{j}"
        for j, node in enumerate(b_nodes)
    }
    a_edges = {_edge_key(e, ident_a): e for e in a.get("connections") or []}
    b_edges = {_edge_key(e, ident_b): e for e in b.get("connections") or []}
    out.conn_removed = [e for k, e in a_edges.items() if k not in b_edges]
    out.conn_added = [e for k, e in b_edges.items() if k not in a_edges]

    out.settings = diff_values(a.get("settings") or {}, b.get("settings") or {})
    for c in out.settings:
        if c.secret is not None:
            out.secrets.append(SecretChange("settings", c.path, c.secret))
    return out


def _outputs(state: NodeState) -> list[tuple[int, Any]]:
    """Per run: the output item count, and the items when they were kept in full."""
    sig: list[tuple[int, Any]] = []
    for run in state.runs:
        items = None if run.items_truncated else run.output
        sig.append((run.output_items, items))
    return sig


def _same_output(a: NodeState, b: NodeState) -> bool:
    sa, sb = _outputs(a), _outputs(b)
    if len(sa) != len(sb):
        return False
    for (count_a, items_a), (count_b, items_b) in zip(sa, sb, strict=True):
        if count_a != count_b:
            return False
        if items_a is not None and items_b is not None and not _same(items_a, items_b):
            return False
    return True


def _duration(final: FinalState | None) -> float | None:
    if final is None or final.started_at is None or final.finished_at is None:
        return None
    return (final.finished_at - final.started_at).total_seconds() * 1000.0


def _node_duration(state: NodeState) -> float | None:
    values = [r.duration_ms for r in state.runs if r.duration_ms is not None]
    return float(sum(values)) if values else None


def _notable(old: float, new: float, min_delta: float, min_ratio: float) -> bool:
    if abs(new - old) < min_delta:
        return False
    low, high = sorted((old, new))
    return low <= 0 or high / low >= min_ratio


def _execution_diff(
    fa: FinalState | None,
    fb: FinalState | None,
    name_map: Mapping[str, str],
    ids: Mapping[str, str],
    *,
    min_delta_ms: float,
    min_ratio: float,
) -> ExecutionDiff | None:
    if fa is None and fb is None:
        return None
    head = ExecutionDiff(
        has_final_state1=fa is not None,
        has_final_state2=fb is not None,
        status1=None if fa is None else fa.status,
        status2=None if fb is None else fb.status,
        duration1_ms=_duration(fa),
        duration2_ms=_duration(fb),
        error1=None if fa is None else fa.error,
        error2=None if fb is None else fb.error,
    )
    if fa is None or fb is None:
        return head
    nodes_a: dict[str, NodeState] = {}
    order_a: list[str] = []
    for state in fa.nodes:
        name = name_map.get(state.node, state.node)
        nodes_a.setdefault(name, state)
        order_a.append(name)
    nodes_b: dict[str, NodeState] = {}
    order_b: list[str] = []
    for state in fb.nodes:
        nodes_b.setdefault(state.node, state)
        order_b.append(state.node)
    pos_a = {n: p for p, n in reversed(list(enumerate(order_a)))}
    pos_b = {n: p for p, n in reversed(list(enumerate(order_b)))}
    inf = math.inf
    merged = sorted(
        set(pos_a) | set(pos_b),
        key=lambda n: (min(pos_a.get(n, inf), pos_b.get(n, inf)), pos_b.get(n, inf), n),
    )
    statuses: list[NodeStatusChange] = []
    appeared: list[ErrorChange] = []
    disappeared: list[ErrorChange] = []
    changed: list[ErrorChange] = []
    counts: list[ItemCountChange] = []
    outputs: list[str] = []
    durations: list[DurationChange] = []
    divergence: Divergence | None = None
    for position, name in enumerate(merged):
        sa, sb = nodes_a.get(name), nodes_b.get(name)
        node_id = (
            (sb.node_id if sb is not None else None)
            or (sa.node_id if sa is not None else None)
            or ids.get(name)
        )
        status_a = None if sa is None else sa.status
        status_b = None if sb is None else sb.status
        err_a = None if sa is None else sa.error
        err_b = None if sb is None else sb.error
        reasons: list[str] = []
        if sa is None:
            reasons.append("notRun1")
        if sb is None:
            reasons.append("notRun2")
        if status_a != status_b:
            statuses.append(NodeStatusChange(name, node_id, status_a, status_b))
            if sa is not None and sb is not None:
                reasons.append("status")
        if not _same_error(err_a, err_b):
            if err_a is None:
                appeared.append(ErrorChange(name, None, err_b))
            elif err_b is None:
                disappeared.append(ErrorChange(name, err_a, None))
            else:
                changed.append(ErrorChange(name, err_a, err_b))
            reasons.append("error")
        if sa is not None and sb is not None:
            in_a = sum(r.input_items for r in sa.runs)
            in_b = sum(r.input_items for r in sb.runs)
            out_a = sum(r.output_items for r in sa.runs)
            out_b = sum(r.output_items for r in sb.runs)
            if (in_a, out_a) != (in_b, out_b):
                counts.append(ItemCountChange(name, in_a, in_b, out_a, out_b))
            if len(sa.runs) != len(sb.runs):
                reasons.append("runs")
            if not _same_output(sa, sb):
                outputs.append(name)
                reasons.append("output")
            da, db = _node_duration(sa), _node_duration(sb)
            if da is not None and db is not None and _notable(da, db, min_delta_ms, min_ratio):
                durations.append(DurationChange(name, da, db))
        if reasons and divergence is None:
            divergence = Divergence(
                name, node_id, position, tuple(reasons), status_a, status_b, err_a, err_b
            )
    return dataclasses.replace(
        head,
        node_status_changes=tuple(statuses),
        errors_appeared=tuple(appeared),
        errors_disappeared=tuple(disappeared),
        errors_changed=tuple(changed),
        item_count_changes=tuple(counts),
        output_changes=tuple(outputs),
        duration_changes=tuple(durations),
        first_divergence=divergence,
    )


def _ids(a: Mapping[str, Any], b: Mapping[str, Any], name_map: Mapping[str, str]) -> dict[str, str]:
    """Node name (as on side 2) → node id, from the structures (run data often has no ids)."""
    ids: dict[str, str] = {}
    for node in a.get("nodes") or []:
        node_id = _node_id(node)
        if node_id is not None:
            name = str(node.get("name"))
            ids[name_map.get(name, name)] = node_id
    for node in b.get("nodes") or []:
        node_id = _node_id(node)
        if node_id is not None:
            ids[str(node.get("name"))] = node_id
    return ids


def compare(
    side1: CompareSide,
    side2: CompareSide,
    *,
    duration_min_delta_ms: float = DURATION_MIN_DELTA_MS,
    duration_min_ratio: float = DURATION_MIN_RATIO,
) -> SnapshotDiff:
    """The full diff from ``side1`` to ``side2``."""
    if side1.snapshot_hash and side1.snapshot_hash == side2.snapshot_hash:
        # One structure blob: nothing structural can differ (only the names map is needed).
        nodes = side2.structure.get("nodes") or []
        names = {str(n.get("name")): str(n.get("name")) for n in nodes}
        st = _Structural([], [], [], [], None, [], [], [], [], [], [], names, {})
    else:
        st = _structural(side1.structure, side2.structure)
    variables = diff_values(dict(side1.variables or {}), dict(side2.variables or {}))
    secrets = list(st.secrets)
    secrets.extend(SecretChange("variables", c.path, c.secret) for c in variables if c.secret)
    triggers = list(st.triggers)
    if (
        side1.trigger_type is not None
        and side2.trigger_type is not None
        and side1.trigger_type != side2.trigger_type
    ):
        triggers.append(
            TriggerChange("triggerType", old=side1.trigger_type, new=side2.trigger_type)
        )
    unchanged = len(
        _distinct_markers(side1.structure, side1.variables)
        & _distinct_markers(side2.structure, side2.variables)
    )
    return SnapshotDiff(
        side1=side1,
        side2=side2,
        nodes_added=tuple(st.added),
        nodes_removed=tuple(st.removed),
        nodes_renamed=tuple(st.renamed),
        nodes_modified=tuple(st.modified),
        node_order=st.order,
        connections_added=tuple(st.conn_added),
        connections_removed=tuple(st.conn_removed),
        settings_changed=tuple(st.settings),
        variables_changed=tuple(variables),
        credentials_changed=tuple(st.credentials),
        triggers_changed=tuple(triggers),
        secrets_changed=tuple(secrets),
        secrets_unchanged=unchanged,
        trigger_data_changed=not _same(side1.trigger_data, side2.trigger_data),
        pin_data_changed=not _same(side1.pin_data, side2.pin_data),
        execution=_execution_diff(
            side1.final_state,
            side2.final_state,
            st.name_map,
            _ids(side1.structure, side2.structure, st.name_map),
            min_delta_ms=duration_min_delta_ms,
            min_ratio=duration_min_ratio,
        ),
        _renames=st.renames,
    )


def compare_structures(a: Mapping[str, Any], b: Mapping[str, Any]) -> SnapshotDiff:
    """The structural diff of two ``{nodes, connections, settings}`` trees (no metadata)."""

    def side(label: str, structure: Mapping[str, Any]) -> CompareSide:
        return CompareSide(label, "", "", 0, "", structure)

    return compare(side("a", a), side("b", b))


def apply_structural_diff(a: Mapping[str, Any], diff: SnapshotDiff) -> dict[str, Any]:
    """Rebuild the second structure from the first (``a``) and ``diff``'s structural half."""
    a_nodes: Sequence[Mapping[str, Any]] = a.get("nodes") or []
    removed = {n.index for n in diff.nodes_removed}
    modified = {m.index1: m for m in diff.nodes_modified}
    kept: dict[int, Any] = {}
    for i, node in enumerate(a_nodes):
        if i in removed:
            continue
        new = dict(node)
        if i in diff._renames:
            new["name"] = diff._renames[i]
        mod = modified.get(i)
        if mod is not None:
            name = new.pop("name", _ABSENT)
            new = apply_changes(new, mod.changes)
            if name is not _ABSENT:
                new["name"] = name
        kept[i] = new
    added = sorted(diff.nodes_added, key=lambda n: n.index)
    if diff.node_order is None:
        nodes = list(kept.values())
        for extra in added:
            nodes.insert(extra.index, copy.deepcopy(dict(extra.node)))
    else:
        fresh = iter(added)
        nodes = [
            kept[i] if i >= 0 else copy.deepcopy(dict(next(fresh).node)) for i in diff.node_order
        ]
    # Edges follow the node their name reaches: the last one holding it.
    last = {str(node.get("name")): i for i, node in enumerate(a_nodes)}
    renames = {name: diff._renames[i] for name, i in last.items() if i in diff._renames}
    removed_edges = {_dumps(e) for e in diff.connections_removed}
    edges: dict[tuple[Any, ...], dict[str, Any]] = {}
    for edge in a.get("connections") or []:
        if _dumps(edge) in removed_edges:
            continue
        moved = dict(edge)
        moved["source"] = renames.get(edge["source"], edge["source"])
        moved["target"] = renames.get(edge["target"], edge["target"])
        edges[edge_sort_key(moved)] = moved
    for edge in diff.connections_added:
        edges[edge_sort_key(dict(edge))] = copy.deepcopy(dict(edge))
    settings = apply_changes(a.get("settings") or {}, diff.settings_changed)
    return {
        "nodes": nodes,
        "connections": [edges[k] for k in sorted(edges)],
        "settings": settings,
    }


# --------------------------------------------------------------------------------------------
# reading from the archive
# --------------------------------------------------------------------------------------------


def load_structure(archive: Archive, snapshot_hash: str) -> dict[str, Any]:
    """The structure blob ``snapshot_hash`` (verified against its hash)."""
    raw = decode_blob(
        archive.store.get(blob_key(snapshot_hash)),
        snapshot_hash,
        max_size=archive.max_object_bytes,
    )
    structure: dict[str, Any] = orjson.loads(raw)
    return structure


def compare_executions(
    archive: Archive, execution_id1: object, execution_id2: object
) -> SnapshotDiff:
    """Diff two stored executions (structures, context and, where recorded, outcomes)."""
    id1 = check_id(execution_id1, "executionId")
    id2 = check_id(execution_id2, "otherExecutionId")
    try:
        snap2 = archive.get_snapshot(id2)
    except NotFound:
        raise NotFound(f"no snapshot for execution {id2}") from None
    snap1 = archive.get_snapshot(id1)
    return compare(
        CompareSide.from_snapshot(snap1, archive.get_final_state(id1)),
        CompareSide.from_snapshot(snap2, archive.get_final_state(id2)),
    )


def check_version_ref(ref: object, field: str) -> str:
    """``ref`` if it is a semantic version (``1.2.0``), a sequence number (``3``) or ``head``."""
    bad = InvalidInput(f"{field} must be a version like 1.2.0, a number or head", field=field)
    if not isinstance(ref, str) or not 0 < len(ref) <= 32 or not ref.isascii():
        raise bad
    if ref == "head" or (ref.isdigit() and len(ref) <= 9):
        return ref
    parts = ref.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 9 for p in parts):
        raise bad
    return ref


def resolve_version(commits: Sequence[VersionCommit], ref: str, field: str) -> VersionCommit:
    """A commit by semantic version (``1.2.0``), sequence number (``3``) or ``head``."""
    check_version_ref(ref, field)
    if ref == "head":
        if not commits:
            raise NotFound("the workflow has no versions")
        return commits[-1]
    if ref.isdigit():
        seq = int(ref)
        for commit in commits:
            if commit.seq == seq:
                return commit
        raise NotFound(f"no version #{seq}")
    wanted = ".".join(str(int(p)) for p in ref.split("."))
    for commit in commits:
        if commit.version == wanted:
            return commit
    raise NotFound(f"no version {wanted}")


def compare_workflow_versions(
    archive: Archive, workflow_id: object, v1: str, v2: str
) -> SnapshotDiff:
    """Diff two versions of one workflow's chain (structures only: no execution side)."""
    wf = check_id(workflow_id, "workflowId")
    check_version_ref(v1, "v1")
    check_version_ref(v2, "v2")
    commits = archive.versions.history(wf)
    if not commits:
        raise NotFound(f"workflow {wf} has no versions")
    c1 = resolve_version(commits, v1, "v1")
    c2 = resolve_version(commits, v2, "v2")
    return compare(
        CompareSide.from_version(c1, load_structure(archive, c1.snapshot_hash)),
        CompareSide.from_version(c2, load_structure(archive, c2.snapshot_hash)),
    )
