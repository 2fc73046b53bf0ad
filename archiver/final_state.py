"""The final state of an execution: how a run ended, node by node.

This is the second write-once record of an execution (architecture, invariant 7): the
pre-execution snapshot says *what was going to run*, the final state says *what happened*. The
final state never rewrites the snapshot; it is stored next to it (``layout.result_key``).

Records (frozen, typed, camelCase JSON through ``to_json`` / ``from_json``)::

    FinalState   executionId, status, mode, startedAt, finishedAt, nodes[], error, lastNodeExecuted
    └── NodeState   node (name), nodeId, status (= last run's), runs[], error (= latest error)
        └── NodeRun    index, executionIndex, status, startedAt, durationMs, inputItems,
                       outputItems, error, input, output, outputTypes, source, itemsTruncated
    NodeError    message, name, description, stack, node, httpCode

``parse_final_state`` accepts n8n's own run result (``IRun``, with ``data`` as an object or as n8n's
"flatted" storage string, or just its ``resultData`` / ``runData``) and our plain format; see
``docs/final-state.md``. Everything taken from the payload that may hold user data (items, error
texts) passes through the caller's ``sanitize`` before it is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Self, TypedDict

import orjson

from archiver.errors import IntegrityError, InvalidInput, SanitizationError
from archiver.layout import check_id
from archiver.timeutil import format_ts, parse_ts

__all__ = [
    "EXECUTION_STATUSES",
    "FORMAT_VERSION",
    "MAX_FLATTED_DEPTH",
    "MAX_FLATTED_VALUES",
    "MAX_ITEM_DEPTH",
    "MAX_NODES",
    "MAX_RUNS",
    "NODE_RUN_STATUSES",
    "NON_TERMINAL_STATUSES",
    "FinalState",
    "FinalStateSummary",
    "NodeError",
    "NodeRun",
    "NodeState",
    "decode_flatted",
    "normalize_execution_status",
    "normalize_node_status",
    "parse_final_state",
    "summarize",
]

FORMAT_VERSION: Final = 1

EXECUTION_STATUSES: Final = frozenset(
    {"canceled", "crashed", "error", "new", "running", "success", "unknown", "waiting"}
)
NODE_RUN_STATUSES: Final = frozenset(
    {"success", "error", "canceled", "crashed", "running", "waiting", "skipped", "unknown"}
)

MAX_NODES: Final = 100_000
MAX_RUNS: Final = 100_000  # over all nodes of one execution
MAX_FLATTED_DEPTH: Final = 200
MAX_FLATTED_VALUES: Final = 5_000_000  # values after expanding shared references
MAX_ITEM_DEPTH: Final = 200  # nesting of one kept item, checked before it reaches the sanitizer

#: statuses of a run that has not ended: reported as progress records, never as the write-once
#: final state (an execution that waits is reported again when it ends)
NON_TERMINAL_STATUSES: Final = frozenset({"new", "running", "waiting"})

_FAILED: Final = frozenset({"error", "crashed"})

# Top-level fields each input shape accepts (docs/final-state.md); anything else is refused, so a
# misspelt field is never silently dropped. n8n's own fields are accepted generously: those of
# IRun, IExecutionResponse / IExecutionFlattedResponse, the execution summaries and the public API.
_N8N_EXECUTION_FIELDS: Final = frozenset(
    {
        "id",
        "executionId",
        "finished",
        "mode",
        "retryOf",
        "retrySuccessId",
        "startedAt",
        "stoppedAt",
        "finishedAt",
        "waitTill",
        "workflowId",
        "workflowName",
        "workflowData",
        "workflowVersionId",
        "status",
        "data",
        "createdAt",
        "deletedAt",
        "annotation",
        "customData",
        "jobId",
        "storedAt",
        "scopes",
        "nodeExecutionStatus",
    }
)
# IRunExecutionData's own fields, accepted next to a top-level ``resultData``
_RUN_EXECUTION_DATA_FIELDS: Final = frozenset(
    {
        "startData",
        "resultData",
        "executionData",
        "parentExecution",
        "validateSignature",
        "waitTill",
        "pushRef",
        "manualData",
        "isTestWebhook",
        "version",
    }
)
# IRunExecutionData.resultData's fields, accepted next to a top-level ``runData``
_RESULT_DATA_FIELDS: Final = frozenset(
    {"runData", "pinData", "lastNodeExecuted", "error", "metadata", "redactionInfo"}
)
_PLAIN_FIELDS: Final = frozenset(
    {
        "nodes",
        "status",
        "mode",
        "startedAt",
        "finishedAt",
        "stoppedAt",
        "waitTill",
        "error",
        "lastNodeExecuted",
        "executionId",
    }
)
_IRUN_FIELDS: Final = _N8N_EXECUTION_FIELDS
_RESULT_ONLY_FIELDS: Final = (_N8N_EXECUTION_FIELDS - {"data"}) | _RUN_EXECUTION_DATA_FIELDS
_RUN_ONLY_FIELDS: Final = (_N8N_EXECUTION_FIELDS - {"data"}) | _RESULT_DATA_FIELDS
# an object under ``data`` with one of these (and no ``resultData``) is an n8n execution that
# n8n's REST API wrapped as ``{"data": {...}}``
_WRAPPED_EXECUTION_MARKERS: Final = frozenset(
    {"id", "status", "finished", "mode", "startedAt", "stoppedAt", "workflowId", "data"}
)

# Synonyms seen in engines and hand-written payloads, folded into the two vocabularies.
_EXECUTION_SYNONYMS: Final[Mapping[str, str]] = {
    "cancelled": "canceled",
    "failed": "error",
    "failure": "error",
    "succeeded": "success",
    "successful": "success",
    "completed": "success",
    "complete": "success",
    "finished": "success",
    "done": "success",
    "ok": "success",
    "queued": "new",
    "pending": "new",
    "scheduled": "new",
}
_NODE_SYNONYMS: Final[Mapping[str, str]] = {
    **_EXECUTION_SYNONYMS,
    "new": "waiting",
    "queued": "waiting",
    "pending": "waiting",
    "scheduled": "waiting",
    "disabled": "skipped",
}

_ITEM_KEYS: Final = frozenset({"json", "binary", "pairedItem", "error", "index"})
_BINARY_META_KEYS: Final = ("mimeType", "fileName", "fileSize")

_Sanitizer = Callable[[Any], Any]


# --------------------------------------------------------------------------------------------
# small helpers: paths, types, timestamps
# --------------------------------------------------------------------------------------------


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _idx(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _bad(field: str, what: str) -> InvalidInput:
    return InvalidInput(f"{field} {what}", field=field)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(field, "must be an object")
    return value


def _list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _bad(field, "must be a list")
    return list(value)


def _opt_str(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    return value


def _req_str(data: Mapping[str, Any], key: str, path: str) -> str:
    field = _key(path, key)
    if key not in data or data[key] is None:
        raise _bad(field, "is required")
    value = _opt_str(data[key], field)
    assert value is not None
    return value


def _count(value: object, field: str) -> int:
    if not _is_int(value):
        raise _bad(field, "must be an integer")
    assert isinstance(value, int)
    if value < 0:
        raise _bad(field, "must not be negative")
    return value


def _opt_count(value: object, field: str) -> int | None:
    return None if value is None else _count(value, field)


def _opt_duration(value: object, field: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise _bad(field, "must be a number of milliseconds")
    assert isinstance(value, int | float)
    result = float(value)
    if not math.isfinite(result) or result < 0:
        raise _bad(field, "must be a finite, non-negative number of milliseconds")
    return result


def _timestamp(value: object, field: str) -> datetime | None:
    """RFC 3339 text, epoch milliseconds (seconds below 1e11), or an aware datetime; UTC, ms."""
    return None if value is None else parse_ts(value, field)


def _format_ts(value: datetime) -> str:
    return format_ts(value)


def _opt_ts_json(value: datetime | None) -> str | None:
    return None if value is None else _format_ts(value)


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


# --------------------------------------------------------------------------------------------
# status vocabulary
# --------------------------------------------------------------------------------------------


def normalize_execution_status(value: str) -> str:
    """Fold an engine's execution status into ``EXECUTION_STATUSES`` (unrecognized → unknown)."""
    text = value.strip().lower()
    if text in EXECUTION_STATUSES:
        return text
    return _EXECUTION_SYNONYMS.get(text, "unknown")


