"""Caregiver consent: a patient offers a caregiver a view of their data by email, the caregiver accepts it (or
declines it), and either of them ends it."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.domain.access import CaregiverPermissions, Operation, Relationship, Role
from companion.domain.alerts import SHARE_KINDS
from companion.http import auditing, services
from companion.http.idempotency import idempotent
from companion.http.schemas import StrictSchema
from companion.http.security import (
    allow,
    caller_account,
    client_address,
    current_actor,
    patient_may,
    require_patient,
)

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
    id = fields.String(dump_only=True, metadata={"description": "the link's id, or the offer's while pending"})
    patient_id = fields.String(dump_only=True)
    caregiver_id = fields.String(dump_only=True, allow_none=True, metadata={"description": "null until accepted"})
    caregiver_name = fields.String(dump_only=True, allow_none=True)
    caregiver_email = fields.String(dump_only=True, allow_none=True,
                                    metadata={"description": "the email offered to, while the offer is pending"})
    status = fields.String(dump_only=True, metadata={
        "description": "pending (offered, not accepted yet: a decline is not told apart), expired (not accepted "
                       "in time), active (accepted), or revoked (ended by the patient or the caregiver)",
        "enum": ["pending", "expired", "active", "revoked"]})
    permissions = fields.Function(lambda view: _permissions(view["permissions"]), dump_only=True,
                                  metadata={"type": "object"})
    granted_at = fields.DateTime(dump_only=True, allow_none=True)
    revoked_at = fields.DateTime(dump_only=True, allow_none=True)
    offered_at = fields.DateTime(dump_only=True, allow_none=True)
    expires_at = fields.DateTime(dump_only=True, allow_none=True, metadata={"description": "a pending offer's end"})


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
        grant = require_patient(patient_id, Operation.READ)
        links = services().care.caregivers_of(patient_id, by_the_patient=grant.relationship is Relationship.SELF)
        auditing.note(patient_ids=[patient_id], resource="care_link", action="R",
                      resource_ids=[view["id"] for view in links])
        return {"items": links}

    @allow(Role.PATIENT)
    @idempotent(access=patient_may(Operation.MANAGE))
    @blp.arguments(GrantSchema)
    @blp.response(201, LinkSchema)
    @blp.doc(operationId="grant_caregiver")
    def post(self, body, patient_id):
        """Offer a caregiver access by their email (needs the patient's current password).

        The answer is the same whatever the email: an offer, ``pending`` until the owner of the email accepts it
        from a caregiver account with their password (or it expires in 14 days). Nobody sees anything before
        that. For a caregiver the patient is linked with already, the new permissions apply at once (``active``).
        Offering again to the same email renews the offer with the new permissions."""
        permissions = body["permissions"]
        view = services().care.grant_caregiver(
            patient_id, caregiver_email=body["caregiver_email"], current_password=body["current_password"],
            address=client_address(), session=current_actor().family,
            permissions=CaregiverPermissions(write=permissions["write"], alerts=frozenset(permissions["alerts"]),
                                             diary_notes=permissions["diary_notes"]))
        auditing.note(patient_ids=[patient_id], resource="care_link", action="C", resource_ids=[view["id"]])
        return view, 201, {"Location": f"{request.path}/{view['id']}"}


@blp.route("/patients/<patient_id>/caregivers/<link_id>")
class Caregiver(MethodView):
    @allow(Role.PATIENT, Role.CLINICIAN)
    @blp.response(200, LinkSchema)
    @blp.doc(operationId="get_caregiver")
    def get(self, patient_id, link_id):
        """One caregiver link or offer (as listed); the id of an offer that was accepted answers the access it
        gave: the link while it shows that access, or that access as it ended (``revoked``) once a later offer
        gave access again. What DELETE on the same id ends."""
        grant = require_patient(patient_id, Operation.READ)
        view = services().care.caregiver_of(patient_id, link_id, by_the_patient=grant.relationship is Relationship.SELF)
        auditing.note(patient_ids=[patient_id], resource="care_link", action="R", resource_ids=[view["id"]])
        return view

    @allow(Role.PATIENT)
    @blp.response(204)
    @blp.doc(operationId="revoke_caregiver")
    def delete(self, patient_id, link_id):
        """Revoke a caregiver's access, or take back a pending offer; access ends on their very next request.
        The id of an offer that was accepted ends the access it gave (as GET on it shows: once that ended and a
        later offer gave access again, nothing more). Revoking again answers 204 as the first time."""
        require_patient(patient_id, Operation.MANAGE)
        auditing.note(patient_ids=[patient_id], resource="care_link", action="D", resource_ids=[link_id])
        services().care.revoke_caregiver(patient_id, link_id)


@blp.route("/caregiver/patients/<patient_id>")
class CaredForPatient(MethodView):
    @allow(Role.CAREGIVER)
    @blp.response(204)
    @blp.doc(operationId="leave_cared_for_patient")
    def delete(self, patient_id):
        """End one's own access to a patient's data (a link one no longer wants): as the patient's revocation, from the very next request; nothing queued about them is sent. Afterwards the
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


class OfferSchema(Schema):
    id = fields.String()
    patient_id = fields.String()
    patient_name = fields.String(allow_none=True)
    permissions = fields.Function(lambda offer: _permissions(offer["permissions"]), metadata={"type": "object"})
    offered_at = fields.DateTime()
    expires_at = fields.DateTime()


class OfferListSchema(Schema):
    items = fields.List(fields.Nested(OfferSchema), required=True)


class AcceptOfferSchema(StrictSchema):
    current_password = fields.String(required=True, load_only=True, validate=validate.Length(max=200),
                                     metadata={"description": "re-authentication: accepting gives this account "
                                                              "access to someone's health data"})


class AcceptedOfferSchema(Schema):
    patient_id = fields.String()
    status = fields.String()
    link_id = fields.String(metadata={"description": "the link made (the patient lists it under this id)"})


@blp.route("/caregiver/invitations")
class Offers(MethodView):
    @allow(Role.CAREGIVER)
    @blp.response(200, OfferListSchema)
    @blp.doc(operationId="list_caregiver_invitations")
    def get(self):
        """Patients offering to share their data with the caller (matched by the caller's email), waiting for an
        answer."""
        items = services().care.offers_for(caller_account())
        auditing.note(patient_ids=[o["patient_id"] for o in items], resource="caregiver_invitation", action="R",
                      resource_ids=[o["id"] for o in items])
        return {"items": items}


@blp.route("/caregiver/invitations/<invitation_id>/acceptance")
class OfferAcceptance(MethodView):
    @allow(Role.CAREGIVER)
    @blp.arguments(AcceptOfferSchema)
    @blp.response(200, AcceptedOfferSchema)
    @blp.doc(operationId="accept_caregiver_invitation")
    def post(self, body, invitation_id):
        """Accept an offer (with the current password): the caller sees the patient's data, as the offer's
        permissions allow, until the patient revokes it or the caller leaves."""
        # Noted before it is tried: a failed acceptance (a wrong password, an offer taken back or not made to the
        # caller) is in the access log of the patient who made the offer too.
        patient_id = services().care.patient_offering(invitation_id)
        auditing.note(patient_ids=[patient_id] if patient_id else [], resource="care_link", action="C",
                      resource_ids=[invitation_id])
        offer = services().care.answer_offer(caller_account(), invitation_id, accept=True,
                                             current_password=body["current_password"], address=client_address(),
                                             session=current_actor().family)
        return {"patient_id": offer["patient_id"], "status": offer["status"], "link_id": offer["link_id"]}


@blp.route("/caregiver/invitations/<invitation_id>")
class Offer(MethodView):
    @allow(Role.CAREGIVER)
    @blp.response(204)
    @blp.doc(operationId="decline_caregiver_invitation")
    def delete(self, invitation_id):
        """Decline an offer (the patient is not told: they see it pending until it expires)."""
        patient_id = services().care.patient_offering(invitation_id)  # named, refused or not, as for an acceptance
        auditing.note(patient_ids=[patient_id] if patient_id else [], resource="caregiver_invitation", action="U",
                      resource_ids=[invitation_id])
        services().care.answer_offer(caller_account(), invitation_id, accept=False)
