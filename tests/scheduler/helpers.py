"""Building patients, caregivers, phones and reminders straight through the stores and services."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from companion.jobs import push, reminders
from companion.services.reminders import create_reminder
from companion.store.accounts import Users
from companion.store.push_tokens import PushTokens
from companion.store.relationships import CareLinks

SIGNED_UP = datetime(2026, 1, 1, tzinfo=UTC)


def make_person(db, role: str, zone: str = "UTC", **extra) -> dict:
    fields = {"time_zone_history": [{"zone": zone, "effective_from": SIGNED_UP, "previous": None}],
              "caregiver_alert_delay_min": 60} if role == "patient" else {}
    return Users(db).create(email=f"{uuid.uuid4().hex[:10]}@example.org", password_hash="-", role=role,
                            display_name=f"{role} {uuid.uuid4().hex[:4]}", time_zone=zone, extra={**fields, **extra})


def phone(db, user: dict, install: str = "phone-1") -> str:
    token = f"tok-{user['_id']}-{install}"
    PushTokens(db).register(user["_id"], install, token, "android")
    return token


def link_caregiver(db, patient: dict, alerts: list[str], zone: str = "UTC", **extra) -> dict:
    caregiver = make_person(db, "caregiver", zone, **extra)
    CareLinks(db).grant(patient["_id"], caregiver["_id"], {"write": False, "alerts": alerts, "diary_notes": False})
    return caregiver


def daily_reminder(db, patient: dict, times: list[str], start_date: str, *, kind: str = "tens",
                   window_min: int = 60, repeat: dict | None = None) -> dict:
    return create_reminder(db, patient["_id"], {
        "kind": kind, "title": "Evening walk with Qzxvy", "completion_window_min": window_min, "repeat": repeat,
        "schedule": {"type": "weekly", "times": times, "start_date": start_date, "end_date": None}})


def run_minute(db, settings, clock, sender) -> None:
    """What the worker does each minute for reminders: queue the due pushes, then send them."""
    reminders.dispatch_reminders(db, settings, clock)
    push.send_push(db, settings, clock, sender, owner="test-worker")
