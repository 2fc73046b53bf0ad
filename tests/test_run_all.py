"""``benchmarks/run_all.py`` runs benchmark scripts only, never the helper modules they import."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_discovery_lists_the_benchmark_scripts_and_skips_helpers() -> None:
    names = {path.name for path in _run_all().discover([])}
    assert "jsonlines.py" not in names and "run_all.py" not in names
    assert {"capture.py", "sanitize_bench.py", "sql.py"} <= names
    for path in (REPO / "benchmarks").glob("*.py"):
        if path.name not in names | {"run_all.py"}:
            assert "__main__" not in path.read_text(encoding="utf-8"), path.name


def test_a_helper_named_on_the_command_line_is_no_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_all = _run_all()
    (tmp_path / "helper.py").write_text("def emit() -> None: ...\n")
    (tmp_path / "bench.py").write_text('if __name__ == "__main__":\n    print("{}")\n')
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    assert [p.name for p in run_all.discover([])] == ["bench.py"]
    with pytest.raises(SystemExit, match="no such benchmark: helper"):
        run_all.discover(["helper"])
