"""A patient's TENS sessions as recorded by their units, and the care team's decisions on those held back from
the figures."""

from __future__ import annotations

from datetime import timedelta

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow.exceptions import ValidationError

from companion.api import examples
from companion.api.schemas import ChangesArgs, changes_schema
from companion.domain.access import Grant, Operation, Relationship, Role
from companion.domain.sessions import RESOLUTIONS
from companion.http import auditing, paging, services
from companion.http.paging import LINK_HEADER, cursor_field, next_field, offset_page
from companion.http.schemas import StrictSchema, text
from companion.http.security import allow, current_actor, require_patient

blp = Blueprint("sessions", __name__, url_prefix="/api/v1/patients", description="TENS sessions")
MAX_RANGE = timedelta(days=366)
SESSION_RANGE_RULE = "'to' may not be before 'from' (equal: an empty range), and at most 366 days later"


class SessionRangeArgs(StrictSchema):
    class Meta:
        rules = SESSION_RANGE_RULE

    start = fields.AwareDateTime(load_default=None, data_key="from")
    end = fields.AwareDateTime(load_default=None, data_key="to", metadata={"description": SESSION_RANGE_RULE})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()

    @validates_schema
    def bounded(self, data, **kwargs):
        if data["start"] and data["end"] and not timedelta(0) <= data["end"] - data["start"] <= MAX_RANGE:
            raise ValidationError("'to' may not be before 'from', and at most 366 days later", "to")


class FindingSchema(Schema):
    flag = fields.String()
    reason = fields.String()


def _as_seen_by(grant: Grant, items: list[dict]) -> list[dict]:
    """Sessions as the caller may see them: a caregiver does not read the care team's note on a decision about
    a held session (it may name another patient, the unit's other wearer) nor who made it."""
    if grant.relationship is not Relationship.CAREGIVER:
        return items
    return [{**item, "resolution": {**item["resolution"], "note": None, "by": None}} if item.get("resolution")
            else item for item in items]


class ResolutionSchema(Schema):
    action = fields.String()
    by = fields.String(allow_none=True)
    at = fields.DateTime()
    note = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)


class TensSessionSchema(Schema):
    # required: what every record has carried since the first upload (the fields the server derives came later,
    # with issue 13, and records stored before them may lack them)
    record_id = fields.String(attribute="_id", required=True)
    device_serial = fields.String(required=True)
    device_seq = fields.Integer(required=True)
    started_at = fields.DateTime(required=True, metadata={"description": "the server's best estimate of the real "
                                                                         "start"})
    started_earliest = fields.DateTime(allow_none=True, metadata={"description": "the real start is not before"})
    started_latest = fields.DateTime(allow_none=True, metadata={"description": "the real start is not after"})
    time_quality = fields.String(metadata={"enum": ["exact", "corrected", "estimated"]})
    time_basis = fields.String(allow_none=True)
    local_date = fields.String(allow_none=True, metadata={"description": "the patient's local day it counts on"})
    device_started_at = fields.DateTime(required=True, metadata={"description": "the unit's raw clock reading"})
    reported_started_at = fields.DateTime(allow_none=True, metadata={"description": "the gateway's own correction"})
    unit_offset_s = fields.Float(allow_none=True, metadata={"description": "unit clock minus real time, as applied"})
    clock_offset_s = fields.Float()
    clock_status = fields.String()
    gateway_received_at = fields.DateTime()
    server_received_at = fields.DateTime()
    flags = fields.List(fields.Nested(FindingSchema))
    held = fields.Boolean(metadata={"description": "kept out of the figures until resolved"})
    counts = fields.Boolean(metadata={"description": "counts as a session of its own"})
    counted_minutes = fields.Float(metadata={"description": "minutes it adds to its day's figures"})
    resolution = fields.Nested(ResolutionSchema, allow_none=True)
    duration_s = fields.Integer(required=True)
    programme = fields.Integer()
    frequency_hz = fields.Integer()
    pulse_width_us = fields.Integer()
    intensity_mean_ma = fields.Float()
    intensity_peak_ma = fields.Float()
    end_reason = fields.String()
    battery_pct = fields.Integer()


class TensSessionListSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    items = fields.List(fields.Nested(TensSessionSchema), required=True)
    next = next_field()


TensSessionChangesSchema = changes_schema("TensSessionChangesSchema", TensSessionSchema)


