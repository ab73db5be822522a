"""The audit trail: insert-only, hash-chained events; the daily counts of gateways' routine calls; retention cuts.

Each writer process keeps its own chain (chain_id, seq 0..n) so writers never contend for a
global "last hash"; the unique (chain_id, seq) index makes a forked or replayed chain impossible.

A gateway's routine calls (fetching its units, reporting their status every 30 seconds) are counted, one
document per gateway, route and day (``audit_heartbeats``), and rolled up into one chained event per
document once the day is over, under an ``_id`` derived from the counter's, so that a second roll-up of it is
refused by the primary key. The retention job's cuts (``audit_cuts``, one per chain) say up to where a chain's
oldest events were deleted; they only ever move forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

# Where an event stands in a patient's access history: (at, chain_id, seq), unique by the chain_seq index.
EventPosition = tuple[datetime, str, int]

INDEXES = {
    "audit_events": [
        IndexModel([("chain_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="chain_seq"),
        # (chain_id, seq) after the instant: events written together share their millisecond, and the access
        # log pages by (at, chain_id, seq), read in this index's order.
        IndexModel([("patient_ids", ASCENDING), ("at", ASCENDING), ("chain_id", ASCENDING), ("seq", ASCENDING)],
                   name="patient_time"),
        IndexModel([("request_id", ASCENDING)], name="request"),
        IndexModel([("at", ASCENDING)], name="time"),
    ],
    "audit_heartbeats": [IndexModel([("day", ASCENDING)], name="day")],
    "audit_cuts": [IndexModel([("at", ASCENDING)], name="time")],
}


class AuditEvents:
    def __init__(self, db: Database):
        self.col = db.audit_events
        self.heartbeats = db.audit_heartbeats
        self.cuts = db.audit_cuts

    def append(self, events: list[dict]) -> None:
        if events:
            self.col.insert_many(events, ordered=True)

    def append_unless_stored(self, event: dict) -> bool:
        """Insert one event under its own ``_id``; False, with nothing written, if an event with that ``_id`` is
        stored already. Another unique key refusing it (its chain position) raises, as any failure does."""
        try:
            self.col.insert_one(event)
        except DuplicateKeyError:
            if self.col.find_one({"_id": event["_id"]}, {"_id": 1}) is None:  # FerretDB names no index
                raise
            return False
        return True

    def chain_ids(self) -> list[str]:
        # not distinct(): FerretDB v1 refuses the maxTimeMS that the client's timeoutMS adds to it
        return sorted(doc["_id"] for doc in self.col.aggregate([{"$group": {"_id": "$chain_id"}}]))

    def chain(self, chain_id: str):
        return self.col.find({"chain_id": chain_id}).sort("seq", ASCENDING)

    def for_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        return list(self.col.find({"patient_ids": patient_id}).sort("at", -1).limit(limit))

    def about_patient(self, patient_id: str, *, limit: int, before: datetime | None = None,
                      after: EventPosition | None = None, excluding_actor: str | None = None) -> list[dict]:
        """Events about a patient, newest first (those of one instant by chain and seq, descending), leaving out
        one actor's: those before an instant, or those after a position in this order (all, with neither)."""
        query: dict = {"patient_ids": patient_id}
        if before is not None:
            query["at"] = {"$lt": before}
        if after is not None:
            at, chain_id, seq = after
            query["at"] = {"$lte": at}
            query["$or"] = [{"at": {"$lt": at}}, {"chain_id": {"$lt": chain_id}},
                            {"chain_id": chain_id, "seq": {"$lt": seq}}]
        if excluding_actor is not None:
            query["actor_id"] = {"$ne": excluding_actor}
        return list(self.col.find(query).sort([("at", DESCENDING), ("chain_id", DESCENDING), ("seq", DESCENDING)])
                    .limit(limit))

    def with_request_id(self, request_id: str) -> dict | None:
        return self.col.find_one({"request_id": request_id}, {"_id": 1})

    # Heartbeats: counted, not chained one by one.
    def count_heartbeat(self, key: str, fields: dict, at: datetime) -> None:
        """Count one routine call under ``key`` (gateway, route, day): a single-document ``$inc``, atomic on
        MongoDB and on the project's FerretDB build."""
        update = {"$inc": {"count": 1}, "$min": {"first_at": at}, "$max": {"last_at": at},
                  "$setOnInsert": fields}
        try:
            self.heartbeats.update_one({"_id": key}, update, upsert=True)
        except DuplicateKeyError:
            self.heartbeats.update_one({"_id": key}, update)  # two first calls of the day raced

    def heartbeats_before(self, day: str) -> list[dict]:
        """The counts of days before ``day`` (ISO date), which are complete."""
        return list(self.heartbeats.find({"day": {"$lt": day}}).limit(100_000))

    def forget_heartbeat(self, key: str) -> None:
        self.heartbeats.delete_one({"_id": key})

    # Retention
    def chain_heads_before(self, cutoff: datetime) -> Iterator[tuple[str, int, str]]:
        """For each chain with events older than ``cutoff``: (chain, highest such seq, its hash)."""
        heads: dict[str, tuple[int, str]] = {}
        for doc in self.col.find({"at": {"$lt": cutoff}}, {"chain_id": 1, "seq": 1, "hash": 1}):
            best = heads.get(doc["chain_id"])
            if best is None or doc["seq"] > best[0]:
                heads[doc["chain_id"]] = (doc["seq"], doc["hash"])
        for chain_id, (seq, hash_) in sorted(heads.items()):
            yield chain_id, seq, hash_

    def save_cut(self, cut: dict) -> bool:
        """Record a chain's retention cut, or move it forward: False, with nothing written, when the chain's cut
        is already at or past ``cut`` (a retention run that overlapped this one got further). Never moves a cut
        back, which would report the events deleted behind the later cut as a truncation."""
        forward = {"_id": cut["_id"], "seq": {"$lt": cut["seq"]}}
        fields = {k: v for k, v in cut.items() if k != "_id"}
        try:
            self.cuts.update_one(forward, {"$set": fields}, upsert=True)
        except DuplicateKeyError:
            # The chain has a cut this one is not ahead of, or one inserted just now by a run racing this one,
            # which may be behind it: try moving that one forward.
            return self.cuts.update_one(forward, {"$set": fields}).matched_count == 1
        return True

    def cuts_by_chain(self) -> dict[str, dict]:
        return {doc["_id"]: doc for doc in self.cuts.find({})}

    def delete_through(self, chain_id: str, seq: int) -> int:
        """Delete a chain's events up to and including ``seq`` (its cut saved at ``seq`` or beyond)."""
        return self.col.delete_many({"chain_id": chain_id, "seq": {"$lte": seq}}).deleted_count
