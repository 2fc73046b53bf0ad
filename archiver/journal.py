"""The index journal: object keys whose index rows are not in a written part yet.

A :class:`~archiver.index.ManifestWriter` buffers rows in memory; a process killed before a flush
loses them although their objects are stored and acknowledged. With a journal, the writer appends
each indexed object's key to a local file *before* the capture is answered (one ``write`` of a
line, no fsync: a killed process loses nothing the kernel already has), and forgets a segment of
keys once every row added under it is in a written part. A writer that starts later in the same
journal directory finds the segments of writers that are gone (their lock is free), reads those
objects again and indexes them (``ManifestWriter.recover``). See ``docs/index.md``.

Files, per writer id ``<w>`` in the journal directory::

    <w>.lock              held (flock, exclusive) while the writer lives
    <w>.<seg:06d>.keys    object keys, one a line, appended; deleted when its rows are written
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["IndexJournal", "Orphan", "find_orphans"]

_log = logging.getLogger(__name__)

_SEGMENT_RE: Final = re.compile(r"(?P<writer>[A-Za-z0-9][A-Za-z0-9_]{0,63})\.(?P<seg>\d{6,})\.keys")
_LOCK_RE: Final = re.compile(r"(?P<writer>[A-Za-z0-9][A-Za-z0-9_]{0,63})\.lock")


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if missing), or None if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class IndexJournal:
    """One writer's journal. Not thread-safe: the writer calls it under its own lock."""

    def __init__(self, directory: str | os.PathLike[str], writer_id: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.writer_id = writer_id
        fd = _try_lock(self.directory / f"{writer_id}.lock")
        if fd is None:
            raise RuntimeError(f"journal of writer {writer_id} is in use by another process")
        self._lock_fd: int | None = fd
        self._pending: Counter[int] = Counter()  # rows (and waiting versions) per segment
        self._segment = 0
        self._fd: int | None = None
        self._written = False  # the current segment holds a line
        self._open(1)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{self.writer_id}.{segment:06d}.keys"

    def _open(self, segment: int) -> None:
        self._segment = segment
        self._fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = False

    @property
    def segment(self) -> int:
        return self._segment

    def append(self, keys: Sequence[str]) -> int:
        """Write ``keys`` (one ``write``); the segment they went to."""
        if self._fd is None:
            raise RuntimeError("journal is closed")
        if keys:
            os.write(self._fd, "".join(k + "\n" for k in keys).encode())
            self._written = True
        return self._segment

    def hold(self, segment: int, n: int = 1) -> None:
        self._pending[segment] += n

    def release(self, segments: Counter[int]) -> None:
        """Rows of these segments are in written parts; drop segments that hold nothing more."""
        for segment, n in segments.items():
            self._pending[segment] -= n
            if self._pending[segment] <= 0:
                del self._pending[segment]
                if segment != self._segment:
                    self._drop(segment)

    def rotate(self) -> None:
        """Start a new segment (at each flush), so that older ones can be dropped when done."""
        if self._fd is None or not self._written:
            return
        old = self._segment
        os.close(self._fd)
        self._open(old + 1)
        if self._pending[old] <= 0:
            self._pending.pop(old, None)
            self._drop(old)

    def _drop(self, segment: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(segment).unlink()

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    def close(self, *, keep: bool) -> None:
        """Close; delete every file unless ``keep`` (rows unwritten: a later writer adopts them)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not keep:
            for path in self.directory.glob(f"{self.writer_id}.*.keys"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{self.writer_id}.lock").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


@dataclass
class Orphan:
    """The journal of a writer that is gone: its keys, and its lock (held until :meth:`done`)."""

    writer_id: str
    files: list[Path]
    keys: list[str]
    _lock_fd: int | None = field(default=None, repr=False)
    _lock_path: Path | None = field(default=None, repr=False)

    def done(self) -> None:
        """Every key is indexed again: delete the journal."""
        for path in self.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self._lock_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._lock_path.unlink()
        self.release()

    def release(self) -> None:
        """Give the lock back without deleting anything (to be tried again later)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(k for k in keys if k))


def find_orphans(directory: str | os.PathLike[str], *, exclude: str) -> list[Orphan]:
    """Journals in ``directory`` whose writer (not ``exclude``) no longer holds its lock.

    Each returned orphan keeps that lock until ``done()`` or ``release()``, so two writers never
    adopt the same journal at once.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    segments: dict[str, list[Path]] = {}
    writers: set[str] = set()
    for entry in root.iterdir():
        match = _SEGMENT_RE.fullmatch(entry.name)
        if match is not None:
            segments.setdefault(match["writer"], []).append(entry)
            writers.add(match["writer"])
            continue
        lock = _LOCK_RE.fullmatch(entry.name)
        if lock is not None:
            writers.add(lock["writer"])
    orphans: list[Orphan] = []
    for writer in sorted(writers - {exclude}):
        lock_path = root / f"{writer}.lock"
        fd = _try_lock(lock_path)
        if fd is None:
            continue  # alive
        files = sorted(root.glob(f"{writer}.*.keys"))
        keys: list[str] = []
        for path in files:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            # a line cut short by the kill has no newline: drop it (its capture was not answered)
            lines = text.split("\n")
            keys.extend(lines[:-1])
        orphans.append(Orphan(writer, files, _unique(keys), fd, lock_path))
    return orphans
