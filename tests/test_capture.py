"""archiver.capture: PreparedCache answers a repeat only with what preparing it again would give."""

from __future__ import annotations

import copy
import gc
import itertools
import math
from typing import Any

import orjson
import pytest

from archiver.archive import Archive
from archiver.capture import PreparedCache, prepare_workflow
from archiver.errors import InvalidInput
from archiver.model import ExecutionSnapshot
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.memory import MemoryStore
from tests.helpers import HMAC_KEY


def _workflow(value: Any = "https://x.example") -> dict[str, Any]:
    return {
        "nodes": [
            {"name": "A", "type": "n8n-nodes-base.httpRequest", "parameters": {"url": value}},
            {"name": "B", "type": "n8n-nodes-base.set", "parameters": {"n": None}},
        ],
        "connections": {"A": {"main": [[{"node": "B", "type": "main", "index": 0}]]}},
        "pinData": {"A": [{"json": {"token": "abc123def456"}}]},
    }


def test_a_repeat_is_answered_from_the_cache() -> None:
    sanitizer, cache = Sanitizer(HMAC_KEY), PreparedCache()
    first = cache.prepare(_workflow(), sanitizer)
    calls = 0
    real = sanitizer.sanitize_nodes

    def counted(nodes: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(nodes)

    sanitizer.sanitize_nodes = counted  # type: ignore[method-assign]
    again = cache.prepare(_workflow(), sanitizer)
    assert calls == 0  # answered from the cache, not prepared again
    assert again == first
    assert again.structure is not first.structure  # trees of its own
    assert first.snapshot_hash == prepare_workflow(_workflow(), Sanitizer(HMAC_KEY)).snapshot_hash


def test_a_prepared_workflow_holds_nothing_unsanitized() -> None:
    secret = "sk-live-9f8e7d6c5b4a3928171605f4e3d2c1b0"
    doc = _workflow(secret)
    doc["nodes"][1]["parameters"]["password"] = "hunter2hunter2"
    sanitizer, cache = Sanitizer(HMAC_KEY), PreparedCache()
    for prepared in (cache.prepare(doc, sanitizer), cache.prepare(doc, sanitizer)):
        held = orjson.dumps(
            [prepared.workflow.nodes, prepared.workflow.settings, prepared.workflow.pin_data]
        )
        assert secret.encode() not in held
        assert b"hunter2hunter2" not in held
        assert b"abc123def456" not in held  # the pinData token
        assert prepared.workflow.structure() == prepared.structure
    reachable = _reachable(cache)
    assert not any(isinstance(o, str | bytes) and secret in str(o) for o in reachable)
    assert not any(isinstance(o, str) and "hunter2hunter2" in o for o in reachable)


def _reachable(root: object) -> list[object]:
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(seen.values())


def _chain(nodes: int) -> dict[str, Any]:
    names = [f"step {i}" for i in range(nodes)]
    return {
        "nodes": [
            {"name": n, "type": "n8n-nodes-base.set", "parameters": {"values": [{"v": [i, {}]}]}}
            for i, n in enumerate(names)
        ],
        "connections": {
            a: {"main": [[{"node": b, "type": "main", "index": 0}]]}
            for a, b in itertools.pairwise(names)
        },
    }


def test_the_cache_holds_bytes_not_trees() -> None:
    """Every full garbage collection traverses every container a process holds: a cache of
    parsed workflows made those collections (and the captures that trigger them) slow."""
    sanitizer = Sanitizer(HMAC_KEY)
    counts = []
    for nodes in (5, 400):
        cache = PreparedCache()
        cache.prepare(_chain(nodes), sanitizer)
        counts.append(sum(1 for o in _reachable(cache) if isinstance(o, dict | list)))
    assert counts[1] == counts[0]


def test_a_hit_reads_back_big_integers_as_preparing_did() -> None:
    doc = _workflow()
    # stored as the double 2**64, printed in full: orjson reads that as a float, json as an int
    doc["nodes"][1]["parameters"]["n"] = 2**64 - 1
    doc["nodes"][1]["parameters"]["m"] = 1.0
    sanitizer, cache = Sanitizer(HMAC_KEY), PreparedCache()
    first = cache.prepare(doc, sanitizer)
    again = cache.prepare(doc, sanitizer)
    assert again.structure == first.structure
    params = again.structure["nodes"][1]["parameters"]
    assert type(params["n"]) is type(first.structure["nodes"][1]["parameters"]["n"])
    assert type(params["m"]) is int  # 1.0 is stored as 1, and read back so


def test_a_caller_mutating_a_result_does_not_change_the_next_answer() -> None:
    sanitizer, cache = Sanitizer(HMAC_KEY), PreparedCache()
    expected = prepare_workflow(_workflow(), Sanitizer(HMAC_KEY))
    for _ in range(2):  # (the second round: the nodes come from the sanitizer's memo, shared)
        got = cache.prepare(_workflow(), sanitizer)
        got.structure["nodes"][0]["parameters"]["url"] = "https://evil.example"
        assert got.pin_data is not None
        got.pin_data["A"][0]["json"]["token"] = "leaked"
        again = cache.prepare(_workflow(), sanitizer)
        assert again.structure == expected.structure
        assert again.pin_data == expected.pin_data
        assert again.structure_jcs == expected.structure_jcs
        other = cache.prepare(_workflow("https://y.example"), sanitizer)
        assert other.structure["nodes"][1] == copy.deepcopy(expected.structure["nodes"][1])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_is_refused(bad: float) -> None:
    sanitizer, cache = Sanitizer(HMAC_KEY), PreparedCache()
    for _ in range(2):
        with pytest.raises(InvalidInput) as err:
            cache.prepare(_workflow(bad), sanitizer)
        assert err.value.field == "nodes[0].parameters.url"


# ---------------------------------------------------------------------------- odd but accepted


def _placeholder_ids(name: str = "Reply") -> dict[str, Any]:
    """A shared export: every node id replaced by one placeholder, one node name emptied."""
    return {
        "id": "wf-odd",
        "name": "Shared export",
        "nodes": [
            {"id": "[CENSORED]", "name": "Webhook", "type": "n8n-nodes-base.webhook",
             "typeVersion": 2, "position": [0, 0], "parameters": {"path": "in"}},
            {"id": "[CENSORED]", "name": "", "type": "n8n-nodes-base.set",
             "typeVersion": 3, "position": [200, 0], "parameters": {}},
            {"id": "[CENSORED]", "name": name, "type": "n8n-nodes-base.respondToWebhook",
             "typeVersion": 1, "position": [400, 0], "parameters": {}},
        ],
        "connections": {
            "Webhook": {"main": [[{"node": "", "type": "main", "index": 0}]]},
            "": {"main": [[{"node": name, "type": "main", "index": 0}]]},
        },
    }  # fmt: skip


def test_odd_workflows_are_captured_with_their_warnings(store: ObjectStore) -> None:
    archive = Archive(store, Sanitizer(HMAC_KEY))
    doc = _placeholder_ids()
    result = archive.capture_snapshot(execution_id="odd-1", workflow=copy.deepcopy(doc))
    assert result.created
    snap = result.snapshot
    assert [(w.code, w.field) for w in snap.warnings] == [
        ("empty-node-name", "nodes[1].name"),
        ("duplicate-node-id", "nodes[1].id"),
    ]
    assert snap.node_identity == "name"
    # The structure is kept exactly as given (after sanitizing): ids and names untouched.
    prepared = prepare_workflow(copy.deepcopy(doc), Sanitizer(HMAC_KEY))
    assert snap.snapshot_hash == prepared.snapshot_hash
    assert [(n["id"], n["name"]) for n in snap.nodes_snapshot] == [
        ("[CENSORED]", "Webhook"),
        ("[CENSORED]", ""),
        ("[CENSORED]", "Reply"),
    ]
    stored = archive.get_snapshot("odd-1")
    assert stored.warnings == snap.warnings
    assert stored.to_json()["warnings"] == [w.to_json() for w in snap.warnings]
    # a re-send is the same capture; a second version of the workflow classifies without a crash
    assert not archive.capture_snapshot(execution_id="odd-1", workflow=doc).created
    edited = _placeholder_ids()
    edited["nodes"][1]["parameters"] = {"keepOnlySet": True}
    second = archive.capture_snapshot(execution_id="odd-2", workflow=edited)
    assert second.snapshot.snapshot_version == "1.0.1"  # nodes matched by name: an edit, a patch
    commit = archive.versions.history("wf-odd")[-1]
    assert commit.changes["nodesModified"] == [""]
    assert commit.changes["nodesAdded"] == [] and commit.changes["nodesRemoved"] == []


def test_the_run_of_a_node_named_empty_is_recorded() -> None:
    # n8n's run data of such a workflow is keyed by the empty name: its final state is accepted
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    archive.capture_snapshot(execution_id="odd-run", workflow=_placeholder_ids())
    run = {"startTime": 1, "executionTime": 2, "data": {"main": [[{"json": {"a": 1}}]]}}
    run_data = {name: [run] for name in ("Webhook", "", "Reply")}
    payload = {"status": "success", "data": {"resultData": {"runData": run_data}}}
    assert archive.record_final_state("odd-run", payload).created
    final = archive.get_final_state("odd-run")
    assert final is not None
    assert [n.node for n in final.nodes] == ["Webhook", "", "Reply"]


def test_a_workflow_without_oddities_has_no_warnings_in_its_record() -> None:
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    snap = archive.capture_snapshot(
        execution_id="e1", workflow=_workflow(), workflow_id="w"
    ).snapshot
    assert snap.warnings == () and snap.to_json()["warnings"] == []
    assert "warnings" not in snap.record_body()  # the record's bytes are as before warnings


def test_records_stored_before_warnings_existed_read_and_resend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An old record has no ``warnings``: it reads as none, and re-sending its capture (which now
    finds warnings) is the same capture, not a conflict."""
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    real = ExecutionSnapshot.record_body

    def old_style(self: ExecutionSnapshot) -> dict[str, Any]:
        body = real(self)
        body.pop("warnings", None)
        return body

    monkeypatch.setattr(ExecutionSnapshot, "record_body", old_style)
    archive.capture_snapshot(execution_id="old-1", workflow=_placeholder_ids())
    monkeypatch.undo()
    stored = archive.get_snapshot("old-1")
    assert stored.warnings == () and stored.to_json()["warnings"] == []
    again = archive.capture_snapshot(execution_id="old-1", workflow=_placeholder_ids())
    assert not again.created and again.snapshot.warnings == ()
