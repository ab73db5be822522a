"""What happened on one local day of a patient's life, read from the stores: reminders, TENS minutes,
mindfulness practice and pain ratings. The progress rules (companion.domain) judge these facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pymongo.database import Database

from companion.store.content import PracticeLog
from companion.store.diary import PainEntries
from companion.store.reminders import Occurrences

SESSION_LIMIT = 500  # a day has at most a few dozen sessions; this only bounds a runaway query


@dataclass
class DayFacts:
    date: date
    zone: str
    start_utc: datetime
    end_utc: datetime
    occurrences: list[dict] = field(default_factory=list)
    tens_minutes: float = 0.0
    tens_sessions: int = 0
    mindfulness_minutes: float = 0.0
    mindfulness_sessions: int = 0
    pain_scores: list[int] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.occurrences if o["status"] == status)


def local_day_bounds(zone: str, day: date) -> tuple[datetime, datetime]:
    """The UTC instants at which a local calendar day starts and ends (23 or 25 hours across DST)."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tz)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def tens_sessions(db: Database, patient_id: str, start: datetime, end: datetime) -> list[dict]:
    """TENS session records (written by the gateway ingestion) that started in the range."""
    return list(db.session_records.find(
        {"patient_id": patient_id, "started_at": {"$gte": start, "$lt": end}},
        {"started_at": 1, "duration_s": 1}).sort("started_at", 1).limit(SESSION_LIMIT))


def facts_for_day(db: Database, patient_id: str, zone: str, day: date) -> DayFacts:
    """Gather one local day's facts (occurrences as stored; materialize them first if needed)."""
    start, end = local_day_bounds(zone, day)
    facts = DayFacts(date=day, zone=zone, start_utc=start, end_utc=end)
    facts.occurrences = [o for o in Occurrences(db).between(patient_id, start - timedelta(days=1),
                                                            end + timedelta(days=1))
                         if o["local_date"] == day.isoformat()]
    sessions = tens_sessions(db, patient_id, start, end)
    facts.tens_sessions = len(sessions)
    facts.tens_minutes = round(sum(s.get("duration_s") or 0 for s in sessions) / 60, 1)
    practice = [p for p in PracticeLog(db).between(patient_id, start, end) if p["completed_at"] is not None]
    facts.mindfulness_sessions = len(practice)
    facts.mindfulness_minutes = round(sum(p["minutes"] for p in practice), 1)
    facts.pain_scores = [e["nrs"] for e in PainEntries(db).recorded_between(patient_id, start, end)]
    return facts
