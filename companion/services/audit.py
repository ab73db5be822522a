"""Writing audit events for every interaction with a patient's data, on the request path."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

from companion.clock import Clock, now, to_millis
from companion.domain.audit_chain import GENESIS, link, verify_chain
from companion.store.audit import AuditEvents

INTENT = "intent"
UNFINISHED_AFTER = timedelta(minutes=5)


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

    def verify(self, *, settled_before: datetime | None = None) -> dict:
        """Verify every chain in the trail: {"events": n, "chains": n, "breaks": [...], "unfinished": [...]}.

        ``unfinished`` lists the writes whose intent was recorded but whose outcome never was (the data may
        have changed without its audit event): request id, when, actor and route. Intents newer than
        ``settled_before`` (default: five minutes ago) may still be running and are left out."""
        settled_before = settled_before or self.clock() - UNFINISHED_AFTER
        breaks, total = [], 0
        intents: dict[str, dict] = {}
        finished: set[str] = set()
        chain_ids = self.events.chain_ids()
        for chain_id in chain_ids:
            docs = list(self.events.chain(chain_id))
            total += len(docs)
            breaks.extend(verify_chain(chain_id, docs))
            for doc in docs:
                if doc.get("action") == INTENT:
                    intents[doc.get("request_id")] = doc
                else:
                    finished.add(doc.get("request_id"))
        unfinished = [{"request_id": rid, "at": doc.get("at"), "actor_id": doc.get("actor_id"),
                       "method": doc.get("method"), "route": doc.get("route")}
                      for rid, doc in intents.items() if rid not in finished and doc.get("at") < settled_before]
        return {"events": total, "chains": len(chain_ids), "breaks": breaks,
                "unfinished": sorted(unfinished, key=lambda u: u["at"])}

    def for_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        """The latest events about a patient (who accessed their data), newest first."""
        return self.events.for_patient(patient_id, limit)
