"""Retention end to end (issue 5): a generated archive spanning 120 days goes through plan →
archive (verified copies to a cold store) → expire, with policy overrides, legal holds and
Object-Lock-locked objects; afterwards every execution is retrievable (hot, or restored from the
cold store) or has a tombstone explaining its expiry, and ``verify`` is clean. And: ``archive`` and
``expire`` killed at random points, then re-run, end in the state an uninterrupted run reaches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.archive import Archive
from archiver.errors import NotFound, ObjectArchived
from archiver.events import EventLog
from archiver.index import rebuild_index, verify
from archiver.retention import (
    RetentionPolicy,
    archive_cold,
    cold_moved_executions,
    expire,
    load_policy,
    plan,
    read_tier_events,
    read_tombstones,
    restore_execution,
)
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.store.memory import MemoryStore
from tests.helpers import capture_received

NOW = datetime(2024, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
WORKFLOWS = ("wf-a", "wf-b", "wf-c")
KEY = bytes(range(32))


def _workflow(workflow_id: str, variant: int) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "name": f"flow {workflow_id}",
        "nodes": [
            {
                "id": "t",
                "name": "Start",
                "type": "n8n-nodes-base.manualTrigger",
                "position": [0, 0],
            },
            {
                "id": "h",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200, 0],
                "parameters": {"url": f"https://example.com/{workflow_id}/{variant}"},
            },
        ],
        "connections": {"Start": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
    }


@dataclass(frozen=True)
class Execution:
    workflow_id: str
    age: float  # days before NOW
    status: str
    tags: tuple[str, ...] = ()
    locked: bool = False


def generate(
    store: ObjectStore, locked_store: ObjectStore | None = None, count: int = 60
) -> dict[str, Execution]:
    """``count`` executions with createdAt spread over 120 days, three workflows (structure changes every
    40 days), every 4th one failed; two tagged (``baseline``, ``litigation``); with
    ``locked_store`` (the same prefix, Object Lock COMPLIANCE) four of them are written locked."""
    archive = Archive(store, Sanitizer(KEY))
    locked = Archive(locked_store, Sanitizer(KEY)) if locked_store is not None else None
    out: dict[str, Execution] = {}
    for n in range(count):
        age = 120 - n * (119 / (count - 1))
        is_locked = locked is not None and n in (2, count // 3, 2 * count // 3, count - 4)
        workflow_id = "wf-locked" if is_locked else WORKFLOWS[n % 3]
        execution_id = f"ex-{n:03d}"
        when = NOW - timedelta(days=age)
        target = locked if is_locked and locked is not None else archive
        capture_received(
            target,
            when,
            execution_id=execution_id,
            workflow=_workflow(workflow_id, int(age) // 40),
        )
        status = "error" if n % 4 == 0 else "success"
        target.record_final_state(
            execution_id,
            {
                "status": status,
                "startedAt": when.isoformat(),
                "finishedAt": (when + timedelta(seconds=1)).isoformat(),
                "nodes": {"Start": {"status": "success"}, "HTTP": {"status": status}},
            },
        )
        out[execution_id] = Execution(workflow_id, age, status, locked=is_locked)
    events = EventLog(store)
    for execution_id, tag in (("ex-005", "baseline"), ("ex-009", "litigation")):
        events.add_tag(archive.get_snapshot(execution_id), tag)
        out[execution_id] = Execution(**{**out[execution_id].__dict__, "tags": (tag,)})
    return out


POLICY = """
[retention]
name = "e2e"
hot_days = 20
keep_days = 60
cold_store = "{cold}"

[retention.statuses.error]
keep_days = 100

[retention.workflows.wf-c]
hot_days = 45
keep_days = 90

[retention.tags.baseline]
keep_days = "never"

