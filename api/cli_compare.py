"""Git-like verbs on the command line: ``diff``, ``show``, ``replay-context``, ``log``.

Each command calls one query function and prints it, as readable text (coloured on a terminal)
or, with ``--json``, as the same JSON the HTTP API answers. Registered on ``execvault`` by
``api.cli`` (``register_compare``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
import orjson

from archiver.archive import Archive
from archiver.errors import NotFound
from archiver.layout import check_id
from query.diff import compare_executions, compare_workflow_versions

__all__ = ["register_compare", "render_diff"]


def _archive(ctx: click.Context) -> Archive:
    from api.cli import _archive as open_archive

    return open_archive(ctx)


def _emit(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _value(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 200 else text[:197] + "..."


def _edge(edge: dict[str, Any]) -> str:
    kind = edge["type"]
    into = f"{edge['targetType']} " if edge.get("targetType") else ""
    return (
        f"{edge['source']} [{kind} {edge['sourceOutput']}] → "
        f"{edge['target']} [{into}{edge['targetInput']}]"
    )


def _change_lines(change: dict[str, Any], indent: str) -> Iterator[tuple[str, str | None]]:
    path = change["path"] or "/"
    if change.get("kind") == "secret":
        yield f"{indent}{path}  (secret {change['secret']})", "yellow"
    else:
        yield f"{indent}{path}", None
    if "old" in change:
        yield f"{indent}-   {_value(change['old'])}", "red"
    if "new" in change:
        yield f"{indent}+   {_value(change['new'])}", "green"


def _side(side: dict[str, Any]) -> str:
    what = side["executionId"] or side["snapshotId"]
    status = f", {side['status']}" if side.get("status") else ""
    return (
        f"{what} ({side['workflowId']} {side['version']} #{side['versionSeq']}, "
        f"{side['snapshotHash'][:12]}{status})"
    )


def render_diff(diff: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """A diff's JSON form as git-style lines: ``(text, colour or None)``."""
    one, two = diff["side1"], diff["side2"]
    yield f"diff {_side(one)} → {_side(two)}", "bold"
    yield f"--- a/{one['executionId'] or one['snapshotId']}", "bold"
    yield f"+++ b/{two['executionId'] or two['snapshotId']}", "bold"
    yield f"# {diff['summary']}", "cyan"
    if diff["empty"]:
        return
    nodes = (
        diff["addedNodes"] or diff["removedNodes"] or diff["nodesRenamed"] or diff["nodesModified"]
    )
    if nodes or diff["nodeOrder"]:
        yield "@@ nodes @@", "cyan"
    for node in diff["addedNodes"]:
        yield f"+ node {node['name']!r} ({node['type']})", "green"
    for node in diff["removedNodes"]:
        yield f"- node {node['name']!r} ({node['type']})", "red"
    for rename in diff["nodesRenamed"]:
        yield f"~ node {rename['from']!r} renamed to {rename['to']!r}", "yellow"
    for mod in diff["nodesModified"]:
        yield f"~ node {mod['node']!r} ({mod['type']}): {', '.join(mod['fieldsChanged'])}", "yellow"
        for change in mod["changes"]:
            yield from _change_lines(change, "    ")
    if diff["nodeOrder"]:
        yield f"~ node order: {', '.join(map(str, diff['nodeOrder']))}", "yellow"
    if diff["connectionsAdded"] or diff["connectionsRemoved"]:
        yield "@@ connections @@", "cyan"
    for edge in diff["connectionsRemoved"]:
        yield f"- {_edge(edge)}", "red"
    for edge in diff["connectionsAdded"]:
        yield f"+ {_edge(edge)}", "green"
    for title, key in (("settings", "settingsChanged"), ("variables", "variablesChanged")):
        if diff[key]:
            yield f"@@ {title} @@", "cyan"
            for change in diff[key]:
                yield from _change_lines(change, "  ")
    if diff["credentialsChanged"]:
        yield "@@ credentials @@", "cyan"
    for cred in diff["credentialsChanged"]:
        old, new = cred["old"] or {}, cred["new"] or {}
        yield (
            f"~ {cred['node']} {cred['credentialType']}: {old.get('name')} ({old.get('id')}) → "
            f"{new.get('name')} ({new.get('id')})",
            "yellow",
        )
    if diff["triggersChanged"]:
        yield "@@ triggers @@", "cyan"
    for trig in diff["triggersChanged"]:
        if trig["change"] == "triggerType":
            yield f"~ trigger type {trig['old']} → {trig['new']}", "yellow"
        else:
            yield f"~ trigger {trig['node']!r} ({trig['kind']}) {trig['change']}", "yellow"
    ex = diff["execution"]
    if ex is None:
        return
    yield "@@ execution @@", "cyan"
    status = [ex[k] or "not recorded" for k in ("status1", "status2")]
    line = f"  status {status[0]} → {status[1]}"
    if ex["durationMs1"] is not None and ex["durationMs2"] is not None:
        line += f"; duration {ex['durationMs1']:g} → {ex['durationMs2']:g} ms"
    yield line, None
    first = ex["firstDivergence"]
    if first is not None:
        error = first["error"]
        why = f": {error['message']}" if error else ""
        yield (
            f"! first divergence: {first['node']!r} ({', '.join(first['reasons'])}; "
            f"{first['status1']} → {first['status2']}){why}",
            "magenta",
        )
    for change in ex["nodeStatusChanges"]:
        yield (
            f"~ {change['node']}: {change['old'] or 'not run'} → {change['new'] or 'not run'}",
            None,
        )
    for error in ex["errorsAppeared"]:
        yield f"+ error in {error['node']}: {error['message']}", "red"
    for error in ex["errorsDisappeared"]:
        yield f"- error in {error['node']}: {error['message']}", "green"
    for error in ex["errorsChanged"]:
        yield (
            f"~ error in {error['node']}: {error['old']['message']} → {error['new']['message']}",
            "yellow",
        )
    for count in ex["itemCountChanges"]:
        yield (
            f"~ items {count['node']}: in {count['inputItems']['old']} → "
            f"{count['inputItems']['new']}, out {count['outputItems']['old']} → "
            f"{count['outputItems']['new']}",
            None,
        )
    for duration in ex["durationChanges"]:
        yield (
            f"~ duration {duration['node']}: {duration['oldMs']} → {duration['newMs']} ms",
            None,
        )


