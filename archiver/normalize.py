"""Turn an n8n-style workflow, in any of its real published shapes, into one normal form.

Accepted shapes (see ``docs/storage-format.md`` and the design note ``n8n-formats.md``): a workflow object;
a JSON array holding exactly one workflow (n8n's CLI export); ``{"workflow": {...}}`` wrappers, even
nested; numeric workflow ids; ``active`` as a string; tags as objects or strings; nodes without ids
or positions; credentials as ``{type: {id, name}}``, a plain name string, or an empty string;
connections keyed by source node name with ``main``/``error``/``ai_*`` outputs, ``null`` or empty
output slots, and sources or targets that name no node (kept, and reported as dangling).

The normal form separates the *structure* that is hashed and versioned — ``nodes``, ``connections``
(an edge list), ``settings`` — from metadata (name, active, tags, pinData ...) that is stored with the
execution but does not define the version.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from archiver.errors import MalformedWorkflow
from archiver.lru import SizedLRU

__all__ = [
    "MAX_WARNINGS",
    "Edge",
    "NormalizedWorkflow",
    "credential_refs",
    "edge_sort_key",
    "node_key",
    "node_keys",
    "normalize_workflow",
    "shared_ids",
    "unwrap_workflow",
]

Edge = dict[str, Any]  # {source, sourceOutput, target, targetInput, type[, targetType]}

_MAX_NODES = 10_000
_MAX_EDGES = 100_000


@dataclass(frozen=True, slots=True)
class NormalizedWorkflow:
    """A workflow in normal form. ``nodes``/``connections``/``settings`` are the hashed structure."""

    nodes: list[dict[str, Any]]
    connections: list[Edge]
    settings: dict[str, Any]
    workflow_id: str | None = None
    name: str | None = None
    description: str | None = None
    active: bool | None = None
    tags: list[str] = field(default_factory=list)
    version_id: str | None = None
    pin_data: dict[str, Any] | None = None
    node_identity: str = "id"  # "id", "name" or "mixed": what node identity rests on
    dangling_edges: list[Edge] = field(default_factory=list)
    # What is odd but accepted (n8n imports and runs it): ``{code, field, message}`` items.
    warnings: list[dict[str, str]] = field(default_factory=list)

    def structure(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "connections": self.connections, "settings": self.settings}


def unwrap_workflow(document: Any) -> dict[str, Any]:
    """Find the workflow object inside a published document (array, wrapper, or plain)."""
    current = document
    for _ in range(4):
        if isinstance(current, list):
            if len(current) != 1:
                raise MalformedWorkflow(
                    f"a JSON array must hold exactly one workflow, this one holds {len(current)}",
                    field="workflow",
                )
            current = current[0]
            continue
        if (
            isinstance(current, dict)
            and "nodes" not in current
            and isinstance(current.get("workflow"), dict | list)
        ):
            current = current["workflow"]
            continue
        break
    if not isinstance(current, dict):
        raise MalformedWorkflow("a workflow must be a JSON object", field="workflow")
    return current


def node_key(node: Mapping[str, Any]) -> str:
    """A node's identity alone: its id where present, else its name. Within a workflow, use
    ``node_keys``: ids can collide (placeholder ids such as ``[CENSORED]``) and names too."""
    node_id = node.get("id")
    if isinstance(node_id, str) and node_id:
        return "id:" + node_id
    return "name:" + str(node.get("name"))


def shared_ids(nodes: Sequence[Mapping[str, Any]]) -> set[str]:
    """The ids that several of ``nodes`` hold (placeholders such as ``[CENSORED]``)."""
    seen: set[str] = set()
    shared: set[str] = set()
    for node in nodes:
        node_id = node.get("id")
        if isinstance(node_id, str) and node_id:
            if node_id in seen:
                shared.add(node_id)
            seen.add(node_id)
    return shared


def node_keys(nodes: Sequence[Mapping[str, Any]], also_shared: Collection[str] = ()) -> list[str]:
    """One distinct identity per node of a workflow, in order.

    ``id:<id>`` for an id no other node of the list holds (nor is in ``also_shared``: pass the
    ``shared_ids`` of the structure compared with, so both sides key a node alike); otherwise
    (no id, or a shared id) ``name:<name>``; a name held by several such nodes gets ``#2``,
    ``#3`` ... for its second, third ... holder. So nodes whose ids collide are matched by name.
    """
    shared = shared_ids(nodes).union(also_shared)
    keys: list[str] = []
    taken: set[str] = set()
    for node in nodes:
        node_id = node.get("id")
        if isinstance(node_id, str) and node_id and node_id not in shared:
            key = "id:" + node_id
        else:
            key = base = "name:" + str(node.get("name"))
            n = 1
            while key in taken:
                n += 1
                key = f"{base}#{n}"
        taken.add(key)
        keys.append(key)
    return keys


def edge_sort_key(edge: Edge) -> tuple[str, str, int, str, int, str]:
    return (
        edge["source"],
        edge["type"],
        edge["sourceOutput"],
        edge["target"],
        edge["targetInput"],
        edge.get("targetType", ""),
    )


def credential_refs(node: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """A node's credentials as ``{type: {"id": ..., "name": ...}}`` references; values dropped."""
    raw = node.get("credentials")
    if raw is None or raw == "" or raw == {}:
        return {}
    if not isinstance(raw, dict):
        raise MalformedWorkflow("credentials must be an object", field=f"{where}.credentials")
    refs: dict[str, dict[str, Any]] = {}
    for cred_type, ref in raw.items():
        entry: dict[str, Any] = {}
        if isinstance(ref, dict):
            ref_id = ref.get("id")
            if isinstance(ref_id, int) and not isinstance(ref_id, bool):
                ref_id = str(ref_id)
            if isinstance(ref_id, str) and ref_id:
                entry["id"] = ref_id
            ref_name = ref.get("name")
            if isinstance(ref_name, str) and ref_name:
                entry["name"] = ref_name
        elif isinstance(ref, str):
            if ref:
                entry["name"] = ref
        elif ref is not None:
            raise MalformedWorkflow(
                "a credential reference must be an object or a name",
                field=f"{where}.credentials.{cred_type}",
            )
        refs[str(cred_type)] = entry
    return refs


