"""The MongoDB connection: durable defaults, one client per process, indexes at start-up."""

from __future__ import annotations

import importlib
import logging

from pymongo import MongoClient
from pymongo.database import Database

log = logging.getLogger(__name__)

# Each module lists the indexes of the collections it owns in a module-level INDEXES dict
# ({collection: [IndexModel, ...]}); ensure_indexes creates them all, idempotently.
INDEX_MODULES = [
    "companion.store.accounts",
    "companion.store.tokens",
    "companion.store.throttle",
    "companion.store.relationships",
    "companion.store.audit",
    "companion.store.devices",
    "companion.store.sessions",
    "companion.store.idempotency",
    "companion.store.push_tokens",
    "companion.store.outbox",
    "companion.store.leases",
    "companion.store.alerts",
    "companion.store.adherence",
    "companion.store.plans",
    "companion.store.reminders",
    "companion.store.diary",
    "companion.store.content",
    "companion.store.clinical_notes",
    "companion.store.web_sessions",
    "companion.store.recompute",
    "companion.store.gateway_reports",
]


def make_client(uri: str, *, timeout_ms: int = 5000, server_selection_timeout_ms: int = 2000) -> MongoClient:
    """A client that acknowledges writes only once they are durable, and never waits forever.

    timeoutMS bounds every operation, server selection included (pymongo then ignores
    serverSelectionTimeoutMS, and sends the remaining budget to the server as maxTimeMS), so a slow
    query or a dead server becomes an error the API turns into 503 within that time, not a hung worker.
    """
    return MongoClient(
        uri,
        w="majority",
        journal=True,
        wtimeoutMS=5000,
        retryWrites=True,
        retryReads=True,
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        connectTimeoutMS=server_selection_timeout_ms,
        tz_aware=True,
        appname="companion",
    )


def ensure_indexes(db: Database) -> None:
    """Create every collection's indexes (idempotent: existing identical indexes are left alone)."""
    for module_name in INDEX_MODULES:
        module = importlib.import_module(module_name)
        for collection, models in getattr(module, "INDEXES", {}).items():
            # One index per command: FerretDB v1.24 drops the connection (a server-side panic) when
            # one createIndexes command names several indexes that all exist already.
            for model in models:
                db[collection].create_indexes([model])
    log.info("indexes ensured", extra={"modules": len(INDEX_MODULES)})
