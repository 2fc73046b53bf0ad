"""Open an object store from a URL: ``memory:``, ``local:/path`` (or a plain path), ``s3://b/p``.

The S3 backend (and with it botocore) is imported only when an ``s3://`` URL is opened.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from archiver.errors import InvalidInput, NotFound
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore

__all__ = ["SCHEMES", "store_from_url"]

#: The schemes a store URL may start with.
SCHEMES = ("local", "memory", "s3")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_FORMS = "local:PATH, a plain path, s3://bucket/prefix or memory:"


def store_from_url(
    url: str, *, create: bool = True, field: str = "store", **s3_options: Any
) -> ObjectStore:
    """The store a URL names.

    - ``memory:`` → :class:`MemoryStore` (nothing persists)
    - ``local:/path``, ``local:relative/path`` or a plain path (no ``scheme:`` prefix) →
      :class:`LocalStore`
    - ``s3://bucket`` or ``s3://bucket/prefix/in/bucket`` →
      ``S3Store(S3Config(bucket, prefix, **s3_options))`` (``endpoint_url``, ``region``,
      credentials, ``object_lock_mode``/``object_lock_days``, ``storage_class``, ...)

    A typo is refused rather than taken for a directory name: any other ``scheme:`` prefix
    (``lcoal:./data``, ``s3:/bucket``, ``gs://b``) and a bare scheme name (``memory``, ``s3``,
    ``local``: write ``./memory`` for a directory of that name). ``create=False`` (read-only
    commands) never creates a local directory: a missing one is :class:`NotFound`. ``field`` names
    the setting in errors.

    ``s3_options`` whose value is None are ignored; others given for a non-S3 URL are an error, so a
    misplaced option (say, Object Lock for a local directory) is never silently dropped.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"the store URL must be a non-empty string ({_FORMS})", field=field)
    url = url.strip()
    options = {name: value for name, value in s3_options.items() if value is not None}
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else None

    if scheme == "s3":
        parts = urlsplit(url)
        if not url.startswith("s3://") or not parts.netloc or parts.query or parts.fragment:
            raise InvalidInput(
                f"malformed S3 store URL {url!r}: expected s3://bucket/prefix", field=field
            )
        from archiver.store.s3 import S3Config, S3Store  # botocore only when S3 is used

        try:
            config = S3Config(parts.netloc, parts.path.strip("/"), **options)
        except TypeError as err:
            raise InvalidInput(f"unknown S3 option: {err}", field="s3_options") from err
        return S3Store(config)

    if options:
        raise InvalidInput(
            f"options {sorted(options)} only apply to s3:// URLs, not {url!r}", field="s3_options"
        )
    if scheme == "memory":
        if url.lower() not in ("memory:", "memory://"):
            raise InvalidInput(f"malformed store URL {url!r}: write memory:", field=field)
        return MemoryStore()
    if scheme == "local":
        path = url[len("local:") :]
        if path.startswith("//"):  # local:///abs/path
            path = path[2:]
        if not path:
            raise InvalidInput("a local: store URL needs a directory path", field=field)
    elif scheme is not None and not _drive_letter(url):
        close = difflib.get_close_matches(scheme, SCHEMES, n=1)
        hint = f"did you mean {close[0]}:? " if close else ""
        raise InvalidInput(
            f"unknown store scheme {scheme + ':'!r} in {url!r}: {hint}use {_FORMS} "
            "(a directory whose name holds a colon is written ./NAME)",
            field=field,
        )
    elif url.lower() in SCHEMES:
        raise InvalidInput(
            f"store {url!r} is a scheme name without its colon: did you mean "
            f"{'s3://bucket/prefix' if url.lower() == 's3' else url.lower() + ':'}? "
            f"(write ./{url} for a directory of that name)",
            field=field,
        )
    else:
        path = url
    if not create and not Path(path).is_dir():
        raise NotFound(
            f"no store at {url!r} ({Path(path).resolve()} is not a directory); read-only "
            "commands never create one: check the store setting (--store / EXECVAULT_STORE); "
            "put, final-state and serve create it"
        )
    return LocalStore(path)


def _drive_letter(url: str) -> bool:
    """``C:\\data`` or ``C:/data``: a Windows path, not a URL."""
    return len(url) >= 3 and url[0].isalpha() and url[1] == ":" and url[2] in "\\/"
