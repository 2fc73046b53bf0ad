"""The delivery spool (``docs/spool.md``): a writer that appends records, a reader for the relay.

The writer is the Python twin of the n8n hook file's writer: :meth:`SpoolWriter.append` is the
hot path (one ``write(2)`` of the whole line, under a lock); a background thread ``fdatasync``s
the open segment every ``fsync_interval_ms`` when something was appended, rotates old segments,
re-measures the spool's size and rewrites ``writers/<writer>.json``.

The reader side (:func:`read_lines`, :func:`list_segments`, :func:`writer_is_dead`) is what the
relay (``api/relay.py``) uses. Nothing here talks HTTP and nothing imports the archive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from archiver.errors import InvalidInput

__all__ = [
    "ALARM_EVERY_SECONDS",
    "DEFAULT_FSYNC_INTERVAL_MS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SEGMENT_BYTES",
    "DEFAULT_SEGMENT_SECONDS",
    "KINDS",
    "Line",
    "Segment",
    "SpoolWriter",
    "atomic_write",
    "encode_line",
    "list_segments",
    "proc_start",
    "read_lines",
    "read_writer",
    "spool_bytes",
    "writer_is_dead",
]

log = logging.getLogger("execvault.spool")

Kind = Literal["snapshot", "final-state"]
KINDS: Final = ("snapshot", "final-state")
DEFAULT_SEGMENT_BYTES: Final = 16 * 1024 * 1024
DEFAULT_SEGMENT_SECONDS: Final = 60.0
DEFAULT_FSYNC_INTERVAL_MS: Final = 200
DEFAULT_MAX_BYTES: Final = 1024 * 1024 * 1024
ALARM_EVERY_SECONDS: Final = 60.0
_WRITER_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_SEGMENT_RE: Final = re.compile(r"^(\d{13})-([A-Za-z0-9_.-]+)\.(open|seg)$")


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_line(
    kind: str, execution_id: str, body: Mapping[str, Any], at: str | None = None
) -> bytes:
    """One spool line: ``<crc32 hex8> <json>\\n`` (``docs/spool.md`` "Records")."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if not isinstance(execution_id, str) or not execution_id:
        raise InvalidInput("executionId must be a non-empty string", field="executionId")
    text = orjson.dumps(
        {"v": 1, "kind": kind, "executionId": execution_id, "at": at or _now_text(), "body": body}
    )
    return b"%08x %s\n" % (zlib.crc32(text), text)


