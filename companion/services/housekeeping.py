"""Cleanup instead of TTL indexes (FerretDB v1 has none): expired counters, keys, tokens and codes."""

from __future__ import annotations

from datetime import timedelta

from pymongo.database import Database

from companion.store.accounts import now
from companion.store.idempotency import IdempotencyKeys
from companion.store.throttle import Counters
from companion.store.tokens import TokenFamilies


def purge_expired(db: Database) -> dict[str, int]:
    """Delete what has outlived its use; safe to run any time, any number of times.

    Emergency-access grants and audit events are never purged: they are the evidence."""
    cutoff = now()
    return {
        "rate_events": Counters(db).delete_expired(),
        "idempotency_keys": IdempotencyKeys(db).delete_expired(),
        "refresh_tokens": TokenFamilies(db).delete_expired(older_than=timedelta(days=1)),
        "pairing_codes": db.pairing_codes.delete_many({"expires_at": {"$lt": cutoff - timedelta(days=1)}}).deleted_count,
    }
