"""Stored bytes are verified on every read; zstd bombs and tampering are refused."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.canonical import canonicalize
from archiver.codec import decode_blob, decode_record, decompress, encode_blob, encode_record
from archiver.errors import IntegrityError


def test_record_round_trip_and_self_description() -> None:
    data = encode_record("execution-snapshot", {"a": 1, "b": [1.5, "x"]})
    raw = zstandard.ZstdDecompressor().decompress(data)
    body = orjson.loads(raw)
    assert body["formatVersion"] == 1
    assert body["kind"] == "execution-snapshot"
    # The digest is reproducible with any JCS implementation.
    digest = body.pop("digest")
    assert digest == "sha256:" + hashlib.sha256(canonicalize(body)).hexdigest()
    assert decode_record(data, "execution-snapshot")["b"] == [1.5, "x"]


def test_tampered_record_is_refused() -> None:
    data = encode_record("execution-snapshot", {"a": 1})
    raw = orjson.loads(zstandard.ZstdDecompressor().decompress(data))
    raw["a"] = 2
    forged = zstandard.ZstdCompressor().compress(canonicalize(raw))
    with pytest.raises(IntegrityError, match="digest"):
        decode_record(forged, "execution-snapshot")


def test_wrong_kind_and_unknown_format_are_refused() -> None:
    data = encode_record("final-state", {"a": 1})
    with pytest.raises(IntegrityError, match="expected"):
        decode_record(data, "execution-snapshot")
    future = zstandard.ZstdCompressor().compress(
        canonicalize({"formatVersion": 99, "kind": "final-state", "digest": "x"})
    )
    with pytest.raises(IntegrityError, match="formatVersion"):
        decode_record(future, "final-state")


def test_blob_is_rehashed() -> None:
    jcs = canonicalize({"nodes": [], "connections": [], "settings": {}})
    good = hashlib.sha256(jcs).hexdigest()
    assert decode_blob(encode_blob(jcs), good) == jcs
    with pytest.raises(IntegrityError, match="hash mismatch"):
        decode_blob(encode_blob(jcs), "0" * 64)


@pytest.mark.parametrize("level", [1, 3, 19])
def test_blobs_of_any_level_read_back(level: int) -> None:
    # Blobs are written at level 1 (earlier builds wrote level 3): the level is not the format.
    jcs = canonicalize({"nodes": [{"name": "n", "parameters": {"x": "y" * 500}}], "settings": {}})
    good = hashlib.sha256(jcs).hexdigest()
    old = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(jcs)
    assert decode_blob(old, good) == jcs


@pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd CLI")
def test_zstd_cli_reads_a_blob() -> None:
    jcs = canonicalize({"nodes": [{"name": "n", "parameters": {"x": "y" * 500}}], "settings": {}})
    out = subprocess.run(["zstd", "-dc"], input=encode_blob(jcs), capture_output=True, check=True)
    assert out.stdout == jcs


def test_zstd_bomb_is_refused_before_allocation() -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (64 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    with pytest.raises(IntegrityError, match="limit"):
        decompress(bomb, max_size=1024 * 1024)


def test_lying_content_size_is_refused() -> None:
    data = bytearray(zstandard.ZstdCompressor().compress(b"\0" * (4 * 1024 * 1024)))
    # Patch the declared frame content size (4-byte field after the window descriptor) to 1000.
    offset = 5 + (0 if (data[4] >> 5) & 1 else 1)
    assert (data[4] >> 6) == 2
    data[offset : offset + 4] = (1000).to_bytes(4, "little")
    with pytest.raises(IntegrityError):
        decompress(bytes(data), max_size=1024 * 1024)


def test_trailing_frames_and_unsized_frames_are_refused() -> None:
    one = zstandard.ZstdCompressor().compress(b"hello")
    with pytest.raises(IntegrityError, match="exactly one"):
        decompress(one + one)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"hello")
    with pytest.raises(IntegrityError, match="declare"):
        decompress(unsized)
    with pytest.raises(IntegrityError):
        decompress(b"not zstd at all")


@given(
    st.dictionaries(
        st.sampled_from(["a", "digest", "\ue000", "\U0001f600", "n"]),
        st.sampled_from([1.0, 1e16, 2**60, 4.2, "x", None, [1.0, {"\ue000": 2, "\U0001f600": 3}]]),
        max_size=4,
    )
)
@settings(max_examples=100)
def test_record_bytes_are_jcs_of_the_body_with_its_digest(body: dict[str, Any]) -> None:
    data = encode_record("final-state", body)
    stamped = {k: v for k, v in body.items() if k != "digest"}
    stamped |= {"formatVersion": 1, "kind": "final-state"}
    expected = {**stamped, "digest": "sha256:" + hashlib.sha256(canonicalize(stamped)).hexdigest()}
    assert zstandard.ZstdDecompressor().decompress(data) == canonicalize(expected)
    assert decode_record(data, "final-state") == orjson.loads(canonicalize(stamped))
