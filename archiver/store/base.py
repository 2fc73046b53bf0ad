"""The narrow object-store protocol every backend implements.

Keys are relative, ``/``-separated, validated by :func:`archiver.layout.check_key` before any I/O, so
every backend (a directory, moto, SeaweedFS, AWS) accepts exactly the same keys.

``put(key, data)`` is create-only: it never overwrites. Writing the identical bytes again is an
idempotent success (returns ``False``: nothing new was created); different bytes raise
:class:`archiver.errors.ImmutableConflict`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["ObjectInfo", "ObjectStore"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one stored object."""

    key: str
    size: int
    last_modified: datetime | None = None
    storage_class: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """Write-once object storage."""

    #: a short, human readable description ("local:/data", "s3://bucket/prefix")
    url: str

    def put(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data``; True if created, False if identical bytes already existed.

        Raises ImmutableConflict when the key holds different bytes.
        """
        ...

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; NotFound when absent."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Metadata of ``key``, or None when absent."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` (retention jobs only). Missing keys are not an error."""
        ...
