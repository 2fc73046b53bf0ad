"""A local mirror of the index manifests, so DuckDB reads Parquet files from a local directory.

Manifests are immutable objects (write-once parts; compaction and rebuilds add new files and delete
old ones, never change one), so a mirror is correct as long as it has the same *set of keys*: a
refresh lists ``index/`` once, downloads the keys it does not have yet and deletes the local files
whose keys are gone. It runs at most once per ``refresh_seconds`` (default 1 s).

Why a mirror and not DuckDB's httpfs: DuckDB cannot download extensions at run time in many
deployments (nor here); the mirror needs nothing but the object store client the archive already
uses, works the same for every store (S3, SeaweedFS, moto, memory), and makes warm queries local
disk reads. A :class:`~archiver.store.local.LocalStore` needs no mirror: its ``index/`` directory is
read in place, with no copying.

Concurrency: a file is downloaded to a temporary name (never matched by ``*.parquet``) and renamed
into place, so a query never sees half a file. A file whose key is gone leaves :attr:`files` at
once but stays on disk for ``grace_seconds`` (default 10 s, at least three refresh intervals), so a
query that chose its files a moment earlier still finds them (rows it finds twice are deduplicated
by the readers); the deletion itself takes the write side of a readers-writer lock that queries
hold for reading (:meth:`ManifestCache.reading`).

Only table files are mirrored (``<table>/dt=YYYY-MM-DD/<name>.parquet``): compaction records
(``index/_compactions/…``, ``archiver.compaction``) and anything else under ``index/`` are not.
A part that compaction deletes leaves :attr:`ManifestCache.files` (and so the catalog's file lists
and key map) at the next refresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from archiver.errors import ArchiveError, NotFound
from archiver.events import EVENT_TABLES
from archiver.index import INDEX_PREFIX, TABLES
from archiver.retention import RETENTION_TABLE
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore

__all__ = ["ManifestCache", "ReadWriteLock"]

_log = logging.getLogger(__name__)

#: any Parquet file of a table's day partition (parts, compacted or rebuilt files alike)
_MANIFEST_RE: Final = re.compile(
    r"(?P<table>"
    + "|".join((*TABLES, *EVENT_TABLES, RETENTION_TABLE))
    + r")/dt=\d{4}-\d{2}-\d{2}/[A-Za-z0-9][A-Za-z0-9._=-]*\.parquet"
)
_TMP_PREFIX: Final = ".tmp-"


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds off new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class ManifestCache:
    """The index manifests of ``store`` as a local directory tree ``<root>/<table>/dt=.../*.parquet``.

    ``cache_dir``: where to mirror (kept between runs: files already there are reused); None → a
    private temporary directory removed by :meth:`close`. Ignored for a LocalStore (read in place).
    """

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        refresh_seconds: float = 1.0,
        workers: int = 8,
        grace_seconds: float = 10.0,
    ) -> None:
        if refresh_seconds < 0:
            raise ValueError("refresh_seconds must not be negative")
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.grace_seconds = max(grace_seconds, 3 * refresh_seconds)
        self._trash: dict[str, float] = {}  # relative path -> monotonic time to delete it
        self._workers = workers
        self._lock = threading.Lock()  # one refresh at a time
        self.rw = ReadWriteLock()
        self._last_refresh = float("-inf")
        self._owned_dir: Path | None = None
        self.direct = isinstance(store, LocalStore)
        if isinstance(store, LocalStore):
            self.root = store.root / INDEX_PREFIX.rstrip("/")
        elif cache_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="execvault-index-"))
            self.root = self._owned_dir
        else:
            self.root = Path(cache_dir).resolve()
            self.root.mkdir(parents=True, exist_ok=True)
        self._known: dict[str, int] | None = None  # mirrored relative path -> size
        self._files: frozenset[str] = frozenset()
        self.downloads = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def files(self) -> frozenset[str]:
        """Manifest files at the last refresh, relative to :attr:`root` (``<table>/dt=…/….parquet``)."""
        return self._files

    @property
    def tables_with_files(self) -> frozenset[str]:
        """Tables that had at least one manifest file at the last refresh."""
        return frozenset(f.split("/", 1)[0] for f in self._files)

    def glob(self, table: str) -> str:
        """The glob that matches every manifest file of ``table``."""
        return str(self.root / table / "*" / "*.parquet")

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold while DuckDB reads the files (a refresh will not delete files meanwhile)."""
        return self.rw.reading()

    # -- refresh --------------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Bring the mirror up to date if ``refresh_seconds`` passed (or ``force``).

        Returns True when the set of files changed. A store that cannot be listed leaves the
        mirror as it was (stale, but readable).
        """
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.refresh_seconds:
                return False
            self._last_refresh = now
            before = self._files
            if self.direct:
                self._files = frozenset(self._scan_local())
            else:
                try:
                    self._sync()
                except ArchiveError as err:
                    _log.warning("index mirror of %s not refreshed: %s", self.store.url, err)
                self._files = frozenset(self._known or {})
            return self._files != before

    def _scan_local(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for table in (*TABLES, *EVENT_TABLES, RETENTION_TABLE):
            for path in (self.root / table).glob("*/*"):
                rel = path.relative_to(self.root).as_posix()
                if path.name.startswith(_TMP_PREFIX):
                    if not self.direct:  # our own download, left by a crash
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                elif _MANIFEST_RE.fullmatch(rel):
                    with contextlib.suppress(FileNotFoundError):
                        found[rel] = path.stat().st_size
        return found

    def _sync(self) -> None:
        if self._known is None:
            self._known = self._scan_local()
        known = self._known
        remote: dict[str, int] = {}
        for info in self.store.list(INDEX_PREFIX):
            rel = info.key[len(INDEX_PREFIX) :]
            if _MANIFEST_RE.fullmatch(rel):
                remote[rel] = info.size
        missing = [rel for rel, size in remote.items() if known.get(rel) != size]
        gone = [rel for rel in known if rel not in remote]
        for rel in missing:
            self._trash.pop(rel, None)
        if missing:
            with ThreadPoolExecutor(
                max_workers=min(self._workers, len(missing)), thread_name_prefix="index-mirror"
            ) as pool:
                for rel, size in zip(missing, pool.map(self._download, missing), strict=True):
                    if size is not None:
                        known[rel] = size
        now = time.monotonic()
        for rel in gone:
            known.pop(rel, None)
            self._trash[rel] = now + self.grace_seconds
        due = [rel for rel, when in self._trash.items() if when <= now]
        if due:
            with self.rw.writing():
                for rel in due:
                    with contextlib.suppress(FileNotFoundError):
                        (self.root / rel).unlink()
                    del self._trash[rel]
            self._prune_empty_dirs()

    def _download(self, rel: str) -> int | None:
        try:
            data = self.store.get(INDEX_PREFIX + rel)
        except NotFound:
            return None  # removed since the listing (compaction, rebuild)
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{_TMP_PREFIX}{final.name}.{secrets.token_hex(6)}"
        with tmp.open("wb") as handle:
            handle.write(data)
        tmp.replace(final)
        self.downloads += 1
        return len(data)

    def _prune_empty_dirs(self) -> None:
        for day_dir in self.root.glob("*/dt=*"):
            with contextlib.suppress(OSError):
                day_dir.rmdir()  # only succeeds when empty

    def close(self) -> None:
        if self._owned_dir is not None:
            with self.rw.writing():
                shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
