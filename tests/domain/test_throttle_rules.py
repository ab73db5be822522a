"""The throttling rules, without a database: sliding windows, growing delays, and the owner's known address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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


TICK = timedelta(milliseconds=100)


def _owner_against_an_outsider(step_name: str, *, for_owner: dict, outsider_stops: timedelta = timedelta(hours=2)):
    """An outsider who knows only the email lands a guess, each from a fresh network, whenever the throttle lets
    one in (renewing any account-wide delay as it ends, polling for free in between) until ``outsider_stops``;
    two minutes in, the owner tries and, refused, tries again exactly when Retry-After says. When the owner got
    in, and when they first tried (None: not within two hours)."""
    step = STEPS[step_name]
    failures: list[datetime] = []
    at = T
    owner_at = owner_first = T + timedelta(minutes=2, milliseconds=50)
    end = T + timedelta(hours=2)
    while at < end:
        if at < T + outsider_stops and wait_s(step, at=at, address_attempts=[], account_failures=failures) == 0:
            failures.append(at)
        if at <= owner_at < at + TICK:
            wait = wait_s(step, at=owner_at, address_attempts=[], pair_failures=[], account_failures=failures,
                          **for_owner)
            if wait == 0:
                return owner_at, owner_first
            owner_at += timedelta(seconds=wait)
        at += TICK
    return None, owner_first


@pytest.mark.parametrize(("step_name", "for_owner"), [
    ("login", {"device_key_failures": []}),  # the phone or browser that signed in before
    ("login", {"device_key_failures": seconds(*range(9))}),  # the owner mistyped there nine times this hour
    ("login", {"known_address": True}),
    ("code", {}),  # a sign-up or reset code: no account-wide delay at all
])
def test_an_owner_who_waits_as_told_gets_in_at_once_despite_an_outsider_renewing_the_delay(step_name, for_owner):
    """Someone who knows only the email guessed as each delay ended and kept the owner out for good (77 password
    guesses an hour, 26 code guesses): a delay from the last failure is renewed by whoever lands a guess as it
    ends. The owner's device key, the owner's address or (codes) the code's entropy now stand between them."""
    owner_in, owner_first = _owner_against_an_outsider(step_name, for_owner=for_owner)
    assert owner_in == owner_first


def test_an_owner_on_a_new_device_at_a_new_address_waits_while_the_outsider_guesses_and_a_minute_after_at_most():
    """The documented limit (docs/access.md §3): a device without a key, at an address the account never signed
    in from, cannot be told from the guesser; each wait is at most a minute, and the last ends a minute after the
    guessing stops."""
    owner_in, owner_first = _owner_against_an_outsider("login", for_owner={}, outsider_stops=timedelta(minutes=30))
    assert owner_in is not None and owner_in > T + timedelta(minutes=30)
    assert owner_in - (T + timedelta(minutes=30)) <= timedelta(seconds=2 * 60)


def test_a_device_key_that_failed_ten_times_in_an_hour_is_a_device_like_any_other():
    """A stolen key is worth ten guesses an hour past the account-wide delay, no more."""
    login = STEPS["login"]
    many = [T + timedelta(seconds=s) for s in range(50)]
    at = T + timedelta(minutes=1)
    assert wait_s(login, at=at, address_attempts=[], account_failures=many, device_key_failures=many[:9]) == 0
    assert 0 < wait_s(login, at=at, address_attempts=[], account_failures=many, device_key_failures=many[:10]) <= 60
    assert wait_s(login, at=T + timedelta(hours=1, seconds=1), address_attempts=[], account_failures=many[-1:],
                  device_key_failures=many[:10]) == 0  # the oldest left the hour
    # No key (None) is not a key without failures ([]).
    assert wait_s(login, at=at, address_attempts=[], account_failures=many, device_key_failures=None) > 0
    # Only sign-in takes device keys.
    assert wait_s(STEPS["totp"], at=at, address_attempts=[], account_failures=many, device_key_failures=[]) > 0


def test_a_usable_device_key_skips_the_delay_per_account_and_network_too():
    """Someone on the owner's network (a housemate, a carrier's NAT) builds up the delay per account and network,
    from the last failure, up to 15 minutes: the owner's key skips it, as it skips the account-wide one; a key
    past its limit skips neither, and a known address skips only the account-wide one (it is that network)."""
    login = STEPS["login"]
    at = T + timedelta(minutes=1)
    here = [T + timedelta(seconds=s) for s in range(12)]
    assert wait_s(login, at=at, address_attempts=[], pair_failures=here) > 0
    assert wait_s(login, at=at, address_attempts=[], pair_failures=here, account_failures=here,
                  device_key_failures=[]) == 0
    assert wait_s(login, at=at, address_attempts=[], pair_failures=here, device_key_failures=here[:10]) > 0
    assert wait_s(login, at=at, address_attempts=[], pair_failures=here, known_address=True) > 0
