"""Docs that fail the build when stale."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from archiver.config import FIELDS, Settings
from tests.helpers import REPO


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(\w+)` \| `(EXECVAULT_\w+)` \|", _readme(), re.MULTILINE)
    }
    assert rows == {name: env for name, env, _ in FIELDS}
    assert set(rows) == set(Settings.__dataclass_fields__)


def test_readme_starts_with_the_two_commands() -> None:
    block = _readme().split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("execvault serve")
    assert block[1].endswith("python -m pytest -q")
    ci = (REPO / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in ci


def test_docs_named_in_the_readme_exist() -> None:
    for link in re.findall(r"\]\(((?:docs|benchmarks)/[^)]+)\)", _readme()):
        assert (REPO / link).exists(), link


def _tour() -> list[str]:
    """The tour's bash blocks: the HTTP one, then the command-line one."""
    tour = _readme().split("## A two-minute tour", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in tour.split("```bash\n")[1:]]


def test_the_tour_names_the_port_once_uses_no_fixed_dates_and_one_workflow() -> None:
    http, cli = _tour()
    assert http.count("8080") == 1 and "\nPORT=8080" in "\n" + http
    assert http.count("localhost:$PORT") == 8  # every request
    assert "localhost:8" not in http + cli
    # the run's times are "now", so the tour works on any day
    assert not re.search(r"\d{4}-\d{2}-\d{2}T", http + cli)
    assert "$NOW" in http and "NOW=$(date -u" in http
    # every workflow id the tour reads is the one it created
    assert set(re.findall(r"\bwf-[\w-]+", http + cli)) == {"wf-demo"}


def test_the_tour_command_line_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from api.cli import main
    from tests.helpers import HMAC_KEY

    http, cli = _tour()
    wf = re.search(r"^WF=(\S+)$", http, re.MULTILINE)
    assert wf is not None
    workflow = (REPO / wf.group(1)).resolve()
    if not workflow.exists():
        pytest.skip(f"corpus workflow {workflow} not present")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hmac.key").write_text(HMAC_KEY.hex() + "\n")
    base = ["--store", "local:./execvault-data", "--hmac-key-file", "hmac.key"]
    for line in cli.strip().splitlines():
        words = shlex.split(line.replace("$WF", str(workflow)), comments=True)
        assert words[0] == ".venv/bin/execvault", line
        result = CliRunner().invoke(main, [*base, *words[1:]])
        assert result.exit_code == 0, (line, result.output, result.exception)
    assert (tmp_path / "wf-demo.tar").is_file()


def test_the_hmac_key_made_in_the_working_directory_is_git_ignored() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert Settings().hmac_key_file.removeprefix("./") in ignored
    assert "execvault-hmac.key" in _readme().split("## A two-minute tour", 1)[1]
