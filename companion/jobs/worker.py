"""The scheduler worker (`python -m companion.jobs.worker`, the Procfile's `worker`).

APScheduler 3.x runs here and only here: web workers never import this module (a scheduler inside
gunicorn runs every job once per web worker). Several worker processes may run; only the holder of
the leader lease acts, the others stay passive and take over when the lease lapses.

Every job has a stable id, ``replace_existing=True``, ``coalesce=True`` and an explicit misfire grace
time (APScheduler's default of 1 s silently drops a run after any pause). The jobs themselves are
idempotent and look back over what they may have missed, so a restart catches up without sending
anything twice: reminders due less than the grace ago still go out, older ones become missed.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from pymongo.database import Database

from companion.jobs import adherence, alerts, push, reminders
from companion.notify.push import PushSender
from companion.services.housekeeping import purge_expired
from companion.services.job_settings import JobSettings
from companion.store.accounts import now
from companion.store.leases import Lease, Leases

logger = logging.getLogger("companion.jobs.worker")  # also when run as __main__

LEASE_NAME = "scheduler"


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: a stable id, what it runs, when, and how late it may still run."""

    id: str
    run: Callable[[], object]
    trigger: str
    trigger_args: dict
    misfire_grace: timedelta
    leader_only: bool = True


class LeaderLease:
    """This worker's hold on the leader lease; renewed by the `leader-lease` job every ttl/3."""

    def __init__(self, leases: Leases, holder: str, ttl: timedelta):
        self.leases = leases
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


class Worker:
    """The jobs of one worker process, gated by the leader lease."""

    def __init__(self, db: Database, settings: JobSettings, *, sender: PushSender | None,
                 clock: Callable[[], datetime] = now, holder: str | None = None):
        self.db = db
        self.settings = settings
        self.sender = sender
        self.clock = clock
        self.lease = LeaderLease(Leases(db, clock), holder or push.worker_name(), settings.lease_ttl)

    def specs(self) -> list[JobSpec]:
        """Every job this worker schedules."""
        db, s, clock = self.db, self.settings, self.clock
        minute = timedelta(minutes=1)
        specs = [
            JobSpec("leader-lease", self.lease.tick, "interval",
                    {"seconds": max(1, int(s.lease_ttl.total_seconds() / 3))}, s.lease_ttl, leader_only=False),
            JobSpec("reminders-dispatch", lambda: reminders.dispatch_reminders(db, s, clock), "cron",
                    {"second": 0}, s.reminder_grace),
            JobSpec("reminders-missed", lambda: reminders.mark_missed(db, s, clock), "interval",
                    {"minutes": 5}, s.reminder_grace),
            JobSpec("reminders-materialize", lambda: reminders.materialize_ahead(db, s, clock), "interval",
                    {"hours": 1}, timedelta(hours=1)),
            JobSpec("alerts-evaluate", lambda: alerts.evaluate_alerts(db, s, clock), "cron",
                    {"second": 30}, s.reminder_grace),
            JobSpec("adherence-daily", lambda: adherence.compute_adherence(db, s, clock), "cron",
                    {"minute": 5}, timedelta(hours=6)),
            JobSpec("push-tokens-prune", lambda: push.prune_push_tokens(db, s, clock), "cron",
                    {"hour": 3, "minute": 17}, timedelta(days=1)),
            JobSpec("push-claims-purge", lambda: push.purge_push_claims(db, s, clock), "interval",
                    {"hours": 1}, timedelta(hours=1)),
            JobSpec("housekeeping", lambda: purge_expired(db), "cron", {"hour": 3, "minute": 43},
                    timedelta(days=1)),
        ]
        if self.sender is not None:
            sender = self.sender
            specs.append(JobSpec("push-send", lambda: push.send_push(db, s, clock, sender), "interval",
                                 {"seconds": 10}, minute))
        else:
            logger.warning("no FCM service account configured: notifications stay in the outbox")
        return specs

    def run_gated(self, spec: JobSpec) -> object:
        """Run ``spec`` if it needs no lease or this worker holds it; None when skipped."""
        if spec.leader_only and not self.lease.is_leader():
            logger.debug("not the leader; skipping %s", spec.id)
            return None
        return spec.run()

    def install(self, scheduler: BaseScheduler, *, start_at: datetime | None = None) -> None:
        """Add every job to ``scheduler`` under its stable id (re-installing replaces, never duplicates)."""
        first_run = {"next_run_time": start_at} if start_at is not None else {}
        for spec in self.specs():
            scheduler.add_job(self.run_gated, spec.trigger, args=[spec], id=spec.id, name=spec.id,
                              replace_existing=True, coalesce=True, max_instances=1,
                              misfire_grace_time=int(spec.misfire_grace.total_seconds()),
                              **first_run, **spec.trigger_args)
        scheduler.remove_listener(_log_event)
        scheduler.add_listener(_log_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)


def _log_event(event: JobExecutionEvent) -> None:
    if event.code == EVENT_JOB_MISSED:
        logger.warning("job run missed beyond its grace time", extra={"job_id": event.job_id,
                                                                      "scheduled_for": str(event.scheduled_run_time)})
    else:
        logger.error("job failed: %s", type(event.exception).__name__, extra={"job_id": event.job_id})


def main() -> None:
    """Run the worker until SIGTERM/SIGINT; release the lease on the way out."""
    from companion.config import load_settings
    from companion.logs import configure_logging
    from companion.store.db import ensure_indexes, make_client

    configure_logging()
    app_settings = load_settings()
    settings = JobSettings.from_env()
    client = make_client(app_settings.mongodb_uri, timeout_ms=app_settings.db_timeout_ms,
                         server_selection_timeout_ms=app_settings.server_selection_timeout_ms)
    db = client[app_settings.mongodb_db]
    ensure_indexes(db)
    sender = (PushSender(app_settings.fcm_service_account, fcm_url=app_settings.fcm_url)
              if app_settings.fcm_service_account else None)
    worker = Worker(db, settings, sender=sender)
    scheduler = BlockingScheduler(timezone="UTC")
    # Run everything once at start-up: take the lease, then catch up on what the pause missed.
    worker.lease.tick()
    worker.install(scheduler, start_at=now())

    def stop(signum, frame):
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("scheduler worker started", extra={"holder": worker.lease.holder})
    try:
        scheduler.start()
    finally:
        worker.lease.release()
        if sender is not None:
            sender.close()
        client.close()


if __name__ == "__main__":
    main()
