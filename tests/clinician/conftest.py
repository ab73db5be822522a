"""Shared scripted data for clinician review tests: patient A's month, seeded straight into the
collections the other areas own (see seed.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from tests.clinician.seed import Seed


def at_day(days_ago: int, hour: int = 9) -> datetime:
    """A UTC instant `days_ago` whole days before today, at `hour` o'clock."""
    today = datetime.now(UTC).date()
    return datetime.combine(today - timedelta(days=days_ago), time(hour), UTC)


@pytest.fixture
def seed(db) -> Seed:
    return Seed(db)


@pytest.fixture
def scripted_a(world, seed, db):
    """Patient A (Europe/London in the world; set to UTC here so local days are UTC days) with:
    - adherence snapshots for the last 30 completed days: covered except 3 of the last 7;
    - a plan of 60 min/day (version 1 from 40 days ago, replaced by version 2 at 40 min/day 5 days ago);
    - TENS sessions 2 and 3 days ago (30 + 30 min, and 45 min), with before/after pain pairs;
    - pain entries for the trend: 4 in the last 14 days (mean 6), 2 in the 14 before (mean 4);
    - one open and one acknowledged alert; a unit last synced 3 days ago; reminders and notifications."""
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})  # always UTC
    today = datetime.now(UTC).date()
    seed.adherence_run(a, today - timedelta(days=1), [True] * 23 + [True, False, True, False, True, False, True])
    seed.plan(a, 1, at_day(40, 0), active_to=at_day(5, 0), daily_minutes=60)
    seed.plan(a, 2, at_day(5, 0), daily_minutes=40)
    s1 = seed.session_with_pain(a, at_day(2, 8), 7, 4, minutes=30, programme=1, frequency_hz=100)
    s2 = seed.session_with_pain(a, at_day(2, 18), 6, 5, minutes=30, programme=3, frequency_hz=4)
    s3 = seed.session_with_pain(a, at_day(3, 9), 8, 4, minutes=45, programme=1, frequency_hz=100)
    seed.pain(a, at_day(20), 4, note="slept badly")
    seed.pain(a, at_day(18), 4)
    seed.pain(a, at_day(10), 9, deleted=True)
    open_alert = seed.alert(a, at_day(1), kind="battery_low", severity="warning", text="Battery below 15%")
    seed.alert(a, at_day(6), acknowledged=True)
    seed.device(a, "CTU-S0001", last_sync_at=at_day(3, 0))
    seed.device_event(a, "CTU-S0001", "electrode_off", at_day(3, 9))
    rid = seed.reminder(a, title="Morning TENS")
    seed.occurrence(a, rid, at_day(1, 8), "done")
    seed.occurrence(a, rid, at_day(2, 8), "missed")
    seed.notification(a, a, at_day(1, 8), "sent", delivered=True)
    seed.notification(a, world["caregiver_linked"].id, at_day(2, 9), "failed", kind="caregiver_alert",
                      error_codes=["UNREGISTERED"])
    seed.practice(a, at_day(4), minutes=12)
    return {"patient_id": a, "sessions": [s1, s2, s3], "open_alert": open_alert, "reminder_id": rid}


BPI_ANSWERS = {"worst": 8, "least": 3, "average": 5, "now": 6,
               "interference": {"general_activity": 6, "mood": 5, "sleep": 7, "enjoyment_of_life": 4}}


@pytest.fixture
def export_a(scripted_a, seed, world, db):
    """scripted_a plus what only the exports carry: a diary entry with a Brief Pain Inventory, a location and
    a note a spreadsheet would run as a formula; a medication reminder with a dose taken and one missed."""
    a = scripted_a["patient_id"]
    bpi_entry = seed.pain(a, at_day(1, 20), 6, note="=worse after gardening", location="left knee", bpi=BPI_ANSWERS)
    rid = seed.reminder(a, kind="medication", title="Paracetamol 1 g")
    taken = seed.occurrence(a, rid, at_day(1, 8), "done", kind="medication")
    missed = seed.occurrence(a, rid, at_day(2, 8), "missed", kind="medication")
    return {**scripted_a, "bpi_entry": bpi_entry, "doses": [taken, missed]}
