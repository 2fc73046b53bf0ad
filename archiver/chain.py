"""Tamper evidence for the index: a hash chain of per-day digests (``docs/compliance.md``).

For every UTC day and every index table, a **day digest** summarises the day's rows in a way that
does not depend on how the rows are split into Parquet files (compaction and ``rebuild-index``
rewrite files)::

    row hash    = SHA-256( JCS(row without recorded_at, dt and null columns; timestamps as RFC 3339) )
    day digest  = SHA-256( the distinct row hashes, hex, sorted, each followed by "\\n" )

Each complete day (before today, UTC) is **sealed** by appending a write-once chain entry::

    index-chain/<seq:010d>.json   JCS {"format", "seq", "day", "reason", "createdAt",
                                        "tables": {table: {"rows", "digest"[, "liveRows",
                                                   "liveDigest"]}},
                                        "prev": SHA-256 hex of the previous entry's bytes | null}

Entries are created with the store's create-only ``put`` (two sealers cannot both append ``seq``
N) and live outside ``index/``, so an S3 store with Object Lock locks them like every record.
The **latest** entry for a day is authoritative: a day that later gains rows (a final state that
arrived after its day was sealed) or whose executions retention expired is sealed again, with a
``reason``. ``liveRows``/``liveDigest`` cover the rows of executions *not* expired (a tombstone
exists) at seal time: after a rebuild drops the rows of expired executions, the day still checks
out against them.

:func:`check_day` compares a day's current rows with its latest entry; :func:`seal` appends
entries; :func:`load_chain` reads and checks the links. ``verify`` (``archiver.index``) runs the
same checks and reports removed or altered days and a broken chain.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from archiver.canonical import canonicalize
from archiver.errors import ArchiveError, ImmutableConflict, IntegrityError, NotFound
from archiver.store.base import ObjectInfo, ObjectStore
from archiver.timeutil import format_ts, utcnow

__all__ = [
    "CHAIN_FORMAT",
    "CHAIN_PREFIX",
    "EMPTY_DIGEST",
    "ChainEntry",
    "ChainProblem",
    "ChainState",
    "DayDigest",
    "SealReport",
    "TableDay",
    "chain_key",
    "check_day",
    "day_digests",
    "digest_of",
    "index_day_parts",
    "iter_entries_for",
    "load_chain",
    "read_day",
    "read_part_rows",
    "row_hash",
    "seal",
]

CHAIN_PREFIX: Final = "index-chain/"
CHAIN_FORMAT: Final = "execvault-index-chain/1"
#: the digest of a day without rows in a table
EMPTY_DIGEST: Final = hashlib.sha256(b"").hexdigest()

#: columns left out of a row's hash: informational (``recorded_at`` differs after a rebuild) or
#: the partition column itself
_UNHASHED: Final = frozenset({"recorded_at", "dt"})
#: tables whose rows a rebuild drops once retention deleted the execution's objects
_EXPIRABLE: Final = frozenset({"snapshots", "final_states", "node_runs"})

#: S3 reports Last-Modified in whole seconds; a part that may be newer than an entry is re-read
_CLOCK_MARGIN: Final = timedelta(seconds=5)

_DAY_PART_RE: Final = re.compile(
    r"index/(?P<table>[a-z][a-z0-9_]*)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/"
    r"[A-Za-z0-9][A-Za-z0-9._=-]*\.parquet"
)
_CHAIN_KEY_RE: Final = re.compile(r"index-chain/(?P<seq>\d{10})\.json")

Row = dict[str, Any]
#: ``progress(stage, done, total)``
ProgressCallback = Callable[[str, int, int | None], None]


# --------------------------------------------------------------------------------------------
# row hashes and day digests
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if v is not None}
    return value


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the JCS form of ``row`` without ``recorded_at``, ``dt`` and nulls."""
    clean = {
        k: _jsonable(v)
        for k, v in row.items()
        if v is not None and k not in _UNHASHED and not k.startswith("_")
    }
    return hashlib.sha256(canonicalize(clean)).hexdigest()


