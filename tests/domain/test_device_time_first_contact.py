"""A unit's first sync: nothing measured its clock before, so a session is placed by the offset read then only
when nothing in the batch says the clock jumped after it (companion.domain.device_time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.domain.device_time import SyncPoint, TimeQuality, UnitSession, reconstruct

SYNCED = datetime(2026, 1, 8, 9, 0, tzinfo=UTC)  # the unit's first sync
SET_BACK = timedelta(days=-1)  # a reset left its clock a day behind, six hours before
JUMP = SYNCED - timedelta(hours=6)
REAL = [SYNCED - timedelta(hours=70), SYNCED - timedelta(hours=12), SYNCED - timedelta(hours=3)]


def _readings() -> list[UnitSession]:
    """Two sessions before the jump, read by the right clock, one after it, a day behind."""
    return [UnitSession(n + 1, real + (SET_BACK if real > JUMP else timedelta(0)), timedelta(minutes=30))
            for n, real in enumerate(REAL)]


def test_on_first_contact_a_session_before_a_jump_the_batch_shows_is_not_placed_by_the_later_offset():
    first_sync = SyncPoint(3, SYNCED + SET_BACK, SYNCED, timedelta(seconds=1))
    placed = reconstruct([first_sync], _readings(), received_at=SYNCED + timedelta(minutes=1))
    # The session after the jump is placed by the offset the sync read.
    assert placed[3].quality is TimeQuality.CORRECTED and abs(placed[3].start - REAL[2]) < timedelta(seconds=15)
    # 12 hours old, read a day ahead of that offset, it would start after the sync: the clock jumped after it.
    # The one before it had the same unmeasured offset, although its reading, moved a day on, fits before the sync:
    # neither is sure to seconds on a day (it was placed a day late, within 11 s); neither is bounded below.
    for seq in (1, 2):
        assert placed[seq].quality is TimeQuality.ESTIMATED and placed[seq].earliest is None, placed[seq]
        assert placed[seq].latest >= REAL[seq - 1]


def test_on_first_contact_with_no_sign_of_a_jump_the_backlog_is_placed_by_the_offset_read_then():
    """A clock an hour behind all along (never set): the sessions of days before the first sync are placed by it."""
    behind = timedelta(hours=-1)
    sessions = [UnitSession(n + 1, real + behind, timedelta(minutes=30)) for n, real in enumerate(REAL)]
    first_sync = SyncPoint(3, SYNCED + behind, SYNCED, timedelta(seconds=1))
    placed = reconstruct([first_sync], sessions, received_at=SYNCED + timedelta(minutes=1))
    for seq, real in enumerate(REAL, start=1):
        assert placed[seq].quality is TimeQuality.CORRECTED and abs(placed[seq].start - real) < timedelta(seconds=15)
