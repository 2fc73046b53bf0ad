"""The ``execvault`` command line: each command validates, calls one library function, prints."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from archiver.archive import Archive
from archiver.config import Settings, load_settings
from archiver.errors import ArchiveError, RunBusy
from archiver.index import ManifestWriter
from archiver.index import rebuild_index as rebuild
from archiver.index import verify as verify_index
from archiver.jsonio import loads_strict
from archiver.layout import check_hash, check_id
from archiver.request import parse_capture_request
from archiver.timeutil import format_ts, utcnow
from query.catalog import Catalog
from query.history import executions_by_hash, workflow_history

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
    """The archive of a read-only command: a missing local store is an error, never created."""
    return _settings(ctx).open_archive(create=False)


@contextlib.contextmanager
def _indexed_archive(ctx: click.Context) -> Iterator[Archive]:
    """An archive whose writes are indexed; the rows are flushed when the command ends."""
    settings = _settings(ctx)
    archive = settings.open_archive(create=True)
    with ManifestWriter(
        archive.store,
        flush_rows=settings.index_flush_rows,
        flush_seconds=settings.index_flush_ms / 1000.0,
    ) as writer:
        writer.attach(archive)
        yield archive


def _progress(label: str) -> Callable[[str, int, int | None], None]:
    """A progress line on stderr, redrawn at most ten times a second."""
    last = [0.0]

    def report(stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.1 and (total is None or done < total):
            return
        last[0] = now
        of = f"/{total}" if total is not None else ""
        click.echo(f"\r{label}: {stage} {done}{of}\x1b[K", nl=False, err=True)

    return report


def _end_progress() -> None:
    click.echo("", err=True)


def _print_page(items: list[dict[str, Any]], next_cursor: str | None, as_json: bool) -> None:
    if as_json:
        _emit({"items": items, "nextCursor": next_cursor})
        return
    click.echo(
        f"{'CREATED':<24} {'EXECUTION':<24} {'VERSION':<9} {'STATUS':<9} {'TRIGGER':<10} FAILED"
    )
    for item in items:
        click.echo(
            f"{item['createdAt']:<24} {item['executionId'][:24]:<24} "
            f"{item['snapshotVersion']:<9} {item['status'] or '-':<9} "
            f"{(item['triggerType'] or '-')[:10]:<10} {', '.join(item['failedNodes'])}"
        )
    if next_cursor:
        click.echo(f"(more: --cursor {next_cursor})", err=True)


def _emit(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _read_json(path: str) -> Any:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return loads_strict(data, field=path)


def _delivery_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--url / --spool / --token-file: send through the service or the spool, not the store."""
    for option in reversed(
        (
            click.option(
                "--url",
                envvar="EXECVAULT_URL",
                help="Send to the service at URL instead of writing the store.",
            ),
            click.option(
                "--spool",
                type=click.Path(file_okay=False),
                help="Append to the spool folder SPOOL (delivered by `execvault relay`).",
            ),
            click.option(
                "--token-file",
                type=click.Path(dir_okay=False),
                help="With --url: file holding the bearer token (else EXECVAULT_TOKEN).",
            ),
        )
    ):
        command = option(command)
    return command


