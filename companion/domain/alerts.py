"""Alert rules for caregivers and clinicians, as pure functions returning ``AlertCandidate`` or ``None``.

Each candidate carries a ``dedup_key`` (one alert per condition per period; the store keeps a unique
index on it) and a ``period_key`` naming that period. Texts are written for clinicians and caregivers in
the app and the clinician panel; they may name pain scores, so they never go in a push payload.

Periods:

* missed TENS session: per reminder occurrence; one raised more than ``MISSED_ALERT_MARGIN`` after it fell due (a
  worker back from an outage), or of which no reminder reached the patient, pushes nobody (``news_until``);
* adherence below 80% for 3 consecutive planned days: per run of low days (keyed by its first day), so
  a run that goes on does not alert again every day;
* unit silent 24 h: per silence (keyed by the last time the unit was heard), so a unit silent for a
  week alerts once;
* battery low, electrode off, overload: per device per kind per patient per local day (keyed
  ``<kind>:<serial>:<patient>:<day>``), so a unit given to another patient the same day alerts its new wearer;
  alerts stored before the patient was in the key (``<kind>:<serial>:<day>``) keep theirs; one raised more than
  ``DEVICE_ALERT_NEWS`` after its event (a worker back from a long outage) pushes nobody;
* pain flare: per patient per local day; one raised more than 48 hours after its rating (a phone that
  synced late) is pushed to no caregiver (``pushed_to_caregivers``).

Alerts end: the rules are judged again whenever late or changed data touch the days they were about, and
an alert whose condition no longer holds is resolved with the reason (``low_adherence_holds``,
``session_during``, ``still_silent``; a flare whose ratings changed is judged again by ``pain.flares``). The
same judging raises what late data brings: a flare in ratings synced days late.

Urgency: only an overload event is urgent (it happens during stimulation and may mean a fault or
skin problem), and only while it is fresh (``OVERLOAD_URGENT_FOR``). Urgent alerts go out at once; every other
alert, an overload found late among them, waits for the end of the recipient's quiet hours (``delivery_time``).
Of the candidates under one key, the most pressing is raised (``most_pressing_first``), and a fresh overload makes
its day's alert raised as a warning urgent (``escalates``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from companion.domain.localtime import require_utc
from companion.domain.messages import N_
from companion.domain.pain import Flare, FlareReason
from companion.domain.people import DEFAULT_CAREGIVER_ALERT_DELAY_MIN, LONGEST_CAREGIVER_ALERT_DELAY_MIN
from companion.domain.quiet_hours import QuietHours, next_allowed
from companion.domain.schedules import ReminderOccurrence

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


@dataclass(frozen=True)
class AlertKindNames:
    """Every name one alert kind goes by, in one row: the API's ``kind``, the dashboard's label, and the
    caregiver consent category that covers it (``share_kind``; electrode-off and overload share
    ``device_fault``, the category a patient grants a caregiver)."""

    kind: AlertKind
    label: str
    share_kind: str


ALERT_KINDS: Mapping[AlertKind, AlertKindNames] = {
    row.kind: row
    for row in (
        AlertKindNames(AlertKind.MISSED_TENS, N_("Missed TENS session"), "missed_session"),
        AlertKindNames(AlertKind.LOW_ADHERENCE, N_("Low adherence"), "adherence_low"),
        AlertKindNames(AlertKind.UNIT_SILENT, N_("Unit silent"), "device_silent"),
        AlertKindNames(AlertKind.BATTERY_LOW, N_("Battery low"), "battery_low"),
        AlertKindNames(AlertKind.ELECTRODE_OFF, N_("Electrodes off"), "device_fault"),
        AlertKindNames(AlertKind.OVERLOAD, N_("Overload"), "device_fault"),
        AlertKindNames(AlertKind.PAIN_FLARE, N_("Pain flare"), "pain_flare"),
    )
}

# The consent vocabulary a patient chooses from when granting a caregiver alerts, in a stable order.
SHARE_KINDS: tuple[str, ...] = tuple(dict.fromkeys(row.share_kind for row in ALERT_KINDS.values()))


def label_of(kind: str) -> str:
    """The English label (a catalog message id) of an alert kind; the kind itself if it is unknown."""
    try:
        return ALERT_KINDS[AlertKind(kind)].label
    except ValueError:
        return kind


# What a patient or a caregiver reads about an alert, in their own language: catalog message ids
# (companion.i18n), filled from the alert's structured fields. ``{device}`` is the unit's serial,
# ``{when}`` the alert's ``occurred_at`` on the reader's clock, ``{first_day}`` a date in the reader's
# format; the others are ``details``. The English ``text`` stays the care team's sentence.
ALERT_MESSAGES: Mapping[AlertKind, str] = {
    AlertKind.MISSED_TENS: N_("The TENS session planned for {when} was not marked done."),
    AlertKind.LOW_ADHERENCE: N_("TENS sessions fell short of the plan on {days} planned days in a row since "
                                "{first_day}."),
    AlertKind.UNIT_SILENT: N_("TENS unit {device} has not been heard from since {when}."),
    AlertKind.BATTERY_LOW: N_("TENS unit {device} battery is at {battery_percent}%: charge it before the next "
                              "session."),
    AlertKind.ELECTRODE_OFF: N_("TENS unit {device}: the electrodes lost contact at {when}. Check the pad "
                                "placement and gel."),
    AlertKind.OVERLOAD: N_("TENS unit {device} stopped stimulation on an overload at {when}. Check the leads, "
                           "pads and skin."),
    AlertKind.PAIN_FLARE: N_("Pain flare: a rating of {score}/10 at {when}."),
}


class Resolution(StrEnum):
    """Why an alert was resolved: later data showed its condition no longer holds."""

    UNIT_HEARD = "unit_heard_again"
    ADHERENCE_REACHED = "adherence_reached"
    SESSION_FOUND = "session_found"
    RATINGS_CHANGED = "ratings_changed"
    OUTCOME_RECORDED = "outcome_recorded"
    SESSION_NOT_COUNTED = "session_not_counted"


# The same reasons in the reader's language; ``{when}`` is the resolution's ``at`` on the reader's clock.
RESOLUTION_MESSAGES: Mapping[Resolution, str] = {
    Resolution.UNIT_HEARD: N_("Resolved: the unit was heard from again at {when}."),
    Resolution.ADHERENCE_REACHED: N_("Resolved: with data that arrived later, the TENS sessions reached the plan."),
    Resolution.SESSION_FOUND: N_("Resolved: a TENS session that started at {when} arrived later, so the session "
                                 "was done."),
    Resolution.RATINGS_CHANGED: N_("Resolved: the pain ratings that made this a flare were changed or removed."),
    Resolution.OUTCOME_RECORDED: N_("Resolved: the reminder was then recorded as done or skipped."),
    Resolution.SESSION_NOT_COUNTED: N_("Resolved: the TENS session it came from no longer counts here (the care "
                                       "team excluded it, or it was placed again)."),
}


class Severity(StrEnum):
    """How much an alert matters; ``urgent`` ignores quiet hours."""

    INFO = "info"
    WARNING = "warning"
    URGENT = "urgent"


@dataclass(frozen=True)
class AlertCandidate:
    """An alert a rule wants raised; storing it under ``dedup_key`` makes raising it idempotent.

    Beside the English ``text`` (for the care team's panel), the structured fields let an app say it in
    its own words and language: ``occurred_at`` (UTC) is when the condition arose, ``device_serial`` the
    unit concerned (device kinds only), ``details`` the figures the text names (see each rule). ``news_until``:
    the last instant at which raising it is still worth a push (a worker back after an outage raises what fell
    due meanwhile: see ``still_news``).
    """

    kind: AlertKind
    severity: Severity
    patient_id: str
    dedup_key: str
    period_key: str
    text: str
    occurred_at: datetime | None = None
    device_serial: str | None = None
    details: Mapping[str, str | int | float] = field(default_factory=dict)
    news_until: datetime | None = None  # raised later than this, it pushes nobody (``still_news``); None: any time

    @property
    def urgent(self) -> bool:
        """Urgent alerts are delivered even in quiet hours."""
        return self.severity == Severity.URGENT


_UTC = ZoneInfo("UTC")


def _local_day(instant: datetime, tz: ZoneInfo) -> date:
    return require_utc(instant).astimezone(tz).date()


def _local(instant: datetime, tz: ZoneInfo) -> str:
    """An instant as the patient's wall clock, with the zone named (never a bare UTC time)."""
    return f"{require_utc(instant).astimezone(tz):%Y-%m-%d %H:%M} ({tz.key})"


def missed_session_due_at(
    last_nudge_utc: datetime, delay_minutes: int = DEFAULT_CAREGIVER_ALERT_DELAY_MIN
) -> datetime:
    """Return when a TENS reminder still not done counts as missed: the last reminder/repeat plus the delay."""
    return require_utc(last_nudge_utc) + timedelta(minutes=delay_minutes)


# How long after a reminder's completion window ends its missed-session alert may fall due. The delay runs from
# the last push the patient had, and every push (the first, however long quiet hours held it, its repeats, a
# snooze) comes before the window ends (``schedules.nudge_times``, ``schedules.snoozed_until``): so at most the
# longest delay accepted after that end, whatever window and repeats the reminder has. The margin lets a worker
# stopped for a few hours raise, when it is back, what fell due meanwhile, and push it (``news_until``): up to the
# margin after the patient's own delay; what is read later than that is raised for the care team's panel alone.
MISSED_ALERT_MARGIN = timedelta(hours=6)
MISSED_ALERT_AFTER_WINDOW = timedelta(minutes=LONGEST_CAREGIVER_ALERT_DELAY_MIN) + MISSED_ALERT_MARGIN


def missed_tens_session(
    patient_id: str,
    occurrence: ReminderOccurrence,
    last_nudge_utc: datetime,
    done_or_skipped: bool,
    now_utc: datetime,
    delay_minutes: int = DEFAULT_CAREGIVER_ALERT_DELAY_MIN,
    *,
    reminded: bool = True,
    quiet_hours: bool = False,
) -> AlertCandidate | None:
    """Alert when a TENS reminder was neither done nor skipped by the last nudge plus the patient's delay.

    A skip is the patient's own decision and does not alert. Raised late (a worker back from an outage raises what
    fell due meanwhile), it is news for the caregivers up to ``MISSED_ALERT_MARGIN`` after it fell due
    (``news_until``): later, it is raised for the care team's panel and the alert lists, and nobody is pushed
    about a session of hours ago. One of which no reminder reached the patient (``reminded`` False: the reminders
    could not go out, and the patient had the summary that says so) is raised the same way, pushing nobody, its
    text saying that no reminder could be sent; with ``quiet_hours``, that none was sent because the patient's
    quiet hours lasted past its window (``last_nudge_utc`` is then the window's end: there was no reminder to run
    the delay from). A caregiver is never pushed that a patient ignored a reminder they never had.
    """
    due = missed_session_due_at(last_nudge_utc, delay_minutes)
    if done_or_skipped or require_utc(now_utc) < due:
        return None
    when = f"{occurrence.local_date.isoformat()} {occurrence.local_time.strftime('%H:%M')}"
    if reminded:
        text = (f"TENS session not done: the reminder for {when} (patient's local time) was not marked done "
                f"within {delay_minutes} minutes of the last reminder.")
        news_until = due + MISSED_ALERT_MARGIN
    elif quiet_hours:
        text = (f"TENS session not done: the session planned for {when} (patient's local time) was not marked done, "
                "and no reminder of it was sent: it fell inside the patient's quiet hours, which last past the end "
                "of its completion window.")
        news_until = occurrence.due_at_utc  # before it could be raised: pushed to nobody
    else:
        text = (f"TENS session not done: the session planned for {when} (patient's local time) was not marked done, "
                "and no reminder of it could be sent (reminders were not going out).")
        news_until = occurrence.due_at_utc  # before it could be raised: pushed to nobody
    return AlertCandidate(
        AlertKind.MISSED_TENS,
        Severity.WARNING,
        patient_id,
        f"{AlertKind.MISSED_TENS}:{patient_id}:{occurrence.occurrence_id}",
        occurrence.occurrence_id,
        text,
        occurred_at=occurrence.due_at_utc,
        details={"local_date": occurrence.local_date.isoformat(),
                 "local_time": occurrence.local_time.strftime("%H:%M"), "delay_minutes": delay_minutes},
        news_until=news_until,
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
    return _low_run(patient_id, run)


def low_adherence_from(
    patient_id: str, first_day: date, daily_progress: Mapping[date, float | None], today: date
) -> AlertCandidate | None:
    """The low-adherence alert for the run that begins on ``first_day``: its planned days below 80% from that
    day until one reaches it or ``today`` (None when fewer than 3)."""
    run: list[tuple[date, float]] = []
    for day, progress in sorted((d, p) for d, p in daily_progress.items()
                                if p is not None and first_day <= d < today):
        if progress >= LOW_ADHERENCE:
            break
        run.insert(0, (day, progress))
    return _low_run(patient_id, run)


def _low_run(patient_id: str, run: list[tuple[date, float]]) -> AlertCandidate | None:
    """The alert for ``run`` (its low planned days, the latest first), if it is long enough."""
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
        details={"first_day": run_start.isoformat(), "days": len(run),
                 "latest_fraction": round(run[0][1], 3)},
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


def low_adherence_continues(
    run_start: date, daily_progress: Mapping[date, float | None], today: date
) -> bool:
    """Whether the run an alert was raised for (from ``run_start``) goes on: every planned day from it (or from
    the first of ``daily_progress``, when it began before them) up to ``today`` was below the threshold. Then a
    candidate whose run starts elsewhere is that same run, seen with another start: its start slid because the
    run outgrew the days the rule reads, or a recompute lengthened the run at its start."""
    planned = [p for d, p in daily_progress.items() if p is not None and run_start <= d < today]
    return bool(planned) and all(p < LOW_ADHERENCE for p in planned)


def low_adherence_redated(
    run_start: date, raised_on: date, candidate_start: date, daily_progress: Mapping[date, float | None], today: date
) -> bool:
    """Whether the run an alert was raised for (from ``run_start``, raised on the patient's day ``raised_on``) is
    the candidate's run (low from ``candidate_start`` to ``today``) with a later first day: data that arrived
    later brought a day at its start up to the threshold, so that from ``run_start`` it no longer holds, while the
    candidate's run had begun before the alert was raised, inside the run it was raised for. Then the alert is
    about that run still, told from its new first day; not resolved, and not a new alert with a new push."""
    return run_start < candidate_start < raised_on and not low_adherence_holds(run_start, daily_progress, today)


def low_adherence_still_from(
    run_start: date, raised_on: date, daily_progress: Mapping[date, float | None], today: date
) -> date | None:
    """For an alert raised on the patient's day ``raised_on`` for the run from ``run_start`` that no longer holds
    from there (later data brought days at its start up to the threshold): the later first day from which the
    run it was raised for still holds (its planned days from that day to the day before the alert all below the
    threshold, and its first 3 planned days too), or None (the run is over: the alert is resolved)."""
    planned = sorted((d, p) for d, p in daily_progress.items() if p is not None and run_start < d < raised_on)
    for n, (day, _) in enumerate(planned):
        if all(p < LOW_ADHERENCE for _, p in planned[n:]):
            return day if low_adherence_holds(day, daily_progress, today) else None
    return None


EARLY_SESSION = timedelta(hours=1)  # a session that started up to this long before a reminder was due counts for it


def session_during(
    occurrence: ReminderOccurrence, session_starts: Sequence[datetime], early: timedelta = EARLY_SESSION
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
    patient_id: str, device_serial: str, last_seen_utc: datetime, now_utc: datetime, tz: ZoneInfo = _UTC
) -> AlertCandidate | None:
    """Alert when a TENS unit has not been heard from (no upload, no status) for 24 hours.

    The text gives the last contact in the patient's zone ``tz``; ``occurred_at`` is that contact (UTC).
    """
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
        f"TENS unit {device_serial} has not been heard from since {_local(last_seen, tz)} (over 24 hours).",
        occurred_at=last_seen, device_serial=device_serial,
    )


def battery_low(
    patient_id: str, device_serial: str, percent: int, observed_at_utc: datetime, tz: ZoneInfo
) -> AlertCandidate | None:
    """Alert when a unit reports battery below 15%, once per device per patient per local day."""
    if percent >= BATTERY_LOW_PERCENT:
        return None
    day = _local_day(observed_at_utc, tz).isoformat()
    return AlertCandidate(
        AlertKind.BATTERY_LOW,
        Severity.INFO,
        patient_id,
        device_alert_key(AlertKind.BATTERY_LOW.value, device_serial, patient_id, day),
        day,
        f"TENS unit {device_serial} battery is at {percent}%: it needs charging before the next session.",
        occurred_at=require_utc(observed_at_utc), device_serial=device_serial, details={"battery_percent": percent},
        news_until=require_utc(observed_at_utc) + DEVICE_ALERT_NEWS,
    )


# A device alert (low battery, electrodes off, overload) is pushed, to the patient and to caregivers, when it is raised
# within this long of its event: what the alerts job reads in its day's pass. One raised later (a worker back from an
# outage of more than a day, reading the events it missed) is for the care team's panel and the alert lists: an
# overload of 30 hours ago, pushed as urgent now, would wake people about a session long over.
DEVICE_ALERT_NEWS = timedelta(hours=24)


def device_alert_key(kind: str, device_serial: str, patient_id: str, day: str) -> str:
    """The key a device alert (low battery, electrode off, overload) is raised once under: per kind, unit,
    patient and local day (``day``: YYYY-MM-DD)."""
    return f"{kind}:{device_serial}:{patient_id}:{day}"


# An overload is urgent (told at once, through quiet hours) while it is fresh: within this long of the event (whose
# time is its session's start): a session of 30 to 60 minutes, and about as long again to act on it. The unit stopped
# stimulation on a fault of the leads, the pads or the skin, and the patient may still be wearing it, or about to
# start again on the same pads: that is worth waking them for. Found later (a hub that uploaded its backlog late, a
# worker back from an outage), that moment has passed and the check is for before the next session: a push in the
# night would wake the patient and their caregivers for nothing they need do before morning. It is told then as
# routine device care, after each recipient's quiet hours (and from DEVICE_ALERT_NEWS on, to the care team's panel
# alone).
OVERLOAD_URGENT_FOR = timedelta(hours=2)


def device_fault(
    patient_id: str, device_serial: str, kind: AlertKind, occurred_at_utc: datetime, tz: ZoneInfo,
    judged_at_utc: datetime,
) -> AlertCandidate:
    """Alert on an electrode-off or overload event, once per device per kind per patient per local day (a unit
    given to another patient the same day alerts each wearer).

    An overload judged (``judged_at_utc``: the alerts pass that read it) within ``OVERLOAD_URGENT_FOR`` of its event
    is urgent; one judged later, and an electrode-off, is a warning. Raises ``ValueError`` for any other kind.
    """
    texts = {
        AlertKind.ELECTRODE_OFF: "electrodes lost contact during a session (check pad placement and gel)",
        AlertKind.OVERLOAD: "stopped stimulation on an overload (check the leads, pads and skin)",
    }
    if kind not in texts:
        raise ValueError(f"{kind} is not a device fault")
    day = _local_day(occurred_at_utc, tz).isoformat()
    fresh = require_utc(judged_at_utc) - require_utc(occurred_at_utc) <= OVERLOAD_URGENT_FOR
    severity = Severity.URGENT if kind == AlertKind.OVERLOAD and fresh else Severity.WARNING
    return AlertCandidate(
        kind,
        severity,
        patient_id,
        device_alert_key(kind.value, device_serial, patient_id, day),
        day,
        f"TENS unit {device_serial} {texts[kind]} at {_local(occurred_at_utc, tz)}.",
        occurred_at=require_utc(occurred_at_utc), device_serial=device_serial,
        news_until=require_utc(occurred_at_utc) + DEVICE_ALERT_NEWS,
    )


_PRESSING = {Severity.URGENT: 0, Severity.WARNING: 1, Severity.INFO: 2}


def most_pressing_first(candidates: Iterable[AlertCandidate]) -> list[AlertCandidate]:
    """``candidates`` in the order to raise them: the urgent first, then the warnings, then the rest, each in the
    order given. One alert is raised per dedup key (a unit's overloads of one day are one alert), from the first of
    its candidates raised: when a pass reads a fresh overload beside one of the same day found late (a hub back after
    a night offline), the alert is the fresh one's, urgent, and not a warning that waits for the end of the night."""
    return sorted(candidates, key=lambda c: _PRESSING[c.severity])


def escalates(candidate: AlertCandidate, raised_urgent: bool) -> bool:
    """Whether ``candidate`` makes the open alert raised under its key before it (``raised_urgent``: whether that
    was urgent) urgent: a fresh overload (``OVERLOAD_URGENT_FOR``) of a unit and day whose alert was raised as a
    warning, from an overload of the same day found late. The fresh one stopped a session just now, and the patient
    may still be wearing the unit: they and their caregivers are told at once, as if it had been the first."""
    return candidate.urgent and not raised_urgent


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
        occurred_at=require_utc(flare.entry.recorded_at_utc),
        details={"score": flare.entry.score, "reason": flare.reason.value},
    )


