"""The scheduler worker (`python -m companion.jobs.worker`, the Procfile's `worker`).

APScheduler 3.x runs here and only here: web workers never import this module (a scheduler inside
gunicorn runs every job once per web worker). Several worker processes may run; only the holder of
the leader lease acts, the others stay passive and take over when the lease lapses.

Every job has a stable id, ``replace_existing=True``, ``coalesce=True`` and an explicit misfire grace
time (APScheduler's default of 1 s silently drops a run after any pause). The jobs themselves are
idempotent and look back over what they may have missed, so a restart catches up without sending
anything twice: reminders due less than the grace ago still go out, older ones become missed.

For the operators: every worker writes a heartbeat (``companion worker-status``, ``/readyz``), counts each
job's runs, duration, lag and last success in Prometheus metrics served on its own port, and at start
waits for the database (one log line per attempt) instead of exiting.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as time_of_day
from typing import TYPE_CHECKING

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler, SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler

from companion import metrics
from companion.clock import now
from companion.logs import log_context
from companion.services.adherence_upgrade import STEP as ADHERENCE_UPGRADE
from companion.services.container import Services
from companion.services.item_failures import ItemFailures
from companion.services.push_delivery import worker_name

if TYPE_CHECKING:
    from companion.notify.push import PushSender
    from companion.services.leadership import LeaderLease
    from companion.settings import Settings

logger = logging.getLogger("companion.jobs.worker")  # also when run as __main__
FIRST_RETRY_S, LAST_RETRY_S = 1.0, 30.0  # waiting for the database at start: doubling delays between these
# The executor of the lease's renewal and the heartbeat, apart from the pool the other jobs share: a pool busy with
# long runs would hold them up past the lease, and another worker would take over while this one still runs jobs.
LIVENESS = "liveness"


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: a stable id, what it runs, when, and how late it may still run."""

    id: str
    run: Callable[[], object]
    trigger: str
    trigger_args: dict
    misfire_grace: timedelta
    leader_only: bool = True
    # A daily job: tried every hour at its minute, it runs when it has not run since this time of day (UTC)
    # last came round, so a run whose time found no leader is made up at the next hour, not the next day.
    daily_at: time_of_day | None = None
    executor: str = "default"


