"""A real n8n for the tests: installed once (``integrations/n8n/install-n8n.sh``, cached outside
the repository), started in its own user folder with the project's hook file, driven the ways
users run workflows (the CLI, the REST API, webhooks).

Facts behind each step: ``../shared/design/n8n-integration.md``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import REPO
from tests.live_service import free_port

HOOK_FILE = REPO / "integrations" / "n8n" / "execvault-hooks.js"
INSTALL = REPO / "integrations" / "n8n" / "install-n8n.sh"
WORKFLOWS = REPO / "tests" / "fixtures" / "n8n_engine"
OWNER = {
    "email": "owner@example.com",
    "firstName": "Test",
    "lastName": "Owner",
    "password": "Passw0rd-execvault",
}


def n8n_home() -> Path:
    """The installed n8n (installing it on first use: several minutes, then cached)."""
    done = subprocess.run(
        ["bash", str(INSTALL)], capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, f"installing n8n failed:\n{done.stderr[-4000:]}"
    home = Path(done.stdout.strip().splitlines()[-1])
    assert (home / ".complete").is_file() and (home / "bin" / "n8n").exists()
    return home


@dataclass
class N8n:
    """One n8n instance: its folder, ports, spool, and a logged-in REST client once started."""

    home: Path
    folder: Path
    spool: Path
    port: int = field(default_factory=free_port)
    broker_port: int = field(default_factory=free_port)
    hooks: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("N8N_", "EXECVAULT_", "DB_", "EXECUTIONS_"))
        }
        env.update(
            PATH=f"{self.home / 'bin'}:{env.get('PATH', '')}",
            DB_TYPE="sqlite",
            N8N_USER_FOLDER=str(self.folder),
            N8N_PORT=str(self.port),
            N8N_LISTEN_ADDRESS="127.0.0.1",
            N8N_RUNNERS_BROKER_PORT=str(self.broker_port),
            N8N_ENCRYPTION_KEY="execvault-test-encryption-key",
            N8N_DIAGNOSTICS_ENABLED="false",
            N8N_VERSION_NOTIFICATIONS_ENABLED="false",
            N8N_PERSONALIZATION_ENABLED="false",
            N8N_TEMPLATES_ENABLED="false",
            N8N_COMMUNITY_PACKAGES_ENABLED="false",
            N8N_SECURE_COOKIE="false",
            EXECUTIONS_DATA_SAVE_ON_SUCCESS="all",
            EXECUTIONS_DATA_SAVE_MANUAL_EXECUTIONS="true",
            N8N_LOG_LEVEL="warn",
            EXECVAULT_SPOOL_DIR=str(self.spool),
        )
        if self.hooks:
            env["EXTERNAL_HOOK_FILES"] = str(HOOK_FILE)
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """An n8n CLI command in this instance's folder (its own broker port: n8n may run)."""
        env = self.env()
        env["N8N_RUNNERS_BROKER_PORT"] = str(free_port())
        return subprocess.run(
            [str(self.home / "bin" / "n8n"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def import_workflows(self, folder: Path) -> None:
        done = self.cli("import:workflow", "--separate", f"--input={folder}")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def publish(self, workflow_id: str) -> None:
        done = self.cli("publish:workflow", f"--id={workflow_id}")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def execute(self, workflow_id: str) -> subprocess.CompletedProcess[str]:
        """`n8n execute --id`: it sometimes dies of SIGSEGV at exit, after the run (-11 here, 139 in
        a shell; with or without hooks); the execution is saved either way, so the caller checks
        n8n's records."""
        return self.cli("execute", f"--id={workflow_id}")

    def start(self, timeout: float = 240) -> None:
        log = (self.folder / "n8n.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.home / "bin" / "n8n"), "start"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.http = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"n8n exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"n8n did not start:\n{self.log_tail()}"
            try:
                answer = self.http.post("/rest/owner/setup", json=OWNER)
                if answer.status_code in (200, 400):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.login()

    def login(self) -> None:
        assert self.http is not None
        self.http.cookies.clear()  # the owner setup's cookie: one session cookie, the login's
        login = self.http.post(
            "/rest/login",
            json={"emailOrLdapLoginId": OWNER["email"], "password": OWNER["password"]},
        )
        assert login.status_code == 200, login.text

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to n8n's REST API as the owner. A session cookie issued while n8n was still
        starting is sometimes refused afterwards (401): then once more after a new login."""
        answer = self.rest().request(method, path, **kwargs)
        if answer.status_code == 401:
            self.login()
            answer = self.rest().request(method, path, **kwargs)
        return answer

    def log_tail(self, size: int = 4000) -> str:
        path = self.folder / "n8n.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def stop(self, kill: bool = False) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # -- driving workflows -------------------------------------------------------------------

    def rest(self) -> httpx.Client:
        assert self.http is not None, "n8n is not started"
        return self.http

    def run_manually(self, workflow_id: str, trigger: str = "Manual") -> str:
        answer = self.api(
            "POST",
            f"/rest/workflows/{workflow_id}/run",
            json={"triggerToStartFrom": {"name": trigger}},
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["data"]["executionId"])

    def webhook(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.rest().post(f"/webhook/{path}", json=body)

    def wait_for_webhook(self, path: str, timeout: float = 120) -> None:
        """Until n8n has registered the published workflow's POST webhook (a GET then names POST,
        without running anything)."""

        def registered() -> bool:
            answer = self.rest().get(f"/webhook/{path}")
            return "did you mean" in answer.text.lower()

        self.wait_for(registered, f"webhook {path}", timeout=timeout)

    def stop_execution(self, execution_id: str) -> httpx.Response:
        return self.api("POST", f"/rest/executions/{execution_id}/stop")

    def wait_for(
        self, predicate: Any, what: str, timeout: float = 120, interval: float = 0.5
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(interval)