class HeldSessionSchema(TensSessionSchema):
    patient_id = fields.String(allow_none=True)
    candidate_patient_ids = fields.List(fields.String())


class HeldSessionListSchema(Schema):
    items = fields.List(fields.Nested(HeldSessionSchema), required=True)
    next = next_field()


class HeldArgs(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()


class ResolveSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.OneOf(RESOLUTIONS), metadata={
        "description": "count: into the figures (as this patient's, at started_at if given); exclude: never"})
    started_at = fields.AwareDateTime(load_default=None, metadata={"description": "the start the care team knows"})
    note = text(500, load_default=None, allow_none=True)


@blp.route("/<patient_id>/sessions")
class TensSessions(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(SessionRangeArgs, location="query")
    @blp.response(200, TensSessionListSchema, headers=LINK_HEADER, example=examples.TENS_SESSIONS)
    @blp.doc(operationId="list_tens_sessions")
    def get(self, args, patient_id):
        """TENS sessions, newest first, started from `from` (inclusive) to `to` (exclusive; default: the last
        30 days), at most `limit` per page: follow `next` for more."""
        grant = require_patient(patient_id, Operation.READ)
        items, following = offset_page(
            lambda count: services().sessions.between(patient_id, args["start"], args["end"], count),
            args["cursor"], args["limit"])
        items = _as_seen_by(grant, items)
        # A session held because its unit changed hands may be another patient's: each it may be is named.
        auditing.note(patient_ids=[patient_id, *(c for i in items for c in i.get("candidate_patient_ids") or [])],
                      resource="session_record", action="R", resource_ids=[i["_id"] for i in items])
        return {"items": items, "next": following}


@blp.route("/<patient_id>/sessions/changes")
class TensSessionChanges(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, TensSessionChangesSchema, headers=paging.LINK_HEADER)
    @blp.alt_response(410, response="GONE", description="read again from the start, without a cursor")
    @blp.doc(operationId="list_tens_session_changes")
    def get(self, args, patient_id):
        """Session records in the order the server stored them (a gateway offline for days uploads late, in
        any order of start time), after the cursor. A record is never deleted; one placed again (a later clock fix,
        the care team's decision on a held one) comes round again with its new fields. See the README's "Sync"
        section."""
        grant = require_patient(patient_id, Operation.READ)
        page = services().sessions.changes_since(patient_id, args["cursor"], args["limit"])
        page = {**page, "items": _as_seen_by(grant, page["items"])}
        auditing.note(patient_ids=[patient_id], resource="session_record", action="search",
                      resource_ids=[i["_id"] for i in page["items"]])
        return paging.feed_page(page)


@blp.route("/<patient_id>/sessions/held")
class HeldSessions(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(HeldArgs, location="query")
    @blp.response(200, HeldSessionListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_held_tens_sessions")
    def get(self, args, patient_id):
        """Sessions held back from the figures (with why), the patient's or possibly the patient's (a unit that
        changed hands when they happened), newest first, at most `limit` per page: follow `next` for more."""
        require_patient(patient_id, Operation.READ)
        items, following = offset_page(lambda count: services().sessions.held(patient_id, count),
                                       args["cursor"], args["limit"])
        # A session held because its unit changed hands may be another patient's: each it may be is named.
        auditing.note(patient_ids=[patient_id, *(c for i in items for c in i.get("candidate_patient_ids") or [])],
                      resource="session_record", action="R", resource_ids=[i["_id"] for i in items])
        return {"items": items, "next": following}


@blp.route("/<patient_id>/sessions/<record_id>/resolution")
class SessionResolution(MethodView):
    @allow(Role.CLINICIAN)
    @blp.arguments(ResolveSchema)
    @blp.response(200, TensSessionSchema)
    @blp.doc(operationId="resolve_held_tens_session")
    def put(self, body, patient_id, record_id):
        """Decide on a held session: count it (as this patient's, at ``started_at`` if given) or exclude it.
        Its day's figures are recomputed. Deciding again replaces the earlier decision."""
        require_patient(patient_id, Operation.SETTLE)
        # A session that may be another patient's (its unit changed hands then): the decision names each.
        auditing.note(patient_ids=services().sessions.patients_a_decision_touches(patient_id, record_id),
                      resource="session_record", action="U", resource_ids=[record_id])
        return services().sessions.resolve(patient_id, record_id, body["action"], current_actor().id,
                                           started_at=body["started_at"], note=body["note"])
