"""``execvault import-n8n``: backfill the archive from n8n's own database (``docs/n8n-import.md``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click
import orjson

from archiver.errors import InvalidId, InvalidInput
from archiver.layout import check_id
from archiver.n8n_import import (
    ImportOptions,
    ImportReport,
    N8nSource,
    PostgresSource,
    SqliteSource,
    import_n8n,
)
from archiver.timeutil import parse_ts

__all__ = ["register_import"]


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on a terminal; plain ``done/total`` lines (every 2 s) otherwise."""
    if not enabled:
        yield lambda done, total: None
        return
    if sys.stderr.isatty():
        with ExitStack() as stack:
            bars: list[Any] = []

            def update(done: int, total: int) -> None:
                if not bars:  # drawn once the total is known
                    bars.append(
                        stack.enter_context(
                            click.progressbar(
                                length=max(total, 1),
                                label="import-n8n",
                                file=sys.stderr,
                                show_pos=True,
                                show_eta=True,
                            )
                        )
                    )
                bars[0].update(done - bars[0].pos)

            yield update
        return
    last = [time.monotonic()]
    started = last[0]

    def line(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 2.0 and done < total:
            return
        last[0] = now
        rate = done / (now - started) if now > started else 0.0
        click.echo(f"import-n8n: {done}/{total} executions ({rate:.0f}/s)", err=True)

    yield line


def _open(
    sqlite: str | None, postgres: str | None, table_prefix: str, schema: str | None
) -> N8nSource:
    if (sqlite is None) == (postgres is None):
        raise click.UsageError("give exactly one of --sqlite PATH and --postgres DSN")
    if sqlite is not None:
        return SqliteSource(sqlite, table_prefix=table_prefix)
    assert postgres is not None
    return PostgresSource(postgres, table_prefix=table_prefix, schema=schema)


def _print(report: ImportReport) -> None:
    data = report.to_json()
    verb = "would import" if report.dry_run else "imported"
    click.echo(
        f"{verb}: {data['imported']} executions"
        f" ({data['inProgress']} still running/waiting in n8n: progress records)"
    )
    click.echo(f"completed: {data['completed']} (snapshot there, final state added)")
    click.echo(f"skipped:   {data['skippedExisting']} already archived")
    click.echo(
        f"versions:  {data['versionsImported']} saved versions {verb} "
        f"({data['versionsSkipped']} already in the chain)"
    )
    click.echo(f"failed:    {data['failed']}")
    for failure in report.failed[:50]:
        click.echo(f"  execution {failure['executionId']}: {failure['reason']}")
    if len(report.failed) > 50:
        click.echo(f"  ... and {len(report.failed) - 50} more (--json lists all)")
    for failure in report.versions_failed[:20]:
        click.echo(f"  version {failure['versionId']}: {failure['reason']}")
    click.echo(
        f"rate:      {data['executionsPerSecond']} executions/s "
        f"({data['executions']} in {data['seconds']} s)"
    )


def _time(value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return parse_ts(value, option)
    except InvalidInput as err:
        raise click.BadParameter(str(err), param_hint=option) from None


@click.command("import-n8n")
@click.option(
    "--sqlite", type=click.Path(exists=True, dir_okay=False), help="n8n's database.sqlite."
)
@click.option(
    "--postgres",
    metavar="DSN",
    envvar="EXECVAULT_N8N_POSTGRES_DSN",
    help="n8n's Postgres, e.g. postgresql://n8n@db/n8n (password: PGPASSWORD or ~/.pgpass).",
)
@click.option("--table-prefix", default="", help="n8n's DB_TABLE_PREFIX, if it sets one.")
@click.option("--schema", default=None, help="n8n's DB_POSTGRESDB_SCHEMA (default: public).")
@click.option(
    "--workflow-id", "workflow_ids", multiple=True, help="Only this workflow (repeatable)."
)
@click.option("--since", help="Only executions created at or after this RFC 3339 time.")
@click.option("--until", help="Only executions created before this RFC 3339 time.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many executions.")
@click.option("--no-history", is_flag=True, help="Skip n8n's saved versions (workflow_history).")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Writer threads (each workflow stays on one, in order).",
)
@click.option(
    "--execution-id-prefix",
    "id_prefix",
    default="",
    help="Prepended to n8n's execution ids and retryOf: the same value as the n8n hook's "
    "EXECVAULT_EXECUTION_ID_PREFIX.",
)
@click.option("--dry-run", is_flag=True, help="Read and check everything, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def import_n8n_command(
    ctx: click.Context,
    sqlite: str | None,
    postgres: str | None,
    table_prefix: str,
    schema: str | None,
    workflow_ids: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int | None,
    no_history: bool,
    jobs: int,
    id_prefix: str,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Backfill past executions and saved versions from n8n's database.

    Each execution becomes a snapshot with n8n's execution id, workflow id and createdAt, marked
    source: backfill, and its final state; saved versions no execution ran become version
    commits. Re-runs skip what is archived (by the live hook too), so an interrupted import is
    resumed by running it again. Bad rows are reported and skipped. Exits 1 when any failed.

    \b
    Example:
      execvault import-n8n --sqlite ~/.n8n/database.sqlite
      execvault import-n8n --postgres postgresql://n8n@db/n8n --until 2026-12-01T00:00:00Z --json
    """
    from api.cli import _indexed_archive

    options = ImportOptions(
        workflow_ids=workflow_ids,
        since=_time(since, "--since"),
        until=_time(until, "--until"),
        limit=limit,
        dry_run=dry_run,
        history=not no_history,
        jobs=jobs,
        id_prefix=id_prefix,
    )
    if id_prefix:
        try:
            check_id(f"{id_prefix}1", "--execution-id-prefix")
        except InvalidId as err:
            raise click.BadParameter(str(err), param_hint="--execution-id-prefix") from None
    source = _open(sqlite, postgres, table_prefix, schema)
    try:
        with _indexed_archive(ctx) as archive, _progress(not quiet) as progress:
            report = import_n8n(archive, source, options, progress=progress)
    finally:
        source.close()
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print(report)
    ctx.exit(1 if report.failed or report.versions_failed else 0)


def register_import(group: click.Group) -> None:
    group.add_command(import_n8n_command)