def _as_bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise MalformedWorkflow("must be a boolean", field=where)


def _as_id(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedWorkflow("must be a string or a number", field=where)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    raise MalformedWorkflow("must be a string or a number", field=where)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))
    )


def _is_position(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))


def _normalize_node(raw: Any, index: int) -> dict[str, Any]:
    # Every check has a fast path for plain dict/str/int/float values; error paths (and the field
    # names they report) are only built when a check fails.
    if type(raw) is not dict and not isinstance(raw, dict):
        raise MalformedWorkflow("a node must be an object", field=f"nodes[{index}]")
    name = raw.get("name")
    if type(name) is not str and not isinstance(name, str):
        raise MalformedWorkflow("a node needs a string name", field=f"nodes[{index}].name")
    node_type = raw.get("type")
    if (type(node_type) is not str and not isinstance(node_type, str)) or not node_type:
        raise MalformedWorkflow(
            "a node needs a non-empty string type", field=f"nodes[{index}].type"
        )
    node = dict(raw)
    node_id = raw.get("id")
    if type(node_id) is not str or not node_id:
        node_id = _as_id(node_id, f"nodes[{index}].id")
        if node_id is None:
            node.pop("id", None)
        else:
            node["id"] = node_id
    if "typeVersion" in node:
        version = node["typeVersion"]
        kind = type(version)
        if not (kind is int or (kind is float and version - version == 0.0)) and not _is_number(
            version
        ):
            raise MalformedWorkflow(
                "typeVersion must be a number", field=f"nodes[{index}].typeVersion"
            )
    position = node.get("position")
    if position is not None:
        if type(position) is list and len(position) == 2:
            x, y = position
            kind = type(x)
            ok = kind is int or (kind is float and x - x == 0.0)
            kind = type(y)
            ok = ok and (kind is int or (kind is float and y - y == 0.0))
        else:
            ok = False
        if not ok and not _is_position(position):
            raise MalformedWorkflow(
                "position must be [x, y] numbers", field=f"nodes[{index}].position"
            )
    parameters = node.get("parameters")
    if parameters is None:
        node["parameters"] = {}
    elif type(parameters) is not dict and not isinstance(parameters, dict):
        raise MalformedWorkflow("parameters must be an object", field=f"nodes[{index}].parameters")
    if "credentials" in node:
        refs = credential_refs(raw, f"nodes[{index}]")
        if refs:
            node["credentials"] = refs
        else:
            node.pop("credentials")
    if "disabled" in node and type(node["disabled"]) is not bool:
        node["disabled"] = _as_bool(node["disabled"], f"nodes[{index}].disabled")
    return node


