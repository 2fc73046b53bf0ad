"""Compliance export: a self-contained bundle that standard tools verify (``docs/compliance.md``).

A bundle holds, for the executions selected by id, workflow or time range::

    objects/<key as stored>     snapshot.json.zst, result.json.zst, progress records
                                (progress-<status>-<d>.json.zst), their structure blobs, the
                                workflows' version commits, and the executions' tombstones, tier
                                events, tag/annotation events and the legal-hold events of the
                                executions and their workflows: the stored bytes, unchanged
    manifest/<table>.jsonl      the index rows of those executions (and the workflows' versions),
                                one JSON object a line, timestamps RFC 3339, plus ``dt``
    bundle.json                 selection, time, counts, executions, the index chain entries of the
                                days covered
    README.md                   how to verify and read it with sha256sum, zstd and any RFC 8785
                                (JCS) implementation
    SHA256SUMS                  ``sha256sum -c SHA256SUMS`` checks every other file

Every object is verified (record digest, blob SHA-256) before it is copied. Archived objects
(GLACIER, DEEP_ARCHIVE) cannot be read: the export refuses, naming them
(:class:`~archiver.errors.ObjectArchived`), unless ``skip_archived`` (then they are listed in
``bundle.json``). :func:`export_bundle` writes a directory; :func:`iter_tar` streams it as a tar.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from archiver.chain import ChainState, index_day_parts, load_chain, row_hash
from archiver.codec import (
    DEFAULT_MAX_OBJECT_BYTES,
    KNOWN_FORMAT_VERSIONS,
    decode_blob,
    decompress,
    record_digest,
)
from archiver.errors import (
    ArchiveError,
    IntegrityError,
    InvalidInput,
    NotFound,
    ObjectArchived,
)
from archiver.holds import HOLDS_PREFIX
from archiver.layout import (
    blob_key,
    check_id,
    execution_prefix,
    is_progress_key,
    result_key,
    snapshot_key,
    versions_prefix,
)
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.timeutil import format_ts, parse_ts, utcnow

__all__ = [
    "BUNDLE_FORMAT",
    "MAX_EXECUTION_IDS",
    "ExportReport",
    "Selection",
    "bundle_name",
    "export_bundle",
    "export_tar",
    "iter_tar",
]

BUNDLE_FORMAT: Final = "execvault-export/1"
MAX_EXECUTION_IDS: Final = 10_000
_SNAPSHOT_KIND: Final = "execution-snapshot"
_FINAL_STATE_KIND: Final = "final-state"
_VERSION_KIND: Final = "version"
_CORE: Final = ("snapshots", "final_states", "node_runs")
_CHUNK: Final = 1 << 20

#: ``progress(stage, done, total)``
ProgressCallback = Callable[[str, int, int | None], None]


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """Which executions to export: every given criterion must hold (they are ANDed).

    At least execution ids, a workflow id, or a closed time range (``since`` inclusive,
    ``until`` exclusive, on the snapshot's ``createdAt``) is required: an export of everything
    is refused.
    """

    execution_ids: tuple[str, ...] = ()
    workflow_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(
        cls,
        *,
        execution_ids: Iterable[object] = (),
        workflow_id: object = None,
        since: object = None,
        until: object = None,
    ) -> Selection:
        """Validate raw values (strings from a command line or a query string)."""
        ids: list[str] = []
        for value in execution_ids:
            for part in str(value).split(","):
                if part.strip():
                    ids.append(check_id(part.strip(), "executionId"))
        if len(ids) > MAX_EXECUTION_IDS:
            raise InvalidInput(
                f"at most {MAX_EXECUTION_IDS} execution ids per export", field="executionId"
            )
        wf = None if workflow_id in (None, "") else check_id(workflow_id, "workflowId")
        start = None if since in (None, "") else parse_ts(since, "since")
        end = None if until in (None, "") else parse_ts(until, "until")
        if start is not None and end is not None and start >= end:
            raise InvalidInput("until must be later than since", field="until")
        if not ids and wf is None:
            if start is None and end is None:
                raise InvalidInput(
                    "nothing selected: give executionId(s), a workflowId, or since and until",
                    field="selection",
                )
            if start is None or end is None:
                raise InvalidInput(
                    "an open time range selects everything: give both since and until "
                    "(or a workflowId / executionId)",
                    field="since" if start is None else "until",
                )
        return cls(tuple(dict.fromkeys(ids)), wf, start, end)

    def matches(self, execution_id: str, workflow_id: str, created_at: datetime) -> bool:
        return (
            (not self.execution_ids or execution_id in self.execution_ids)
            and (self.workflow_id is None or workflow_id == self.workflow_id)
            and (self.since is None or created_at >= self.since)
            and (self.until is None or created_at < self.until)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "executionIds": list(self.execution_ids),
            "workflowId": self.workflow_id,
            "since": None if self.since is None else format_ts(self.since),
            "until": None if self.until is None else format_ts(self.until),
        }


# --------------------------------------------------------------------------------------------
# reading and checking
# --------------------------------------------------------------------------------------------


def _record(data: bytes, kind: str | None, max_size: int) -> dict[str, Any]:
    """The body of a stored record, its envelope and digest checked (IntegrityError if not)."""
    body = orjson.loads(decompress(data, max_size=max_size))
    if not isinstance(body, dict):
        raise IntegrityError("record is not a JSON object")
    if body.get("formatVersion") not in KNOWN_FORMAT_VERSIONS:
        raise IntegrityError(f"unknown formatVersion {body.get('formatVersion')!r}")
    if kind is not None and body.get("kind") != kind:
        raise IntegrityError(f"expected a {kind} record, found {body.get('kind')!r}")
    digest = body.pop("digest", None)
    if digest != record_digest(body):
        raise IntegrityError(f"{body.get('kind')} record digest mismatch")
    return body


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _day_of(text: str | None) -> date | None:
    return None if text is None else parse_ts(text).date()


@dataclass(slots=True)
class _Execution:
    execution_id: str
    workflow_id: str | None = None
    created_at: datetime | None = None
    snapshot_hash: str | None = None
    finished_day: date | None = None
    state: str = "present"  # present | expired | archived
    keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "executionId": self.execution_id,
            "workflowId": self.workflow_id,
            "createdAt": None if self.created_at is None else format_ts(self.created_at),
            "snapshotHash": self.snapshot_hash,
            "state": self.state,
            "objects": self.keys,
        }


@dataclass(slots=True)
class ExportReport:
    """What :func:`export_bundle` wrote."""

    path: Path
    executions: int
    objects: int
    object_bytes: int
    rows: dict[str, int]
    archived_skipped: list[str]
    expired: list[str]
    files: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "executions": self.executions,
            "objects": self.objects,
            "objectBytes": self.object_bytes,
            "rows": self.rows,
            "archivedSkipped": self.archived_skipped,
            "expired": self.expired,
            "files": self.files,
        }


class _Collector:
    """Reads, verifies and remembers the objects of the bundle (each once)."""

    def __init__(self, store: ObjectStore, max_size: int, skip_archived: bool) -> None:
        self.store = store
        self.max_size = max_size
        self.skip_archived = skip_archived
        self.objects: dict[str, bytes] = {}
        self.archived: list[str] = []

    def get(self, key: str, check: Callable[[bytes], Any]) -> Any:
        """Read ``key`` and return ``check(data)``; None when archived (remembered)."""
        try:
            data = self.store.get(key)
        except ObjectArchived:
            self.archived.append(key)
            return None
        try:
            result = check(data)
        except (ArchiveError, orjson.JSONDecodeError) as err:
            raise IntegrityError(
                f"{key} does not verify ({err}); run `execvault verify --read-data`"
            ) from err
        self.objects[key] = data
        return result

    def record(self, key: str, kind: str | None) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.get(key, lambda d: _record(d, kind, self.max_size))
        return found

    def blob(self, snapshot_hash: str) -> None:
        key = blob_key(snapshot_hash)
        if key not in self.objects:
            self.get(key, lambda d: decode_blob(d, snapshot_hash, max_size=self.max_size))


def _event_prefixes(execution_id: str) -> list[str]:
    where = execution_prefix(execution_id).split("/", 1)[1]
    return [f"events/tombstones/executions/{where}", f"events/tiers/executions/{where}"]


def _read_rows(
    store: ObjectStore,
    infos: Iterable[tuple[date, ObjectInfo]],
    filters: list[tuple[str, str, Any]] | None,
) -> list[dict[str, Any]]:
    """Rows of the given parts (with ``dt``, their day), optionally filtered by pyarrow."""
    rows: list[dict[str, Any]] = []
    for day, info in infos:
        try:
            data = store.get(info.key)
        except NotFound:
            continue  # replaced meanwhile (compaction, rebuild): its rows are in the new file
        table = pq.read_table(pa.BufferReader(data))
        if filters:
            names = set(table.schema.names)
            if not all(column in names for column, _, _ in filters):
                continue
            table = pq.read_table(pa.BufferReader(data), filters=filters)
        for row in table.to_pylist():
            row["dt"] = day.isoformat()
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# the export
# --------------------------------------------------------------------------------------------


def bundle_name(now: datetime) -> str:
    """``execvault-export-YYYYMMDDTHHMMSSZ``: the bundle's folder (and tar) name."""
    return "execvault-export-" + now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def export_bundle(
    store: ObjectStore,
    selection: Selection,
    destination: str | Path,
    *,
    skip_archived: bool = False,
    progress: ProgressCallback | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    now: datetime | None = None,
) -> ExportReport:
    """Write the bundle of ``selection`` into the directory ``destination`` (created; it must
    not exist). On any error nothing is left behind.

    Raises InvalidInput for an empty result, NotFound for an execution id that was never
    captured, ObjectArchived naming archived objects (unless ``skip_archived``), IntegrityError
    for an object that does not verify.
    """
    target = Path(destination)
    if target.exists():
        raise InvalidInput(f"{target} already exists", field="output")
    moment = (now or utcnow()).astimezone(UTC)
    collector = _Collector(store, max_object_bytes, skip_archived)
    executions = _select(store, selection, progress)
    if not executions:
        raise InvalidInput("no execution matches the selection", field="selection")
    _collect(store, collector, executions, selection, progress)
    if collector.archived and not skip_archived:
        shown = ", ".join(collector.archived[:10])
        more = f" and {len(collector.archived) - 10} more" if len(collector.archived) > 10 else ""
        only = {e.execution_id for e in executions if e.state == "archived"}
        raise ObjectArchived(
            f"{len(collector.archived)} object(s) are archived and need a restore first "
            f"({shown}{more}); or export with skip-archived",
            execution_id=next(iter(only)) if len(only) == 1 else None,
        )
    rows = _rows(store, executions, progress)
    chain = load_chain(store)
    try:
        target.mkdir(parents=True)
        report = _write(target, collector, executions, rows, selection, chain, moment, store)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    if progress is not None:
        progress("written", report.files, report.files)
    return report


def _last_day(until: datetime) -> date:
    """The last day an exclusive ``until`` can select (no arithmetic below the first day)."""
    if until.date() == date.min and until.timetz().replace(tzinfo=None) == time_of_day.min:
        return date.min  # nothing is before 0001-01-01T00:00Z: matches() selects nothing
    return (until - timedelta(milliseconds=1)).date()


def _select(
    store: ObjectStore, selection: Selection, progress: ProgressCallback | None
) -> list[_Execution]:
    """The executions of the selection: by id directly, else from the index's snapshot rows."""
    found: dict[str, _Execution] = {}
    if selection.execution_ids:
        for execution_id in selection.execution_ids:
            found[execution_id] = _Execution(execution_id)
        return list(found.values())
    parts = index_day_parts(store.list("index/snapshots/"))
    first = None if selection.since is None else selection.since.date()
    last = None if selection.until is None else _last_day(selection.until)
    infos = [
        (day, info)
        for day, day_parts in sorted(parts.items())
        if (first is None or day >= first) and (last is None or day <= last)
        for _, info in day_parts
    ]
    filters = (
        None if selection.workflow_id is None else [("workflow_id", "=", selection.workflow_id)]
    )
    for i, row in enumerate(_read_rows(store, infos, filters), 1):
        if selection.matches(row["execution_id"], row["workflow_id"], row["created_at"]):
            found.setdefault(row["execution_id"], _Execution(row["execution_id"]))
        if progress is not None and i % 5000 == 0:
            progress("select", i, None)
    return [found[k] for k in sorted(found)]


def _collect(
    store: ObjectStore,
    collector: _Collector,
    executions: list[_Execution],
    selection: Selection,
    progress: ProgressCallback | None,
) -> None:
    """Read and verify every object of the selected executions (and their workflows)."""
    kept: list[_Execution] = []
    for i, ex in enumerate(executions, 1):
        events = [
            info.key for prefix in _event_prefixes(ex.execution_id) for info in store.list(prefix)
        ]
        body: dict[str, Any] | None
        try:
            body = collector.record(snapshot_key(ex.execution_id), _SNAPSHOT_KIND)
        except NotFound:
            from archiver.retention import is_cold_moved

            if is_cold_moved(store, ex.execution_id):  # in the cold store: restore it first
                collector.archived.append(snapshot_key(ex.execution_id))
            elif not any(k.startswith("events/tombstones/") for k in events):
                raise NotFound(
                    f"execution {ex.execution_id} has no snapshot and no tombstone"
                ) from None
            else:
                ex.state = "expired"
            body = None
        if body is not None:
            ex.workflow_id = body["workflowId"]
            ex.created_at = parse_ts(body["createdAt"], "createdAt")
            ex.snapshot_hash = body["snapshotHash"]
            if not selection.matches(ex.execution_id, body["workflowId"], ex.created_at):
                continue  # an id given together with a workflow or range it is not in
            collector.blob(body["snapshotHash"])
            ex.keys += [snapshot_key(ex.execution_id), blob_key(body["snapshotHash"])]
        elif snapshot_key(ex.execution_id) in collector.archived:
            ex.state = "archived"
            ex.keys.append(snapshot_key(ex.execution_id))
        try:
            final = collector.record(result_key(ex.execution_id), _FINAL_STATE_KIND)
        except NotFound:
            final = None
        else:
            ex.keys.append(result_key(ex.execution_id))
        for info in store.list(execution_prefix(ex.execution_id)):
            if is_progress_key(info.key):  # an execution that waited: its progress reports
                collector.record(info.key, _FINAL_STATE_KIND)
                ex.keys.append(info.key)
        if final is not None:
            ex.finished_day = _day_of(final.get("finishedAt"))
        for key in events:
            event = collector.record(key, None)
            if event is not None and ex.workflow_id is None:
                ex.workflow_id = event.get("workflowId")
            ex.keys.append(key)
        kept.append(ex)
        if progress is not None and (i % 100 == 0 or i == len(executions)):
            progress("objects", i, len(executions))
    executions[:] = kept
    for workflow_id in sorted({e.workflow_id for e in kept if e.workflow_id}):
        for info in store.list(versions_prefix(workflow_id)):
            collector.record(info.key, _VERSION_KIND)
        # legal holds set and cleared on the workflow (archiver.holds): part of the record
        for info in store.list(f"{HOLDS_PREFIX}workflow/{workflow_id}/"):
            collector.record(info.key, None)
    for ex in kept:
        for info in store.list(f"{HOLDS_PREFIX}execution/{ex.execution_id}/"):
            collector.record(info.key, None)
            ex.keys.append(info.key)


def _rows(
    store: ObjectStore, executions: list[_Execution], progress: ProgressCallback | None
) -> dict[str, list[dict[str, Any]]]:
    """The index rows of the executions (and the versions of their workflows), per table."""
    ids = {e.execution_id for e in executions}
    workflows = {e.workflow_id for e in executions if e.workflow_id}
    days: set[date] = set()
    unknown_day = False
    for ex in executions:
        if ex.created_at is None:
            unknown_day = True  # expired or archived: its rows may be in any day
            continue
        days.add(ex.created_at.date())
        days.add(ex.finished_day or ex.created_at.date())
    by_day = index_day_parts(store.list("index/"))
    wanted: dict[str, list[tuple[date, ObjectInfo]]] = {}
    for day, parts in sorted(by_day.items()):
        for table, info in parts:
            if table in _CORE and not unknown_day and day not in days:
                continue
            wanted.setdefault(table, []).append((day, info))
    out: dict[str, list[dict[str, Any]]] = {}
    for n, table in enumerate(sorted(wanted), 1):
        if table == "versions":
            rows = [
                r
                for r in _read_rows(store, wanted[table], None)
                if r.get("workflow_id") in workflows
            ]
        else:
            rows = [
                r for r in _read_rows(store, wanted[table], None) if r.get("execution_id") in ids
            ]
        # each row once (a part and the compacted file that replaces it may both be listed)
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row_hash(row), row)
        if unique:
            out[table] = sorted(
                unique.values(),
                key=lambda r: orjson.dumps({k: _jsonable(v) for k, v in sorted(r.items())}),
            )
        if progress is not None:
            progress("rows", n, len(wanted))
    return out


