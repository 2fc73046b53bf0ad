"""The embedded default: a directory with S3's write-once semantics.

A write goes to a temporary file in the target directory, is fsynced, and is published with
``os.link`` — which fails if the final name exists — so two writers can never overwrite each other
and a reader never sees a half-written object. Published files are made read-only (0444) and the
directory is fsynced. Temporary files start with ``.tmp-`` and are never listed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from archiver.errors import ImmutableConflict, NotFound, StorageFull, StoreUnavailable
from archiver.layout import check_key
from archiver.store.base import ObjectInfo

__all__ = ["LocalStore"]

_TMP_PREFIX = ".tmp-"
#: errno values that mean "no room": the disk is full, or the user's quota is used up
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class LocalStore:
    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.root = Path(root).resolve()
        self.read_only = read_only
        self.url = f"local:{self.root}"
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes) -> bool:
        if self.read_only:
            raise StoreUnavailable(f"{self.url} is opened read-only")
        try:
            return self._put(key, data)
        except OSError as err:
            if err.errno in _NO_SPACE:
                # the temporary file is gone (``_put``'s finally): nothing was published
                raise StorageFull(
                    f"no space left in the local store writing {key} ({errno.errorcode[err.errno]})"
                ) from err
            raise

    def _put(self, key: str, data: bytes) -> bool:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{_TMP_PREFIX}{final.name}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.chmod(0o444)
            try:
                os.link(tmp, final)
            except (FileExistsError, IsADirectoryError, PermissionError):
                if final.is_dir():
                    raise ImmutableConflict(
                        f"{key} names a prefix of other objects", key=key
                    ) from None
                if self._read(final) == data:
                    return False
                raise ImmutableConflict(
                    f"{key} already exists with different content", key=key
                ) from None
            _fsync_dir(final.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    @staticmethod
    def _read(path: Path) -> bytes:
        with path.open("rb") as handle:
            return handle.read()

    def get(self, key: str) -> bytes:
        try:
            return self._read(self._path(key))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no object {key}") from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(
            key=key, size=st.st_size, last_modified=datetime.fromtimestamp(st.st_mtime, UTC)
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Start at the deepest directory the prefix names, then filter by the full prefix.
        base_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*base_rel.split("/")) if base_rel else self.root
        if not base.is_dir():
            return
        yield from self._walk(base, prefix)

    def _walk(self, directory: Path, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = sorted(
                os.scandir(directory),
                key=lambda e: e.name + ("/" if e.is_dir(follow_symlinks=False) else ""),
            )
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(_TMP_PREFIX):
                continue
            rel = Path(entry.path).relative_to(self.root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                if rel.startswith(prefix) or prefix.startswith(rel + "/"):
                    yield from self._walk(Path(entry.path), prefix)
            elif rel.startswith(prefix):
                st = entry.stat(follow_symlinks=False)
                yield ObjectInfo(
                    key=rel,
                    size=st.st_size,
                    last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
                )

    def delete(self, key: str) -> None:
        if self.read_only:
            raise StoreUnavailable(f"{self.url} is opened read-only")
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