def _str(value: str) -> str:
    """``value`` as an exact str (a subclass of str is copied)."""
    return value if type(value) is str else str.__str__(value)


def _position(items: Sequence[Any], item: Any) -> int:
    """Where ``item`` is in ``items`` (for an error message)."""
    return next(i for i, x in enumerate(items) if x is item)


# orjson bytes as memo keys: types orjson prints but normalize refuses or converts first
# (datetimes, dataclasses, subclasses) are not looked up.
_MEMO_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


# Normalized edge lists (as orjson bytes) by the SHA-256 of the connections' orjson bytes. A
# workflow's connections rarely change between its versions and never between its runs; building
# and sorting the edges is half of normalize for a big workflow (0.28 ms for 399 edges), a hit a
# serialization, a hash and a parse (0.13 ms). Bytes, not trees (a full garbage collection would
# traverse trees).
_EDGE_MEMO: SizedLRU[bytes, bytes] = SizedLRU(8 * 1024 * 1024, lambda edges: len(edges) + 100)


def _normalize_connections(raw: Any, node_names: set[str]) -> tuple[list[Edge], list[Edge]]:
    """The edge list, sorted and without duplicates, and the edges that name no node.

    Edges hold exact str and int values (``canonicalize`` is told so: see archiver.capture).
    Connections seen before are answered from ``_EDGE_MEMO`` (a fresh list each time).
    """
    if raw is None:
        return [], []
    key = None
    if type(raw) is dict:
        try:
            key = hashlib.sha256(orjson.dumps(raw, option=_MEMO_OPTIONS)).digest()
        except TypeError:  # not plain JSON (or an integer beyond 64 bits): no memo
            key = None
        else:
            found = _EDGE_MEMO.get(key)
            if found is not None:
                return _with_dangling(orjson.loads(found), node_names)
    ordered = _build_edges(raw)
    if key is not None:
        with contextlib.suppress(TypeError):  # an index beyond 64 bits
            _EDGE_MEMO.put(key, orjson.dumps(ordered))
    return _with_dangling(ordered, node_names)


def _with_dangling(ordered: list[Edge], node_names: set[str]) -> tuple[list[Edge], list[Edge]]:
    dangling = [
        e for e in ordered if e["source"] not in node_names or e["target"] not in node_names
    ]
    return ordered, dangling


