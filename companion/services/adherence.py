"""Adherence use cases: a patient's day computed from their plan and what they did, stored as a
snapshot; PDC over 7/30/90 days; the responder check. Called by the daily job, the API and the
clinician views. The rules themselves are companion.domain.adherence.

Today is in progress: PDC periods end on yesterday at the latest, as the streak never counts today against
the patient (companion.domain.adherence).

Which plan a day follows: companion.domain.plans.day_plan (the version in force at the end of the patient's
local day sets its mindfulness and medications, a plan written at 15:00 governing that whole day; its TENS is the
course of the newest version that covers the date, so a change dated "from tomorrow" leaves today's as it was). A
day before any plan, or outside every TENS course, has no TENS task ("no tasks") and is left out of PDC. Events: TENS session records (by their corrected
start), completed mindfulness practice (one stretch recorded twice counted once: companion.domain.practice),
and medication reminder occurrences marked done.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from companion.clock import Clock, now
from companion.domain.adherence import (
    ADHERENCE_RULES,
    ADHERENT_PDC,
    DayAdherence,
    DayState,
    KindProgress,
    PlannedTask,
    TaskEvent,
    TaskKind,
    adherence_for_day,
    events_by_local_day,
    is_covered,
    pdc_period_end,
    pdc_report,
    responder_check,
    responder_windows,
)
from companion.domain.errors import Invalid, NotFound
from companion.domain.localtime import TimeZoneHistory, dates_reach, day_span
from companion.domain.people import Account
from companion.domain.plans import tasks_for_day
from companion.domain.practice import REACH
from companion.domain.sessions import tens_event
from companion.services.day_facts import practice_events, with_counts
from companion.store.adherence import snapshot_id
from companion.store.stores import Stores

COVERED_THRESHOLD = 1.0  # a day counts as covered when the full TENS prescription was delivered
MAX_RANGE_DAYS = 366
DEFAULT_DAYS = 30
_EVENT_LIMIT = 2000


def day_bounds(history: TimeZoneHistory, local_date: date) -> tuple[datetime, datetime, str]:
    """The UTC instants the patient's local day starts and ends as they lived it, and the zone they ended it in
    (companion.domain.localtime.day_span): the day's plan is taken at its end (companion.domain.plans.day_plan)."""
    start, end, zone = day_span(history, local_date)
    return start, end, zone.key


def _progress_doc(progress: KindProgress) -> dict:
    return {"state": progress.state.value, "fraction": progress.fraction, "minutes": progress.delivered_minutes,
            "minutes_target": progress.target_minutes, "done": progress.done_count, "planned": progress.planned_count}


def _progress_of(doc: dict) -> KindProgress:
    return KindProgress(DayState(doc["state"]), doc["fraction"], doc["minutes"], doc["minutes_target"],
                        doc["done"], doc["planned"])


def snapshot_of(patient_id: str, local_date: date, zone: str, tasks: list[PlannedTask],
                events: list[TaskEvent], computed_at: datetime) -> dict:
    """The snapshot document of one local day, from its planned tasks and the events on that day, with the version
    of the rules it was computed by (``rules``: companion.domain.adherence.ADHERENCE_RULES)."""
    day = adherence_for_day(local_date, tasks, events)
    return {
        "_id": snapshot_id(patient_id, local_date), "patient_id": patient_id,
        "date": local_date.isoformat(), "zone": zone, "state": day.tens.state.value,
        "tens_fraction": day.tens.fraction, "tens_minutes": round(day.tens.delivered_minutes, 2),
        "tens_minutes_target": day.tens.target_minutes, "sessions_done": day.tens.done_count,
        "sessions_planned": day.tens.planned_count, "mindfulness_fraction": day.mindfulness.fraction,
        "medication_fraction": day.medication.fraction,
        "covered": bool(is_covered(day, TaskKind.TENS, COVERED_THRESHOLD)),
        "tens": _progress_doc(day.tens), "mindfulness": _progress_doc(day.mindfulness),
        "medication": _progress_doc(day.medication), "computed_at": computed_at, "rules": ADHERENCE_RULES,
    }


def _as_days(snapshots: list[dict]) -> dict[date, DayAdherence]:
    return {date.fromisoformat(s["date"]): DayAdherence(date.fromisoformat(s["date"]), _progress_of(s["tens"]),
                                                        _progress_of(s["mindfulness"]), _progress_of(s["medication"]))
            for s in snapshots}


def _pdc_doc(report) -> dict:
    return {str(period): {"days_with_plan": r.days_with_plan, "days_covered": r.days_covered, "pdc": r.pdc,
                          "adherent": r.adherent} for period, r in report.items()}