def proc_start(pid: int | str = "self") -> int | None:
    """The process' start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
    None where there is no ``/proc`` (or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return stat[stat.rindex(b")") + 2 :].split()[0].decode()
    except (OSError, ValueError, IndexError):
        return None


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (temporary file + rename), readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only, as the spool
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    tmp.replace(path)


# ---------------------------------------------------------------------------- the writer


class SpoolWriter:
    """One process' writer: owns its ``.open`` segment; thread-safe; call :meth:`close` at exit.

    ``append`` returns False (and counts a drop) when the spool is full or the writer closed;
    it never raises for I/O trouble either (an engine must not fail because of its archive):
    the error is logged and counted as a drop.
    """

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        fsync_interval_ms: int = DEFAULT_FSYNC_INTERVAL_MS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        writer: str | None = None,
    ) -> None:
        self.root = Path(spool_dir)
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.interval = fsync_interval_ms / 1000.0
        self.max_bytes = max_bytes
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.proc_start = proc_start()
        name = writer or f"{self.host}-{self.pid}-{secrets.token_hex(3)}"
        name = "".join(c if _WRITER_RE.fullmatch(c) else "_" for c in name)
        self.name = name
        # the spool holds records before the service sanitizes them: owner-only, like n8n's own
        # database (the relay runs as the same user)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("segments", "writers", "acks", "rejected"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._stamp = 0
        self._retiring: list[tuple[int, Path]] = []
        self._size = 0
        self._dirty = False
        self._closed = False
        self.appended = 0
        self.dropped = 0
        self.full_since: str | None = None
        self._last_alarm = -ALARM_EVERY_SECONDS
        self._spool_bytes = spool_bytes(self.root)
        self._since_measure = 0
        self._state_written: tuple[int, int, str | None] | None = None
        self._write_state()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._background, name=f"execvault-spool-{name}", daemon=True
        )
        self._thread.start()

    # -- the hot path

    def append(self, kind: Kind | str, execution_id: str, body: Mapping[str, Any]) -> bool:
        """Append one record; True once its line is written (in the page cache), False if it
        was dropped (spool full, writer closed, I/O error)."""
        line = encode_line(kind, execution_id, body)
        with self._lock:
            if self._closed:
                self.dropped += 1
                return False
            if self._spool_bytes + self._since_measure >= self.max_bytes:
                self._drop_full()
                return False
            try:
                if self._fd is not None and self._size >= self.segment_bytes:
                    self._detach()  # the timer syncs, closes and renames it
                if self._fd is None:
                    self._open_segment()
                assert self._fd is not None
                view = memoryview(line)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError as err:
                self.dropped += 1
                log.error("execvault spool: cannot append to %s: %s", self._path, err)
                return False
            self._size += len(line)
            self._since_measure += len(line)
            self._dirty = True
            self.appended += 1
            if self.full_since is not None:
                self.full_since = None
            return True

    def _drop_full(self) -> None:
        self.dropped += 1
        if self.full_since is None:
            self.full_since = _now_text()
        now = time.monotonic()
        if now - self._last_alarm >= ALARM_EVERY_SECONDS:
            self._last_alarm = now
            log.warning(
                "execvault spool full (%s holds >= %d bytes, %d records dropped by this writer); "
                "is the relay running?",
                self.root,
                self.max_bytes,
                self.dropped,
            )

    # -- segments (called with the lock held)

    def _open_segment(self) -> None:
        # strictly increasing per writer: two rotations in one millisecond must not share a
        # name (the second .seg would replace the first)
        self._stamp = max(int(time.time() * 1000), self._stamp + 1)
        path = self.root / "segments" / f"{self._stamp:013d}-{self.name}.open"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        self._path = path
        self._opened_at = time.monotonic()
        self._size = 0

    def _detach(self) -> None:
        """Stop appending to the open segment (lock held); :meth:`_retire` closes it later, so
        no fsync happens on the caller's path."""
        if self._fd is not None and self._path is not None:
            self._retiring.append((self._fd, self._path))
        self._fd = self._path = None

    def _retire(self) -> None:
        """fdatasync, close and rename detached segments ``.open`` → ``.seg`` (timer thread, or
        :meth:`close` after the timer stopped; never under the lock)."""
        while self._retiring:
            fd, path = self._retiring[0]
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
                self._retiring.pop(0)
            path.rename(path.with_suffix(".seg"))

    # -- the background thread

    def _background(self) -> None:
        last_state = 0.0
        while not self._stop.wait(self.interval):
            try:
                self.tick()
                now = time.monotonic()
                if now - last_state >= 1.0:
                    last_state = now
                    self._write_state()
            except Exception:  # the thread must live on: log and keep going
                log.exception("execvault spool: background work failed")

    def tick(self) -> None:
        """The timer's work: group fdatasync, rotation by age and size, re-measure the spool's
        size. Only this thread (or ``close`` after it) closes segment descriptors."""
        with self._lock:
            fd, dirty = self._fd, self._dirty
            self._dirty = False
            aged = (
                fd is not None
                and self._size > 0
                and time.monotonic() - self._opened_at >= self.segment_seconds
            )
            if aged:
                self._detach()
                fd = None
        self._retire()
        if fd is not None and dirty:
            os.fdatasync(fd)
        measured = spool_bytes(self.root)
        with self._lock:
            self._spool_bytes = measured
            self._since_measure = 0

    def _write_state(self, *, closed: bool = False) -> None:
        state = (self.appended, self.dropped, self.full_since)
        if state == self._state_written and not closed:
            return
        self._state_written = state
        body = {
            "writer": self.name,
            "pid": self.pid,
            "host": self.host,
            "procStart": self.proc_start,
            "appended": self.appended,
            "dropped": self.dropped,
            "fullSince": self.full_since,
            "closed": closed,
            "updatedAt": _now_text(),
        }
        with contextlib.suppress(OSError):
            atomic_write(self.root / "writers" / f"{self.name}.json", orjson.dumps(body))

    def flush(self) -> None:
        """fdatasync now (the timer does it every ``fsync_interval_ms`` anyway)."""
        with self._lock:
            if self._fd is not None:
                os.fdatasync(self._fd)
                self._dirty = False

    def close(self) -> None:
        """Stop the timer, fsync and close the open segment (→ ``.seg``); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._detach()
        try:
            self._retire()
        except OSError as err:
            log.error("execvault spool: cannot close a segment of %s: %s", self.root, err)
        self._write_state(closed=True)

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spool_bytes(root: Path) -> int:
    """The bytes the spool's segments hold (what ``max_bytes`` bounds)."""
    total = 0
    try:
        with os.scandir(root / "segments") as entries:
            for entry in entries:
                if entry.name.endswith((".open", ".seg")):
                    with contextlib.suppress(OSError):
                        total += entry.stat().st_size
    except FileNotFoundError:
        return 0
    return total