def _write(
    target: Path,
    collector: _Collector,
    executions: list[_Execution],
    rows: dict[str, list[dict[str, Any]]],
    selection: Selection,
    chain: ChainState,
    moment: datetime,
    store: ObjectStore,
) -> ExportReport:
    files: list[str] = []
    total = 0
    for key in sorted(collector.objects):
        path = target / "objects" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(collector.objects[key])
        files.append(f"objects/{key}")
        total += len(collector.objects[key])
    (target / "manifest").mkdir()
    for table, table_rows in sorted(rows.items()):
        with (target / "manifest" / f"{table}.jsonl").open("wb") as handle:
            for row in table_rows:
                handle.write(orjson.dumps({k: _jsonable(v) for k, v in row.items()}) + b"\n")
        files.append(f"manifest/{table}.jsonl")
    days = sorted(
        {e.created_at.date() for e in executions if e.created_at is not None}
        | {e.finished_day for e in executions if e.finished_day is not None}
    )
    covered = set(days)
    bundle = {
        "format": BUNDLE_FORMAT,
        "createdAt": format_ts(moment),
        "store": store.url,
        "selection": selection.to_json(),
        "counts": {
            "executions": len(executions),
            "objects": len(collector.objects),
            "objectBytes": total,
            "rows": {t: len(r) for t, r in sorted(rows.items())},
        },
        "executions": [e.to_json() for e in executions],
        "archivedSkipped": sorted(collector.archived),
        "chain": {
            "head": chain.head,
            "entries": len(chain.entries),
            "days": [d.isoformat() for d in days],
            "covering": [e.to_json() for e in chain.entries if e.day in covered],
            "unsealedDays": [d.isoformat() for d in days if d not in chain.latest()],
        },
    }
    (target / "bundle.json").write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
    files.append("bundle.json")
    (target / "README.md").write_text(_readme(bundle), encoding="utf-8")
    files.append("README.md")
    lines = []
    for rel in sorted(files):
        digest = hashlib.sha256((target / rel).read_bytes()).hexdigest()
        lines.append(f"{digest}  {rel}\n")
    (target / "SHA256SUMS").write_text("".join(lines), encoding="ascii")
    return ExportReport(
        path=target,
        executions=len(executions),
        objects=len(collector.objects),
        object_bytes=total,
        rows={t: len(r) for t, r in sorted(rows.items())},
        archived_skipped=sorted(collector.archived),
        expired=[e.execution_id for e in executions if e.state == "expired"],
        files=len(files) + 1,
    )


