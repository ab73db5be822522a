"""Home gateways and TENS units: pairing a gateway with a patient, its credentials and tokens, and which
units are bound to which patient."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.domain.access import Role
from companion.domain.errors import Conflict, NotFound, Unauthorized
from companion.domain.people import TensUnit
from companion.services.patients import Profiles
from companion.services.tokens import TokenService
from companion.settings import Settings
from companion.store.stores import Stores

PROFILES = ("companion-tens", "beurer-em70")
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
CODE_LENGTH = 8


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Pairing:
    """What a freshly paired gateway is told once: its credentials and the units it may collect from."""

    gateway_id: str
    gateway_secret: str
    patient_id: str
    patient_ref: str
    device_serials: list[str]


class Gateways:
    def __init__(self, settings: Settings, stores: Stores, tokens: TokenService, profiles: Profiles,
                 clock: Clock = now):
        self.settings = settings
        self.stores = stores
        self.codes = stores.pairing_codes
        self.gateways = stores.gateways
        self.devices = stores.devices
        self.tokens = tokens
        self.profiles = profiles
        self.clock = clock

    def create_pairing_code(self, patient_id: str) -> tuple[str, datetime]:
        """A short-lived, single-use code to pair a home gateway with this patient."""
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LENGTH))
        expires = self.clock() + timedelta(seconds=self.settings.pairing_code_ttl_s)
        self.codes.create(digest(code), patient_id, expires)
        return code, expires

    def pair(self, code: str, name: str) -> Pairing:
        """Exchange a pairing code for gateway credentials bound to the code's patient."""
        claimed = self.codes.claim(digest(code))
        if not claimed:
            raise Unauthorized("unknown, used or expired pairing code")
        secret = secrets.token_urlsafe(32)
        gateway = self.gateways.create(patient_id=claimed["patient_id"], secret_hash=digest(secret), name=name)
        serials = [unit.serial for unit in self.devices.for_patient(claimed["patient_id"])]
        return Pairing(gateway.id, secret, gateway.patient_id, digest(gateway.patient_id)[:12], serials)

    def token(self, gateway_id: str, gateway_secret: str) -> dict:
        """A gateway's access token (15 minutes), from its id and secret."""
        gateway = self.gateways.get(gateway_id)
        if not gateway or gateway.revoked or not secrets.compare_digest(gateway.secret_hash, digest(gateway_secret)):
            raise Unauthorized("unknown or revoked gateway")
        tokens = self.tokens.start_session(gateway.id, Role.GATEWAY.value)
        return {"access_token": tokens["access_token"], "expires_in": tokens["expires_in"]}

    def is_active(self, gateway_id: str) -> bool:
        gateway = self.gateways.get(gateway_id)
        return bool(gateway) and not gateway.revoked

    def patient_of(self, gateway_id: str) -> str:
        """The patient a gateway uploads for."""
        gateway = self.gateways.get(gateway_id)
        if gateway is None:
            raise Unauthorized("unknown or revoked gateway")
        return gateway.patient_id

    def units_of(self, patient_id: str) -> list[TensUnit]:
        """The TENS units bound to a patient, with their last known status."""
        return self.devices.for_patient(patient_id)

    def bind_unit(self, patient_id: str, serial: str, profile: str, *, bound_at: datetime | None = None) -> TensUnit:
        """Bind a unit to the patient by its serial (binding it again is harmless), from now (``bound_at``:
        from an earlier moment, for history imported as it happened, e.g. the demo's)."""
        self.profiles.patient(patient_id)
        unit, created = self.devices.bind(serial, patient_id, profile, bound_at or self.clock())
        if not created and unit.patient_id != patient_id:
            raise Conflict("this unit is bound to someone else; it must be released first")
        return unit

    def release_unit(self, patient_id: str, serial: str) -> None:
        """Release a unit from the patient; the interval it was bound for is kept (its sessions stay theirs)."""
        if not self.devices.unbind(serial, patient_id, self.clock()):
            raise NotFound("no such unit for this patient")

    def keep_dead_letters(self, gateway_id: str, patient_id: str, items: list[dict]) -> int:
        """Keep what a gateway reports it could not deliver as records (each once); returns how many were new."""
        at = self.clock()
        return self.stores.gateway_dead_letters.keep([
            {**{k: v for k, v in item.items() if k != "id"}, "_id": f"{gateway_id}:{item['id']}",
             "gateway_id": gateway_id, "local_id": item["id"], "patient_id": patient_id, "reported_at": at}
            for item in items])

    def dead_letters_of(self, patient_id: str) -> list[dict]:
        """What the patient's gateways reported they could not deliver, newest first."""
        return self.stores.gateway_dead_letters.for_patient(patient_id)
