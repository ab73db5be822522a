"""A patient's record as a FHIR R4 `transaction` Bundle: a FHIR server (HAPI FHIR, Medplum) imports its
entries as resources, and importing the same export again updates them instead of adding copies.

How the Bundle is built (docs/exports.md says why):

* Every resource carries one identifier, ``urn:ietf:rfc:3986`` | ``urn:uuid:<uuid5 of what it is in
  Companion>``: the same record always gets the same identifier, and it names nothing that does not exist
  (no invented base URL). The entry's ``fullUrl`` is that same ``urn:uuid``, and resources refer to one
  another by it; the server rewrites those references to the ids it assigns.
* Companion's own records are written with a conditional update, ``PUT Observation?identifier=…``: created
  on the first import, replaced by the newer version on the next (an edited diary entry, a plan version that
  has since ended). The Patient is a conditional create, ``POST Patient`` with ``ifNoneExist``: a server
  that already holds a Patient with Companion's identifier keeps it as it is, so an export never overwrites
  the demographics a clinic keeps itself.
* Codes: pain NRS LOINC 72514-3; BPI pain interference score LOINC 77565-0; every other code is text only
  where no code could be confirmed (the BPI severity score, the TENS parameters), rather than a guessed
  code. Quantities are UCUM: Hz, us, mA, min, %, {score}.
* Text goes in as a FHIR string may hold it (``fhir_string``): stored text can hold control characters, which
  FHIR strings and the narrative's XHTML cannot.
* A TENS session keeps the period its unit recorded, and says in Companion's extension ``COUNTED_MINUTES`` (and a
  note, when not all of it) how many of its minutes count in the adherence figures: a session that overlapped an
  earlier one of its unit counts only its minutes outside it, so summing the periods would count that time twice.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from companion.domain.plans import tens_course
from companion.domain.sessions import counted_minutes_shown, how_it_counts
from companion.services.review import PatientReview

IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
# The namespace of Companion's identifiers: uuid5(NAMESPACE, "<kind>/<our id>"). Never change it: a new
# namespace makes every record look new to the servers that imported the old ones.
NAMESPACE = uuid.UUID("34fe11b0-e03b-492d-80e6-3b3bf8c05a2f")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PAIN_NRS = {"system": LOINC, "code": "72514-3",
            "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported"}
# LOINC 77565-0, in the VSAC value set "Standardized Pain Assessment Tool" (2.16.840.1.113883.3.526.3.1028).
BPI_INTERFERENCE = {"system": LOINC, "code": "77565-0", "display": "Pain interference score [BPI Short Form]"}
TENS_SNOMED = {"system": "http://snomed.info/sct", "code": "20701002",
               "display": "Transcutaneous electrical nerve stimulation"}
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SURVEY = [{"coding": [{"system": _CATEGORY, "code": "survey", "display": "Survey"}]}]
THERAPY = [{"coding": [{"system": _CATEGORY, "code": "therapy", "display": "Therapy"}]}]
_COMMUNICATION_STATUS = {"scheduled": "preparation", "sending": "in-progress", "sent": "completed",
                         "failed": "not-done", "expired": "stopped", "withdrawn": "not-done"}
# Companion's own extensions: canonical URLs under the project's URI base (its problem types' too,
# companion.http.problems), each defined in docs/exports.md. A name, not a page to fetch; never change one: a
# server that imported an export knows the extension by it.
EXTENSION_BASE = "https://companion.example/fhir/StructureDefinition/"
COUNTED_MINUTES = f"{EXTENSION_BASE}counted-minutes"  # Quantity in min: a TENS session's minutes in the figures
# The BPI short form's items as the diary stores them, with the wording of the form.
BPI_SEVERITY_ITEMS = (("worst", "Pain at its worst in the last 24 hours"),
                      ("least", "Pain at its least in the last 24 hours"),
                      ("average", "Pain on the average"),
                      ("now", "Pain right now"))
BPI_INTERFERENCE_ITEMS = (("general_activity", "General activity"), ("mood", "Mood"),
                          ("walking_ability", "Walking ability"),
                          ("normal_work", "Normal work (both work outside the home and housework)"),
                          ("relations", "Relations with other people"), ("sleep", "Sleep"),
                          ("enjoyment_of_life", "Enjoyment of life"))


# What a FHIR string may not hold (R4 "string": no character below U+0020 but tab, line feed and carriage return)
# and XML 1.0 may not either (the narrative is XHTML), with XML's two non-characters. Text fields refuse only NUL
# (companion.http.schemas.no_nul): a line or page break pasted from a word processor is U+000B or U+000C.
_NOT_IN_A_STRING = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]+"
_AT_THE_ENDS = re.compile(f"^{_NOT_IN_A_STRING}|{_NOT_IN_A_STRING}$")
_INSIDE = re.compile(_NOT_IN_A_STRING)


def fhir_string(text: str) -> str:
    """``text`` as a FHIR string may hold it: each run of control characters (but tab, line feed and carriage
    return) inside it a space, none at its ends; text of nothing else the replacement character, since a FHIR
    string is never empty."""
    if not _INSIDE.search(text):
        return text
    return _INSIDE.sub(" ", _AT_THE_ENDS.sub("", text)) or "\ufffd"


def _strings_cleaned(node):
    if isinstance(node, str):
        return fhir_string(node)
    if isinstance(node, dict):
        return {key: _strings_cleaned(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_strings_cleaned(value) for value in node]
    return node


def record_urn(kind: str, our_id: str) -> str:
    """The stable ``urn:uuid`` of one of our records (``kind`` tells apart the resources made from one record)."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{kind}/{our_id}')}"


