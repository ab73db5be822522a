"""Delivering the outbox: claim due notifications, push them to the phones owed them, record what happened.

A pass (:meth:`OutboxDispatcher.run_pass`) finds the due notifications once, then a batch of
``batch_size`` at a time claims them (see :mod:`companion.store.outbox` for why a claim is an insert and
"sending" is a live claim), reads the phones of its recipients not read yet in the pass, fans each out to
its recipient's phones, sends them all through :class:`~companion.notify.push.PushSender`, removes tokens
FCM reported dead, and settles each notification (:mod:`companion.services.push_settlement`):

- ``sent`` once a phone got it and no phone is owed it any more (the others' failures are kept per phone in
  the round's log);
- back to ``scheduled`` at the earliest retry time when phones answered a retryable error: while no phone has
  it, its next round goes to every phone the person has then; once one has it (``sent_at``), only to the phones
  that answered "not now" (``pending_phones``, by install id), so a phone that got it never gets it again, and a
  phone registered since gets no old push;
- ``expired`` when its validity ended first; ``failed`` otherwise (or when the person has no phone);
- held for the end of the recipient's quiet hours (back to ``scheduled``, no attempt counted; ``expired`` when that
  is past its validity) when it was due outside them and its sending comes inside them: a sender or FCM back from
  an outage at night does not push the day's backlog then (not an urgent alert, nor a snooze's reminder);
- ``withdrawn``, with a reason, when consent no longer holds at the moment of sending (checked for every
  notification of a batch after it is claimed and before anything goes to FCM, see :class:`DeliveryConsent`):
  the recipient's or the patient's account is no longer active, a caregiver's access was revoked or no
  longer covers the alert's kind, the alert it is about has been resolved (its resolution withdraws it too,
  but a process that stopped between the two writes leaves it queued), or the reminder occurrence it is about
  has been answered or called off (the answer withdraws what is queued, not what a sender has claimed). One that
  a phone has already is not withdrawn but ``sent``: the phones still owed it get nothing more.

Several dispatchers may run at once (threads or processes). Each notification goes to each phone once, unless a
dispatcher dies between FCM's answer and its settling write: then, after the lease, that round is sent again
(to the same phones: all of them, or those still owed it), and each phone folds the duplicate into the first
through the shared collapse key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from companion.clock import Clock, now
from companion.domain.notifications import tray_tag_for
from companion.domain.people import Account
from companion.notify.push import Address, Outcome, PushItem, PushResult, PushSender
from companion.services.notifications import DeliveryConsent
from companion.services.push_settlement import (
    Settlement,
    held_for_quiet_hours,
    retried_outside_quiet_hours,
    settle,
)
from companion.services.telemetry import NoTelemetry, Telemetry
from companion.settings import Settings
from companion.store.accounts import Users
from companion.store.outbox import SENT, WITHDRAWN, Outbox
from companion.store.push_tokens import PushTokens
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(minutes=5)
CLAIMS_KEPT = timedelta(days=1)
PER_PASS = 200_000  # due notifications taken on in one pass; a larger backlog continues in the next
MAX_PASSES = 3  # passes per run, each picking up what became due (or came back for a retry) meanwhile


def worker_name() -> str:
    """This process's name as a claim owner (host and pid; no secrets)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class DispatchReport:
    """What one pass did, by the state each notification ended in."""

    claimed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    dead_tokens_removed: int = 0


@dataclass
class _Prepared:
    """A claimed batch ready to go: the notifications to send, one item per phone (with whose phone it is),
    and the outcomes known before sending (consent withdrawn)."""

    claimed: list[dict]
    items: list[PushItem]
    installs: list[tuple[str, str]]
    outcomes: list[tuple[dict, str, dict]]
    people: dict | None = None  # the accounts read for it (recipients and patients)

    def without_forgotten(self, phones: PhoneBook) -> _Prepared:
        """The same batch without the items for phones the phone book has forgotten since it was built."""
        keep = [n for n, (item, (recipient, _)) in enumerate(zip(self.items, self.installs, strict=True))
                if any(p["token"] == item.token for p in phones.of(recipient))]
        if len(keep) == len(self.items):
            return self
        return _Prepared(self.claimed, [self.items[n] for n in keep], [self.installs[n] for n in keep], self.outcomes,
                         self.people)


def _start_of(owner: str, batches: int) -> int:
    """The batch a dispatcher starts its pass at: spread by its owner's name, the same on every pass."""
    return int.from_bytes(hashlib.blake2b(owner.encode(), digest_size=4).digest(), "big") % batches if batches else 0



