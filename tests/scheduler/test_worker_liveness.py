"""The scheduler worker as an operator sees it: a heartbeat that `/readyz` and `companion worker-status`
read, each job's runs, failures and lag in the metrics, and, at start, a wait for the database with a
clear log line instead of an exit."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from prometheus_client import REGISTRY

from companion import cli
from companion.jobs import worker as worker_module
from companion.jobs.worker import JobSpec, Worker
from companion.services.heartbeat import ABSENT, OK, STALE
from tests.scheduler.helpers import services_on
from tests.support.ferretdb import FerretServer, free_port


def _worker(db, settings, clock, holder="first"):
    return Worker(services_on(db, settings, clock), holder=holder)


@pytest.fixture
def use_database(monkeypatch, mongo_uri, db_name):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)


def test_a_leaders_heartbeat_makes_the_worker_ok_and_its_silence_stale(jobs_db, settings, clock, traveller):
    worker = _worker(jobs_db, settings, clock)
    heartbeats = worker.services.heartbeats
    assert heartbeats.status().state == ABSENT
    worker.lease.tick()
    worker.beat()
    status = heartbeats.status()
    assert (status.state, status.leader.holder, status.age_s) == (OK, "first", 0)
    traveller.shift(2 * settings.lease_ttl + timedelta(seconds=1))
    assert heartbeats.status().state == STALE


def test_only_passive_workers_beating_is_not_ok(jobs_db, settings, clock, traveller):
    leader, passive = _worker(jobs_db, settings, clock, "leader"), _worker(jobs_db, settings, clock, "passive")
    leader.lease.tick()
    passive.lease.tick()
    passive.beat()
    assert passive.services.heartbeats.status().state == STALE


def test_readyz_reports_the_worker_and_stays_ready_without_it(client, jobs_db, settings, clock, traveller):
    before = client.get("/readyz")
    assert before.status_code == 200 and before.json["worker"] == ABSENT
    worker = _worker(jobs_db, settings, clock)
    worker.lease.tick()
    worker.beat()
    traveller.shift(timedelta(seconds=4))
    after = client.get("/readyz").json
    assert (after["worker"], after["worker_heartbeat_age_s"]) == (OK, 4.0)


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_jobs_runs_and_failures_reach_the_metrics_and_the_heartbeat(jobs_db, settings, clock, traveller):
    worker = _worker(jobs_db, settings, clock)
    worker.lease.tick()
    ok_before = _sample("companion_job_runs_total", job="probe-ok", outcome="ok")
    failed_before = _sample("companion_job_runs_total", job="probe-bad", outcome="error")

    def broken():
        raise RuntimeError("boom")

    worker.run_gated(JobSpec("probe-ok", lambda: None, "interval", {"seconds": 1}, timedelta(seconds=1)))
    with pytest.raises(RuntimeError):
        worker.run_gated(JobSpec("probe-bad", broken, "interval", {"seconds": 1}, timedelta(seconds=1)))
    assert _sample("companion_job_runs_total", job="probe-ok", outcome="ok") == ok_before + 1
    assert _sample("companion_job_runs_total", job="probe-bad", outcome="error") == failed_before + 1
    assert _sample("companion_job_last_success_timestamp_seconds", job="probe-ok") > 0
    worker.beat()
    jobs = worker.services.heartbeats.status().leader.jobs
    assert jobs["probe-ok"]["runs"] == 1 and jobs["probe-ok"]["last_ok_at"]
    assert (jobs["probe-bad"]["failures"], jobs["probe-bad"]["last_error"]) == (1, "RuntimeError")


def test_a_run_that_starts_late_reports_its_lag(traveller):
    from companion.clock import now

    scheduled = now() - timedelta(seconds=42)
    worker_module._measure_lag(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "late-job", None, [scheduled]))
    assert _sample("companion_job_lag_seconds", job="late-job") == 42


def test_the_outbox_depth_is_measured(jobs_db, settings, clock, traveller):
    worker = _worker(jobs_db, settings, clock)
    assert worker.services.push.measure_outbox() == 0
    assert _sample("companion_outbox_depth") == 0


def test_worker_status_exits_0_while_a_leader_beats_and_1_when_silent(jobs_db, settings, clock, traveller,
                                                                        use_database, capsys):
    assert cli.main(["worker-status"]) == 1
    assert "no heartbeat" in capsys.readouterr().out
    worker = _worker(jobs_db, settings, clock)
    worker.lease.tick()
    worker.run_gated(JobSpec("probe", lambda: None, "interval", {"seconds": 1}, timedelta(seconds=1)))
    worker.beat()
    assert cli.main(["worker-status", "--jobs"]) == 0
    out = capsys.readouterr().out
    assert "scheduler worker: ok, leader first" in out and "probe" in out
    assert cli.main(["worker-status", "--local"]) == 1  # "first" is not this host's name:pid
    traveller.shift(2 * settings.lease_ttl + timedelta(seconds=1))
    assert cli.main(["worker-status"]) == 1
    # A stopped worker's last heartbeat is kept a day: it is listed as silent, not as a leader beside the live one.
    assert "first: silent (last beat as leader)" in capsys.readouterr().out


@pytest.mark.slow
def test_the_worker_waits_for_the_database_with_a_clear_line_then_starts(tmp_path, db_name):
    port = free_port()
    env = {**os.environ, "MONGODB_URI": f"mongodb://127.0.0.1:{port}/", "MONGODB_DB": db_name,
           "COMPANION_WORKER_METRICS_PORT": "0"}
    env.pop("FCM_SERVICE_ACCOUNT", None)
    process = subprocess.Popen([sys.executable, "-m", "companion.jobs.worker"], env=env, stderr=subprocess.PIPE,
                               text=True)
    server = FerretServer(tmp_path / "ferretdb", port=port)
    try:
        waiting = json.loads(_line_with(process, "waiting for the database"))
        assert f"127.0.0.1:{port}" in waiting["message"] and waiting["level"] == "WARNING"
        assert process.poll() is None
        server.start()
        _line_with(process, "scheduler worker started")
        _drain(process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()


def test_a_worker_told_to_stop_while_waiting_for_the_database_exits_at_once(db_name):
    env = {**os.environ, "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}/", "MONGODB_DB": db_name,
           "COMPANION_WORKER_METRICS_PORT": "0"}
    process = subprocess.Popen([sys.executable, "-m", "companion.jobs.worker"], env=env, stderr=subprocess.PIPE,
                               text=True)
    try:
        _line_with(process, "waiting for the database")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def _drain(process: subprocess.Popen) -> None:
    """Keep reading the process's log once the test has seen what it waited for: a started worker logs every
    job it runs, and a full pipe would block it in a log write, where it cannot stop."""
    threading.Thread(target=process.stderr.read, daemon=True).start()


def _line_with(process: subprocess.Popen, text: str) -> str:
    seen = []
    for line in process.stderr:  # the process's own timeouts bound each read; the test's timeout the whole
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"no {text!r} before the worker exited: {seen[-5:]}")


def _listening_on(port: int) -> set[str]:
    """The local addresses a socket listens on at ``port`` on this machine, as the kernel lists them."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    if width == 8:
                        found.add(".".join(str(b) for b in reversed(raw)))
                    else:  # four 32-bit words, each in the host's (little-endian) order
                        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                        found.add(str(ipaddress.IPv6Address(words)))
    return found


