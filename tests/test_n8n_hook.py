"""The n8n hook file and its spool writer on their own, in Node (the one n8n runs on), read back
by the Python side of the spool: the format both follow, the rollout flags, the size bound, and
"no error of ours reaches n8n"."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from api.spool import list_segments, read_lines, read_writer
from tests.n8n_engine import HOOK_FILE, n8n_home

SPOOL_JS = HOOK_FILE.parent / "spool.js"


@pytest.fixture(scope="module")
def node() -> Path:
    return n8n_home() / "bin" / "node"


def run_node(
    node: Path, script: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EXECVAULT_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(node), "-e", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def records(spool: Path) -> list[dict[str, Any]]:
    out = []
    for segment in list_segments(spool):
        for line in read_lines(segment.path):
            assert line.problem is None, (segment.path, line.problem, line.raw[:200])
            assert line.record is not None
            out.append(line.record)
    return out


WORKFLOW = {
    "id": "wf-1",
    "name": "ünïcödé ☃ workflow",
    "nodes": [
        {
            "id": "a",
            "name": "Manual",
            "type": "n8n-nodes-base.manualTrigger",
            "typeVersion": 1,
            "position": [0, 0],
            "parameters": {},
        },
        {
            "id": "b",
            "name": "Code",
            "type": "n8n-nodes-base.code",
            "typeVersion": 2,
            "position": [200, 0],
            "parameters": {"jsCode": "return [{json: {line: 'a\\nb'}}];"},
        },
    ],
    "connections": {"Manual": {"main": [[{"node": "Code", "type": "main", "index": 0}]]}},
    "settings": {},
}


def hook_script(calls: str) -> str:
    """Loads the hook file as n8n does (require) and runs `calls` with `hook` and `x` bound."""
    return (
        f"const hook = require({json.dumps(str(HOOK_FILE))});\n"
        "const x = hook._execvault;\n"
        f"const workflow = {json.dumps(WORKFLOW)};\n"
        "(async () => {\n" + calls + "\n"
        "x.integration.writer && x.integration.writer.close();\n"
        "})().catch((e) => { console.log('ESCAPED ' + e.stack); process.exit(3); });\n"
    )


def test_records_written_in_node_read_back_by_the_python_relay_side(
    tmp_path: Path, node: Path
) -> None:
    spool = tmp_path / "spool"
    script = (
        f"const {{ SpoolWriter }} = require({json.dumps(str(SPOOL_JS))});\n"
        f"const w = new SpoolWriter({{ dir: {json.dumps(str(spool))}, segmentBytes: 4096 }});\n"
        "const big = 'x'.repeat(3000);\n"
        "(async () => {\n"
        "for (let i = 0; i < 20; i++) {\n"
        "  if (!w.append(i % 2 ? 'final-state' : 'snapshot', String(i), {i, text: 'ünï ☃ \\n\\u2028', big})) process.exit(2);\n"
        "  w.tick();\n"  # rotation by size happens on the timer; run it by hand
        "  await new Promise((r) => setTimeout(r, 20));\n"  # let a pending fdatasync finish
        "}\n"
        "w.close();\n"
        "})();\n"
    )
    done = run_node(node, script)
    assert done.returncode == 0, done.stderr
    got = records(spool)
    assert [r["executionId"] for r in got] == [str(i) for i in range(20)]
    assert all(r["v"] == 1 and r["body"]["text"] == "ünï ☃ \n\u2028" for r in got)
    assert [r["kind"] for r in got[:2]] == ["snapshot", "final-state"]
    segments = list_segments(spool)
    assert len(segments) > 1 and all(s.closed for s in segments)  # rotated, then closed
    assert len({s.stem for s in segments}) == len(segments)  # never two with one name
    (writer,) = {s.writer for s in segments}
    state = read_writer(spool, writer)
    assert state is not None and state["appended"] == 20 and state["dropped"] == 0
    assert state["pid"] > 0 and state["closed"] is True
    # records wait here before the service sanitizes them: nobody but n8n's user reads them
    for path in [spool, *spool.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_hook_spools_a_snapshot_then_the_final_state_and_never_throws(
    tmp_path: Path, node: Path
) -> None:
    spool = tmp_path / "spool"
    calls = (
        "x.integration.lifecycle = true;\n"
        "x.integration.snapshot('41', workflow, 'retry', null, {retryOf: '40', userId: 'u-1'});\n"
        "await hook.workflow.postExecute[0]({status: 'error', mode: 'retry', data: {resultData: {runData: {}}}}, workflow, '41');\n"
        # a run whose data cannot be serialized as it is: a cycle and a BigInt
        "const cyclic = {status: 'success', mode: 'manual', big: 10n}; cyclic.self = cyclic;\n"
        "x.integration.snapshot('42', workflow, 'manual', null, {});\n"
        "await hook.workflow.postExecute[0](cyclic, workflow, '42');\n"
        # garbage in: no exception reaches n8n
        "await hook.workflow.postExecute[0](undefined, undefined, undefined);\n"
        "await hook.workflow.postExecute[0](null, {nodes: 5}, {});\n"
        "console.log('OK');"
    )
    done = run_node(node, hook_script(calls), {"EXECVAULT_SPOOL_DIR": str(spool)})
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    got = [r for r in records(spool) if r["executionId"] in ("41", "42")]
    assert [(r["kind"], r["executionId"]) for r in got] == [
        ("snapshot", "41"),
        ("final-state", "41"),
        ("snapshot", "42"),
        ("final-state", "42"),
    ]
    snapshot = got[0]["body"]
    assert snapshot["executionId"] == "41" and snapshot["workflowId"] == "wf-1"
    assert snapshot["replayOf"] == "40" and snapshot["userId"] == "u-1"
    assert snapshot["triggerType"] == "retry" and snapshot["triggerData"]["mode"] == "retry"
    assert snapshot["triggerData"]["node"] == "Manual"
    assert snapshot["workflow"] == WORKFLOW
    assert got[3]["body"]["self"] == "[Circular]" and got[3]["body"]["big"] == "10"


def test_without_the_pre_run_moment_the_snapshot_is_taken_at_the_end_and_says_so(
    tmp_path: Path, node: Path
) -> None:
    spool = tmp_path / "spool"
    calls = (  # plain node has no n8n lifecycle registry: the hook falls back by itself
        "await hook.workflow.postExecute[0]({status: 'success', mode: 'webhook', data: {resultData: {runData: {}}}}, workflow, '7');\n"
    )
    done = run_node(node, hook_script(calls), {"EXECVAULT_SPOOL_DIR": str(spool)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lifecycle registry not found" in done.stderr
    got = records(spool)
    assert [r["kind"] for r in got] == ["snapshot", "final-state"]
    assert got[0]["body"]["source"] == "post-run" and got[0]["body"]["triggerType"] == "webhook"


def test_a_run_that_started_in_another_process_gets_a_post_run_snapshot(
    tmp_path: Path, node: Path
) -> None:
    """n8n restarted while the run waited (or crashed): its end comes to a process that did not
    see it start. The final state never goes without a snapshot before it."""
    spool = tmp_path / "spool"
    calls = (
        "x.integration.lifecycle = true;\n"
        "await hook.workflow.postExecute[0]({status: 'crashed', mode: 'manual'}, workflow, '9');\n"
    )
    done = run_node(node, hook_script(calls), {"EXECVAULT_SPOOL_DIR": str(spool)})
    assert done.returncode == 0, done.stdout + done.stderr
    got = records(spool)
    assert [(r["kind"], r["body"].get("source")) for r in got] == [
        ("snapshot", "post-run"),
        ("final-state", None),
    ]


def test_a_run_canceled_before_its_pre_run_event_is_snapshotted_once(
    tmp_path: Path, node: Path
) -> None:
    """n8n stops a run while its own pre-run handlers still run: the end (and a post-run
    snapshot) is recorded first, then workflowExecuteBefore arrives; no second snapshot."""
    spool = tmp_path / "spool"
    calls = (
        "x.integration.lifecycle = true;\n"
        "await hook.workflow.postExecute[0]({status: 'canceled', mode: 'manual'}, workflow, '5');\n"
        "x.integration.snapshot('5', workflow, 'manual', null, {});\n"
    )
    done = run_node(node, hook_script(calls), {"EXECVAULT_SPOOL_DIR": str(spool)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["kind"] for r in records(spool)] == ["snapshot", "final-state"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EXECVAULT_ENABLED": "off"}, set()),
        ({"EXECVAULT_ENABLED": "false"}, set()),
        ({"EXECVAULT_WORKFLOWS_DENY": "wf-1"}, {"wf-2"}),
        ({"EXECVAULT_WORKFLOWS_ALLOW": "wf-2, wf-3"}, {"wf-2"}),
        ({"EXECVAULT_SAMPLE_PERCENT": "0"}, set()),
        ({"EXECVAULT_SAMPLE_PERCENT": "100"}, {"wf-1", "wf-2"}),
        ({}, {"wf-1", "wf-2"}),
    ],
)
def test_rollout_flags_choose_what_is_captured(
    tmp_path: Path, node: Path, env: dict[str, str], expected: set[str]
) -> None:
    spool = tmp_path / "spool"
    calls = (
        "x.integration.lifecycle = true;\n"
        "for (const [id, wf] of [['1', 'wf-1'], ['2', 'wf-2']]) {\n"
        "  const w = {...workflow, id: wf};\n"
        "  x.integration.snapshot(id, w, 'manual', null, {});\n"
        "  await hook.workflow.postExecute[0]({status: 'success', mode: 'manual'}, w, id);\n"
        "}\n"
    )
    done = run_node(node, hook_script(calls), {"EXECVAULT_SPOOL_DIR": str(spool), **env})
    assert done.returncode == 0, done.stdout + done.stderr
    got = records(spool)
    assert {r["body"]["workflowId"] for r in got if r["kind"] == "snapshot"} == expected
    # a final state is spooled exactly for the executions whose snapshot was
    assert sorted(r["executionId"] for r in got if r["kind"] == "final-state") == sorted(
        r["executionId"] for r in got if r["kind"] == "snapshot"
    )


def test_sampling_is_a_stable_share_of_executions(node: Path) -> None:
    script = (
        f"const x = require({json.dumps(str(HOOK_FILE))})._execvault;\n"
        "const config = x.readConfig({EXECVAULT_SAMPLE_PERCENT: '25'});\n"
        "let n = 0; for (let i = 0; i < 20000; i++) if (x.selected(config, 'wf', String(i))) n++;\n"
        "const again = x.selected(config, 'wf', '12345') === x.selected(config, 'wf', '12345');\n"
        "console.log(JSON.stringify({n, again}));\n"
    )
    done = run_node(node, script)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 4500 < result["n"] < 5500 and result["again"] is True


def test_an_execution_id_prefix_keeps_two_n8n_databases_apart(tmp_path: Path, node: Path) -> None:
    spool = tmp_path / "spool"
    calls = (
        "x.integration.lifecycle = true;\n"
        "x.integration.snapshot('8', workflow, 'retry', null, {retryOf: '7'});\n"
        "await hook.workflow.postExecute[0]({status: 'success', mode: 'retry'}, workflow, '8');\n"
    )
    env = {"EXECVAULT_SPOOL_DIR": str(spool), "EXECVAULT_EXECUTION_ID_PREFIX": "eu-1:"}
    done = run_node(node, hook_script(calls), env)
    assert done.returncode == 0, done.stdout + done.stderr
    got = records(spool)
    assert [r["executionId"] for r in got] == ["eu-1:8", "eu-1:8"]
    assert got[0]["body"]["executionId"] == "eu-1:8" and got[0]["body"]["replayOf"] == "eu-1:7"


@pytest.mark.parametrize(
    "env",
    [
        {"EXECVAULT_EXECUTION_ID_PREFIX": "../x"},
        {"EXECVAULT_SAMPLE_PERCENT": "lots"},
        {"EXECVAULT_SPOOL_MAX_BYTES": "-1"},
        {"EXECVAULT_FSYNC_INTERVAL_MS": "0"},
    ],
)
def test_a_bad_setting_turns_the_integration_off_with_a_line_in_n8ns_log(
    tmp_path: Path, node: Path, env: dict[str, str]
) -> None:
    spool = tmp_path / "spool"
    calls = "await hook.workflow.postExecute[0]({status: 'success'}, workflow, '1');\nconsole.log('OK');"
    done = run_node(node, hook_script(calls), {"EXECVAULT_SPOOL_DIR": str(spool), **env})
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr  # n8n runs on
    assert "configuration refused" in done.stderr and next(iter(env)) not in done.stdout
    assert not spool.exists()


def test_an_unusable_spool_costs_the_execution_nothing(tmp_path: Path, node: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool should be")
    calls = (
        "x.integration.lifecycle = true;\n"
        "x.integration.snapshot('1', workflow, 'manual', null, {});\n"
        "await hook.workflow.postExecute[0]({status: 'success'}, workflow, '1');\n"
        "console.log('OK');"
    )
    done = run_node(node, hook_script(calls), {"EXECVAULT_SPOOL_DIR": str(blocker / "spool")})
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    assert "cannot open the spool" in done.stderr


def test_a_full_spool_drops_counts_and_raises_the_alarm_once(tmp_path: Path, node: Path) -> None:
    spool = tmp_path / "spool"
    script = (
        f"const {{ SpoolWriter }} = require({json.dumps(str(SPOOL_JS))});\n"
        "const lines = [];\n"
        f"const w = new SpoolWriter({{ dir: {json.dumps(str(spool))}, maxBytes: 20000, log: (l) => lines.push(l) }});\n"
        "const results = [];\n"
        "for (let i = 0; i < 50; i++) results.push(w.append('snapshot', String(i), {pad: 'y'.repeat(900)}));\n"
        "w.close();\n"
        "console.log(JSON.stringify({accepted: results.filter(Boolean).length, lines}));\n"
    )
    done = run_node(node, script)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < result["accepted"] < 50
    assert len(result["lines"]) == 1 and "spool full" in result["lines"][0]
    assert "is the relay running?" in result["lines"][0]
    assert len(records(spool)) == result["accepted"]
    (writer,) = {s.writer for s in list_segments(spool)}
    state = read_writer(spool, writer)
    assert state is not None
    assert state["dropped"] == 50 - result["accepted"] and state["fullSince"] is not None


def test_trigger_type_from_the_mode_and_the_trigger_node(node: Path) -> None:
    cases = [
        ("manual", "n8n-nodes-base.manualTrigger", "manual"),
        ("cli", "n8n-nodes-base.manualTrigger", "cli"),
        ("retry", "n8n-nodes-base.webhook", "retry"),
        ("integrated", "n8n-nodes-base.executeWorkflowTrigger", "subworkflow"),
        ("error", "n8n-nodes-base.errorTrigger", "error"),
        ("webhook", "n8n-nodes-base.webhook", "webhook"),
        ("webhook", "n8n-nodes-base.formTrigger", "form"),
        ("trigger", "n8n-nodes-base.scheduleTrigger", "schedule"),
        ("trigger", "n8n-nodes-base.cron", "schedule"),
        ("trigger", "n8n-nodes-base.githubTrigger", "event"),
        ("trigger", None, "trigger"),
        ("evaluation", None, "evaluation"),
    ]
    script = (
        f"const x = require({json.dumps(str(HOOK_FILE))})._execvault;\n"
        f"const cases = {json.dumps(cases)};\n"
        "console.log(JSON.stringify(cases.map(([m, t]) => x.triggerType(m, t ? {type: t} : null))));\n"
    )
    done = run_node(node, script)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [want for _, _, want in cases]
