"""The final-state record and its parser (n8n IRun, flatted, and our plain format)."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver import final_state
from archiver.errors import IntegrityError, InvalidId, InvalidInput, SanitizationError
from archiver.final_state import (
    EXECUTION_STATUSES,
    NODE_RUN_STATUSES,
    FinalState,
    NodeError,
    NodeRun,
    NodeState,
    decode_flatted,
    normalize_execution_status,
    normalize_node_status,
    parse_final_state,
    summarize,
)
from tests.helpers import flatted_dumps

FIXTURES = Path(__file__).parent / "fixtures" / "n8n_runs"
T0 = datetime(2026, 11, 25, 22, 45, 16, 123000, tzinfo=UTC)  # 1795646716123 ms
TRIGGER = "When clicking \u2018Execute workflow\u2019"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def parse(payload: Any, **kwargs: Any) -> FinalState:
    kwargs.setdefault("execution_id", "1042")
    return parse_final_state(payload, **kwargs)


def scrub(value: Any) -> Any:
    """A stand-in for the archive's sanitizer: replaces 'SECRET' anywhere, keys included."""
    if isinstance(value, str):
        return value.replace("SECRET", "[redacted]")
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def dumps(fs: FinalState) -> bytes:
    return orjson.dumps(fs.to_json())


# ------------------------------------------------------------------------------------------
# n8n IRun fixtures
# ------------------------------------------------------------------------------------------


def test_successful_three_node_run() -> None:
    fs = parse(load("success_3_nodes"))
    assert fs.execution_id == "1042"
    assert fs.status == "success"
    assert fs.mode == "manual"
    assert fs.started_at == datetime(2026, 11, 25, 22, 45, 16, 100000, tzinfo=UTC)
    assert fs.finished_at == datetime(2026, 11, 25, 22, 45, 16, 950000, tzinfo=UTC)
    assert fs.last_node_executed == "Set"
    assert fs.error is None
    assert [n.node for n in fs.nodes] == [TRIGGER, "HTTP Request", "Set"]
    assert all(n.status == "success" and len(n.runs) == 1 for n in fs.nodes)

    http = fs.node("HTTP Request")
    assert http is not None
    run = http.runs[0]
    assert run.index == 0
    assert run.execution_index == 1
    assert run.started_at == T0 + timedelta(milliseconds=7)
    assert run.duration_ms == 702.0
    assert run.input_items == 0  # n8n does not store a node's input
    assert run.input is None
    assert run.output_items == 2
    assert run.source == (TRIGGER,)
    assert run.output_types is None
    assert run.output == [
        [
            {
                "json": {"id": 1, "title": "delectus aut autem", "completed": False},
                "pairedItem": {"item": 0},
            },
            {
                "json": {"id": 2, "title": "quis ut nam facilis", "completed": True},
                "pairedItem": {"item": 0},
            },
        ]
    ]
    assert summarize(fs) == {
        "status": "success",
        "startedAt": fs.started_at,
        "finishedAt": fs.finished_at,
        "durationMs": 850,
        "nodeCount": 3,
        "errorCount": 0,
        "failedNodes": [],
        "firstFailedNode": None,
    }


def test_failing_http_request_stops_the_run() -> None:
    fs = parse(load("http_error"), execution_id="1043")
    assert fs.status == "error"
    assert fs.mode == "trigger"
    assert [n.node for n in fs.nodes] == ["Schedule Trigger", "HTTP Request"]  # Set never ran
    assert fs.node("Set") is None
    http = fs.node("HTTP Request")
    assert http is not None
    assert http.status == "error"
    assert http.runs[0].status == "error"
    assert http.runs[0].output is None and http.runs[0].output_items == 0
    err = http.error
    assert err is not None
    assert err == http.runs[0].error
    assert err.name == "NodeApiError"
    assert err.message.startswith("Authorization failed")
    assert err.stack is not None and err.stack.startswith("NodeApiError:")
    assert err.description is not None
    assert err.node == "HTTP Request"  # the node object is reduced to its name
    assert err.http_code == "401"
    assert fs.error is not None and fs.error.node == "HTTP Request"
    assert fs.last_node_executed == "HTTP Request"

    summary = summarize(fs)
    assert summary["failedNodes"] == ["HTTP Request"]
    assert summary["firstFailedNode"] == "HTTP Request"
    assert summary["errorCount"] == 1
    assert summary["durationMs"] == 1408


def test_error_node_object_and_extra_fields_are_not_kept() -> None:
    fs = parse(load("http_error"), execution_id="1043")
    raw = dumps(fs)
    for dropped in (b"node-param-token", b"api.example.com", b"parameters", b"messages", b"level"):
        assert dropped not in raw


def test_sanitize_applies_to_items_and_error_texts() -> None:
    fs = parse(load("http_error"), execution_id="1043", sanitize=scrub)
    raw = dumps(fs)
    assert b"SECRET" not in raw
    assert b"[redacted]" in raw
    http = fs.node("HTTP Request")
    assert http is not None and http.error is not None
    assert "[redacted]" in http.error.message
    assert http.error.description is not None and "[redacted]" in http.error.description
    assert http.error.stack is not None and "[redacted]" in http.error.stack


