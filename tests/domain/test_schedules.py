from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from companion.domain.localtime import TimeZoneHistory, resolve_local
from companion.domain.schedules import (
    EveryNDays,
    HourlyWindow,
    InvalidSchedule,
    ReminderSchedule,
    Repeats,
    WeeklyTimes,
    changed_schedule_starts,
    nudge_times,
    occurrence_id_for,
    occurrences,
    occurrences_with_history,
    schedule_problems,
    slots_skipped_by_moves,
    snoozed_until,
    validate_schedule,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def daily(*times: time, reminder_id: str = "r1", **kwargs) -> ReminderSchedule:
    return ReminderSchedule(reminder_id, WeeklyTimes(tuple(times)), date(2025, 1, 1), **kwargs)


def due_times(schedule, zone, start, end):
    return [(o.local_date, o.due_at_utc) for o in occurrences(schedule, ZoneInfo(zone), start, end)]


@pytest.mark.parametrize(
    ("zone", "local_date", "local_time", "expected_utc"),
    [
        # New York spring forward: 02:00-03:00 does not exist; 02:30 fires at 03:00 EDT.
        ("America/New_York", date(2025, 3, 9), time(2, 30), utc(2025, 3, 9, 7, 0)),
        ("America/New_York", date(2025, 3, 9), time(1, 59), utc(2025, 3, 9, 6, 59)),
        ("America/New_York", date(2025, 3, 9), time(3, 0), utc(2025, 3, 9, 7, 0)),
        # New York fall back: 01:30 happens twice; fires once at the first (EDT, -4).
        ("America/New_York", date(2025, 11, 2), time(1, 30), utc(2025, 11, 2, 5, 30)),
        ("America/New_York", date(2025, 11, 2), time(2, 30), utc(2025, 11, 2, 7, 30)),
        # London: 01:00-02:00 missing on 30 March, repeated on 26 October.
        ("Europe/London", date(2025, 3, 30), time(1, 30), utc(2025, 3, 30, 1, 0)),
        ("Europe/London", date(2025, 10, 26), time(1, 30), utc(2025, 10, 26, 0, 30)),
        ("Europe/London", date(2025, 10, 26), time(8, 0), utc(2025, 10, 26, 8, 0)),
        # Lord Howe: 30-minute DST. 2025-04-06 02:00 -> 01:30 (01:30-02:00 twice); 2025-10-05 02:00 -> 02:30.
        ("Australia/Lord_Howe", date(2025, 4, 6), time(1, 45), utc(2025, 4, 5, 14, 45)),
        ("Australia/Lord_Howe", date(2025, 4, 6), time(2, 0), utc(2025, 4, 5, 15, 30)),
        ("Australia/Lord_Howe", date(2025, 10, 5), time(2, 15), utc(2025, 10, 4, 15, 30)),
        ("Australia/Lord_Howe", date(2025, 10, 5), time(2, 30), utc(2025, 10, 4, 15, 30)),
        ("Australia/Lord_Howe", date(2025, 10, 5), time(1, 59), utc(2025, 10, 4, 15, 29)),
        # Kolkata: +05:30 all year.
        ("Asia/Kolkata", date(2025, 3, 9), time(8, 0), utc(2025, 3, 9, 2, 30)),
        ("Asia/Kolkata", date(2025, 11, 2), time(8, 0), utc(2025, 11, 2, 2, 30)),
    ],
)
def test_local_slot_fires_at_documented_instant(zone, local_date, local_time, expected_utc):
    schedule = daily(local_time)
    start = datetime.combine(local_date, time(0), ZoneInfo(zone)).astimezone(UTC) - timedelta(hours=3)
    found = [
        o
        for o in occurrences(schedule, ZoneInfo(zone), start, start + timedelta(hours=30))
        if o.local_date == local_date
    ]
    assert [o.due_at_utc for o in found] == [expected_utc]


@pytest.mark.parametrize(
    ("zone", "first_day"),
    [
        ("America/New_York", date(2025, 3, 8)),
        ("America/New_York", date(2025, 11, 1)),
        ("Europe/London", date(2025, 3, 29)),
        ("Europe/London", date(2025, 10, 25)),
        ("Australia/Lord_Howe", date(2025, 4, 5)),
        ("Australia/Lord_Howe", date(2025, 10, 4)),
        ("Asia/Kolkata", date(2025, 3, 8)),
    ],
)
def test_each_transition_weekend_gives_one_occurrence_per_day_per_time(zone, first_day):
    schedule = daily(time(1, 30), time(2, 15), time(8, 0), time(21, 0))
    tz = ZoneInfo(zone)
    start = datetime.combine(first_day, time(0), tz).astimezone(UTC)
    found = list(occurrences(schedule, tz, start, start + timedelta(days=3)))
    slots = [(o.local_date, o.local_time) for o in found]
    assert len(slots) == len(set(slots)) == 12
    assert {d for d, _ in slots} == {first_day + timedelta(days=n) for n in range(3)}


def test_occurrence_id_depends_only_on_reminder_and_local_slot():
    a = occurrence_id_for("r1", date(2025, 3, 9), time(8, 0))
    assert a == occurrence_id_for("r1", date(2025, 3, 9), time(8, 0))
    assert a != occurrence_id_for("r2", date(2025, 3, 9), time(8, 0))
    assert a != occurrence_id_for("r1", date(2025, 3, 10), time(8, 0))
    assert a != occurrence_id_for("r1", date(2025, 3, 9), time(8, 1))


def test_recomputing_overlapping_ranges_gives_the_same_ids():
    schedule = daily(time(8, 0), time(20, 0))
    tz = ZoneInfo("Europe/London")
    whole = {o.occurrence_id for o in occurrences(schedule, tz, utc(2025, 3, 1), utc(2025, 3, 11))}
    parts = {o.occurrence_id for o in occurrences(schedule, tz, utc(2025, 3, 1), utc(2025, 3, 6))}
    parts |= {o.occurrence_id for o in occurrences(schedule, tz, utc(2025, 3, 4), utc(2025, 3, 11))}
    assert whole == parts and len(whole) == 20


def test_weekly_schedule_fires_only_on_chosen_weekdays():
    schedule = ReminderSchedule("r", WeeklyTimes((time(9, 0),), frozenset({1, 3})), date(2025, 6, 1))
    days = [d for d, _ in due_times(schedule, "Asia/Kolkata", utc(2025, 6, 1), utc(2025, 6, 15))]
    assert days == [date(2025, 6, 2), date(2025, 6, 4), date(2025, 6, 9), date(2025, 6, 11)]


def test_every_n_days_counts_from_start_date_and_stops_after_end_date():
    schedule = ReminderSchedule(
        "r", EveryNDays((time(9, 0),), 3), date(2025, 6, 2), end_date=date(2025, 6, 11)
    )
    days = [d for d, _ in due_times(schedule, "Europe/London", utc(2025, 5, 1), utc(2025, 7, 1))]
    assert days == [date(2025, 6, 2), date(2025, 6, 5), date(2025, 6, 8), date(2025, 6, 11)]


def test_hourly_window_includes_both_window_ends():
    schedule = ReminderSchedule(
        "r", HourlyWindow(time(8, 0), time(20, 0), 3), date(2025, 6, 2), end_date=date(2025, 6, 2)
    )
    found = list(occurrences(schedule, ZoneInfo("Asia/Kolkata"), utc(2025, 6, 1), utc(2025, 6, 3)))
    assert [o.local_time for o in found] == [time(h) for h in (8, 11, 14, 17, 20)]


def test_hourly_window_across_spring_forward_keeps_wall_clock_hours():
    schedule = ReminderSchedule(
        "r", HourlyWindow(time(0, 0), time(6, 0), 1), date(2025, 3, 9), end_date=date(2025, 3, 9)
    )
    found = list(occurrences(schedule, ZoneInfo("America/New_York"), utc(2025, 3, 8), utc(2025, 3, 11)))
    assert [o.due_at_utc.hour for o in found] == [5, 6, 7, 7, 8, 9, 10]
    assert len({o.occurrence_id for o in found}) == 7


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (ReminderSchedule("r", WeeklyTimes((time(8),), frozenset()), date(2025, 1, 1)), "weekdays"),
        (ReminderSchedule("r", WeeklyTimes(()), date(2025, 1, 1)), "times"),
        (daily(time(8), end_date=date(2024, 12, 31)), "end_date"),
        (ReminderSchedule("r", EveryNDays((time(8),), 0), date(2025, 1, 1)), "every_days"),
        (ReminderSchedule("r", HourlyWindow(time(8), time(9), 2), date(2025, 1, 1)), "every_hours"),
        (ReminderSchedule("r", HourlyWindow(time(20), time(8), 2), date(2025, 1, 1)), "window"),
        (ReminderSchedule("r", HourlyWindow(time(8), time(20), 0), date(2025, 1, 1)), "every_hours"),
        # 2025-06-03 is a Tuesday and the schedule wants Sundays only.
        (
            ReminderSchedule(
                "r", WeeklyTimes((time(8),), frozenset({7})), date(2025, 6, 3), end_date=date(2025, 6, 5)
            ),
            "weekdays",
        ),
        (daily(time(8), completion_window_minutes=0), "completion_window_minutes"),
        (daily(time(8), repeats=Repeats(2, 0)), "repeats.every_minutes"),
        (daily(time(8, 0, 30)), "times"),
    ],
)
def test_schedule_that_never_fires_or_is_malformed_is_rejected_with_reason(schedule, field):
    problems = schedule_problems(schedule)
    assert field in [p.field for p in problems]
    with pytest.raises(InvalidSchedule):
        validate_schedule(schedule)


