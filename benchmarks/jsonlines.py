"""The benchmarks' output convention (``architecture.md``): one JSON line per figure on stdout,
progress and remarks on stderr. Each script binds its name: ``emit = partial(emit_line, "sql")``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["emit_line", "log_line"]


def emit_line(
    benchmark: str,
    metric: str,
    value: float,
    n: int,
    *,
    unit: str = "ms",
    target: float | None = None,
    digits: int = 3,
    **extra: Any,
) -> None:
    """``{"benchmark", "metric", "value", "unit"[, "target"], "n", **extra}`` on stdout."""
    line: dict[str, Any] = {"benchmark": benchmark, "metric": metric, "value": round(value, digits)}
    line["unit"] = unit
    if target is not None:
        line["target"] = target
    line["n"] = n
    line.update(extra)
    print(json.dumps(line), flush=True)


def log_line(benchmark: str, message: str) -> None:
    """``[benchmark] message`` on stderr."""
    print(f"[{benchmark}] {message}", file=sys.stderr, flush=True)