class Worker:
    """The jobs of one worker process, gated by the leader lease."""

    def __init__(self, services: Services, *, holder: str | None = None,
                 should_stop: Callable[[], bool] = lambda: False):
        self.services = services
        self.should_stop = should_stop  # the process was told to stop: a long job ends after the work in hand
        self.settings = services.settings
        self.lease = services.leader_lease(holder or worker_name())
        self.started_at = services.clock()
        self.job_runs: dict[str, dict] = {}  # each job's last runs, for the heartbeat
        self._runs_lock = threading.Lock()

    def specs(self) -> list[JobSpec]:
        """Every job this worker schedules."""
        svc, s = self.services, self.settings
        minute = timedelta(minutes=1)
        beat = {"seconds": s.lease_ttl.total_seconds() / 3}
        specs = [
            JobSpec("leader-lease", self.lease.tick, "interval", beat, s.lease_ttl, leader_only=False,
                    executor=LIVENESS),
            JobSpec("heartbeat", self.beat, "interval", beat, s.lease_ttl, leader_only=False, executor=LIVENESS),
            JobSpec("outbox-depth", svc.push.measure_outbox, "interval", {"seconds": 30}, minute),
            JobSpec("reminders-dispatch", svc.reminder_dispatch.dispatch_due, "cron", {"second": 0}, s.reminder_grace),
            JobSpec("reminders-missed", svc.reminder_dispatch.mark_missed, "interval", {"minutes": 5}, s.reminder_grace),
            JobSpec("reminders-materialize", lambda: svc.reminders.materialize_ahead(s.reminder_grace,
                                                                                     s.materialize_horizon),
                    "interval", {"hours": 1}, timedelta(hours=1)),
            JobSpec("alerts-evaluate", svc.alerts.evaluate, "cron", {"second": 30}, s.reminder_grace),
            JobSpec("adherence-daily", self.adherence, "cron", {"minute": 5}, timedelta(hours=6)),
            JobSpec("panel-rows-refresh", svc.panel_rows.refresh_due, "interval", {"minutes": 1}, minute),
            daily("push-tokens-prune", svc.push.prune_phones, 3, 17),
            JobSpec("push-claims-purge", svc.push.purge_claims, "interval", {"hours": 1}, timedelta(hours=1)),
            daily("housekeeping", svc.housekeeping.purge_expired, 3, 43),
            daily("audit-retention", svc.housekeeping.audit_retention, 0, 20),
            JobSpec("closures-finish", svc.lifecycle.finish_closures, "interval", {"minutes": 10},
                    timedelta(minutes=10)),
            JobSpec("handovers-finish", svc.gateways.finish_handovers, "interval", {"minutes": 5},
                    timedelta(minutes=5)),
            daily("records-retention", svc.lifecycle.purge_expired_records, 4, 13),
        ]
        if svc.sender is not None:
            # Every worker sends, the passive ones too: a claim gives each notification to one sender
            # (companion.store.outbox), so more workers (or `companion.jobs.sender` processes) mean more sending.
            # Told to stop, it ends after the batch in hand, not once a backlog is sent (the shutdown waits for it).
            specs.append(JobSpec("push-send", lambda: svc.push.send_due(should_stop=self.should_stop), "interval",
                                 {"seconds": 10}, minute, leader_only=False))
        else:
            logger.warning("no FCM service account configured: notifications stay in the outbox")
        return specs

    def adherence(self) -> int:
        """The hourly adherence job, after the days still stored under earlier rules are computed again (those a
        worker of the version before wrote during or after `companion migrate`; nothing read once none is left:
        companion.services.adherence_upgrade.AdherenceUpgrade.catch_up). The catch-up failing (a read timing out) is
        logged and leaves the job's own days to be computed all the same."""
        ItemFailures(ADHERENCE_UPGRADE).attempt("catch-up", self.services.adherence_upgrade.catch_up)
        return self.services.adherence_job.run()

    def run_gated(self, spec: JobSpec) -> object:
        """Run ``spec`` if it needs no lease or this worker holds it; None when skipped. Every line it logs
        carries its ``job_id``; its outcome and duration go to the metrics and the next heartbeat."""
        if spec.leader_only and not self.lease.is_leader():
            logger.debug("not the leader; skipping %s", spec.id)
            metrics.JOB_RUNS.labels(spec.id, "skipped").inc()
            return None
        at = self.services.clock()
        if spec.daily_at is not None and not self.lease.claim_daily(spec.id, spec.daily_at, at):
            return None
        started = time.perf_counter()
        with log_context(job_id=spec.id):
            try:
                result = spec.run()
            except Exception as exc:
                self._note_run(spec.id, time.perf_counter() - started, error=type(exc).__name__)
                if spec.daily_at is not None:
                    self.lease.daily_failed(spec.id, at)
                raise
        if spec.daily_at is not None:
            self.lease.daily_done(spec.id, at)
        self._note_run(spec.id, time.perf_counter() - started)
        return result

    def _note_run(self, job_id: str, seconds: float, error: str | None = None) -> None:
        metrics.JOB_RUNS.labels(job_id, "error" if error else "ok").inc()
        metrics.JOB_DURATION.labels(job_id).observe(seconds)
        at = self.services.clock()
        if error is None:
            metrics.JOB_LAST_SUCCESS.labels(job_id).set(at.timestamp())
        with self._runs_lock:
            runs = self.job_runs.setdefault(job_id, {"runs": 0, "failures": 0})
            runs["runs"] += 1
            runs["last_run_at"], runs["last_duration_s"] = at, round(seconds, 3)
            if error is None:
                runs["last_ok_at"] = at
            else:
                runs["failures"] += 1
                runs["last_error_at"], runs["last_error"] = at, error

    def beat(self) -> None:
        """Write this worker's heartbeat: alive, whether it leads, each job's last runs."""
        leader = self.lease.is_leader()
        with self._runs_lock:
            jobs = {job_id: dict(runs) for job_id, runs in self.job_runs.items()}
        self.services.heartbeats.beat(self.lease.holder, leader=leader, started_at=self.started_at, jobs=jobs)
        metrics.WORKER_LEADER.set(1 if leader else 0)
        metrics.WORKER_HEARTBEAT.set(time.time())

    def install(self, scheduler: BaseScheduler, *, start_at: datetime | None = None) -> None:
        """Add every job to ``scheduler`` under its stable id (re-installing replaces, never duplicates)."""
        first_run = {"next_run_time": start_at} if start_at is not None else {}
        specs = self.specs()
        with contextlib.suppress(ValueError):  # installed before: the scheduler has it already
            scheduler.add_executor(ThreadPoolExecutor(sum(s.executor == LIVENESS for s in specs)), LIVENESS)
        for spec in specs:
            scheduler.add_job(self.run_gated, spec.trigger, args=[spec], id=spec.id, name=spec.id,
                              executor=spec.executor, replace_existing=True, coalesce=True, max_instances=1,
                              misfire_grace_time=int(spec.misfire_grace.total_seconds()),
                              **first_run, **spec.trigger_args)
        scheduler.remove_listener(_log_event)
        scheduler.add_listener(_log_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        scheduler.remove_listener(_measure_lag)
        scheduler.add_listener(_measure_lag, EVENT_JOB_SUBMITTED)


def daily(job_id: str, run: Callable[[], object], hour: int, minute: int) -> JobSpec:
    """A job that runs once a day at ``hour``:``minute`` UTC, tried every hour at its minute (JobSpec.daily_at)."""
    return JobSpec(job_id, run, "cron", {"minute": minute}, timedelta(hours=1), daily_at=time_of_day(hour, minute))


def _log_event(event: JobExecutionEvent) -> None:
    if event.code == EVENT_JOB_MISSED:
        metrics.JOB_RUNS.labels(event.job_id, "missed").inc()
        logger.warning("job run missed beyond its grace time", extra={"job_id": event.job_id,
                                                                      "scheduled_for": str(event.scheduled_run_time)})
    else:
        logger.error("job failed: %s", type(event.exception).__name__, extra={"job_id": event.job_id})


def _measure_lag(event: JobSubmissionEvent) -> None:
    """How late a run starts: from the earliest scheduled time it stands for (coalesced runs) to now."""
    if event.scheduled_run_times:
        lag = (now() - min(event.scheduled_run_times)).total_seconds()
        metrics.JOB_LAG.labels(event.job_id).set(max(0.0, lag))


def wait_for_database(services: Services, stopping: threading.Event) -> bool:
    """Until the database answers with its indexes as declared (True) or the worker is told to stop
    (False): one log line per attempt saying what is awaited, with doubling delays up to 30 s."""
    delay = FIRST_RETRY_S
    while (problem := services.health.problem()) is not None:
        logger.warning("waiting for the database: %s; trying again in %g s", problem, delay)
        if stopping.wait(delay):
            return False
        delay = min(delay * 2, LAST_RETRY_S)
    return True


def open_process(name: str, *, need_sender: bool = False) -> tuple[Settings, PushSender | None, Services]:
    """A worker or sender process's start: its settings (a bad one: one line and exit 2), JSON logs, the push
    sender if an FCM service account is configured (required with ``need_sender``), and the services."""
    from companion.logs import configure_logging
    from companion.notify.push import PushSender
    from companion.settings import EXIT_BAD_SETTING, SettingError, load_settings

    try:
        settings = load_settings()
    except SettingError as exc:
        print(f"companion {name}: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTING)
    if need_sender and not settings.fcm_service_account:
        print(f"companion {name}: FCM_SERVICE_ACCOUNT is not set: there is nothing to send with", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTING)
    configure_logging(settings.log_level)
    try:
        sender = (PushSender(settings.fcm_service_account, fcm_url=settings.fcm_url)
                  if settings.fcm_service_account else None)
    except ValueError as exc:  # what the settings' check cannot see: a key that firebase-admin cannot load
        print(f"companion {name}: FCM_SERVICE_ACCOUNT={settings.fcm_service_account!r} cannot be used by "
              f"firebase-admin ({(str(exc).splitlines() or [''])[0][:200]})", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTING)
    from companion.services.container import DatabaseNotFound
    from companion.settings import EXIT_DATABASE_UNAVAILABLE

    try:
        return settings, sender, Services(settings, sender=sender)
    except DatabaseNotFound as exc:  # an address pymongo cannot look up makes no client to wait with
        print(f"companion {name}: {exc}; correct MONGODB_URI", file=sys.stderr)
        sys.exit(EXIT_DATABASE_UNAVAILABLE)


def run_until_asked(scheduler, stopping: threading.Event, lease: LeaderLease | None = None) -> None:
    """Run ``scheduler`` until ``stopping`` is set, and return only once the jobs running then have finished:
    the lease is released and the database and FCM clients closed after them (a push batch at FCM is settled,
    not left claimed, to be sent again by the next leader once its lease lapses). The scheduler's own ``start``
    may return before its jobs end (its loop sees the stopped state at its next wake-up), so this waits for the
    shutdown that waits for them.

    While it waits the scheduler runs nothing more, the `leader-lease` job included: ``lease``, if this worker
    holds it, is renewed every third of its ttl by a thread of its own (`LeaderLease.keep`: never taken) until
    the jobs have finished, then released. Otherwise a run longer than the ttl would go on beside the next
    leader's runs of the same jobs.

    The shutdown runs on a thread of its own, not in the signal handler: that runs on the main thread wherever it
    was interrupted, possibly inside the thread pool's submit, which holds the lock shutdown takes too (it would
    wait on itself for ever); and a signal before the scheduler started would find it not running yet."""
    def shut_down_when_asked() -> None:
        stopping.wait()
        finished = threading.Event()
        holding = threading.Thread(target=_hold, args=(lease, finished), name="worker-lease-hold", daemon=True) \
            if lease is not None else None
        if holding is not None:
            holding.start()
        try:
            while True:
                try:
                    scheduler.shutdown(wait=True)
                    return
                except SchedulerNotRunningError:
                    time.sleep(0.05)
        finally:
            finished.set()
            if holding is not None:
                holding.join()

    stopper = threading.Thread(target=shut_down_when_asked, name="worker-stop", daemon=True)
    stopper.start()
    try:
        scheduler.start()
    except Exception:
        # APScheduler's loop can trip over the shutdown it races (a one-off job it is removing when the state
        # turns to stopped: JobLookupError); asked to stop, that is no reason to let go before the jobs end.
        if not stopping.is_set():
            raise
        logger.debug("the scheduler's loop ended with an error while stopping", exc_info=True)
    if stopping.is_set():
        stopper.join()
        if lease is not None:
            lease.release()


def _hold(lease: LeaderLease, finished: threading.Event) -> None:
    """Renew ``lease`` (if held) now and every third of its ttl until ``finished``."""
    every = lease.ttl.total_seconds() / 3
    while not finished.is_set():
        try:
            lease.keep()
        except Exception:  # (the database away for a moment: tried again at the next beat, as the job would)
            logger.warning("renewing the lease while the jobs finish failed", exc_info=True)
        finished.wait(every)


def main() -> None:
    """Run the worker until SIGTERM/SIGINT; release the lease on the way out."""
    settings, sender, services = open_process("worker")
    scheduler = BlockingScheduler(timezone="UTC")
    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port, settings.listen_host or "127.0.0.1", token=settings.metrics_token)
    try:
        if not wait_for_database(services, stopping):
            return
        worker = Worker(services, should_stop=stopping.is_set)
        # Run everything once at start-up: take the lease, then catch up on what the pause missed.
        worker.lease.tick()
        worker.install(scheduler, start_at=now())
        logger.info("scheduler worker started", extra={"holder": worker.lease.holder})
        try:
            if not stopping.is_set():
                run_until_asked(scheduler, stopping, worker.lease)
        finally:
            worker.lease.release()
    finally:
        if sender is not None:
            sender.close()
        services.close()


if __name__ == "__main__":
    main()
