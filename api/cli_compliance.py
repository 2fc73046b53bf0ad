"""``execvault export`` and ``execvault seal-index``: compliance bundles and the index chain.

See ``docs/compliance.md``. ``verify`` itself lives in ``api/cli.py``.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import date
from pathlib import Path

import click
import orjson

from archiver.chain import seal
from archiver.compliance import Selection, bundle_name, export_bundle, export_tar
from archiver.errors import InvalidInput
from archiver.timeutil import utcnow

__all__ = ["register_compliance"]


def _emit(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@click.command("export")
@click.option(
    "--execution-id",
    "execution_ids",
    multiple=True,
    help="An execution to export (repeatable, or comma-separated).",
)
@click.option("--workflow-id", help="Every execution of this workflow (within --since/--until).")
@click.option("--since", help="RFC 3339 time, inclusive (snapshot createdAt).")
@click.option("--until", help="RFC 3339 time, exclusive.")
@click.option(
    "--skip-archived",
    is_flag=True,
    help="Leave out objects in GLACIER / DEEP_ARCHIVE (listed in bundle.json) instead of failing.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="A new directory, or a file ending in .tar.",
)
@click.pass_context
def export(
    ctx: click.Context,
    execution_ids: tuple[str, ...],
    workflow_id: str | None,
    since: str | None,
    until: str | None,
    skip_archived: bool,
    output: str,
) -> None:
    """Write a self-contained, verifiable bundle of the selected executions.

    The bundle holds the objects exactly as stored, their index rows as JSON lines, bundle.json,
    a README and SHA256SUMS: check it with `sha256sum -c SHA256SUMS`, read the objects with
    `zstd -dc`. Refuses an empty or unbounded selection, and archived objects unless
    --skip-archived.

    \b
    Example:
      execvault export --workflow-id wf-42 --since 2026-01-01T00:00:00Z \\
          --until 2026-04-01T00:00:00Z -o wf-42-q1.tar
      execvault export --execution-id 1001 --execution-id 1002 -o case-17/
    """
    from api.cli import _end_progress, _progress, _settings

    selection = Selection.parse(
        execution_ids=execution_ids, workflow_id=workflow_id, since=since, until=until
    )
    settings = _settings(ctx)
    store = settings.open_store(create=False)
    target = Path(output)
    as_tar = target.suffix == ".tar"
    if target.exists():
        raise InvalidInput(f"{target} already exists", field="--output")
    now = utcnow()
    root = bundle_name(now)
    with tempfile.TemporaryDirectory(
        prefix="execvault-export-", dir=str(target.parent) if as_tar else None
    ) as tmp:
        folder = Path(tmp) / root if as_tar else target
        report = export_bundle(
            store,
            selection,
            folder,
            skip_archived=skip_archived,
            progress=_progress("export"),
            max_object_bytes=settings.max_object_bytes,
            now=now,
        )
        _end_progress()
        body = report.to_json()
        if as_tar:
            try:
                body["tarBytes"] = export_tar(folder, target, root)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            body["path"] = str(target)
    _emit(body)


@click.command("seal-index")
@click.option(
    "--accept",
    "accept",
    multiple=True,
    metavar="YYYY-MM-DD",
    help="Seal this day again although its rows changed unexplained (after checking it).",
)
@click.option("--full", is_flag=True, help="Re-read every day, not only changed ones.")
@click.pass_context
def seal_index(ctx: click.Context, accept: tuple[str, ...], full: bool) -> None:
    """Append index chain entries for complete days (UTC) not yet sealed or changed since.

    Run it daily (after midnight UTC) and after `execvault expire`. Days whose rows changed in a
    way it cannot explain are not sealed again but reported (exit 1); check them with
    `execvault verify --read-data`, then --accept them.

    \b
    Example:
      execvault seal-index
      execvault seal-index --accept 2026-03-02
    """
    from api.cli import _end_progress, _progress, _settings

    days = []
    for text in accept:
        try:
            days.append(date.fromisoformat(text))
        except ValueError:
            raise InvalidInput("must be a day YYYY-MM-DD", field="--accept") from None
    report = seal(
        _settings(ctx).open_store(create=False), accept=days, full=full, progress=_progress("seal")
    )
    _end_progress()
    _emit(report.to_json())
    ctx.exit(0 if report.ok else 1)


def register_compliance(group: click.Group) -> None:
    group.add_command(export)
    group.add_command(seal_index)
