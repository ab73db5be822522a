"""Documents for the collections other areas own, shaped as the data contract says, inserted directly.

Clinician review reads `adherence_days`, `session_records`, `device_events`, `devices`, `pain_entries`,
`therapy_plans`, `reminders`, `reminder_occurrences`, `practice_log`, `alerts` and `push_outbox`; these
builders let a test script exactly what it needs without going through the other areas' APIs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from bson import ObjectId

from companion.domain.pain import BriefPainInventory, bpi_interference, bpi_severity
from companion.services.diary import INTERFERENCE_ITEMS
from companion.store.read_models import PanelRowMarks
from companion.store.relationships import CareTeams


def oid() -> str:
    return str(ObjectId())


def scored_bpi(answers: dict) -> dict:
    """A BPI short form as the diary stores it: the answers, every interference item, and both scores."""
    given = answers.get("interference") or {}
    items = {item: given.get(item) for item in INTERFERENCE_ITEMS}
    form = BriefPainInventory(answers["worst"], answers["least"], answers["average"], answers["now"],
                              tuple(items.values()))
    return {**answers, "interference": items, "severity": bpi_severity(form), "interference_score": bpi_interference(form)}


class Seed:
    """Each builder that writes what a panel row shows marks the patient's row, as the services' writes do."""

    def __init__(self, db):
        self.db = db

    def _changed(self, patient_id: str) -> None:
        PanelRowMarks(self.db).mark([patient_id], "seed", datetime.now(UTC))

    def patient(self, name: str, *, zone: str = "UTC", email: str | None = None) -> str:
        pid = oid()
        self.db.users.insert_one({"_id": pid, "email": email or f"{uuid.uuid4().hex[:10]}@example.org",
                                  "password_hash": "x", "role": "patient", "display_name": name, "time_zone": zone,
                                  "created_at": datetime(2025, 1, 1, tzinfo=UTC), "mfa": {"enabled": False},
                                  "time_zone_history": [], "caregiver_alert_delay_min": 60})
        self._changed(pid)
        return pid

    def enrol(self, team_id: str, patient_id: str) -> None:
        CareTeams(self.db).enrol(team_id, patient_id)

    def adherence_day(self, patient_id: str, day: date, *, state: str = "progress", covered: bool = True,
                      tens_fraction: float | None = None, zone: str = "UTC", **extra) -> dict:
        doc = {"_id": f"{patient_id}:{day.isoformat()}", "patient_id": patient_id, "date": day.isoformat(),
               "zone": zone, "state": state,
               "tens_fraction": tens_fraction if tens_fraction is not None else (1.0 if covered else 0.4),
               "tens_minutes": extra.pop("tens_minutes", 60 if covered else 24), "tens_minutes_target": 60,
               "sessions_done": 2 if covered else 1, "sessions_planned": 2, "mindfulness_fraction": None,
               "medication_fraction": None, "covered": covered, "computed_at": datetime.now(UTC), **extra}
        self.db.adherence_days.insert_one(doc)
        self._changed(patient_id)
        return doc

    def adherence_run(self, patient_id: str, last: date, covered: list[bool]) -> None:
        """One snapshot per day ending at `last`, oldest first, covered or not as listed."""
        start = last - timedelta(days=len(covered) - 1)
        docs = []
        for i, flag in enumerate(covered):
            day = start + timedelta(days=i)
            docs.append({"_id": f"{patient_id}:{day.isoformat()}", "patient_id": patient_id, "date": day.isoformat(),
                         "zone": "UTC", "state": "progress", "tens_fraction": 1.0 if flag else 0.3,
                         "tens_minutes": 60 if flag else 18, "tens_minutes_target": 60, "sessions_done": 2 if flag else 1,
                         "sessions_planned": 2, "covered": flag, "computed_at": datetime.now(UTC)})
        if docs:
            self.db.adherence_days.insert_many(docs)
            self._changed(patient_id)

    def session(self, patient_id: str, started_at: datetime, *, minutes: int = 30, serial: str = "CTU-S0001",
                seq: int | None = None, programme: int = 1, frequency_hz: int = 100) -> dict:
        seq = seq if seq is not None else self.db.session_records.count_documents({"device_serial": serial}) + 1
        doc = {"_id": f"{serial}:{seq}", "patient_id": patient_id, "device_serial": serial, "device_seq": seq,
               "started_at": started_at, "device_started_at": started_at, "clock_offset_s": 0.0, "clock_status": "ok",
               "gateway_received_at": started_at + timedelta(minutes=minutes + 1),
               "server_received_at": started_at + timedelta(minutes=minutes + 2), "duration_s": minutes * 60,
               "programme": programme, "frequency_hz": frequency_hz, "pulse_width_us": 200,
               "intensity_mean_ma": 18.5, "intensity_peak_ma": 24.0, "end_reason": "completed", "battery_pct": 80,
               "content_hash": uuid.uuid4().hex, "gateway_id": "gw"}
        self.db.session_records.insert_one(doc)
        return doc

    def pain(self, patient_id: str, recorded_at: datetime, nrs: int, *, session_id: str | None = None,
             phase: str | None = None, note: str | None = None, deleted: bool = False,
             location: str | None = "lower back", bpi: dict | None = None) -> dict:
        doc = {"_id": oid(), "patient_id": patient_id, "client_entry_id": uuid.uuid4().hex, "recorded_at": recorded_at,
               "nrs": nrs, "context": {"location": location, "activity": "walking", "sleep_quality": 3,
                                       "mood": 3, "note": note},
               "bpi": scored_bpi(bpi) if bpi else None, "session_record_id": session_id, "phase": phase, "server_received_at": recorded_at,
               "updated_at": recorded_at, "deleted": deleted}
        self.db.pain_entries.insert_one(doc)
        self._changed(patient_id)
        return doc

    def session_with_pain(self, patient_id: str, started_at: datetime, before: int, after: int, **session) -> dict:
        record = self.session(patient_id, started_at, **session)
        self.pain(patient_id, started_at - timedelta(minutes=5), before, session_id=record["_id"], phase="before")
        end = started_at + timedelta(seconds=record["duration_s"])
        self.pain(patient_id, end + timedelta(minutes=10), after, session_id=record["_id"], phase="after")
        return record

    def plan(self, patient_id: str, version: int, active_from: datetime, *, active_to: datetime | None = None,
             daily_minutes: int | None = 60, sessions_per_day: int | None = None, minutes_per_session: int = 30,
             start_date: str = "2024-01-01") -> dict:
        doc = {"_id": oid(), "patient_id": patient_id, "version": version, "created_at": active_from,
               "created_by": "clinician", "active_from": active_from, "active_to": active_to,
               "tens": {"sessions_per_day": sessions_per_day, "daily_minutes_target": daily_minutes,
                        "minutes_per_session": minutes_per_session, "programmes": [1, 3], "intensity_min_ma": 10,
                        "intensity_max_ma": 30, "start_date": start_date, "end_date": None,
                        "counts_towards_adherence": True},
               "medications": [{"name": "Paracetamol", "dose": "1 g", "times": ["08:00"], "counts_towards_adherence": False}],
               "mindfulness": {"minutes_per_day": 10, "sessions_per_week": None, "counts_towards_adherence": False}}
        self.db.therapy_plans.insert_one(doc)
        return doc

    def device(self, patient_id: str, serial: str, *, last_sync_at: datetime | None, battery_pct: int = 76) -> None:
        self.db.devices.insert_one({"_id": serial, "patient_id": patient_id, "profile": "companion-tens-v1",
                                    "bound_at": datetime(2025, 1, 1, tzinfo=UTC),
                                    "status": {"battery_pct": battery_pct, "firmware": "1.4.2",
                                               "last_seen_at": last_sync_at, "last_error": None,
                                               "last_sync_at": last_sync_at}})
        self._changed(patient_id)

    def device_event(self, patient_id: str, serial: str, kind: str, at: datetime) -> None:
        self.db.device_events.insert_one({"_id": oid(), "patient_id": patient_id, "device_serial": serial,
                                          "kind": kind, "at": at, "record_id": None})

    def alert(self, patient_id: str, raised_at: datetime, *, kind: str = "low_adherence", severity: str = "warning",
              text: str = "Adherence below 80% for 3 days", acknowledged: bool = False) -> dict:
        doc = {"_id": oid(), "patient_id": patient_id, "kind": kind, "severity": severity, "text": text,
               "dedup_key": f"{patient_id}:{kind}:{uuid.uuid4().hex[:6]}", "raised_at": raised_at,
               "acknowledged_at": raised_at + timedelta(hours=1) if acknowledged else None,
               "acknowledged_by": "someone" if acknowledged else None, "shared_with_caregivers": False}
        self.db.alerts.insert_one(doc)
        self._changed(patient_id)
        return doc

    def reminder(self, patient_id: str, *, kind: str = "tens", title: str = "Morning TENS") -> str:
        rid = oid()
        self.db.reminders.insert_one({"_id": rid, "patient_id": patient_id, "kind": kind, "title": title,
                                      "schedule": {"times": ["08:00"]}, "completion_window_min": 60, "repeat": None,
                                      "active": True, "created_at": datetime(2025, 1, 1, tzinfo=UTC),
                                      "updated_at": datetime(2025, 1, 1, tzinfo=UTC)})
        return rid

    def occurrence(self, patient_id: str, reminder_id: str, due_at: datetime, status: str, *, kind: str = "tens") -> dict:
        doc = {"_id": f"{reminder_id}:{due_at.date().isoformat()}:{due_at:%H:%M}", "patient_id": patient_id,
               "reminder_id": reminder_id, "kind": kind, "local_date": due_at.date().isoformat(),
               "local_time": f"{due_at:%H:%M}", "zone": "UTC", "due_at": due_at,
               "window_ends_at": due_at + timedelta(hours=1), "status": status, "status_at": due_at + timedelta(minutes=20),
               "skip_reason": None, "snoozed_until": None, "nudges_sent": 0}
        self.db.reminder_occurrences.insert_one(doc)
        return doc

    def notification(self, patient_id: str, recipient_id: str, created_at: datetime, state: str, *,
                     kind: str = "reminder", delivered: bool = False, error_codes: list[str] | None = None) -> dict:
        doc = {"_id": oid(), "source_key": f"reminder:{uuid.uuid4().hex}", "recipient_user_id": recipient_id,
               "patient_id": patient_id, "kind": kind, "collapse_key": "c", "expires_at": created_at + timedelta(hours=1),
               "not_before": created_at, "state": state, "attempts": 1, "round": 1, "lease_until": None, "owner": None,
               "phones": [], "created_at": created_at, "sent_at": created_at if state == "sent" else None,
               "delivered_at": created_at + timedelta(seconds=5) if delivered else None, "opened_at": None,
               "error_codes": error_codes or []}
        self.db.push_outbox.insert_one(doc)
        return doc

    def practice(self, patient_id: str, started_at: datetime, minutes: float = 10) -> None:
        self.db.practice_log.insert_one({"_id": oid(), "patient_id": patient_id, "item_slug": "body-scan",
                                         "started_at": started_at, "completed_at": started_at + timedelta(minutes=minutes),
                                         "minutes": minutes})
