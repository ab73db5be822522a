"""Alert use cases: find the conditions the alert rules (companion.domain.alerts) name, raise each
alert once, and notify the people it concerns.

Who hears of an alert:
- caregivers linked to the patient whose consent (`care_links.permissions.alerts`) includes the
  alert's share kind; the push says only "a check-in needs your attention";
- the patient, for the unit's own troubles (battery, electrodes, overload), so they can act on them.
Clinicians see every alert in the API and the panel. A non-urgent alert waits for the end of each
recipient's quiet hours, on their own clock.

Evaluation is idempotent: an alert is an insert under its unique dedup key, its notifications are
outbox inserts under (``alert:<id>``, recipient), and an alert notes when it was fanned out, so the
job can run every minute, twice, or after a crash without alerting anyone twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from pymongo.database import Database

from companion.domain.alerts import (
    AlertCandidate,
    AlertKind,
    battery_low,
    delivery_time,
    device_fault,
    missed_tens_session,
    pain_flare,
    unit_silent,
)
from companion.domain.alerts import low_adherence as low_adherence_rule
from companion.domain.pain import PainEntry, flares
from companion.domain.schedules import nudge_times
from companion.services.job_settings import JobSettings
from companion.services.reminder_dispatch import as_domain_occurrence, repeats_of
from companion.services.reminder_schedules import quiet_hours_of, zone_history_of
from companion.store.accounts import Users
from companion.store.alerts import Alerts
from companion.store.due_reminders import DueReminders
from companion.store.outbox import Outbox
from companion.store.relationships import CareLinks

logger = logging.getLogger(__name__)

# The consent vocabulary caregivers choose from (companion.api.caregivers.SHAREABLE_ALERTS).
SHARE_KIND = {
    AlertKind.MISSED_TENS: "missed_session", AlertKind.LOW_ADHERENCE: "adherence_low",
    AlertKind.UNIT_SILENT: "device_silent", AlertKind.BATTERY_LOW: "battery_low",
    AlertKind.ELECTRODE_OFF: "device_fault", AlertKind.OVERLOAD: "device_fault",
    AlertKind.PAIN_FLARE: "pain_flare",
}
# Push template per alert kind and audience. Caregiver pushes all carry the same generic line; the
# template decides TTL, priority and collapse key (device troubles share the "device_silent" one).
CAREGIVER_TEMPLATE = {
    AlertKind.MISSED_TENS: "missed_session_caregiver", AlertKind.LOW_ADHERENCE: "adherence_low",
    AlertKind.UNIT_SILENT: "device_silent", AlertKind.BATTERY_LOW: "device_silent",
    AlertKind.ELECTRODE_OFF: "device_silent", AlertKind.OVERLOAD: "device_silent",
    AlertKind.PAIN_FLARE: "pain_flare",
}
PATIENT_TEMPLATE = {AlertKind.BATTERY_LOW: "battery_low", AlertKind.ELECTRODE_OFF: "device_fault",
                    AlertKind.OVERLOAD: "device_fault"}
LOOKBACK = timedelta(hours=24)
SILENT_LOOKBACK = timedelta(days=8)  # units silent for longer were alerted about already
FLARE_HISTORY = timedelta(days=14)
LOW_ADHERENCE_LOOKBACK = timedelta(days=30)  # the snapshots the low-adherence rule reads, before today
_LIMIT = 100_000


@dataclass
class AlertsReport:
    """What one evaluation found and did."""

    raised: dict[str, int] = field(default_factory=dict)
    notifications: int = 0


def raise_alert(db: Database, candidate: AlertCandidate, clock: Callable[[], datetime],
                report: AlertsReport | None = None) -> dict:
    """Store ``candidate`` once and notify whoever it concerns (idempotent)."""
    alerts = Alerts(db, clock)
    alert, created = alerts.raise_once(
        patient_id=candidate.patient_id, kind=candidate.kind.value, severity=candidate.severity.value,
        text=candidate.text, dedup_key=candidate.dedup_key, shared_with_caregivers=True,
        urgent=candidate.urgent, share_kind=SHARE_KIND[candidate.kind])
    if created and report is not None:
        report.raised[candidate.kind.value] = report.raised.get(candidate.kind.value, 0) + 1
    if alert.get("notified_at") is None:
        sent = _notify(db, alert, candidate, clock)
        alerts.mark_notified(alert["_id"])
        if report is not None:
            report.notifications += sent
    return alert


def _notify(db: Database, alert: dict, candidate: AlertCandidate, clock: Callable[[], datetime]) -> int:
    users = Users(db)
    recipients: list[tuple[dict, str]] = []
    for link in CareLinks(db).for_patient(candidate.patient_id):
        if link["status"] == "active" and SHARE_KIND[candidate.kind] in (link.get("permissions") or {}).get("alerts", []):
            caregiver = users.by_id(link["caregiver_id"])
            if caregiver is not None:
                recipients.append((caregiver, CAREGIVER_TEMPLATE[candidate.kind]))
    if candidate.kind in PATIENT_TEMPLATE:
        patient = users.by_id(candidate.patient_id)
        if patient is not None:
            recipients.append((patient, PATIENT_TEMPLATE[candidate.kind]))
    outbox = Outbox(db, clock)
    created = 0
    for person, template in recipients:
        zone = zone_history_of(person).zone_at(alert["raised_at"])
        send_at = delivery_time(candidate, alert["raised_at"], zone, quiet_hours_of(person))
        _, new = outbox.schedule(source_key=f"alert:{alert['_id']}", recipient_user_id=person["_id"],
                                 patient_id=candidate.patient_id, kind=template, send_at=send_at)
        created += int(new)
    return created


def _zone_of(db: Database, user_id: str, at: datetime) -> ZoneInfo:
    user = Users(db).by_id(user_id)
    return zone_history_of(user).zone_at(at) if user else ZoneInfo("UTC")


def missed_sessions(db: Database, settings: JobSettings, now: datetime) -> list[AlertCandidate]:
    """TENS occurrences of the last day neither done nor skipped by their last reminder plus the delay."""
    due = DueReminders(db)
    occurrences = due.recent_of_kind("tens", now - LOOKBACK, now, ("pending", "missed"))
    reminders = due.reminders_by_id(o["reminder_id"] for o in occurrences)
    delays: dict[str, int] = {}
    default_delay = int(settings.caregiver_alert_delay.total_seconds() // 60)
    found = []
    for occurrence in occurrences:
        patient_id = occurrence["patient_id"]
        if patient_id not in delays:
            patient = Users(db).col.find_one({"_id": patient_id}, {"caregiver_alert_delay_min": 1}) or {}
            delays[patient_id] = int(patient.get("caregiver_alert_delay_min") or default_delay)
        domain_occurrence = as_domain_occurrence(occurrence)
        last = nudge_times(domain_occurrence, repeats_of(reminders.get(occurrence["reminder_id"])))[-1]
        candidate = missed_tens_session(patient_id, domain_occurrence, last, False, now, delays[patient_id])
        if candidate is not None:
            found.append(candidate)
    return found


def device_alerts(db: Database, now: datetime) -> list[AlertCandidate]:
    """Battery-low, electrode-off and overload events of the last day."""
    found = []
    zones: dict[str, ZoneInfo] = {}
    for event in db.device_events.find({"at": {"$gte": now - LOOKBACK, "$lte": now}}).limit(_LIMIT):
        patient_id = event["patient_id"]
        if patient_id not in zones:
            zones[patient_id] = _zone_of(db, patient_id, now)
        tz = zones[patient_id]
        if event["kind"] == "battery_low":
            record = db.session_records.find_one({"_id": event.get("record_id")}, {"battery_pct": 1}) or {}
            candidate = battery_low(patient_id, event["device_serial"], int(record.get("battery_pct", 0)),
                                    event["at"], tz)
        elif event["kind"] in ("electrode_off", "overload"):
            candidate = device_fault(patient_id, event["device_serial"], AlertKind(event["kind"]), event["at"], tz)
        else:
            candidate = None
        if candidate is not None:
            found.append(candidate)
    return found


def silent_units(db: Database, now: datetime) -> list[AlertCandidate]:
    """Bound units not heard from (no upload, no status) for 24 hours."""
    found = []
    query = {"patient_id": {"$ne": None},
             "status.last_seen_at": {"$gte": now - SILENT_LOOKBACK, "$lt": now - timedelta(hours=24)}}
    for device in db.devices.find(query, {"patient_id": 1, "status": 1}).limit(_LIMIT):
        latest = db.session_records.find_one({"device_serial": device["_id"]}, {"server_received_at": 1},
                                             sort=[("server_received_at", -1)])
        heard = max(filter(None, [device["status"]["last_seen_at"], (latest or {}).get("server_received_at")]))
        candidate = unit_silent(device["patient_id"], device["_id"], heard, now)
        if candidate is not None:
            found.append(candidate)
    return found


def pain_flares(db: Database, now: datetime) -> list[AlertCandidate]:
    """Flares among the pain ratings of the last day (judged against each patient's last 14 days)."""
    recent = db.pain_entries.aggregate([
        {"$match": {"recorded_at": {"$gte": now - LOOKBACK, "$lte": now}, "deleted": {"$ne": True}}},
        {"$group": {"_id": "$patient_id"}}])
    found = []
    for row in recent:
        patient_id = row["_id"]
        docs = db.pain_entries.find({"patient_id": patient_id, "deleted": {"$ne": True},
                                     "recorded_at": {"$gte": now - LOOKBACK - FLARE_HISTORY, "$lte": now}},
                                    {"recorded_at": 1, "nrs": 1}).limit(5000)
        entries = [PainEntry(d["_id"], d["recorded_at"], d["nrs"]) for d in docs]
        tz = _zone_of(db, patient_id, now)
        for flare in flares(entries):
            if flare.entry.recorded_at_utc >= now - LOOKBACK:
                found.append(pain_flare(patient_id, flare, tz))
    return found


def low_adherence_in(patient_id: str, snapshots: Iterable[dict], today: date) -> AlertCandidate | None:
    """The low-adherence rule over snapshots already read (those of ``today`` - 30 days .. ``today``)."""
    progress = {datetime.fromisoformat(s["date"]).date(): (None if s["state"] == "no_tasks"
                                                           else s["tens_fraction"] or 0.0) for s in snapshots}
    return low_adherence_rule(patient_id, progress, today)


def evaluate(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> AlertsReport:
    """Find every alert condition of the last day and raise each alert once."""
    now = clock()
    report = AlertsReport()
    candidates = (missed_sessions(db, settings, now) + device_alerts(db, now) + silent_units(db, now)
                  + pain_flares(db, now))
    done = Alerts(db, clock).notified_keys([c.dedup_key for c in candidates])
    for candidate in candidates:
        if candidate.dedup_key not in done:
            raise_alert(db, candidate, clock, report)
    logger.info("alerts: raised %s, notifications %d", report.raised, report.notifications)
    return report
