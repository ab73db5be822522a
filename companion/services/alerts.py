"""Alert use cases: find the conditions the alert rules (companion.domain.alerts) name, raise each
alert once, and notify the people it concerns.

Who hears of an alert:
- caregivers linked to the patient whose consent (`care_links.permissions.alerts`) includes the
  alert's share kind; the push says only "a check-in needs your attention";
- the patient, for the unit's own troubles (battery, electrodes, overload), so they can act on them.
Clinicians see every alert in the API and the panel. A non-urgent alert waits for the end of each
recipient's quiet hours, on their own clock. What is raised late (a missed session past its margin, or never
reminded of; a device event of more than a day ago, read from the last complete pass by a worker back from an
outage, or uploaded late by a gateway that was offline) is raised for the panel and the alert lists and pushes
nobody (``companion.domain.alerts.still_news``). An overload found late is routine; a fresh one of the same unit and
day is not held back by it: read in one pass, the alert is the fresh one's (``most_pressing_first``); read later, it
makes the alert urgent and its people are told again at once (``_escalate``, once, under a source key of its own).

Evaluation is idempotent: an alert is an insert under its unique dedup key, its notifications are
outbox inserts under (``alert:<id>``, recipient), and an alert notes when it was fanned out, so the
job can run every minute, twice, or after a crash without alerting anyone twice.

Alerts end when their condition no longer holds. Late data (a hub offline for days, a diary synced late, a
clock placed again) marks the days it touched, and the adherence job judges the rules again for those days
(``reconsider``): a low-adherence run whose days now reach the plan, a missed session for which a session
during the reminder's window arrived later, a flare whose ratings were changed or removed. A unit that was
silent and is heard from again ends its silence alert (``evaluate``). A device alert (battery, electrodes,
overload) ends when the session whose events raised it stops counting or is placed on another day or patient and
no event is left for its unit, kind and day (``events_gone``). Such an alert is **resolved** with the
reason, which the patient, caregivers and clinicians who see it also see. Nothing is pushed about it: a push
that says "never mind" would wake people for nothing. Its notifications that have not gone out yet (held
for quiet hours, say) are withdrawn instead, so nobody is alerted about what no longer holds; the sender checks
the alert again before each goes out, so one left queued by a crash between the resolution and the withdrawal
is withdrawn then. An alert whose condition holds again (later data again) is reopened, without a second push.
The same judging raises what late data brings: a flare in ratings synced a day or more late, which the minute
job (the last day's ratings) never reads; one raised more than 48 hours after its rating pushes no caregiver
(``pushed_to_caregivers``), and one more than 72 hours past its rating is not raised (``flare_still_raised``).

A pass of the alerts job judges what it read, then raises: a change in between (the patient ticks the session off,
a session or a rating arrives or is deleted, the care team excludes the session an event came from, the unit is
heard from) looked for an alert to end before there was one. So before anyone is notified of an alert it stored,
the pass reads again what the alert was judged on (``_overtaken``; a few reads per new alert) and resolves one whose
condition no longer holds, with the reason that change gives, pushing nothing: each change writes before it looks
for alerts, the pass reads after writing the alert, so one of the two sees the other.

An alert the care team acknowledges withdraws its caregivers' notifications not sent yet, and the sender refuses
any left (a request stopped between the two writes, a batch a sender had claimed): the care team has it in hand.
The patient's own stays: the unit's troubles are theirs to put right whoever has seen the alert. An acknowledged
overload alert that a fresh overload makes urgent is open again: the care team acknowledged what it said before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.clock import Clock, now
from companion.domain.access import (
    ALERT_ACKNOWLEDGED,
    ALERT_ESCALATED,
    ALERT_RESOLVED,
    Grant,
    visible_alert_kinds,
)
from companion.domain.alerts import (
    ALERT_KINDS,
    ALERT_MESSAGES,
    EARLY_SESSION,
    MISSED_ALERT_AFTER_WINDOW,
    RESOLUTION_MESSAGES,
    AlertCandidate,
    AlertKind,
    Resolution,
    Severity,
    battery_low,
    delivery_time,
    device_alert_key,
    device_fault,
    escalates,
    flare_still_raised,
    low_adherence_continues,
    low_adherence_from,
    low_adherence_holds,
    low_adherence_redated,
    low_adherence_still_from,
    missed_session_due_at,
    missed_tens_session,
    most_pressing_first,
    pain_flare,
    pushed_to_caregivers,
    session_during,
    still_news,
    still_silent,
    unit_silent,
)
from companion.domain.alerts import low_adherence as low_adherence_rule
from companion.domain.errors import NotFound
from companion.domain.localtime import TimeZoneHistory
from companion.domain.notifications import Audience, alert_key, alert_push_kind
from companion.domain.pain import PainEntry, flares
from companion.domain.people import CLOSED, Account
from companion.domain.schedules import nudge_times
from companion.i18n import Reader
from companion.services.derived_ids import derived_id
from companion.services.item_failures import ItemFailures
from companion.services.reminder_dispatch import (
    as_domain_occurrence,
    held_past_window,
    kept_from_reminding,
    planned_pushes,
    quiet_through_window,
    repeats_of,
)
from companion.settings import Settings
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

# Who hears of an alert besides its caregivers: the patient, of the unit's own troubles (the push kind
# is the alert kind's own name, or an overload found late's: companion.domain.notifications.alert_push_kind).
PATIENT_HEARS = frozenset({AlertKind.BATTERY_LOW, AlertKind.ELECTRODE_OFF, AlertKind.OVERLOAD})
# The alerts raised from a session's device events.
DEVICE_KINDS = frozenset({AlertKind.BATTERY_LOW.value, AlertKind.ELECTRODE_OFF.value, AlertKind.OVERLOAD.value})
LOOKBACK = timedelta(hours=24)  # the device events and pain ratings the alerts job reads: those of the last day
# After an outage the device events are read from the last complete pass (ALERTS_JOB's start, in recompute_runs), at
# most this far back: what happened while the worker was down is raised (for the panel: DEVICE_ALERT_NEWS). An event
# whose alert a pass could not judge or raise is read again by each pass after it, as long (owed_device_alerts).
DEVICE_CATCH_UP = timedelta(days=7)
ALERTS_JOB = "alerts-evaluate"
SILENT_LOOKBACK = timedelta(days=8)  # units silent for longer were alerted about already
FLARE_HISTORY = timedelta(days=14)
LOW_ADHERENCE_LOOKBACK = timedelta(days=30)  # the snapshots the low-adherence rule reads, before today
# The alerts late data may end (judged again for the days it touched).
RECORDED = ("done", "skipped")  # an occurrence's outcomes the patient records
RECONSIDERED = (AlertKind.LOW_ADHERENCE.value, AlertKind.MISSED_TENS.value, AlertKind.PAIN_FLARE.value)
REVIEW_ALERTS_SHOWN = 200  # alerts the care team's review lists (the newest)
# A pass reads the device events that happened in its window and those stored in it (``created_at``: the time the
# upload's request was received): a gateway offline for days uploads events older than any pass's window by their
# time, which no pass would read; read by when they arrived, they are raised (up to DEVICE_CATCH_UP old; older than
# DEVICE_ALERT_NEWS, for the panel alone). Those stored this long before the window are read too: an upload's events
# are written before it is answered, and a pass that began while one was under way may not have seen them.
UPLOAD_LAG = timedelta(minutes=10)
# Why a device alert was resolved, when an event of its unit, kind and day stored later opens it again: its
# session's events were taken away (excluded, held again, placed on another day or wearer), so the condition was
# gone for that day because of those events alone. The only resolution a device alert is given: the care team's
# "we have it in hand" is an acknowledgement, not a resolution (an overload's is opened again by its escalation).
REOPENED_BY_EVENTS = frozenset({Resolution.SESSION_NOT_COUNTED.value})


@dataclass
class AlertsReport:
    """What one evaluation found and did."""

    raised: dict[str, int] = field(default_factory=dict)
    notifications: int = 0
    failed: int = 0


@dataclass
class DeviceEventsJudged:
    """What a pass made of the device events it read (its window's, and those owed by passes before it): the alerts
    they raise, the events behind each alert (by its dedup key), the events it could not judge, each event's time,
    and which were owed before."""

    candidates: list[AlertCandidate] = field(default_factory=list)
    events_of: dict[str, list[str]] = field(default_factory=dict)
    unjudged: set[str] = field(default_factory=set)
    at_of: dict[str, datetime | None] = field(default_factory=dict)
    owed: set[str] = field(default_factory=set)


def progress_of(snapshots: Iterable[dict]) -> dict[date, float | None]:
    """Each day's TENS progress (None: a day without a plan), as the low-adherence rule reads it."""
    return {date.fromisoformat(s["date"]): None if s["state"] == "no_tasks" else s["tens_fraction"] or 0.0
            for s in snapshots}


def low_adherence_in(patient_id: str, snapshots: Iterable[dict], today: date) -> AlertCandidate | None:
    """The low-adherence rule over snapshots already read (those of ``today`` - 30 days .. ``today``)."""
    return low_adherence_rule(patient_id, progress_of(snapshots), today)


def period_of(alert: dict) -> str:
    """What an alert is about, as its key names it: the first day of a low-adherence run, the occurrence of a
    missed session, the day of a flare (kept as ``period_key``; the end of the key for alerts from before)."""
    return alert.get("period_key") or alert["dedup_key"].rsplit(":", 1)[1]


def run_start_of(alert: dict) -> date:
    """The first day of the run a low-adherence alert was raised for."""
    return date.fromisoformat(period_of(alert))


def _spans(days: set[date], gap: timedelta) -> list[list[date]]:
    """``days`` in order, in runs whose neighbours lie at most ``gap`` apart."""
    spans: list[list[date]] = []
    for day in sorted(days):
        if spans and day - spans[-1][-1] <= gap:
            spans[-1].append(day)
        else:
            spans.append([day])
    return spans


def flare_days(days: set[date], today: date) -> set[date]:
    """The local days whose flares a change to the ratings of ``days`` may make or end: each of them and every day
    up to FLARE_HISTORY later (a rating is part of the 14-day median of the ratings after it, and the 24 hours of
    two high ratings lie within), with a day's margin for a clock change or a move between zones; none after
    ``today``, whose flares the ratings that come later are judged on as they arrive."""
    reach = range(1, FLARE_HISTORY.days + 2)
    return set(days) | {day + timedelta(days=n) for day in days for n in reach if day + timedelta(days=n) <= today}


def _raised_on(alert: dict, history: TimeZoneHistory) -> date:
    """The patient's day on which an alert was raised."""
    return alert["raised_at"].astimezone(history.zone_at(alert["raised_at"])).date()



@dataclass(frozen=True)
class _Patients:
    """The patients an evaluation is about: each one's zone at any instant, and those who closed their account."""

    zone_at: dict[str, Callable[[datetime], ZoneInfo]]
    closed: frozenset[str]

    def left(self, patient_id: str) -> bool:
        """Whether the patient closed their account (their record is kept; nothing new is raised about it)."""
        return patient_id in self.closed

    def zone(self, patient_id: str, at: datetime) -> ZoneInfo:
        zone_at = self.zone_at.get(patient_id)
        return zone_at(at) if zone_at is not None else ZoneInfo("UTC")


class AlertService:
    def __init__(self, settings: Settings, stores: Stores, clock: Clock = now):
        self.settings = settings
        self.stores = stores
        self.clock = clock

    # Reads
    def for_patient(self, grant: Grant, *, since: datetime | None, unacknowledged: bool, limit: int,
                    reader: Reader | None = None, after: tuple[datetime, str] | None = None) -> list[dict]:
        """The patient's alerts, newest first (a caregiver sees only the kinds shared with them), after the
        (raised_at, id) a previous page ended on; with a ``reader``, their ``text`` and ``resolved_reason`` are
        said in that reader's language (``in_words``)."""
        kinds = visible_alert_kinds(grant)
        items = self.stores.alerts.for_patient(
            grant.patient_id, share_kinds=sorted(kinds) if kinds is not None else None, shared_only=kinds is not None,
            since=since, unacknowledged=unacknowledged, limit=limit, after=after)
        return [in_words(a, reader) for a in items] if reader is not None else items

    def reader_for(self, user_id: str, *languages: str | None) -> Reader:
        """How ``user_id`` reads: their chosen language, else ``languages`` (the request's), in their zone."""
        account = self.stores.users.by_id(user_id)
        if account is None:
            return Reader(*languages)
        return Reader(account.locale, *languages, zone=ZoneInfo(account.time_zone))

    # Raising
    def raise_once(self, candidate: AlertCandidate, report: AlertsReport | None = None, *,
                   read_again: bool = False) -> dict:
        """Store ``candidate`` once and notify whoever it concerns (idempotent). A resolved alert whose
        condition holds again is reopened: its people were notified already, but for those whose notification
        its resolution withdrew before it went out (``_notify_again``, once: ``reopen_notified_at``), unless the
        candidate escalates it (the escalation's pushes replace them: one push each, not the revived and the
        escalation's). ``read_again``: the candidate was judged
        on data read before its alert was stored (a pass of the alerts job); what it was judged on is read again
        before anyone is notified, and an alert whose condition no longer holds is resolved without a push
        (``_overtaken``). An open alert raised as a warning (an overload found late) that an urgent candidate
        finds is made urgent, and its people are told again at once (``_escalate``). An alert whose people are told
        now (its first pushes, or those revived by its reopening) is told as urgent as ``candidate`` is, judged now,
        and says so itself: an overload first stored while fresh and told only later (a pass stopped in between, a
        reopening hours after) is told as routine, and is a warning on the panel too."""
        alerts = self.stores.alerts
        alert, created = alerts.raise_once(
            patient_id=candidate.patient_id, kind=candidate.kind.value, severity=candidate.severity.value,
            text=candidate.text, dedup_key=candidate.dedup_key, shared_with_caregivers=True,
            urgent=candidate.urgent, share_kind=ALERT_KINDS[candidate.kind].share_kind,
            period_key=candidate.period_key, occurred_at=candidate.occurred_at,
            device_serial=candidate.device_serial, details=dict(candidate.details))
        if created and report is not None:
            report.raised[candidate.kind.value] = report.raised.get(candidate.kind.value, 0) + 1
        new, before = created, alert  # (``before``: what an escalation says the alert was)
        if not created and alert.get("resolved_at") is not None:
            # Marked before reopening as well as after (below): as for a resolution, a pass stopped between the two
            # would leave the row not counting the alert. Told from what holds now (a fresh overload's time).
            self.stores.panel_row_marks.mark([candidate.patient_id], "alert", self.clock())
            told_from = {"text": candidate.text, "occurred_at": candidate.occurred_at,
                         "details": dict(candidate.details)}
            if not alerts.reopen(alert["_id"], self.clock(), told_from):  # (reopened by another meanwhile)
                return alerts.get(alert["patient_id"], alert["_id"]) or alert
            # Written before it looks (a care team's exclusion deletes the events, then looks at the alert): judged
            # on an event its resolution took away (read before it), it is resolved again, nobody told.
            if read_again and candidate.kind.value in DEVICE_KINDS \
                    and not self._device_events_left(alert, self._day_of(alert)):
                self._resolve_not_counted({**alert, "resolved_at": None})
                return alerts.get(alert["patient_id"], alert["_id"]) or alert
            alert = {**alert, **told_from, "resolved_at": None, "resolved_reason": None, "resolution": None,
                     "reopened_at": self.clock(), "reopen_notified_at": None}
            created = True
        # A fresh overload makes an alert raised as a warning, and told of, urgent: open all along, or reopened by it
        # (its earlier pushes sent: nothing withdrawn to revive, the escalation's tell of the fresh one).
        escalating = (not new and alert.get("notified_at") is not None and alert.get("resolved_at") is None
                      and escalates(candidate, bool(alert.get("urgent"))))
        if (created or alert.get("notified_at") is None) and not escalating:
            alert = self._judged_now(alert, candidate)
        if _revival_owed(alert):  # (on a later pass too: one stopped after the reopening)
            if not escalating:  # (the escalation's pushes, at once, replace them)
                self._notify_again(alert, candidate)
            alerts.mark_reopen_notified(alert["_id"])
        if not new and alert.get("notified_at") is not None and alert.get("resolved_at") is None:
            if escalating:
                alert = self._escalate({**alert, **{k: before.get(k) for k in ("text", "occurred_at", "severity")}},
                                       candidate)
            if _escalation_owed(alert):  # (again on a later pass: one stopped before its pushes were queued)
                self._notify_escalation(alert, candidate, report)
        if created or alert.get("notified_at") is None:  # the patient's panel row counts open alerts (marked again
            # while the alert is not fanned out: a pass stopped between the alert and its mark left it unmarked)
            self.stores.panel_row_marks.mark([candidate.patient_id], "alert", self.clock())
        if alert.get("notified_at") is None:
            if read_again and self._overtaken(alert, candidate):  # resolved; nobody told (notified_at stays None)
                return self.stores.alerts.get(candidate.patient_id, alert["_id"]) or alert
            sent = self._notify(alert, candidate)
            alerts.mark_notified(alert["_id"])
            if report is not None:
                report.notifications += sent
        return alert

    def raise_low_adherence(self, candidate: AlertCandidate, snapshots: list[dict], today: date, patient: Account,
                            report: AlertsReport | None = None, open_alerts: list[dict] | None = None) -> dict:
        """Raise a low-adherence alert, unless one not yet resolved was raised for the same run: then that one
        stands (notified, if a crash left it unnotified), and no new alert or push comes for a run that merely
        outgrew the 30 days the rule reads (its start sliding a day a day) or that a recompute lengthened at its
        start (it still holds and goes on: low_adherence_holds, low_adherence_continues), nor for one that a
        recompute shortened at its start (low_adherence_redated: the alert is told from the run's new first day).
        ``open_alerts``: the patient's unresolved alerts, when the caller read them already. Returns the alert
        that stands for the candidate."""
        if open_alerts is None:
            open_alerts = self.stores.alerts.unresolved([candidate.patient_id], (AlertKind.LOW_ADHERENCE.value,))
        progress = progress_of(snapshots)
        history = patient.zone_history()
        for alert in sorted(open_alerts, key=lambda a: a.get("raised_at") or self.clock()):  # the oldest first
            if alert["kind"] != AlertKind.LOW_ADHERENCE.value or alert["dedup_key"] == candidate.dedup_key:
                continue
            start = run_start_of(alert)
            if low_adherence_holds(start, progress, today) and low_adherence_continues(start, progress, today):
                candidate = replace(candidate, dedup_key=alert["dedup_key"], period_key=start.isoformat())
                break
            if low_adherence_redated(start, _raised_on(alert, history), date.fromisoformat(candidate.period_key),
                                     progress, today):
                self.stores.alerts.redate(alert["_id"], candidate.period_key, candidate.text, dict(candidate.details))
                candidate = replace(candidate, dedup_key=alert["dedup_key"])
                break
        return self.raise_once(candidate, report)

    def _notify(self, alert: dict, candidate: AlertCandidate, *, escalated: bool = False) -> int:
        """Queue the pushes that tell of ``alert`` (``candidate``: as judged now) to the caregivers who share its kind
        and, of the unit's troubles, to the patient, as long as it is news (``still_news``, ``pushed_to_caregivers``),
        each at once if urgent, else after their quiet hours; judged at its raising, or (``escalated``) now, as its
        escalation is told (by the pass that escalated it, or a later one finishing it), under the escalation's
        source key. Returns how many were queued (none twice: the outbox's
        unique source key and recipient)."""
        recipients: list[tuple[Account, str, str | None]] = []
        share_kind = ALERT_KINDS[candidate.kind].share_kind
        at = self.clock() if escalated else alert["raised_at"]
        if pushed_to_caregivers(candidate, at):
            links = [link for link in self.stores.care_links.for_patient(candidate.patient_id)
                     if link.active and share_kind in link.permissions.alerts]
            for caregiver in self.stores.users.by_ids(link.caregiver_id for link in links):
                recipients.append((caregiver, alert_push_kind(candidate.kind, Audience.CAREGIVER, candidate.urgent),
                                   share_kind))
        if candidate.kind in PATIENT_HEARS and still_news(candidate, at):
            patient = self.stores.users.by_id(candidate.patient_id)
            if patient is not None:
                recipients.append((patient, alert_push_kind(candidate.kind, Audience.PATIENT, candidate.urgent), None))
        created = 0
        for person, template, needs in recipients:
            zone = person.zone_history().zone_at(at)
            send_at = delivery_time(candidate, at, zone, person.quiet_hours)
            # A caregiver's notification records the consent it needs, checked again when it is sent.
            _, new = self.stores.outbox.schedule(source_key=alert_key(alert["_id"], escalated=escalated),
                                                 recipient_user_id=person.id,
                                                 patient_id=candidate.patient_id, kind=template, send_at=send_at,
                                                 share_kind=needs)
            created += int(new)
        return created

    def _judged_now(self, alert: dict, candidate: AlertCandidate) -> dict:
        """``alert`` with the severity and urgency of ``candidate`` (as judged now), written if they differ: its pushes
        about to be queued or revived are of that urgency (``alert_push_kind``), and the panel says what they say."""
        if alert.get("severity") == candidate.severity.value and bool(alert.get("urgent")) == candidate.urgent:
            return alert
        self.stores.alerts.judge_urgency(alert["_id"], candidate.severity.value, candidate.urgent)
        return {**alert, "severity": candidate.severity.value, "urgent": candidate.urgent}

    def _escalate(self, alert: dict, candidate: AlertCandidate) -> dict:
        """Make an open alert raised as a warning urgent (``escalates``: a fresh overload on a day whose overload was
        found late), told from the fresh event. Acknowledged, it is open again for the care team: they acknowledged
        an overload found late, not the one that just stopped a session, which they see now as urgent, and of which
        the caregivers are told (the sender holds back a caregiver's push about an acknowledged alert). Returns the
        alert as it stands; one resolved, made urgent or acknowledged meanwhile is left as it is now (a clinician
        acknowledging it just then: the next pass judges it again)."""
        # The panel row counts open alerts: marked before and after, as for a resolution.
        self.stores.panel_row_marks.mark([alert["patient_id"]], "alert", self.clock())
        escalated = self.stores.alerts.escalate(alert, severity=candidate.severity.value, text=candidate.text,
                                                occurred_at=candidate.occurred_at, details=dict(candidate.details),
                                                at=self.clock())
        if escalated is None:
            return self.stores.alerts.get(alert["patient_id"], alert["_id"]) or alert
        self.stores.panel_row_marks.mark([alert["patient_id"]], "alert", self.clock())
        logger.info("alert escalated", extra={"alert_id": alert["_id"]})  # its kind is health data: not logged
        return escalated

    def _notify_escalation(self, alert: dict, candidate: AlertCandidate, report: AlertsReport | None) -> None:
        """Tell the people of an alert made urgent (``_escalate``) again, at once: its pushes not sent yet (routine,
        held for their quiet hours) are withdrawn (``ALERT_ESCALATED``), and each is pushed under the escalation's own
        source key (``alert_key(..., escalated=True)``: once, whatever the passes), by the rules of a raising
        (consent, still news) judged at the escalation. Those sent already stay sent: they told of the overload
        found late, these of the fresh one. Noted done, once queued (``escalation_notified_at``)."""
        self.stores.outbox.withdraw(reason=ALERT_ESCALATED, source_key=alert_key(alert["_id"]))
        # Urgent, as the alert is: a later pass finishing an escalation stopped part-way reads the fresh overload no
        # longer fresh, but its people are told of what the panel says (as long as it is news: ``still_news``).
        sent = self._notify(alert, replace(candidate, severity=Severity.URGENT), escalated=True)
        self.stores.alerts.mark_escalation_notified(alert["_id"])
        if report is not None:
            report.notifications += sent

    def _notify_again(self, alert: dict, candidate: AlertCandidate) -> None:
        """A reopened alert's notifications that its resolution withdrew before they went out (held for quiet
        hours, say) go out after all, each when its recipient may be told now and as urgent as ``candidate`` is now
        (``alert_push_kind``: an overload reopened hours after it is told as routine, not at once through the night
        as when it was fresh); those sent stay sent (no second push). A retry of a reopening finds none withdrawn and does nothing. Of an alert the care team has
        acknowledged, only the patient's: its caregivers' stay withdrawn, as the acknowledgement would have left
        them."""
        withdrawn = [doc for key in _source_keys(alert)
                     for doc in self.stores.outbox.withdrawn_for(key, ALERT_RESOLVED)]
        if alert.get("acknowledged_at") is not None:
            withdrawn = [d for d in withdrawn if d["recipient_user_id"] == alert["patient_id"]]
        if not withdrawn:
            return
        people = {a.id: a for a in self.stores.users.by_ids({d["recipient_user_id"] for d in withdrawn})}
        at = self.clock()
        for doc in withdrawn:
            person = people.get(doc["recipient_user_id"])
            if person is not None:  # (within the lifetime it had: revive leaves it withdrawn past that)
                zone = person.zone_history().zone_at(at)
                audience = Audience.PATIENT if person.id == alert["patient_id"] else Audience.CAREGIVER
                self.stores.outbox.revive(doc, delivery_time(candidate, at, zone, person.quiet_hours),
                                          alert_push_kind(candidate.kind, audience, candidate.urgent))

    def _overtaken(self, alert: dict, candidate: AlertCandidate) -> bool:
        """Whether the condition of a stored alert not notified yet no longer holds, read again now: the pass that
        judged it read its data before the alert was stored, and a change in between looked for the alert before it
        was there. Each change writes before it looks for the alert to end (an outcome recorded:
        ``outcome_recorded``; a session that stops counting: ``events_gone``; a session or ratings arriving late:
        the days marked, then ``reconsider`` on the adherence job's next run), and this reads after the alert is
        written: one of the two sees the other. One that no longer holds is resolved with the reason its change
        would have given (nothing pushed, as for any resolution). A low-adherence alert is judged on the snapshots
        the adherence job itself wrote (companion.services.adherence_batch) and is not read again."""
        if candidate.kind == AlertKind.MISSED_TENS:
            return self._missed_answered(alert)
        if candidate.kind.value in DEVICE_KINDS:
            return self._device_events_gone(alert)
        if candidate.kind == AlertKind.UNIT_SILENT:
            return self._unit_heard(alert)
        if candidate.kind == AlertKind.PAIN_FLARE:
            return self._flare_gone(alert)
        return False

    def _missed_answered(self, alert: dict) -> bool:
        """A missed-session alert whose occurrence the patient recorded done or skipped, or for which a session
        during the reminder's window arrived, since the pass read them: resolved."""
        patient = self.stores.users.by_id(alert["patient_id"])
        occurrence = self.stores.occurrences.get(alert["patient_id"], period_of(alert))
        if patient is None or occurrence is None:
            return False
        if occurrence.get("status") in RECORDED:
            self._resolve_recorded(alert, occurrence)
            return True
        return self._session_found(patient, alert, occurrence)

    def _day_of(self, alert: dict) -> Callable[[datetime], date]:
        """The local day of an instant for ``alert``'s patient (their zone history; UTC for one no longer there)."""
        patient = self.stores.users.by_id(alert["patient_id"])
        history = patient.zone_history() if patient is not None else None
        return lambda at: at.astimezone(history.zone_at(at) if history is not None else UTC).date()

    def _device_events_gone(self, alert: dict) -> bool:
        """A device alert no event supports any more (the session it came from stopped counting, or was placed on
        another day or patient, since the pass read the events): resolved."""
        if self.stores.users.by_id(alert["patient_id"]) is None:
            return False
        if self._device_events_left(alert, self._day_of(alert)):
            return False
        self._resolve_not_counted(alert)
        return True

    def _unit_heard(self, alert: dict) -> bool:
        """A silence alert about a unit heard from (a status, or a record received) since the pass read it:
        resolved, as ``_end_silences`` would on the next pass."""
        serial = alert.get("device_serial") or alert["dedup_key"].split(":")[1]
        last_seen = datetime.fromisoformat(alert.get("period_key") or alert["dedup_key"].split(":", 2)[2])
        units = [u for u in self.stores.devices.for_patients([alert["patient_id"]]) if u.serial == serial]
        received = self.stores.session_records.last_received_from_units([serial], last_seen).get(serial)
        heard = max(filter(None, [*(u.last_heard for u in units), received]), default=None)
        if heard is None or still_silent(last_seen, heard):
            return False
        self.resolve(alert, f"the unit was heard from again at {heard:%Y-%m-%d %H:%M} UTC", Resolution.UNIT_HEARD,
                     heard)
        return True

    def _flare_gone(self, alert: dict) -> bool:
        """A flare alert whose day has no flare in the ratings as they are now (changed or removed since the pass
        read them): resolved."""
        patient = self.stores.users.by_id(alert["patient_id"])
        if patient is None:
            return False
        day = date.fromisoformat(period_of(alert))
        if day in self._flares_by_day(patient, self.ratings_for({patient.id: {day}}).get(patient.id, [])):
            return False
        self._resolve_ratings_changed(alert)
        return True

    # Finding the conditions
    def _patients(self, patient_ids, failures: ItemFailures) -> _Patients:
        """Each patient's zone at any instant (their zone history): an alert about a moment is dated on the day
        the patient lived it, as the adherence days and the reconsideration of a flare are. And who among them
        closed their account: their record is kept, and nothing new is raised about it."""
        zone_at, closed = {}, set()
        for person in self.stores.users.by_ids(patient_ids):
            if person.status == CLOSED:
                closed.add(person.id)
                continue
            history = failures.attempt(person.id, lambda p=person: p.zone_history())
            if history is not None:
                zone_at[person.id] = history.zone_at
        return _Patients(zone_at, frozenset(closed))

    def _session_starts(self, since: datetime, until: datetime, patient_ids: set[str]) -> dict[str, list[datetime]]:
        """The patients' counted sessions that started in [since, until), by patient (a bounded read per chunk of
        patients)."""
        starts: dict[str, list[datetime]] = {}
        for session in self.stores.session_records.in_window(since, until, patient_ids):
            if session.get("patient_id"):
                starts.setdefault(session["patient_id"], []).append(session["started_at"])
        return starts

    def missed_sessions(self, now: datetime, failures: ItemFailures) -> list[AlertCandidate]:
        """TENS occurrences neither done nor skipped by their last reminder plus the delay, and with no session
        of the unit while they were open (the unit's record says it was done); not those missed because a
        time-zone change jumped over them (the patient was travelling). Read: those whose window ended within
        the longest delay accepted (and a margin) or is still open, so that every delay, window and repeats the
        API accepts is alerted; the alert's dedup key raises each once. What a worker back from an outage reads
        longer than ``MISSED_ALERT_MARGIN`` after it fell due, and what no reminder reached the patient of (an outage,
        or their quiet hours lasting past its window: ``quiet_through_window``), is raised for the care team's panel
        and pushes nobody (``missed_tens_session``); one whose reminder is still queued and may yet go is left to a
        later pass (``_kept_from_reminding``)."""
        occurrences = [o for o in self.stores.occurrences.due_and_ended_since("tens", now - MISSED_ALERT_AFTER_WINDOW,
                                                                               now, ("pending", "missed"))
                       if not o.get("missed_reason")]
        reminders = self.stores.reminders.by_ids(o["reminder_id"] for o in occurrences)
        default_delay = int(self.settings.caregiver_alert_delay.total_seconds() // 60)
        delays = {p.id: p.alert_delay_min(default_delay)
                  for p in self.stores.users.by_ids({o["patient_id"] for o in occurrences})}

        def last_push(occurrence: dict) -> datetime:
            # The last push the patient was to get: the last nudge, or later if their quiet hours held the first
            # push back or they snoozed it (the delay runs from the reminder they actually had). None at all (quiet
            # hours held it past the window, no snooze): from the window's end, the last moment it could be done.
            reminder = reminders.get(occurrence["reminder_id"])
            pushes = [p.send_at for p in planned_pushes(occurrence, reminder)]
            if not pushes and held_past_window(occurrence):
                return occurrence["window_ends_at"]
            return max([nudge_times(as_domain_occurrence(occurrence), repeats_of(reminder))[-1], *pushes])

        due = []  # (occurrence, its last push, the patient's delay) of those whose alert has come
        for occurrence in occurrences:
            last = failures.attempt(occurrence.get("_id"), lambda o=occurrence: last_push(o))
            delay = delays.get(occurrence["patient_id"], default_delay)
            if last is not None and missed_session_due_at(last, delay) <= now:
                due.append((occurrence, last, delay))
        # Only their patients' sessions are read, from the earliest of them: not every patient's of the days read.
        starts = self._session_starts(min(o["due_at"] for o, _, _ in due) - EARLY_SESSION, now + timedelta(minutes=5),
                                      {o["patient_id"] for o, _, _ in due}) if due else {}

        def judge(occurrence: dict, last: datetime, delay: int, reminded: bool = True,
                  quiet: bool = False) -> AlertCandidate | None:
            domain_occurrence = as_domain_occurrence(occurrence)
            done = session_during(domain_occurrence, starts.get(occurrence["patient_id"], [])) is not None
            return missed_tens_session(occurrence["patient_id"], domain_occurrence, last, done, now, delay,
                                       reminded=reminded, quiet_hours=quiet)

        found = []
        for occurrence, last, delay in due:
            candidate = failures.attempt(occurrence.get("_id"), lambda o=occurrence, t=last, d=delay: judge(o, t, d))
            if candidate is not None:
                found.append((occurrence, last, delay, candidate))
        # Quiet hours that lasted past the window sent no reminder: never told to anyone as one ignored.
        quiet = quiet_through_window(self.stores.outbox, [o for o, _, _, _ in found])
        unreminded, undecided = self._kept_from_reminding([(o, c) for o, _, _, c in found if o["_id"] not in quiet],
                                                          now)
        return [(judge(o, last, delay, reminded=False, quiet=o["_id"] in quiet) or c)
                if o["_id"] in unreminded | quiet else c
                for o, last, delay, c in found if o["_id"] not in undecided]

    def _kept_from_reminding(self, found: list[tuple[dict, AlertCandidate]],
                             now: datetime) -> tuple[set[str], set[str]]:
        """Of the occurrences whose missed-session alert holds (with its candidate), those (by id) of which no reminder
        reached the patient because reminders were not going out (``kept_from_reminding``: the worker, the sender or
        FCM was down): their alert says so and pushes nobody. And those not judged yet: no reminder reached the
        patient, but one is still queued and valid (the sender behind, a push held for quiet hours). Their alert is
        not raised on this pass: raised now, it would say that no reminder could be sent and push nobody, though the
        reminder may still go. A later pass raises it once the push is sent or expired (within the push's lifetime,
        which ends at most an hour, a TENS reminder's TTL, after the last reminder was planned: well inside
        ``MISSED_ALERT_MARGIN``, so the caregivers are pushed as they would have been; a pass later than that, after an outage, raises it for the
        panel alone, as for any alert: ``still_news``). The pushes are read only for those whose alert has not been
        fanned out yet (the others are raised and told already)."""
        if not found:
            return set(), set()
        told = set(self.stores.alerts.notified_among([c.dedup_key for _, c in found]))
        fresh = [o for o, c in found if c.dedup_key not in told]
        return kept_from_reminding(self.stores.outbox, fresh, now) if fresh else (set(), set())

    def device_alerts(self, now: datetime, failures: ItemFailures,
                      since: datetime | None = None) -> DeviceEventsJudged:
        """Battery-low, electrode-off and overload events of the last day, or since ``since`` (the last complete pass)
        when that is earlier, up to ``DEVICE_CATCH_UP`` back: a worker back after more than a day raises the events
        of its whole outage (those older than a day for the panel alone: ``DEVICE_ALERT_NEWS``); and the events
        passes before could not judge or raise, read by id wherever they lie (owed_device_alerts)."""
        start = now - LOOKBACK
        if since is not None and since < start:
            start = max(since, now - DEVICE_CATCH_UP)
            logger.warning("alerts: the last complete pass began %s ago; reading the device events since %s",
                           now - since, start.isoformat())
        # By when they happened, and by when they arrived since the last complete pass began (an upload late by
        # days: UPLOAD_LAG). The stored read starts there, not at the window's start: on a pass a minute after the
        # last, it reads the minute's uploads, not the whole day's events a second time.
        stored_from = start if since is None else max(since, now - DEVICE_CATCH_UP)
        events = self.stores.device_events.happened_or_stored_between(
            start, now, stored_since=stored_from - UPLOAD_LAG, oldest=now - DEVICE_CATCH_UP)
        judged = DeviceEventsJudged(owed={o["_id"] for o in self.stores.owed_device_alerts.all()})
        read = {e["_id"] for e in events}
        events += self.stores.device_events.by_ids(judged.owed - read)
        zones = self._patients({e["patient_id"] for e in events}, failures)
        batteries = self.stores.session_records.batteries_of(e.get("record_id") for e in events
                                                             if e["kind"] == "battery_low")

        def judge(event: dict) -> AlertCandidate | None:
            patient_id = event["patient_id"]
            if zones.left(patient_id):
                return None
            tz = zones.zone(patient_id, event["at"])
            if event["kind"] == "battery_low":
                battery = batteries.get(event.get("record_id"))
                return battery_low(patient_id, event["device_serial"], int(battery or 0), event["at"], tz)
            if event["kind"] in ("electrode_off", "overload"):
                return device_fault(patient_id, event["device_serial"], AlertKind(event["kind"]), event["at"], tz,
                                    now)
            return None

        for event in events:
            event_id, failed_before = event["_id"], len(failures)
            judged.at_of[event_id] = event.get("at")
            candidate = failures.attempt(event_id, lambda e=event: judge(e))
            if len(failures) > failed_before:
                judged.unjudged.add(event_id)
            elif candidate is not None:
                judged.candidates.append(candidate)
                judged.events_of.setdefault(candidate.dedup_key, []).append(event_id)
        return judged

    def _note_device_pass(self, now: datetime, judged: DeviceEventsJudged, unraised: set[str]) -> None:
        """A pass that read the device events notes itself complete (the next reads from its start), whatever one
        event did: the events it could not judge, or whose alert it could not raise (``unraised``: their dedup
        keys), are owed first, and each later pass reads them again by id, so one event failing pass after pass (a
        malformed one, a patient whose alerts cannot be written) neither costs an alert that could be raised nor
        holds every pass to reading ``DEVICE_CATCH_UP`` of everyone's events. Owed events it raised, that raise no
        alert, or that are gone are settled. One still failing when it is older than ``DEVICE_CATCH_UP`` (the
        furthest any pass reads back) is given up, logged by its id."""
        failing = judged.unjudged | {e for key in unraised for e in judged.events_of.get(key, ())}
        too_old = {e for e in failing
                   if not isinstance(judged.at_of.get(e), datetime) or judged.at_of[e] < now - DEVICE_CATCH_UP}
        for event_id in sorted(too_old):
            logger.error("alerts: a device event failed every pass for %s; its alert is given up", DEVICE_CATCH_UP,
                         extra={"job_id": ALERTS_JOB, "item_id": event_id})
        owed = self.stores.owed_device_alerts
        owed.owe({e: judged.at_of[e] for e in failing - too_old}, now)
        owed.settle(judged.owed - (failing - too_old))
        self.stores.days_to_recompute.ran(ALERTS_JOB, now)

    def silent_units(self, now: datetime, failures: ItemFailures) -> list[AlertCandidate]:
        """Bound units not heard from (no upload, no status) for 24 hours: their last_heard (the instant the panel's
        days since sync count from), or a record of theirs received since (delivered by the hub of a patient the
        unit is no longer bound to, which notes nothing on the unit)."""

        units = list(self.stores.devices.heard_from_between(now - SILENT_LOOKBACK, now - timedelta(hours=24)))
        zones = self._patients({unit.patient_id for unit in units}, failures)
        # A record received before the lookback cannot be later than a status seen within it.
        received = self.stores.session_records.last_received_from_units((u.serial for u in units),
                                                                        now - SILENT_LOOKBACK)

        def judge(unit) -> AlertCandidate | None:
            if zones.left(unit.patient_id):
                return None
            heard = max(filter(None, [unit.last_heard, received.get(unit.serial)]))
            return unit_silent(unit.patient_id, unit.serial, heard, now, zones.zone(unit.patient_id, now))

        found = []
        for unit in units:
            candidate = failures.attempt(unit.serial, lambda u=unit: judge(u))
            if candidate is not None:
                found.append(candidate)
        return found

    def pain_flares(self, now: datetime, failures: ItemFailures) -> list[AlertCandidate]:
        """Flares among the pain ratings of the last day (judged against each patient's last 14 days)."""
        patient_ids = self.stores.pain_entries.patients_recording_between(now - LOOKBACK, now)
        zones = self._patients(patient_ids, failures)
        scores: dict[str, list[dict]] = {}
        for doc in self.stores.pain_entries.scores_of(patient_ids, now - LOOKBACK - FLARE_HISTORY):
            if not doc.get("deleted") and doc["recorded_at"] <= now:
                scores.setdefault(doc["patient_id"], []).append(doc)

        def judge(patient_id: str) -> list[AlertCandidate]:
            if zones.left(patient_id):
                return []
            docs = sorted(scores.get(patient_id, []), key=lambda d: (d["recorded_at"], str(d["_id"])))
            entries = [PainEntry(d["_id"], d["recorded_at"], d["nrs"]) for d in docs]
            return [pain_flare(patient_id, flare, zones.zone(patient_id, flare.entry.recorded_at_utc))
                    for flare in flares(entries) if flare.entry.recorded_at_utc >= now - LOOKBACK]

        found = []
        for patient_id in patient_ids:
            found += failures.attempt(patient_id, lambda p=patient_id: judge(p)) or []
        return found

    def evaluate(self) -> AlertsReport:
        """Find every alert condition of the last day (the device events since the last complete pass, after an
        outage, and those owed by passes before) and raise each alert once; end the silence alerts of units heard
        from again. A pass that read the device events is noted complete (``ALERTS_JOB`` in recompute_runs), the
        events it could not judge or raise owed to the passes after it (``_note_device_pass``)."""
        now = self.clock()
        report = AlertsReport()
        failures = ItemFailures(ALERTS_JOB)
        since = self.stores.days_to_recompute.last_run(ALERTS_JOB)
        failures.attempt("end-silences", lambda: self._end_silences(now))
        candidates = []
        for rule in (self.missed_sessions, self.silent_units, self.pain_flares):
            candidates += failures.attempt(rule.__name__, lambda rule=rule: rule(now, failures)) or []
        devices = failures.attempt("device_alerts", lambda: self.device_alerts(now, failures, since))
        candidates += devices.candidates if devices is not None else []
        told = self.stores.alerts.notified_among([c.dedup_key for c in candidates])
        unraised, raised = set(), set()  # (an alert of several events is tried for each until one raises it)
        for candidate in most_pressing_first(candidates):  # (the most pressing of a key is the one raised)
            if candidate.dedup_key not in raised and _still_to_raise(candidate, told.get(candidate.dedup_key)):
                failed_before = len(failures)
                # Logged by a digest of its key: the key itself names the kind of alert, the patient and the day.
                failures.attempt(derived_id("alert-candidate", candidate.dedup_key),
                                 lambda c=candidate: self.raise_once(c, report, read_again=True))
                (unraised if len(failures) > failed_before else raised).add(candidate.dedup_key)
        if devices is not None:  # (not a pass that could not read them: the next reads from the last that did)
            failures.attempt("note-pass", lambda: self._note_device_pass(now, devices, unraised - raised))
        report.failed = len(failures)
        logger.info("alerts: raised %s, notifications %d, failed %d", report.raised, report.notifications,
                    report.failed)
        return report

    # Ending what no longer holds
    def resolve(self, alert: dict, reason: str, code: Resolution, at: datetime | None = None) -> bool:
        """Resolve an alert with the reason (English, for the care team), its ``code`` and the instant the
        reason names (``at``: what a patient or caregiver reads is said from these, in their language), and
        withdraw its notifications not sent yet (nothing new is pushed: see the module docstring). False if it
        was resolved already."""
        # The patient's panel row counts open alerts: it is marked before the resolution (a process stopped between
        # the resolution and a mark after it would leave the row counting the alert until its next computation)
        # and after it (a refresh between the first mark and the resolution read the alert still open).
        self.stores.panel_row_marks.mark([alert["patient_id"]], "alert", self.clock())
        if not self.stores.alerts.resolve(alert["_id"], reason, self.clock(), {"code": code.value, "at": at}):
            return False
        self.stores.panel_row_marks.mark([alert["patient_id"]], "alert", self.clock())
        for key in _source_keys(alert):
            self.stores.outbox.withdraw(reason=ALERT_RESOLVED, source_key=key)
        logger.info("alert resolved", extra={"alert_id": alert["_id"]})  # its kind is health data: not logged
        return True

    def events_changed(self, gone: list[dict], back: list[dict]) -> None:
        """Device events sessions took away (``gone``) and brought back (``back``: a session counted again):
        see :meth:`events_gone` and :meth:`events_back`."""
        if gone:
            self.events_gone(gone)
        if back:
            self.events_back(back)

    def events_back(self, events: list[dict]) -> None:
        """Device events a session counted again brought back (the care team excluded it, then counted it): a
        device alert ended for want of them (``SESSION_NOT_COUNTED``) holds again and is reopened. Its patient and
        caregivers were told when it was raised: those whose push its resolution withdrew before it went out (held
        for their quiet hours) are told after all, as urgent as the latest of its events brought back is now
        (``_reopen``); no second push to the others. One still open stays as it is; one never raised is the alerts
        job's (it raises what the events of the last day, or stored in it, support)."""
        day_of, told = self._device_event_days(events)
        here = {patient_id for patient_id, _, _, _ in told}  # (a patient no longer there: nothing to reopen)
        latest: dict[str, dict] = {}  # the latest event brought back of each alert (by its key)
        for event in events:
            if event["kind"] not in DEVICE_KINDS or event["patient_id"] not in here:
                continue
            day = day_of(event["patient_id"], event["at"]).isoformat()
            key = device_alert_key(event["kind"], event["device_serial"], event["patient_id"], day)
            if key not in latest or event["at"] > latest[key]["at"]:
                latest[key] = event
        for alert in self.stores.alerts.resolved_as(sorted(latest), Resolution.SESSION_NOT_COUNTED.value):
            self._reopen(alert, self._judged_back(alert, latest[alert["dedup_key"]]))
            logger.info("alert reopened", extra={"alert_id": alert["_id"]})

    def _judged_back(self, alert: dict, event: dict) -> AlertCandidate | None:
        """A device alert reopened by ``event`` (brought back), as its rule judges it now: an overload is urgent only
        while fresh (``device_fault``); a low battery is as it was raised. None: its patient is no longer there."""
        patient = self.stores.users.by_id(alert["patient_id"])
        if patient is None:
            return None
        if alert["kind"] in (AlertKind.ELECTRODE_OFF.value, AlertKind.OVERLOAD.value):
            zone = patient.zone_history().zone_at(event["at"])
            return device_fault(alert["patient_id"], event["device_serial"], AlertKind(alert["kind"]), event["at"],
                                zone, self.clock())
        return AlertCandidate(AlertKind(alert["kind"]), Severity(alert["severity"]), alert["patient_id"],
                              alert["dedup_key"], period_of(alert), alert["text"], occurred_at=alert.get("occurred_at"),
                              device_serial=alert.get("device_serial"), details=dict(alert.get("details") or {}))

    def _device_event_days(self, events: list[dict]) -> tuple[Callable[[str, datetime], date],
                                                             set[tuple[str, str, str, str]]]:
        """The patient's local day of an instant (their zone history, read once for ``events``' patients), and
        each device event as (patient, unit, kind, local day) (those of a patient no longer there left out)."""
        events = [e for e in events if e["kind"] in DEVICE_KINDS]
        histories = {p.id: p.zone_history() for p in self.stores.users.by_ids({e["patient_id"] for e in events})}

        def day_of(patient_id: str, at: datetime) -> date:
            return at.astimezone(histories[patient_id].zone_at(at)).date()

        return day_of, {(e["patient_id"], e["device_serial"], e["kind"], day_of(e["patient_id"], e["at"]).isoformat())
                        for e in events if e["patient_id"] in histories}

    def _reopen(self, alert: dict, candidate: AlertCandidate | None) -> None:
        """A resolved alert whose condition holds again is open again, as urgent as ``candidate`` (its rule, judged
        now), and its pushes its resolution withdrew are revived as that (``_notify_again``), once
        (``reopen_notified_at``; a stop in between: the next pass that reads its events does it, ``_revival_owed``).
        The patient's panel row counts open alerts: marked before the reopening as well as after, as for a
        resolution (a stop between the two would leave the row not counting it). One reopened by another meanwhile
        (a pass, for a fresh overload: its escalation tells its people) is left to it, unless its revival is still
        owed (a retry of this after a stop)."""
        self.stores.panel_row_marks.mark([alert["patient_id"]], "alert", self.clock())
        reopened = self.stores.alerts.reopen(alert["_id"], self.clock())
        self.stores.panel_row_marks.mark([alert["patient_id"]], "alert", self.clock())
        if candidate is None:
            return
        if not reopened:
            current = self.stores.alerts.get(alert["patient_id"], alert["_id"])
            if current is None or not _revival_owed(current) or current.get("escalated_at") is not None:
                return
            alert = current
        alert = self._judged_now({**alert, "resolved_at": None, "reopened_at": self.clock()}, candidate)
        self._notify_again(alert, candidate)
        self.stores.alerts.mark_reopen_notified(alert["_id"])

    def events_gone(self, events: list[dict]) -> None:
        """Device events a session took away (``events``: each one's patient, unit, kind and instant as they were):
        the session stopped counting (the care team excluded it, it is held again, it is nobody's) or was placed
        again (another day, another patient; companion.services.session_times). A device alert of that patient,
        unit, kind and local day that no event left supports is resolved, as any alert whose condition no longer
        holds (nothing pushed; its pushes not sent yet withdrawn). Called before the session's change is written,
        so a retry of a change stopped part-way does it again."""
        day_of, vacated = self._device_event_days(events)
        if not vacated:
            return
        for alert in self.stores.alerts.unresolved({v[0] for v in vacated}, sorted({v[2] for v in vacated})):
            patient_id, serial, kind = alert["patient_id"], alert.get("device_serial"), alert["kind"]
            if (patient_id, serial, kind, period_of(alert)) not in vacated:
                continue
            if not self._device_events_left(alert, lambda at, p=patient_id: day_of(p, at)):
                self._resolve_not_counted(alert)

    def _device_events_left(self, alert: dict, day_of: Callable[[datetime], date]) -> bool:
        """Whether an event of a device alert's patient, unit and kind is stored on its local day (``day_of``: the
        patient's local day of an instant)."""
        day = date.fromisoformat(period_of(alert))
        # Any zone's local day lies within its UTC date and a day either side.
        since = datetime.combine(day, time.min, UTC) - timedelta(days=1)
        left = self.stores.device_events.of_unit(alert["patient_id"], alert.get("device_serial"), alert["kind"],
                                                 since, since + timedelta(days=3))
        return any(day_of(e["at"]) == day for e in left)

    def _resolve_not_counted(self, alert: dict) -> None:
        self.resolve(alert, "the TENS session it was raised from no longer counts for this patient on this day "
                            "(excluded by the care team, held again, or placed again)",
                     Resolution.SESSION_NOT_COUNTED)

    def _end_silences(self, now: datetime) -> None:
        silent = self.stores.alerts.unresolved_of_kind(AlertKind.UNIT_SILENT.value)
        if not silent:
            return
        units = {u.serial: u for u in self.stores.devices.for_patients({a["patient_id"] for a in silent})}
        for alert in silent:
            serial = alert["dedup_key"].split(":")[1]
            unit = units.get(serial)
            last_seen = datetime.fromisoformat(alert.get("period_key") or alert["dedup_key"].split(":", 2)[2])
            heard = unit.last_heard if unit else None
            if heard is not None and not still_silent(last_seen, heard):
                self.resolve(alert, f"the unit was heard from again at {heard:%Y-%m-%d %H:%M} UTC",
                             Resolution.UNIT_HEARD, heard)

    def reconsider(self, patient: Account, days: set[date], snapshots: list[dict], today: date,
                   report: AlertsReport | None = None, open_alerts: list[dict] | None = None,
                   ratings: list[dict] | None = None) -> None:
        """Judge the rules again for a patient whose ``days`` were recomputed (``snapshots``: their adherence
        days from 30 days before today): raise what now holds (unless they have left: a closed record's days
        may still be recomputed, a held session counted, but no alert is raised about them), resolve what no
        longer does (``open_alerts``: the patient's unresolved alerts of the RECONSIDERED kinds, and
        ``ratings``: ratings_for their flare_days, when the caller read them already). The flares are judged on
        the flare_days of ``days``: a rating changed on one day may make or end a flare on a later one."""
        progress = progress_of(snapshots)
        if open_alerts is None:
            open_alerts = self.stores.alerts.unresolved([patient.id], RECONSIDERED)
        judged_flares = flare_days(days, today)
        if ratings is None:
            ratings = self.ratings_for({patient.id: judged_flares}).get(patient.id, [])
        candidate = low_adherence_in(patient.id, snapshots, today) if patient.status != CLOSED else None
        if candidate is not None:
            stands = self.raise_low_adherence(candidate, snapshots, today, patient, report, open_alerts)
            open_alerts = [stands if a["_id"] == stands["_id"] else a for a in open_alerts]  # as it is now (redated)
        judged_from = min(progress, default=today)
        for alert in open_alerts:
            if alert["kind"] == AlertKind.LOW_ADHERENCE.value:
                run_start = run_start_of(alert)
                if run_start < judged_from:
                    # Its first days are older than the days read: what it was raised on cannot be judged here
                    # (judged on later days, it would be called resolved by data that never came).
                    continue
                if not low_adherence_holds(run_start, progress, today) \
                        and not self._told_from_later_day(patient, alert, progress, today):
                    recomputed = ", ".join(f"{d.isoformat()} {p:.0%}" for d, p in sorted(progress.items())
                                           if p is not None and d >= run_start and d < today)[:300]
                    self.resolve(alert, "recomputed with data that arrived later, TENS adherence no longer stays "
                                        f"below 80% for 3 planned days from {run_start.isoformat()} ({recomputed})",
                                 Resolution.ADHERENCE_REACHED)
            elif alert["kind"] == AlertKind.MISSED_TENS.value:
                self._reconsider_missed(patient, alert, days)
        self._reconsider_flares(patient, judged_flares, ratings,
                                [a for a in open_alerts if a["kind"] == AlertKind.PAIN_FLARE.value], report)

    def _told_from_later_day(self, patient: Account, alert: dict, progress: dict[date, float | None],
                             today: date) -> bool:
        """Whether the run a low-adherence alert was raised for, shortened at its start by later data, still
        holds from a later first day (low_adherence_still_from): then the alert is told from that day (re-dated,
        as raise_low_adherence does for the run the rule finds now) rather than resolved."""
        later = low_adherence_still_from(run_start_of(alert), _raised_on(alert, patient.zone_history()), progress,
                                         today)
        told = low_adherence_from(patient.id, later, progress, today) if later is not None else None
        if told is None:
            return False
        self.stores.alerts.redate(alert["_id"], told.period_key, told.text, dict(told.details))
        return True

    def outcome_recorded(self, patient_id: str, occurrence: dict) -> None:
        """The patient recorded an occurrence done or skipped (companion.services.reminders): a missed-session
        alert raised for it meanwhile no longer holds (a skip is the patient's own decision and does not alert),
        and its caregiver pushes still waiting (quiet hours) are withdrawn."""
        if occurrence.get("kind") != "tens" or occurrence.get("status") not in RECORDED:
            return
        for alert in self.stores.alerts.unresolved([patient_id], (AlertKind.MISSED_TENS.value,)):
            if period_of(alert) == occurrence["_id"]:
                self._resolve_recorded(alert, occurrence)

    def _resolve_recorded(self, alert: dict, occurrence: dict) -> None:
        self.resolve(alert, f"the reminder was recorded as {occurrence['status']} after the alert",
                     Resolution.OUTCOME_RECORDED, occurrence.get("status_at"))

    def _reconsider_missed(self, patient: Account, alert: dict, days: set[date]) -> None:
        occurrence_id = period_of(alert)
        occurrence = self.stores.occurrences.get(patient.id, occurrence_id)
        if occurrence is None:
            return
        if occurrence.get("status") in RECORDED:  # (a crash between the outcome and its resolution)
            self._resolve_recorded(alert, occurrence)
            return
        # A session counts from an hour before the reminder was due to the end of its window, which can cross
        # midnight: the alert is looked at again when any local day of that span was recomputed.
        history = patient.zone_history()
        span = {date.fromisoformat(occurrence["local_date"])} | {
            moment.astimezone(history.zone_at(moment)).date()
            for moment in (occurrence["due_at"] - EARLY_SESSION, occurrence["window_ends_at"])}
        if not span & days:
            return
        self._session_found(patient, alert, occurrence)

    def _session_found(self, patient: Account, alert: dict, occurrence: dict) -> bool:
        """Resolve a missed-session alert for which a counted session during the reminder's window is stored."""
        sessions = self.stores.session_records.for_patient(
            patient.id, occurrence["due_at"] - timedelta(hours=2), occurrence["window_ends_at"] + timedelta(minutes=1),
            counted_only=True)
        started = session_during(as_domain_occurrence(occurrence), [s["started_at"] for s in sessions])
        if started is None:
            return False
        zone = patient.zone_history().zone_at(started)
        self.resolve(alert, f"a TENS session that started at {started.astimezone(zone):%H:%M} (patient's local "
                            "time) was received later: the session was done", Resolution.SESSION_FOUND, started)
        return True

    def ratings_for(self, touched: dict[str, set[date]]) -> dict[str, list[dict]]:
        """The pain ratings the flares of each patient's ``touched`` days (their flare_days, for a reconsideration)
        are judged on (those days and the 14 days before each; live ones only), by patient, read for all of them
        at once: one read per run of nearby dates (and bounded chunk of patients), however many patients (a date
        far from the others, a care team's decision on an old session, is read apart and does not widen the rest's
        read)."""
        by_date: dict[date, set[str]] = {}
        for patient_id, days in touched.items():
            for day in days:
                by_date.setdefault(day, set()).add(patient_id)
        ratings: dict[str, dict[str, dict]] = {}
        for span in _spans(set(by_date), FLARE_HISTORY):
            # Any zone's local day lies within its UTC date and a day either side; a flare is judged against the
            # ratings of the 14 days before it.
            start = datetime.combine(span[0], time.min, UTC) - timedelta(days=1) - FLARE_HISTORY
            end = min(datetime.combine(span[-1], time.min, UTC) + timedelta(days=2), self.clock())
            for doc in self.stores.pain_entries.scores_of(set().union(*(by_date[d] for d in span)), start, end):
                if not doc.get("deleted"):
                    ratings.setdefault(doc["patient_id"], {})[doc["_id"]] = doc  # (spans' reads may overlap)
        return {patient_id: list(docs.values()) for patient_id, docs in ratings.items()}

    def _reconsider_flares(self, patient: Account, days: set[date], ratings: list[dict], open_flares: list[dict],
                           report: AlertsReport | None) -> None:
        """The flares of ``days`` (the flare_days of the recomputed days) judged again from the ratings as they are
        now (``ratings``: ratings_for those days): a flare alert of one of them whose ratings were changed or
        removed (the earlier high rating, or one of the 14-day median it was judged against) is resolved;
        a flare found on one is raised (ratings that reached the server a day or more late, from a phone offline,
        are read by no other pass: the minute job reads the last day's), or reopened, once per day under its key
        (not about someone who has left)."""
        found = {day: candidate for day, candidate in self._flares_by_day(patient, ratings).items() if day in days}
        for alert in open_flares:
            if date.fromisoformat(period_of(alert)) in days and date.fromisoformat(period_of(alert)) not in found:
                self._resolve_ratings_changed(alert)
        if patient.status != CLOSED:
            for candidate in found.values():
                if flare_still_raised(candidate, self.clock()):
                    self.raise_once(candidate, report, read_again=True)

    @staticmethod
    def _flares_by_day(patient: Account, ratings: list[dict]) -> dict[date, AlertCandidate]:
        """The first flare of each of the patient's local days among ``ratings``."""
        history = patient.zone_history()
        found: dict[date, AlertCandidate] = {}
        for flare in flares([PainEntry(d["_id"], d["recorded_at"], d["nrs"]) for d in ratings]):
            zone = history.zone_at(flare.entry.recorded_at_utc)
            day = flare.entry.recorded_at_utc.astimezone(zone).date()
            if day not in found:
                found[day] = pain_flare(patient.id, flare, zone)
        return found

    def _resolve_ratings_changed(self, alert: dict) -> None:
        self.resolve(alert, "the pain ratings that made this a flare were changed or removed",
                     Resolution.RATINGS_CHANGED)

    # The care team's acts
    def review_list(self, patient_id: str, *, open_only: bool,
                    limit: int = REVIEW_ALERTS_SHOWN) -> tuple[list[dict], bool]:
        """The patient's newest ``limit`` alerts for the care team, newest first, and whether that is all of them
        (read with one more than it shows)."""
        alerts = self.stores.alerts.newest(patient_id, open_only=open_only, limit=limit + 1)
        return alerts[:limit], len(alerts) <= limit

    def acknowledge(self, patient_id: str, alert_id: str, clinician_id: str) -> dict:
        """Acknowledge an alert (a care-team act), and withdraw its caregivers' pushes not sent yet (held for
        their quiet hours, say): the care team has it in hand, and nobody is to be woken for it. The patient's
        own push stays (the unit's troubles, which only the patient can put right). Acknowledging twice keeps
        the first acknowledgement; a retry withdraws what a request stopped before withdrawing left (and the
        sender checks the alert again before each push goes out)."""
        # The panel row counts open alerts: marked before the acknowledgement as well as after, as for a resolution.
        self.stores.panel_row_marks.mark([patient_id], "alert", self.clock())
        alert = self.stores.alerts.acknowledge(patient_id, alert_id, clinician_id, self.clock())
        if alert is None:
            raise NotFound("no such alert")
        self.stores.panel_row_marks.mark([patient_id], "alert", self.clock())
        for key in _source_keys(alert):
            self.stores.outbox.withdraw(reason=ALERT_ACKNOWLEDGED, source_key=key, sparing=patient_id)
        return alert


def _source_keys(alert: dict) -> list[str]:
    """The source keys of an alert's pushes: its own, and an overload's escalation's (``escalates``; looked for
    whether the alert as read says it was escalated or not: it may have been since)."""
    own = alert_key(alert["_id"])
    return [own, alert_key(alert["_id"], escalated=True)] if alert["kind"] == AlertKind.OVERLOAD.value else [own]


def _revival_owed(alert: dict) -> bool:
    """Whether an open alert was reopened (``reopened_at``) and what follows for its people is not done yet: its
    withdrawn pushes revived (``_notify_again``) once, by the call that reopened it or the pass after one that stopped
    in between, or left withdrawn for an escalation's."""
    return (alert.get("reopened_at") is not None and alert.get("reopen_notified_at") is None
            and alert.get("resolved_at") is None)


def _escalation_owed(alert: dict) -> bool:
    """Whether an open alert was made urgent (``escalated_at``) and its people are not told of it yet."""
    return (alert.get("escalated_at") is not None and alert.get("escalation_notified_at") is None
            and alert.get("resolved_at") is None)


def _still_to_raise(candidate: AlertCandidate, told: dict | None) -> bool:
    """Whether a pass raises ``candidate``, given its key's alert as notified (``told``; None: not raised, or its
    people not told yet): one not told yet; one open that the candidate makes urgent (``escalates``) or that a
    pass stopped before telling its people of its escalation or its reopening; and a device alert resolved because its session's
    events were taken away (``REOPENED_BY_EVENTS``), which an event stored now holds again (a fresh overload the
    day the care team excluded the session of the first): reopened, and its people told (raise_once reads again
    that an event is stored: the events a resolution took away are gone before it is written)."""
    if told is None:
        return True
    if told.get("resolved_at") is not None:
        return candidate.kind.value in DEVICE_KINDS and (told.get("resolution") or {}).get("code") in REOPENED_BY_EVENTS
    return escalates(candidate, bool(told.get("urgent"))) or _escalation_owed(told) or _revival_owed(told)


def in_words(alert: dict, reader: Reader) -> dict:
    """``alert`` as a patient or caregiver reads it: ``text`` and ``resolved_reason`` from the catalogs
    (``ALERT_MESSAGES``, ``RESOLUTION_MESSAGES``) in ``reader``'s language, times on their clock, filled
    from the alert's structured fields. An alert of a kind without a message keeps its stored text."""
    try:
        message = ALERT_MESSAGES[AlertKind(alert["kind"])]
    except ValueError:
        return alert
    details = alert.get("details") or {}
    when = alert.get("occurred_at") or alert["raised_at"]
    arguments = {"device": alert.get("device_serial") or "", "when": reader.datetime(when),
                 "days": str(details.get("days", "")), "battery_percent": str(details.get("battery_percent", "")),
                 "score": str(details.get("score", "")),
                 "first_day": reader.date(date.fromisoformat(details["first_day"])) if "first_day" in details else ""}
    said = {**alert, "text": reader.render(message, **arguments)}
    resolution = alert.get("resolution") or {}
    if resolution.get("code") in RESOLUTION_MESSAGES:
        at = resolution.get("at")
        said["resolved_reason"] = reader.render(RESOLUTION_MESSAGES[Resolution(resolution["code"])],
                                                when=reader.datetime(at) if at is not None else "")
    return said
