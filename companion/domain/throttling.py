"""How often a credential may be tried: sliding-window limits and progressive delays, never a hard lock.

Each step that checks a secret (password, TOTP code, refresh token, pairing code, signup or reset code) is
guarded three ways (:data:`STEPS`):

- **per client address**, a sliding-window :class:`Limit` on attempts: one address cannot hammer any
  account, and it only ever slows itself down;
- **per account and address**, a :class:`Backoff` on failures: after a few free mistakes each further try
  from that address waits twice as long as the last (capped). It too runs from the last failure, and the owner's
  own network is shared (a housemate on the Wi-Fi, a carrier's NAT): at sign-in a device key skips it as well;
- **per account, from anywhere**, a gentler :class:`Backoff` on failures: many addresses guessing one
  password together get one try every little while. Its wait runs from the *last* failure, so whoever lands
  a guess as each wait ends keeps it going: it must never stand between the owner and their account. So it
  is only on steps a device can skip: sign-in, where a *device key* (a key the server gave a client that
  signed in with the password before, see companion.services.device_keys) or a *known address* (one the
  owner signed in from in the last 30 days) skips it; the codes sent by email or handed out by an admin
  have none (60 bits each: guessing is bounded by their entropy and the per-address guards);
- **per device key** (sign-in), a :class:`Limit` on the failures made presenting one key: under it, the key
  skips both delays above, past it, neither (a stolen key is worth 10 guesses an hour, from anywhere, and the
  owner who mistyped that often waits as a device without a key does);
- **from anywhere at all** (only pairing codes, which name no account), a sliding-window :class:`Limit` on
  the whole server's failures: a flood from many networks gets so many guesses a minute, however many
  networks it has.

An *address* is the client's network as :func:`network_of` says: an IPv4 address as it is, an IPv6 address
by its /64. A /64 is the smallest block a network hands out (a home line, a phone's mobile connection, a
cloud host gets one whole), and a host picks any address in it (privacy addresses rotate daily, and one host
can use billions): keyed per exact address, one host could give every guess a fresh address.

Everything is decided from the instants of earlier attempts and failures (kept in the database, shared by
every worker): nothing here keeps state.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

KNOWN_ADDRESS_FOR = timedelta(days=30)
IPV6_NETWORK_BITS = 64


def network_of(address: str) -> str:
    """The network an attempt is counted against: an IPv6 address's /64 (an IPv4 address mapped into IPv6 is
    the IPv4 address), an IPv4 address as it is; anything else (no address known) as given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_NETWORK_BITS), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` attempts in any sliding ``window``."""

    limit: int
    window: timedelta

    def wait_s(self, attempts: Sequence[datetime], at: datetime) -> float:
        """Seconds until one more attempt fits (0: now). ``attempts`` are the earlier attempts' instants."""
        recent = sorted(a for a in attempts if a > at - self.window)
        if len(recent) < self.limit:
            return 0.0
        # The attempt that must leave the window before another fits.
        blocking = recent[len(recent) - self.limit]
        return max(0.0, (blocking + self.window - at).total_seconds())


@dataclass(frozen=True)
class Backoff:
    """``free`` failures in a sliding ``window`` cost nothing; after that each try must wait
    ``first_s`` × 2^(failures − free) seconds after the last failure, at most ``max_s``."""

    free: int
    window: timedelta
    first_s: float
    max_s: float

    def delay_s(self, failures: int) -> float:
        """The wait after the last of ``failures`` recent failures."""
        if failures < self.free:
            return 0.0
        return min(self.max_s, self.first_s * 2 ** (failures - self.free))

    def wait_s(self, failures: Sequence[datetime], at: datetime) -> float:
        """Seconds until the next try is allowed (0: now)."""
        recent = sorted(f for f in failures if f > at - self.window)
        delay = self.delay_s(len(recent))
        if delay == 0:
            return 0.0
        return max(0.0, (recent[-1] + timedelta(seconds=delay) - at).total_seconds())


@dataclass(frozen=True)
class Step:
    """The guards of one credential-checking step (any may be None)."""

    name: str
    per_address: Limit
    per_account_and_address: Backoff | None = None
    per_account: Backoff | None = None
    # Failures from anywhere, for a step whose guesser names no account (a flood from many networks).
    per_server: Limit | None = None
    # Whether an address the account recently signed in from skips the per-account delay.
    known_addresses_exempt: bool = False
    # Failures presenting one device key: under it, a valid key skips the per-account delay.
    per_device_key: Limit | None = None

    @property
    def longest_window(self) -> timedelta:
        return max(w.window for w in (self.per_address, self.per_account_and_address, self.per_account,
                                      self.per_server, self.per_device_key) if w)


MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
QUARTER = timedelta(minutes=15)

STEPS: dict[str, Step] = {s.name: s for s in (
    # Passwords: 60 tries a minute per address; 5 free mistakes per account and address, then 1 s, 2 s, ...
    # up to 15 min; 10 free per account from anywhere, then 1 s, 2 s, ... up to a minute. Many networks guessing
    # together land at most 77 guesses in any hour on one account (10 free, 6 more within 63 s, then about one a
    # minute: 64 an hour once it runs).
    # A device key the account was given (with fewer than 10 failures in the last hour) skips both delays, per
    # account and network and per account: the owner signs in at once from a phone or browser that signed in
    # before, however many guess, from the owner's own network too (a housemate on the Wi-Fi, a carrier's NAT,
    # renewing the 15-minute delay there as each wait ends, kept the key out). A stolen key adds at most 10
    # guesses an hour to the 77, from any networks and at once (its limit, not the delays, bounds it).
    # A known address skips the account-wide delay only (it is the guesser's network when they share it).
    # A device without a key waits: at a new address, each time until the last guess's minute ends, for as long
    # as someone keeps guessing at that rate, at most a minute after they stop; on a network someone else on it
    # guesses from, up to 15 minutes each time, for as long as they keep guessing there (no key, no way to tell
    # the two apart). A step-up (the current password asked again of a signed-in caller) presents the caller's
    # session as its device key.
    Step("login", Limit(60, MINUTE), Backoff(5, QUARTER, 1, 900), Backoff(10, QUARTER, 1, 60),
         known_addresses_exempt=True, per_device_key=Limit(10, HOUR)),
    # TOTP codes (the password is already proven): 3 free mistakes, then 2 s, 4 s, ... up to 5 minutes.
    Step("totp", Limit(60, MINUTE), None, Backoff(3, QUARTER, 2, 300)),
    # Refresh tokens are unguessable (the rate per address bounds a flood); a client repeating one that is
    # refused waits, per token and address (the "account" is the token's digest): many patients share an address.
    Step("refresh", Limit(120, MINUTE), Backoff(10, QUARTER, 1, 300)),
    # Pairing codes (10 characters of 32, 50 bits, alive 10 minutes): a guesser names no patient, so per network
    # (5 free mistakes, then 2 s, 4 s, ... up to 15 min) and, against a flood from many networks, at most 60
    # failures a minute on the whole server. People mistyping a code fail a few times an hour at most, so the
    # ceiling is only reached by a flood; then every pairing waits until a failure leaves the minute (429 with
    # Retry-After, at most 60 s; a minute after the flood stops, none). 86,400 guesses a day at most: with a
    # thousand codes alive at once, one guess in 2^50 / 1000 hits, about once in 35,000 years.
    Step("pairing", Limit(20, MINUTE), Backoff(5, QUARTER, 2, 900), per_server=Limit(60, MINUTE)),
    # Making pairing codes: a patient needs a few; the account is the patient.
    Step("pairing_code", Limit(30, MINUTE), None, Backoff(10, HOUR, 10, 900)),
    # A gateway's id and secret.
    Step("gateway_token", Limit(120, MINUTE), Backoff(10, QUARTER, 1, 300), Backoff(20, QUARTER, 1, 60)),
    # Signing up sends an email: 10 requests an hour per address; per address and email 3 free, then 1 min, 2 min,
    # ... up to an hour. No wait per email from anywhere: it ran from the last request, and someone requesting as
    # each wait ended kept the owner from signing up for as long as they went on. Against mail bombing, the mails
    # to one email are counted instead (companion.domain.signup.MAILS: 3 in any 15 minutes, 12 an hour); a request
    # past them is answered as any other and sends nothing.
    Step("signup", Limit(10, HOUR), Backoff(3, HOUR, 60, 3600)),
    # Codes sent by email or handed out by an admin (signup confirmation, password reset): 12 characters of 32,
    # 60 bits, alive 30 minutes (sign-up) or 24 hours (reset). No delay per account from anywhere: it ran from
    # the last failure, and an outsider landing a guess as each delay ended kept the owner's code out of use
    # (26 guesses an hour did it). Per network, 5 free failures in 15 minutes, then 2 s, 4 s, ... up to 15 minutes:
    # at most 1,062 guesses a day on one account (50 in the first hour), so 10,000 networks land 10.6 million in
    # a reset code's 24 hours: it is hit once in 2^60 / 1.06e7, about 10^11 codes (with the 8 characters of
    # before, 40 bits, once in 100,000 codes).
    Step("code", Limit(30, MINUTE), Backoff(5, QUARTER, 2, 900)),
    # Codes of fewer than 12 characters (the 8 of before, 40 bits): one issued before the deploy still works for
    # its 24 hours, and without a delay per account, 10,000 networks would land 10.6 million guesses at it, one
    # code hit in 100,000. So a guess that short meets the step codes had then, with 10 free failures per account
    # in an hour from anywhere, then 5 s, 10 s, ... up to 5 minutes: whatever the number of networks, at most 26
    # guesses in the first hour and about 15 an hour after, 370 in a day (one old code hit in 3 × 10^9). That delay
    # runs from the last failure, so an outsider can keep the owner of an old code waiting (up to 5 minutes each
    # time) while they go on guessing, as before the deploy: only while old codes are alive, 24 hours after it.
    # A guess of 12 characters never matches an old code, nor one of 8 a new code: each length meets its own
    # guards, and the owner of a new code is never delayed by guesses at old ones. Remove this step (and
    # companion.services.accounts.code_step) a day after the deploy of the 12-character codes.
    Step("code_legacy", Limit(30, MINUTE), Backoff(5, QUARTER, 2, 900), Backoff(10, HOUR, 5, 300)),
)}


def wait_s(step: Step, *, at: datetime, address_attempts: Sequence[datetime],
           pair_failures: Sequence[datetime] = (), account_failures: Sequence[datetime] = (),
           known_address: bool = False, server_failures: Sequence[datetime] = (),
           device_key_failures: Sequence[datetime] | None = None) -> int:
    """Whole seconds the caller must wait before trying ``step`` (0: go ahead).

    ``device_key_failures``: None when the caller presented no device key valid for the account (a wrong, a
    foreign or an outdated one counts as none); else the failures made presenting that key."""
    waits = [step.per_address.wait_s(address_attempts, at)]
    if step.per_server:
        waits.append(step.per_server.wait_s(server_failures, at))
    with_key = has_usable_device_key(step, at=at, device_key_failures=device_key_failures)
    if step.per_account_and_address and not with_key:
        waits.append(step.per_account_and_address.wait_s(pair_failures, at))
    if step.per_account and not (with_key or (known_address and step.known_addresses_exempt)):
        waits.append(step.per_account.wait_s(account_failures, at))
    longest = max(waits)
    return math.ceil(longest) if longest > 0 else 0


def has_usable_device_key(step: Step, *, at: datetime, device_key_failures: Sequence[datetime] | None) -> bool:
    """Whether the caller presents a valid device key that has not failed too often (a key past its limit is a
    device like any other): it then skips ``step``'s delays per account and network and per account. Both are
    built up by failures anyone naming the account makes, from the owner's own network too (a housemate, a
    carrier's NAT); the key's own limit is what bounds a stolen one."""
    return (step.per_device_key is not None and device_key_failures is not None
            and step.per_device_key.wait_s(device_key_failures, at) == 0)
