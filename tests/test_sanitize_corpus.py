"""The sanitizer against the 500 real workflows in ../shared/corpus/n8n-workflows.

``tests/fixtures/corpus_redactions.json`` lists every value the sanitizer changes in the corpus,
reviewed by hand (see its "about"): where (file + JSON Pointer), which characters (offsets, never
the values), by which rule, and whether it is a genuine secret, an example credential in a note, or
a placeholder standing where a secret belongs. The tests check that

- every listed secret is gone from the sanitized file and a marker stands in its place;
- nothing else changes anywhere in the corpus (a new false positive fails here and must be
  reviewed into the fixture or fixed);
- no generic secret pattern, checked by patterns written independently of the sanitizer,
  survives in any sanitized file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from archiver.sanitize import MARKER_RE, Sanitizer

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "n8n-workflows"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "corpus_redactions.json"
KEY = b"corpus-test-hmac-key-0123456789ab"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not available")

REDACTIONS: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))["redactions"]
SECRET_FILES = sorted({r["file"] for r in REDACTIONS if r["verdict"] in ("secret", "example")})


@cache
def sanitizer() -> Sanitizer:
    return Sanitizer(KEY)


@cache
def original(name: str) -> Any:
    return orjson.loads((CORPUS / name).read_bytes())


@cache
def sanitized(name: str) -> Any:
    return sanitizer().sanitize(original(name))


def resolve(doc: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def leaves(value: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{pointer}/{k.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{pointer}/{i}")
    else:
        yield pointer, value


def secret_texts(entry: dict[str, Any]) -> list[str]:
    value = resolve(original(entry["file"]), entry["pointer"])
    return [value[a:b] for a, b in entry["spans"]]


def workflows(doc: Any) -> Iterator[dict[str, Any]]:
    """The workflows in an export: an array, a workflow, or {"workflow": ...} (maybe twice)."""
    if isinstance(doc, list):
        for item in doc:
            yield from workflows(item)
    elif isinstance(doc, dict):
        if "nodes" not in doc and isinstance(doc.get("workflow"), dict | list):
            yield from workflows(doc["workflow"])
        else:
            yield doc


def test_fixture_is_consistent() -> None:
    assert REDACTIONS, "the corpus holds inline secrets: the fixture cannot be empty"
    seen = set()
    for entry in REDACTIONS:
        key = (entry["file"], entry["pointer"])
        assert key not in seen, key
        seen.add(key)
        assert entry["rule"] in ("key", "pair", "text")
        assert entry["verdict"] in ("secret", "example", "placeholder")
        assert (CORPUS / entry["file"]).is_file(), entry["file"]
        value = resolve(original(entry["file"]), entry["pointer"])
        assert isinstance(value, str)
        for a, b in entry["spans"]:
            assert 0 <= a < b <= len(value)


@pytest.mark.parametrize("name", SECRET_FILES)
def test_every_listed_secret_is_replaced(name: str) -> None:
    raw = orjson.dumps(sanitized(name))
    for entry in (r for r in REDACTIONS if r["file"] == name):
        after = resolve(sanitized(name), entry["pointer"])
        assert MARKER_RE.search(after), entry["pointer"]
        if entry["verdict"] == "placeholder":
            continue
        for secret in secret_texts(entry):
            assert secret not in MARKER_RE.sub("", after), (entry["pointer"], entry["kind"])
            if len(secret) >= 6:  # short ones ("1") occur elsewhere by chance
                assert orjson.dumps(secret)[1:-1] not in raw, (entry["pointer"], entry["kind"])
            assert sanitizer().marker(secret) in after


@pytest.mark.parametrize("name", SECRET_FILES)
def test_each_workflow_of_a_file_alone_is_also_clean(name: str) -> None:
    """Capture sanitizes workflows (not export files): unwrap arrays and wrappers first."""
    secrets = [
        s
        for r in REDACTIONS
        if r["file"] == name and r["verdict"] != "placeholder"
        for s in secret_texts(r)
    ]
    for wf in workflows(original(name)):
        raw = orjson.dumps(Sanitizer(KEY).sanitize(wf))
        for secret in secrets:
            if len(secret) >= 6:
                assert orjson.dumps(secret)[1:-1] not in raw


def test_nothing_else_changes_in_the_corpus() -> None:
    """The false-positive guard: the set of changed values is exactly the reviewed one."""
    expected = {(r["file"], r["pointer"]): r for r in REDACTIONS}
    changed = {}
    for path in sorted(CORPUS.glob("*.json")):
        before = dict(leaves(original(path.name)))
        after = dict(leaves(sanitized(path.name)))
        assert before.keys() == after.keys(), path.name  # structure never changes
        for pointer, value in before.items():
            if after[pointer] != value:
                changed[(path.name, pointer)] = (value, after[pointer])
    unexpected = sorted(changed.keys() - expected.keys())
    missing = sorted(expected.keys() - changed.keys())
    assert not unexpected, f"new redactions, review them into the fixture: {unexpected}"
    assert not missing, f"reviewed redactions no longer happen: {missing}"
    for key, (value, after) in changed.items():
        spans = expected[key]["spans"]
        # Only the listed characters were replaced, each by one marker.
        rebuilt, last = [], 0
        for a, b in spans:
            rebuilt.append(re.escape(value[last:a]))
            rebuilt.append(MARKER_RE.pattern)
            last = b
        rebuilt.append(re.escape(value[last:]))
        assert re.fullmatch("".join(rebuilt), after), key


def test_genuine_secrets_appear_in_no_sanitized_file() -> None:
    secrets = {
        s
        for r in REDACTIONS
        if r["verdict"] != "placeholder"
        for s in secret_texts(r)
        if len(s) >= 6
    }
    for path in sorted(CORPUS.glob("*.json")):
        raw = orjson.dumps(sanitized(path.name)).decode()
        for secret in secrets:
            assert secret not in raw, path.name


# Written independently of archiver.sanitize: what a secret scanner would flag in stored bytes.
LEAK_PATTERNS = {
    "openai": re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),
    "stripe": re.compile(r"\b[sr]k_live_[0-9A-Za-z]{16,}"),
    "slack-token": re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}"),
    "slack-webhook": re.compile(r"hooks\.slack\.com/services/T[0-9A-Z]{6,}/B[0-9A-Z]{6,}/\w{16,}"),
    "discord-webhook": re.compile(r"discord(?:app)?\.com/api/webhooks/\d{6,}/[\w-]{20,}"),
    "github": re.compile(r"\b(?:gh[pousr]_[0-9A-Za-z]{30,}|github_pat_\w{40,})"),
    "gitlab": re.compile(r"\bglpat-[\w-]{20}"),
    "aws-key-id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "google-api-key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "huggingface": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    "sendgrid": re.compile(r"\bSG\.[\w-]{16,}\.[\w-]{16,}"),
    "telegram-bot": re.compile(r"\b\d{8,10}:AA[\w-]{30,}"),
    "jwt": re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}"),
    "pem": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:\\n|\s)*[A-Za-z0-9+/]{40,}"),
    "url-password": re.compile(
        r"[a-z][a-z0-9+.-]*://[^\s/:@\"{}<>]+:[A-Za-z0-9!$%&*+,;=._~-]{4,}@"
    ),
    "bearer": re.compile(r"\bBearer\s+(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{20,}"),
    "json-secret": re.compile(
        r'\\?"(?:password|passwd|secret|client_secret|api_?key|apiKey|access_token|refresh_token)'
        r'\\?"\s*:\s*\\?"(?!<redacted:|=|\{\{)[^"\\]{4,}\\?"',
        re.IGNORECASE,
    ),
}
# Documentation placeholders these generic patterns cannot tell from secrets.
ALLOWED = re.compile(r"your|xxx|\*\*\*|example|<|\[|\{", re.IGNORECASE)


def test_no_generic_secret_pattern_survives_in_the_corpus() -> None:
    findings = []
    for path in sorted(CORPUS.glob("*.json")):
        raw = orjson.dumps(sanitized(path.name)).decode()
        for kind, pattern in LEAK_PATTERNS.items():
            for m in pattern.finditer(raw):
                if not ALLOWED.search(m.group()):
                    findings.append((path.name, kind, m.start()))
    assert not findings


def test_the_generic_patterns_do_fire_on_the_raw_corpus() -> None:
    """Guards the guard: the patterns above find the corpus's secrets before sanitizing."""
    hits = set()
    for name in SECRET_FILES:
        raw = (CORPUS / name).read_text(encoding="utf-8")
        hits |= {kind for kind, p in LEAK_PATTERNS.items() if p.search(raw)}
    assert {"google-api-key", "jwt", "json-secret"} <= hits


def test_corpus_sanitizing_is_idempotent_and_deterministic() -> None:
    other = Sanitizer(KEY, cache_bytes=0)
    for path in sorted(CORPUS.glob("*.json")):
        once = sanitized(path.name)
        assert sanitizer().sanitize(once) == once, path.name
        assert other.sanitize(original(path.name)) == once, path.name
