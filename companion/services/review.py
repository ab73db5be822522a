"""Clinician review use cases: the panel of patients ranked by need, and one patient's figures.

Called by the JSON API, the clinician pages and the exports alike; takes `db` explicitly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pymongo.database import Database

from companion.domain import review as rules
from companion.store.accounts import now
from companion.store.adherence import snapshot_id
from companion.store.relationships import CareTeams
from companion.store.review import PANEL_DAY_FIELDS, ReviewReads

PANEL_PAIN_WINDOW = timedelta(days=28)
PANEL_PDC_DAYS = 30  # the longest PDC on the panel
REVIEW_SNAPSHOT_DAYS = 90  # a patient's review reads the snapshots of today and the 90 days before


@dataclass(frozen=True)
class PanelFilter:
    """Which patients of a panel to show."""

    q: str | None = None
    needs_attention: bool = False
    pdc_7_below: float | None = None
    pain_rising: bool = False
    silent_days: int | None = None
    open_alerts: bool = False

    def keeps(self, row: rules.PanelRow) -> bool:
        if self.q and self.q.lower() not in row.display_name.lower():
            return False
        if self.needs_attention and not row.reasons:
            return False
        if self.pdc_7_below is not None and not (row.pdc_7 is not None and row.pdc_7 < self.pdc_7_below):
            return False
        if self.pain_rising and row.pain.direction != "rising":
            return False
        if self.silent_days is not None and not (
                row.days_since_sync is not None and row.days_since_sync >= self.silent_days):
            return False
        return not (self.open_alerts and not row.open_alerts)


def _last_sync(status: dict) -> datetime | None:
    return (status or {}).get("last_sync_at") or (status or {}).get("last_seen_at")


def _pdc_snapshot_ids(people: list[dict], at: datetime) -> list[str]:
    """The ids of the snapshots the panel's PDC reads: each patient's 30 completed local days."""
    ids = []
    for person in people:
        first, last = rules.completed_days(rules.local_date(at, person.get("time_zone") or "UTC"), PANEL_PDC_DAYS)
        ids += [snapshot_id(person["_id"], first + timedelta(days=n)) for n in range((last - first).days + 1)]
    return ids


def panel(db: Database, clinician_id: str, *, at: datetime | None = None) -> list[rules.PanelRow]:
    """Every patient on the clinician's care teams with their figures: six queries, the adherence one
    repeated per ID_CHUNK snapshots (read by their computed ids: 30 a patient)."""
    at = at or now()
    ids = CareTeams(db).patient_ids_for(clinician_id)
    if not ids:
        return []
    reads = ReviewReads(db)
    people = reads.patients(ids)
    days, pain, last_sync, alerts = defaultdict(list), defaultdict(list), {}, defaultdict(int)
    for day in reads.adherence_days_by_id(_pdc_snapshot_ids(people, at), PANEL_DAY_FIELDS):
        days[day["patient_id"]].append(day)
    for entry in reads.pain_of(ids, at - PANEL_PAIN_WINDOW):
        pain[entry["patient_id"]].append(entry)
    for device in reads.devices_of(ids):
        synced = _last_sync(device.get("status"))
        if synced and (device["patient_id"] not in last_sync or synced > last_sync[device["patient_id"]]):
            last_sync[device["patient_id"]] = synced
    for alert in reads.open_alerts_of(ids):
        alerts[alert["patient_id"]] += 1
    rows = []
    for person in people:
        pid, zone = person["_id"], person.get("time_zone") or "UTC"
        today = rules.local_date(at, zone)
        rows.append(rules.PanelRow(
            patient_id=pid, display_name=person.get("display_name") or "", time_zone=zone,
            pdc_7=rules.pdc(days[pid], *rules.completed_days(today, 7)),
            pdc_30=rules.pdc(days[pid], *rules.completed_days(today, PANEL_PDC_DAYS)),
            pain=rules.pain_trend(pain[pid], at),
            days_since_sync=rules.days_since(last_sync.get(pid), at),
            open_alerts=alerts[pid]))
    return rows


def panel_page(db: Database, clinician_id: str, *, sort: str = "need", descending: bool = False,
               keep: PanelFilter | None = None, offset: int = 0, limit: int = 50,
               at: datetime | None = None) -> tuple[list[rules.PanelRow], int]:
    """One page of the ordered, filtered panel, and how many patients matched in all."""
    rows = [r for r in panel(db, clinician_id, at=at) if (keep or PanelFilter()).keeps(r)]
    ordered = rules.order_panel(rows, sort, descending)
    return ordered[offset:offset + limit], len(ordered)


class PatientReview:
    """One patient's figures over the last `days` local days (today included)."""

    def __init__(self, db: Database, patient: dict, *, at: datetime | None = None):
        self.reads = ReviewReads(db)
        self.patient = patient
        self.pid = patient["_id"]
        self.zone = patient.get("time_zone") or "UTC"
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
        stored = {d["date"]: d for d in self.reads.adherence_days_by_id(
            [snapshot_id(self.pid, self.today - timedelta(days=n)) for n in range(REVIEW_SNAPSHOT_DAYS, -1, -1)])}
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

    def tens(self, days: int) -> list[rules.TensDay]:
        sessions = self.reads.sessions(self.pid, self._since(days), self.at + timedelta(minutes=5))
        return rules.tens_by_day(sessions, self.reads.plans(self.pid), self.zone, self.first_day(days), self.today)

    def pain(self, days: int) -> dict:
        """Entries in the period, before/after pairs, and the 14-day trend."""
        entries = [e for e in self.reads.pain_entries(self.pid, self._since(days), self.at + timedelta(minutes=5))
                   if rules.local_date(e["recorded_at"], self.zone) >= self.first_day(days)]
        linked = sorted({e["session_record_id"] for e in entries if e.get("session_record_id")})
        pairs = rules.before_after_pairs(entries, self.reads.sessions_by_id(self.pid, linked))
        trend_entries = self.reads.pain_entries(self.pid, self.at - timedelta(days=28), self.at + timedelta(minutes=5))
        return {"entries": entries, "pairs": pairs, "trend": rules.pain_trend(trend_entries, self.at)}

    def programmes(self, days: int) -> list[rules.ProgrammeEffect]:
        return rules.programme_effects(self.pain(days)["pairs"])

    def notifications(self, days: int) -> dict:
        since = self._since(days)
        titles = {r["_id"]: r for r in self.reads.reminders(self.pid)}
        occurrences = self.reads.occurrences(self.pid, since, self.at + timedelta(days=1))
        for occurrence in occurrences:
            occurrence["title"] = titles.get(occurrence.get("reminder_id"), {}).get("title")
        return {"occurrences": occurrences, "notifications": self.reads.notifications(self.pid, since)}

    def device(self) -> dict:
        devices = self.reads.devices(self.pid)
        for device in devices:
            device["days_since_sync"] = rules.days_since(_last_sync(device.get("status")), self.at)
        return {"devices": devices, "events": self.reads.device_events(self.pid, self.at - timedelta(days=30))}

    def diary(self, days: int) -> dict:
        return {"entries": list(reversed(self.pain(days)["entries"])), "practice": self.reads.practice(self.pid, self._since(days))}

    def plans(self) -> list[dict]:
        return self.reads.plans(self.pid)
