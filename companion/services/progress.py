"""A patient's progress: today, streaks, the week, and what to try after a flare.

The rules are the domain's (adherence, streaks, pain, suggestions); this module gathers the facts for
the patient's own local days, in the zone in force on each day, and shapes the answers.
"""

from __future__ import annotations

from datetime import date, timedelta

from companion.clock import Clock, now
from companion.domain.access import Grant, sees_free_text, without_free_text
from companion.domain.adherence import (
    ADHERENCE_RULES,
    DayAdherence,
    KindProgress,
    TaskKind,
    adherence_for_day,
    goal_progress,
    is_covered,
)
from companion.domain.errors import NotFound
from companion.domain.localtime import TimeZoneHistory, dates_reach
from companion.domain.pain import flare_at
from companion.domain.people import Account
from companion.domain.plans import DayPlan
from companion.domain.practice import REACH
from companion.domain.sessions import counts_as_session
from companion.domain.streaks import streak, weekly_summary
from companion.domain.suggestions import ContentItem, PracticeCompletion, suggest_after_flare
from companion.services.adherence import day_bounds
from companion.services.day_facts import (
    PatientFacts,
    days_between,
    gather,
    local_date,
    local_day_bounds,
    with_counts,
)
from companion.services.reminders import ReminderService
from companion.store.read_models import is_current
from companion.store.stores import Stores

FLARE_RECENT = timedelta(hours=48)  # a flare older than this no longer prompts suggestions
EVIDENCE_DAYS = 90  # how far back practice and pain are paired to learn what helps this patient
PUSH_BOOKKEEPING = ("nudges_sent", "missed_summary", "restored_at")
# The version of what a today row holds and how it is computed: the adherence rules its figures follow
# (companion.domain.adherence.ADHERENCE_RULES) and the row's own layout (TODAY_LAYOUT: moved on with any other
# change of a row's figures or items). A row stored under another version (by an earlier release, or by a process
# of the release before still running during a rolling deploy) is computed again on its patient's next "today".
TODAY_LAYOUT = 1
TODAY_RULES = f"{ADHERENCE_RULES}.{TODAY_LAYOUT}"


def _kind(progress: KindProgress) -> dict:
    return {"state": progress.state.value, "fraction": progress.fraction,
            "minutes": round(progress.delivered_minutes, 1), "minutes_target": progress.target_minutes,
            "done": progress.done_count, "planned": progress.planned_count}


def _medication_counts(medications: list[dict]) -> bool:
    doses = [m for m in medications if m.get("times")]
    return any(m.get("counts_towards_adherence", True) for m in doses)


def _goal(kind: TaskKind, tasks, events, prescription: dict | None, counts: bool | None = None) -> dict:
    """Today's progress towards the plan's goal of one kind, whether or not it counts towards adherence."""
    if counts is None:
        counts = bool(prescription) and bool(prescription.get("counts_towards_adherence", True))
    return {**_kind(goal_progress(kind, tasks, events)), "counts_towards_adherence": counts}


def _adherence_by_day(facts: PatientFacts, history, days: list[date]) -> dict[date, DayAdherence]:
    by_day = facts.events_by_day(history)
    result = {}
    for day in days:
        result[day] = adherence_for_day(day, list(facts.plan_of(history, day).tasks), by_day.get(day, []))
    return result



def _verdict(covered: bool | None, day: date, today: date) -> bool | None:
    """A day's covered / not covered in the week view: past days as they ended, today only once covered."""
    if day < today or (day == today and covered):
        return covered
    return None


def _day_line(day: date, adherence: DayAdherence, covered: bool | None, facts: PatientFacts, history) -> dict:
    occurrences = [o for o in facts.occurrences if o["local_date"] == day.isoformat()]
    scores = [e["nrs"] for e in facts.pain if local_date(e["recorded_at"], history) == day]
    return {
        "date": day.isoformat(), "covered": covered,
        "tens_minutes": round(adherence.tens.delivered_minutes, 1), "tens_minutes_target": adherence.tens.target_minutes,
        "mindfulness_minutes": round(adherence.mindfulness.delivered_minutes, 1),
        "reminders_done": sum(1 for o in occurrences if o["status"] == "done"),
        "reminders_skipped": sum(1 for o in occurrences if o["status"] == "skipped"),
        "reminders_missed": sum(1 for o in occurrences if o["status"] == "missed"),
        "pain_entries": len(scores), "max_pain": max(scores) if scores else None,
    }


def _shown(occurrence: dict) -> dict:
    """An occurrence as today keeps it: without the push bookkeeping (nudges sent), which the sender changes
    without changing the patient's today and which no answer shows."""
    return {k: v for k, v in occurrence.items() if k not in PUSH_BOOKKEEPING}


