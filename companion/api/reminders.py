"""Reminders (the patient's own, in wall-clock terms in their zone) and their occurrences."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from companion.api.reminder_schemas import (
    OccurrenceListSchema,
    OccurrenceOutcomeSchema,
    OccurrenceRangeArgs,
    OccurrenceSchema,
    ReminderEditSchema,
    ReminderInputSchema,
    ReminderListSchema,
    ReminderSchema,
    SnoozeSchema,
)
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.idempotency import idempotent, request_key
from companion.http.security import allow, require_patient

blp = Blueprint("reminders", __name__, url_prefix="/api/v1", description="Reminders and their occurrences")
READERS = (Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
WRITERS = (Role.PATIENT, Role.CAREGIVER)


@blp.route("/patients/<patient_id>/reminders")
class ReminderList(MethodView):
    @allow(*READERS)
    @blp.response(200, ReminderListSchema)
    def get(self, patient_id):
        """The patient's reminders, active and stopped."""
        require_patient(patient_id, Operation.READ)
        items = services().reminders.list(patient_id)
        auditing.note(patient_ids=[patient_id], resource="reminder", action="search",
                      resource_ids=[r["_id"] for r in items])
        return {"items": items}

    @allow(*WRITERS)
    @idempotent
    @blp.arguments(ReminderInputSchema)
    @blp.response(201, ReminderSchema)
    def post(self, body, patient_id):
        """Create a reminder; its occurrences for the next two days are materialized at once."""
        require_patient(patient_id, Operation.WRITE)
        reminder = services().reminders.create(patient_id, body, request_key=request_key())
        auditing.note(patient_ids=[patient_id], resource="reminder", action="C", resource_ids=[reminder["_id"]])
        return reminder


@blp.route("/patients/<patient_id>/reminders/<reminder_id>")
class ReminderView(MethodView):
    @allow(*READERS)
    @blp.response(200, ReminderSchema)
    def get(self, patient_id, reminder_id):
        """One reminder."""
        require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="reminder", action="R", resource_ids=[reminder_id])
        return services().reminders.get(patient_id, reminder_id)

    @allow(*WRITERS)
    @blp.arguments(ReminderEditSchema)
    @blp.response(200, ReminderSchema)
    def patch(self, body, patient_id, reminder_id):
        """Change a reminder; pending future occurrences follow, recorded ones are kept."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder", action="U", resource_ids=[reminder_id])
        return services().reminders.update(patient_id, reminder_id, body)

    @allow(*WRITERS)
    @blp.response(204)
    def delete(self, patient_id, reminder_id):
        """Stop a reminder (its history stays)."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder", action="D", resource_ids=[reminder_id])
        services().reminders.stop(patient_id, reminder_id)


@blp.route("/patients/<patient_id>/occurrences")
class OccurrenceList(MethodView):
    @allow(*READERS)
    @blp.arguments(OccurrenceRangeArgs, location="query")
    @blp.response(200, OccurrenceListSchema)
    def get(self, args, patient_id):
        """Reminder occurrences due in a range of at most 31 days, in time order."""
        grant = require_patient(patient_id, Operation.READ)
        items = services().reminders.occurrences_between(grant, args["start"], args["end"])
        auditing.note(patient_ids=[patient_id], resource="reminder_occurrence", action="search",
                      resource_ids=[o["_id"] for o in items])
        return {"items": items}


@blp.route("/patients/<patient_id>/occurrences/<occurrence_id>")
class OccurrenceView(MethodView):
    @allow(*WRITERS)
    @blp.arguments(OccurrenceOutcomeSchema)
    @blp.response(200, OccurrenceSchema)
    def patch(self, body, patient_id, occurrence_id):
        """Record an occurrence as done, or skipped with a reason."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder_occurrence", action="U",
                      resource_ids=[occurrence_id])
        return services().reminders.record_outcome(patient_id, occurrence_id, body["status"], body["skip_reason"])


@blp.route("/patients/<patient_id>/occurrences/<occurrence_id>/snooze")
class OccurrenceSnooze(MethodView):
    @allow(*WRITERS)
    @blp.arguments(SnoozeSchema)
    @blp.response(200, OccurrenceSchema)
    def post(self, body, patient_id, occurrence_id):
        """Remind again in a few minutes."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder_occurrence", action="U",
                      resource_ids=[occurrence_id])
        return services().reminders.snooze(patient_id, occurrence_id, body["minutes"])