def test_sensible_schedule_has_no_problems():
    schedule = ReminderSchedule(
        "r", HourlyWindow(time(8), time(20), 3), date(2025, 1, 1), repeats=Repeats(2, 10)
    )
    assert validate_schedule(schedule) is schedule


def test_repeats_stop_before_window_end():
    schedule = daily(time(8), completion_window_minutes=30, repeats=Repeats(5, 10))
    occurrence = next(occurrences(schedule, ZoneInfo("Europe/London"), utc(2025, 1, 6), utc(2025, 1, 7)))
    assert nudge_times(occurrence, schedule.repeats) == (
        utc(2025, 1, 6, 8, 0),
        utc(2025, 1, 6, 8, 10),
        utc(2025, 1, 6, 8, 20),
    )


def test_snooze_is_capped_by_window_end_and_ends_with_window():
    schedule = daily(time(8), completion_window_minutes=30)
    occurrence = next(occurrences(schedule, ZoneInfo("Europe/London"), utc(2025, 1, 6), utc(2025, 1, 7)))
    assert snoozed_until(occurrence, utc(2025, 1, 6, 8, 5), 10) == utc(2025, 1, 6, 8, 15)
    assert snoozed_until(occurrence, utc(2025, 1, 6, 8, 25), 10) == utc(2025, 1, 6, 8, 30)
    assert snoozed_until(occurrence, utc(2025, 1, 6, 8, 30), 10) is None


