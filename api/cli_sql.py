"""``execvault sql``: one read-only SELECT over the index, printed as a table, CSV, JSON or Parquet.

The query runs in the same sandbox as ``POST /api/query`` (``query.sql``): in a worker process
whose memory is capped at ``query_memory_limit`` (plus 192 MiB), killed at the time limit. Limits default to the
settings (``query_max_rows``, ``query_timeout_ms``, ``query_memory_limit``); on the command line
``--limit`` and ``--timeout`` may go beyond them (the process is the caller's own).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import click
import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from query.catalog import Catalog
from query.sql import QueryResult, SqlSandbox

__all__ = ["sql"]

_MAX_CELL = 60


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _cell(value: Any) -> str:
    text = _text(value).replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _write_table(out: TextIO, names: Sequence[str], rows: list[list[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(names))
    ]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out.write(line(list(names)) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row) + "\n")


def _write_csv(out: TextIO, names: Sequence[str], rows: list[list[Any]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_text(v) for v in row])


def _render(result: QueryResult, fmt: str) -> str:
    names = [c.name for c in result.columns]
    if fmt == "json":
        return result.to_json_bytes().decode() + "\n"
    buffer = io.StringIO()
    if fmt == "csv":
        _write_csv(buffer, names, result.rows())
    else:
        _write_table(buffer, names, result.rows())
    return buffer.getvalue()


@click.command("sql")
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="table for people; csv, json ({columns, rows, truncated}) or parquet (needs --output).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the result to FILE instead of stdout (required for parquet).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Most rows (default: query_max_rows).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Time limit in seconds (default: query_timeout_ms).",
)
@click.pass_context
def sql(
    ctx: click.Context,
    query: str,
    fmt: str,
    output: str | None,
    limit: int | None,
    timeout: float | None,
) -> None:
    """Run QUERY, one read-only SELECT over the index ("-" reads it from stdin).

    Views: snapshots, final_states, executions, versions, node_runs, tag_events, annotations,
    retention_events (columns, examples and the sandbox rules: docs/sql.md). Filter on dt (the UTC day) to read only the days you need.
    A query that starts with a "--" comment goes after "--" (execvault sql -- "-- note ...").

    \b
    Example:
      execvault sql "SELECT status, count(*) AS n FROM executions
                     WHERE dt >= current_date - 30 GROUP BY ALL ORDER BY n DESC"
      execvault sql --format csv "SELECT * FROM node_runs WHERE status = 'error' LIMIT 100"
      execvault sql --format parquet -o runs.parquet "SELECT * FROM node_runs WHERE dt = current_date"
    """
    from api.cli import _settings

    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet writes a file: give --output FILE")
    text = sys.stdin.read() if query == "-" else query
    settings = _settings(ctx)
    max_rows = max(settings.query_max_rows, limit or 0)
    max_seconds = max(settings.query_timeout_ms / 1000.0, timeout or 0.0)
    with Catalog(settings.open_store(create=False), settings.index_cache_dir) as catalog:
        sandbox = SqlSandbox(
            catalog,
            max_rows=max_rows,
            timeout_seconds=max_seconds,
            memory_limit=settings.query_memory_limit,
            max_result_bytes=2**62,
        )
        # the worker sends Arrow (parquet, table, csv) or JSON, not both
        result = sandbox.run(
            text,
            limit=limit,
            timeout_seconds=timeout,
            arrow=fmt != "json",
            json=fmt == "json",
        )
    if fmt == "parquet":
        assert output is not None
        pq.write_table(result.table, output, compression="zstd")
    else:
        rendered = _render(result, fmt)
        if output is None:
            click.echo(rendered, nl=False)
        else:
            Path(output).write_text(rendered, encoding="utf-8", newline="")
    more = ", more rows were cut off (--limit)" if result.truncated else ""
    click.echo(f"({result.row_count} row(s), {result.elapsed_ms:.0f} ms{more})", err=True)
