"""A hand-moved clock for the push tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand; it can also note something each time it is read."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now
        self.on_read: Callable[[], None] | None = None

    def __call__(self) -> datetime:
        if self.on_read is not None:
            self.on_read()
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