def test_flying_west_does_not_repeat_the_same_local_slot():
    schedule = daily(time(8), time(20))
    history = TimeZoneHistory.of(
        [(utc(2025, 1, 1), "Europe/London"), (utc(2025, 6, 10, 10), "America/New_York")]
    )
    found = occurrences_with_history(schedule, history, utc(2025, 6, 9), utc(2025, 6, 12))
    assert [(o.local_date.day, o.local_time.hour, o.due_at_utc) for o in found] == [
        (9, 8, utc(2025, 6, 9, 7)),
        (9, 20, utc(2025, 6, 9, 19)),
        (10, 8, utc(2025, 6, 10, 7)),  # London; New York's 08:00 on the 10th is the same slot
        (10, 20, utc(2025, 6, 11, 0)),
        (11, 8, utc(2025, 6, 11, 12)),
    ]


def test_flying_east_follows_new_clock_from_the_switch():
    schedule = daily(time(8), time(20))
    history = TimeZoneHistory.of([(utc(2025, 1, 1), "Europe/London"), (utc(2025, 6, 10, 12), "Asia/Tokyo")])
    found = occurrences_with_history(schedule, history, utc(2025, 6, 10), utc(2025, 6, 12))
    # London 08:00 on the 10th (07:00 UTC) fires; at 12:00 UTC it is 21:00 in Tokyo, so Tokyo's 20:00 on
    # the 10th has passed and is not fired; then Tokyo's clock rules.
    assert [(o.local_date.day, o.local_time.hour, o.due_at_utc) for o in found] == [
        (10, 8, utc(2025, 6, 10, 7)),
        (11, 8, utc(2025, 6, 10, 23)),
        (11, 20, utc(2025, 6, 11, 11)),
        (12, 8, utc(2025, 6, 11, 23)),
    ]


ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "America/St_Johns",
    "America/Santiago",
    "America/Havana",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Dublin",
    "Europe/Chisinau",
    "Africa/Casablanca",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Antarctica/Troll",
]


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    first_day=st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 1)),
    days=st.integers(min_value=1, max_value=20),
    times=st.lists(
        st.times().map(lambda t: t.replace(second=0, microsecond=0)), min_size=1, max_size=4, unique=True
    ),
)
def test_property_one_occurrence_per_local_day_per_time(zone, first_day, days, times):
    tz = ZoneInfo(zone)
    schedule = ReminderSchedule(
        "r", WeeklyTimes(tuple(times)), first_day, end_date=first_day + timedelta(days=days - 1)
    )
    start = datetime.combine(first_day, time(0), tz).astimezone(UTC) - timedelta(days=2)
    found = list(occurrences(schedule, tz, start, start + timedelta(days=days + 4)))
    slots = [(o.local_date, o.local_time) for o in found]
    expected = {(first_day + timedelta(days=n), t) for n in range(days) for t in times}
    assert len(slots) == len(expected) and set(slots) == expected
    assert len({o.occurrence_id for o in found}) == len(found)
    dues = [o.due_at_utc for o in found]
    assert dues == sorted(dues)
    per_time = {}
    for o in found:
        per_time.setdefault(o.local_time, []).append(o.due_at_utc)
    for series in per_time.values():
        assert all(a < b for a, b in zip(series, series[1:], strict=False))