def _deliver(
    kind: str,
    execution_id: str,
    body: dict[str, Any],
    url: str | None,
    spool: str | None,
    token_file: str | None,
) -> dict[str, Any]:
    """Send one record through the client (--url) or append it to a spool (--spool)."""
    if url and spool:
        raise click.UsageError("give --url or --spool, not both")
    if spool:
        from api.spool import SpoolWriter

        if kind == "snapshot":  # the capture time is now, however late the relay delivers it
            body = {**body, "createdAt": body.get("createdAt") or format_ts(utcnow())}
        with SpoolWriter(spool) as writer:
            appended = writer.append(kind, execution_id, body)
        if not appended:
            raise click.ClickException(f"spool {spool} is full: the record was dropped")
        return {"spooled": True, "kind": kind, "executionId": execution_id, "spool": spool}
    from api.cli_relay import read_token
    from api.client import ExecVaultClient

    assert url is not None
    with ExecVaultClient(url, read_token(token_file)) as client:
        if kind == "snapshot":
            return dict(client.capture_request(body))
        return dict(client.final_state(execution_id, body))


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunBusy as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(3)
        except ArchiveError as err:
            field = getattr(err, "field", None)
            where = f" (field: {field})" if field else ""
            click.echo(f"error: {err}{where}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.option(
    "--store",
    envvar="EXECVAULT_STORE",
    help="Store URL (local:PATH, a plain path, s3://bucket/prefix, memory:).",
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
@click.option(
    "--backfill",
    is_flag=True,
    help="Allow a createdAt older than capture_max_age_seconds (back to 2000-01-01).",
)
@_delivery_options
@click.pass_context
def put(
    ctx: click.Context,
    file: str,
    execution_id: str | None,
    workflow_id: str | None,
    trigger_type: str | None,
    user_id: str | None,
    backfill: bool,
    url: str | None,
    spool: str | None,
    token_file: str | None,
) -> None:
    """Capture FILE: a workflow export, or a capture request {executionId, workflow, ...}.

    A file with an `executionId` field is a capture request, read by the same rules as the
    HTTP capture (unknown fields are refused); anything else is a workflow export. The options
    set (or override) the request's fields. With --url it is sent to a running service
    (token: --token-file or EXECVAULT_TOKEN); with --spool it is appended to a spool that
    `execvault relay` delivers; else it is written to the store directly.

    \b
    Example:
      execvault put my-workflow.json --execution-id 1001 --trigger-type manual
      execvault put my-workflow.json --execution-id 1002 --url http://127.0.0.1:8080
    """
    doc = _read_json(file)
    body: dict[str, Any] = (
        dict(doc) if isinstance(doc, dict) and "executionId" in doc else {"workflow": doc}
    )
    options = {
        "executionId": execution_id,
        "workflowId": workflow_id,
        "triggerType": trigger_type,
        "userId": user_id,
    }
    body.update({name: value for name, value in options.items() if value is not None})
    if body.get("executionId") is None:
        raise click.UsageError("give --execution-id or a capture request with executionId")
    request = parse_capture_request(body)
    if url or spool:
        if backfill:
            raise click.UsageError(
                "--backfill applies to the store; through the service it is the token's "
                "`backfill` scope"
            )
        _emit(_deliver("snapshot", str(body["executionId"]), body, url, spool, token_file))
        return
    with _indexed_archive(ctx) as archive:
        result = archive.capture_snapshot(**request.arguments(), backfill=backfill)
    snap = result.snapshot
    _emit(
        {
            "created": result.created,
            "executionId": snap.execution_id,
            "workflowId": snap.workflow_id,
            "snapshotVersion": snap.snapshot_version,
            "snapshotHash": snap.snapshot_hash,
            "warnings": [w.to_json() for w in snap.warnings],
        }
    )


@main.command("final-state")
@click.argument("execution_id")
@click.argument("file", type=click.Path(allow_dash=True))
@_delivery_options
@click.pass_context
def final_state(
    ctx: click.Context,
    execution_id: str,
    file: str,
    url: str | None,
    spool: str | None,
    token_file: str | None,
) -> None:
    """Record how EXECUTION_ID ended (n8n run data or our plain format).

    With --url it is sent to a running service; with --spool it is appended to a spool that
    `execvault relay` delivers; else it is written to the store directly.

    \b
    Example:
      execvault final-state 1001 run.json
      execvault final-state 1001 run.json --spool /var/lib/execvault/spool
    """
    payload = _read_json(file)
    if url or spool:
        if not isinstance(payload, dict):
            raise click.UsageError("the final state must be a JSON object")
        _emit(_deliver("final-state", execution_id, payload, url, spool, token_file))
        return
    with _indexed_archive(ctx) as archive:
        result = archive.record_final_state(execution_id, payload)
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
@click.option("--since", help="RFC 3339 time, inclusive.")
@click.option("--until", help="RFC 3339 time, exclusive.")
@click.option("--status", multiple=True, help="success, error, ... (repeatable).")
@click.option("--trigger-type", multiple=True, help="webhook, schedule, ... (repeatable).")
@click.option("--version", "version", help="Only this semantic version, e.g. 1.2.0.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", help="Continue after a previous page.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def history(
    ctx: click.Context,
    workflow_id: str,
    since: str | None,
    until: str | None,
    status: tuple[str, ...],
    trigger_type: tuple[str, ...],
    version: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List WORKFLOW_ID's executions, newest first, from the index.

    \b
    Example:
      execvault history wf-42 --status error --since 2026-11-01T00:00:00Z
    """
    settings = _settings(ctx)
    with Catalog(settings.open_store(create=False), settings.index_cache_dir) as catalog:
        page = workflow_history(
            catalog,
            check_id(workflow_id, "workflowId"),
            since=since,
            until=until,
            status=list(status) or None,
            trigger_type=list(trigger_type) or None,
            version=version,
            limit=limit,
            cursor=cursor,
        )
    _print_page([i.to_json() for i in page.items], page.next_cursor, as_json)


@main.command("by-hash")
@click.argument("snapshot_hash")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", help="Continue after a previous page.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def by_hash(
    ctx: click.Context, snapshot_hash: str, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List the executions that ran the structure SNAPSHOT_HASH, newest first.

    \b
    Example:
      execvault by-hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    """
    settings = _settings(ctx)
    with Catalog(settings.open_store(create=False), settings.index_cache_dir) as catalog:
        page = executions_by_hash(catalog, check_hash(snapshot_hash), limit=limit, cursor=cursor)
    _print_page([i.to_json() for i in page.items], page.next_cursor, as_json)


@main.command()
@click.option(
    "--read-data",
    is_flag=True,
    help="Also read and re-hash the objects (without it: listing, sizes and chain only).",
)
@click.option(
    "--subset",
    metavar="N/T",
    help="With --read-data, read only bucket N of T (T runs with N=1..T read everything).",
)
@click.option("--json", "as_json", is_flag=True, help="The full report as JSON.")
@click.pass_context
def verify(ctx: click.Context, read_data: bool, subset: str | None, as_json: bool) -> None:
    """Check the index against the objects, the index chain, and (--read-data) every object.

    Without --read-data (fast, no object bodies read): rows without objects (deleted), objects
    without rows, sizes against the index (truncated), and the index chain (days removed or
    altered, broken links). --read-data also re-reads and re-hashes the objects (corrupt,
    truncated). Every problem is printed by name; exits 1 when anything is wrong.

    \b
    Example:
      execvault verify && echo index and chain intact
      execvault verify --read-data --subset "$(date +%u)/7"   # a seventh each weekday
    """
    from archiver.index import parse_subset

    if subset is not None and not read_data:
        raise click.UsageError("--subset needs --read-data")
    settings = _settings(ctx)
    report = verify_index(
        settings.open_store(create=False),
        progress=_progress("verify"),
        max_object_bytes=settings.max_object_bytes,
        read_data=read_data,
        subset=None if subset is None else parse_subset(subset, "--subset"),
    )
    _end_progress()
    if as_json:
        _emit(report.to_json())
    else:
        _print_verify_summary(report.summary())
        findings = report.findings()
        for finding in findings[:200]:
            click.echo(f"{finding['problem']}: {finding['key']}: {finding['detail']}")
        if len(findings) > 200:
            click.echo(f"... and {len(findings) - 200} more (--json lists all)")
        for note in report.chain_notes[:50]:
            click.echo(f"note: {note}")
        if report.expired_rows or report.duplicate_rows or report.archived_not_read:
            click.echo(
                f"note: {len(report.expired_rows)} expired rows (tombstoned), "
                f"{len(report.duplicate_rows)} duplicate rows, "
                f"{report.archived_not_read} archived objects not read"
            )
        click.echo("OK" if report.ok else f"PROBLEMS FOUND: {len(findings)}")
    ctx.exit(0 if report.ok else 1)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in counts.items()) or "none"


def _print_verify_summary(summary: dict[str, Any]) -> None:
    """The report's counts as plain sentences (``--json`` has them as numbers)."""
    if not summary["readData"]:
        mode = "structural (listing, sizes, index rows, chain; no object read)"
    elif summary["subset"]:
        mode = f"structural + re-read and re-hashed objects of subset {summary['subset']}"
    else:
        mode = "structural + every object re-read and re-hashed"
    click.echo(f"checked:  {mode}")
    click.echo(f"objects:  {_counts(summary['objects'])}")
    if summary["readData"]:
        click.echo(f"read:     {summary['objectsRead']} objects")
    click.echo(f"index:    {_counts(summary['rows'])} (rows, in {summary['parts']} parts)")
    if summary["chainEntries"]:
        click.echo(f"chain:    {summary['chainEntries']} sealed days, head {summary['chainHead']}")
    else:
        click.echo("chain:    no day sealed yet (execvault seal-index)")


@main.command("rebuild-index")
@click.pass_context
def rebuild_index(ctx: click.Context) -> None:
    """Regenerate every index manifest from the objects alone, then drop the old parts.

    Safe while the service is running: parts written after the rebuild started are kept.

    \b
    Example:
      execvault rebuild-index && execvault verify
    """
    settings = _settings(ctx)
    report = rebuild(
        settings.open_store(create=False),
        progress=_progress("rebuild-index"),
        max_object_bytes=settings.max_object_bytes,
    )
    _end_progress()
    _emit({"ok": report.ok, **dataclasses.asdict(report)})
    ctx.exit(0 if report.ok else 1)


from api.cli_compare import register_compare  # noqa: E402 - registered on the group above

register_compare(main)


from api.cli_sql import sql as _sql  # noqa: E402 - registered on the group defined above

main.add_command(_sql)


from api.cli_retention import register_retention  # noqa: E402 - registered on the group above

register_retention(main)


from api.cli_index import register_index  # noqa: E402 - registered on the group above

register_index(main)


from api.cli_compliance import register_compliance  # noqa: E402 - registered on the group above

register_compliance(main)


from api.cli_relay import register_relay  # noqa: E402 - registered on the group above

register_relay(main)


from api.cli_import import register_import  # noqa: E402 - registered on the group above

register_import(main)
