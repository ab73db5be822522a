"""The adherence heat map's month labels: a column is named after a month it shows, and no label is cut; the pain
chart places a rating at its clock time where it was made."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from companion.web.charts import (
    CELL,
    GAP,
    HEAT_LEFT,
    LABEL_CHAR_W,
    adherence_heatmap,
    month_labels,
    pain_chart,
)


def calendar(first: date, last: date) -> list[dict]:
    return [{"date": (first + timedelta(days=n)).isoformat(), "state": "progress", "covered": True, "tens_fraction": 1.0}
            for n in range((last - first).days + 1)]


def test_the_column_of_monday_30_november_is_novembers_not_decembers():
    # 30 days up to Monday 30 November 2026: the last column holds that Monday alone.
    assert month_labels(calendar(date(2026, 11, 1), date(2026, 11, 30))) == [(0, "Nov 2026")]


def test_a_month_is_named_at_the_first_column_that_starts_in_it():
    # 90 days to Monday 30 November 2026: 2 September is a Wednesday, 1 October a Thursday, 1 November a Sunday.
    labels = month_labels(calendar(date(2026, 9, 2), date(2026, 11, 30)))
    monday = date(2026, 8, 31)
    assert [(col, text) for col, text in labels] == [(0, "Sep 2026"), (5, "Oct 2026"), (9, "Nov 2026")]
    assert [monday + timedelta(weeks=col) for col, _ in labels] == [date(2026, 8, 31), date(2026, 10, 5),
                                                                     date(2026, 11, 2)]


def test_the_first_label_gives_way_when_the_next_column_starts_a_month():
    # From Thursday 29 October: the first column shows four days of October and 1 November.
    assert month_labels(calendar(date(2026, 10, 29), date(2026, 11, 27))) == [(1, "Nov 2026")]


def test_a_label_in_the_last_column_fits_inside_the_drawing():
    # To Monday 7 December 2026: December's first column is the last one, a single day wide.
    days = calendar(date(2026, 11, 8), date(2026, 12, 7))
    col, text = month_labels(days)[-1]
    assert text == "Dec 2026"
    width = int(re.search(r'<svg class="heatmap" width="(\d+)"', str(adherence_heatmap(days))).group(1))
    assert HEAT_LEFT + col * (CELL + GAP) + len(text) * LABEL_CHAR_W <= width


def test_a_rating_made_before_a_move_is_shown_at_its_time_where_it_was_made():
    moved = datetime(2026, 3, 11, 12, tzinfo=UTC)
    rated = datetime(2026, 3, 11, 1, 35, tzinfo=UTC)  # 21:35 on 10 March in New York, before the move to London

    def zone_of(moment):
        return "America/New_York" if moment < moved else "Europe/London"

    entry = {"_id": "e1", "recorded_at": rated, "nrs": 6}
    drawn = str(pain_chart([entry], [], zone_of, date(2026, 3, 10), date(2026, 3, 12)))
    assert "<title>2026-03-10: NRS 6</title>" in drawn