def _today_answer(row: dict, grant: Grant | None) -> dict:
    occurrences = row["occurrences"]
    statuses = {s: sum(1 for o in occurrences if o["status"] == s) for s in ("pending", "done", "skipped", "missed")}
    if grant is not None and not sees_free_text(grant):
        occurrences = [without_free_text(o, ("skip_reason",)) for o in occurrences]
    return {"date": row["date"], "zone": row["zone"],
            "reminders": {"due": len(occurrences), **statuses, "items": occurrences}, **row["figures"]}


class Progress:
    def __init__(self, stores: Stores, reminders: ReminderService, clock: Clock = now):
        self.stores = stores
        self.reminders = reminders
        self.clock = clock

    def _patient(self, patient_id: str) -> Account:
        patient = self.stores.users.by_id(patient_id)
        if patient is None:
            raise NotFound("no such patient")
        return patient

    def _history(self, patient_id: str) -> TimeZoneHistory:
        return self._patient(patient_id).zone_history()

    def today(self, patient_id: str, patient: Account | None = None, grant: Grant | None = None) -> dict:
        """What is due today on the patient's clock, what is done, and TENS minutes against the plan.

        Answered from the patient's today row (companion.store.read_models.TodayRows: one read) while no write
        has changed their today since it was computed, by these rules (TODAY_RULES), and it is still the same
        local day; computed (the day's reminders materialized first) and stored again otherwise. ``patient``:
        their account when the caller has it already (the patient's own request: their session was checked
        against it). ``grant``: the caller's, when it is not the patient's own (a caregiver not allowed the
        patient's words does not see the reasons for skipping)."""
        patient = patient or self._patient(patient_id)
        history = patient.zone_history()
        current = self.clock()
        zone = history.zone_at(current)
        day = local_date(current, history)
        row = self.stores.today_rows.get(patient_id)
        if row is not None and is_current(row, TODAY_RULES) and (row.get("date"), row.get("zone")) == (
                day.isoformat(), zone.key):
            return _today_answer(row, grant)
        start, end = local_day_bounds(zone, day)
        self.reminders.materialize(patient_id, start, end, patient=patient)
        # The materialization (which changes the token when it writes) comes before the token is read, and the
        # token before the data: a write after this read changes it, so a row computed from data older than a
        # write is never stored as current.
        token = self.stores.today_rows.token_of(patient_id)
        occurrences = [_shown(o) for o in self.stores.occurrences.between(patient_id, start - timedelta(days=1),
                                                                          end + timedelta(days=1))
                       if o["local_date"] == day.isoformat()]
        computed = {"_id": patient_id, "date": day.isoformat(), "zone": zone.key, "occurrences": occurrences,
                    "figures": self._today_figures(patient_id, history, zone, day)}
        self.stores.today_rows.save(computed, token, TODAY_RULES)
        return _today_answer(computed, grant)

    def _today_figures(self, patient_id: str, history: TimeZoneHistory, zone, day: date) -> dict:
        # A day's records are those made on it in the zone in force when they were made: after a move, some of
        # today's lie before today's start on the new clock (flying west: up to 25 hours before) or after its end
        # (east). Read the reach of the date in any zone, and keep those of the day.
        end = local_day_bounds(zone, day)[1]
        facts = gather(self.stores, patient_id, *dates_reach(day))
        plan = facts.plan_of(history, day)
        tasks = list(plan.tasks)
        events = facts.events_by_day(history).get(day, [])
        scores = [e["nrs"] for e in facts.pain if local_date(e["recorded_at"], history) == day]
        sessions = [s for s in facts.sessions if local_date(s["started_at"], history) == day]
        return {
            "tens": {**_goal(TaskKind.TENS, tasks, events, plan.tens),
                     "sessions": sum(counts_as_session(s) for s in sessions)},
            "mindfulness": {**_goal(TaskKind.MINDFULNESS, tasks, events, plan.mindfulness),
                            **self._mindfulness_goal(patient_id, plan, history, day, end)},
            "medication": _goal(TaskKind.MEDICATION, tasks, events, None, _medication_counts(plan.medications)),
            "pain": {"entries": len(scores), "latest_nrs": scores[-1] if scores else None},
        }

    def _mindfulness_goal(self, patient_id: str, plan: DayPlan, history: TimeZoneHistory, day: date,
                          day_end) -> dict:
        """The plan's mindfulness goal as set (None when it sets none), and the practice completed this week
        whether or not there is a goal (Monday to today, each day as the patient lived it: the Monday of a week
        begun in another zone is that zone's)."""
        goal = plan.mindfulness or {}
        monday = day - timedelta(days=day.isoweekday() - 1)
        week_start = day_bounds(history, monday)[0]
        week = with_counts(self.stores.practice.completed_between(patient_id, week_start - REACH, day_end))
        set_goal = goal.get("minutes_per_day") or goal.get("sessions_per_week")
        return {"goal": {"minutes_per_day": goal.get("minutes_per_day"),
                         "sessions_per_week": goal.get("sessions_per_week")} if set_goal else None,
                "sessions_this_week": sum(p["counts"] for p in week if p["started_at"] >= week_start)}

    def streaks(self, patient_id: str, grace_days: int, days: int) -> dict:
        """The current and longest streak of days meeting the TENS prescription, over the last `days` days."""
        history = self._history(patient_id)
        current = self.clock()
        last = local_date(current, history)
        first = last - timedelta(days=days - 1)
        facts = gather(self.stores, patient_id, *dates_reach(first, last))
        adherence = _adherence_by_day(facts, history, days_between(first, last))
        result = streak({d: is_covered(a) for d, a in adherence.items()}, last, grace_days)
        return {"current": result.current, "longest": result.longest, "grace_days": grace_days,
                "forgiven": [d.isoformat() for d in result.forgiven], "since": first.isoformat()}

    def week(self, patient_id: str, any_day: date | None = None) -> dict:
        """The ISO week (Monday to Sunday) containing `any_day` (default: today): totals and each day."""
        history = self._history(patient_id)
        current = self.clock()
        any_day = any_day or local_date(current, history)
        monday = any_day - timedelta(days=any_day.isoweekday() - 1)
        days = days_between(monday, monday + timedelta(days=6))
        start = local_day_bounds(history.zone_at(current), monday)[0] - timedelta(days=1)
        end = local_day_bounds(history.zone_at(current), days[-1])[1] + timedelta(days=1)
        if end > current:  # the rest of the week's reminders (those in reach), so the app can show what is coming
            self.reminders.materialize(patient_id, max(start, current), end)
        facts = gather(self.stores, patient_id, *dates_reach(monday, days[-1]))
        in_week = set(days)
        facts.sessions = [s for s in facts.sessions if local_date(s["started_at"], history) in in_week]
        facts.practice = [p for p in facts.practice if local_date(p["started_at"], history) in in_week]
        facts.pain = [e for e in facts.pain if local_date(e["recorded_at"], history) in in_week]
        adherence = _adherence_by_day(facts, history, days)
        today_here = local_date(current, history)
        # Days still to come have a plan but no verdict yet: they count neither way; nor does today until it is
        # covered (at noon, half done, it is in progress, not "not covered").
        covered = {d: _verdict(is_covered(a), d, today_here) for d, a in adherence.items()}
        summary = weekly_summary(covered, facts.events(), facts.pain_entries(), history)
        totals = next((s for s in summary if (s.iso_year, s.iso_week) == monday.isocalendar()[:2]), None)
        return {
            "week_start": monday.isoformat(), "iso_week": monday.isocalendar().week,
            "days_with_plan": totals.days_with_plan if totals else 0,
            "days_covered": totals.days_covered if totals else 0,
            "tens_minutes": round(totals.tens_minutes, 1) if totals else 0.0,
            "practice_minutes": round(totals.practice_minutes, 1) if totals else 0.0,
            "mean_pain": totals.mean_pain if totals else None,
            "pain_entries": totals.pain_entries if totals else 0,
            "days": [_day_line(d, adherence[d], covered[d], facts, history) for d in days],
        }

    def suggestions(self, patient_id: str, limit: int = 3) -> dict:
        """After a recent flare, short library items, favouring those this patient felt better after."""
        current = self.clock()
        facts = gather(self.stores, patient_id, current - timedelta(days=EVIDENCE_DAYS), current + timedelta(minutes=5))
        entries = facts.pain_entries()
        recent = [e for e in entries if e.recorded_at_utc >= current - FLARE_RECENT]
        flare = next((f for e in reversed(recent) if (f := flare_at(e, entries, high_readings=1)) is not None), None)
        if flare is None:
            return {"flare": None, "items": []}
        library = {i["_id"]: i for i in self.stores.content.all()}
        items = [ContentItem(slug, i["title"], i["category"], i["duration_min"]) for slug, i in library.items()]
        completions = [PracticeCompletion(p["item_slug"], p["started_at"], p["completed_at"])
                       for p in facts.practice if p["completed_at"] is not None and p["counts"]]
        ranked = suggest_after_flare(items, completions, entries, limit=limit)
        return {
            "flare": {"recorded_at": flare.entry.recorded_at_utc, "nrs": flare.entry.score,
                      "reason": flare.reason.value, "baseline_median": flare.baseline_median},
            "items": [{**library[s.item.item_id], "mean_pain_change": s.mean_pain_change, "pairs": s.pairs}
                      for s in ranked],
        }
