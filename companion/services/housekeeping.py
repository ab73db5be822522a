"""Cleanup instead of TTL indexes (FerretDB v1 has none): expired counters, keys, tokens, codes, sessions; and the
audit trail's retention."""

from __future__ import annotations

from datetime import timedelta

from companion.clock import Clock, now
from companion.services.audit import AuditTrail
from companion.store.stores import Stores


class Housekeeping:
    def __init__(self, stores: Stores, clock: Clock = now, *, audit: AuditTrail | None = None,
                 audit_retention: timedelta = timedelta(days=2192)):
        self.stores = stores
        self.clock = clock
        self.audit = audit
        self.retention = audit_retention

    def purge_expired(self) -> dict[str, int]:
        """Delete what has outlived its use; safe to run any time, any number of times.

        Emergency-access grants are never purged here (they are evidence, kept with the patient's record); audit
        events have their own retention (:meth:`audit_retention`)."""
        cutoff = self.clock()
        return {
            "rate_events": self.stores.counters.delete_expired(),
            "idempotency_keys": self.stores.idempotency_keys.delete_expired(),
            "refresh_tokens": self.stores.token_families.delete_expired(older_than=timedelta(days=1)),
            "pairing_codes": self.stores.pairing_codes.delete_expired(cutoff - timedelta(days=1)),
            "web_sessions": self.stores.web_sessions.purge_expired(cutoff),
            "one_time_codes": self.stores.one_time_codes.delete_expired(cutoff),
        }

    def audit_retention(self) -> dict[str, int]:
        """Daily: finished days' counts of gateways' routine calls become chained events, then audit events older
        than ``COMPANION_AUDIT_RETENTION_DAYS`` are deleted behind keyed cuts (companion.services.audit)."""
        if self.audit is None:
            raise RuntimeError("housekeeping was built without the audit trail")
        rolled = self.audit.roll_up_heartbeats()
        deleted = self.audit.purge_before(self.clock() - self.retention)
        return {"heartbeat_days": rolled, "audit_events_deleted": deleted}
