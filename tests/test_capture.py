"""archiver.capture: PreparedCache answers a repeat only with what preparing it again would give."""

from __future__ import annotations

import copy
import gc
import itertools
import math
from typing import Any

import orjson
import pytest

from archiver.capture import PreparedCache, prepare_workflow
from archiver.errors import InvalidInput
from archiver.sanitize import Sanitizer
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
