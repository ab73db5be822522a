"""Throttling every step that checks a credential, shared by all workers through the database.

The rules (which limits, which delays, who is exempt) are companion.domain.throttling's; this service keeps
the instants they are decided from in the ``rate_events`` collection (companion.store.throttle):

- ``try:<step>:<address>``: every attempt from an address (recorded before deciding, so that concurrent
  attempts count each other; taken back when refused, so a refused client is not kept waiting longer);
- ``fail:<step>:<account>|<address>`` and ``fail:<step>:<account>``: failures, per account and address and
  per account from anywhere;
- ``fail:<step>:*``: failures from anywhere, for a step with a server-wide ceiling (pairing codes);
- ``fail:<step>:key:<account>|<device key>``: failures presenting a valid device key (sign-in,
  companion.services.device_keys), under whose limit the key skips the delays per account and address and per
  account;
- ``known:<account>:<address>``: a successful sign-in, which exempts that address from the account-wide
  delay for 30 days;
- ``quota:<name>:<account>#<place>``: the uses of a quota that is not a wait (sign-up mails to one email: past
  it the request is answered all the same and sends nothing), noted only when used, one place per use allowed
  in the window.

An address is the caller's network (companion.domain.throttling.network_of: an IPv6 address's /64), the
same in every key. Accounts and addresses are stored digested, never as typed: keyed (HMAC-SHA256 under
Settings.pseudonym_key), since a plain SHA-256 of an IPv4 address is reversed by trying them all, and one of an
email address by anyone holding a list of addresses. A new secret key starts every counter afresh.
"""

from __future__ import annotations

import hashlib
import hmac

from companion.clock import Clock, now
from companion.domain.errors import TooManyRequests
from companion.domain.throttling import KNOWN_ADDRESS_FOR, STEPS, Limit, Step, network_of, wait_s
from companion.store.throttle import Counters


class Throttle:
    def __init__(self, counters: Counters, clock: Clock = now, *, key: bytes):
        self.counters = counters
        self.clock = clock
        self._key = key

    def _digest(self, value: str) -> str:
        return hmac.new(self._key, b"throttle\x1f" + value.encode(), hashlib.sha256).hexdigest()[:32]

    def check(self, step_name: str, *, address: str, account: str | None = None,
              device_key: str | None = None) -> None:
        """Count an attempt at ``step_name``; TooManyRequests (with Retry-After) if it must wait. ``device_key``:
        the id of a device key already verified for ``account`` (None: none, or not a valid one)."""
        step = STEPS[step_name]
        at = self.clock()
        address = network_of(address)
        address_key = f"try:{step.name}:{self._digest(address)}"
        mine = self.counters.record(address_key, at, step.per_address.window)
        attempts = self.counters.instants(address_key, at - step.per_address.window, excluding=mine)
        pair_failures, account_failures, known = self._failures(step, account, address, at)
        server_failures = []
        if step.per_server:
            server_failures = self.counters.instants(self._server_key(step), at - step.per_server.window,
                                                     limit=step.per_server.limit)
        key_failures = None
        if step.per_device_key and account is not None and device_key is not None:
            key_failures = self.counters.instants(self._device_key(step, account, device_key),
                                                  at - step.per_device_key.window)
        wait = wait_s(step, at=at, address_attempts=attempts, pair_failures=pair_failures,
                      account_failures=account_failures, known_address=known, server_failures=server_failures,
                      device_key_failures=key_failures)
        if wait:
            self.counters.forget(mine)
            raise TooManyRequests("too many attempts; try again later", retry_after_s=wait)

    def _failures(self, step: Step, account: str | None, address: str, at) -> tuple[list, list, bool]:
        pair, whole, known = [], [], False
        if step.per_account_and_address:
            pair = self.counters.instants(self._pair_key(step, account, address),
                                          at - step.per_account_and_address.window)
        if step.per_account and account is not None:
            whole = self.counters.instants(f"fail:{step.name}:{self._digest(account)}", at - step.per_account.window)
            if step.known_addresses_exempt and whole:
                known = bool(self.counters.instants(self._known_key(account, address), at - KNOWN_ADDRESS_FOR,
                                                    limit=1))
        return pair, whole, known

    def _pair_key(self, step: Step, account: str | None, address: str) -> str:
        who = f"{account}|{address}" if account is not None else address
        return f"fail:{step.name}:{self._digest(who)}"

    def _device_key(self, step: Step, account: str, device_key: str) -> str:
        return f"fail:{step.name}:key:{self._digest(account + '|' + device_key)}"

    @staticmethod
    def _server_key(step: Step) -> str:
        return f"fail:{step.name}:*"

    def _known_key(self, account: str, address: str) -> str:
        return f"known:{self._digest(account + '|' + address)}"

    def failed(self, step_name: str, *, address: str, account: str | None = None,
               device_key: str | None = None) -> None:
        """Count a failure (a wrong password, code or token) against the address and the account (and the
        device key it came with)."""
        step = STEPS[step_name]
        at = self.clock()
        address = network_of(address)
        keep = step.longest_window
        if step.per_server:
            self.counters.record(self._server_key(step), at, keep)
        if step.per_account_and_address:
            self.counters.record(self._pair_key(step, account, address), at, keep)
        if step.per_account and account is not None:
            self.counters.record(f"fail:{step.name}:{self._digest(account)}", at, keep)
        if step.per_device_key and account is not None and device_key is not None:
            self.counters.record(self._device_key(step, account, device_key), at, keep)

    def within_quota(self, name: str, quota: Limit, *, account: str) -> str | None:
        """Take one use of ``account``'s quota ``name``: its id (to :meth:`give_back` if what it was for did not
        happen) if fewer than ``quota.limit`` uses fall in the last ``quota.window``, else None and nothing kept.
        Exact under concurrency (companion.store.throttle.Counters.take_place): never more than ``quota.limit``,
        and a use is refused only when that many are in the window."""
        return self.counters.take_place(f"quota:{name}:{self._digest(account)}", quota.limit, quota.window,
                                        self.clock())

    def give_back(self, use: str) -> None:
        """A use of a quota whose purpose failed (the mail could not be sent)."""
        self.counters.forget(use)

    def succeeded(self, step_name: str, *, address: str, account: str | None = None,
                  device_key: str | None = None) -> None:
        """A success: this address's failures for the account, and the device key's, are forgiven and, for
        sign-in, the address becomes one the account is known to use. The account-wide failures stay (a guesser
        elsewhere is not forgiven by the owner signing in)."""
        step = STEPS[step_name]
        address = network_of(address)
        if step.per_account_and_address:
            self.counters.forget_key(self._pair_key(step, account, address))
        if step.per_device_key and account is not None and device_key is not None:
            self.counters.forget_key(self._device_key(step, account, device_key))
        if account is not None and step.known_addresses_exempt:
            self.counters.record(self._known_key(account, address), self.clock(), KNOWN_ADDRESS_FOR)

