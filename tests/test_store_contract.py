"""The object-store contract, run against every backend (memory, local, moto, SeaweedFS).

Each test gets a fresh, empty ``store`` (see ``conftest.py``). LocalStore- and factory-specific
checks follow the contract; S3-only behaviour (retries, checksums, Object Lock) is in
``test_s3_store.py``.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from archiver.errors import (
    ArchiveError,
    ImmutableConflict,
    InvalidId,
    InvalidInput,
    NotFound,
    StorageFull,
    StoreUnavailable,
)
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.store.factory import store_from_url
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from archiver.store.s3 import S3Store

RACERS = 32


def _keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


# --------------------------------------------------------------------------------------------------
# write-once


def test_store_implements_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert isinstance(store.url, str) and store.url


def test_put_creates_once_and_identical_put_is_idempotent(store: ObjectStore) -> None:
    key = "executions/ab/exec-1/snapshot.json.zst"
    assert store.put(key, b"first bytes") is True
    assert store.put(key, b"first bytes") is False
    assert store.put(key, b"first bytes") is False
    assert store.get(key) == b"first bytes"
    assert _keys(store) == [key]


def test_put_different_bytes_conflicts_and_keeps_original(store: ObjectStore) -> None:
    key = "refs/workflows/wf-1/versions/0000000001.json"
    assert store.put(key, b'{"v":1}') is True
    for other in (b'{"v":2}', b'{"v":1} ', b"", b'{"v":1}' * 2):
        with pytest.raises(ImmutableConflict) as caught:
            store.put(key, other)
        assert caught.value.key == key
        assert isinstance(caught.value, FileExistsError)
        assert isinstance(caught.value, ArchiveError)
    assert store.get(key) == b'{"v":1}'
    info = store.head(key)
    assert info is not None and info.size == len(b'{"v":1}')


def test_conflict_is_detected_through_an_independent_handle(
    store: ObjectStore, reopen_store: Callable[..., ObjectStore]
) -> None:
    other = reopen_store(store)
    assert store.put("a/key", b"mine") is True
    assert other.get("a/key") == b"mine"
    assert other.put("a/key", b"mine") is False
    with pytest.raises(ImmutableConflict):
        other.put("a/key", b"theirs")
    assert store.get("a/key") == b"mine"


def test_empty_object_round_trips(store: ObjectStore) -> None:
    assert store.put("empty/object", b"") is True
    assert store.put("empty/object", b"") is False
    assert store.get("empty/object") == b""
    info = store.head("empty/object")
    assert info is not None and info.size == 0
    with pytest.raises(ImmutableConflict):
        store.put("empty/object", b"\x00")


def test_binary_data_round_trips(store: ObjectStore) -> None:
    every_byte = bytes(range(256)) * 4
    noise = os.urandom(300_000)
    tricky = b"\r\n\x00\xff\xfe<?xml?>\x1b[0m\r\r\n" * 100
    for index, payload in enumerate((every_byte, noise, tricky)):
        key = f"bin/{index}.bin"
        assert store.put(key, payload) is True
        assert store.get(key) == payload
        info = store.head(key)
        assert info is not None and info.size == len(payload)
        assert store.put(key, payload) is False


# --------------------------------------------------------------------------------------------------
# reads


def test_get_missing_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound) as caught:
        store.get("no/such/object")
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, ArchiveError)
    store.put("no/such-sibling", b"x")
    with pytest.raises(FileNotFoundError):
        store.get("no/such/object")
    with pytest.raises(NotFound):  # a key below an object is not an object
        store.get("no/such-sibling/child")


def test_a_directory_is_not_an_object(store: ObjectStore) -> None:
    store.put("dir/child/object", b"x")
    for key in ("dir", "dir/child"):
        assert store.head(key) is None
        with pytest.raises(NotFound):
            store.get(key)
    assert _keys(store) == ["dir/child/object"]


def test_head(store: ObjectStore) -> None:
    assert store.head("blobs/sha256/ab/missing.json.zst") is None
    store.put("blobs/sha256/ab/present.json.zst", b"12345")
    info = store.head("blobs/sha256/ab/present.json.zst")
    assert isinstance(info, ObjectInfo)
    assert info.key == "blobs/sha256/ab/present.json.zst"
    assert info.size == 5
    assert isinstance(info.last_modified, datetime)
    assert info.last_modified.tzinfo is not None


_LIST_KEYS = [
    "b/2",
    "a/10",
    "a/2",
    "a/1",
    "a-x",
    "a.x",
    "a0",
    "ab/c",
    "a/b/c/d",
    "a/b/c/e",
    "a/bc",
    "index/runs/dt=2024-01-02/part-w1-0000000001.parquet",
    "index/runs/dt=2024-01-01/part-w1-0000000002.parquet",
    "index/runs/dt=2024-01-01/part-w1-0000000001.parquet",
    "index/runs/dt=2024-01-10/part-w1-0000000001.parquet",
    "blobs/sha256/a1/a1ff.json.zst",
    "blobs/sha256/ab/ab00.json.zst",
    "blobs/sha256/b0/b0aa.json.zst",
]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", sorted(_LIST_KEYS)),
        ("a/", ["a/1", "a/10", "a/2", "a/b/c/d", "a/b/c/e", "a/bc"]),
        ("a", ["a-x", "a.x", "a/1", "a/10", "a/2", "a/b/c/d", "a/b/c/e", "a/bc", "a0", "ab/c"]),
        ("a/b", ["a/b/c/d", "a/b/c/e", "a/bc"]),  # not at a '/' boundary
        ("a/b/", ["a/b/c/d", "a/b/c/e"]),  # nested
        ("a/b/c/", ["a/b/c/d", "a/b/c/e"]),
        ("a/b/c/d", ["a/b/c/d"]),  # an exact key
        ("a/1", ["a/1", "a/10"]),
        (
            "index/runs/dt=2024-01-0",
            [
                "index/runs/dt=2024-01-01/part-w1-0000000001.parquet",
                "index/runs/dt=2024-01-01/part-w1-0000000002.parquet",
                "index/runs/dt=2024-01-02/part-w1-0000000001.parquet",
            ],
        ),
        ("blobs/sha256/a", ["blobs/sha256/a1/a1ff.json.zst", "blobs/sha256/ab/ab00.json.zst"]),
        ("nothing/", []),
        ("zzz", []),
    ],
)
def test_list_in_key_order_with_prefixes(
    store: ObjectStore, prefix: str, expected: list[str]
) -> None:
    for key in _LIST_KEYS:
        store.put(key, key.encode() * 2)
    infos = list(store.list(prefix))
    assert [info.key for info in infos] == expected
    for info in infos:
        assert info.size == 2 * len(info.key)
        assert info.last_modified is None or info.last_modified.tzinfo is not None


def test_list_of_empty_store_is_empty(store: ObjectStore) -> None:
    assert list(store.list("")) == []
    assert list(store.list("a/")) == []


# --------------------------------------------------------------------------------------------------
# delete


def test_delete(store: ObjectStore) -> None:
    store.put("d/one", b"1")
    store.put("d/two", b"2")
    store.delete("d/one")
    assert store.head("d/one") is None
    with pytest.raises(NotFound):
        store.get("d/one")
    assert _keys(store) == ["d/two"]
    store.delete("d/one")  # missing keys are not an error
    store.delete("never/existed")
    assert store.get("d/two") == b"2"


# --------------------------------------------------------------------------------------------------
# keys


_UNSAFE_KEYS = [
    "",
    "a//b",
    "a/../b",
    "../x",
    "./x",
    "a/./b",
    "..",
    "/abs",
    "trailing/",
    "a/ b",
    "a b",
    "a\x00b",
    "a\nb",
    "a\tb",
    "a\rb",
    "\x7f",
    "a\\b",
    "caf\u00e9",
    "a/\u202eb",
    "x" * 1025,
]


@pytest.mark.parametrize("key", _UNSAFE_KEYS, ids=repr)
def test_unsafe_keys_are_rejected_before_any_io(
    store: ObjectStore, key: str, s3_faults: Callable[[S3Store], Any]
) -> None:
    requests = s3_faults(store) if isinstance(store, S3Store) else None
    operations: list[Callable[[], object]] = [
        lambda: store.put(key, b"data"),
        lambda: store.get(key),
        lambda: store.head(key),
        lambda: store.delete(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidId) as caught:
            operation()
        assert caught.value.field == "key"
        assert isinstance(caught.value, ValueError)
    if requests is not None:
        assert requests.seen == []  # not a single request reached the wire
    if isinstance(store, LocalStore):
        assert list(store.root.rglob("*")) == []
    assert _keys(store) == []


# --------------------------------------------------------------------------------------------------
# concurrency


def _race(
    store: ObjectStore,
    reopen_store: Callable[..., ObjectStore],
    key: str,
    payloads: list[bytes],
) -> list[bool | BaseException]:
    """Put payloads[i] from thread i, all released at once, through a few independent handles."""
    handles = [store] + [reopen_store(store) for _ in range(3)]
    barrier = threading.Barrier(len(payloads))

    def racer(index: int) -> bool | BaseException:
        handle = handles[index % len(handles)]
        barrier.wait()
        try:
            return handle.put(key, payloads[index])
        except ArchiveError as err:
            return err

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(racer, range(len(payloads))))


def test_racing_different_bytes_have_exactly_one_winner(
    store: ObjectStore, reopen_store: Callable[..., ObjectStore]
) -> None:
    key = "refs/workflows/wf-race/versions/0000000007.json"
    payloads = [f'{{"writer":{i},"pad":"{"x" * i}"}}'.encode() for i in range(RACERS)]
    results = _race(store, reopen_store, key, payloads)

    winners = [i for i, result in enumerate(results) if result is True]
    assert len(winners) == 1, results
    losers = [result for result in results if result is not True]
    assert len(losers) == RACERS - 1
    for loser in losers:
        assert isinstance(loser, ImmutableConflict), loser
        assert loser.key == key
    assert store.get(key) == payloads[winners[0]]
    assert reopen_store(store).get(key) == payloads[winners[0]]
    assert _keys(store) == [key]


def test_racing_identical_bytes_create_exactly_once(
    store: ObjectStore, reopen_store: Callable[..., ObjectStore]
) -> None:
    key = "blobs/sha256/5e/5e" + "0" * 62 + ".json.zst"
    payload = hashlib.sha256(b"structure").digest() * 100
    results = _race(store, reopen_store, key, [payload] * RACERS)

    assert results.count(True) == 1, results
    assert results.count(False) == RACERS - 1, results
    assert store.get(key) == payload


# --------------------------------------------------------------------------------------------------
# LocalStore specifics


def _tmp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def test_local_published_files_are_read_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("executions/ab/e1/snapshot.json.zst", b"snapshot")
    path = tmp_path / "executions" / "ab" / "e1" / "snapshot.json.zst"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert path.read_bytes() == b"snapshot"
    assert _tmp_files(tmp_path) == []


def test_local_conflicting_and_idempotent_puts_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("k/v", b"one")
    assert store.put("k/v", b"one") is False
    with pytest.raises(ImmutableConflict):
        store.put("k/v", b"two")
    assert _tmp_files(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["v"]
    assert store.get("k/v") == b"one"


def test_local_failed_put_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)

    def broken_link(src: Any, dst: Any, **_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", broken_link)
    with pytest.raises(StorageFull):
        store.put("k/v", b"payload")
    monkeypatch.undo()
    assert _tmp_files(tmp_path) == []
    assert store.head("k/v") is None
    assert store.put("k/v", b"payload") is True


def test_local_temp_files_are_never_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("k/a", b"a")
    (tmp_path / "k" / ".tmp-b.0123456789abcdef").write_bytes(b"half written")
    assert _keys(store) == ["k/a"]


def test_local_read_only_store_refuses_writes(tmp_path: Path) -> None:
    LocalStore(tmp_path).put("k/v", b"data")
    reader = LocalStore(tmp_path, read_only=True)
    with pytest.raises(StoreUnavailable):
        reader.put("k/new", b"data")
    with pytest.raises(StoreUnavailable):
        reader.delete("k/v")
    assert reader.get("k/v") == b"data"
    assert _keys(reader) == ["k/v"]
    assert not (tmp_path / "k" / "new").exists()
    assert _tmp_files(tmp_path) == []


def test_local_read_only_store_does_not_create_its_root(tmp_path: Path) -> None:
    reader = LocalStore(tmp_path / "absent", read_only=True)
    assert not (tmp_path / "absent").exists()
    assert _keys(reader) == []
    with pytest.raises(NotFound):
        reader.get("k/v")


# --------------------------------------------------------------------------------------------------
# store_from_url


def test_store_from_url_memory_and_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(store_from_url("memory:"), MemoryStore)

    local = store_from_url(f"local:{tmp_path / 'a'}")
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "a").resolve()

    plain = store_from_url(str(tmp_path / "b"))
    assert isinstance(plain, LocalStore) and plain.root == (tmp_path / "b").resolve()

    monkeypatch.chdir(tmp_path)
    relative = store_from_url("local:rel/dir")
    assert isinstance(relative, LocalStore) and relative.root == (tmp_path / "rel/dir").resolve()

    # None-valued S3 options are ignored (callers may pass their settings unconditionally)
    assert isinstance(store_from_url("memory:", endpoint_url=None), MemoryStore)


def test_store_from_url_s3() -> None:
    s3 = store_from_url(
        "s3://my-bucket/some/prefix/",
        endpoint_url="http://127.0.0.1:1",
        region="eu-west-1",
        object_lock_mode="COMPLIANCE",
        object_lock_days=30,
    )
    assert isinstance(s3, S3Store)
    assert s3.url == "s3://my-bucket/some/prefix"
    assert s3.config.bucket == "my-bucket"
    assert s3.config.prefix == "some/prefix"
    assert s3.config.region == "eu-west-1"
    assert s3.config.object_lock_mode == "COMPLIANCE"
    assert s3.config.object_lock_days == 30
    assert s3._client is None  # no client (and no network) until first use

    bare = store_from_url("s3://my-bucket")
    assert isinstance(bare, S3Store)
    assert bare.url == "s3://my-bucket" and bare.config.prefix == ""


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("", {}),
        ("s3://", {}),
        ("s3:///prefix", {}),
        ("gs://bucket/x", {}),
        ("memory:extra", {}),
        ("local:", {}),
        ("memory:", {"endpoint_url": "http://x"}),
        ("/some/dir", {"object_lock_mode": "COMPLIANCE"}),
        ("s3://bucket/p", {"no_such_option": 1}),
        ("s3://bucket/p", {"object_lock_mode": "COMPLIANCE"}),  # days missing
        ("s3://bucket/a//b", {}),
        ("s3:/bucket", {}),
        ("lcoal:./data", {}),
        ("memory", {}),
        ("s3", {}),
        ("Local", {}),
    ],
)
def test_store_from_url_rejects_bad_input(
    url: str, options: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput):
        store_from_url(url, **options)
    assert list(tmp_path.iterdir()) == []


def test_store_from_url_without_create_refuses_a_missing_directory(tmp_path: Path) -> None:
    for url in (f"local:{tmp_path / 'absent'}", str(tmp_path / "absent")):
        with pytest.raises(NotFound, match="no store at"):
            store_from_url(url, create=False)
    assert not (tmp_path / "absent").exists()
    (tmp_path / "present").mkdir()
    assert isinstance(store_from_url(str(tmp_path / "present"), create=False), LocalStore)
    assert isinstance(store_from_url("memory:", create=False), MemoryStore)
