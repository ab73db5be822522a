"""What a patient did over a stretch of time, read from the stores and put in the terms of the domain's
progress rules: planned tasks per local day (companion.domain.plans.day_plan), TENS sessions, mindfulness
practice and medication doses as task events, and pain ratings.

Practice is counted as companion.domain.practice says (one stretch recorded twice counts once), from the
records as they are when read: every reader of practice minutes here and in the adherence snapshots reads
from ``practice.REACH`` before the first practice it counts and counts with :func:`with_counts`, so that all
of them agree."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.domain.adherence import TaskEvent, TaskKind, events_by_local_day
from companion.domain.localtime import TimeZoneHistory, resolve_local
from companion.domain.pain import PainEntry, Role
from companion.domain.plans import DayPlan, day_plan
from companion.domain.practice import REACH, PracticeUnion, Practised
from companion.domain.sessions import counted_minutes_shown, counts_as_session
from companion.store.stores import Stores


def local_day_bounds(zone: ZoneInfo, day: date) -> tuple[datetime, datetime]:
    """The UTC instants at which a local calendar day starts and ends (23 or 25 hours across DST)."""
    return resolve_local(day, time(0), zone), resolve_local(day + timedelta(days=1), time(0), zone)


@dataclass
class PatientFacts:
    """Everything recorded for the patient between two instants, plus every version of their plan written before
    the second (sessions held back from the figures are not read)."""

    plans: list[dict]
    sessions: list[dict]
    practice: list[dict]
    occurrences: list[dict]
    pain: list[dict]

    def events(self) -> list[TaskEvent]:
        """TENS sessions, completed practice and medication doses taken, as the domain's task events."""
        events = [TaskEvent(TaskKind.TENS, s["started_at"], counted_minutes_shown(s), int(counts_as_session(s)))
                  for s in self.sessions]
        events += practice_events(self.practice)
        events += [TaskEvent(TaskKind.MEDICATION, o["due_at"]) for o in self.occurrences
                   if o["kind"] == "medication" and o["status"] == "done"]
        return events

    def events_by_day(self, history: TimeZoneHistory) -> dict[date, list[TaskEvent]]:
        """The task events on each of the patient's local days, as the adherence snapshots place them: a session
        or a practice on the day it started where the patient was (their zone history), a dose on its slot's
        day (which a move east can make differ from the day its due time fell on in the old zone)."""
        timed = [e for e in self.events() if e.kind is not TaskKind.MEDICATION]
        by_day = events_by_local_day(timed, history)
        for o in self.occurrences:
            if o["kind"] == "medication" and o["status"] == "done":
                by_day.setdefault(date.fromisoformat(o["local_date"]), []).append(
                    TaskEvent(TaskKind.MEDICATION, o["due_at"]))
        return by_day

    def pain_entries(self) -> list[PainEntry]:
        return [PainEntry(e["_id"], e["recorded_at"], e["nrs"], e.get("session_record_id"),
                          Role(e["phase"]) if e.get("phase") else None) for e in self.pain]

    def plan_of(self, history: TimeZoneHistory, day: date) -> DayPlan:
        """What the plan asks of one of the patient's local days, as its adherence snapshot takes it
        (companion.domain.plans.day_plan)."""
        return day_plan(self.plans, history, day)


def with_counts(practice: Iterable[dict]) -> list[dict]:
    """The practice records in order of (started_at, id), each completed one with what it counts in the figures
    (companion.domain.practice): ``counted_minutes`` and ``counts`` (a practice of its own). Give every record
    started from ``REACH`` before the first one whose count is used."""
    return list(with_counts_in_order(sorted(practice, key=lambda p: (p["started_at"], str(p["_id"])))))


def with_counts_in_order(practice: Iterable[dict]) -> Iterator[dict]:
    """:func:`with_counts` for records given in order of (started_at, id), one at a time (a stream)."""
    union = PracticeUnion()
    for p in practice:
        p["counted_minutes"], p["counts"] = 0.0, False  # started, not completed: nothing yet
        if p.get("completed_at") is not None:
            counted = union.add(Practised(str(p["_id"]), p["started_at"], p.get("minutes") or 0.0))
            p["counted_minutes"], p["counts"] = counted.minutes, counted.own
        yield p


def practice_events(practice: Iterable[dict]) -> list[TaskEvent]:
    """Completed practice (counted by :func:`with_counts`) as the domain's task events: the minutes each adds,
    and one done only for a practice of its own."""
    return [TaskEvent(TaskKind.MINDFULNESS, p["started_at"], p["counted_minutes"], int(p["counts"]))
            for p in practice if p.get("completed_at") is not None]


def _before(records: Iterable[dict], field: str, end: datetime) -> list[dict]:
    # The in-order reads take [start, end]; a window is [start, end).
    return [r for r in records if r[field] < end]


def gather(stores: Stores, patient_id: str, start_utc: datetime, end_utc: datetime) -> PatientFacts:
    """Read the patient's records between two instants (and every plan version written before the second: all those
    that can set what a day in between asks); practice counted. Every record of each kind in the window is read,
    however many there are (a page at a time): the window bounds the read, never a count, so no figure drops
    the minutes of a patient who records more than most."""
    practice = with_counts_in_order(stores.practice.started_in_order(patient_id, start_utc - REACH, end_utc))
    return PatientFacts(
        plans=stores.plans.written_before(patient_id, end_utc),
        sessions=[s for s in _before(stores.session_records.started_in_order(patient_id, start_utc, end_utc),
                                     "started_at", end_utc) if not s.get("held")],
        practice=[p for p in _before(practice, "started_at", end_utc) if p["started_at"] >= start_utc],
        occurrences=_before(stores.occurrences.due_in_order(patient_id, start_utc, end_utc), "due_at", end_utc),
        pain=_before(stores.pain_entries.recorded_in_order(patient_id, start_utc, end_utc), "recorded_at", end_utc),
    )


def local_date(instant: datetime, history: TimeZoneHistory) -> date:
    """The patient's calendar date at an instant, in the zone in force then."""
    return instant.astimezone(history.zone_at(instant)).date()


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
