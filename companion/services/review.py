"""Clinician review: the panel of patients ranked by need, one patient's figures, clinical notes.

Called by the JSON API, the clinician pages and the exports alike.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

from companion.clock import Clock, now
from companion.domain import review as rules
from companion.domain.errors import Invalid
from companion.domain.people import Account
from companion.domain.review import PanelFilter
from companion.store.adherence import snapshot_id
from companion.store.stores import Stores

PANEL_PAIN_WINDOW = timedelta(days=28)
PANEL_PDC_DAYS = 30  # the longest PDC on the panel
REVIEW_SNAPSHOT_DAYS = 90  # a patient's review reads the snapshots of today and the 90 days before
PANEL_DAY_FIELDS = {"patient_id": 1, "date": 1, "state": 1, "covered": 1}
# Ids per `_id $in`: FerretDB serves up to 10,000 from its _id index but re-checks every fetched document
# against the whole list, so 1,000 at a time is faster there (0.57 s against 0.78 s for 6,000 snapshots).
SNAPSHOT_ID_CHUNK = 1000
MAX_ROWS = 5000
NOTE_MAX = 5000


def _pdc_snapshot_ids(people: list[Account], at: datetime) -> list[str]:
    """The ids of the snapshots the panel's PDC reads: each patient's 30 completed local days."""
    ids = []
    for person in people:
        first, last = rules.completed_days(rules.local_date(at, person.time_zone or "UTC"), PANEL_PDC_DAYS)
        ids += [snapshot_id(person.id, first + timedelta(days=n)) for n in range((last - first).days + 1)]
    return ids


class PatientReview:
    """One patient's figures over the last `days` local days (today included)."""

    def __init__(self, stores: Stores, patient: Account, *, at: datetime | None = None):
        self.stores = stores
        self.patient = patient
        self.pid = patient.id
        self.zone = patient.time_zone or "UTC"
        self.at = at or now()
        self.today = rules.local_date(self.at, self.zone)

    def first_day(self, days: int) -> date:
        return self.today - timedelta(days=days - 1)

    def _since(self, days: int) -> datetime:
        # A day's margin either side covers every time zone; callers filter by local date.
        return self.at - timedelta(days=days + 1)

    def adherence(self, days: int) -> dict:
        """The calendar (one entry per local day, `missing` where no snapshot exists) and PDC."""
        first = self.first_day(days)
        stored = {d["date"]: d for d in self.stores.adherence_days.by_ids(
            [snapshot_id(self.pid, self.today - timedelta(days=n)) for n in range(REVIEW_SNAPSHOT_DAYS, -1, -1)],
            batch=SNAPSHOT_ID_CHUNK)}
        calendar = []
        for i in range(days):
            on = (first + timedelta(days=i)).isoformat()
            day = stored.get(on)
            calendar.append({"date": on, "state": day["state"] if day else "missing",
                             "covered": bool(day and day.get("covered")),
                             **{k: (day or {}).get(k) for k in ("tens_fraction", "tens_minutes", "tens_minutes_target",
                                                               "sessions_done", "sessions_planned",
                                                               "mindfulness_fraction", "medication_fraction")}})
        snapshots = list(stored.values())
        return {"calendar": calendar, "threshold": rules.ADHERENT_PDC,
                **{f"pdc_{n}": rules.pdc(snapshots, *rules.completed_days(self.today, n)) for n in (7, 30, 90)}}

    def sessions(self, days: int) -> list[dict]:
        """TENS sessions of the period, oldest first."""
        return self.stores.session_records.for_patient(self.pid, self._since(days), self.at + timedelta(minutes=5),
                                                       MAX_ROWS, newest_first=False)

    def tens(self, days: int) -> list[rules.TensDay]:
        return rules.tens_by_day(self.sessions(days), self.plans(), self.zone, self.first_day(days), self.today)

    def session_times(self, days: int) -> dict:
        """How sure the period's session times are: how many are exact, corrected and estimated, the ones that
        are not exact (newest first), and the sessions held back from the figures (the patient's, or possibly
        theirs: a unit that changed hands when they happened)."""
        sessions = self.sessions(days)
        counts = {quality: 0 for quality in ("exact", "corrected", "estimated")}
        for session in sessions:
            counts[session.get("time_quality", "exact")] = counts.get(session.get("time_quality", "exact"), 0) + 1
        not_exact = [s for s in reversed(sessions) if s.get("time_quality", "exact") != "exact" and not s.get("held")]
        return {"counts": counts, "not_exact": not_exact[:50], "held": self.stores.session_records.held_for(self.pid)}

    def _pain_entries(self, since: datetime) -> list[dict]:
        return self.stores.pain_entries.recorded_between(self.pid, since, self.at + timedelta(minutes=5), MAX_ROWS)

    def pain(self, days: int) -> dict:
        """Entries in the period, before/after pairs, and the 14-day trend."""
        entries = [e for e in self._pain_entries(self._since(days))
                   if rules.local_date(e["recorded_at"], self.zone) >= self.first_day(days)]
        linked = sorted({e["session_record_id"] for e in entries if e.get("session_record_id")})
        pairs = rules.before_after_pairs(entries, self.stores.session_records.of_patient_by_ids(self.pid, linked))
        trend_entries = self._pain_entries(self.at - timedelta(days=28))
        return {"entries": entries, "pairs": pairs, "trend": rules.pain_trend(trend_entries, self.at)}

    def programmes(self, days: int) -> list[rules.ProgrammeEffect]:
        return rules.programme_effects(self.pain(days)["pairs"])

    def notifications(self, days: int) -> dict:
        """Reminder occurrences with their outcome, and push notifications with their delivery state."""
        since = self._since(days)
        titles = self.stores.reminders.titles(self.pid)
        occurrences = self.stores.occurrences.newest_between(self.pid, since, self.at + timedelta(days=1))
        for occurrence in occurrences:
            occurrence["title"] = titles.get(occurrence.get("reminder_id"), {}).get("title")
        notifications = self.stores.outbox.for_patient(self.pid, since=since, limit=1000)
        for note in notifications:
            note["to_patient"] = note.get("recipient_user_id") == self.pid
        return {"occurrences": occurrences, "notifications": notifications}

    def device(self) -> dict:
        """The patient's units with their last sync, and the last 30 days' device events."""
        devices = []
        for unit in self.stores.devices.for_patient(self.pid):
            devices.append({"_id": unit.serial, "profile": unit.profile,
                            "bound_at": unit.bound_at, "status": unit.status,
                            "days_since_sync": rules.days_since(unit.last_sync, self.at)})
        return {"devices": devices, "events": self.stores.device_events.for_patient(self.pid,
                                                                                     self.at - timedelta(days=30))}

    def diary(self, days: int) -> dict:
        return {"entries": list(reversed(self.pain(days)["entries"])),
                "practice": self.stores.practice.started_since(self.pid, self._since(days))}

    def plans(self) -> list[dict]:
        return self.stores.plans.history(self.pid, limit=200)


