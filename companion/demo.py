"""Demo data for the local run: a clinic, a clinician, a caregiver and three patients with weeks of
history (TENS sessions, pain diary). Refuses to run in production. Idempotent: a second run finds the
demo clinician and stops."""

from __future__ import annotations

import hashlib
import random
import sys
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.store.devices import Devices
from companion.store.relationships import CareLinks, CareTeams

DEMO_PASSWORD = "companion-demo"  # noqa: S105 - local demo only; seed() refuses to run in production
DEMO_DOMAIN = "demo.companion.example"

PATIENTS = [
    # key, name, zone, serial, adherence (share of planned sessions done), baseline pain
    ("maria", "Maria Santos", "Europe/London", "CTU-M0001", 0.9, 6.5),
    ("james", "James Walker", "America/New_York", "CTU-J0002", 0.55, 7.0),
    ("priya", "Priya Raman", "Asia/Kolkata", "CTU-P0003", 0.75, 5.5),
]


def _email(key: str) -> str:
    return f"{key}@{DEMO_DOMAIN}"


def _progress(enabled: bool, step: int, total: int, label: str) -> None:
    if enabled:
        width = 24
        filled = int(width * step / total)
        sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {step}/{total} {label:<40}")
        if step == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def seed(services, *, days: int = 28, progress: bool = True, now: datetime | None = None) -> list[str]:
    """Create the demo world; returns human-readable lines saying who can log in."""
    if services.settings.is_production:
        raise RuntimeError("refusing to load demo data in production")
    accounts, db = services.accounts, services.db
    if accounts.users.by_email(_email("dr.okafor")):
        return ["demo data already loaded", *_logins()]
    now = now or datetime.now(UTC)
    rng = random.Random(20261129)
    admin = accounts.sign_up(email=_email("admin"), password=DEMO_PASSWORD, display_name="Clinic Admin",
                             role="admin", time_zone="Europe/London")
    clinician = accounts.sign_up(email=_email("dr.okafor"), password=DEMO_PASSWORD, display_name="Dr Ada Okafor",
                                 role="clinician", time_zone="Europe/London")
    caregiver = accounts.sign_up(email=_email("sam"), password=DEMO_PASSWORD, display_name="Sam Santos",
                                 role="caregiver", time_zone="Europe/London")
    teams = CareTeams(db)
    team = teams.create("Northside Pain Clinic")
    teams.add_clinician(team["_id"], clinician["_id"])
    total = len(PATIENTS)
    for index, (key, name, zone, serial, adherence, baseline) in enumerate(PATIENTS, start=1):
        _progress(progress, index - 1, total, f"{name}: account, unit, {days} days of history")
        patient = accounts.sign_up(email=_email(key), password=DEMO_PASSWORD, display_name=name, role="patient",
                                   time_zone=zone)
        teams.enrol(team["_id"], patient["_id"])
        Devices(db).bind(serial, patient["_id"], "companion-tens")
        if key == "maria":
            CareLinks(db).grant(patient["_id"], caregiver["_id"],
                                {"write": False, "alerts": ["missed_session", "device_silent", "battery_low"],
                                 "diary_notes": False})
        _history(db, patient["_id"], zone, serial, adherence, baseline, days, now, rng)
    _progress(progress, total, total, "done")
    del admin
    return ["demo data loaded", *_logins()]


def _logins() -> list[str]:
    people = ["dr.okafor (clinician)", "sam (caregiver of Maria)", "admin (admin)"] + [
        f"{key} (patient, {zone})" for key, _, zone, *_ in PATIENTS]
    return [f"  {p.split()[0]}@{DEMO_DOMAIN}  {' '.join(p.split()[1:])}" for p in people] + [
        f"  password for every demo account: {DEMO_PASSWORD}"]


def _history(db, patient_id, zone, serial, adherence, baseline, days, now, rng) -> None:
    tz = ZoneInfo(zone)
    sessions, entries = [], []
    seq = 0
    today = now.astimezone(tz).date()
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        improvement = (days - offset) / days * 1.5  # pain eases a little as therapy continues
        for slot, hour in enumerate((8, 13, 19)):
            if rng.random() > adherence:
                continue
            seq += 1
            start = datetime.combine(day, time(hour, rng.randint(0, 40)), tz).astimezone(UTC)
            programme = rng.choice([1, 1, 2, 3])
            frequency = {1: 100, 2: 4, 3: 80}[programme]
            before = max(0, min(10, round(baseline - improvement + rng.uniform(-1.5, 1.5))))
            after = max(0, before - rng.choice([1, 2, 2, 3]) + (1 if programme == 2 else 0))
            record_id = f"{serial}:{seq}"
            offset_s = rng.uniform(-40, 40)
            sessions.append({
                "_id": record_id, "patient_id": patient_id, "device_serial": serial, "device_seq": seq,
                "started_at": start, "device_started_at": start + timedelta(seconds=offset_s),
                "clock_offset_s": round(offset_s, 1), "clock_status": "ok",
                "gateway_received_at": start + timedelta(minutes=45), "server_received_at": start + timedelta(minutes=46),
                "duration_s": rng.choice([1800, 1800, 2400, 3600]), "programme": programme,
                "frequency_hz": frequency, "pulse_width_us": 200, "intensity_mean_ma": round(rng.uniform(12, 25), 1),
                "intensity_peak_ma": round(rng.uniform(25, 35), 1),
                "end_reason": rng.choice(["completed"] * 8 + ["stopped", "electrode_off"]),
                "battery_pct": max(10, 100 - (seq % 30) * 3),
                "content_hash": hashlib.sha256(record_id.encode()).hexdigest()[:16], "gateway_id": None,
            })
            if slot != 1:
                for phase, score, minutes in (("before", before, -5), ("after", after, 35)):
                    at = start + timedelta(minutes=minutes)
                    entries.append({
                        "_id": f"demo-{record_id}-{phase}", "patient_id": patient_id,
                        "client_entry_id": f"demo-{record_id}-{phase}", "recorded_at": at, "nrs": int(score),
                        "context": {"location": "lower back", "activity": None, "sleep_quality": None,
                                    "mood": None, "note": None},
                        "bpi": None, "session_record_id": record_id, "phase": phase,
                        "server_received_at": at, "updated_at": at, "deleted": False,
                    })
    if sessions:
        db.session_records.insert_many(sessions)
    if entries:
        db.pain_entries.insert_many(entries)
    last = sessions[-1] if sessions else None
    if last:
        db.devices.update_one({"_id": serial}, {"$set": {"status": {
            "battery_pct": last["battery_pct"], "firmware": "1.4.2", "last_seen_at": last["server_received_at"],
            "last_error": None, "last_sync_at": last["server_received_at"]}}})
