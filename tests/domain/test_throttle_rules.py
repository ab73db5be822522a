"""The throttling rules, without a database: sliding windows, growing delays, and the owner's known address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.domain.throttling import STEPS, Backoff, Limit, network_of, wait_s

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def seconds(*offsets: float) -> list[datetime]:
    return [T + timedelta(seconds=s) for s in offsets]


def test_a_sliding_window_lets_one_more_in_as_soon_as_the_oldest_leaves():
    limit = Limit(3, timedelta(minutes=1))
    assert limit.wait_s(seconds(0, 10), T + timedelta(seconds=20)) == 0
    assert limit.wait_s(seconds(0, 10, 20), T + timedelta(seconds=30)) == 30  # the one at 0 leaves at 60
    assert limit.wait_s(seconds(0, 10, 20), T + timedelta(seconds=60)) == 0


def test_a_backoff_doubles_after_the_free_failures_and_stops_at_its_cap():
    backoff = Backoff(free=3, window=timedelta(minutes=15), first_s=1, max_s=60)
    assert [backoff.delay_s(n) for n in range(0, 12)] == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.wait_s(seconds(0, 1, 2, 3), T + timedelta(seconds=3)) == 2  # 4 failures: 2 s after the last
    assert backoff.wait_s(seconds(0, 1, 2, 3), T + timedelta(seconds=5)) == 0
    assert backoff.wait_s(seconds(0, 1, 2, 3), T + timedelta(minutes=20)) == 0  # they left the window


def test_sign_in_is_never_a_lock_and_the_owners_address_skips_the_account_wide_delay():
    login = STEPS["login"]
    at = T + timedelta(minutes=1)
    many = [T + timedelta(seconds=s) for s in range(50)]
    assert 0 < wait_s(login, at=at, address_attempts=[], account_failures=many) <= 60
    assert wait_s(login, at=at, address_attempts=[], account_failures=many, known_address=True) == 0
    # The TOTP step has no known-address exemption: the password is already proven.
    assert wait_s(STEPS["totp"], at=at, address_attempts=[], account_failures=many, known_address=True) > 0


def test_an_ipv6_address_counts_as_its_64_and_an_ipv4_address_as_itself():
    assert network_of("2001:db8:1:2::1") == network_of("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert network_of("2001:db8:1:3::1") != network_of("2001:db8:1:2::1")
    assert network_of("fe80::1%eth0") == "fe80::/64"
    assert network_of("::ffff:198.51.100.7") == network_of("198.51.100.7") == "198.51.100.7"
    assert network_of("198.51.100.8") != network_of("198.51.100.7")
    assert network_of("unknown") == "unknown"


def test_pairing_failures_from_anywhere_meet_a_ceiling_that_lets_one_more_in_as_soon_as_the_oldest_leaves():
    pairing = STEPS["pairing"]
    flood = [T + timedelta(seconds=s / 2) for s in range(60)]  # 60 failures in the first 30 s
    at = T + timedelta(seconds=40)
    assert wait_s(pairing, at=at, address_attempts=[], server_failures=flood[:59]) == 0
    assert wait_s(pairing, at=at, address_attempts=[], server_failures=flood) == 20  # the first leaves at 60 s
    assert wait_s(pairing, at=T + timedelta(seconds=60), address_attempts=[], server_failures=flood) == 0
    assert STEPS["login"].per_server is None  # an account's owner is never held back by a flood on others
