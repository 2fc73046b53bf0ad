"""S3-compatible object storage (AWS, SeaweedFS, MinIO, moto) with write-once semantics.

This is the only module that may import boto3/botocore; nothing from them ever leaves it. Every
botocore error goes through one translation table (:data:`_ERROR_TABLE`, :func:`_translate`).

Writes are create-only: ``PutObject`` with ``If-None-Match: *`` and a ``x-amz-checksum-sha256``
the server verifies, plus Object Lock retention when configured. When the key already exists (412)
the stored object is compared with ours: identical bytes are an idempotent success (``False``),
different bytes an :class:`~archiver.errors.ImmutableConflict`. The comparison uses the stored
full-object SHA-256 checksum when the server keeps one (no download; works for objects already moved
to an archive storage class) and otherwise downloads the object. That checksum is trustworthy
because AWS and SeaweedFS verify it on write (moto stores it unverified).

Retries are ours, not botocore's (botocore runs with ``max_attempts=1``): 5xx (except 501),
``SlowDown``/throttling, ``RequestTimeout``, ``ConditionalRequestConflict`` (409, a concurrent
conditional write in flight) and connection/streaming errors are retried with capped exponential
backoff and jitter, then surface as :class:`~archiver.errors.StoreUnavailable`. A put whose first
attempt reached the server but whose answer was lost comes back as 412 on the retry; the comparison
above turns that into ``False`` (nothing new created by *this* attempt), never into a conflict.

Object Lock: with ``object_lock_mode`` set, every write outside ``object_lock_exempt_prefixes``
(``index/``) carries retention until now + ``object_lock_days``, unless the caller chooses the
object's own date (:meth:`S3Store.put_locked`: the archive locks execution records until their
policy lets them expire). Legal holds are set and cleared on the current version of an object
(:meth:`S3Store.set_legal_hold`); a bucket without Object Lock answers ``InvalidRequest``, raised as
:class:`~archiver.errors.ObjectLockUnsupported`. A storage-class move keeps the object's lock.

``delete`` removes every version of the key (in a versioned / Object Lock bucket a plain DELETE
would only add a delete marker: the bytes would stay and readers would wrongly see the record as
gone). Versions are removed oldest first, so a retention refusal never resurrects older content; a
locked version raises :class:`~archiver.errors.RetentionLocked` and the object stays readable.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from archiver.errors import (
    ArchiveError,
    ImmutableConflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    ObjectArchived,
    ObjectLockUnsupported,
    RetentionLocked,
    StorageFull,
    StoreUnavailable,
)
from archiver.layout import check_key
from archiver.store.base import ObjectInfo, ObjectLockState

if TYPE_CHECKING:
    import boto3.session
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Config", "S3Store"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where and how to talk to an S3-compatible bucket."""

    bucket: str
    #: key prefix inside the bucket; leading/trailing slashes are ignored
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_days: int | None = None
    #: keys under these prefixes are written without Object Lock: the index is rebuilt from the
    #: objects and its superseded parts must stay deletable (the records themselves stay locked)
    object_lock_exempt_prefixes: tuple[str, ...] = ("index/",)
    #: attempts per request (1 = no retry) for 5xx, SlowDown, throttling and connection errors
    max_attempts: int = 5
    storage_class: str | None = None
    #: backoff before retry n is drawn from [d/2, d] with d = min(retry_max_delay, base * 2**(n-1))
    retry_base_delay: float = 0.1
    retry_max_delay: float = 5.0
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_pool_connections: int = 32

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise InvalidInput("bucket must be a non-empty bucket name", field="bucket")
        prefix = self.prefix.strip("/")
        if prefix:
            check_key(prefix)
        if (self.object_lock_mode is None) != (self.object_lock_days is None):
            raise InvalidInput(
                "object_lock_mode and object_lock_days must be set together",
                field="object_lock_days",
            )
        if self.object_lock_mode not in (None, "GOVERNANCE", "COMPLIANCE"):
            raise InvalidInput(
                "object_lock_mode must be GOVERNANCE or COMPLIANCE", field="object_lock_mode"
            )
        if self.object_lock_days is not None and self.object_lock_days < 1:
            raise InvalidInput("object_lock_days must be at least 1", field="object_lock_days")
        if self.max_attempts < 1:
            raise InvalidInput("max_attempts must be at least 1", field="max_attempts")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise InvalidInput(
                "access_key_id and secret_access_key must be set together",
                field="secret_access_key",
            )


