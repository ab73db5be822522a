"""Exports for the health record: CSV (a patient's days, a clinician's panel) and a FHIR R4 Bundle."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from companion.domain import review as rules
from companion.services.review import PatientReview

FHIR_BASE = "https://companion.example/fhir"
PATIENT_ID_SYSTEM = "https://companion.example/patient-id"
LOINC = "http://loinc.org"
PAIN_NRS = {"system": LOINC, "code": "72514-3",
            "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported"}
TENS_SNOMED = {"system": "http://snomed.info/sct", "code": "20701002",
               "display": "Transcutaneous electrical nerve stimulation"}
_COMMUNICATION_STATUS = {"scheduled": "preparation", "sending": "in-progress", "sent": "completed",
                         "failed": "not-done", "expired": "stopped", "withdrawn": "not-done"}
_UNSAFE_CELL = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if isinstance(value, str) and text.startswith(_UNSAFE_CELL):
        return "'" + text
    return text


def _csv(header: list[str], rows: Iterable[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


PATIENT_CSV_HEADER = ["date", "adherence_state", "covered", "tens_minutes", "tens_target_minutes", "tens_sessions",
                      "pain_entries", "pain_mean_nrs", "pain_max_nrs"]


def patient_csv(review: PatientReview, days: int) -> str:
    """One row per local day: adherence, TENS delivered against the plan, and pain."""
    calendar = {d["date"]: d for d in review.adherence(days)["calendar"]}
    pain: dict[str, list[int]] = defaultdict(list)
    for entry in review.pain(days)["entries"]:
        pain[rules.local_date(entry["recorded_at"], review.zone).isoformat()].append(entry["nrs"])
    rows = []
    for day in review.tens(days):
        on = day.date.isoformat()
        scores = pain.get(on, [])
        rows.append([on, calendar[on]["state"], calendar[on]["covered"], day.minutes, day.target_minutes, day.sessions,
                     len(scores), round(sum(scores) / len(scores), 2) if scores else None,
                     max(scores) if scores else None])
    return _csv(PATIENT_CSV_HEADER, rows)


PANEL_CSV_HEADER = ["patient_id", "name", "time_zone", "pdc_7", "pdc_30", "pain_mean_14d", "pain_change_14d",
                    "pain_direction", "days_since_sync", "open_alerts", "needs_attention_because"]


def panel_csv(rows: Iterable[rules.PanelRow]) -> str:
    """The panel as shown, one patient per row."""
    return _csv(PANEL_CSV_HEADER, ([r.patient_id, r.display_name, r.time_zone, r.pdc_7, r.pdc_30, r.pain.recent_mean,
                                    r.pain.change, r.pain.direction, r.days_since_sync, r.open_alerts,
                                    "; ".join(r.reasons)] for r in rows))


def fhir_id(value: str) -> str:
    """A FHIR logical id ([A-Za-z0-9-.]{1,64}) from one of ours (session ids hold a colon)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", value)[:64]


