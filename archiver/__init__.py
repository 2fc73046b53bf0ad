"""execvault's write side: the on-storage format, capture, versioning and stores."""

from __future__ import annotations

from archiver import _native

_native.install()  # a compiled module older than its .py (or EXECVAULT_PURE_PYTHON=1): the .py
