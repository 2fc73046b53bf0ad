"""Capture → store → read back, on every store: the archiver core's contract."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
import zstandard

from archiver.archive import Archive
from archiver.errors import ImmutableConflict, InvalidInput, MalformedWorkflow, NotFound
from archiver.layout import blob_key, snapshot_key
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from tests.helpers import HMAC_KEY, MALFORMED, WORKFLOWS, js_style_loads, load_corpus


def _archive(store: ObjectStore) -> Archive:
    return Archive(store, Sanitizer(HMAC_KEY))


def _workflow(*, url: str = "https://example.com", extra_nodes: int = 0) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {
            "id": "t",
            "name": "Webhook",
            "type": "n8n-nodes-base.webhook",
            "typeVersion": 2,
            "position": [0, 0],
            "webhookId": "0b7d",
            "parameters": {"path": "hook"},
        },
        {
            "id": "h",
            "name": "HTTP",
            "type": "n8n-nodes-base.httpRequest",
            "typeVersion": 4.2,
            "position": [200, 0],
            "parameters": {"url": url},
            "credentials": {"httpHeaderAuth": {"id": "c1", "name": "Partner API"}},
        },
    ]
    connections: dict[str, Any] = {
        "Webhook": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}
    }
    previous = "HTTP"
    for i in range(extra_nodes):
        name = f"Step {i}"
        nodes.append(
            {
                "id": f"s{i}",
                "name": name,
                "type": "n8n-nodes-base.set",
                "position": [400 + i, 0],
                "parameters": {},
            }
        )
        connections[previous] = {"main": [[{"node": name, "type": "main", "index": 0}]]}
        previous = name
    return {
        "id": "wf-1",
        "name": "Demo",
        "nodes": nodes,
        "connections": connections,
        "settings": {"executionOrder": "v1"},
    }


def _all_stored_plaintext(store: ObjectStore) -> bytes:
    out = []
    for info in store.list(""):
        data = store.get(info.key)
        if data[:4] == b"\x28\xb5\x2f\xfd":
            data = zstandard.ZstdDecompressor().decompress(data)
        out.append(data)
    return b"\n".join(out)


# ------------------------------------------------------------------------------- corpus round trip


def test_whole_corpus_round_trips_and_hash_is_reproducible(store: ObjectStore) -> None:
    archive = _archive(store)
    for i, path in enumerate(WORKFLOWS):
        result = archive.capture_snapshot(
            execution_id=f"exec-{i}",
            workflow=load_corpus(path),
            workflow_id=f"wf-{i}",
        )
        assert result.created, path.name
        stored = archive.get_snapshot(f"exec-{i}")
        assert stored.to_json() == result.snapshot.to_json(), path.name
        raw = zstandard.ZstdDecompressor().decompress(store.get(blob_key(stored.snapshot_hash)))
        # Anyone can check the hash: sha256 of the blob, and JCS by an independent implementation.
        assert hashlib.sha256(raw).hexdigest() == stored.snapshot_hash, path.name
        assert rfc8785.dumps(js_style_loads(raw)) == raw, path.name
        assert orjson.loads(raw) == stored.structure(), path.name


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.name)
def test_malformed_corpus_is_refused_and_nothing_is_stored(path: Path) -> None:
    from archiver.store.memory import MemoryStore

    store = MemoryStore()
    with pytest.raises(MalformedWorkflow):
        _archive(store).capture_snapshot(
            execution_id="e1", workflow=load_corpus(path), workflow_id="w"
        )
    assert list(store.list("")) == []


# ------------------------------------------------------------------------------- idempotency


def test_identical_resend_is_idempotent_and_different_content_conflicts(store: ObjectStore) -> None:
    archive = _archive(store)
    first = archive.capture_snapshot(execution_id="e1", workflow=_workflow(), user_id="u1")
    again = _archive(store).capture_snapshot(execution_id="e1", workflow=_workflow(), user_id="u1")
    assert first.created and not again.created
    assert again.snapshot.to_json() == first.snapshot.to_json()
    before = store.get(snapshot_key("e1"))
    with pytest.raises(ImmutableConflict):
        archive.capture_snapshot(execution_id="e1", workflow=_workflow(url="https://other"))
    with pytest.raises(ImmutableConflict):
        archive.capture_snapshot(execution_id="e1", workflow=_workflow(), user_id="someone-else")
    assert store.get(snapshot_key("e1")) == before
    assert [c.version for c in archive.version_history("wf-1")] == ["1.0.0"]


def test_structure_is_stored_once_per_hash(store: ObjectStore) -> None:
    archive = _archive(store)
    for i in range(5):
        archive.capture_snapshot(execution_id=f"e{i}", workflow=_workflow())
    assert len(list(store.list("blobs/"))) == 1
    assert len(list(store.list("executions/"))) == 5


# ------------------------------------------------------------------------------- versions


def test_version_chain_follows_semver_and_notes_reverts(store: ObjectStore) -> None:
    archive = _archive(store)

    def run(execution_id: str, wf: dict[str, Any]) -> str:
        return archive.capture_snapshot(
            execution_id=execution_id, workflow=wf
        ).snapshot.snapshot_version

    assert run("e1", _workflow()) == "1.0.0"
    assert run("e2", _workflow()) == "1.0.0"  # same structure: same version
    assert run("e3", _workflow(url="https://changed")) == "1.0.1"  # parameter → patch
    assert run("e4", _workflow(url="https://changed", extra_nodes=1)) == "1.1.0"  # added → minor
    assert run("e5", _workflow(url="https://changed")) == "2.0.0"  # removed → major
    assert run("e6", _workflow()) == "2.0.1"  # back to the first structure: a new version
    chain = archive.version_history("wf-1")
    assert [c.seq for c in chain] == [1, 2, 3, 4, 5]
    assert [c.parent_seq for c in chain] == [None, 1, 2, 3, 4]
    assert chain[4].restores_version == "1.0.0"
    assert chain[4].summary.startswith("restores 1.0.0")
    assert archive.snapshot_version("wf-1") == "2.0.1"
    # Another process sees the same head without any cache.
    assert _archive(store).snapshot_version("wf-1") == "2.0.1"
    with pytest.raises(NotFound):
        archive.snapshot_version("never-seen")


def test_32_concurrent_new_structures_make_a_gap_free_chain(
    store: ObjectStore, reopen_store: Callable[..., ObjectStore]
) -> None:
    _archive(store).capture_snapshot(execution_id="base", workflow=_workflow())
    barrier = threading.Barrier(32)

    def capture(i: int) -> str:
        archive = _archive(reopen_store(store))  # its own client and cache: like another process
        barrier.wait()
        return archive.capture_snapshot(
            execution_id=f"race-{i}", workflow=_workflow(url=f"https://x/{i}")
        ).snapshot.snapshot_version

    with ThreadPoolExecutor(32) as pool:
        versions = list(pool.map(capture, range(32)))
    chain = _archive(store).version_history("wf-1")
    assert [c.seq for c in chain] == list(range(1, 34))
    assert len({c.version for c in chain}) == 33
    assert sorted(versions, key=lambda v: tuple(map(int, v.split(".")))) == [
        c.version for c in chain[1:]
    ]
    for parent, child in itertools.pairwise(chain):
        assert child.parent_seq == parent.seq
        assert child.parent_hash == parent.snapshot_hash
        assert child.parent_version == parent.version


def _process_capture(root: str, i: int) -> str:
    archive = Archive(LocalStore(root), Sanitizer(HMAC_KEY))
    return archive.capture_snapshot(
        execution_id=f"proc-{i}", workflow=_workflow(url=f"https://p/{i}")
    ).snapshot.snapshot_version


def test_processes_racing_on_a_local_store(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        versions = pool.starmap(_process_capture, [(str(tmp_path), i) for i in range(16)])
    chain = _archive(LocalStore(tmp_path)).version_history("wf-1")
    assert [c.seq for c in chain] == list(range(1, 17))
    assert sorted(versions) == sorted(c.version for c in chain)


# ------------------------------------------------------------------------------- final state


def test_final_state_is_a_second_write_once_record(store: ObjectStore) -> None:
    archive = _archive(store)
    archive.capture_snapshot(execution_id="e1", workflow=_workflow())
    snapshot_bytes = store.get(snapshot_key("e1"))
    payload = {
        "status": "error",
        "startedAt": "2026-11-25T10:00:00.000Z",
        "finishedAt": "2026-11-25T10:00:02.500Z",
        "nodes": {
            "Webhook": {"status": "success", "durationMs": 3},
            "HTTP": {"status": "error", "error": {"message": "503 Service Unavailable"}},
        },
    }
    first = archive.record_final_state("e1", payload)
    assert first.created
    assert not archive.record_final_state("e1", payload).created
    with pytest.raises(ImmutableConflict):
        archive.record_final_state("e1", {**payload, "status": "success"})
    final = archive.get_final_state("e1")
    assert final is not None
    assert final.status == "error"
    assert [n.node for n in final.nodes if n.status == "error"] == ["HTTP"]
    assert store.get(snapshot_key("e1")) == snapshot_bytes
    with pytest.raises(NotFound):
        archive.record_final_state("unknown", payload)


# ------------------------------------------------------------------------------- secrets


PLANTED = [
    "sk-proj-Zx81kQ2mN7vB4cD9eF6gH3jK5lM8nP1qR",
    "ghp_1234567890abcdefghijABCDEFGHIJ123456",
    "hunter2-correct-horse-battery",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "credential-data-should-vanish-7731",
]


def test_planted_secrets_never_reach_storage(store: ObjectStore) -> None:
    wf = _workflow()
    wf["nodes"][1]["parameters"].update(
        {
            "sendHeaders": True,
            "headerParameters": {
                "parameters": [{"name": "Authorization", "value": f"Bearer {PLANTED[0]}"}]
            },
        }
    )
    wf["nodes"][1]["credentials"]["httpHeaderAuth"]["data"] = PLANTED[4]
    wf["nodes"].append(
        {
            "id": "c",
            "name": "Code",
            "type": "n8n-nodes-base.code",
            "parameters": {"jsCode": f"const token = '{PLANTED[1]}';\nreturn items;"},
        }
    )
    wf["pinData"] = {"Webhook": [{"json": {"headers": {"authorization": f"Bearer {PLANTED[3]}"}}}]}
    archive = _archive(store)
    archive.capture_snapshot(
        execution_id="e1",
        workflow=wf,
        variables={"DB_PASSWORD": PLANTED[2], "region": "eu"},
        trigger_data={"body": {"api_key": PLANTED[0]}},
    )
    archive.record_final_state(
        "e1",
        {
            "status": "success",
            "nodes": {
                "HTTP": {
                    "status": "success",
                    "output": [{"json": {"token": PLANTED[1], "password": PLANTED[2]}}],
                }
            },
        },
    )
    stored = _all_stored_plaintext(store)
    for secret in PLANTED:
        assert secret.encode() not in stored
    assert b"<redacted:hmac-sha256:" in stored
    snap = archive.get_snapshot("e1")
    assert snap.variables_snapshot is not None
    assert snap.variables_snapshot["region"] == "eu"
    assert [c.to_json() for c in snap.credentials_refs] == [
        {"type": "httpHeaderAuth", "id": "c1", "name": "Partner API", "nodes": ["HTTP"]}
    ]


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"execution_id": "../etc"}, "executionId"),
        ({"execution_id": "a/b"}, "executionId"),
        ({"execution_id": "x" * 257}, "executionId"),
        ({"execution_id": "e\n1"}, "executionId"),
        ({"execution_id": "ok", "workflow_id": "a%2Fb"}, "workflowId"),
        ({"execution_id": "ok", "variables": "x"}, "variables"),
        ({"execution_id": "ok", "created_at": "yesterday"}, "createdAt"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(kwargs: dict[str, Any], field: str) -> None:
    from archiver.store.memory import MemoryStore

    store = MemoryStore()
    with pytest.raises(InvalidInput) as info:
        _archive(store).capture_snapshot(workflow=_workflow(), **kwargs)
    assert info.value.field == field
    assert list(store.list("")) == []


def test_triggers_and_trigger_type_are_extracted() -> None:
    from archiver.store.memory import MemoryStore

    snap = (
        _archive(MemoryStore()).capture_snapshot(execution_id="e1", workflow=_workflow()).snapshot
    )
    assert [t.to_json()["kind"] for t in snap.triggers_snapshot] == ["webhook"]
    assert snap.trigger_type == "webhook"
    assert snap.triggers_snapshot[0].webhook_id == "0b7d"


def test_a_blob_removed_by_retention_is_written_again_by_the_next_capture(
    store: ObjectStore,
) -> None:
    archive = _archive(store)
    first = archive.capture_snapshot(execution_id="e1", workflow=_workflow()).snapshot
    store.delete(blob_key(first.snapshot_hash))  # what `execvault expire` does to an unused blob
    archive.capture_snapshot(execution_id="e2", workflow=_workflow())
    assert store.head(blob_key(first.snapshot_hash)) is not None
    assert _archive(store).get_snapshot("e2").snapshot_hash == first.snapshot_hash
