"""UTC timestamps as the archive writes them: RFC 3339, milliseconds, ``Z``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Final

from archiver.errors import InvalidInput

__all__ = ["format_ts", "parse_ts", "utcnow"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_BELOW: Final = 1e11  # epoch values below this are seconds (1e11 ms is March 1973)
_MAX_EPOCH_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_MAX_TS_TEXT: Final = 64


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise InvalidInput("timestamps must carry a timezone")
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond // 1000:03d}Z"
    )


def _to_utc_ms(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput("must carry a timezone", field=field)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput("is out of range", field=field) from None
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_ts(value: object, field: str = "timestamp") -> datetime:
    """RFC 3339 text, epoch milliseconds (seconds below 1e11), or an aware datetime; UTC, ms."""
    if isinstance(value, datetime):
        return _to_utc_ms(value, field)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput("must be a finite epoch time", field=field)
        if value < 0:
            raise InvalidInput("must not be a negative epoch time", field=field)
        ms = round(value * 1000) if value < _SECONDS_BELOW else round(value)
        if ms > _MAX_EPOCH_MS:
            raise InvalidInput("is out of range", field=field)
        return _EPOCH + timedelta(milliseconds=ms)
    if isinstance(value, str):
        if len(value) > _MAX_TS_TEXT:
            raise InvalidInput("is not an RFC 3339 timestamp", field=field)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput("is not an RFC 3339 timestamp", field=field) from None
        if parsed.tzinfo is None:
            raise InvalidInput("must carry a timezone offset (RFC 3339)", field=field)
        return _to_utc_ms(parsed, field)
    raise InvalidInput("must be an RFC 3339 string, epoch milliseconds or a datetime", field=field)
