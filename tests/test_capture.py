"""archiver.capture: PreparedCache answers a repeat only with what preparing it again would give."""

from __future__ import annotations

import copy
import math
from typing import Any

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
    assert cache.prepare(_workflow(), sanitizer) is first
    assert first.snapshot_hash == prepare_workflow(_workflow(), Sanitizer(HMAC_KEY)).snapshot_hash


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
