"""Semver rules and the git-like chain (docs/versioning.md)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from archiver.normalize import normalize_workflow
from archiver.versioning import classify_change, next_version


def _structure(doc: dict[str, Any]) -> dict[str, Any]:
    return normalize_workflow(doc).structure()


def _base() -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "1", "name": "Start", "type": "n8n-nodes-base.manualTrigger", "parameters": {}},
            {
                "id": "2",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "parameters": {"url": "https://a"},
                "position": [0, 0],
            },
            {"id": "3", "name": "Set", "type": "n8n-nodes-base.set", "parameters": {}},
        ],
        "connections": {
            "Start": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]},
            "HTTP": {"main": [[{"node": "Set", "type": "main", "index": 0}]]},
        },
        "settings": {},
    }


def _edit(fn: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_base())
    fn(doc)
    return doc


@pytest.mark.parametrize(
    ("edit", "level"),
    [
        (lambda d: d["nodes"].pop(), "major"),  # removed node (and its connection)
        (lambda d: d["connections"].pop("HTTP"), "major"),  # removed connection
        (lambda d: d["nodes"][2].update(type="n8n-nodes-base.code"), "major"),  # type change
        (lambda d: d["nodes"].append({"id": "4", "name": "New", "type": "x.y"}), "minor"),
        (
            lambda d: d["connections"]["Start"]["main"][0].append(
                {"node": "Set", "type": "main", "index": 0}
            ),
            "minor",
        ),
        (lambda d: d["nodes"][1]["parameters"].update(url="https://b"), "patch"),
        (lambda d: d["nodes"][1].update(position=[10, 10]), "patch"),
        (lambda d: d["settings"].update(timezone="UTC"), "patch"),
        (
            lambda d: d["nodes"][1].update(credentials={"httpAuth": {"id": "9", "name": "x"}}),
            "patch",
        ),
    ],
    ids=[
        "node-removed",
        "connection-removed",
        "type-changed",
        "node-added",
        "connection-added",
        "parameter",
        "position",
        "settings",
        "credential-ref",
    ],
)
def test_semver_rules(edit: Any, level: str) -> None:
    change = classify_change(_structure(_base()), _structure(_edit(edit)))
    assert change.level == level


def test_rename_is_a_patch_not_a_rewire() -> None:
    def rename(d: dict[str, Any]) -> None:
        d["nodes"][1]["name"] = "Fetch"
        d["connections"]["Fetch"] = d["connections"].pop("HTTP")
        d["connections"]["Start"]["main"][0][0]["node"] = "Fetch"

    change = classify_change(_structure(_base()), _structure(_edit(rename)))
    assert change.level == "patch"
    assert change.nodes_renamed == (("HTTP", "Fetch"),)
    assert change.connections_added == change.connections_removed == 0


def test_identical_structures_do_not_change() -> None:
    assert classify_change(_structure(_base()), _structure(_base())).level == "none"


def test_added_and_removed_together_is_major() -> None:
    def both(d: dict[str, Any]) -> None:
        d["nodes"].pop()
        d["nodes"].append({"id": "9", "name": "Other", "type": "x.y"})

    change = classify_change(_structure(_base()), _structure(_edit(both)))
    assert change.level == "major"
    assert "+1 node(s) (Other)" in change.summary()
    assert "-1 node(s) (Set)" in change.summary()


@pytest.mark.parametrize(
    ("current", "level", "expected"),
    [("1.0.0", "major", "2.0.0"), ("1.4.2", "minor", "1.5.0"), ("1.4.2", "patch", "1.4.3")],
)
def test_next_version(current: str, level: str, expected: str) -> None:
    assert next_version(current, level) == expected


def _shared_ids(*names: str) -> dict[str, Any]:
    """Nodes that all hold one placeholder id, as in exports shared with ids censored."""
    nodes = [
        {"id": "[CENSORED]", "name": n, "type": "n8n-nodes-base.set", "parameters": {}}
        for n in names
    ]
    connections = {
        a: {"main": [[{"node": b, "type": "main", "index": 0}]]}
        for a, b in itertools.pairwise(names)
    }
    return {"nodes": nodes, "connections": connections, "settings": {}}


def test_a_shared_placeholder_id_does_not_merge_nodes() -> None:
    old = _structure(_shared_ids("A", "B"))
    grown = classify_change(old, _structure(_shared_ids("A", "B", "C")))
    assert grown.level == "minor" and grown.nodes_added == ("C",)
    assert grown.nodes_modified == () and grown.connections_added == 1
    shrunk = classify_change(old, _structure(_shared_ids("A")))
    assert shrunk.level == "major" and shrunk.nodes_removed == ("B",)
    assert classify_change(old, _structure(_shared_ids("A", "B"))).level == "none"


def test_an_empty_name_and_repeated_names_classify() -> None:
    old = _structure(_shared_ids("", "F", "F"))
    new = _structure(_shared_ids("", "F", "F"))
    new["nodes"][2]["parameters"] = {"x": 1}
    change = classify_change(old, new)
    assert change.level == "patch" and change.nodes_modified == ("F",)
