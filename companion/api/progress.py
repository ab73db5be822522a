"""A patient's progress: today, streaks, the week, and suggestions after a flare."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api import examples
from companion.api.library import LibraryItemSummarySchema
from companion.api.reminder_schemas import OccurrenceSchema
from companion.api.schemas import TaskProgressSchema
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.compiled import CompiledDump
from companion.http.schemas import StrictSchema
from companion.http.security import allow, own_account, require_patient

blp = Blueprint("progress", __name__, url_prefix="/api/v1", description="Today, streaks, weekly summary")
READERS = (Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
PRACTICE_COUNTED = ("minutes of completed practice, each stretch of time once: practice recorded twice (by the "
                    "patient and a caregiver, or from two phones) counts once, on the day it began")


class TaskTodaySchema(TaskProgressSchema):
    """Today's progress towards the plan's goal of one kind (shown whether or not it counts towards adherence)."""

    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    counts_towards_adherence = fields.Boolean()


class TensTodaySchema(TaskTodaySchema):
    sessions = fields.Integer()


class MindfulnessGoalSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    minutes_per_day = fields.Integer(allow_none=True)
    sessions_per_week = fields.Integer(allow_none=True)


class MindfulnessTodaySchema(TaskTodaySchema):
    goal = fields.Nested(MindfulnessGoalSchema, allow_none=True,
                         metadata={"description": "the plan's mindfulness goal; null when it sets none"})
    sessions_this_week = fields.Integer(metadata={
        "description": "practice completed since Monday, whether or not the plan sets a goal (one recorded twice, "
                       "overlapping an earlier one by more than a minute, is counted once)"})


class RemindersTodaySchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    due = fields.Integer()
    pending = fields.Integer()
    done = fields.Integer()
    skipped = fields.Integer()
    missed = fields.Integer()
    items = fields.List(fields.Nested(OccurrenceSchema), required=True)


class PainTodaySchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    entries = fields.Integer()
    latest_nrs = fields.Integer(allow_none=True)


class TodaySchema(CompiledDump, Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    date = fields.String()
    zone = fields.String()
    reminders = fields.Nested(RemindersTodaySchema)
    tens = fields.Nested(TensTodaySchema)
    mindfulness = fields.Nested(MindfulnessTodaySchema)
    medication = fields.Nested(TaskTodaySchema)
    pain = fields.Nested(PainTodaySchema)


class StreakArgs(StrictSchema):
    grace_days = fields.Integer(load_default=1, validate=validate.Range(min=0, max=3),
                                metadata={"description": "missed days forgiven in any 7 days"})
    days = fields.Integer(load_default=90, validate=validate.Range(min=1, max=366))


class StreakSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    current = fields.Integer()
    longest = fields.Integer()
    grace_days = fields.Integer()
    forgiven = fields.List(fields.String())
    since = fields.String()


class WeekArgs(StrictSchema):
    date = fields.Date(load_default=None, metadata={"description": "any day of the week (default: today)"})


class WeekDaySchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    date = fields.String()
    covered = fields.Boolean(allow_none=True, metadata={
        "description": "whether the day's TENS plan was met; null for a day with no plan, a day still to come, "
                       "and today until it is met (in progress, not missed)"})
    tens_minutes = fields.Float()
    tens_minutes_target = fields.Float()
    mindfulness_minutes = fields.Float(metadata={"description": PRACTICE_COUNTED})
    reminders_done = fields.Integer()
    reminders_skipped = fields.Integer()
    reminders_missed = fields.Integer()
    pain_entries = fields.Integer()
    max_pain = fields.Integer(allow_none=True)


class WeekSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    week_start = fields.String()
    iso_week = fields.Integer()
    days_with_plan = fields.Integer()
    days_covered = fields.Integer()
    tens_minutes = fields.Float()
    practice_minutes = fields.Float(metadata={"description": PRACTICE_COUNTED})
    mean_pain = fields.Float(allow_none=True)
    pain_entries = fields.Integer()
    days = fields.List(fields.Nested(WeekDaySchema))


class FlareSchema(Schema):
    recorded_at = fields.DateTime()
    nrs = fields.Integer()
    reason = fields.String(metadata={"description": "two_high | one_high | above_median"})
    baseline_median = fields.Float(allow_none=True)


class SuggestedItemSchema(LibraryItemSummarySchema):
    mean_pain_change = fields.Float(allow_none=True,
                                    metadata={"description": "this patient's mean NRS change after it"})
    pairs = fields.Integer()


class SuggestionsSchema(Schema):
    flare = fields.Nested(FlareSchema, allow_none=True)
    items = fields.List(fields.Nested(SuggestedItemSchema), required=True)


@blp.route("/patients/<patient_id>/today")
class Today(MethodView):
    @allow(*READERS)
    @blp.response(200, TodaySchema, example=examples.TODAY)
    @blp.doc(operationId="get_today")
    def get(self, patient_id):
        """Today on the patient's clock: reminders due and done, TENS minutes against the plan."""
        grant = require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="progress", action="R", resource_ids=["today"])
        return services().progress.today(patient_id, own_account(patient_id), grant)


@blp.route("/patients/<patient_id>/progress/streak")
class StreakView(MethodView):
    @allow(*READERS)
    @blp.arguments(StreakArgs, location="query")
    @blp.response(200, StreakSchema)
    @blp.doc(operationId="get_streak")
    def get(self, args, patient_id):
        """Days in a row meeting the TENS prescription, forgiving a few missed days."""
        require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="progress", action="R", resource_ids=["streak"])
        return services().progress.streaks(patient_id, args["grace_days"], args["days"])


@blp.route("/patients/<patient_id>/progress/week")
class WeekView(MethodView):
    @allow(*READERS)
    @blp.arguments(WeekArgs, location="query")
    @blp.response(200, WeekSchema)
    @blp.doc(operationId="get_week_summary")
    def get(self, args, patient_id):
        """A week (Monday to Sunday on the patient's clock): totals and each day."""
        require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="progress", action="R", resource_ids=["week"])
        return services().progress.week(patient_id, args["date"])


@blp.route("/patients/<patient_id>/suggestions")
class SuggestionsView(MethodView):
    @allow(*READERS)
    @blp.response(200, SuggestionsSchema)
    @blp.doc(operationId="list_suggestions")
    def get(self, patient_id):
        """After a pain flare in the last 48 hours: short items, those followed by less pain first."""
        require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="progress", action="R", resource_ids=["suggestions"])
        return services().progress.suggestions(patient_id)
