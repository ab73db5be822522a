"""The clinician's side: their care teams (enrol, unenrol, leave) and their panel of patients."""

from __future__ import annotations

from contextlib import suppress

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from pymongo.errors import DuplicateKeyError

from companion.api import auditing, services
from companion.api.schemas import StrictSchema, text
from companion.api.security import allow, current_actor, require_patient
from companion.domain.access import Operation, Role
from companion.domain.errors import Invalid, NotFound
from companion.domain.review import SORTS
from companion.services import exports
from companion.services.accounts import normalise_email
from companion.services.review import PanelFilter, panel_page
from companion.store.accounts import now
from companion.store.relationships import CareTeams

blp = Blueprint("clinician", __name__, url_prefix="/api/v1/clinician", description="Care teams and patient panel")


class ClinicianTeamSchema(Schema):
    id = fields.String(attribute="_id")
    name = fields.String()
    clinician_count = fields.Function(lambda t: len(t.get("clinician_ids") or []))
    patient_count = fields.Integer()


class ClinicianTeamListSchema(Schema):
    items = fields.List(fields.Nested(ClinicianTeamSchema))


class ClinicianEnrolSchema(StrictSchema):
    patient_email = fields.Email(required=True, validate=validate.Length(max=254))
    reason = text(500, required=True, min_len=5,
                  metadata={"description": "why this patient joins the team (e.g. the referral); kept in the audit trail"})


class EnrolmentSchema(Schema):
    team_id = fields.String()
    patient_id = fields.String()
    display_name = fields.String()


class PanelArgs(StrictSchema):
    sort = fields.String(load_default="need", validate=validate.OneOf(sorted(SORTS)),
                         metadata={"description": "need (default: open alerts, low 7-day PDC, rising pain, silent "
                                                  "device first) or one figure"})
    order = fields.String(load_default="asc", validate=validate.OneOf(["asc", "desc"]),
                          metadata={"description": "for figure sorts; patients without the figure go last"})
    q = text(100, load_default=None, metadata={"description": "part of the patient's name"})
    needs_attention = fields.Boolean(load_default=False)
    pdc_7_below = fields.Float(load_default=None, validate=validate.Range(min=0, max=1))
    pain_rising = fields.Boolean(load_default=False)
    silent_days = fields.Integer(load_default=None, validate=validate.Range(min=0, max=3650),
                                 metadata={"description": "days since the last device sync, at least"})
    open_alerts = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=100000))


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
    days_since_sync = fields.Integer(allow_none=True)
    open_alerts = fields.Integer()
    reasons = fields.List(fields.String(), metadata={"description": "why this patient may need attention"})


class PanelSchema(Schema):
    items = fields.List(fields.Nested(PanelRowSchema))
    total = fields.Integer()
    offset = fields.Integer()
    limit = fields.Integer()
    next_offset = fields.Integer(allow_none=True)


def panel_filter(args: dict) -> PanelFilter:
    return PanelFilter(q=args.get("q"), needs_attention=args["needs_attention"], pdc_7_below=args["pdc_7_below"],
                       pain_rising=args["pain_rising"], silent_days=args["silent_days"], open_alerts=args["open_alerts"])


def _my_team(team_id: str) -> dict:
    team = CareTeams(services().db).get(team_id)
    if not team or current_actor().id not in team.get("clinician_ids", []):
        raise NotFound("no such team")
    return team


@blp.route("/teams")
class MyTeams(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, ClinicianTeamListSchema)
    def get(self):
        """The care teams the calling clinician belongs to."""
        db = services().db
        teams = list(db.care_teams.find({"clinician_ids": current_actor().id}).limit(100))
        for team in teams:
            team["patient_count"] = db.team_enrolments.count_documents({"team_id": team["_id"]})
        return {"items": teams}


@blp.route("/teams/<team_id>/patients")
class MyTeamPatients(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(ClinicianEnrolSchema)
    @blp.response(201, EnrolmentSchema)
    def post(self, body, team_id):
        """Enrol a patient (found by their account email) in one of the caller's teams."""
        _my_team(team_id)
        patient = services().accounts.users.by_email(normalise_email(body["patient_email"]))
        if not patient or patient["role"] != Role.PATIENT.value:
            raise Invalid("no patient account with that email", errors={"patient_email": ["no patient account"]})
        auditing.note(patient_ids=[patient["_id"]], resource="team_enrolment", action="C", resource_ids=[team_id])
        with suppress(DuplicateKeyError):  # enrolled by a concurrent request: the same outcome
            services().db.team_enrolments.update_one(
                {"team_id": team_id, "patient_id": patient["_id"]},
                {"$setOnInsert": {"_id": f"{team_id}:{patient['_id']}", "enrolled_at": now(),
                                  "enrolled_by": current_actor().id, "reason": body["reason"]}}, upsert=True)
        return {"team_id": team_id, "patient_id": patient["_id"], "display_name": patient["display_name"]}


@blp.route("/teams/<team_id>/patients/<patient_id>")
class MyTeamPatient(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(204)
    def delete(self, team_id, patient_id):
        """Remove a patient from one of the caller's teams (other teams keep them)."""
        require_patient(patient_id, Operation.CLINICAL)
        _my_team(team_id)
        auditing.note(patient_ids=[patient_id], resource="team_enrolment", action="D", resource_ids=[team_id])
        if not CareTeams(services().db).unenrol(team_id, patient_id):
            raise NotFound("the patient is not on this team")


@blp.route("/teams/<team_id>/membership")
class MyTeamMembership(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(204)
    def delete(self, team_id):
        """Leave a care team: its patients drop off the caller's panel at once."""
        _my_team(team_id)
        CareTeams(services().db).remove_clinician(team_id, current_actor().id)


@blp.route("/panel")
class Panel(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(PanelArgs, location="query")
    @blp.response(200, PanelSchema)
    def get(self, args):
        """The caller's patients with 7/30-day PDC, pain trend, days since the last sync and open alerts,
        ordered by need (or a figure), filtered and paged."""
        rows, total = panel_page(services().db, current_actor().id, sort=args["sort"],
                                 descending=args["order"] == "desc", keep=panel_filter(args),
                                 offset=args["offset"], limit=args["limit"])
        ids = [r.patient_id for r in rows]
        auditing.note(patient_ids=ids, resource="patient", action="search", resource_ids=ids)
        following = args["offset"] + len(rows)
        return {"items": rows, "total": total, "offset": args["offset"], "limit": args["limit"],
                "next_offset": following if following < total else None}


@blp.route("/panel/export")
class PanelExport(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(PanelArgs, location="query")
    @blp.response(200, content_type="text/csv", description="the panel as CSV, one patient per row")
    def get(self, args):
        """The filtered, ordered panel as CSV (every matching patient, not one page)."""
        rows, _ = panel_page(services().db, current_actor().id, sort=args["sort"],
                             descending=args["order"] == "desc", keep=panel_filter(args), offset=0, limit=100000)
        ids = [r.patient_id for r in rows]
        auditing.note(patient_ids=ids, resource="patient", action="E", resource_ids=ids)
        return Response(exports.panel_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="panel.csv"', "Cache-Control": "no-store"})
