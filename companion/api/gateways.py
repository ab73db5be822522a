"""Gateway enrolment: pairing codes, gateway credentials and tokens, and binding units to patients."""

from __future__ import annotations

from urllib.parse import quote

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.domain.access import Operation, Role
from companion.domain.errors import Unauthorized
from companion.http import auditing, services
from companion.http.idempotency import idempotent
from companion.http.problems import unavailable_doc
from companion.http.schemas import Pattern, StrictSchema, text
from companion.http.security import allow, client_address, current_actor, patient_may, public, require_patient
from companion.services.gateways import PROFILES, GatewayPaused

UNIT_BUSY = "the unit's sessions are being placed right now (an upload of it from a hub)"

blp = Blueprint("gateways", __name__, url_prefix="/api/v1", description="Gateways and TENS units")


class PairingCodeSchema(Schema):
    code = fields.String()
    expires_at = fields.DateTime()


class PairSchema(StrictSchema):
    # 10 characters; 8 from codes made before codes grew (alive 10 minutes: none is left a few minutes on).
    code = fields.String(required=True, validate=Pattern(r"^[A-Z0-9]{8}([A-Z0-9]{2})?$"), metadata={
        "description": "the pairing code the app shows (10 characters)"})
    name = text(100, load_default="gateway", min_len=1)
    nonce = fields.String(load_default=None, validate=Pattern(r"^[A-Za-z0-9_-]{32,128}$"), metadata={
        "description": (
            "random, made by the gateway for this pairing (e.g. 32 random bytes, base64url: 43 characters; 32 to "
            "128 of A-Z a-z 0-9 _ -) and kept durably before it first sends the code, so that a retry sends the "
            "same one; only its hash is stored. A retry with the same code and the same nonce is answered again "
            "if the first answer was lost; without one the code answers once and never again")})


class PairedSchema(Schema):
    gateway_id = fields.String()
    gateway_secret = fields.String()
    patient_ref = fields.String()
    device_serials = fields.List(fields.String())


class GatewayLoginSchema(StrictSchema):
    gateway_id = text(64, required=True, min_len=1)
    gateway_secret = text(200, required=True, min_len=1)


class GatewayTokenSchema(Schema):
    access_token = fields.String()
    expires_in = fields.Integer()


HANDED_OVER_AT = (
    "when the unit changed hands, if the app is told late (ISO 8601 with offset; not in the future). Sessions "
    "the unit recorded from then on are placed again by the bindings as they now are, and the days they leave "
    "and come to are recomputed")


class BindSchema(StrictSchema):
    serial = fields.String(required=True, validate=Pattern(r"^[A-Za-z0-9-]{4,32}$"))
    profile = fields.String(load_default="companion-tens", validate=validate.OneOf(PROFILES))
    handed_over_at = fields.AwareDateTime(load_default=None, metadata={"description": (
        f"{HANDED_OVER_AT}. The patient has worn the unit since then: not before its previous binding ended. "
        "Default: now")})


class ReleaseArgs(StrictSchema):
    handed_over_at = fields.AwareDateTime(load_default=None, metadata={"description": (
        f"{HANDED_OVER_AT}. The patient wore the unit until then: not before the binding began. Without it the "
        "binding ends now, and says only that the unit has changed hands by now: sessions another patient's "
        "hub brings from after this patient's hub last had contact with the unit are held for the care team, "
        "not counted as this patient's (they may be the new wearer's). A release places again the sessions from "
        "14 days before the binding's end: the backlog another patient's hub brought is this patient's once the "
        "time is told")})


class DeviceSchema(Schema):
    serial = fields.String()
    profile = fields.String()
    bound_at = fields.DateTime()
    status = fields.Dict(metadata={"description": (
        "what the unit last told: battery_pct, firmware and last_error as read at as_of (a report's contact, or the "
        "end of the newest record); last_seen_at (last contact, on the server's clock), last_sync_at (last sync: "
        "an upload, with or without new records) and last_record_seq (highest record seen). Any may be absent until "
        "first told")})


class DeviceListSchema(Schema):
    devices = fields.List(fields.Nested(DeviceSchema))


