"""Demo data for the local run: a clinic, a clinician, a caregiver and three patients with weeks of
history (TENS sessions, pain diary). Refuses to run in production. Idempotent: a second run finds the
demo clinician and stops."""

from __future__ import annotations

import hashlib
import random
import sys
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.domain.access import CaregiverPermissions, Grant, Relationship

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
    accounts = services.accounts
    if accounts.by_email(_email("dr.okafor")):
        return ["demo data already loaded", *_logins()]
    now = now or services.clock()
    rng = random.Random(20261129)
    services.library.load()
    admin = accounts.sign_up(email=_email("admin"), password=DEMO_PASSWORD, display_name="Clinic Admin",
                             role="admin", time_zone="Europe/London")
    clinician = accounts.sign_up(email=_email("dr.okafor"), password=DEMO_PASSWORD, display_name="Dr Ada Okafor",
                                 role="clinician", time_zone="Europe/London")
    caregiver = accounts.sign_up(email=_email("sam"), password=DEMO_PASSWORD, display_name="Sam Santos",
                                 role="caregiver", time_zone="Europe/London")
    team = services.care.create_team("Northside Pain Clinic")
    services.care.add_clinician(team.id, clinician.id)
    total = len(PATIENTS)
    for index, (key, name, zone, serial, adherence, baseline) in enumerate(PATIENTS, start=1):
        _progress(progress, index - 1, total, f"{name}: account, unit, {days} days of history")
        patient = accounts.sign_up(email=_email(key), password=DEMO_PASSWORD, display_name=name, role="patient",
                                   time_zone=zone)
        services.care.enrol(team.id, patient.id)
        services.gateways.bind_unit(patient.id, serial, "companion-tens")
        if key == "maria":
            services.care.grant_caregiver(
                patient.id, caregiver_email=caregiver.email, current_password=DEMO_PASSWORD,
                permissions=CaregiverPermissions(write=False, diary_notes=False, alerts=frozenset(
                    {"missed_session", "device_silent", "battery_low", "device_fault"})))
        _history(services, patient.id, zone, serial, adherence, baseline, days, now, rng)
        _plan_and_reminders(services, patient.id, clinician.id, zone, days, now)
        _practice(services, patient.id, days, now, rng)
        # A phone for each demo patient, so reminders show up in the local push emulator.
        services.notifications.register_phone(patient.id, f"demo-phone-{key}", f"demo-fcm-token-{key}", "android",
                                              "token")
    services.notifications.register_phone(caregiver.id, "demo-phone-sam", "demo-fcm-token-sam", "ios", "token")
    _progress(progress, total, total, "done")
    del admin
    return ["demo data loaded", *_logins()]


def _plan_and_reminders(services, patient_id, clinician_id, zone, days, now) -> None:
    """A plan set by the clinician and TENS reminders, with the past weeks' reminders marked done
    where a session followed and missed where none did (through the same services the API uses)."""
    start = now.astimezone(ZoneInfo(zone)).date() - timedelta(days=days)
    services.plans.prescribe(patient_id, {
        "tens": {"sessions_per_day": 3, "daily_minutes_target": None, "minutes_per_session": 30,
                 "programmes": [1, 2, 3], "intensity_min_ma": 10.0, "intensity_max_ma": 35.0, "start_date": start,
                 "end_date": None, "counts_towards_adherence": True},
        "medications": [],
        "mindfulness": {"minutes_per_day": 10, "sessions_per_week": None, "counts_towards_adherence": False},
    }, created_by=clinician_id)
    reminders = services.reminders
    window_start = now - timedelta(days=min(days, 30))
    # The demo's reminders date from the start of therapy (occurrences are never made for times
    # before a reminder existed).
    reminders.create(patient_id, {
        "kind": "tens", "title": "TENS session", "completion_window_min": 120,
        "schedule": {"type": "weekly", "times": ["08:00", "13:00", "19:00"], "weekdays": [1, 2, 3, 4, 5, 6, 7],
                     "start_date": start.isoformat(), "end_date": None},
        "repeat": {"count": 1, "every_min": 30}}, created_at=window_start)
    reminders.materialize(patient_id, window_start, now + timedelta(days=1))
    sessions = services.sessions.between(patient_id, window_start - timedelta(days=1), now, 5000)
    for occurrence in reminders.occurrences_between(Grant(patient_id, Relationship.SELF), window_start, now):
        if any(abs(s["started_at"] - occurrence["due_at"]) <= timedelta(hours=1) for s in sessions):
            reminders.record_outcome(patient_id, occurrence["_id"], "done", None)
    reminders.mark_missed(now)
    # An hourly breathing nudge in the daytime, so that a newcomer sees a push reach the local
    # emulator within the hour, whatever the time of day in London.
    reminders.create(patient_id, {
        "kind": "mindfulness", "title": "Breathing break", "completion_window_min": 30, "repeat": None,
        "schedule": {"type": "hourly", "window_start": "06:00", "window_end": "22:00", "every_hours": 1,
                     "start_date": None, "end_date": None}})


