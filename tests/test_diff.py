"""SnapshotDiff (query/diff.py): properties, scripted edits over the corpus, the execution side."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.archive import Archive
from archiver.canonical import canonicalize
from archiver.capture import trigger_kind
from archiver.errors import InvalidInput, NotFound
from archiver.normalize import edge_sort_key, unwrap_workflow
from archiver.sanitize import MARKER_PREFIX, Sanitizer
from archiver.store.memory import MemoryStore
from query.diff import (
    SECRET_MASK,
    Change,
    SnapshotDiff,
    apply_changes,
    apply_structural_diff,
    compare_executions,
    compare_structures,
    compare_workflow_versions,
    diff_values,
    match_nodes,
    resolve_version,
)
from tests.helpers import HMAC_KEY, WORKFLOWS, load_corpus

LISTS = (
    "nodes_added",
    "nodes_removed",
    "nodes_renamed",
    "nodes_modified",
    "connections_added",
    "connections_removed",
    "settings_changed",
    "variables_changed",
    "credentials_changed",
    "triggers_changed",
    "secrets_changed",
)


def assert_only(diff: SnapshotDiff, **counts: int) -> None:
    """Exactly ``counts`` entries in the named lists, none anywhere else."""
    unknown = set(counts) - set(LISTS)
    assert not unknown, unknown
    got = {name: len(getattr(diff, name)) for name in LISTS}
    assert got == {name: counts.get(name, 0) for name in LISTS}, got
    assert diff.node_order is None


def rendered(diff: SnapshotDiff) -> str:
    text = orjson.dumps(diff.to_json()).decode()
    assert MARKER_PREFIX not in text
    return text


# --------------------------------------------------------------------------------------------
# strategies: normal-form structures
# --------------------------------------------------------------------------------------------

MARKERS = [f"<redacted:hmac-sha256:{c * 32}>" for c in "0123abcdef"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["a", "b", "x/y", "t~0", "", "={{ $json.a }}", *MARKERS]),
    st.sampled_from(MARKERS).map(lambda m: f"Bearer {m}"),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "c", "k/1", "~"]), inner, max_size=4),
    ),
    max_leaves=12,
)
TYPES = ["n8n-nodes-base.set", "n8n-nodes-base.httpRequest", "n8n-nodes-base.webhook", "x.y"]
NAMES = ["Start", "HTTP", "Set", "Code", "If", "Merge", "Slack", "Sheet"]


@st.composite
def nodes(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    ids = draw(st.lists(st.sampled_from("pqrstuvw"), min_size=len(names), max_size=len(names)))
    out: list[dict[str, Any]] = []
    for i, (name, node_id) in enumerate(zip(names, ids, strict=True)):
        node: dict[str, Any] = {
            "name": name,
            "type": draw(st.sampled_from(TYPES)),
            "parameters": draw(st.dictionaries(st.sampled_from("abc"), json_values, max_size=3)),
        }
        if draw(st.booleans()) and node_id not in [n.get("id") for n in out]:
            node["id"] = node_id
        if draw(st.booleans()):
            node["position"] = [draw(st.integers(0, 3)) * 100, 0]
        if draw(st.booleans()):
            node["credentials"] = {"api": {"id": draw(st.sampled_from("12")), "name": "c"}}
        if i and draw(st.booleans()):
            node["disabled"] = draw(st.booleans())
        out.append(node)
    return out


@st.composite
def structures(draw: st.DrawFn, base: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    node_list = base if base is not None else draw(nodes())
    names = [n["name"] for n in node_list] + ["Ghost"]  # a dangling endpoint now and then
    edges = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "source": st.sampled_from(names),
                    "sourceOutput": st.integers(0, 1),
                    "target": st.sampled_from(names),
                    "targetInput": st.integers(0, 1),
                    "type": st.sampled_from(["main", "error"]),
                }
            ),
            max_size=6,
        )
    )
    unique = {edge_sort_key(e): e for e in edges}
    return {
        "nodes": node_list,
        "connections": [unique[k] for k in sorted(unique)],
        "settings": draw(st.dictionaries(st.sampled_from(["timezone", "a/b", "x"]), json_values)),
    }


@st.composite
def edited_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """``a`` and ``b`` where ``b`` is ``a`` after random renames, edits, adds, drops, shuffles."""
    a = draw(structures())
    b_nodes = copy.deepcopy(a["nodes"])
    taken = {n["name"] for n in b_nodes}
    for node in b_nodes:
        action = draw(st.sampled_from(["keep", "keep", "rename", "param", "move", "type"]))
        if action == "rename":
            fresh = draw(st.sampled_from([f"{node['name']} 2", "Renamed", "Other"]))
            if fresh not in taken:
                taken.add(fresh)
                node["name"] = fresh
        elif action == "param":
            node["parameters"][draw(st.sampled_from("abcd"))] = draw(json_values)
        elif action == "move":
            node["position"] = [7, 7]
        elif action == "type":
            node["type"] = draw(st.sampled_from(TYPES))
    if len(b_nodes) > 1 and draw(st.booleans()):
        b_nodes.pop(draw(st.integers(0, len(b_nodes) - 1)))
    extra = draw(nodes())
    for node in extra[: draw(st.integers(0, 2))]:
        if node["name"] not in taken and node.get("id") not in [n.get("id") for n in b_nodes]:
            taken.add(node["name"])
            b_nodes.insert(draw(st.integers(0, len(b_nodes))), node)
    if draw(st.booleans()):
        b_nodes = draw(st.permutations(b_nodes))
    b = draw(structures(base=list(b_nodes)))
    return a, b


def _canonical(structure: dict[str, Any]) -> bytes:
    return canonicalize(structure)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=structures())
def test_diff_of_a_structure_with_itself_is_empty(a: dict[str, Any]) -> None:
    diff = compare_structures(a, copy.deepcopy(a))
    assert diff.empty and diff.structure_empty
    assert_only(diff)
    assert diff.to_json()["empty"] is True
    assert diff.summary() == "no difference"
    rendered(diff)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=edited_pairs())
def test_applying_the_diff_to_a_gives_b(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = pair
    diff = compare_structures(a, b)
    assert _canonical(apply_structural_diff(a, diff)) == _canonical(b)
    assert diff.structure_empty == (_canonical(a) == _canonical(b))
    rendered(diff)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=structures(), b=structures())
def test_applying_the_diff_between_unrelated_structures(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    diff = compare_structures(a, b)
    assert _canonical(apply_structural_diff(a, diff)) == _canonical(b)
    rendered(diff)


@settings(max_examples=300, deadline=None)
@given(a=json_values, b=json_values)
def test_value_changes_are_an_rfc6902_patch(a: Any, b: Any) -> None:
    changes = diff_values(a, b)
    assert canonicalize(apply_changes(a, changes)) == canonicalize(b)
    assert (changes == []) == (canonicalize(a) == canonicalize(b))
    for change in changes:
        assert change.path == "" or change.path.startswith("/")
        as_json = orjson.dumps(change.to_json()).decode()
        assert MARKER_PREFIX not in as_json
        if change.secret is not None:
            assert change.to_json()["kind"] == "secret"


# --------------------------------------------------------------------------------------------
# unit cases
# --------------------------------------------------------------------------------------------


def _node(name: str, node_id: str | None = None, **params: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"name": name, "type": "n8n-nodes-base.set", "parameters": params}
    if node_id is not None:
        node["id"] = node_id
    return node


def _edge(source: str, target: str, out: int = 0) -> dict[str, Any]:
    return {
        "source": source,
        "sourceOutput": out,
        "target": target,
        "targetInput": 0,
        "type": "main",
    }


def _structure(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nodes": nodes, "connections": sorted(edges, key=edge_sort_key), "settings": {}}


def test_json_pointers_escape_and_show_old_and_new() -> None:
    a = {"a/b": {"t~": 1}, "list": [1, 2, 3], "flag": True}
    b = {"a/b": {"t~": 2}, "list": [1, 3], "flag": 1}
    changes = [c.to_json() for c in diff_values(a, b)]
    assert changes == [
        {"path": "/a~1b/t~0", "op": "replace", "old": 1, "new": 2},
        {"path": "/list/1", "op": "remove", "old": 2},
        {"path": "/flag", "op": "replace", "old": True, "new": 1},
    ]


def test_list_insertions_and_removals_keep_the_rest() -> None:
    changes = diff_values([1, 2, 3, 4], [1, 9, 2, 3, 4])
    assert [c.to_json() for c in changes] == [{"path": "/1", "op": "add", "new": 9}]
    changes = diff_values([1, 2, 3, 4], [1, 4])
    assert [(c.op, c.path) for c in changes] == [("remove", "/2"), ("remove", "/1")]


def test_secrets_are_compared_by_marker_and_never_shown() -> None:
    m1, m2 = MARKERS[1], MARKERS[2]
    a = {"key": m1, "auth": f"Bearer {m1}", "same": m1, "prefix": f"Bearer {m2}"}
    b = {"key": m2, "auth": f"Bearer {m2}", "same": m1, "prefix": f"Token {m2}"}
    out = {c["path"]: c for c in (c.to_json() for c in diff_values(a, b))}
    assert out["/key"] == {"path": "/key", "op": "replace", "kind": "secret", "secret": "changed"}
    assert out["/auth"]["secret"] == "changed"
    assert "old" not in out["/auth"]
    assert out["/prefix"] == {
        "path": "/prefix",
        "op": "replace",
        "kind": "secret",
        "secret": "unchanged",
        "old": f"Bearer {SECRET_MASK}",
        "new": f"Token {SECRET_MASK}",
    }
    assert "/same" not in out
    added = diff_values({}, {"h": {"value": m1}})[0].to_json()
    assert added == {"path": "/h", "op": "add", "kind": "secret", "secret": "added",
                     "new": {"value": SECRET_MASK}}  # fmt: skip


def test_matching_by_id_then_name_then_content() -> None:
    a = [_node("A", "1"), _node("B"), _node("C", url="x"), _node("D", "4")]
    b = [_node("A2", "1"), _node("B"), _node("C2", url="x"), _node("D", "9")]
    assert match_nodes(a, b) == [(0, 0, "id"), (1, 1, "name"), (2, 2, "content"), (3, 3, "name")]


def test_rename_by_id_is_a_rename_and_not_a_rewire() -> None:
    a = _structure([_node("A", "1"), _node("B", "2")], [_edge("A", "B")])
    b = _structure([_node("A", "1"), _node("Bee", "2")], [_edge("A", "Bee")])
    diff = compare_structures(a, b)
    assert_only(diff, nodes_renamed=1)
    assert diff.to_json()["nodesRenamed"] == [
        {"from": "B", "to": "Bee", "nodeId": "2", "matchedBy": "id"}
    ]


def test_rename_without_ids_is_found_by_content() -> None:
    a = _structure([_node("A"), _node("B", url="u")], [_edge("A", "B")])
    b = _structure([_node("A"), _node("Bee", url="u")], [_edge("A", "Bee")])
    diff = compare_structures(a, b)
    assert_only(diff, nodes_renamed=1)
    assert diff.nodes_renamed[0].matched_by == "content"


def test_rename_and_edit_together() -> None:
    a = _structure([_node("A", "1", url="u")], [])
    b = _structure([_node("Z", "1", url="v")], [])
    diff = compare_structures(a, b)
    assert_only(diff, nodes_renamed=1, nodes_modified=1)
    mod = diff.to_json()["nodesModified"][0]
    assert mod["previousName"] == "A"
    assert mod["fieldsChanged"] == ["parameters"]
    assert mod["changes"] == [{"path": "/parameters/url", "op": "replace", "old": "u", "new": "v"}]


def test_reordered_nodes_are_reported_and_rebuilt() -> None:
    a = _structure([_node("A", "1"), _node("B", "2"), _node("C", "3")], [])
    b = _structure([_node("C", "3"), _node("New", "4"), _node("A", "1"), _node("B", "2")], [])
    diff = compare_structures(a, b)
    assert diff.node_order == (2, -1, 0, 1)
    assert diff.to_json()["nodeOrder"] == ["C", "New", "A", "B"]
    assert apply_structural_diff(a, diff) == b


def test_trigger_and_credential_views() -> None:
    hook = {
        "id": "t",
        "name": "Hook",
        "type": "n8n-nodes-base.webhook",
        "parameters": {"path": "a"},
    }
    http = {
        "id": "h",
        "name": "HTTP",
        "type": "n8n-nodes-base.httpRequest",
        "parameters": {},
        "credentials": {"httpHeaderAuth": {"id": "1", "name": "Old"}},
    }
    b_hook = {**hook, "parameters": {"path": "b"}, "position": [1, 1]}
    b_http = {**http, "credentials": {"httpHeaderAuth": {"id": "2", "name": "New"}}}
    diff = compare_structures(_structure([hook, http], []), _structure([b_hook, b_http], []))
    assert_only(diff, nodes_modified=2, triggers_changed=1, credentials_changed=1)
    assert diff.to_json()["triggersChanged"] == [
        {"change": "modified", "node": "Hook", "nodeId": "t", "kind": "webhook",
         "fieldsChanged": ["parameters"]}
    ]  # fmt: skip
    assert diff.to_json()["credentialsChanged"] == [
        {
            "node": "HTTP",
            "nodeId": "h",
            "credentialType": "httpHeaderAuth",
            "change": "swapped",
            "old": {"id": "1", "name": "Old"},
            "new": {"id": "2", "name": "New"},
        }
    ]


def test_apply_changes_refuses_removing_the_root() -> None:
    with pytest.raises(InvalidInput):
        apply_changes({}, [Change("", "remove", old={})])


# --------------------------------------------------------------------------------------------
# scripted edits over corpus workflows
# --------------------------------------------------------------------------------------------

SANITIZER = Sanitizer(HMAC_KEY)
CORPUS_SAMPLE = WORKFLOWS[::6]


def _raw(path: Any) -> dict[str, Any]:
    return unwrap_workflow(load_corpus(path))


def _is_trigger(node: dict[str, Any]) -> bool:
    return trigger_kind(node["type"]) is not None


def _targets(wf: dict[str, Any]) -> list[tuple[str, str, int, dict[str, Any]]]:
    out = []
    for source, outputs in (wf.get("connections") or {}).items():
        for kind, slots in (outputs or {}).items():
            for slot in slots or []:
                for target in slot or []:
                    if target is not None:
                        out.append((source, kind, 0, target))
    return out


def _rename(wf: dict[str, Any], old: str, new: str) -> None:
    for node in wf["nodes"]:
        if node["name"] == old:
            node["name"] = new
    conns = wf.get("connections") or {}
    if old in conns:
        conns[new] = conns.pop(old)
    for _, _, _, target in _targets(wf):
        if target.get("node") == old:
            target["node"] = new


def _plain_param(node: dict[str, Any]) -> str | None:
    for key, value in (node.get("parameters") or {}).items():
        if (
            isinstance(value, str)
            and value
            and not SANITIZER.is_secret_key(key)
            and SANITIZER.sanitize({key: value + " (edited)"}) == {key: value + " (edited)"}
            and SANITIZER.sanitize({key: value}) == {key: value}
        ):
            return str(key)
    return None


class Pair:
    """Capture ``a`` and ``b`` as two executions of one workflow and diff them."""

    def __init__(self, path: Any) -> None:
        self.a = _raw(path)
        self.b = copy.deepcopy(self.a)
        self.archive = Archive(MemoryStore(), SANITIZER)

    def diff(self) -> SnapshotDiff:
        self.archive.capture_snapshot(execution_id="ex-a", workflow=self.a, workflow_id="wf")
        self.archive.capture_snapshot(execution_id="ex-b", workflow=self.b, workflow_id="wf")
        diff = compare_executions(self.archive, "ex-a", "ex-b")
        sa = self.archive.get_snapshot("ex-a").structure()
        sb = self.archive.get_snapshot("ex-b").structure()
        assert canonicalize(apply_structural_diff(sa, diff)) == canonicalize(sb)
        rendered(diff)
        return diff

    def edges(self, which: str) -> list[dict[str, Any]]:
        return list(self.archive.get_snapshot(which).connections_snapshot)


def _candidates(pair: Pair) -> list[dict[str, Any]]:
    return [n for n in pair.b["nodes"] if not _is_trigger(n)]


@pytest.mark.parametrize("path", CORPUS_SAMPLE, ids=lambda p: p.stem[:40])
def test_scripted_edits_report_exactly_the_edit(path: Any) -> None:
    edits: list[Callable[[Any], None]] = [
        _parameter_change,
        _node_rename,
        _node_add,
        _node_remove,
        _connection_rewire,
        _credential_swap,
        _secret_rotation,
        _settings_change,
    ]
    for edit in edits:
        edit(path)


def _parameter_change(path: Any) -> None:
    pair = Pair(path)
    for node in _candidates(pair):
        key = _plain_param(node)
        if key is not None:
            old = node["parameters"][key]
            node["parameters"][key] = old + " (edited)"
            break
    else:
        return
    diff = pair.diff()
    assert_only(diff, nodes_modified=1)
    mod = diff.nodes_modified[0]
    assert mod.node == node["name"]
    assert mod.fields_changed == ("parameters",)
    path_ = "/parameters/" + key.replace("~", "~0").replace("/", "~1")
    assert [c.to_json() for c in mod.changes] == [
        {"path": path_, "op": "replace", "old": old, "new": old + " (edited)"}
    ]


def _node_rename(path: Any) -> None:
    pair = Pair(path)
    old = pair.b["nodes"][-1]["name"]
    _rename(pair.b, old, old + " (renamed)")
    diff = pair.diff()
    assert_only(diff, nodes_renamed=1)
    assert (diff.nodes_renamed[0].old_name, diff.nodes_renamed[0].new_name) == (
        old,
        old + " (renamed)",
    )


def _node_add(path: Any) -> None:
    pair = Pair(path)
    source = pair.b["nodes"][0]["name"]
    added: dict[str, Any] = {
        "name": "Added NoOp",
        "type": "n8n-nodes-base.noOp",
        "typeVersion": 1,
        "position": [999, 999],
        "parameters": {},
    }
    if all("id" in n for n in pair.b["nodes"]):
        added["id"] = "added-node-id"
    pair.b["nodes"].append(added)
    conns = pair.b.setdefault("connections", {})
    slots = conns.setdefault(source, {}).setdefault("main", [])
    if not slots:
        slots.append([])
    if slots[0] is None:
        slots[0] = []
    slots[0].append({"node": "Added NoOp", "type": "main", "index": 0})
    diff = pair.diff()
    assert_only(diff, nodes_added=1, connections_added=1)
    assert diff.to_json()["nodesAdded"] == ["Added NoOp"]
    assert dict(diff.connections_added[0]) == {
        "source": source,
        "sourceOutput": 0,
        "target": "Added NoOp",
        "targetInput": 0,
        "type": "main",
    }


def _node_remove(path: Any) -> None:
    pair = Pair(path)
    candidates = _candidates(pair)
    if not candidates:
        return
    gone = candidates[-1]["name"]
    pair.b["nodes"] = [n for n in pair.b["nodes"] if n["name"] != gone]
    conns = pair.b.get("connections") or {}
    conns.pop(gone, None)
    for outputs in conns.values():
        for slots in (outputs or {}).values():
            for slot in slots or []:
                if slot:
                    slot[:] = [t for t in slot if t is None or t.get("node") != gone]
    pair.archive.capture_snapshot(execution_id="ex-a", workflow=pair.a, workflow_id="wf")
    touching = [e for e in pair.edges("ex-a") if gone in (e["source"], e["target"])]
    diff = pair.diff()
    assert_only(diff, nodes_removed=1, connections_removed=len(touching))
    assert diff.to_json()["nodesRemoved"] == [gone]
    assert [dict(e) for e in diff.connections_removed] == touching


def _connection_rewire(path: Any) -> None:
    pair = Pair(path)
    names = [n["name"] for n in pair.b["nodes"]]
    for source, _, _, target in _targets(pair.b):
        if target.get("node") not in names:
            continue
        existing = {t.get("node") for s, _, _, t in _targets(pair.b) if s == source}
        others = [n for n in names if n not in existing and n != source]
        if others:
            old_target, target["node"] = target["node"], others[0]
            break
    else:
        return
    diff = pair.diff()
    assert_only(diff, connections_added=1, connections_removed=1)
    assert diff.connections_removed[0]["target"] == old_target
    assert diff.connections_added[0]["target"] == others[0]
    assert diff.connections_added[0]["source"] == diff.connections_removed[0]["source"] == source


def _credential_swap(path: Any) -> None:
    pair = Pair(path)
    plain = [i for i, n in enumerate(pair.b["nodes"]) if not _is_trigger(n)]
    index = plain[0] if plain else 0
    pair.a["nodes"][index]["credentials"] = {"testApi": {"id": "cred-a", "name": "Account A"}}
    pair.b["nodes"][index]["credentials"] = {"testApi": {"id": "cred-b", "name": "Account B"}}
    node = pair.b["nodes"][index]
    diff = pair.diff()
    triggers = 1 if _is_trigger(node) else 0
    assert_only(diff, nodes_modified=1, credentials_changed=1, triggers_changed=triggers)
    assert [c.path for c in diff.nodes_modified[0].changes] == [
        "/credentials/testApi/id",
        "/credentials/testApi/name",
    ]
    raw_id = node.get("id")
    assert diff.to_json()["credentialsChanged"] == [
        {
            "node": node["name"],
            "nodeId": str(raw_id) if raw_id not in (None, "") else None,
            "credentialType": "testApi",
            "change": "swapped",
            "old": {"id": "cred-a", "name": "Account A"},
            "new": {"id": "cred-b", "name": "Account B"},
        }
    ]


OLD_SECRET = "sk-live-4f1c2a9e8b7d6c5a4f3e2d1c"
NEW_SECRET = "sk-live-9a8b7c6d5e4f3a2b1c0d9e8f"


def _secret_rotation(path: Any) -> None:
    pair = Pair(path)
    candidates = [i for i, n in enumerate(pair.b["nodes"]) if not _is_trigger(n)]
    if not candidates:
        return
    index = candidates[0]
    pair.a["nodes"][index].setdefault("parameters", {})["apiKey"] = OLD_SECRET
    pair.b["nodes"][index].setdefault("parameters", {})["apiKey"] = NEW_SECRET
    diff = pair.diff()
    assert_only(diff, nodes_modified=1, secrets_changed=1)
    body = diff.to_json()
    assert body["nodesModified"][0]["changes"] == [
        {"path": "/parameters/apiKey", "op": "replace", "kind": "secret", "secret": "changed"}
    ]
    assert body["secretsChanged"] == [
        {
            "where": "node",
            "path": "/parameters/apiKey",
            "change": "changed",
            "node": pair.b["nodes"][index]["name"],
        }
    ]
    text = rendered(diff)
    assert OLD_SECRET not in text and NEW_SECRET not in text
    assert "4f1c2a9e" not in text and "9a8b7c6d" not in text


def _settings_change(path: Any) -> None:
    pair = Pair(path)
    settings_ = pair.b.setdefault("settings", {}) or {}
    pair.b["settings"] = settings_
    old = settings_.get("timezone")
    settings_["timezone"] = "Pacific/Chatham" if old != "Pacific/Chatham" else "UTC"
    diff = pair.diff()
    assert_only(diff, settings_changed=1)
    change = diff.settings_changed[0].to_json()
    assert change["path"] == "/timezone"
    assert change["new"] == settings_["timezone"]
    assert change["op"] == ("add" if old is None else "replace")


def test_the_corpus_sample_exercises_every_edit() -> None:
    params = sum(
        1
        for p in CORPUS_SAMPLE
        if any(_plain_param(n) for n in _raw(p)["nodes"] if not _is_trigger(n))
    )
    rewires = sum(1 for p in CORPUS_SAMPLE if _targets(_raw(p)))
    assert len(CORPUS_SAMPLE) >= 80
    assert params >= len(CORPUS_SAMPLE) // 2
    assert rewires >= len(CORPUS_SAMPLE) // 2


def test_identical_corpus_workflows_give_an_empty_diff() -> None:
    archive = Archive(MemoryStore(), SANITIZER)
    for n, path in enumerate(WORKFLOWS[:50]):
        archive.capture_snapshot(execution_id=f"x{n}", workflow=load_corpus(path), workflow_id="w")
        archive.capture_snapshot(execution_id=f"y{n}", workflow=load_corpus(path), workflow_id="w")
        diff = compare_executions(archive, f"x{n}", f"y{n}")
        assert diff.empty, path
        assert diff.to_json()["sameStructure"] is True


# --------------------------------------------------------------------------------------------
# the execution side
# --------------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

WORKFLOW: dict[str, Any] = {
    "id": "wf-x",
    "name": "Orders",
    "nodes": [
        {"id": "t", "name": "Hook", "type": "n8n-nodes-base.webhook", "parameters": {"path": "o"}},
        {"id": "h", "name": "HTTP", "type": "n8n-nodes-base.httpRequest", "parameters": {}},
        {"id": "s", "name": "Slack", "type": "n8n-nodes-base.slack", "parameters": {}},
    ],
    "connections": {
        "Hook": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]},
        "HTTP": {"main": [[{"node": "Slack", "type": "main", "index": 0}]]},
    },
    "settings": {},
}


def _run(
    start: datetime,
    *,
    fail: str | None = None,
    items: int = 1,
    ms: float = 10.0,
    output: Any = None,
) -> dict[str, Any]:
    nodes = []
    for i, name in enumerate(["Hook", "HTTP", "Slack"]):
        if fail is not None and i > ["Hook", "HTTP", "Slack"].index(fail):
            break
        node: dict[str, Any] = {
            "node": name,
            "status": "error" if name == fail else "success",
            "runs": [
                {
                    "index": 0,
                    "executionIndex": i,
                    "status": "error" if name == fail else "success",
                    "startedAt": (start + timedelta(milliseconds=10 * i)).isoformat(),
                    "durationMs": ms,
                    "inputItems": 0 if i == 0 else items,
                    "outputItems": 0 if name == fail else items,
                    "output": [[{"json": output if output is not None else {"n": 1}}]]
                    if name != fail
                    else [[]],
                }
            ],
        }
        if name == fail:
            node["error"] = {
                "message": "401 Unauthorized",
                "name": "NodeApiError",
                "httpCode": "401",
            }
        nodes.append(node)
    return {
        "status": "error" if fail else "success",
        "startedAt": start.isoformat(),
        "finishedAt": (start + timedelta(milliseconds=40)).isoformat(),
        "nodes": nodes,
    }


def _two_runs(first: dict[str, Any], second: dict[str, Any], workflow: Any = None) -> SnapshotDiff:
    archive = Archive(MemoryStore(), SANITIZER)
    archive.capture_snapshot(execution_id="ok-1", workflow=WORKFLOW, created_at=T0, backfill=True)
    archive.capture_snapshot(
        execution_id="run-2",
        workflow=workflow or WORKFLOW,
        created_at=T0 + timedelta(hours=1),
        backfill=True,
    )
    archive.record_final_state("ok-1", first)
    archive.record_final_state("run-2", second)
    return compare_executions(archive, "ok-1", "run-2")


def test_same_structure_and_outcome_is_an_empty_diff() -> None:
    diff = _two_runs(_run(T0), _run(T0 + timedelta(hours=1), ms=12.0))
    assert diff.empty
    body = diff.to_json()
    assert body["empty"] is True
    assert body["execution"]["firstDivergence"] is None
    assert body["execution"]["durationChanges"] == []


def test_first_divergence_names_the_failing_node_with_its_error() -> None:
    diff = _two_runs(_run(T0), _run(T0 + timedelta(hours=1), fail="HTTP"))
    assert not diff.empty
    assert diff.structure_empty
    ex = diff.to_json()["execution"]
    assert ex["status1"] == "success" and ex["status2"] == "error"
    first = ex["firstDivergence"]
    assert first["node"] == "HTTP"
    assert first["nodeId"] == "h"
    assert first["status1"] == "success" and first["status2"] == "error"
    assert first["error"] == {
        "message": "401 Unauthorized",
        "name": "NodeApiError",
        "httpCode": "401",
    }
    assert "status" in first["reasons"] and "error" in first["reasons"]
    assert ex["errorsAppeared"] == [
        {"node": "HTTP", "message": "401 Unauthorized", "name": "NodeApiError", "httpCode": "401"}
    ]
    assert ex["nodeStatusChanges"] == [
        {"node": "HTTP", "nodeId": "h", "old": "success", "new": "error"},
        {"node": "Slack", "nodeId": "s", "old": "success", "new": None},
    ]
    assert "first divergence: HTTP" in diff.summary()
    # and back: the error disappeared
    back = _two_runs(_run(T0, fail="HTTP"), _run(T0))
    assert back.to_json()["execution"]["errorsDisappeared"][0]["node"] == "HTTP"
    assert back.execution is not None and back.execution.first_divergence is not None
    assert back.execution.first_divergence.node == "HTTP"


def test_item_count_output_and_duration_changes() -> None:
    diff = _two_runs(_run(T0), _run(T0, items=3, ms=900.0))
    ex = diff.to_json()["execution"]
    assert [c["node"] for c in ex["itemCountChanges"]] == ["Hook", "HTTP", "Slack"]
    assert ex["itemCountChanges"][1] == {
        "node": "HTTP",
        "inputItems": {"old": 1, "new": 3},
        "outputItems": {"old": 1, "new": 3},
    }
    assert [c["node"] for c in ex["durationChanges"]] == ["Hook", "HTTP", "Slack"]
    assert ex["durationChanges"][0]["deltaMs"] == 890.0
    assert ex["firstDivergence"]["node"] == "Hook"
    assert ex["firstDivergence"]["reasons"] == ["output"]
    only_data = _two_runs(_run(T0), _run(T0, output={"n": 2}))
    assert only_data.execution is not None
    assert only_data.execution.output_changes == ("Hook", "HTTP", "Slack")
    assert not only_data.empty


def test_durations_alone_never_make_a_diff() -> None:
    diff = _two_runs(_run(T0), _run(T0, ms=5000.0))
    assert diff.empty
    assert diff.execution is not None and len(diff.execution.duration_changes) == 3


def test_a_missing_final_state_is_a_difference() -> None:
    archive = Archive(MemoryStore(), SANITIZER)
    archive.capture_snapshot(execution_id="a", workflow=WORKFLOW)
    archive.capture_snapshot(execution_id="b", workflow=WORKFLOW)
    assert compare_executions(archive, "a", "b").execution is None
    assert compare_executions(archive, "a", "b").empty
    archive.record_final_state("b", _run(T0))
    diff = compare_executions(archive, "a", "b")
    assert not diff.empty
    body = diff.to_json()["execution"]
    assert body["finalState1"] is False and body["finalState2"] is True


def test_renamed_nodes_are_followed_into_the_run_data() -> None:
    renamed = copy.deepcopy(WORKFLOW)
    _rename(renamed, "HTTP", "Fetch")
    second = _run(T0)
    second["nodes"][1]["node"] = "Fetch"
    diff = _two_runs(_run(T0), second, workflow=renamed)
    assert_only(diff, nodes_renamed=1)
    assert diff.execution is not None and diff.execution.empty


def test_variables_and_trigger_type_changes() -> None:
    archive = Archive(MemoryStore(), SANITIZER)
    archive.capture_snapshot(
        execution_id="a",
        workflow=WORKFLOW,
        variables={"region": "eu", "apiToken": OLD_SECRET},
        trigger_type="webhook",
        trigger_data={"body": {"id": 1}},
    )
    archive.capture_snapshot(
        execution_id="b",
        workflow=WORKFLOW,
        variables={"region": "us", "apiToken": NEW_SECRET},
        trigger_type="manual",
        trigger_data={"body": {"id": 2}},
    )
    diff = compare_executions(archive, "a", "b")
    assert_only(diff, variables_changed=2, triggers_changed=1, secrets_changed=1)
    body = diff.to_json()
    assert body["variablesChanged"] == [
        {"path": "/apiToken", "op": "replace", "kind": "secret", "secret": "changed"},
        {"path": "/region", "op": "replace", "old": "eu", "new": "us"},
    ]
    assert body["triggersChanged"] == [{"change": "triggerType", "old": "webhook", "new": "manual"}]
    assert body["triggerDataChanged"] is True
    text = rendered(diff)
    assert OLD_SECRET not in text and NEW_SECRET not in text


def test_unknown_executions_are_not_found() -> None:
    archive = Archive(MemoryStore(), SANITIZER)
    archive.capture_snapshot(execution_id="a", workflow=WORKFLOW)
    with pytest.raises(NotFound):
        compare_executions(archive, "a", "nope")
    with pytest.raises(NotFound):
        compare_executions(archive, "nope", "a")
    with pytest.raises(InvalidInput) as info:
        compare_executions(archive, "a", "../x")
    assert info.value.field == "otherExecutionId"


# --------------------------------------------------------------------------------------------
# versions
# --------------------------------------------------------------------------------------------


def test_version_diff_by_semver_seq_and_head() -> None:
    archive = Archive(MemoryStore(), SANITIZER)
    archive.capture_snapshot(execution_id="a", workflow=WORKFLOW)
    changed = copy.deepcopy(WORKFLOW)
    changed["nodes"][1]["parameters"]["url"] = "https://api.example.com"
    archive.capture_snapshot(execution_id="b", workflow=changed)
    commits = archive.versions.history("wf-x")
    assert [c.version for c in commits] == ["1.0.0", "1.0.1"]
    for v1, v2 in (("1.0.0", "1.0.1"), ("1", "2"), ("1", "head"), ("01.0.0", "2")):
        diff = compare_workflow_versions(archive, "wf-x", v1, v2)
        assert_only(diff, nodes_modified=1)
        assert diff.snapshot_id1 == "wf-x@1.0.0" and diff.snapshot_id2 == "wf-x@1.0.1"
        assert diff.execution is None
    assert compare_workflow_versions(archive, "wf-x", "2", "1.0.1").empty
    assert resolve_version(commits, "head", "v1").seq == 2
    for bad in ("1.0", "v1", "1.0.0.0", "", "x" * 40, "-1", "1.0.-1"):
        with pytest.raises(InvalidInput) as info:
            compare_workflow_versions(archive, "wf-x", bad, "1")
        assert info.value.field == "v1"
    for missing in ("3", "9.9.9"):
        with pytest.raises(NotFound):
            compare_workflow_versions(archive, "wf-x", "1", missing)
    with pytest.raises(NotFound):
        compare_workflow_versions(archive, "wf-nope", "1", "2")


# --------------------------------------------------------------------------------------------
# odd but accepted: shared placeholder ids, empty and repeated names
# --------------------------------------------------------------------------------------------


def _n(name: str, node_id: str | None, **params: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"name": name, "type": "n8n-nodes-base.set", "parameters": params}
    if node_id is not None:
        node["id"] = node_id
    return node


def _edge(source: str, target: str) -> dict[str, Any]:
    return {"source": source, "sourceOutput": 0, "target": target, "targetInput": 0, "type": "main"}


def test_a_shared_placeholder_id_does_not_pair_unrelated_nodes() -> None:
    a = {
        "nodes": [_n("Fetch", "[CENSORED]"), _n("Store", "[CENSORED]")],
        "connections": [_edge("Fetch", "Store")],
        "settings": {},
    }
    b = copy.deepcopy(a)
    b["nodes"].reverse()
    b["nodes"][0]["parameters"]["table"] = "t2"  # Store, now first
    assert [(i, j, how) for i, j, how in match_nodes(a["nodes"], b["nodes"])] == [
        (1, 0, "name"),
        (0, 1, "name"),
    ]
    diff = compare_structures(a, b)
    assert [m.node for m in diff.nodes_modified] == ["Store"]
    assert diff.nodes_renamed == () and diff.connections_added == ()
    assert _canonical(apply_structural_diff(a, diff)) == _canonical(b)


def test_an_empty_name_is_a_name_like_any_other() -> None:
    a = {
        "nodes": [_n("Start", "s"), _n("", "e")],
        "connections": [_edge("Start", "")],
        "settings": {},
    }
    b = copy.deepcopy(a)
    b["nodes"][1]["name"] = "Named"
    b["connections"] = [_edge("Start", "Named")]
    diff = compare_structures(a, b)
    assert [(r.old_name, r.new_name) for r in diff.nodes_renamed] == [("", "Named")]
    assert diff.connections_added == () and diff.connections_removed == ()
    assert _canonical(apply_structural_diff(a, diff)) == _canonical(b)


def test_nodes_sharing_a_name_pair_up_in_order() -> None:
    a = {"nodes": [_n("Function", None, v=1), _n("Function", None, v=2)], "connections": []}
    b = {"nodes": [_n("Function", None, v=1), _n("Function", None, v=3)], "connections": []}
    assert match_nodes(a["nodes"], b["nodes"]) == [(0, 0, "name"), (1, 1, "name")]
    diff = compare_structures({**a, "settings": {}}, {**b, "settings": {}})
    assert [(m.index1, m.index2) for m in diff.nodes_modified] == [(1, 1)]


ODD_NAMES = ["", "Function", "Set", "Reply"]


@st.composite
def odd_structures(draw: st.DrawFn) -> dict[str, Any]:
    node_list = []
    for _ in range(draw(st.integers(1, 5))):
        node = _n(draw(st.sampled_from(ODD_NAMES)), None, v=draw(st.integers(0, 2)))
        node_id = draw(st.sampled_from([None, "[CENSORED]", "REPLACE_WITH_ID", "u1", "u2"]))
        if node_id is not None:
            node["id"] = node_id
        node_list.append(node)
    return draw(structures(base=node_list))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=odd_structures(), b=odd_structures())
def test_odd_structures_diff_and_apply_without_a_crash(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    """Shared ids, empty and repeated names (as n8n accepts them): the diff rebuilds ``b``."""
    diff = compare_structures(a, b)
    assert _canonical(apply_structural_diff(a, diff)) == _canonical(b)
    assert compare_structures(a, copy.deepcopy(a)).structure_empty
    rendered(diff)
