"""Open an object store from a URL: ``memory:``, ``local:/path`` (or a plain path), ``s3://b/p``.

The S3 backend (and with it botocore) is imported only when an ``s3://`` URL is opened.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from archiver.errors import InvalidInput
from archiver.store.base import ObjectStore
from archiver.store.local import LocalStore
from archiver.store.memory import MemoryStore

__all__ = ["store_from_url"]


def store_from_url(url: str, **s3_options: Any) -> ObjectStore:
    """The store a URL names.

    - ``memory:`` → :class:`MemoryStore` (nothing persists)
    - ``local:/path``, ``local:relative/path`` or a plain path → :class:`LocalStore`
    - ``s3://bucket`` or ``s3://bucket/prefix/in/bucket`` →
      ``S3Store(S3Config(bucket, prefix, **s3_options))`` (``endpoint_url``, ``region``,
      credentials, ``object_lock_mode``/``object_lock_days``, ``storage_class``, ...)

    ``s3_options`` whose value is None are ignored; others given for a non-S3 URL are an error, so a
    misplaced option (say, Object Lock for a local directory) is never silently dropped.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("store URL must be a non-empty string", field="url")
    url = url.strip()
    options = {name: value for name, value in s3_options.items() if value is not None}

    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc or parts.query or parts.fragment:
            raise InvalidInput(
                f"malformed S3 URL {url!r}: expected s3://bucket/prefix", field="url"
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
    if url == "memory:" or url == "memory://":
        return MemoryStore()
    if url.startswith("local:"):
        path = url.removeprefix("local:")
        if path.startswith("//"):  # local:///abs/path
            path = path[2:]
        if not path:
            raise InvalidInput("local: URL needs a directory path", field="url")
        return LocalStore(path)
    if "://" in url or url.startswith("memory:"):
        raise InvalidInput(
            f"unsupported store URL {url!r} (use memory:, local:/path or s3://bucket/prefix)",
            field="url",
        )
    return LocalStore(url)
