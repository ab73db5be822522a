"""Gateway enrolment: pairing codes, gateway credentials and tokens, and binding units to patients."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api import auditing, services
from companion.api.idempotency import idempotent
from companion.api.patients import load_patient
from companion.api.schemas import StrictSchema, text
from companion.api.security import allow, current_actor, public, require_patient
from companion.domain.access import Operation, Role
from companion.domain.errors import Conflict, NotFound, Unauthorized
from companion.store.accounts import now
from companion.store.devices import Devices, PairingCodes
from companion.store.relationships import Gateways

blp = Blueprint("gateways", __name__, url_prefix="/api/v1", description="Gateways and TENS units")

PROFILES = ("companion-tens", "beurer-em70")
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class PairingCodeSchema(Schema):
    code = fields.String()
    expires_at = fields.DateTime()


class PairSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Regexp(r"^[A-Z0-9]{8}$"))
    name = text(100, load_default="gateway", min_len=1)


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


class BindSchema(StrictSchema):
    serial = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9-]{4,32}$"))
    profile = fields.String(load_default="companion-tens", validate=validate.OneOf(PROFILES))


class DeviceSchema(Schema):
    serial = fields.String(attribute="_id")
    profile = fields.String()
    bound_at = fields.DateTime()
    status = fields.Dict()


class DeviceListSchema(Schema):
    devices = fields.List(fields.Nested(DeviceSchema))


@blp.route("/patients/<patient_id>/pairing-codes")
class PairingCodesView(MethodView):
    @allow(Role.PATIENT)
    @blp.response(201, PairingCodeSchema)
    def post(self, patient_id):
        """A short-lived, single-use code to pair a home gateway with this patient."""
        require_patient(patient_id, Operation.MANAGE)
        svc = services()
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
        expires = now() + timedelta(seconds=svc.settings.pairing_code_ttl_s)
        PairingCodes(svc.db).create(_digest(code), patient_id, expires)
        auditing.note(patient_ids=[patient_id], resource="pairing_code", action="C")
        return {"code": code, "expires_at": expires}


@blp.route("/gateways/pair")
class Pair(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(PairSchema)
    @blp.response(201, PairedSchema)
    def post(self, body):
        """Exchange a pairing code for gateway credentials bound to the code's patient."""
        svc = services()
        claimed = PairingCodes(svc.db).claim(_digest(body["code"]))
        if not claimed:
            raise Unauthorized("unknown, used or expired pairing code")
        secret = secrets.token_urlsafe(32)
        gateway = Gateways(svc.db).create(patient_id=claimed["patient_id"], secret_hash=_digest(secret),
                                          name=body["name"])
        serials = [d["_id"] for d in Devices(svc.db).for_patient(claimed["patient_id"])]
        auditing.note(patient_ids=[claimed["patient_id"]], resource="gateway", action="C",
                      resource_ids=[gateway["_id"]])
        return {"gateway_id": gateway["_id"], "gateway_secret": secret,
                "patient_ref": _digest(claimed["patient_id"])[:12], "device_serials": serials}


@blp.route("/auth/gateway-token")
class GatewayToken(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(GatewayLoginSchema)
    @blp.response(200, GatewayTokenSchema)
    def post(self, body):
        """A gateway's access token (15 minutes), from its id and secret."""
        svc = services()
        gateway = Gateways(svc.db).get(body["gateway_id"])
        if not gateway or gateway["revoked"] or not secrets.compare_digest(
                gateway["secret_hash"], _digest(body["gateway_secret"])):
            raise Unauthorized("unknown or revoked gateway")
        tokens = svc.tokens.start_session(gateway["_id"], Role.GATEWAY.value)
        return {"access_token": tokens["access_token"], "expires_in": tokens["expires_in"]}


@blp.route("/patients/<patient_id>/devices")
class PatientDevices(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.response(200, DeviceListSchema)
    def get(self, patient_id):
        """The TENS units bound to a patient, with their last known status."""
        require_patient(patient_id, Operation.READ)
        devices = Devices(services().db).for_patient(patient_id)
        auditing.note(patient_ids=[patient_id], resource="device", action="R",
                      resource_ids=[d["_id"] for d in devices])
        return {"devices": devices}

    @allow(Role.PATIENT, Role.CLINICIAN)
    @idempotent
    @blp.arguments(BindSchema)
    @blp.response(201, DeviceSchema)
    def post(self, body, patient_id):
        """Bind a unit to the patient by its serial (the patient, or their care team)."""
        op = Operation.MANAGE if current_actor().role is Role.PATIENT else Operation.CLINICAL
        require_patient(patient_id, op)
        load_patient(patient_id)
        auditing.note(patient_ids=[patient_id], resource="device", action="C", resource_ids=[body["serial"]])
        device, created = Devices(services().db).bind(body["serial"], patient_id, body["profile"])
        if not created and device["patient_id"] != patient_id:
            raise Conflict("this unit is bound to someone else; it must be released first")
        return device


@blp.route("/patients/<patient_id>/devices/<serial>")
class PatientDevice(MethodView):
    @allow(Role.PATIENT, Role.CLINICIAN)
    @blp.response(204)
    def delete(self, patient_id, serial):
        """Release a unit from the patient."""
        op = Operation.MANAGE if current_actor().role is Role.PATIENT else Operation.CLINICAL
        require_patient(patient_id, op)
        auditing.note(patient_ids=[patient_id], resource="device", action="D", resource_ids=[serial])
        if not Devices(services().db).unbind(serial, patient_id):
            raise NotFound("no such unit for this patient")


@blp.route("/gateway/devices")
class GatewayDevices(MethodView):
    @allow(Role.GATEWAY)
    @blp.response(200, DeviceListSchema)
    def get(self):
        """The units this gateway may collect from: those bound to its patient."""
        svc = services()
        gateway = Gateways(svc.db).get(current_actor().id)
        devices = Devices(svc.db).for_patient(gateway["patient_id"])
        auditing.note(patient_ids=[gateway["patient_id"]], resource="device", action="R",
                      resource_ids=[d["_id"] for d in devices])
        return {"devices": devices}
