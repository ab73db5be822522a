from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.domain.alerts import (
    DEVICE_ALERT_NEWS,
    MISSED_ALERT_AFTER_WINDOW,
    MISSED_ALERT_MARGIN,
    OVERLOAD_URGENT_FOR,
    AlertKind,
    Severity,
    battery_low,
    delivery_time,
    device_fault,
    escalates,
    flare_still_raised,
    low_adherence,
    low_adherence_redated,
    low_adherence_still_from,
    missed_session_due_at,
    missed_tens_session,
    most_pressing_first,
    pain_flare,
    pushed_to_caregivers,
    still_news,
    unit_silent,
)
from companion.domain.pain import PainEntry, flare_at
from companion.domain.people import LONGEST_CAREGIVER_ALERT_DELAY_MIN, SHORTEST_CAREGIVER_ALERT_DELAY_MIN
from companion.domain.quiet_hours import QuietHours
from companion.domain.schedules import (
    MAX_COMPLETION_WINDOW_MINUTES,
    ReminderSchedule,
    Repeats,
    WeeklyTimes,
    nudge_times,
    occurrences,
    snoozed_until,
)

LONDON = ZoneInfo("Europe/London")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


SCHEDULE = ReminderSchedule(
    "r1", WeeklyTimes((time(9),)), date(2025, 1, 1), completion_window_minutes=60, repeats=Repeats(2, 15)
)
OCCURRENCE = next(occurrences(SCHEDULE, LONDON, utc(2025, 1, 6), utc(2025, 1, 7)))
LAST_NUDGE = nudge_times(OCCURRENCE, SCHEDULE.repeats)[-1]  # 09:30


@pytest.mark.parametrize(
    ("now", "done", "expected"),
    [
        (utc(2025, 1, 6, 10, 29), False, None),
        (utc(2025, 1, 6, 10, 30), False, AlertKind.MISSED_TENS),
        (utc(2025, 1, 6, 12, 0), True, None),
    ],
)
def test_missed_session_alerts_after_delay_from_last_repeat(now, done, expected):
    alert = missed_tens_session("p1", OCCURRENCE, LAST_NUDGE, done, now)
    assert (alert.kind if alert else None) == expected


def test_missed_session_uses_patient_delay_and_dedups_per_occurrence():
    early = missed_tens_session("p1", OCCURRENCE, LAST_NUDGE, False, utc(2025, 1, 6, 9, 50), delay_minutes=20)
    later = missed_tens_session("p1", OCCURRENCE, LAST_NUDGE, False, utc(2025, 1, 6, 11), delay_minutes=20)
    assert early.dedup_key == later.dedup_key and OCCURRENCE.occurrence_id in early.dedup_key
    assert "2025-01-06 09:00" in early.text


def test_a_missed_session_alert_raised_past_the_margin_after_it_fell_due_pushes_nobody():
    due = missed_session_due_at(LAST_NUDGE)  # 10:30
    alert = missed_tens_session("p1", OCCURRENCE, LAST_NUDGE, False, due)
    assert pushed_to_caregivers(alert, due + MISSED_ALERT_MARGIN) and still_news(alert, due + MISSED_ALERT_MARGIN)
    late = due + MISSED_ALERT_MARGIN + timedelta(seconds=1)  # a worker back after an outage
    assert not pushed_to_caregivers(alert, late) and not still_news(alert, late)


def test_a_device_alert_raised_more_than_a_day_after_its_event_pushes_nobody():
    at = utc(2025, 6, 1, 12)
    for alert in (device_fault("p1", "SN1", AlertKind.OVERLOAD, at, LONDON, at),
                  battery_low("p1", "SN1", 5, at, LONDON)):
        assert still_news(alert, at + DEVICE_ALERT_NEWS) and pushed_to_caregivers(alert, at + DEVICE_ALERT_NEWS)
        assert not still_news(alert, at + DEVICE_ALERT_NEWS + timedelta(seconds=1))


def test_a_missed_session_no_reminder_reached_says_so_and_pushes_nobody():
    due = missed_session_due_at(LAST_NUDGE)
    alert = missed_tens_session("p1", OCCURRENCE, LAST_NUDGE, False, due, reminded=False)
    assert alert.dedup_key == missed_tens_session("p1", OCCURRENCE, LAST_NUDGE, False, due).dedup_key
    assert "no reminder of it could be sent" in alert.text and "2025-01-06 09:00" in alert.text
    assert not pushed_to_caregivers(alert, due) and not still_news(alert, due)