def _metrics(port: int, token: str | None = None, host: str = "127.0.0.1") -> int:
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urlopen(Request(f"http://{host}:{port}/", headers=headers), timeout=10) as answer:
            assert b"companion_" in answer.read()
            return answer.status
    except HTTPError as refused:
        return refused.code


@pytest.mark.parametrize(("bind", "token", "listens_on"), [
    (None, None, {"127.0.0.1"}),  # it listened on 0.0.0.0 whatever `make run` said
    ("0.0.0.0", "m" * 24, {"0.0.0.0"}),  # noqa: S104 - compose's worker, for a scraper on its network
    ("[::1]", None, {"::1"}),  # IPv6, written in brackets as gunicorn's --bind takes it
])
def test_the_workers_metrics_listen_where_companion_bind_says_and_ask_for_the_metrics_token(
        db_name, bind, token, listens_on):
    port = free_port()
    env = {**os.environ, "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}/", "MONGODB_DB": db_name,
           "COMPANION_WORKER_METRICS_PORT": str(port)}
    for name, value in (("COMPANION_BIND", bind), ("COMPANION_METRICS_TOKEN", token)):
        env.pop(name, None)
        if value:
            env[name] = value
    process = subprocess.Popen([sys.executable, "-m", "companion.jobs.worker"], env=env, stderr=subprocess.PIPE,
                               text=True)
    try:
        _line_with(process, "waiting for the database")  # the metrics are served before the wait
        _drain(process)
        assert _listening_on(port) == listens_on
        if token:
            assert _metrics(port) == 401 and _metrics(port, "not-the-token") == 401
            assert _metrics(port, token) == 200
        else:
            assert _metrics(port, host="[::1]" if bind == "[::1]" else "127.0.0.1") == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