# --------------------------------------------------------------------------------------------------
# The one translation table: botocore error code -> (our exception, retryable?)


class _PreconditionFailedError(ArchiveError):
    """412 on a conditional write; handled inside :meth:`S3Store.put`, never raised out of it."""


_ERROR_TABLE: Mapping[str, tuple[type[ArchiveError], bool]] = {
    # missing things
    "NoSuchKey": (NotFound, False),
    "NoSuchVersion": (NotFound, False),
    "NotFound": (NotFound, False),
    "404": (NotFound, False),  # HEAD has no body, botocore uses the status as the code
    # a conditional write lost: the key exists
    "PreconditionFailed": (_PreconditionFailedError, False),
    "412": (_PreconditionFailedError, False),
    # the server refused our bytes: they do not match the digest we sent
    "BadDigest": (IntegrityError, False),
    "InvalidDigest": (IntegrityError, False),
    "XAmzContentSHA256Mismatch": (IntegrityError, False),
    # transient: retried with backoff, then StoreUnavailable
    "SlowDown": (StoreUnavailable, True),
    "Throttling": (StoreUnavailable, True),
    "ThrottlingException": (StoreUnavailable, True),
    "RequestThrottled": (StoreUnavailable, True),
    "RequestLimitExceeded": (StoreUnavailable, True),
    "TooManyRequests": (StoreUnavailable, True),
    "429": (StoreUnavailable, True),
    "RequestTimeout": (StoreUnavailable, True),
    "InternalError": (StoreUnavailable, True),
    "ServiceUnavailable": (StoreUnavailable, True),
    "ConditionalRequestConflict": (StoreUnavailable, True),  # 409: concurrent conditional write
    # the server is out of space (MinIO; 507 Insufficient Storage from others): not transient
    "XMinioStorageFull": (StorageFull, False),
    "InsufficientStorage": (StorageFull, False),
    "507": (StorageFull, False),
    # archived objects: retention jobs must restore them first
    "InvalidObjectState": (ObjectArchived, False),
    "NotImplemented": (ArchiveError, False),  # 501: retrying cannot help
}

# Codes that mean "Object Lock / legal hold said no" when the request was a versioned delete or a
# retention change. AccessDenied elsewhere is a permissions problem (plain ArchiveError).
_LOCK_REFUSAL_CODES = frozenset({"AccessDenied", "ObjectLocked"})

# Codes that mean "this bucket (or server) has no Object Lock" on a legal hold request.
_NO_OBJECT_LOCK_CODES = frozenset(
    {"InvalidRequest", "NotImplemented", "ObjectLockConfigurationNotFoundError"}
)

#: a retain-until date closer than this is not worth a lock (and S3 refuses dates in the past)
_MIN_RETENTION = timedelta(minutes=1)


def _error_code(err: ClientError) -> tuple[str, int]:
    error = err.response.get("Error", {})
    meta = err.response.get("ResponseMetadata", {})
    return str(error.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)


def _is_retryable(err: Exception) -> bool:
    if isinstance(err, ClientError):
        code, status = _error_code(err)
        entry = _ERROR_TABLE.get(code)
        if entry is not None:
            return entry[1]
        return status >= 500 and status not in (501, 507)
    return isinstance(err, BotoConnectionError | HTTPClientError | IncompleteReadError)


