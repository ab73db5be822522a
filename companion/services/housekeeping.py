"""Cleanup instead of TTL indexes (FerretDB v1 has none): expired counters, keys, tokens, codes, sessions,
the tombstones of deleted synced objects once the sync window has passed, gateways paired a day ago that never
connected, and the audit trail's retention."""

from __future__ import annotations

from datetime import timedelta

from companion.clock import Clock, now
from companion.domain.people import NEVER_CONNECTED
from companion.services.audit import AuditTrail
from companion.services.gateways import NEVER_CONNECTED_AFTER
from companion.services.heartbeat import Heartbeats
from companion.services.session_times import CONTACT_MARGIN
from companion.services.sync import Changes
from companion.store.stores import Stores

DEFAULT_SYNC_WINDOW = timedelta(days=90)
GATEWAY_SESSION_KEPT = timedelta(days=1)  # a gateway's session serves one 15-minute access token
PURGE_ROUNDS = 1000  # batches per collection and run; a backlog larger than that is finished by the next run


class Housekeeping:
    def __init__(self, stores: Stores, heartbeats: Heartbeats, clock: Clock = now, *,
                 sync_window: timedelta = DEFAULT_SYNC_WINDOW, changes: Changes | None = None,
                 audit: AuditTrail | None = None, audit_retention: timedelta = timedelta(days=2192),
                 longest_session: timedelta = timedelta(days=30)):
        self.stores = stores
        self.longest_session = longest_session
        self.clock = clock
        self.heartbeats = heartbeats
        self.sync_window = sync_window
        self.changes = changes or Changes(stores, clock)
        self.audit = audit
        self.retention = audit_retention

    def purge_expired(self) -> dict[str, int]:
        """Delete what has outlived its use, and revoke the gateways paired a day ago that never connected; safe to
        run any time, any number of times.

        Emergency-access grants are never purged here (they are evidence, kept with the patient's record); audit
        events have their own retention (:meth:`audit_retention`)."""
        cutoff = self.clock()
        return {
            "rate_events": self.stores.counters.delete_expired(),
            "idempotency_keys": self.stores.idempotency_keys.delete_expired(),
            "refresh_tokens": self.stores.token_families.delete_expired(older_than=timedelta(days=1)),
            # A session can no longer be alive once its lifetime from its login is over (a gateway's: its one
            # 15-minute access token); each is kept a day more.
            "sessions": self.stores.token_families.delete_dead(
                started_before=cutoff - self.longest_session - timedelta(days=1),
                gateways_started_before=cutoff - GATEWAY_SESSION_KEPT),
            "pairing_codes": self.stores.pairing_codes.delete_expired(cutoff - timedelta(days=1)),
            "web_sessions": self.stores.web_sessions.purge_expired(cutoff),
            "one_time_codes": self.stores.one_time_codes.delete_expired(cutoff),
            "signups": self.stores.signups.delete_expired(cutoff),
            "worker_heartbeats": self.heartbeats.forget_old(),
            "tombstones": self.purge_tombstones(),
            "gateways_never_connected": self.revoke_never_connected_gateways(),
        }

    def revoke_never_connected_gateways(self) -> int:
        """Revoke the gateways paired more than a day ago that never fetched a token: the pairing's answer was lost
        and the code not tried again, the gateway gave the pairing up, or it holds its secret but has not run yet
        (it is then refused at its first run, exit 77, and must be paired again with a new code; its buffered
        records are kept). Either way a credential for the patient's record unused for a day is not left live.
        Each is audited as a deletion by the system, named in the patient's access log, and shown in their gateway
        list as revoked, ``never_connected``. How many were revoked now (their events are written by this run or,
        after a crash, the next)."""
        gateways = self.stores.gateways
        revoked = gateways.revoke_never_connected(self.clock() - NEVER_CONNECTED_AFTER)
        if self.audit is not None:
            for gateway in gateways.revoked_unaudited():
                event_id = f"gateway-never-connected:{gateway.id}"
                self.audit.write_once({"actor_id": None, "actor_role": "system", "action": "D",
                                       "resource_type": "gateway", "resource_ids": [gateway.id],
                                       "patient_ids": [gateway.patient_id], "outcome": "success", "status": None,
                                       "request_id": event_id, "method": None, "route": None,
                                       "reason": NEVER_CONNECTED}, event_id)
                gateways.note_audited(gateway.id)
        return len(revoked)

    def purge_tombstones(self) -> int:
        """Delete the tombstones of diary entries, occurrences and favourites deleted longer ago than the
        sync window. Each patient's sequence first records the highest change purged, so that a phone
        whose cursor is older (and may not have seen the deletion) is told to resync in full."""
        cutoff = self.clock() - self.sync_window
        sequences = self.stores.change_sequences
        purged = 0
        for synced in (self.stores.pain_entries, self.stores.occurrences, self.stores.favourites):
            for _ in range(PURGE_ROUNDS):
                rows = synced.tombstones_before(cutoff)
                if not rows:
                    break
                highest: dict[str, int] = {}
                for row in rows:
                    highest[row["patient_id"]] = max(highest.get(row["patient_id"], 0), row.get("seq") or 0)
                for patient_id, through in highest.items():
                    sequences.note_purged(patient_id, through)
                purged += synced.purge([row["_id"] for row in rows], cutoff)
        return purged

    def number_unsynced(self) -> int:
        """Give a change number to every synced document without one (an upgrade step, run by ``companion
        migrate``): without one a document would never appear in a feed. The scan stops for good only after a run
        that found none: the run of the upgrade's release step numbers what was written before change feeds, but
        the previous version's processes go on writing unnumbered documents until the new ones replace them, and
        a run stopped half-way, or cut short by its bound (PURGE_ROUNDS batches a collection), leaves some; the
        next run numbers those. Afterwards every write numbers its documents, and the collections are not
        scanned again. Documents nobody owns are not numbered (they are in no feed until they are given an
        owner, which numbers them); the null patient's sequence that an earlier run left by numbering them is
        deleted."""
        stores = self.stores
        stores.change_sequences.forget_ownerless()
        if stores.change_sequences.numbering_done():
            return 0
        numbered, found = 0, False
        for synced in (stores.pain_entries, stores.reminders, stores.occurrences, stores.plans, stores.practice,
                       stores.favourites, stores.session_records):
            for _ in range(PURGE_ROUNDS):
                rows = synced.unnumbered()
                if not rows:
                    break
                found = True
                by_patient: dict[str, list] = {}
                for row in rows:
                    by_patient.setdefault(row["patient_id"], []).append(row["_id"])
                for patient_id, ids in by_patient.items():
                    with self.changes.stamp(patient_id, synced, len(ids)) as first:
                        numbered += synced.number(ids, first)
        if not found:
            stores.change_sequences.note_numbering_done(self.clock())
        return numbered

    def bring_back_future_contacts(self) -> int:
        """Set to now every unit's last contact that lies in the future (an upgrade step, run by ``companion
        migrate``): before the server put a gateway's reading on its own clock, a gateway whose clock was ahead had
        one stored, and as a last contact never moves back it stood, so a unit gone silent raised no alert until
        then. Now is the latest the unit can have been heard from; the unit's next report or upload sets the
        real time. Run by every migrate (a unit's update by _id, a scan of the units): processes of the version
        before go on storing such times until the new ones replace them."""
        at = self.clock()
        return self.stores.devices.bring_back_last_contacts(at + CONTACT_MARGIN, at)

    def audit_retention(self) -> dict[str, int]:
        """Daily: finished days' counts of gateways' routine calls become chained events, then audit events older
        than ``COMPANION_AUDIT_RETENTION_DAYS`` are deleted behind keyed cuts (companion.services.audit)."""
        if self.audit is None:
            raise RuntimeError("housekeeping was built without the audit trail")
        rolled = self.audit.roll_up_heartbeats()
        deleted = self.audit.purge_before(self.clock() - self.retention)
        return {"heartbeat_days": rolled, "audit_events_deleted": deleted}
