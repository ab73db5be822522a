"""What gateways send: TENS session records with the syncs that captured them (batches of up to 500 records,
per-item results), the gateway's clock, unit status, and the gateway's dead letters; and the one thing a gateway
asks about what it sent: whether a unit's record was delivered, with which content hash.

The patient is never taken from the request: a gateway delivers for the patient it is bound to, the units it
names must be (or once have been) bound to that patient, and each record goes to whoever wore the unit when
it happened.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from companion.domain.access import Role
from companion.domain.sessions import CLOCK_STATUSES, END_REASONS, Flag
from companion.http import auditing, services
from companion.http.compiled import CompiledLoader
from companion.http.schemas import Pattern, StrictSchema
from companion.http.security import allow, current_actor

blp = Blueprint("ingestion", __name__, url_prefix="/api/v1/gateway", description="Gateway uploads")

MAX_BATCH = 500
MAX_SYNCS = 200
MAX_DEAD_LETTERS = 100
SERIAL_PATTERN = re.compile(r"^[A-Za-z0-9-]{4,32}$")
SERIAL = Pattern(SERIAL_PATTERN)
SYNC_ID = Pattern(r"^[A-Za-z0-9-]{8,64}$")
FLAGS = [f.value for f in Flag] + ["conflicting_copy"]
# The instants a clock can have read (a unit reset to its epoch reads 2000, or 1970): beyond them a correction
# or a margin added to a reading would overflow, and a stored one would break every later upload of the unit.
INSTANT = validate.Range(min=datetime(1970, 1, 1, tzinfo=UTC), max=datetime(2200, 1, 1, tzinfo=UTC),
                         error="must be an instant between 1970 and 2200")


class SessionRecordSchema(StrictSchema):
    record_id = fields.String(required=True, validate=validate.Length(max=48))
    device_serial = fields.String(required=True, validate=SERIAL)
    # From 1, as the unit numbers its records (docs/companion-tens-profile.md): placement reads a unit's records
    # from number 1, and a record 0 stored would never be placed again.
    device_seq = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=2**32 - 1),
                                metadata={"description": "the unit's sequence number of the record, from 1"})
    device_started_at = fields.AwareDateTime(validate=INSTANT, required=True, metadata={"description": "by the unit's clock"})
    started_at = fields.AwareDateTime(validate=INSTANT, required=True, metadata={
        "description": "the gateway's own correction; the server places the session itself from the syncs"})
    clock_offset_s = fields.Float(required=True, validate=validate.Range(min=-100 * 365 * 86400, max=100 * 365 * 86400))
    clock_status = fields.String(required=True, validate=validate.OneOf(CLOCK_STATUSES))
    gateway_received_at = fields.AwareDateTime(validate=INSTANT, required=True)
    # Any length a unit's counter can hold: one outside the clinical rules (below zero, over a day) is stored and held
    # for the care team (a clinical finding), where a refused record would be a dead letter, lost to them.
    duration_s = fields.Integer(required=True, strict=True, validate=validate.Range(min=-(2**31), max=2**31))
    programme = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=255))
    frequency_hz = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10000))
    pulse_width_us = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10000))
    intensity_mean_ma = fields.Float(required=True, validate=validate.Range(min=0, max=1000))
    intensity_peak_ma = fields.Float(required=True, validate=validate.Range(min=0, max=1000))
    end_reason = fields.String(required=True, validate=validate.OneOf(END_REASONS))
    battery_pct = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=100))
    content_hash = fields.String(required=True, validate=validate.Length(min=8, max=128))
    sync_id = fields.String(load_default=None, allow_none=True, validate=SYNC_ID,
                            metadata={"description": "the sync that captured the record (see SyncSchema)"})


class SyncSchema(StrictSchema):
    """One connection of the gateway to a unit: what the unit's clock read, and the gateway's clocks then."""

    sync_id = fields.String(required=True, validate=SYNC_ID)
    serial = fields.String(required=True, validate=SERIAL)
    highest_seq = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=2**32 - 1),
                                 metadata={"description": "the unit's highest sequence number at this sync (one more than "
                                                          "5,000 beyond the unit's highest record is stored, and "
                                                          "placement goes by it once records reach it)"})
    unit_clock = fields.AwareDateTime(validate=INSTANT, required=True, allow_none=True,
                                      metadata={"description": "the unit's clock reading (null: unreadable)"})
    gateway_clock = fields.AwareDateTime(validate=INSTANT, required=True, metadata={"description": "the gateway's wall clock then"})
    boot_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    monotonic_s = fields.Float(required=True, validate=validate.Range(min=0, max=10**10))
    clock_set_to = fields.AwareDateTime(validate=INSTANT, load_default=None, allow_none=True,
                                        metadata={"description": "what the gateway set the unit's clock to, if it did"})
    vouched_time = fields.AwareDateTime(validate=INSTANT, load_default=None, allow_none=True, metadata={
        "description": "the server's time as the gateway last measured it (X-Server-Time), if it had one"})
    vouched_error_s = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0, max=86400))


class GatewayClockSchema(StrictSchema):
    wall = fields.AwareDateTime(validate=INSTANT, required=True, metadata={"description": "the gateway's wall clock as it sends"})
    boot_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    monotonic_s = fields.Float(required=True, validate=validate.Range(min=0, max=10**10))


class SessionBatchSchema(StrictSchema):
    class Meta:
        rules = "at least one record or one sync"

    records = fields.List(fields.Dict(), load_default=list, validate=validate.Length(max=MAX_BATCH),
                          metadata={"description": f"0 to {MAX_BATCH} records, each a SessionRecord"})
    syncs = fields.List(fields.Dict(), load_default=list, validate=validate.Length(max=MAX_SYNCS),
                        metadata={"description": f"0 to {MAX_SYNCS} syncs, each a Sync"})
    gateway_clock = fields.Nested(GatewayClockSchema, load_default=None, allow_none=True)

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data["records"] and not data["syncs"]:
            raise ValidationError("send at least one record or one sync", "records")


class RecordResultSchema(Schema):
    record_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["created", "duplicate", "discarded", "rejected"],
                                                    "description":
                                     "created and duplicate: stored (safe to forget), whatever its flags; "
                                     "discarded: recorded while the unit was worn by a patient whose record has "
                                     "since been deleted, so kept by nobody (safe to forget); "
                                     "rejected: it has no identity to be stored under (do not resend)"})
    reason = fields.String(allow_none=True)
    flags = fields.List(fields.String(metadata={"enum": FLAGS}), metadata={
        "description": "findings about the stored record (see the README's time model)"})
    held = fields.Boolean(metadata={"description": "kept out of the figures until resolved"})
    time_quality = fields.String(allow_none=True, metadata={"enum": ["exact", "corrected", "estimated"]})


class SyncResultSchema(Schema):
    sync_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["created", "duplicate", "rejected"]})
    reason = fields.String(allow_none=True)


class ClockVerdictSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    server_time = fields.DateTime()
    gateway_offset_s = fields.Float(allow_none=True, metadata={
        "description": "how far the gateway's clock is ahead of the server's (the request's time on the wire "
                       "included)"})
    vouched = fields.Boolean(metadata={"description": "the server vouches for the gateway's clock"})


class BatchResultSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    results = fields.List(fields.Nested(RecordResultSchema))
    syncs = fields.List(fields.Nested(SyncResultSchema))
    clock = fields.Nested(ClockVerdictSchema)


class DeviceReportSchema(StrictSchema):
    serial = fields.String(required=True, validate=SERIAL)
    battery_pct = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=100))
    firmware = fields.String(required=True, validate=validate.Length(max=32))
    last_seen_at = fields.AwareDateTime(validate=INSTANT, required=True, metadata={
        "description": "when the gateway last connected to the unit, by the clock last_seen_clock names; the server "
                       "moves a gateway-clock reading by the offset it measures from gateway_clock (without one, by the "
                       "offset it measured at the gateway's last upload, within a day), takes none later than the "
                       "report's arrival, and never moves a unit's last contact back"})
    last_seen_clock = fields.String(load_default="gateway", validate=validate.OneOf(["server", "gateway"]), metadata={
        "description": "server: the server's time as the gateway measured it (X-Server-Time); gateway: the "
                       "gateway's own wall clock, not to be trusted alone"})
    last_error = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class DeviceStatusBatchSchema(StrictSchema):
    devices = fields.List(fields.Nested(DeviceReportSchema), required=True, validate=validate.Length(min=1, max=50))
    gateway_clock = fields.Nested(GatewayClockSchema, load_default=None, allow_none=True)


class DeadLetterSchema(StrictSchema):
    id = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=2**53),
                        metadata={"description": "the gateway's own id of the dead letter"})
    device_serial = fields.String(required=True, validate=SERIAL)
    record_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=48))
    reason = fields.String(required=True, validate=validate.Length(max=500))
    source = fields.String(required=True, validate=validate.OneOf(["unit", "server", "buffer", "sync"]))
    dead_at = fields.AwareDateTime(validate=INSTANT, required=True)
    payload = fields.String(required=True, validate=validate.Length(max=8000),
                            metadata={"description": "what was kept: raw frame bytes as hex, or the record"})


class DeadLetterBatchSchema(StrictSchema):
    items = fields.List(fields.Nested(DeadLetterSchema), required=True,
                        validate=validate.Length(min=1, max=MAX_DEAD_LETTERS))


class DeadLetterAnswerSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    received = fields.Integer(metadata={"description": "how many dead letters the request carried"})
    new = fields.Integer(metadata={"description": "how many of them the server did not hold yet"})


class DeliveredRecordSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    serial = fields.String()
    seq = fields.Integer()
    delivered = fields.Boolean(metadata={
        "description": "a gateway of this gateway's patient delivered the unit's record with this number"})
    content_hash = fields.String(allow_none=True, metadata={
        "description": "the content hash that gateway sent with it (SHA-256 over the serial, a NUL byte and the "
                       "record's raw frame, as hex); null when none was delivered, or when the record was imported "
                       "without a gateway (its hash is not a gateway's)"})


def _flatten(messages) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in sorted(messages.items()))
    if isinstance(messages, list):
        return ", ".join(_flatten(m) for m in messages)
    return str(messages)


# Records and syncs come by the hundred: compiled from their schemas (same rules, the schema's own errors).
RECORDS = CompiledLoader(SessionRecordSchema())
SYNCS = CompiledLoader(SyncSchema())


def _load_each(loader: CompiledLoader, items: list, id_field: str, max_len: int) -> tuple[list[dict], list[dict]]:
    """Load every item on its own: the valid ones, and a rejection (with the reasons) for each other one."""
    valid, rejected = [], []
    for index, raw in enumerate(items):
        try:
            valid.append(loader.load(raw))
        except ValidationError as exc:
            item_id = raw.get(id_field) if isinstance(raw, dict) and isinstance(raw.get(id_field), str) else f"#{index}"
            rejected.append({id_field: item_id[:max_len], "status": "rejected", "reason": _flatten(exc.messages)})
    return valid, rejected


@blp.route("/session-records")
class SessionRecords(MethodView):
    @allow(Role.GATEWAY)
    @blp.arguments(SessionBatchSchema)
    @blp.response(200, BatchResultSchema)
    @blp.doc(operationId="upload_session_records")
    def post(self, body):
        """Upload session records and the syncs that captured them. Each record is answered on its own:
        created or duplicate (stored: safe to forget), with the findings that may hold it back from the
        figures, or rejected when it has no identity to be stored under (do not resend). The answer also says
        whether the server vouches for the gateway's clock. Replaying a batch is harmless."""
        svc = services()
        gateway_id = current_actor().id
        patient_id = svc.gateways.patient_of(gateway_id)
        valid, rejected = _load_each(RECORDS, body["records"], "record_id", 48)
        syncs, rejected_syncs = _load_each(SYNCS, body["syncs"], "sync_id", 64)
        noted = auditing.note(patient_ids=[patient_id], resource="session_record", action="C",
                              resource_ids=[r["record_id"] for r in valid])
        # The units named, the rejected records' too (a gateway may write for its own units only, whatever it
        # sends); a serial that is not one (refused by the schema) names no unit: its record is rejected alone.
        named = {r["device_serial"] for r in valid} | {
            r["device_serial"] for r in body["records"] if isinstance(r, dict)
            and isinstance(r.get("device_serial"), str) and SERIAL_PATTERN.fullmatch(r["device_serial"])}
        answer = svc.ingestion.receive(gateway_id, patient_id, valid, named, syncs=syncs,
                                       gateway_clock=body["gateway_clock"], refused_by_schema=len(rejected))
        # A unit that changed hands brings records of whoever wore it then: each patient written to is named.
        auditing.also_touched(noted, answer["patients"])
        return {"results": answer["results"] + rejected, "syncs": answer["syncs"] + rejected_syncs,
                "clock": answer["clock"]}


