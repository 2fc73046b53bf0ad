"""A workflow's history with versions and executions on one axis (the plan's timeline view).

* ``version_stats`` — per version: runs, finished runs, failures, successes, first and last run
  (one aggregate query over the workflow's days of the index);
* ``workflow_timeline`` — the version chain (from the objects, newest first) with those counts,
  the **change points** (per version after the first: the first failing execution that ran
  under it, with the diff from its parent version), and an axis that interleaves a page of
  executions with the versions created in the same span.

Counts and executions come from the index (fresh within ``index_flush_ms``); versions come from
the version commits themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from archiver.archive import Archive
from archiver.errors import NotFound
from archiver.events import EventLog
from archiver.layout import check_id
from archiver.model import VersionCommit
from archiver.timeutil import format_ts
from query.catalog import Catalog
from query.diff import compare_workflow_versions
from query.history import workflow_history

__all__ = ["FAILED_STATUSES", "VersionStats", "version_stats", "workflow_timeline"]

FAILED_STATUSES: Final = ("error", "crashed")


@dataclass(frozen=True, slots=True)
class VersionStats:
    seq: int
    runs: int = 0
    finished: int = 0  # runs with a recorded final state
    failures: int = 0
    successes: int = 0
    first_run_at: datetime | None = None
    last_run_at: datetime | None = None
    first_failure_id: str | None = None
    first_failure_at: datetime | None = None
    first_failure_status: str | None = None
    first_failure_nodes: tuple[str, ...] = ()
    first_failed_node: str | None = None

    @property
    def failure_rate(self) -> float | None:
        return None if not self.finished else round(self.failures / self.finished, 4)

    def counts_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "finished": self.finished,
            "failures": self.failures,
            "successes": self.successes,
            "failureRate": self.failure_rate,
            "firstRunAt": None if self.first_run_at is None else format_ts(self.first_run_at),
            "lastRunAt": None if self.last_run_at is None else format_ts(self.last_run_at),
        }


_EMPTY_FINALS: Final = (
    "(SELECT CAST(NULL AS VARCHAR) AS execution_id, CAST(NULL AS VARCHAR) AS status, "
    "CAST(NULL AS VARCHAR[]) AS failed_nodes, CAST(NULL AS VARCHAR) AS first_failed_node "
    "WHERE false)"
)


def version_stats(catalog: Catalog, workflow_id: str) -> dict[int, VersionStats]:
    """Run and failure counts of every version of ``workflow_id`` that has indexed executions."""
    wf = check_id(workflow_id, "workflowId")

    def run() -> dict[int, VersionStats]:
        days = [d for d, _ in catalog.key_days("workflow", wf)]
        snapshot_files = catalog.files_for("snapshots", days=days)
        if not snapshot_files:
            return {}
        final_days = [d for d, _ in catalog.key_days("final_workflow", wf)]
        final_files = catalog.files_for("final_states", days=final_days)
        params: dict[str, Any] = {"wf": wf, "sfiles": snapshot_files}
        finals = _EMPTY_FINALS
        if final_files:
            finals = (
                "(SELECT execution_id, status, failed_nodes, first_failed_node "
                f"FROM {catalog.source('final_states', 'ffiles')} WHERE workflow_id = $wf "
                # final states only: a waiting execution's progress rows have not finished
                "AND object_key LIKE '%/result.json.zst')"
            )
            params["ffiles"] = final_files
        failed = "f.status IN ('error', 'crashed')"
        rows = catalog.rows(
            f"""
            WITH s AS (
                SELECT execution_id, created_at, version_seq
                FROM {catalog.source("snapshots", "sfiles")} WHERE workflow_id = $wf
            )
            SELECT s.version_seq AS seq,
                   count(*) AS runs,
                   count(f.execution_id) AS finished,
                   count(*) FILTER (WHERE {failed}) AS failures,
                   count(*) FILTER (WHERE f.status = 'success') AS successes,
                   min(s.created_at) AS first_run_at,
                   max(s.created_at) AS last_run_at,
                   arg_min(s.execution_id, (s.created_at, s.execution_id))
                       FILTER (WHERE {failed}) AS first_failure_id,
                   min(s.created_at) FILTER (WHERE {failed}) AS first_failure_at,
                   arg_min(f.status, (s.created_at, s.execution_id))
                       FILTER (WHERE {failed}) AS first_failure_status,
                   arg_min(f.failed_nodes, (s.created_at, s.execution_id))
                       FILTER (WHERE {failed}) AS first_failure_nodes,
                   arg_min(f.first_failed_node, (s.created_at, s.execution_id))
                       FILTER (WHERE {failed}) AS first_failed_node
            FROM s LEFT JOIN {finals} AS f ON f.execution_id = s.execution_id
            GROUP BY s.version_seq
            """,
            params,
            retry=False,
        )
        return {
            int(r["seq"]): VersionStats(
                seq=int(r["seq"]),
                runs=int(r["runs"]),
                finished=int(r["finished"]),
                failures=int(r["failures"]),
                successes=int(r["successes"]),
                first_run_at=r["first_run_at"],
                last_run_at=r["last_run_at"],
                first_failure_id=r["first_failure_id"],
                first_failure_at=r["first_failure_at"],
                first_failure_status=r["first_failure_status"],
                first_failure_nodes=tuple(r["first_failure_nodes"] or ()),
                first_failed_node=r["first_failed_node"],
            )
            for r in rows
        }

    return catalog.retrying(run)


def _version_json(commit: VersionCommit, stats: VersionStats) -> dict[str, Any]:
    return {**commit.to_json(), **stats.counts_json()}


def _change_point(
    archive: Archive,
    commit: VersionCommit,
    stats: VersionStats,
    parent: VersionStats | None,
    *,
    with_diff: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": commit.seq,
        "version": commit.version,
        "parent": None
        if commit.parent_seq is None
        else {
            "seq": commit.parent_seq,
            "version": commit.parent_version,
        },
        "versionCreatedAt": format_ts(commit.created_at),
        "summary": commit.summary,
        "firstFailure": {
            "executionId": stats.first_failure_id,
            "createdAt": None
            if stats.first_failure_at is None
            else format_ts(stats.first_failure_at),
            "status": stats.first_failure_status,
            "failedNodes": list(stats.first_failure_nodes),
            "firstFailedNode": stats.first_failed_node,
        },
        "failures": stats.failures,
        "finished": stats.finished,
        "failureRate": stats.failure_rate,
        "parentFailureRate": None if parent is None else parent.failure_rate,
        "newFailure": parent is None or parent.failures == 0,
    }
    if with_diff and commit.parent_seq is not None:
        diff = compare_workflow_versions(
            archive, commit.workflow_id, str(commit.parent_seq), str(commit.seq)
        )
        out["diff"] = diff.to_json()
    return out


def workflow_timeline(
    archive: Archive,
    catalog: Catalog,
    workflow_id: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    with_diffs: bool = True,
) -> dict[str, Any]:
    """Versions (newest first, with counts), change points, and one page of the axis."""
    wf = check_id(workflow_id, "workflowId")
    commits = archive.versions.history(wf)
    if not commits:
        raise NotFound(f"workflow {wf} has no versions")
    stats = version_stats(catalog, wf)
    by_seq: Mapping[int, VersionStats] = {
        c.seq: stats.get(c.seq, VersionStats(seq=c.seq)) for c in commits
    }
    change_points = [
        _change_point(
            archive,
            commit,
            by_seq[commit.seq],
            None if commit.parent_seq is None else by_seq.get(commit.parent_seq),
            with_diff=with_diffs,
        )
        for commit in reversed(commits)
        if commit.parent_seq is not None and by_seq[commit.seq].first_failure_id is not None
    ]
    page = workflow_history(catalog, wf, limit=limit, cursor=cursor)
    tags = EventLog(archive.store, max_object_bytes=archive.max_object_bytes).current_tags(wf)
    tags_of: dict[str, list[str]] = {}
    for tag, event in sorted(tags.items()):
        tags_of.setdefault(event.execution_id, []).append(tag)
    axis: list[dict[str, Any]] = [
        {
            "kind": "execution",
            "at": format_ts(item.created_at),
            **item.to_json(),
            "tags": tags_of.get(item.execution_id, []),
        }
        for item in page.items
    ]
    low = page.items[-1].created_at if page.items and page.next_cursor else None
    high = page.items[0].created_at if page.items and cursor is not None else None
    for commit in commits:
        if (low is None or commit.created_at >= low) and (
            high is None or commit.created_at <= high
        ):
            axis.append(
                {
                    "kind": "version",
                    "at": format_ts(commit.created_at),
                    "seq": commit.seq,
                    "version": commit.version,
                    "level": commit.level,
                    "summary": commit.summary,
                    "executionId": commit.execution_id,
                }
            )
    # newest first; at one instant a version sorts after (below) the execution that made it
    axis.sort(key=lambda e: (e["at"], e["kind"] == "execution"), reverse=True)
    totals = {
        "runs": sum(s.runs for s in by_seq.values()),
        "finished": sum(s.finished for s in by_seq.values()),
        "failures": sum(s.failures for s in by_seq.values()),
    }
    return {
        "workflowId": wf,
        "head": commits[-1].to_json(),
        "totals": totals,
        "versions": [_version_json(c, by_seq[c.seq]) for c in reversed(commits)],
        "changePoints": change_points,
        "tags": {tag: event.execution_id for tag, event in sorted(tags.items())},
        "axis": axis,
        "nextCursor": page.next_cursor,
    }
