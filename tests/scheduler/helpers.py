"""Building patients, caregivers, phones and reminders straight through the stores and services, and
running the worker's jobs as the worker does (through the service container)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from hypothesis import strategies as st

from companion.domain.access import CaregiverPermissions, Grant, Relationship
from companion.domain.people import Account
from companion.jobs.worker import Worker
from companion.services.container import Services
from companion.store.accounts import Users
from companion.store.adherence import snapshot_id
from companion.store.push_tokens import PushTokens
from companion.store.relationships import CareLinks

SIGNED_UP = datetime(2026, 1, 1, tzinfo=UTC)


# A stored adherence day: missing (None), unplanned ("no_tasks"), or planned with this TENS fraction (below and
# above the low-adherence threshold of 0.8).
STORED_DAY = st.one_of(st.none(), st.just("no_tasks"), st.sampled_from([0.0, 0.3, 0.5, 0.79, 0.8, 1.0, 1.2]))


def stored_day(patient_id: str, day: date, value) -> dict:
    """The snapshot fields the panel rows and the low-adherence rule read, for a STORED_DAY value (not None)."""
    return {"_id": snapshot_id(patient_id, day), "patient_id": patient_id, "date": day.isoformat(),
            "state": "no_tasks" if value == "no_tasks" else "progress",
            "tens_fraction": None if value == "no_tasks" else value,
            "covered": value != "no_tasks" and value >= 1.0}


def services_on(db, settings, clock, sender=None) -> Services:
    """The worker's service container on the test's database, with the test's clock and sender."""
    return Services(settings.with_changes(mongodb_db=db.name), client=db.client, clock=clock, sender=sender)


def own(patient_id: str) -> Grant:
    """The patient's own standing with their record (what the API decides for the patient's own request)."""
    return Grant(patient_id, Relationship.SELF)


def make_person(db, role: str, zone: str = "UTC", **extra) -> Account:
    fields = {"time_zone_history": [{"zone": zone, "effective_from": SIGNED_UP, "previous": None}],
              "caregiver_alert_delay_min": 60} if role == "patient" else {}
    return Users(db).create(email=f"{uuid.uuid4().hex[:10]}@example.org", password_hash="-", role=role,
                            display_name=f"{role} {uuid.uuid4().hex[:4]}", time_zone=zone, extra={**fields, **extra})


def phone(db, user: Account, install: str = "phone-1") -> str:
    token = f"tok-{user.id}-{install}"
    PushTokens(db).register(user.id, install, token, "android")
    return token


def link_caregiver(db, patient: Account, alerts: list[str], zone: str = "UTC", **extra) -> Account:
    caregiver = make_person(db, "caregiver", zone, **extra)
    CareLinks(db).grant(patient.id, caregiver.id, CaregiverPermissions(alerts=frozenset(alerts)))
    return caregiver


def daily_reminder(db, patient: Account, times: list[str], start_date: str, *, kind: str = "tens",
                   window_min: int = 60, repeat: dict | None = None) -> dict:
    from companion.services.reminders import ReminderService
    from companion.store.stores import Stores

    return ReminderService(Stores(db)).create(patient.id, {
        "kind": kind, "title": "Evening walk with Qzxvy", "completion_window_min": window_min, "repeat": repeat,
        "schedule": {"type": "weekly", "times": times, "start_date": start_date, "end_date": None}})


def run_minute(db, settings, clock, sender) -> None:
    """What the worker does each minute for reminders: queue the due pushes, then send them."""
    services = services_on(db, settings, clock, sender)
    services.reminder_dispatch.dispatch_due()
    services.push.send_due(owner="test-worker")


def run_jobs(db, settings, clock, sender, *job_ids: str) -> None:
    """Run these jobs of the worker's job table, in this order, as the leader would."""
    specs = {spec.id: spec for spec in Worker(services_on(db, settings, clock, sender), holder="test").specs()}
    for job_id in job_ids:
        specs[job_id].run()


def minute_by_minute(db, settings, clock, traveller, sender, start: datetime, end: datetime) -> None:
    """The worker's reminder and push jobs every minute from ``start`` to ``end`` (inclusive)."""
    at = start
    while at <= end:
        traveller.move_to(at)
        run_jobs(db, settings, clock, sender, "reminders-dispatch", "push-send")
        at += timedelta(minutes=1)


def evaluate_alerts(db, settings, clock, sender) -> None:
    """What the worker does each minute for alerts: a pass of the alerts job, then send what it queued."""
    services = services_on(db, settings, clock, sender)
    services.alerts.evaluate()
    services.push.send_due(owner="w")


def upload_overloads(db, settings, clock, sender, patient: Account, serial: str, *started: datetime,
                     first_seq: int = 1) -> None:
    """One upload (now) of the unit's sessions that began at ``started``, 30 minutes each, each stopped on an
    overload."""
    from companion.api.ingestion import SessionRecordSchema
    from tests.support.records import session_record

    records = [SessionRecordSchema().load(session_record(serial, first_seq + n, started_at=at, duration_s=1800,
                                                         end_reason="overload"))
               for n, at in enumerate(started)]
    services_on(db, settings, clock, sender).ingestion.receive(None, patient.id, records, {serial})


def wearing_a_unit(db, settings, clock, sender, serial: str, bound_at: datetime, **extra) -> tuple[Account, str, str]:
    """A patient (with a phone) wearing the unit ``serial`` bound at ``bound_at``, and a caregiver (with a phone)
    shared device faults, both with ``extra`` (quiet hours, say): the patient and both phones' tokens."""
    patient = make_person(db, "patient", **extra)
    patient_token = phone(db, patient)
    caregiver_token = phone(db, link_caregiver(db, patient, ["device_fault"], **extra))
    services_on(db, settings, clock, sender).gateways.bind_unit(patient.id, serial, "companion-tens",
                                                                bound_at=bound_at)
    return patient, patient_token, caregiver_token