def test_a_missed_session_quiet_hours_kept_from_reminding_says_why_and_pushes_nobody():
    due = missed_session_due_at(OCCURRENCE.window_ends_at_utc)
    alert = missed_tens_session("p1", OCCURRENCE, OCCURRENCE.window_ends_at_utc, False, due, reminded=False,
                                quiet_hours=True)
    assert "no reminder of it was sent" in alert.text and "quiet hours" in alert.text
    assert "last reminder" not in alert.text and "could be sent" not in alert.text
    assert not pushed_to_caregivers(alert, due) and not still_news(alert, due)


@given(window=st.integers(1, MAX_COMPLETION_WINDOW_MINUTES), count=st.integers(0, 5), every=st.integers(5, 120),
       delay=st.integers(SHORTEST_CAREGIVER_ALERT_DELAY_MIN, LONGEST_CAREGIVER_ALERT_DELAY_MIN),
       snooze=st.one_of(st.none(), st.tuples(st.integers(0, 2 * MAX_COMPLETION_WINDOW_MINUTES), st.integers(5, 120))))
def test_a_missed_session_alert_falls_due_within_the_longest_delay_after_the_window_ends(
        window, count, every, delay, snooze):
    """What the alerts job reads back (MISSED_ALERT_AFTER_WINDOW) holds every alert any accepted delay, window,
    repeats (even ones an edit left longer than the window) and snooze can bring."""
    schedule = ReminderSchedule("r1", WeeklyTimes((time(9),)), date(2025, 1, 1), completion_window_minutes=window,
                                repeats=Repeats(count, every))
    occurrence = next(occurrences(schedule, LONDON, utc(2025, 1, 6), utc(2025, 1, 7)))
    pushes = list(nudge_times(occurrence, schedule.repeats))
    if snooze is not None:
        asked, minutes = snooze
        snoozed = snoozed_until(occurrence, occurrence.due_at_utc + timedelta(minutes=asked), minutes)
        pushes += [snoozed] if snoozed is not None else []
    alert_due = missed_session_due_at(max(pushes), delay)
    assert alert_due <= occurrence.window_ends_at_utc + MISSED_ALERT_AFTER_WINDOW - MISSED_ALERT_MARGIN


def test_low_adherence_needs_three_consecutive_planned_days_below_80_percent():
    progress = {date(2025, 3, 1): 0.9, date(2025, 3, 2): 0.5, date(2025, 3, 3): None, date(2025, 3, 4): 0.0}
    assert low_adherence("p1", progress, date(2025, 3, 5)) is None
    progress[date(2025, 3, 5)] = 0.79
    alert = low_adherence("p1", progress, date(2025, 3, 6))
    assert alert.period_key == "2025-03-02"
    progress[date(2025, 3, 6)] = 0.1
    assert low_adherence("p1", progress, date(2025, 3, 7)).dedup_key == alert.dedup_key


def test_low_adherence_ignores_today_in_progress():
    progress = {date(2025, 3, 1): 0.1, date(2025, 3, 2): 0.1, date(2025, 3, 3): 0.0}
    assert low_adherence("p1", progress, date(2025, 3, 3)) is None


def test_unit_silent_after_24_hours_once_per_silence():
    seen = utc(2025, 3, 1, 8)
    assert unit_silent("p1", "SN1", seen, utc(2025, 3, 2, 7, 59)) is None
    first = unit_silent("p1", "SN1", seen, utc(2025, 3, 2, 8))
    assert first.dedup_key == unit_silent("p1", "SN1", seen, utc(2025, 3, 5)).dedup_key


def test_battery_low_below_15_percent_once_per_device_per_local_day():
    assert battery_low("p1", "SN1", 15, utc(2025, 6, 1, 12), LONDON) is None
    late = battery_low("p1", "SN1", 14, utc(2025, 6, 1, 23, 30), LONDON)  # 00:30 BST on 2 June
    assert late.period_key == "2025-06-02" and late.severity == Severity.INFO


