"""Which of archiver's Cython-compiled modules (see setup.py) are loaded, and when their source is.

setup.py compiles a few hot modules from their unchanged ``.py`` source; Python prefers the
compiled file next to it. That file is ignored, and the ``.py`` loaded instead, when the source is
newer than it (an editable install whose source was edited or checked out after the build: the
compiled code would be stale) or when ``EXECVAULT_PURE_PYTHON=1`` is set.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# Keep in step with setup.py's COMPILED.
COMPILED = frozenset(
    {"archiver.sanitize", "archiver.normalize", "archiver.canonical", "archiver.capture"}
)
# A wheel install writes a module's .py and compiled file in either order, within moments.
_SLACK_SECONDS = 2.0
_PACKAGE_DIR = Path(__file__).resolve().parent


def _compiled_file(name: str) -> Path | None:
    stem = name.rpartition(".")[2]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _PACKAGE_DIR / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def use_source(name: str) -> bool:
    """True if module ``name`` is loaded from its .py although a compiled file sits next to it."""
    compiled = _compiled_file(name)
    if compiled is None:
        return False
    if os.environ.get("EXECVAULT_PURE_PYTHON") == "1":
        return True
    source = _PACKAGE_DIR / f"{name.rpartition('.')[2]}.py"
    return source.stat().st_mtime > compiled.stat().st_mtime + _SLACK_SECONDS


class _SourceFinder:
    """Meta-path finder answering only for a compiled module that must come from its source."""

    @staticmethod
    def find_spec(
        fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED or not use_source(fullname):
            return None
        source = _PACKAGE_DIR / f"{fullname.rpartition('.')[2]}.py"
        return importlib.util.spec_from_file_location(fullname, source)


def compiled_modules() -> list[str]:
    """The modules of COMPILED that are loaded (or will be) from a compiled file."""
    return sorted(name for name in COMPILED if _compiled_file(name) and not use_source(name))


def install() -> None:
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