def test_sanitize_sees_items_of_every_shape() -> None:
    payload = {
        "status": "success",
        "nodes": {
            "A": {
                "input": [{"token": "SECRET-in"}],
                "output": [[{"json": {"k": "SECRET-out"}}], ["SECRET-bare"]],
                "error": {"message": "m SECRET", "description": "d SECRET", "stack": "s SECRET"},
            }
        },
        "error": "top SECRET",
    }
    raw = dumps(parse(payload, sanitize=scrub))
    assert b"SECRET" not in raw
    ai = load("ai_language_model")
    ai["data"]["resultData"]["runData"]["OpenAI Chat Model"][0]["inputOverride"][
        "ai_languageModel"
    ][0][0]["json"]["apiKey"] = "SECRET-sk"
    assert b"SECRET" not in dumps(parse(ai, sanitize=scrub))


def test_sanitizer_must_return_text_for_error_fields() -> None:
    with pytest.raises(SanitizationError):
        parse(load("http_error"), sanitize=lambda v: None if isinstance(v, str) else v)


def test_node_with_two_runs_in_a_loop() -> None:
    fs = parse(load("loop_two_runs"))
    assert [n.node for n in fs.nodes] == ["Start", "Code", "Loop Over Items", "Wait"]
    loop = fs.node("Loop Over Items")
    assert loop is not None
    assert [r.index for r in loop.runs] == [0, 1]
    assert [r.execution_index for r in loop.runs] == [2, 4]
    assert [r.output_items for r in loop.runs] == [2, 3]
    assert loop.runs[0].output is not None and loop.runs[0].output[0] == []
    assert len(loop.runs[0].output[1]) == 2
    assert loop.runs[1].source == ("Wait",)
    assert loop.status == "success"
    assert loop.error is None


def test_task_without_execution_status() -> None:
    fs = parse(load("no_execution_status"))
    webhook, function = fs.nodes  # no executionIndex: ordered by start time
    assert (webhook.node, webhook.status) == ("Webhook", "success")
    assert (function.node, function.status) == ("Function", "error")
    assert function.error is not None and function.error.name == "Error"
    assert fs.status == "unknown"  # no status given: not derived from the error
    assert fs.error is not None and fs.error.node == "Function"
    assert fs.mode is None and fs.started_at is None


def test_start_time_in_seconds() -> None:
    fs = parse(load("start_time_seconds"))
    base = datetime(2026, 11, 25, 22, 45, 16, tzinfo=UTC)
    assert fs.started_at == base
    assert fs.finished_at == base + timedelta(milliseconds=1500)
    assert [n.runs[0].started_at for n in fs.nodes] == [base, base + timedelta(milliseconds=250)]
    assert summarize(fs)["durationMs"] == 1500


def test_ai_language_model_sub_node() -> None:
    fs = parse(load("ai_language_model"))
    assert [n.node for n in fs.nodes] == [
        "When chat message received",
        "AI Agent",
        "OpenAI Chat Model",
    ]
    model = fs.node("OpenAI Chat Model")
    assert model is not None
    run = model.runs[0]
    assert run.output_types == ("ai_languageModel",)
    assert run.output_items == 1
    assert run.input_items == 1  # from inputOverride
    assert run.input is not None
    assert run.input[0]["json"]["estimatedTokens"] == 17
    assert run.output is not None
    assert run.output[0][0]["json"]["tokenUsage"]["totalTokens"] == 24
    assert run.source == ("AI Agent",)
    agent = fs.node("AI Agent")
    assert agent is not None and agent.runs[0].output_types is None


def test_flatted_data_string_parses_like_the_plain_object() -> None:
    flat = load("flatted_data")
    assert isinstance(flat["data"], str)
    plain = {**flat, "data": decode_flatted(flat["data"])}
    fs = parse(flat, execution_id="1045")
    assert fs == parse(plain, execution_id="1045")
    assert [n.node for n in fs.nodes] == ["Manual Trigger", "Get Users", "Filter"]
    filt = fs.node("Filter")
    assert filt is not None and filt.runs[0].output is not None
    assert [len(slot) for slot in filt.runs[0].output] == [1, 1]
    assert filt.runs[0].output[0][0]["json"]["email"] == "ada@example.com"


def test_binary_data_keeps_only_metadata() -> None:
    fs = parse(load("binary_item"))
    raw = dumps(fs)
    assert b"iVBORw0KGgo" not in raw
    assert b"filesystem-v2" not in raw
    node = fs.node("Download Logo")
    assert node is not None and node.runs[0].output is not None
    item = node.runs[0].output[0][0]
    assert item == {
        "json": {"url": "https://example.com/logo.png"},
        "binary": {"data": {"mimeType": "image/png", "fileName": "logo.png", "fileSize": "70 B"}},
        "pairedItem": {"item": 0},
    }


def test_result_data_and_run_data_alone() -> None:
    full = load("success_3_nodes")
    result_data = full["data"]["resultData"]
    by_result = parse({"resultData": result_data})
    by_run = parse({"runData": result_data["runData"]})
    assert [n.node for n in by_result.nodes] == [TRIGGER, "HTTP Request", "Set"]
    assert by_result.nodes == by_run.nodes
    assert by_result.status == by_run.status == "unknown"  # no status in the body
    assert by_result.last_node_executed == "Set"
    assert by_run.last_node_executed is None


