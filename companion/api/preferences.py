"""The caller's own preferences, whoever they are: the time zone they live by, their quiet hours and the language
their notifications are written in.

A caregiver's alert pushes wait for the end of their quiet hours on their own clock (docs/pushes.md), as a
patient's reminders wait for the patient's; a patient's profile (``PATCH /patients/{id}``) changes the same fields,
under the same version.
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api.auth import valid_zone
from companion.api.patients import QuietHoursSchema, shown_quiet_hours
from companion.domain.access import Role
from companion.http import auditing, conditional, services
from companion.http.conditional import (
    ETAG_HEADERS,
    IF_MATCH_DOC,
    IF_NONE_MATCH_DOC,
    NOT_MODIFIED_DOC,
    PRECONDITION_FAILED_DOC,
)
from companion.http.problems import conflict_doc
from companion.http.schemas import StrictSchema, valid_locale
from companion.http.security import allow, current_actor

blp = Blueprint("preferences", __name__, url_prefix="/api/v1/me", description="One's own preferences")

PEOPLE = (Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN, Role.ADMIN)


class PreferencesSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    time_zone = fields.String(dump_only=True, metadata={
        "description": "the IANA zone the person lives by: their quiet hours and the times their notifications "
                       "name are on its clock"})
    quiet_hours = fields.Function(shown_quiet_hours, dump_only=True, allow_none=True, metadata={
        "type": "object", "description": "local {start, end} (HH:MM, may wrap midnight) during which pushes that are "
                                         "not urgent wait for their end; null: none"})
    locale = fields.String(dump_only=True, allow_none=True, metadata={
        "description": "the language chosen for notifications (BCP 47); null: each phone's own"})
    version = fields.Integer(attribute="profile_version", dump_only=True, metadata={
        "description": 'the version of the preferences (their ETag is "<version>"; a patient\'s profile shares it): '
                       "send it in If-Match to change exactly this version"})


class PreferencesUpdateSchema(StrictSchema):
    time_zone = fields.String(validate=[validate.Length(max=64), valid_zone], metadata={
        "description": "a new zone takes effect now; the instants before keep the zone they were lived in"})
    quiet_hours = fields.Nested(QuietHoursSchema, allow_none=True, metadata={"description": "null: none"})
    locale = fields.String(allow_none=True, validate=[validate.Length(max=35), valid_locale], metadata={
        "description": "the language notifications are written in (BCP 47, e.g. de-AT); null: the phone's"})


@blp.route("/preferences")
class MyPreferences(MethodView):
    @allow(*PEOPLE)
    @blp.doc(parameters=[IF_NONE_MATCH_DOC])
    @blp.response(200, PreferencesSchema, headers=ETAG_HEADERS)
    @blp.alt_response(304, **NOT_MODIFIED_DOC)
    @blp.doc(operationId="get_my_preferences")
    def get(self):
        """The caller's own time zone, quiet hours and language."""
        account = services().profiles.account(current_actor().id)
        return conditional.not_modified(account.profile_version) or conditional.tagged(account,
                                                                                        account.profile_version)

    @allow(*PEOPLE)
    @blp.doc(parameters=[IF_MATCH_DOC])
    @blp.arguments(PreferencesUpdateSchema)
    @blp.response(200, PreferencesSchema, headers=ETAG_HEADERS)
    @blp.alt_response(412, **PRECONDITION_FAILED_DOC)
    @blp.alt_response(409, **conflict_doc(contended=True))
    @conditional.shows_current(PreferencesSchema)
    @blp.doc(operationId="update_my_preferences")
    def patch(self, body):
        """Change one's own time zone, quiet hours or language, whoever one is (a caregiver's alert pushes wait for
        the end of their quiet hours): the fields sent change, the others stay. With If-Match, only if the
        preferences are still at that version (else 412 with the current ones). A new zone is recorded with when
        it took effect; for a patient, as in their profile, their reminders follow it (see the README's
        "Reminders at the edges"). Pushes already queued for the caller and not sent yet are re-timed to the new
        quiet hours (or zone): one held for the old quiet hours that the new ones allow goes now, one that now falls
        inside them waits for their end; an overload and a snooze's reminder keep their time."""
        actor = current_actor()
        # An act on one's own account, recorded against it (a patient's is in their access history).
        auditing.note(patient_ids=[actor.id], resource="account", action="U", resource_ids=[actor.id])
        account = services().profiles.update_preferences(actor.id, body, if_versions=conditional.if_match())
        return conditional.tagged(account, account.profile_version)