def _readme(bundle: Mapping[str, Any]) -> str:
    example = next(
        (
            e
            for e in bundle["executions"]
            if e["snapshotHash"] is not None and e["state"] == "present"
        ),
        None,
    )
    ex_id = example["executionId"] if example else "<executionId>"
    ex_hash = example["snapshotHash"] if example else "<snapshotHash>"
    snap = next(
        (k for k in (example or {}).get("objects", []) if k.endswith("snapshot.json.zst")),
        "executions/<s>/<executionId>/snapshot.json.zst",
    )
    blob = (
        f"blobs/sha256/{ex_hash[:2]}/{ex_hash}.json.zst"
        if example
        else "blobs/sha256/<h2>/<hash>.json.zst"
    )
    counts = bundle["counts"]
    return f"""# execvault compliance export

Created {bundle["createdAt"]} from `{bundle["store"]}`.
Selection: `{orjson.dumps(bundle["selection"]).decode()}`.
{counts["executions"]} execution(s), {counts["objects"]} object(s) ({counts["objectBytes"]} bytes),
index rows: {orjson.dumps(counts["rows"]).decode()}.

Everything below needs standard tools only: `sha256sum` (GNU coreutils), `zstd`, and any
RFC 8785 (JSON Canonicalization Scheme) implementation, e.g. Python's `rfc8785` package.

## 1. Nothing changed since the export

```
sha256sum -c SHA256SUMS
```

Every file of this bundle except `SHA256SUMS` itself is listed; each line must say `OK`.

## 2. The objects are the archive's own bytes

`objects/` holds the objects under their storage keys, byte for byte as stored. Each is one
zstd frame:

```
zstd -dc {snap}
```

**Structure blobs** (`objects/blobs/sha256/<h2>/<hash>.json.zst`) are named by the SHA-256 of
their decompressed bytes, which is also the `snapshotHash` of every snapshot that references
them:

```
zstd -dc objects/{blob} | sha256sum     # prints {ex_hash}
```

The decompressed bytes are RFC 8785 canonical JSON: parsing and re-canonicalizing them gives the
same bytes.

**Records** (snapshots `snapshot.json.zst`, final states `result.json.zst` and progress records
`progress-<status>-<d>.json.zst`, version commits under
`refs/`, tombstones, tier events and legal-hold events under `events/`) decompress to one JCS object carrying
`formatVersion`, `kind` and `digest` = `"sha256:" + hex(SHA-256(JCS(the object without
digest)))`. To check one (Python, with the `rfc8785` package):

```
zstd -dc objects/{snap} > record.json
python3 -c 'import json,hashlib,rfc8785,sys; b=json.load(open("record.json")); d=b.pop("digest"); print(d == "sha256:" + hashlib.sha256(rfc8785.dumps(b)).hexdigest())'
```

A snapshot record names its structure blob in `snapshotHash` (here `{ex_id}` →
`{ex_hash}`); the blob holds the workflow's nodes, connections and settings, the record the
execution's context (trigger, variables, credentials references, all secrets already replaced by
markers).

## 3. The index rows

`manifest/<table>.jsonl` are the archive's index rows (Parquet manifests) of these executions,
one JSON object a line, timestamps in RFC 3339 UTC, `dt` the row's UTC day partition.
`snapshots.object_key`, `final_states.object_key` and `snapshots.blob_key` name files under
`objects/`; `stored_bytes` is their size:

```
jq -r '[.object_key, .stored_bytes] | @tsv' manifest/snapshots.jsonl
```

## 4. The index chain

`bundle.json` → `chain.covering` lists the archive's index chain entries for the days these
executions belong to. Each entry holds, per index table, the number of rows of that UTC day and a
digest: SHA-256 over the sorted, distinct row hashes (hex, one per line, each followed by a
newline), where a row hash is the SHA-256 of the JCS form of the row without `recorded_at`, `dt`
and null columns (timestamps as RFC 3339 text with milliseconds). Entries are linked: `prev` is
the SHA-256 of the previous entry's bytes, and `chain.head` is the SHA-256 of the newest entry
when the bundle was made. Compare `chain.head` with the value your archive publishes (or with
`execvault verify --json` → `chainHead`) to tie this bundle to the archive's history.
`execvault verify` re-computes every day's digests and checks the links.

## 5. bundle.json

`selection`, `counts`, one entry per execution (`state`: `present`, `expired` — retention
deleted it; its tombstone is included — or `archived`, listed in `archivedSkipped` when the export
skipped cold objects), and `chain`.
"""


