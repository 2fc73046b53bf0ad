"""Replay: is a snapshot fit to run again (``validate_for_replay``), and what a re-run needs
(``prepare_replay_context``); a re-run captured with ``replayOf`` compares to its original in one
call (``compare_to_original``).

The plan's ``validateSnapshotForReplay`` and ``prepareReplayContext``; see ``docs/compare.md``.

The replay context carries the structure exactly as stored: its canonical form hashes to the
snapshot's ``snapshotHash``, and so does a capture of its ``workflow`` (the same structure in
n8n's import shape). Secrets are markers in storage; the context lists where a replay must
supply the real values (``mustSupply``), it never holds them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from archiver.archive import SNAPSHOT_KIND, Archive
from archiver.canonical import canonicalize
from archiver.capture import trigger_kind
from archiver.codec import decode_record, decompress
from archiver.errors import IntegrityError, NotFound
from archiver.final_state import FinalState, summarize
from archiver.layout import blob_key, check_id
from archiver.model import ExecutionSnapshot
from archiver.retention import tier_status
from archiver.sanitize import find_markers
from archiver.timeutil import format_ts
from query.diff import CompareSide, SnapshotDiff, compare, mask

__all__ = [
    "compare_to_original",
    "must_supply",
    "prepare_replay_context",
    "to_n8n_connections",
    "validate_for_replay",
]


def _pointer_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def to_n8n_connections(edges: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The stored edge list in n8n's ``connections`` shape (normalizing it gives the edges back)."""
    out: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
    for edge in edges:
        slots = out.setdefault(str(edge["source"]), {}).setdefault(str(edge["type"]), [])
        while len(slots) <= edge["sourceOutput"]:
            slots.append([])
        slots[edge["sourceOutput"]].append(
            {
                "node": edge["target"],
                "type": edge.get("targetType", edge["type"]),
                "index": edge["targetInput"],
            }
        )
    return out


def must_supply(snapshot: ExecutionSnapshot) -> list[dict[str, Any]]:
    """Every redacted value a replay must fill in: where it goes (a JSON Pointer into the replay
    context), and for nodes which node. ``template`` shows the stored text with ``<secret>``
    where the secret goes (``"Bearer <secret>"``)."""
    found: list[dict[str, Any]] = []

    def add(where: str, root: str, value: Any, node: str | None = None) -> None:
        for pointer in find_markers(value):
            entry: dict[str, Any] = {"where": where, "pointer": root + pointer}
            if node is not None:
                entry["node"] = node
            entry["template"] = mask(_resolve(value, pointer))
            found.append(entry)

    for index, node in enumerate(snapshot.nodes_snapshot):
        add("node", f"/workflow/nodes/{index}", node, str(node.get("name")))
    add("settings", "/workflow/settings", snapshot.settings_snapshot)
    add("variables", "/variables", snapshot.variables_snapshot or {})
    add("triggerData", "/trigger/data", snapshot.trigger_data)
    add("pinData", "/pinData", snapshot.pin_data or {})
    return found