def test_fixtures_round_trip_through_json() -> None:
    for path in sorted(FIXTURES.glob("*.json")):
        fs = parse(json.loads(path.read_text(encoding="utf-8")))
        assert FinalState.from_json(orjson.loads(dumps(fs))) == fs, path.name


# ------------------------------------------------------------------------------------------
# item options
# ------------------------------------------------------------------------------------------


def test_keep_items_false_keeps_counts_only() -> None:
    calls: list[Any] = []

    def spy(value: Any) -> Any:
        calls.append(value)
        return value

    fs = parse(load("ai_language_model"), keep_items=False, sanitize=spy)
    model = fs.node("OpenAI Chat Model")
    assert model is not None
    run = model.runs[0]
    assert run.input is None and run.output is None and run.output_types is None
    assert (run.input_items, run.output_items) == (1, 1)
    assert calls == []  # nothing kept, nothing to sanitize
    assert "input" not in run.to_json() and "output" not in run.to_json()


def test_max_items_per_run_truncates_but_counts_everything() -> None:
    seen: list[Any] = []

    def spy(value: Any) -> Any:
        seen.append(value)
        return value

    fs = parse(load("loop_two_runs"), max_items_per_run=2, sanitize=spy)
    code = fs.node("Code")
    assert code is not None
    run = code.runs[0]
    assert run.output_items == 3
    assert run.output is not None and [len(s) for s in run.output] == [2]
    assert run.items_truncated is True
    assert run.to_json()["itemsTruncated"] is True
    loop = fs.node("Loop Over Items")
    assert loop is not None
    assert [len(s) for s in loop.runs[1].output or []] == [2, 0]
    assert loop.runs[0].items_truncated is False
    assert "itemsTruncated" not in loop.runs[0].to_json()
    assert all(len(s) <= 2 for n in fs.nodes for r in n.runs for s in r.output or [])
    assert {"json": {"n": 3}} not in seen[:3]  # the dropped third item was never sanitized

    none_kept = parse(load("loop_two_runs"), max_items_per_run=0)
    assert all(r.output == [[]] * len(r.output or []) for n in none_kept.nodes for r in n.runs)


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_max_items_per_run_must_be_a_count(limit: Any) -> None:
    with pytest.raises(InvalidInput):
        parse(load("loop_two_runs"), max_items_per_run=limit)


# ------------------------------------------------------------------------------------------
# the plain format
# ------------------------------------------------------------------------------------------

PLAIN: dict[str, Any] = {
    "status": "error",
    "mode": "webhook",
    "startedAt": "2026-11-25T23:45:16.123+01:00",
    "finishedAt": "2026-11-25T22:45:18.000Z",
    "error": {"message": "boom", "name": "NodeOperationError", "node": "Charge"},
    "nodes": {
        "Webhook": {
            "status": "success",
            "startedAt": "2026-11-25T22:45:16.200Z",
            "durationMs": 2,
            "output": [{"orderId": 7}],
        },
        "Charge": {
            "status": "failed",
            "startedAt": 1795646716300,
            "durationMs": 1500.5,
            "error": {"message": "card declined", "httpCode": 402},
            "input": [{"orderId": 7}],
            "source": ["Webhook"],
        },
        "Notify": {"status": "skipped"},
    },
}


def test_plain_format_dict_form() -> None:
    fs = parse(PLAIN)
    assert fs.status == "error"
    assert fs.started_at == T0
    assert fs.finished_at == datetime(2026, 11, 25, 22, 45, 18, tzinfo=UTC)
    assert fs.error == NodeError(message="boom", name="NodeOperationError", node="Charge")
    assert [n.node for n in fs.nodes] == ["Webhook", "Charge", "Notify"]  # untimed last
    webhook, charge, notify = fs.nodes
    assert webhook.runs[0].output == [[{"json": {"orderId": 7}}]]
    assert webhook.runs[0].output_items == 1
    assert charge.status == "error"  # "failed" normalized
    assert charge.error == NodeError(message="card declined", http_code="402")
    assert charge.runs[0].input == [{"json": {"orderId": 7}}]
    assert charge.runs[0].input_items == 1
    assert charge.runs[0].duration_ms == 1500.5
    assert charge.runs[0].source == ("Webhook",)
    assert notify.status == "skipped" and notify.runs[0].status == "skipped"
    assert summarize(fs)["failedNodes"] == ["Charge"]
    assert summarize(fs)["durationMs"] == 1877


def test_plain_format_list_form_equals_dict_form() -> None:
    as_list = {**PLAIN, "nodes": [{"node": k, **v} for k, v in PLAIN["nodes"].items()]}
    assert parse(as_list) == parse(PLAIN)


def test_plain_format_keys_may_be_ids() -> None:
    fs = parse(
        {
            "status": "success",
            "nodes": {
                "a1b2": {"name": "Fetch", "status": "success"},
                "c3d4": {"status": "success", "nodeId": "c3d4-uuid"},
            },
        }
    )
    assert [(n.node, n.node_id) for n in fs.nodes] == [("Fetch", "a1b2"), ("c3d4", "c3d4-uuid")]


