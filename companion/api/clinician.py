"""The clinician's side: their care teams (invite a patient, withdraw an invitation, unenrol, leave) and their
panel of patients. A clinician cannot enrol anyone: the patient accepts an invitation in the app."""

from __future__ import annotations

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api.admin import note_team_clinician
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.compiled import CompiledDump
from companion.http.idempotency import idempotent, request_key
from companion.http.paging import LINK_HEADER, next_field, next_link
from companion.http.panel import PanelArgs, panel_filter
from companion.http.schemas import StrictSchema, text
from companion.http.security import allow, current_actor, require_patient
from companion.services import exports

blp = Blueprint("clinician", __name__, url_prefix="/api/v1/clinician", description="Care teams and patient panel")


def _on_own_team(team_id: str, **url) -> None:
    """A route about one of the caller's teams: 404 for any other (checked before a stored answer is replayed)."""
    services().care.check_own_team(current_actor().id, team_id)


class ClinicianTeamSchema(Schema):
    id = fields.String(attribute="team.id")
    name = fields.String(attribute="team.name")
    clinician_count = fields.Function(lambda t: len(t.team.clinician_ids))
    patient_count = fields.Integer()


class ClinicianTeamListSchema(Schema):
    items = fields.List(fields.Nested(ClinicianTeamSchema), required=True)


class InvitationCreateSchema(StrictSchema):
    patient_email = fields.Email(required=True, validate=validate.Length(max=254))
    reason = text(500, required=True, min_len=5,
                  metadata={"description": "why this patient joins the team (e.g. the referral); the patient sees it"})


class InvitationSchema(Schema):
    id = fields.String()
    team_id = fields.String()
    email = fields.String(metadata={"description": "as the clinician typed it"})
    status = fields.String(metadata={"description": "open (until the patient accepts, or it expires), accepted, "
                                                    "ended (accepted, and the patient is no longer on the team), "
                                                    "closed (expired unaccepted) or withdrawn; a decline is not "
                                                    "told apart from silence"})
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    patient_id = fields.String(allow_none=True, metadata={"description": "once accepted, while the patient is on "
                                                                       "the team"})


class InvitationListSchema(Schema):
    items = fields.List(fields.Nested(InvitationSchema), required=True)


class PanelRowSchema(Schema):
    patient_id = fields.String()
    display_name = fields.String()
    time_zone = fields.String()
    pdc_7 = fields.Float(allow_none=True)
    pdc_30 = fields.Float(allow_none=True)
    pain_mean_14d = fields.Float(attribute="pain.recent_mean", allow_none=True)
    pain_mean_previous_14d = fields.Float(attribute="pain.previous_mean", allow_none=True)
    pain_change_14d = fields.Float(attribute="pain.change", allow_none=True)
    pain_direction = fields.String(attribute="pain.direction")
    days_since_sync = fields.Integer(allow_none=True, metadata={
        "description": "whole 24-hour periods since any of the patient's units was last heard from (a sync, with or "
                       "without new records, or a gateway's status report: the instant the silent-unit alert counts "
                       "from), counted at the request (0: less than 24 hours ago, which may have been on the "
                       "patient's previous calendar day; 1: at least 24 and under 48 hours ago); null when no unit "
                       "has been"})
    open_alerts = fields.Integer()
    reasons = fields.List(fields.String(), metadata={
        "description": "why this patient may need attention; of a closed account's record, only its open alerts "
                       "(which the care team can still acknowledge)"})
    account_status = fields.String(metadata={
        "description": "active; deactivated (by an admin: the patient cannot sign in and their gateways are "
                       "refused until reactivated); or closed (by the patient: the care team keeps the record to "
                       "read, acknowledge its alerts and decide its held sessions, and nothing new is added, so a "
                       "clinical note or a plan is refused, 403)"})
    closed_at = fields.DateTime(allow_none=True, metadata={"description": "when the account was closed; null "
                                                                         "unless `account_status` is closed"})


class PanelSchema(CompiledDump, Schema):
    items = fields.List(fields.Nested(PanelRowSchema), required=True)
    total = fields.Integer()
    offset = fields.Integer()
    limit = fields.Integer()
    next = next_field()
    next_offset = fields.Integer(allow_none=True, metadata={
        "description": "the `offset` of the following page, null on the last (kept for clients written before "
                       "`next`)"})


@blp.route("/teams")
class MyTeams(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, ClinicianTeamListSchema)
    @blp.doc(operationId="list_my_teams")
    def get(self):
        """The care teams the calling clinician belongs to."""
        return {"items": services().care.teams_of(current_actor().id)}


