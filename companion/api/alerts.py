"""Alerts about a patient and the notifications sent about them.

Readable by the patient, their clinicians, and their caregivers within the patient's consent: a
caregiver sees only alerts of the kinds shared with them, and only the notifications sent to them.
Clinicians acknowledge alerts through the review API (companion.api.review).
"""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api.push_tokens import NotificationFieldsSchema
from companion.domain.access import Operation, Role
from companion.domain.alerts import ALERT_KINDS, Resolution
from companion.http import auditing, services
from companion.http.paging import (
    LINK_HEADER,
    cursor_field,
    keyset_cursor,
    keyset_place,
    next_field,
    next_link,
)
from companion.http.schemas import StrictSchema
from companion.http.security import allow, current_actor, require_patient

blp = Blueprint("alerts", __name__, url_prefix="/api/v1/patients", description="Alerts and notification history")


class AlertArgsSchema(StrictSchema):
    since = fields.AwareDateTime(load_default=None, metadata={
        "description": "only alerts raised or changed (told again, made urgent, acknowledged, resolved, reopened) at "
                       "or after this instant: an app passes the `changed_at` of the newest it holds, or the time of "
                       "its last look less a minute (a write in progress as it looked is stamped a little before)"})
    unacknowledged = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()


ALERT_KIND_NAMES = [kind.value for kind in ALERT_KINDS]


class AlertFactsSchema(Schema):
    """An alert's structured fields, for apps that say it in their own words and language (the ``text`` is
    an English sentence for the care team)."""

    id = fields.String(attribute="_id")
    patient_id = fields.String()
    kind = fields.String(metadata={"enum": ALERT_KIND_NAMES, "description": "what the alert is about: the one "
                                   "name of each alert kind (the push, the API and the dashboard use it)"})
    occurred_at = fields.Function(lambda a: _iso(a.get("occurred_at") or a.get("raised_at")), metadata={
        "type": "string", "format": "date-time",
        "description": "when the condition arose (ISO 8601, UTC): the missed session's due time, the unit's last "
                       "contact, the fault, the pain rating; the raising time for low adherence"})
    device_serial = fields.String(allow_none=True, dump_default=None,
                                  metadata={"description": "the TENS unit concerned (device alerts only)"})
    details = fields.Dict(dump_default=dict, metadata={
        "description": "figures the alert names, by kind: missed_tens_session {local_date, local_time, "
                       "delay_minutes}; low_adherence {first_day, days, latest_fraction}; battery_low "
                       "{battery_percent}; pain_flare {score, reason}"})


class ResolutionFactsSchema(Schema):
    code = fields.String(metadata={"enum": [r.value for r in Resolution], "description": "what later data showed: "
                                   "unit_heard_again, adherence_reached, session_found, ratings_changed, "
                                   "outcome_recorded (the reminder was recorded done or skipped after the alert)"})
    at = fields.Function(lambda r: _iso(r.get("at")), metadata={
        "type": "string", "format": "date-time", "nullable": True,
        "description": "the instant the reason names (ISO 8601, UTC): when the unit was heard again, when the "
                       "session started"})


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


class AlertSchema(AlertFactsSchema):
    share_kind = fields.String()
    severity = fields.String()
    urgent = fields.Boolean()
    text = fields.String(metadata={"description": "the alert in words: for a patient or caregiver in their language "
                                                  "(their account's choice, else Accept-Language) and zone, from "
                                                  "the message catalogs; for the care team, the panel's English"})
    raised_at = fields.DateTime()
    changed_at = fields.Function(lambda a: _iso(a.get("changed_at") or a.get("raised_at")), metadata={
        "type": "string", "format": "date-time",
        "description": "when what it says last changed: raised, told again, made urgent, acknowledged, resolved or "
                       "reopened (see `since`)"})
    acknowledged_at = fields.DateTime(allow_none=True)
    acknowledged_by = fields.String(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True, metadata={"description": "when its condition stopped holding"})
    escalated_at = fields.DateTime(allow_none=True, dump_default=None, metadata={
        "description": "when a fresh overload made this alert, raised as a warning (an overload found late), urgent; "
                       "its people were told again then. null: never escalated"})
    resolved_reason = fields.String(allow_none=True, metadata={
        "description": "why it was resolved, in words (see `text`)"})
    resolution = fields.Nested(ResolutionFactsSchema, allow_none=True, dump_default=None, metadata={
        "description": "why it was resolved, for apps that say it in their own words; null while it holds"})


class AlertListSchema(Schema):
    items = fields.List(fields.Nested(AlertSchema), required=True)
    next = next_field()


class NotificationArgsSchema(StrictSchema):
    since = fields.AwareDateTime(load_default=None)
    until = fields.AwareDateTime(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()


class PatientNotificationSchema(NotificationFieldsSchema):
    recipient_user_id = fields.String()


class PatientNotificationListSchema(Schema):
    items = fields.List(fields.Nested(PatientNotificationSchema), required=True)
    next = next_field()


@blp.route("/<patient_id>/alerts")
class PatientAlerts(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(AlertArgsSchema, location="query")
    @blp.response(200, AlertListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_patient_alerts")
    def get(self, args, patient_id):
        """The patient's alerts, newest first (a caregiver sees only the kinds shared with them). At most `limit`
        per page: follow `next` for more. Each page continues after the last alert of the one before, however many
        came before it, and an alert raised between two pages shifts nothing."""
        grant = require_patient(patient_id, Operation.READ)
        actor = current_actor()
        reader = (services().alerts.reader_for(actor.id, *[tag for tag, _ in request.accept_languages][:3])
                  if actor.role in (Role.PATIENT, Role.CAREGIVER) else None)
        read = services().alerts.for_patient(grant, since=args["since"], unacknowledged=args["unacknowledged"],
                                             limit=args["limit"] + 1, reader=reader,
                                             after=keyset_place(args["cursor"])[:2] if args["cursor"] else None)
        items = read[:args["limit"]]
        auditing.note(patient_ids=[patient_id], resource="alert", action="R", resource_ids=[a["_id"] for a in items])
        following = None
        if len(read) > args["limit"]:
            last = items[-1]
            following = next_link(cursor=keyset_cursor(last["raised_at"], last["_id"]))
        return {"items": items, "next": following}


@blp.route("/<patient_id>/notifications")
class PatientNotifications(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(NotificationArgsSchema, location="query")
    @blp.response(200, PatientNotificationListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_patient_notifications")
    def get(self, args, patient_id):
        """Notifications sent about the patient, newest first (a caregiver sees only those sent to them). At most
        `limit` per page: follow `next` for more. Each page continues after the last notification of the one
        before, however many came before it, and a notification created between two pages shifts nothing (it is
        at the head of the list when read again from the start)."""
        grant = require_patient(patient_id, Operation.READ)
        items, last = services().notifications.about_patient(
            grant, current_actor().id, since=args["since"], until=args["until"], limit=args["limit"],
            after=keyset_place(args["cursor"])[:2] if args["cursor"] else None)
        following = None if last is None else next_link(cursor=keyset_cursor(*last))
        auditing.note(patient_ids=[patient_id], resource="notification", action="R",
                      resource_ids=[n["_id"] for n in items])
        return {"items": items, "next": following}
