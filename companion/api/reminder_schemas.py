"""What the reminder routes accept and answer."""

from __future__ import annotations

from datetime import timedelta

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from companion.api.moments import check_range, range_rule, reported_moment
from companion.api.schedule_schemas import ScheduleSchema
from companion.api.schemas import changes_schema, version_field
from companion.domain.schedules import MAX_COMPLETION_WINDOW_MINUTES
from companion.http.paging import cursor_field, next_field
from companion.http.schemas import StrictSchema, text

KINDS = ("tens", "medication", "mindfulness", "custom")
OCCURRENCE_RANGE = timedelta(days=31)
OCCURRENCE_RANGE_RULE = range_rule(OCCURRENCE_RANGE)


class RepeatSchema(StrictSchema):
    count = fields.Integer(required=True, validate=validate.Range(min=1, max=5))
    every_min = fields.Integer(required=True, validate=validate.Range(min=5, max=120))


class ReminderInputSchema(StrictSchema):
    class Meta:
        rules = "repeat.count x repeat.every_min must fit inside completion_window_min"

    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    title = text(100, required=True, min_len=1,
                 metadata={"description": "the patient's own words; shown in the app, never in a push"})
    schedule = fields.Nested(ScheduleSchema, required=True)
    completion_window_min = fields.Integer(load_default=60,
                                           validate=validate.Range(min=5, max=MAX_COMPLETION_WINDOW_MINUTES))
    repeat = fields.Nested(RepeatSchema, load_default=None, allow_none=True, metadata={
        "description": "reminders again if not done: `count` x `every_min` must fit inside `completion_window_min`"})

    @validates_schema
    def repeats_fit_the_window(self, data, **kwargs):
        repeat = data.get("repeat")
        if repeat and repeat["count"] * repeat["every_min"] > data["completion_window_min"]:
            raise ValidationError("repeats must fit inside the completion window", "repeat")


class ReminderEditSchema(StrictSchema):
    title = text(100, min_len=1)
    schedule = fields.Nested(ScheduleSchema)
    completion_window_min = fields.Integer(validate=validate.Range(min=5, max=MAX_COMPLETION_WINDOW_MINUTES))
    repeat = fields.Nested(RepeatSchema, allow_none=True)
    active = fields.Boolean()


class ReminderSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    id = fields.String(attribute="_id")
    patient_id = fields.String()
    kind = fields.String()
    title = fields.String()
    schedule = fields.Dict()
    completion_window_min = fields.Integer()
    repeat = fields.Dict(allow_none=True)
    active = fields.Boolean()
    silenced_by_quiet_hours = fields.List(fields.String(), dump_default=list, metadata={
        "description": "the reminder's times (HH:MM, the patient's clock) whose whole completion window falls inside "
                       "the patient's quiet hours: no push reminds of them (the first would wait for the end of the "
                       "quiet hours, and the window is closed by then); the occurrences are still planned, can be "
                       "recorded, and one not done is never told to a caregiver as ignored. Empty when every time is "
                       "pushed. Accepted, not refused: the app should warn the patient. Kept as the quiet hours are "
                       "now: changing them changes the reminders this touches (a new version, in the change feed). "
                       "Judged on an ordinary day (on a day the clocks change, quiet hours are an hour longer or "
                       "shorter)", "example": ["23:00"]})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    version = version_field()


class ReminderListArgs(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500), metadata={
        "description": "reminders per page; the default holds every active reminder (a patient has at most 50)"})
    cursor = cursor_field()


class ReminderListSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    items = fields.List(fields.Nested(ReminderSchema), required=True)
    next = next_field()


ReminderChangesSchema = changes_schema("ReminderChangesSchema", ReminderSchema)


class OccurrenceRangeArgs(StrictSchema):
    class Meta:
        rules = OCCURRENCE_RANGE_RULE

    start = fields.AwareDateTime(required=True, data_key="from")
    end = fields.AwareDateTime(required=True, data_key="to", metadata={"description": OCCURRENCE_RANGE_RULE})

    @validates_schema
    def bounded(self, data, **kwargs):
        check_range(data["start"], data["end"], OCCURRENCE_RANGE)


class OccurrenceOutcomeSchema(StrictSchema):
    class Meta:
        rules = "status skipped needs a skip_reason"

    status = fields.String(required=True, validate=validate.OneOf(("done", "skipped")))
    skip_reason = text(200, load_default=None, allow_none=True)
    at = reported_moment(load_default=None, metadata={
        "description": "when the patient did it (default: now). Inside the completion window it is on time even "
                       "if it reaches the server after the occurrence was marked missed"})

    @validates_schema
    def reason_for_skipping(self, data, **kwargs):
        if data["status"] == "skipped" and not data.get("skip_reason"):
            raise ValidationError("say why the reminder was skipped", "skip_reason")


class SnoozeSchema(StrictSchema):
    minutes = fields.Integer(required=True, validate=validate.Range(min=5, max=120))


class OccurrenceSchema(Schema):
    id = fields.String(attribute="_id")
    reminder_id = fields.String()
    kind = fields.String()
    local_date = fields.String()
    local_time = fields.String()
    zone = fields.String()
    due_at = fields.DateTime()
    window_ends_at = fields.DateTime()
    status = fields.String(metadata={"description": "pending | done | skipped | missed | cancelled (a tombstone: "
                                                   "the schedule no longer has this slot)"})
    status_at = fields.DateTime(allow_none=True, metadata={"description": "when it was done or skipped (as the "
                                                                          "patient said), or marked missed"})
    on_time = fields.Boolean(allow_none=True, metadata={"description": "done or skipped inside the window"})
    skip_reason = fields.String(allow_none=True)
    missed_reason = fields.String(allow_none=True, metadata={
        "description": "time_zone_change: a zone change jumped over this slot (travelling east) and its window "
                       "closed before it could be pushed (at the change, or when the quiet hours landed in "
                       "ended); it can still be recorded. Cleared, the occurrence pending again at its time, "
                       "when a move undone the same day brings the slot due again"})
    snoozed_until = fields.DateTime(allow_none=True)
    push_with = fields.String(allow_none=True, metadata={
        "description": "another occurrence due at the same instant (a daylight-saving gap) whose push this one "
                       "shares"})
    settled_by = fields.String(allow_none=True, metadata={
        "description": "on a tombstone: the occurrence whose answer stands for this one (the same reminder's slot "
                       "of the same day before its time changed, answered from a phone that had not synced the "
                       "change): one dose, recorded there"})
    deleted = fields.Boolean(dump_default=False)
    version = version_field()


class OccurrenceListSchema(Schema):
    items = fields.List(fields.Nested(OccurrenceSchema), required=True)


OccurrenceChangesSchema = changes_schema("OccurrenceChangesSchema", OccurrenceSchema)
