from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.domain.localtime import TimeZoneHistory, is_known_zone, require_utc, zone_named
from companion.domain.quiet_hours import QuietHours, in_quiet_hours, next_allowed, silenced


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


NIGHT = QuietHours(time(22, 0), time(7, 0))
AFTERNOON = QuietHours(time(13, 0), time(15, 0))


@pytest.mark.parametrize(
    ("quiet", "local_time", "expected"),
    [
        (NIGHT, time(21, 59), False),
        (NIGHT, time(22, 0), True),
        (NIGHT, time(23, 30), True),
        (NIGHT, time(0, 0), True),
        (NIGHT, time(6, 59), True),
        (NIGHT, time(7, 0), False),
        (AFTERNOON, time(12, 59), False),
        (AFTERNOON, time(13, 0), True),
        (AFTERNOON, time(15, 0), False),
        (QuietHours(time(9), time(9)), time(9), False),
        (None, time(3), False),
    ],
)
def test_in_quiet_hours_handles_wrapping_and_edges(quiet, local_time, expected):
    assert in_quiet_hours(local_time, quiet) is expected


@pytest.mark.parametrize(
    ("due", "quiet", "expected"),
    [
        (utc(2025, 6, 2, 12), NIGHT, utc(2025, 6, 2, 12)),  # 13:00 BST, not quiet
        (utc(2025, 6, 2, 22), NIGHT, utc(2025, 6, 3, 6)),  # 23:00 BST -> 07:00 BST next day
        (utc(2025, 6, 3, 1), NIGHT, utc(2025, 6, 3, 6)),  # 02:00 BST -> 07:00 BST same day
        (utc(2025, 6, 2, 12, 30), AFTERNOON, utc(2025, 6, 2, 14)),  # 13:30 BST -> 15:00 BST
        (utc(2025, 10, 25, 22), NIGHT, utc(2025, 10, 26, 7)),  # fall back overnight: 07:00 GMT
    ],
)
def test_next_allowed_defers_to_end_of_quiet_hours_in_london(due, quiet, expected):
    assert next_allowed(due, ZoneInfo("Europe/London"), quiet) == expected


CLOCK_TIMES = st.builds(time, st.integers(0, 23), st.integers(0, 59))


@given(start=CLOCK_TIMES, end=CLOCK_TIMES, due=CLOCK_TIMES, window=st.integers(5, 24 * 60))
def test_a_time_is_silenced_exactly_when_its_first_push_would_wait_past_its_window(start, end, due, window):
    """The reminder's flag agrees with what the dispatch does with its occurrence: its first push waits for the end
    of the quiet hours (next_allowed) and is sent only before the window closes (on a day without a clock change)."""
    quiet = QuietHours(start, end)
    due_at = datetime.combine(date(2026, 3, 2), due, tzinfo=UTC)
    expected = next_allowed(due_at, ZoneInfo("UTC"), quiet) >= due_at + timedelta(minutes=window)
    assert silenced(due, timedelta(minutes=window), quiet) is expected
    assert not silenced(due, timedelta(minutes=window), None)


@pytest.mark.parametrize(("due", "expected"), [
    (utc(2026, 10, 25, 0, 10), utc(2026, 10, 25, 0, 30)),  # 01:10 BST: quiet until 01:30 BST
    (utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 1, 30)),  # 01:10 GMT, the hour again: until 01:30 GMT
    (utc(2026, 10, 25, 0, 40), utc(2026, 10, 25, 0, 40)),  # 01:40 BST: quiet hours are over
])
def test_next_allowed_quiet_hours_ending_in_the_repeated_hour_end_at_the_wall_time_the_patient_sees(due, expected):
    quiet = QuietHours(time(23, 0), time(1, 30))
    assert next_allowed(due, ZoneInfo("Europe/London"), quiet) == expected


def test_next_allowed_quiet_end_in_dst_gap_goes_to_end_of_gap():
    quiet = QuietHours(time(0, 0), time(2, 30))
    assert next_allowed(utc(2025, 3, 9, 5, 30), ZoneInfo("America/New_York"), quiet) == utc(2025, 3, 9, 7)


def test_zone_history_picks_zone_in_force_and_earliest_before_first_change():
    history = TimeZoneHistory.of([(utc(2025, 6, 10), "Asia/Tokyo"), (utc(2025, 1, 1), "Europe/London")])
    assert history.zone_at(utc(2024, 1, 1)).key == "Europe/London"
    assert history.zone_at(utc(2025, 6, 9, 23, 59)).key == "Europe/London"
    assert history.zone_at(utc(2025, 6, 10)).key == "Asia/Tokyo"


