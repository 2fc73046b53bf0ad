"""Backfill rate of ``execvault import-n8n`` (``docs/n8n-import.md``): executions/s from n8n's
SQLite and from n8n's Postgres into a local archive with its index, as the CLI runs it.

Setup: an n8n database made from the schema of a real n8n 2.41.1 (``tests/fixtures/n8n/``),
filled by ``tests/n8n_db.py`` with ``--executions`` executions (default 10,000) of 20 corpus
workflows over 60 days: 85 % success, 10 % error (the failing node's run holds an error), 3 %
canceled, 2 % waiting; about 1 in 20 runs follows an edit of its workflow (a new version), plus
one saved, never run version per workflow in ``workflow_history``. Run data is flatted as n8n
stores it, one item per node. Postgres: a throw-away PostgreSQL 15 cluster (``tests/postgres.py``)
on loopback.

Figures per database (``sqlite_*``, ``postgres_*``):

- ``<db>_first_rate``: executions/s of the first import (snapshot + final state + index rows;
  every row read, flatted run data parsed twice: once to check it before anything is written,
  once by the archive). ``<db>_first_seconds``: its wall time.
- ``<db>_rerun_rate``: executions/s of the same import run again (everything already archived:
  a HEAD of the snapshot and of the final state per execution, as a resumed run pays for the part
  already done).
- ``<db>_versions``: saved versions imported as commits of their own (no execution ran them).
- ``host_cpu_pressure``: Linux PSI over the whole run.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from archiver.archive import Archive  # noqa: E402
from archiver.index import ManifestWriter  # noqa: E402
from archiver.n8n_import import (  # noqa: E402
    ImportOptions,
    N8nSource,
    PostgresSource,
    SqliteSource,
    import_n8n,
)
from archiver.sanitize import Sanitizer  # noqa: E402
from archiver.store.local import LocalStore  # noqa: E402
from benchmarks.capture import CpuPressure  # noqa: E402
from benchmarks.jsonlines import emit_line, log_line  # noqa: E402
from tests.n8n_db import N8nDb, run_data  # noqa: E402
from tests.postgres import run_postgres  # noqa: E402

BENCHMARK = "import_n8n"
CORPUS = ROOT.parent / "shared" / "corpus" / "n8n-workflows"
emit = partial(emit_line, BENCHMARK)
log = partial(log_line, BENCHMARK)


class Pressure(CpuPressure):
    def emit(self, metric: str, n: int) -> None:
        end = self._read()
        if self._start is None or end is None:
            return
        elapsed_us = (time.monotonic() - self._started) * 1e6
        emit(metric, 100.0 * (end - self._start) / max(elapsed_us, 1.0), n, unit="%")


def corpus_workflows(count: int) -> list[dict[str, Any]]:
    """``count`` corpus workflows of 3–30 nodes, each with an id of its own."""
    found: list[dict[str, Any]] = []
    for path in sorted(CORPUS.glob("*.json")):
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or not 3 <= len(doc.get("nodes") or ()) <= 30:
            continue
        doc["id"] = f"wf-{len(found):03d}"
        doc["name"] = str(doc.get("name") or path.stem)[:120]
        doc.setdefault("settings", {"executionOrder": "v1"})
        found.append(doc)
        if len(found) == count:
            break
    return found


def fill(db: N8nDb, executions: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=60)
    workflows = corpus_workflows(20)
    edits = dict.fromkeys((w["id"] for w in workflows), 0)
    for wf in workflows:
        db.workflow(wf, f"{wf['id']}-v0", start - timedelta(days=1))
        db.history(wf, f"{wf['id']}-v0", start - timedelta(days=1))
    step = timedelta(days=60) / executions
    batch: list[Any] = []
    for i in range(executions):
        wf = rng.choice(workflows)
        created = start + step * i
        if rng.random() < 0.05:  # an edit: a new saved version
            edits[wf["id"]] += 1
            wf["nodes"][-1].setdefault("parameters", {})["benchEdit"] = edits[wf["id"]]
            db.history(wf, f"{wf['id']}-v{edits[wf['id']]}", created - timedelta(seconds=1))
        version = f"{wf['id']}-v{edits[wf['id']]}"
        roll = rng.random()
        status = "success" if roll < 0.85 else "error" if roll < 0.95 else "canceled"
        if roll >= 0.98:
            status = "waiting"
        started = created + timedelta(milliseconds=30)
        fail = wf["nodes"][-1]["name"] if status == "error" else None
        data = run_data(wf, started, fail_node=fail, stop_after=2 if status == "waiting" else None)
        batch.append(
            db.execution_rows(
                i + 1,
                copy.deepcopy(wf),
                status=status,
                mode=rng.choice(("manual", "webhook", "trigger")),
                created=created,
                started=started,
                stopped=None if status == "waiting" else started + timedelta(milliseconds=800),
                wait_till=now + timedelta(days=2) if status == "waiting" else None,
                version_id=version,
                data=data,
            )
        )
        if len(batch) == 1000:
            db.executions(batch)
            batch = []
    db.executions(batch)
    for wf in workflows:  # edited after the last run, never run
        wf["nodes"][-1].setdefault("parameters", {})["benchEdit"] = "unrun"
        db.history(wf, f"{wf['id']}-unrun", now - timedelta(hours=1))
    db.commit()


def measure(
    label: str, open_source: Callable[[], N8nSource], workdir: Path, n: int, jobs: int
) -> None:
    store = LocalStore(workdir / f"store-{label}")
    for run in ("first", "rerun"):
        archive = Archive(store, Sanitizer(bytes(range(32))))
        source = open_source()
        t0 = time.perf_counter()
        with ManifestWriter(store, flush_rows=1000, flush_seconds=1.0) as writer:
            writer.attach(archive)
            report = import_n8n(archive, source, ImportOptions(jobs=jobs))
        seconds = time.perf_counter() - t0
        source.close()
        done = report.imported + report.completed + report.skipped_existing
        if report.failed:
            log(f"{label} {run}: {len(report.failed)} failed, e.g. {report.failed[:2]}")
        log(
            f"{label} {run}: imported {report.imported}, skipped {report.skipped_existing}, "
            f"versions {report.versions_imported} in {seconds:.1f} s"
        )
        emit(f"{label}_{run}_rate", done / seconds, done, unit="executions/s", digits=1, jobs=jobs)
        if run == "first":
            emit(f"{label}_first_seconds", seconds, done, unit="s", digits=2)
            emit(
                f"{label}_versions",
                report.versions_imported,
                report.versions_imported,
                unit="commits",
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 executions")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one database only")
    parser.add_argument("--jobs", type=int, default=4, help="writer threads (default 4, the CLI's)")
    args = parser.parse_args(argv)
    n = 1_000 if args.quick else args.executions
    pressure = Pressure()
    with tempfile.TemporaryDirectory(prefix="execvault-import-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "sqlite"):
            path = workdir / "database.sqlite"
            db = N8nDb.sqlite(path)
            t0 = time.perf_counter()
            fill(db, n)
            db.close()
            log(f"sqlite: {n} executions written in {time.perf_counter() - t0:.1f} s")
            measure("sqlite", lambda: SqliteSource(str(path)), workdir, n, args.jobs)
        if args.only in (None, "postgres"):
            with run_postgres() as server:
                dsn = server.create_database("n8n")
                db = N8nDb.postgres(dsn)
                t0 = time.perf_counter()
                fill(db, n)
                db.close()
                log(f"postgres: {n} executions written in {time.perf_counter() - t0:.1f} s")
                measure("postgres", lambda: PostgresSource(dsn), workdir, n, args.jobs)
    pressure.emit("host_cpu_pressure", n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
