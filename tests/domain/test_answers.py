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


CHANGE = "change-1"  # the change that called the answered slot off, and made its replacement


def _slot(key: str, due: datetime, made_by: str | None, state: str = "open", settled_by: str | None = None):
    return DaySlot(key, due, CALLED_OFF if made_by else None, state, settled_by, made_by)


def test_the_replacement_is_the_nearest_slot_made_by_the_change_that_called_it_off():
    day = [_slot("old", SIX, None, "called_off"), _slot("morning", SIX - 9 * HOUR, None),
           _slot("seven", SIX + HOUR, CHANGE), _slot("night", SIX + 4 * HOUR, CHANGE)]
    assert replacement("old", SIX, CHANGE, day).occurrence_id == "seven"


def test_a_slot_the_change_left_as_it_was_or_brought_back_is_never_the_replacement():
    day = [_slot("old", SIX, None, "called_off"), _slot("morning", SIX - 9 * HOUR, None),
           _slot("revived", SIX + HOUR, None)]
    assert replacement("old", SIX, CHANGE, day) is None


def test_a_slot_made_by_a_later_change_is_not_the_replacement():
    # Stopped (both slots called off by one change), started again (the evening slot brought back, or made anew by
    # another change): the evening dose is the patient's own, never the morning answer's.
    day = [_slot("old", SIX - 10 * HOUR, None, "called_off"), _slot("evening", SIX + 2 * HOUR, "change-2")]
    assert replacement("old", SIX - 10 * HOUR, CHANGE, day) is None


def test_an_answer_on_a_slot_called_off_before_changes_were_noted_settles_nothing():
    day = [_slot("old", SIX, None, "called_off"), _slot("seven", SIX + HOUR, CHANGE)]
    assert replacement("old", SIX, None, day) is None


def test_nothing_is_settled_when_the_nearest_new_slot_was_answered_itself():
    day = [_slot("old", SIX, None, "called_off"), _slot("seven", SIX + HOUR, CHANGE, "answered"),
           _slot("night", SIX + 4 * HOUR, CHANGE)]
    assert replacement("old", SIX, CHANGE, day) is None


def test_a_retry_finds_the_slot_it_settled_and_settles_no_other():
    day = [_slot("old", SIX, None, "answered"), _slot("seven", SIX + HOUR, CHANGE, "called_off", "old"),
           _slot("night", SIX + 4 * HOUR, CHANGE)]
    assert replacement("old", SIX, CHANGE, day).occurrence_id == "seven"
