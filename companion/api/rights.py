"""The patient's rights over their own record: who accessed it, a download of everything held about them, and
closing the account (what is deleted at once, what is kept, for how long and why)."""

from __future__ import annotations

import json
from datetime import date, datetime

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from companion.api.admin import ClosureSchema, KeptSchema
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.paging import (
    LINK_HEADER,
    cursor_field,
    decode_cursor,
    encode_cursor,
    next_field,
    next_link,
    not_ours,
)
from companion.http.schemas import StrictSchema
from companion.http.security import allow, client_address, current_actor, require_patient
from companion.services.lifecycle import closure_statement

blp = Blueprint("rights", __name__, url_prefix="/api/v1/patients", description="The patient's rights over their record")
ACCESS_LOG_START_RULE = "either 'cursor' (from a `next` link) or 'before', not both"


class AccessLogArgs(StrictSchema):
    class Meta:
        rules = ACCESS_LOG_START_RULE

    cursor = cursor_field()
    before = fields.AwareDateTime(load_default=None, metadata={
        "description": "events before this instant (kept for clients written before `next`: paging by it can miss "
                       f"events of the same millisecond; follow `next`); {ACCESS_LOG_START_RULE}"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))

    @validates_schema
    def one_place_to_start(self, data, **kwargs):
        if data.get("cursor") and data.get("before"):
            raise ValidationError(ACCESS_LOG_START_RULE, "cursor")


class AccessEventSchema(Schema):
    at = fields.DateTime()
    actor_id = fields.String(allow_none=True)
    actor_name = fields.String(allow_none=True)
    actor_role = fields.String()
    action = fields.String(metadata={"description": "R read, C create, U update, D delete, E export, search, "
                                                    "emergency (break-glass), heartbeat (a gateway's routine calls, "
                                                    "counted per day), intent (a write about to happen)"})
    resource_type = fields.String(allow_none=True)
    outcome = fields.String(metadata={"description": "success, denied or error"})
    route = fields.String(allow_none=True)
    method = fields.String(allow_none=True)
    # A change to who on a care team reads the patient's data (resource_type team_clinician) names whom and which.
    clinician_id = fields.String(allow_none=True, metadata={
        "description": "for a `team_clinician` event, the clinician whose reading of one of the patient's care "
                       "teams began (C: added by an admin, their account reactivated) or ended (D: taken off by an "
                       "admin, they left, their account deactivated or deleted); for a `password_reset_code` (C) or "
                       "`authenticator` (D) event, the clinician whose account an admin made a reset code for or "
                       "cleared the authenticator of (whoever holds the code reads the team's patients as them); "
                       "absent for other events"})
    clinician_name = fields.String(allow_none=True, metadata={
        "description": "that clinician's display name, as their account shows it now (erased once it is "
                       "closed); never their email"})
    clinician_role = fields.String(allow_none=True, metadata={"description": "that clinician's account role"})
    team_id = fields.String(allow_none=True, metadata={
        "description": "for a `team_clinician` event, or one of those two about a clinician: the care team"})
    team_name = fields.String(allow_none=True, metadata={"description": "that care team's name"})
    # A change to a caregiver's access made through their account (resource_type care_link) names whom.
    caregiver_id = fields.String(allow_none=True, metadata={
        "description": "for a `care_link` event about a caregiver's account, the caregiver whose access to the "
                       "patient's data stopped (D: their account deactivated or deleted by an admin, or they left) "
                       "or began again (C: their account reactivated); for a `password_reset_code` (C) or "
                       "`authenticator` (D) event, the caregiver whose account an admin made a reset code for or "
                       "cleared the authenticator of (whoever holds the code reads the patient's data as them); "
                       "absent for other events"})
    caregiver_name = fields.String(allow_none=True, metadata={
        "description": "that caregiver's display name, as their account shows it now (erased once it is "
                       "closed); never their email"})
    caregiver_role = fields.String(allow_none=True, metadata={"description": "that caregiver's account role"})


class AccessLogSchema(Schema):
    items = fields.List(fields.Nested(AccessEventSchema), required=True)
    next = next_field()
    next_before = fields.DateTime(allow_none=True, metadata={
        "description": "the `before` of the following page, null on the last (kept for clients written before "
                       "`next`: paging by it can miss events of the same millisecond)"})


class ClosureStatementSchema(Schema):
    deleted_now = fields.List(fields.String())
    kept = fields.List(fields.Nested(KeptSchema))


