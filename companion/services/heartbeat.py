"""Is the scheduler worker alive and doing its jobs? Each worker writes a heartbeat every third of the
lease TTL (whether it leads, when it started, each job's last run); readers ask :meth:`Heartbeats.status`.

The worker counts as ``ok`` while a worker that holds the leader lease has beaten within
``2 x COMPANION_LEASE_TTL_S`` (time for a passive worker to take over and report); ``stale`` when
heartbeats exist but none is that recent from a leader; ``absent`` when no worker ever reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.store.heartbeats import WorkerHeartbeats

OK, STALE, ABSENT = "ok", "stale", "absent"
KEPT = timedelta(days=1)


@dataclass(frozen=True)
class WorkerBeat:
    """One worker's latest heartbeat."""

    holder: str
    beat_at: datetime
    started_at: datetime | None
    leader: bool
    jobs: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerStatus:
    """The scheduler as the heartbeats show it: ``state`` (ok, stale, absent), how long ago the leader (or
    else any worker) last beat, and every recent worker's beat."""

    state: str
    age_s: float | None
    workers: list[WorkerBeat]

    @property
    def leader(self) -> WorkerBeat | None:
        return next((w for w in self.workers if w.leader), None)


class Heartbeats:
    def __init__(self, heartbeats: WorkerHeartbeats, lease_ttl: timedelta, clock: Clock = now):
        self.heartbeats = heartbeats
        self.stale_after = 2 * lease_ttl
        self.clock = clock

    def beat(self, holder: str, *, leader: bool, started_at: datetime, jobs: dict[str, dict]) -> None:
        """Record that worker ``holder`` is alive; ``jobs`` is what it knows of each job's last runs."""
        self.heartbeats.beat(holder, {"beat_at": self.clock(), "started_at": started_at, "leader": leader,
                                      "jobs": jobs})

    def status(self) -> WorkerStatus:
        """What the latest heartbeats say about the scheduler worker."""
        at = self.clock()
        workers = [WorkerBeat(doc["_id"], doc["beat_at"], doc.get("started_at"), bool(doc.get("leader")),
                              doc.get("jobs") or {}) for doc in self.heartbeats.latest()]
        if not workers:
            return WorkerStatus(ABSENT, None, [])
        leaders = [w for w in workers if w.leader]
        newest = (leaders or workers)[0]
        age = (at - newest.beat_at).total_seconds()
        state = OK if leaders and age <= self.stale_after.total_seconds() else STALE
        return WorkerStatus(state, age, workers)

    def forget_old(self) -> int:
        """Drop the heartbeats of workers silent for a day (housekeeping)."""
        return self.heartbeats.forget_before(self.clock() - KEPT)