@blp.route("/device-status")
class DeviceStatus(MethodView):
    @allow(Role.GATEWAY)
    @auditing.routine
    @blp.arguments(DeviceStatusBatchSchema)
    @blp.response(204)
    @blp.doc(operationId="upload_device_status")
    def post(self, body):
        """Report units' battery, firmware, last contact and last error (a unit that has since moved to
        another patient is skipped)."""
        svc = services()
        gateway_id = current_actor().id
        patient_id = svc.gateways.patient_of(gateway_id)
        auditing.note(patient_ids=[patient_id], resource="device", action="U",
                      resource_ids=[d["serial"] for d in body["devices"]])
        svc.ingestion.device_status(patient_id, body["devices"], gateway_clock=body["gateway_clock"],
                                    gateway_id=gateway_id)


@blp.route("/devices/<serial>/records/<int:seq>")
class DeliveredRecord(MethodView):
    @allow(Role.GATEWAY)
    @blp.response(200, DeliveredRecordSchema)
    @blp.doc(operationId="get_delivered_record")
    def get(self, serial, seq):
        """Whether the unit's record with this number reached the server through a gateway of this gateway's
        patient, and with which content hash. A gateway asks it when it has no hash of its own for the record at
        a unit's position (it moved past records the unit no longer held, or a buffer-recover gave the position)
        and the unit holds that number again: the same hash is a lost acknowledgement, another one a unit whose
        counter restarted. Only about a unit bound to the gateway's patient now (else 403)."""
        svc = services()
        patient_id = svc.gateways.patient_of(current_actor().id)
        auditing.note(patient_ids=[patient_id], resource="session_record", action="R",
                      resource_ids=[f"{serial}:{seq}"])
        return svc.ingestion.delivered_record(patient_id, serial, seq)


@blp.route("/dead-letters")
class DeadLetters(MethodView):
    @allow(Role.GATEWAY)
    @blp.arguments(DeadLetterBatchSchema)
    @blp.response(200, DeadLetterAnswerSchema)
    @blp.doc(operationId="report_dead_letters")
    def post(self, body):
        """Report what the gateway could not deliver as records: frames a unit sent that could not be decoded,
        records the server once refused, records the buffer could no longer read. Kept on the server (once
        each, however often reported) so that nothing a unit handed over disappears unseen. A gateway may send
        as many reports a minute as record batches (COMPANION_GATEWAY_UPLOADS_PER_MIN, counted apart); beyond,
        429 with Retry-After: keep the reports and send them then."""
        svc = services()
        gateway_id = current_actor().id
        patient_id = svc.gateways.patient_of(gateway_id)
        svc.ingestion.admit_dead_letters(gateway_id)
        auditing.note(patient_ids=[patient_id], resource="dead_letter", action="C",
                      resource_ids=[str(i["id"]) for i in body["items"]])
        new = svc.gateways.keep_dead_letters(gateway_id, patient_id, body["items"])
        return {"received": len(body["items"]), "new": new}