def test_plain_format_runs_and_counts() -> None:
    fs = parse(
        {
            "nodes": [
                {
                    "node": "Loop",
                    "runs": [
                        {"status": "success", "executionIndex": 1, "outputItems": 40},
                        {"executionIndex": 3, "error": "timeout", "output": [[1, 2], [3]]},
                    ],
                },
                {"node": "Start", "runs": [{"status": "ok", "executionIndex": 0}]},
            ]
        }
    )
    start, loop = fs.nodes  # ordered by first run's executionIndex
    assert start.node == "Start" and start.status == "success"
    assert loop.status == "error" and loop.error == NodeError(message="timeout")
    assert loop.runs[0].output_items == 40 and loop.runs[0].output is None
    assert loop.runs[1].output == [[{"json": 1}, {"json": 2}], [{"json": 3}]]
    assert loop.runs[1].output_items == 3
    assert fs.status == "unknown"  # no status in the body: not derived from the failed node


def test_plain_format_node_with_empty_runs_keeps_its_status() -> None:
    fs = parse({"status": "canceled", "nodes": {"Wait": {"status": "waiting", "runs": []}}})
    assert fs.status == "canceled"
    assert fs.nodes[0].status == "waiting" and fs.nodes[0].runs == ()


def test_plain_format_n8n_items_and_connections() -> None:
    fs = parse(
        {
            "nodes": {
                "X": {
                    "input": {"main": [[{"json": {"a": 1}, "pairedItem": 0}]]},
                    "output": [
                        {"json": {"b": 2}, "binary": {"f": {"data": "QUJD", "fileName": "f"}}}
                    ],
                }
            }
        }
    )
    run = fs.nodes[0].runs[0]
    assert run.input == [{"json": {"a": 1}, "pairedItem": 0}]
    assert run.output == [[{"json": {"b": 2}, "binary": {"f": {"fileName": "f"}}}]]


def test_status_normalization() -> None:
    assert normalize_execution_status("Cancelled") == "canceled"
    assert normalize_execution_status("FAILED") == "error"
    assert normalize_execution_status("completed") == "success"
    assert normalize_execution_status("queued") == "new"
    assert normalize_execution_status("sideways") == "unknown"
    assert normalize_node_status("new") == "waiting"
    assert normalize_node_status("disabled") == "skipped"
    assert normalize_node_status("crashed") == "crashed"
    assert all(normalize_execution_status(s) == s for s in EXECUTION_STATUSES)
    assert all(normalize_node_status(s) == s for s in NODE_RUN_STATUSES)
    assert parse({"status": "cancelled", "nodes": {}}).status == "canceled"
    assert parse({"nodes": {}}).status == "unknown"
    assert parse({"nodes": {}, "waitTill": "2026-12-01T00:00:00Z"}).status == "waiting"


