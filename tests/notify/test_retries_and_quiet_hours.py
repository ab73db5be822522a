"""A push FCM asks to retry (429, 5xx) keeps to its recipient's quiet hours as its first sending did: one due
outside them is retried at their end (or expires, past its lifetime); one that goes whatever the hour (an
overload alert, a snooze's reminder) is retried as FCM said."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from companion.domain.access import Role
from companion.domain.people import Account
from companion.domain.quiet_hours import QuietHours
from companion.services.push_settlement import Settlement, retried_outside_quiet_hours
from companion.store.outbox import EXPIRED, SCHEDULED, SENT

NIGHT = QuietHours(time(22, 0), time(7, 0))
DUE = datetime(2026, 3, 2, 21, 59, 50, tzinfo=UTC)  # ten seconds before the recipient's night (UTC)
RETRY = DUE + timedelta(seconds=30)
MORNING = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


def _recipient() -> Account:
    return Account(id="r-1", email="r@example.org", role=Role.CAREGIVER, display_name="R", time_zone="UTC",
                   created_at=DUE - timedelta(days=30), password_hash="", quiet_hours=NIGHT)


def _retried(kind: str, source_key: str, lifetime: timedelta) -> Settlement:
    doc = {"kind": kind, "source_key": source_key, "not_before": DUE, "expires_at": DUE + lifetime}
    return retried_outside_quiet_hours(doc, Settlement(SCHEDULED, [], ["QUOTA_EXCEEDED"], not_before=RETRY),
                                       _recipient())


@pytest.mark.parametrize(("kind", "source_key", "lifetime", "state", "not_before"), [
    ("caregiver_low_adherence", "alert:a-1", timedelta(hours=24), SCHEDULED, MORNING),
    ("generic_update", "missed-summary:p:2026-03-02", timedelta(hours=24), SCHEDULED, MORNING),
    ("therapy_reminder", "reminder:o-1", timedelta(hours=1), EXPIRED, None),  # its window closes in the night
    ("caregiver_overload", "alert:a-2", timedelta(hours=6), SCHEDULED, RETRY),  # urgent: whatever the hour
    ("overload", "alert:a-2", timedelta(hours=6), SCHEDULED, RETRY),
    # An overload found late is routine: it keeps to the quiet hours (the patient's push expires in them).
    ("caregiver_overload_found_late", "alert:a-3", timedelta(hours=24), SCHEDULED, MORNING),
    ("overload_found_late", "alert:a-3", timedelta(hours=6), EXPIRED, None),
    ("reminder_repeat", "reminder:o-1:snooze:20260302T215900", timedelta(hours=1), SCHEDULED, RETRY),
])
def test_a_retry_keeps_to_the_quiet_hours_its_push_kept_to(kind, source_key, lifetime, state, not_before):
    retried = _retried(kind, source_key, lifetime)
    assert (retried.state, retried.not_before) == (state, not_before)


def test_a_retry_owed_to_one_phone_that_the_night_pushes_past_its_window_leaves_it_sent():
    """Another phone has it: the one owed it gets nothing in the night, and the notification is final (sent)."""
    doc = {"kind": "therapy_reminder", "source_key": "reminder:o-1", "not_before": DUE,
           "expires_at": DUE + timedelta(hours=1)}
    owed = Settlement(SCHEDULED, [], ["QUOTA_EXCEEDED"], not_before=RETRY, pending_phones=["phone"])
    retried = retried_outside_quiet_hours(doc, owed, _recipient())
    assert (retried.state, retried.pending_phones) == (SENT, None)
