"""Cleanup instead of TTL indexes (FerretDB v1 has none): expired counters, keys, tokens, codes, sessions."""

from __future__ import annotations

from datetime import timedelta

from companion.clock import Clock, now
from companion.services.heartbeat import Heartbeats
from companion.store.stores import Stores


class Housekeeping:
    def __init__(self, stores: Stores, heartbeats: Heartbeats, clock: Clock = now):
        self.stores = stores
        self.clock = clock
        self.heartbeats = heartbeats

    def purge_expired(self) -> dict[str, int]:
        """Delete what has outlived its use; safe to run any time, any number of times.

        Emergency-access grants and audit events are never purged: they are the evidence."""
        cutoff = self.clock()
        return {
            "rate_events": self.stores.counters.delete_expired(),
            "idempotency_keys": self.stores.idempotency_keys.delete_expired(),
            "refresh_tokens": self.stores.token_families.delete_expired(older_than=timedelta(days=1)),
            "pairing_codes": self.stores.pairing_codes.delete_expired(cutoff - timedelta(days=1)),
            "web_sessions": self.stores.web_sessions.purge_expired(cutoff),
            "worker_heartbeats": self.heartbeats.forget_old(),
        }