def _echo_lines(lines: Iterator[tuple[str, str | None]]) -> None:
    for text, colour in lines:
        if colour == "bold":
            click.secho(text, bold=True)
        elif colour is not None:
            click.secho(text, fg=colour)
        else:
            click.echo(text)


@click.command("diff")
@click.argument("first")
@click.argument("second")
@click.option(
    "--workflow",
    "workflow_id",
    help="Compare two versions of this workflow (FIRST and SECOND: 1.2.0, a seq number, head).",
)
@click.option("--json", "as_json", is_flag=True, help="The diff as JSON (as the API answers).")
@click.pass_context
def diff_command(
    ctx: click.Context, first: str, second: str, workflow_id: str | None, as_json: bool
) -> None:
    """Show what changed from execution FIRST to execution SECOND (git diff style).

    Structure (nodes, connections, settings, variables, credentials, triggers; secrets only as
    "changed"/"unchanged") and outcome (status, errors, items, the first divergence).

    \b
    Example:
      execvault diff 1001 1002
      execvault diff 1001 1002 --json | jq .execution.firstDivergence
      execvault diff --workflow wf-42 1.0.0 head
    """
    archive = _archive(ctx)
    if workflow_id is not None:
        result = compare_workflow_versions(
            archive, check_id(workflow_id, "workflowId"), first, second
        )
    else:
        result = compare_executions(archive, first, second)
    body = result.to_json()
    if as_json:
        _emit(body)
    else:
        _echo_lines(render_diff(body))


def show_body(archive: Archive, execution_id: str) -> dict[str, Any]:
    """What ``execvault show`` prints: the snapshot's headline, its version, its outcome."""
    snap = archive.get_snapshot(execution_id)
    final = archive.get_final_state(snap.execution_id)
    commit = None
    if snap.version_seq:
        try:
            commit = archive.versions.get(snap.workflow_id, snap.version_seq)
        except NotFound:  # a missing commit never hides the snapshot itself
            commit = None
    body = snap.to_json()
    for key in ("nodesSnapshot", "connectionsSnapshot", "settingsSnapshot", "workflowSnapshot"):
        body.pop(key, None)
    body["workflowName"] = snap.workflow_snapshot.name
    body["nodes"] = [
        {"name": n.get("name"), "type": n.get("type"), "id": n.get("id")}
        for n in snap.nodes_snapshot
    ]
    body["connectionCount"] = len(snap.connections_snapshot)
    body["versionCommit"] = None if commit is None else commit.to_json()
    body["finalState"] = None if final is None else final.to_json()
    return body


