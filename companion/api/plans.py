"""Therapy plans: the care team prescribes, everyone related to the patient reads, history is kept."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from companion.api.schemas import ChangesArgs, changes_schema
from companion.domain.access import Operation, Role
from companion.domain.errors import DomainError
from companion.http import auditing, conditional, paging, services
from companion.http.conditional import (
    ETAG_HEADERS,
    IF_MATCH_DOC,
    IF_NONE_MATCH_DOC,
    NOT_MODIFIED_DOC,
    PRECONDITION_FAILED_DOC,
)
from companion.http.problems import conflict_doc
from companion.http.schemas import Pattern, StrictSchema, text
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

    class Meta:
        rules = ("sessions_per_day or daily_minutes_target (or both); intensity_min_ma <= intensity_max_ma; "
                 "end_date, when given, not before start_date")

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
    times = fields.List(fields.String(validate=Pattern(CLOCK, error="use HH:MM")),
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
                                                               "version (0 when there is none yet); If-Match "
                                                               "does the same with a 412 and the current plan"})


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
    version = fields.Integer(metadata={"description": "0 when no plan has been set yet; the current plan's "
                                                     'ETag is "<version>"'})
    created_at = fields.DateTime()
    created_by = fields.String()
    active_from = fields.DateTime()
    active_to = fields.DateTime(allow_none=True)
    tens = fields.Nested(TensOutSchema, allow_none=True)
    medications = fields.List(fields.Nested(MedicationOutSchema))
    mindfulness = fields.Nested(MindfulnessOutSchema, allow_none=True)


class PlanHistorySchema(Schema):
    items = fields.List(fields.Nested(PlanSchema), required=True)
    next = paging.next_field()


class PlanHistoryArgs(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = paging.cursor_field()


PlanChangesSchema = changes_schema("PlanChangesSchema", PlanSchema)


@blp.route("/patients/<patient_id>/therapy-plan")
class CurrentPlan(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.doc(parameters=[IF_NONE_MATCH_DOC])
    @blp.response(200, PlanSchema, headers=ETAG_HEADERS)
    @blp.alt_response(304, **NOT_MODIFIED_DOC)
    @blp.doc(operationId="get_therapy_plan")
    def get(self, patient_id):
        """The current therapy plan (the highest version); version 0, with no tasks, until one is set."""
        require_patient(patient_id, Operation.READ)
        plan = services().plans.current(patient_id)
        auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="R",
                      resource_ids=[plan["_id"]] if plan["_id"] else [])
        return conditional.not_modified(plan["version"]) or conditional.tagged(plan, plan["version"])

    @allow(Role.CLINICIAN)
    @blp.doc(parameters=[IF_MATCH_DOC])
    @blp.arguments(PlanInputSchema)
    @blp.response(201, PlanSchema, headers=ETAG_HEADERS)
    @blp.alt_response(412, **PRECONDITION_FAILED_DOC)
    @blp.alt_response(409, **conflict_doc("based_on_version is no longer the current plan: read it and decide again",
                                           contended=True))
    @conditional.shows_current(PlanSchema)
    @blp.doc(operationId="replace_therapy_plan")
    def put(self, body, patient_id):
        """Prescribe a new version of the plan (a clinician on the patient's care team). With If-Match
        ("<version>" of the plan it replaces, "0" for the first), refused with 412 and the current plan if
        another version came first; without it, the new version goes on top of whatever is current."""
        require_patient(patient_id, Operation.CLINICAL)
        try:
            plan = services().plans.prescribe(patient_id, body, created_by=current_actor().id,
                                              based_on_version=body["based_on_version"],
                                              if_versions=conditional.if_match())
        except DomainError as refused:
            if refused.current is not None and refused.current.get("_id"):  # the 412 shows the current plan: a read
                auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="R",
                              resource_ids=[refused.current["_id"]])
            raise
        auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="C", resource_ids=[plan["_id"]])
        return conditional.tagged(plan, plan["version"], 201)


@blp.route("/patients/<patient_id>/therapy-plan/changes")
class PlanChanges(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, PlanChangesSchema, headers=paging.LINK_HEADER)
    @blp.alt_response(410, response="GONE", description="read again from the start, without a cursor")
    @blp.doc(operationId="list_therapy_plan_changes")
    def get(self, args, patient_id):
        """Plan versions created or ended (active_to set) after the cursor, oldest change first. See the
        README's "Sync" section."""
        require_patient(patient_id, Operation.READ)
        page = services().plans.changes_since(patient_id, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="search",
                      resource_ids=[p["_id"] for p in page["items"]])
        return paging.feed_page(page)


@blp.route("/patients/<patient_id>/therapy-plan/versions")
class PlanHistory(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(PlanHistoryArgs, location="query")
    @blp.response(200, PlanHistorySchema, headers=paging.LINK_HEADER)
    @blp.doc(operationId="list_therapy_plan_versions")
    def get(self, args, patient_id):
        """Every version of the plan, newest first, at most `limit` per page: follow `next` for more. Each page
        continues after the last version of the one before, and a version written between two pages shifts
        nothing (it is at the head of the list when read again from the start)."""
        require_patient(patient_id, Operation.READ)
        items, more = services().plans.versions(
            patient_id, below=paging.number_place(args["cursor"]) if args["cursor"] else None, limit=args["limit"])
        auditing.note(patient_ids=[patient_id], resource="therapy_plan", action="R",
                      resource_ids=[p["_id"] for p in items])
        return {"items": items,
                "next": paging.next_link(cursor=paging.number_cursor(items[-1]["version"])) if more else None}