# --------------------------------------------------------------------------------------------
# tar
# --------------------------------------------------------------------------------------------


def iter_tar(directory: str | Path, root: str, *, mtime: float | None = None) -> Iterator[bytes]:
    """The directory as an uncompressed POSIX (pax) tar stream under ``root/``, file by file."""
    base = Path(directory)
    stamp = mtime if mtime is not None else utcnow().timestamp()
    paths = sorted(base.rglob("*"), key=lambda p: p.relative_to(base).as_posix())
    head = tarfile.TarInfo(root)
    head.type, head.mode, head.mtime = tarfile.DIRTYPE, 0o755, int(stamp)
    yield head.tobuf(format=tarfile.PAX_FORMAT)
    for path in paths:
        info = tarfile.TarInfo(f"{root}/{path.relative_to(base).as_posix()}")
        info.mtime = int(stamp)
        if path.is_dir():
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            continue
        info.size, info.mode = path.stat().st_size, 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
        if info.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


def export_tar(directory: str | Path, output: str | Path, root: str) -> int:
    """Write the bundle directory as a tar file (create-only: refuses an existing file); bytes."""
    target = Path(output)
    written = 0
    try:
        with target.open("xb") as handle:
            for chunk in iter_tar(directory, root):
                handle.write(chunk)
                written += len(chunk)
    except FileExistsError:
        raise InvalidInput(f"{target} already exists", field="output") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return written
