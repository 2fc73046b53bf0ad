"""Shared test helpers (not fixtures): corpus access and archive construction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

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