class Review:
    def __init__(self, stores: Stores, clock: Clock = now):
        self.stores = stores
        self.clock = clock

    def panel(self, clinician_id: str, *, at: datetime | None = None) -> list[rules.PanelRow]:
        """Every patient on the clinician's care teams with their figures: a handful of queries, the adherence
        one repeated per chunk of snapshots (read by their computed ids: 30 a patient)."""
        at = at or self.clock()
        ids = self.stores.care_teams.patient_ids_for(clinician_id)
        if not ids:
            return []
        people = self.stores.users.by_ids(ids)
        days, pain, last_sync = defaultdict(list), defaultdict(list), {}
        for day in self.stores.adherence_days.by_ids(_pdc_snapshot_ids(people, at), PANEL_DAY_FIELDS,
                                                     SNAPSHOT_ID_CHUNK):
            days[day["patient_id"]].append(day)
        for entry in self.stores.pain_entries.scores_of(ids, at - PANEL_PAIN_WINDOW):
            pain[entry["patient_id"]].append(entry)
        for unit in self.stores.devices.for_patients(ids):
            synced = unit.last_sync
            if synced and (unit.patient_id not in last_sync or synced > last_sync[unit.patient_id]):
                last_sync[unit.patient_id] = synced
        alerts = self.stores.alerts.open_counts(ids)
        rows = []
        for person in people:
            if not person.is_patient:
                continue
            pid, zone = person.id, person.time_zone or "UTC"
            today = rules.local_date(at, zone)
            rows.append(rules.PanelRow(
                patient_id=pid, display_name=person.display_name or "", time_zone=zone,
                pdc_7=rules.pdc(days[pid], *rules.completed_days(today, 7)),
                pdc_30=rules.pdc(days[pid], *rules.completed_days(today, PANEL_PDC_DAYS)),
                pain=rules.pain_trend(pain[pid], at),
                days_since_sync=rules.days_since(last_sync.get(pid), at),
                open_alerts=alerts.get(pid, 0)))
        return rows

    def panel_page(self, clinician_id: str, *, sort: str = "need", descending: bool = False,
                   keep: PanelFilter | None = None, offset: int = 0, limit: int = 50,
                   at: datetime | None = None) -> tuple[list[rules.PanelRow], int]:
        """One page of the ordered, filtered panel, and how many patients matched in all."""
        rows = [r for r in self.panel(clinician_id, at=at) if (keep or PanelFilter()).keeps(r)]
        ordered = rules.order_panel(rows, sort, descending)
        return ordered[offset:offset + limit], len(ordered)

    def of_patient(self, patient: Account) -> PatientReview:
        """One patient's figures as of now."""
        return PatientReview(self.stores, patient, at=self.clock())

    def notes(self, patient_id: str, limit: int = 100) -> list[dict]:
        """The care team's clinical notes about a patient, newest first, with their authors' names."""
        return self._with_authors(self.stores.clinical_notes.for_patient(patient_id, limit))

    def add_note(self, patient_id: str, author_id: str, text: str) -> dict:
        """Write a clinical note (notes are never edited: write another)."""
        text = text.strip()
        if not 1 <= len(text) <= NOTE_MAX:
            raise Invalid(f"a note needs between 1 and {NOTE_MAX} characters", errors={"text": ["1 to 5000 characters"]})
        return self._with_authors([self.stores.clinical_notes.add(patient_id, author_id, text)])[0]

    def _with_authors(self, notes: list[dict]) -> list[dict]:
        names = self.stores.users.names(n["author_id"] for n in notes)
        for note in notes:
            note["author_name"] = names.get(note["author_id"])
        return notes
