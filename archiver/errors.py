"""The one exception tree of execvault.

Everything raised across the package boundary is one of these; botocore, zstandard and OS errors are
translated where they happen (the stores, the codec) with ``raise ... from err``::

    ArchiveError
    ├── NotFound (also FileNotFoundError)            missing object, execution, workflow, version
    ├── ImmutableConflict (also FileExistsError)     different bytes for a key that already exists
    ├── IntegrityError                               hash/digest mismatch, unknown format, zstd bomb
    ├── InvalidInput (also ValueError)               a caller's mistake; ``field`` names the culprit
    │   ├── MalformedWorkflow                        not an n8n-style workflow
    │   ├── InvalidId                                unsafe id or key segment
    │   ├── QueryRefused                             analyst SQL the sandbox does not run
    │   ├── QueryFailed                              analyst SQL that DuckDB rejected or failed
    │   └── ObjectLockUnsupported                    the store cannot put Object Lock / legal holds
    ├── SanitizationError                            a value that cannot be sanitized safely
    ├── StoreUnavailable                             the store failed after retries (5xx, network)
    ├── StorageFull                                  the store's disk or quota is full (ENOSPC/EDQUOT)
    ├── RetentionLocked                              Object Lock / legal hold refused a change
    ├── ObjectArchived                               in a cold storage class: restore it first
    ├── ColdCopyDamaged                              a cold copy is missing or fails its digest
    ├── ManifestError                                an index manifest cannot be written or read
    ├── QueryLimitExceeded                           analyst SQL hit its time, memory or result limit
    ├── QueryBusy                                    too many analyst queries running or queued
    └── Overloaded                                   too many large request bodies in flight

The API maps these to status codes in one place (``api.errors``).
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "ColdCopyDamaged",
    "ImmutableConflict",
    "IntegrityError",
    "InvalidId",
    "InvalidInput",
    "MalformedWorkflow",
    "ManifestError",
    "NotFound",
    "ObjectArchived",
    "ObjectLockUnsupported",
    "Overloaded",
    "QueryBusy",
    "QueryFailed",
    "QueryLimitExceeded",
    "QueryRefused",
    "RetentionLocked",
    "RunBusy",
    "SanitizationError",
    "StorageFull",
    "StoreUnavailable",
]


class ArchiveError(Exception):
    """Root of every error execvault raises on purpose."""


class NotFound(ArchiveError, FileNotFoundError):
    """An object, execution, workflow or version does not exist."""


class ImmutableConflict(ArchiveError, FileExistsError):
    """A write-once key already holds different bytes (or a record holds different content)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class IntegrityError(ArchiveError):
    """Stored bytes do not match their hash, digest or declared format."""


class InvalidInput(ArchiveError, ValueError):
    """The caller sent something we refuse; ``field`` is a dotted path or JSON Pointer to it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MalformedWorkflow(InvalidInput):
    """The input is not an n8n-style workflow we can normalize."""


class InvalidId(InvalidInput):
    """An id (execution, workflow, ...) is unsafe to use in a storage key."""


class SanitizationError(ArchiveError):
    """A value could not be sanitized safely, so nothing was stored."""


class StoreUnavailable(ArchiveError):
    """The object store did not answer successfully after retries."""


class StorageFull(ArchiveError):
    """The store has no room left (disk full, ENOSPC; quota exceeded, EDQUOT; an S3 server that
    says it is out of space). Nothing was published; retrying after space is freed works."""


class RetentionLocked(ArchiveError):
    """Object Lock retention or a legal hold refused a delete or change."""


class ObjectArchived(ArchiveError):
    """The object sits in a cold storage class (GLACIER, DEEP_ARCHIVE): it needs a restore first."""

    def __init__(self, message: str, *, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class ColdCopyDamaged(ArchiveError):
    """A copy of an execution's object in the cold store (``retention.archive_cold``) is missing
    or no longer matches the size or digest its archive event recorded: a restore refuses it
    (nothing is copied back). ``problem`` is ``missing``, ``size_mismatch`` or ``digest_mismatch``;
    ``key`` the object's key, ``location`` the cold store."""

    def __init__(
        self,
        message: str,
        *,
        execution_id: str,
        key: str,
        problem: str,
        location: str,
    ) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.key = key
        self.problem = problem
        self.location = location


class ManifestError(ArchiveError):
    """An index manifest could not be written or read."""


class QueryRefused(InvalidInput):
    """Analyst SQL the sandbox refuses: not exactly one SELECT, or it reaches for files, the
    network, extensions or settings outside the index."""


class QueryFailed(InvalidInput):
    """Analyst SQL that DuckDB rejected (syntax, unknown table or column, types) or that failed
    while running (a conversion or range error)."""


class ObjectLockUnsupported(InvalidInput):
    """The store cannot put a legal hold or retention on objects (a local or memory store, or an
    S3 bucket without Object Lock); ``field`` is ``store``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="store")


class QueryLimitExceeded(ArchiveError):
    """Analyst SQL ran into a limit; ``limit`` says which: ``time`` (it was interrupted or its
    worker killed), ``memory`` (DuckDB's limit or the worker's address-space limit) or
    ``result`` (the result is larger than the byte cap)."""

    def __init__(self, message: str, *, limit: str = "time") -> None:
        super().__init__(message)
        self.limit = limit


class QueryBusy(ArchiveError):
    """Every analyst query worker is busy and the queue of waiting queries is full, or a queued
    query found no free worker within its time limit."""


class Overloaded(ArchiveError):
    """Too many large request bodies are being read or parsed at once; retry shortly."""


class RunBusy(ArchiveError):
    """Another retention run (``archive`` / ``expire``) holds the store's run lease
    (``archiver/runlock.py``); ``holder`` describes it."""

    def __init__(self, message: str, *, holder: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.holder = dict(holder or {})