def quantity(value: float | int, code: str, unit: str | None = None) -> dict:
    """A UCUM Quantity; whole numbers are written as integers."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


def _instant(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _narrative(text: str) -> dict:
    return {"status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{escape(fhir_string(text))}</div>'}


def _component(label: str, **value) -> dict:
    return {"code": {"text": label}, **value}


class _Entries:
    """The Bundle's entries, each with its urn:uuid, identifier and request."""

    def __init__(self):
        self.entries: list[dict] = []

    def upsert(self, resource: dict, urn: str, summary: str) -> dict:
        """A conditional update by identifier; returns a reference to the entry."""
        kind = resource["resourceType"]
        identifier = {"system": IDENTIFIER_SYSTEM, "value": urn}
        # QuestionnaireResponse has a single identifier; every other resource here a list of them.
        resource = {"resourceType": kind, "text": _narrative(summary),
                    "identifier": identifier if kind == "QuestionnaireResponse" else [identifier],
                    **{k: _strings_cleaned(v) for k, v in resource.items() if k != "resourceType" and v is not None}}
        self.entries.append({"fullUrl": urn, "resource": resource, "request": {
            "method": "PUT", "url": f"{kind}?identifier={IDENTIFIER_SYSTEM}|{urn}"}})
        return {"reference": urn}

    def create_once(self, resource: dict, urn: str, summary: str) -> dict:
        """A conditional create by identifier: an existing match is used as it is."""
        kind = resource["resourceType"]
        resource = {"resourceType": kind, "text": _narrative(summary),
                    "identifier": [{"system": IDENTIFIER_SYSTEM, "value": urn}],
                    **{k: _strings_cleaned(v) for k, v in resource.items() if k != "resourceType"}}
        self.entries.append({"fullUrl": urn, "resource": resource, "request": {
            "method": "POST", "url": kind, "ifNoneExist": f"identifier={IDENTIFIER_SYSTEM}|{urn}"}})
        return {"reference": urn}


def _local(moment: datetime, review: PatientReview) -> str:
    return moment.astimezone(ZoneInfo(review.zone_of(moment))).strftime("%d %b %Y %H:%M")


def _devices(out: _Entries, review: PatientReview, serials: Iterable[str], patient: dict) -> dict[str, dict]:
    """One Device per unit bound to the patient or seen in a session; {serial: reference}."""
    units = {u["_id"]: u for u in review.device()["devices"]}
    refs = {}
    for serial in sorted(set(serials) | set(units)):
        unit = units.get(serial, {})
        status = unit.get("status") or {}
        device = {"resourceType": "Device", "serialNumber": serial, "patient": patient,
                  "type": {"text": "TENS unit (transcutaneous electrical nerve stimulator)"},
                  "deviceName": [{"name": unit["profile"], "type": "model-name"}] if unit.get("profile") else None,
                  "version": [{"type": {"text": "firmware"}, "value": status["firmware"]}]
                  if status.get("firmware") else None,
                  "property": [{"type": {"text": "battery level at last sync"},
                                "valueQuantity": [quantity(status["battery_pct"], "%")]}]
                  if isinstance(status.get("battery_pct"), int | float) else None}
        # One Device per unit *and patient*: a unit that changed hands appears in both patients' bundles, and
        # one identifier for both would make the receiving server's single Device point at whoever came last.
        refs[serial] = out.upsert(device, record_urn("Device", f"{serial}/{review.patient.id}"), f"TENS unit {serial}")
    return refs


