"""A throw-away PostgreSQL cluster (Debian's package) on a free loopback port.

Importable without pytest (the benchmarks use it too). ``run_postgres(dir)`` runs ``initdb`` and
``pg_ctl start`` in ``dir``, yields a :class:`Postgres` with a DSN, and stops and removes the
cluster afterwards. PostgreSQL refuses to run as root: as root the cluster is owned by and run as
the ``postgres`` system user (``runuser``). Missing binaries are an error (:class:`PostgresError`),
never a reason to skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Postgres", "PostgresError", "find_bindir", "run_postgres"]

_CANDIDATE_BINDIRS = tuple(f"/usr/lib/postgresql/{v}/bin" for v in (17, 16, 15, 14, 13))


class PostgresError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Postgres:
    host: str
    port: int
    user: str
    bindir: Path
    datadir: Path

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database; its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.dsn(name)


def find_bindir() -> Path:
    configured = os.environ.get("EXECVAULT_PG_BINDIR")
    for candidate in ((configured,) if configured else ()) + _CANDIDATE_BINDIRS:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresError(
        "PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql package "
        "or set EXECVAULT_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


@contextlib.contextmanager
def run_postgres(workdir: Path | None = None, *, timeout: float = 60.0) -> Iterator[Postgres]:
    """A cluster in ``workdir`` (default: a fresh directory under the system's temp dir, removed
    afterwards; as root the server must reach it, so give none or one it can reach)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="execvault-pg-") as tmp:
            with run_postgres(Path(tmp), timeout=timeout) as server:
                yield server
            return
    bindir = find_bindir()
    run_as: str | None = None
    if os.geteuid() == 0:  # initdb refuses root
        run_as = "postgres"
        try:
            owner = pwd.getpwnam(run_as)
        except KeyError:
            raise PostgresError("running as root needs a 'postgres' system user") from None
        workdir.chmod(0o755)
    datadir = workdir / "pgdata"
    datadir.mkdir()
    sockdir = workdir / "sock"
    sockdir.mkdir()
    log = workdir / "postgres.log"
    log.touch()
    if run_as is not None:
        for path in (datadir, sockdir, log):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    user = "execvault"
    init = subprocess.run(
        _as_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
            run_as,
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        raise PostgresError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    port = _free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {sockdir} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    start = subprocess.run(
        _as_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            run_as,
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if start.returncode != 0:
        raise PostgresError(
            f"pg_ctl start failed: {start.stderr.strip()}\n{log.read_text()[-2000:]}"
        )
    server = Postgres("127.0.0.1", port, user, bindir, datadir)
    try:
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"PostgreSQL did not accept connections: {log.read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield server
    finally:
        subprocess.run(
            _as_user(
                [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
                run_as,
            ),
            capture_output=True,
            check=False,
        )
