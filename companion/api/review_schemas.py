"""Dump schemas for clinician review: explicit fields only, never a raw stored document."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from companion.api.alerts import AlertFactsSchema
from companion.http.schemas import StrictSchema, text
from companion.services.alerts import REVIEW_ALERTS_SHOWN
from companion.services.review import DEVICE_EVENTS_SHOWN, MAX_ROWS, NOTES_SHOWN, PLANS_SHOWN


def complete_flag(what: str, kept: str, limit: int = MAX_ROWS) -> fields.Boolean:
    """Whether a list the review reads up to a limit holds everything it covers: false when there was more."""
    return fields.Boolean(metadata={"description": f"false when {what} is cut: at most {limit:,} are read ({kept}) "
                                                   "and there were more"})


class ReviewDaysArgs(StrictSchema):
    days = fields.Integer(load_default=30, validate=validate.Range(min=1, max=366),
                          metadata={"description": "local days up to and including today"})


EXPORT_PERIOD_RULE = ("days or from, not both; from on or before to, at most 366 days before it; to on or before "
                      "the patient's today (default: today, and days 30)")


class ExportArgs(StrictSchema):
    """Which of the patient's local days an export covers: the last ``days`` (30 by default) up to and including
    ``to`` (today by default), or ``from`` to ``to``; at most 366 days, none after the patient's today."""

    class Meta:
        rules = EXPORT_PERIOD_RULE

    days = fields.Integer(validate=validate.Range(min=1, max=366),
                          metadata={"description": "local days up to and including `to` (not with `from`)"})
    from_ = fields.Date(data_key="from", metadata={"description": "the first local day (YYYY-MM-DD)"})
    to = fields.Date(metadata={"description": f"the last local day (YYYY-MM-DD). {EXPORT_PERIOD_RULE}"})

    @validates_schema
    def one_window(self, data, **kwargs):
        if "days" in data and "from_" in data:
            raise ValidationError("give `days` or `from`, not both", "days")
        if "from_" in data and "to" in data:
            if data["from_"] > data["to"]:
                raise ValidationError("must be on or before `to`", "from")
            if (data["to"] - data["from_"]).days >= 366:
                raise ValidationError("at most 366 days from `to`", "from")


class AdherenceDaySchema(Schema):
    date = fields.String()
    state = fields.String(metadata={"description": "no_tasks, no_events, progress, or missing (not computed)"})
    covered = fields.Boolean()
    tens_fraction = fields.Float(allow_none=True)
    tens_minutes = fields.Float(allow_none=True)
    tens_minutes_target = fields.Float(allow_none=True)
    sessions_done = fields.Integer(allow_none=True)
    sessions_planned = fields.Integer(allow_none=True)
    mindfulness_fraction = fields.Float(allow_none=True)
    medication_fraction = fields.Float(allow_none=True)


class AdherenceReviewSchema(Schema):
    calendar = fields.List(fields.Nested(AdherenceDaySchema))
    pdc_7 = fields.Float(allow_none=True)
    pdc_30 = fields.Float(allow_none=True)
    pdc_90 = fields.Float(allow_none=True)
    threshold = fields.Float()


class TensDaySchema(Schema):
    date = fields.Date()
    minutes = fields.Float()
    sessions = fields.Integer()
    target_minutes = fields.Integer(allow_none=True)


class TensReviewSchema(Schema):
    days = fields.List(fields.Nested(TensDaySchema))


class PainPointSchema(Schema):
    id = fields.String(attribute="_id")
    recorded_at = fields.DateTime()
    nrs = fields.Integer()
    phase = fields.String(allow_none=True)
    session_record_id = fields.String(allow_none=True)


class SessionPainSchema(Schema):
    session_id = fields.String()
    started_at = fields.DateTime()
    programme = fields.Integer(allow_none=True)
    frequency_hz = fields.Integer(allow_none=True)
    before = fields.Integer()
    after = fields.Integer()
    change = fields.Integer()


class PainTrendSchema(Schema):
    recent_mean = fields.Float(allow_none=True, metadata={"description": "mean NRS, last 14 days"})
    previous_mean = fields.Float(allow_none=True, metadata={"description": "mean NRS, the 14 days before"})
    change = fields.Float(allow_none=True)
    direction = fields.String()