def _counting_note(session: dict, counts: str, counted: float, minutes: float) -> list[dict] | None:
    """How a session counts in the figures, in plain words, when not all of it does."""
    if counts == "partly_counted":
        earlier = f"session {session['overlaps']}" if session.get("overlaps") else "an earlier session"
        return [{"text": f"Partly counted: {counted:g} of its {minutes:g} minutes count in Companion's adherence "
                         f"figures. The rest overlapped {earlier} of the same unit, which counts that time."}]
    if counts == "held":
        return [{"text": "Held back from Companion's adherence figures until the care team decides: none of its "
                         "minutes count for now."}]
    if counts == "excluded":
        return [{"text": "Excluded by the care team: none of its minutes count in Companion's adherence figures."}]
    return None


def _session(out: _Entries, session: dict, patient: dict, device: dict, review: PatientReview) -> None:
    """A TENS session: an Observation of what the unit delivered (UCUM), and the DeviceUseStatement, each with
    the minutes of it that count in the figures (COUNTED_MINUTES)."""
    sid = session["_id"]
    reported = session.get("duration_s") or 0
    minutes = round(reported / 60, 1)
    counts = how_it_counts(session)
    # What the session adds to its day's figures, as the day CSV and the adherence days add it up (held: nothing).
    counted = 0.0 if session.get("held") else counted_minutes_shown(session)
    extension = [{"url": COUNTED_MINUTES, "valueQuantity": quantity(counted, "min")}]
    note = _counting_note(session, counts, counted, minutes)
    # A unit can report a length below zero (stored, held as a clinical finding); a FHIR Period may not end before
    # it starts (per-1, and a server refuses the whole transaction), so its period ends where it starts and the
    # duration component keeps what the unit reported.
    period = {"start": _instant(session["started_at"]),
              "end": _instant(session["started_at"] + timedelta(seconds=max(reported, 0)))}
    components = [_component("programme", valueInteger=session["programme"])
                  if session.get("programme") is not None else None]
    for label, field, code, unit in (("stimulation frequency", "frequency_hz", "Hz", None),
                                     ("pulse width", "pulse_width_us", "us", "µs"),
                                     ("intensity, mean", "intensity_mean_ma", "mA", None),
                                     ("intensity, peak", "intensity_peak_ma", "mA", None)):
        if session.get(field) is not None:
            components.append(_component(label, valueQuantity=quantity(session[field], code, unit)))
    components.append(_component("duration" if reported >= 0 else
                                 "duration as the unit reported it (below zero: the period ends where it starts)",
                                 valueQuantity=quantity(minutes, "min")))
    if session.get("end_reason"):
        components.append(_component("how the session ended", valueString=session["end_reason"]))
    if session.get("clock_status"):
        components.append(_component("unit's clock at sync (ok, skewed, reset, ahead)",
                                     valueString=session["clock_status"]))
    if session.get("time_quality"):
        components.append(_component("how sure the start time is (exact, corrected, estimated)",
                                     valueString=session["time_quality"]))
    summary = (f"TENS session {sid}, {_local(session['started_at'], review)} ({review.zone_of(session['started_at'])}), {minutes:g} min, "
               f"{session.get('frequency_hz')} Hz, {session.get('pulse_width_us')} µs, "
               f"mean {session.get('intensity_mean_ma')} mA"
               + (f"; {counted:g} min of it count in the adherence figures" if counts != "counted" else ""))
    record = out.upsert({"resourceType": "Observation", "extension": extension, "status": "final", "category": THERAPY,
                         "code": {"text": "TENS session delivered, as recorded by the unit"}, "subject": patient,
                         "effectivePeriod": period, "issued": _instant(session.get("server_received_at")),
                         "performer": [patient], "device": device, "component": [c for c in components if c],
                         "note": note}, record_urn("Observation/tens-session", sid), summary)
    # A session held back from the figures (its time, owner or values in doubt) is "on-hold" until resolved; one
    # the care team excluded is "entered-in-error": the unit's record stands, but it was not this therapy.
    # A partly counted one happened as recorded: "completed", its period whole, what counts in the extension.
    status = {"excluded": "entered-in-error", "held": "on-hold"}.get(counts, "completed")
    out.upsert({"resourceType": "DeviceUseStatement", "extension": extension, "status": status, "subject": patient,
                "device": device, "timingPeriod": period, "recordedOn": _instant(session.get("server_received_at")),
                "derivedFrom": [record], "note": note}, record_urn("DeviceUseStatement", sid), summary)