def _instant(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _entry(resource: dict) -> dict:
    return {"fullUrl": f"{FHIR_BASE}/{resource['resourceType']}/{resource['id']}", "resource": resource}


def _care_plan(plan: dict, subject: dict) -> dict:
    tens = plan.get("tens") or {}
    activities = []
    if tens:
        target = tens.get("daily_minutes_target") or (
            (tens.get("sessions_per_day") or 0) * (tens.get("minutes_per_session") or 0)) or None
        activities.append({"detail": {
            "kind": "DeviceRequest", "code": {"coding": [TENS_SNOMED]}, "status": "in-progress",
            "description": f"TENS: {target or 'as needed'} min/day, {tens.get('minutes_per_session')} min per session, "
                           f"programmes {', '.join(str(p) for p in tens.get('programmes') or []) or 'any'}, "
                           f"{tens.get('intensity_min_ma')}-{tens.get('intensity_max_ma')} mA"}})
    for medication in plan.get("medications") or []:
        activities.append({"detail": {"kind": "MedicationRequest", "status": "in-progress",
                                      "description": f"{medication.get('name')} {medication.get('dose')} at "
                                                     f"{', '.join(medication.get('times') or [])}"}})
    mindfulness = plan.get("mindfulness") or {}
    if mindfulness.get("minutes_per_day") or mindfulness.get("sessions_per_week"):
        activities.append({"detail": {"status": "in-progress", "description":
                                      f"Mindfulness: {mindfulness.get('minutes_per_day') or '-'} min/day, "
                                      f"{mindfulness.get('sessions_per_week') or '-'} sessions/week"}})
    period = {"start": _instant(plan["active_from"])}
    if plan.get("active_to"):
        period["end"] = _instant(plan["active_to"])
    return {"resourceType": "CarePlan", "id": fhir_id(plan["_id"]),
            "status": "revoked" if plan.get("active_to") else "active", "intent": "plan",
            "title": f"Therapy plan version {plan['version']}", "subject": subject, "period": period,
            "created": _instant(plan.get("created_at")), "activity": activities or None}


def fhir_bundle(review: PatientReview, days: int) -> dict:
    """A `collection` Bundle: the Patient, pain Observations (LOINC 72514-3), a DeviceUseStatement per
    TENS session (with its Device), the plan versions as CarePlans, and notifications as Communications."""
    patient = review.patient
    pid = fhir_id(patient.id)
    subject = {"reference": f"Patient/{pid}"}
    resources = [{"resourceType": "Patient", "id": pid, "active": True,
                  "identifier": [{"system": PATIENT_ID_SYSTEM, "value": patient.id}],
                  "name": [{"text": patient.display_name or ""}]}]
    for entry in review.pain(days)["entries"]:
        resources.append({"resourceType": "Observation", "id": fhir_id(entry["_id"]), "status": "final",
                          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                    "code": "survey", "display": "Survey"}]}],
                          "code": {"coding": [PAIN_NRS], "text": "Pain NRS (0-10)"}, "subject": subject,
                          "effectiveDateTime": _instant(entry["recorded_at"]), "valueInteger": int(entry["nrs"]),
                          **({"note": [{"text": f"rated {entry['phase']} a TENS session"}]} if entry.get("phase") else {})})
    sessions = review.sessions(days)
    for serial in sorted({s["device_serial"] for s in sessions}):
        resources.append({"resourceType": "Device", "id": fhir_id(serial), "serialNumber": serial,
                          "patient": subject, "type": {"coding": [TENS_SNOMED], "text": "TENS unit"}})
    for session in sessions:
        end = session["started_at"] + timedelta(seconds=session.get("duration_s") or 0)
        timing = "" if session.get("time_quality", "exact") == "exact" else f", time {session['time_quality']}"
        resources.append({"resourceType": "DeviceUseStatement", "id": fhir_id(session["_id"]),
                          "status": "on-hold" if session.get("held") else "completed",
                          "subject": subject, "device": {"reference": f"Device/{fhir_id(session['device_serial'])}"},
                          "timingPeriod": {"start": _instant(session["started_at"]), "end": _instant(end)},
                          "recordedOn": _instant(session.get("server_received_at")),
                          "note": [{"text": f"programme {session.get('programme')}, {session.get('frequency_hz')} Hz, "
                                            f"{session.get('pulse_width_us')} us, mean {session.get('intensity_mean_ma')} mA, "
                                            f"{round((session.get('duration_s') or 0) / 60)} min, "
                                            f"ended: {session.get('end_reason')}{timing}"}]})
    for plan in review.plans():
        resources.append({k: v for k, v in _care_plan(plan, subject).items() if v is not None})
    for note in review.notifications(days)["notifications"]:
        communication = {"resourceType": "Communication", "id": fhir_id(note["_id"]),
                         "status": _COMMUNICATION_STATUS.get(note.get("state"), "unknown"), "subject": subject,
                         "category": [{"text": note.get("kind") or "notification"}],
                         "medium": [{"text": "push notification"}],
                         "payload": [{"contentString": f"{note.get('kind') or 'notification'} notification"}]}
        if note.get("sent_at"):
            communication["sent"] = _instant(note["sent_at"])
        if note.get("delivered_at"):
            communication["received"] = _instant(note["delivered_at"])
        if note.get("recipient_user_id") == patient.id:
            communication["recipient"] = [subject]
        if note.get("state") == "failed" and note.get("error_codes"):
            communication["statusReason"] = {"text": ", ".join(note["error_codes"])}
        resources.append(communication)
    return {"resourceType": "Bundle", "type": "collection", "timestamp": _instant(review.at),
            "entry": [_entry(r) for r in resources]}
