"""A patient's profile: name, time zone (with its history, for travel), preferences."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api import auditing, services
from companion.api.auth import valid_zone
from companion.api.schemas import StrictSchema, text
from companion.api.security import allow, require_patient
from companion.domain.access import Operation, Role
from companion.domain.errors import NotFound
from companion.services.reminders import refresh_future
from companion.store.accounts import now

blp = Blueprint("patients", __name__, url_prefix="/api/v1/patients", description="Patient profiles")


class ZoneChangeSchema(Schema):
    zone = fields.String()
    effective_from = fields.DateTime()


class PatientSchema(Schema):
    id = fields.String(attribute="_id", dump_only=True)
    display_name = fields.String(dump_only=True)
    time_zone = fields.String(dump_only=True)
    time_zone_history = fields.List(fields.Nested(ZoneChangeSchema), dump_only=True)
    quiet_hours = fields.Dict(dump_only=True)
    caregiver_alert_delay_min = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


class QuietHoursSchema(StrictSchema):
    start = fields.String(required=True, validate=validate.Regexp(r"^([01]\d|2[0-3]):[0-5]\d$"))
    end = fields.String(required=True, validate=validate.Regexp(r"^([01]\d|2[0-3]):[0-5]\d$"))


class PatientUpdateSchema(StrictSchema):
    display_name = text(100, min_len=1)
    time_zone = fields.String(validate=[validate.Length(max=64), valid_zone])
    quiet_hours = fields.Nested(QuietHoursSchema, allow_none=True)
    caregiver_alert_delay_min = fields.Integer(validate=validate.Range(min=15, max=24 * 60))


def load_patient(patient_id: str) -> dict:
    user = services().accounts.users.by_id(patient_id)
    if not user or user["role"] != Role.PATIENT.value:
        raise NotFound("no such patient, or no access to them")
    user.setdefault("time_zone_history", [])
    user.setdefault("caregiver_alert_delay_min", 60)
    return user


@blp.route("/<patient_id>")
class Patient(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.response(200, PatientSchema)
    def get(self, patient_id):
        """A patient's profile (self, a consenting caregiver, or the care team)."""
        require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="patient", action="R", resource_ids=[patient_id])
        return load_patient(patient_id)

    @allow(Role.PATIENT)
    @blp.arguments(PatientUpdateSchema)
    @blp.response(200, PatientSchema)
    def patch(self, body, patient_id):
        """Update one's own profile. A new time zone is recorded with when it took effect, so
        reminders before the move keep their old local times and later ones follow the new zone."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="patient", action="U", resource_ids=[patient_id])
        patient = load_patient(patient_id)
        changes = dict(body)
        users = services().accounts.users
        if "time_zone" in changes and changes["time_zone"] != patient["time_zone"]:
            users.col.update_one(
                {"_id": patient_id},
                {"$push": {"time_zone_history": {"zone": changes["time_zone"], "effective_from": now(),
                                                 "previous": patient["time_zone"]}}},
            )
        updated = users.update(patient_id, changes) if changes else load_patient(patient_id)
        if changes.get("time_zone", patient["time_zone"]) != patient["time_zone"] or "quiet_hours" in changes:
            # Travel: pending future reminders move to the same wall-clock times in the new zone
            # (and new quiet hours move their pushes).
            refresh_future(services().db, patient_id)
        return updated
