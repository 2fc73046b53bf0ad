"""Compliance: export bundles that standard tools verify, the index chain, verify's named findings."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785

from archiver.archive import Archive
from archiver.chain import CHAIN_PREFIX, chain_key, load_chain, seal
from archiver.codec import compress, decompress, encode_record
from archiver.compliance import Selection, export_bundle, export_tar
from archiver.errors import InvalidInput, NotFound, ObjectArchived
from archiver.index import (
    ManifestWriter,
    encode_part,
    rebuild_index,
    subset_bucket,
    verify,
)
from archiver.layout import result_key, snapshot_key
from archiver.store.base import ObjectStore
from archiver.store.memory import MemoryStore
from tests.test_index import T0, make_archive, populate

# --------------------------------------------------------------------------------------------
# helpers


def _indexed(store: ObjectStore) -> Archive:
    archive = make_archive(store)
    with ManifestWriter(store, flush_seconds=3600) as writer:
        writer.attach(archive)
        populate(archive)
    return archive


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed")
    return path


def _findings(store: ObjectStore, **options: Any) -> set[tuple[str, str]]:
    return {(f["problem"], f["key"]) for f in verify(store, **options).findings()}


def _problems(store: ObjectStore, **options: Any) -> set[str]:
    return {problem for problem, _ in _findings(store, **options)}


def _replace(store: ObjectStore, key: str, data: bytes) -> bytes:
    """Put other bytes under ``key`` (delete + put: stores are write-once); the old bytes."""
    old = store.get(key)
    store.delete(key)
    store.put(key, data)
    return old


def _parts_of_day(store: ObjectStore, day: str) -> dict[str, bytes]:
    return {
        info.key: store.get(info.key)
        for info in store.list("index/")
        if f"/dt={day}/" in info.key and info.key.endswith(".parquet")
    }


# --------------------------------------------------------------------------------------------
# export


def test_exported_bundle_verifies_with_sha256sum_and_zstd(
    store: ObjectStore, tmp_path: Path
) -> None:
    sha256sum, zstd = _tool("sha256sum"), _tool("zstd")
    captured = populate_and_seal(store)
    bundle = tmp_path / "bundle"
    report = export_bundle(store, Selection.parse(workflow_id="wf-a"), bundle)
    wf_a = [c for c in captured if c.workflow_id == "wf-a"]
    assert report.executions == len(wf_a)

    checked = subprocess.run([sha256sum, "-c", "SHA256SUMS"], cwd=bundle, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = {line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    on_disk = {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert listed == on_disk

    # every object: the stored bytes, decompressed by the zstd tool
    for path in (bundle / "objects").rglob("*.zst"):
        key = path.relative_to(bundle / "objects").as_posix()
        assert path.read_bytes() == store.get(key)
        raw = subprocess.run([zstd, "-dc", str(path)], capture_output=True, check=True).stdout
        if key.startswith("blobs/"):
            assert hashlib.sha256(raw).hexdigest() == path.name.removesuffix(".json.zst")
        else:  # a record: digest = SHA-256 of the JCS form without digest (any JCS library)
            body = orjson.loads(raw)
            digest = body.pop("digest")
            assert digest == "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    # the snapshotHash of each snapshot is the SHA-256 of its blob's decompressed bytes
    for c in wf_a:
        record = orjson.loads(
            decompress((bundle / "objects" / snapshot_key(c.execution_id)).read_bytes())
        )
        blob = (
            bundle
            / "objects"
            / "blobs"
            / "sha256"
            / c.snapshot_hash[:2]
            / f"{c.snapshot_hash}.json.zst"
        )
        raw = subprocess.run([zstd, "-dc", str(blob)], capture_output=True, check=True).stdout
        assert record["snapshotHash"] == c.snapshot_hash == hashlib.sha256(raw).hexdigest()

    # the index rows, as JSON lines, and the chain entries of the days covered
    snapshots = [
        orjson.loads(line)
        for line in (bundle / "manifest/snapshots.jsonl").read_text().splitlines()
    ]
    assert sorted(r["execution_id"] for r in snapshots) == sorted(c.execution_id for c in wf_a)
    assert all(r["created_at"].endswith("Z") and r["dt"] for r in snapshots)
    assert {r["workflow_id"] for r in _jsonl(bundle, "versions")} == {"wf-a"}
    assert len(_jsonl(bundle, "node_runs")) > 0
    meta = orjson.loads((bundle / "bundle.json").read_bytes())
    assert meta["selection"]["workflowId"] == "wf-a"
    assert meta["chain"]["head"] == load_chain(store).head
    assert {e["day"] for e in meta["chain"]["covering"]} == set(meta["chain"]["days"])
    assert "sha256sum -c SHA256SUMS" in (bundle / "README.md").read_text()

    # a tampered bundle fails sha256sum
    victim = next((bundle / "manifest").iterdir())
    victim.write_bytes(victim.read_bytes().replace(b"wf-a", b"wf-x", 1))
    tampered = subprocess.run(
        [sha256sum, "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True
    )
    assert tampered.returncode != 0
    assert victim.name in tampered.stdout.decode()


def _jsonl(bundle: Path, table: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for line in (bundle / "manifest" / f"{table}.jsonl").read_text().splitlines()
    ]


def populate_and_seal(store: ObjectStore) -> list[Any]:
    archive = make_archive(store)
    with ManifestWriter(store, flush_seconds=3600) as writer:
        writer.attach(archive)
        captured = populate(archive)
    assert seal(store).appended
    return captured


def test_export_carries_the_legal_hold_events_of_its_executions(tmp_path: Path) -> None:
    from archiver.holds import clear_hold, set_hold

    store = MemoryStore()
    captured = populate_and_seal(store)
    one = next(c for c in captured if c.workflow_id == "wf-a")
    set_hold(store, "workflow", "wf-a", reason="case 17", by="legal")
    set_hold(store, "execution", one.execution_id, reason="case 18", by="legal")
    clear_hold(store, "execution", one.execution_id, reason="settled", by="legal")
    set_hold(store, "workflow", "wf-b", reason="other case", by="legal")
    bundle = tmp_path / "bundle"
    export_bundle(store, Selection.parse(workflow_id="wf-a"), bundle)
    held = sorted(
        p.relative_to(bundle / "objects").as_posix()
        for p in (bundle / "objects" / "events" / "holds").rglob("*.zst")
    )
    assert [k.split("/")[2:4] for k in held] == [
        ["execution", one.execution_id],
        ["execution", one.execution_id],
        ["workflow", "wf-a"],
    ]
    actions = [orjson.loads(decompress((bundle / "objects" / k).read_bytes())) for k in held]
    assert [a["action"] for a in actions] == ["set", "clear", "set"]
    assert all((bundle / "objects" / k).read_bytes() == store.get(k) for k in held)


def test_export_as_tar_by_ids_and_time_range(tmp_path: Path) -> None:
    sha256sum, tar = _tool("sha256sum"), _tool("tar")
    store = MemoryStore()
    populate_and_seal(store)
    selection = Selection.parse(execution_ids=["a-0,b-1", "a-5"])
    report = export_bundle(store, selection, tmp_path / "dir")
    assert report.executions == 3
    assert export_tar(tmp_path / "dir", tmp_path / "out.tar", "root") > 0
    subprocess.run([tar, "xf", "out.tar"], cwd=tmp_path, check=True)
    assert (
        subprocess.run([sha256sum, "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path / "root").returncode
        == 0
    )

    # time range on createdAt (since inclusive, until exclusive), ANDed with the workflow
    day2 = Selection.parse(since=T0 + timedelta(days=1), until=T0 + timedelta(days=2))
    meta = export_bundle(store, day2, tmp_path / "day2")
    ids = set(_ids(tmp_path / "day2"))
    assert ids and meta.executions == len(ids)
    both = export_bundle(
        store,
        Selection.parse(workflow_id="wf-b", since=T0, until=T0 + timedelta(days=3)),
        tmp_path / "wfb",
    )
    assert set(_ids(tmp_path / "wfb")) == {"b-0", "b-1", "b-2"} and both.executions == 3
    # an id outside the given workflow is not exported
    assert set(_ids_of(store, tmp_path / "mix", ["a-0", "b-0"], "wf-b")) == {"b-0"}


def _ids(bundle: Path) -> list[str]:
    return [
        e["executionId"] for e in orjson.loads((bundle / "bundle.json").read_bytes())["executions"]
    ]


def _ids_of(store: ObjectStore, where: Path, ids: list[str], workflow: str) -> list[str]:
    export_bundle(store, Selection.parse(execution_ids=ids, workflow_id=workflow), where)
    return _ids(where)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "selection"),
        ({"since": "2024-03-01T00:00:00Z"}, "until"),
        ({"until": "2024-03-01T00:00:00Z"}, "since"),
        ({"since": "yesterday", "until": "2024-03-01T00:00:00Z"}, "since"),
        ({"since": "2024-03-02T00:00:00Z", "until": "2024-03-01T00:00:00Z"}, "until"),
        ({"execution_ids": ["../etc"]}, "executionId"),
        ({"workflow_id": "a b"}, "workflowId"),
    ],
)
def test_empty_or_unbounded_selections_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Selection.parse(**options)
    assert caught.value.field == field


def test_export_refuses_what_does_not_exist_and_leaves_nothing(tmp_path: Path) -> None:
    store = MemoryStore()
    populate_and_seal(store)
    with pytest.raises(NotFound, match="nope"):
        export_bundle(store, Selection.parse(execution_ids=["nope"]), tmp_path / "a")
    with pytest.raises(InvalidInput) as caught:
        export_bundle(store, Selection.parse(workflow_id="wf-none"), tmp_path / "b")
    assert caught.value.field == "selection"
    # an object that does not verify is never exported
    body = orjson.loads(decompress(store.get(snapshot_key("a-1"))))
    body["userId"] = "mallory"
    _replace(store, snapshot_key("a-1"), compress(orjson.dumps(body)))
    with pytest.raises(Exception, match="does not verify"):
        export_bundle(store, Selection.parse(execution_ids=["a-1"]), tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_archived_objects_are_refused_by_name_unless_skipped(
    s3_store_factory: Callable[..., Any], tmp_path: Path
) -> None:
    store = s3_store_factory("moto")
    populate_and_seal(store)
    store.set_storage_class(snapshot_key("b-1"), "GLACIER")
    with pytest.raises(ObjectArchived, match=snapshot_key("b-1")):
        export_bundle(store, Selection.parse(workflow_id="wf-b"), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    report = export_bundle(
        store, Selection.parse(workflow_id="wf-b"), tmp_path / "b", skip_archived=True
    )
    assert report.archived_skipped == [snapshot_key("b-1")]
    meta = orjson.loads((tmp_path / "b" / "bundle.json").read_bytes())
    assert meta["archivedSkipped"] == [snapshot_key("b-1")]
    assert not (tmp_path / "b" / "objects" / snapshot_key("b-1")).exists()
    # verify --read-data cannot read it either: counted, not reported as corrupt
    checked = verify(store, read_data=True)
    assert checked.ok and checked.archived_not_read >= 1


def test_executions_moved_to_a_cold_store_are_explained_not_deleted(tmp_path: Path) -> None:
    from archiver.retention import RetentionPolicy, archive_cold, cold_moved_executions
    from archiver.store.local import LocalStore

    store = LocalStore(tmp_path / "hot")
    populate_and_seal(store)
    policy = RetentionPolicy.from_mapping(
        {"hot_days": 1, "keep_days": "never", "cold_store": f"local:{tmp_path / 'cold'}"}
    )
    archive_cold(store, policy)
    assert "b-1" in cold_moved_executions(store)
    checked = verify(store, read_data=False)
    assert checked.ok and not checked.rows_without_objects, checked.findings()
    assert "snapshots/b-1" in {f"{r.table}/{r.key}" for r in checked.cold_rows}
    with pytest.raises(ObjectArchived, match=snapshot_key("b-1")):
        export_bundle(store, Selection.parse(workflow_id="wf-b"), tmp_path / "a")
    report = export_bundle(
        store, Selection.parse(workflow_id="wf-b"), tmp_path / "b", skip_archived=True
    )
    assert snapshot_key("b-1") in report.archived_skipped


# --------------------------------------------------------------------------------------------
# verify: every case named


def test_verify_names_each_kind_of_damage(store: ObjectStore) -> None:
    populate_and_seal(store)
    assert verify(store, read_data=False).ok
    assert verify(store).ok

    # corrupt: other content, valid zstd (same size or not: found by re-hashing)
    key = result_key("a-4")
    body = orjson.loads(decompress(store.get(key)))
    body["status"] = "success" if body["status"] != "success" else "error"
    original = _replace(store, key, compress(orjson.dumps(body)))
    assert ("corrupt_object", key) in _findings(store, read_data=True)
    _replace(store, key, original)

    # truncated: found without reading (size) and by reading (zstd frame)
    key = snapshot_key("a-2")
    original = _replace(store, key, store.get(key)[:-7])
    assert ("truncated_object", key) in _findings(store, read_data=False)
    assert ("truncated_object", key) in _findings(store, read_data=True)
    _replace(store, key, original)

    # deleted: a row without its object, no tombstone
    key = snapshot_key("b-0")
    original = store.get(key)
    store.delete(key)
    assert ("deleted_object", "snapshots/b-0") in _findings(store, read_data=False)
    store.put(key, original)
    assert verify(store).ok

    # a day's manifest removed: every table of that day
    parts = _parts_of_day(store, "2024-03-02")
    for part in parts:
        store.delete(part)
    found = _findings(store, read_data=False)
    assert ("day_removed", "2024-03-02/snapshots") in found
    assert ("day_removed", "2024-03-02/final_states") in found
    for part, data in parts.items():
        store.put(part, data)
    assert verify(store, read_data=False).ok

    # a day altered: a row changed in place (same number of rows)
    part = next(k for k in _parts_of_day(store, "2024-03-03") if "/snapshots/" in k)
    rows = pq.read_table(pa.BufferReader(store.get(part))).to_pylist()
    rows[0]["workflow_name"] = "Renamed"
    original = _replace(store, part, encode_part("snapshots", rows))
    assert ("day_altered", "2024-03-03/snapshots") in _findings(store, read_data=False)
    _replace(store, part, original)
    assert verify(store, read_data=False).ok


def test_verify_detects_a_tampered_chain(store: ObjectStore) -> None:
    populate_and_seal(store)
    state = load_chain(store)
    assert [e.seq for e in state.entries] == [1, 2, 3, 4]

    # an entry rewritten (its digest changed, canonical form kept): the next link breaks
    second = chain_key(2)
    body = orjson.loads(store.get(second))
    body["tables"]["snapshots"]["digest"] = "0" * 64
    original = _replace(store, second, rfc8785.dumps(body))
    found = _findings(store, read_data=False)
    assert ("chain_broken", chain_key(3)) in found
    assert ("day_altered", f"{body['day']}/snapshots") in found
    _replace(store, second, original)
    assert verify(store, read_data=False).ok

    # an entry removed: a gap
    store.delete(second)
    found = _findings(store, read_data=False)
    assert ("chain_broken", chain_key(3)) in found
    with pytest.raises(Exception, match="chain is broken"):
        seal(store)
    store.put(second, original)
    assert verify(store, read_data=False).ok


def test_subsets_cover_every_object_exactly_once(tmp_path: Path) -> None:
    store = MemoryStore()
    populate_and_seal(store)
    keys = [i.key for i in store.list("") if not i.key.startswith(("index/", CHAIN_PREFIX))]
    total = 3
    buckets = {k: subset_bucket(k, total) for k in keys}
    assert set(buckets.values()) == set(range(total))  # 12 executions spread over 3
    reads = [verify(store, subset=(n, total)).objects_read for n in range(1, total + 1)]
    assert sum(reads) == verify(store).objects_read == len(keys)
    # both objects of an execution land in one subset (a final state is read with its snapshot)
    assert subset_bucket(snapshot_key("a-1"), 7) == subset_bucket(result_key("a-1"), 7)

    # a corrupt object is re-hashed by exactly one of the T runs
    key = result_key("a-4")
    body = orjson.loads(decompress(store.get(key)))
    body["status"] = "crashed"
    data = compress(orjson.dumps(body))
    _replace(store, key, data)
    hits = [
        n
        for n in range(1, total + 1)
        if key in {p.key for p in verify(store, subset=(n, total)).hash_mismatches}
    ]
    assert hits == [subset_bucket(key, total) + 1]
    with pytest.raises(InvalidInput):
        verify(store, subset=(4, 3))


# --------------------------------------------------------------------------------------------
# the chain over time: late rows, rebuilds, expiry, acceptance


def test_chain_survives_rebuild_and_records_late_rows() -> None:
    store = MemoryStore()
    archive = make_archive(store)
    with ManifestWriter(store, flush_seconds=3600) as writer:
        writer.attach(archive)
        populate(archive)
        writer.flush()
        report = seal(store)
        assert [e.reason for e in report.appended] == ["sealed"] * 4
        # a final state that arrives after its day was sealed: a late row, not tampering
        late = T0 + timedelta(hours=20, seconds=3)  # a-2 (no final state yet) ran 2024-03-02 06:00
        archive.record_final_state(
            "a-2",
            {"status": "success", "startedAt": late.isoformat(), "finishedAt": late.isoformat()},
        )
    checked = verify(store, read_data=False)
    assert checked.ok
    assert any(n.problem == "day_gained" for n in checked.chain_notes)
    again = seal(store)
    assert [e.reason for e in again.appended] == ["late-rows"]
    assert not verify(store, read_data=False).chain_notes

    # a rebuild rewrites every part (recorded_at changes): the digests do not
    assert rebuild_index(store).ok
    checked = verify(store)
    assert checked.ok and not checked.chain_notes, checked.findings()
    assert seal(store).appended == []


def test_compaction_keeps_every_day_digest() -> None:
    from archiver.compaction import compact_index
    from archiver.index import parse_part_key

    store = MemoryStore()
    populate_and_seal(store)
    for info in list(store.list("index/")):  # a second copy of every part: two files a day
        parsed = parse_part_key(info.key)
        if parsed is not None:
            store.put(info.key.replace(parsed[2], "copy"), store.get(info.key))
    assert verify(store, read_data=False).ok
    assert compact_index(store, grace_seconds=0).compacted
    checked = verify(store, read_data=False)
    assert checked.ok and not checked.chain_notes and not checked.duplicate_rows, checked.findings()
    assert seal(store, full=True).appended == []


def test_expired_executions_do_not_break_the_chain() -> None:
    store = MemoryStore()
    populate_and_seal(store)
    # retention expires a-0: a tombstone, then the objects go (rows stay until a rebuild)
    from archiver.retention import TOMBSTONE_KIND, tombstone_key

    when = datetime.now(UTC)
    tomb = tombstone_key("execution", "a-0", when, "ev_" + "0" * 20)
    store.put(tomb, encode_record(TOMBSTONE_KIND, {"executionId": "a-0", "action": "expire"}))
    store.delete(snapshot_key("a-0"))
    store.delete(result_key("a-0"))
    assert verify(store, read_data=False).ok
    assert [e.reason for e in seal(store).appended] == ["expired"]
    rebuild_index(store)  # drops a-0's rows
    checked = verify(store, read_data=False)
    assert checked.ok, checked.findings()
    assert any(n.problem == "day_expired" for n in checked.chain_notes)


def test_seal_refuses_an_unexplained_change_until_accepted() -> None:
    store = MemoryStore()
    populate_and_seal(store)
    part = next(k for k in _parts_of_day(store, "2024-03-02") if "/snapshots/" in k)
    rows = pq.read_table(pa.BufferReader(store.get(part))).to_pylist()
    _replace(store, part, encode_part("snapshots", rows[1:]))
    refused = seal(store)
    assert not refused.ok and refused.appended == []
    assert [p.problem for p in refused.refused] == ["day_removed"]
    accepted = seal(store, accept=[date(2024, 3, 2)])
    assert [e.reason for e in accepted.appended] == ["accepted"]
    assert verify(store, read_data=False).chain_problems == []


def test_today_is_not_sealed() -> None:
    store = MemoryStore()
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        archive.capture_snapshot(execution_id="now-1", workflow=_wf(), workflow_id="wf")
    assert seal(store).appended == []
    assert seal(store, now=datetime.now(UTC) + timedelta(days=1)).appended != []


def _wf() -> dict[str, Any]:
    from tests.test_index import workflow

    return workflow()


# --------------------------------------------------------------------------------------------
# HTTP and CLI


def _get(app: Any, url: str, token: str | None) -> Any:
    import httpx

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(url, headers=headers)

    return asyncio.run(go())


def test_http_export_streams_a_tar_and_checks_scope_and_params(tmp_path: Path) -> None:
    from api.app import create_app
    from archiver.config import Settings
    from archiver.sanitize import Sanitizer

    sha256sum = _tool("sha256sum")
    store = MemoryStore()
    populate_and_seal(store)
    tokens = ";".join(
        f"{hashlib.sha256(t.encode()).hexdigest()}:{s}"
        for t, s in (("tok_auditor", "compliance"), ("tok_reader", "read"))
    )
    app = create_app(Settings(tokens=tokens), archive=Archive(store, Sanitizer(bytes(range(32)))))
    url = "/api/compliance/export?workflowId=wf-b&executionId=b-0,b-1"
    assert _get(app, url, None).status_code == 401
    assert _get(app, url, "tok_reader").status_code == 403
    response = _get(app, url, "tok_auditor")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith(
        'attachment; filename="execvault-export-'
    ) and disposition.endswith('.tar"')
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive_file:
        archive_file.extractall(tmp_path, filter="data")
    (root,) = list(tmp_path.iterdir())
    assert subprocess.run([sha256sum, "-c", "--quiet", "SHA256SUMS"], cwd=root).returncode == 0
    assert set(_ids(root)) == {"b-0", "b-1"}

    for query, field in (
        ("", "selection"),
        ("since=2024-03-01T00:00:00Z", "until"),
        ("since=soon&until=2024-03-02T00:00:00Z", "since"),
        ("workflowId=wf-b&skipArchived=perhaps", "skipArchived"),
        ("executionId=..", "executionId"),
        ("workflowId=wf-none", "selection"),
        ("workflowId=wf-b&until=0001-01-01T00:00:00Z", "selection"),  # nothing is before it
    ):
        answer = _get(app, f"/api/compliance/export?{query}", "tok_auditor")
        assert answer.status_code == 422, (query, answer.text)
        assert answer.json()["field"] == field, query
    assert _get(app, "/api/compliance/export?executionId=ghost", "tok_auditor").status_code == 404


def test_cli_export_seal_and_verify(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from api.cli import main
    from archiver.store.local import LocalStore

    data = tmp_path / "data"
    store = LocalStore(data)
    populate_and_seal(store)
    key = tmp_path / "hmac.key"
    key.write_text(bytes(range(32)).hex())
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(main, ["--store", f"local:{data}", "--hmac-key-file", str(key), *args])

    sealed = run("seal-index")
    assert sealed.exit_code == 0, sealed.output
    assert orjson.loads(sealed.stdout)["appended"] == []
    out = tmp_path / "wf-a.tar"
    exported = run("export", "--workflow-id", "wf-a", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    assert orjson.loads(exported.stdout)["executions"] == 9 and tarfile.is_tarfile(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("execvault-export")] == []
    assert run("export", "-o", str(tmp_path / "x")).exit_code == 2  # nothing selected

    assert run("verify").exit_code == 0
    store.delete(snapshot_key("b-2"))
    structural = run("verify")
    assert structural.exit_code == 1
    assert "deleted_object: snapshots/b-2" in structural.stdout
    report = orjson.loads(run("verify", "--read-data", "--subset", "1/2", "--json").stdout)
    assert report["subset"] == "1/2" and not report["ok"]
    assert run("verify", "--subset", "1/2").exit_code == 2  # needs --read-data
