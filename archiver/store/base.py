"""The narrow object-store protocol every backend implements.

Keys are relative, ``/``-separated, validated by :func:`archiver.layout.check_key` before any I/O, so
every backend (a directory, moto, SeaweedFS, AWS) accepts exactly the same keys.

``put(key, data)`` is create-only: it never overwrites. Writing the identical bytes again is an
idempotent success (returns ``False``: nothing new was created); different bytes raise
:class:`archiver.errors.ImmutableConflict`.

:class:`LockingStore` is the optional capability of stores that can put S3 Object Lock on objects
(:class:`archiver.store.s3.S3Store`): a retention date chosen per write, and legal holds set and
cleared on existing objects. The memory and local stores do not have it; there a legal hold is
data only (``archiver.holds``), which expiry honours all the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["LockingStore", "ObjectInfo", "ObjectLockState", "ObjectStore"]


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


@dataclass(frozen=True, slots=True)
class ObjectLockState:
    """The Object Lock of the current version of an object."""

    mode: str | None = None  # GOVERNANCE | COMPLIANCE | None (no retention)
    retain_until: datetime | None = None
    legal_hold: bool = False


@runtime_checkable
class LockingStore(Protocol):
    """A store that can put Object Lock on its objects (S3 with an Object Lock bucket)."""

    url: str

    @property
    def object_lock_enabled(self) -> bool:
        """True when every write carries Object Lock retention (a mode is configured)."""
        ...

    def put_locked(
        self,
        key: str,
        data: bytes,
        *,
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> bool:
        """``put`` with this object's own retain-until date (None: the store's default; a date
        not in the future: no retention) and, optionally, a legal hold set in the same request."""
        ...

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Set (``on``) or clear the legal hold of the current version of ``key``.

        NotFound when ``key`` does not exist; ObjectLockUnsupported when the bucket has no
        Object Lock."""
        ...

    def object_lock(self, key: str) -> ObjectLockState:
        """The retention and legal hold of the current version of ``key``; NotFound if absent."""
        ...
