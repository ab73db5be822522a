"""The push outbox: one document per notification per recipient, the claims that send it, and a log.

A notification is created by **insert** under the unique key ``(source_key, recipient_user_id)``, so
a job that runs twice (or on two workers) creates it once. Its ``_id`` is derived from that key
(:func:`notification_id`), so "does it exist yet" is a lookup by ``_id``, which every server serves
from its primary index. Its life: ``scheduled`` → ``sending`` (a
live claim, under a lease) → ``sent`` / ``failed`` / ``expired``, or back to ``scheduled`` for a
retry; ``withdrawn`` when it must not go out any more (consent ended, or the alert that caused it was
resolved); the app's receipts add ``delivered_at`` and ``opened_at``. Each round's per-phone results
(FCM message names, error codes) go to ``push_attempts``. A notification that some of its recipient's phones
got while others answered "not now" stays ``scheduled``, with ``sent_at`` (the first phone's) and
``pending_phones`` (the install ids still owed it, the only ones its next rounds go to); it is ``sent`` when none
is owed it any more, or when it is withdrawn (the phones still owed it then get nothing more).

Claiming is an **insert**: a dispatcher inserts the claim ``{outbox_id}:{round}`` (in ``push_claims``,
with its owner and lease) and the unique ``_id`` lets exactly one dispatcher have each round. Two
things seen on FerretDB v1.24 shape this:

- a conditional update is not a claim there: its filter is evaluated apart from the write, and two
  dispatchers racing ``find_one_and_update({"state": "scheduled"}, ...)`` took the same document
  hundreds of times in 300;
- every updated document costs about 10 ms (inserts batch cheaply), and two concurrent multi-statement
  ``bulk_write`` updates deadlock. So "sending" is the live claim itself, not a field write: a
  notification is updated once per round, when it settles, with one ``update_many`` per outcome
  (per document only for retries, whose times differ).

A claim whose lease ran out before its round settled (the dispatcher died) is retired by moving the
notification to the next round, which any dispatcher may then claim: the notification is sent again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now
from companion.domain.notifications import collapse_key_for, send_offset, template_for, ttl_for
from companion.store.batches import chunks, insert_new, oldest_first

INDEXES = {
    "push_outbox": [
        IndexModel([("source_key", ASCENDING), ("recipient_user_id", ASCENDING)], unique=True,
                   name="source_recipient_unique"),
        IndexModel([("state", ASCENDING), ("not_before", ASCENDING)], name="due"),
        # The lists' order (NEWEST_FIRST) after the equality field, so that a page is read in index order: an index
        # ending in created_at does not give the (created_at, _id) order, and MongoDB then sorts every matching
        # notification in memory for each page. Redefined under the same names: `companion migrate` recreates them.
        IndexModel([("patient_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                   name="patient_history"),
        IndexModel([("recipient_user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                   name="recipient_history"),
    ],
    "push_claims": [IndexModel([("lease_until", ASCENDING)], name="lease_until")],
    "push_attempts": [IndexModel([("outbox_id", ASCENDING)], name="outbox")],
}

HISTORY_LIMIT = 500
NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]  # the lists' order: no two notifications tie
SCHEDULED, SENT, FAILED, EXPIRED, WITHDRAWN = "scheduled", "sent", "failed", "expired", "withdrawn"
FINAL_STATES = (SENT, FAILED, EXPIRED, WITHDRAWN)


@dataclass(frozen=True)
class NotificationRequest:
    """A notification to create: what caused it, for whom, what kind, when, and for how long it matters."""

    source_key: str
    recipient_user_id: str
    patient_id: str
    kind: str
    send_at: datetime
    completion_window: timedelta | None = None
    share_kind: str | None = None  # for a caregiver: the consent kind it needs (an alert's share kind)
    planned_at: datetime | None = None  # a reminder's due time, the one argument a push text may name
    spread: bool = True  # False: at ``send_at`` exactly (its place in the spread would fall in quiet hours)
    planned_zone: str | None = None  # the zone of the reminder's slot, whose clock the text names planned_at on


def notification_id(source_key: str, recipient_user_id: str) -> str:
    """The notification's ``_id``, derived from its unique key (24 hex digits)."""
    return hashlib.blake2b(f"{source_key}\x1f{recipient_user_id}".encode(), digest_size=12).hexdigest()


