"""The audit trail: events written on the request path into a keyed hash chain, anchored outside the database,
verified end to end, its routine gateway calls counted, and its oldest events deleted after retention.

See companion.domain.audit_chain for what the key, the anchors and the cuts each prove.

- **Anchors.** After a write, the process's chain head is anchored at most ``COMPANION_AUDIT_ANCHOR_S`` (60 s)
  later: a log line (logger ``companion.audit.anchor``) and, with ``COMPANION_AUDIT_ANCHOR_FILE``, a line
  appended to that file (opened for appending only, fsynced). ``companion audit-verify`` reads the file
  (or any log holding the lines) and checks every chain against its latest anchor.
- **Heartbeats.** A gateway's routine calls (its unit list, its units' status, every 30 s) are not PHI reads
  worth an event each: each is counted per gateway, route and day, and once the day is over the count becomes
  one chained event (:meth:`AuditTrail.roll_up_heartbeats`).
- **Retention.** Events older than ``COMPANION_AUDIT_RETENTION_DAYS`` (six years) are deleted by the worker,
  each chain's deletion preceded by a keyed cut (and an anchor line), so the rest still verifies.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from companion.clock import Clock, now, to_millis
from companion.domain.audit_chain import (
    GENESIS,
    Anchor,
    Cut,
    anchor_fingerprints,
    anchor_line,
    key_fingerprint,
    link,
    make_cut,
    nothing_verifies,
    parse_anchors,
    walk_chain,
)
from companion.store.audit import AuditEvents

INTENT = "intent"
HEARTBEAT = "heartbeat"
UNFINISHED_AFTER = timedelta(minutes=5)
anchor_log = logging.getLogger("companion.audit.anchor")
log = logging.getLogger(__name__)


class AnchorSink:
    """Where anchors go: the log always, and a file when one is configured (appended to, never rewritten)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        anchor_log.info(line)
        if self.path is None:
            return
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return []
        return self.path.read_text(errors="replace").splitlines()


class AuditWriteFailed(RuntimeError):
    """The events were not (all) stored: the caller must fail its request."""


class _Waiting:
    """One caller's events, queued for the next group write, and how that write ended."""

    __slots__ = ("events", "done", "error")

    def __init__(self, events: list[dict]):
        self.events = events
        self.done = False
        self.error: BaseException | None = None


