"""Replay (query/replay.py): validation, the replay context, re-runs compared with their original."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import orjson
import pytest

from archiver.archive import Archive
from archiver.canonical import canonicalize
from archiver.capture import prepare_workflow
from archiver.codec import compress, decompress, encode_record
from archiver.errors import InvalidInput, NotFound
from archiver.layout import blob_key, snapshot_key
from archiver.normalize import normalize_workflow
from archiver.sanitize import MARKER_PREFIX, Sanitizer
from archiver.store.memory import MemoryStore
from query.replay import (
    compare_to_original,
    prepare_replay_context,
    to_n8n_connections,
    validate_for_replay,
)
from tests.helpers import HMAC_KEY, WORKFLOWS, load_corpus

SANITIZER = Sanitizer(HMAC_KEY)
SECRET = "sk-live-4f1c2a9e8b7d6c5a4f3e2d1c"

WORKFLOW: dict[str, Any] = {
    "id": "wf-r",
    "name": "Orders",
    "nodes": [
        {"id": "t", "name": "Hook", "type": "n8n-nodes-base.webhook", "parameters": {"path": "o"}},
        {
            "id": "h",
            "name": "HTTP",
            "type": "n8n-nodes-base.httpRequest",
            "parameters": {
                "url": "https://api.example.com",
                "headerParameters": {
                    "parameters": [{"name": "Authorization", "value": f"Bearer {SECRET}"}]
                },
            },
            "credentials": {"httpHeaderAuth": {"id": "7", "name": "Shop"}, "oAuth2Api": "Legacy"},
        },
    ],
    "connections": {
        "Hook": {
            "main": [[{"node": "HTTP", "type": "main", "index": 0}]],
            "error": [None, [{"node": "HTTP", "type": "main", "index": 1}]],
        }
    },
    "settings": {"executionOrder": "v1"},
    "pinData": {"Hook": [{"json": {"id": 1}}]},
}


def _archive() -> Archive:
    return Archive(MemoryStore(), SANITIZER)


def _capture(archive: Archive, execution_id: str = "1001", **kw: Any) -> None:
    kw.setdefault("workflow", WORKFLOW)
    archive.capture_snapshot(execution_id=execution_id, **kw)


# ---------------------------------------------------------------------------- replay context


def test_replay_context_reproduces_every_corpus_structure_byte_for_byte() -> None:
    archive = _archive()
    for n, path in enumerate(WORKFLOWS):
        archive.capture_snapshot(execution_id=f"e{n}", workflow=load_corpus(path), workflow_id="w")
        # as an engine would receive it: serialized and parsed again
        context = orjson.loads(orjson.dumps(prepare_replay_context(archive, f"e{n}")))
        stored = archive.store.get(blob_key(context["snapshotHash"]))
        jcs = canonicalize(context["structure"])
        assert hashlib.sha256(jcs).hexdigest() == context["snapshotHash"], path
        assert decompress(stored) == jcs, path  # byte-identical to the stored blob
        # the n8n-shaped workflow, captured again, is the same structure
        assert (
            prepare_workflow(context["workflow"], SANITIZER).snapshot_hash
            == context["snapshotHash"]
        ), path


def test_replay_context_fields() -> None:
    archive = _archive()
    _capture(
        archive,
        variables={"region": "eu", "apiToken": SECRET, "nested": {"password": "hunter2hunter2"}},
        trigger_type="webhook",
        trigger_data={"body": {"order": 7}, "headers": {"authorization": f"Bearer {SECRET}"}},
    )
    archive.record_final_state(
        "1001",
        {
            "status": "error",
            "startedAt": "2026-11-25T10:00:00Z",
            "finishedAt": "2026-11-25T10:00:01Z",
            "nodes": {
                "Hook": {"status": "success", "outputItems": 1},
                "HTTP": {"status": "error", "error": {"message": "401 Unauthorized"}},
            },
        },
    )
    context = prepare_replay_context(archive, "1001")
    text = orjson.dumps(context).decode()
    assert SECRET not in text and "hunter2" not in text
    assert context["executionId"] == "1001" and context["workflowId"] == "wf-r"
    assert context["structure"] == archive.get_snapshot("1001").structure()
    assert context["trigger"]["type"] == "webhook"
    assert context["trigger"]["data"]["body"] == {"order": 7}
    assert [t["node"] for t in context["trigger"]["nodes"]] == ["Hook"]
    assert context["variables"] == {"region": "eu"}
    assert context["secretVariables"] == ["apiToken", "nested"]
    assert context["credentials"] == [
        {"type": "httpHeaderAuth", "id": "7", "name": "Shop", "nodes": ["HTTP"]},
        {"type": "oAuth2Api", "name": "Legacy", "nodes": ["HTTP"]},
    ]
    assert context["pinData"] == {"Hook": [{"json": {"id": 1}}]}
    assert context["workflow"]["pinData"] == context["pinData"]
    supply = {(e["where"], e["pointer"]): e for e in context["mustSupply"]}
    header = "/workflow/nodes/1/parameters/headerParameters/parameters/0/value"
    assert supply[("node", header)]["node"] == "HTTP"
    assert supply[("node", header)]["template"] == "Bearer <secret>"
    assert ("variables", "/variables/apiToken") in supply
    assert ("variables", "/variables/nested/password") in supply
    assert ("triggerData", "/trigger/data/headers/authorization") in supply
    assert len(supply) == 4
    node = context["workflow"]["nodes"][1]  # the marker stays where the secret goes
    assert MARKER_PREFIX in node["parameters"]["headerParameters"]["parameters"][0]["value"]
    outcome = context["originalOutcome"]
    assert outcome["status"] == "error" and outcome["failedNodes"] == ["HTTP"]
    assert outcome["durationMs"] == 1000
    assert outcome["nodes"][1] == {
        "node": "HTTP",
        "nodeId": None,
        "status": "error",
        "runs": 1,
        "inputItems": 0,
        "outputItems": 0,
        "error": {"message": "401 Unauthorized"},
    }
    assert context["replay"]["replayOf"] == "1001"


def test_n8n_connections_round_trip() -> None:
    edges = normalize_workflow(WORKFLOW).connections
    assert to_n8n_connections(edges) == {
        "Hook": {
            "error": [[], [{"node": "HTTP", "type": "main", "index": 1}]],
            "main": [[{"node": "HTTP", "type": "main", "index": 0}]],
        }
    }
    again = {**WORKFLOW, "connections": to_n8n_connections(edges)}
    assert normalize_workflow(again).connections == edges


def test_replay_context_of_an_unknown_or_bad_id() -> None:
    archive = _archive()
    with pytest.raises(NotFound):
        prepare_replay_context(archive, "nope")
    with pytest.raises(InvalidInput):
        prepare_replay_context(archive, "../x")


# ---------------------------------------------------------------------------- validation


def test_validation_of_a_sound_snapshot() -> None:
    archive = _archive()
    _capture(archive)
    report = validate_for_replay(archive, "1001")
    assert report["valid"] is True
    assert report["checks"] == {
        "recordVerified": True,
        "hashVerified": True,
        "canonical": True,
        "structureComplete": True,
        "connectionTargetsPresent": True,
    }
    assert report["archive"] == {
        "tier": "hot",
        "archived": False,
        "needsRestore": False,
        "objectsArchived": [],
        "storageClass": None,
        "location": None,
        "restoredUntil": None,
    }
    assert [i["code"] for i in report["issues"]] == ["secrets_redacted", "credential_without_id"]
    assert all(i["severity"] == "warning" for i in report["issues"])
    assert [e["pointer"] for e in report["mustSupply"]] == [
        "/workflow/nodes/1/parameters/headerParameters/parameters/0/value"
    ]
    assert [c["type"] for c in report["credentialReferences"]] == ["httpHeaderAuth", "oAuth2Api"]
    assert report["danglingConnections"] == []
    assert report["finalStateRecorded"] is False
    assert SECRET not in orjson.dumps(report).decode()


def test_validation_reports_dangling_connections_and_missing_triggers() -> None:
    archive = _archive()
    broken = copy.deepcopy(WORKFLOW)
    broken["nodes"] = broken["nodes"][1:]  # the trigger is gone; its connections stay
    _capture(archive, workflow=broken)
    report = validate_for_replay(archive, "1001")
    assert report["valid"] is False
    assert report["checks"]["connectionTargetsPresent"] is False
    assert {i["code"] for i in report["issues"]} >= {"dangling_connection", "no_trigger"}
    assert [e["source"] for e in report["danglingConnections"]] == ["Hook", "Hook"]


def test_validation_reports_duplicate_names() -> None:
    archive = _archive()
    doubled = copy.deepcopy(WORKFLOW)
    doubled["nodes"].append({**doubled["nodes"][1], "id": "h2"})
    _capture(archive, workflow=doubled)
    report = validate_for_replay(archive, "1001")
    assert report["checks"]["structureComplete"] is False
    assert any("named 'HTTP'" in i["message"] for i in report["issues"])


def _tamper(archive: Archive, key: str, data: bytes) -> None:
    store = archive.store
    assert isinstance(store, MemoryStore)
    store.delete(key)
    store.put(key, data)


def test_validation_reports_damaged_objects_instead_of_failing() -> None:
    archive = _archive()
    _capture(archive)
    digest = archive.get_snapshot("1001").snapshot_hash
    structure = archive.get_snapshot("1001").structure()

    fresh = _archive()
    _capture(fresh)
    _tamper(fresh, blob_key(digest), compress(canonicalize({**structure, "settings": {"x": 1}})))
    report = validate_for_replay(fresh, "1001")
    assert report["valid"] is False and report["checks"]["hashVerified"] is False
    assert report["issues"][0]["code"] == "hash_mismatch"

    fresh = _archive()
    _capture(fresh)
    _tamper(fresh, blob_key(digest), compress(orjson.dumps(structure)))  # not JCS, other hash
    assert validate_for_replay(fresh, "1001")["checks"]["hashVerified"] is False

    fresh = _archive()
    _capture(fresh)
    assert isinstance(fresh.store, MemoryStore)
    fresh.store.delete(blob_key(digest))
    report = validate_for_replay(fresh, "1001")
    assert report["issues"][0]["code"] == "structure_missing"

    fresh = _archive()
    _capture(fresh)
    _tamper(fresh, blob_key(digest), b"not zstd at all")
    assert validate_for_replay(fresh, "1001")["issues"][0]["code"] == "structure_corrupt"

    fresh = _archive()
    _capture(fresh)
    body = fresh.get_snapshot("1001").record_body()
    record = orjson.loads(decompress(encode_record("execution-snapshot", body)))
    record["userId"] = "mallory"  # digest no longer matches
    _tamper(fresh, snapshot_key("1001"), compress(canonicalize(record)))
    report = validate_for_replay(fresh, "1001")
    assert report["checks"]["recordVerified"] is False
    assert report["issues"][0]["code"] == "record_corrupt"


def test_validation_of_an_unknown_or_bad_id() -> None:
    with pytest.raises(NotFound):
        validate_for_replay(_archive(), "nope")
    with pytest.raises(InvalidInput):
        validate_for_replay(_archive(), "a/b")


def test_every_corpus_snapshot_validates_or_says_why() -> None:
    archive = _archive()
    invalid = []
    for n, path in enumerate(WORKFLOWS[::4]):
        archive.capture_snapshot(execution_id=f"e{n}", workflow=load_corpus(path), workflow_id="w")
        report = validate_for_replay(archive, f"e{n}")
        assert report["checks"]["hashVerified"] and report["checks"]["recordVerified"]
        errors = [i for i in report["issues"] if i["severity"] == "error"]
        assert report["valid"] == (not errors)
        if not report["valid"]:
            invalid.append(path.name)
    assert len(invalid) <= 3, invalid


# ---------------------------------------------------------------------------- re-runs


def _final(status: str) -> dict[str, Any]:
    http: dict[str, Any] = {"status": status, "outputItems": 1 if status == "success" else 0}
    if status == "error":
        http["error"] = {"message": "timeout"}
    return {
        "status": status,
        "nodes": {"Hook": {"status": "success", "outputItems": 1}, "HTTP": http},
    }


def test_a_replay_compares_with_its_original_in_one_call() -> None:
    archive = _archive()
    _capture(archive, "1001")
    archive.record_final_state("1001", _final("error"))
    context = orjson.loads(orjson.dumps(prepare_replay_context(archive, "1001")))
    archive.capture_snapshot(
        execution_id="1001-replay",
        workflow=context["workflow"],
        workflow_id=context["workflowId"],
        trigger_type=context["trigger"]["type"],
        replay_of=context["replay"]["replayOf"],
    )
    assert archive.get_snapshot("1001-replay").snapshot_hash == context["snapshotHash"]
    archive.record_final_state("1001-replay", _final("success"))
    diff = compare_to_original(archive, "1001-replay")
    assert diff.structure_empty and not diff.empty
    body = diff.to_json()
    assert body["side1"]["executionId"] == "1001" and body["side2"]["executionId"] == "1001-replay"
    assert body["side2"]["replayOf"] == "1001"
    assert body["execution"]["errorsDisappeared"] == [{"node": "HTTP", "message": "timeout"}]
    assert body["execution"]["firstDivergence"]["node"] == "HTTP"


def test_compare_to_original_needs_a_replay_with_a_stored_original() -> None:
    archive = _archive()
    _capture(archive, "1001")
    with pytest.raises(NotFound, match="not a replay"):
        compare_to_original(archive, "1001")
    _capture(archive, "r2", replay_of="gone")
    with pytest.raises(NotFound, match="not stored"):
        compare_to_original(archive, "r2")
    with pytest.raises(NotFound):
        compare_to_original(archive, "nope")


def test_shared_placeholder_ids_and_an_empty_name_do_not_make_a_snapshot_unreplayable() -> None:
    """n8n imports and runs them (it keys nodes by name): the structure is complete."""
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    workflow = {
        "id": "wf-r",
        "nodes": [
            {"id": "[CENSORED]", "name": "Start", "type": "n8n-nodes-base.manualTrigger"},
            {"id": "[CENSORED]", "name": "", "type": "n8n-nodes-base.set"},
        ],
        "connections": {"Start": {"main": [[{"node": "", "type": "main", "index": 0}]]}},
    }
    archive.capture_snapshot(execution_id="r-odd", workflow=workflow)
    result = validate_for_replay(archive, "r-odd")
    assert result["checks"]["structureComplete"] is True, result["issues"]
    assert result["checks"]["connectionTargetsPresent"] is True
    # what capture reported as odd is told to whoever replays it, as warnings
    warned = [(i["severity"], i["code"]) for i in result["issues"] if i["severity"] == "warning"]
    assert ("warning", "empty_node_name") in warned
    assert ("warning", "duplicate_node_id") in warned
