"""Demo data for the local run: a clinic, a clinician, a caregiver and three patients with weeks of history,
loaded through the same use cases a gateway's uploads, a phone's offline diary and the care team go through.
Refuses to run in production. Idempotent: a second run finds the demo clinician and stops.

What a clinician sees, and why:

* **Plans that started weeks ago.** Each patient's TENS plan (three 30-minute sessions a day) was prescribed
  on the first day of the history, so every screen has figures: PDC, streaks, the calendar.
* **A realistic unit.** A few sessions a day at the patient's usual times, each 30-45 minutes; a battery that
  drains with each session and is charged every few days; a gateway that syncs the unit every evening (the
  unit's clock reading, its highest sequence number, the server's time), as ``device-gateway run`` does.
* **A mix.** Maria does nearly every session (adherent), Priya most, James about half (not adherent: his PDC
  is below 80%). James has no alert: his missed days are scattered, and the low-adherence alert is for three
  planned days in a row below 80% ending yesterday (companion.domain.alerts.low_adherence), which his history
  never ends on; the panel lists him first by his figures, not by an alert.
* **A clock reset.** James's unit lost its time in a battery change ten days ago and restarted at its epoch,
  2000-01-01; that evening's sync read the wrong clock and set it right. The sessions of that afternoon are
  placed from the syncs: their time is *corrected*, with the unit's raw reading (year 2000) beside it.
* **A late upload.** Priya's hub was offline for her last three days. Her figures were first computed without
  them (a low-adherence alert went to her care team), then the hub's backlog arrived: those days were
  recomputed and the alert resolved, with the reason.
* **Today.** Sessions up to now, so today shows what is done so far, in progress.
"""

from __future__ import annotations

import hashlib
import random
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.domain.access import CaregiverPermissions, Grant, Relationship

DEMO_PASSWORD = "companion-demo"  # noqa: S105 - local demo only; seed() refuses to run in production
DEMO_DOMAIN = "demo.companion.example"
SLOTS = ((8, 0), (13, 0), (19, 0))  # the usual session times, local
SYNC_AT = time(21, 30)  # the hub's evening sync, local
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
LATE_DAYS = 3  # Priya's hub was offline this many days


@dataclass(frozen=True)
class DemoPatient:
    key: str
    name: str
    zone: str
    serial: str
    adherence: float  # share of the planned sessions done
    baseline_pain: float
    clock_reset_days_ago: int | None = None
    late_days: int = 0


