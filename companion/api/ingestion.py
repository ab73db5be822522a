"""What gateways send: TENS session records (batches of up to 500, per-item results) and unit status.

The patient is never taken from the request: it is the patient the gateway is bound to, and every
unit named must be bound to that patient.
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate

from companion.domain.access import Role
from companion.domain.sessions import CLOCK_STATUSES, END_REASONS
from companion.http import auditing, services
from companion.http.schemas import StrictSchema
from companion.http.security import allow, current_actor

blp = Blueprint("ingestion", __name__, url_prefix="/api/v1/gateway", description="Gateway uploads")

MAX_BATCH = 500
SERIAL = validate.Regexp(r"^[A-Za-z0-9-]{4,32}$")


class SessionRecordSchema(StrictSchema):
    record_id = fields.String(required=True, validate=validate.Length(max=48))
    device_serial = fields.String(required=True, validate=SERIAL)
    device_seq = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=2**32 - 1))
    device_started_at = fields.AwareDateTime(required=True, metadata={"description": "by the unit's clock"})
    started_at = fields.AwareDateTime(required=True, metadata={"description": "corrected by the clock offset"})
    clock_offset_s = fields.Float(required=True, validate=validate.Range(min=-10 * 365 * 86400, max=10 * 365 * 86400))
    clock_status = fields.String(required=True, validate=validate.OneOf(CLOCK_STATUSES))
    gateway_received_at = fields.AwareDateTime(required=True)
    duration_s = fields.Integer(required=True, strict=True, validate=validate.Range(min=-(2**31), max=2**31))
    programme = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=255))
    frequency_hz = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10000))
    pulse_width_us = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10000))
    intensity_mean_ma = fields.Float(required=True, validate=validate.Range(min=0, max=1000))
    intensity_peak_ma = fields.Float(required=True, validate=validate.Range(min=0, max=1000))
    end_reason = fields.String(required=True, validate=validate.OneOf(END_REASONS))
    battery_pct = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=100))
    content_hash = fields.String(required=True, validate=validate.Length(min=8, max=128))


class SessionBatchSchema(StrictSchema):
    records = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1, max=MAX_BATCH),
                          metadata={"description": f"1 to {MAX_BATCH} records, each a SessionRecord"})


class RecordResultSchema(Schema):
    record_id = fields.String()
    status = fields.String(metadata={"enum": ["created", "duplicate", "rejected"]})
    reason = fields.String(allow_none=True)


class BatchResultSchema(Schema):
    results = fields.List(fields.Nested(RecordResultSchema))


class DeviceReportSchema(StrictSchema):
    serial = fields.String(required=True, validate=SERIAL)
    battery_pct = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=100))
    firmware = fields.String(required=True, validate=validate.Length(max=32))
    last_seen_at = fields.AwareDateTime(required=True)
    last_error = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class DeviceStatusBatchSchema(StrictSchema):
    devices = fields.List(fields.Nested(DeviceReportSchema), required=True, validate=validate.Length(min=1, max=50))


def _flatten(messages) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in sorted(messages.items()))
    if isinstance(messages, list):
        return ", ".join(_flatten(m) for m in messages)
    return str(messages)


@blp.route("/session-records")
class SessionRecords(MethodView):
    @allow(Role.GATEWAY)
    @blp.arguments(SessionBatchSchema)
    @blp.response(200, BatchResultSchema)
    @blp.doc(operationId="upload_session_records")
    def post(self, body):
        """Upload session records. Each is answered on its own: created, duplicate (already stored:
        safe to forget) or rejected with a reason (do not resend). Replaying a batch is harmless."""
        svc = services()
        gateway_id = current_actor().id
        patient_id = svc.gateways.patient_of(gateway_id)
        schema = SessionRecordSchema()
        valid, rejected = [], []
        for index, raw in enumerate(body["records"]):
            try:
                valid.append(schema.load(raw))
            except ValidationError as exc:
                record_id = raw.get("record_id") if isinstance(raw.get("record_id"), str) else f"#{index}"
                rejected.append({"record_id": record_id[:48], "status": "rejected", "reason": _flatten(exc.messages)})
        auditing.note(patient_ids=[patient_id], resource="session_record", action="C",
                      resource_ids=[r["record_id"] for r in valid])
        named = {r["device_serial"] for r in valid} | {r["device_serial"] for r in body["records"]
                                                       if isinstance(r.get("device_serial"), str)}
        results = svc.ingestion.receive(gateway_id, patient_id, valid, named, refused_by_schema=len(rejected))
        return {"results": results + rejected}


@blp.route("/device-status")
class DeviceStatus(MethodView):
    @allow(Role.GATEWAY)
    @auditing.routine
    @blp.arguments(DeviceStatusBatchSchema)
    @blp.response(204)
    @blp.doc(operationId="upload_device_status")
    def post(self, body):
        """Report units' battery, firmware, last contact and last error."""
        svc = services()
        patient_id = svc.gateways.patient_of(current_actor().id)
        auditing.note(patient_ids=[patient_id], resource="device", action="U",
                      resource_ids=[d["serial"] for d in body["devices"]])
        svc.ingestion.device_status(patient_id, body["devices"])