def digest_of(hashes: Iterable[str]) -> str:
    """The day digest of a set of row hashes (distinct, sorted, one hex line each)."""
    h = hashlib.sha256()
    for value in sorted(set(hashes)):
        h.update(value.encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class TableDay:
    """The digests of one table's rows of one day."""

    rows: int
    digest: str
    live_rows: int  # rows of executions that retention has not expired
    live_digest: str
    known_rows: int  # rows the latest entry could have known (not recorded after it)
    known_digest: str

    def to_entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "digest": self.digest}
        if self.live_digest != self.digest:
            out["liveRows"] = self.live_rows
            out["liveDigest"] = self.live_digest
        return out


#: one day: table -> its digests
DayDigest = dict[str, TableDay]


def _moment(row: Mapping[str, Any]) -> datetime | None:
    """When the fact behind a row became known: ``recorded_at``, else ``created_at``."""
    value = row.get("recorded_at") or row.get("created_at")
    return value if isinstance(value, datetime) else None


def day_digests(
    rows_by_table: Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    tombstoned: frozenset[str] = frozenset(),
    sealed_at: datetime | None = None,
) -> DayDigest:
    """Digests of one day's rows, per table.

    ``tombstoned`` holds ``executions/<id>`` names (see ``archiver.index._tombstoned_names``): rows
    of those executions are left out of the live digest. ``sealed_at`` is the day's latest chain
    entry's time: rows recorded after it (and node runs of such final states) are left out of the
    known digest, so a day that merely gained late rows can be told from an altered one.
    """
    late_executions: set[str] = set()
    order = sorted(rows_by_table, key=lambda t: (t == "node_runs", t))  # final states first
    out: DayDigest = {}
    for table in order:
        every: set[str] = set()
        live: set[str] = set()
        known: set[str] = set()
        for row in rows_by_table[table]:
            h = row_hash(row)
            every.add(h)
            execution = row.get("execution_id")
            if not (
                table in _EXPIRABLE
                and isinstance(execution, str)
                and f"executions/{execution}" in tombstoned
            ):
                live.add(h)
            late = False
            if sealed_at is not None:
                moment = _moment(row)
                if table == "node_runs":
                    late = execution in late_executions
                elif moment is not None and moment > sealed_at:
                    late = True
                    if table == "final_states" and isinstance(execution, str):
                        late_executions.add(execution)
            if not late:
                known.add(h)
        if every:
            out[table] = TableDay(
                len(every),
                digest_of(every),
                len(live),
                digest_of(live),
                len(known),
                digest_of(known),
            )
    return out


def index_day_parts(infos: Iterable[ObjectInfo]) -> dict[date, list[tuple[str, ObjectInfo]]]:
    """Every Parquet file of any index table (``index/<table>/dt=<day>/<name>.parquet``), by day."""
    days: dict[date, list[tuple[str, ObjectInfo]]] = {}
    for info in infos:
        match = _DAY_PART_RE.fullmatch(info.key)
        if match is None:
            continue
        try:
            day = date.fromisoformat(match["dt"])
        except ValueError:
            continue
        days.setdefault(day, []).append((match["table"], info))
    return days


def read_part_rows(store: ObjectStore, key: str) -> list[Row]:
    """The rows of one Parquet part (NotFound when it vanished; other errors propagate)."""
    rows: list[Row] = pq.read_table(pa.BufferReader(store.get(key))).to_pylist()
    return rows


# --------------------------------------------------------------------------------------------
# the chain
# --------------------------------------------------------------------------------------------


def chain_key(seq: int) -> str:
    return f"{CHAIN_PREFIX}{seq:010d}.json"


