"""companion.domain.answers: which answers a slot takes (every window it was shown with), and which slot of the day
an answer on a slot called off settles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.domain.answers import DaySlot, Window, in_time, replacement, taken_after_call_off, too_early

SIX = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MOVED_WEST = [Window(SIX + 5 * HOUR, SIX + 6 * HOUR), Window(SIX, SIX + HOUR)]  # now 23:00, shown at 18:00 before
CALLED_OFF = SIX - 8 * HOUR


def test_an_answer_is_early_only_if_more_than_an_hour_before_every_time_the_slot_was_shown():
    assert not too_early(SIX - HOUR, MOVED_WEST)
    assert too_early(SIX - HOUR - timedelta(seconds=1), MOVED_WEST)
    assert too_early(SIX + timedelta(minutes=5), MOVED_WEST[:1])  # the current window alone: refused, as before


def test_an_answer_is_in_time_inside_any_window_it_was_shown_with():
    assert in_time(SIX + timedelta(minutes=5), MOVED_WEST)
    assert not in_time(SIX + timedelta(minutes=90), MOVED_WEST)  # between the two: late for the one, early for the other
    assert in_time(SIX + 4 * HOUR, MOVED_WEST)  # within the hour before the current due time
    assert not in_time(SIX + 7 * HOUR, MOVED_WEST)


def test_a_slot_called_off_takes_an_answer_given_before_the_call_off_or_inside_its_window():
    shown = [Window(SIX, SIX + HOUR)]
    assert taken_after_call_off(SIX + timedelta(minutes=5), shown, SIX - 8 * HOUR)  # a phone that never heard
    assert taken_after_call_off(SIX + timedelta(minutes=5), shown, SIX + timedelta(minutes=30))  # offline meanwhile
    assert not taken_after_call_off(SIX + 2 * HOUR, shown, SIX - 8 * HOUR)  # after both: no longer the patient's
    assert not taken_after_call_off(SIX - 2 * HOUR, shown, SIX + timedelta(minutes=30))  # too early all the same


def _slot(key: str, due: datetime, made: datetime | None, state: str = "open", settled_by: str | None = None):
    return DaySlot(key, due, made, state, settled_by)


def test_the_replacement_is_the_nearest_slot_made_since_the_call_off():
    day = [_slot("old", SIX, CALLED_OFF - HOUR, "called_off"), _slot("morning", SIX - 9 * HOUR, CALLED_OFF - HOUR),
           _slot("seven", SIX + HOUR, CALLED_OFF), _slot("night", SIX + 4 * HOUR, CALLED_OFF + HOUR)]
    assert replacement("old", SIX, CALLED_OFF, day).occurrence_id == "seven"


def test_a_slot_the_change_left_as_it_was_is_never_the_replacement():
    day = [_slot("old", SIX, None, "called_off"), _slot("morning", SIX - 9 * HOUR, CALLED_OFF - HOUR),
           _slot("legacy", SIX + HOUR, None)]
    assert replacement("old", SIX, CALLED_OFF, day) is None


def test_nothing_is_settled_when_the_nearest_new_slot_was_answered_itself():
    day = [_slot("old", SIX, None, "called_off"), _slot("seven", SIX + HOUR, CALLED_OFF, "answered"),
           _slot("night", SIX + 4 * HOUR, CALLED_OFF)]
    assert replacement("old", SIX, CALLED_OFF, day) is None


def test_a_retry_finds_the_slot_it_settled_and_settles_no_other():
    day = [_slot("old", SIX, None, "answered"), _slot("seven", SIX + HOUR, CALLED_OFF, "called_off", "old"),
           _slot("night", SIX + 4 * HOUR, CALLED_OFF)]
    assert replacement("old", SIX, CALLED_OFF, day).occurrence_id == "seven"