def _pain_entry(out: _Entries, entry: dict, patient: dict, review: PatientReview) -> None:
    """A diary entry: the NRS rating with its context; with a BPI, the form and its two scores."""
    eid = entry["_id"]
    context = entry.get("context") or {}
    when = _local(entry["recorded_at"], review)
    components = [_component("activity at the time", valueString=context["activity"])
                  if context.get("activity") else None,
                  _component("sleep quality (0-10, as the patient rated it)", valueInteger=context["sleep_quality"])
                  if context.get("sleep_quality") is not None else None,
                  _component("mood (0-10, as the patient rated it)", valueInteger=context["mood"])
                  if context.get("mood") is not None else None]
    notes = []
    if entry.get("phase") and entry.get("session_record_id"):
        notes.append({"text": f"Rated {entry['phase']} the TENS session recorded as {entry['session_record_id']}."})
    if context.get("note"):
        notes.append({"authorReference": patient, "text": context["note"]})
    out.upsert({"resourceType": "Observation", "status": "final", "category": SURVEY,
                "code": {"coding": [PAIN_NRS], "text": "Pain NRS (0-10)"}, "subject": patient,
                "effectiveDateTime": _instant(entry["recorded_at"]), "performer": [patient],
                "valueInteger": int(entry["nrs"]),
                "bodySite": {"text": context["location"]} if context.get("location") else None,
                "note": notes or None, "component": [c for c in components if c] or None},
               record_urn("Observation/pain-nrs", eid),
               f"Pain {entry['nrs']}/10 on {when}" + (f", {context['location']}" if context.get("location") else ""))
    bpi = entry.get("bpi")
    if not bpi:
        return
    form = out.upsert(_bpi_form(bpi, entry, patient), record_urn("QuestionnaireResponse/bpi", eid),
                      f"Brief Pain Inventory (short form), {when}")
    for kind, code, score, label in _bpi_scores(bpi):
        out.upsert({"resourceType": "Observation", "status": "final", "category": SURVEY, "code": code,
                    "subject": patient, "effectiveDateTime": _instant(entry["recorded_at"]), "performer": [patient],
                    "valueQuantity": quantity(round(float(score), 2), "{score}", "score"), "derivedFrom": [form]},
                   record_urn(f"Observation/{kind}", eid), f"{label} {round(float(score), 2):g} on {when}")


def _bpi_form(bpi: dict, entry: dict, patient: dict) -> dict:
    answers = bpi.get("interference") or {}
    items = [{"linkId": "severity", "text": "Pain severity", "item": [
        {"linkId": key, "text": text, "answer": [{"valueInteger": bpi[key]}]} for key, text in BPI_SEVERITY_ITEMS]}]
    interference = [{"linkId": key, "text": text, "answer": [{"valueInteger": answers[key]}]}
                    for key, text in BPI_INTERFERENCE_ITEMS if answers.get(key) is not None]
    if interference:
        items.append({"linkId": "interference",
                      "text": "How much pain has interfered in the last 24 hours (0 does not interfere, "
                              "10 completely interferes)", "item": interference})
    return {"resourceType": "QuestionnaireResponse", "status": "completed", "subject": patient,
            "authored": _instant(entry["recorded_at"]), "author": patient, "source": patient, "item": items}


def _bpi_scores(bpi: dict) -> list[tuple[str, dict, float, str]]:
    """The BPI's scores that were worked out: (kind, code, score, label)."""
    scores = [("bpi-severity", {"text": "BPI pain severity score (mean of worst, least, average and now)"},
               bpi.get("severity"), "BPI pain severity"),
              ("bpi-interference", {"coding": [BPI_INTERFERENCE], "text": "BPI pain interference score"},
               bpi.get("interference_score"), "BPI pain interference")]
    return [score for score in scores if score[2] is not None]


