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
