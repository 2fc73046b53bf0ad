"""Analyst SQL: node_runs rows, the sandbox, `execvault sql`, `POST /api/query`, docs/sql.md.

The ten example questions of ``docs/sql.md`` run through the CLI and the API against a generated
history whose answers are computed here in Python, independently of SQL. Every attack of the
issue is refused on every store, with the index byte-identical afterwards; a runaway query is
interrupted while captures keep being served and indexed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from api.cli import main
from archiver.archive import Archive
from archiver.errors import (
    InvalidInput,
    QueryBusy,
    QueryFailed,
    QueryLimitExceeded,
    QueryRefused,
)
from archiver.index import (
    NODE_RUNS_SCHEMA,
    ManifestWriter,
    rebuild_index,
    verify,
)
from archiver.layout import result_key
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore
from query.catalog import Catalog
from query.sql import SqlSandbox, check_statement, json_value
from tests.helpers import HMAC_KEY, REPO
from tests.test_api import Client, assert_error, make_app
from tests.test_index import index_rows, make_archive, populate

WEBHOOK = "n8n-nodes-base.webhook"
HTTP = "n8n-nodes-base.httpRequest"
SET = "n8n-nodes-base.set"
CODE = "n8n-nodes-base.code"
IF = "n8n-nodes-base.if"
SLACK = "n8n-nodes-base.slack"
LOOP = "n8n-nodes-base.splitInBatches"
FAILED = ("error", "crashed")


# --------------------------------------------------------------------------------------------
# a generated history with known answers


def _workflow(
    nodes: list[tuple[str, str]], chain: list[str], params: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "name": "Generated",
        "nodes": [
            {
                "id": name.lower().replace(" ", "-"),
                "name": name,
                "type": kind,
                "typeVersion": 1,
                "position": [200 * i, 0],
                "parameters": dict((params or {}).get(name, {})),
            }
            for i, (name, kind) in enumerate(nodes)
        ],
        "connections": {
            a: {"main": [[{"node": b, "type": "main", "index": 0}]]}
            for a, b in itertools.pairwise(chain)
        },
        "settings": {},
    }


_ALPHA_V1 = [("Webhook", WEBHOOK), ("HTTP", HTTP), ("Format", SET), ("Notify", SLACK)]
_ALPHA = [
    _workflow(_ALPHA_V1, ["Webhook", "HTTP", "Format", "Notify"]),
    _workflow(_ALPHA_V1[:3], ["Webhook", "HTTP", "Format"]),  # node removed: major
    _workflow([*_ALPHA_V1[:2], ("Format", CODE)], ["Webhook", "HTTP", "Format"]),  # type: major
    _workflow(  # node added: minor
        [*_ALPHA_V1[:2], ("Format", CODE), ("Check", IF)], ["Webhook", "HTTP", "Format"]
    ),
    _workflow(  # node added: minor → 3.2.0
        [*_ALPHA_V1[:2], ("Format", CODE), ("Check", IF), ("Log", SET)],
        ["Webhook", "HTTP", "Format"],
    ),
]
_BETA = [
    _workflow([("Webhook", WEBHOOK), ("HTTP", HTTP)], ["Webhook", "HTTP"]),
    _workflow(  # parameter change: patch
        [("Webhook", WEBHOOK), ("HTTP", HTTP)], ["Webhook", "HTTP"], {"HTTP": {"timeout": 5}}
    ),
]
_GAMMA = _workflow(
    [("Webhook", WEBHOOK), ("Each Item", LOOP), ("Transform", CODE)],
    ["Webhook", "Each Item", "Transform"],
)
_EPSILON = [
    _workflow([("Webhook", WEBHOOK), ("Transform", CODE)], ["Webhook", "Transform"]),
    _workflow(
        [("Webhook", WEBHOOK), ("Transform", CODE), ("Notify", SLACK)],
        ["Webhook", "Transform", "Notify"],
    ),
]
_BASE_MS = {WEBHOOK: 2.0, HTTP: 120.0, SET: 5.0, CODE: 30.0, IF: 1.0, SLACK: 80.0, LOOP: 3.0}

# (workflow id, structure, days ago, outcome); outcome: "ok", ("error", node, class, message,
# http code), ("crashed", ...) or None (no final state)
Outcome = str | tuple[str, str, str, str, str | None] | None
_E401 = ("error", "HTTP", "NodeApiError", "401 Unauthorized", "401")
_ETIMEOUT = ("error", "HTTP", "NodeApiError", "Timeout awaiting response", None)
_ECODE = ("error", "Transform", "NodeOperationError", "Cannot read properties of undefined", None)
_CRASH = ("crashed", "Transform", "NodeOperationError", "Worker ran out of memory", None)
PLAN: list[tuple[str, dict[str, Any], float, Outcome]] = [
    ("wf-alpha", _ALPHA[0], 38, "ok"),
    ("wf-alpha", _ALPHA[0], 36, "ok"),
    ("wf-alpha", _ALPHA[1], 30, "ok"),
    ("wf-alpha", _ALPHA[1], 28, "ok"),
    ("wf-alpha", _ALPHA[2], 22, "ok"),
    ("wf-alpha", _ALPHA[2], 20, "ok"),
    ("wf-alpha", _ALPHA[3], 14, "ok"),
    ("wf-alpha", _ALPHA[3], 10, "ok"),
    ("wf-alpha", _ALPHA[4], 5, _E401),
    ("wf-alpha", _ALPHA[4], 3, "ok"),
    ("wf-alpha", _ALPHA[4], 1, _E401),
    ("wf-beta", _BETA[0], 25, _ETIMEOUT),
    ("wf-beta", _BETA[0], 24, "ok"),
    ("wf-beta", _BETA[1], 9, _E401),
    ("wf-beta", _BETA[1], 2, "ok"),
    ("wf-gamma", _GAMMA, 12, "ok"),
    ("wf-gamma", _GAMMA, 6, "ok"),
    ("wf-gamma", _GAMMA, 0, "ok"),
    ("wf-delta", _GAMMA, 8, "ok"),  # the same structure as wf-gamma
    ("wf-delta", _GAMMA, 4, None),  # never finished
    ("wf-delta", _GAMMA, -1, None),  # started minutes ago: not yet "stuck"
    ("wf-epsilon", _EPSILON[0], 18, _ECODE),
    ("wf-epsilon", _EPSILON[0], 16, _CRASH),
    ("wf-epsilon", _EPSILON[1], 11, "ok"),
    ("wf-epsilon", _EPSILON[1], 7, "ok"),
]


@dataclass(frozen=True)
class Run:
    execution_id: str
    workflow_id: str
    node: str
    node_type: str
    index: int
    status: str
    started_at: datetime
    duration_ms: float
    items_in: int
    items_out: int
    error_class: str | None
    error_message: str | None
    day: date


@dataclass
class Execution:
    execution_id: str
    workflow_id: str
    created_at: datetime
    version: str
    seq: int
    snapshot_hash: str
    status: str | None = None
    finished_at: datetime | None = None
    runs: list[Run] = field(default_factory=list)

    @property
    def day(self) -> date | None:
        return None if self.finished_at is None else self.finished_at.date()


@dataclass
class History:
    now: datetime
    executions: list[Execution]
    levels: dict[tuple[str, int], str]

    @property
    def today(self) -> date:
        return self.now.date()

    def runs(self) -> Iterator[Run]:
        for e in self.executions:
            yield from e.runs


def _created_at(now: datetime, days_ago: float) -> datetime:
    if days_ago < 0:
        return now - timedelta(minutes=5)
    if days_ago == 0:
        return now - timedelta(minutes=30)
    day = datetime.combine((now - timedelta(days=days_ago)).date(), datetime.min.time(), UTC)
    return day + timedelta(hours=10)


def _final_state(
    execution_id: str, workflow_id: str, structure: dict[str, Any], when: datetime, outcome: Any
) -> tuple[dict[str, Any], str, datetime, list[Run]]:
    names = [(n["name"], n["type"]) for n in structure["nodes"]]
    chain = [structure["nodes"][0]["name"]]
    while chain[-1] in structure["connections"]:
        chain.append(structure["connections"][chain[-1]]["main"][0][0]["node"])
    status = "success" if outcome == "ok" else outcome[0]
    failing = None if outcome == "ok" else outcome[1]
    clock = when
    nodes: list[dict[str, Any]] = []
    runs: list[Run] = []
    kinds = dict(names)
    for position, name in enumerate(chain):
        kind = kinds[name]
        loops = 3 if kind == LOOP else 1
        node_runs = []
        for index in range(loops):
            duration = _BASE_MS[kind] + position + index / 2
            run_status = "success"
            error = None
            if name == failing:
                run_status = status
                error = {"message": outcome[3], "name": outcome[2]}
                if outcome[4] is not None:
                    error["httpCode"] = outcome[4]
            items_in = 0 if position == 0 else 2 + index
            items_out = 0 if error else 2 + index
            node_runs.append(
                {
                    "index": index,
                    "status": run_status,
                    "startedAt": clock.isoformat(),
                    "durationMs": duration,
                    "inputItems": items_in,
                    "outputItems": items_out,
                    **({"error": error} if error else {}),
                }
            )
            runs.append(
                Run(
                    execution_id,
                    workflow_id,
                    name,
                    kind,
                    index,
                    run_status,
                    clock,
                    duration,
                    items_in,
                    items_out,
                    None if error is None else error["name"],
                    None if error is None else error["message"],
                    date.min,  # set below, once the finish time is known
                )
            )
            clock += timedelta(milliseconds=int(duration) + 1)
        nodes.append({"node": name, "runs": node_runs})
        if name == failing:
            break
    finished = clock + timedelta(milliseconds=5)
    runs = [dataclasses.replace(r, day=finished.date()) for r in runs]
    payload = {
        "status": status,
        "startedAt": when.isoformat(),
        "finishedAt": finished.isoformat(),
        "nodes": nodes,
    }
    return payload, status, finished, runs


def build_history(archive: Archive, now: datetime) -> History:
    executions: list[Execution] = []
    counters: Counter[str] = Counter()
    for workflow_id, structure, days_ago, outcome in PLAN:
        counters[workflow_id] += 1
        execution_id = f"{workflow_id.removeprefix('wf-')}-{counters[workflow_id]}"
        when = _created_at(now, days_ago)
        captured = archive.capture_snapshot(
            execution_id=execution_id,
            workflow=structure,
            workflow_id=workflow_id,
            created_at=when,
            backfill=True,
            trigger_type="webhook",
            user_id="analyst-test",
        )
        snap = captured.snapshot
        record = Execution(
            execution_id,
            workflow_id,
            snap.created_at,
            snap.snapshot_version,
            snap.version_seq,
            snap.snapshot_hash,
        )
        if outcome is not None:
            payload, status, finished, runs = _final_state(
                execution_id, workflow_id, structure, snap.created_at, outcome
            )
            archive.record_final_state(execution_id, payload)
            record.status, record.finished_at, record.runs = status, finished, runs
        executions.append(record)
    levels = {
        (wf, c.seq): c.level for wf in {p[0] for p in PLAN} for c in archive.version_history(wf)
    }
    return History(now, executions, levels)


@pytest.fixture(scope="module")
def history_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, History]:
    store = LocalStore(tmp_path_factory.mktemp("sql") / "store")
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=7) as writer:  # several parts per day
        writer.attach(archive)
        history = build_history(archive, datetime.now(UTC).replace(microsecond=0))
    return store, history


# --------------------------------------------------------------------------------------------
# the ten documented questions and their answers computed in Python

DOCS = (REPO / "docs" / "sql.md").read_text()


def documented_queries() -> dict[int, str]:
    """``-- Q<n>`` headed SQL blocks of docs/sql.md, by question number."""
    found = {}
    for block in re.findall(r"```sql\n(.*?)```", DOCS, re.DOTALL):
        head = re.match(r"-- Q(\d+)\b", block)
        if head:
            found[int(head.group(1))] = block.strip()
    return found


def _rate(failed: int, total: int) -> float:
    return round(failed / total, 4)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ts(value: datetime) -> Any:
    return json_value(value)


def answer_1(h: History) -> list[list[Any]]:
    """Workflows whose executions fail under their current version, none under the one before."""
    out = []
    for wf in sorted({e.workflow_id for e in h.executions}):
        mine = [e for e in h.executions if e.workflow_id == wf]
        head = max(e.seq for e in mine)
        if head < 2:
            continue
        cur = [e for e in mine if e.seq == head and e.status is not None]
        prev = [e for e in mine if e.seq == head - 1 and e.status is not None]
        cur_failed = sum(e.status in FAILED for e in cur)
        if cur_failed and prev and not any(e.status in FAILED for e in prev):
            version = next(e.version for e in mine if e.seq == head)
            out.append([wf, version, len(cur), cur_failed])
    return out


def answer_2(h: History) -> list[list[Any]]:
    start = h.today.replace(day=1)
    per: dict[str, list[Run]] = defaultdict(list)
    for run in h.runs():
        if run.day >= start:
            per[run.node_type].append(run)
    rows = [
        [kind, len(rs), sum(r.status in FAILED for r in rs)] for kind, rs in sorted(per.items())
    ]
    rows = [[k, n, f, _rate(f, n)] for k, n, f in rows]
    return sorted(rows, key=lambda r: (-r[3], r[0]))


def answer_3(h: History) -> list[list[Any]]:
    hits = sorted(
        (e for e in h.executions if e.version == "3.2.0"),
        key=lambda e: (e.created_at, e.execution_id),
    )
    return [[e.execution_id, e.workflow_id, _ts(e.created_at), e.status] for e in hits]


def answer_4(h: History) -> list[list[Any]]:
    per: dict[date, list[Execution]] = defaultdict(list)
    for e in h.executions:
        if e.day is not None and e.day > h.today - timedelta(days=30):
            per[e.day].append(e)
    rows = []
    for day, es in sorted(per.items()):
        failed = sum(e.status in FAILED for e in es)
        rows.append([day.isoformat(), len(es), failed, _rate(failed, len(es))])
    return rows


def answer_5(h: History) -> list[list[Any]]:
    per: dict[str, list[float]] = defaultdict(list)
    for run in h.runs():
        if run.day > h.today - timedelta(days=7):
            per[run.node_type].append(run.duration_ms)
    rows = [
        [
            kind,
            len(ds),
            round(sum(ds) / len(ds), 1),
            round(_quantile(ds, 0.95), 1),
            max(ds),
        ]
        for kind, ds in per.items()
    ]
    return sorted(rows, key=lambda r: (-r[3], r[0]))


def answer_6(h: History) -> list[list[Any]]:
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in h.runs():
        if run.status in FAILED and run.day > h.today - timedelta(days=30):
            assert run.error_class is not None and run.error_message is not None
            groups[(run.error_class, run.error_message)].append(run)
    rows = [
        [cls, msg, len(rs), len({r.workflow_id for r in rs}), _ts(max(r.started_at for r in rs))]
        for (cls, msg), rs in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r[2], r[1]))[:10]


def answer_7(h: History) -> list[list[Any]]:
    mine = [e for e in h.executions if e.workflow_id == "wf-alpha"]
    rows = []
    for seq in sorted({e.seq for e in mine}):
        under = [e for e in mine if e.seq == seq]
        rows.append(
            [
                seq,
                under[0].version,
                h.levels[("wf-alpha", seq)],
                len(under),
                sum(e.status in FAILED for e in under),
            ]
        )
    return rows


def answer_8(h: History) -> list[list[Any]]:
    by_hash: dict[str, list[Execution]] = defaultdict(list)
    for e in h.executions:
        by_hash[e.snapshot_hash].append(e)
    rows = [
        [digest, sorted({e.workflow_id for e in es}), len(es)]
        for digest, es in by_hash.items()
        if len({e.workflow_id for e in es}) > 1
    ]
    return sorted(rows, key=lambda r: (-r[2], r[0]))


def answer_9(h: History) -> list[list[Any]]:
    stuck = [
        e for e in h.executions if e.status is None and e.created_at < h.now - timedelta(hours=1)
    ]
    stuck.sort(key=lambda e: (e.created_at, e.execution_id))
    return [[e.execution_id, e.workflow_id, e.version, _ts(e.created_at)] for e in stuck]


def answer_10(h: History) -> list[list[Any]]:
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in h.runs():
        groups[(run.execution_id, run.node)].append(run)
    rows = [
        [
            ex,
            node,
            rs[0].workflow_id,
            len(rs),
            sum(r.items_in for r in rs),
            sum(r.items_out for r in rs),
        ]
        for (ex, node), rs in groups.items()
        if len(rs) > 1
    ]
    return sorted(rows, key=lambda r: (r[2], r[0], r[1]))


ANSWERS: dict[int, Callable[[History], list[list[Any]]]] = {
    1: answer_1,
    2: answer_2,
    3: answer_3,
    4: answer_4,
    5: answer_5,
    6: answer_6,
    7: answer_7,
    8: answer_8,
    9: answer_9,
    10: answer_10,
}


def _same(actual: list[list[Any]], expected: list[list[Any]]) -> bool:
    if len(actual) != len(expected):
        return False
    for a_row, e_row in zip(actual, expected, strict=True):
        if len(a_row) != len(e_row):
            return False
        for a, e in zip(a_row, e_row, strict=True):
            if isinstance(e, float) and not isinstance(a, str):
                if a is None or abs(a - e) > 0.051:
                    return False
            elif a != e:
                return False
    return True


def test_the_generated_history_has_the_shape_the_questions_need(
    history_store: tuple[LocalStore, History],
) -> None:
    _, h = history_store
    alpha = [e.version for e in h.executions if e.workflow_id == "wf-alpha"]
    assert list(dict.fromkeys(alpha)) == ["1.0.0", "2.0.0", "3.0.0", "3.1.0", "3.2.0"]
    assert [e.version for e in h.executions if e.workflow_id == "wf-beta"][-1] == "1.0.1"
    for number, answer in ANSWERS.items():
        if number != 2:  # "this month" is empty on the first of a month before 00:30
            assert answer(h), f"question {number} has an empty answer: the test proves nothing"
    assert answer_1(h) == [["wf-alpha", "3.2.0", 3, 2]]


def test_docs_hold_ten_questions_with_queries() -> None:
    queries = documented_queries()
    assert sorted(queries) == list(range(1, 11))
    for number, sql in queries.items():
        check_statement(sql)  # each is one plain SELECT
        assert f"### {number}." in DOCS


@pytest.fixture(scope="module")
def cli_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("key") / "hmac.key"
    key.write_text(HMAC_KEY.hex() + "\n")
    return key


def _cli(store: LocalStore, key: Path, *args: str) -> Any:
    return CliRunner().invoke(
        main, ["--store", f"local:{store.root}", "--hmac-key-file", str(key), "sql", *args]
    )


@pytest.mark.parametrize("number", range(1, 11))
def test_documented_questions_through_cli_and_api(
    number: int, history_store: tuple[LocalStore, History], cli_key: Path
) -> None:
    store, h = history_store
    sql = documented_queries()[number]
    expected = ANSWERS[number](h)

    result = _cli(store, cli_key, "--format", "json", "--", sql)  # the SQL starts with "--"
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.stdout)
    assert _same(body["rows"], expected), (body["rows"], expected)
    assert body["truncated"] is False

    app, _ = make_app(store)
    response = Client(app).post("/api/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    api_body = response.json()
    assert api_body["rows"] == body["rows"]
    assert api_body["columns"] == body["columns"]


# --------------------------------------------------------------------------------------------
# node_runs rows


def test_node_runs_rows_carry_type_id_error_and_the_final_states_day(
    history_store: tuple[LocalStore, History],
) -> None:
    store, h = history_store
    rows = index_rows(store, "node_runs")
    assert len(rows) == sum(1 for _ in h.runs())
    by_key = {(r["execution_id"], r["node_name"], r["run_index"]): r for r in rows}
    for run in h.runs():
        row = by_key[(run.execution_id, run.node, run.index)]
        assert row["node_type"] == run.node_type
        assert row["node_id"] == run.node.lower().replace(" ", "-")
        assert row["status"] == run.status
        assert row["duration_ms"] == run.duration_ms
        assert (row["input_items"], row["output_items"]) == (run.items_in, run.items_out)
        assert row["started_at"] == run.started_at
        assert row["error_class"] == run.error_class
        assert row["error_message"] == run.error_message
        assert row["_part"].split("/")[2] == f"dt={run.day.isoformat()}"
        assert row["object_key"] == result_key(run.execution_id)
    http_errors = [r for r in rows if r["error_http_code"] is not None]
    assert {r["error_http_code"] for r in http_errors} == {"401"}
    schema = pq.read_schema(store.root / rows[0]["_part"])
    assert schema.remove_metadata().equals(NODE_RUNS_SCHEMA)


def test_verify_lists_a_final_state_whose_node_runs_are_missing_once() -> None:
    store = MemoryStore()
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        populate(archive)
    assert verify(store).ok
    for info in list(store.list("index/node_runs/")):
        store.delete(info.key)
    report = verify(store)
    finals = {r["object_key"] for r in index_rows(store, "final_states")}
    assert sorted(report.objects_without_rows) == sorted(finals)
    assert not report.ok
    rebuild_index(store)
    assert verify(store).ok
    assert len(index_rows(store, "node_runs")) == 16


def test_node_runs_long_error_messages_are_cut_and_missing_nodes_have_no_type() -> None:
    store = MemoryStore()
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        archive.capture_snapshot(
            execution_id="e1", workflow=_BETA[0], workflow_id="wf", created_at=datetime.now(UTC)
        )
        archive.record_final_state(
            "e1",
            {
                "status": "error",
                "nodes": [
                    {
                        "node": "HTTP",
                        "nodeId": "given-id",
                        "status": "error",
                        "error": {"message": "x" * 5000},
                    },
                    {"node": "Ghost", "status": "success"},
                    {"node": "Webhook", "runs": []},
                ],
            },
        )
    rows = {r["node_name"]: r for r in index_rows(store, "node_runs")}
    assert set(rows) == {"HTTP", "Ghost"}  # a node without runs has no row
    assert rows["HTTP"]["node_id"] == "given-id" and rows["HTTP"]["node_type"] == HTTP
    assert len(rows["HTTP"]["error_message"]) == 1000
    assert rows["Ghost"]["node_type"] is None and rows["Ghost"]["node_id"] is None
    before = {k: {c: v for c, v in r.items() if c != "_part"} for k, r in rows.items()}
    rebuild_index(store)
    after = {r["node_name"]: r for r in index_rows(store, "node_runs")}
    assert {k: {c: v for c, v in r.items() if c != "_part"} for k, r in after.items()} == before


# --------------------------------------------------------------------------------------------
# outside engines: pyarrow alone gives the same answers as our views


def test_pyarrow_alone_reads_the_same_answers(history_store: tuple[LocalStore, History]) -> None:
    store, h = history_store
    root = store.root / "index"

    def dataset(table: str) -> pa.Table:
        return pds.dataset(root / table, format="parquet", partitioning="hive").to_table()

    runs = dataset("node_runs")
    # question 2 with pyarrow: failure rate by node type since the first of the month
    start = pa.scalar(h.today.replace(day=1).isoformat())
    recent = runs.filter(pc.field("dt") >= start)
    failed = pc.is_in(recent["status"], pa.array(list(FAILED)))
    grouped = (
        recent.append_column("failed", pc.cast(failed, pa.int64()))
        .group_by("node_type")
        .aggregate([("failed", "sum"), ("failed", "count")])
    )
    by_arrow = sorted(
        [[r["node_type"], r["failed_count"], r["failed_sum"]] for r in grouped.to_pylist()]
    )
    by_views = SqlSandbox(Catalog(store)).run(
        "SELECT node_type, count(*), count(*) FILTER (WHERE status IN ('error', 'crashed')) "
        "FROM node_runs WHERE dt >= date_trunc('month', current_date) GROUP BY ALL ORDER BY 1"
    )
    assert by_arrow == by_views.rows()
    assert [r[:3] for r in answer_2(h)] == sorted(by_arrow, key=lambda r: (-r[2] / r[1], r[0]))

    # executions without a final state: snapshots anti-joined with final states
    snapshots = dataset("snapshots")
    finals = dataset("final_states")
    open_ids = set(snapshots["execution_id"].to_pylist()) - set(finals["execution_id"].to_pylist())
    by_views = SqlSandbox(Catalog(store)).run(
        "SELECT execution_id FROM executions WHERE status IS NULL ORDER BY 1"
    )
    assert sorted(open_ids) == [r[0] for r in by_views.rows()]


# --------------------------------------------------------------------------------------------
# the sandbox: every attack refused, the index untouched


def _fingerprint(store: ObjectStore, catalog: Catalog) -> dict[str, str]:
    """SHA-256 of every object of the store and every file DuckDB can see (the local index)."""
    prints = {
        f"store:{info.key}": hashlib.sha256(store.get(info.key)).hexdigest()
        for info in store.list("")
    }
    for path in Path(catalog.index_dir).rglob("*"):
        if path.is_file():
            prints[f"file:{path}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return prints


def _attacks(index_dir: str, outside_file: str) -> list[tuple[str, type[Exception]]]:
    return [
        ("SELECT * FROM read_csv('/etc/passwd')", QueryRefused),
        ("SELECT * FROM read_csv_auto('/etc/passwd')", QueryRefused),
        ("SELECT * FROM read_text('/etc/passwd')", QueryRefused),
        ("SELECT * FROM read_blob('/etc/passwd')", QueryRefused),
        ("SELECT content FROM read_text('/etc/hostname')", QueryRefused),
        ("SELECT * FROM glob('/*')", QueryRefused),
        ("SELECT * FROM glob('/etc/*')", QueryRefused),
        (f"SELECT * FROM read_blob('{outside_file}')", QueryRefused),
        (f"SELECT * FROM read_text('{index_dir}/../../../../../etc/passwd')", QueryRefused),
        (f"SELECT * FROM read_text('{index_dir}/snapshots/../../secret')", QueryRefused),
        (f"SELECT * FROM read_text('{index_dir}x/evil')", QueryRefused),
        ("SELECT * FROM read_text('~/.bashrc')", QueryRefused),
        ("SELECT * FROM read_parquet('~/x.parquet')", QueryRefused),
        ("SELECT * FROM read_parquet('s3://bucket/index/x.parquet')", QueryRefused),
        ("SELECT * FROM read_parquet('https://example.com/x.parquet')", QueryRefused),
        ("SELECT * FROM read_csv('http://169.254.169.254/latest/meta-data/')", QueryRefused),
        ("SELECT * FROM '/etc/passwd'", QueryFailed),  # no replacement scan for paths
        ("SELECT * FROM parquet_metadata('/etc/passwd')", QueryRefused),
        (f"COPY (SELECT 1) TO '{index_dir}/snapshots/dt=2024-03-01/x.parquet'", QueryRefused),
        (f"COPY snapshots TO '{index_dir}/out.csv'", QueryRefused),
        ("COPY snapshots TO '/tmp/out.csv'", QueryRefused),
        ("ATTACH '/tmp/evil.duckdb' AS evil", QueryRefused),
        ("INSTALL httpfs", QueryRefused),
        ("LOAD httpfs", QueryRefused),
        (f"EXPORT DATABASE '{index_dir}/export'", QueryRefused),
        ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", QueryRefused),
        ("CREATE TABLE t AS SELECT 1", QueryRefused),
        ("SET enable_external_access = true", QueryRefused),
        ("SET allowed_directories = ['/']", QueryRefused),
        ("RESET lock_configuration", QueryRefused),
        ("PRAGMA version", QueryRefused),
        ("PRAGMA enable_profiling", QueryRefused),
        ("CALL pragma_version()", QueryRefused),
        ("EXPLAIN ANALYZE SELECT 1", QueryRefused),
        ("SELECT 1; DROP VIEW snapshots", QueryRefused),
        ("SELECT 1; COPY snapshots TO '/tmp/x.csv'", QueryRefused),
        (f"SELECT * FROM query('COPY snapshots TO ''{index_dir}/q.csv''')", QueryRefused),
        ("SELECT * FROM query('SELECT 1')", QueryRefused),
        ("SELECT * FROM enable_logging()", QueryRefused),
        ("SELECT * FROM checkpoint()", QueryRefused),
        ("SELECT * FROM sandbox", QueryFailed),  # never a Python variable of this process
        ("SELECT * FROM secret_rows", QueryFailed),
        ("SELECT count(*) FROM range(1e11)", QueryFailed),  # DuckDB: range() takes integers
        ("", QueryRefused),
        ("SELEC 1", QueryFailed),
    ]


_RUNAWAY = [
    "SELECT count(*) FROM range(100000000000)",
    "SELECT count(*) FROM range(1e11::BIGINT) a",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t",
]
_MEMORY_HOGS = [
    "SELECT list(range) FROM range(1000000000)",
    "SELECT string_agg(repeat('x', 1000000), '') FROM range(10000)",
]


def test_every_attack_is_refused_and_the_index_stays_byte_identical(
    store: ObjectStore, tmp_path: Path
) -> None:
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=4) as writer:
        writer.attach(archive)
        populate(archive)
    secret_rows = pa.table({"secret": ["python objects are not tables"]})  # noqa: F841
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("not for analysts")
    with Catalog(store, cache_dir=tmp_path / "mirror") as catalog:
        sandbox = SqlSandbox(catalog, timeout_seconds=5.0, memory_limit="256MB")
        assert sandbox.run("SELECT count(*) FROM snapshots").rows() == [[12]]
        before = _fingerprint(store, catalog)
        attacks = _attacks(catalog.index_dir.rstrip("/"), str(outside))
        if isinstance(store, LocalStore):
            # the store's own objects sit next to the index: out of reach too
            record = next(store.root.glob("executions/*/*/snapshot.json.zst"))
            attacks.append((f"SELECT * FROM read_blob('{record}')", QueryRefused))
        for sql, error in attacks:
            with pytest.raises(error) as raised:
                sandbox.run(sql)
            assert str(raised.value), sql
        for sql in _RUNAWAY:
            started = time.monotonic()
            with pytest.raises(QueryLimitExceeded, match="time limit"):
                sandbox.run(sql, timeout_seconds=0.5)
            assert time.monotonic() - started < 3.0
        for sql in _MEMORY_HOGS:
            with pytest.raises(QueryLimitExceeded, match=r"memory|time limit"):
                sandbox.run(sql, timeout_seconds=3.0)
        assert _fingerprint(store, catalog) == before
        assert not list(Path(catalog.index_dir).rglob("*.csv"))
        # still serving after all that
        assert sandbox.run("SELECT count(*) FROM final_states").rows() == [[8]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  select 1 ;  ",
        "-- a comment\nSELECT 1",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "FROM snapshots SELECT count(*)",
        "VALUES (1), (2)",
        "DESCRIBE node_runs",
        "SHOW TABLES",
        "SUMMARIZE SELECT 1 AS a",
        "SELECT 'a;b; DROP TABLE x' AS text",
        "(SELECT 1) UNION ALL (SELECT 2)",
    ],
)
def test_plain_selects_pass_the_statement_check(sql: str) -> None:
    assert check_statement(sql) == sql
    SqlSandbox(Catalog(MemoryStore())).run(sql)


def test_limits_rows_bytes_and_concurrency(tmp_path: Path) -> None:
    catalog = Catalog(MemoryStore())
    sandbox = SqlSandbox(catalog, max_rows=100, timeout_seconds=5.0, max_result_bytes=1 << 20)
    result = sandbox.run("SELECT range AS n FROM range(1000)")
    assert result.row_count == 100 and result.truncated
    assert result.rows()[:2] == [[0], [1]]
    exact = sandbox.run("SELECT range AS n FROM range(100)")
    assert exact.row_count == 100 and not exact.truncated
    assert sandbox.run("SELECT 1", limit=1).row_count == 1
    for bad in ({"limit": 0}, {"limit": 101}, {"timeout_seconds": 6.0}, {"timeout_seconds": 0}):
        with pytest.raises(InvalidInput):
            sandbox.run("SELECT 1", **bad)  # type: ignore[arg-type]
    # a big result stops at the byte cap (truncated), a single huge batch is refused
    roomy = SqlSandbox(catalog, max_rows=10_000, max_result_bytes=1 << 20)
    wide = roomy.run("SELECT repeat('x', 600) AS s FROM range(5000)")
    assert wide.truncated and 0 < wide.row_count < 5000
    with pytest.raises(QueryLimitExceeded, match="larger than"):
        roomy.run("SELECT repeat('x', 2000000) AS s")

    # one slot, held by a runaway query: the next query waits its time limit, then 429s
    single = SqlSandbox(catalog, timeout_seconds=5.0, max_concurrent=1)
    errors: list[Exception] = []

    def runaway() -> None:
        try:
            single.run("SELECT count(*) FROM range(100000000000)", timeout_seconds=2.0)
        except QueryLimitExceeded as err:
            errors.append(err)

    import threading

    thread = threading.Thread(target=runaway)
    thread.start()
    time.sleep(0.3)
    with pytest.raises(QueryBusy):
        single.run("SELECT 1", timeout_seconds=0.3)
    thread.join()
    assert len(errors) == 1
    assert single.run("SELECT 1").rows() == [[1]]


def test_values_come_back_as_json() -> None:
    sandbox = SqlSandbox(Catalog(MemoryStore()))
    result = sandbox.run(
        "SELECT TIMESTAMPTZ '2024-03-01 10:00:00.123+00' AS ts, DATE '2024-03-01' AS d, "
        "INTERVAL '1 day 2 hours' AS iv, 1.50::DECIMAL(5, 2) AS dec, "
        "170141183460469231731687303715884105727::HUGEINT AS huge, sum(x) AS total, "
        "[1, 2] AS list, {'k': 'v'} AS struct, MAP {1: 'a'} AS map, 'x'::BLOB AS blob, "
        "NULL AS nothing, 'nan'::DOUBLE AS nan FROM (VALUES (1), (2)) t(x)"
    )
    assert [c.type for c in result.columns][:3] == ["TIMESTAMP WITH TIME ZONE", "DATE", "INTERVAL"]
    assert result.rows() == [
        [
            "2024-03-01T10:00:00.123Z",
            "2024-03-01",
            "P0M1DT7200S",
            1.5,
            "170141183460469231731687303715884105727",
            3,
            [1, 2],
            {"k": "v"},
            {1: "a"},
            "eA==",
            None,
            pytest.approx(float("nan"), nan_ok=True),
        ]
    ]
    body = orjson.loads(result.to_json_bytes())
    assert body["rows"][0][8] == {"1": "a"} and body["rows"][0][11] is None
    # values Python cannot hold still come back (DuckDB's infinity)
    assert sandbox.run("SELECT 'infinity'::DATE AS d").rows()[0][0]


# --------------------------------------------------------------------------------------------
# the API route and the CLI command


def test_api_query_needs_the_query_scope_and_checks_its_body(tmp_path: Path) -> None:
    from tests.test_api import TOKENS, TOKENS_SETTING

    store = LocalStore(tmp_path / "store")
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        populate(archive)
    app, _ = make_app(store, tokens=TOKENS_SETTING, query_max_rows=5, query_timeout_ms=2000)
    body = {"sql": "SELECT execution_id FROM snapshots ORDER BY 1"}
    assert_error(Client(app).post("/api/query", json=body), 401)
    assert_error(Client(app, TOKENS["read"]).post("/api/query", json=body), 403, code="forbidden")
    for holder in ("query", "admin"):
        response = Client(app, TOKENS[holder]).post("/api/query", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["columns"] == [{"name": "execution_id", "type": "VARCHAR"}]
        assert data["rowCount"] == 5 and data["truncated"] is True  # query_max_rows
        assert data["rows"][0] == ["a-0"]
    client = Client(app, TOKENS["query"])
    small = client.post("/api/query", json={**body, "limit": 2}).json()
    assert small["rows"] == [["a-0"], ["a-1"]] and small["truncated"] is True

    for bad, field_name in (
        ({"sql": 1}, "sql"),
        ({}, "sql"),
        ({**body, "limit": 0}, "limit"),
        ({**body, "limit": True}, "limit"),
        ({**body, "limit": 6}, "limit"),
        ({**body, "timeoutMs": 2001}, "timeoutMs"),
        ({**body, "timeoutMs": "1"}, "timeoutMs"),
        ({**body, "extra": 1}, "body"),
    ):
        assert_error(client.post("/api/query", json=bad), 422, field=field_name)
    assert_error(client.post("/api/query", json=[1]), 422, field="body")

    refused = client.post("/api/query", json={"sql": "COPY snapshots TO '/tmp/x.csv'"})
    assert "COPY" in assert_error(refused, 422, field="sql", code="query_refused")["message"]
    outside = client.post("/api/query", json={"sql": "SELECT * FROM read_text('/etc/passwd')"})
    assert_error(outside, 422, field="sql", code="query_refused")
    failed = client.post("/api/query", json={"sql": "SELECT * FROM nope"})
    message = assert_error(failed, 422, field="sql", code="query_failed")["message"]
    assert "nope" in message and "LINE 1" not in message  # the query text is not repeated
    slow = client.post(
        "/api/query", json={"sql": "SELECT count(*) FROM range(100000000000)", "timeoutMs": 300}
    )
    assert_error(slow, 422, code="query_limit_exceeded")


def test_openapi_documents_the_query_route(tmp_path: Path) -> None:
    app, _ = make_app()
    operation = app.openapi()["paths"]["/api/query"]["post"]
    assert operation["x-required-scope"] == "query"
    assert "`query`" in operation["description"]
    assert {"200", "401", "403", "413", "415", "422", "429", "503"} <= set(operation["responses"])
    for status in ("401", "403", "422", "429"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert operation["security"] == [{"bearerToken": []}]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"sql", "limit", "timeoutMs"}
    api_md = (REPO / "docs" / "api.md").read_text()
    assert "| `POST /api/query` | `query` |" in api_md


def test_cli_formats(
    history_store: tuple[LocalStore, History], cli_key: Path, tmp_path: Path
) -> None:
    store, h = history_store
    sql = "SELECT execution_id, status, created_at FROM executions ORDER BY created_at, 1"
    table = _cli(store, cli_key, sql)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["execution_id", "status", "created_at"]
    assert len(lines) == 2 + len(h.executions)
    assert f"{len(h.executions)} row(s)" in table.stderr

    csv_out = _cli(store, cli_key, "--format", "csv", "--limit", "3", sql)
    assert csv_out.exit_code == 0
    assert csv_out.stdout.splitlines()[0] == "execution_id,status,created_at"
    assert len(csv_out.stdout.splitlines()) == 4
    assert "cut off" in csv_out.stderr

    target = tmp_path / "out.parquet"
    parquet = _cli(store, cli_key, "--format", "parquet", "--output", str(target), sql)
    assert parquet.exit_code == 0, parquet.output
    table_pq = pq.read_table(target)
    assert table_pq.num_rows == len(h.executions)
    assert table_pq.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert _cli(store, cli_key, "--format", "parquet", sql).exit_code == 2  # needs --output

    json_file = tmp_path / "out.json"
    assert _cli(store, cli_key, "--format", "json", "-o", str(json_file), sql).exit_code == 0
    assert orjson.loads(json_file.read_bytes())["rowCount"] == len(h.executions)

    refused = _cli(store, cli_key, "SELECT * FROM read_text('/etc/passwd')")
    assert refused.exit_code == 2 and "outside the index" in refused.stderr
    piped = CliRunner().invoke(
        main,
        ["--store", f"local:{store.root}", "sql", "--format", "json", "-"],
        input="SELECT 41 + 1 AS answer",
    )
    assert orjson.loads(piped.stdout)["rows"] == [[42]]


# --------------------------------------------------------------------------------------------
# a runaway query while captures keep arriving


def _capture_body(n: int) -> dict[str, Any]:
    return {
        "executionId": f"live-{n}",
        "workflowId": "wf-live",
        "workflow": _BETA[0],
        "triggerType": "webhook",
    }


def test_runaway_query_is_interrupted_while_ingest_keeps_working(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    app, _ = make_app(store, query_timeout_ms=60_000)
    archive: Archive = app.state.archive
    writer = ManifestWriter(store, flush_seconds=0.2).attach(archive)

    async def scenario() -> tuple[httpx.Response, float, list[tuple[float, float, int]]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def runaway() -> tuple[httpx.Response, float]:
                response = await client.post(
                    "/api/query",
                    json={"sql": "SELECT count(*) FROM range(100000000000)", "timeoutMs": 2500},
                )
                return response, loop.time() - started

            async def ingest() -> list[tuple[float, float, int]]:
                await asyncio.sleep(0.3)  # the query is running by now
                timings = []
                for n in range(15):
                    t0 = loop.time()
                    response = await client.post("/api/execution-snapshots", json=_capture_body(n))
                    health = await client.get("/healthz")
                    assert health.status_code == 200
                    timings.append((t0 - started, loop.time() - t0, response.status_code))
                return timings

            (response, ended), timings = await asyncio.gather(runaway(), ingest())
            return response, ended, timings

    try:
        response, ended, timings = asyncio.run(scenario())
    finally:
        writer.close()
    assert_error(response, 422, code="query_limit_exceeded")
    assert 2.4 <= ended < 8.0
    assert [status for _, _, status in timings] == [201] * 15
    during = [latency for start, latency, _ in timings if start < ended]
    assert len(during) >= 10, timings  # most captures were served while the query ran
    assert max(latency for _, latency, _ in timings) < 2.0, timings
    # ... and indexed: a query after the interruption sees every one of them
    after = Client(app).post(
        "/api/query", json={"sql": "SELECT count(*) FROM snapshots WHERE workflow_id = 'wf-live'"}
    )
    assert after.json()["rows"] == [[15]]


# --------------------------------------------------------------------------------------------
# infra/athena: the DDL matches the files


_HIVE_TYPES = {
    pa.string(): "string",
    pa.int16(): "smallint",
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.float64(): "double",
    pa.timestamp("ms", tz="UTC"): "timestamp",
    pa.list_(pa.string()): "array<string>",
}


def test_athena_ddl_matches_the_manifests_and_its_views_run(
    history_store: tuple[LocalStore, History],
) -> None:
    import duckdb

    from archiver.index import SCHEMAS

    folder = REPO / "infra" / "athena"
    for table, schema in SCHEMAS.items():
        (path,) = folder.glob(f"0?_{table}.sql")
        ddl = path.read_text()
        columns = re.findall(r"^  `(\w+)` ([\w<>]+),?$", ddl, re.MULTILINE)
        assert columns == [(f.name, _HIVE_TYPES[f.type]) for f in schema], table
        assert "PARTITIONED BY (`dt` string)" in ddl
        assert f"s3://BUCKET/PREFIX/index/{table}/dt=${{dt}}/" in ddl

    # the views' SQL is plain enough for DuckDB: run it over the generated history
    store, h = history_store
    con = duckdb.connect(config={"autoload_known_extensions": False})
    con.execute("CREATE SCHEMA execvault")
    for table in SCHEMAS:
        glob = store.root / "index" / table / "*" / "*.parquet"
        con.execute(
            f"CREATE VIEW execvault.{table} AS SELECT * REPLACE (CAST(dt AS VARCHAR) AS dt) "
            f"FROM read_parquet('{glob}', hive_partitioning = true)"
        )
    views = (folder / "05_views.sql").read_text()
    for statement in duckdb.extract_statements(views):
        con.execute(statement.query)
    rows = con.execute(
        "SELECT count(*), count(status), count(*) FILTER (WHERE status = 'error') "
        "FROM execvault.executions"
    ).fetchone()
    finished = [e for e in h.executions if e.status is not None]
    assert rows == (
        len(h.executions),
        len(finished),
        sum(e.status == "error" for e in finished),
    )
    runs = con.execute("SELECT count(*) FROM execvault.node_runs_once").fetchone()
    assert runs == (sum(1 for _ in h.runs()),)


@pytest.mark.parametrize("day", ["2024-02-01", "2024-12-01"])
def test_files_of_an_older_index_format_are_read_by_column_name(tmp_path: Path, day: str) -> None:
    """A file without a newer column, sorted first (it would decide the view's columns) or last
    (DuckDB would stop at it): the sandbox notices and reads every footer."""
    store = LocalStore(tmp_path / "store")
    archive = make_archive(store)
    with ManifestWriter(store) as writer:
        writer.attach(archive)
        populate(archive)
    first = next(store.root.glob("index/snapshots/dt=2024-03-01/*.parquet"))
    old = pq.read_table(first).drop_columns(["replay_of"]).slice(0, 1)
    old = old.set_column(0, "execution_id", pa.array(["old-1"]))
    target = store.root / "index" / "snapshots" / f"dt={day}" / "part-old-000001.parquet"
    target.parent.mkdir(parents=True)
    pq.write_table(old, target)
    last = max(p.name.removeprefix("dt=") for p in (store.root / "index/snapshots").iterdir())
    sandbox = SqlSandbox(Catalog(store))
    result = sandbox.run("SELECT count(*), count(replay_of), max(dt)::VARCHAR FROM snapshots")
    assert result.rows() == [[13, 0, last]]
    assert sandbox._union_by_name


def test_a_day_mid_compaction_is_read_once(tmp_path: Path) -> None:
    """Days with one file are read as they are; a day whose rows sit in a part and in the
    compacted file that replaces it is deduplicated (invariant 8)."""
    store = LocalStore(tmp_path / "store")
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=3) as writer:
        writer.attach(archive)
        populate(archive)
    rebuild_index(store)  # one file per table and day
    sandbox = SqlSandbox(Catalog(store, refresh_seconds=0))
    sql = (
        "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM executions), "
        "(SELECT count(*) FROM node_runs), (SELECT count(*) FROM versions)"
    )
    assert sandbox.run(sql).rows() == [[12, 12, 16, 4]]
    for table in ("snapshots", "node_runs", "versions", "final_states"):
        for day in (store.root / "index" / table).iterdir():
            (original,) = day.glob("*.parquet")
            (day / "part-compacted-000001.parquet").write_bytes(original.read_bytes())
    assert sandbox.run(sql).rows() == [[12, 12, 16, 4]]


def test_a_rebuild_under_the_query_is_retried_on_the_new_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    archive = make_archive(store)
    with ManifestWriter(store, flush_rows=3) as writer:
        writer.attach(archive)
        populate(archive)
    catalog = Catalog(store, refresh_seconds=3600)  # no refresh of its own: the list goes stale
    sandbox = SqlSandbox(catalog)
    sql = "SELECT count(*) FROM node_runs"
    assert sandbox.run(sql).rows() == [[16]]
    report = rebuild_index(store)  # removes every file the catalog listed
    assert report.parts_removed
    assert sandbox.run(sql).rows() == [[16]]
