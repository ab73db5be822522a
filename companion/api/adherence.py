"""Adherence: the patient's daily snapshots and their PDC summary (TENS, mindfulness, medications)."""

from __future__ import annotations

from datetime import timedelta

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from companion.api import auditing, services
from companion.api.schemas import StrictSchema, TaskProgressSchema
from companion.api.security import allow, require_patient
from companion.domain.access import Operation, Role
from companion.domain.errors import Invalid, NotFound
from companion.services import adherence
from companion.services.reminder_schedules import zone_history_of
from companion.store.accounts import Users, now

blp = Blueprint("adherence", __name__, url_prefix="/api/v1/patients", description="Adherence and PDC")

DEFAULT_DAYS = 30


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
    items = fields.List(fields.Nested(AdherenceSnapshotSchema))


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


class AdherenceSummarySchema(Schema):
    patient_id = fields.String()
    as_of = fields.String()
    threshold = fields.Float()
    tens = fields.Dict(keys=fields.String(), values=fields.Nested(AdherencePdcSchema))
    mindfulness = fields.Dict(keys=fields.String(), values=fields.Nested(AdherencePdcSchema))
    medication = fields.Dict(keys=fields.String(), values=fields.Nested(AdherencePdcSchema))
    responder = fields.Nested(AdherenceResponderSchema)


def _today(patient_id: str):
    patient = Users(services().db).by_id(patient_id)
    if patient is None:
        raise NotFound("no such patient")
    at = now()
    return at.astimezone(zone_history_of(patient).zone_at(at)).date()


@blp.route("/<patient_id>/adherence")
class AdherenceDays(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(AdherenceArgsSchema, location="query")
    @blp.response(200, AdherenceSnapshotListSchema)
    def get(self, args, patient_id):
        """Daily adherence for ``from``..``to`` (local dates; the last 30 days by default)."""
        require_patient(patient_id, Operation.READ)
        last = args["to"] or _today(patient_id)
        first = args["from_"] or last - timedelta(days=DEFAULT_DAYS - 1)
        try:
            items = adherence.days_between(services().db, patient_id, first, last)
        except ValueError as exc:
            raise Invalid(str(exc), errors={"from": ["from must not be after to, and at most 366 days before"]}) \
                from exc
        auditing.note(patient_ids=[patient_id], resource="adherence", action="R", resource_ids=[i["_id"] for i in items])
        return {"patient_id": patient_id, "items": items}


@blp.route("/<patient_id>/adherence/summary")
class AdherenceSummary(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(SummaryArgsSchema, location="query")
    @blp.response(200, AdherenceSummarySchema)
    def get(self, args, patient_id):
        """PDC over 7, 30 and 90 days (80% threshold flagged) per kind of task, and the responder check."""
        require_patient(patient_id, Operation.READ)
        result = adherence.summary(services().db, patient_id, args["as_of"] or _today(patient_id), now())
        auditing.note(patient_ids=[patient_id], resource="adherence", action="R", resource_ids=[patient_id])
        return result
