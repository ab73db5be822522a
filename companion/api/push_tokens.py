"""The caller's phones and what was pushed to them: FCM tokens per app install, receipts, details.

A patient or caregiver registers one token per install of the app (several phones each) and refreshes
it at least monthly; a token is never returned or logged. The app confirms each notification it
received (`delivered`) and the ones the person tapped (`opened`); only the notification's recipient
may. A push carries only an opaque id, so the app asks here what it was about (its list of
notifications).
"""

from __future__ import annotations

import re

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api import examples
from companion.domain.access import Role
from companion.domain.errors import Invalid, NotFound
from companion.domain.notifications import PLATFORMS
from companion.http import auditing, services
from companion.http.paging import (
    LINK_HEADER,
    cursor_field,
    keyset_cursor,
    keyset_place,
    next_field,
    next_link,
)
from companion.http.schemas import Pattern, StrictSchema, valid_locale
from companion.http.security import allow, current_actor

blp = Blueprint("push_tokens", __name__, url_prefix="/api/v1/me", description="Phones and notifications")

_INSTALL_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_OPAQUE_ID = re.compile(r"^[0-9a-f]{24}$")


class PushTokenBodySchema(StrictSchema):
    token = fields.String(required=True, load_only=True,
                          validate=[validate.Length(min=1, max=4096), Pattern(r"[!-~]+")],
                          metadata={"description": "FCM registration token (or Firebase installation id): "
                                                   "printable ASCII, no spaces"})
    platform = fields.String(required=True, validate=validate.OneOf(PLATFORMS))
    address = fields.String(load_default="token", validate=validate.OneOf(("token", "fid")))
    locale = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=35), valid_locale],
                           metadata={"description": "the phone's language (BCP 47, e.g. es-MX): notifications "
                                                    "use it unless the account chose a language of its own"})


class PhoneSchema(Schema):
    install_id = fields.String()
    platform = fields.String()
    address = fields.String()
    locale = fields.String(allow_none=True)
    updated_at = fields.DateTime()


class PhoneListSchema(Schema):
    items = fields.List(fields.Nested(PhoneSchema), required=True)


class ReceiptBodySchema(StrictSchema):
    receipt = fields.String(required=True, validate=validate.OneOf(("delivered", "opened")))


class NotificationFieldsSchema(Schema):
    """What every view of a notification shows: its kind, what it is about and its life."""

    id = fields.String(attribute="_id")
    kind = fields.String()
    about = fields.String(metadata={"description": "reminder_occurrence, alert, missed_summary, care_team_invitation "
                                                   "(a team asks the patient), care_team (an admin enrolled them) "
                                                   "or caregiver_invitation (a patient's offer to the caller)"})
    about_id = fields.String(allow_none=True)
    state = fields.String(metadata={"description": "scheduled, sent, failed, expired or withdrawn; scheduled with "
                                                   "sent_at: some of the recipient's phones have it, and it is "
                                                   "retried on those that answered a retryable error"})
    withdrawn_reason = fields.String(allow_none=True, metadata={
        "description": "why a withdrawn notification did not go out, as a code an app can say in its language: "
                       "consent_revoked, alert_kind_not_shared, recipient_inactive, patient_inactive, "
                       "alert_resolved (the alert's resolution says why), alert_acknowledged (a caregiver's: "
                       "the care team acknowledged the alert first), alert_escalated (a fresh overload made the "
                       "alert urgent: an urgent push replaced this one), invitation_settled (answered or "
                       "taken back first), reminder_answered, reminder_snoozed or reminder_called_off (the "
                       "reminder was recorded, snoozed, stopped or moved first)"})
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True, metadata={"description": "when the first phone got it"})
    delivered_at = fields.DateTime(allow_none=True)
    opened_at = fields.DateTime(allow_none=True)


class NotificationDetailSchema(NotificationFieldsSchema):
    patient_id = fields.String()


class NotificationDetailListSchema(Schema):
    items = fields.List(fields.Nested(NotificationDetailSchema), required=True)
    next = next_field()


class MyNotificationArgsSchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = cursor_field()


def _install_id(value: str) -> str:
    if not _INSTALL_ID.fullmatch(value):
        raise Invalid("install id: 1-100 letters, digits, '.', '_', ':' or '-'",
                      errors={"install_id": ["invalid install id"]})
    return value


@blp.route("/push-tokens")
class Phones(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.response(200, PhoneListSchema)
    @blp.doc(operationId="list_my_phones")
    def get(self):
        """The caller's registered phones (never the tokens themselves)."""
        return {"items": services().notifications.phones(current_actor().id)}


@blp.route("/push-tokens/<install_id>")
class Phone(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(PushTokenBodySchema, example=examples.PUSH_TOKEN)
    @blp.response(200, PhoneSchema)
    @blp.doc(operationId="register_push_token")
    def put(self, body, install_id):
        """Register or refresh this install's token (the app does so at least monthly, and after each sign-in).
        It is registered under the session that sends it: when that session ends (signing out, a password
        change or reset, a deactivation) the phone receives nothing more until it registers again; one that
        ends while the registration is being written takes it back (401, as for a session already ended)."""
        actor = current_actor()
        return services().notifications.register_phone(actor.id, _install_id(install_id), body["token"],
                                                       body["platform"], body["address"], body["locale"],
                                                       session=actor.family,
                                                       session_started_at=actor.session_started_at)

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.response(204)
    @blp.doc(operationId="remove_push_token")
    def delete(self, install_id):
        """Forget this install's token (signing out on that phone); again: 204 as the first time."""
        services().notifications.forget_phone(current_actor().id, _install_id(install_id))


@blp.route("/notifications")
class MyNotifications(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(MyNotificationArgsSchema, location="query")
    @blp.response(200, NotificationDetailListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_my_notifications")
    def get(self, args):
        """The notifications sent to the caller, newest first: what each is about (a push carries only its id). At
        most `limit` per page: follow `next` for more. Each page continues after the last notification of the one
        before, however many came before it, and a notification created between two pages shifts nothing (it is
        at the head of the list when read again from the start)."""
        items, last = services().notifications.sent_to(
            current_actor(), args["limit"], after=keyset_place(args["cursor"])[:2] if args["cursor"] else None)
        following = None if last is None else next_link(cursor=keyset_cursor(*last))
        auditing.note(patient_ids=[d["patient_id"] for d in items], resource="notification", action="R",
                      resource_ids=[d["_id"] for d in items])
        return {"items": items, "next": following}


@blp.route("/notifications/<notification_id>/receipts")
class Receipts(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(ReceiptBodySchema)
    @blp.response(204)
    @blp.doc(operationId="record_notification_receipt")
    def post(self, body, notification_id):
        """The app got (``delivered``) or the person opened (``opened``) a notification; recipient only."""
        if not _OPAQUE_ID.fullmatch(notification_id):
            raise NotFound("no such notification for you")
        # The notification's patient is named whatever the answer (a refusal too), which stays the same for a
        # notification that is not the caller's as for none.
        patient_id = services().notifications.patient_of(notification_id)
        auditing.note(patient_ids=[patient_id] if patient_id else [], resource="notification", action="U",
                      resource_ids=[notification_id])
        services().notifications.record_receipt(current_actor(), notification_id, body["receipt"])
