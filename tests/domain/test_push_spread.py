"""Non-urgent pushes spread over a window, each recipient at a fixed place in it (send_offset)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from companion.domain.notifications import NUDGE_SPREAD, SUMMARY_SPREAD, TEMPLATES, send_offset, ttl_for


def test_a_recipients_place_is_the_same_every_time_and_differs_between_recipients():
    ttl = timedelta(hours=2)
    assert send_offset("practice_nudge", "p-1", ttl) == send_offset("practice_nudge", "p-1", ttl)
    assert len({send_offset("practice_nudge", f"p-{n}", ttl) for n in range(50)}) > 40


def test_ten_thousand_summaries_fill_their_half_hour_evenly():
    per_minute = Counter(send_offset("generic_update", f"p-{n}", ttl_for("generic_update")) // timedelta(minutes=1)
                         for n in range(10_000))
    assert sorted(per_minute) == list(range(int(SUMMARY_SPREAD / timedelta(minutes=1))))
    assert max(per_minute.values()) < 2 * 10_000 / 30  # no minute carries twice its share


def test_a_short_window_keeps_three_quarters_of_its_validity():
    ttl = timedelta(minutes=8)
    assert all(send_offset("practice_nudge", f"p-{n}", ttl) < ttl / 4 for n in range(200))
    assert ttl / 4 < NUDGE_SPREAD  # the window is what bounds it here


@pytest.mark.parametrize("kind", sorted(k for k, t in TEMPLATES.items() if t.urgent or not t.spread))
def test_urgent_and_timed_kinds_go_on_the_minute(kind):
    assert all(send_offset(kind, f"p-{n}", ttl_for(kind)) == timedelta(0) for n in range(20))


def test_only_nudges_and_summaries_are_spread():
    assert {k for k, t in TEMPLATES.items() if t.spread} == {"practice_nudge", "generic_update"}
    assert not any(t.urgent for t in TEMPLATES.values() if t.spread)
