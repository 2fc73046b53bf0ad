"""Every real shape of an n8n export normalizes; broken ones are refused naming the field."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from archiver.errors import MalformedWorkflow
from archiver.normalize import MAX_WARNINGS, node_keys, normalize_workflow
from tests.helpers import MALFORMED, WORKFLOWS, load_corpus


def _wf(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "wf1",
        "name": "Demo",
        "nodes": [
            {
                "id": "a",
                "name": "Start",
                "type": "n8n-nodes-base.manualTrigger",
                "typeVersion": 1,
                "position": [0, 0],
                "parameters": {},
            },
            {
                "id": "b",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200, 0],
                "parameters": {"url": "https://x"},
            },
        ],
        "connections": {"Start": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
        "settings": {"executionOrder": "v1"},
    }
    base.update(extra)
    return base


def test_plain_workflow() -> None:
    wf = normalize_workflow(_wf())
    assert wf.workflow_id == "wf1"
    assert wf.node_identity == "id"
    assert wf.connections == [
        {"source": "Start", "sourceOutput": 0, "target": "HTTP", "targetInput": 0, "type": "main"}
    ]
    assert wf.dangling_edges == []


@pytest.mark.parametrize(
    "wrap",
    [lambda w: [w], lambda w: {"workflow": w}, lambda w: {"workflow": {"workflow": w}}],
    ids=["cli-array", "wrapper", "double-wrapper"],
)
def test_wrappers_unwrap_to_the_same_structure(wrap: Any) -> None:
    assert normalize_workflow(wrap(_wf())).structure() == normalize_workflow(_wf()).structure()


def test_numeric_ids_string_active_and_tag_objects() -> None:
    wf = normalize_workflow(_wf(id=42, active="false", tags=[{"id": "1", "name": "prod"}, "x"]))
    assert wf.workflow_id == "42"
    assert wf.active is False
    assert wf.tags == ["prod", "x"]


def test_missing_ids_fall_back_to_names() -> None:
    doc = _wf()
    for node in doc["nodes"]:
        del node["id"]
    assert normalize_workflow(doc).node_identity == "name"
    doc["nodes"][0]["id"] = "a"
    assert normalize_workflow(doc).node_identity == "mixed"


def test_null_slots_ai_types_error_outputs_and_dangling_edges() -> None:
    doc = _wf()
    doc["nodes"].append({"name": "Model", "type": "@n8n/n8n-nodes-langchain.lmChatOpenAi"})
    doc["connections"] = {
        "Start": {"main": [None, [], [{"node": "HTTP", "type": "main", "index": 0}]]},
        "Model": {"ai_languageModel": [[{"node": "HTTP", "type": "ai_languageModel", "index": 0}]]},
        "HTTP": {"error": [[{"node": "Ghost", "type": "main", "index": 0}]]},
        "Nobody": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]},
    }
    wf = normalize_workflow(doc)
    assert {
        "source": "Start",
        "sourceOutput": 2,
        "target": "HTTP",
        "targetInput": 0,
        "type": "main",
    } in wf.connections
    assert {
        "source": "Model",
        "sourceOutput": 0,
        "target": "HTTP",
        "targetInput": 0,
        "type": "ai_languageModel",
    } in wf.connections
    assert {
        "source": "HTTP",
        "sourceOutput": 0,
        "target": "Ghost",
        "targetInput": 0,
        "type": "error",
        "targetType": "main",
    } in wf.connections
    assert {(e["source"], e["target"]) for e in wf.dangling_edges} == {
        ("HTTP", "Ghost"),
        ("Nobody", "HTTP"),
    }


def test_connection_key_order_does_not_change_the_structure() -> None:
    doc = _wf()
    doc["nodes"].append({"id": "c", "name": "Set", "type": "n8n-nodes-base.set"})
    doc["connections"]["HTTP"] = {"main": [[{"node": "Set", "type": "main", "index": 0}]]}
    reordered = copy.deepcopy(doc)
    reordered["connections"] = dict(reversed(list(doc["connections"].items())))
    assert normalize_workflow(doc).connections == normalize_workflow(reordered).connections


def test_credentials_become_references() -> None:
    doc = _wf()
    doc["nodes"][1]["credentials"] = {
        "httpBasicAuth": {"id": 7, "name": "Basic", "data": "should-vanish"},
        "oldStyle": "My cred",
        "empty": "",
    }
    node = normalize_workflow(doc).nodes[1]
    assert node["credentials"] == {
        "httpBasicAuth": {"id": "7", "name": "Basic"},
        "oldStyle": {"name": "My cred"},
        "empty": {},
    }


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda w: w.pop("nodes"), "nodes"),
        (lambda w: w.update(nodes="["), "nodes"),
        (lambda w: w.update(nodes=[]), "nodes"),
        (lambda w: w.pop("connections"), "connections"),
        (lambda w: w["nodes"][0].pop("name"), "nodes[0].name"),
        (lambda w: w["nodes"][1].update(type=3), "nodes[1].type"),
        (lambda w: w["nodes"][1].update(parameters=[]), "nodes[1].parameters"),
        (lambda w: w["nodes"][1].update(position=[1]), "nodes[1].position"),
        (lambda w: w["nodes"][1].update(name=3), "nodes[1].name"),
        (lambda w: w.update(settings=[]), "settings"),
        (lambda w: w["connections"]["Start"].update(main="x"), "connections.Start.main"),
        # digits to str.isdigit, not to int(): a clear error, not a ValueError (an HTTP 500)
        (
            lambda w: w["connections"]["Start"]["main"][0][0].update(index="\u00b2"),
            "connections.Start.main[0][0].index",
        ),
        (
            lambda w: w["connections"]["Start"]["main"][0][0].update(index="9" * 5000),
            "connections.Start.main[0][0].index",
        ),
    ],
)
def test_broken_workflows_name_the_field(mutate: Any, field: str) -> None:
    doc = _wf()
    mutate(doc)
    with pytest.raises(MalformedWorkflow) as info:
        normalize_workflow(doc)
    assert info.value.field == field


def test_arrays_of_several_workflows_are_refused() -> None:
    with pytest.raises(MalformedWorkflow, match="exactly one"):
        normalize_workflow([_wf(), _wf()])


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.name)
def test_malformed_corpus_is_refused(path: Any) -> None:
    with pytest.raises(MalformedWorkflow):
        normalize_workflow(load_corpus(path))


def test_whole_corpus_normalizes() -> None:
    assert len(WORKFLOWS) == 500
    for path in WORKFLOWS:
        wf = normalize_workflow(load_corpus(path))
        assert wf.nodes, path.name
        names = {n["name"] for n in wf.nodes}
        for edge in wf.connections:
            if edge not in wf.dangling_edges:
                assert edge["source"] in names and edge["target"] in names


def test_connections_seen_before_give_the_same_edges_fresh_each_time() -> None:
    doc = _wf()
    doc["connections"]["HTTP"] = {"main": [[{"node": "Gone", "type": "main", "index": 0}]]}
    first = normalize_workflow(copy.deepcopy(doc))
    first.connections[0]["target"] = "mutated by a caller"
    again = normalize_workflow(copy.deepcopy(doc))
    assert again.connections == normalize_workflow(copy.deepcopy(doc)).connections
    assert {(e["source"], e["target"]) for e in again.connections} == {
        ("HTTP", "Gone"),
        ("Start", "HTTP"),
    }
    assert again.connections is not first.connections
    # dangling depends on the nodes, not only on the connections: same connections, a node more
    doc["nodes"].append({"name": "Gone", "type": "n8n-nodes-base.noOp", "parameters": {}})
    assert normalize_workflow(doc).dangling_edges == []
    assert [e["target"] for e in again.dangling_edges] == ["Gone"]


def test_a_broken_connection_is_refused_every_time() -> None:
    doc = _wf()
    doc["connections"]["Start"]["main"][0][0]["index"] = "x"
    for _ in range(2):
        with pytest.raises(MalformedWorkflow) as info:
            normalize_workflow(copy.deepcopy(doc))
        assert info.value.field == "connections.Start.main[0][0].index"


def test_tuples_are_read_as_lists_in_connections() -> None:
    """orjson prints a tuple as a list: a memo keyed by those bytes must not make a tuple
    accepted only after its list twin was seen."""
    doc = _wf()
    as_tuples = copy.deepcopy(doc)
    as_tuples["connections"]["Start"]["main"] = ([{"node": "HTTP", "type": "main", "index": 0}],)
    assert normalize_workflow(as_tuples).connections == normalize_workflow(doc).connections


def test_index_beyond_64_bits_is_kept_exactly() -> None:
    doc = _wf()
    doc["connections"]["Start"]["main"][0][0]["index"] = 2**70
    for _ in range(2):
        assert normalize_workflow(copy.deepcopy(doc)).connections[0]["targetInput"] == 2**70


# ---------------------------------------------------------------------------- odd but accepted
# Real public exports n8n imports and runs: ids replaced by one placeholder when the workflow was
# shared, a node whose name was cleared. Capture keeps them exactly and reports them as warnings.


def _node(name: str, node_id: str | None, node_type: str = "n8n-nodes-base.set") -> dict[str, Any]:
    node: dict[str, Any] = {"name": name, "type": node_type, "typeVersion": 1, "parameters": {}}
    if node_id is not None:
        node["id"] = node_id
    node["position"] = [0, 0]
    return node


def _chain(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """A workflow wiring ``nodes`` one after the other (by name, as n8n does)."""
    connections = {
        a["name"]: {"main": [[{"node": b["name"], "type": "main", "index": 0}]]}
        for a, b in itertools.pairwise(nodes)
    }
    return {"id": "wf-odd", "name": "Odd", "nodes": nodes, "connections": connections}


def _codes(wf: Any) -> list[tuple[str, str]]:
    return [(w["code"], w["field"]) for w in wf.warnings]


def test_a_placeholder_id_shared_by_every_node_is_accepted_and_reported() -> None:
    doc = _chain(
        [
            _node("Webhook", "[CENSORED]", "n8n-nodes-base.webhook"),
            _node("Set", "[CENSORED]"),
            _node("Reply", "[CENSORED]", "n8n-nodes-base.respondToWebhook"),
        ]
    )
    wf = normalize_workflow(copy.deepcopy(doc))
    assert [n["id"] for n in wf.nodes] == ["[CENSORED]"] * 3  # kept exactly, never renumbered
    assert [n["name"] for n in wf.nodes] == ["Webhook", "Set", "Reply"]
    assert len(wf.connections) == 2 and wf.dangling_edges == []
    assert wf.node_identity == "name"  # a shared id identifies no node
    assert _codes(wf) == [("duplicate-node-id", "nodes[1].id")]
    assert "3 nodes share the id '[CENSORED]' (nodes 0, 1, 2)" in wf.warnings[0]["message"]


def test_a_placeholder_id_shared_by_some_nodes_leaves_the_others_keyed_by_id() -> None:
    doc = _chain(
        [
            _node("Trigger", "1d9a", "n8n-nodes-base.manualTrigger"),
            _node("Sheets", "REPLACE_WITH_NODE_ID"),
            _node("Mail", "REPLACE_WITH_NODE_ID"),
            _node("Done", "77ab"),
        ]
    )
    wf = normalize_workflow(doc)
    assert wf.node_identity == "mixed"
    assert _codes(wf) == [("duplicate-node-id", "nodes[2].id")]
    assert node_keys(wf.nodes) == ["id:1d9a", "name:Sheets", "name:Mail", "id:77ab"]


def test_an_empty_node_name_is_accepted_and_reported() -> None:
    doc = _chain([_node("Start", "a", "n8n-nodes-base.manualTrigger"), _node("", "b")])
    wf = normalize_workflow(doc)
    assert [n["name"] for n in wf.nodes] == ["Start", ""]
    assert wf.connections[0]["target"] == "" and wf.dangling_edges == []
    assert wf.node_identity == "id"
    assert _codes(wf) == [("empty-node-name", "nodes[1].name")]


def test_nodes_without_ids_are_keyed_by_name_without_a_warning() -> None:
    """Exports from n8n before 0.184 have no node ids (its importer adds them): not odd."""
    wf = normalize_workflow(_chain([_node("A", None), _node("B", None)]))
    assert wf.node_identity == "name" and wf.warnings == []
    assert all("id" not in n for n in wf.nodes)
    assert node_keys(wf.nodes) == ["name:A", "name:B"]
    mixed = normalize_workflow(_chain([_node("A", "x1"), _node("B", None)]))
    assert mixed.node_identity == "mixed" and mixed.warnings == []


def test_duplicate_names_and_dangling_connections_are_reported() -> None:
    doc = _chain([_node("Function", "a"), _node("Function", "b"), _node("End", "c")])
    doc["connections"]["End"] = {"main": [[{"node": "Gone", "type": "main", "index": 0}]]}
    wf = normalize_workflow(doc)
    assert _codes(wf) == [
        ("duplicate-node-name", "nodes[1].name"),
        ("dangling-connection", "connections.End.main[0]"),
    ]
    assert "'Gone'" in wf.warnings[1]["message"]
    assert node_keys(wf.nodes) == ["id:a", "id:b", "id:c"]
    assert node_keys([_node("F", None), _node("F", None), _node("F#2", None)]) == [
        "name:F",
        "name:F#2",
        "name:F#2#2",
    ]


def test_warnings_are_bounded() -> None:
    nodes = [_node(f"N{i}", "[CENSORED]") for i in range(3)]
    doc = _chain(nodes)
    for i in range(150):
        doc["connections"][f"Ghost{i}"] = {"main": [[{"node": "N0", "type": "main", "index": 0}]]}
    wf = normalize_workflow(doc)
    assert len(wf.warnings) == MAX_WARNINGS + 1
    assert wf.warnings[-1] == {
        "code": "warnings-truncated",
        "field": "",
        "message": "51 more warning(s) not listed",
    }


@pytest.mark.parametrize("name", [None, 3, ["A"]])
def test_a_node_without_a_string_name_is_still_refused(name: Any) -> None:
    doc = _wf()
    doc["nodes"][1]["name"] = name
    if name is None:
        del doc["nodes"][1]["name"]
    with pytest.raises(MalformedWorkflow) as info:
        normalize_workflow(doc)
    assert info.value.field == "nodes[1].name"