PATIENTS = [
    DemoPatient("maria", "Maria Santos", "Europe/London", "CTU-M0001", 0.98, 6.5),
    DemoPatient("james", "James Walker", "America/New_York", "CTU-J0002", 0.5, 7.0, clock_reset_days_ago=10),
    DemoPatient("priya", "Priya Raman", "Asia/Kolkata", "CTU-P0003", 0.85, 5.5, late_days=LATE_DAYS),
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
    for index, demo in enumerate(PATIENTS, start=1):
        _progress(progress, index - 1, total, f"{demo.name}: account, unit, {days} days of history")
        patient = accounts.sign_up(email=_email(demo.key), password=DEMO_PASSWORD, display_name=demo.name,
                                   role="patient", time_zone=demo.zone)
        services.care.enrol(team.id, patient.id)
        started = _first_day(now, demo.zone, days)
        services.gateways.bind_unit(patient.id, demo.serial, "companion-tens", bound_at=started)
        if demo.key == "maria":
            offer = services.care.grant_caregiver(
                patient.id, caregiver_email=caregiver.email, current_password=DEMO_PASSWORD,
                permissions=CaregiverPermissions(write=False, diary_notes=False, alerts=frozenset(
                    {"missed_session", "device_silent", "battery_low", "device_fault"})))
            services.care.answer_offer(caregiver, offer["id"], accept=True, current_password=DEMO_PASSWORD)
        _prescribe(services, patient.id, clinician.id, demo.zone, started)
        history = _History(demo, rng, now, days)
        history.live()
        _upload(services, patient.id, demo, history.batches(late=False))
        _practice(services, patient.id, days, now, rng)
        _diary(services, patient.id, history)
        _reminders(services, patient.id, demo.zone, started, now)
        # The figures as they stood before any late upload (every day of the history computed).
        services.touched_days.dates(patient.id, history.local_days(), "demo history")
        services.adherence_job.run()
        if demo.late_days:  # the hub comes back online: its backlog is received, its days recomputed
            _upload(services, patient.id, demo, history.batches(late=True))
            services.adherence_job.run()
        services.ingestion.device_status(patient.id, [{
            "serial": demo.serial, "battery_pct": history.battery, "firmware": "1.4.2", "last_seen_at": now,
            "last_error": None}])
        # A phone for each demo patient, so reminders show up in the local push emulator.
        services.notifications.register_phone(patient.id, f"demo-phone-{demo.key}", f"demo-fcm-token-{demo.key}",
                                              "android", "token")
    services.notifications.register_phone(caregiver.id, "demo-phone-sam", "demo-fcm-token-sam", "ios", "token")
    _progress(progress, total, total, "done")
    del admin
    return ["demo data loaded", *_logins()]


def _first_day(now: datetime, zone: str, days: int) -> datetime:
    """The start of the patient's first day of history (local midnight ``days`` days ago)."""
    local = now.astimezone(ZoneInfo(zone)).date() - timedelta(days=days)
    return datetime.combine(local, time(0), ZoneInfo(zone)).astimezone(UTC)


def _prescribe(services, patient_id: str, clinician_id: str, zone: str, started: datetime) -> None:
    """The plan the clinician set on the first day: three 30-minute sessions a day, a 10-minute practice."""
    services.plans.prescribe(patient_id, {
        "tens": {"sessions_per_day": 3, "daily_minutes_target": None, "minutes_per_session": 30,
                 "programmes": [1, 2, 3], "intensity_min_ma": 10.0, "intensity_max_ma": 35.0,
                 "start_date": started.astimezone(ZoneInfo(zone)).date(), "end_date": None,
                 "counts_towards_adherence": True},
        "medications": [],
        "mindfulness": {"minutes_per_day": 10, "sessions_per_week": None, "counts_towards_adherence": False},
    }, created_by=clinician_id, at=started)


@dataclass
class _Session:
    seq: int
    start: datetime
    minutes: int
    reading: datetime
    programme: int
    battery: int
    end_reason: str
    before: int
    after: int


@dataclass
class _Sync:
    sync_id: str
    at: datetime
    highest_seq: int
    reading: datetime
    set_to: datetime | None


@dataclass
class _History:
    """A unit's weeks: its sessions (with what its clock read), its battery, and the hub's evening syncs."""

    demo: DemoPatient
    rng: random.Random
    now: datetime
    days: int
    sessions: list[_Session] = field(default_factory=list)
    syncs: list[_Sync] = field(default_factory=list)
    battery: int = 100

    def local_days(self) -> set[date]:
        today = self.now.astimezone(ZoneInfo(self.demo.zone)).date()
        return {today - timedelta(days=n) for n in range(self.days + 1)}

    def live(self) -> None:
        zone = ZoneInfo(self.demo.zone)
        today = self.now.astimezone(zone).date()
        offset = timedelta(seconds=self.rng.uniform(-20, 20))  # the unit's clock, a little off
        reset = None
        if self.demo.clock_reset_days_ago is not None:
            reset = datetime.combine(today - timedelta(days=self.demo.clock_reset_days_ago), time(10, 40), zone)
        pulled = self.now - timedelta(minutes=5)  # the hub's last pull: a session ended by then is in it
        seq = 0
        day = today - timedelta(days=self.days)
        self._sync(datetime.combine(day, time(7, 0), zone).astimezone(UTC), seq, offset)  # paired that morning
        while day <= today:
            improvement = (self.days - (today - day).days) / self.days * 1.5  # pain eases a little over time
            for hour, minute in SLOTS:
                start = datetime.combine(day, time(hour, minute), zone) + timedelta(minutes=self.rng.randint(-20, 25))
                start = start.astimezone(UTC)
                minutes = self.rng.choice([30, 30, 30, 35, 45])
                if start + timedelta(minutes=minutes) > pulled or self.rng.random() > self.demo.adherence:
                    continue
                if reset is not None and reset <= start:
                    offset = EPOCH_2000 - reset.astimezone(UTC)  # the battery change: the clock restarts at 2000
                    reset = None
                if self.battery < 25:
                    self.battery = 100  # charged overnight
                self.battery -= self.rng.randint(7, 10)
                seq += 1
                programme = self.rng.choice([1, 1, 2, 3])
                before = max(0, min(10, round(self.demo.baseline_pain - improvement + self.rng.uniform(-1.5, 1.5))))
                after = max(0, before - self.rng.choice([1, 2, 2, 3]) + (1 if programme == 2 else 0))
                self.sessions.append(_Session(seq, start, minutes, start + offset, programme, self.battery,
                                              self.rng.choice(["completed"] * 9 + ["stopped"]), before, after))
            sync_at = datetime.combine(day, SYNC_AT, zone).astimezone(UTC)
            if sync_at <= self.now:
                set_to = sync_at if abs(offset) > timedelta(seconds=2) else None
                self._sync(sync_at, seq, offset, set_to)
                if set_to is not None:
                    offset = timedelta(0)
            day += timedelta(days=1)
        if self.sessions and (not self.syncs or self.syncs[-1].highest_seq < seq):
            self._sync(pulled, seq, offset)  # the hub pulled today's sessions just now

    def _sync(self, at: datetime, highest_seq: int, offset: timedelta, set_to: datetime | None = None) -> None:
        self.syncs.append(_Sync(uuid.uuid4().hex, at, highest_seq, at + offset, set_to))

    def _late_from(self) -> datetime | None:
        if not self.demo.late_days:
            return None
        today = self.now.astimezone(ZoneInfo(self.demo.zone)).date()
        return datetime.combine(today - timedelta(days=self.demo.late_days), time(0),
                                ZoneInfo(self.demo.zone)).astimezone(UTC)

    def batches(self, *, late: bool) -> list[tuple[list[dict], list[dict]]]:
        """(records, syncs) in upload batches: the history as the hub sent it (``late``: what it sent late)."""
        cut = self._late_from()

        def wanted(at: datetime) -> bool:
            return cut is not None and at >= cut if late else cut is None or at < cut

        syncs = [s for s in self.syncs if wanted(s.at)]
        records = []
        for session in self.sessions:
            sync = next(s for s in self.syncs if s.highest_seq >= session.seq)
            if wanted(sync.at):
                records.append(self._record(session, sync))
        out = []
        for start in range(0, max(len(records), 1), 400):
            out.append((records[start:start + 400], [self._sync_item(s) for s in syncs] if start == 0 else []))
        return out

    def _record(self, session: _Session, sync: _Sync) -> dict:
        serial = self.demo.serial
        record_id = f"{serial}:{session.seq}"
        frequency = {1: 100, 2: 4, 3: 80}[session.programme]
        offset = (sync.reading - sync.at).total_seconds()
        return {
            "record_id": record_id, "device_serial": serial, "device_seq": session.seq,
            "device_started_at": session.reading, "started_at": session.reading - timedelta(seconds=offset),
            "clock_offset_s": round(offset, 1),
            "clock_status": "reset" if session.reading.year < 2020 else "ok",
            "gateway_received_at": sync.at, "duration_s": session.minutes * 60, "programme": session.programme,
            "frequency_hz": frequency, "pulse_width_us": 200,
            "intensity_mean_ma": round(self.rng.uniform(12, 25), 1), "intensity_peak_ma": round(self.rng.uniform(25, 35), 1),
            "end_reason": session.end_reason, "battery_pct": session.battery,
            "content_hash": hashlib.sha256(record_id.encode()).hexdigest()[:16], "sync_id": sync.sync_id,
        }

    def _sync_item(self, sync: _Sync) -> dict:
        return {"sync_id": sync.sync_id, "serial": self.demo.serial, "highest_seq": sync.highest_seq,
                "unit_clock": sync.reading, "gateway_clock": sync.at, "boot_id": "demo-hub",
                "monotonic_s": (sync.at - self.syncs[0].at).total_seconds(), "clock_set_to": sync.set_to,
                "vouched_time": sync.at, "vouched_error_s": 1.0}


def _upload(services, patient_id: str, demo: DemoPatient, batches) -> None:
    """Receive the hub's uploads through the same use case a gateway's go through (no gateway: not throttled)."""
    for records, syncs in batches:
        if records or syncs:
            services.ingestion.receive(None, patient_id, records, {demo.serial}, syncs=syncs)


def _diary(services, patient_id: str, history: _History) -> None:
    """Pain rated before and after most morning and evening sessions, as a phone's offline diary uploads it."""
    entries = []
    for session in history.sessions:
        if session.start.astimezone(ZoneInfo(history.demo.zone)).hour in (12, 13):
            continue
        record_id = f"{history.demo.serial}:{session.seq}"
        for phase, score, minutes in (("before", session.before, -5), ("after", session.after, session.minutes + 5)):
            entries.append({
                # (An id as an app makes them: the API refuses a ':' in one.)
                "client_entry_id": f"demo-{history.demo.serial}-{session.seq}-{phase}",
                "recorded_at": session.start + timedelta(minutes=minutes),
                "nrs": int(score),
                "context": {"location": "lower back", "activity": None, "sleep_quality": None, "mood": None,
                            "note": None},
                "bpi": None, "session_record_id": record_id, "phase": phase,
            })
    entries = [e for e in entries if e["recorded_at"] <= history.now]
    for part in range(0, len(entries), 500):
        services.diary.record_batch(Grant(patient_id, Relationship.SELF), entries[part:part + 500])


def _reminders(services, patient_id, zone, started: datetime, now: datetime) -> None:
    """TENS reminders at the usual times since the first day, the past ones marked done where a session
    followed and missed where none did (through the same services the API uses)."""
    reminders = services.reminders
    window_start = max(started, now - timedelta(days=30))
    # The demo's reminders date from the start of therapy (occurrences are never made for times
    # before a reminder existed).
    reminders.create(patient_id, {
        "kind": "tens", "title": "TENS session", "completion_window_min": 120,
        "schedule": {"type": "weekly", "times": [f"{h:02d}:{m:02d}" for h, m in SLOTS], "weekdays": [1, 2, 3, 4, 5, 6, 7],
                     "start_date": started.astimezone(ZoneInfo(zone)).date().isoformat(), "end_date": None},
        "repeat": {"count": 1, "every_min": 30}}, created_at=window_start)
    reminders.materialize(patient_id, window_start, now + timedelta(days=1))
    sessions = services.sessions.between(patient_id, window_start - timedelta(days=1), now, 5000)
    for occurrence in reminders.occurrences_between(Grant(patient_id, Relationship.SELF), window_start, now):
        if any(abs(s["started_at"] - occurrence["due_at"]) <= timedelta(hours=1) for s in sessions):
            reminders.record_outcome(Grant(patient_id, Relationship.SELF), occurrence["_id"], "done", None)
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
        f"{p.key} (patient, {p.zone})" for p in PATIENTS]
    return [f"  {p.split()[0]}@{DEMO_DOMAIN}  {' '.join(p.split()[1:])}" for p in people] + [
        f"  password for every demo account: {DEMO_PASSWORD}"]
