"""Sign-up's rules, without a database: someone who knows only the email, requesting sign-ups for it as fast as they
like from as many networks as they like, neither keeps its owner from signing up nor fills the owner's mailbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from companion.domain.signup import CODE_TTL, MAILS, PENDING_TTL
from companion.domain.throttling import STEPS, wait_s

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _mails(requests: list[datetime]) -> list[datetime]:
    """Which requests for one email are mailed, in their order: each while fewer than MAILS.limit mails come before
    it in MAILS.window (what Throttle.within_quota decides)."""
    mailed: list[datetime] = []
    for at in sorted(requests):
        if MAILS.wait_s(mailed, at) == 0:
            mailed.append(at)
    return mailed


def _assert_bounded_and_owner_served(outsider: list[datetime], owner_at: datetime) -> None:
    mailed = _mails([*outsider, owner_at])
    # The mailbox gets at most 12 sign-up mails in any hour, however the requests come.
    for first in mailed:
        assert sum(first <= m < first + HOUR for m in mailed) <= MAILS.limit * (HOUR // MAILS.window)
    # The owner's request is mailed, or the newest mail before it has a code alive for at least 15 more minutes:
    # the owner finishes with it (any live code finishes any pending request of the email, with its password).
    if owner_at not in mailed:
        newest = max(m for m in mailed if m <= owner_at)
        assert newest + CODE_TTL - owner_at > CODE_TTL - MAILS.window >= timedelta(minutes=15)
    # ... and within the owner's own request's life.
    assert CODE_TTL - MAILS.window <= PENDING_TTL


@given(gaps=st.lists(st.floats(min_value=0.0, max_value=900.0), min_size=1, max_size=400),
       owner_after_s=st.floats(min_value=0.0, max_value=4 * 3600.0))
def test_the_owner_always_has_a_live_code_and_the_mailbox_a_bounded_number_of_mails(gaps, owner_after_s):
    outsider, at = [], T
    for gap in gaps:
        at += timedelta(seconds=gap)
        outsider.append(at)
    _assert_bounded_and_owner_served(outsider, T + timedelta(seconds=owner_after_s))


def test_an_outsider_requesting_every_tenth_of_a_second_for_two_hours_is_mailed_twelve_times_an_hour():
    outsider = [T + timedelta(milliseconds=100 * i) for i in range(2 * 36000)]
    for minute in (0, 7, 14, 15, 29, 61, 119):
        _assert_bounded_and_owner_served(outsider, T + timedelta(minutes=minute, milliseconds=50))
    assert len(_mails(outsider)) == 2 * 12


def test_no_request_for_an_email_from_elsewhere_makes_its_owner_wait():
    """The per-email wait ran from the last request, so someone requesting as each wait ended kept the owner from
    signing up: now only the caller's own network waits (per address, and per address and email)."""
    signup = STEPS["signup"]
    flood = [T + timedelta(seconds=s) for s in range(0, 3600, 10)]
    assert signup.per_account is None
    assert wait_s(signup, at=T + HOUR, address_attempts=[], pair_failures=[], account_failures=flood) == 0
    # The caller's own network still waits when it asks too often.
    assert wait_s(signup, at=T + HOUR, address_attempts=flood[-10:], pair_failures=flood[-4:]) > 0