@settings(max_examples=40, deadline=None)
@given(
    zones=st.lists(st.sampled_from(ZONES), min_size=2, max_size=4),
    offsets=st.lists(st.integers(min_value=1, max_value=240), min_size=3, max_size=3),
)
def test_property_travel_never_duplicates_a_slot(zones, offsets):
    start = utc(2025, 3, 1)
    switches = [start + timedelta(hours=sum(offsets[: i + 1])) for i in range(len(zones) - 1)]
    history = TimeZoneHistory.of(
        [(start - timedelta(days=1), zones[0])] + list(zip(switches, zones[1:], strict=False))
    )
    schedule = daily(time(8), time(13, 30), time(22))
    found = occurrences_with_history(schedule, history, start, start + timedelta(days=14))
    ids = [o.occurrence_id for o in found]
    assert len(ids) == len(set(ids))
    for o in found:
        assert o.due_at_utc == resolve_local(o.local_date, o.local_time, history.zone_at(o.due_at_utc))
    dues = [o.due_at_utc for o in found]
    assert dues == sorted(dues)


def test_flying_east_keeps_the_slot_the_switch_jumped_over_on_the_new_clock():
    schedule = daily(time(8), time(20))
    history = TimeZoneHistory.of([(utc(2025, 1, 1), "Europe/London"), (utc(2025, 6, 10, 12), "Asia/Tokyo")])
    # At 12:00 UTC it is 21:00 in Tokyo: Tokyo's 20:00 on the 10th (11:00 UTC) has passed, London's (19:00
    # UTC) had not come. The slot is kept, on the Tokyo clock, flagged with the switch.
    (skipped,) = slots_skipped_by_moves(schedule, history, utc(2025, 6, 10), utc(2025, 6, 12))
    assert (skipped.local_date, skipped.local_time, skipped.due_at_utc, skipped.skipped_by_move_at) == (
        date(2025, 6, 10), time(20), utc(2025, 6, 10, 11), utc(2025, 6, 10, 12))
    assert skipped.occurrence_id == occurrence_id_for("r1", date(2025, 6, 10), time(20))
    assert slots_skipped_by_moves(schedule, history, utc(2025, 6, 10, 12, 1), utc(2025, 6, 12)) == []


def test_flying_west_skips_nothing_and_a_return_west_the_same_day_unskips_a_slot():
    schedule = daily(time(8), time(20))
    west = TimeZoneHistory.of([(utc(2025, 1, 1), "Europe/London"), (utc(2025, 6, 10, 10), "America/New_York")])
    assert slots_skipped_by_moves(schedule, west, utc(2025, 6, 9), utc(2025, 6, 12)) == []
    there_and_back = TimeZoneHistory.of([(utc(2025, 1, 1), "Europe/London"), (utc(2025, 6, 10, 12), "Asia/Tokyo"),
                                         (utc(2025, 6, 10, 14), "Europe/London")])
    assert slots_skipped_by_moves(schedule, there_and_back, utc(2025, 6, 9), utc(2025, 6, 12)) == []
    back = occurrences_with_history(schedule, there_and_back, utc(2025, 6, 10), utc(2025, 6, 11))
    assert [(o.local_time, o.due_at_utc) for o in back] == [(time(8), utc(2025, 6, 10, 7)), (time(20), utc(2025, 6, 10, 19))]


# Found by Hypothesis in CI: three moves within four hours, two of them jumping over the same 00:30 slot.
@example(zones=["America/New_York", "Europe/London", "America/New_York", "America/Sao_Paulo"],
         offsets=[1, 1, 2], times=[time(0, 30)])
