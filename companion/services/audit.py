"""Writing audit events for every interaction with a patient's data, on the request path."""

from __future__ import annotations

import threading
import uuid

from companion.clock import Clock, now, to_millis
from companion.domain.audit_chain import GENESIS, link, verify_chain
from companion.store.audit import AuditEvents


class AuditTrail:
    """One hash chain per process, writes serialised by a lock. A failed write raises, and the
    caller must fail the request (no patient data leaves without its audit event)."""

    def __init__(self, events: AuditEvents, clock: Clock = now):
        self.events = events
        self.clock = clock
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
                doc = link({"at": to_millis(self.clock()), **event}, prev, seq, self.chain_id)
                linked.append(doc)
                seq, prev = seq + 1, doc["hash"]
            try:
                self.events.append(linked)
            except Exception:
                # Part of the batch may have landed; continuing this chain could collide or fork,
                # so the next event starts a fresh chain. The caller fails the request.
                self.chain_id, self._seq, self._prev = f"{uuid.uuid4()}", 0, GENESIS
                raise
            self._seq, self._prev = seq, prev

    def verify(self) -> dict:
        """Verify every chain in the trail; returns {"events": n, "chains": n, "breaks": [...]}."""
        breaks, total = [], 0
        chain_ids = self.events.chain_ids()
        for chain_id in chain_ids:
            docs = list(self.events.chain(chain_id))
            total += len(docs)
            breaks.extend(verify_chain(chain_id, docs))
        return {"events": total, "chains": len(chain_ids), "breaks": breaks}

    def for_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        """The latest events about a patient (who accessed their data), newest first."""
        return self.events.for_patient(patient_id, limit)
