"""Therapy plans: the care team prescribes, everyone related to the patient reads, history is kept."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.schemas import StrictSchema, text
from companion.http.security import allow, current_actor, require_patient

blp = Blueprint("plans", __name__, url_prefix="/api/v1", description="Therapy plans")

CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"


class TensPrescriptionSchema(StrictSchema):
    sessions_per_day = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=12))
    daily_minutes_target = fields.Integer(load_default=None, allow_none=True,
                                          validate=validate.Range(min=1, max=720))
    minutes_per_session = fields.Integer(required=True, validate=validate.Range(min=1, max=240))
    programmes = fields.List(fields.Integer(validate=validate.Range(min=1, max=99)), load_default=list,
                             validate=validate.Length(max=20))
    intensity_min_ma = fields.Float(required=True, validate=validate.Range(min=0, max=100))
    intensity_max_ma = fields.Float(required=True, validate=validate.Range(min=0, max=100))
    start_date = fields.Date(required=True)
    end_date = fields.Date(load_default=None, allow_none=True)
    counts_towards_adherence = fields.Boolean(load_default=True)

    @validates_schema
    def consistent(self, data, **kwargs):
        if data.get("sessions_per_day") is None and data.get("daily_minutes_target") is None:
            raise ValidationError("give sessions_per_day or daily_minutes_target", "sessions_per_day")
        if data["intensity_min_ma"] > data["intensity_max_ma"]:
            raise ValidationError("must not exceed intensity_max_ma", "intensity_min_ma")
        if data.get("end_date") and data["end_date"] < data["start_date"]:
            raise ValidationError("must not be before start_date", "end_date")


class MedicationSchema(StrictSchema):
    name = text(100, required=True, min_len=1)
    dose = text(100, required=True, min_len=1)
    times = fields.List(fields.String(validate=validate.Regexp(CLOCK, error="use HH:MM")),
                        load_default=list, validate=validate.Length(max=12))
    counts_towards_adherence = fields.Boolean(load_default=True)


class MindfulnessTargetSchema(StrictSchema):
    minutes_per_day = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=240))
    sessions_per_week = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=28))
    counts_towards_adherence = fields.Boolean(load_default=False)


def _no_mindfulness_target() -> dict:
    return {"minutes_per_day": None, "sessions_per_week": None, "counts_towards_adherence": False}


class PlanInputSchema(StrictSchema):
    tens = fields.Nested(TensPrescriptionSchema, required=True)
    medications = fields.List(fields.Nested(MedicationSchema), load_default=list, validate=validate.Length(max=20))
    mindfulness = fields.Nested(MindfulnessTargetSchema, load_default=_no_mindfulness_target)
    based_on_version = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0),
                                      metadata={"description": "refuse (409) unless this is still the current "
                                                               "version (0 when there is none yet)"})


class TensOutSchema(Schema):
    sessions_per_day = fields.Integer(allow_none=True)
    daily_minutes_target = fields.Integer(allow_none=True)
    minutes_per_session = fields.Integer()
    programmes = fields.List(fields.Integer())
    intensity_min_ma = fields.Float()
    intensity_max_ma = fields.Float()
    start_date = fields.String()
    end_date = fields.String(allow_none=True)
    counts_towards_adherence = fields.Boolean()


class MedicationOutSchema(Schema):
    name = fields.String()
    dose = fields.String()
    times = fields.List(fields.String())
    counts_towards_adherence = fields.Boolean()


class MindfulnessOutSchema(Schema):
    minutes_per_day = fields.Integer(allow_none=True)
    sessions_per_week = fields.Integer(allow_none=True)
    counts_towards_adherence = fields.Boolean()


class PlanSchema(Schema):
    id = fields.String(attribute="_id", allow_none=True)
    patient_id = fields.String()
    version = fields.Integer(metadata={"description": "0 when no plan has been set yet"})
    created_at = fields.DateTime()
    created_by = fields.String()
    active_from = fields.DateTime()
    active_to = fields.DateTime(allow_none=True)
    tens = fields.Nested(TensOutSchema, allow_none=True)
    medications = fields.List(fields.Nested(MedicationOutSchema))
    mindfulness = fields.Nested(MindfulnessOutSchema, allow_none=True)


class PlanHistorySchema(Schema):
    items = fields.List(fields.Nested(PlanSchema))


@blp.route("/patients/<patient_id>/therapy-plan")
class CurrentPlan(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.response(200, PlanSchema)
    def get(self, patient_id):
        """The current therapy plan (the highest version); version 0, with no tasks, until one is set."""
        require_patient(patient_id, Operation.READ)
        plan = services().plans.current(patient_id)
        auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="R",
                      resource_ids=[plan["_id"]] if plan["_id"] else [])
        return plan

    @allow(Role.CLINICIAN)
    @blp.arguments(PlanInputSchema)
    @blp.response(201, PlanSchema)
    def put(self, body, patient_id):
        """Prescribe a new version of the plan (a clinician on the patient's care team)."""
        require_patient(patient_id, Operation.CLINICAL)
        plan = services().plans.prescribe(patient_id, body, created_by=current_actor().id,
                                          based_on_version=body["based_on_version"])
        auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="C", resource_ids=[plan["_id"]])
        return plan


@blp.route("/patients/<patient_id>/therapy-plan/versions")
class PlanHistory(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.response(200, PlanHistorySchema)
    def get(self, patient_id):
        """Every version of the plan, newest first."""
        require_patient(patient_id, Operation.READ)
        items = services().plans.history(patient_id)
        auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="R",
                      resource_ids=[p["_id"] for p in items])
        return {"items": items}