@settings(max_examples=60, deadline=None)
@given(
    zones=st.lists(st.sampled_from(ZONES), min_size=2, max_size=4),
    offsets=st.lists(st.integers(min_value=1, max_value=60), min_size=3, max_size=3),
    times=st.lists(st.sampled_from([time(0, 30), time(2, 30), time(8), time(13, 30), time(22), time(23, 45)]),
                   min_size=1, max_size=4, unique=True),
)
def test_property_travel_accounts_for_every_slot_exactly_once(zones, offsets, times):
    """Every slot of the days travelled is either due in the zone in force then, or kept as skipped."""
    start = utc(2025, 3, 1)
    switches = [start + timedelta(days=3, hours=sum(offsets[: i + 1])) for i in range(len(zones) - 1)]
    history = TimeZoneHistory.of([(start - timedelta(days=30), zones[0])] + list(zip(switches, zones[1:], strict=False)))
    schedule = ReminderSchedule("r", WeeklyTimes(tuple(times)), date(2025, 1, 1))
    end = start + timedelta(days=14)
    due = occurrences_with_history(schedule, history, start, end)
    skipped = slots_skipped_by_moves(schedule, history, start, end)
    slots = [(o.local_date, o.local_time) for o in due + skipped]
    wanted = {(start.date() + timedelta(days=n), t) for n in range(2, 12) for t in times}
    assert wanted <= set(slots)
    assert len(slots) == len(set(slots))
    assert all(o.due_at_utc < o.skipped_by_move_at for o in skipped)


def test_two_slots_the_spring_forward_gap_makes_due_at_once_share_the_earlier_ones_push():
    schedule = daily(time(2, 30), time(3), time(9))
    found = list(occurrences(schedule, ZoneInfo("America/New_York"), utc(2025, 3, 9), utc(2025, 3, 10)))
    assert [(o.local_time, o.due_at_utc, o.push_with) for o in found] == [
        (time(2, 30), utc(2025, 3, 9, 7), None),
        (time(3), utc(2025, 3, 9, 7), found[0].occurrence_id),
        (time(9), utc(2025, 3, 9, 13), None)]
    a_day_later = list(occurrences(schedule, ZoneInfo("America/New_York"), utc(2025, 3, 10), utc(2025, 3, 11)))
    assert all(o.push_with is None for o in a_day_later)


def test_a_snooze_before_the_due_time_counts_from_the_due_time():
    schedule = daily(time(8), completion_window_minutes=30)
    occurrence = next(occurrences(schedule, ZoneInfo("Europe/London"), utc(2025, 1, 6), utc(2025, 1, 7)))
    assert snoozed_until(occurrence, utc(2025, 1, 6, 7, 40), 10) == utc(2025, 1, 6, 8, 10)
    assert snoozed_until(occurrence, utc(2025, 1, 6, 7, 40), 45) == utc(2025, 1, 6, 8, 30)


@pytest.mark.parametrize(("seen", "changed_at", "expected"), [
    (0, utc(2025, 3, 3, 12), utc(2025, 3, 3, 12)),  # nothing seen to today: from the change
    (1, utc(2025, 3, 3, 12), utc(2025, 3, 3, 21)),  # one dose taken: the second new time (21:00) is left
    (1, utc(2025, 3, 3, 22), utc(2025, 3, 3, 22)),  # ... and never before the change
    (2, utc(2025, 3, 3, 12), utc(2025, 3, 4)),  # both seen to: from tomorrow
    (3, utc(2025, 3, 3, 12), utc(2025, 3, 4)),
])
def test_a_changed_schedule_reminds_today_only_past_the_doses_seen_to(seen, changed_at, expected):
    new = daily(time(13), time(21))
    today = list(occurrences(new, ZoneInfo("UTC"), utc(2025, 3, 3), utc(2025, 3, 4)))
    assert changed_schedule_starts(changed_at, today[::-1], seen, utc(2025, 3, 4)) == expected


@pytest.mark.parametrize(("seen", "kept", "expected"), [
    (2, {"20:00"}, utc(2025, 3, 3, 20)),  # every changed time seen to: the 20:00 it keeps is still today's
    (1, {"20:00"}, utc(2025, 3, 3, 12)),  # the dose seen to stands for 07:00, not for the 20:00 kept
    (1, {"12:00"}, utc(2025, 3, 3, 12)),  # ... and a kept slot to come is never passed over
    (0, {"12:00"}, utc(2025, 3, 3, 9)),
])
def test_a_time_the_new_schedule_keeps_keeps_its_slot(seen, kept, expected):
    new = daily(time(7), time(12), time(20))
    today = list(occurrences(new, ZoneInfo("UTC"), utc(2025, 3, 3), utc(2025, 3, 4)))
    ids = frozenset(o.occurrence_id for o in today if o.local_time.strftime("%H:%M") in kept)
    assert changed_schedule_starts(utc(2025, 3, 3, 9), today, seen, utc(2025, 3, 4), ids) == expected
