"""A patient's profile: name, time zone (with its history, for travel), preferences."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api.auth import valid_zone
from companion.domain.access import Operation, Role
from companion.domain.people import (
    DEFAULT_CAREGIVER_ALERT_DELAY_MIN,
    LONGEST_CAREGIVER_ALERT_DELAY_MIN,
    SHORTEST_CAREGIVER_ALERT_DELAY_MIN,
)
from companion.http import auditing, conditional, services
from companion.http.conditional import (
    ETAG_HEADERS,
    IF_MATCH_DOC,
    IF_NONE_MATCH_DOC,
    NOT_MODIFIED_DOC,
    PRECONDITION_FAILED_DOC,
)
from companion.http.problems import conflict_doc
from companion.http.schemas import Pattern, StrictSchema, text, valid_locale
from companion.http.security import allow, require_patient

blp = Blueprint("patients", __name__, url_prefix="/api/v1/patients", description="Patient profiles")


class ZoneChangeSchema(Schema):
    zone = fields.String()
    effective_from = fields.DateTime()


def shown_quiet_hours(person) -> dict | None:
    """A person's quiet hours as the API shows them (``{"start": "22:00", "end": "07:00"}``), or None."""
    quiet = person.quiet_hours
    return {"start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M")} if quiet else None


class PatientSchema(Schema):
    id = fields.String(dump_only=True)
    display_name = fields.String(dump_only=True)
    time_zone = fields.String(dump_only=True)
    time_zone_history = fields.List(fields.Nested(ZoneChangeSchema), dump_only=True)
    quiet_hours = fields.Function(shown_quiet_hours, dump_only=True, allow_none=True, metadata={"type": "object"})
    caregiver_alert_delay_min = fields.Function(
        lambda p: p.caregiver_alert_delay_min or DEFAULT_CAREGIVER_ALERT_DELAY_MIN, dump_only=True,
        metadata={"type": "integer"})
    created_at = fields.DateTime(dump_only=True)
    locale = fields.String(dump_only=True, allow_none=True, metadata={
        "description": "the language chosen for notifications (BCP 47); null: each phone's own"})
    version = fields.Integer(attribute="profile_version", dump_only=True, metadata={
        "description": 'the profile\'s version (its ETag is "<version>"): send it in If-Match to change exactly '
                       "this version"})


class QuietHoursSchema(StrictSchema):
    start = fields.String(required=True, validate=Pattern(r"^([01]\d|2[0-3]):[0-5]\d$"))
    end = fields.String(required=True, validate=Pattern(r"^([01]\d|2[0-3]):[0-5]\d$"))


class PatientUpdateSchema(StrictSchema):
    display_name = text(100, min_len=1)
    time_zone = fields.String(validate=[validate.Length(max=64), valid_zone])
    quiet_hours = fields.Nested(QuietHoursSchema, allow_none=True)
    caregiver_alert_delay_min = fields.Integer(validate=validate.Range(min=SHORTEST_CAREGIVER_ALERT_DELAY_MIN,
                                                                       max=LONGEST_CAREGIVER_ALERT_DELAY_MIN))
    locale = fields.String(allow_none=True, validate=[validate.Length(max=35), valid_locale], metadata={
        "description": "the language notifications are written in (BCP 47, e.g. de-AT); null: the phone's"})


@blp.route("/<patient_id>")
class Patient(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.doc(parameters=[IF_NONE_MATCH_DOC])
    @blp.response(200, PatientSchema, headers=ETAG_HEADERS)
    @blp.alt_response(304, **NOT_MODIFIED_DOC)
    @blp.doc(operationId="get_patient")
    def get(self, patient_id):
        """A patient's profile (self, a consenting caregiver, or the care team)."""
        require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="patient", action="R", resource_ids=[patient_id])
        patient = services().profiles.patient(patient_id)
        return conditional.not_modified(patient.profile_version) or conditional.tagged(patient, patient.profile_version)

    @allow(Role.PATIENT)
    @blp.doc(parameters=[IF_MATCH_DOC])
    @blp.arguments(PatientUpdateSchema)
    @blp.response(200, PatientSchema, headers=ETAG_HEADERS)
    @blp.alt_response(412, **PRECONDITION_FAILED_DOC)
    @blp.alt_response(409, **conflict_doc(contended=True))
    @conditional.shows_current(PatientSchema)
    @blp.doc(operationId="update_patient")
    def patch(self, body, patient_id):
        """Update one's own profile: the fields sent change, the others stay. With If-Match, only if the
        profile is still at that version (else 412 with the current profile). A new time zone is recorded
        with when it took effect, so reminders before the move keep their old local times and later ones
        follow the new zone; a slot the move jumped over is kept (see the README's "Reminders at the
        edges")."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="patient", action="U", resource_ids=[patient_id])
        patient = services().profiles.update(patient_id, body, if_versions=conditional.if_match())
        return conditional.tagged(patient, patient.profile_version)