def _count(report: DispatchReport, doc: dict, state: str, *, reached: bool) -> None:
    """Count a notification in the round's report (and so in the settled metric) once as ``sent``: in the round a
    phone first got it, though others are still owed it (``scheduled`` with pending phones). A later round of one
    a phone already had counts only as a retry still owed (``scheduled``), never ``sent`` again; and one a
    withdrawal then ends ``sent``, outside any round, was counted already."""
    if doc.get("sent_at") is not None:  # a phone got it in an earlier round: counted sent then
        if state == SENT:
            return
    elif reached:
        state = SENT
    report.states[state] = report.states.get(state, 0) + 1

class OutboxDispatcher:
    def __init__(self, outbox: Outbox, tokens: PushTokens, sender: PushSender, *, owner: str,
                 lease: timedelta = DEFAULT_LEASE, batch_size: int = 500, consent: DeliveryConsent | None = None,
                 users: Users | None = None, clock: Clock | None = None):
        self.users = users
        self.clock = clock or outbox.clock
        self.outbox = outbox
        self.tokens = tokens
        self.sender = sender
        self.owner = owner
        self.lease = lease
        self.batch_size = batch_size
        self.consent = consent

    def run_once(self) -> DispatchReport:
        """Claim, send and settle one batch of due notifications."""
        return self.run_pass(self.batch_size)

    def run_pass(self, limit: int, progress: Callable[[DispatchReport], None] | None = None, *,
                 should_stop: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Send up to ``limit`` due notifications, a batch at a time, until ``should_stop`` says so.

        The due notifications are found once for the whole pass; each batch then re-reads its notifications
        by ``_id`` (skipping any another dispatcher has settled meanwhile), claims them, reads the phones of
        those of its recipients not read yet in this pass, and sends them. ``progress`` is told the running
        totals after each batch.

        **Pipelined:** while one batch is at FCM and then being settled (a second thread sends it and
        records its outcomes), the next is read, claimed, checked and built, so that this database work
        hides behind FCM's and the settling writes instead of adding to them. A batch is settled before the
        next one goes to FCM, so one batch at most is ever sent and not yet settled: a crash still costs at
        most one batch sent twice (two batches are claimed at once, both under their lease; the one not
        sent yet is simply sent after the lease).

        **Several dispatchers** (processes or hosts) share the outbox: each starts its pass at a different
        batch (by its owner's name) and goes round, so they rarely contend for the same batch; when they
        do, the claim's unique key gives each notification to one of them.

        **Stopping** (a deploy's SIGTERM): ``should_stop`` is asked before each batch is claimed; once it says
        yes, nothing more is claimed, and the pass ends when the batch at FCM and the one claimed beside it (at
        most two batches) are sent and settled, never leaving a claim to wait out its lease.
        """
        report = DispatchReport()
        ids = self.outbox.due(limit)
        if not ids:
            return report
        batches = [ids[start:start + self.batch_size] for start in range(0, len(ids), self.batch_size)]
        first = _start_of(self.owner, len(batches))
        batches = batches[first:] + batches[:first]
        phones = PhoneBook(self.tokens)
        in_flight: Future[DispatchReport] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-send") as lane:
            for batch in batches:
                if should_stop():
                    logger.info("outbox pass stopped before its next batch, as asked")
                    break
                claimed = self.outbox.claim(self.outbox.open_among(batch), self.owner, self.lease)
                if not claimed:
                    continue
                phones.read({doc["recipient_user_id"] for doc in claimed})
                prepared = self._prepare(claimed, phones, report)
                if in_flight is not None:
                    _add(report, in_flight.result(), progress)  # the previous batch is sent and settled
                    prepared = prepared.without_forgotten(phones)  # phones FCM just called dead
                    # Consent again: a revocation while the previous batch was at FCM stops this one.
                    prepared = self._consent_again(prepared, report)
                in_flight = lane.submit(self._send_and_settle, prepared, phones)
            if in_flight is not None:
                _add(report, in_flight.result(), progress)
        logger.info("outbox pass: claimed %d, states %s, dead tokens %d", report.claimed, report.states,
                    report.dead_tokens_removed)
        return report

    def _prepare(self, claimed: list[dict], phones: PhoneBook, report: DispatchReport) -> _Prepared:
        """A claimed batch made ready to send: consent checked, one push item per phone, in each reader's words."""
        report.claimed += len(claimed)
        recipients = {d["recipient_user_id"] for d in claimed}
        people = self._people(claimed)
        refused = self.consent.refusals(claimed, people) if self.consent is not None else {}
        outcomes = [_refused(doc, refused[doc["_id"]]) for doc in claimed if doc["_id"] in refused]
        claimed = [doc for doc in claimed if doc["_id"] not in refused]
        held = self._held_for_quiet_hours(claimed, people)
        outcomes += [(doc, held[doc["_id"]].state, held[doc["_id"]].details()) for doc in claimed if doc["_id"] in held]
        for doc, state, _ in outcomes:
            _count(report, doc, state, reached=False)
        claimed = [doc for doc in claimed if doc["_id"] not in held]
        items: list[PushItem] = []
        installs: list[tuple[str, str]] = []  # (recipient, install) of each item
        readers = {} if people is None or self.users is None else {
            a.id: (a.locale, a.zone_history()) for a in people.values() if a.id in recipients}
        for doc in claimed:
            language, zone = readers.get(doc["recipient_user_id"], (None, None))
            planned = doc.get("planned_at")
            owed = doc.get("pending_phones")  # a phone has it: only those that answered "not now" get it again
            for phone in phones.of(doc["recipient_user_id"]):
                if owed is not None and phone["install_id"] not in owed:
                    continue
                items.append(PushItem(outbox_id=doc["_id"], token=phone["token"], kind=doc["kind"],
                                      expires_at=doc["expires_at"], collapse_key=doc["collapse_key"],
                                      attempt=doc["attempts"] + 1, address=Address(phone.get("address", "token")),
                                      locales=(language, phone.get("locale")),
                                      zone=doc.get("planned_zone") or (
                                          zone.zone_at(planned or doc["not_before"]).key if zone else "UTC"),
                                      planned_at=planned,
                                      tag=tray_tag_for(doc["source_key"], doc["collapse_key"])))
                installs.append((doc["recipient_user_id"], phone["install_id"]))
        return _Prepared(claimed, items, installs, outcomes, people)

    def _held_for_quiet_hours(self, claimed: list[dict], people: dict[str, Account] | None) -> dict[str, Settlement]:
        """Of a claimed batch, those that were due outside their recipient's quiet hours and would go inside them now
        (a sender or FCM back after an outage, a backlog), by id, each with its settlement: held for their end, or
        ended if that is past its lifetime (``held_for_quiet_hours``). Judged when the batch is prepared; a batch
        prepared while the one before was at FCM goes seconds later (quiet hours start on the minute)."""
        if not people:
            return {}
        at = self.clock()
        held = {doc["_id"]: held_for_quiet_hours(doc, at, people.get(doc["recipient_user_id"])) for doc in claimed}
        return {key: settlement for key, settlement in held.items() if settlement is not None}

    def _consent_again(self, prepared: _Prepared, report: DispatchReport) -> _Prepared:
        """A batch prepared while the one before was at FCM, without what a caregiver's consent no longer allows
        and what is about an alert resolved (or, to a caregiver, acknowledged) or a reminder answered meanwhile
        (links, alerts and occurrences read again just before it goes; the accounts as read when it was
        prepared)."""
        again = [d for d in prepared.claimed if d["recipient_user_id"] != d["patient_id"]
                 or d["source_key"].startswith(("alert:", "reminder:"))]
        if self.consent is None or not again or prepared.people is None:
            return prepared
        refused = self.consent.refusals(again, prepared.people)
        if not refused:
            return prepared
        withheld = [_refused(d, refused[d["_id"]]) for d in prepared.claimed if d["_id"] in refused]
        for doc, state, _ in withheld:
            _count(report, doc, state, reached=False)
        keep = [n for n, item in enumerate(prepared.items) if item.outbox_id not in refused]
        return _Prepared([d for d in prepared.claimed if d["_id"] not in refused],
                         [prepared.items[n] for n in keep], [prepared.installs[n] for n in keep],
                         prepared.outcomes + withheld, prepared.people)

    def _send_and_settle(self, prepared: _Prepared, phones: PhoneBook) -> DispatchReport:
        """Send a batch, drop the phones FCM called dead, and record each notification's state (in the
        lane's thread); returns what it did for the pass's report."""
        report = DispatchReport()
        results = self.sender.send(prepared.items) if prepared.items else []
        per_doc: dict[str, list[tuple[str, PushResult]]] = {}
        for item, (recipient, install), result in zip(prepared.items, prepared.installs, results, strict=True):
            per_doc.setdefault(item.outbox_id, []).append((install, result))
            if result.outcome is Outcome.TOKEN_DEAD:
                report.dead_tokens_removed += self.tokens.remove_dead(item.token)
                phones.forget(recipient, item.token)
        outcomes = list(prepared.outcomes)
        people = prepared.people or {}
        for doc in prepared.claimed:
            answered = settle(per_doc.get(doc["_id"], []), reached_before=doc.get("sent_at") is not None)
            settlement = retried_outside_quiet_hours(doc, answered, people.get(doc["recipient_user_id"]))
            outcomes.append((doc, settlement.state, settlement.details()))
            _count(report, doc, settlement.state, reached=settlement.reached)
        self.outbox.settle(outcomes)
        return report

    def _people(self, docs: list[dict]) -> dict[str, Account] | None:
        """The accounts of a batch's recipients and patients, read once for both the consent check and each
        recipient's language and zones (None: this dispatcher reads no accounts)."""
        if not docs:
            return {}
        if self.consent is not None:
            return self.consent.people(docs)
        if self.users is not None:
            return {a.id: a for a in self.users.by_ids({d["recipient_user_id"] for d in docs})}
        return None


def _refused(doc: dict, reason: str) -> tuple[dict, str, dict]:
    """The outcome of a claimed notification that must not go out any more (``reason``): ``withdrawn``; or, when a
    phone has it already (the others were owed a retry), ``sent``, and the phones still owed it get nothing."""
    if doc.get("sent_at") is not None:
        return doc, SENT, {"reason": reason, "attempted": False}
    return doc, WITHDRAWN, {"reason": reason}


def _add(report: DispatchReport, batch: DispatchReport, progress: Callable[[DispatchReport], None] | None) -> None:
    """Count a settled batch into the pass's report (in the pass's thread) and tell ``progress``."""
    report.dead_tokens_removed += batch.dead_tokens_removed
    for state, count in batch.states.items():
        report.states[state] = report.states.get(state, 0) + count
    if progress is not None:
        progress(report)


class PhoneBook:
    """The phones of the recipients of the batch being prepared, read with each batch: a dispatcher reads only
    the phones of what it claims (several dispatchers share a pass's due set), and a phone signed out during a
    pass is not addressed by a later batch. Tokens FCM reports dead drop out. Read in the pass's thread;
    ``forget`` runs in the sending lane's, for recipients already read."""

    def __init__(self, tokens: PushTokens):
        self.tokens = tokens
        self._phones: dict[str, list[dict]] = {}

    def read(self, user_ids: set[str]) -> None:
        """Read the phones of ``user_ids`` afresh, for the batch about to be prepared: a phone signed out since
        an earlier batch of the pass is not addressed again (a pass can last minutes)."""
        if user_ids:
            fresh = self.tokens.for_users(user_ids)
            self._phones.update({user_id: fresh.get(user_id, []) for user_id in user_ids})

    def of(self, user_id: str) -> list[dict]:
        """The phones to address for ``user_id`` (none: the notification fails as NO_DEVICE)."""
        return self._phones.get(user_id, [])

    def forget(self, user_id: str, token: str) -> None:
        """Stop addressing ``user_id``'s phone ``token`` for the rest of the pass (FCM said it is dead)."""
        self._phones[user_id] = [p for p in self.of(user_id) if p["token"] != token]


class PushDelivery:
    """The worker's push jobs: send what the outbox holds, and keep the claims and phones tidy."""

    def __init__(self, settings: Settings, stores: Stores, sender: PushSender | None, *, owner: str | None = None,
                 clock: Clock = now, telemetry: Telemetry | None = None):
        self.settings = settings
        self.telemetry = telemetry or NoTelemetry()
        self.stores = stores
        self.sender = sender
        self.owner = owner or worker_name()
        self.clock = clock

    def dispatcher(self, owner: str | None = None) -> OutboxDispatcher:
        if self.sender is None:
            raise RuntimeError("no FCM service account configured")
        return OutboxDispatcher(self.stores.outbox, self.stores.push_tokens, self.sender, owner=owner or self.owner,
                                lease=self.settings.push_lease, batch_size=self.settings.dispatch_batch,
                                consent=DeliveryConsent(self.stores, self.clock), users=self.stores.users,
                                clock=self.clock)

    def send_due(self, owner: str | None = None, *, should_stop: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Send every due outbox notification, a batch at a time, until a pass finds none left to claim or
        ``should_stop`` says so (asked before each batch: a process told to stop sends the batch in hand)."""
        dispatcher = self.dispatcher(owner)
        total = DispatchReport()
        for _ in range(MAX_PASSES):
            if should_stop():
                break
            report = dispatcher.run_pass(PER_PASS, should_stop=should_stop)
            if report.claimed == 0:
                break
            total.claimed += report.claimed
            total.dead_tokens_removed += report.dead_tokens_removed
            for state, count in report.states.items():
                total.states[state] = total.states.get(state, 0) + count
        for state, count in total.states.items():
            self.telemetry.notifications_settled(state, count)
        return total

    def measure_outbox(self) -> int:
        """How many notifications wait in the outbox (due or retrying), reported to the metrics."""
        depth = self.stores.outbox.count_unfinished()
        self.telemetry.outbox_depth(depth)
        return depth

    def purge_claims(self) -> int:
        """Hourly: drop send claims whose lease ended a day ago (every round they guarded has settled)."""
        return self.stores.outbox.purge_claims(self.clock() - CLAIMS_KEPT)

    def prune_phones(self) -> int:
        """Daily: forget phones whose token was not refreshed for 60 days."""
        removed = self.stores.push_tokens.prune_stale(self.settings.push_token_stale_after)
        logger.info("stale push tokens removed: %d", removed)
        return removed