def test_zone_history_segments_cover_interval_without_overlap():
    history = TimeZoneHistory.of([(utc(2025, 1, 1), "Europe/London"), (utc(2025, 6, 10), "Asia/Tokyo")])
    pieces = history.segments(utc(2025, 6, 1), utc(2025, 7, 1))
    assert [(a, b, z.key) for a, b, z in pieces] == [
        (utc(2025, 6, 1), utc(2025, 6, 10), "Europe/London"),
        (utc(2025, 6, 10), utc(2025, 7, 1), "Asia/Tokyo"),
    ]


def test_unknown_zone_and_naive_instants_are_rejected():
    with pytest.raises(ValueError, match="unknown time zone"):
        zone_named("Mars/Olympus_Mons")
    assert not is_known_zone("Mars/Olympus_Mons") and is_known_zone("Asia/Kolkata")
    # Files of the zone directory that are not zones of the database: the server's own zone, leap-second time
    # (27 seconds off), a copy, the rules file; and a name that ZoneInfo would read as a path.
    for name in ("localtime", "right/Europe/London", "posix/Europe/London", "posixrules", "Europe/London\n"):
        assert not is_known_zone(name), name
    with pytest.raises(ValueError, match="timezone-aware"):
        require_utc(datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        TimeZoneHistory.of([])


def test_a_day_spans_what_the_patient_lived_of_it():
    from companion.domain.localtime import day_span

    day = date(2026, 3, 10)
    new_york = TimeZoneHistory.fixed("America/New_York")
    assert day_span(new_york, day) == (datetime(2026, 3, 10, 4, 0, tzinfo=UTC), datetime(2026, 3, 11, 4, 0, tzinfo=UTC),
                                       ZoneInfo("America/New_York"))  # daylight time from 8 March
    # Flying east at 20:00 UTC lands at 01:30 on 11 March in Kolkata: 10 March ended at the move.
    east = TimeZoneHistory.of([(datetime(2026, 1, 1, tzinfo=UTC), "America/New_York"),
                               (datetime(2026, 3, 10, 20, 0, tzinfo=UTC), "Asia/Kolkata")])
    assert day_span(east, day)[:2] == (datetime(2026, 3, 10, 4, 0, tzinfo=UTC), datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    assert day_span(east, date(2026, 3, 11))[0] == datetime(2026, 3, 10, 20, 0, tzinfo=UTC)
    # Flying west at 06:00 UTC (15:00 in Tokyo) into the same date's morning in Los Angeles: it ends there.
    west = TimeZoneHistory.of([(datetime(2026, 1, 1, tzinfo=UTC), "Asia/Tokyo"),
                               (datetime(2026, 3, 10, 6, 0, tzinfo=UTC), "America/Los_Angeles")])
    assert day_span(west, day) == (datetime(2026, 3, 9, 15, 0, tzinfo=UTC), datetime(2026, 3, 11, 7, 0, tzinfo=UTC),
                                   ZoneInfo("America/Los_Angeles"))
    # A date a move jumped over entirely (UTC-12 to Kiritimati's UTC+14: 23:00 on 9 March becomes 01:00 on 11 March)
    # was never lived: it keeps the plain bounds of the zone in force at noon UTC.
    jump = TimeZoneHistory.of([(datetime(2026, 1, 1, tzinfo=UTC), "Etc/GMT+12"),
                               (datetime(2026, 3, 10, 11, 0, tzinfo=UTC), "Pacific/Kiritimati")])
    start, end, zone = day_span(jump, day)
    assert (end - start, zone) == (timedelta(days=1), ZoneInfo("Pacific/Kiritimati"))  # in force at noon UTC


def test_a_date_is_lived_unless_a_move_or_the_zone_itself_jumped_over_it():
    from companion.domain.localtime import lived

    jump = TimeZoneHistory.of([(datetime(2026, 1, 1, tzinfo=UTC), "Pacific/Pago_Pago"),
                               (datetime(2026, 3, 6, 10, 30, tzinfo=UTC), "Pacific/Kiritimati")])  # 23:30, 5 March
    assert [lived(jump, date(2026, 3, d)) for d in (5, 6, 7)] == [True, False, True]
    apia = TimeZoneHistory.fixed("Pacific/Apia")  # Samoa crossed the date line at the end of 29 December 2011
    assert [lived(apia, date(2011, 12, d)) for d in (29, 30, 31)] == [True, False, True]
    # A move west lives a date twice, not never.
    west = TimeZoneHistory.of([(datetime(2026, 1, 1, tzinfo=UTC), "Pacific/Kiritimati"),
                               (datetime(2026, 3, 10, 20, 0, tzinfo=UTC), "Pacific/Pago_Pago")])
    assert all(lived(west, date(2026, 3, d)) for d in range(9, 13))