# ------------------------------------------------------------------------------------------
# timestamps
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25T22:45:16.123Z",
        "2026-11-25T22:45:16.123456Z",
        "2026-11-25T23:45:16.123+01:00",
        1795646716123,
        1795646716.123,
        datetime(2026, 11, 25, 17, 45, 16, 123999, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_timestamp_forms(value: Any) -> None:
    fs = parse({"startedAt": value, "nodes": {}})
    assert fs.started_at == T0
    assert fs.to_json()["startedAt"] == "2026-11-25T22:45:16.123Z"


@pytest.mark.parametrize(
    "value",
    [
        "yesterday SECRETVALUE",
        "2026-11-25T22:45:16",  # no offset
        datetime(2026, 11, 25, 22, 45, 16),  # naive
        -1,
        float("inf"),
        10**20,
        True,
        ["2026"],
        "2026-11-25T22:45:16.123Z" + " " * 80,
        "0001-01-01T00:00:00+05:00",
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_bad_timestamps(value: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse({"startedAt": value, "nodes": {}})
    assert exc.value.field == "startedAt"
    assert "SECRETVALUE" not in str(exc.value)


def test_records_normalize_datetimes_to_utc_milliseconds() -> None:
    local = datetime(2026, 11, 25, 23, 45, 16, 123456, tzinfo=timezone(timedelta(hours=1)))
    run = NodeRun(index=0, status="success", started_at=local)
    assert run.started_at == T0 and run.started_at.tzinfo == UTC
    with pytest.raises(InvalidInput):
        FinalState(execution_id="1", status="success", started_at=datetime(2026, 1, 1))


# ------------------------------------------------------------------------------------------
# bad input: InvalidInput names the JSON path, never echoes the value
# ------------------------------------------------------------------------------------------

BAD = "SECRETVALUE"
HTTP = "data.resultData.runData.HTTP Request[0]"


def _set(path: list[Any], value: Any) -> Any:
    doc = load("success_3_nodes")
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


RUN = ["data", "resultData", "runData", "HTTP Request", 0]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (_set([*RUN, "startTime"], f"{BAD}-yesterday"), f"{HTTP}.startTime"),
        (_set([*RUN, "startTime"], False), f"{HTTP}.startTime"),
        (_set([*RUN, "executionTime"], -5), f"{HTTP}.executionTime"),
        (_set([*RUN, "executionTime"], math.nan), f"{HTTP}.executionTime"),
        (_set([*RUN, "executionTime"], BAD), f"{HTTP}.executionTime"),
        (_set([*RUN, "executionIndex"], "1"), f"{HTTP}.executionIndex"),
        (_set([*RUN, "executionStatus"], 3), f"{HTTP}.executionStatus"),
        (_set([*RUN, "source"], BAD), f"{HTTP}.source"),
        (_set([*RUN, "source"], [{"previousNode": 5}]), f"{HTTP}.source[0].previousNode"),
        (_set([*RUN, "data"], [BAD]), f"{HTTP}.data"),
        (_set([*RUN, "data", "main"], {"0": []}), f"{HTTP}.data.main"),
        (_set([*RUN, "data", "main", 0], BAD), f"{HTTP}.data.main[0]"),
        (_set([*RUN, "data", "main", 0, 1], BAD), f"{HTTP}.data.main[0][1]"),
        (
            _set([*RUN, "data", "main", 0, 1, "binary"], {"data": {"mimeType": 7}}),
            f"{HTTP}.data.main[0][1].binary.data.mimeType",
        ),
        (_set([*RUN, "error"], {"message": 42}), f"{HTTP}.error.message"),
        (_set([*RUN, "error"], {"message": "m", "node": 1}), f"{HTTP}.error.node"),
        (_set([*RUN, "error"], 17), f"{HTTP}.error"),
        (_set([*RUN, "inputOverride"], BAD), f"{HTTP}.inputOverride"),
        (_set(RUN, BAD), HTTP),
        (_set(RUN[:-1], {"x": 1}), "data.resultData.runData.HTTP Request"),
        (_set(RUN[:-2], [BAD]), "data.resultData.runData"),
        (_set(["data", "resultData"], BAD), "data.resultData"),
        (_set(["data", "resultData", "error"], {"stack": ["x"]}), "data.resultData.error.stack"),
        (_set(["data", "resultData", "lastNodeExecuted"], 1), "data.resultData.lastNodeExecuted"),
        (_set(["data"], 12), "data"),
        (_set(["status"], 5), "status"),
        (_set(["mode"], ["manual"]), "mode"),
        (_set(["startedAt"], BAD), "startedAt"),
        (_set(["stoppedAt"], BAD), "stoppedAt"),
        ({"executionId": "999", "nodes": {}}, "executionId"),
        ({"unrelated": BAD}, "payload"),
        ({"nodes": BAD}, "nodes"),
        ({"nodes": {"A": BAD}}, "nodes.A"),
        ({"nodes": {"A": {"status": 1}}}, "nodes.A.status"),
        ({"nodes": {"A": {"runs": [{}, {"startedAt": BAD}]}}}, "nodes.A.runs[1].startedAt"),
        ({"nodes": {"A": {"runs": [BAD]}}}, "nodes.A.runs[0]"),
        ({"nodes": {"A": {"durationMs": BAD}}}, "nodes.A.durationMs"),
        ({"nodes": {"A": {"input": BAD}}}, "nodes.A.input"),
        ({"nodes": {"A": {"output": {"main": [BAD]}}}}, "nodes.A.output.main[0]"),
        ({"nodes": {"A": {"output": 3}}}, "nodes.A.output"),
        ({"nodes": {"A": {"input": [1, 2], "inputItems": 1}}}, "nodes.A.inputItems"),
        ({"nodes": {"A": {"outputItems": -1}}}, "nodes.A.outputItems"),
        ({"nodes": [{"status": "success"}]}, "nodes[0].node"),
        ({"nodes": [{"node": "A"}, {"node": "A"}]}, "nodes[1].node"),
        (
            {"nodes": [{"node": "A", "error": {"message": BAD, "httpCode": [1]}}]},
            "nodes[0].error.httpCode",
        ),
    ],
)
def test_bad_input_names_the_field(payload: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(payload)
    assert exc.value.field == field
    assert BAD not in str(exc.value)


def test_an_empty_node_name_is_a_name_as_in_the_workflow() -> None:
    # n8n runs a workflow with a node named "" (capture accepts it with a warning): its run
    # data is keyed by that name, in every shape the final state comes in
    run = {"startTime": 1, "executionTime": 2, "data": {"main": [[{"json": {}}]]}}
    n8n = parse({"status": "success", "data": {"resultData": {"runData": {"": [run]}}}})
    plain = parse({"status": "success", "nodes": {"": {"status": "success"}}})
    listed = parse({"status": "success", "nodes": [{"node": "", "status": "success"}]})
    for final in (n8n, plain, listed):
        assert [(n.node, n.status) for n in final.nodes] == [("", "success")]
        assert FinalState.from_json(final.to_json()) == final


def test_bad_execution_id() -> None:
    with pytest.raises(InvalidId):
        parse({"nodes": {}}, execution_id="../etc")


def test_payload_must_be_a_mapping() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse([BAD])
    assert exc.value.field == "payload"


def test_too_many_nodes_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(final_state, "MAX_NODES", 2)
    with pytest.raises(InvalidInput) as exc:
        parse(load("success_3_nodes"))
    assert exc.value.field == "data.resultData.runData"
    with pytest.raises(InvalidInput) as exc:
        parse({"nodes": [{"node": str(i)} for i in range(3)]})
    assert exc.value.field == "nodes"
    monkeypatch.setattr(final_state, "MAX_NODES", 100)
    monkeypatch.setattr(final_state, "MAX_RUNS", 4)
    with pytest.raises(InvalidInput) as exc:
        parse(load("loop_two_runs"))
    assert exc.value.field == "data.resultData.runData.Wait[0]"


# ------------------------------------------------------------------------------------------
# flatted
# ------------------------------------------------------------------------------------------


def test_flatted_decodes_strings_and_shared_references() -> None:
    assert decode_flatted('[{"a":"1","b":"2","c":3,"d":null},"x",[true,"1"]]') == {
        "a": "x",
        "b": [True, "x"],
        "c": 3,
        "d": None,
    }
    shared = decode_flatted('[{"a":"1","b":"1"},{"k":"2"},"v"]')
    assert shared == {"a": {"k": "v"}, "b": {"k": "v"}}
    assert decode_flatted('["just a string"]') == "just a string"
    assert decode_flatted("[7]") == 7


def test_flatted_encoder_port_matches_flatted_js() -> None:
    items: list[Any] = [{"json": {"id": 101}, "pairedItem": {"item": 0}}, {"json": {"id": 102}}]
    value = {"a": items, "b": {"main": [items, [items[1]]]}, "s": "x", "t": "x", "n": None}
    value["k"] = [1, True, "y"]
    # Output of flatted 3.4.4 `stringify` for the same value in Node.js.
    expected = (
        '[{"a":"1","b":"2","s":"3","t":"3","n":null,"k":"4"},["5","6"],{"main":"7"},"x",'
        '[1,true,"8"],{"json":"9","pairedItem":"10"},{"json":"11"},["1","12"],"y",'
        '{"id":101},{"item":0},{"id":102},["6"]]'
    )
    assert flatted_dumps(value) == expected
    assert decode_flatted(expected) == copy.deepcopy(value)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(JSON)
def test_flatted_round_trip(value: Any) -> None:
    assert decode_flatted(flatted_dumps(value)) == value


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('[{"name":"1","self":"0"},"x"]', "circular"),  # flatted.stringify of a = {name, self: a}
        ('[{"a":"1"},["0"]]', "circular"),
        ('[{"a":"9"}]', "out of range"),
        ('[{"a":"-1"}]', "bad reference"),
        ('[{"a":"x1"}]', "bad reference"),
        ('[{"a":{"inline":1}}]', "inline"),
        ("[]", "empty"),
        ('{"a":1}', "not an array"),
        ("[{", "not valid JSON"),
    ],
)
def test_flatted_rejects_malformed(text: str, why: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        decode_flatted(text)
    assert exc.value.field == "data"
    assert why in str(exc.value)


def test_flatted_limits_depth_and_expansion() -> None:
    def chain(levels: int) -> str:
        return json.dumps([[str(i + 1)] for i in range(levels - 1)] + [[]])

    with pytest.raises(InvalidInput, match="deeper than 200"):
        decode_flatted(chain(201))
    shallow = decode_flatted(chain(200))
    for _ in range(199):
        shallow = shallow[0]
    assert shallow == []

    bomb = [[str(i + 1), str(i + 1)] for i in range(60)] + [[]]  # 2**60 values when expanded
    with pytest.raises(InvalidInput, match="expands to more than"):
        decode_flatted(json.dumps(bomb))


def test_flatted_data_errors_name_data() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse({"status": "success", "data": '[{"resultData":"1"},{"runData":"1"}]'})
    assert exc.value.field == "data"
    with pytest.raises(InvalidInput) as exc:
        parse({"status": "success", "data": "not json " + BAD})
    assert exc.value.field == "data" and BAD not in str(exc.value)


def test_flatted_ignores_cycles_outside_result_data() -> None:
    # executionData is not kept, so it is not even decoded
    text = '[{"resultData":"1","executionData":"2"},{"runData":"3"},{"self":"2"},{}]'
    fs = parse({"status": "success", "data": text})
    assert fs.nodes == ()


def test_data_string_may_be_plain_json() -> None:
    doc = load("success_3_nodes")
    as_text = {**doc, "data": json.dumps(doc["data"])}
    assert parse(as_text) == parse(doc)


def rest_response(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """n8n's REST answer for one execution: ``{"data": {..., "data": "<flatted>"}}``."""
    execution = {
        "id": "1042",
        "finished": False,
        "mode": doc["mode"],
        "retryOf": None,
        "retrySuccessId": None,
        "status": "crashed",
        "createdAt": doc["startedAt"],
        "startedAt": doc["startedAt"],
        "stoppedAt": doc["stoppedAt"],
        "deletedAt": None,
        "workflowId": "wf-1",
        "waitTill": None,
        "customData": {},
        "annotation": {"tags": [], "vote": None},
        "workflowData": {"id": "wf-1", "name": "n", "nodes": [], "connections": {}},
        "data": flatted_dumps(doc["data"]),
        **fields,
    }
    return {"data": execution}


def test_rest_response_with_flatted_data_is_read_exactly() -> None:
    doc = load("success_3_nodes")
    fs = parse(rest_response(doc))
    assert fs.status == "crashed"  # the body's status, never a guess
    assert fs.nodes == parse(doc).nodes and len(fs.nodes) == 3
    assert fs.last_node_executed == "Set"
    assert fs.mode == "manual"
    assert (fs.started_at, fs.finished_at) == (parse(doc).started_at, parse(doc).finished_at)
    assert parse(rest_response(doc, status="canceled")).status == "canceled"


def test_rest_response_errors_name_the_wrapped_field() -> None:
    doc = load("success_3_nodes")
    with pytest.raises(InvalidInput) as exc:
        parse(rest_response(doc, stopedAt=BAD))
    assert exc.value.field == "data.stopedAt" and BAD not in str(exc.value)
    broken = copy.deepcopy(doc["data"])
    broken["resultData"]["runData"]["Set"][0]["startTime"] = BAD
    with pytest.raises(InvalidInput) as exc:
        parse(rest_response(doc, data=flatted_dumps(broken)))
    assert exc.value.field == "data.data.resultData.runData.Set[0].startTime"


def test_execution_inside_data_next_to_other_fields_is_refused() -> None:
    wrapped = rest_response(load("success_3_nodes"))
    with pytest.raises(InvalidInput) as exc:
        parse({**wrapped, "status": "success"})
    assert exc.value.field == "data"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": "success", "finishedAT": "2026-11-25T23:00:00Z", "nodes": {}}, "finishedAT"),
        ({**load("success_3_nodes"), "finishedAT": 1}, "finishedAT"),
        ({"resultData": {"runData": {}}, "runData": {}}, "runData"),
        ({"runData": {}, "statuss": "x"}, "statuss"),
        ({"data": {"resultData": {}}, "resultData": {}}, "resultData"),
        ({"nodes": {}, "workflowData": {}}, "workflowData"),
    ],
)
def test_unknown_top_level_fields_are_refused(payload: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(payload)
    assert exc.value.field == field


def test_n8n_fields_of_accepted_shapes_stay_accepted() -> None:
    doc = load("success_3_nodes")
    extra = {
        "id": "1042",
        "finished": True,
        "retryOf": None,
        "retrySuccessId": None,
        "waitTill": None,
        "workflowId": "wf-1",
        "workflowData": {"nodes": []},
        "createdAt": doc["startedAt"],
        "deletedAt": None,
        "annotation": None,
        "customData": {},
        "jobId": "7",
        "storedAt": "db",
    }
    assert parse({**doc, **extra}).nodes == parse(doc).nodes
    result = doc["data"]["resultData"]
    assert parse({"resultData": result, "startData": {}, "executionData": {}, "version": 1})
    assert parse({**result, "status": "success"}).last_node_executed == "Set"


@pytest.mark.parametrize(
    "payload",
    [
        {"resultData": load("success_3_nodes")["data"]["resultData"]},
        {"runData": load("success_3_nodes")["data"]["resultData"]["runData"]},
        {"runData": load("http_error")["data"]["resultData"]["runData"]},
        {"nodes": {"A": {"status": "success"}}},
    ],
)
def test_missing_status_is_unknown_not_inferred(payload: Any) -> None:
    # a stopped run n8n reports as canceled has node runs that look like success or error
    assert parse(payload).status == "unknown"
    assert parse({**payload, "status": "canceled"}).status == "canceled"


# ------------------------------------------------------------------------------------------
# the record: to_json / from_json
# ------------------------------------------------------------------------------------------

MS = st.integers(min_value=0, max_value=253_402_300_799_999).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)
NAMES = st.text(min_size=1, max_size=12)
OPT_TEXT = st.none() | st.text(max_size=20)

node_errors = st.builds(
    NodeError,
    message=st.text(max_size=20),
    name=OPT_TEXT,
    description=OPT_TEXT,
    stack=OPT_TEXT,
    node=OPT_TEXT,
    http_code=OPT_TEXT,
)
node_runs = st.builds(
    NodeRun,
    index=st.integers(min_value=0, max_value=1000),
    status=st.sampled_from(sorted(NODE_RUN_STATUSES)),
    started_at=st.none() | MS,
    duration_ms=st.none() | st.floats(min_value=0, max_value=1e12, allow_nan=False),
    input_items=st.integers(min_value=0, max_value=10**9),
    output_items=st.integers(min_value=0, max_value=10**9),
    error=st.none() | node_errors,
    input=st.none() | st.lists(JSON, max_size=3),
    output=st.none() | st.lists(st.lists(JSON, max_size=3), max_size=3),
    source=st.none() | st.lists(st.none() | NAMES, max_size=3).map(tuple),
    execution_index=st.none() | st.integers(min_value=0, max_value=10**6),
    output_types=st.none() | st.lists(NAMES, max_size=3).map(tuple),
    items_truncated=st.booleans(),
)
node_states = st.builds(
    NodeState,
    node=NAMES,
    node_id=st.none() | NAMES,
    status=st.sampled_from(sorted(NODE_RUN_STATUSES)),
    runs=st.lists(node_runs, max_size=3).map(tuple),
    error=st.none() | node_errors,
)
final_states = st.builds(
    FinalState,
    execution_id=NAMES,
    status=st.sampled_from(sorted(EXECUTION_STATUSES)),
    mode=OPT_TEXT,
    started_at=st.none() | MS,
    finished_at=st.none() | MS,
    nodes=st.lists(node_states, max_size=4).map(tuple),
    error=st.none() | node_errors,
    last_node_executed=st.none() | NAMES,
)


@settings(max_examples=150)
@given(final_states)
def test_round_trip(fs: FinalState) -> None:
    data = fs.to_json()
    assert FinalState.from_json(data) == fs
    assert FinalState.from_json(orjson.loads(orjson.dumps(data))) == fs
    assert None not in _all_values(data, skip={"input", "output", "source"})


def _all_values(value: Any, skip: set[str]) -> list[Any]:
    if isinstance(value, dict):
        out: list[Any] = []
        for k, v in value.items():
            if k not in skip:
                out.append(v)
                out.extend(_all_values(v, skip))
        return out
    if isinstance(value, list):
        return [x for v in value for x in _all_values(v, skip)]
    return []


@given(node_runs)
def test_node_run_round_trip(run: NodeRun) -> None:
    assert NodeRun.from_json(run.to_json()) == run


@given(node_states)
def test_node_state_round_trip(state: NodeState) -> None:
    assert NodeState.from_json(state.to_json()) == state


@given(node_errors)
def test_node_error_round_trip(err: NodeError) -> None:
    assert NodeError.from_json(err.to_json()) == err


def test_to_json_shape() -> None:
    fs = parse(load("http_error"), execution_id="1043")
    data = fs.to_json()
    assert list(data) == [
        "formatVersion",
        "executionId",
        "status",
        "mode",
        "startedAt",
        "finishedAt",
        "error",
        "lastNodeExecuted",
        "nodes",
    ]
    assert data["formatVersion"] == 1
    assert data["startedAt"] == "2026-11-25T23:00:00.004Z"
    run = data["nodes"][1]["runs"][0]
    assert run["startedAt"] == "2026-11-25T23:00:00.015Z"
    assert run["error"]["httpCode"] == "401"
    assert "output" not in run and "input" not in run
    assert "nodeId" not in data["nodes"][1]


def test_from_json_rejects_unknown_versions_and_bad_types() -> None:
    good = parse(load("loop_two_runs")).to_json()
    with pytest.raises(IntegrityError):
        FinalState.from_json({**good, "formatVersion": 2})
    with pytest.raises(InvalidInput) as exc:
        FinalState.from_json({k: v for k, v in good.items() if k != "formatVersion"})
    assert exc.value.field == "formatVersion"
    broken = copy.deepcopy(good)
    broken["nodes"][2]["runs"][1]["startedAt"] = BAD
    with pytest.raises(InvalidInput) as exc:
        FinalState.from_json(broken)
    assert exc.value.field == "nodes[2].runs[1].startedAt"
    assert BAD not in str(exc.value)
    broken = copy.deepcopy(good)
    broken["nodes"][0]["status"] = "exploded"
    with pytest.raises(InvalidInput) as exc:
        FinalState.from_json(broken)
    assert exc.value.field == "nodes[0].status"
    broken = copy.deepcopy(good)
    del broken["nodes"][1]["runs"][0]["index"]
    with pytest.raises(InvalidInput) as exc:
        FinalState.from_json(broken)
    assert exc.value.field == "nodes[1].runs[0].index"
    with pytest.raises(InvalidInput) as exc:
        FinalState.from_json({**good, "executionId": None})
    assert exc.value.field == "executionId"


def test_records_are_frozen() -> None:
    fs = parse(load("success_3_nodes"))
    with pytest.raises(AttributeError):
        fs.status = "error"  # type: ignore[misc]
    assert not hasattr(fs, "__dict__")


def test_summarize_counts_failed_runs_and_nodes() -> None:
    fs = FinalState(
        execution_id="9",
        status="error",
        nodes=(
            NodeState(
                node="Retry",
                status="success",
                runs=(NodeRun(index=0, status="error"), NodeRun(index=1, status="success")),
            ),
            NodeState(node="Crash", status="crashed", runs=(NodeRun(index=0, status="crashed"),)),
            NodeState(node="Fail", status="error", runs=(NodeRun(index=0, status="error"),)),
        ),
    )
    summary = summarize(fs)
    assert summary["errorCount"] == 3
    assert summary["failedNodes"] == ["Crash", "Fail"]
    assert summary["firstFailedNode"] == "Crash"
    assert summary["durationMs"] is None
    assert summary["nodeCount"] == 3


def test_public_api() -> None:
    public = {
        name
        for name, value in vars(final_state).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == final_state.__name__
    }
    assert public <= set(final_state.__all__)
    assert all(hasattr(final_state, name) for name in final_state.__all__)


def test_deeply_nested_item_is_refused_before_sanitizing() -> None:
    calls: list[Any] = []

    def spy(value: Any) -> Any:
        calls.append(value)
        return value

    deep: Any = "leaf"
    for _ in range(final_state.MAX_ITEM_DEPTH + 5):
        deep = {"k": deep}
    payload = {"nodes": {"A": {"output": [{"ok": 1}, deep]}}}
    with pytest.raises(InvalidInput) as exc:
        parse(payload, sanitize=spy)
    assert exc.value.field == "nodes.A.output[1]"
    assert len(calls) == 1  # only the first, shallow item reached the sanitizer
    fine: Any = "leaf"
    for _ in range(final_state.MAX_ITEM_DEPTH - 5):
        fine = [fine]
    assert parse({"nodes": {"A": {"output": [fine]}}}).nodes[0].runs[0].output_items == 1
