"""A thread-safe LRU map bounded by the total size of its values (the archive's in-memory caches)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["SizedLRU"]

K = TypeVar("K")
V = TypeVar("V")


class SizedLRU(Generic[K, V]):
    """Least recently used entries go first once ``size(value)`` summed passes ``max_bytes``;
    a value larger than an eighth of the bound is not kept at all."""

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: K, value: V) -> None:
        size = self._size(value)
        if size > self._max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= self._size(evicted)

    def __len__(self) -> int:
        return len(self._entries)