def _build_edges(raw: Any) -> list[Edge]:
    if not isinstance(raw, dict):
        raise MalformedWorkflow(
            "connections must be an object keyed by node name", field="connections"
        )
    # Equal edges listed twice are one edge: keyed by ``edge_sort_key``, the last one kept.
    unique: dict[tuple[str, str, int, str, int, str], Edge] = {}
    count = 0
    for source, outputs in raw.items():
        if outputs is None:
            continue
        if type(outputs) is not dict and not isinstance(outputs, dict):
            raise MalformedWorkflow(
                "must be an object of output types", field=f"connections.{source}"
            )
        src = source if type(source) is str else _str(str(source))
        for out_type, slots in outputs.items():
            if slots is None:
                continue
            if type(slots) is not list and not isinstance(slots, list | tuple):
                raise MalformedWorkflow(
                    "must be a list of output slots", field=f"connections.{source}.{out_type}"
                )
            kind = out_type if type(out_type) is str else _str(str(out_type))
            for slot_index, slot in enumerate(slots):
                if slot is None:
                    continue
                if type(slot) is not list and not isinstance(slot, list | tuple):
                    raise MalformedWorkflow(
                        "an output slot must be a list",
                        field=f"connections.{source}.{out_type}[{slot_index}]",
                    )
                for target in slot:
                    if type(target) is dict:  # the common edge, checked and built at once
                        get = target.get
                        target_node = get("node")
                        target_input = get("index", 0)
                        target_type = get("type", out_type)
                        if (
                            type(target_node) is str
                            and type(target_input) is int
                            and type(target_type) is str
                            and target_type == out_type
                        ):
                            unique[(src, kind, slot_index, target_node, target_input, "")] = {
                                "source": src,
                                "sourceOutput": slot_index,
                                "target": target_node,
                                "targetInput": target_input,
                                "type": kind,
                            }
                            count += 1
                            if count > _MAX_EDGES:
                                raise MalformedWorkflow(
                                    f"more than {_MAX_EDGES} connections", field="connections"
                                )
                            continue
                    if target is None:
                        continue
                    if type(target) is dict or isinstance(target, dict):
                        target_node = target.get("node")
                    else:
                        target_node = None
                    if type(target_node) is not str:
                        if not isinstance(target_node, str):
                            raise MalformedWorkflow(
                                "a connection needs a target node name",
                                field=f"connections.{source}.{out_type}[{slot_index}]"
                                f"[{_position(slot, target)}]",
                            )
                        target_node = _str(target_node)
                    target_input = target.get("index", 0)
                    if type(target_input) is not int:
                        if isinstance(target_input, str) and target_input.isdigit():
                            # "²" is a digit to str.isdigit but not to int(); so are >4300 digits
                            with contextlib.suppress(ValueError):
                                target_input = int(target_input)
                        if not isinstance(target_input, int) or isinstance(target_input, bool):
                            raise MalformedWorkflow(
                                "index must be an integer",
                                field=f"connections.{source}.{out_type}[{slot_index}]"
                                f"[{_position(slot, target)}].index",
                            )
                        target_input = int.__int__(target_input)
                    edge: Edge = {
                        "source": src,
                        "sourceOutput": slot_index,
                        "target": target_node,
                        "targetInput": target_input,
                        "type": kind,
                    }
                    target_type = target.get("type", out_type)
                    if type(target_type) is str:
                        if target_type == out_type:
                            target_type = ""
                        else:
                            edge["targetType"] = target_type
                    elif isinstance(target_type, str) and target_type != out_type:
                        edge["targetType"] = target_type = _str(target_type)
                    else:
                        target_type = ""
                    unique[(src, kind, slot_index, target_node, target_input, target_type)] = edge
                    count += 1
                    if count > _MAX_EDGES:
                        raise MalformedWorkflow(
                            f"more than {_MAX_EDGES} connections", field="connections"
                        )
    return [unique[k] for k in sorted(unique)]


def normalize_workflow(document: Any) -> NormalizedWorkflow:
    """Validate and normalize; raises MalformedWorkflow naming the offending field."""
    wf = unwrap_workflow(document)
    raw_nodes = wf.get("nodes")
    if not isinstance(raw_nodes, list):
        raise MalformedWorkflow("a workflow needs a 'nodes' list", field="nodes")
    if not raw_nodes:
        raise MalformedWorkflow("a workflow needs at least one node", field="nodes")
    if len(raw_nodes) > _MAX_NODES:
        raise MalformedWorkflow(f"more than {_MAX_NODES} nodes", field="nodes")
    if "connections" not in wf:
        raise MalformedWorkflow("a workflow needs a 'connections' object", field="connections")
    nodes = [_normalize_node(n, i) for i, n in enumerate(raw_nodes)]
    warnings, keyed_by_id = _node_warnings(nodes)
    identity = "id" if keyed_by_id == len(nodes) else ("name" if not keyed_by_id else "mixed")
    names = {n["name"] for n in nodes}
    connections, dangling = _normalize_connections(wf.get("connections"), names)
    for edge in dangling:
        missing = [edge[end] for end in ("source", "target") if edge[end] not in names]
        warnings.add(
            "dangling-connection",
            f"connections.{edge['source']}.{edge['type']}[{edge['sourceOutput']}]",
            "names no node: " + ", ".join(_shown(m) for m in dict.fromkeys(missing)),
        )
    settings = wf.get("settings")
    if settings is None:
        settings = {}
    elif not isinstance(settings, dict):
        raise MalformedWorkflow("settings must be an object", field="settings")
    pin_data = wf.get("pinData")
    if pin_data is not None and not isinstance(pin_data, dict):
        raise MalformedWorkflow("pinData must be an object", field="pinData")
    name = wf.get("name")
    description = wf.get("description")
    return NormalizedWorkflow(
        nodes=nodes,
        connections=connections,
        settings=dict(settings),
        workflow_id=_as_id(wf.get("id"), "id"),
        name=name if isinstance(name, str) else None,
        description=description if isinstance(description, str) else None,
        active=_as_bool(wf.get("active"), "active"),
        tags=_tags(wf.get("tags")),
        version_id=_as_id(wf.get("versionId"), "versionId"),
        pin_data=pin_data or None,
        node_identity=identity,
        dangling_edges=dangling,
        warnings=warnings.result(),
    )