class PainReviewSchema(Schema):
    entries = fields.List(fields.Nested(PainPointSchema))
    pairs = fields.List(fields.Nested(SessionPainSchema))
    trend = fields.Nested(PainTrendSchema)
    entries_complete = complete_flag("`entries` (and the `pairs` made of them)", "the period's newest")
    trend_complete = fields.Boolean(metadata={"description": "always true: the trend reads every rating of its 28 "
                                                             "days (kept for the clients that read it)"})


class ProgrammeEffectSchema(Schema):
    programme = fields.Integer(allow_none=True)
    frequency_hz = fields.Integer(allow_none=True)
    sessions = fields.Integer()
    mean_change = fields.Float(metadata={"description": "mean NRS after minus before; negative helped"})


class ProgrammeReviewSchema(Schema):
    items = fields.List(fields.Nested(ProgrammeEffectSchema), required=True)
    complete = complete_flag("the period's pain entries these rest on", "the newest")


class ReviewOccurrenceSchema(Schema):
    id = fields.String(attribute="_id")
    reminder_id = fields.String()
    kind = fields.String()
    title = fields.String(allow_none=True)
    local_date = fields.String()
    local_time = fields.String()
    due_at = fields.DateTime()
    status = fields.String()
    status_at = fields.DateTime(allow_none=True)
    skip_reason = fields.String(allow_none=True)
    nudges_sent = fields.Integer(allow_none=True)


class NotificationSchema(Schema):
    id = fields.String(attribute="_id")
    kind = fields.String()
    recipient_user_id = fields.String()
    to_patient = fields.Boolean()
    state = fields.String()
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)
    opened_at = fields.DateTime(allow_none=True)
    error_codes = fields.List(fields.String())
    withdrawn_reason = fields.String(allow_none=True, metadata={
        "description": "why a withdrawn notification did not go out, as a code an app can say in its language: "
                       "consent_revoked, alert_kind_not_shared, recipient_inactive, patient_inactive, "
                       "alert_resolved (the alert's resolution says why), alert_acknowledged (a caregiver's: "
                       "the care team acknowledged the alert first), alert_escalated (a fresh overload made the "
                       "alert urgent: an urgent push replaced this one), invitation_settled (answered or "
                       "taken back first), reminder_answered, reminder_snoozed or reminder_called_off (the "
                       "reminder was recorded, snoozed, stopped or moved first)"})


class NotificationReviewSchema(Schema):
    occurrences = fields.List(fields.Nested(ReviewOccurrenceSchema))
    notifications = fields.List(fields.Nested(NotificationSchema))
    occurrences_complete = complete_flag("`occurrences`", "the newest")
    notifications_complete = complete_flag("`notifications`", "the newest")


class ReviewDeviceStatusSchema(Schema):
    battery_pct = fields.Integer(allow_none=True)
    firmware = fields.String(allow_none=True)
    last_seen_at = fields.DateTime(allow_none=True)
    last_sync_at = fields.DateTime(allow_none=True)
    last_error = fields.String(allow_none=True)


class ReviewDeviceSchema(Schema):
    serial = fields.String(attribute="_id")
    profile = fields.String()
    bound_at = fields.DateTime()
    status = fields.Nested(ReviewDeviceStatusSchema)
    last_heard_at = fields.DateTime(allow_none=True, metadata={
        "description": "when the unit was last heard from: the later of status.last_sync_at and status.last_seen_at "
                       "(a sync, with or without new records, or a gateway's status report). days_since_sync and the "
                       "silent-unit alert count from it; null when it never was"})
    days_since_sync = fields.Integer(allow_none=True, metadata={
        "description": "whole 24-hour periods since the unit was last heard from (last_heard_at), counted at the "
                       "request (0: less than 24 hours ago, which may have been on the patient's previous calendar "
                       "day); null when it never was"})


class DeviceEventSchema(Schema):
    id = fields.String(attribute="_id")
    device_serial = fields.String()
    kind = fields.String()
    at = fields.DateTime()


