from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from companion.domain.localtime import TimeZoneHistory, is_known_zone, require_utc, zone_named
from companion.domain.quiet_hours import QuietHours, in_quiet_hours, next_allowed


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
    with pytest.raises(ValueError, match="timezone-aware"):
        require_utc(datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        TimeZoneHistory.of([])
