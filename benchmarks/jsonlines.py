"""The benchmarks' output convention (``architecture.md``): one JSON line per figure on stdout,
progress and remarks on stderr. Each script binds its name: ``emit = partial(emit_line, "sql")``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

__all__ = ["Progress", "emit_line", "log_line"]


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


class Progress:
    """``tick()`` per item; a line on stderr (``[benchmark] label: done/total (rate/s)``) at most
    every two seconds, and at the end. Thread-safe."""

    def __init__(self, benchmark: str, label: str, total: int) -> None:
        self.benchmark, self.label, self.total, self.done = benchmark, label, total, 0
        self.started = self.last = time.monotonic()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self.done += 1
            now = time.monotonic()
            if now - self.last >= 2.0 or self.done == self.total:
                self.last = now
                rate = self.done / max(now - self.started, 1e-9)
                log_line(self.benchmark, f"{self.label}: {self.done}/{self.total} ({rate:.0f}/s)")
