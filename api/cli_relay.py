"""``execvault relay``: deliver a spool to the service (``docs/spool.md``), and its status."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import click
import orjson

__all__ = ["read_token", "register_relay"]


def read_token(token_file: str | None) -> str | None:
    """The bearer token: the first line of ``token_file``, else ``EXECVAULT_TOKEN``."""
    if token_file:
        try:
            text = Path(token_file).read_text().strip()
        except OSError as err:
            raise click.BadParameter(
                f"cannot read it: {err.strerror}", param_hint="--token-file"
            ) from err
        return text.splitlines()[0].strip() if text else None
    return os.environ.get("EXECVAULT_TOKEN") or None


@click.group(invoke_without_command=True)
@click.option("--spool", "spool", type=click.Path(file_okay=False), help="The spool folder.")
@click.option("--url", envvar="EXECVAULT_URL", help="The service, e.g. http://127.0.0.1:8080.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the bearer token (else EXECVAULT_TOKEN); scope ingest (+ backfill).",
)
@click.option(
    "--once",
    is_flag=True,
    help="Exit once nothing is left to send now (deferred records stay; an unreachable "
    "service is still retried).",
)
@click.option(
    "--defer-seconds",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0),
    help="How long a final state waits for its snapshot before it is rejected.",
)
@click.option(
    "--status-seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="How often relay.json and the progress line are refreshed.",
)
@click.option(
    "--lanes",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Requests in flight at once; an execution's records share a lane and keep their order "
    "(1: one record at a time).",
)
@click.option("--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.pass_context
def relay(
    ctx: click.Context,
    spool: str | None,
    url: str | None,
    token_file: str | None,
    once: bool,
    defer_seconds: float,
    status_seconds: float,
    lanes: int,
    quiet: bool,
) -> None:
    """Deliver the spool at --spool to the service at --url, until stopped.

    At-least-once delivery with an exactly-once effect (the service answers an identical re-send
    200); retries with backoff while the service is down; records the service refuses for good go
    to SPOOL/rejected/. SIGTERM finishes the requests in flight and exits. One relay per spool.
    Records older than the service's capture_max_age_seconds (24 h) need a token with the
    `backfill` scope besides `ingest`.

    \b
    Example:
      execvault relay --spool /var/lib/execvault/spool --url http://127.0.0.1:8080
      EXECVAULT_TOKEN=... execvault relay --spool ./spool --url https://archive.example --once
      execvault relay status --spool ./spool
    """
    if ctx.invoked_subcommand is not None:
        return
    if not spool or not url:
        raise click.UsageError("give --spool DIR and --url URL (or a subcommand: status)")
    from api.relay import Relay

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    with Relay(
        spool,
        url,
        token=read_token(token_file),
        defer_seconds=defer_seconds,
        status_seconds=status_seconds,
        lanes=lanes,
    ) as worker:

        def _stop(signum: int, _frame: FrameType | None) -> None:
            logging.getLogger("execvault.relay").info(
                "relay: %s, finishing the request in flight", signal.Signals(signum).name
            )
            worker.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        worker.run(once=once)


@relay.command("status")
@click.option(
    "--spool",
    "spool",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="The spool folder.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of lines.")
def relay_status(spool: str, as_json: bool) -> None:
    """The spool's backlog (records, bytes, oldest record's age), the relay's counts and each
    writer's drops and alarm. Exit code 1 when a writer is dropping records (spool full).

    \b
    Example:
      execvault relay status --spool /var/lib/execvault/spool
      execvault relay status --spool ./spool --json | jq .backlog
    """
    from api.relay import describe_status, full_status

    status = full_status(Path(spool))
    if as_json:
        click.echo(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in describe_status(status):
            click.echo(line)
    if any(w["alarm"] for w in status["writers"]):
        sys.exit(1)


def register_relay(main: click.Group) -> None:
    main.add_command(relay)