@dataclass(frozen=True, slots=True)
class ChainEntry:
    seq: int
    key: str
    day: date
    reason: str
    created_at: datetime
    tables: Mapping[str, Mapping[str, Any]]
    prev: str | None
    sha256: str  # of the entry's bytes: the next entry's ``prev``

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "key": self.key,
            "day": self.day.isoformat(),
            "reason": self.reason,
            "createdAt": format_ts(self.created_at),
            "tables": {t: dict(v) for t, v in self.tables.items()},
            "prev": self.prev,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """A finding about the chain or a sealed day.

    ``problem``: ``chain_broken``, ``day_removed`` (a sealed day's rows are gone, all or some),
    ``day_altered`` (a sealed day's rows differ), or, informational, ``day_gained`` (rows recorded
    after the seal), ``day_expired`` (rows of executions retention expired, dropped by a rebuild),
    ``day_unsealed`` (a complete day without an entry).
    """

    problem: str
    where: str  # a chain key, or "<day>/<table>"
    detail: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.where}: {self.detail}"


@dataclass(slots=True)
class ChainState:
    entries: list[ChainEntry] = field(default_factory=list)
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def head(self) -> str | None:
        return self.entries[-1].sha256 if self.entries else None

    @property
    def next_seq(self) -> int:
        return self.entries[-1].seq + 1 if self.entries else 1

    def latest(self) -> dict[date, ChainEntry]:
        """The authoritative (latest) entry of each sealed day."""
        out: dict[date, ChainEntry] = {}
        for entry in self.entries:
            out[entry.day] = entry
        return out


