"""Shared fixtures: every object store the suite runs against, and a real S3 server.

Stores
    ``store``             parametrized over ``STORE_BACKENDS`` (memory, local, moto, seaweedfs): one
                          fresh, empty store per test. ``store_backend`` names the current one.
    ``reopen_store``      ``reopen_store(store, **options)``: another independent handle on the same
                          storage (a second process/machine: new LocalStore, new S3 client).
    ``s3_backend``        parametrized over ``S3_BACKENDS`` (moto, seaweedfs).
    ``s3_store_factory``  ``s3_store_factory(backend, **S3Config options)``: an S3Store on a fresh
                          Object-Lock-enabled bucket (e.g. ``object_lock_mode="COMPLIANCE"``).
    ``s3_bucket_factory`` ``s3_bucket_factory(backend)``: a fresh bucket (:class:`S3Bucket`), for
                          tests that need raw clients or several stores on one bucket.
    ``s3_faults``         ``s3_faults(store)``: inject 5xx/SlowDown/connection faults into the
                          requests of one S3Store (:class:`S3Faults`).

Servers
    ``seaweedfs``         session-wide ``weed mini`` on free loopback ports, started on first use
                          only by ``tests/seaweedfs.py`` (importable without pytest); its log file
                          is named in the report of any failing test using it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import os
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.awsrequest
import botocore.compat
import botocore.config
import botocore.exceptions
import pytest

# moto adds its request stubber to botocore's built-in handlers when imported; every botocore
# session created afterwards (ours here, and the one archiver.store.s3 shares) carries it, dormant
# until mock_aws() is active. Import it before any session exists, or moto tests reach real AWS.
from moto import mock_aws
from moto.s3.responses import S3Response

from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from archiver.store.s3 import S3Config, S3Store
from tests.seaweedfs import SeaweedFS, SeaweedFSError, run_seaweedfs

# moto 5.2.5 answers ``If-None-Match: *`` by checking for the key and then writing it, without a
# lock, so two racing PUTs can both "win" (real S3 and SeaweedFS give exactly one winner). Make
# moto's PutObject atomic, as S3's is, so race tests exercise our code rather than that moto gap.
_MOTO_PUT_LOCK = threading.Lock()
_moto_put_object = S3Response.put_object


def _atomic_put_object(self: S3Response) -> Any:
    with _MOTO_PUT_LOCK:
        return _moto_put_object(self)


S3Response.put_object = _atomic_put_object  # type: ignore[method-assign]

STORE_BACKENDS = ["memory", "local", "moto", "seaweedfs"]
S3_BACKENDS = ["moto", "seaweedfs"]

_REGION = "us-east-1"
_MOTO_CREDENTIALS = ("moto-access-key", "moto-secret-key")


# One shared boto3 session: it caches the S3 service model, so each further client is cheaper.
_boto_session = boto3.session.Session()
_boto_session_lock = threading.Lock()


def _raw_client(endpoint_url: str | None, key: str, secret: str, **config: Any) -> Any:
    """A plain boto3 S3 client without retries (the caller closes it)."""
    with _boto_session_lock:
        return _boto_session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=_REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=botocore.config.Config(
                retries={"mode": "standard", "total_max_attempts": 1}, **config
            ),
        )


# --------------------------------------------------------------------------------------------------
# SeaweedFS


_STARTUP_TIMEOUT = 30.0
_running_seaweedfs: SeaweedFS | None = None


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS server (``weed mini``) for the whole session, S3 with an access key."""
    global _running_seaweedfs
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")))
        except SeaweedFSError as err:
            pytest.fail(str(err))
        _running_seaweedfs = server
        try:
            yield server
        finally:
            _running_seaweedfs = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    server = _running_seaweedfs
    if (
        server is not None
        and report.failed
        and ("seaweedfs" in item.nodeid or "seaweedfs" in getattr(item, "fixturenames", ()))
    ):
        report.sections.append(
            ("SeaweedFS", f"log file: {server.log_path}\n--- last lines ---\n{server.log_tail()}")
        )
    return report


# --------------------------------------------------------------------------------------------------
# S3 buckets and stores (moto and SeaweedFS)

_names = itertools.count()


def _bucket_name() -> str:
    return f"t{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:8]}"