def _practice(services, patient_id, days, now, rng) -> None:
    short = services.library.short_items(10)
    for offset in range(days, 0, -1):
        if rng.random() < 0.5:
            continue
        started = now - timedelta(days=offset, hours=rng.randint(1, 10))
        practice = services.library.start_practice(patient_id, rng.choice(short), started)
        services.library.complete_practice(patient_id, practice["_id"], started + timedelta(minutes=12), None)


def _logins() -> list[str]:
    people = ["dr.okafor (clinician)", "sam (caregiver of Maria)", "admin (admin)"] + [
        f"{key} (patient, {zone})" for key, _, zone, *_ in PATIENTS]
    return [f"  {p.split()[0]}@{DEMO_DOMAIN}  {' '.join(p.split()[1:])}" for p in people] + [
        f"  password for every demo account: {DEMO_PASSWORD}"]


def _history(services, patient_id, zone, serial, adherence, baseline, days, now, rng) -> None:
    """Weeks of TENS sessions with before/after pain ratings, received through the same use cases a
    gateway's upload and a phone's offline diary batch go through."""
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
                "record_id": record_id, "device_serial": serial, "device_seq": seq,
                "started_at": start, "device_started_at": start + timedelta(seconds=offset_s),
                "clock_offset_s": round(offset_s, 1), "clock_status": "ok",
                "gateway_received_at": start + timedelta(minutes=45),
                "duration_s": rng.choice([1800, 1800, 2400, 3600]), "programme": programme,
                "frequency_hz": frequency, "pulse_width_us": 200, "intensity_mean_ma": round(rng.uniform(12, 25), 1),
                "intensity_peak_ma": round(rng.uniform(25, 35), 1),
                "end_reason": rng.choice(["completed"] * 8 + ["stopped", "electrode_off"]),
                # A charge lasts about three days of sessions: never low enough for a battery alert here.
                "battery_pct": 95 - (seq % 9) * 8,
                "content_hash": hashlib.sha256(record_id.encode()).hexdigest()[:16],
            })
            if slot != 1:
                for phase, score, minutes in (("before", before, -5), ("after", after, 35)):
                    entries.append({
                        "client_entry_id": f"demo-{record_id}-{phase}", "recorded_at": start + timedelta(minutes=minutes),
                        "nrs": int(score),
                        "context": {"location": "lower back", "activity": None, "sleep_quality": None,
                                    "mood": None, "note": None},
                        "bpi": None, "session_record_id": record_id, "phase": phase,
                    })
    for part in range(0, len(sessions), 500):
        batch = sessions[part:part + 500]
        services.ingestion.receive(None, patient_id, batch, {serial})  # imported: no gateway uploaded it
    for part in range(0, len(entries), 500):
        services.diary.record_batch(Grant(patient_id, Relationship.SELF), entries[part:part + 500])
    if sessions:
        services.ingestion.device_status(patient_id, [{
            "serial": serial, "battery_pct": sessions[-1]["battery_pct"], "firmware": "1.4.2", "last_seen_at": now,
            "last_error": None}])
