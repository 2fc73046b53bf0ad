"""Where things live in the store: pure functions, ids in, keys out. No I/O here.

Layout (format version 1)::

    blobs/sha256/<h[0:2]>/<h>.json.zst                       workflow structure, content-addressed
    executions/<s>/<executionId>/snapshot.json.zst            pre-execution snapshot, write-once
    executions/<s>/<executionId>/result.json.zst              final state, write-once
    executions/<s>/<executionId>/progress-<status>-<d>.json.zst  non-terminal report, create-only
    refs/workflows/<workflowId>/versions/<seq:010d>.json.zst  version commits with parent pointers
    index/<table>/dt=YYYY-MM-DD/part-<writer>-<seq>.parquet   manifests (see docs/storage-format.md)

``<s>`` is the first two hex digits of SHA-256(executionId): it spreads executions over 256
prefixes whatever shape the engine's ids have.
"""

from __future__ import annotations

import hashlib
import re

from archiver.errors import InvalidId

__all__ = [
    "MAX_ID_LENGTH",
    "blob_key",
    "check_id",
    "check_key",
    "execution_prefix",
    "is_progress_key",
    "progress_key",
    "result_key",
    "snapshot_key",
    "version_key",
    "version_seq_from_key",
    "versions_prefix",
]

MAX_ID_LENGTH = 256

# Ids may hold letters, digits and . _ - : @ (n8n uses digits and nanoid-like strings, engines UUIDs).
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._:@=-]+")


def check_id(value: object, field: str = "id") -> str:
    """Return ``value`` as a safe id, or raise InvalidId naming ``field``.

    Numbers are accepted and turned into their decimal string (n8n exports use numeric ids).
    """
    if isinstance(value, bool):
        raise InvalidId(f"{field} must be a string or an integer", field=field)
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidId(f"{field} must be a string or an integer", field=field)
    if not value:
        raise InvalidId(f"{field} must not be empty", field=field)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"{field} is longer than {MAX_ID_LENGTH} characters", field=field)
    if ".." in value or _ID_RE.fullmatch(value) is None:
        raise InvalidId(
            f"{field} may contain only letters, digits and . _ - : @ "
            "(starting with a letter or digit, no '..')",
            field=field,
        )
    return value


def check_hash(value: object, field: str = "snapshotHash") -> str:
    """A lowercase hex SHA-256 digest, else InvalidId."""
    if not isinstance(value, str) or _HASH_RE.fullmatch(value) is None:
        raise InvalidId(f"{field} must be 64 lowercase hex digits", field=field)
    return value


def check_key(key: str) -> str:
    """Refuse keys that backends treat differently (``//``, ``.``/``..`` segments, odd bytes)."""
    if not key or len(key) > 1024:
        raise InvalidId("storage key must be 1..1024 characters", field="key")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or _SEGMENT_RE.fullmatch(segment) is None:
            raise InvalidId(f"unsafe storage key segment {segment!r}", field="key")
    return key


def _shard(execution_id: str) -> str:
    return hashlib.sha256(execution_id.encode()).hexdigest()[:2]


def blob_key(structure_hash: str) -> str:
    check_hash(structure_hash)
    return f"blobs/sha256/{structure_hash[:2]}/{structure_hash}.json.zst"


def execution_prefix(execution_id: str) -> str:
    check_id(execution_id, "executionId")
    return f"executions/{_shard(execution_id)}/{execution_id}/"


def snapshot_key(execution_id: str) -> str:
    return execution_prefix(execution_id) + "snapshot.json.zst"


def result_key(execution_id: str) -> str:
    return execution_prefix(execution_id) + "result.json.zst"


_PROGRESS_NAME_RE = re.compile(r"progress-[a-z]+-[0-9a-f]{32}\.json\.zst")


def progress_key(execution_id: str, status: str, digest: str) -> str:
    """A non-terminal report (waiting, running, new) of an execution, named by its status and the
    first 32 hex digits of its body's digest (so an identical report has the same key)."""
    name = f"progress-{status}-{digest[:32]}.json.zst"
    if _PROGRESS_NAME_RE.fullmatch(name) is None:
        raise InvalidId("progress records need a lowercase status and a hex digest", field="key")
    return execution_prefix(execution_id) + name


def is_progress_key(key: str) -> bool:
    """Whether ``key`` names a progress record (``executions/<s>/<id>/progress-….json.zst``)."""
    parts = key.split("/")
    return (
        len(parts) == 4
        and parts[0] == "executions"
        and _PROGRESS_NAME_RE.fullmatch(parts[3]) is not None
    )


def versions_prefix(workflow_id: str) -> str:
    check_id(workflow_id, "workflowId")
    return f"refs/workflows/{workflow_id}/versions/"


def version_key(workflow_id: str, seq: int) -> str:
    if seq < 1:
        raise InvalidId("version sequence numbers start at 1", field="seq")
    return f"{versions_prefix(workflow_id)}{seq:010d}.json.zst"


def version_seq_from_key(key: str) -> int:
    name = key.rsplit("/", 1)[-1]
    return int(name.split(".", 1)[0])
