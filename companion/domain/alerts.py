"""Alert rules for caregivers and clinicians, as pure functions returning ``AlertCandidate`` or ``None``.

Each candidate carries a ``dedup_key`` (one alert per condition per period; the store keeps a unique
index on it) and a ``period_key`` naming that period. Texts are written for clinicians and caregivers in
the app and the clinician panel; they may name pain scores, so they never go in a push payload.

Periods:

* missed TENS session: per reminder occurrence;
* adherence below 80% for 3 consecutive planned days: per run of low days (keyed by its first day), so
  a run that goes on does not alert again every day;
* unit silent 24 h: per silence (keyed by the last time the unit was heard), so a unit silent for a
  week alerts once;
* battery low, electrode off, overload: per device per kind per local day;
* pain flare: per patient per local day.

Alerts end: the rules are judged again whenever late or changed data touch the days they were about, and
an alert whose condition no longer holds is resolved with the reason (``low_adherence_holds``,
``session_during``, ``still_silent``; a flare whose ratings changed is judged again by ``pain.flares``).

Urgency: only an overload event is urgent (it happens during stimulation and may mean a fault or
skin problem). Urgent alerts go out at once; every other alert waits for the end of the recipient's
quiet hours (``delivery_time``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from companion.domain.localtime import require_utc
from companion.domain.pain import Flare, FlareReason
from companion.domain.quiet_hours import QuietHours, next_allowed
from companion.domain.schedules import ReminderOccurrence

DEFAULT_MISSED_DELAY_MINUTES = 60
LOW_ADHERENCE = 0.8
LOW_ADHERENCE_DAYS = 3
SILENT_AFTER = timedelta(hours=24)
BATTERY_LOW_PERCENT = 15


class AlertKind(StrEnum):
    """What an alert is about."""

    MISSED_TENS = "missed_tens_session"
    LOW_ADHERENCE = "low_adherence"
    UNIT_SILENT = "unit_silent"
    BATTERY_LOW = "battery_low"
    ELECTRODE_OFF = "electrode_off"
    OVERLOAD = "overload"
    PAIN_FLARE = "pain_flare"


class Severity(StrEnum):
    """How much an alert matters; ``urgent`` ignores quiet hours."""

    INFO = "info"
    WARNING = "warning"
    URGENT = "urgent"


@dataclass(frozen=True)
class AlertCandidate:
    """An alert a rule wants raised; storing it under ``dedup_key`` makes raising it idempotent."""

    kind: AlertKind
    severity: Severity
    patient_id: str
    dedup_key: str
    period_key: str
    text: str

    @property
    def urgent(self) -> bool:
        """Urgent alerts are delivered even in quiet hours."""
        return self.severity == Severity.URGENT


def _local_day(instant: datetime, tz: ZoneInfo) -> date:
    return require_utc(instant).astimezone(tz).date()


def missed_session_due_at(
    last_nudge_utc: datetime, delay_minutes: int = DEFAULT_MISSED_DELAY_MINUTES
) -> datetime:
    """Return when a TENS reminder still not done counts as missed: the last reminder/repeat plus the delay."""
    return require_utc(last_nudge_utc) + timedelta(minutes=delay_minutes)


def missed_tens_session(
    patient_id: str,
    occurrence: ReminderOccurrence,
    last_nudge_utc: datetime,
    done_or_skipped: bool,
    now_utc: datetime,
    delay_minutes: int = DEFAULT_MISSED_DELAY_MINUTES,
) -> AlertCandidate | None:
    """Alert when a TENS reminder was neither done nor skipped by the last nudge plus the patient's delay.

    A skip is the patient's own decision and does not alert.
    """
    if done_or_skipped or require_utc(now_utc) < missed_session_due_at(last_nudge_utc, delay_minutes):
        return None
    when = f"{occurrence.local_date.isoformat()} {occurrence.local_time.strftime('%H:%M')}"
    return AlertCandidate(
        AlertKind.MISSED_TENS,
        Severity.WARNING,
        patient_id,
        f"{AlertKind.MISSED_TENS}:{patient_id}:{occurrence.occurrence_id}",
        occurrence.occurrence_id,
        f"TENS session not done: the reminder for {when} (patient's local time) was not marked done "
        f"within {delay_minutes} minutes of the last reminder.",
    )


def low_adherence(
    patient_id: str, daily_progress: Mapping[date, float | None], today: date
) -> AlertCandidate | None:
    """Alert when the last 3 planned days before ``today`` each had TENS progress below 80%.

    ``daily_progress`` maps local dates to the TENS progress fraction (0 for a planned day with no
    events) or ``None`` for a day without a plan; unplanned days are skipped, not counted as low.
    ``today`` is still in progress and is not judged.
    """
    planned = sorted((d, p) for d, p in daily_progress.items() if p is not None and d < today)
    run: list[tuple[date, float]] = []
    for day, progress in reversed(planned):
        if progress >= LOW_ADHERENCE:
            break
        run.append((day, progress))
    if len(run) < LOW_ADHERENCE_DAYS:
        return None
    run_start = run[-1][0]
    recent = ", ".join(f"{d.isoformat()} {p:.0%}" for d, p in reversed(run[:LOW_ADHERENCE_DAYS]))
    return AlertCandidate(
        AlertKind.LOW_ADHERENCE,
        Severity.WARNING,
        patient_id,
        f"{AlertKind.LOW_ADHERENCE}:{patient_id}:{run_start.isoformat()}",
        run_start.isoformat(),
        f"TENS adherence below 80% on {len(run)} planned days in a row since {run_start.isoformat()} "
        f"(latest: {recent}).",
    )


def low_adherence_run_ended(daily_progress: Mapping[date, float | None], today: date) -> bool:
    """Whether a planned day before ``today`` in ``daily_progress`` reached the threshold: then the low-adherence
    rule's run (the low planned days after it) lies within these days, and older days cannot change its
    answer."""
    return any(p is not None and p >= LOW_ADHERENCE and d < today for d, p in daily_progress.items())


def low_adherence_holds(
    run_start: date, daily_progress: Mapping[date, float | None], today: date
) -> bool:
    """Whether the low-adherence alert raised for the run starting on ``run_start`` still holds: its first 3
    planned days (from ``run_start``, before ``today``) all had TENS progress below 80%."""
    planned = sorted((d, p) for d, p in daily_progress.items() if p is not None and run_start <= d < today)
    first = planned[:LOW_ADHERENCE_DAYS]
    return len(first) == LOW_ADHERENCE_DAYS and all(p < LOW_ADHERENCE for _, p in first)


def session_during(
    occurrence: ReminderOccurrence, session_starts: Sequence[datetime], early: timedelta = timedelta(hours=1)
) -> datetime | None:
    """The first TENS session that started while a reminder was open (from ``early`` before it was due to the
    end of its completion window), or None: a session there means the reminder was in fact done."""
    opens = require_utc(occurrence.due_at_utc) - early
    inside = sorted(s for s in session_starts if opens <= require_utc(s) <= occurrence.window_ends_at_utc)
    return inside[0] if inside else None


def still_silent(last_seen_utc: datetime, heard_since_utc: datetime | None) -> bool:
    """Whether a unit-silent alert raised for a silence that began at ``last_seen_utc`` still holds: nothing
    has been heard from the unit since."""
    return heard_since_utc is None or require_utc(heard_since_utc) <= require_utc(last_seen_utc)


def unit_silent(
    patient_id: str, device_serial: str, last_seen_utc: datetime, now_utc: datetime
) -> AlertCandidate | None:
    """Alert when a TENS unit has not been heard from (no upload, no status) for 24 hours."""
    last_seen = require_utc(last_seen_utc)
    if require_utc(now_utc) - last_seen < SILENT_AFTER:
        return None
    period = last_seen.isoformat()
    return AlertCandidate(
        AlertKind.UNIT_SILENT,
        Severity.WARNING,
        patient_id,
        f"{AlertKind.UNIT_SILENT}:{device_serial}:{period}",
        period,
        f"TENS unit {device_serial} has not been heard from since {last_seen:%Y-%m-%d %H:%M} UTC (over 24 hours).",
    )


def battery_low(
    patient_id: str, device_serial: str, percent: int, observed_at_utc: datetime, tz: ZoneInfo
) -> AlertCandidate | None:
    """Alert when a unit reports battery below 15%, once per device per local day."""
    if percent >= BATTERY_LOW_PERCENT:
        return None
    day = _local_day(observed_at_utc, tz).isoformat()
    return AlertCandidate(
        AlertKind.BATTERY_LOW,
        Severity.INFO,
        patient_id,
        f"{AlertKind.BATTERY_LOW}:{device_serial}:{day}",
        day,
        f"TENS unit {device_serial} battery is at {percent}%: it needs charging before the next session.",
    )


def device_fault(
    patient_id: str, device_serial: str, kind: AlertKind, occurred_at_utc: datetime, tz: ZoneInfo
) -> AlertCandidate:
    """Alert on an electrode-off or overload event, once per device per kind per local day.

    Overload is urgent; electrode-off is a warning. Raises ``ValueError`` for any other kind.
    """
    texts = {
        AlertKind.ELECTRODE_OFF: "electrodes lost contact during a session (check pad placement and gel)",
        AlertKind.OVERLOAD: "stopped stimulation on an overload (check the leads, pads and skin)",
    }
    if kind not in texts:
        raise ValueError(f"{kind} is not a device fault")
    day = _local_day(occurred_at_utc, tz).isoformat()
    severity = Severity.URGENT if kind == AlertKind.OVERLOAD else Severity.WARNING
    return AlertCandidate(
        kind,
        severity,
        patient_id,
        f"{kind}:{device_serial}:{day}",
        day,
        f"TENS unit {device_serial} {texts[kind]} at {require_utc(occurred_at_utc):%Y-%m-%d %H:%M} UTC.",
    )


def pain_flare(
    patient_id: str, flare: Flare, tz: ZoneInfo, recent_scores: Sequence[int] = ()
) -> AlertCandidate:
    """Alert on a pain flare (see ``pain.flare_at``), once per patient per local day."""
    day = _local_day(flare.entry.recorded_at_utc, tz).isoformat()
    if flare.reason == FlareReason.TWO_HIGH:
        why = f"pain {flare.entry.score}/10, the second rating of 7 or more within 24 hours"
    else:
        why = f"pain {flare.entry.score}/10, at least 3 points above the 14-day median of {flare.baseline_median:g}"
    history = f" Recent ratings: {', '.join(map(str, recent_scores))}." if recent_scores else ""
    return AlertCandidate(
        AlertKind.PAIN_FLARE,
        Severity.WARNING,
        patient_id,
        f"{AlertKind.PAIN_FLARE}:{patient_id}:{day}",
        day,
        f"Pain flare on {day}: {why}.{history}",
    )


def delivery_time(
    candidate: AlertCandidate, raised_at_utc: datetime, tz: ZoneInfo, quiet: QuietHours | None
) -> datetime:
    """Return when to deliver ``candidate`` to a recipient in ``tz``: at once if urgent, else after quiet hours."""
    raised = require_utc(raised_at_utc)
    if candidate.urgent:
        return raised
    return next_allowed(raised, tz, quiet)