def _deleted_pain_entry(out: _Entries, entry: dict, patient: dict, review: PatientReview) -> None:
    """A diary entry the patient deleted, while it is a tombstone: the resources it was exported as, again under
    their identifiers, ``entered-in-error`` and without anything the patient wrote, so that a server which
    imported the entry holds it as retracted, and one which never did learns nothing of what it said."""
    eid = entry["_id"]
    when = _local(entry["recorded_at"], review)
    recorded = _instant(entry["recorded_at"])
    out.upsert({"resourceType": "Observation", "status": "entered-in-error", "category": SURVEY,
                "code": {"coding": [PAIN_NRS], "text": "Pain NRS (0-10)"}, "subject": patient,
                "effectiveDateTime": recorded, "performer": [patient]},
               record_urn("Observation/pain-nrs", eid), f"Pain rating of {when}, deleted by the patient")
    bpi = entry.get("bpi")
    if not bpi:
        return
    form = out.upsert({"resourceType": "QuestionnaireResponse", "status": "entered-in-error", "subject": patient,
                       "authored": recorded, "author": patient, "source": patient},
                      record_urn("QuestionnaireResponse/bpi", eid),
                      f"Brief Pain Inventory (short form) of {when}, deleted by the patient")
    for kind, code, _, label in _bpi_scores(bpi):
        out.upsert({"resourceType": "Observation", "status": "entered-in-error", "category": SURVEY, "code": code,
                    "subject": patient, "effectiveDateTime": recorded, "performer": [patient], "derivedFrom": [form]},
                   record_urn(f"Observation/{kind}", eid), f"{label} of {when}, deleted by the patient")


def _tens_status(plan: dict, last: date | None, upcoming: date | None, review: PatientReview) -> str:
    """The TENS activity's status, from the days that follow its course (companion.domain.plans.day_plan, as the
    figures have them): ``last`` the last of them up to the export's last day, ``upcoming`` the first after it
    when none came before. A course written when its end date had passed is completed, though no day follows
    this version's copy of it."""
    start, end = tens_course(plan)
    if last == review.today:
        return "in-progress"
    if last is not None:
        return "completed" if end and end <= last else "stopped"
    if upcoming is not None:
        return "not-started"
    return "completed" if end and end < review.local_date(plan["active_from"]) else "cancelled"


def _dates(start: date | None, end: date | None) -> str:
    return (f", from {start.isoformat()}" if start else "") + (f" until {end.isoformat()}" if end else "")


def _care_plan(out: _Entries, plan: dict, patient: dict, replaces: dict | None, review: PatientReview,
               versions: list[dict]) -> dict:
    tens = plan.get("tens") or {}
    ended = bool(plan.get("active_to"))
    activity_status = "stopped" if ended else "in-progress"
    activities = []
    last, upcoming = review.tens_course_days(versions, plan) if tens else (None, None)
    tens_status = _tens_status(plan, last, upcoming, review) if tens else None
    if tens:
        per_session = tens.get("minutes_per_session")
        target = tens.get("daily_minutes_target") or ((tens.get("sessions_per_day") or 0) * (per_session or 0)) or None
        start, end = tens_course(plan)
        bounds = {k: v.isoformat() for k, v in {"start": start, "end": end}.items() if v}
        repeat = {k: v for k, v in {"boundsPeriod": bounds or None, "frequency": tens.get("sessions_per_day"),
                                    "period": 1 if tens.get("sessions_per_day") else None,
                                    "periodUnit": "d" if tens.get("sessions_per_day") else None,
                                    "duration": per_session, "durationUnit": "min" if per_session else None}.items()
                  if v is not None}
        activities.append({"detail": {k: v for k, v in {
            "kind": "DeviceRequest", "code": {"coding": [TENS_SNOMED], "text": "TENS"},
            "status": tens_status, "scheduledTiming": {"repeat": repeat} if repeat else None,
            "dailyAmount": quantity(target, "min") if target else None,
            "description": f"TENS: {target or 'as needed'} min/day, {per_session} min per session, "
                           f"programmes {', '.join(str(p) for p in tens.get('programmes') or []) or 'any'}, "
                           f"{tens.get('intensity_min_ma')}-{tens.get('intensity_max_ma')} mA"
                           f"{_dates(start, end)}"}.items()
            if v is not None}})
    for medication in plan.get("medications") or []:
        activities.append({"detail": {"kind": "MedicationRequest", "status": activity_status,
                                      "description": f"{medication.get('name')} {medication.get('dose')} at "
                                                     f"{', '.join(medication.get('times') or [])}"}})
    mindfulness = plan.get("mindfulness") or {}
    if mindfulness.get("minutes_per_day") or mindfulness.get("sessions_per_week"):
        activities.append({"detail": {"status": activity_status, "description":
                                      f"Mindfulness: {mindfulness.get('minutes_per_day') or '-'} min/day, "
                                      f"{mindfulness.get('sessions_per_week') or '-'} sessions/week"}})
    # A replaced version whose TENS course the days still follow, or will (a newer version's course starts
    # later), is active; once nothing of it is followed, its period ends with the last day anything was.
    running = not ended or tens_status in ("in-progress", "not-started")
    period = {"start": _instant(plan["active_from"])}
    if not running:
        period["end"] = _instant(max(plan["active_to"], review.day_end(last)) if last else plan["active_to"])
    return out.upsert({"resourceType": "CarePlan", "status": "active" if running else "revoked", "intent": "plan",
                       "title": f"Therapy plan version {plan['version']}", "subject": patient, "period": period,
                       "created": _instant(plan.get("created_at")), "replaces": [replaces] if replaces else None,
                       "activity": activities or None},
                      record_urn("CarePlan", plan["_id"]), f"Therapy plan version {plan['version']}")


