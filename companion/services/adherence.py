"""Adherence use cases: a patient's day computed from their plan and what they did, stored as a
snapshot; PDC over 7/30/90 days; the responder check. Called by the daily job, the API and the
clinician views. The rules themselves are companion.domain.adherence.

Which plan a day follows: the plan version in force at the end of the patient's local day (a plan
written at 15:00 governs that whole day). A day before any plan, or outside the TENS start/end dates,
has no TENS task ("no tasks") and is left out of PDC. Events: TENS session records (by their corrected
start), completed mindfulness practice, and medication reminder occurrences marked done.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from pymongo import ASCENDING
from pymongo.database import Database

from companion.domain.adherence import (
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
    pdc_report,
    responder_check,
)
from companion.domain.localtime import TimeZoneHistory, resolve_local
from companion.services.reminder_schedules import zone_history_of
from companion.store.accounts import Users
from companion.store.adherence import AdherenceDays, snapshot_id

COVERED_THRESHOLD = 1.0  # a day counts as covered when the full TENS prescription was delivered
MAX_RANGE_DAYS = 366
_EVENT_LIMIT = 2000


def _as_date(value) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    return date.fromisoformat(str(value))


def day_bounds(history: TimeZoneHistory, local_date: date) -> tuple[datetime, datetime, str]:
    """The UTC instants the patient's local day starts and ends, and the zone in force that day."""
    zone = history.zone_at(datetime.combine(local_date, time(12), UTC))
    return (resolve_local(local_date, time(0), zone), resolve_local(local_date + timedelta(days=1), time(0), zone),
            zone.key)


def plan_in_force(plans: list[dict], at: datetime) -> dict | None:
    """The plan version in force at ``at`` (the highest version that had started and not ended)."""
    live = [p for p in plans if p["active_from"] < at and (p.get("active_to") is None or p["active_to"] >= at)]
    return max(live, key=lambda p: p["version"], default=None)


def planned_tasks(plan: dict | None, local_date: date) -> list[PlannedTask]:
    """The tasks a plan sets for one local date (only those counting towards adherence matter)."""
    if plan is None:
        return []
    tasks = []
    tens = plan.get("tens") or {}
    start, end = _as_date(tens.get("start_date")), _as_date(tens.get("end_date"))
    if tens and (start is None or start <= local_date) and (end is None or local_date <= end):
        per_day, per_session = tens.get("sessions_per_day"), tens.get("minutes_per_session")
        minutes = tens.get("daily_minutes_target") or (per_day * per_session if per_day and per_session else None)
        tasks.append(PlannedTask(TaskKind.TENS, bool(tens.get("counts_towards_adherence", True)), minutes, per_day))
    for medication in plan.get("medications") or []:
        tasks.append(PlannedTask(TaskKind.MEDICATION, bool(medication.get("counts_towards_adherence", True)),
                                 None, len(medication.get("times") or [])))
    mindfulness = plan.get("mindfulness") or {}
    if mindfulness.get("minutes_per_day"):
        tasks.append(PlannedTask(TaskKind.MINDFULNESS, bool(mindfulness.get("counts_towards_adherence", True)),
                                 mindfulness["minutes_per_day"], None))
    return tasks


def _events(db: Database, patient_id: str, history: TimeZoneHistory, local_date: date) -> list[TaskEvent]:
    # A wide net (any zone's day lies within it), then each event goes to its own local day.
    start = datetime.combine(local_date, time(0), UTC) - timedelta(hours=15)
    end = datetime.combine(local_date + timedelta(days=1), time(0), UTC) + timedelta(hours=15)
    events = [TaskEvent(TaskKind.TENS, s["started_at"], (s.get("duration_s") or 0) / 60)
              for s in db.session_records.find({"patient_id": patient_id, "started_at": {"$gte": start, "$lt": end}},
                                               {"started_at": 1, "duration_s": 1}).limit(_EVENT_LIMIT)]
    events += [TaskEvent(TaskKind.MINDFULNESS, p["started_at"], p.get("minutes") or 0)
               for p in db.practice_log.find({"patient_id": patient_id, "started_at": {"$gte": start, "$lt": end},
                                              "completed_at": {"$ne": None}}).limit(_EVENT_LIMIT)]
    mine = events_by_local_day(events, history).get(local_date, [])
    doses = db.reminder_occurrences.find({"patient_id": patient_id, "kind": "medication", "status": "done",
                                          "local_date": local_date.isoformat()}).limit(_EVENT_LIMIT)
    return mine + [TaskEvent(TaskKind.MEDICATION, d["due_at"]) for d in doses]


