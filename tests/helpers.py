"""Shared test helpers (not fixtures): corpus access and archive construction."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from archiver.archive import Archive, CaptureResult
from archiver.timeutil import parse_ts

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
WORKFLOWS = sorted((CORPUS / "n8n-workflows").glob("*.json"))
MALFORMED = sorted((CORPUS / "n8n-malformed").glob("*.json"))
HMAC_KEY = bytes(range(32))


def load_corpus(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def js_style_loads(data: bytes) -> Any:
    """Parse JSON the way an ECMAScript JCS implementation would see numbers (IEEE doubles)."""
    return json.loads(data, parse_int=lambda s: int(s) if abs(int(s)) <= 2**53 else float(s))


@contextlib.contextmanager
def received_at(archive: Archive, when: datetime) -> Iterator[None]:
    """Inside, ``archive`` receives captures at ``when`` (its clock set back to it): how a test
    builds executions of a given age, which retention counts from ``receivedAt``."""
    clock = archive._clock
    archive._clock = lambda: when
    try:
        yield
    finally:
        archive._clock = clock


def capture_received(archive: Archive, when: datetime | str, **request: Any) -> CaptureResult:
    """``archive.capture_snapshot(created_at=when, **request)`` received at ``when`` too."""
    with received_at(archive, parse_ts(when)):
        return archive.capture_snapshot(created_at=when, **request)


def flatted_dumps(value: Any) -> str:
    """A port of flatted's ``stringify`` (objects by identity, strings by value).

    Checked against flatted 3.4.4 (npm) byte for byte; used to build fixtures and property tests.
    """
    known: dict[Any, str] = {}
    table: list[Any] = []

    def index(v: Any) -> str:
        key = ("s", v) if isinstance(v, str) else ("o", id(v))
        if key not in known:
            known[key] = str(len(table))
            table.append(v)
        return known[key]

    def ref(v: Any) -> Any:
        return index(v) if isinstance(v, str | dict | list) else v

    index(value)
    out: list[str] = []
    i = 0
    while i < len(table):
        element = table[i]
        i += 1
        if isinstance(element, dict):
            element = {k: ref(v) for k, v in element.items()}
        elif isinstance(element, list):
            element = [ref(v) for v in element]
        out.append(json.dumps(element, separators=(",", ":"), ensure_ascii=False))
    return "[" + ",".join(out) + "]"
