"""Compiles archiver's capture hot path with Cython when it can; otherwise installs pure Python.

The ``.py`` files stay the source (Cython compiles them as they are, pure-Python mode, with type
annotations ignored: semantics unchanged). No Cython, no C compiler, a failing build, or
``EXECVAULT_PURE_PYTHON=1`` at build time: the same modules are installed as plain Python. The
compiled modules are built next to the sources for an editable install (``pip install -e .``);
``archiver/__init__.py`` loads the ``.py`` instead of a compiled module older than its source.
Everything else (metadata, packages) is in pyproject.toml.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# Keep in step with archiver/__init__.py's _COMPILED.
COMPILED = ("archiver.sanitize", "archiver.normalize", "archiver.canonical", "archiver.capture")


def _warn(message: str) -> None:
    print(f"execvault: {message}; installing pure Python", file=sys.stderr)


def _ext_modules() -> list[Any]:
    if os.environ.get("EXECVAULT_PURE_PYTHON") == "1":
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        _warn("Cython is not installed")
        return []
    try:
        return list(
            cythonize(
                [Extension(name, [name.replace(".", "/") + ".py"]) for name in COMPILED],
                build_dir="build/cython",
                compiler_directives={"language_level": 3, "annotation_typing": False},
                quiet=True,
            )
        )
    except Exception as exc:  # a Cython failure must not stop the install
        _warn(f"Cython could not translate the modules ({exc})")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that drops an extension it cannot compile (its .py is installed instead)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all, for instance
            _warn(f"compiling failed ({exc})")
            self.extensions = []

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(f"compiling {ext.name} failed ({exc})")
            self.extensions = [e for e in self.extensions if e is not ext]


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