def _progress_doc(progress: KindProgress) -> dict:
    return {"state": progress.state.value, "fraction": progress.fraction, "minutes": progress.delivered_minutes,
            "minutes_target": progress.target_minutes, "done": progress.done_count, "planned": progress.planned_count}


def _progress_of(doc: dict) -> KindProgress:
    return KindProgress(DayState(doc["state"]), doc["fraction"], doc["minutes"], doc["minutes_target"],
                        doc["done"], doc["planned"])


def snapshot_of(patient_id: str, local_date: date, zone: str, tasks: list[PlannedTask],
                events: list[TaskEvent], computed_at: datetime) -> dict:
    """The snapshot document of one local day, from its planned tasks and the events on that day."""
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
        "medication": _progress_doc(day.medication), "computed_at": computed_at,
    }


def compute_day(db: Database, patient: dict, local_date: date, computed_at: datetime) -> dict:
    """Compute and store one local day's adherence snapshot for ``patient`` (a `users` document)."""
    history = zone_history_of(patient)
    _, day_end, zone = day_bounds(history, local_date)
    plans = list(db.therapy_plans.find({"patient_id": patient["_id"]}).sort("version", ASCENDING).limit(500))
    tasks = planned_tasks(plan_in_force(plans, day_end), local_date)
    doc = snapshot_of(patient["_id"], local_date, zone, tasks, _events(db, patient["_id"], history, local_date),
                      computed_at)
    AdherenceDays(db).save(doc)
    return doc


def days_between(db: Database, patient_id: str, first: date, last: date) -> list[dict]:
    """Stored snapshots for first..last (inclusive, at most a year)."""
    if last < first or (last - first).days >= MAX_RANGE_DAYS:
        raise ValueError("a range of 1 to 366 days")
    return AdherenceDays(db).between(patient_id, first, last)


def _as_days(snapshots: list[dict]) -> dict[date, DayAdherence]:
    return {date.fromisoformat(s["date"]): DayAdherence(date.fromisoformat(s["date"]), _progress_of(s["tens"]),
                                                        _progress_of(s["mindfulness"]), _progress_of(s["medication"]))
            for s in snapshots}


def _pdc_doc(report) -> dict:
    return {str(period): {"days_with_plan": r.days_with_plan, "days_covered": r.days_covered, "pdc": r.pdc,
                          "adherent": r.adherent} for period, r in report.items()}


def summary(db: Database, patient_id: str, as_of: date, now: datetime) -> dict:
    """PDC over 7, 30 and 90 days ending ``as_of`` for TENS, mindfulness and medications, and the
    responder check as of ``now``."""
    days = _as_days(AdherenceDays(db).between(patient_id, as_of - timedelta(days=89), as_of))
    return {
        "patient_id": patient_id, "as_of": as_of.isoformat(), "threshold": ADHERENT_PDC,
        "tens": _pdc_doc(pdc_report(days, as_of, TaskKind.TENS, COVERED_THRESHOLD)),
        "mindfulness": _pdc_doc(pdc_report(days, as_of, TaskKind.MINDFULNESS, COVERED_THRESHOLD)),
        "medication": _pdc_doc(pdc_report(days, as_of, TaskKind.MEDICATION, COVERED_THRESHOLD)),
        "responder": responder(db, patient_id, now),
    }


def responder(db: Database, patient_id: str, now: datetime) -> dict:
    """The 30% / 2-point responder check on pain after 60 days of TENS therapy."""
    first = db.therapy_plans.find_one({"patient_id": patient_id}, sort=[("version", ASCENDING)])
    if first is None:
        return {"status": "no_plan"}
    start_date = _as_date((first.get("tens") or {}).get("start_date"))
    started = datetime.combine(start_date, time(0), UTC) if start_date else first["active_from"]
    entries = list(db.pain_entries.find({"patient_id": patient_id, "deleted": {"$ne": True},
                                         "recorded_at": {"$gte": started - timedelta(days=14), "$lt": now}},
                                        {"recorded_at": 1, "nrs": 1, "bpi": 1}).limit(5000))
    result = responder_check(started, now, [(e["recorded_at"], e["nrs"]) for e in entries],
                             [(e["recorded_at"], e["bpi"]["interference_score"]) for e in entries
                              if (e.get("bpi") or {}).get("interference_score") is not None])
    return {"status": result.status.value, "baseline_pain": result.baseline_pain, "recent_pain": result.recent_pain,
            "pain_reduction": result.pain_reduction, "interference_reduction": result.interference_reduction}


def patients_to_compute(db: Database) -> list[dict]:
    """Every patient account (their zone history and id are all the daily job needs)."""
    return list(Users(db).col.find({"role": "patient"}, {"time_zone": 1, "time_zone_history": 1}).limit(1_000_000))
