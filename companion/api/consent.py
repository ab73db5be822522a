"""The patient's side of care teams: invitations to accept or decline, and the teams that can see their data
(each of which the patient can end)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.schemas import StrictSchema
from companion.http.security import allow, client_address, current_actor, require_patient

blp = Blueprint("consent", __name__, url_prefix="/api/v1/patients", description="Care teams, by the patient's consent")


class WaitingInvitationSchema(Schema):
    id = fields.String()
    team_id = fields.String()
    team_name = fields.String(allow_none=True)
    clinician_name = fields.String(allow_none=True)
    reason = fields.String()
    created_at = fields.DateTime()
    expires_at = fields.DateTime()


class WaitingInvitationListSchema(Schema):
    items = fields.List(fields.Nested(WaitingInvitationSchema), required=True)


class AcceptSchema(StrictSchema):
    current_password = fields.String(required=True, load_only=True, validate=validate.Length(max=200),
                                     metadata={"description": "re-authentication: letting a team see your data is "
                                                              "a sensitive change"})


class AcceptedSchema(Schema):
    team_id = fields.String()
    status = fields.String()


class PatientTeamSchema(Schema):
    team_id = fields.String()
    team_name = fields.String(allow_none=True)
    clinicians = fields.List(fields.String(allow_none=True))
    enrolled_at = fields.DateTime()
    consent = fields.String(metadata={"description": "invitation:<id> (accepted by the patient) or admin"})


class PatientTeamListSchema(Schema):
    items = fields.List(fields.Nested(PatientTeamSchema), required=True)


def _patient(patient_id: str):
    return services().profiles.patient(patient_id)


@blp.route("/<patient_id>/invitations")
class Invitations(MethodView):
    @allow(Role.PATIENT)
    @blp.response(200, WaitingInvitationListSchema)
    @blp.doc(operationId="list_team_invitations_to_patient")
    def get(self, patient_id):
        """Care teams asking to see the patient's data, waiting for an answer."""
        require_patient(patient_id, Operation.MANAGE)
        items = services().care.invitations_for(_patient(patient_id))
        auditing.note(patient_ids=[patient_id], resource="invitation", action="R", resource_ids=[i["id"] for i in items])
        return {"items": items}


@blp.route("/<patient_id>/invitations/<invitation_id>/acceptance")
class InvitationAcceptance(MethodView):
    @allow(Role.PATIENT)
    @blp.arguments(AcceptSchema)
    @blp.response(200, AcceptedSchema)
    @blp.doc(operationId="accept_team_invitation")
    def post(self, body, patient_id, invitation_id):
        """Accept an invitation (with the current password): the team's clinicians can see the patient's data
        from now on, until the patient leaves the team."""
        require_patient(patient_id, Operation.MANAGE)
        invitation = services().care.answer_invitation(_patient(patient_id), invitation_id, accept=True,
                                                       current_password=body["current_password"],
                                                       address=client_address(), session=current_actor().family)
        auditing.note(patient_ids=[patient_id], resource="team_enrolment", action="C",
                      resource_ids=[invitation["team_id"]])
        return {"team_id": invitation["team_id"], "status": invitation["status"]}


@blp.route("/<patient_id>/invitations/<invitation_id>")
class Invitation(MethodView):
    @allow(Role.PATIENT)
    @blp.response(204)
    @blp.doc(operationId="decline_team_invitation")
    def delete(self, patient_id, invitation_id):
        """Decline an invitation (the team is not told: it sees the invitation open until it expires)."""
        require_patient(patient_id, Operation.MANAGE)
        services().care.answer_invitation(_patient(patient_id), invitation_id, accept=False)


@blp.route("/<patient_id>/care-teams")
class CareTeams(MethodView):
    @allow(Role.PATIENT)
    @blp.response(200, PatientTeamListSchema)
    @blp.doc(operationId="list_patient_care_teams")
    def get(self, patient_id):
        """The care teams that can see the patient's data, and how each came to (the patient's acceptance, or an
        admin's enrolment)."""
        require_patient(patient_id, Operation.MANAGE)
        items = services().care.teams_of_patient(patient_id)
        auditing.note(patient_ids=[patient_id], resource="team_enrolment", action="R",
                      resource_ids=[t["team_id"] for t in items])
        return {"items": items}


@blp.route("/<patient_id>/care-teams/<team_id>")
class CareTeam(MethodView):
    @allow(Role.PATIENT)
    @blp.response(204)
    @blp.doc(operationId="leave_care_team")
    def delete(self, patient_id, team_id):
        """Leave a care team: its clinicians lose access from their next request."""
        require_patient(patient_id, Operation.MANAGE)
        auditing.note(patient_ids=[patient_id], resource="team_enrolment", action="D", resource_ids=[team_id])
        services().care.leave_care_team(patient_id, team_id)
