"""`execvault serve` in its own process on a local store, stoppable and restartable on one port
(for the spool, relay and client tests; ``tests/test_service_e2e.py`` does the same inline)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import HMAC_KEY, REPO

CLI = [sys.executable, "-c", "from api.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECVAULT_")}
    env.update(
        EXECVAULT_STORE=f"local:{data}",
        EXECVAULT_HMAC_KEY=HMAC_KEY.hex(),
        EXECVAULT_INDEX_FLUSH_MS="200",
        EXECVAULT_INDEX_JOURNAL_DIR=str(data.parent / "journal"),
        **extra,
    )
    return env


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class LiveService:
    """``start()`` / ``stop()`` a real ``execvault serve`` on one fixed port and data folder."""

    def __init__(self, data: Path, *, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**service_env(data), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> LiveService:
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            assert self.process is not None and self.process.poll() is None, "serve exited"
            try:
                return self.http.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, "execvault serve to start")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        self.http.close()

    def history_ids(self, workflow_id: str) -> list[str]:
        """Every execution id in a workflow's history (duplicates kept, to count them)."""
        ids: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = self.http.get(
                f"/api/execution-snapshots/workflow/{workflow_id}/history", params=params
            )
            assert response.status_code == 200, response.text
            page = response.json()
            ids += [item["executionId"] for item in page["items"]]
            cursor = page["nextCursor"]
            if not cursor:
                return ids


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, timeout=timeout, check=False
    )


def start_cli(env: dict[str, str], args: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
