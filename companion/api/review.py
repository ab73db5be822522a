"""Reviewing one patient: adherence, TENS against the plan, pain and what helped, reminders and
notifications, devices, diary, plan history; alerts to acknowledge, clinical notes, and exports."""

from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Response, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint

from companion.api import review_schemas as s
from companion.api.clinician import PanelRowSchema
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.idempotency import idempotent, request_key
from companion.http.security import allow, current_actor, patient_may, require_patient
from companion.services import exports
from companion.services.review import PatientReview

blp = Blueprint("review", __name__, url_prefix="/api/v1/patients", description="Clinician review of one patient")


def open_review(patient_id: str, operation: Operation = Operation.READ) -> PatientReview:
    require_patient(patient_id, operation)
    svc = services()
    return svc.review.of_patient(svc.profiles.patient(patient_id))


def open_period(patient_id: str, args: dict) -> tuple[PatientReview, int]:
    """The review of the period an export asks for (s.ExportArgs), and its number of days."""
    require_patient(patient_id, Operation.EXPORT)
    svc = services()
    return svc.review.of_period(svc.profiles.patient(patient_id), days=args.get("days"), first=args.get("from_"),
                                last=args.get("to"))


def _read(patient_id: str, resource: str, ids=()) -> None:
    auditing.note(patient_ids=[patient_id], resource=resource, action="R", resource_ids=list(ids))


