"""Run every benchmark script in ``benchmarks/`` and forward their JSON lines.

Each benchmark script in ``benchmarks/`` (a ``*.py`` with an ``if __name__ == "__main__":``
guard, other than this one) is run in turn with this Python; helper modules the scripts import
(``jsonlines.py``) have no such guard and are not run. Their JSON lines
(one figure each) are forwarded to stdout as they arrive; anything else they print on stdout goes to
stderr, so stdout stays machine-readable. Their stderr (progress) passes through. ``--quick`` is
passed on to the scripts that accept it (the others run as they are, with a note on stderr).

Exits non-zero when a script fails (after running the others).

Example::

    .venv/bin/python benchmarks/run_all.py --quick > results.jsonl
    .venv/bin/python benchmarks/run_all.py capture      # only benchmarks/capture.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def log(message: str) -> None:
    print(f"[run_all] {message}", file=sys.stderr, flush=True)


def is_benchmark(path: Path) -> bool:
    """A script meant to be run (it has a ``__main__`` guard), not a helper module it imports."""
    if path.resolve() == Path(__file__).resolve():
        return False
    text = path.read_text(encoding="utf-8")
    return any(guard in text for guard in _MAIN_GUARDS)


_MAIN_GUARDS = ('if __name__ == "__main__":', "if __name__ == '__main__':")


def discover(names: Sequence[str]) -> list[Path]:
    """The benchmark scripts, sorted; only those named (with or without ``.py``) if any are."""
    scripts = sorted(p for p in HERE.glob("*.py") if is_benchmark(p))
    if not names:
        return scripts
    wanted = {n.removesuffix(".py") for n in names}
    unknown = wanted - {p.stem for p in scripts}
    if unknown:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))}")
    return [p for p in scripts if p.stem in wanted]


def accepts_quick(script: Path) -> bool:
    return '"--quick"' in script.read_text(encoding="utf-8")


def run(script: Path, quick: bool) -> tuple[int, int]:
    """Run one script, forwarding its JSON lines; its exit status and how many figures it gave."""
    command = [sys.executable, str(script)]
    if quick:
        if accepts_quick(script):
            command.append("--quick")
        else:
            log(f"{script.name} has no --quick; running its default")
    log(f"$ {' '.join(command)}")
    started = time.monotonic()
    figures = 0
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.strip()
            if not text:
                continue
            try:
                figure = json.loads(text)
            except json.JSONDecodeError:
                figure = None
            if isinstance(figure, dict) and "metric" in figure:
                print(text, flush=True)
                figures += 1
            else:
                print(f"[{script.stem}] {text}", file=sys.stderr, flush=True)
    status = proc.returncode
    log(f"{script.name}: exit {status}, {figures} figures in {time.monotonic() - started:.1f} s")
    return status, figures


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n", 1)[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", help="run only these benchmarks (default: all)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the scripts")
    args = parser.parse_args(argv)

    failed = []
    for script in discover(args.names):
        status, figures = run(script, args.quick)
        if status != 0:
            failed.append(f"{script.name} (exit {status})")
        elif figures == 0:
            failed.append(f"{script.name} (no figures)")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