class Adherence:
    def __init__(self, stores: Stores, clock: Clock = now):
        self.stores = stores
        self.clock = clock

    def _patient(self, patient_id: str) -> Account:
        patient = self.stores.users.by_id(patient_id)
        if patient is None:
            raise NotFound("no such patient")
        return patient

    def local_today(self, patient_id: str) -> date:
        """The patient's calendar date now."""
        at = self.clock()
        return at.astimezone(self._patient(patient_id).zone_history().zone_at(at)).date()

    def _events(self, patient_id: str, history: TimeZoneHistory, local_date: date) -> list[TaskEvent]:
        # A wide net (any zone's day lies within it), then each event goes to its own local day.
        start, end = dates_reach(local_date)
        events = [tens_event(s) for s in self.stores.session_records.for_patient(patient_id, start, end, _EVENT_LIMIT,
                                                                                  counted_only=True)]
        events += practice_events(with_counts(self.stores.practice.completed_between(patient_id, start - REACH, end)))
        mine = events_by_local_day(events, history).get(local_date, [])
        doses = self.stores.occurrences.doses_taken(patient_id, local_date.isoformat())
        return mine + [TaskEvent(TaskKind.MEDICATION, d["due_at"]) for d in doses]

    def compute_day(self, patient: Account, local_date: date) -> dict:
        """Compute and store one local day's adherence snapshot for ``patient`` (their panel row is marked: it
        keeps the days that the low-adherence rule reads)."""
        history = patient.zone_history()
        zone = day_bounds(history, local_date)[2]
        tasks = tasks_for_day(self.stores.plans.written_before(patient.id, dates_reach(local_date)[1]), history,
                              local_date)
        doc = snapshot_of(patient.id, local_date, zone, tasks, self._events(patient.id, history, local_date),
                          self.clock())
        self.stores.adherence_days.save(doc)
        self.stores.panel_row_marks.mark([patient.id], "adherence", self.clock())
        return doc

    def days_between(self, patient_id: str, first: date | None, last: date | None) -> list[dict]:
        """Stored snapshots for first..last (inclusive local dates; the last 30 days by default, at most a year)."""
        last = last or self.local_today(patient_id)
        first = first or last - timedelta(days=DEFAULT_DAYS - 1)
        if last < first or (last - first).days >= MAX_RANGE_DAYS:
            raise Invalid("a range of 1 to 366 days",
                          errors={"from": ["from must not be after to, and at most 366 days before"]})
        return self.stores.adherence_days.between(patient_id, first, last)

    def summary(self, patient_id: str, as_of: date | None = None) -> dict:
        """PDC over 7, 30 and 90 days ending ``as_of`` (default: today) for TENS, mindfulness and medications,
        and the responder check as of now. Today is in progress and never counted: the periods end on
        yesterday at the latest (``period_end``), and today's TENS progress is given apart (``in_progress``)."""
        today = self.local_today(patient_id)
        as_of = as_of or today
        end = pdc_period_end(as_of, today)
        stored = self.stores.adherence_days.between(patient_id, end - timedelta(days=89), max(as_of, end))
        days = _as_days([s for s in stored if date.fromisoformat(s["date"]) <= end])
        current = next((s for s in stored if s["date"] == today.isoformat()), None)
        return {
            "patient_id": patient_id, "as_of": as_of.isoformat(), "period_end": end.isoformat(),
            "threshold": ADHERENT_PDC,
            "tens": _pdc_doc(pdc_report(days, end, TaskKind.TENS, COVERED_THRESHOLD)),
            "mindfulness": _pdc_doc(pdc_report(days, end, TaskKind.MINDFULNESS, COVERED_THRESHOLD)),
            "medication": _pdc_doc(pdc_report(days, end, TaskKind.MEDICATION, COVERED_THRESHOLD)),
            "in_progress": {"date": today.isoformat(), "state": current["state"] if current else None,
                            "tens_fraction": current["tens_fraction"] if current else None} if as_of >= today else None,
            "responder": self.responder(patient_id),
        }

    def responder(self, patient_id: str) -> dict:
        """The 30% / 2-point responder check on pain after 60 days of TENS therapy."""
        at = self.clock()
        first = self.stores.plans.first(patient_id)
        if first is None:
            return {"status": "no_plan"}
        start_date = (first.get("tens") or {}).get("start_date")
        started = datetime.combine(date.fromisoformat(start_date), time(0), UTC) if start_date else first["active_from"]
        # Each window read apart (by _id: they overlap in the first weeks): one read from the baseline to now
        # stopped at its row limit after a long diary, short of the recent weeks.
        read = {e["_id"]: e for start, end in responder_windows(started, at)
                for e in self.stores.pain_entries.scores_between(patient_id, start, end)}
        entries = [e for e in read.values() if e["recorded_at"] < at]
        result = responder_check(started, at, [(e["recorded_at"], e["nrs"]) for e in entries],
                                 [(e["recorded_at"], e["bpi"]["interference_score"]) for e in entries
                                  if (e.get("bpi") or {}).get("interference_score") is not None])
        return {"status": result.status.value, "baseline_pain": result.baseline_pain,
                "recent_pain": result.recent_pain, "pain_reduction": result.pain_reduction,
                "interference_reduction": result.interference_reduction}
