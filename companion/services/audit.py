"""Writing audit events for every interaction with a patient's data, on the request path."""

from __future__ import annotations

import threading
import uuid

from pymongo.database import Database

from companion.domain.audit_chain import GENESIS, link, verify_chain
from companion.store.accounts import now
from companion.store.audit import AuditEvents


class AuditTrail:
    """One hash chain per process, writes serialised by a lock. A failed write raises, and the
    caller must fail the request (no patient data leaves without its audit event)."""

    def __init__(self, db: Database):
        self.events = AuditEvents(db)
        self.chain_id = f"{uuid.uuid4()}"
        self._seq = 0
        self._prev = GENESIS
        self._lock = threading.Lock()

    def write(self, events: list[dict]) -> None:
        if not events:
            return
        with self._lock:
            seq, prev, linked = self._seq, self._prev, []
            for event in events:
                doc = link({"at": _millis(now()), **event}, prev, seq, self.chain_id)
                linked.append(doc)
                seq, prev = seq + 1, doc["hash"]
            try:
                self.events.insert_many(linked)
            except Exception:
                # Part of the batch may have landed; continuing this chain could collide or fork,
                # so the next event starts a fresh chain. The caller fails the request.
                self.chain_id, self._seq, self._prev = f"{uuid.uuid4()}", 0, GENESIS
                raise
            self._seq, self._prev = seq, prev


def _millis(at):
    # BSON dates keep milliseconds; hash what will be read back.
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def verify_all(db: Database) -> dict:
    """Verify every chain in the trail; returns {"events": n, "chains": n, "breaks": [...]}."""
    events = AuditEvents(db)
    breaks, total = [], 0
    chain_ids = events.chain_ids()
    for chain_id in chain_ids:
        docs = list(events.chain(chain_id))
        total += len(docs)
        breaks.extend(verify_chain(chain_id, docs))
    return {"events": total, "chains": len(chain_ids), "breaks": breaks}
