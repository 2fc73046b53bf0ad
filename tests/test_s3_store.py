"""S3Store beyond the shared contract: retries, error translation, checksums, Object Lock, versions.

Runs against moto and a real SeaweedFS (``s3_backend``). Where the two differ the test says so.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import pytest

from archiver.errors import (
    ArchiveError,
    ImmutableConflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    ObjectArchived,
    RetentionLocked,
    StoreUnavailable,
)
from archiver.store import s3 as s3_module
from archiver.store.base import ObjectStore
from archiver.store.s3 import S3Config, S3Store, _translate

if TYPE_CHECKING:
    from tests.conftest import S3Bucket, S3Faults

StoreFactory = Callable[..., S3Store]
FaultsFactory = Callable[[S3Store], "S3Faults"]


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _record_sleeps(store: S3Store) -> list[float]:
    sleeps: list[float] = []
    store._sleep = sleeps.append
    return sleeps


def _client_error(code: str, status: int, message: str = "boom") -> botocore.exceptions.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(response, "PutObject")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# configuration and construction (no server needed)


def test_config_and_url() -> None:
    store = S3Store(S3Config(bucket="archive", prefix="/tenant-a/prod/"))
    assert store.url == "s3://archive/tenant-a/prod"
    assert S3Store(S3Config(bucket="archive")).url == "s3://archive"
    assert isinstance(store, ObjectStore)
    assert store._client is None  # built on first use only


@pytest.mark.parametrize(
    "options",
    [
        {"bucket": ""},
        {"bucket": "a/b"},
        {"bucket": "b", "prefix": "a//b"},
        {"bucket": "b", "prefix": "a/../b"},
        {"bucket": "b", "object_lock_mode": "COMPLIANCE"},
        {"bucket": "b", "object_lock_days": 3},
        {"bucket": "b", "object_lock_mode": "LEGAL", "object_lock_days": 3},
        {"bucket": "b", "object_lock_mode": "GOVERNANCE", "object_lock_days": 0},
        {"bucket": "b", "max_attempts": 0},
        {"bucket": "b", "access_key_id": "only-the-key"},
    ],
)
def test_config_rejects_inconsistent_settings(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        S3Config(**options)


def test_importing_the_factory_does_not_load_botocore() -> None:
    code = (
        "import sys, archiver.store.factory as f; "
        "f.store_from_url('memory:'); "
        "assert 'botocore' not in sys.modules and 'boto3' not in sys.modules, 'loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------------------------------
# the translation table and the retry loop, on fabricated botocore errors


@pytest.mark.parametrize(
    ("code", "status", "lock_refusal", "expected"),
    [
        ("NoSuchKey", 404, False, NotFound),
        ("404", 404, False, NotFound),
        ("NoSuchVersion", 404, False, NotFound),
        ("BadDigest", 400, False, IntegrityError),
        ("InvalidDigest", 400, False, IntegrityError),
        ("XAmzContentSHA256Mismatch", 400, False, IntegrityError),
        ("AccessDenied", 403, True, RetentionLocked),
        ("AccessDenied", 403, False, ArchiveError),
        ("SignatureDoesNotMatch", 403, False, ArchiveError),
        ("NoSuchBucket", 404, False, ArchiveError),
        ("InvalidObjectState", 403, False, ObjectArchived),
        ("SlowDown", 503, False, StoreUnavailable),
        ("InternalError", 500, False, StoreUnavailable),
        ("503", 503, False, StoreUnavailable),
        ("ConditionalRequestConflict", 409, False, StoreUnavailable),
        ("NotImplemented", 501, False, ArchiveError),
    ],
)
def test_translation_table(
    code: str, status: int, lock_refusal: bool, expected: type[ArchiveError]
) -> None:
    error = _translate(_client_error(code, status), "op", key="k/1", lock_refusal=lock_refusal)
    assert type(error) is expected
    assert "k/1" in str(error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), StoreUnavailable),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), StoreUnavailable),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), StoreUnavailable),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"), StoreUnavailable),
        (
            botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2),
            StoreUnavailable,
        ),
        (botocore.exceptions.FlexibleChecksumError(error_msg="mismatch"), IntegrityError),
        (botocore.exceptions.NoCredentialsError(), ArchiveError),
        (botocore.exceptions.ParamValidationError(report="bad"), ArchiveError),
    ],
)
def test_translation_of_botocore_exceptions(error: Exception, expected: type[ArchiveError]) -> None:
    assert type(_translate(error, "op")) is expected


def _failing(errors: list[Exception], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


def test_retry_loop_gives_up_with_store_unavailable_and_capped_backoff() -> None:
    store = S3Store(
        S3Config(bucket="b", max_attempts=6, retry_base_delay=0.1, retry_max_delay=0.4),
        client=object(),
    )
    sleeps = _record_sleeps(store)
    fn, calls = _failing([_client_error("SlowDown", 503) for _ in range(10)])
    with pytest.raises(StoreUnavailable) as caught:
        store._call("put", fn, key="k")
    assert len(calls) == 6
    assert isinstance(caught.value.__cause__, botocore.exceptions.ClientError)
    ceilings = [0.1, 0.2, 0.4, 0.4, 0.4]  # exponential, capped at retry_max_delay
    assert len(sleeps) == 5
    for slept, ceiling in zip(sleeps, ceilings, strict=True):
        assert ceiling / 2 <= slept <= ceiling


def test_retry_loop_recovers_and_does_not_retry_permanent_errors() -> None:
    store = S3Store(S3Config(bucket="b", max_attempts=5), client=object())
    sleeps = _record_sleeps(store)
    fn, calls = _failing(
        [
            _client_error("InternalError", 500),
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
            _client_error("ConditionalRequestConflict", 409),
        ]
    )
    assert store._call("put", fn) == "ok"
    assert len(calls) == 4 and len(sleeps) == 3

    for permanent in (
        _client_error("AccessDenied", 403),
        _client_error("NotImplemented", 501),
        _client_error("BadDigest", 400),
        botocore.exceptions.NoCredentialsError(),
    ):
        fn, calls = _failing([permanent])
        with pytest.raises(ArchiveError) as caught:
            store._call("put", fn)
        assert len(calls) == 1
        assert not isinstance(caught.value, StoreUnavailable)
        assert caught.value.__cause__ is permanent


def test_max_attempts_one_means_no_retry() -> None:
    store = S3Store(S3Config(bucket="b", max_attempts=1), client=object())
    sleeps = _record_sleeps(store)
    fn, calls = _failing([_client_error("SlowDown", 503)])
    with pytest.raises(StoreUnavailable):
        store._call("get", fn)
    assert len(calls) == 1 and sleeps == []


# --------------------------------------------------------------------------------------------------
# injected faults against moto and SeaweedFS


def test_reads_retry_transient_faults_then_succeed(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend)
    store.put("r/a", b"alpha")
    sleeps = _record_sleeps(store)
    faults = s3_faults(store)
    faults.fail("GetObject", 500, "InternalError")
    faults.fail("GetObject", 503, "SlowDown")
    faults.fail("HeadObject", 503, "ServiceUnavailable", times=2)
    faults.fail("ListObjectsV2", 500, "InternalError")
    faults.disconnect("ListObjectsV2")

    assert store.get("r/a") == b"alpha"
    assert faults.count("GetObject") == 3
    info = store.head("r/a")
    assert info is not None and info.size == 5
    assert faults.count("HeadObject") == 3
    assert [i.key for i in store.list("r/")] == ["r/a"]
    assert faults.count("ListObjectsV2") == 3
    assert len(sleeps) == 6


def test_put_retries_5xx_and_slowdown(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend)
    sleeps = _record_sleeps(store)
    faults = s3_faults(store)
    faults.fail("PutObject", 500, "InternalError")
    faults.fail("PutObject", 503, "SlowDown")

    created = store.put("w/a", b"payload")

    assert faults.count("PutObject") == 3
    assert len(sleeps) == 2
    assert store.get("w/a") == b"payload"
    # SeaweedFS: the fake answers replaced the requests, so the third attempt created the object.
    # moto: its stubber runs after our handler and executed the first attempt anyway; the retries
    # met 412 + identical bytes, i.e. the "answer lost after commit" path, which is also a success.
    assert created is (s3_backend == "seaweedfs")


def test_put_whose_answer_was_lost_is_an_idempotent_success(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket], s3_faults: FaultsFactory
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    store = bucket.store(prefix="p")
    # the first attempt "reached the server" (the object is there), but we only saw a 500
    bucket.client().put_object(Bucket=bucket.name, Key="p/w/a", Body=b"payload")
    faults = s3_faults(store)
    faults.fail("PutObject", 500, "InternalError")
    assert store.put("w/a", b"payload") is False
    with pytest.raises(ImmutableConflict):
        store.put("w/a", b"other")


def test_put_retries_connection_errors_and_conditional_conflicts(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend)
    _record_sleeps(store)
    faults = s3_faults(store)
    faults.disconnect("PutObject")
    faults.fail("PutObject", 409, "ConditionalRequestConflict")
    faults.disconnect("PutObject")
    # connection errors are raised before moto's stubber runs: nothing was written by them
    assert store.put("w/b", b"bytes") is (s3_backend == "seaweedfs")
    assert faults.count("PutObject") == 4
    assert store.get("w/b") == b"bytes"


def test_persistent_503_becomes_store_unavailable(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend, max_attempts=3)
    store.put("p/a", b"x")
    sleeps = _record_sleeps(store)
    faults = s3_faults(store)
    for operation in (
        "GetObject",
        "PutObject",
        "HeadObject",
        "ListObjectsV2",
        "ListObjectVersions",
    ):
        faults.fail(operation, 503, "SlowDown", times=100)

    calls: list[Callable[[], object]] = [
        lambda: store.get("p/a"),
        lambda: store.put("p/b", b"y"),
        lambda: store.head("p/a"),
        lambda: list(store.list("")),
        lambda: store.delete("p/a"),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            call()
        cause = caught.value.__cause__
        assert isinstance(cause, botocore.exceptions.ClientError)
    for operation in (
        "GetObject",
        "PutObject",
        "HeadObject",
        "ListObjectsV2",
        "ListObjectVersions",
    ):
        assert faults.count(operation) == 3, operation
    assert len(sleeps) == 2 * 5
    faults.remove()
    assert store.get("p/a") == b"x"


def test_unreachable_endpoint_becomes_store_unavailable() -> None:
    store = S3Store(
        S3Config(
            bucket="nowhere",
            endpoint_url=f"http://127.0.0.1:{_free_port()}",
            access_key_id="k",
            secret_access_key="s",
            max_attempts=2,
            connect_timeout=1,
        )
    )
    sleeps = _record_sleeps(store)
    try:
        calls: list[Callable[[], object]] = [
            lambda: store.put("a/b", b"x"),
            lambda: store.get("a/b"),
            lambda: store.head("a/b"),
            lambda: list(store.list("a/")),
            lambda: store.delete("a/b"),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert isinstance(caught.value.__cause__, botocore.exceptions.EndpointConnectionError)
        assert len(sleeps) == 5
    finally:
        store.close()


def test_access_denied_and_not_implemented_are_not_retried(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend)
    store.put("x/a", b"x")
    faults = s3_faults(store)
    faults.fail("GetObject", 403, "AccessDenied")
    faults.fail("PutObject", 501, "NotImplemented")
    with pytest.raises(ArchiveError) as denied:
        store.get("x/a")
    assert type(denied.value) is ArchiveError  # a permission problem, not retention
    with pytest.raises(ArchiveError) as unsupported:
        store.put("x/b", b"x")
    assert type(unsupported.value) is ArchiveError
    assert faults.count("GetObject") == 1 and faults.count("PutObject") == 1


def test_missing_bucket_is_an_error_not_a_missing_object(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket]
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    store = S3Store(dataclasses.replace(bucket.config(), bucket=f"{bucket.name}-absent"))
    try:
        with pytest.raises(ArchiveError) as put_error:
            store.put("a/b", b"x")
        assert not isinstance(put_error.value, NotFound | StoreUnavailable)
        with pytest.raises(ArchiveError) as get_error:
            store.get("a/b")
        assert not isinstance(get_error.value, NotFound)
        assert "NoSuchBucket" in str(get_error.value)
    finally:
        store.close()


def test_wrong_credentials_are_an_archive_error(
    s3_bucket_factory: Callable[[str], S3Bucket],
) -> None:
    # moto does not check signatures, so this is SeaweedFS only.
    bucket = s3_bucket_factory("seaweedfs")
    store = bucket.store(secret_access_key="not-the-secret")
    with pytest.raises(ArchiveError) as caught:
        store.put("a/b", b"x")
    assert type(caught.value) is ArchiveError
    assert isinstance(caught.value.__cause__, botocore.exceptions.ClientError)


# --------------------------------------------------------------------------------------------------
# checksums


def test_server_refuses_a_wrong_checksum(
    s3_backend: str, s3_store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if s3_backend == "moto":
        pytest.skip("moto 5.2.5 does not verify x-amz-checksum-sha256")
    store = s3_store_factory(s3_backend)
    # corrupt the digest we send (as if the bytes had changed on the way)
    monkeypatch.setattr(s3_module, "_sha256_b64", lambda data: _sha256_b64(data + b"!"))
    with pytest.raises(IntegrityError) as caught:
        store.put("c/a", b"the real bytes")
    cause = caught.value.__cause__
    assert isinstance(cause, botocore.exceptions.ClientError)
    assert cause.response["Error"]["Code"] == "BadDigest"
    monkeypatch.undo()
    assert store.head("c/a") is None  # nothing was stored
    assert store.put("c/a", b"the real bytes") is True


def test_the_stored_sha256_is_the_one_we_sent(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket]
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    store = bucket.store()
    store.put("c/b", b"checksummed")
    meta = bucket.client().head_object(Bucket=bucket.name, Key="c/b", ChecksumMode="ENABLED")
    assert meta["ChecksumSHA256"] == _sha256_b64(b"checksummed")


def test_corrupted_download_is_an_integrity_error(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend)
    store.put("c/d", b"original")
    faults = s3_faults(store)
    faults.respond(
        "GetObject",
        200,
        b"tampered",
        {"x-amz-checksum-sha256": _sha256_b64(b"original"), "Content-Type": "binary/octet-stream"},
    )
    with pytest.raises(IntegrityError):
        store.get("c/d")
    assert faults.count("GetObject") == 1  # a mismatch is not retried
    assert store.get("c/d") == b"original"


def test_identical_reput_is_decided_by_the_stored_checksum(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend, storage_class="STANDARD_IA")
    store.put("c/e", b"content-addressed blob")
    faults = s3_faults(store)
    assert store.put("c/e", b"content-addressed blob") is False
    with pytest.raises(ImmutableConflict):
        store.put("c/e", b"content-addressed blob, but different")
    with pytest.raises(ImmutableConflict):
        store.put("c/e", b"same-length blob, different bytes")
    # the stored SHA-256 answers the question: no download (works for archived objects too)
    assert faults.count("GetObject") == 0
    assert faults.count("HeadObject") == 3


def test_identical_reput_of_an_archived_object(
    s3_backend: str, s3_store_factory: StoreFactory
) -> None:
    # The idempotent re-put of a content blob that retention already moved to GLACIER must not
    # need to read it back (moto refuses that GET with InvalidObjectState; SeaweedFS only labels).
    store = s3_store_factory(s3_backend, storage_class="GLACIER")
    assert store.put("blobs/sha256/aa/aa.json.zst", b"blob") is True
    assert store.put("blobs/sha256/aa/aa.json.zst", b"blob") is False
    with pytest.raises(ImmutableConflict):
        store.put("blobs/sha256/aa/aa.json.zst", b"blub")
    info = store.head("blobs/sha256/aa/aa.json.zst")
    assert info is not None and info.storage_class == "GLACIER"
    if s3_backend == "moto":
        with pytest.raises(ArchiveError, match="InvalidObjectState"):
            store.get("blobs/sha256/aa/aa.json.zst")


# --------------------------------------------------------------------------------------------------
# Object Lock and versions


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
def test_object_lock_retention_blocks_delete(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket], mode: str
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    store = bucket.store(prefix="locked", object_lock_mode=mode, object_lock_days=1)
    before = datetime.now(UTC)
    assert store.put("e/1/snapshot.json.zst", b"immutable record") is True

    raw = bucket.client()
    # (HEAD rather than GetObjectRetention, which moto 5.2.5 answers with a 500)
    meta = raw.head_object(Bucket=bucket.name, Key="locked/e/1/snapshot.json.zst")
    assert meta["ObjectLockMode"] == mode
    until = meta["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=1) - timedelta(minutes=5) <= until
    assert until <= datetime.now(UTC) + timedelta(days=1, minutes=5)

    with pytest.raises(RetentionLocked):
        store.delete("e/1/snapshot.json.zst")
    # the record is still there, readable and listed, and no delete marker hides it
    assert store.get("e/1/snapshot.json.zst") == b"immutable record"
    assert [i.key for i in store.list("e/")] == ["e/1/snapshot.json.zst"]
    versions = raw.list_object_versions(Bucket=bucket.name, Prefix="locked/")
    assert versions.get("DeleteMarkers", []) == []
    assert len(versions["Versions"]) == 1
    # a second handle (another process) is refused the same way
    other = bucket.store(prefix="locked")
    with pytest.raises(RetentionLocked):
        other.delete("e/1/snapshot.json.zst")
    with pytest.raises(ImmutableConflict):
        other.put("e/1/snapshot.json.zst", b"rewritten history")


def test_index_parts_are_not_locked_so_a_rebuild_can_replace_them(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket]
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    store = bucket.store(prefix="locked", object_lock_mode="COMPLIANCE", object_lock_days=1)
    store.put("executions/ab/e1/snapshot.json.zst", b"record")
    store.put("index/snapshots/dt=2026-11-25/part-a-000001.parquet", b"rows")
    raw = bucket.client()
    meta = raw.head_object(
        Bucket=bucket.name, Key="locked/index/snapshots/dt=2026-11-25/part-a-000001.parquet"
    )
    assert "ObjectLockMode" not in meta
    store.delete("index/snapshots/dt=2026-11-25/part-a-000001.parquet")
    assert store.head("index/snapshots/dt=2026-11-25/part-a-000001.parquet") is None
    with pytest.raises(RetentionLocked):
        store.delete("executions/ab/e1/snapshot.json.zst")


def test_delete_purges_every_version(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket]
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    store = bucket.store(prefix="p")
    raw = bucket.client()
    # history the store itself would never write: an older version hidden by a delete marker
    raw.put_object(Bucket=bucket.name, Key="p/k/v", Body=b"old")
    raw.delete_object(Bucket=bucket.name, Key="p/k/v")
    assert store.put("k/v", b"new") is True
    store.put("k/v-sibling", b"keep me")
    store.put("k/v/child", b"keep me too")  # S3 (unlike a directory) lets both exist

    store.delete("k/v")

    left = raw.list_object_versions(Bucket=bucket.name, Prefix="p/k/v")
    assert sorted(v["Key"] for v in left.get("Versions", [])) == ["p/k/v-sibling", "p/k/v/child"]
    assert left.get("DeleteMarkers", []) == []
    assert store.head("k/v") is None
    assert store.get("k/v-sibling") == b"keep me"
    assert store.get("k/v/child") == b"keep me too"
    # a purged key is free again (k/v itself stays a "directory" on SeaweedFS: see below)
    store.delete("k/v-sibling")
    assert store.put("k/v-sibling", b"a fresh start") is True


def test_a_key_that_is_also_a_prefix_of_other_keys(
    s3_backend: str, s3_store_factory: StoreFactory
) -> None:
    store = s3_store_factory(s3_backend)
    store.put("x/y/z", b"child")
    if s3_backend == "seaweedfs":
        # SeaweedFS keeps keys in a file tree: "x/y" is a directory now, and a create-only PUT
        # of it answers 412 although HEAD says 404. Our layout never does this; refuse clearly.
        with pytest.raises(ImmutableConflict, match="prefix of other keys"):
            store.put("x/y", b"parent")
        assert store.head("x/y") is None
    else:
        assert store.put("x/y", b"parent") is True
        assert [i.key for i in store.list("x/")] == ["x/y", "x/y/z"]
    assert store.get("x/y/z") == b"child"


def test_lock_on_a_bucket_without_object_lock_is_refused(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket]
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    raw = bucket.client()
    plain = f"{bucket.name}-plain"
    raw.create_bucket(Bucket=plain)
    store = S3Store(
        dataclasses.replace(
            bucket.config(), bucket=plain, object_lock_mode="COMPLIANCE", object_lock_days=1
        )
    )
    try:
        with pytest.raises(ArchiveError) as caught:
            store.put("a/b", b"x")
        assert type(caught.value) is ArchiveError
        # and without versioning, delete works through the "null" version
        unlocked = S3Store(dataclasses.replace(bucket.config(), bucket=plain))
        try:
            assert unlocked.put("a/b", b"x") is True
            unlocked.delete("a/b")
            assert unlocked.head("a/b") is None
            assert raw.list_object_versions(Bucket=plain).get("Versions", []) == []
        finally:
            unlocked.close()
    finally:
        store.close()


# --------------------------------------------------------------------------------------------------
# listing, prefixes, storage class


def test_list_follows_continuation_tokens(
    s3_backend: str, s3_store_factory: StoreFactory, s3_faults: FaultsFactory
) -> None:
    store = s3_store_factory(s3_backend)
    keys = [f"page/{i:03d}" for i in range(7)]
    for key in reversed(keys):
        store.put(key, b"x")

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["MaxKeys"] = 2

    store.client.meta.events.register("before-parameter-build.s3.ListObjectsV2", small_pages)
    faults = s3_faults(store)
    assert [info.key for info in store.list("page/")] == keys
    assert faults.count("ListObjectsV2") == 4


def test_prefixes_isolate_stores_in_one_bucket(
    s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket]
) -> None:
    bucket = s3_bucket_factory(s3_backend)
    tenant_a = bucket.store(prefix="tenant-a")
    tenant_b = bucket.store(prefix="/tenant-a-2/")
    tenant_a.put("k", b"a")
    tenant_b.put("k", b"b")
    assert tenant_a.get("k") == b"a"
    assert tenant_b.get("k") == b"b"
    assert [i.key for i in tenant_a.list("")] == ["k"]
    assert [i.key for i in tenant_b.list("")] == ["k"]
    raw_keys = [o["Key"] for o in bucket.client().list_objects_v2(Bucket=bucket.name)["Contents"]]
    assert raw_keys == ["tenant-a-2/k", "tenant-a/k"]


def test_allowed_punctuation_survives_url_encoding(
    s3_backend: str, s3_store_factory: StoreFactory
) -> None:
    store = s3_store_factory(s3_backend)
    key = "index/runs/dt=2024-01-01/part-host:1@w_x-0000000001.parquet"
    store.put(key, b"parquet")
    assert [i.key for i in store.list("index/runs/dt=")] == [key]
    assert store.get(key) == b"parquet"


def test_storage_class(s3_backend: str, s3_bucket_factory: Callable[[str], S3Bucket]) -> None:
    bucket = s3_bucket_factory(s3_backend)
    standard = bucket.store(prefix="p")
    infrequent = bucket.store(prefix="p", storage_class="STANDARD_IA")
    standard.put("a", b"1")
    infrequent.put("b", b"2")
    head_a, head_b = standard.head("a"), standard.head("b")
    assert head_a is not None and head_a.storage_class == "STANDARD"
    assert head_b is not None and head_b.storage_class == "STANDARD_IA"
    assert [(i.key, i.storage_class) for i in standard.list("")] == [
        ("a", "STANDARD"),
        ("b", "STANDARD_IA"),
    ]


def test_a_store_is_usable_after_close(s3_backend: str, s3_store_factory: StoreFactory) -> None:
    store = s3_store_factory(s3_backend)
    store.put("a", b"1")
    store.close()
    assert store.get("a") == b"1"  # a new client is built on demand
    with store:
        assert store.head("a") is not None
