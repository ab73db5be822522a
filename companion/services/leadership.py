"""Leadership among scheduler workers: only the holder of the leader lease runs the jobs.

The lease itself (terms inserted under unique ids, renewed by the holder) is companion.store.leases.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, time, timedelta

from companion.store.leases import JobMarks, Lease, Leases

logger = logging.getLogger("companion.jobs.worker")

LEASE_NAME = "scheduler"
# How long a daily job's run is taken to be under way. Meant to be longer than any daily job runs (one still going
# after it may be started again beside it), and short enough that a run lost with its process is made up that day.
DAILY_CLAIM = timedelta(hours=6)


class LeaderLease:
    """This worker's hold on the leader lease; renewed by the `leader-lease` job every ttl/3."""

    def __init__(self, leases: Leases, holder: str, ttl: timedelta, marks: JobMarks):
        self.leases = leases
        self.marks = marks
        self.holder = holder
        self.ttl = ttl
        self._lease: Lease | None = None
        self._lock = threading.Lock()

    def tick(self) -> bool:
        """Renew the lease if held, otherwise try to take it; returns whether this worker leads."""
        with self._lock:
            was_leader = self._lease is not None
            if self._lease is not None:
                self._lease = self.leases.renew(self._lease, self.ttl)
            if self._lease is None:
                self._lease = self.leases.acquire(LEASE_NAME, self.holder, self.ttl)
            if was_leader != (self._lease is not None):
                logger.info("leadership %s", "taken" if self._lease else "lost", extra={"holder": self.holder})
            return self._lease is not None

    def keep(self) -> bool:
        """Renew the lease if held, never take it: a stopping worker holds on while its runs finish (another worker
        must not lead beside them), and one that does not lead does not start now. Returns whether it leads."""
        with self._lock:
            if self._lease is not None:
                self._lease = self.leases.renew(self._lease, self.ttl)
                if self._lease is None:
                    logger.info("leadership lost", extra={"holder": self.holder})
            return self._lease is not None

    def is_leader(self) -> bool:
        """True while this worker holds a term that has not run out by its own clock."""
        lease = self._lease
        return lease is not None and self.leases.clock() < lease.expires_at

    def release(self) -> None:
        """Give the lease up (clean shutdown), so another worker takes over at once."""
        with self._lock:
            if self._lease is not None:
                self.leases.release(self._lease)
                self._lease = None

    # Daily jobs: tried every hour, run once a day, claimed for the run
    def claim_daily(self, job_id: str, at_time: time, at: datetime) -> bool:
        """Claim the run of a daily job that is due at ``at``: it has not run since its time of day (UTC) last
        came round, and no other run of it is under way. The lease is checked only before a run, so a run can
        outlive its leader's lease (a stalled database, a paused VM) and the next leader's hourly try find the
        job not done yet: the claim, one conditional write, lets one of them start it. A claim lapses after
        DAILY_CLAIM, so a run that died with its process is made up at a later hourly try."""
        latest = datetime.combine(at.date(), at_time, tzinfo=UTC)
        if latest > at:
            latest -= timedelta(days=1)
        return self.marks.claim(job_id, self.holder, latest, at, at + DAILY_CLAIM)

    def daily_done(self, job_id: str, at: datetime) -> None:
        """Note that the daily job's run claimed at ``at`` finished, and end its claim."""
        self.marks.done(job_id, self.holder, at)

    def daily_failed(self, job_id: str, at: datetime) -> None:
        """Give up the claim made at ``at`` (the run failed), so the next hourly try runs the job again."""
        self.marks.unclaim(job_id, self.holder, at)
