"""The adherence job judges the low-adherence rule from the days a settled panel row keeps (computed on the
patient's today, nothing marked since) and reads no older snapshot for it; from a row that is marked, or
missing, it reads the snapshots. Both give what the rule gives over the stored snapshots themselves, for
any history of planned, unplanned and missing days, with or without an open low-adherence alert judged again
(a touched day)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pymongo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion.domain.alerts import (
    low_adherence,
    low_adherence_continues,
    low_adherence_holds,
    low_adherence_redated,
)
from companion.services.adherence_batch import JOB
from companion.services.alerts import low_adherence_in
from companion.services.container import Services
from tests.scheduler.helpers import STORED_DAY, make_person, services_on, stored_day
from tests.scheduler.test_adherence_follows_change import _Commands

NOW = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
ZONES = ["Pacific/Auckland", "Europe/London", "America/Los_Angeles"]


def _history(db, patient, today: date, days: list) -> None:
    docs = [stored_day(patient.id, today - timedelta(days=n), v) for n, v in enumerate(days, start=1) if v is not None]
    if docs:
        db.adherence_days.insert_many(docs)


def _judged(db, settings_, mongo_uri) -> tuple[dict, list]:
    """Run the job (watched); the low-adherence alerts after it (dedup key, the patient as P -> resolved) and its
    commands."""
    listener = _Commands()
    watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        Services(settings_.with_changes(mongodb_db=db.name), client=watched, clock=lambda: NOW).adherence_job.run()
    finally:
        watched.close()
    alerts = {a["dedup_key"].replace(a["patient_id"], "P"): a.get("resolved_at") is not None
              for a in db.alerts.find({"kind": "low_adherence"})}
    return alerts, listener.seen


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(zone=st.sampled_from(ZONES), days=st.lists(STORED_DAY, min_size=30, max_size=30),
       open_run=st.one_of(st.none(), st.integers(min_value=3, max_value=28)),
       other=st.sampled_from(["marked", "missing"]))
def test_the_rule_from_a_settled_row_is_the_rule_from_the_snapshots(jobs_db, settings, mongo_uri, zone, days,
                                                                      open_run, other):
    outcomes = {}
    for path in ("settled", other):
        for name in jobs_db.list_collection_names():
            jobs_db[name].delete_many({})
        services = services_on(jobs_db, settings, lambda: NOW)
        patient = make_person(jobs_db, "patient", zone)
        today = NOW.astimezone(patient.zone_history().zone_at(NOW)).date()
        _history(jobs_db, patient, today, days)
        services.stores.days_to_recompute.ran(JOB, NOW - timedelta(days=1))  # today begins: the patient is judged
        if open_run is not None:  # an open alert for a run from then, judged again on a touched day
            start = today - timedelta(days=open_run)
            services.alerts.raise_once(low_adherence(patient.id, {start + timedelta(days=k): 0.1 for k in range(3)},
                                                     today))
            services.stores.days_to_recompute.mark(patient.id, [today - timedelta(days=1)], "sessions", NOW)
        services.panel_rows.refresh([patient.id])  # the row, as the refresher leaves it: settled until midnight
        services.panel_rows.catch_up([patient.id])  # (raising the alert marked it)
        if path == "marked":
            services.panel_rows.mark([patient.id], "pain")
        elif path == "missing":
            jobs_db.panel_row_days.delete_many({})
        alerts, commands = _judged(jobs_db, settings, mongo_uri)
        snapshot_reads = [c for c in commands if c == ("find", "adherence_days")]
        outcomes[path] = alerts
        if path == "settled":
            assert snapshot_reads == [], (days, open_run)
        else:
            assert snapshot_reads, (days, open_run)
    assert outcomes["settled"] == outcomes[other], (days, open_run)
    # And from scratch: the rule over the stored snapshots after the run.
    stored = list(jobs_db.adherence_days.find({"patient_id": patient.id}))
    candidate = low_adherence_in(patient.id, stored, today)
    progress = {date.fromisoformat(s["date"]): None if s["state"] == "no_tasks" else s["tens_fraction"] or 0.0
                for s in stored}
    start = today - timedelta(days=open_run or 0)
    # A candidate of the same run as the open alert (which still holds and goes on, or which the data shortened at
    # its start: the alert was raised today, so the candidate's run began before it) is that alert.
    same_run = open_run is not None and (
        low_adherence_holds(start, progress, today) and low_adherence_continues(start, progress, today)
        or candidate is not None and low_adherence_redated(start, today, date.fromisoformat(candidate.period_key),
                                                           progress, today))
    expected = {candidate.dedup_key.replace(patient.id, "P"): False} if candidate and not same_run else {}
    if open_run is not None:
        key = f"low_adherence:P:{start.isoformat()}"
        expected.setdefault(key, not same_run and not low_adherence_holds(start, progress, today))
    assert outcomes["settled"] == expected, (days, open_run)