# A flare raised this long after the rating that made it (ratings synced late from a phone that was offline)
# pushes no caregiver.
LATE_FLARE = timedelta(hours=48)


# A flare found in ratings synced late is raised only this long after its rating: older, it is history (the care
# team's review shows it in the pain chart), not a call to act now; an import of past ratings raises none.
LATE_FLARE_RAISED = timedelta(hours=72)


def flare_still_raised(candidate: AlertCandidate, now_utc: datetime) -> bool:
    """Whether a pain flare found late (in ratings that reached the server after the minute job's day) is raised
    at ``now_utc``: when its rating is at most ``LATE_FLARE_RAISED`` old."""
    if candidate.kind is not AlertKind.PAIN_FLARE or candidate.occurred_at is None:
        return True
    return require_utc(now_utc) - require_utc(candidate.occurred_at) <= LATE_FLARE_RAISED


def still_news(candidate: AlertCandidate, raised_at_utc: datetime) -> bool:
    """Whether raising ``candidate`` at ``raised_at_utc`` pushes anyone (its caregivers, the patient): not after
    its ``news_until`` (a worker back from an outage raising what fell due long ago). It is raised all the same, for
    the care team's panel and the alert lists: the data is true, only a push about it now would be stale."""
    return candidate.news_until is None or require_utc(raised_at_utc) <= require_utc(candidate.news_until)


def pushed_to_caregivers(candidate: AlertCandidate, raised_at_utc: datetime) -> bool:
    """Whether the caregivers who share ``candidate``'s kind are pushed about it when it is raised at
    ``raised_at_utc``: all alerts still news (``still_news``) but a pain flare raised more than ``LATE_FLARE``
    after its rating. By then the flare is two days past, and a push about it, at the end of a caregiver's quiet
    hours or in the middle of their day, would alarm them about a moment they can no longer help with; it is
    raised all the same, for the care team's panel and the caregiver's list of alerts."""
    if not still_news(candidate, raised_at_utc):
        return False
    if candidate.kind is not AlertKind.PAIN_FLARE or candidate.occurred_at is None:
        return True
    return require_utc(raised_at_utc) - require_utc(candidate.occurred_at) <= LATE_FLARE


def delivery_time(
    candidate: AlertCandidate, raised_at_utc: datetime, tz: ZoneInfo, quiet: QuietHours | None
) -> datetime:
    """Return when to deliver ``candidate`` to a recipient in ``tz``: at once if urgent, else after quiet hours."""
    raised = require_utc(raised_at_utc)
    if candidate.urgent:
        return raised
    return next_allowed(raised, tz, quiet)
