"""What a clinician looks at: adherence over a period, the direction of pain, which TENS settings
helped, and who on a panel needs attention first.

Plain Python over plain values (dicts as stored, dates, datetimes); no database, no web.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from companion.domain.adherence import DayState, TaskEvent, TaskKind, adherence_for_day, is_covered
from companion.domain.localtime import TimeZoneHistory
from companion.domain.people import ACTIVE, CLOSED
from companion.domain.plans import day_plan, tens_minutes_prescribed
from companion.domain.sessions import counted_minutes_shown, counts_as_session, tens_event

ADHERENT_PDC = 0.8
# A change of one point in the 14-day mean NRS is where a panel starts to care; the clinically
# important change for one patient (30%, or 2 points) is judged on the patient page.
PAIN_TREND_POINTS = 1.0
SILENT_DEVICE_DAYS = 2
TASK_STATES = ("no_events", "progress")


def pdc(adherence_days: Iterable[dict], first: date, last: date) -> float | None:
    """Proportion of days covered between `first` and `last` (inclusive, local dates).

    Only days that had tasks count in the denominator (a day in state `no_tasks` is neither
    covered nor missed); a day without a snapshot is unknown and left out. None when no day in the
    period had tasks.
    """
    counted = covered = 0
    for day in adherence_days:
        on = date.fromisoformat(day["date"])
        if first <= on <= last and day.get("state") in TASK_STATES:
            counted += 1
            covered += bool(day.get("covered"))
    return round(covered / counted, 4) if counted else None


def completed_days(today: date, days: int) -> tuple[date, date]:
    """The `days` whole local days before `today` (today is still in progress, so it is left out)."""
    return today - timedelta(days=days), today - timedelta(days=1)


@dataclass(frozen=True)
class PainTrend:
    """Mean NRS over the last 14 days against the 14 days before."""

    recent_mean: float | None
    previous_mean: float | None

    @property
    def change(self) -> float | None:
        if self.recent_mean is None or self.previous_mean is None:
            return None
        return round(self.recent_mean - self.previous_mean, 2)

    @property
    def direction(self) -> str:
        """`rising`, `falling`, `steady`, or `unknown` when either fortnight has no entries."""
        change = self.change
        if change is None:
            return "unknown"
        if change >= PAIN_TREND_POINTS:
            return "rising"
        if change <= -PAIN_TREND_POINTS:
            return "falling"
        return "steady"


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def pain_trend(entries: Iterable[dict], at: datetime) -> PainTrend:
    """Compare the mean NRS of [at-14d, at) with that of [at-28d, at-14d); deleted entries ignored."""
    recent, previous = [], []
    for entry in entries:
        if entry.get("deleted"):
            continue
        age = at - entry["recorded_at"]
        if timedelta(0) <= age < timedelta(days=14):
            recent.append(entry["nrs"])
        elif timedelta(days=14) <= age < timedelta(days=28):
            previous.append(entry["nrs"])
    return PainTrend(_mean(recent), _mean(previous))


def lf_line_breaks(text: str) -> str:
    """``text`` with every line break as one LF: a browser submits a textarea's line breaks as CRLF, though its
    maxlength counts each as one character (the HTML standard's "API value"), and an old Mac program sends CR. A
    note's length is the length the clinician was shown while typing it."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def days_since(moment: datetime | None, at: datetime) -> int | None:
    """Whole days from `moment` to `at`; None when it never happened."""
    if moment is None:
        return None
    return max(0, (at - moment) // timedelta(days=1))


# What a panel line shows of its patient's units' last contact is days_since_sync (whole 24-hour periods, counted
# when the line is read from the instant the row stored) and what follows from it (the silent-device reason and
# filter, the order). Those are all kept exact by the two rules below, without computing the row again at every
# contact: a hub reports each unit about every 30 seconds.

def contact_changes_line(shown: datetime | None, heard: datetime, at: datetime) -> bool:
    """Whether a unit heard from at ``heard`` (a status report, a sync received at ``at``) changes what a panel
    line whose row holds the last contact ``shown`` shows at ``at``: the first contact, a contact in the future
    the row must lose (one noted before readings were clamped), or one that changes the days since sync (the unit
    heard again after a day or more). A later contact that leaves them the same changes nothing shown until the
    row's days since ``shown`` next change (``days_since_changes_at``), when the row is computed again anyway."""
    if shown is None or shown > at:
        return True
    return heard > shown and days_since(heard, at) != days_since(shown, at)


def days_since_changes_at(moment: datetime | None, at: datetime) -> datetime | None:
    """When the days since ``moment``, counted at ``at``, next change by time alone (the next whole 24 hours since
    it); None when it never happened."""
    if moment is None:
        return None
    return moment + ((days_since(moment, at) or 0) + 1) * timedelta(days=1)


def local_date(moment: datetime, zone: str) -> date:
    """The patient's calendar date at a UTC instant."""
    return moment.astimezone(ZoneInfo(zone)).date()


def tens_target_minutes(plan: dict | None, day: date) -> int | None:
    """Minutes of TENS a plan prescribes for a day, or None when it prescribes none that day."""
    return tens_minutes_prescribed(plan, day)


@dataclass
class TensDay:
    """TENS delivered on one local day against what the plan asked for, and the day's TENS adherence from them
    (``state``: no_tasks, no_events or progress; ``covered``), as the adherence days have it once computed."""

    date: date
    minutes: float = 0.0
    sessions: int = 0
    target_minutes: int | None = None
    state: str = DayState.NO_TASKS.value
    covered: bool = False


def tens_by_day(sessions: Iterable[dict], plans: list[dict], zone: str, first: date, last: date,
                history: TimeZoneHistory | None = None, threshold: float = 1.0) -> list[TensDay]:
    """Minutes and sessions per local day from `first` to `last`, each with the plan's target. Sessions held
    back from the figures count nothing; one that overlaps another counts only its own minutes. A day's minutes are
    the sum of its sessions' minutes as shown (to a tenth: counted_minutes_shown), so that a list of the day's
    sessions adds up to it. ``history``: the
    patient's zones over time, so that each session counts on the local day it was in where it happened, and each
    day's target is the plan's for that date (companion.domain.plans.day_plan: taken at the end of the day as the
    patient lived it), as the adherence days take it; without it, every day is in ``zone``.

    Each day's state and covered (at ``threshold``) are the adherence rule's (adherence_for_day, is_covered) on
    the same sessions and plan: what its stored adherence day says once computed again after late data, never a
    day that reads its target met and not covered."""
    history = history or TimeZoneHistory.fixed(zone)

    def zone_of(moment: datetime) -> ZoneInfo:
        return history.zone_at(moment)

    days = {first + timedelta(days=i): TensDay(first + timedelta(days=i)) for i in range((last - first).days + 1)}
    events: dict[date, list[TaskEvent]] = defaultdict(list)
    for session in sessions:
        if session.get("held"):
            continue
        day = days.get(session["started_at"].astimezone(zone_of(session["started_at"])).date())
        if day is not None:
            day.minutes += counted_minutes_shown(session)
            day.sessions += counts_as_session(session)
            events[day.date].append(tens_event(session))
    for day in days.values():
        day.minutes = round(day.minutes, 1)  # tenths added up in binary floating point
        plan = day_plan(plans, history, day.date)
        day.target_minutes = plan.tens_minutes
        adherence = adherence_for_day(day.date, plan.tasks, events[day.date])
        day.state, day.covered = adherence.tens.state.value, bool(is_covered(adherence, TaskKind.TENS, threshold))
    return list(days.values())


@dataclass(frozen=True)
class SessionPain:
    """Pain rated before and after one TENS session."""

    session_id: str
    started_at: datetime
    programme: int | None
    frequency_hz: int | None
    before: int
    after: int

    @property
    def change(self) -> int:
        return self.after - self.before


def before_after_pairs(entries: Iterable[dict], sessions: dict[str, dict]) -> list[SessionPain]:
    """Pair the diary entries the patient linked to a session as `before` and `after` it.

    When a session has several entries of one phase, the `before` closest to the start and the
    latest `after` are used. Sessions missing either side, or not found, give no pair.
    """
    sides: dict[str, dict[str, dict]] = defaultdict(dict)
    for entry in entries:
        sid, phase = entry.get("session_record_id"), entry.get("phase")
        if entry.get("deleted") or not sid or phase not in ("before", "after"):
            continue
        kept = sides[sid].get(phase)
        if kept is None or entry["recorded_at"] > kept["recorded_at"]:
            sides[sid][phase] = entry
    pairs = []
    for sid, by_phase in sides.items():
        session = sessions.get(sid)
        if session is None or len(by_phase) != 2:
            continue
        pairs.append(SessionPain(sid, session["started_at"], session.get("programme"), session.get("frequency_hz"),
                                 by_phase["before"]["nrs"], by_phase["after"]["nrs"]))
    return sorted(pairs, key=lambda p: p.started_at)


@dataclass
class ProgrammeEffect:
    """How much pain changed, on average, after sessions with one programme and frequency."""

    programme: int | None
    frequency_hz: int | None
    sessions: int = 0
    changes: list[int] = field(default_factory=list)

    @property
    def mean_change(self) -> float:
        return round(sum(self.changes) / len(self.changes), 2)


def programme_effects(pairs: Iterable[SessionPain]) -> list[ProgrammeEffect]:
    """Group before/after pairs by (programme, frequency); the most helpful (largest drop) first."""
    groups: dict[tuple, ProgrammeEffect] = {}
    for pair in pairs:
        key = (pair.programme, pair.frequency_hz)
        group = groups.setdefault(key, ProgrammeEffect(*key))
        group.sessions += 1
        group.changes.append(pair.change)
    return sorted(groups.values(), key=lambda g: (g.mean_change, -g.sessions, g.programme or 0, g.frequency_hz or 0))


@dataclass
class PanelRow:
    """One patient on a clinician's panel, with the figures that decide who needs attention."""

    patient_id: str
    display_name: str
    time_zone: str
    pdc_7: float | None
    pdc_30: float | None
    pain: PainTrend
    days_since_sync: int | None
    open_alerts: int
    last_sync: datetime | None = None  # the instant behind days_since_sync: sorts order by it
    account_status: str = ACTIVE  # active, deactivated (by an admin, reversible) or closed (by the patient, final)
    closed_at: datetime | None = None  # when the account was closed (its record is kept from then)

    @property
    def closed(self) -> bool:
        """Whether the patient closed their account: the care team keeps the record to read, nothing new comes."""
        return self.account_status == CLOSED

    @property
    def closed_on(self) -> date | None:
        """The patient's local date the account was closed on (None while it is open)."""
        return local_date(self.closed_at, self.time_zone) if self.closed and self.closed_at else None

    @property
    def reasons(self) -> list[str]:
        """Why this patient may need attention, most pressing first (empty: nothing stands out). Of a closed
        record only its open alerts, which the care team can still settle: no data comes any more (its gateways
        are revoked, nothing new is raised), so its silent device, adherence and pain ask nothing of anyone."""
        out = []
        if self.open_alerts:
            out.append(f"{self.open_alerts} open alert{'s' if self.open_alerts > 1 else ''}")
        if self.closed:
            return out
        if self.pdc_7 is not None and self.pdc_7 < ADHERENT_PDC:
            out.append(f"adherence {round(self.pdc_7 * 100)}% over 7 days")
        if self.pain.direction == "rising":
            out.append(f"pain up {self.pain.change:+.1f} points")
        if self.days_since_sync is not None and self.days_since_sync >= SILENT_DEVICE_DAYS:
            out.append(f"no device sync for {self.days_since_sync} days")
        return out


def need_key(row: PanelRow) -> tuple:
    """Sort key putting the patients who need attention first: open alerts, then low 7-day PDC,
    then rising pain, then the longest silent device (never synced last); ties by name. A closed record ranks
    by its open alerts alone (as a patient without figures otherwise: see PanelRow.reasons)."""
    if row.closed:
        return (-row.open_alerts, True, 2.0, float("inf"), float("inf"), row.display_name.lower(), row.patient_id)
    low_pdc = row.pdc_7 is not None and row.pdc_7 < ADHERENT_PDC
    change = row.pain.change if row.pain.change is not None else float("-inf")
    silent = row.last_sync.timestamp() if row.last_sync is not None else float("inf")
    return (-row.open_alerts, not low_pdc, row.pdc_7 if row.pdc_7 is not None else 2.0, -change, silent,
            row.display_name.lower(), row.patient_id)


def _none_last(value, descending: bool) -> tuple:
    if value is None:
        return (1, 0)
    return (0, -value if descending else value)


SORTS = {
    "need": None,
    "name": lambda r: r.display_name.lower(),
    "pdc_7": lambda r: r.pdc_7,
    "pdc_30": lambda r: r.pdc_30,
    "pain_change": lambda r: r.pain.change,
    # fewer days since the sync is a later sync: ordered by the instant itself
    "days_since_sync": lambda r: None if r.last_sync is None else -r.last_sync.timestamp(),
    "open_alerts": lambda r: r.open_alerts,
}


def order_panel(rows: list[PanelRow], sort: str = "need", descending: bool = False) -> list[PanelRow]:
    """Order a panel by need (the default) or by one figure; patients without that figure go last."""
    if sort == "need":
        return sorted(rows, key=need_key)
    if sort == "name":
        return sorted(rows, key=lambda r: (r.display_name.lower(), r.patient_id), reverse=descending)
    figure = SORTS[sort]
    return sorted(rows, key=lambda r: (*_none_last(figure(r), descending), r.display_name.lower(), r.patient_id))


@dataclass(frozen=True)
class PanelFilter:
    """Which patients of a panel to show (every condition given must hold). The figure filters (``pdc_7_below``,
    ``pain_rising``, ``silent_days``) keep open accounts only: a closed record is brought up by its open alerts."""

    q: str | None = None
    needs_attention: bool = False
    pdc_7_below: float | None = None
    pain_rising: bool = False
    silent_days: int | None = None
    open_alerts: bool = False

    def keeps(self, row: PanelRow) -> bool:
        """Whether ``row`` passes every condition of this filter."""
        if self.q and self.q.lower() not in row.display_name.lower():
            return False
        if self.needs_attention and not row.reasons:
            return False
        if row.closed and (self.pdc_7_below is not None or self.pain_rising or self.silent_days is not None):
            return False  # a closed record asks for attention through its open alerts alone
        if self.pdc_7_below is not None and not (row.pdc_7 is not None and row.pdc_7 < self.pdc_7_below):
            return False
        if self.pain_rising and row.pain.direction != "rising":
            return False
        if self.silent_days is not None and not (
                row.days_since_sync is not None and row.days_since_sync >= self.silent_days):
            return False
        return not (self.open_alerts and not row.open_alerts)