def test_overload_is_urgent_and_electrode_off_is_not():
    at = utc(2025, 6, 1, 2)
    overload = device_fault("p1", "SN1", AlertKind.OVERLOAD, at, LONDON, at)
    electrode = device_fault("p1", "SN1", AlertKind.ELECTRODE_OFF, at, LONDON, at)
    assert overload.urgent and not electrode.urgent
    assert overload.dedup_key != electrode.dedup_key
    with pytest.raises(ValueError):
        device_fault("p1", "SN1", AlertKind.BATTERY_LOW, at, LONDON, at)


def test_an_overload_is_urgent_only_while_it_is_fresh():
    at = utc(2025, 6, 1, 12)
    fresh = device_fault("p1", "SN1", AlertKind.OVERLOAD, at, LONDON, at + OVERLOAD_URGENT_FOR)
    late = device_fault("p1", "SN1", AlertKind.OVERLOAD, at, LONDON, at + OVERLOAD_URGENT_FOR + timedelta(seconds=1))
    assert fresh.urgent and fresh.severity == Severity.URGENT
    assert not late.urgent and late.severity == Severity.WARNING
    assert late.dedup_key == fresh.dedup_key and still_news(late, at + DEVICE_ALERT_NEWS)  # routine, until a day
    night = utc(2025, 6, 2, 1)  # 02:00 BST, 13 hours after the overload
    assert delivery_time(late, night, LONDON, QUIET) == utc(2025, 6, 2, 6)  # 07:00 BST, the end of the night


def test_of_a_units_overloads_of_one_day_the_fresh_one_is_raised_before_one_found_late():
    night, found = utc(2025, 6, 2, 0), utc(2025, 6, 2, 5)  # 01:00 and 06:00 BST
    late = device_fault("p1", "SN1", AlertKind.OVERLOAD, night, LONDON, found)
    electrode = device_fault("p1", "SN1", AlertKind.ELECTRODE_OFF, night, LONDON, found)
    fresh = device_fault("p1", "SN1", AlertKind.OVERLOAD, found - timedelta(minutes=30), LONDON, found)
    assert fresh.dedup_key == late.dedup_key
    assert most_pressing_first([late, electrode, fresh]) == [fresh, late, electrode]


def test_only_a_fresh_overload_makes_an_alert_raised_as_a_warning_urgent():
    night, found = utc(2025, 6, 2, 0), utc(2025, 6, 2, 5)
    late = device_fault("p1", "SN1", AlertKind.OVERLOAD, night, LONDON, found)
    fresh = device_fault("p1", "SN1", AlertKind.OVERLOAD, found - timedelta(minutes=30), LONDON, found)
    assert escalates(fresh, raised_urgent=False)
    assert not escalates(fresh, raised_urgent=True) and not escalates(late, raised_urgent=False)


def test_pain_flare_alert_once_per_local_day_with_reason():
    entries = [PainEntry("a", utc(2025, 6, 1, 8), 7), PainEntry("b", utc(2025, 6, 1, 20), 8)]
    alert = pain_flare("p1", flare_at(entries[1], entries), LONDON)
    assert alert.dedup_key == "pain_flare:p1:2025-06-01"
    assert "within 24 hours" in alert.text


def test_a_flare_raised_more_than_two_days_after_its_rating_is_pushed_to_no_caregiver():
    entries = [PainEntry("a", utc(2025, 6, 1, 8), 7), PainEntry("b", utc(2025, 6, 1, 20), 8)]
    flare = pain_flare("p1", flare_at(entries[1], entries), LONDON)
    assert pushed_to_caregivers(flare, utc(2025, 6, 3, 20))  # 48 hours after the rating
    assert not pushed_to_caregivers(flare, utc(2025, 6, 3, 20, 1))
    silent = unit_silent("p1", "SN1", utc(2025, 6, 1, 8), utc(2025, 6, 5))  # other alerts, however late
    assert pushed_to_caregivers(silent, utc(2025, 6, 5))


def test_a_flare_found_more_than_three_days_after_its_rating_is_not_raised():
    entries = [PainEntry("a", utc(2025, 6, 1, 8), 7), PainEntry("b", utc(2025, 6, 1, 20), 8)]
    flare = pain_flare("p1", flare_at(entries[1], entries), LONDON)
    assert flare_still_raised(flare, utc(2025, 6, 4, 20))  # 72 hours after the rating
    assert not flare_still_raised(flare, utc(2025, 6, 4, 20, 1))
    silent = unit_silent("p1", "SN1", utc(2025, 6, 1, 8), utc(2025, 6, 5))
    assert flare_still_raised(silent, utc(2025, 7, 5))  # the rule is the flare's alone


