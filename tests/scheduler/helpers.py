"""Building patients, caregivers, phones and reminders straight through the stores and services, and
running the worker's jobs as the worker does (through the service container)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from companion.domain.access import CaregiverPermissions
from companion.domain.people import Account
from companion.services.container import Services
from companion.store.accounts import Users
from companion.store.push_tokens import PushTokens
from companion.store.relationships import CareLinks

SIGNED_UP = datetime(2026, 1, 1, tzinfo=UTC)


def services_on(db, settings, clock, sender=None) -> Services:
    """The worker's service container on the test's database, with the test's clock and sender."""
    return Services(settings.with_changes(mongodb_db=db.name), client=db.client, clock=clock, sender=sender)


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