class _WarmBuckets:
    """Fresh Object-Lock buckets on SeaweedFS, created ahead of need by a background thread.

    SeaweedFS gives every bucket its own volume collection and spends ~0.2 s growing a volume on a
    bucket's first write. The thread writes (and then deletes, version and all) one object into
    each new bucket, so tests get a bucket that is empty *and* fast.
    """

    size = 4

    def __init__(self, server: SeaweedFS) -> None:
        self._client = _raw_client(
            server.endpoint_url, server.access_key_id, server.secret_access_key
        )
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._slots = threading.Semaphore(self.size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="seaweedfs-buckets", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        while True:
            self._slots.acquire()
            if self._stop.is_set():
                return
            try:
                name = _bucket_name()
                self._client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
                warm = self._client.put_object(Bucket=name, Key="warm-up", Body=b"warm-up")
                self._client.delete_object(Bucket=name, Key="warm-up", VersionId=warm["VersionId"])
            except BaseException as err:  # handed to the test that takes the next bucket
                self._ready.put(err)
                return
            self._ready.put(name)

    def take(self) -> str:
        item = self._ready.get(timeout=_STARTUP_TIMEOUT)
        if isinstance(item, BaseException):
            raise RuntimeError("could not prepare a SeaweedFS bucket") from item
        self._slots.release()
        return item

    def close(self) -> None:
        self._stop.set()
        self._slots.release()
        self._thread.join(timeout=10)
        self._client.close()


@pytest.fixture(scope="session")
def _seaweedfs_buckets(seaweedfs: SeaweedFS) -> Iterator[_WarmBuckets]:
    pool = _WarmBuckets(seaweedfs)
    yield pool
    pool.close()


@dataclass
class S3Bucket:
    """A fresh Object-Lock-enabled bucket on one S3 backend."""

    backend: str
    name: str
    endpoint_url: str | None
    access_key_id: str
    secret_access_key: str
    region: str = _REGION
    _cleanup: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def config(self, **options: Any) -> S3Config:
        settings: dict[str, Any] = {
            "bucket": self.name,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
        }
        settings.update(options)
        return S3Config(**settings)

    def store(self, **options: Any) -> S3Store:
        """A new S3Store (with its own client) on this bucket; closed at teardown."""
        store = S3Store(self.config(**options))
        self._cleanup.append(store.close)
        return store

    def client(self) -> Any:
        """A raw boto3 client on this backend, to arrange or inspect what the store cannot."""
        client = _raw_client(self.endpoint_url, self.access_key_id, self.secret_access_key)
        self._cleanup.append(client.close)
        return client


@pytest.fixture
def s3_bucket_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[str], S3Bucket]]:
    """``make(backend)`` → a fresh Object-Lock-enabled :class:`S3Bucket` on moto or SeaweedFS."""
    buckets: list[S3Bucket] = []
    with contextlib.ExitStack() as stack:
        moto_started = False

        def make(backend: str) -> S3Bucket:
            nonlocal moto_started
            if backend == "moto":
                if not moto_started:
                    stack.enter_context(mock_aws())
                    moto_started = True
                bucket = S3Bucket("moto", _bucket_name(), None, *_MOTO_CREDENTIALS)
                bucket.client().create_bucket(Bucket=bucket.name, ObjectLockEnabledForBucket=True)
            elif backend == "seaweedfs":
                server: SeaweedFS = request.getfixturevalue("seaweedfs")
                pool: _WarmBuckets = request.getfixturevalue("_seaweedfs_buckets")
                bucket = S3Bucket(
                    "seaweedfs",
                    pool.take(),
                    server.endpoint_url,
                    server.access_key_id,
                    server.secret_access_key,
                )
            else:
                raise ValueError(f"unknown S3 backend {backend!r}")
            buckets.append(bucket)
            return bucket

        try:
            yield make
        finally:
            for bucket in buckets:
                for close in reversed(bucket._cleanup):
                    close()


@pytest.fixture
def s3_store_factory(s3_bucket_factory: Callable[[str], S3Bucket]) -> Callable[..., S3Store]:
    """``make(backend, **S3Config options)`` → an S3Store on a fresh bucket, under a prefix."""

    def make(backend: str, **options: Any) -> S3Store:
        options.setdefault("prefix", f"archive-{uuid.uuid4().hex[:8]}")
        return s3_bucket_factory(backend).store(**options)

    return make


@pytest.fixture(params=S3_BACKENDS)
def s3_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --------------------------------------------------------------------------------------------------
# The store every contract test runs against


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(
    store_backend: str, tmp_path: Path, s3_store_factory: Callable[..., S3Store]
) -> ObjectStore:
    """A fresh, empty store of each kind."""
    if store_backend == "memory":
        return MemoryStore()
    if store_backend == "local":
        return LocalStore(tmp_path / "store")
    return s3_store_factory(store_backend)


