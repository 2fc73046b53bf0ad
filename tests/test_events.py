"""Tags and annotations (archiver/events.py and their routes): append-only events."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.auth import token_digest
from archiver.archive import Archive
from archiver.config import Settings
from archiver.errors import InvalidInput, NotFound
from archiver.events import EventLog, rebuild_event_index
from archiver.sanitize import MARKER_PREFIX, Sanitizer
from archiver.store.memory import MemoryStore
from tests.helpers import HMAC_KEY
from tests.test_api import SNAPSHOTS, TOKENS, TOKENS_SETTING, Client, asgi_raw, assert_error

SECRET = "sk-live-4f1c2a9e8b7d6c5a4f3e2d1c"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

WORKFLOW: dict[str, Any] = {
    "id": "wf-e",
    "nodes": [
        {"id": "t", "name": "Hook", "type": "n8n-nodes-base.webhook", "parameters": {}},
        {"id": "h", "name": "HTTP", "type": "n8n-nodes-base.httpRequest", "parameters": {}},
    ],
    "connections": {"Hook": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
}


def _clock() -> Any:
    ticks = count()
    return lambda: T0 + timedelta(seconds=next(ticks))


def _setup() -> tuple[Archive, EventLog]:
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    for execution_id in ("e1", "e2", "e3"):
        archive.capture_snapshot(execution_id=execution_id, workflow=WORKFLOW)
    events = EventLog(archive.store, sanitize_text=archive.sanitizer.sanitize_text, clock=_clock())
    return archive, events


def test_tags_move_and_keep_their_history() -> None:
    archive, events = _setup()
    e1, e2 = archive.get_snapshot("e1"), archive.get_snapshot("e2")
    first, created = events.add_tag(e1, "baseline", user_id="ana", description="known good")
    assert created and first.previous_execution_id is None
    again, created = events.add_tag(e1, "baseline")
    assert not created and again == first
    moved, created = events.add_tag(e2, "baseline", user_id="bo")
    assert created and moved.previous_execution_id == "e1"
    events.add_tag(e1, "production")
    assert events.tagged("wf-e", "baseline").execution_id == "e2"
    assert {t: e.execution_id for t, e in events.current_tags("wf-e").items()} == {
        "baseline": "e2",
        "production": "e1",
    }
    with pytest.raises(NotFound):
        events.remove_tag(e1, "baseline")  # it moved away
    events.remove_tag(e2, "baseline", user_id="bo")
    with pytest.raises(NotFound, match="no execution tagged baseline"):
        events.tagged("wf-e", "baseline")
    history = [(e.action, e.tag, e.execution_id) for e in events.tag_events("wf-e")]
    assert history == [
        ("add", "baseline", "e1"),
        ("add", "baseline", "e2"),
        ("add", "production", "e1"),
        ("remove", "baseline", "e2"),
    ]
    keys = [i.key for i in archive.store.list("events/")]
    assert len(keys) == 4 and all(k.startswith("events/workflows/wf-e/tags/") for k in keys)


@pytest.mark.parametrize("bad", ["", "Baseline", "-x", "a b", "x" * 65, 7, None])
def test_tag_names_are_checked(bad: Any) -> None:
    archive, events = _setup()
    with pytest.raises(InvalidInput) as info:
        events.add_tag(archive.get_snapshot("e1"), bad)
    assert info.value.field == "tag"


def test_annotations_on_snapshots_and_nodes() -> None:
    archive, events = _setup()
    e1 = archive.get_snapshot("e1")
    note = events.annotate(e1, text="looks fine", user_id="ana")
    bug = events.annotate(e1, text=f"fails with key {SECRET}", type="bug", node="h")
    assert (bug.node, bug.node_id, bug.type) == ("HTTP", "h", "bug")
    assert SECRET not in (bug.text or "") and MARKER_PREFIX in (bug.text or "")
    assert events.annotate(e1, text="x", node="HTTP").node_id == "h"
    with pytest.raises(InvalidInput) as info:
        events.annotate(e1, text="x", node="Nope")
    assert info.value.field == "node"
    for kwargs, field in (
        ({"text": ""}, "text"),
        ({"text": "x" * 10_001}, "text"),
        ({"text": "x", "type": "rant"}, "type"),
        ({"text": 5}, "text"),
    ):
        with pytest.raises(InvalidInput) as info:
            events.annotate(e1, **kwargs)
        assert info.value.field == field
    events.remove_annotation(e1, note.annotation_id)
    with pytest.raises(NotFound):
        events.remove_annotation(e1, note.annotation_id)
    with pytest.raises(NotFound):
        events.remove_annotation(archive.get_snapshot("e2"), bug.annotation_id)
    active, removed = events.fold_annotations(events.annotation_events("wf-e"))
    assert (next(a.text for a in active) or "").startswith("fails with key")
    assert list(removed) == [note.annotation_id]


def test_events_are_indexed_and_the_index_rebuilds() -> None:
    archive, events = _setup()
    e1 = archive.get_snapshot("e1")
    events.add_tag(e1, "baseline")
    events.add_tag(archive.get_snapshot("e2"), "baseline")
    events.annotate(e1, text="note")
    parts = sorted(i.key for i in archive.store.list("index/"))
    assert len(parts) == 3
    assert all(
        p.startswith(("index/tag_events/dt=2026-11-25/", "index/annotations/")) for p in parts
    )
    rows = pq.read_table(io.BytesIO(archive.store.get(parts[-1]))).to_pylist()
    assert rows[0]["tag"] == "baseline" and rows[0]["workflow_id"] == "wf-e"
    report = rebuild_event_index(archive.store)
    assert report["rows"] == {"tag_events": 2, "annotations": 1}
    assert sorted(report["partsRemoved"]) == parts
    after = sorted(i.key for i in archive.store.list("index/"))
    assert after == sorted(report["partsWritten"]) and len(after) == 2
    tags = next(p for p in after if "tag_events" in p)
    table = pq.read_table(io.BytesIO(archive.store.get(tags))).to_pylist()
    assert [(r["action"], r["execution_id"], r["previous_execution_id"]) for r in table] == [
        ("add", "e1", None),
        ("add", "e2", "e1"),
    ]


# ---------------------------------------------------------------------------- HTTP


@pytest.fixture
def app() -> FastAPI:
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    for execution_id in ("e1", "e2"):
        archive.capture_snapshot(execution_id=execution_id, workflow=WORKFLOW)
    return create_app(Settings(tokens=TOKENS_SETTING), archive=archive)


def test_tag_routes(app: FastAPI) -> None:
    ingest, read = Client(app, TOKENS["ingest"]), Client(app, TOKENS["read"])
    response = ingest.post(f"{SNAPSHOTS}/e1/tags", json={"tag": "baseline", "userId": "ana"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["event"]["action"] == "add" and body["tags"] == ["baseline"]
    assert ingest.post(f"{SNAPSHOTS}/e1/tags", json={"tag": "baseline"}).status_code == 200
    moved = ingest.post(f"{SNAPSHOTS}/e2/tags", json={"tag": "baseline"}).json()
    assert moved["event"]["previousExecutionId"] == "e1"
    current = read.get(f"{SNAPSHOTS}/workflow/wf-e/tags/baseline").json()
    assert current["executionId"] == "e2" and current["snapshotVersion"] == "1.0.0"
    listing = read.get(f"{SNAPSHOTS}/workflow/wf-e/tags").json()
    assert listing["tags"]["baseline"]["executionId"] == "e2"
    assert len(listing["events"]) == 2
    e1 = read.get(f"{SNAPSHOTS}/e1/tags").json()
    assert e1["tags"] == [] and [e["action"] for e in e1["events"]] == ["add"]
    timeline = read.get(f"{SNAPSHOTS}/workflow/wf-e/timeline").json()
    assert timeline["tags"] == {"baseline": "e2"}
    removed = Client(app, TOKENS["admin"]).request("DELETE", f"{SNAPSHOTS}/e2/tags/baseline")
    assert removed.status_code == 200, removed.text
    assert removed.json()["event"]["action"] == "remove"
    assert_error(read.get(f"{SNAPSHOTS}/workflow/wf-e/tags/baseline"), 404, code="not_found")
    gone = ingest.request("DELETE", f"{SNAPSHOTS}/e2/tags/baseline")
    assert_error(gone, 404, code="not_found")


def test_annotation_routes(app: FastAPI) -> None:
    ingest, read = Client(app, TOKENS["ingest"]), Client(app, TOKENS["read"])
    body = {"type": "bug", "text": f"401 with {SECRET}", "node": "HTTP"}
    response = ingest.post(f"{SNAPSHOTS}/e1/annotations", json=body)
    assert response.status_code == 201, response.text
    annotation = response.json()["annotation"]
    assert annotation["nodeId"] == "h" and SECRET not in response.text
    listing = read.get(f"{SNAPSHOTS}/e1/annotations").json()
    assert [a["annotationId"] for a in listing["annotations"]] == [annotation["annotationId"]]
    url = f"{SNAPSHOTS}/e1/annotations/{annotation['annotationId']}"
    assert ingest.request("DELETE", url).status_code == 200
    listing = read.get(f"{SNAPSHOTS}/e1/annotations").json()
    assert listing["annotations"] == []
    assert listing["removed"][0]["removedBy"]["action"] == "remove"
    assert_error(ingest.request("DELETE", url), 404, code="not_found")


def test_event_routes_errors(app: FastAPI) -> None:
    ingest, read = Client(app, TOKENS["ingest"]), Client(app, TOKENS["read"])
    tags, notes = f"{SNAPSHOTS}/e1/tags", f"{SNAPSHOTS}/e1/annotations"
    assert_error(ingest.post(f"{SNAPSHOTS}/nope/tags", json={"tag": "x"}), 404)
    assert_error(ingest.post(f"{SNAPSHOTS}/nope/annotations", json={"text": "x"}), 404)
    assert_error(read.get(f"{SNAPSHOTS}/nope/tags"), 404)
    assert_error(read.get(f"{SNAPSHOTS}/nope/annotations"), 404)
    assert_error(read.get(f"{SNAPSHOTS}/workflow/nope/tags"), 404)
    assert_error(read.get(f"{SNAPSHOTS}/workflow/nope/tags/baseline"), 404)
    assert_error(ingest.post(tags, json={"tag": "Bad Tag"}), 422, field="tag")
    assert_error(ingest.post(tags, json={}), 422, field="tag")
    assert_error(ingest.post(tags, json={"tag": "x", "extra": 1}), 422, field="extra")
    assert_error(ingest.post(tags, json=[1]), 422, field="body")
    assert_error(ingest.post(tags, json={"tag": "x", "userId": "../x"}), 422, field="userId")
    assert_error(ingest.post(notes, json={"text": "x", "node": "Nope"}), 422, field="node")
    assert_error(ingest.post(notes, json={"text": "x", "type": "rant"}), 422, field="type")
    assert_error(
        ingest.post(notes, content=b"{", headers={"content-type": "application/json"}), 422
    )
    assert_error(ingest.post(notes, content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_error(read.get(f"{SNAPSHOTS}/workflow/wf-e/tags/UPPER"), 422, field="tag")
    assert_error(
        ingest.request("DELETE", f"{SNAPSHOTS}/e1/annotations/nope"), 422, field="annotationId"
    )
    assert_error(read.get(f"{SNAPSHOTS}/a~b/tags"), 422, field="executionId")
    status, _, raw = asgi_raw(app, "DELETE", f"{SNAPSHOTS}/e1/tags/a%2Fb".encode())
    assert status == 422 and orjson.loads(raw)["field"] == "tag"
    status, _, raw = asgi_raw(app, "GET", f"{SNAPSHOTS}/workflow/wf-e/tags/%00".encode())
    assert status == 422 and orjson.loads(raw)["field"] == "tag"
    status, _, raw = asgi_raw(app, "DELETE", f"{SNAPSHOTS}/e1/annotations/..".encode())
    assert status == 422 and orjson.loads(raw)["field"] == "annotationId"


WRITES = [
    ("POST", f"{SNAPSHOTS}/e1/tags", {"tag": "x"}),
    ("POST", f"{SNAPSHOTS}/e1/annotations", {"text": "x"}),
    ("DELETE", f"{SNAPSHOTS}/e1/tags/x", None),
    ("DELETE", f"{SNAPSHOTS}/e1/annotations/ev_00000000000000000000", None),
]
READS = [
    f"{SNAPSHOTS}/e1/tags",
    f"{SNAPSHOTS}/e1/annotations",
    f"{SNAPSHOTS}/workflow/wf-e/tags",
]


@pytest.mark.parametrize(("method", "url", "body"), WRITES)
def test_writes_need_the_ingest_scope(
    app: FastAPI, method: str, url: str, body: dict[str, Any] | None
) -> None:
    for holder in ("read", "query"):
        response = Client(app, TOKENS[holder]).request(method, url, json=body)
        assert_error(response, 403, field="Authorization", code="forbidden")
        assert 'scope="ingest"' in response.headers["www-authenticate"]
    assert_error(Client(app).request(method, url, json=body), 401)
    allowed = Client(app, TOKENS["ingest"]).request(method, url, json=body)
    assert allowed.status_code in (200, 201, 404), allowed.text


@pytest.mark.parametrize("url", READS)
def test_reads_need_the_read_scope(app: FastAPI, url: str) -> None:
    assert_error(Client(app, TOKENS["ingest"]).get(url), 403, code="forbidden")
    assert Client(app, TOKENS["read"]).get(url).status_code == 200
    assert_error(Client(app).get(url), 401)


def test_the_token_name_is_the_default_user() -> None:
    archive = Archive(MemoryStore(), Sanitizer(HMAC_KEY))
    archive.capture_snapshot(execution_id="e1", workflow=WORKFLOW)
    token = "evt_named-token-for-events"
    digest = token_digest(token)
    app = create_app(Settings(tokens=f"{digest}:ingest,read"), archive=archive)
    # EXECVAULT_TOKENS entries carry no name: the user stays unset unless given
    response = Client(app, token).post(f"{SNAPSHOTS}/e1/tags", json={"tag": "x"})
    assert response.json()["event"]["userId"] is None