@click.command("show")
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@click.pass_context
def show_command(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """Summarize one execution: version and its change, trigger, nodes, outcome (git show).

    \b
    Example:
      execvault show 1001
    """
    from query.diff import mask

    body = mask(show_body(_archive(ctx), execution_id))
    if as_json:
        _emit(body)
        return
    click.secho(f"execution {body['executionId']}", fg="yellow", bold=True)
    click.echo(f"Workflow: {body['workflowId']} ({body['workflowName'] or 'unnamed'})")
    commit = body["versionCommit"]
    parent = ""
    if commit and commit["parent"]:
        parent = f"  parent {commit['parent']['version']} (#{commit['parent']['seq']})"
    click.echo(f"Version:  {body['snapshotVersion']} (#{body['versionSeq']}){parent}")
    click.echo(f"Hash:     {body['snapshotHash']}")
    click.echo(f"Date:     {body['createdAt']}  by {body['userId']}")
    click.echo(f"Trigger:  {body['triggerType']}")
    if body.get("replayOf"):
        click.echo(f"Replay of: {body['replayOf']}")
    if commit:
        made_here = commit["executionId"] == body["executionId"]
        origin = "" if made_here else f" (made by execution {commit['executionId']})"
        click.echo("")
        click.echo(f"    {commit['level']}: {commit['summary']}{origin}")
    click.echo("")
    final = body["finalState"]
    states = {n["node"]: n for n in (final or {}).get("nodes", [])}
    for node in body["nodes"]:
        state = states.get(node["name"])
        outcome = "-"
        if state is not None:
            items = sum(r.get("outputItems", 0) for r in state["runs"])
            outcome = f"{state['status']} ({items} item(s))"
            if state.get("error"):
                outcome += f": {state['error']['message']}"
        click.echo(f"  {node['name'][:40]:<40} {node['type'][:40]:<40} {outcome}")
    for ref in body["credentialsRefs"]:
        click.echo(
            f"  credential {ref['type']} {ref.get('name') or ''} ({ref.get('id') or '-'}) "
            f"used by {', '.join(ref['nodes'])}"
        )
    click.echo("")
    if final is None:
        click.echo("Outcome:  not recorded yet")
    else:
        click.echo(f"Outcome:  {final['status']}")


@click.command("replay-context")
@click.argument("execution_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    default="-",
    show_default=True,
    help="File to write (- for stdout).",
)
@click.option(
    "--workflow-only",
    is_flag=True,
    help="Write only the workflow, in n8n's import shape (n8n import:workflow --input=FILE).",
)
@click.option("--validate", is_flag=True, help="Also check it (exit 1 when it is not valid).")
@click.pass_context
def replay_context_command(
    ctx: click.Context, execution_id: str, output: str, workflow_only: bool, validate: bool
) -> None:
    """Write what a re-run of EXECUTION_ID needs as a JSON file an engine can load.

    The exact structure (same snapshotHash), the workflow in n8n's shape, trigger type and
    data, non-secret variables, credential references, pinned data, the redacted values to
    supply (mustSupply) and the original outcome. Capture the re-run with replayOf set to
    EXECUTION_ID, then compare: execvault diff EXECUTION_ID RERUN_ID.

    \b
    Example:
      execvault replay-context 1001 -o replay-1001.json
      execvault replay-context 1001 --workflow-only -o wf.json && n8n import:workflow --input=wf.json
    """
    from query.replay import prepare_replay_context, validate_for_replay

    archive = _archive(ctx)
    context = prepare_replay_context(archive, execution_id)
    body = context["workflow"] if workflow_only else context
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
    if output == "-":
        click.echo(data.decode(), nl=False)
    else:
        with click.open_file(output, "wb") as handle:
            handle.write(data)
        click.echo(
            f"wrote {output}: {context['executionId']} ({context['snapshotHash'][:12]}), "
            f"{len(context['mustSupply'])} value(s) to supply",
            err=True,
        )
    if validate:
        report = validate_for_replay(archive, execution_id)
        for item in report["issues"]:
            click.echo(f"{item['severity']}: {item['message']}", err=True)
        ctx.exit(0 if report["valid"] else 1)


@click.command("log")
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="The whole timeline as JSON (as the API).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="Executions on the axis (--json).")  # fmt: skip
@click.pass_context
def log_command(ctx: click.Context, workflow_id: str, as_json: bool, limit: int) -> None:
    """List WORKFLOW_ID's versions, newest first (like git log --oneline), with run counts.

    Each line: version, #seq, hash, runs and failures under it (from the index), the change
    summary, and the first failing execution after the change when there is one.

    \b
    Example:
      execvault log wf-42
      execvault log wf-42 --json | jq '.changePoints[0].firstFailure'
    """
    from api.cli import _settings
    from query.catalog import Catalog
    from query.timeline import workflow_timeline

    settings = _settings(ctx)
    archive = settings.open_archive(create=False)
    wf = check_id(workflow_id, "workflowId")
    with Catalog(archive.store, settings.index_cache_dir) as catalog:
        body = workflow_timeline(archive, catalog, wf, limit=limit, with_diffs=as_json)
    if as_json:
        _emit(body)
        return
    firsts = {c["seq"]: c["firstFailure"]["executionId"] for c in body["changePoints"]}
    for version in body["versions"]:
        runs = f"{version['runs']} run{'s' if version['runs'] != 1 else ''}"
        failed = f"{version['failures']} failed"
        line = (
            f"{version['version']:<10} #{version['seq']:<4} {version['snapshotHash'][:12]}  "
            f"{runs:>9} {failed:>9}  {version['summary']}"
        )
        if version["seq"] in firsts:
            click.echo(line + "  ", nl=False)
            click.secho(f"[first failure: {firsts[version['seq']]}]", fg="red")
        else:
            click.echo(line)


COMMANDS = (diff_command, show_command, replay_context_command, log_command)


def register_compare(group: click.Group) -> None:
    """Add this module's commands to the ``execvault`` group."""
    for command in COMMANDS:
        group.add_command(command)
