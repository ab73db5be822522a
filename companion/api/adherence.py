"""Adherence: the patient's daily snapshots and their PDC summary (TENS, mindfulness, medications)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from companion.api.schemas import TaskProgressSchema
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.schemas import StrictSchema
from companion.http.security import allow, require_patient

blp = Blueprint("adherence", __name__, url_prefix="/api/v1/patients", description="Adherence and PDC")


class AdherenceArgsSchema(StrictSchema):
    from_ = fields.Date(data_key="from", load_default=None, metadata={"description": "first local date"})
    to = fields.Date(load_default=None, metadata={"description": "last local date (inclusive)"})


class SummaryArgsSchema(StrictSchema):
    as_of = fields.Date(load_default=None, metadata={"description": "last local date of the periods"})


class AdherenceSnapshotSchema(Schema):
    date = fields.String()
    zone = fields.String()
    state = fields.String()
    covered = fields.Boolean()
    tens_fraction = fields.Float(allow_none=True)
    tens_minutes = fields.Float()
    tens_minutes_target = fields.Float()
    sessions_done = fields.Integer()
    sessions_planned = fields.Integer()
    mindfulness_fraction = fields.Float(allow_none=True)
    medication_fraction = fields.Float(allow_none=True)
    tens = fields.Nested(TaskProgressSchema)
    mindfulness = fields.Nested(TaskProgressSchema)
    medication = fields.Nested(TaskProgressSchema)
    computed_at = fields.DateTime()


class AdherenceSnapshotListSchema(Schema):
    patient_id = fields.String()
    items = fields.List(fields.Nested(AdherenceSnapshotSchema), required=True)


class AdherencePdcSchema(Schema):
    days_with_plan = fields.Integer()
    days_covered = fields.Integer()
    pdc = fields.Float(allow_none=True)
    adherent = fields.Boolean(allow_none=True)


class AdherenceResponderSchema(Schema):
    status = fields.String()
    baseline_pain = fields.Float(allow_none=True)
    recent_pain = fields.Float(allow_none=True)
    pain_reduction = fields.Float(allow_none=True)
    interference_reduction = fields.Float(allow_none=True)


class InProgressSchema(Schema):
    date = fields.String()
    state = fields.String(allow_none=True)
    tens_fraction = fields.Float(allow_none=True)


class AdherenceSummarySchema(Schema):
    patient_id = fields.String()
    as_of = fields.String()
    period_end = fields.String(metadata={"description": "the last day the periods count: yesterday at the latest"})
    in_progress = fields.Nested(InProgressSchema, allow_none=True, metadata={
        "description": "today, shown apart: a day in progress is never counted in PDC"})
    threshold = fields.Float()
    tens = fields.Dict(keys=fields.String(), values=fields.Nested(AdherencePdcSchema))
    mindfulness = fields.Dict(keys=fields.String(), values=fields.Nested(AdherencePdcSchema))
    medication = fields.Dict(keys=fields.String(), values=fields.Nested(AdherencePdcSchema))
    responder = fields.Nested(AdherenceResponderSchema)


@blp.route("/<patient_id>/adherence")
class AdherenceDays(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(AdherenceArgsSchema, location="query")
    @blp.response(200, AdherenceSnapshotListSchema)
    @blp.doc(operationId="list_adherence_days")
    def get(self, args, patient_id):
        """Daily adherence for ``from``..``to`` (local dates; the last 30 days by default)."""
        require_patient(patient_id, Operation.READ)
        items = services().adherence.days_between(patient_id, args["from_"], args["to"])
        auditing.note(patient_ids=[patient_id], resource="adherence", action="R", resource_ids=[i["_id"] for i in items])
        return {"patient_id": patient_id, "items": items}


@blp.route("/<patient_id>/adherence/summary")
class AdherenceSummary(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(SummaryArgsSchema, location="query")
    @blp.response(200, AdherenceSummarySchema)
    @blp.doc(operationId="get_adherence_summary")
    def get(self, args, patient_id):
        """PDC over 7, 30 and 90 days (80% threshold flagged) per kind of task, and the responder check. The
        periods end on yesterday at the latest: today is in progress, given apart."""
        require_patient(patient_id, Operation.READ)
        result = services().adherence.summary(patient_id, args["as_of"])
        auditing.note(patient_ids=[patient_id], resource="adherence", action="R", resource_ids=[patient_id])
        return result
