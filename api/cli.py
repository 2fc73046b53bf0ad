"""The ``execvault`` command line: each command validates, calls one library function, prints."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from archiver.archive import Archive
from archiver.config import Settings, load_settings
from archiver.errors import ArchiveError
from archiver.jsonio import loads_strict

__all__ = ["is_loopback", "main"]


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(
            {"store": obj.get("store"), "hmac_key_file": obj.get("hmac_key_file"), **overrides},
            config_file=obj.get("config"),
        )
    settings: Settings = obj["settings"]
    return settings


def _archive(ctx: click.Context) -> Archive:
    settings = _settings(ctx)
    return Archive(
        settings.open_store(), settings.sanitizer(), max_object_bytes=settings.max_object_bytes
    )


def _emit(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _read_json(path: str) -> Any:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return loads_strict(data, field=path)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArchiveError as err:
            field = getattr(err, "field", None)
            where = f" (field: {field})" if field else ""
            click.echo(f"error: {err}{where}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.option(
    "--store", envvar="EXECVAULT_STORE", help="Store URL (local:PATH, s3://bucket/prefix)."
)
@click.option("--config", "config", envvar="EXECVAULT_CONFIG", help="TOML config file.")
@click.option(
    "--hmac-key-file", envvar="EXECVAULT_HMAC_KEY_FILE", help="File with the hex HMAC key."
)
@click.version_option("0.1.0", prog_name="execvault")
@click.pass_context
def main(
    ctx: click.Context, store: str | None, config: str | None, hmac_key_file: str | None
) -> None:
    """Immutable, git-like archive of workflow execution snapshots.

    \b
    Example:
      execvault put workflow.json --execution-id 1001
      execvault get 1001
    """
    ctx.ensure_object(dict).update(store=store, config=config, hmac_key_file=hmac_key_file)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; anything else may be reachable from outside."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in ("localhost", "localhost.")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="EXECVAULT_HOST")
@click.option("--port", default=8080, show_default=True, type=int, envvar="EXECVAULT_PORT")
@click.option(
    "--tokens-file",
    envvar="EXECVAULT_TOKENS_FILE",
    help="File of API token digests (see `execvault token new`).",
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, tokens_file: str | None) -> None:
    """Run the HTTP service (OpenAPI docs at /docs).

    Without API tokens (EXECVAULT_TOKENS or --tokens-file) every request is allowed, so the
    service then binds to loopback only.

    \b
    Example:
      execvault serve --port 8080
      execvault serve --host 0.0.0.0 --tokens-file /etc/execvault/tokens
    """
    import uvicorn

    from api.app import create_app
    from api.auth import load_tokens

    settings = _settings(ctx, tokens_file=tokens_file)
    if load_tokens(settings).open and not is_loopback(host):
        raise click.UsageError(
            f"refusing to bind to {host}: no API tokens are configured, so every request would "
            "be allowed. Bind to 127.0.0.1 / ::1, or configure tokens first "
            "(execvault token new --scopes ingest,read; EXECVAULT_TOKENS or --tokens-file)"
        )
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)


@main.group()
def token() -> None:
    """Manage API bearer tokens (the server stores only their SHA-256 digests).

    \b
    Example:
      execvault token new --scopes ingest,read --name engine
    """


@token.command("new")
@click.option(
    "--scopes",
    required=True,
    help="Comma-separated: ingest, read, query, compliance, retention, admin (admin implies all).",
)
@click.option("--name", default=None, help="A label for the tokens file (who holds the token).")
def token_new(scopes: str, name: str | None) -> None:
    """Make a fresh random token; print it once, with the line that configures it.

    The token itself is not stored anywhere: copy it now. Put the tokens-file line in the file
    named by EXECVAULT_TOKENS_FILE (or the EXECVAULT_TOKENS entry in that variable).

    \b
    Example:
      execvault token new --scopes ingest,read --name engine
      execvault token new --scopes admin
    """
    from api.auth import SCOPES, new_token, parse_scopes, token_digest

    wanted = parse_scopes(scopes, "scopes")
    ordered = ",".join(s for s in SCOPES if s in wanted)
    if name is not None and (not name.isprintable() or "#" in name or "\n" in name):
        raise click.BadParameter("must be printable and without '#'", param_hint="--name")
    secret = new_token()
    digest = token_digest(secret)
    label = f" # {name}" if name else ""
    click.echo(f"token:             {secret}")
    click.echo(f"tokens-file line:  {digest} {ordered}{label}")
    click.echo(f"EXECVAULT_TOKENS:  {digest}:{ordered}")
    click.echo("The token is shown only now; the server keeps only its digest.", err=True)


@main.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--execution-id", help="Execution id (else taken from a capture request file).")
@click.option("--workflow-id", help="Workflow id (else the workflow's own id).")
@click.option("--trigger-type", help="manual, webhook, schedule ... (else inferred).")
@click.option("--user-id", help="Who ran it.")
@click.pass_context
def put(
    ctx: click.Context,
    file: str,
    execution_id: str | None,
    workflow_id: str | None,
    trigger_type: str | None,
    user_id: str | None,
) -> None:
    """Capture FILE: a workflow export, or a capture request {executionId, workflow, ...}.

    \b
    Example:
      execvault put my-workflow.json --execution-id 1001 --trigger-type manual
    """
    doc = _read_json(file)
    request: dict[str, Any] = {}
    if isinstance(doc, dict) and "executionId" in doc and "workflow" in doc:
        request = doc
        doc = request["workflow"]
    exec_id = execution_id or request.get("executionId")
    if exec_id is None:
        raise click.UsageError("give --execution-id or a capture request with executionId")
    result = _archive(ctx).capture_snapshot(
        execution_id=exec_id,
        workflow=doc,
        workflow_id=workflow_id or request.get("workflowId"),
        variables=request.get("variables"),
        trigger_type=trigger_type or request.get("triggerType"),
        trigger_data=request.get("triggerData"),
        user_id=user_id or request.get("userId"),
        created_at=request.get("createdAt"),
    )
    snap = result.snapshot
    _emit(
        {
            "created": result.created,
            "executionId": snap.execution_id,
            "workflowId": snap.workflow_id,
            "snapshotVersion": snap.snapshot_version,
            "snapshotHash": snap.snapshot_hash,
        }
    )


@main.command("final-state")
@click.argument("execution_id")
@click.argument("file", type=click.Path(allow_dash=True))
@click.pass_context
def final_state(ctx: click.Context, execution_id: str, file: str) -> None:
    """Record how EXECUTION_ID ended (n8n run data or our plain format).

    \b
    Example:
      execvault final-state 1001 run.json
    """
    result = _archive(ctx).record_final_state(execution_id, _read_json(file))
    _emit({"created": result.created, **result.final_state.to_json()})


@main.command()
@click.argument("execution_id")
@click.pass_context
def get(ctx: click.Context, execution_id: str) -> None:
    """Print the snapshot (and final state) of EXECUTION_ID as JSON.

    \b
    Example:
      execvault get 1001 > snapshot.json
    """
    archive = _archive(ctx)
    body = archive.get_snapshot(execution_id).to_json()
    final = archive.get_final_state(execution_id)
    body["finalState"] = final.to_json() if final else None
    _emit(body)


@main.command()
@click.argument("workflow_id")
@click.pass_context
def log(ctx: click.Context, workflow_id: str) -> None:
    """List WORKFLOW_ID's versions, newest first (like git log --oneline).

    \b
    Example:
      execvault log wf-42
    """
    for commit in reversed(_archive(ctx).version_history(workflow_id)):
        click.echo(
            f"{commit.version:<10} #{commit.seq:<4} {commit.snapshot_hash[:12]}  {commit.summary}"
        )
