"""When a queued push goes after its recipient's quiet hours changed (companion.domain.notifications)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.domain.notifications import requeued_for_quiet_hours
from companion.domain.quiet_hours import QuietHours

NOW = datetime(2026, 3, 2, 23, 10, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
NIGHT = QuietHours(time(23, 30), time(6, 0))


def doc(kind: str, not_before: datetime, *, attempts: int = 0, source_key: str = "alert:a") -> dict:
    return {"kind": kind, "source_key": source_key, "not_before": not_before, "attempts": attempts,
            "created_at": datetime(2026, 3, 2, 23, 0, tzinfo=UTC), "expires_at": not_before + timedelta(hours=6)}


def test_a_push_held_for_quiet_hours_that_no_longer_hold_it_goes_now_its_lifetime_moved_with_it():
    held = doc("caregiver_pain_flare", datetime(2026, 3, 3, 7, 0, tzinfo=UTC))
    assert requeued_for_quiet_hours(held, NOW, UTC_ZONE, NIGHT) == (NOW, NOW + timedelta(hours=6))


def test_a_retry_inside_the_new_quiet_hours_waits_for_their_end_and_is_never_brought_forward():
    retry = doc("caregiver_battery_low", NOW + timedelta(minutes=30), attempts=1)
    assert requeued_for_quiet_hours(retry, NOW, UTC_ZONE, NIGHT)[0] == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    assert requeued_for_quiet_hours(retry, NOW, UTC_ZONE, None) is None


def test_pushes_that_go_whatever_the_hour_and_a_place_in_the_spread_keep_their_time():
    assert requeued_for_quiet_hours(doc("caregiver_overload", NOW + timedelta(minutes=30), attempts=1), NOW,
                                    UTC_ZONE, NIGHT) is None
    snooze = doc("reminder_repeat", NOW + timedelta(minutes=30), attempts=1, source_key="reminder:o:snooze:x")
    assert requeued_for_quiet_hours(snooze, NOW, UTC_ZONE, NIGHT) is None
    assert requeued_for_quiet_hours(doc("generic_update", NOW + timedelta(minutes=12)), NOW, UTC_ZONE, NIGHT) is None


def test_a_reminders_lifetime_is_its_window_wherever_its_push_moves():
    nudge = doc("reminder_repeat", NOW + timedelta(minutes=25), attempts=1, source_key="reminder:o:repeat:1")
    assert requeued_for_quiet_hours(nudge, NOW, UTC_ZONE, QuietHours(time(23, 20), time(6, 0))) == (
        datetime(2026, 3, 3, 6, 0, tzinfo=UTC), nudge["expires_at"])


def test_a_push_moved_to_a_later_time_is_not_brought_forward_to_when_it_was_queued():
    """A first push moved to its restored slot's time (Outbox.retime: ``intended_at``) is meant to go then, not
    when it was queued: a change of quiet hours that allow that time leaves it there."""
    restored = NOW + timedelta(minutes=35)
    moved = {**doc("planned_reminder", restored, source_key="reminder:o"), "intended_at": restored}
    assert requeued_for_quiet_hours(moved, NOW, UTC_ZONE, None) is None
    # Without a time of its own (queued before intended_at was kept), a reminder's push waits for its slot.
    legacy = {**doc("planned_reminder", restored, source_key="reminder:o"), "planned_at": restored}
    assert requeued_for_quiet_hours(legacy, NOW, UTC_ZONE, None) is None
    # Inside the new quiet hours, either waits for their end.
    assert requeued_for_quiet_hours(moved, NOW, UTC_ZONE, QuietHours(time(23, 30), time(6, 0)))[0] == datetime(
        2026, 3, 3, 6, 0, tzinfo=UTC)
