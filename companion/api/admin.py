"""Administration: staff accounts, care teams and enrolment; a clinician's own patient list;
time-boxed emergency ("break-glass") access."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api.auth import AccountSchema, valid_zone
from companion.domain.access import Role
from companion.http import auditing, services
from companion.http.schemas import StrictSchema, text
from companion.http.security import allow, current_actor

blp = Blueprint("admin", __name__, url_prefix="/api/v1", description="Administration and care teams")


class StaffSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=12, max=200))
    display_name = text(100, required=True, min_len=1)
    role = fields.String(required=True, validate=validate.OneOf(["clinician", "admin", "caregiver"]))
    time_zone = fields.String(load_default="UTC", validate=[validate.Length(max=64), valid_zone])


class TeamCreateSchema(StrictSchema):
    name = text(100, required=True, min_len=1)


class TeamSchema(Schema):
    id = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    clinician_ids = fields.List(fields.String(), dump_only=True)


class TeamMemberSchema(StrictSchema):
    clinician_id = text(64, required=True, min_len=1)


class EnrolSchema(StrictSchema):
    patient_id = text(64, required=True, min_len=1)


class PatientRefSchema(Schema):
    patient_id = fields.String(attribute="id")
    display_name = fields.String()
    time_zone = fields.String()


class PatientRefListSchema(Schema):
    items = fields.List(fields.Nested(PatientRefSchema))


class EmergencySchema(StrictSchema):
    patient_id = text(64, required=True, min_len=1)
    reason = text(1000, required=True, min_len=10,
                  metadata={"description": "why access is needed now; kept in the audit trail"})
    minutes = fields.Integer(load_default=30, validate=validate.Range(min=5, max=60))


class EmergencyGrantSchema(Schema):
    id = fields.String()
    patient_id = fields.String()
    expires_at = fields.DateTime()


@blp.route("/admin/users")
class StaffAccounts(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(StaffSchema)
    @blp.response(201, AccountSchema)
    def post(self, body):
        """Create a clinician, admin or caregiver account."""
        return services().accounts.sign_up(**body)


@blp.route("/admin/teams")
class Teams(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(TeamCreateSchema)
    @blp.response(201, TeamSchema)
    def post(self, body):
        """Create a care team."""
        return services().care.create_team(body["name"])


@blp.route("/admin/teams/<team_id>/clinicians")
class TeamClinicians(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(TeamMemberSchema)
    @blp.response(200, TeamSchema)
    def post(self, body, team_id):
        """Add a clinician to a care team."""
        return services().care.add_clinician(team_id, body["clinician_id"])


@blp.route("/admin/teams/<team_id>/patients")
class TeamPatients(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(EnrolSchema)
    @blp.response(204)
    def post(self, body, team_id):
        """Enrol a patient in a care team: the team's clinicians gain access."""
        auditing.note(patient_ids=[body["patient_id"]], resource="team_enrolment", action="C",
                      resource_ids=[team_id])
        services().care.enrol(team_id, body["patient_id"])


@blp.route("/clinician/patients")
class ClinicianPatients(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, PatientRefListSchema)
    def get(self):
        """The patients on the calling clinician's care teams."""
        patients = services().care.patients_of(current_actor().id)
        ids = sorted(p.id for p in patients)
        auditing.note(patient_ids=ids, resource="patient", action="search", resource_ids=ids)
        return {"items": patients}


@blp.route("/emergency-access")
class EmergencyAccess(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(EmergencySchema)
    @blp.response(201, EmergencyGrantSchema)
    def post(self, body):
        """Break-glass: read access to a patient outside one's teams, for at most an hour, with a reason."""
        patient_id = body["patient_id"]
        auditing.note(patient_ids=[patient_id], resource="patient", action="emergency", resource_ids=[patient_id])
        return services().care.emergency_access(current_actor().id, patient_id, body["reason"], body["minutes"])
