"""``execvault retention …``, ``expire``, ``archive``, ``restore`` and ``hold …``: the retention
policy's plan and native lifecycle configuration, expiry, cold archiving, legal holds.

The policy comes from ``--policy FILE`` or the ``retention_policy_file`` setting
(``EXECVAULT_RETENTION_POLICY_FILE``); without either, the defaults of
:class:`archiver.retention.RetentionPolicy` apply. See ``docs/retention.md``.
"""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from archiver.holds import HOLD_SCOPES, active_holds, clear_hold, cli_user, set_hold
from archiver.holds import sync_object_holds as sync_holds
from archiver.retention import (
    RETENTION_LEASE,
    RetentionPolicy,
    apply_lifecycle,
    archive_cold,
    expire,
    lifecycle_configuration,
    load_policy,
    plan,
    restore_execution,
)
from archiver.runlock import break_lease, run_lease

__all__ = ["register_retention"]


def _policy(ctx: click.Context, path: str | None) -> RetentionPolicy:
    from api.cli import _settings

    return load_policy(path or _settings(ctx).retention_policy_file)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


@click.group("retention")
def retention() -> None:
    """Retention policy: what would move to cold storage or expire, and the S3 lifecycle.

    \b
    Example:
      execvault retention plan --policy retention.toml
      execvault retention lifecycle-json --policy retention.toml
    """


@retention.command("plan")
@click.option("--policy", "policy_file", help="TOML retention policy (else the setting).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--details", is_flag=True, help="With --json: one entry per execution.")
@click.pass_context
def plan_command(ctx: click.Context, policy_file: str | None, as_json: bool, details: bool) -> None:
    """Print what would move to cold storage and what would expire; changes nothing.

    \b
    Example:
      execvault retention plan --policy retention.toml --json
    """
    from api.cli import _settings

    settings = _settings(ctx)
    policy = _policy(ctx, policy_file)
    result = plan(
        settings.open_store(create=False), policy, max_object_bytes=settings.max_object_bytes
    )
    if as_json:
        click.echo(orjson.dumps(result.to_json(details=details), option=orjson.OPT_INDENT_2))
        return
    summary = result.summary()
    click.echo(
        f"policy {summary['policy']} at {summary['now']}: {summary['executions']} executions"
    )
    rows = [
        ("move to cold", summary["toCold"]),
        ("expire", summary["toExpire"]),
        ("held (legal hold)", summary["heldByLegalHold"]),
        ("already cold", summary["alreadyCold"]),
        ("stay hot", summary["hot"]),
    ]
    for label, block in rows:
        click.echo(
            f"  {label:<18} {block['executions']:>8} executions {_human(block['bytes']):>12}"
        )
    expiring = summary["toExpire"]
    click.echo(
        f"  {'expire (blobs)':<18} {expiring['blobs']:>8} blobs      "
        f"{_human(expiring['blobBytes']):>12}"
    )


@retention.command("lifecycle-json")
@click.option("--policy", "policy_file", help="TOML retention policy (else the setting).")
@click.option("--prefix", default="", help="Key prefix of the archive inside the bucket.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file.")
@click.option(
    "--apply", "apply", is_flag=True, help="Also put it on the store's bucket (S3 stores)."
)
@click.pass_context
def lifecycle_json(
    ctx: click.Context, policy_file: str | None, prefix: str, output: str | None, apply: bool
) -> None:
    """Print the native S3 lifecycle configuration equivalent to the policy's cold tiers.

    \b
    Example:
      execvault retention lifecycle-json -o infra/lifecycle.json
      execvault --store s3://bucket/archive retention lifecycle-json --apply
      aws s3api put-bucket-lifecycle-configuration --bucket B \\
          --lifecycle-configuration file://infra/lifecycle.json
    """
    policy = _policy(ctx, policy_file)
    if apply:
        from api.cli import _settings

        configuration = apply_lifecycle(_settings(ctx).open_store(create=False), policy)
    else:
        configuration = lifecycle_configuration(policy, prefix)
    text = orjson.dumps(configuration, option=orjson.OPT_INDENT_2).decode()
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
    else:
        click.echo(text)


