"""execvault's write side: the on-storage format, capture, versioning and stores."""

from __future__ import annotations
