"""Tag and annotation events are indexed so analyst SQL can use them (issue 4 ↔ issue 6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from archiver.archive import Archive
from archiver.events import EventLog
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from query.catalog import Catalog
from query.history import workflow_history
from query.sql import SqlSandbox
from tests.helpers import HMAC_KEY


def _workflow(url: str) -> dict[str, Any]:
    return {
        "id": "wf-ev",
        "nodes": [
            {"id": "t", "name": "Start", "type": "n8n-nodes-base.manualTrigger"},
            {
                "id": "h",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "parameters": {"url": url},
            },
        ],
        "connections": {"Start": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
    }


def test_tags_and_annotations_are_queryable_with_sql(store: ObjectStore) -> None:
    archive = Archive(store, Sanitizer(HMAC_KEY))
    first = archive.capture_snapshot(execution_id="e1", workflow=_workflow("https://a")).snapshot
    second = archive.capture_snapshot(execution_id="e2", workflow=_workflow("https://b")).snapshot
    ticks = iter(datetime(2026, 11, 25, 10, 0, i, tzinfo=UTC) for i in range(60))
    events = EventLog(store, clock=lambda: next(ticks))  # distinct times: "newest" is defined
    events.add_tag(first, "baseline", user_id="ana")
    events.add_tag(second, "baseline", user_id="ana")  # moving the tag is a new event
    events.annotate(second, text="HTTP started timing out", type="bug", node="HTTP")

    with Catalog(store) as catalog:
        sandbox = SqlSandbox(catalog)
        rows = sandbox.run(
            "SELECT execution_id, tag, action FROM tag_events ORDER BY created_at, execution_id"
        ).rows()
        assert [r[:2] for r in rows] == [["e1", "baseline"], ["e2", "baseline"]]
        notes = sandbox.run("SELECT execution_id, type, node, text FROM annotations").rows()
        assert notes == [["e2", "bug", "HTTP", "HTTP started timing out"]]
        current = sandbox.run(
            "SELECT workflow_id, tag, execution_id FROM tag_events "
            "QUALIFY row_number() OVER (PARTITION BY workflow_id, tag ORDER BY created_at DESC) = 1 "
            "AND action = 'add'"
        ).rows()
        assert current == [["wf-ev", "baseline", "e2"]]  # the query docs/sql.md shows
        # the index views and history keep working beside the event tables
        assert sandbox.run("SELECT count(*) FROM tag_events").rows() == [[2]]
        assert workflow_history(catalog, "wf-ev").items == []  # no manifest writer attached


def test_event_views_exist_and_are_empty_without_events(store: ObjectStore) -> None:
    with Catalog(store) as catalog:
        sandbox = SqlSandbox(catalog)
        assert sandbox.run("SELECT count(*) FROM tag_events").rows() == [[0]]
        assert sandbox.run("SELECT count(*) FROM annotations").rows() == [[0]]
