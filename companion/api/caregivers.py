"""Caregiver consent: a patient grants (and revokes) a caregiver's view of their data."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api import auditing, services
from companion.api.idempotency import idempotent
from companion.api.schemas import StrictSchema
from companion.api.security import allow, current_actor, require_patient
from companion.domain.access import Operation, Role
from companion.domain.errors import Invalid, NotFound
from companion.services.accounts import normalise_email
from companion.store.relationships import CareLinks

blp = Blueprint("caregivers", __name__, url_prefix="/api/v1", description="Caregiver consent")

SHAREABLE_ALERTS = ("missed_session", "adherence_low", "device_silent", "battery_low", "device_fault",
                    "pain_flare")


class PermissionsSchema(StrictSchema):
    write = fields.Boolean(load_default=False,
                           metadata={"description": "may record on the patient's behalf (diary, check-offs)"})
    alerts = fields.List(fields.String(validate=validate.OneOf(SHAREABLE_ALERTS)),
                         load_default=list(SHAREABLE_ALERTS), validate=validate.Length(max=len(SHAREABLE_ALERTS)))
    diary_notes = fields.Boolean(load_default=False,
                                 metadata={"description": "may read free-text diary notes"})


class GrantSchema(StrictSchema):
    caregiver_email = fields.Email(required=True, validate=validate.Length(max=254))
    permissions = fields.Nested(PermissionsSchema, load_default=lambda: PermissionsSchema().load({}))
    current_password = fields.String(required=True, load_only=True, validate=validate.Length(max=200),
                                     metadata={"description": "re-authentication: adding a caregiver is sensitive"})


class LinkSchema(Schema):
    id = fields.String(attribute="_id", dump_only=True)
    patient_id = fields.String(dump_only=True)
    caregiver_id = fields.String(dump_only=True)
    caregiver_name = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    permissions = fields.Dict(dump_only=True)
    granted_at = fields.DateTime(dump_only=True)
    revoked_at = fields.DateTime(dump_only=True, allow_none=True)


class LinkListSchema(Schema):
    items = fields.List(fields.Nested(LinkSchema))


class CaredForSchema(Schema):
    patient_id = fields.String()
    display_name = fields.String()
    permissions = fields.Dict()


class CaredForListSchema(Schema):
    items = fields.List(fields.Nested(CaredForSchema))


def _with_names(links: list[dict]) -> list[dict]:
    users = services().accounts.users
    for link in links:
        caregiver = users.by_id(link["caregiver_id"]) or {}
        link["caregiver_name"] = caregiver.get("display_name")
    return links


@blp.route("/patients/<patient_id>/caregivers")
class Caregivers(MethodView):
    @allow(Role.PATIENT, Role.CLINICIAN)
    @blp.response(200, LinkListSchema)
    def get(self, patient_id):
        """Who can see this patient's data (the patient, or their care team)."""
        require_patient(patient_id, Operation.READ)
        links = CareLinks(services().db).for_patient(patient_id)
        auditing.note(patient_ids=[patient_id], resource="care_link", action="R",
                      resource_ids=[link["_id"] for link in links])
        return {"items": _with_names(links)}

    @allow(Role.PATIENT)
    @idempotent
    @blp.arguments(GrantSchema)
    @blp.response(201, LinkSchema)
    def post(self, body, patient_id):
        """Grant a caregiver access (needs the patient's current password)."""
        require_patient(patient_id, Operation.MANAGE)
        svc = services()
        svc.accounts.reauthenticate(current_actor().id, body["current_password"])
        caregiver = svc.accounts.users.by_email(normalise_email(body["caregiver_email"]))
        if not caregiver or caregiver["role"] != Role.CAREGIVER.value:
            raise Invalid("no caregiver account with that email; ask them to sign up as a caregiver first",
                          errors={"caregiver_email": ["no caregiver account with that email"]})
        link = CareLinks(svc.db).grant(patient_id, caregiver["_id"], body["permissions"])
        auditing.note(patient_ids=[patient_id], resource="care_link", action="C", resource_ids=[link["_id"]])
        return _with_names([link])[0]


@blp.route("/patients/<patient_id>/caregivers/<link_id>")
class Caregiver(MethodView):
    @allow(Role.PATIENT)
    @blp.response(204)
    def delete(self, patient_id, link_id):
        """Revoke a caregiver's access; it ends on their very next request."""
        require_patient(patient_id, Operation.MANAGE)
        auditing.note(patient_ids=[patient_id], resource="care_link", action="D", resource_ids=[link_id])
        if not CareLinks(services().db).revoke(patient_id, link_id):
            raise NotFound("no such caregiver link")


@blp.route("/caregiver/patients")
class CaredFor(MethodView):
    @allow(Role.CAREGIVER)
    @blp.response(200, CaredForListSchema)
    def get(self):
        """The patients who share their data with the calling caregiver."""
        svc = services()
        links = CareLinks(svc.db).for_caregiver(current_actor().id)
        items = []
        for link in links:
            patient = svc.accounts.users.by_id(link["patient_id"]) or {}
            items.append({"patient_id": link["patient_id"], "display_name": patient.get("display_name"),
                          "permissions": link["permissions"]})
        auditing.note(patient_ids=[i["patient_id"] for i in items], resource="patient", action="search",
                      resource_ids=[i["patient_id"] for i in items])
        return {"items": items}
