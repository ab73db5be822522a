"""The one clock: every "now" in Companion comes from here.

Services, stores and jobs take a ``clock`` (a zero-argument callable returning an aware UTC datetime)
where a test needs to move time by hand; everything else calls :func:`now`. Tests that need the whole
process to see another time use time-machine, which this function honours.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def now() -> datetime:
    """The current instant, timezone-aware, in UTC."""
    return datetime.now(UTC)


def to_millis(at: datetime) -> datetime:
    """``at`` truncated to milliseconds: what a BSON date keeps, so what is hashed or compared is what is
    read back."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
