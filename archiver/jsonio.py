"""Strict JSON input: what the archive accepts from engines, files and HTTP bodies.

Refused with ``InvalidInput``: invalid UTF-8, NaN/Infinity, duplicate object keys, lone surrogates,
nesting deeper than ``MAX_DEPTH``. Error messages give a position, never the offending text.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from archiver.errors import InvalidInput

__all__ = ["MAX_DEPTH", "loads_strict"]

MAX_DEPTH = 512


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidInput("duplicate key in JSON object", field=_safe_field(key))
            seen.add(key)
    return result


def _safe_field(key: str) -> str:
    return key if len(key) <= 64 and key.isprintable() else "<key>"


def _no_constants(name: str) -> Any:
    raise InvalidInput(f"{name} is not valid JSON")


def loads_strict(data: bytes | str, *, field: str = "body") -> Any:
    """Parse ``data`` as strict JSON (RFC 8259 / I-JSON)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        orjson.loads(data)  # fast validity check: UTF-8, NaN, surrogates, trailing text
    except orjson.JSONDecodeError as err:
        raise InvalidInput(
            f"{field} is not valid JSON (line {err.lineno}, column {err.colno})", field=field
        ) from None
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise InvalidInput(f"{field} is nested too deeply", field=field) from None
    except json.JSONDecodeError as err:
        raise InvalidInput(
            f"{field} is not valid JSON (line {err.lineno}, column {err.colno})", field=field
        ) from None
    _check_depth(value, field)
    return value


def _check_depth(value: Any, field: str) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{field} is nested deeper than {MAX_DEPTH} levels", field=field)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