class DeviceReviewSchema(Schema):
    devices = fields.List(fields.Nested(ReviewDeviceSchema))
    events = fields.List(fields.Nested(DeviceEventSchema))
    events_complete = complete_flag("`events` (the last 30 days')", "the newest", DEVICE_EVENTS_SHOWN)


class DiaryContextSchema(Schema):
    location = fields.String(allow_none=True)
    activity = fields.String(allow_none=True)
    sleep_quality = fields.Raw(allow_none=True)
    mood = fields.Raw(allow_none=True)
    note = fields.String(allow_none=True)


class DiaryBpiSchema(Schema):
    worst = fields.Integer(allow_none=True)
    least = fields.Integer(allow_none=True)
    average = fields.Integer(allow_none=True)
    now = fields.Integer(allow_none=True)
    interference = fields.Dict(keys=fields.String(), values=fields.Integer(allow_none=True))
    severity = fields.Float(allow_none=True)
    interference_score = fields.Float(allow_none=True)


class DiaryEntryReviewSchema(PainPointSchema):
    context = fields.Nested(DiaryContextSchema, allow_none=True)
    bpi = fields.Nested(DiaryBpiSchema, allow_none=True)


class ReviewPracticeSchema(Schema):
    id = fields.String(attribute="_id")
    item_slug = fields.String()
    started_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)
    minutes = fields.Float(allow_none=True, metadata={"description": "the minutes recorded"})
    counted_minutes = fields.Float(metadata={
        "description": "what it adds to the figures, to the tenth of a minute: its minutes outside practice begun "
                       "before it (the same practice recorded twice, by the patient and a caregiver or from two "
                       "phones, counts once; an overlap of 3 seconds or less, the rounding of the minutes "
                       "recorded, is none)"})


class DiaryReviewSchema(Schema):
    entries = fields.List(fields.Nested(DiaryEntryReviewSchema))
    practice = fields.List(fields.Nested(ReviewPracticeSchema))
    entries_complete = complete_flag("`entries`", "the period's newest")
    practice_complete = complete_flag("`practice`", "the newest")


class PlanVersionSchema(Schema):
    id = fields.String(attribute="_id")
    version = fields.Integer()
    created_at = fields.DateTime()
    created_by = fields.String()
    active_from = fields.DateTime()
    active_to = fields.DateTime(allow_none=True)
    tens = fields.Dict(allow_none=True)
    medications = fields.List(fields.Dict())
    mindfulness = fields.Dict(allow_none=True)


class ReviewPlanHistorySchema(Schema):
    items = fields.List(fields.Nested(PlanVersionSchema), required=True)
    items_complete = complete_flag("`items`", "the newest versions", PLANS_SHOWN)


class ReviewAlertSchema(AlertFactsSchema):
    severity = fields.String()
    text = fields.String()
    raised_at = fields.DateTime()
    acknowledged_at = fields.DateTime(allow_none=True)
    acknowledged_by = fields.String(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    resolved_reason = fields.String(allow_none=True)
    escalated_at = fields.DateTime(allow_none=True, dump_default=None, metadata={
        "description": "when a fresh overload made this alert, raised as a warning (an overload found late), urgent; "
                       "its people were told again then. null: never escalated"})


class ReviewAlertListSchema(Schema):
    items = fields.List(fields.Nested(ReviewAlertSchema), required=True)
    items_complete = complete_flag("`items`", "the newest alerts", REVIEW_ALERTS_SHOWN)


class AlertListArgs(StrictSchema):
    state = fields.String(load_default="open", validate=validate.OneOf(["open", "all"]))


class ClinicalNoteCreateSchema(StrictSchema):
    text = text(5000, lines=True, required=True, min_len=1, metadata={
        "description": "up to 5,000 characters, a line break counting as one: CRLF and CR are stored as LF"})


class ClinicalNoteSchema(Schema):
    id = fields.String(attribute="_id")
    author_id = fields.String()
    author_name = fields.String()
    text = fields.String()
    created_at = fields.DateTime()


class ClinicalNoteListSchema(Schema):
    items = fields.List(fields.Nested(ClinicalNoteSchema), required=True)
    items_complete = complete_flag("`items`", "the newest notes", NOTES_SHOWN)