def normalize_node_status(value: str) -> str:
    """Fold a node run's status into ``NODE_RUN_STATUSES`` (unrecognized → unknown)."""
    text = value.strip().lower()
    if text in NODE_RUN_STATUSES:
        return text
    return _NODE_SYNONYMS.get(text, "unknown")


def _check_status(value: object, allowed: frozenset[str], field: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _bad(field, "is not a known status")
    return value


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeError:
    """An error as the engine reported it, reduced to the fields worth keeping.

    ``node`` is the failing node's *name* only: n8n puts the whole node (with its parameters)
    there, which is never kept.
    """

    message: str
    name: str | None = None
    description: str | None = None
    stack: str | None = None
    node: str | None = None
    http_code: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        _put(out, "name", self.name)
        _put(out, "description", self.description)
        _put(out, "stack", self.stack)
        _put(out, "node", self.node)
        _put(out, "httpCode", self.http_code)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls._from_json(data, "")

    @classmethod
    def _from_json(cls, data: object, path: str) -> Self:
        data = _mapping(data, path or "error")
        return cls(
            message=_req_str(data, "message", path),
            name=_opt_str(data.get("name"), _key(path, "name")),
            description=_opt_str(data.get("description"), _key(path, "description")),
            stack=_opt_str(data.get("stack"), _key(path, "stack")),
            node=_opt_str(data.get("node"), _key(path, "node")),
            http_code=_opt_str(data.get("httpCode"), _key(path, "httpCode")),
        )


@dataclass(frozen=True, slots=True)
class NodeRun:
    """One run of one node (a node in a loop runs several times).

    ``input`` and ``output`` hold item records ``{"json": ..., "binary"?: {...}, "pairedItem"?}``
    (binary reduced to metadata), already sanitized; ``None`` when items were not kept.
    ``output`` has one list per output slot; ``output_types`` names each slot's connection type
    and is ``None`` when every slot is ``main``. ``input_items`` / ``output_items`` count all
    items, including those dropped by a per-run item limit (then ``items_truncated`` is true).
    """

    index: int
    status: str
    started_at: datetime | None = None
    duration_ms: float | None = None
    input_items: int = 0
    output_items: int = 0
    error: NodeError | None = None
    input: list[Any] | None = None
    output: list[list[Any]] | None = None
    source: tuple[str | None, ...] | None = None
    execution_index: int | None = None
    output_types: tuple[str, ...] | None = None
    items_truncated: bool = False

    def __post_init__(self) -> None:
        _check_status(self.status, NODE_RUN_STATUSES, "status")
        if self.started_at is not None:
            object.__setattr__(self, "started_at", parse_ts(self.started_at, "startedAt"))
        for name, value in (
            ("index", self.index),
            ("inputItems", self.input_items),
            ("outputItems", self.output_items),
        ):
            _count(value, name)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        _put(out, "executionIndex", self.execution_index)
        out["status"] = self.status
        _put(out, "startedAt", _opt_ts_json(self.started_at))
        _put(out, "durationMs", self.duration_ms)
        out["inputItems"] = self.input_items
        out["outputItems"] = self.output_items
        _put(out, "error", None if self.error is None else self.error.to_json())
        _put(out, "source", None if self.source is None else list(self.source))
        _put(out, "input", self.input)
        _put(out, "output", self.output)
        _put(out, "outputTypes", None if self.output_types is None else list(self.output_types))
        if self.items_truncated:
            out["itemsTruncated"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls._from_json(data, "")

    @classmethod
    def _from_json(cls, data: object, path: str) -> Self:
        data = _mapping(data, path or "run")
        if "index" not in data:
            raise _bad(_key(path, "index"), "is required")
        error = data.get("error")
        source = data.get("source")
        output = data.get("output")
        output_types = data.get("outputTypes")
        truncated = data.get("itemsTruncated", False)
        if not isinstance(truncated, bool):
            raise _bad(_key(path, "itemsTruncated"), "must be a boolean")
        return cls(
            index=_count(data["index"], _key(path, "index")),
            execution_index=_opt_count(data.get("executionIndex"), _key(path, "executionIndex")),
            status=_check_status(data.get("status"), NODE_RUN_STATUSES, _key(path, "status")),
            started_at=_timestamp(data.get("startedAt"), _key(path, "startedAt")),
            duration_ms=_opt_duration(data.get("durationMs"), _key(path, "durationMs")),
            input_items=_count(data.get("inputItems", 0), _key(path, "inputItems")),
            output_items=_count(data.get("outputItems", 0), _key(path, "outputItems")),
            error=None if error is None else NodeError._from_json(error, _key(path, "error")),
            source=None if source is None else _stored_source(source, _key(path, "source")),
            input=None if data.get("input") is None else _list(data["input"], _key(path, "input")),
            output=None if output is None else _stored_slots(output, _key(path, "output")),
            output_types=None
            if output_types is None
            else _stored_strs(output_types, _key(path, "outputTypes")),
            items_truncated=truncated,
        )


@dataclass(frozen=True, slots=True)
class NodeState:
    """How one node ended: its runs in order, the last run's status and the latest error."""

    node: str
    status: str
    runs: tuple[NodeRun, ...] = ()
    error: NodeError | None = None
    node_id: str | None = None

    def __post_init__(self) -> None:
        _check_status(self.status, NODE_RUN_STATUSES, "status")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node}
        _put(out, "nodeId", self.node_id)
        out["status"] = self.status
        _put(out, "error", None if self.error is None else self.error.to_json())
        out["runs"] = [run.to_json() for run in self.runs]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls._from_json(data, "")

    @classmethod
    def _from_json(cls, data: object, path: str) -> Self:
        data = _mapping(data, path or "node")
        error = data.get("error")
        runs = _list(data.get("runs", []), _key(path, "runs"))
        return cls(
            node=_req_str(data, "node", path),
            node_id=_opt_str(data.get("nodeId"), _key(path, "nodeId")),
            status=_check_status(data.get("status"), NODE_RUN_STATUSES, _key(path, "status")),
            error=None if error is None else NodeError._from_json(error, _key(path, "error")),
            runs=tuple(
                NodeRun._from_json(run, _idx(_key(path, "runs"), i)) for i, run in enumerate(runs)
            ),
        )


@dataclass(frozen=True, slots=True)
class FinalState:
    """The final state of one execution, a write-once record separate from its snapshot."""

    execution_id: str
    status: str
    mode: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    nodes: tuple[NodeState, ...] = ()
    error: NodeError | None = None
    last_node_executed: str | None = None
    format_version: int = field(default=FORMAT_VERSION)

    def __post_init__(self) -> None:
        _check_status(self.status, EXECUTION_STATUSES, "status")
        if self.format_version != FORMAT_VERSION:
            raise _bad("formatVersion", "is not a supported final-state format version")
        for name, attr in (("startedAt", "started_at"), ("finishedAt", "finished_at")):
            value = getattr(self, attr)
            if value is not None:
                object.__setattr__(self, attr, parse_ts(value, name))

    def node(self, name: str) -> NodeState | None:
        """The state of the node called ``name``, or None."""
        for state in self.nodes:
            if state.node == name:
                return state
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "formatVersion": self.format_version,
            "executionId": self.execution_id,
            "status": self.status,
        }
        _put(out, "mode", self.mode)
        _put(out, "startedAt", _opt_ts_json(self.started_at))
        _put(out, "finishedAt", _opt_ts_json(self.finished_at))
        _put(out, "error", None if self.error is None else self.error.to_json())
        _put(out, "lastNodeExecuted", self.last_node_executed)
        out["nodes"] = [state.to_json() for state in self.nodes]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Read a stored record; an unknown ``formatVersion`` raises IntegrityError."""
        data = _mapping(data, "finalState")
        version = data.get("formatVersion")
        if not _is_int(version):
            raise _bad("formatVersion", "is required and must be an integer")
        if version != FORMAT_VERSION:
            raise IntegrityError("unknown final-state format version")
        error = data.get("error")
        nodes = _list(data.get("nodes", []), "nodes")
        return cls(
            execution_id=_req_str(data, "executionId", ""),
            status=_check_status(data.get("status"), EXECUTION_STATUSES, "status"),
            mode=_opt_str(data.get("mode"), "mode"),
            started_at=_timestamp(data.get("startedAt"), "startedAt"),
            finished_at=_timestamp(data.get("finishedAt"), "finishedAt"),
            error=None if error is None else NodeError._from_json(error, "error"),
            last_node_executed=_opt_str(data.get("lastNodeExecuted"), "lastNodeExecuted"),
            nodes=tuple(NodeState._from_json(n, _idx("nodes", i)) for i, n in enumerate(nodes)),
        )


def _stored_source(value: object, field: str) -> tuple[str | None, ...]:
    return tuple(_opt_str(v, _idx(field, i)) for i, v in enumerate(_list(value, field)))


def _stored_strs(value: object, field: str) -> tuple[str, ...]:
    out: list[str] = []
    for i, v in enumerate(_list(value, field)):
        if not isinstance(v, str):
            raise _bad(_idx(field, i), "must be a string")
        out.append(v)
    return tuple(out)


def _stored_slots(value: object, field: str) -> list[list[Any]]:
    return [_list(slot, _idx(field, i)) for i, slot in enumerate(_list(value, field))]


# --------------------------------------------------------------------------------------------
# summary for an index row
# --------------------------------------------------------------------------------------------


class FinalStateSummary(TypedDict):
    """What an index row needs from a final state (keys as the manifests name them)."""

    status: str
    startedAt: datetime | None
    finishedAt: datetime | None
    durationMs: int | None
    nodeCount: int
    errorCount: int
    failedNodes: list[str]
    firstFailedNode: str | None


def summarize(fs: FinalState) -> FinalStateSummary:
    """Index-row figures: ``errorCount`` counts failed runs (error/crashed) over all nodes;
    ``failedNodes`` are the nodes whose final status is error/crashed, in execution order."""
    duration: int | None = None
    if fs.started_at is not None and fs.finished_at is not None:
        duration = (fs.finished_at - fs.started_at) // timedelta(milliseconds=1)
    failed = [state.node for state in fs.nodes if state.status in _FAILED]
    errors = sum(1 for state in fs.nodes for run in state.runs if run.status in _FAILED)
    return {
        "status": fs.status,
        "startedAt": fs.started_at,
        "finishedAt": fs.finished_at,
        "durationMs": duration,
        "nodeCount": len(fs.nodes),
        "errorCount": errors,
        "failedNodes": failed,
        "firstFailedNode": failed[0] if failed else None,
    }


# --------------------------------------------------------------------------------------------
# flatted (n8n's storage encoding)
# --------------------------------------------------------------------------------------------


class _Flatted:
    """Reviver for the `flatted` encoding (https://github.com/WebReflection/flatted).

    The text is a JSON array, the *table*. ``table[0]`` is the root. Inside objects and arrays of
    the table every string is a reference: a decimal index into the table. A referenced string
    element is the literal string; a referenced object/array is revived in turn (shared
    references become shared Python objects). Numbers, booleans and null stay inline. Objects
    and arrays are never inline in real flatted output, so an inline one is rejected.

    Cycles cannot be represented in JSON and are rejected, as is nesting deeper than
    ``max_depth`` and an expansion (counting shared values each time they are reached) larger
    than ``max_values``.
    """

    __slots__ = ("active", "field", "max_depth", "max_values", "memo", "table")

    def __init__(self, table: list[Any], field: str, max_depth: int, max_values: int) -> None:
        self.table = table
        self.field = field
        self.max_depth = max_depth
        self.max_values = max_values
        self.memo: dict[int, tuple[Any, int]] = {}
        self.active: set[int] = set()

    def fail(self, what: str) -> InvalidInput:
        return InvalidInput(f"{self.field} {what}", field=self.field)

    def root(self, root_keys: frozenset[str] | None) -> Any:
        root = self.table[0]
        if isinstance(root, dict) and root_keys is not None:
            root = {k: v for k, v in root.items() if k in root_keys}
        if isinstance(root, dict | list):
            self.active.add(0)
            value, _ = self.container(root, 1)
            return value
        return root

    def ref(self, token: str, depth: int) -> tuple[Any, int]:
        if not (0 < len(token) <= 10 and token.isascii() and token.isdigit()):
            raise self.fail("is not a valid flatted encoding (bad reference)")
        index = int(token)
        if index >= len(self.table):
            raise self.fail("is not a valid flatted encoding (reference out of range)")
        target = self.table[index]
        if not isinstance(target, dict | list):
            return target, 1
        if index in self.memo:
            return self.memo[index]
        if index in self.active:
            raise self.fail("contains a circular reference, which is not supported")
        self.active.add(index)
        result = self.container(target, depth + 1)
        self.active.discard(index)
        self.memo[index] = result
        return result

    def container(self, value: dict[str, Any] | list[Any], depth: int) -> tuple[Any, int]:
        if depth > self.max_depth:
            raise self.fail(f"is nested deeper than {self.max_depth} levels")
        children = value.values() if isinstance(value, dict) else value
        revived: list[Any] = []
        size = 1
        for child in children:
            if isinstance(child, str):
                item, child_size = self.ref(child, depth)
            elif isinstance(child, dict | list):
                raise self.fail("is not a valid flatted encoding (inline container)")
            else:
                item, child_size = child, 1
            size += child_size
            if size > self.max_values:
                raise self.fail(f"expands to more than {self.max_values} values")
            revived.append(item)
        if isinstance(value, dict):
            return dict(zip(value.keys(), revived, strict=True)), size
        return revived, size


def _revive_flatted(
    table: list[Any],
    field: str,
    *,
    max_depth: int = MAX_FLATTED_DEPTH,
    max_values: int = MAX_FLATTED_VALUES,
    root_keys: frozenset[str] | None = None,
) -> Any:
    if not table:
        raise InvalidInput(f"{field} is not a valid flatted encoding (empty)", field=field)
    return _Flatted(table, field, max_depth, max_values).root(root_keys)


def decode_flatted(
    text: str | bytes,
    *,
    field: str = "data",
    max_depth: int = MAX_FLATTED_DEPTH,
    max_values: int = MAX_FLATTED_VALUES,
) -> Any:
    """Decode n8n's "flatted" storage string into plain JSON values.

    ``'[{"a":"1","b":"2"},"x",[3]]'`` → ``{"a": "x", "b": [3]}``. Raises InvalidInput (naming
    ``field``) for invalid JSON, a table that is not a non-empty array, bad references, cycles,
    nesting deeper than ``max_depth`` or an expansion of more than ``max_values`` values.
    """
    try:
        table = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"{field} is not valid JSON", field=field) from err
    if not isinstance(table, list):
        raise InvalidInput(f"{field} is not a valid flatted encoding (not an array)", field=field)
    return _revive_flatted(table, field, max_depth=max_depth, max_values=max_values)


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


class _Ctx:
    __slots__ = ("keep_items", "max_items", "runs", "sanitize")

    def __init__(self, sanitize: _Sanitizer, keep_items: bool, max_items: int | None) -> None:
        self.sanitize = sanitize
        self.keep_items = keep_items
        self.max_items = max_items
        self.runs = 0

    def count_run(self, field: str) -> None:
        self.runs += 1
        if self.runs > MAX_RUNS:
            raise _bad(field, f"holds more than {MAX_RUNS} node runs")

    def text(self, value: object, field: str) -> str | None:
        """An optional user-data string, sanitized."""
        value = _opt_str(value, field)
        if value is None:
            return None
        cleaned = self.sanitize(value)
        if not isinstance(cleaned, str):
            raise SanitizationError(f"the sanitizer did not return a string for {field}")
        return cleaned


@dataclass(slots=True)
class _Items:
    count: int = 0
    kept: int = 0
    slots: list[list[Any]] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    truncated: bool = False


def _error(value: object, field: str, ctx: _Ctx) -> NodeError | None:
    if value is None:
        return None
    if isinstance(value, str):
        return NodeError(message=ctx.text(value, field) or "")
    data = _mapping(value, field)
    node = data.get("node")
    node_name: str | None
    if node is None or isinstance(node, str):
        node_name = node
    elif isinstance(node, Mapping):
        node_name = _opt_str(node.get("name"), _key(field, "node.name"))
    else:
        raise _bad(_key(field, "node"), "must be a node name or a node object")
    http_code = data.get("httpCode")
    if _is_int(http_code):
        http_code = str(http_code)
    return NodeError(
        message=ctx.text(data.get("message"), _key(field, "message")) or "",
        name=ctx.text(data.get("name"), _key(field, "name")),
        description=ctx.text(data.get("description"), _key(field, "description")),
        stack=ctx.text(data.get("stack"), _key(field, "stack")),
        node=node_name,
        http_code=_opt_str(http_code, _key(field, "httpCode")),
    )


def _binary_meta(value: object, field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prop, entry in _mapping(value, field).items():
        entry_field = _key(field, prop)
        if entry is None:
            continue
        entry = _mapping(entry, entry_field)
        meta: dict[str, Any] = {}
        for key in _BINARY_META_KEYS:
            item = entry.get(key)
            if item is None:
                continue
            if not (isinstance(item, str) or (key == "fileSize" and _is_number(item))):
                raise _bad(_key(entry_field, key), "has the wrong type")
            meta[key] = item
        out[prop] = meta
    return out


def _check_depth(value: object, field: str) -> None:
    """Refuse items nested deeper than MAX_ITEM_DEPTH (iteratively: no recursion here)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_ITEM_DEPTH:
            raise _bad(field, f"is nested deeper than {MAX_ITEM_DEPTH} levels")
        if isinstance(current, Mapping):
            stack.extend((v, depth + 1) for v in current.values() if isinstance(v, Mapping | list))
        elif isinstance(current, list):
            stack.extend((v, depth + 1) for v in current if isinstance(v, Mapping | list))


def _item(value: object, field: str, ctx: _Ctx, *, plain: bool) -> dict[str, Any]:
    """Reduce one item to ``{"json", "binary"?, "pairedItem"?}`` and sanitize it."""
    if plain and not (
        isinstance(value, Mapping) and "json" in value and value.keys() <= _ITEM_KEYS
    ):
        record: dict[str, Any] = {"json": value}
    else:
        data = _mapping(value, field)
        record = {"json": data.get("json", {})}
        if data.get("binary") is not None:
            record["binary"] = _binary_meta(data["binary"], _key(field, "binary"))
        if data.get("pairedItem") is not None:
            record["pairedItem"] = data["pairedItem"]
    _check_depth(record, field)
    cleaned = ctx.sanitize(record)
    if not isinstance(cleaned, dict):
        raise SanitizationError(f"the sanitizer did not return an object for {field}")
    return cleaned


def _read_slot(
    value: object, ctype: str, field: str, ctx: _Ctx, acc: _Items, *, plain: bool
) -> None:
    items = [] if value is None else _list(value, field)
    kept: list[Any] = []
    for ii, item in enumerate(items):
        acc.count += 1
        if not ctx.keep_items:
            continue
        if ctx.max_items is not None and acc.kept >= ctx.max_items:
            acc.truncated = True
            if not plain:
                _mapping(item, _idx(field, ii))
            continue
        kept.append(_item(item, _idx(field, ii), ctx, plain=plain))
        acc.kept += 1
    acc.slots.append(kept)
    acc.types.append(ctype)


def _read_slots(
    slots: object, ctype: str, field: str, ctx: _Ctx, acc: _Items, *, plain: bool
) -> None:
    for si, slot in enumerate(_list(slots, field)):
        _read_slot(slot, ctype, _idx(field, si), ctx, acc, plain=plain)


def _read_connections(value: object, field: str, ctx: _Ctx, *, plain: bool) -> _Items:
    """n8n's ITaskDataConnections: ``{"main": [[item, ...], ...], "ai_tool": [...]}``."""
    acc = _Items()
    data = _mapping(value, field)
    order = sorted(data, key=lambda k: k != "main")  # main first, then payload order
    for ctype in order:
        if data[ctype] is not None:
            _read_slots(data[ctype], ctype, _key(field, ctype), ctx, acc, plain=plain)
    return acc


def _source(value: object, field: str) -> tuple[str | None, ...] | None:
    if value is None:
        return None
    out: list[str | None] = []
    for i, entry in enumerate(_list(value, field)):
        entry_field = _idx(field, i)
        if entry is None or isinstance(entry, str):
            out.append(entry)
        else:
            out.append(
                _opt_str(
                    _mapping(entry, entry_field).get("previousNode"),
                    _key(entry_field, "previousNode"),
                )
            )
    return tuple(out)


def _run_status(value: object, field: str, error: NodeError | None) -> str:
    if value is None:
        return "error" if error is not None else "success"
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    return normalize_node_status(value)


def _make_run(
    index: int,
    status: str,
    started_at: datetime | None,
    duration: float | None,
    execution_index: int | None,
    error: NodeError | None,
    source: tuple[str | None, ...] | None,
    inputs: _Items | None,
    outputs: _Items | None,
    input_count: int | None,
    output_count: int | None,
    ctx: _Ctx,
) -> NodeRun:
    input_list: list[Any] | None = None
    output_list: list[list[Any]] | None = None
    output_types: tuple[str, ...] | None = None
    truncated = False
    if ctx.keep_items:
        if inputs is not None:
            input_list = [item for slot in inputs.slots for item in slot]
            truncated = inputs.truncated
        if outputs is not None:
            output_list = outputs.slots
            truncated = truncated or outputs.truncated
            if any(t != "main" for t in outputs.types):
                output_types = tuple(outputs.types)
    return NodeRun(
        index=index,
        execution_index=execution_index,
        status=status,
        started_at=started_at,
        duration_ms=duration,
        input_items=input_count if input_count is not None else (inputs.count if inputs else 0),
        output_items=output_count
        if output_count is not None
        else (outputs.count if outputs else 0),
        error=error,
        input=input_list,
        output=output_list,
        output_types=output_types,
        source=source,
        items_truncated=truncated,
    )


def _n8n_run(task: object, index: int, field: str, ctx: _Ctx) -> NodeRun:
    ctx.count_run(field)
    data = _mapping(task, field)
    error = _error(data.get("error"), _key(field, "error"), ctx)
    outputs = None
    if data.get("data") is not None:
        outputs = _read_connections(data["data"], _key(field, "data"), ctx, plain=False)
    inputs = None
    if data.get("inputOverride") is not None:
        inputs = _read_connections(
            data["inputOverride"], _key(field, "inputOverride"), ctx, plain=False
        )
    return _make_run(
        index=index,
        status=_run_status(data.get("executionStatus"), _key(field, "executionStatus"), error),
        started_at=_timestamp(data.get("startTime"), _key(field, "startTime")),
        duration=_opt_duration(data.get("executionTime"), _key(field, "executionTime")),
        execution_index=_opt_count(data.get("executionIndex"), _key(field, "executionIndex")),
        error=error,
        source=_source(data.get("source"), _key(field, "source")),
        inputs=inputs,
        outputs=outputs,
        input_count=None,
        output_count=None,
        ctx=ctx,
    )


def _latest_error(runs: tuple[NodeRun, ...]) -> NodeError | None:
    for run in reversed(runs):
        if run.error is not None:
            return run.error
    return None


def _n8n_nodes(run_data: object, field: str, ctx: _Ctx) -> list[NodeState]:
    data = _mapping(run_data, field)
    if len(data) > MAX_NODES:
        raise _bad(field, f"holds more than {MAX_NODES} nodes")
    nodes: list[NodeState] = []
    for name, tasks in data.items():
        node_field = _key(field, name)  # "" is a name n8n runs (see docs/storage-format.md)
        task_list = [] if tasks is None else _list(tasks, node_field)
        runs = tuple(_n8n_run(t, i, _idx(node_field, i), ctx) for i, t in enumerate(task_list))
        nodes.append(
            NodeState(
                node=name,
                status=runs[-1].status if runs else "unknown",
                runs=runs,
                error=_latest_error(runs),
            )
        )
    return nodes


def _plain_items(value: object, field: str, ctx: _Ctx, *, slotted: bool) -> _Items:
    """Plain-format items: a list of items, a list of slots (output only), or n8n connections."""
    if isinstance(value, Mapping):
        return _read_connections(value, field, ctx, plain=True)
    items = _list(value, field)
    acc = _Items()
    if slotted and items and all(s is None or isinstance(s, list | tuple) for s in items):
        _read_slots(items, "main", field, ctx, acc, plain=True)
    else:
        _read_slot(items, "main", field, ctx, acc, plain=True)
    return acc


def _plain_run(data: Mapping[str, Any], index: int, field: str, ctx: _Ctx) -> NodeRun:
    ctx.count_run(field)
    error = _error(data.get("error"), _key(field, "error"), ctx)
    inputs = outputs = None
    if data.get("input") is not None:
        inputs = _plain_items(data["input"], _key(field, "input"), ctx, slotted=False)
    if data.get("output") is not None:
        outputs = _plain_items(data["output"], _key(field, "output"), ctx, slotted=True)
    input_count = _opt_count(data.get("inputItems"), _key(field, "inputItems"))
    output_count = _opt_count(data.get("outputItems"), _key(field, "outputItems"))
    if input_count is not None and inputs is not None and input_count < inputs.count:
        raise _bad(_key(field, "inputItems"), "is smaller than the number of input items given")
    if output_count is not None and outputs is not None and output_count < outputs.count:
        raise _bad(_key(field, "outputItems"), "is smaller than the number of output items given")
    return _make_run(
        index=index,
        status=_run_status(data.get("status"), _key(field, "status"), error),
        started_at=_timestamp(data.get("startedAt"), _key(field, "startedAt")),
        duration=_opt_duration(data.get("durationMs"), _key(field, "durationMs")),
        execution_index=_opt_count(data.get("executionIndex"), _key(field, "executionIndex")),
        error=error,
        source=_source(data.get("source"), _key(field, "source")),
        inputs=inputs,
        outputs=outputs,
        input_count=input_count,
        output_count=output_count,
        ctx=ctx,
    )


def _plain_node(key: str | None, value: object, field: str, ctx: _Ctx) -> NodeState:
    data = _mapping(value, field)
    name = _opt_str(data.get("node"), _key(field, "node"))
    if name is None:
        name = _opt_str(data.get("name"), _key(field, "name"))
    node_id = _opt_str(data.get("nodeId"), _key(field, "nodeId"))
    if node_id is None:
        node_id = _opt_str(data.get("id"), _key(field, "id"))
    if key is not None:
        if name is None:
            name = key
        elif node_id is None:
            node_id = key
    if name is None:  # "" is a node name n8n accepts and runs
        raise _bad(_key(field, "node"), "is required")
    if data.get("runs") is not None:
        runs_field = _key(field, "runs")
        runs = tuple(
            _plain_run(_mapping(r, _idx(runs_field, i)), i, _idx(runs_field, i), ctx)
            for i, r in enumerate(_list(data["runs"], runs_field))
        )
        own_error = _error(data.get("error"), _key(field, "error"), ctx)
        if runs:
            status = runs[-1].status
        else:
            status = _run_status(data.get("status"), _key(field, "status"), own_error)
        error = _latest_error(runs) or own_error
    else:
        runs = (_plain_run(data, 0, field, ctx),)
        status = runs[0].status
        error = runs[0].error
    return NodeState(node=name, node_id=node_id, status=status, runs=runs, error=error)


def _plain_nodes(value: object, field: str, ctx: _Ctx) -> list[NodeState]:
    nodes: list[NodeState] = []
    if isinstance(value, Mapping):
        if len(value) > MAX_NODES:
            raise _bad(field, f"holds more than {MAX_NODES} nodes")
        for key, entry in value.items():
            nodes.append(_plain_node(key, entry, _key(field, key), ctx))
    else:
        entries = _list(value, field)
        if len(entries) > MAX_NODES:
            raise _bad(field, f"holds more than {MAX_NODES} nodes")
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            state = _plain_node(None, entry, _idx(field, i), ctx)
            if state.node in seen:
                raise _bad(_key(_idx(field, i), "node"), "repeats the name of an earlier node")
            seen.add(state.node)
            nodes.append(state)
    return nodes


def _execution_order(nodes: list[NodeState]) -> tuple[NodeState, ...]:
    """By first run's executionIndex, else its start time, else input order (stable)."""
    if any(n.runs and n.runs[0].execution_index is not None for n in nodes):

        def by_index(n: NodeState) -> tuple[int, int]:
            idx = n.runs[0].execution_index if n.runs else None
            return (0, idx) if idx is not None else (1, 0)

        return tuple(sorted(nodes, key=by_index))
    if any(n.runs and n.runs[0].started_at is not None for n in nodes):

        def by_time(n: NodeState) -> tuple[int, datetime]:
            ts = n.runs[0].started_at if n.runs else None
            return (0, ts) if ts is not None else (1, datetime.min.replace(tzinfo=UTC))

        return tuple(sorted(nodes, key=by_time))
    return tuple(nodes)


def _execution_status(value: object, field: str, payload: Mapping[str, Any]) -> str:
    """The execution status the payload states: its ``status``, else ``waiting`` when n8n's
    ``waitTill`` is set, else ``unknown``. Never derived from errors or node states: n8n
    reports a canceled or crashed run with runs that look like success or error."""
    if value is not None:
        if not isinstance(value, str):
            raise _bad(field, "must be a string")
        return normalize_execution_status(value)
    if payload.get("waitTill") is not None:
        return "waiting"
    return "unknown"


def _check_fields(payload: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    for name in payload:
        if name not in allowed:
            raise _bad(_key(path, str(name)), "is not a field of this final-state format")


def _unwrap(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """n8n's REST API answers ``{"data": <execution>}``: the execution and its JSON path."""
    inner = payload.get("data")
    if (
        len(payload) == 1
        and isinstance(inner, Mapping)
        and "resultData" not in inner
        and not _WRAPPED_EXECUTION_MARKERS.isdisjoint(inner)
    ):
        return inner, "data"
    return payload, ""


def _load_data(value: object, field: str) -> Mapping[str, Any]:
    """IRun.data: an object, or a string holding flatted (n8n's storage) or plain JSON."""
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        try:
            loaded = orjson.loads(value)
        except orjson.JSONDecodeError as err:
            raise InvalidInput(f"{field} is not valid JSON", field=field) from err
        if isinstance(loaded, list):
            loaded = _revive_flatted(loaded, field, root_keys=frozenset({"resultData"}))
        value = loaded
    return _mapping(value, field)


def parse_final_state(
    payload: Mapping[str, Any],
    *,
    execution_id: str,
    sanitize: Callable[[Any], Any] = lambda v: v,
    keep_items: bool = True,
    max_items_per_run: int | None = None,
) -> FinalState:
    """Build the FinalState of ``execution_id`` from an engine's payload.

    Accepts n8n's ``IRun`` (``data`` as an object or a flatted/JSON string), just its
    ``resultData`` or ``runData``, and the plain format (``{"status", "nodes": {...} | [...]}``).
    ``sanitize`` is applied to every kept item record and every error text. ``keep_items=False``
    keeps only item counts; ``max_items_per_run`` caps the items kept per run for input and for
    output (counts stay complete, ``itemsTruncated`` marks the cut).

    Raises InvalidInput (``field`` = JSON path of the culprit; the value is never echoed),
    InvalidId for an unsafe ``execution_id``, SanitizationError when ``sanitize`` fails.
    """
    execution_id = check_id(execution_id, "executionId")
    payload = _mapping(payload, "payload")
    if max_items_per_run is not None and (not _is_int(max_items_per_run) or max_items_per_run < 0):
        raise InvalidInput("max_items_per_run must be a non-negative integer")
    payload, at = _unwrap(payload)
    claimed = payload.get("executionId")
    if claimed is not None and str(claimed) != execution_id:
        raise InvalidInput(
            f"{_key(at, 'executionId')} does not match the execution", field=_key(at, "executionId")
        )
    ctx = _Ctx(sanitize, keep_items, max_items_per_run)

    if "nodes" in payload:
        _check_fields(payload, _PLAIN_FIELDS, at)
        nodes = _plain_nodes(payload["nodes"], _key(at, "nodes"), ctx)
        error = _error(payload.get("error"), _key(at, "error"), ctx)
        last = _opt_str(payload.get("lastNodeExecuted"), _key(at, "lastNodeExecuted"))
    elif any(k in payload for k in ("data", "resultData", "runData", "status")):
        if "data" in payload:
            _check_fields(payload, _IRUN_FIELDS, at)
            result_path = _key(at, "data.resultData")
            loaded = _load_data(payload["data"], _key(at, "data"))
            if "resultData" not in loaded and not (
                _N8N_EXECUTION_FIELDS - _RUN_EXECUTION_DATA_FIELDS
            ).isdisjoint(loaded):
                # an execution inside ``data`` next to other fields: not a run's data
                raise _bad(_key(at, "data"), "holds an n8n execution, not its run data")
            result_raw = loaded.get("resultData")
        elif "resultData" in payload:
            _check_fields(payload, _RESULT_ONLY_FIELDS, at)
            result_path, result_raw = _key(at, "resultData"), payload["resultData"]
        else:
            _check_fields(payload, _RUN_ONLY_FIELDS, at)
            result_path, result_raw = at, payload
        result = {} if result_raw is None else _mapping(result_raw, result_path)
        run_data = result.get("runData")
        run_path = _key(result_path, "runData")
        nodes = [] if run_data is None else _n8n_nodes(run_data, run_path, ctx)
        error = _error(result.get("error"), _key(result_path, "error"), ctx)
        last = _opt_str(result.get("lastNodeExecuted"), _key(result_path, "lastNodeExecuted"))
    else:
        raise InvalidInput(
            "payload is neither an n8n run result nor a plain final state", field="payload"
        )

    mode = _opt_str(payload.get("mode"), _key(at, "mode"))
    started_at = _timestamp(payload.get("startedAt"), _key(at, "startedAt"))
    finished_key = "finishedAt" if payload.get("finishedAt") is not None else "stoppedAt"
    finished_at = _timestamp(payload.get(finished_key), _key(at, finished_key))
    status = _execution_status(payload.get("status"), _key(at, "status"), payload)
    return FinalState(
        execution_id=execution_id,
        status=status,
        mode=mode,
        started_at=started_at,
        finished_at=finished_at,
        nodes=_execution_order(nodes),
        error=error,
        last_node_executed=last,
    )
