"""A reminder's re-send (10 minutes after the first push, when no receipt came back) follows the first push reaching
a phone, whether or not another phone is still owed it."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from companion.domain.notifications import initial_key
from companion.services.reminder_dispatch import _resends

T0 = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
SETTINGS = SimpleNamespace(reminder_resend_after=timedelta(minutes=10), reminder_grace=timedelta(minutes=15))
OCCURRENCE = {"_id": "occ-1", "reminder_id": "r-1", "patient_id": "p-1", "kind": "tens", "due_at": T0,
              "window_ends_at": T0 + timedelta(hours=2)}


def _first(**fields):
    return {"_id": "n-1", "source_key": initial_key("occ-1"), "sent_at": T0, "delivered_at": None,
            "opened_at": None, **fields}


def _planned(first) -> int:
    return len(_resends([OCCURRENCE], {"r-1": {}}, {initial_key("occ-1"): first}, SETTINGS,
                        T0 + timedelta(minutes=10)))


def test_the_resend_goes_when_the_first_push_reached_a_phone_though_another_phone_is_still_owed_it():
    assert _planned(_first(state="sent")) == 1
    owed = _first(state="scheduled", pending_phones=["phone"], not_before=T0 + timedelta(minutes=5))
    assert _planned(owed) == 1


def test_no_resend_for_a_first_push_no_phone_got():
    assert _planned(_first(state="scheduled", sent_at=None)) == 0
    assert _planned(_first(state="withdrawn", sent_at=None)) == 0
    assert _planned(_first(state="sent", delivered_at=T0 + timedelta(minutes=1))) == 0
