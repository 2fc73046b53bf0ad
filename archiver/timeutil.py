"""UTC timestamps as the archive writes them: RFC 3339, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

from archiver.errors import InvalidInput

__all__ = ["format_ts", "parse_ts", "utcnow"]


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise InvalidInput("timestamps must carry a timezone")
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_ts(value: object, field: str = "timestamp") -> datetime:
    """RFC 3339 text, epoch milliseconds (or seconds, below 1e11), or an aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInput("timestamps must carry a timezone", field=field)
        result = value.astimezone(UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) if abs(value) < 1e11 else float(value) / 1000.0
        try:
            result = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidInput("timestamp out of range", field=field) from None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            result = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput("not an RFC 3339 timestamp", field=field) from None
        if result.tzinfo is None:
            raise InvalidInput("timestamps must carry a timezone offset", field=field)
        result = result.astimezone(UTC)
    else:
        raise InvalidInput("timestamp must be RFC 3339 text or epoch milliseconds", field=field)
    return result.replace(microsecond=result.microsecond // 1000 * 1000)
