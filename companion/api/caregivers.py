"""Caregiver consent: a patient grants (and revokes) a caregiver's view of their data."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.domain.access import CaregiverPermissions, Operation, Role
from companion.domain.alerts import SHARE_KINDS
from companion.http import auditing, services
from companion.http.idempotency import idempotent
from companion.http.schemas import StrictSchema
from companion.http.security import allow, client_address, current_actor, require_patient

blp = Blueprint("caregivers", __name__, url_prefix="/api/v1", description="Caregiver consent")

SHAREABLE_ALERTS = SHARE_KINDS  # the consent categories, from the one table of alert kinds


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


def _permissions(permissions: CaregiverPermissions) -> dict:
    return {"write": permissions.write, "alerts": sorted(permissions.alerts), "diary_notes": permissions.diary_notes}


class LinkSchema(Schema):
    id = fields.String(attribute="link.id", dump_only=True)
    patient_id = fields.String(attribute="link.patient_id", dump_only=True)
    caregiver_id = fields.String(attribute="link.caregiver_id", dump_only=True)
    caregiver_name = fields.String(dump_only=True)
    status = fields.String(attribute="link.status", dump_only=True)
    permissions = fields.Function(lambda named: _permissions(named.link.permissions), dump_only=True,
                                  metadata={"type": "object"})
    granted_at = fields.DateTime(attribute="link.granted_at", dump_only=True)
    revoked_at = fields.DateTime(attribute="link.revoked_at", dump_only=True, allow_none=True)


class LinkListSchema(Schema):
    items = fields.List(fields.Nested(LinkSchema), required=True)


class CaredForSchema(Schema):
    patient_id = fields.String()
    display_name = fields.String()
    permissions = fields.Dict()


class CaredForListSchema(Schema):
    items = fields.List(fields.Nested(CaredForSchema), required=True)


@blp.route("/patients/<patient_id>/caregivers")
class Caregivers(MethodView):
    @allow(Role.PATIENT, Role.CLINICIAN)
    @blp.response(200, LinkListSchema)
    @blp.doc(operationId="list_caregivers")
    def get(self, patient_id):
        """Who can see this patient's data (the patient, or their care team)."""
        require_patient(patient_id, Operation.READ)
        links = services().care.caregivers_of(patient_id)
        auditing.note(patient_ids=[patient_id], resource="care_link", action="R",
                      resource_ids=[named.link.id for named in links])
        return {"items": links}

    @allow(Role.PATIENT)
    @idempotent
    @blp.arguments(GrantSchema)
    @blp.response(201, LinkSchema)
    @blp.doc(operationId="grant_caregiver")
    def post(self, body, patient_id):
        """Grant a caregiver access (needs the patient's current password)."""
        require_patient(patient_id, Operation.MANAGE)
        permissions = body["permissions"]
        named = services().care.grant_caregiver(
            patient_id, caregiver_email=body["caregiver_email"], current_password=body["current_password"],
            address=client_address(),
            permissions=CaregiverPermissions(write=permissions["write"], alerts=frozenset(permissions["alerts"]),
                                             diary_notes=permissions["diary_notes"]))
        auditing.note(patient_ids=[patient_id], resource="care_link", action="C", resource_ids=[named.link.id])
        return named, 201, {"Location": f"{request.path}/{named.link.id}"}


@blp.route("/patients/<patient_id>/caregivers/<link_id>")
class Caregiver(MethodView):
    @allow(Role.PATIENT)
    @blp.response(204)
    @blp.doc(operationId="revoke_caregiver")
    def delete(self, patient_id, link_id):
        """Revoke a caregiver's access; it ends on their very next request. Revoking it again answers 204 as
        the first time."""
        require_patient(patient_id, Operation.MANAGE)
        auditing.note(patient_ids=[patient_id], resource="care_link", action="D", resource_ids=[link_id])
        services().care.revoke_caregiver(patient_id, link_id)


@blp.route("/caregiver/patients/<patient_id>")
class CaredForPatient(MethodView):
    @allow(Role.CAREGIVER)
    @blp.response(204)
    @blp.doc(operationId="leave_cared_for_patient")
    def delete(self, patient_id):
        """End one's own access to a patient's data (a link one no longer wants, or never agreed to): as the
        patient's revocation, from the very next request; nothing queued about them is sent. Afterwards the
        patient is as any other the caller has no link to (404)."""
        caregiver = current_actor().id
        auditing.note(patient_ids=[patient_id], resource="care_link", action="D", resource_ids=[caregiver])
        services().care.leave_patient(caregiver, patient_id)


@blp.route("/caregiver/patients")
class CaredFor(MethodView):
    @allow(Role.CAREGIVER)
    @blp.response(200, CaredForListSchema)
    @blp.doc(operationId="list_cared_for_patients")
    def get(self):
        """The patients who share their data with the calling caregiver."""
        items = [{"patient_id": link.patient_id, "display_name": patient.display_name if patient else None,
                  "permissions": _permissions(link.permissions)}
                 for link, patient in services().care.cared_for(current_actor().id)]
        auditing.note(patient_ids=[i["patient_id"] for i in items], resource="patient", action="search",
                      resource_ids=[i["patient_id"] for i in items])
        return {"items": items}