@click.command("expire")
@click.option("--policy", "policy_file", help="TOML retention policy (else the setting).")
@click.option("--dry-run", is_flag=True, help="Only print what would expire (the plan).")
@click.pass_context
def expire_command(ctx: click.Context, policy_file: str | None, dry_run: bool) -> None:
    """Delete what the retention policy lets expire, leaving a tombstone for each deletion.

    Never deletes under legal hold, inside Object Lock retention (reported as retained), or a
    content blob a retained execution still references. Prints a JSON report.

    \b
    Example:
      execvault expire --policy retention.toml --dry-run
      execvault expire --policy retention.toml
    """
    from api.cli import _settings

    settings = _settings(ctx)
    policy = _policy(ctx, policy_file)
    store = settings.open_store(create=False)  # nothing to expire in a store that is not there
    if dry_run:
        result = plan(store, policy, max_object_bytes=settings.max_object_bytes)
        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2))
        return
    with run_lease(store, RETENTION_LEASE, owner=cli_user()):
        report = expire(store, policy, max_object_bytes=settings.max_object_bytes)
    click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))


@click.command("archive")
@click.option("--policy", "policy_file", help="TOML retention policy (else the setting).")
@click.pass_context
def archive_command(ctx: click.Context, policy_file: str | None) -> None:
    """Move executions past their hot period to the cold storage class (S3 stores).

    Verified copies onto the same key with the new storage class; blobs stay hot. Each move is
    recorded as a tier event. Safe to re-run after an interruption. Prints a JSON report.

    \b
    Example:
      execvault --store s3://bucket/archive archive --policy retention.toml
    """
    from api.cli import _end_progress, _settings

    settings = _settings(ctx)

    def progress(done: int, total: int) -> None:
        click.echo(f"\rarchive: {done}/{total}\x1b[K", nl=False, err=True)

    store = settings.open_store(create=False)
    with run_lease(store, RETENTION_LEASE, owner=cli_user()):
        report = archive_cold(
            store,
            _policy(ctx, policy_file),
            progress=progress,
            max_object_bytes=settings.max_object_bytes,
        )
    _end_progress()
    click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))


@retention.command("break-lock")
@click.pass_context
def break_lock(ctx: click.Context) -> None:
    """Release the run lease of a stuck `archive` / `expire` run, so the next run may start.

    Only one retention run works on a store at a time; a run killed on another machine keeps
    the lease until its heartbeats are 10 minutes old (on the same machine, until its process
    is gone). Use this when you know the holder is dead. Prints the holder it released.

    \b
    Example:
      execvault retention break-lock && execvault expire --policy retention.toml
    """
    from api.cli import _settings

    holder = break_lease(_settings(ctx).open_store(create=False), RETENTION_LEASE)
    click.echo(orjson.dumps({"released": holder}, option=orjson.OPT_INDENT_2))


@click.command("restore")
@click.argument("execution_id")
@click.option("--days", default=7, show_default=True, type=int, help="Days the copy stays.")
@click.pass_context
def restore_command(ctx: click.Context, execution_id: str, days: int) -> None:
    """Start restoring an archived execution (GLACIER / DEEP_ARCHIVE, or copy it back from the
    cold store; a damaged cold copy is refused, exit code 2); prints its state.

    States: hot (nothing to do), restoring (run again later), restored (readable now).

    \b
    Example:
      execvault --store s3://bucket/archive restore 1001 --days 3
    """
    from api.cli import _settings

    state = restore_execution(_settings(ctx).open_store(create=False), execution_id, days=days)
    click.echo(orjson.dumps({"executionId": execution_id, "state": state}))


@click.group("hold")
def hold() -> None:
    """Legal holds: executions under a hold never expire (docs/retention.md, "Legal holds").

    A hold names one execution, every execution of a workflow, or every execution that currently
    holds a tag. Setting and clearing are write-once events; on an S3 store with Object Lock the
    objects themselves also get their legal hold.

    \b
    Example:
      execvault hold set workflow wf-payments --reason "case 2026-17"
      execvault hold list
      execvault hold clear workflow wf-payments --reason "case closed"
    """


def _print(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2))


@hold.command("set")
@click.argument("scope", type=click.Choice(HOLD_SCOPES))
@click.argument("target")
@click.option("--reason", required=True, help="Why (recorded with the hold).")
@click.option("--by", default=None, help="Who places it (default: cli:<login name>).")
@click.pass_context
def hold_set(ctx: click.Context, scope: str, target: str, reason: str, by: str | None) -> None:
    """Place a legal hold on an execution, a workflow or a tag; prints the result as JSON.

    Idempotent: a hold already in force is reported with "created": false.

    \b
    Example:
      execvault hold set execution 1001 --reason "audit request 42"
      execvault hold set tag litigation --reason "all executions tagged litigation"
    """
    from api.cli import _settings

    settings = _settings(ctx)
    archive = settings.open_archive(create=True)
    result = set_hold(
        archive.store,
        scope,
        target,
        reason=reason,
        by=by or cli_user(),
        sanitize_text=archive.sanitizer.sanitize_text,
        max_object_bytes=settings.max_object_bytes,
    )
    _print(result.to_json())