class ClosureRequestSchema(StrictSchema):
    current_password = fields.String(required=True, load_only=True, validate=validate.Length(max=200))
    confirm = fields.Boolean(required=True, validate=validate.Equal(True),
                             metadata={"description": "must be true: closing cannot be undone"})


def _json_value(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple):
        return sorted(value) if isinstance(value, frozenset | set) else list(value)
    return str(value)


@blp.route("/<patient_id>/access-log")
class AccessLog(MethodView):
    @allow(Role.PATIENT)
    @blp.arguments(AccessLogArgs, location="query")
    @blp.response(200, AccessLogSchema, headers=LINK_HEADER)
    @blp.doc(operationId="get_access_log")
    def get(self, args, patient_id):
        """Who accessed the patient's data, newest first: every recorded access by anyone but the patient
        (care team, caregivers, emergency access, gateways, admins), refused attempts included."""
        require_patient(patient_id, Operation.MANAGE)
        after = _access_log_position(args["cursor"]) if args["cursor"] else None
        items, last = services().rights.access_log(patient_id, before=args["before"], after=after,
                                                   limit=args["limit"])
        auditing.note(patient_ids=[patient_id], resource="audit_event", action="R")
        if last is None:
            return {"items": items, "next": None, "next_before": None}
        at, chain_id, seq = last
        cursor = encode_cursor({"at": at.isoformat(), "c": chain_id, "s": seq})
        return {"items": items, "next": next_link(cursor=cursor, before=None), "next_before": at}


def _access_log_position(cursor: str) -> tuple[datetime, str, int]:
    """The (at, chain, seq) an access log's cursor names; one this API did not make is a 422."""
    value = decode_cursor(cursor)
    try:
        at = datetime.fromisoformat(value["at"])
        chain_id, seq = value["c"], value["s"]
    except (KeyError, TypeError, ValueError) as exc:
        raise not_ours() from exc
    if at.tzinfo is None or not isinstance(chain_id, str) or not isinstance(seq, int):
        raise not_ours()
    return at, chain_id, seq


@blp.route("/<patient_id>/data-export")
class DataExport(MethodView):
    @allow(Role.PATIENT)
    @blp.response(200, content_type="application/json",
                  description="everything held about the patient, as one JSON document (a download)")
    @blp.doc(operationId="export_patient_data")
    def get(self, patient_id):
        """Download everything held about the patient: account, consents (caregivers, care teams, invitations,
        emergency access), devices, gateways (and the dead letters they reported: what they could not deliver)
        and phones, reminders, the clinical record (therapy plans, TENS sessions, pain diary, practice, adherence,
        alerts, clinical notes, notifications) and who accessed it. `records_complete` says whether every kind
        came whole; `records_cut_short` names any that reached the download's limit.
        The FHIR R4 and CSV exports a clinician gets are at ``exports/fhir`` and ``exports/csv``."""
        require_patient(patient_id, Operation.MANAGE)
        svc = services()
        document = svc.rights.export(svc.profiles.patient(patient_id))
        auditing.note(patient_ids=[patient_id], resource="patient", action="E", resource_ids=[patient_id])
        return Response(json.dumps(document, default=_json_value), mimetype="application/json", headers={
            "Content-Disposition": f'attachment; filename="companion-{patient_id}.json"', "Cache-Control": "no-store"})


@blp.route("/<patient_id>/closure")
class Closure(MethodView):
    @allow(Role.PATIENT)
    @blp.response(200, ClosureStatementSchema)
    @blp.doc(operationId="get_account_closure")
    def get(self, patient_id):
        """What closing the account would delete at once, and what would be kept, for how long and why."""
        require_patient(patient_id, Operation.MANAGE)
        return closure_statement(services().settings)

    @allow(Role.PATIENT)
    @blp.arguments(ClosureRequestSchema)
    @blp.response(200, ClosureSchema)
    @blp.doc(operationId="close_patient_account")
    def post(self, body, patient_id):
        """Close the account (with the current password; it cannot be undone): this session ends with it. The
        answer says what was deleted, and what is kept, for how long and why."""
        require_patient(patient_id, Operation.MANAGE)
        svc = services()
        svc.accounts.reauthenticate(patient_id, body["current_password"], address=client_address(),
                                    session=current_actor().family)
        auditing.note(patient_ids=[patient_id], resource="account", action="D", resource_ids=[patient_id])
        return svc.lifecycle.close(patient_id, by=patient_id)