def _parse_entry(key: str, data: bytes) -> ChainEntry:
    body = orjson.loads(data)
    if not isinstance(body, dict) or body.get("format") != CHAIN_FORMAT:
        raise IntegrityError(f"not a chain entry of format {CHAIN_FORMAT}")
    if canonicalize(body) != data:
        raise IntegrityError("entry bytes are not the canonical (JCS) form of its content")
    tables = body["tables"]
    if not isinstance(tables, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("digest"), str) and isinstance(v.get("rows"), int)
        for v in tables.values()
    ):
        raise IntegrityError("malformed tables")
    prev = body.get("prev")
    if prev is not None and not isinstance(prev, str):
        raise IntegrityError("malformed prev")
    return ChainEntry(
        seq=int(body["seq"]),
        key=key,
        day=date.fromisoformat(body["day"]),
        reason=str(body.get("reason", "")),
        created_at=datetime.fromisoformat(body["createdAt"]).astimezone(UTC),
        tables=tables,
        prev=prev,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def load_chain(store: ObjectStore) -> ChainState:
    """Every chain entry, in order, with the links checked (``problems``: ``chain_broken``)."""
    state = ChainState()
    previous: ChainEntry | None = None
    expected = 1
    for info in sorted(store.list(CHAIN_PREFIX), key=lambda i: i.key):
        match = _CHAIN_KEY_RE.fullmatch(info.key)
        if match is None:
            state.problems.append(ChainProblem("chain_broken", info.key, "unexpected object"))
            continue
        seq = int(match["seq"])
        try:
            entry = _parse_entry(info.key, store.get(info.key))
        except NotFound:
            state.problems.append(ChainProblem("chain_broken", info.key, "vanished while read"))
            continue
        except (ArchiveError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            state.problems.append(ChainProblem("chain_broken", info.key, f"unreadable: {err}"))
            continue
        if entry.seq != seq:
            state.problems.append(
                ChainProblem("chain_broken", info.key, f"entry says seq {entry.seq}")
            )
        if seq != expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            state.problems.append(
                ChainProblem("chain_broken", info.key, f"entries missing before it (seq {missing})")
            )
        want = previous.sha256 if previous is not None else None
        if seq == expected and entry.prev != want:
            state.problems.append(
                ChainProblem(
                    "chain_broken",
                    info.key,
                    "prev does not match the previous entry's SHA-256"
                    if want is not None
                    else "the first entry must have prev null",
                )
            )
        state.entries.append(entry)
        previous = entry
        expected = seq + 1
    return state


def check_day(
    day: date, entry: ChainEntry | None, current: DayDigest
) -> tuple[list[ChainProblem], bool]:
    """Compare a day's current digests with its latest entry.

    Returns the findings and whether :func:`seal` should append a new entry for the day
    (unsealed, gained rows, or executions newly expired while their rows are still there).
    Findings ``day_removed`` / ``day_altered`` are problems; the others are informational.
    """
    if entry is None:
        if not current:
            return [], False
        rows = sum(t.rows for t in current.values())
        return [ChainProblem("day_unsealed", day.isoformat(), f"{rows} rows, no chain entry")], True
    findings: list[ChainProblem] = []
    reseal = False
    for table in sorted(set(entry.tables) | set(current)):
        sealed = entry.tables.get(table) or {"rows": 0, "digest": EMPTY_DIGEST}
        now = current.get(table)
        where = f"{day.isoformat()}/{table}"
        sealed_rows = int(sealed["rows"])
        sealed_digest = str(sealed["digest"])
        sealed_live = str(sealed.get("liveDigest", sealed_digest))
        if now is None:
            findings.append(
                ChainProblem("day_removed", where, f"all {sealed_rows} sealed rows are missing")
            )
            continue
        if now.digest == sealed_digest:
            if now.live_digest != sealed_live:
                reseal = True  # executions of the day expired since: record the new live digest
            continue
        if now.digest == sealed_live:
            findings.append(
                ChainProblem(
                    "day_expired",
                    where,
                    f"{sealed_rows - now.rows} rows of executions expired by retention are no "
                    "longer indexed (rebuilt since); the rest matches the seal",
                )
            )
            continue
        if now.rows > sealed_rows and now.known_digest in (sealed_digest, sealed_live):
            findings.append(
                ChainProblem(
                    "day_gained",
                    where,
                    f"{now.rows - sealed_rows} rows recorded after the seal (seal-index adds them)",
                )
            )
            reseal = True
            continue
        if now.rows < sealed_rows:
            findings.append(
                ChainProblem(
                    "day_removed",
                    where,
                    f"{sealed_rows - now.rows} of {sealed_rows} sealed rows are missing "
                    "(rows of executions expired after the seal count here if the index was "
                    "rebuilt before seal-index ran)",
                )
            )
        else:
            findings.append(
                ChainProblem(
                    "day_altered",
                    where,
                    f"digest differs from the seal ({now.rows} rows now, {sealed_rows} sealed)",
                )
            )
    return findings, reseal


# --------------------------------------------------------------------------------------------
# sealing
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SealReport:
    appended: list[ChainEntry] = field(default_factory=list)
    #: sealed days whose rows changed in a way seal cannot explain (not re-sealed; see verify)
    refused: list[ChainProblem] = field(default_factory=list)
    days_checked: int = 0
    head: str | None = None
    entries: int = 0

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "appended": [
                {"seq": e.seq, "day": e.day.isoformat(), "reason": e.reason, "key": e.key}
                for e in self.appended
            ],
            "refused": [str(p) for p in self.refused],
            "daysChecked": self.days_checked,
            "entries": self.entries,
            "head": self.head,
        }


def _tombstones(store: ObjectStore) -> tuple[frozenset[str], datetime | None]:
    """``executions/<id>`` names that have a tombstone, and the newest tombstone's time."""
    names: set[str] = set()
    newest: datetime | None = None
    for info in store.list("events/tombstones/executions/"):
        parts = info.key.split("/")  # events/tombstones/executions/<s>/<executionId>/<file>
        if len(parts) >= 6:
            names.add(f"executions/{parts[4]}")
        if info.last_modified is not None and (newest is None or info.last_modified > newest):
            newest = info.last_modified
    return frozenset(names), newest


def read_day(store: ObjectStore, parts: Iterable[tuple[str, ObjectInfo]]) -> dict[str, list[Row]]:
    """Every row of one day, per table (parts that vanished meanwhile are skipped)."""
    rows: dict[str, list[Row]] = {}
    for table, info in parts:
        try:
            rows.setdefault(table, []).extend(read_part_rows(store, info.key))
        except NotFound:
            continue
    return rows


def _append(
    store: ObjectStore,
    state: ChainState,
    day: date,
    reason: str,
    digests: DayDigest,
    now: datetime,
) -> ChainEntry:
    for _ in range(20):  # another sealer appended the same seq: reload and go on after it
        seq = state.next_seq
        body = {
            "format": CHAIN_FORMAT,
            "seq": seq,
            "day": day.isoformat(),
            "reason": reason,
            "createdAt": format_ts(now),
            "tables": {t: d.to_entry() for t, d in sorted(digests.items())},
            "prev": state.head,
        }
        data = canonicalize(body)
        key = chain_key(seq)
        try:
            created = store.put(key, data)
        except ImmutableConflict:
            created = False
        if created:
            entry = _parse_entry(key, data)
            state.entries.append(entry)
            return entry
        fresh = load_chain(store)
        state.entries, state.problems = fresh.entries, fresh.problems
    raise ArchiveError(f"could not append a chain entry for {day} (other sealers kept winning)")


def seal(
    store: ObjectStore,
    *,
    now: datetime | None = None,
    accept: Iterable[date] = (),
    full: bool = False,
    progress: ProgressCallback | None = None,
) -> SealReport:
    """Append chain entries for every complete day (before ``now``'s UTC day) that needs one.

    ``now`` only decides which days are complete (default: the clock); entries are stamped with
    the clock.

    * a day without an entry is sealed (``reason: "sealed"``);
    * a sealed day that gained rows recorded after its seal (late final states) is sealed again
      (``"late-rows"``), as is one whose executions retention expired since (``"expired"``);
    * a sealed day whose rows changed otherwise is **not** re-sealed: it is listed in
      ``refused`` (``verify`` reports it too), unless the day is in ``accept`` (an operator
      checked it, e.g. with ``verify --read-data``): then ``"accepted"``.

    Only days whose parts or tombstones changed after their entry are re-read, unless ``full``.
    Refuses (IntegrityError) to extend a broken chain.
    """
    moment = utcnow()  # entries carry the real time: later rows are told apart by it
    today = (now or moment).astimezone(UTC).date()
    accepted = set(accept)
    state = load_chain(store)
    if state.problems:
        raise IntegrityError(
            "the index chain is broken; not extending it: "
            + "; ".join(str(p) for p in state.problems[:5])
        )
    latest = state.latest()
    tombstoned, newest_tombstone = _tombstones(store)
    days = index_day_parts(store.list("index/"))
    report = SealReport()
    todo = sorted(d for d in set(days) | set(latest) if d < today)
    for i, day in enumerate(todo, 1):
        entry = latest.get(day)
        parts = days.get(day, [])
        if entry is not None and not full and day not in accepted:
            since = entry.created_at - _CLOCK_MARGIN
            changed = any(
                info.last_modified is None or info.last_modified >= since for _, info in parts
            ) or (newest_tombstone is not None and newest_tombstone >= since)
            if not changed and len({t for t, _ in parts}) >= len(entry.tables):
                continue
        report.days_checked += 1
        current = day_digests(
            read_day(store, parts),
            tombstoned=tombstoned,
            sealed_at=None if entry is None else entry.created_at,
        )
        findings, reseal = check_day(day, entry, current)
        problems = [f for f in findings if f.problem in ("day_removed", "day_altered")]
        reason: str | None = None
        if problems:
            if day in accepted:
                reason = "accepted"
            else:
                report.refused.extend(problems)
        elif entry is None:
            reason = "sealed" if current else None
        elif reseal:
            gained = any(f.problem == "day_gained" for f in findings)
            reason = "late-rows" if gained else "expired"
        if reason is not None:
            report.appended.append(_append(store, state, day, reason, current, moment))
        if progress is not None:
            progress("days", i, len(todo))
    report.head = state.head
    report.entries = len(state.entries)
    return report


def iter_entries_for(state: ChainState, days: Iterable[date]) -> Iterator[ChainEntry]:
    """Every entry (not only the latest) of the given days, in chain order."""
    wanted = set(days)
    return (e for e in state.entries if e.day in wanted)