@hold.command("clear")
@click.argument("scope", type=click.Choice(HOLD_SCOPES))
@click.argument("target")
@click.option("--reason", default=None, help="Why (recorded with the clear event).")
@click.option("--by", default=None, help="Who clears it (default: cli:<login name>).")
@click.option("--policy", "policy_file", help="TOML retention policy (else the setting).")
@click.pass_context
def hold_clear(
    ctx: click.Context,
    scope: str,
    target: str,
    reason: str | None,
    by: str | None,
    policy_file: str | None,
) -> None:
    """Clear a legal hold placed with `hold set` (or the API); prints the result as JSON.

    Objects another hold still covers (an event, or the policy file) keep their legal hold.
    Exit code 2 when no such hold is in force.

    \b
    Example:
      execvault hold clear execution 1001 --reason "released by legal"
    """
    from api.cli import _settings

    settings = _settings(ctx)
    store = settings.open_store(create=False)  # a hold on a store that is not there: an error
    result = clear_hold(
        store,
        scope,
        target,
        by=by or cli_user(),
        reason=reason,
        policy_hold=_policy(ctx, policy_file).hold_reason,
        sanitize_text=settings.sanitizer().sanitize_text,  # the reason is stored: the real key
        max_object_bytes=settings.max_object_bytes,
    )
    _print(result.to_json())


@hold.command("list")
@click.option("--policy", "policy_file", help="TOML retention policy (else the setting).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def hold_list(ctx: click.Context, policy_file: str | None, as_json: bool) -> None:
    """List the legal holds in force: hold events and the policy file's holds.

    \b
    Example:
      execvault hold list --json
    """
    from api.cli import _settings

    settings = _settings(ctx)
    holds = active_holds(
        settings.open_store(create=False), max_object_bytes=settings.max_object_bytes
    )
    policy = _policy(ctx, policy_file)
    from_policy = [("execution", t) for t in sorted(policy.hold_executions)]
    from_policy += [("workflow", t) for t in sorted(policy.hold_workflows)]
    from_policy += [("tag", t) for t in sorted(policy.hold_tags)]
    if as_json:
        _print(
            {
                "holds": [{**e.to_json(), "source": "event"} for e in holds],
                "policyHolds": [
                    {"scope": s, "target": t, "source": "policy"} for s, t in from_policy
                ],
            }
        )
        return
    if not len(holds) and not from_policy:
        click.echo("no legal holds")
    for event in holds:
        click.echo(
            f"{event.scope:<9} {event.target:<30} since {event.to_json()['createdAt']} "
            f"by {event.by}: {event.reason}"
        )
    for scope, target in from_policy:
        click.echo(f"{scope:<9} {target:<30} (retention policy file)")


@hold.command("sync")
@click.option("--policy", "policy_file", help="TOML retention policy (else the setting).")
@click.pass_context
def hold_sync(ctx: click.Context, policy_file: str | None) -> None:
    """Make the objects' legal holds match the holds in force (S3 stores with Object Lock).

    Needed after a held tag moved to another execution, or when a capture missed a hold set by
    another process in the same instant. Reads every execution; prints a JSON report.

    \b
    Example:
      execvault --store s3://bucket/archive hold sync
    """
    from api.cli import _end_progress, _settings

    settings = _settings(ctx)

    def progress(done: int, total: int) -> None:
        click.echo(f"\rhold sync: {done}/{total}\x1b[K", nl=False, err=True)

    report = sync_holds(
        settings.open_store(create=False),
        policy_hold=_policy(ctx, policy_file).hold_reason,
        progress=progress,
        max_object_bytes=settings.max_object_bytes,
    )
    _end_progress()
    _print(report.to_json())


def register_retention(group: click.Group) -> None:
    group.add_command(retention)
    group.add_command(hold)
    group.add_command(expire_command)
    group.add_command(archive_command)
    group.add_command(restore_command)
