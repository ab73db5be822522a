"""Leader leases: which scheduler worker may run jobs right now.

A lease is a series of terms, one document per term (``_id = "<name>:<term>"``). Taking over is an
**insert** of the next term, so when two workers see the same lapsed term only one insert wins (the
unique ``_id``). A conditional find-and-flip of a single document would not do: on FerretDB v1 several
conditional updates racing on one document can all "win". Renewing is an update of the holder's own
term document, which no one else writes.

A holder counts as leader only until the ``expires_at`` it last wrote; it renews every ttl/3 and,
on each renewal, checks that no later term exists. Workers' clocks are assumed to agree to well
within the TTL (NTP). A job's run can outlive its leader's lease (the lease is checked only as a run
starts), so two leaders' runs of a job can overlap at a hand-over: every job is idempotent, so that could
only repeat work, never duplicate a push (see companion.store.outbox), and a daily job also claims its run
(:class:`JobMarks`), so the next leader does not start it again while it goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now

INDEXES = {
    "leases": [IndexModel([("name", ASCENDING), ("term", DESCENDING)], name="name_term")],
    "job_marks": [IndexModel([("at", ASCENDING)], name="at")],  # (read by _id; declared here as its owner)
}

KEEP_TERMS = 10  # older term documents are history nobody reads; keep a few for diagnosis


@dataclass(frozen=True)
class Lease:
    """One term of a lease held by ``holder`` until ``expires_at``."""

    name: str
    term: int
    holder: str
    expires_at: datetime

    @property
    def doc_id(self) -> str:
        return term_id(self.name, self.term)


def term_id(name: str, term: int) -> str:
    """The document id of one term; zero-padded so ids sort like terms."""
    return f"{name}:{term:012d}"


class Leases:
    def __init__(self, db: Database, clock: Callable[[], datetime] = now):
        self.col = db.leases
        self.clock = clock

    def current(self, name: str) -> dict | None:
        """The latest term of ``name`` (lapsed or not), or None if it was never taken."""
        return self.col.find_one({"name": name}, sort=[("term", DESCENDING)])

    def acquire(self, name: str, holder: str, ttl: timedelta) -> Lease | None:
        """Take ``name`` for ``ttl`` if it is free or lapsed (or renew it if ``holder`` has it)."""
        at = self.clock()
        latest = self.current(name)
        if latest is not None and latest["expires_at"] > at:
            if latest["holder"] != holder:
                return None
            return self.renew(_lease_of(latest), ttl)
        term = latest["term"] + 1 if latest is not None else 1
        lease = Lease(name, term, holder, at + ttl)
        try:
            self.col.insert_one({"_id": lease.doc_id, "name": name, "term": term, "holder": holder,
                                 "acquired_at": at, "renewed_at": at, "expires_at": lease.expires_at})
        except DuplicateKeyError:
            return None
        self.col.delete_many({"name": name, "term": {"$lte": term - KEEP_TERMS}})
        return lease

    def renew(self, lease: Lease, ttl: timedelta) -> Lease | None:
        """Extend a term still in force; None when it lapsed or a later term exists (leadership lost)."""
        at = self.clock()
        if at >= lease.expires_at:
            return None
        renewed = Lease(lease.name, lease.term, lease.holder, at + ttl)
        result = self.col.update_one({"_id": lease.doc_id, "holder": lease.holder},
                                     {"$set": {"renewed_at": at, "expires_at": renewed.expires_at}})
        latest = self.current(lease.name)
        if result.matched_count != 1 or latest is None or latest["term"] != lease.term:
            return None
        return renewed

    def release(self, lease: Lease) -> None:
        """End a term early (a clean shutdown), so a passive worker takes over at its next try."""
        self.col.update_one({"_id": lease.doc_id, "holder": lease.holder},
                            {"$set": {"expires_at": self.clock()}})


def _lease_of(doc: dict) -> Lease:
    return Lease(doc["name"], doc["term"], doc["holder"], doc["expires_at"])


class JobMarks:
    """Each daily job's runs (``job_marks``, one document per job): when it last ran (``at``, the start of a
    run that finished) and the run under way, if any (``claimed_by``, ``claimed_at``, ``claim_until``). A daily
    job whose time of day found no leader (a hand-over, a deploy) runs at the next hourly try instead of a day
    later; one whose leader lost the lease mid-run is not started again by the next leader while the claim
    lasts. Claiming is a conditional single-document update, which MongoDB and the project's FerretDB build
    apply atomically (README, "Things learned about FerretDB"), or the insert of the job's first document,
    settled by its ``_id``."""

    def __init__(self, db: Database):
        self.col = db.job_marks

    def claim(self, job_id: str, holder: str, not_done_since: datetime, at: datetime, until: datetime) -> bool:
        """Claim a run of ``job_id`` for ``holder`` until ``until``: only if it has not run since
        ``not_done_since`` and no other claim lasts past ``at``. False when either holds."""
        free = {"_id": job_id, "$and": [
            {"$or": [{"at": {"$exists": False}}, {"at": {"$lt": not_done_since}}]},
            {"$or": [{"claim_until": {"$exists": False}}, {"claim_until": {"$lte": at}}]},
        ]}
        try:
            self.col.update_one(free, {"$set": {"claimed_by": holder, "claimed_at": at, "claim_until": until}},
                                upsert=True)
        except DuplicateKeyError:  # the job's document exists and is done or claimed: the upsert's insert lost
            return False
        return True

    def done(self, job_id: str, holder: str, claimed_at: datetime) -> None:
        """Note that ``holder``'s run claimed at ``claimed_at`` finished (a later run's mark is kept) and, in the
        same update, drop its claim, so the next time of day is not kept waiting for the claim to lapse. Another
        run's claim (this one's lapsed and was taken over) is left alone."""
        ended = self.col.update_one({"_id": job_id, "claimed_by": holder, "claimed_at": claimed_at},
                                    {"$max": {"at": claimed_at},
                                     "$unset": {"claimed_by": "", "claimed_at": "", "claim_until": ""}})
        if ended.matched_count == 0:
            self.col.update_one({"_id": job_id}, {"$max": {"at": claimed_at}}, upsert=True)

    def unclaim(self, job_id: str, holder: str, claimed_at: datetime) -> None:
        """Drop ``holder``'s claim made at ``claimed_at`` (its run failed), if it is still the one held."""
        self.col.update_one({"_id": job_id, "claimed_by": holder, "claimed_at": claimed_at},
                            {"$unset": {"claimed_by": "", "claimed_at": "", "claim_until": ""}})