QUIET = QuietHours(time(22), time(7))


def test_non_urgent_alert_waits_for_end_of_quiet_hours_and_urgent_does_not():
    night = utc(2025, 6, 1, 1)  # 02:00 BST
    electrode = device_fault("p1", "SN1", AlertKind.ELECTRODE_OFF, night, LONDON, night)
    overload = device_fault("p1", "SN1", AlertKind.OVERLOAD, night, LONDON, night)
    assert delivery_time(electrode, night, LONDON, QUIET) == utc(2025, 6, 1, 6)
    assert delivery_time(overload, night, LONDON, QUIET) == night
    assert delivery_time(electrode, utc(2025, 6, 1, 12), LONDON, QUIET) == utc(2025, 6, 1, 12)


def test_alert_dedup_key_is_stable_across_recomputation():
    a = battery_low("p1", "SN1", 3, utc(2025, 6, 1, 9), LONDON)
    b = battery_low("p1", "SN1", 10, utc(2025, 6, 1, 18), LONDON)
    assert a.dedup_key == b.dedup_key


def test_a_planned_day_at_the_threshold_ends_the_low_adherence_run_so_older_days_need_not_be_read():
    from companion.domain.alerts import low_adherence_run_ended

    today = date(2026, 3, 10)
    assert low_adherence_run_ended({date(2026, 3, 9): 0.8}, today)
    assert not low_adherence_run_ended({date(2026, 3, 9): 0.79, date(2026, 3, 8): None}, today)
    assert not low_adherence_run_ended({today: 1.0}, today)  # today is not judged
    # Whatever lies before the day that ends the run, the rule says the same.
    recent = {date(2026, 3, 9): 0.5, date(2026, 3, 8): 0.5, date(2026, 3, 7): 0.2, date(2026, 3, 6): 0.9}
    older = {date(2026, 3, d): 0.1 for d in range(1, 6)}
    assert low_adherence_run_ended(recent, today)
    alert = low_adherence("p1", recent, today)
    assert alert == low_adherence("p1", {**older, **recent}, today) and alert.period_key == "2026-03-07"


@pytest.mark.parametrize(("progress", "candidate_start", "redated"), [
    # Low 1-5 March, alerted on the 6th; the 1st then came up to the plan: the run is the same, from the 2nd.
    ({1: 1.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0}, 2, True),
    # The alert still holds from its own first day (a later day came up): not re-dated, a new run is a new alert.
    ({1: 0.0, 2: 0.0, 3: 0.0, 4: 1.0, 5: 0.0, 6: 0.0, 7: 0.0, 8: 0.0}, 5, False),
    # A run that began on or after the day the alert was raised is a new run.
    ({1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 0.0, 7: 0.0, 8: 0.0}, 6, False),
])
def test_a_run_shortened_at_its_start_by_later_data_is_the_alerts_run_told_from_its_new_start(
        progress, candidate_start, redated):
    daily = {date(2026, 3, d): p for d, p in progress.items()}
    assert low_adherence_redated(date(2026, 3, 1), date(2026, 3, 6), date(2026, 3, candidate_start), daily,
                                 date(2026, 3, 9)) is redated


@pytest.mark.parametrize(("progress", "still_from"), [
    # Low 1-5 March, alerted on the 6th; the 1st came up: the run holds from the 2nd.
    ({1: 1.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}, 2),
    # The 3rd came up: 4 and 5 are low but only two planned days before the alert, and the 6th was good: over.
    ({1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0, 5: 0.0, 6: 1.0}, None),
    # ... unless the run went on after the alert (the 6th and 7th low): it holds from the 4th.
    ({1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.0}, 4),
    # The 5th came up, the last day before the alert: nothing of the run remains.
    ({1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 1.0, 6: 1.0}, None),
])
def test_a_run_shortened_at_its_start_still_holds_from_the_day_after_its_last_good_day(progress, still_from):
    daily = {date(2026, 3, d): p for d, p in progress.items()}
    expected = date(2026, 3, still_from) if still_from else None
    assert low_adherence_still_from(date(2026, 3, 1), date(2026, 3, 6), daily, date(2026, 3, 9)) == expected
