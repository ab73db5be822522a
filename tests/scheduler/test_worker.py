"""The worker: one leader at a time through the lease, takeover after expiry, stable jobs with explicit
misfire policy, missed runs logged, and no scheduler in the web app."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from companion.clock import now
from companion.jobs.worker import JobSpec, Worker, run_until_asked
from companion.services.leadership import DAILY_CLAIM, LEASE_NAME
from companion.store.leases import Leases
from companion.store.outbox import NotificationRequest, Outbox
from tests.scheduler.conftest import START
from tests.scheduler.helpers import daily_reminder, make_person, phone, services_on
from tests.support.due_reminders import seed_due_reminders


def _worker(db, settings, clock, holder, sender=None):
    return Worker(services_on(db, settings, clock, sender), holder=holder)


def _spec(worker, job_id):
    return next(s for s in worker.specs() if s.id == job_id)


def _daily_probe(ran: list) -> JobSpec:
    """A daily job at 03:43 that notes each time it runs in ``ran``."""
    return JobSpec("daily-probe", lambda: ran.append(now()) or "ran", "cron", {"minute": 43}, timedelta(hours=1),
                   daily_at=dt_time(3, 43))


def test_only_the_lease_holder_runs_jobs(jobs_db, settings, clock, traveller):
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    assert first.lease.tick() is True
    assert second.lease.tick() is False
    ran = []
    spec = JobSpec("probe", lambda: ran.append(1) or "ran", "interval", {"seconds": 1}, timedelta(seconds=1))
    assert first.run_gated(spec) == "ran"
    assert second.run_gated(spec) is None
    assert ran == [1]


def test_a_daily_job_whose_time_found_no_leader_runs_at_the_next_hourly_try_and_then_waits_for_the_next_day(
        jobs_db, settings, clock, traveller):
    """A hand-over or a deploy at 03:43 used to cost a day of housekeeping (and of retention deletions): each
    daily job is tried every hour at its minute and runs when it has not run since its latest time of day."""
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    ran = []
    spec = _daily_probe(ran)
    day = START.replace(hour=3, minute=43, second=0, microsecond=0)
    traveller.move_to(day)
    assert first.lease.tick() is True
    assert first.run_gated(spec) == "ran"  # never run before: now
    traveller.move_to(day + timedelta(hours=1))
    assert first.run_gated(spec) is None  # done since 03:43
    traveller.move_to(day + timedelta(days=1) - timedelta(minutes=1))
    assert first.run_gated(spec) is None  # 03:42 the next day: not its time yet
    traveller.move_to(day + timedelta(days=1, seconds=30))
    first.lease.release()  # the leader went away at its minute; nobody ran it
    assert second.run_gated(spec) is None
    traveller.move_to(day + timedelta(days=1, hours=1))
    assert second.lease.tick() is True
    assert second.run_gated(spec) == "ran"  # the next hourly try catches up
    traveller.move_to(day + timedelta(days=1, hours=2))
    assert second.run_gated(spec) is None
    assert ran == [day, day + timedelta(days=1, hours=1)]


def test_an_ended_daily_run_does_not_hold_its_claim(jobs_db, settings, clock, traveller):
    """A catch-up run at 02:43 kept its six-hour claim after it ended, so the run due at 03:43 waited till 08:43."""
    worker, ran = _worker(jobs_db, settings, clock, "first"), []
    spec = _daily_probe(ran)
    first = START.replace(hour=2, minute=43, second=0, microsecond=0) + timedelta(days=1)
    traveller.move_to(first)
    assert worker.lease.tick() and worker.run_gated(spec) == "ran"
    traveller.move_to(first + timedelta(hours=1))
    assert worker.lease.tick()
    assert worker.run_gated(spec) == "ran"


def test_every_daily_job_is_tried_hourly_at_its_minute(jobs_db, settings, clock):
    worker = _worker(jobs_db, settings, clock, "first")
    daily = {s.id: s for s in worker.specs() if s.daily_at is not None}
    assert set(daily) == {"push-tokens-prune", "housekeeping", "audit-retention", "records-retention"}
    assert all(s.trigger == "cron" and s.trigger_args == {"minute": s.daily_at.minute} for s in daily.values())


def test_holder_keeps_the_lease_by_renewing_every_third_of_its_ttl(jobs_db, settings, clock, traveller):
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    first.lease.tick()
    for _ in range(6):
        traveller.shift(settings.lease_ttl / 3)
        assert first.lease.tick() is True
        assert second.lease.tick() is False
    assert Leases(jobs_db, clock).current(LEASE_NAME)["term"] == 1


def test_passive_worker_takes_over_when_the_lease_lapses(jobs_db, settings, clock, traveller):
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    first.lease.tick()
    traveller.shift(settings.lease_ttl + timedelta(seconds=1))  # the first worker died without renewing
    assert first.lease.is_leader() is False
    assert second.lease.tick() is True
    assert first.lease.tick() is False
    current = Leases(jobs_db, clock).current(LEASE_NAME)
    assert (current["holder"], current["term"]) == ("second", 2)


def test_released_lease_is_taken_at_the_next_try(jobs_db, settings, clock, traveller):
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    first.lease.tick()
    first.lease.release()
    assert second.lease.tick() is True


def test_eight_workers_racing_for_a_lapsed_lease_make_one_leader(jobs_db, settings, clock, traveller):
    workers = [_worker(jobs_db, settings, clock, f"w{n}") for n in range(8)]
    barrier = threading.Barrier(len(workers))
    results: dict[str, bool] = {}

    def race(worker):
        barrier.wait()
        results[worker.lease.holder] = worker.lease.tick()

    threads = [threading.Thread(target=race, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results.values()) == 1


def test_a_passive_worker_helps_send_and_each_reminder_still_goes_out_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    first = _worker(jobs_db, settings, clock, "first", sender)
    second = _worker(jobs_db, settings, clock, "second", sender)
    traveller.move_to(datetime(2026, 3, 2, 9, 59, 50, tzinfo=UTC))
    first.lease.tick()
    second.lease.tick()
    traveller.move_to(datetime(2026, 3, 2, 10, 0, 40, tzinfo=UTC))  # the first died; its lease lapsed at 10:00:20
    for worker in (first, second):
        worker.lease.tick()
        for job_id in ("reminders-dispatch", "push-send", "reminders-dispatch", "push-send"):
            worker.run_gated(_spec(worker, job_id))
    assert len(emulator.delivered_to(token)) == 1
    assert not _spec(first, "push-send").leader_only and _spec(first, "reminders-dispatch").leader_only


def test_a_worker_told_to_stop_ends_its_push_send_after_the_batch_in_hand_not_once_its_backlog_is_sent(
        jobs_db, settings, clock, traveller, sender, emulator):
    due = clock() - timedelta(minutes=1)
    seed_due_reminders(jobs_db, 30, due)  # 30 active patients, one phone each: six batches of 5
    Outbox(jobs_db).schedule_many([NotificationRequest(f"missed-summary:p{n}:2026-03-02", f"p{n}", f"p{n}",
                                                       "generic_update", due, spread=False) for n in range(30)])
    worker = Worker(services_on(jobs_db, replace(settings, dispatch_batch=5), clock, sender), holder="w",
                    should_stop=lambda: bool(emulator.deliveries))  # SIGTERM once the first batch reached FCM
    worker.run_gated(_spec(worker, "push-send"))
    # The batch at FCM and at most the one claimed beside it went; the backlog waits for the next worker.
    assert 0 < len(emulator.deliveries) <= 10
    assert jobs_db.push_outbox.count_documents({"state": "scheduled"}) >= 20


def test_reinstalling_the_jobs_three_times_keeps_one_of_each(jobs_db, settings, clock, traveller):
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start(paused=True)
    worker = _worker(jobs_db, settings, clock, "first")
    try:
        for _ in range(3):
            worker.install(scheduler)
        jobs = scheduler.get_jobs()
    finally:
        scheduler.shutdown(wait=False)
    assert sorted(j.id for j in jobs) == sorted(s.id for s in worker.specs())
    by_id = {j.id: j for j in jobs}
    assert by_id["reminders-dispatch"].misfire_grace_time == 15 * 60
    assert all(j.coalesce and j.misfire_grace_time for j in jobs)


def _missed(caplog) -> list[str]:
    return [r.job_id for r in caplog.records if r.getMessage() == "job run missed beyond its grace time"]


def test_a_run_missed_beyond_its_grace_is_logged(jobs_db, settings, caplog):
    scheduler = BackgroundScheduler(timezone="UTC")
    worker = _worker(jobs_db, settings, now, "first")
    worker.install(scheduler)
    scheduler.add_job(print, "date", run_date=datetime.now(UTC) - timedelta(hours=1), id="stale",
                      misfire_grace_time=1)
    with caplog.at_level(logging.WARNING, logger="companion.jobs.worker"):
        scheduler.start(paused=False)
        try:
            for _ in range(200):  # at most 10 s
                if _missed(caplog):
                    break
                threading.Event().wait(0.05)
        finally:
            scheduler.shutdown(wait=False)
    assert _missed(caplog) == ["stale"]


def test_the_web_app_never_loads_the_scheduler():
    code = ("import sys; from companion import create_app; "
            "create_app({'mongodb_uri': 'mongodb://127.0.0.1:1/', 'secret_key': 'x' * 48}); "
            "print(sorted(m for m in sys.modules if m.startswith(('apscheduler', 'companion.jobs'))))")
    env = {**os.environ, "COMPANION_SKIP_INDEXES": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                            check=True)
    assert result.stdout.strip() == "[]"


def _start_worker(mongo_uri, db_name):
    env = {**os.environ, "MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "COMPANION_LEASE_TTL_S": "3"}
    env.pop("FCM_SERVICE_ACCOUNT", None)
    return subprocess.Popen([sys.executable, "-m", "companion.jobs.worker"], env=env, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_line(process, text, seconds):
    lines = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} within {seconds} s: {lines[-5:]}")


@pytest.mark.slow
def test_two_worker_processes_one_leads_and_the_other_takes_over_when_it_is_killed(mongo_uri, db_name):
    first = _start_worker(mongo_uri, db_name)
    second = None
    try:
        _wait_for_line(first, "leadership taken", 30)
        second = _start_worker(mongo_uri, db_name)
        started = _wait_for_line(second, "scheduler worker started", 30)
        assert not any("leadership taken" in line for line in started)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        _wait_for_line(second, "leadership taken", 30)  # the lease (3 s) lapses, the next tick takes it
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)


def test_a_worker_told_to_stop_lets_the_jobs_in_hand_finish_before_it_lets_go():
    """SIGTERM at a deploy while push-send has a batch at FCM: the scheduler's start returns (and the worker
    releases its lease and closes its clients) only once that job has finished, so the batch is settled rather
    than left claimed, to be sent again by the next leader once its lease lapses."""
    scheduler = BlockingScheduler(timezone="UTC")
    in_hand, settled, stopping = threading.Event(), threading.Event(), threading.Event()

    def batch_at_fcm():
        in_hand.set()
        time.sleep(1.0)
        settled.set()

    scheduler.add_job(batch_at_fcm, "date", run_date=datetime.now(UTC), misfire_grace_time=60)
    main = threading.Thread(target=run_until_asked, args=(scheduler, stopping))
    main.start()
    assert in_hand.wait(timeout=30)
    stopping.set()  # the signal
    main.join(timeout=60)
    assert not main.is_alive() and settled.is_set()


def test_a_daily_job_still_running_when_its_leader_lost_the_lease_is_not_started_again_by_the_next_leader(
        jobs_db, settings, clock, traveller):
    """ops review: run_gated checks the lease only before a run and marks a daily job done only after it, so a
    run that outlives its lease (a stalled database, a paused VM) is started again by the next leader."""
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    day = START.replace(hour=3, minute=43, second=0, microsecond=0)
    traveller.move_to(day)
    assert first.lease.tick() is True
    runs = []

    def job():
        runs.append(now())
        if len(runs) == 1:  # the first leader's run: its renewals do not get through while it works
            traveller.shift(settings.lease_ttl + timedelta(hours=1))
            assert second.lease.tick() is True
            second.run_gated(spec)  # the new leader's hourly try, while the first run goes on
        return "ran"

    spec = JobSpec("daily-probe", job, "cron", {"minute": 43}, timedelta(hours=1), daily_at=dt_time(3, 43))
    assert first.run_gated(spec) == "ran"
    assert len(runs) == 1, f"the daily job ran {len(runs)} times at once"


def test_a_daily_run_lost_with_its_process_is_made_up_once_its_claim_lapses(jobs_db, settings, clock, traveller):
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    ran = []
    spec = _daily_probe(ran)
    day = START.replace(hour=3, minute=43, second=0, microsecond=0)
    traveller.move_to(day)
    assert first.lease.claim_daily(spec.id, spec.daily_at, day) is True  # its run began; then the process died
    traveller.move_to(day + timedelta(hours=1))
    assert second.lease.tick() is True
    assert second.run_gated(spec) is None  # the run may still be going on
    made_up = day + DAILY_CLAIM + timedelta(hours=1)  # the first hourly try after the claim lapsed
    traveller.move_to(made_up)
    assert second.lease.tick() is True
    assert second.run_gated(spec) == "ran"
    traveller.move_to(made_up + timedelta(hours=1))
    assert second.lease.tick() is True
    assert second.run_gated(spec) is None
    assert ran == [made_up]


def test_a_run_that_ends_after_its_claim_lapsed_leaves_the_next_claim_alone(jobs_db, settings, clock, traveller):
    first, second = _worker(jobs_db, settings, clock, "first"), _worker(jobs_db, settings, clock, "second")
    day = START.replace(hour=3, minute=43, second=0, microsecond=0)
    traveller.move_to(day)
    assert first.lease.claim_daily("daily-probe", dt_time(3, 43), day) is True  # its run stalls
    taken_over = day + DAILY_CLAIM + timedelta(hours=1)
    traveller.move_to(taken_over)
    assert second.lease.claim_daily("daily-probe", dt_time(3, 43), taken_over) is True
    first.lease.daily_done("daily-probe", day)  # the stalled run ends at last
    mark = jobs_db.job_marks.find_one({"_id": "daily-probe"})
    assert (mark["at"], mark["claimed_by"], mark["claimed_at"]) == (day, "second", taken_over)


def test_a_failed_daily_run_is_tried_again_at_the_next_hourly_try(jobs_db, settings, clock, traveller):
    worker = _worker(jobs_db, settings, clock, "first")
    outcomes = iter([RuntimeError("the database went away"), "ran"])

    def job():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    spec = JobSpec("daily-probe", job, "cron", {"minute": 43}, timedelta(hours=1), daily_at=dt_time(3, 43))
    day = START.replace(hour=3, minute=43, second=0, microsecond=0)
    traveller.move_to(day)
    assert worker.lease.tick() is True
    with pytest.raises(RuntimeError):
        worker.run_gated(spec)
    traveller.move_to(day + timedelta(hours=1))
    assert worker.lease.tick() is True
    assert worker.run_gated(spec) == "ran"


def _claim_at_once(workers) -> dict[str, bool]:
    barrier = threading.Barrier(len(workers))
    claimed: dict[str, bool] = {}

    def claim(worker):
        barrier.wait()
        claimed[worker.lease.holder] = worker.lease.claim_daily("daily-probe", dt_time(3, 43), now())

    threads = [threading.Thread(target=claim, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return claimed


def test_of_eight_workers_claiming_a_daily_run_at_once_one_gets_it(jobs_db, settings, clock, traveller):
    workers = [_worker(jobs_db, settings, clock, f"w{n}") for n in range(8)]
    day = START.replace(hour=3, minute=43, second=0, microsecond=0)
    for run in ("first", "next day's"):  # the job's first run (an insert), and a later one (an update)
        traveller.move_to(day)
        claimed = _claim_at_once(workers)
        assert sum(claimed.values()) == 1, f"the {run} run"
        winner = next(w for w in workers if claimed[w.lease.holder])
        winner.lease.daily_done("daily-probe", day)
        day += timedelta(days=1)


def test_the_lease_is_renewed_while_long_jobs_hold_every_thread_of_the_shared_pool(jobs_db, settings):
    """The renewal shared APScheduler's pool with every other job: long runs there held it up past the lease, and
    another worker took over while this one still ran jobs."""
    worker = _worker(jobs_db, settings.with_changes(lease_ttl=timedelta(seconds=3)), now, "first")
    ticks, release = [], threading.Event()
    tick = worker.lease.tick
    worker.lease.tick = lambda: ticks.append(now()) or tick()
    scheduler = BackgroundScheduler(timezone="UTC", executors={"default": ThreadPoolExecutor(2)})
    worker.install(scheduler, start_at=datetime.now(UTC))
    for job in scheduler.get_jobs():
        if job.id not in ("leader-lease", "heartbeat"):
            job.remove()
    for n in range(2):
        scheduler.add_job(release.wait, "date", run_date=datetime.now(UTC), id=f"long-{n}", misfire_grace_time=60)
    scheduler.start()
    try:
        time.sleep(2.5)  # a renewal every second
        renewed_meanwhile = len(ticks) - 1
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    assert renewed_meanwhile >= 1


def test_a_stopping_worker_keeps_its_lease_while_its_jobs_finish_and_lets_go_after(jobs_db, settings):
    """ops review: the shutdown that waits for the jobs in hand stops the scheduler first, the `leader-lease` job
    with it: a run longer than the lease's ttl went on while the next worker took the lease and ran the same jobs
    beside it."""
    short = settings.with_changes(lease_ttl=timedelta(seconds=3))
    worker, next_worker = _worker(jobs_db, short, now, "stopping"), _worker(jobs_db, short, now, "next")
    scheduler = BlockingScheduler(timezone="UTC")
    assert worker.lease.tick() is True
    worker.install(scheduler, start_at=datetime.now(UTC))
    for job in scheduler.get_jobs():
        if job.id not in ("leader-lease", "heartbeat"):
            job.remove()
    in_hand, finish, stopping = threading.Event(), threading.Event(), threading.Event()
    scheduler.add_job(lambda: in_hand.set() or finish.wait(60), "date", run_date=datetime.now(UTC), id="long-run",
                      misfire_grace_time=60)
    main = threading.Thread(target=run_until_asked, args=(scheduler, stopping, worker.lease))
    main.start()
    try:
        assert in_hand.wait(timeout=30)
        stopping.set()  # SIGTERM at a deploy, the long run still going
        time.sleep(4.5)  # past the lease's ttl
        assert main.is_alive() and worker.lease.is_leader()
        assert next_worker.lease.tick() is False, "another worker leads while the stopping one still runs a job"
    finally:
        finish.set()
        main.join(timeout=60)
    assert not main.is_alive()
    assert not worker.lease.is_leader() and next_worker.lease.tick() is True  # released: taken at once
