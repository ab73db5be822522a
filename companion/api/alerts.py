"""Alerts about a patient and the notifications sent about them.

Readable by the patient, their clinicians, and their caregivers within the patient's consent: a
caregiver sees only alerts of the kinds shared with them, and only the notifications sent to them.
Clinicians acknowledge alerts through the review API (companion.api.review).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api.push_tokens import NotificationFieldsSchema
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.paging import LINK_HEADER, cursor_field, next_field, offset_page
from companion.http.schemas import StrictSchema
from companion.http.security import allow, current_actor, require_patient

blp = Blueprint("alerts", __name__, url_prefix="/api/v1/patients", description="Alerts and notification history")


class AlertArgsSchema(StrictSchema):
    since = fields.AwareDateTime(load_default=None)
    unacknowledged = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()


class AlertSchema(Schema):
    id = fields.String(attribute="_id")
    patient_id = fields.String()
    kind = fields.String()
    share_kind = fields.String()
    severity = fields.String()
    urgent = fields.Boolean()
    text = fields.String()
    raised_at = fields.DateTime()
    acknowledged_at = fields.DateTime(allow_none=True)
    acknowledged_by = fields.String(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True, metadata={"description": "when its condition stopped holding"})
    resolved_reason = fields.String(allow_none=True)


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
        """The patient's alerts, newest first (a caregiver sees only the kinds shared with them)."""
        grant = require_patient(patient_id, Operation.READ)
        items, following = offset_page(
            lambda count: services().alerts.for_patient(grant, since=args["since"],
                                                        unacknowledged=args["unacknowledged"], limit=count),
            args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="alert", action="R", resource_ids=[a["_id"] for a in items])
        return {"items": items, "next": following}


@blp.route("/<patient_id>/notifications")
class PatientNotifications(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(NotificationArgsSchema, location="query")
    @blp.response(200, PatientNotificationListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_patient_notifications")
    def get(self, args, patient_id):
        """Notifications sent about the patient, newest first (a caregiver sees only those sent to them)."""
        grant = require_patient(patient_id, Operation.READ)
        items, following = offset_page(
            lambda count: services().notifications.about_patient(grant, current_actor().id, since=args["since"],
                                                                 until=args["until"], limit=count),
            args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="notification", action="R",
                      resource_ids=[n["_id"] for n in items])
        return {"items": items, "next": following}