@blp.route("/<patient_id>/review/adherence")
class ReviewAdherence(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(s.ReviewDaysArgs, location="query")
    @blp.response(200, s.AdherenceReviewSchema)
    @blp.doc(operationId="review_adherence")
    def get(self, args, patient_id):
        """Adherence calendar (one entry per local day) and PDC over 7, 30 and 90 completed days."""
        result = open_review(patient_id).adherence(args["days"])
        _read(patient_id, "adherence_day")
        return result


@blp.route("/<patient_id>/review/summary")
class ReviewSummary(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, PanelRowSchema)
    @blp.doc(operationId="review_summary")
    def get(self, patient_id):
        """The patient's summary figures, as their line on the panel: PDC over 7 and 30 completed days, the pain
        trend, days since the last sync, open alerts and why they may need attention (one read of the panel's
        read model)."""
        require_patient(patient_id, Operation.READ)
        svc = services()
        result = svc.review.summary(svc.profiles.patient(patient_id))
        _read(patient_id, "patient", [patient_id])
        return result


@blp.route("/<patient_id>/review/tens")
class ReviewTens(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(s.ReviewDaysArgs, location="query")
    @blp.response(200, s.TensReviewSchema)
    @blp.doc(operationId="review_tens")
    def get(self, args, patient_id):
        """TENS minutes and sessions per local day, against the plan's daily target."""
        days = open_review(patient_id).tens(args["days"])
        _read(patient_id, "session_record")
        return {"days": days}


@blp.route("/<patient_id>/review/pain")
class ReviewPain(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(s.ReviewDaysArgs, location="query")
    @blp.response(200, s.PainReviewSchema)
    @blp.doc(operationId="review_pain")
    def get(self, args, patient_id):
        """Pain (NRS) over time, before/after pairs around TENS sessions, and the 14-day trend."""
        result = open_review(patient_id).pain(args["days"])
        _read(patient_id, "pain_entry", [e["_id"] for e in result["entries"]])
        return result


@blp.route("/<patient_id>/review/programmes")
class ReviewProgrammes(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(s.ReviewDaysArgs, location="query")
    @blp.response(200, s.ProgrammeReviewSchema)
    @blp.doc(operationId="review_programmes")
    def get(self, args, patient_id):
        """Mean pain change after sessions, by programme and frequency; the most helpful first."""
        result = open_review(patient_id).programme_review(args["days"])
        _read(patient_id, "pain_entry")
        return result


@blp.route("/<patient_id>/review/notifications")
class ReviewNotifications(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(s.ReviewDaysArgs, location="query")
    @blp.response(200, s.NotificationReviewSchema)
    @blp.doc(operationId="review_notifications")
    def get(self, args, patient_id):
        """Reminder occurrences with their outcome, and push notifications with their delivery state."""
        result = open_review(patient_id).notifications(args["days"])
        _read(patient_id, "notification", [n["_id"] for n in result["notifications"]])
        return result


@blp.route("/<patient_id>/review/device")
class ReviewDevice(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, s.DeviceReviewSchema)
    @blp.doc(operationId="review_device")
    def get(self, patient_id):
        """The patient's TENS units with battery, firmware and last sync, and the last 30 days' device events."""
        result = open_review(patient_id).device()
        _read(patient_id, "device", [d["_id"] for d in result["devices"]])
        return result


@blp.route("/<patient_id>/review/diary")
class ReviewDiary(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(s.ReviewDaysArgs, location="query")
    @blp.response(200, s.DiaryReviewSchema)
    @blp.doc(operationId="review_diary")
    def get(self, args, patient_id):
        """Diary entries (newest first, with context and BPI) and mindfulness practice."""
        result = open_review(patient_id).diary(args["days"])
        _read(patient_id, "pain_entry", [e["_id"] for e in result["entries"]])
        return result


@blp.route("/<patient_id>/review/plans")
class ReviewPlans(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, s.ReviewPlanHistorySchema)
    @blp.doc(operationId="review_plans")
    def get(self, patient_id):
        """The versions of the therapy plan, newest first (the newest 200; `items_complete` says whether that
        is every one)."""
        items, complete = open_review(patient_id).plan_history()
        _read(patient_id, "therapy_plan", [p["_id"] for p in items])
        return {"items": items, "items_complete": complete}


@blp.route("/<patient_id>/review/alerts")
class ReviewAlerts(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(s.AlertListArgs, location="query")
    @blp.response(200, s.ReviewAlertListSchema)
    @blp.doc(operationId="review_alerts")
    def get(self, args, patient_id):
        """The patient's alerts, open ones only by default, newest first (the newest 200; `items_complete` says
        whether that is all of them)."""
        require_patient(patient_id, Operation.READ)
        items, complete = services().alerts.review_list(patient_id, open_only=args["state"] == "open")
        _read(patient_id, "alert", [a["_id"] for a in items])
        return {"items": items, "items_complete": complete}


@blp.route("/<patient_id>/review/alerts/<alert_id>/acknowledgement")
class AlertAcknowledgement(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, s.ReviewAlertSchema)
    @blp.doc(operationId="acknowledge_alert")
    def post(self, patient_id, alert_id):
        """Acknowledge an alert (a care-team act). Acknowledging twice keeps the first acknowledgement."""
        require_patient(patient_id, Operation.SETTLE)
        auditing.note(patient_ids=[patient_id], resource="alert", action="U", resource_ids=[alert_id])
        return services().alerts.acknowledge(patient_id, alert_id, current_actor().id)


@blp.route("/<patient_id>/review/notes")
class ClinicalNotesView(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, s.ClinicalNoteListSchema)
    @blp.doc(operationId="list_clinical_notes")
    def get(self, patient_id):
        """The care team's clinical notes about this patient, newest first (the newest 100; `items_complete` says
        whether that is all of them)."""
        require_patient(patient_id, Operation.READ)
        notes, complete = services().review.notes(patient_id)
        _read(patient_id, "clinical_note", [n["_id"] for n in notes])
        return {"items": notes, "items_complete": complete}

    @allow(Role.CLINICIAN)
    @idempotent(access=patient_may(Operation.CLINICAL))
    @blp.arguments(s.ClinicalNoteCreateSchema)
    @blp.response(201, s.ClinicalNoteSchema)
    @blp.doc(operationId="add_clinical_note")
    def post(self, body, patient_id):
        """Write a clinical note (a care-team act; notes are never edited: write another)."""
        services().profiles.patient(patient_id)
        note = services().review.add_note(patient_id, current_actor().id, body["text"], request_key=request_key())
        auditing.note(patient_ids=[patient_id], resource="clinical_note", action="C", resource_ids=[note["_id"]])
        return note


def _download(body: str | Iterator[str], mimetype: str, filename: str) -> Response:
    """An export as a file; one in pieces is streamed as it is read (a failure on the way ends the transfer
    unfinished, so that no client takes a cut file for a whole one)."""
    if not isinstance(body, str):
        body = stream_with_context(body)
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@blp.route("/<patient_id>/exports/csv")
class PatientCsvExport(MethodView):
    @allow(Role.CLINICIAN, Role.PATIENT)
    @blp.arguments(s.ExportArgs, location="query")
    @blp.response(200, content_type="text/csv", description="one row per local day")
    @blp.doc(operationId="export_patient_csv")
    def get(self, args, patient_id):
        """The patient's days as CSV: adherence, TENS minutes against the plan, pain (the care team, or the
        patient themself). UTF-8 with a byte order mark."""
        review, days = open_period(patient_id, args)
        auditing.note(patient_ids=[patient_id], resource="patient", action="E", resource_ids=[patient_id])
        return _download(exports.patient_csv(review, days), "text/csv", f"patient-{patient_id}.csv")


@blp.route("/<patient_id>/exports/events")
class PatientEventsCsvExport(MethodView):
    @allow(Role.CLINICIAN, Role.PATIENT)
    @blp.arguments(s.ExportArgs, location="query")
    @blp.response(200, content_type="text/csv",
                  description="one row per TENS session, diary entry, medication dose and mindfulness practice")
    @blp.doc(operationId="export_patient_events_csv")
    def get(self, args, patient_id):
        """The patient's events as CSV, oldest first, each with its local time (the patient's zone) and its
        UTC time: TENS sessions with their parameters, diary entries with context and BPI, medication doses
        with their outcome, mindfulness practice. UTF-8 with a byte order mark. For the care team, or the
        patient themself."""
        review, days = open_period(patient_id, args)
        auditing.note(patient_ids=[patient_id], resource="patient", action="E", resource_ids=[patient_id])
        return _download(exports.events_csv_chunks(review, days), "text/csv", f"patient-{patient_id}-events.csv")


@blp.route("/<patient_id>/exports/fhir")
class PatientFhirExport(MethodView):
    @allow(Role.CLINICIAN, Role.PATIENT)
    @blp.arguments(s.ExportArgs, location="query")
    @blp.response(200, content_type="application/fhir+json", description="a FHIR R4 Bundle of type transaction")
    @blp.doc(operationId="export_patient_fhir")
    def get(self, args, patient_id):
        """The patient's record as a FHIR R4 transaction Bundle, ready to POST to a FHIR server's base URL:
        Patient (created once), TENS sessions (Observation of the parameters in UCUM units, DeviceUseStatement,
        Device), pain NRS Observations with diary context, BPI QuestionnaireResponses with their scores,
        CarePlans and Communications, each updated in place when imported again (docs/exports.md). For the
        care team, or the patient themself."""
        review, days = open_period(patient_id, args)
        auditing.note(patient_ids=[patient_id], resource="patient", action="E", resource_ids=[patient_id])
        return _download(json.dumps(exports.fhir_bundle(review, days)), "application/fhir+json",
                         f"patient-{patient_id}.fhir.json")