class GatewaySchema(Schema):
    id = fields.String()
    name = fields.String()
    revoked = fields.Boolean()
    created_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    revoked_reason = fields.String(allow_none=True, metadata={"description": (
        "why it was revoked: `revoked` (by the patient or their care team), `never_connected` (paired more than a "
        "day ago and never connected: the pairing's answer was lost, the gateway gave it up, or it was first run "
        "a day or more later; pair it again with a new code, its buffered records are kept), `account_closed`; "
        "null while it is not revoked, or for one revoked before reasons were kept")})


class GatewayListSchema(Schema):
    items = fields.List(fields.Nested(GatewaySchema), required=True)


@blp.route("/patients/<patient_id>/pairing-codes")
class PairingCodesView(MethodView):
    @allow(Role.PATIENT)
    @blp.response(201, PairingCodeSchema)
    @blp.doc(operationId="create_pairing_code")
    def post(self, patient_id):
        """A short-lived, single-use code to pair a home gateway with this patient."""
        require_patient(patient_id, Operation.MANAGE)
        code, expires = services().gateways.create_pairing_code(patient_id, address=client_address())
        auditing.note(patient_ids=[patient_id], resource="pairing_code", action="C")
        return {"code": code, "expires_at": expires}


@blp.route("/gateways/pair")
class Pair(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(PairSchema)
    @blp.response(201, PairedSchema)
    @blp.doc(operationId="pair_gateway")
    def post(self, body):
        """Exchange a pairing code for gateway credentials bound to the code's patient.

        A code is used once. If the answer was lost (a timeout, the Wi-Fi dropping, the gateway restarting), the
        gateway sends the same code with the same `nonce` again: while the code has not expired and before the
        gateway fetched its first token, that answers 201 again with the same `gateway_id` and a new
        `gateway_secret` (the earlier secret stops working). Anyone else sending the used code (without the
        nonce, or with another) gets 401 as for any used code, counted as a failed guess; a pairing sent without
        a nonce is never answered again. A gateway paired more than a day ago that never fetched a token is
        revoked (`never_connected` in the patient's list) and must be paired again. Guesses are throttled per
        network (an IPv6 address by its /64) and, against a flood, on the whole server: 429 with Retry-After (at
        most a minute)."""
        paired = services().gateways.pair(body["code"], body["name"], address=client_address(), nonce=body["nonce"])
        auditing.note(patient_ids=[paired.patient_id], resource="gateway", action="U" if paired.repeated else "C",
                      resource_ids=[paired.gateway_id])
        return paired


@blp.route("/auth/gateway-token")
class GatewayToken(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(GatewayLoginSchema)
    @blp.response(200, GatewayTokenSchema)
    @blp.doc(operationId="get_gateway_token")
    def post(self, body):
        """A gateway's access token (15 minutes), from its id and secret."""
        gateways = services().gateways
        try:
            return gateways.token(body["gateway_id"], body["gateway_secret"], address=client_address())
        except (Unauthorized, GatewayPaused):
            # A revoked gateway still asking (or anyone with its id), or one whose patient's account is paused:
            # named in its patient's access log. A revoked one's answer is the same as for no such gateway.
            patient_id = gateways.paired_with(body["gateway_id"])
            auditing.note(patient_ids=[patient_id] if patient_id else [], resource="gateway", action="R",
                          resource_ids=[body["gateway_id"]], denied=True)
            raise


@blp.route("/patients/<patient_id>/gateways")
class PatientGateways(MethodView):
    @allow(Role.PATIENT, Role.CLINICIAN)
    @blp.response(200, GatewayListSchema)
    @blp.doc(operationId="list_patient_gateways")
    def get(self, patient_id):
        """The home gateways paired with the patient, revoked ones included."""
        require_patient(patient_id, Operation.READ)
        items = services().gateways.of_patient(patient_id)
        auditing.note(patient_ids=[patient_id], resource="gateway", action="R", resource_ids=[g.id for g in items])
        return {"items": items}


@blp.route("/patients/<patient_id>/gateways/<gateway_id>")
class PatientGateway(MethodView):
    @allow(Role.PATIENT, Role.CLINICIAN)
    @blp.response(204)
    @blp.doc(operationId="revoke_gateway")
    def delete(self, patient_id, gateway_id):
        """Revoke a paired gateway (the patient, or their care team): its tokens stop working at once and it
        cannot get new ones; what it uploaded stays. Revoking one of the patient's gateways that is revoked
        already answers 204 too (a retried revocation succeeds as the first did); 404 for a gateway that is not
        the patient's."""
        require_patient(patient_id, _unit_manager_operation(releasing=True))
        auditing.note(patient_ids=[patient_id], resource="gateway", action="D", resource_ids=[gateway_id])
        services().gateways.revoke(patient_id, gateway_id)


def _unit_manager_operation(*, releasing: bool = False) -> Operation:
    """The patient manages their units and gateways; their care team binds a unit (adding to the record) and
    releases a unit or revokes a gateway (settling it: allowed on a closed record too, where nobody else can, so
    that a unit can be given to another patient)."""
    if current_actor().role is Role.PATIENT:
        return Operation.MANAGE
    return Operation.SETTLE if releasing else Operation.CLINICAL


@blp.route("/patients/<patient_id>/devices")
class PatientDevices(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.response(200, DeviceListSchema)
    @blp.doc(operationId="list_patient_devices")
    def get(self, patient_id):
        """The TENS units bound to a patient, with their last known status."""
        require_patient(patient_id, Operation.READ)
        units = services().gateways.units_of(patient_id)
        auditing.note(patient_ids=[patient_id], resource="device", action="R", resource_ids=[u.serial for u in units])
        return {"devices": units}

    @allow(Role.PATIENT, Role.CLINICIAN)
    @idempotent(access=patient_may(_unit_manager_operation),
                conflict="the unit is bound to someone else: it must be released from them first")
    @blp.arguments(BindSchema)
    @blp.response(201, DeviceSchema)
    @blp.alt_response(503, **unavailable_doc(UNIT_BUSY))
    @blp.doc(operationId="bind_device")
    def post(self, body, patient_id):
        """Bind a unit to the patient by its serial (the patient, or their care team), from now or from
        `handed_over_at` (422 if it is in the future or before the unit's previous binding ended). The unit's
        stored sessions from then on are placed again by it, one placement of a unit at a time: 503 with
        Retry-After, nothing written, while an upload of the unit is placed. Binding it again (with a time or
        without) finishes a binding whose placement was cut short."""
        auditing.note(patient_ids=[patient_id], resource="device", action="C", resource_ids=[body["serial"]])
        device = services().gateways.bind_unit(patient_id, body["serial"], body["profile"],
                                               bound_at=body["handed_over_at"])
        return device, 201, {"Location": f"{request.path}/{quote(body['serial'], safe='')}"}


@blp.route("/patients/<patient_id>/devices/<serial>")
class PatientDevice(MethodView):
    @allow(Role.PATIENT, Role.CLINICIAN)
    @blp.arguments(ReleaseArgs, location="query")
    @blp.response(204)
    @blp.alt_response(503, **unavailable_doc(UNIT_BUSY))
    @blp.doc(operationId="unbind_device")
    def delete(self, args, patient_id, serial):
        """Release a unit from the patient, now or as of `handed_over_at` (422 if it is in the future or before
        the binding began); releasing one that is not bound to them answers 204 too (a retried release succeeds
        as the first did, and finishes one whose placement of the unit's sessions was cut short). 503 with
        Retry-After, nothing written, while an upload of the unit is placed."""
        require_patient(patient_id, _unit_manager_operation(releasing=True))
        auditing.note(patient_ids=[patient_id], resource="device", action="D", resource_ids=[serial])
        services().gateways.release_unit(patient_id, serial, released_at=args["handed_over_at"])


@blp.route("/gateway/devices")
class GatewayDevices(MethodView):
    @allow(Role.GATEWAY)
    @auditing.routine
    @blp.response(200, DeviceListSchema)
    @blp.doc(operationId="list_gateway_devices")
    def get(self):
        """The units this gateway may collect from: those bound to its patient (a routine call, every 30 s:
        counted per day in the audit trail, not written one by one)."""
        svc = services()
        patient_id = svc.gateways.patient_of(current_actor().id)
        units = svc.gateways.units_of(patient_id)
        auditing.note(patient_ids=[patient_id], resource="device", action="R", resource_ids=[u.serial for u in units])
        return {"devices": units}