[retention.legal_hold]
executions = ["ex-003"]
workflows = []
tags = ["litigation"]
"""


def _keep(ex: Execution) -> float:
    keeps = [60.0]
    if ex.status == "error":
        keeps.append(100)
    if ex.workflow_id == "wf-c":
        keeps.append(90)
    if "baseline" in ex.tags:
        keeps.append(float("inf"))
    return max(keeps) if len(keeps) > 1 else keeps[0]


def _held(execution_id: str, ex: Execution) -> bool:
    return execution_id == "ex-003" or "litigation" in ex.tags


def _outcomes(store: ObjectStore) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for _, body in read_tombstones(store):
        if body.get("executionId"):
            out.setdefault(str(body["executionId"]), []).append(body)
    return out


@pytest.mark.parametrize("backend", ["moto", "seaweedfs"])
def test_plan_archive_expire_end_to_end(
    backend: str, s3_bucket_factory: Callable[[str], Any], tmp_path: Path
) -> None:
    bucket = s3_bucket_factory(backend)
    hot = bucket.store(prefix="arch")
    locked = bucket.store(prefix="arch", object_lock_mode="COMPLIANCE", object_lock_days=1)
    # moto copies every version of the bucket on each ListObjectVersions (every delete): fewer
    executions = generate(hot, locked, 30 if backend == "moto" else 60)
    assert rebuild_index(hot).ok  # a row per execution: verify checks them at the end
    policy_file = tmp_path / "retention.toml"
    cold_bucket = s3_bucket_factory(backend)  # another bucket on the same server
    policy_file.write_text(POLICY.format(cold=f"s3://{cold_bucket.name}/cold"))
    policy = load_policy(policy_file)

    # plan: nothing changes, the groups are what the policy says
    summary = plan(hot, policy, NOW).summary()
    assert summary["executions"] == len(executions)
    assert summary["toCold"]["executions"] > 0 and summary["toExpire"]["executions"] > 0

    decisions = plan(hot, policy, NOW).to_json(details=True)["decisions"]
    to_cold = {d["executionId"] for d in decisions if d["action"] == "cold"}
    # archive: verified copies to the cold prefix, hot copies deleted (locked ones kept)
    moved = archive_cold(hot, policy, NOW)
    cold = cold_bucket.store(prefix="cold")
    for entry in moved.moved:
        assert entry["tier"] == "cold-copy" and entry["location"] == cold.url
        for key in entry["keys"]:
            assert cold.head(key) is not None
    moved_ids = {m["executionId"] for m in moved.moved}
    locked_ids = {e for e, ex in executions.items() if ex.locked}
    # a COMPLIANCE-locked execution is not moved at all (its objects move together): it stays
    # hot, whole, and the report says why
    assert {r["object"] for r in moved.retained_locked} == locked_ids & to_cold
    assert not moved_ids & locked_ids
    assert cold_moved_executions(hot) == moved_ids
    assert {c for i in hot.list("blobs/") for c in [i.storage_class]} <= {"STANDARD", None}
    again = archive_cold(hot, policy, NOW)
    assert again.moved == []  # idempotent

    # expire now, archive and expire 30 days later (cold copies then expire from the cold store)
    expire(hot, policy, NOW)
    archive_cold(hot, policy, LATER)
    late = expire(hot, policy, LATER)
    assert any(e.get("deletedColdKeys") for e in late.expired)

    outcomes = _outcomes(hot)
    for execution_id, ex in executions.items():
        due = ex.age + 30 >= _keep(ex) and not _held(execution_id, ex)
        kept_by_lock = ex.locked
        expired = any(b["objectKind"] == "execution" for b in outcomes.get(execution_id, []))
        assert expired == (due and not kept_by_lock), execution_id
        archive = Archive(hot, Sanitizer(KEY))
        if expired:  # a tombstone explains it; reads answer 404, not 409
            reason = next(b["reason"] for b in outcomes[execution_id])
            assert "keep_days" in reason
            with pytest.raises(NotFound):
                archive.get_snapshot(execution_id)
            assert not any(i.key.split("/")[2] == execution_id for i in hot.list("executions/"))
            continue
        try:
            snapshot = archive.get_snapshot(execution_id)
        except ObjectArchived:
            assert restore_execution(hot, execution_id) == "restored"
            snapshot = archive.get_snapshot(execution_id)
        assert snapshot.execution_id == execution_id
        final = archive.get_final_state(execution_id)
        assert final is not None and final.status == ex.status
    # nothing cold-moved is left unexplained, and the index agrees with the objects
    assert cold_moved_executions(hot) == set()
    checked = verify(hot)
    assert checked.ok, checked
    # every cold object belongs to an execution that still exists (expired ones were deleted)
    alive = {
        e
        for e in executions
        if not any(b["objectKind"] == "execution" for b in outcomes.get(e, []))
    }
    assert {i.key.split("/")[2] for i in cold.list("executions/")} <= alive


# --------------------------------------------------------------------------------------------
# killed at random points


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class Dying:
    """A store whose mutating calls (put, delete) are counted across runs by ``killer``; the call
    with a number in ``killer.at`` raises Killed instead of happening."""

    def __init__(self, inner: ObjectStore, killer: Killer) -> None:
        self.inner = inner
        self.url = inner.url
        self.killer = killer

    def put(self, key: str, data: bytes) -> bool:
        self.killer.tick()
        return self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self.killer.tick()
        self.inner.delete(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)


@dataclass
class Killer:
    at: frozenset[int] = frozenset()
    count: int = 0
    kills: int = 0

    def tick(self) -> None:
        self.count += 1
        if self.count in self.at:
            self.kills += 1
            raise Killed()


KILL_POLICY = RetentionPolicy(
    name="kill",
    hot_days=20,
    keep_days=60,
    cold_store="memory:",  # the store itself is passed (cold_store=...)
    hold_executions=frozenset({"ex-003"}),
)


def _run(hot: ObjectStore, cold: ObjectStore, killer: Killer) -> None:
    """archive now, expire 30 days later, archive again: each re-run after a kill until done."""
    steps: list[Callable[[ObjectStore, ObjectStore], object]] = [
        lambda h, c: archive_cold(h, KILL_POLICY, NOW, cold_store=c),
        lambda h, c: expire(h, KILL_POLICY, LATER, cold_store=c),
        lambda h, c: archive_cold(h, KILL_POLICY, LATER, cold_store=c),
    ]
    for step in steps:
        while True:
            try:
                step(Dying(hot, killer), Dying(cold, killer))
                break
            except Killed:
                continue


def _state(hot: MemoryStore, cold: MemoryStore) -> dict[str, Any]:
    tombstones = read_tombstones(hot)
    intents = read_tombstones(hot, include_intents=True)
    closed = {b["eventId"] for _, b in intents if b.get("state") != "intent"}
    dangling = [b for _, b in intents if b.get("state") == "intent" and b["eventId"] not in closed]
    deleted: set[str] = set()
    for _, body in tombstones:
        deleted |= set(body["deletedKeys"]) | {f"cold:{k}" for k in body["deletedColdKeys"]}
    archive_events: dict[str, int] = {}
    for _, body in read_tier_events(hot):
        if body["action"] == "archive":
            archive_events[body["executionId"]] = archive_events.get(body["executionId"], 0) + 1
    index_keys = set()
    import io

    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    for info in hot.list("index/retention_events/"):
        index_keys |= set(
            pq.read_table(io.BytesIO(hot.get(info.key))).column("object_key").to_pylist()
        )
    records = {k for k, _ in tombstones} | {k for k, _ in read_tier_events(hot)}
    return {
        "hot": sorted(i.key for i in hot.list("executions/")),
        "blobs": sorted(i.key for i in hot.list("blobs/")),
        "cold": sorted(i.key for i in cold.list("")),
        "expired": sorted(
            {b["executionId"] for _, b in tombstones if b["objectKind"] == "execution"}
        ),
        "deleted": sorted(deleted),
        "moved": sorted(cold_moved_executions(hot)),
        "archiveEvents": archive_events,
        "dangling": dangling,
        "indexComplete": records <= index_keys,
        "plan": plan(hot, KILL_POLICY, LATER).summary(),
    }


def _history() -> tuple[MemoryStore, MemoryStore]:
    hot, cold = MemoryStore(), MemoryStore()
    generate(hot)
    return hot, cold


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_killed_archive_and_expire_converge(seed: int) -> None:
    reference_hot, reference_cold = _history()
    counter = Killer()
    _run(reference_hot, reference_cold, counter)
    expected = _state(reference_hot, reference_cold)
    assert expected["expired"] and expected["moved"] and expected["dangling"] == []
    assert set(expected["archiveEvents"].values()) == {1}

    hot, cold = _history()
    killer = Killer(frozenset(random.Random(seed).sample(range(1, counter.count), 8)))
    _run(hot, cold, killer)
    assert killer.kills >= 6  # re-runs redo some calls, so a later kill point may come earlier
    got = _state(hot, cold)
    assert got["dangling"] == [] and got["indexComplete"]
    assert got == expected  # one archive event per move, every deletion has its tombstone