# ---------------------------------------------------------------------------- the reader


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment file; ``stem`` (``<ts>-<writer>``) names its ack and rejected files."""

    path: Path
    stem: str
    writer: str
    closed: bool

    @property
    def created_ms(self) -> int:
        return int(self.stem[:13])


def list_segments(root: Path) -> list[Segment]:
    """The spool's segments in name (= creation) order."""
    found: list[Segment] = []
    try:
        names = [p.name for p in (root / "segments").iterdir()]
    except FileNotFoundError:
        return []
    for name in sorted(names):
        match = _SEGMENT_RE.match(name)
        if match:
            found.append(
                Segment(
                    path=root / "segments" / name,
                    stem=f"{match.group(1)}-{match.group(2)}",
                    writer=match.group(2),
                    closed=match.group(3) == "seg",
                )
            )
    return found


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a segment: ``offset``..``end`` in the file. ``record`` is the parsed record,
    or None with ``problem`` saying why (``crc``, ``json``, ``format``, ``torn`` — no ``\\n``)."""

    offset: int
    end: int
    record: dict[str, Any] | None
    problem: str | None = None
    raw: bytes = b""


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if len(raw) < 10 or raw[8:9] != b" ":
        return None, "format"
    text = raw[9:]
    try:
        crc = int(raw[:8], 16)
    except ValueError:
        return None, "format"
    if zlib.crc32(text) != crc:
        return None, "crc"
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, "json"
    if (
        not isinstance(record, dict)
        or record.get("v") != 1
        or record.get("kind") not in KINDS
        or not isinstance(record.get("executionId"), str)
        or not isinstance(record.get("body"), dict)
    ):
        return None, "format"
    return record, None


def read_lines(path: Path, offset: int = 0, *, max_lines: int | None = None) -> Iterator[Line]:
    """The lines of a segment from ``offset``, verified. A last line without ``\\n`` is yielded
    with ``problem="torn"`` (the caller decides: wait for the writer, or drop it)."""
    chunk_size = 1 << 20
    count = 0
    with path.open("rb") as file:
        file.seek(offset)
        buffer = b""
        position = offset
        while True:
            chunk = file.read(chunk_size)
            if not chunk:
                break
            buffer += chunk
            start = 0
            while True:
                newline = buffer.find(b"\n", start)
                if newline < 0:
                    break
                raw = buffer[start:newline]
                record, problem = _parse(raw)
                end = position + newline + 1
                yield Line(position + start, end, record, problem, raw)
                count += 1
                if max_lines is not None and count >= max_lines:
                    return
                start = newline + 1
            position += start
            buffer = buffer[start:]
        if buffer:
            yield Line(position, position + len(buffer), None, "torn", buffer)


def read_writer(root: Path, writer: str) -> dict[str, Any] | None:
    """``writers/<writer>.json``, or None when missing or unreadable."""
    try:
        value = orjson.loads((root / "writers" / f"{writer}.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def writer_is_dead(state: Mapping[str, Any] | None, *, host: str | None = None) -> bool:
    """True when the writer is known to be gone: it closed, or it ran on this host and its pid
    no longer runs (or is a zombie, or runs with another start time — a reused pid). A writer on
    another host is never declared dead; one without a state file is (writers create it before
    their first segment)."""
    if state is None:
        return True
    if state.get("closed") is True:
        return True
    if state.get("host") != (host or socket.gethostname()):
        return False
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    if _proc_state(pid) == "Z":
        return True
    started = state.get("procStart")
    if isinstance(started, int):
        now_start = proc_start(pid)
        if now_start is not None and now_start != started:
            return True
    return False