@pytest.fixture
def reopen_store() -> Iterator[Callable[..., ObjectStore]]:
    """``reopen(store, **options)``: an independent handle on the same storage.

    Another LocalStore on the same directory, another S3Store (own client, own connections) on the
    same bucket and prefix; a MemoryStore has no storage outside itself, so it is returned as is.
    """
    opened: list[S3Store] = []

    def reopen(store: ObjectStore, **options: Any) -> ObjectStore:
        if isinstance(store, MemoryStore):
            if options:
                raise ValueError("a MemoryStore cannot be reopened with options")
            return store
        if isinstance(store, LocalStore):
            return LocalStore(store.root, **options)
        if isinstance(store, S3Store):
            other = S3Store(dataclasses.replace(store.config, **options))
            opened.append(other)
            return other
        raise TypeError(f"cannot reopen {store!r}")

    yield reopen
    for other in opened:
        other.close()


# --------------------------------------------------------------------------------------------------
# Fault injection for S3 stores


class _RawBody(io.BytesIO):
    """Enough of a urllib3 response for botocore: ``stream()`` for errors, ``read()`` for bodies."""

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self.read()


@dataclass
class _Fault:
    status: int | None  # None: a connection error
    code: str = ""
    body: bytes | None = None  # a verbatim answer instead of an S3 error document
    headers: dict[str, str] = field(default_factory=dict)


class S3Faults:
    """Fake answers for chosen operations of one S3Store's client.

    The handler is registered with ``register_first`` on ``before-send``, so it runs before moto's
    own stubber. A fake *response* replaces the real request on SeaweedFS (the request is never
    sent), but moto's stubber still runs after us and executes the request, so on moto a faulted
    write is committed and only its answer is lost. A fake *connection error* is raised before
    anything else runs, on both backends.
    """

    def __init__(self, store: S3Store) -> None:
        self._events = store.client.meta.events
        self._queue: dict[str, deque[_Fault]] = {}
        self.seen: list[str] = []  # every operation the client tried to send, faulted or not
        self._id = f"s3-faults-{uuid.uuid4().hex}"
        handler: Any = self._before_send
        self._events.register_first("before-send.s3", handler, unique_id=self._id)

    def fail(self, operation: str, status: int, code: str, *, times: int = 1) -> None:
        """Answer the next ``times`` ``operation`` requests (e.g. "PutObject") with an error."""
        self._queue.setdefault(operation, deque()).extend([_Fault(status, code)] * times)

    def disconnect(self, operation: str, *, times: int = 1) -> None:
        """Make the next ``times`` ``operation`` requests fail to connect."""
        self._queue.setdefault(operation, deque()).extend([_Fault(None)] * times)

    def respond(
        self, operation: str, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next ``operation`` request with exactly this status, body and headers."""
        fault = _Fault(status, body=body, headers=dict(headers or {}))
        self._queue.setdefault(operation, deque()).append(fault)

    def count(self, operation: str) -> int:
        return self.seen.count(operation)

    def remove(self) -> None:
        self._events.unregister("before-send.s3", unique_id=self._id)

    def _before_send(
        self, request: botocore.awsrequest.AWSPreparedRequest, event_name: str, **_: Any
    ) -> botocore.awsrequest.AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        self.seen.append(operation)
        queue = self._queue.get(operation)
        if not queue:
            return None
        fault = queue.popleft()
        if fault.status is None:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)
        headers = botocore.compat.HTTPHeaders()
        if fault.body is not None:
            body = fault.body
            for name, value in fault.headers.items():
                headers[name] = value
        else:
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{fault.code}</Code><Message>injected {fault.code}</Message>"
                "<RequestId>injected</RequestId></Error>"
            ).encode()
            headers["Content-Type"] = "application/xml"
        if request.method == "HEAD":
            body = b""
        headers["Content-Length"] = str(len(body))
        return botocore.awsrequest.AWSResponse(request.url, fault.status, headers, _RawBody(body))


@pytest.fixture
def s3_faults() -> Iterator[Callable[[S3Store], S3Faults]]:
    """``s3_faults(store)`` → an :class:`S3Faults` attached to that store's client."""
    attached: list[S3Faults] = []

    def attach(store: S3Store) -> S3Faults:
        faults = S3Faults(store)
        attached.append(faults)
        return faults

    yield attach
    for faults in attached:
        faults.remove()
