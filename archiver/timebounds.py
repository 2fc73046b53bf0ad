"""How far the timestamps a client sends may stray from the server's clock.

A capture's ``createdAt`` orders history and timelines and names the index day, so a client must
not be free to pick any date: year 1 or 9999 would leave dates no arithmetic on them can survive,
and a back-dated or post-dated capture would expire early or be locked for ever. The server stamps
its own ``receivedAt`` on every snapshot record; retention and Object Lock count from that.

* ``createdAt`` of a capture: from ``now - max_age`` to ``now + max_skew`` (defaults 24 h and
  5 min); older only for a **backfill** (the ``backfill`` scope), and never before
  :data:`EARLIEST` nor after ``now + max_skew``.
* ``startedAt`` / ``finishedAt`` of a final state: from :data:`EARLIEST` to ``now + max_skew``.

See ``docs/storage-format.md`` ("Trusted time").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from archiver.errors import InvalidInput
from archiver.timeutil import format_ts

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MAX_SKEW", "EARLIEST", "TimeBounds"]

#: the earliest time any client timestamp may name (a backfill's included)
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
#: how far into the future (the server's clock) a client timestamp may be: clock skew
DEFAULT_MAX_SKEW: Final = timedelta(minutes=5)
#: how far into the past a capture's ``createdAt`` may be without the ``backfill`` scope
DEFAULT_MAX_AGE: Final = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """The window client timestamps must fall in, around the server's ``now``."""

    max_skew: timedelta = DEFAULT_MAX_SKEW
    max_age: timedelta = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        if self.max_skew < timedelta(0) or self.max_age < timedelta(0):
            raise InvalidInput("capture time bounds must not be negative", field="capture_max_age")

    def check_created_at(self, when: datetime, now: datetime, *, backfill: bool) -> None:
        """Refuse a capture's ``createdAt`` outside the window (InvalidInput naming it)."""
        earliest = EARLIEST if backfill else max(EARLIEST, now - self.max_age)
        if when < earliest:
            hint = "" if backfill else " (older captures need a backfill)"
            raise InvalidInput(f"must not be before {format_ts(earliest)}{hint}", field="createdAt")
        self._not_future(when, now, "createdAt")

    def check_sane(self, when: datetime | None, now: datetime, field: str) -> None:
        """Refuse a timestamp before :data:`EARLIEST` or beyond the skew (InvalidInput)."""
        if when is None:
            return
        if when < EARLIEST:
            raise InvalidInput(f"must not be before {format_ts(EARLIEST)}", field=field)
        self._not_future(when, now, field)

    def _not_future(self, when: datetime, now: datetime, field: str) -> None:
        latest = now + self.max_skew
        if when > latest:
            raise InvalidInput(
                f"must not be after {format_ts(latest)} (the server's clock plus "
                f"{int(self.max_skew.total_seconds())} s of skew)",
                field=field,
            )
