"""Docs that fail the build when stale."""

from __future__ import annotations

import re

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
