"""Backoff for pushes FCM asked us to retry (pure, no server)."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from companion.notify.retry_policy import RetryPolicy
from tests.notify.clock import T0

POLICY = RetryPolicy()


def test_first_delay_is_at_least_ten_seconds_without_retry_after():
    assert POLICY.delay_bounds(1, None)[0] == timedelta(seconds=10)


@given(st.integers(min_value=1, max_value=2), st.integers(0, 86400))
def test_delay_is_never_shorter_than_retry_after(attempts, retry_after_s):
    assert POLICY.delay_bounds(attempts, timedelta(seconds=retry_after_s))[0] == timedelta(seconds=retry_after_s)


def test_no_retry_once_the_attempts_are_used_up_for_a_notification_without_a_window():
    # Was 3 attempts for every kind: a two-minute FCM outage then lost reminders whose window was still open.
    assert POLICY.max_attempts == 10
    assert POLICY.earliest_retry(T0, 9, None, random.Random(1)) is not None
    assert POLICY.earliest_retry(T0, 10, None, random.Random(1)) is None


@given(st.integers(min_value=1, max_value=10_000), st.integers())
def test_a_notification_with_a_window_gets_a_retry_time_whatever_its_attempts(attempts, seed):
    retry_at = POLICY.earliest_retry(T0, attempts, None, random.Random(seed), in_window=True)
    assert T0 + timedelta(seconds=10) <= retry_at <= T0 + timedelta(minutes=5)


def test_retry_after_is_honoured_beyond_the_window_cap():
    assert POLICY.delay_bounds(50, timedelta(minutes=20), in_window=True) == (timedelta(minutes=20),) * 2


@given(st.integers(min_value=1, max_value=8), st.one_of(st.none(), st.integers(0, 3600)))
def test_delay_bounds_never_shrink_from_one_attempt_to_the_next(attempts, retry_after_s):
    retry_after = None if retry_after_s is None else timedelta(seconds=retry_after_s)
    now, later = POLICY.delay_bounds(attempts, retry_after), POLICY.delay_bounds(attempts + 1, retry_after)
    assert now[0] <= later[0] and now[1] <= later[1]


@given(st.integers(min_value=1, max_value=2), st.one_of(st.none(), st.integers(0, 3600)), st.integers())
def test_earliest_retry_falls_within_the_jitter_bounds(attempts, retry_after_s, seed):
    retry_after = None if retry_after_s is None else timedelta(seconds=retry_after_s)
    shortest, longest = POLICY.delay_bounds(attempts, retry_after)
    retry_at = POLICY.earliest_retry(T0, attempts, retry_after, random.Random(seed))
    assert T0 + shortest <= retry_at <= T0 + longest
