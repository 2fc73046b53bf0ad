"""Crash matrix: kill -9 an ingesting Archive + ManifestWriter at random points, restart plainly,
and compare the index with what was acknowledged (no rebuild-index, no manual command).

Each round starts a worker process (``worker`` mode below) on the same store and journal
directory: it builds the archive and a journaled writer exactly as the service does (the writer
recovers dead writers' journals by itself), runs a few concurrent clients that capture snapshots
and final states and print every acknowledged id, and is killed with SIGKILL after a seeded
random number of acknowledgements. A last plain start settles (recovery done, clean close).
Then every acknowledged capture must have its ``snapshots`` row and every acknowledged final
state its ``final_states`` row.

    python benchmarks/crash_matrix.py --store local --kills 20 [--no-journal] [--seed 7]
        [--ingest-clients 4]
    python benchmarks/crash_matrix.py --store seaweedfs --kills 20      # needs `weed` on PATH

``run_matrix`` is used by ``tests/test_index_heal.py`` with a few kills per store.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HMAC_KEY = "11" * 32


def _open_store(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "local":
        from archiver.store.local import LocalStore

        return LocalStore(spec["root"])
    from archiver.store.s3 import S3Config, S3Store

    return S3Store(S3Config(**spec["config"]))


def _workflow(i: int) -> dict[str, Any]:
    # a few structures (new versions now and then), many runs of each
    variant = (i // 7) % 5
    nodes = [
        {
            "id": f"n{k}",
            "name": f"Node {k}",
            "type": "n8n-nodes-base.set" if k else "n8n-nodes-base.manualTrigger",
            "typeVersion": 1,
            "position": [k * 200, 0],
            "parameters": {"value": k},
        }
        for k in range(3 + variant)
    ]
    connections = {
        f"Node {k}": {"main": [[{"node": f"Node {k + 1}", "type": "main", "index": 0}]]}
        for k in range(2 + variant)
    }
    return {
        "id": f"wf-{i % 3}",
        "name": f"crash {i % 3}",
        "nodes": nodes,
        "connections": connections,
    }


def _final(execution_id: str) -> dict[str, Any]:
    del execution_id
    now = time.time()
    return {
        "status": "success",
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 1)),
        "nodes": {"Node 0": {"status": "success"}, "Node 1": {"status": "success"}},
    }


def worker(args: argparse.Namespace) -> None:
    """One process: journaled writer attached as the service does it; clients ingest and print
    ``S <id>`` / ``F <id>`` for every acknowledged capture / final state."""
    from archiver.archive import Archive
    from archiver.index import ManifestWriter
    from archiver.sanitize import Sanitizer

    store = _open_store(json.loads(args.spec))
    archive = Archive(store, Sanitizer(bytes.fromhex(HMAC_KEY)))
    writer = ManifestWriter(
        store,
        flush_seconds=args.flush_ms / 1000.0,
        journal_dir=None if args.journal_dir == "off" else args.journal_dir,
    ).attach(archive)
    out_lock = threading.Lock()

    def ack(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    if args.clients == 0:  # settle: wait for recovery, then close cleanly
        deadline = time.monotonic() + 120
        journal = None if args.journal_dir == "off" else Path(args.journal_dir)
        while journal is not None and time.monotonic() < deadline:
            others = [p for p in journal.iterdir() if not p.name.startswith(writer.writer_id)]
            if not others:
                break
            time.sleep(0.1)
        writer.close()
        ack(f"SETTLED {writer.rows_recovered}")
        return

    def client(c: int) -> None:
        i = 0
        while True:
            execution_id = f"{args.prefix}-{c}-{i:05d}"
            try:
                archive.capture_snapshot(
                    execution_id=execution_id, workflow=_workflow(c * 1000 + i)
                )
                ack(f"S {execution_id}")
                if i % 2 == 0:
                    archive.record_final_state(execution_id, _final(execution_id))
                    ack(f"F {execution_id}")
            except Exception as err:  # report, keep ingesting
                ack(f"E {execution_id} {type(err).__name__}")
            i += 1

    for c in range(args.clients):
        threading.Thread(target=client, args=(c,), daemon=True).start()
    while True:
        time.sleep(1)


@dataclass
class MatrixResult:
    store: str
    journal: bool
    kills: int
    acked_snapshots: int = 0
    acked_final_states: int = 0
    missing_snapshots: list[str] = field(default_factory=list)
    missing_final_states: list[str] = field(default_factory=list)
    recovered_rows: int = 0
    restart_seconds: list[float] = field(default_factory=list)  # start → journal adopted

    @property
    def ok(self) -> bool:
        return not self.missing_snapshots and not self.missing_final_states


def _worker_cmd(
    spec: dict[str, Any], journal: str, prefix: str, clients: int, flush_ms: int
) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "worker",
        "--spec",
        json.dumps(spec),
        "--journal-dir",
        journal,
        "--prefix",
        prefix,
        "--clients",
        str(clients),
        "--flush-ms",
        str(flush_ms),
    ]


def run_matrix(
    spec: dict[str, Any],
    journal_dir: str,
    *,
    kills: int,
    seed: int,
    clients: int = 3,
    flush_ms: int = 1000,
    max_acks: int = 120,
) -> MatrixResult:
    """``kills`` rounds of ingest + SIGKILL, one settling start, then the index vs the acks."""
    rng = random.Random(seed)
    result = MatrixResult(spec["kind"], journal_dir != "off", kills)
    snapshots: set[str] = set()
    finals: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_no in range(kills):
        target = rng.randint(5, max_acks)
        cmd = _worker_cmd(spec, journal_dir, f"r{round_no}", clients, flush_ms)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for seen, line in enumerate(proc.stdout, 1):
            kind, _, rest = line.strip().partition(" ")
            if kind == "S":
                snapshots.add(rest)
            elif kind == "F":
                finals.add(rest)
            if seen >= target or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
        # acknowledgements already printed before the kill count too
        rest_out = proc.communicate()[0]
        for line in rest_out.splitlines():
            kind, _, rest = line.strip().partition(" ")
            if kind == "S":
                snapshots.add(rest)
            elif kind == "F":
                finals.add(rest)
    started = time.monotonic()
    settle = subprocess.run(
        _worker_cmd(spec, journal_dir, "settle", 0, flush_ms),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result.restart_seconds.append(time.monotonic() - started)
    for line in settle.stdout.splitlines():
        if line.startswith("SETTLED "):
            result.recovered_rows = int(line.split()[1])
    indexed = _indexed(spec)
    result.acked_snapshots = len(snapshots)
    result.acked_final_states = len(finals)
    result.missing_snapshots = sorted(snapshots - indexed["snapshots"])
    result.missing_final_states = sorted(finals - indexed["final_states"])
    return result


def _indexed(spec: dict[str, Any]) -> dict[str, set[str]]:
    from query.catalog import Catalog

    store = _open_store(spec)
    with tempfile.TemporaryDirectory() as cache:
        catalog = Catalog(store, cache, refresh_seconds=0.0)
        try:
            return {
                table: {
                    str(r["execution_id"])
                    for r in catalog.rows(f"SELECT execution_id FROM {table}")
                }
                for table in ("snapshots", "final_states")
            }
        finally:
            catalog.close()


@contextmanager
def _seaweedfs_spec() -> Iterator[dict[str, Any]]:
    sys.path.insert(0, str(REPO))
    import boto3

    from tests.seaweedfs import run_seaweedfs

    with tempfile.TemporaryDirectory() as work, run_seaweedfs(Path(work)) as server:
        kwargs = server.client_kwargs()
        bucket = "crash-matrix"
        boto3.client("s3", **kwargs).create_bucket(Bucket=bucket)
        yield {
            "kind": "s3",
            "config": {
                "bucket": bucket,
                "endpoint_url": kwargs["endpoint_url"],
                "access_key_id": kwargs["aws_access_key_id"],
                "secret_access_key": kwargs["aws_secret_access_key"],
                "region": kwargs.get("region_name", "us-east-1"),
            },
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    w = sub.add_parser("worker")
    w.add_argument("--spec", required=True)
    w.add_argument("--journal-dir", required=True)
    w.add_argument("--prefix", required=True)
    w.add_argument("--clients", type=int, default=3)
    w.add_argument("--flush-ms", type=int, default=1000)
    parser.add_argument("--store", choices=("local", "seaweedfs"), default="local")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-journal", action="store_true", help="the writer as it was before")
    parser.add_argument("--ingest-clients", type=int, default=4, help="concurrent ingest clients")
    args = parser.parse_args()
    if args.mode == "worker":
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        journal = "off" if args.no_journal else str(Path(tmp) / "journal")
        if args.store == "local":
            spec: dict[str, Any] = {"kind": "local", "root": str(Path(tmp) / "store")}
            result = run_matrix(
                spec, journal, kills=args.kills, seed=args.seed, clients=args.ingest_clients
            )
        else:
            with _seaweedfs_spec() as spec:
                result = run_matrix(
                    spec, journal, kills=args.kills, seed=args.seed, clients=args.ingest_clients
                )
    summary = {**asdict(result), "ok": result.ok}
    summary["missing_snapshots"] = len(result.missing_snapshots)
    summary["missing_final_states"] = len(result.missing_final_states)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
