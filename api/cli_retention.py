"""``execvault retention …``: the retention policy's plan and native lifecycle configuration.

The policy comes from ``--policy FILE`` or the ``retention_policy_file`` setting
(``EXECVAULT_RETENTION_POLICY_FILE``); without either, the defaults of
:class:`archiver.retention.RetentionPolicy` apply. See ``docs/retention.md``.
"""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from archiver.retention import (
    RetentionPolicy,
    apply_lifecycle,
    archive_cold,
    expire,
    lifecycle_configuration,
    load_policy,
    plan,
    restore_execution,
)

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
    result = plan(settings.open_store(), policy, max_object_bytes=settings.max_object_bytes)
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

        configuration = apply_lifecycle(_settings(ctx).open_store(), policy)
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
    store = settings.open_store()
    if dry_run:
        result = plan(store, policy, max_object_bytes=settings.max_object_bytes)
        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2))
        return
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

    report = archive_cold(
        settings.open_store(),
        _policy(ctx, policy_file),
        progress=progress,
        max_object_bytes=settings.max_object_bytes,
    )
    _end_progress()
    click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))


@click.command("restore")
@click.argument("execution_id")
@click.option("--days", default=7, show_default=True, type=int, help="Days the copy stays.")
@click.pass_context
def restore_command(ctx: click.Context, execution_id: str, days: int) -> None:
    """Start restoring an archived execution (GLACIER / DEEP_ARCHIVE); prints its state.

    States: hot (nothing to do), restoring (run again later), restored (readable now).

    \b
    Example:
      execvault --store s3://bucket/archive restore 1001 --days 3
    """
    from api.cli import _settings

    state = restore_execution(_settings(ctx).open_store(), execution_id, days=days)
    click.echo(orjson.dumps({"executionId": execution_id, "state": state}))


def register_retention(group: click.Group) -> None:
    group.add_command(retention)
    group.add_command(expire_command)
    group.add_command(archive_command)
    group.add_command(restore_command)
