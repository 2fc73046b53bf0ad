"""Stored bytes: zstd frames of canonical JSON, self-describing and verified on every read.

Two kinds of objects:

* **structure blobs** — ``zstd(JCS(structure))``. Their key names the SHA-256 of the decompressed
  bytes, so ``zstd -d < blob | sha256sum`` prints the snapshot hash. Reading re-hashes.
* **records** (snapshot, final state, version commit) — ``zstd(JCS(body + {"digest": ...}))`` where
  ``body`` carries ``formatVersion`` and ``kind``, and ``digest`` is ``sha256:<hex>`` of the JCS form
  of the body without ``digest``. Any JCS implementation can re-check it.

Decompression is bounded: the frame must declare its content size, the declared size must be within
the limit, and exactly one frame must be present (python-zstandard would otherwise trust the header
of a 16 KB bomb or silently ignore trailing frames).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import orjson
import zstandard

from archiver.canonical import canonicalize, canonicalize_checked
from archiver.errors import IntegrityError

__all__ = [
    "DEFAULT_MAX_OBJECT_BYTES",
    "FORMAT_VERSION",
    "KNOWN_FORMAT_VERSIONS",
    "compress",
    "decode_blob",
    "decode_record",
    "decompress",
    "encode_blob",
    "encode_record",
    "record_digest",
]

FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = frozenset({1})
DEFAULT_MAX_OBJECT_BYTES = 256 * 1024 * 1024
# Records: level 3, 5 % larger than level 6 on the corpus for a third of the CPU. Structure blobs
# (the bulk, compressed once per new structure on the capture path): level 1, 2.6 % larger than
# level 3 on the corpus for 35-40 % less CPU (benchmarks/README.md). Any level reads the same.
COMPRESSION_LEVEL = 3
BLOB_COMPRESSION_LEVEL = 1

# zstd contexts are not thread-safe: one pair per thread, reused across calls.
_contexts = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    ctx = getattr(_contexts, "compressor", None)
    if ctx is None:
        ctx = _contexts.compressor = zstandard.ZstdCompressor(
            level=COMPRESSION_LEVEL, write_content_size=True
        )
    return ctx


def _blob_compressor() -> zstandard.ZstdCompressor:
    ctx = getattr(_contexts, "blob_compressor", None)
    if ctx is None:
        ctx = _contexts.blob_compressor = zstandard.ZstdCompressor(
            level=BLOB_COMPRESSION_LEVEL, write_content_size=True
        )
    return ctx


def _decompressor() -> zstandard.ZstdDecompressor:
    ctx = getattr(_contexts, "decompressor", None)
    if ctx is None:
        ctx = _contexts.decompressor = zstandard.ZstdDecompressor()
    return ctx


def compress(data: bytes) -> bytes:
    return _compressor().compress(data)


def decompress(data: bytes, *, max_size: int = DEFAULT_MAX_OBJECT_BYTES) -> bytes:
    """Decompress exactly one zstd frame of at most ``max_size`` bytes, else IntegrityError."""
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as err:
        raise IntegrityError(f"not a zstd frame: {err}") from err
    if declared < 0:
        raise IntegrityError("zstd frame does not declare its content size")
    if declared > max_size:
        raise IntegrityError(
            f"zstd frame declares {declared} bytes, more than the {max_size} limit"
        )
    try:
        dobj = _decompressor().decompressobj()
        out = dobj.decompress(data)
    except zstandard.ZstdError as err:
        raise IntegrityError(f"corrupt zstd frame: {err}") from err
    if not dobj.eof or dobj.unused_data:
        raise IntegrityError("object must hold exactly one complete zstd frame")
    if len(out) != declared:
        raise IntegrityError("zstd frame content size does not match its header")
    return out


def encode_blob(structure_jcs: bytes) -> bytes:
    return _blob_compressor().compress(structure_jcs)


def decode_blob(
    data: bytes, expected_hash: str, *, max_size: int = DEFAULT_MAX_OBJECT_BYTES
) -> bytes:
    """The JCS bytes of a structure blob, verified against ``expected_hash``."""
    raw = decompress(data, max_size=max_size)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_hash:
        raise IntegrityError(
            f"structure blob hash mismatch: expected {expected_hash}, got {actual}"
        )
    return raw


def record_digest(body: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonicalize(body)).hexdigest()


def encode_record(kind: str, body: dict[str, Any]) -> bytes:
    """Stamp ``body`` with format version, kind and digest; return the compressed JCS bytes."""
    stamped = {**body, "formatVersion": FORMAT_VERSION, "kind": kind}
    stamped.pop("digest", None)
    jcs, tree, clean = canonicalize_checked(stamped)
    # The canonical tree plus one ASCII string: no second walk over its values.
    signed = {**tree, "digest": "sha256:" + hashlib.sha256(jcs).hexdigest()}
    return compress(canonicalize_checked(signed, numbers=0 if clean else None)[0])


def decode_record(
    data: bytes, kind: str, *, max_size: int = DEFAULT_MAX_OBJECT_BYTES
) -> dict[str, Any]:
    """Decompress, parse and verify a record; returns the body without its digest."""
    raw = decompress(data, max_size=max_size)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise IntegrityError(f"stored {kind} record is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise IntegrityError(f"stored {kind} record is not a JSON object")
    version = body.get("formatVersion")
    if version not in KNOWN_FORMAT_VERSIONS:
        raise IntegrityError(f"unknown formatVersion {version!r} (this build reads 1)")
    if body.get("kind") != kind:
        raise IntegrityError(f"expected a {kind} record, found {body.get('kind')!r}")
    digest = body.pop("digest", None)
    if digest != record_digest(body):
        raise IntegrityError(f"{kind} record digest mismatch")
    return body