def _status_reason(note: dict) -> dict | None:
    if note.get("state") == "failed" and note.get("error_codes"):
        return {"text": ", ".join(note["error_codes"])}
    if note.get("state") == "withdrawn":
        return {"text": f"withdrawn: {note.get('withdrawn_reason') or 'consent'}"}
    return None


def _communication(out: _Entries, note: dict, patient: dict, patient_id: str) -> None:
    kind = note.get("kind") or "notification"
    communication = {"resourceType": "Communication", "status": _COMMUNICATION_STATUS.get(note.get("state"), "unknown"),
                     "subject": patient, "category": [{"text": kind}], "medium": [{"text": "push notification"}],
                     "payload": [{"contentString": f"{kind} notification"}],
                     "sent": _instant(note.get("sent_at")), "received": _instant(note.get("delivered_at")),
                     "recipient": [patient] if note.get("recipient_user_id") == patient_id else None,
                     "statusReason": _status_reason(note)}
    out.upsert(communication, record_urn("Communication", note["_id"]), f"{kind} push notification")


def transaction_bundle(review: PatientReview, days: int) -> dict:
    """The patient's last `days` local days as a transaction Bundle: the Patient; each TENS session as an
    Observation of its parameters and a DeviceUseStatement, with its Device; each diary entry as a pain NRS
    Observation with its context, and a BPI as a QuestionnaireResponse with its scores (a deleted one, while it
    is a tombstone, entered-in-error); the therapy plan
    versions as CarePlans; push notifications as Communications."""
    out = _Entries()
    patient_id = review.patient.id
    name = (review.patient.display_name or "").strip()
    patient = out.create_once({"resourceType": "Patient", "active": True,
                               **({"name": [{"text": name}]} if name else {})},  # FHIR has no empty strings
                              record_urn("Patient", patient_id), f"{name or 'A patient'} (exported from Companion)")
    sessions = list(review.period_sessions(days))
    devices = _devices(out, review, (s["device_serial"] for s in sessions), patient)
    previous = None
    plans = review.plans()
    # Every version a day can follow, those exported written later than the export's last day included.
    versions = list({p["_id"]: p for p in [*review.versions_in_reach(), *plans]}.values())
    for plan in sorted(plans, key=lambda p: p["version"]):
        previous = _care_plan(out, plan, patient, previous, review, versions)
    for session in sessions:
        _session(out, session, patient, devices[session["device_serial"]], review)
    for entry in review.period_entries(days):
        _pain_entry(out, entry, patient, review)
    for entry in review.period_deleted_entries(days):
        _deleted_pain_entry(out, entry, patient, review)
    for note in review.period_notifications(days):
        _communication(out, note, patient, patient_id)
    return {"resourceType": "Bundle", "type": "transaction", "timestamp": _instant(review.at), "entry": out.entries}
