"""A patient's TENS sessions as recorded by their units."""

from __future__ import annotations

from datetime import timedelta

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow.exceptions import ValidationError

from companion.api.schemas import ChangesArgs, changes_schema
from companion.domain.access import Operation, Role
from companion.http import auditing, paging, services
from companion.http.paging import LINK_HEADER, cursor_field, next_field, offset_page
from companion.http.schemas import StrictSchema
from companion.http.security import allow, require_patient

blp = Blueprint("sessions", __name__, url_prefix="/api/v1/patients", description="TENS sessions")
MAX_RANGE = timedelta(days=366)


class SessionRangeArgs(StrictSchema):
    start = fields.AwareDateTime(load_default=None, data_key="from")
    end = fields.AwareDateTime(load_default=None, data_key="to")
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()

    @validates_schema
    def bounded(self, data, **kwargs):
        if data["start"] and data["end"] and not timedelta(0) <= data["end"] - data["start"] <= MAX_RANGE:
            raise ValidationError("'to' may not be before 'from', and at most 366 days later", "to")


class TensSessionSchema(Schema):
    record_id = fields.String(attribute="_id")
    device_serial = fields.String()
    device_seq = fields.Integer()
    started_at = fields.DateTime()
    device_started_at = fields.DateTime()
    clock_offset_s = fields.Float()
    clock_status = fields.String()
    gateway_received_at = fields.DateTime()
    server_received_at = fields.DateTime()
    duration_s = fields.Integer()
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


@blp.route("/<patient_id>/sessions")
class TensSessions(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(SessionRangeArgs, location="query")
    @blp.response(200, TensSessionListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_tens_sessions")
    def get(self, args, patient_id):
        """TENS sessions, newest first, started from `from` (inclusive) to `to` (exclusive; default: the last
        30 days), at most `limit` per page: follow `next` for more."""
        require_patient(patient_id, Operation.READ)
        items, following = offset_page(
            lambda count: services().sessions.between(patient_id, args["start"], args["end"], count),
            args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="session_record", action="R",
                      resource_ids=[i["_id"] for i in items])
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
        any order of start time), after the cursor. Records are never changed or deleted. See the README's
        "Sync" section."""
        require_patient(patient_id, Operation.READ)
        page = services().sessions.changes_since(patient_id, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="session_record", action="search",
                      resource_ids=[i["_id"] for i in page["items"]])
        return paging.feed_page(page)