# At most this many warnings are kept; a last ``warnings-truncated`` item says how many more.
MAX_WARNINGS = 100


def _shown(text: str) -> str:
    """A node name or id for a message: quoted, at most 80 characters."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


class _Warnings:
    """Warnings in the order found, at most ``MAX_WARNINGS`` (then one ``warnings-truncated``)."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self.dropped = 0

    def add(self, code: str, where: str, message: str) -> None:
        if len(self.items) < MAX_WARNINGS:
            self.items.append({"code": code, "field": where, "message": message})
        else:
            self.dropped += 1

    def result(self) -> list[dict[str, str]]:
        if not self.dropped:
            return self.items
        more = f"{self.dropped} more warning(s) not listed"
        return [*self.items, {"code": "warnings-truncated", "field": "", "message": more}]


def _indexes(where: list[int]) -> str:
    return ", ".join(map(str, where[:10])) + (" ..." if len(where) > 10 else "")


def _node_warnings(nodes: list[dict[str, Any]]) -> tuple[_Warnings, int]:
    """Duplicate ids, empty names and duplicate names: accepted as n8n accepts them, reported;
    and how many nodes an id identifies (one no other node holds).

    n8n keys nodes by name (connections, run data, ``$('Name')``); ids only tell the editor's
    nodes apart, and its importer keeps the ids an export holds. Placeholder ids such as
    ``[CENSORED]`` or ``REPLACE_WITH_...`` shared by several nodes are therefore harmless to a run.
    """
    warnings = _Warnings()
    ids = [node["id"] for node in nodes if "id" in node]
    names = [node["name"] for node in nodes]
    if len(set(ids)) == len(ids) and len(set(names)) == len(names) and all(names):
        return warnings, len(ids)  # the common case, in C loops
    by_id: dict[str, list[int]] = {}
    by_name: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        node_id = node.get("id")
        if node_id is not None:
            by_id.setdefault(node_id, []).append(index)
        by_name.setdefault(node["name"], []).append(index)
        if not node["name"]:
            warnings.add("empty-node-name", f"nodes[{index}].name", "the node's name is empty")
    for node_id, where in by_id.items():
        if len(where) > 1:
            warnings.add(
                "duplicate-node-id",
                f"nodes[{where[1]}].id",
                f"{len(where)} nodes share the id {_shown(node_id)} (nodes {_indexes(where)}): "
                "they are told apart by name",
            )
    for name, where in by_name.items():
        if len(where) > 1:
            warnings.add(
                "duplicate-node-name",
                f"nodes[{where[1]}].name",
                f"{len(where)} nodes are named {_shown(name)} (nodes {_indexes(where)}): "
                "n8n keys nodes by name, so connections and runs reach only the last of them",
            )
    return warnings, sum(1 for where in by_id.values() if len(where) == 1)


def _tags(raw: Any) -> list[str]:
    if not isinstance(raw, list):
        return []
    tags: list[str] = []
    for tag in raw:
        if isinstance(tag, str):
            tags.append(tag)
        elif isinstance(tag, dict) and isinstance(tag.get("name"), str):
            tags.append(tag["name"])
    return tags