def _translate(
    err: Exception, what: str, *, key: str | None = None, lock_refusal: bool = False
) -> ArchiveError:
    """Map a botocore/boto3 exception to our tree (the caller raises it ``from err``)."""
    target = f"{what} {key}" if key is not None else what
    if isinstance(err, ClientError):
        code, status = _error_code(err)
        message = err.response.get("Error", {}).get("Message", "") or str(err)
        detail = f"{target}: {code or status} {message}".rstrip()
        if lock_refusal and code in _LOCK_REFUSAL_CODES:
            return RetentionLocked(
                f"{target}: refused by Object Lock retention or legal hold ({code})"
            )
        entry = _ERROR_TABLE.get(code)
        if entry is not None:
            cls, retryable = entry
            if retryable:
                return StoreUnavailable(f"{detail} (gave up after retries)")
            return cls(detail)
        if status == 507:
            return StorageFull(detail)
        if status >= 500 and status != 501:
            return StoreUnavailable(f"{detail} (gave up after retries)")
        return ArchiveError(detail)
    if isinstance(err, FlexibleChecksumError | ChecksumError):
        return IntegrityError(f"{target}: checksum mismatch on download: {err}")
    if isinstance(err, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return StoreUnavailable(f"{target}: {type(err).__name__}: {err} (gave up after retries)")
    return ArchiveError(f"{target}: {type(err).__name__}: {err}")


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _full_object_checksum(value: object) -> str | None:
    """A stored ChecksumSHA256 that covers the whole object (not a multipart composite)."""
    if isinstance(value, str) and value and "-" not in value:
        return value
    return None


# --------------------------------------------------------------------------------------------------
# One boto3 session per process: it caches the loaded service model, which makes every further
# client twice as cheap to build. Credentials are passed per client, never shared between stores.

_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def _shared_session() -> boto3.session.Session:
    global _session
    if _session is None:
        import boto3.session  # only needed once a request is made

        _session = boto3.session.Session()
    return _session


# --------------------------------------------------------------------------------------------------


class S3Store:
    """Write-once object store on an S3-compatible bucket (see the module docstring)."""

    def __init__(self, config: S3Config, *, client: Any | None = None) -> None:
        self.config = config
        self._prefix = config.prefix.strip("/")
        self._base = f"{self._prefix}/" if self._prefix else ""
        self.url = (
            f"s3://{config.bucket}/{self._prefix}" if self._prefix else f"s3://{config.bucket}"
        )
        self._client: S3Client | None = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        #: replaced by tests to observe backoff without sleeping
        self._sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # -- client ------------------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client, built on first use (never at import or construction time)."""
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    client = self._client = self._build_client()
        return client

    def _build_client(self) -> S3Client:
        cfg = self.config
        botocore_config = Config(
            region_name=cfg.region,
            # botocore must not retry on its own: we retry (and count) every attempt ourselves.
            # (Its "max_attempts" counts *retries*: max_attempts=1 would still retry once.)
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            max_pool_connections=cfg.max_pool_connections,
            s3={"addressing_style": "path"} if cfg.endpoint_url else None,
        )
        try:
            with _session_lock:  # boto3 sessions are not thread-safe; the clients they make are
                return _shared_session().client(
                    "s3",
                    region_name=cfg.region,
                    endpoint_url=cfg.endpoint_url,
                    aws_access_key_id=cfg.access_key_id,
                    aws_secret_access_key=cfg.secret_access_key,
                    config=botocore_config,
                )
        except BotoCoreError as err:
            raise ArchiveError(f"cannot create an S3 client for {self.url}: {err}") from err

    def close(self) -> None:
        """Release the HTTP connections of a client this store built itself (rebuilt on reuse)."""
        if not self._owns_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> S3Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        return self._base + check_key(key)

    def _backoff(self, attempt: int) -> float:
        cfg = self.config
        ceiling = min(cfg.retry_max_delay, cfg.retry_base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter, not crypto

    def _call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        key: str | None = None,
        lock_refusal: bool = False,
    ) -> T:
        """Run one S3 request with our retry policy; raise only ArchiveError subclasses."""
        attempt = 1
        while True:
            try:
                return fn()
            except (ClientError, BotoCoreError) as err:
                if attempt >= self.config.max_attempts or not _is_retryable(err):
                    raise _translate(err, what, key=key, lock_refusal=lock_refusal) from err
                delay = self._backoff(attempt)
                _log.info(
                    "%s %s: %s; retry %d/%d in %.2fs",
                    what,
                    key or "",
                    err,
                    attempt,
                    self.config.max_attempts - 1,
                    delay,
                )
                attempt += 1
                self._sleep(delay)

    # -- protocol ----------------------------------------------------------------------------------

    @property
    def object_lock_enabled(self) -> bool:
        """True when every write carries Object Lock retention (``object_lock_mode`` is set)."""
        return self.config.object_lock_mode is not None

    def _locks(self, key: str) -> bool:
        return self.config.object_lock_mode is not None and not key.startswith(
            self.config.object_lock_exempt_prefixes
        )

    def put(self, key: str, data: bytes) -> bool:
        return self.put_locked(key, data)

    def put_locked(
        self,
        key: str,
        data: bytes,
        *,
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> bool:
        """``put`` with this object's own Object Lock.

        ``retain_until`` replaces the default retain-until date (now + ``object_lock_days``) when
        the store is configured with a lock mode; a date that is not in the future means no
        retention at all (the policy already lets the object expire). ``legal_hold`` sets a legal
        hold in the same request (the bucket must have Object Lock). Keys under
        ``object_lock_exempt_prefixes`` are never locked nor held.
        """
        full = self._full_key(key)
        data = bytes(data)
        checksum = _sha256_b64(data)
        params: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Key": full,
            "Body": data,
            "IfNoneMatch": "*",
            # The algorithm header is what AWS (and moto) require on Object Lock writes; the value
            # is ours, so the server verifies the bytes against the digest we computed.
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": checksum,
        }
        if self.config.storage_class:
            params["StorageClass"] = self.config.storage_class
        client = self.client
        # A key that exists (412) but vanishes before we can compare it (a concurrent delete) is
        # tried again, a bounded number of times.
        exempt = key.startswith(self.config.object_lock_exempt_prefixes)
        if legal_hold and not exempt:
            params["ObjectLockLegalHoldStatus"] = "ON"
        for _ in range(self.config.max_attempts):
            if self._locks(key):
                assert self.config.object_lock_days is not None  # checked by S3Config
                now = datetime.now(UTC)
                until = (
                    now + timedelta(days=self.config.object_lock_days)
                    if retain_until is None
                    else retain_until
                )
                if until > now + _MIN_RETENTION:
                    params["ObjectLockMode"] = self.config.object_lock_mode
                    params["ObjectLockRetainUntilDate"] = until
            try:
                self._call("put", functools.partial(client.put_object, **params), key=key)
            except _PreconditionFailedError:
                same = self._matches_existing(key, full, data, checksum)
                if same is None:
                    continue
                if same:
                    return False
                raise ImmutableConflict(
                    f"{key} already exists in {self.url} with different content", key=key
                ) from None
            return True
        # 412 every time, yet no object: SeaweedFS (a filer underneath) answers that way when the
        # key is already a "directory", i.e. a prefix of other keys. The name is taken all the same.
        raise ImmutableConflict(
            f"{key}: {self.url} refuses to create it (412) although no such object exists; "
            "on filesystem-backed servers such as SeaweedFS a key cannot also be a prefix of "
            "other keys",
            key=key,
        )

    def _matches_existing(self, key: str, full: str, data: bytes, checksum: str) -> bool | None:
        """Whether the object at ``full`` holds ``data``; None when it does not exist (anymore)."""
        bucket = self.config.bucket
        client = self.client
        try:
            meta = self._call(
                "head",
                lambda: client.head_object(Bucket=bucket, Key=full, ChecksumMode="ENABLED"),
                key=key,
            )
        except NotFound:
            return None
        if meta.get("ContentLength") != len(data):
            return False
        stored = _full_object_checksum(meta.get("ChecksumSHA256"))
        if stored is not None:
            return stored == checksum
        try:
            existing = self._get(key, full)
        except NotFound:
            return None
        return existing == data

    def get(self, key: str) -> bytes:
        return self._get(key, self._full_key(key))

    def _get(self, key: str, full: str) -> bytes:
        bucket = self.config.bucket
        client = self.client

        def fetch() -> tuple[bytes, str | None]:
            response = client.get_object(Bucket=bucket, Key=full, ChecksumMode="ENABLED")
            body = response["Body"]
            try:
                return body.read(), _full_object_checksum(response.get("ChecksumSHA256"))
            finally:
                body.close()

        data, stored = self._call("get", fetch, key=key)
        if stored is not None and _sha256_b64(data) != stored:
            raise IntegrityError(f"get {key}: downloaded bytes do not match the stored SHA-256")
        return data

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full_key(key)
        bucket = self.config.bucket
        client = self.client
        try:
            meta = self._call("head", lambda: client.head_object(Bucket=bucket, Key=full), key=key)
        except NotFound:
            return None
        return ObjectInfo(
            key=key,
            size=int(meta["ContentLength"]),
            last_modified=meta.get("LastModified"),
            storage_class=meta.get("StorageClass", "STANDARD"),
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        bucket = self.config.bucket
        client = self.client
        full_prefix = self._base + prefix
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": full_prefix}
            if token is not None:
                kwargs["ContinuationToken"] = token
            page = self._call(
                "list", functools.partial(client.list_objects_v2, **kwargs), key=prefix
            )
            for item in page.get("Contents", []):
                name = item["Key"]
                if not name.startswith(self._base):  # pragma: no cover - server bug guard
                    continue
                yield ObjectInfo(
                    key=name[len(self._base) :],
                    size=int(item["Size"]),
                    last_modified=item.get("LastModified"),
                    storage_class=item.get("StorageClass") or "STANDARD",
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        bucket = self.config.bucket
        client = self.client
        versions: list[str] = []
        markers: list[str] = []
        key_marker: str | None = None
        version_marker: str | None = None
        while True:
            # the delimiter folds any "full/..." keys into one CommonPrefix instead of listing them
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": full, "Delimiter": "/"}
            if key_marker is not None:
                kwargs["KeyMarker"] = key_marker
            if version_marker is not None:
                kwargs["VersionIdMarker"] = version_marker
            page = self._call(
                "delete", functools.partial(client.list_object_versions, **kwargs), key=key
            )
            versions += [
                v.get("VersionId") or "null"
                for v in page.get("Versions", [])
                if v.get("Key") == full
            ]
            markers += [
                m.get("VersionId") or "null"
                for m in page.get("DeleteMarkers", [])
                if m.get("Key") == full
            ]
            if not page.get("IsTruncated"):
                break
            key_marker = page.get("NextKeyMarker")
            version_marker = page.get("NextVersionIdMarker")
        # Listings are newest first: delete the oldest data first and the delete markers last, so a
        # refusal part-way never makes older bytes visible again.
        for version_id in [*reversed(versions), *markers]:
            self._call(
                "delete",
                functools.partial(
                    client.delete_object, Bucket=bucket, Key=full, VersionId=version_id
                ),
                key=key,
                lock_refusal=True,
            )

    # -- bucket lifecycle (retention jobs only) ---------------------------------------------------

    def put_bucket_lifecycle(self, configuration: Mapping[str, Any]) -> bool:
        """Set the bucket's lifecycle configuration; False when the server does not implement
        lifecycle rules (SeaweedFS answers 501 NotImplemented), any other refusal raises."""
        client = self.client
        try:
            self._call(
                "put lifecycle",
                functools.partial(
                    client.put_bucket_lifecycle_configuration,
                    Bucket=self.config.bucket,
                    LifecycleConfiguration=dict(configuration),  # type: ignore[arg-type]
                ),
            )
        except ArchiveError as err:
            cause = err.__cause__
            if isinstance(cause, ClientError) and (
                _error_code(cause)[0] == "NotImplemented" or _error_code(cause)[1] == 501
            ):
                return False
            raise
        return True

    # -- storage classes (retention jobs only) ------------------------------------------------------

    def set_storage_class(self, key: str, storage_class: str) -> bool:
        """Move ``key`` to ``storage_class`` by copying it onto itself, verified (same length and
        SHA-256, new class) before older versions are removed where Object Lock allows.
        False when it already was in that class."""
        full = self._full_key(key)
        bucket = self.config.bucket
        client = self.client

        def head() -> Any:
            return self._call(
                "head",
                lambda: client.head_object(Bucket=bucket, Key=full, ChecksumMode="ENABLED"),
                key=key,
            )

        before = head()
        if before.get("StorageClass", "STANDARD") == storage_class:
            return False
        source: dict[str, str] = {"Bucket": bucket, "Key": full}
        if before.get("VersionId") and before["VersionId"] != "null":
            source["VersionId"] = before["VersionId"]
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": full,
            "CopySource": source,
            "StorageClass": storage_class,
            "MetadataDirective": "COPY",
            "ChecksumAlgorithm": "SHA256",
        }
        # the copy keeps the source's own Object Lock (its retain-until date from the policy,
        # its legal hold), not the store's default
        source_until = before.get("ObjectLockRetainUntilDate")
        if before.get("ObjectLockMode") and source_until is not None:
            if source_until > datetime.now(UTC) + _MIN_RETENTION:
                params["ObjectLockMode"] = before["ObjectLockMode"]
                params["ObjectLockRetainUntilDate"] = source_until
        elif self._locks(key) and self.config.object_lock_days:
            params["ObjectLockMode"] = self.config.object_lock_mode
            params["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self.config.object_lock_days
            )
        if before.get("ObjectLockLegalHoldStatus") == "ON":
            params["ObjectLockLegalHoldStatus"] = "ON"
        self._call("copy", functools.partial(client.copy_object, **params), key=key)
        after = head()
        old_sum = _full_object_checksum(before.get("ChecksumSHA256"))
        new_sum = _full_object_checksum(after.get("ChecksumSHA256"))
        if (
            after.get("StorageClass", "STANDARD") != storage_class
            or after.get("ContentLength") != before.get("ContentLength")
            or (old_sum is not None and new_sum is not None and old_sum != new_sum)
        ):
            raise IntegrityError(f"copy {key} to {storage_class}: the copy does not verify")
        page = self._call(
            "versions",
            functools.partial(client.list_object_versions, Bucket=bucket, Prefix=full),
            key=key,
        )
        for version in page.get("Versions", []):
            if version.get("Key") == full and not version.get("IsLatest"):
                with contextlib.suppress(RetentionLocked):
                    self._call(
                        "delete",
                        functools.partial(
                            client.delete_object,
                            Bucket=bucket,
                            Key=full,
                            VersionId=version.get("VersionId") or "null",
                        ),
                        key=key,
                        lock_refusal=True,
                    )
        return True

    def restore_state(self, key: str) -> str:
        """``hot`` (readable as it is), ``archived``, ``restoring`` or ``restored``."""
        full = self._full_key(key)
        bucket = self.config.bucket
        client = self.client
        meta = self._call("head", lambda: client.head_object(Bucket=bucket, Key=full), key=key)
        if meta.get("StorageClass") not in ("GLACIER", "DEEP_ARCHIVE"):
            return "hot"
        restore = str(meta.get("Restore") or "")
        if 'ongoing-request="true"' in restore:
            return "restoring"
        if 'ongoing-request="false"' in restore:
            return "restored"
        return "archived"

    def restore(self, key: str, days: int = 7, tier: str = "Standard") -> str:
        """Start restoring an archived object (idempotent); its :meth:`restore_state` after."""
        state = self.restore_state(key)
        if state != "archived":
            return state
        full = self._full_key(key)
        client = self.client
        request = {"Days": days, "GlacierJobParameters": {"Tier": tier}}
        try:
            self._call(
                "restore",
                functools.partial(
                    client.restore_object,
                    Bucket=self.config.bucket,
                    Key=full,
                    RestoreRequest=request,  # type: ignore[arg-type]
                ),
                key=key,
            )
        except ArchiveError as err:
            cause = err.__cause__
            if not (
                isinstance(cause, ClientError)
                and _error_code(cause)[0] == "RestoreAlreadyInProgress"
            ):
                raise
        return self.restore_state(key)

    # -- Object Lock: legal holds (retention jobs and legal holds only) --------------------------

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Set (``on``) or clear the legal hold of the current version of ``key``.

        Older versions (left by a storage-class move whose source was still locked) are not
        touched: they hold the same bytes and are removed oldest first by ``delete`` anyway.
        NotFound when the key does not exist; ObjectLockUnsupported when the bucket has no Object
        Lock (S3 ``InvalidRequest``) or the server does not implement legal holds (501).
        """
        full = self._full_key(key)
        bucket = self.config.bucket
        client = self.client
        # asked first: SeaweedFS answers a legal hold on a missing key with a 500 (retried in vain)
        meta = self._call("head", lambda: client.head_object(Bucket=bucket, Key=full), key=key)
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": full,
            "LegalHold": {"Status": "ON" if on else "OFF"},
        }
        if meta.get("VersionId") and meta["VersionId"] != "null":
            params["VersionId"] = meta["VersionId"]
        try:
            self._call(
                "legal hold", functools.partial(client.put_object_legal_hold, **params), key=key
            )
        except ArchiveError as err:
            cause = err.__cause__
            if isinstance(cause, ClientError) and (
                _error_code(cause)[0] in _NO_OBJECT_LOCK_CODES or _error_code(cause)[1] == 501
            ):
                raise ObjectLockUnsupported(
                    f"{self.url}: the bucket has no Object Lock (or the server no legal holds); "
                    "the hold is recorded as data only"
                ) from err
            raise

    def object_lock(self, key: str) -> ObjectLockState:
        """Retention mode, retain-until date and legal hold of the current version of ``key``.

        Read with HEAD (moto 5.2.5 answers GetObjectRetention with a 500); NotFound if absent.
        """
        full = self._full_key(key)
        bucket = self.config.bucket
        client = self.client
        meta = self._call("head", lambda: client.head_object(Bucket=bucket, Key=full), key=key)
        return ObjectLockState(
            mode=meta.get("ObjectLockMode"),
            retain_until=meta.get("ObjectLockRetainUntilDate"),
            legal_hold=meta.get("ObjectLockLegalHoldStatus") == "ON",
        )