class AuditTrail:
    """One hash chain per process. A failed write raises, and the caller must fail the request (no patient
    data leaves without its audit event).

    Writes are group-committed: each caller queues its events and waits for the chain's lock; whoever holds
    it writes every event queued so far in one insert and wakes their callers. A caller returns only once its
    own events are stored (or raises if that insert failed), so nothing is answered before it is recorded;
    under load, one database command carries many requests' events instead of one each, in turn.
    """

    def __init__(self, events: AuditEvents, clock: Clock = now, *, key: bytes | str,
                 anchors: AnchorSink | None = None, anchor_every: timedelta = timedelta(seconds=60)):
        self.events = events
        self.clock = clock
        self.key = key.encode() if isinstance(key, str) else key
        if len(self.key) < 32:
            raise ValueError("the audit key must be at least 32 bytes")
        self.anchors = anchors or AnchorSink(None)
        self.anchor_every = anchor_every
        self.chain_id = f"{uuid.uuid4()}"
        self._seq = 0
        self._prev = GENESIS
        self._lock = threading.Lock()  # the chain: held while a group of events is linked and written
        self._queue_lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._anchored: tuple[str, int] | None = None  # the last (chain, seq) anchored
        self._last_anchor_at: datetime | None = None
        self._timer: threading.Timer | None = None

    def write(self, events: list[dict]) -> None:
        """Store ``events`` in the chain; returns once they are stored, raises AuditWriteFailed if not."""
        if not events:
            return
        mine = _Waiting(events)
        with self._queue_lock:
            self._queue.append(mine)
        with self._lock:
            if not mine.done:  # no earlier holder took it along: write everything queued now
                self._write_queued_locked()
        if not mine.done or mine.error is not None:  # not done: a holder that took it along was interrupted
            raise AuditWriteFailed("the audit events could not be stored") from mine.error

    def write_once(self, event: dict, event_id: str) -> bool:
        """Store ``event`` in the chain under ``event_id`` unless an event is stored under that id already
        (False): of two processes writing the same event at once, one stores it. Written alone, outside the
        group commit, so that a refusal fails no other caller's events and leaves the chain as it was (nothing
        of it landed: the next event takes its seq). Raises AuditWriteFailed if it could not be stored."""
        with self._lock:
            doc = link({"_id": event_id, "at": to_millis(self.clock()), **event}, self._prev, self._seq,
                       self.chain_id, self.key)
            try:
                stored = self.events.append_unless_stored(doc)
            except Exception as exc:
                log.error("audit write of 1 event failed (%s)", type(exc).__name__)
                self.chain_id, self._seq, self._prev = f"{uuid.uuid4()}", 0, GENESIS  # it may have landed
                raise AuditWriteFailed("the audit event could not be stored") from exc
            if stored:
                self._seq, self._prev = self._seq + 1, doc["hash"]
                self._anchor_soon()
            return stored

    def _write_queued_locked(self) -> None:
        with self._queue_lock:
            group, self._queue = self._queue, []
        if not group:  # only after an interrupted holder took everything queued along
            return
        seq, prev, linked = self._seq, self._prev, []
        try:
            for waiting in group:
                for event in waiting.events:
                    doc = link({"at": to_millis(self.clock()), **event}, prev, seq, self.chain_id, self.key)
                    linked.append(doc)
                    seq, prev = seq + 1, doc["hash"]
            self.events.append(linked)
        except Exception as exc:  # noqa: BLE001 - every caller in the group is told, and fails its request
            # Part of the group may have landed; continuing this chain could collide or fork,
            # so the next event starts a fresh chain.
            log.error("audit write of %d events failed (%s)", sum(len(w.events) for w in group),
                      type(exc).__name__)
            self.chain_id, self._seq, self._prev = f"{uuid.uuid4()}", 0, GENESIS
            for waiting in group:
                waiting.error, waiting.done = exc, True
            return
        self._seq, self._prev = seq, prev
        for waiting in group:
            waiting.done = True
        self._anchor_soon()

    # Anchors
    def _anchor_soon(self) -> None:
        """Anchor the head now if the last anchor is old enough, else make sure a timer will (lock held)."""
        at = self.clock()
        if self._last_anchor_at is None or at - self._last_anchor_at >= self.anchor_every:
            self._anchor_locked()
        elif self._timer is None:
            wait = (self._last_anchor_at + self.anchor_every - at).total_seconds()
            self._timer = threading.Timer(max(0.0, wait), self.anchor_now)
            self._timer.daemon = True
            self._timer.start()

    def anchor_now(self) -> None:
        """Write an anchor for this process's chain head (if it moved since the last one)."""
        with self._lock:
            self._anchor_locked()

    def _anchor_locked(self) -> None:
        self._timer = None
        if self._seq == 0:
            return
        head = (self.chain_id, self._seq - 1)
        if head == self._anchored:
            return
        at = self.clock()
        try:
            self.anchors.write(anchor_line(Anchor(self.chain_id, self._seq - 1, self._prev, at.isoformat()),
                                           self.key))
        except OSError as exc:
            log.error("audit anchor could not be written (%s)", type(exc).__name__)
            return
        self._anchored, self._last_anchor_at = head, at

    def close(self) -> None:
        """Anchor what is left (a process shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
        self.anchor_now()

    # Heartbeats
    def count_heartbeat(self, event: dict) -> None:
        """Count a gateway's routine call instead of writing an event for it (one counter per gateway, route
        and day; rolled up into one chained event when the day is over)."""
        at = self.clock()
        day = at.date().isoformat()
        key = f"{event.get('actor_id')}:{event.get('method')} {event.get('route')}:{day}"
        fields = {k: event.get(k) for k in ("actor_id", "actor_role", "resource_type", "method", "route",
                                            "patient_ids")}
        self.events.count_heartbeat(key, {**fields, "day": day}, at)

    def roll_up_heartbeats(self) -> int:
        """Daily: each finished day's count of a gateway's routine calls becomes one chained event. Its ``_id``
        and request id are derived from the counter, so neither a retry after a crash nor a run overlapping this
        one (two leaders across a hand-over) writes it twice: the second write is refused."""
        today = self.clock().date().isoformat()
        written = 0
        for count in self.events.heartbeats_before(today):
            request_id = f"heartbeat:{count['_id']}"
            # (by request id too: events rolled up before they had their own _id)
            if self.events.with_request_id(request_id) is None and self.write_once(
                    {"actor_id": count.get("actor_id"), "actor_role": count.get("actor_role"), "action": HEARTBEAT,
                     "resource_type": count.get("resource_type"), "resource_ids": [],
                     "patient_ids": count.get("patient_ids") or [], "outcome": "success", "status": None,
                     "request_id": request_id, "method": count.get("method"), "route": count.get("route"),
                     "count": count["count"], "first_at": count["first_at"], "last_at": count["last_at"],
                     "day": count["day"]}, request_id):
                written += 1
            self.events.forget_heartbeat(count["_id"])
        return written

    # Retention
    def purge_before(self, cutoff: datetime) -> int:
        """Delete every event older than ``cutoff``, chain by chain: a keyed cut (and an anchor line) first,
        then the events up to it. Safe to run again after a crash, and beside another run (two leaders across a
        hand-over): a cut is saved only if it moves the chain's forward, so the events deleted are always behind
        the chain's stored cut, whichever run saved it."""
        deleted = 0
        for chain_id, seq, hash_ in list(self.events.chain_heads_before(cutoff)):
            cut = make_cut(chain_id, seq, hash_, self.clock().isoformat(), self.key)
            if self.events.save_cut({"_id": chain_id, "seq": cut.seq, "hash": cut.hash, "at": cut.at,
                                     "mac": cut.mac}):
                self.anchors.write(anchor_line(Anchor(chain_id, seq, hash_, cut.at), self.key))
            deleted += self.events.delete_through(chain_id, seq)  # not saved: the stored cut is at seq or beyond
        return deleted

    # Verification
    def verify(self, *, settled_before: datetime | None = None, anchor_lines: list[str] | None = None) -> dict:
        """Verify every chain in the trail: {"events", "chains", "breaks", "unfinished", "anchors"}.

        ``key`` holds this key's fingerprint and, when not one event nor one anchor verifies under it, a
        :class:`~companion.domain.audit_chain.NothingVerifies` (else None): the key is wrong or everything was
        rewritten, which the anchors' fingerprints (outside their MAC) only hint at.
        ``breaks`` lists each altered, missing, re-linked, truncated or deleted event or chain; chains are checked
        against their latest anchor among ``anchor_lines`` (default: the configured anchor file), so cutting a
        chain's end or deleting a whole chain is found too. ``unfinished`` lists the writes whose intent was
        recorded but whose outcome never was (the data may have changed without its audit event): request id,
        when, actor and route. Intents newer than ``settled_before`` (default: five minutes ago) may still be
        running and are left out."""
        settled_before = settled_before or self.clock() - UNFINISHED_AFTER
        lines = self.anchors.read() if anchor_lines is None else anchor_lines
        anchors, anchor_problems = parse_anchors(lines, self.key)
        latest: dict[str, Anchor] = {}
        for anchor in anchors:
            if anchor.chain_id not in latest or anchor.seq > latest[anchor.chain_id].seq:
                latest[anchor.chain_id] = anchor
        cuts = {chain_id: Cut(chain_id, c["seq"], c["hash"], c["at"], c["mac"])
                for chain_id, c in self.events.cuts_by_chain().items()}
        breaks, total, checked, verified = [], 0, 0, 0
        intents: dict[str, dict] = {}
        finished: set[str] = set()
        chain_ids = self.events.chain_ids()
        for chain_id in sorted(set(chain_ids) | set(latest) | set(cuts)):
            docs = list(self.events.chain(chain_id))
            total += len(docs)
            walk = walk_chain(chain_id, docs, self.key, cut=cuts.get(chain_id), anchor=latest.get(chain_id))
            breaks.extend(walk.breaks)
            checked, verified = checked + walk.checked, verified + walk.verified
            for doc in docs:
                if doc.get("action") == INTENT:
                    intents[doc.get("request_id")] = doc
                else:
                    finished.add(doc.get("request_id"))
        unfinished = [{"request_id": rid, "at": doc.get("at"), "actor_id": doc.get("actor_id"),
                       "method": doc.get("method"), "route": doc.get("route")}
                      for rid, doc in intents.items() if rid not in finished and doc.get("at") < settled_before]
        refused = sum(1 for problem in anchor_problems if "MAC does not match" in problem)
        return {"events": total, "chains": len(chain_ids), "breaks": breaks,
                "unfinished": sorted(unfinished, key=lambda u: u["at"]),
                "anchors": {"read": len(anchors), "chains_anchored": len(latest), "problems": anchor_problems},
                "key": {"fingerprint": key_fingerprint(self.key),
                        "nothing_verifies": nothing_verifies(
                            self.key, events_checked=checked, events_verified=verified, anchors_verified=len(anchors),
                            anchors_refused=refused, fingerprints=anchor_fingerprints(lines),
                            breaks=len(breaks) + len(anchor_problems))}}

    def for_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        """The latest events about a patient (who accessed their data), newest first."""
        return self.events.for_patient(patient_id, limit)
