"""Settings: one typed record, each key naming its environment variable.

Precedence: command-line flag > environment variable > config file (TOML, ``--config`` or
``EXECVAULT_CONFIG``) > default. The README's configuration table is generated from ``FIELDS``
and a test keeps the two in step.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archiver.codec import DEFAULT_MAX_OBJECT_BYTES
from archiver.errors import InvalidInput
from archiver.sanitize import Sanitizer
from archiver.store.base import ObjectStore
from archiver.timebounds import DEFAULT_MAX_AGE, DEFAULT_MAX_SKEW, TimeBounds

if TYPE_CHECKING:
    from archiver.archive import Archive

__all__ = ["DEFAULT_MAX_BODY_BYTES", "FIELDS", "Settings", "load_settings"]

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    store: str = "local:./execvault-data"
    hmac_key: str | None = None
    hmac_key_file: str = "./execvault-hmac.key"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    object_lock_mode: str | None = None
    object_lock_days: int | None = None
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    tokens: str | None = None
    tokens_file: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_seconds: int = 60
    index_cache_dir: str | None = None
    index_flush_rows: int = 1000
    index_flush_ms: int = 1000
    index_journal_dir: str | None = None
    query_max_rows: int = 10_000
    query_timeout_ms: int = 30_000
    query_memory_limit: str = "1GB"
    query_workers: int = 2
    query_queue: int = 8
    query_max_result_bytes: int = 32 * 1024 * 1024
    max_inflight_body_bytes: int = 128 * 1024 * 1024
    max_json_values: int = 5_000_000
    retention_policy_file: str | None = None
    capture_max_skew_seconds: int = int(DEFAULT_MAX_SKEW.total_seconds())
    capture_max_age_seconds: int = int(DEFAULT_MAX_AGE.total_seconds())

    def time_bounds(self) -> TimeBounds:
        """The window client timestamps must fall in (``archiver.timebounds``)."""
        for name in ("capture_max_skew_seconds", "capture_max_age_seconds"):
            if getattr(self, name) < 0:
                raise InvalidInput("must not be negative", field=name)
        return TimeBounds(
            max_skew=timedelta(seconds=self.capture_max_skew_seconds),
            max_age=timedelta(seconds=self.capture_max_age_seconds),
        )

    def open_store(self, *, create: bool = True) -> ObjectStore:
        """The configured store; ``create=False`` (read-only commands) refuses a missing local
        directory (:class:`~archiver.errors.NotFound`) instead of creating it."""
        from archiver.store.factory import store_from_url

        options: dict[str, Any] = {}
        if self.store.startswith("s3://"):
            options = {
                "endpoint_url": self.s3_endpoint,
                "region": self.s3_region,
                "access_key_id": self.s3_access_key_id,
                "secret_access_key": self.s3_secret_access_key,
                "object_lock_mode": self.object_lock_mode,
                "object_lock_days": self.object_lock_days,
            }
        return store_from_url(self.store, create=create, **options)

    def open_archive(self, store: ObjectStore | None = None, *, create: bool = True) -> Archive:
        from archiver.archive import Archive
        from archiver.retention import load_policy

        # the policy locks execution records (Object Lock) until it lets them expire
        return Archive(
            store or self.open_store(create=create),
            self.sanitizer(create_key=create),
            max_object_bytes=self.max_object_bytes,
            retention_policy=load_policy(self.retention_policy_file),
            time_bounds=self.time_bounds(),
        )

    def journal_dir(self, store: ObjectStore) -> Path | None:
        """Where the service's index journal for ``store`` lives (None: no journal).

        One folder per store (SHA-256 of its URL), so services of different stores can share
        the base directory. A memory store has nothing to recover after a restart.
        """
        if self.index_journal_dir == "off" or store.url.startswith("memory:"):
            return None
        if self.index_journal_dir:
            base = Path(self.index_journal_dir)
        else:
            state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
            base = Path(state) / "execvault" / "journal"
        return base / hashlib.sha256(store.url.encode()).hexdigest()[:16]

    def sanitizer(self, *, create_key: bool = True) -> Sanitizer:
        """The sanitizer under the configured key. ``create_key=False`` is for readers (an
        archive opened read-only sanitizes nothing it stores): with no key configured or on file
        it gets a throw-away key instead of creating the key file."""
        return Sanitizer(self.load_hmac_key(create=create_key))

    def load_hmac_key(self, *, create: bool = True) -> bytes:
        """The sanitizer's HMAC key: from config, else a key file (created for local stores
        unless ``create`` is false: then a throw-away key, see ``sanitizer``)."""
        if self.hmac_key:
            return _decode_key(self.hmac_key, "hmac_key")
        path = Path(self.hmac_key_file)
        if path.exists():
            return _decode_key(path.read_text().strip(), "hmac_key_file")
        if not create:
            return secrets.token_bytes(32)
        if not self.store.startswith(("local:", "memory:")) and "://" in self.store:
            raise InvalidInput(
                "an S3 store needs EXECVAULT_HMAC_KEY or EXECVAULT_HMAC_KEY_FILE: markers of "
                "equal secrets only compare equal under one key",
                field="hmac_key",
            )
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return bytes.fromhex(key)


def _decode_key(text: str, field: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise InvalidInput(
            "the HMAC key must be hex (64 hex digits recommended)", field=field
        ) from None
    if len(key) < 16:
        raise InvalidInput("the HMAC key must be at least 16 bytes", field=field)
    return key


#: (field, environment variable, description) — the README table is checked against this.
FIELDS: tuple[tuple[str, str, str], ...] = (
    (
        "store",
        "EXECVAULT_STORE",
        "where objects live: `local:PATH`, a plain path, `s3://bucket/prefix`, or `memory:`; "
        "another `scheme:` or a bare `memory`/`s3`/`local` is refused as a typo",
    ),
    (
        "hmac_key",
        "EXECVAULT_HMAC_KEY",
        "hex key for secret markers (HMAC-SHA256); required for S3 stores",
    ),
    (
        "hmac_key_file",
        "EXECVAULT_HMAC_KEY_FILE",
        "file holding the hex key; created (0600) on first use for a local store",
    ),
    (
        "s3_endpoint",
        "EXECVAULT_S3_ENDPOINT",
        "S3 endpoint URL (SeaweedFS, MinIO ...); empty for AWS",
    ),
    ("s3_region", "EXECVAULT_S3_REGION", "S3 region"),
    (
        "s3_access_key_id",
        "EXECVAULT_S3_ACCESS_KEY_ID",
        "S3 access key (else boto3's usual chain: AWS_ACCESS_KEY_ID, profiles, roles)",
    ),
    ("s3_secret_access_key", "EXECVAULT_S3_SECRET_ACCESS_KEY", "S3 secret key"),
    (
        "object_lock_mode",
        "EXECVAULT_OBJECT_LOCK_MODE",
        "`GOVERNANCE` or `COMPLIANCE`: Object Lock on every write but the index; execution "
        "records are locked until the retention policy lets them expire",
    ),
    (
        "object_lock_days",
        "EXECVAULT_OBJECT_LOCK_DAYS",
        "Object Lock retention in days of blobs, version commits and events (and of records "
        'whose `keep_days` is `"never"`)',
    ),
    (
        "max_object_bytes",
        "EXECVAULT_MAX_OBJECT_BYTES",
        "largest decompressed object a read accepts (zstd bomb guard)",
    ),
    (
        "tokens",
        "EXECVAULT_TOKENS",
        "API tokens as SHA-256 digests with scopes: `<sha256hex>:ingest,read;<sha256hex>:admin`",
    ),
    (
        "tokens_file",
        "EXECVAULT_TOKENS_FILE",
        "file of API token digests, one `<sha256hex> <scopes> [# name]` a line",
    ),
    (
        "max_body_bytes",
        "EXECVAULT_MAX_BODY_BYTES",
        "largest HTTP request body accepted (413 above it); default 64 MiB",
    ),
    (
        "body_timeout_seconds",
        "EXECVAULT_BODY_TIMEOUT_SECONDS",
        "longest wait for the next piece of a request body (408 after it)",
    ),
    (
        "index_cache_dir",
        "EXECVAULT_INDEX_CACHE_DIR",
        "where manifests of a remote (S3) store are mirrored for DuckDB; a temporary dir if unset",
    ),
    (
        "index_flush_rows",
        "EXECVAULT_INDEX_FLUSH_ROWS",
        "index rows buffered per table and day before a Parquet part is written",
    ),
    (
        "index_flush_ms",
        "EXECVAULT_INDEX_FLUSH_MS",
        "longest time an index row waits in the buffer (index freshness)",
    ),
    (
        "index_journal_dir",
        "EXECVAULT_INDEX_JOURNAL_DIR",
        "local directory of the index journal (keys of objects whose index rows are not yet "
        "written; the next start indexes them after a crash); `off` disables it; default "
        "`$XDG_STATE_HOME/execvault/journal` (`~/.local/state/…`), one folder per store",
    ),
    (
        "query_max_rows",
        "EXECVAULT_QUERY_MAX_ROWS",
        "most rows an analyst SQL query returns (`POST /api/query`, `execvault sql`)",
    ),
    (
        "query_timeout_ms",
        "EXECVAULT_QUERY_TIMEOUT_MS",
        "longest an analyst SQL query may run before it is interrupted",
    ),
    (
        "query_memory_limit",
        "EXECVAULT_QUERY_MEMORY_LIMIT",
        "memory limit of one analyst SQL query (e.g. `1GB`): DuckDB's and its worker "
        "process's address space (plus 192 MiB)",
    ),
    (
        "query_workers",
        "EXECVAULT_QUERY_WORKERS",
        "analyst SQL worker processes: queries that run at once (each in its own process)",
    ),
    (
        "query_queue",
        "EXECVAULT_QUERY_QUEUE",
        "analyst SQL queries that may wait for a worker; beyond it 429 with `Retry-After`",
    ),
    (
        "query_max_result_bytes",
        "EXECVAULT_QUERY_MAX_RESULT_BYTES",
        "largest analyst SQL result on the API (Arrow and JSON); rows beyond are cut",
    ),
    (
        "max_inflight_body_bytes",
        "EXECVAULT_MAX_INFLIGHT_BODY_BYTES",
        "request bodies over 1 MiB being read or handled at once, in bytes; beyond it 503 "
        "with `Retry-After`",
    ),
    (
        "max_json_values",
        "EXECVAULT_MAX_JSON_VALUES",
        "most JSON values (numbers, strings, arrays ...) a request body may hold (413 above)",
    ),
    (
        "retention_policy_file",
        "EXECVAULT_RETENTION_POLICY_FILE",
        "TOML retention policy (`docs/retention.md`); built-in defaults if unset",
    ),
    (
        "capture_max_skew_seconds",
        "EXECVAULT_CAPTURE_MAX_SKEW_SECONDS",
        "how far past the server's clock a client's `createdAt`, `startedAt` or `finishedAt` "
        "may be (clock skew; 422 beyond); default 300",
    ),
    (
        "capture_max_age_seconds",
        "EXECVAULT_CAPTURE_MAX_AGE_SECONDS",
        "how old a capture's `createdAt` may be without the `backfill` scope (422 beyond); "
        "default 86400 (24 h)",
    ),
)


def _coerce(name: str, value: Any) -> Any:
    target = {f.name: f.type for f in fields(Settings)}[name]
    if value is None or value == "":
        return None
    if "int" in str(target):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InvalidInput("must be an integer", field=name) from None
    return str(value)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    settings = Settings()
    path = config_file or env.get("EXECVAULT_CONFIG")
    values: dict[str, Any] = {}
    if path:
        try:
            with Path(path).open("rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise InvalidInput(f"cannot read config file: {err}", field="config") from None
        section = data.get("execvault", data)
        known = {f.name for f in fields(Settings)}
        unknown = set(section) - known
        if unknown:
            raise InvalidInput(f"unknown config keys: {sorted(unknown)}", field="config")
        values.update(section)
    for name, var, _ in FIELDS:
        if env.get(var):
            values[name] = env[var]
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    return replace(settings, **{k: v for k, v in coerced.items() if v is not None})