class Outbox:
    def __init__(self, db: Database, clock: Callable[[], datetime] = now):
        self.col = db.push_outbox
        self.claims = db.push_claims
        self.attempts = db.push_attempts
        self.clock = clock

    def schedule(self, *, source_key: str, recipient_user_id: str, patient_id: str, kind: str,
                 send_at: datetime, completion_window: timedelta | None = None,
                 share_kind: str | None = None, planned_at: datetime | None = None,
                 spread: bool = True) -> tuple[dict, bool]:
        """Create the notification for (``source_key``, recipient) once; returns (document, created).

        ``source_key`` names what caused it (e.g. ``reminder:<id>:<occurrence>``); the TTL, collapse
        key and expiry come from the kind's template and the completion window; ``share_kind`` is the
        consent a caregiver must still have given when it is sent; ``spread`` False: at ``send_at`` exactly, not
        at its place in the kind's spread (which would fall in the recipient's quiet hours).
        """
        request = NotificationRequest(source_key, recipient_user_id, patient_id, kind, send_at, completion_window,
                                      share_kind, planned_at, spread)
        doc = self._document(request)
        try:
            self.col.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            return self.col.find_one({"_id": doc["_id"]}), False

    def schedule_many(self, requests: list[NotificationRequest]) -> list[bool]:
        """Create many notifications at once (one unordered insert); for each request, whether it was
        created (False: it existed already)."""
        if not requests:
            return []
        docs = [self._document(request) for request in requests]
        existing = insert_new(self.col, docs)
        return [n not in existing for n in range(len(docs))]

    def _document(self, request: NotificationRequest) -> dict:
        kind, send_at = request.kind, request.send_at
        ttl = ttl_for(kind, request.completion_window)
        queued_at = self.clock()
        return {
            "_id": notification_id(request.source_key, request.recipient_user_id), "source_key": request.source_key,
            "recipient_user_id": request.recipient_user_id, "patient_id": request.patient_id,
            "kind": template_for(kind).kind, "collapse_key": collapse_key_for(kind, request.patient_id,
                                                                               request.recipient_user_id),
            "expires_at": send_at + ttl,
            "not_before": send_at + (send_offset(kind, request.recipient_user_id, ttl) if request.spread else timedelta(0)),
            # Every push is queued when it is meant to go (held only for quiet hours, or its place in its kind's
            # spread): ``intended_at``, which a push moved to another time (retime) has of its own.
            "state": SCHEDULED, "attempts": 0, "round": 0, "created_at": queued_at, "intended_at": queued_at,
            "settled_at": None,
            "sent_at": None, "delivered_at": None, "opened_at": None,
            **({"share_kind": request.share_kind} if request.share_kind else {}),
            **({"planned_at": request.planned_at} if request.planned_at else {}),
            **({"planned_zone": request.planned_zone} if request.planned_zone else {}),
        }

    def existing(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """The notifications that exist for (source key, recipient) pairs, by pair: looked up by ``_id``."""
        wanted = {notification_id(source, recipient): (source, recipient) for source, recipient in keys}
        found: dict[tuple[str, str], dict] = {}
        for part in chunks(sorted(wanted)):
            for doc in self.col.find({"_id": {"$in": part}}):
                found[wanted[doc["_id"]]] = doc
        return found

    def get(self, outbox_id: str) -> dict | None:
        return self.col.find_one({"_id": outbox_id})

    def due(self, limit: int) -> list[str]:
        """The ids of up to ``limit`` scheduled notifications whose time has come, earliest first.

        One read for a whole dispatch pass: the pass then takes them a batch at a time
        (:meth:`open_among`), so the cost of finding work does not repeat per batch.
        """
        return [doc["_id"] for doc in self.col.find(
            {"state": SCHEDULED, "not_before": {"$lte": self.clock()}}, {"_id": 1},
        ).sort("not_before", ASCENDING).limit(limit)]

    def open_among(self, ids: list[str]) -> list[dict]:
        """Those of ``ids`` that are still scheduled and due now (read by ``_id``), in the order given."""
        if not ids:
            return []
        docs = {doc["_id"]: doc for doc in self.col.find(
            {"_id": {"$in": ids}, "state": SCHEDULED, "not_before": {"$lte": self.clock()}})}
        return [docs[i] for i in ids if i in docs]

    def claim(self, docs: list[dict], owner: str, lease: timedelta) -> list[dict]:
        """Take those of ``docs`` that no other dispatcher holds this round; returns the ones taken.

        A round whose claim outlived its lease without settling is retired first, and the notification
        claimed in its next round.
        """
        at = self.clock()
        won, lost = self._insert_claims(docs, owner, at + lease, at)
        abandoned = self._abandoned(lost, at)
        if not abandoned:
            return won
        for doc in abandoned:
            self.col.update_one({"_id": doc["_id"], "round": doc["round"]}, {"$set": {"round": doc["round"] + 1}})
        # Read them again: only those still due in exactly the next round are ours to retake.
        fresh = list(self.col.find({"_id": {"$in": [doc["_id"] for doc in abandoned]}, "state": SCHEDULED,
                                    "not_before": {"$lte": at}}))
        next_round = {doc["_id"]: doc["round"] + 1 for doc in abandoned}
        retake = [doc for doc in fresh if doc["round"] == next_round[doc["_id"]]]
        retaken, _ = self._insert_claims(retake, owner, at + lease, at)
        return won + retaken

    def _insert_claims(self, docs: list[dict], owner: str, lease_until: datetime,
                       at: datetime) -> tuple[list[dict], list[dict]]:
        if not docs:
            return [], []
        claims = [{"_id": _claim_id(doc), "outbox_id": doc["_id"], "owner": owner, "claimed_at": at,
                   "lease_until": lease_until} for doc in docs]
        lost = insert_new(self.claims, claims)
        return ([doc for n, doc in enumerate(docs) if n not in lost],
                [doc for n, doc in enumerate(docs) if n in lost])

    def _abandoned(self, lost: list[dict], at: datetime) -> list[dict]:
        if not lost:
            return []
        expired = {c["outbox_id"] for c in self.claims.find(
            {"_id": {"$in": [_claim_id(doc) for doc in lost]}, "lease_until": {"$lt": at}}, {"outbox_id": 1})}
        return [doc for doc in lost if doc["_id"] in expired]

    def settle(self, outcomes: list[tuple[dict, str, dict]]) -> None:
        """Record each claimed round's outcome: (claimed document, new state, details).

        ``details`` holds ``phones`` and ``error_codes`` (logged in ``push_attempts``, with ``reason``) and, for a
        notification going back to ``scheduled``, its ``not_before`` and ``pending_phones`` (the install ids
        still owed it once a phone has it, which this round may have made so: ``sent_at`` is then written);
        ``attempted`` False: this round went to no phone (a notification a phone has, withheld from the others:
        ``sent`` without counting an attempt; one held for its recipient's quiet hours at sending: back to
        ``scheduled``, or ended, without counting one).
        """
        if not outcomes:
            return
        at = self.clock()
        log = [{"_id": _claim_id(doc), "outbox_id": doc["_id"], "round": doc["round"], "at": at, "state": state,
                "phones": details.get("phones", []), "error_codes": details.get("error_codes", []),
                **({"reason": details["reason"]} if details.get("reason") else {})}
               for doc, state, details in outcomes]
        insert_new(self.attempts, log)  # a late owner settling twice
        for doc, state, details in outcomes:
            attempts = doc["attempts"] + (1 if details.get("attempted", True) else 0)
            if state == SCHEDULED and details.get("pending_phones") is not None:
                self._owe_the_rest(doc, details["not_before"], details["pending_phones"], at, attempts)
            elif state == SCHEDULED:
                self.col.update_one({"_id": doc["_id"], "round": doc["round"]}, {"$set": {
                    "not_before": details["not_before"], "attempts": attempts, "round": doc["round"] + 1}})
        groups: dict[tuple[str, int, str | None, bool], list[str]] = {}
        for doc, state, details in outcomes:
            if state in FINAL_STATES:
                attempted = details.get("attempted", state != WITHDRAWN)
                first_sent = state == SENT and doc.get("sent_at") is None
                groups.setdefault((state, doc["attempts"] + (1 if attempted else 0), details.get("reason"), first_sent),
                                  []).append(doc["_id"])
        for (state, attempts, reason, first_sent), ids in groups.items():
            fields = {"state": state, "attempts": attempts, "settled_at": at, **({"sent_at": at} if first_sent else {}),
                      **({"withdrawn_reason": reason} if state == WITHDRAWN else {})}
            # One withdrawn while it was at FCM did go out: the record says so (sent), not that it never went.
            settling = [SCHEDULED, WITHDRAWN] if state == SENT else [SCHEDULED]
            unset = {"pending_phones": "", **({"withdrawn_reason": ""} if state == SENT else {})}
            self.col.update_many({"_id": {"$in": ids}, "state": {"$in": settling}}, {"$set": fields, "$unset": unset})
        # The claims stay: a dispatcher that read a notification before it settled must find its round
        # taken, or it would send it again. purge_claims() drops them once no such read can be around.

    def _owe_the_rest(self, doc: dict, retry_at: datetime, pending_phones: list[str], at: datetime,
                      attempts: int) -> None:
        """A round after which a phone has the notification and others are owed it: retried at ``retry_at`` on
        ``pending_phones`` alone, ``sent_at`` kept from the first phone that got it (``attempts``: as counted after
        this round). One withdrawn while this round was at FCM went out all the same: it ends ``sent``, and the
        others are owed nothing."""
        sent_at = doc.get("sent_at") or at
        retry = {"not_before": retry_at, "attempts": attempts, "round": doc["round"] + 1,
                 "pending_phones": pending_phones, "sent_at": sent_at}
        if self.col.update_one({"_id": doc["_id"], "round": doc["round"], "state": SCHEDULED},
                               {"$set": retry}).matched_count:
            return
        self.col.update_one({"_id": doc["_id"], "round": doc["round"], "state": WITHDRAWN},
                            {"$set": {"state": SENT, "attempts": attempts, "settled_at": at,
                                      "sent_at": sent_at}, "$unset": {"withdrawn_reason": ""}})

    def withdraw(self, *, reason: str, recipient_user_id: str | None = None, patient_id: str | None = None,
                 keep_share_kinds: Iterable[str] | None = None, source_key: str | None = None,
                 sparing: str | None = None) -> int:
        """Withdraw notifications not yet sent, so that they never go out (one a phone has already ends ``sent``,
        and no other phone gets it): those to ``recipient_user_id``
        and/or about ``patient_id``, and/or caused by ``source_key`` (an alert resolved before its notifications
        went out); with ``keep_share_kinds``, only those needing a consent kind not among them (a caregiver whose
        permissions were narrowed); with ``sparing``, all but the one to that person (an acknowledged alert's
        push to the patient). Each ends ``withdrawn`` with ``reason``. One that a dispatcher already claimed may
        still go out once."""
        if recipient_user_id is not None and sparing is not None:
            raise ValueError("withdraw names a recipient or spares one, not both")
        query: dict = {"state": SCHEDULED}
        if recipient_user_id is not None:
            query["recipient_user_id"] = recipient_user_id
        if sparing is not None:
            query["recipient_user_id"] = {"$ne": sparing}
        if patient_id is not None:
            query["patient_id"] = patient_id
        if source_key is not None:
            query["source_key"] = source_key
        if recipient_user_id is None and patient_id is None and source_key is None:
            raise ValueError("withdraw needs a recipient, a patient or a source")
        if keep_share_kinds is not None:
            query["share_kind"] = {"$exists": True, "$nin": sorted(keep_share_kinds)}
        return self._withdraw_matching(query, reason)

    def _withdraw_matching(self, query: dict, reason: str) -> int:
        """Withdraw the scheduled notifications ``query`` finds; returns how many. One a phone has already (the
        others owed a retry) is not withdrawn but ``sent``, and the phones still owed it get nothing more."""
        at = self.clock()
        withdrawn = self.col.update_many({**query, "sent_at": None}, {"$set": {
            "state": WITHDRAWN, "withdrawn_reason": reason, "settled_at": at}}).modified_count
        self.col.update_many({**query, "sent_at": {"$ne": None}}, {"$set": {"state": SENT, "settled_at": at},
                                                                   "$unset": {"pending_phones": ""}})
        return withdrawn

    def withdrawn_for(self, source_key: str, reason: str) -> list[dict]:
        """The notifications of ``source_key`` withdrawn for ``reason`` (never sent)."""
        return list(self.col.find({"source_key": source_key, "state": WITHDRAWN, "withdrawn_reason": reason}))

    def revive(self, doc: dict, send_at: datetime, kind: str | None = None) -> bool:
        """Schedule a withdrawn notification again (its cause holds again) at ``send_at``, in a round of its own,
        within the lifetime it had; as ``kind`` if given (its cause is told otherwise now: an overload no longer
        urgent), with that kind's collapse key, and within that kind's lifetime from ``send_at`` too. False, and left
        withdrawn: past that lifetime; no longer withdrawn (another process revived it first: both write the same
        round); or withdrawn while a dispatcher held its round (claimed, and not settled withdrawn), which may have
        sent it (at most the documented extra copy after a crash, never a second push on purpose)."""
        told_as: dict = {}
        if kind is not None and template_for(kind).kind != doc["kind"]:
            told_as = {"kind": template_for(kind).kind,
                       "collapse_key": collapse_key_for(kind, doc["patient_id"], doc["recipient_user_id"]),
                       "expires_at": min(doc["expires_at"], send_at + ttl_for(kind))}
        if send_at >= told_as.get("expires_at", doc["expires_at"]):
            return False
        claim = _claim_id(doc)
        if self.claims.find_one({"_id": claim}, {"_id": 1}) is not None:
            attempt = self.attempts.find_one({"_id": claim}, {"state": 1})
            if attempt is None or attempt["state"] != WITHDRAWN:
                return False
        return self.col.update_one(
            {"_id": doc["_id"], "state": WITHDRAWN, "round": doc["round"]},
            {"$set": {"state": SCHEDULED, "not_before": send_at, "settled_at": None, "round": doc["round"] + 1,
                      **told_as},
             "$unset": {"withdrawn_reason": ""}}).modified_count == 1

    def waiting_for(self, recipient_user_id: str, after: datetime, limit: int = 1000) -> list[dict]:
        """The notifications to one person queued to go after ``after`` (not sent yet), at most ``limit``."""
        return list(self.col.find({"recipient_user_id": recipient_user_id, "state": SCHEDULED,
                                   "not_before": {"$gt": after}}).limit(limit))

    def retime(self, doc: dict, not_before: datetime, expires_at: datetime, **fields) -> bool:
        """Give a notification not sent yet (``scheduled``, in the round it was read in) another time to go and another
        end of its lifetime, with ``fields`` (a reminder's ``planned_at`` and ``planned_zone``, and ``intended_at``
        for a push now meant to go at another time than it was queued at, quiet hours aside); one whose new time is
        past that end is ``expired`` instead. False when it was sent, settled or claimed into another round
        meanwhile (a claimed round that is still ``scheduled`` is moved all the same: its sender settles it)."""
        change = {"not_before": not_before, "expires_at": expires_at, **fields}
        if not_before >= expires_at:
            change = {"state": EXPIRED, "settled_at": self.clock()}
        return self.col.update_one({"_id": doc["_id"], "state": SCHEDULED, "round": doc["round"]},
                                   {"$set": change}).modified_count == 1

    def withdraw_sources(self, recipient_user_id: str, source_keys: Iterable[str], reason: str) -> int:
        """Withdraw these notifications to one recipient, those not yet sent (looked up by ``_id``; one a phone has
        already ends ``sent``, and no other phone gets it)."""
        ids = [notification_id(key, recipient_user_id) for key in source_keys]
        if not ids:
            return 0
        return self._withdraw_matching({"_id": {"$in": ids}, "state": SCHEDULED}, reason)

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every notification about the patient and its send log (a closed account's retention ended)."""
        ids = [d["_id"] for d in self.col.find({"patient_id": patient_id}, {"_id": 1})]
        for part in chunks(ids):
            self.attempts.delete_many({"outbox_id": {"$in": part}})
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def record_receipt(self, outbox_id: str, recipient_user_id: str, receipt: str) -> bool:
        """Note that the recipient's app got (``delivered``) or opened (``opened``) the notification.

        The first receipt of each kind counts; False when there is no such notification for them. One
        targeted ``$set`` of its own field, so it never undoes a concurrent settle (and a settle never
        undoes it): both hold on MongoDB and on the project's FerretDB build.
        """
        if receipt not in ("delivered", "opened"):
            raise ValueError(f"unknown receipt {receipt!r}")
        field = f"{receipt}_at"
        mine = {"_id": outbox_id, "recipient_user_id": recipient_user_id}
        if self.col.update_one({**mine, field: None}, {"$set": {field: self.clock()}}).matched_count:
            return True
        return self.col.find_one(mine, {"_id": 1}) is not None

    def purge_claims(self, leases_ended_before: datetime) -> int:
        """Drop claims whose lease ended before ``leases_ended_before`` (a cleanup job's work).

        Use a cutoff several leases old: by then every round has settled or been retired, and no
        dispatcher still holds a read from before that.
        """
        return self.claims.delete_many({"lease_until": {"$lt": leases_ended_before}}).deleted_count

    def count_unfinished(self) -> int:
        return self.col.count_documents({"state": SCHEDULED})

    def attempts_of(self, outbox_id: str) -> list[dict]:
        """The per-round log of a notification: each phone's outcome, FCM message name and error."""
        return list(self.attempts.find({"outbox_id": outbox_id}).sort("round", ASCENDING).limit(50))

    # Reading the history: what was sent about a patient, or to a person.
    def for_patient(self, patient_id: str, *, since: datetime | None = None, until: datetime | None = None,
                    recipient_user_id: str | None = None, share_kinds: Iterable[str] | None = None,
                    limit: int = HISTORY_LIMIT, after: tuple[datetime, str] | None = None) -> list[dict]:
        """At most ``limit`` notifications about ``patient_id``, newest first in (created_at, _id) order (optionally
        only those sent to one person, and only those needing no consent kind or one of ``share_kinds``: what a
        caregiver is still shared); ``after``: those after the (created_at, _id) a previous page ended on (a keyset,
        as :meth:`for_recipient`)."""
        query: dict = {"patient_id": patient_id}
        if recipient_user_id is not None:
            query["recipient_user_id"] = recipient_user_id
        either: list[list[dict]] = []
        if share_kinds is not None:
            either.append([{"share_kind": {"$exists": False}}, {"share_kind": {"$in": sorted(share_kinds)}}])
        if after is not None:
            either.append(_created_after(*after))
        query.update(_all_of(either))
        created: dict = {}
        if since is not None:
            created["$gte"] = since
        if until is not None:
            created["$lt"] = until
        if created:
            query["created_at"] = created
        return list(self.col.find(query).sort(NEWEST_FIRST).limit(limit))

    def created_in_order(self, patient_id: str, start: datetime, end: datetime) -> Iterator[dict]:
        """Every notification about ``patient_id`` created in [start, end], oldest first, read a page at a time on
        ``patient_history``."""
        return oldest_first(self.col, {"patient_id": patient_id}, "created_at", start, end)

    def for_recipient(self, recipient_user_id: str, limit: int = HISTORY_LIMIT, *,
                      shared: Mapping[str, Iterable[str]] | None = None,
                      after: tuple[datetime, str] | None = None) -> list[dict]:
        """At most ``limit`` (and ``HISTORY_LIMIT`` + 1) of the notifications addressed to one person, newest first
        in (created_at, _id) order. With ``shared`` (patient id: the consent kinds each patient shares with them),
        only those about themselves, or about one of these patients and needing no consent kind or one the patient
        shares; ``after``: those after the (created_at, _id) a previous page ended on (a keyset: a page goes on
        however many came before, and a notification created between two pages shifts nothing)."""
        either: list[list[dict]] = []
        if shared is not None:
            either.append(_shared_with(recipient_user_id, shared))
        if after is not None:
            either.append(_created_after(*after))
        query = {"recipient_user_id": recipient_user_id, **_all_of(either)}
        return list(self.col.find(query).sort(NEWEST_FIRST)
                    .limit(min(limit, HISTORY_LIMIT + 1)))  # a page of HISTORY_LIMIT and the one that says more follow


def _created_after(at: datetime, outbox_id: str) -> list[dict]:
    """The conditions, one of which holds, of a notification after (``at``, ``outbox_id``) in :data:`NEWEST_FIRST`
    order: created before ``at``, or at ``at`` with a smaller ``_id`` (the tie-break that lets a page end between
    notifications of one instant)."""
    return [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": outbox_id}}]


def _all_of(either: list[list[dict]]) -> dict:
    """A query's part that holds when one condition of each list in ``either`` does."""
    if not either:
        return {}
    if len(either) == 1:
        return {"$or": either[0]}
    return {"$and": [{"$or": conditions} for conditions in either]}


def _shared_with(recipient_user_id: str, shared: Mapping[str, Iterable[str]]) -> list[dict]:
    """The conditions of a recipient's notifications that ``shared`` covers (one per set of kinds shared)."""
    patients_by_kinds: dict[tuple[str, ...], list[str]] = {}
    for patient_id, kinds in shared.items():
        patients_by_kinds.setdefault(tuple(sorted(kinds)), []).append(patient_id)
    conditions: list[dict] = [{"patient_id": recipient_user_id}]
    if shared:
        conditions.append({"patient_id": {"$in": sorted(shared)}, "share_kind": {"$exists": False}})
    conditions += [{"patient_id": {"$in": sorted(patients)}, "share_kind": {"$in": list(kinds)}}
                   for kinds, patients in sorted(patients_by_kinds.items()) if kinds]
    return conditions


def _claim_id(doc: dict) -> str:
    return f"{doc['_id']}:{doc['round']}"


