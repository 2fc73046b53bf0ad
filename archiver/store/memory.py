"""An in-memory store with the same write-once semantics, for fast unit tests and tools."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from archiver.errors import ImmutableConflict, NotFound
from archiver.layout import check_key
from archiver.store.base import ObjectInfo

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self.url = "memory:"
        self._objects: dict[str, tuple[bytes, datetime]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> bool:
        check_key(key)
        with self._lock:
            existing = self._objects.get(key)
            if existing is None:
                self._objects[key] = (bytes(data), datetime.now(UTC))
                return True
        if existing[0] == data:
            return False
        raise ImmutableConflict(f"{key} already exists with different content", key=key)

    def get(self, key: str) -> bytes:
        check_key(key)
        try:
            return self._objects[key][0]
        except KeyError:
            raise NotFound(f"no object {key}") from None

    def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        found = self._objects.get(key)
        if found is None:
            return None
        return ObjectInfo(key=key, size=len(found[0]), last_modified=found[1])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = sorted((k, v) for k, v in self._objects.items() if k.startswith(prefix))
        for key, (data, modified) in items:
            yield ObjectInfo(key=key, size=len(data), last_modified=modified)

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)