def _resolve(value: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        value = value[int(token)] if isinstance(value, list) else value[token]
    return value


def _outcome(final: FinalState | None) -> dict[str, Any] | None:
    if final is None:
        return None
    summary = summarize(final)
    started, finished = summary["startedAt"], summary["finishedAt"]
    return {
        "status": final.status,
        "startedAt": None if started is None else format_ts(started),
        "finishedAt": None if finished is None else format_ts(finished),
        "durationMs": summary["durationMs"],
        "error": None if final.error is None else mask(final.error.to_json()),
        "failedNodes": summary["failedNodes"],
        "nodes": [
            {
                "node": state.node,
                "nodeId": state.node_id,
                "status": state.status,
                "runs": len(state.runs),
                "inputItems": sum(r.input_items for r in state.runs),
                "outputItems": sum(r.output_items for r in state.runs),
                "error": None if state.error is None else mask(state.error.to_json()),
            }
            for state in final.nodes
        ],
    }


def prepare_replay_context(archive: Archive, execution_id: object) -> dict[str, Any]:
    """Everything a re-run of ``execution_id`` needs, and what to compare it against."""
    snap = archive.get_snapshot(execution_id)
    final = archive.get_final_state(snap.execution_id)
    wf = snap.workflow_snapshot
    secrets = must_supply(snap)
    secret_variables = {
        e["pointer"].split("/")[2].replace("~1", "/").replace("~0", "~")
        for e in secrets
        if e["where"] == "variables"
    }
    variables = None
    if snap.variables_snapshot is not None:
        variables = {k: v for k, v in snap.variables_snapshot.items() if k not in secret_variables}
    workflow: dict[str, Any] = {
        "id": snap.workflow_id,
        "name": wf.name,
        "nodes": snap.nodes_snapshot,
        "connections": to_n8n_connections(snap.connections_snapshot),
        "settings": snap.settings_snapshot,
    }
    if snap.pin_data:
        workflow["pinData"] = snap.pin_data
    return {
        "executionId": snap.execution_id,
        "workflowId": snap.workflow_id,
        "snapshotId": snap.id,
        "snapshotVersion": snap.snapshot_version,
        "versionSeq": snap.version_seq,
        "snapshotHash": snap.snapshot_hash,
        "structure": snap.structure(),
        "workflow": workflow,
        "trigger": {
            "type": snap.trigger_type,
            "data": snap.trigger_data,
            "nodes": [t.to_json() for t in snap.triggers_snapshot],
        },
        "variables": variables,
        "secretVariables": sorted(secret_variables),
        "credentials": [c.to_json() for c in snap.credentials_refs],
        "pinData": snap.pin_data,
        "mustSupply": secrets,
        "originalOutcome": _outcome(final),
        "replay": {
            "replayOf": snap.execution_id,
            "capture": "POST /api/execution-snapshots with the re-run's executionId, this "
            f"workflow, and replayOf={snap.execution_id}",
            "compare": "GET /api/execution-snapshots/{replayExecutionId}/compare-to-original",
        },
    }


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _structure_problems(structure: Any) -> list[str]:
    if not isinstance(structure, dict):
        return ["the structure is not a JSON object"]
    problems: list[str] = []
    nodes = structure.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        problems.append("the structure has no nodes")
        nodes = []
    if not isinstance(structure.get("connections"), list):
        problems.append("connections are not an edge list")
    if not isinstance(structure.get("settings"), dict):
        problems.append("settings are not an object")
    names: list[str] = []
    for index, node in enumerate(nodes):
        if not isinstance(node, dict):
            problems.append(f"nodes[{index}] is not an object")
            continue
        name = node.get("name")
        if not isinstance(name, str):  # an empty name is a name: n8n imports and runs it
            problems.append(f"nodes[{index}] has no name")
        else:
            names.append(name)
        if not isinstance(node.get("type"), str) or not node.get("type"):
            problems.append(f"nodes[{index}] has no type")
        if not isinstance(node.get("parameters"), dict):
            problems.append(f"nodes[{index}] has no parameters object")
    for name, count in Counter(names).items():
        if count > 1:
            problems.append(f"{count} nodes are named {name!r} (n8n needs unique names)")
    # Ids several nodes share (placeholders such as "[CENSORED]") do not stop a run: n8n keys
    # nodes by name. Capture reports them as warnings (duplicate-node-id).
    for index, edge in enumerate(structure.get("connections") or []):
        if not isinstance(edge, dict) or not {
            "source",
            "sourceOutput",
            "target",
            "targetInput",
            "type",
        } <= set(edge):
            problems.append(f"connections[{index}] is not a complete edge")
    return problems


def _dangling(structure: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = {n.get("name") for n in structure.get("nodes") or [] if isinstance(n, dict)}
    out: list[dict[str, Any]] = []
    for edge in structure.get("connections") or []:
        if not isinstance(edge, dict):
            continue
        missing = [end for end in ("source", "target") if edge.get(end) not in names]
        if missing:
            out.append({"edge": edge, "missing": missing})
    return out


def validate_for_replay(archive: Archive, execution_id: object) -> dict[str, Any]:
    """The plan's validateSnapshotForReplay: integrity re-verified from the stored bytes, the
    structure complete, every connection target present, what a replay must supply.

    An unknown execution is NotFound; an archived one (in a cold storage class, or moved to
    the cold store) ObjectArchived, as every read of it; a damaged record or blob is reported,
    not raised. ``archive`` says where a readable execution's objects are
    (:func:`archiver.retention.tier_status`).
    """
    exec_id = check_id(execution_id, "executionId")
    issues: list[dict[str, str]] = []

    def issue(severity: str, code: str, message: str) -> None:
        issues.append({"severity": severity, "code": code, "message": message})

    # NotFound, or ObjectArchived (409 with the restore route) for an archived execution
    data = archive.snapshot_record(exec_id)
    checks: dict[str, Any] = {
        "recordVerified": False,
        "hashVerified": False,
        "canonical": False,
        "structureComplete": False,
        "connectionTargetsPresent": False,
    }
    result: dict[str, Any] = {
        "executionId": exec_id,
        "valid": False,
        "checks": checks,
        "issues": issues,
        "archive": tier_status(archive.store, exec_id, max_object_bytes=archive.max_object_bytes),
    }
    try:
        body = decode_record(data, SNAPSHOT_KIND, max_size=archive.max_object_bytes)
    except IntegrityError as err:
        issue("error", "record_corrupt", f"the snapshot record does not verify: {err}")
        return result
    if body.get("executionId") != exec_id:
        # a valid record copied under another execution's key is not this execution's
        issue("error", "record_misplaced", "the snapshot record names another execution")
        return result
    checks["recordVerified"] = True
    snapshot_hash = str(body.get("snapshotHash"))
    result.update(
        workflowId=body.get("workflowId"),
        snapshotVersion=body.get("snapshotVersion"),
        snapshotHash=snapshot_hash,
    )
    try:
        raw = decompress(
            archive.store.get(blob_key(snapshot_hash)), max_size=archive.max_object_bytes
        )
    except NotFound:
        issue("error", "structure_missing", "the structure blob is missing from the store")
        return result
    except IntegrityError as err:
        issue("error", "structure_corrupt", f"the structure blob cannot be read: {err}")
        return result
    actual = hashlib.sha256(raw).hexdigest()
    checks["hashVerified"] = actual == snapshot_hash
    if not checks["hashVerified"]:
        issue("error", "hash_mismatch", f"the structure hashes to {actual}, not {snapshot_hash}")
        return result
    try:
        structure = orjson.loads(raw)
        checks["canonical"] = canonicalize(structure) == raw
    except (orjson.JSONDecodeError, ValueError) as err:
        issue("error", "structure_corrupt", f"the structure is not canonical JSON: {err}")
        return result
    if not checks["canonical"]:
        issue("error", "not_canonical", "the structure bytes are not in canonical (JCS) form")
    problems = _structure_problems(structure)
    checks["structureComplete"] = not problems
    for problem in problems:
        issue("error", "structure_incomplete", problem)
    if problems:
        return result
    dangling = _dangling(structure)
    checks["connectionTargetsPresent"] = not dangling
    for entry in dangling:
        edge = entry["edge"]
        issue(
            "error",
            "dangling_connection",
            f"connection {edge['source']} → {edge['target']} names no node "
            f"({' and '.join(entry['missing'])})",
        )
    snapshot = ExecutionSnapshot.from_record(body, structure)
    for warning in snapshot.warnings:
        if warning.code != "dangling-connection":  # an error above already
            # what capture accepted but found odd (shared ids, empty or repeated names)
            issue("warning", warning.code.replace("-", "_"), f"{warning.field}: {warning.message}")
    triggers = [n for n in structure["nodes"] if trigger_kind(str(n.get("type"))) is not None]
    enabled = [n for n in triggers if not n.get("disabled")]
    if not enabled:
        issue(
            "warning",
            "no_trigger",
            "no enabled trigger node: a replay has to start the workflow by hand",
        )
    secrets = must_supply(snapshot)
    if secrets:
        issue(
            "warning",
            "secrets_redacted",
            f"{len(secrets)} redacted value(s) must be supplied to replay (see mustSupply)",
        )
    credentials = [c.to_json() for c in snapshot.credentials_refs]
    for ref in credentials:
        if "id" not in ref:
            issue(
                "warning",
                "credential_without_id",
                f"credential of type {ref['type']} has no id: resolve it by name",
            )
    result.update(
        valid=all(checks.values()),
        danglingConnections=[e["edge"] for e in dangling],
        credentialReferences=credentials,
        mustSupply=secrets,
        triggers=[t.to_json() for t in snapshot.triggers_snapshot],
        finalStateRecorded=archive.get_final_state(exec_id) is not None,
    )
    return result


def compare_to_original(archive: Archive, execution_id: object) -> SnapshotDiff:
    """The diff from the execution that ``execution_id`` replays (its ``replayOf``) to it."""
    replay = archive.get_snapshot(execution_id)
    if replay.replay_of is None:
        raise NotFound(f"execution {replay.execution_id} is not a replay (it has no replayOf)")
    try:
        original = archive.get_snapshot(replay.replay_of)
    except NotFound:
        raise NotFound(
            f"execution {replay.execution_id} replays {replay.replay_of}, which is not stored"
        ) from None
    return compare(
        CompareSide.from_snapshot(original, archive.get_final_state(original.execution_id)),
        CompareSide.from_snapshot(replay, archive.get_final_state(replay.execution_id)),
    )
