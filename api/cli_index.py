"""``execvault compact-index``: merge each day's index parts into one file (``docs/index.md``)."""

from __future__ import annotations

import click

from archiver.compaction import DEFAULT_GRACE_SECONDS, compact_index

__all__ = ["register_index"]


@click.command("compact-index")
@click.option(
    "--include-today", is_flag=True, help="Compact today (UTC) too; by default only complete days."
)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE_SECONDS,
    show_default=True,
    help="Delete replaced parts once their compaction is this old (0: in this run).",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be compacted and deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def compact_index_command(
    ctx: click.Context, include_today: bool, grace_seconds: float, dry_run: bool, as_json: bool
) -> None:
    """Merge the parts of each table and day into one sorted file.

    Safe while the service is running: readers return each row once while a day holds both its
    parts and the merged file; replaced parts are deleted by a later run, after the grace period,
    once the merged file is checked to hold all their rows. Run it e.g. hourly from cron. Exits 1
    when a part could not be deleted or a day had to be left as it is.

    \b
    Example:
      execvault compact-index --json
      execvault compact-index --grace-seconds 0 && execvault verify
    """
    from api.cli import _emit, _end_progress, _progress, _settings

    report = compact_index(
        _settings(ctx).open_store(create=False),
        include_today=include_today,
        grace_seconds=grace_seconds,
        dry_run=dry_run,
        progress=_progress("compact-index"),
    )
    _end_progress()
    body = report.to_json()
    if as_json:
        _emit(body)
    else:
        verb = "would compact" if dry_run else "compacted"
        click.echo(f"{verb} {body['daysCompacted']} day(s) ({body['partsReplaced']} parts)")
        for table, rows in sorted(body["rows"].items()):
            click.echo(f"  {table}: {rows} rows")
        deleted = "would delete" if dry_run else "deleted"
        click.echo(f"{deleted} {len(body['partsDeleted'])} replaced part(s)")
        click.echo(f"compactions within the grace period: {body['recordsPending']}")
        for problem in [*body["problems"], *body["deleteFailures"]][:20]:
            click.echo(f"  {problem['key']}: {problem['reason']}")
        click.echo("OK" if report.ok else "PROBLEMS FOUND")
    ctx.exit(0 if report.ok else 1)


def register_index(main: click.Group) -> None:
    """Add the index maintenance commands to the ``execvault`` group."""
    main.add_command(compact_index_command)