@blp.route("/teams/<team_id>/invitations")
class MyTeamInvitations(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, InvitationListSchema)
    @blp.doc(operationId="list_team_invitations")
    def get(self, team_id):
        """The team's invitations, newest first."""
        items = services().care.team_invitations(current_actor().id, team_id)
        # An accepted one names its patient (with the address it was sent to): a read of that patient's data.
        auditing.note(patient_ids=[i["patient_id"] for i in items if i["patient_id"]], resource="invitation",
                      action="search", resource_ids=[i["id"] for i in items])
        return {"items": items}

    @allow(Role.CLINICIAN)
    @idempotent(access=_on_own_team)
    @blp.arguments(InvitationCreateSchema)
    @blp.response(202, InvitationSchema)
    @blp.doc(operationId="invite_patient")
    def post(self, body, team_id):
        """Invite a patient, by their account's email, to let one of the caller's teams see their data. The
        answer is the same whatever the email (nothing says whether it belongs to a patient); the patient sees
        the invitation in the app and accepts it with their password, or not. Until then the team has no access:
        for urgent care without consent there is emergency access."""
        return services().care.invite(current_actor().id, team_id, body["patient_email"], body["reason"],
                                      request_key=request_key())


@blp.route("/teams/<team_id>/invitations/<invitation_id>")
class MyTeamInvitation(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(204)
    @blp.doc(operationId="withdraw_team_invitation")
    def delete(self, team_id, invitation_id):
        """Withdraw an invitation not accepted, declined or not (a decline is not told apart from silence);
        withdrawing it again answers 204 as the first time."""
        services().care.withdraw_invitation(current_actor().id, team_id, invitation_id)


@blp.route("/teams/<team_id>/patients/<patient_id>")
class MyTeamPatient(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(204)
    @blp.doc(operationId="discharge_team_patient")
    def delete(self, team_id, patient_id):
        """Remove a patient from one of the caller's teams (other teams keep them)."""
        require_patient(patient_id, Operation.SETTLE)
        auditing.note(patient_ids=[patient_id], resource="team_enrolment", action="D", resource_ids=[team_id])
        services().care.unenrol_from_own_team(current_actor().id, team_id, patient_id)


@blp.route("/teams/<team_id>/membership")
class MyTeamMembership(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(204)
    @blp.doc(operationId="leave_team")
    def delete(self, team_id):
        """Leave a care team: its patients drop off the caller's panel at once. The act is audited against each of
        the team's patients (it is in their access log, as an admin taking the clinician off the team is)."""
        clinician_id, care = current_actor().id, services().care
        care.check_own_team(clinician_id, team_id)
        note_team_clinician(team_id, clinician_id, "D")
        care.leave_team(clinician_id, team_id)


def _panel(args: dict, *, offset: int, limit: int):
    return services().review.panel_page(current_actor().id, sort=args["sort"], descending=args["order"] == "desc",
                                        keep=panel_filter(args), offset=offset, limit=limit)


@blp.route("/panel")
class Panel(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(PanelArgs, location="query")
    @blp.response(200, PanelSchema, headers=LINK_HEADER)
    @blp.doc(operationId="get_clinician_panel")
    def get(self, args):
        """The caller's patients with 7/30-day PDC, pain trend, days since the last sync and open alerts,
        ordered by need (or a figure), filtered and paged."""
        rows, total = _panel(args, offset=args["offset"], limit=args["limit"])
        ids = [r.patient_id for r in rows]
        auditing.note(patient_ids=ids, resource="patient", action="search", resource_ids=ids)
        following = args["offset"] + len(rows)
        more = following < total and bool(rows)
        return {"items": rows, "total": total, "offset": args["offset"], "limit": args["limit"],
                "next": next_link(offset=following) if more else None, "next_offset": following if more else None}


@blp.route("/panel/export")
class PanelExport(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(PanelArgs, location="query")
    @blp.response(200, content_type="text/csv", description="the panel as CSV, one patient per row")
    @blp.doc(operationId="export_clinician_panel")
    def get(self, args):
        """The filtered, ordered panel as CSV (every matching patient, not one page)."""
        rows, _ = _panel(args, offset=0, limit=100000)
        ids = [r.patient_id for r in rows]
        auditing.note(patient_ids=ids, resource="patient", action="E", resource_ids=ids)
        return Response(exports.panel_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="panel.csv"', "Cache-Control": "no-store"})
