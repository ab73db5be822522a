"""Home gateways and TENS units: pairing a gateway with a patient, its credentials and tokens, and which
units are bound to which patient."""

from __future__ import annotations

import hashlib
import logging
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.domain.errors import Conflict, Invalid, NotFound, ServiceUnavailable, Unauthorized
from companion.domain.people import DEACTIVATED, Gateway, TensUnit
from companion.domain.sessions import ERASED_WEARER, UNPULLED_AT_HANDOVER, handover_problem
from companion.services.item_failures import ItemFailures
from companion.services.patients import Profiles
from companion.services.session_times import PLACEMENT_TTL, placing
from companion.services.sessions import TensSessions
from companion.services.telemetry import NoTelemetry, Telemetry
from companion.services.throttle import Throttle
from companion.services.tokens import TokenService
from companion.settings import Settings
from companion.store.relationships import new_id
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

PROFILES = ("companion-tens", "beurer-em70")
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
# 10 characters of 32: 50 bits (the 8 of before were 40), still typed in a breath on a gateway's keyboard;
# see companion.domain.throttling for what a flood of guesses can do against it.
CODE_LENGTH = 10
# A gateway whose patient's account is deactivated (reversible) is told to keep its records and ask again
# this much later, not that its credentials are revoked: that would stop it for good (exit 77).
PATIENT_PAUSED_RETRY_S = 900
# A gateway paired this long ago that never fetched a token is revoked (a pairing takes a minute; a day leaves the
# person time to finish setting it up).
NEVER_CONNECTED_AFTER = timedelta(days=1)
HANDOVERS_JOB = "handovers-finish"
# A hand-over whose re-placement is still owed this long after it was written is finished by the worker: one younger
# may still be running (its request holds the unit) or be sent again by its client in a moment, which finishes it.
# Well beyond the unit's claim's lifetime (nothing renews a claim): a placement running longer than PLACEMENT_TTL
# has its claim lapse, and a grace equal to it let the worker take the unit over from a release still placing.
HANDOVER_LEFT_AFTER = 2 * PLACEMENT_TTL + timedelta(minutes=1)


class GatewayPaused(ServiceUnavailable):
    """The gateway's patient's account is deactivated (reversible): keep the records, ask again later."""


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
    # The code's pairing answered again (its first answer was lost): the same gateway, a new secret.
    repeated: bool = False


class Gateways:
    def __init__(self, settings: Settings, stores: Stores, tokens: TokenService, profiles: Profiles,
                 clock: Clock = now, *, telemetry: Telemetry | None = None, sessions: TensSessions | None = None):
        self.settings = settings
        # Places a unit's stored records again when its bindings change (None: nothing stored to place).
        self.sessions = sessions
        self.telemetry = telemetry or NoTelemetry()
        self.stores = stores
        self.codes = stores.pairing_codes
        self.gateways = stores.gateways
        self.devices = stores.devices
        self.users = stores.users
        self.tokens = tokens
        self.profiles = profiles
        self.throttle = Throttle(stores.counters, clock, key=settings.pseudonym_key)
        self.clock = clock

    def create_pairing_code(self, patient_id: str, *, address: str) -> tuple[str, datetime]:
        """A short-lived, single-use code to pair a home gateway with this patient (a few an hour)."""
        self.throttle.check("pairing_code", address=address, account=patient_id)
        self.throttle.failed("pairing_code", address=address, account=patient_id)  # every code counts
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LENGTH))
        expires = self.clock() + timedelta(seconds=self.settings.pairing_code_ttl_s)
        self.codes.create(digest(code), patient_id, expires)
        return code, expires

    def pair(self, code: str, name: str, *, address: str, nonce: str | None = None) -> Pairing:
        """Exchange a pairing code for gateway credentials bound to the code's patient (throttled per network and
        server-wide: a guesser names no patient).

        A code is used once, but its answer may be lost on the way (a timeout, the Wi-Fi dropping, the gateway
        restarting) with the gateway made. The gateway sends a ``nonce`` of its own with the request, the same one
        again when it retries (it keeps it in its state directory before it first asks); the code keeps only its
        hash. While the code has not expired and that gateway has never fetched a token, a request with the code and
        the same nonce answers again with the same gateway and a new secret (the earlier one stops working). The
        code alone is not enough: whoever else holds it (someone who saw it, a guesser) could otherwise take the
        new gateway's place before its first token. A request with another nonce, or none (a gateway older than
        nonces, which gets no repeat), is refused as any used code is. A gateway left unconnected is revoked a day
        on (companion.services.housekeeping)."""
        self.throttle.check("pairing", address=address)
        code_hash = digest(code)
        gateway_id = new_id()
        claimed = self.codes.claim(code_hash, gateway_id, digest(nonce) if nonce else None)
        secret = secrets.token_urlsafe(32)
        if claimed:
            gateway = self.gateways.create(patient_id=claimed["patient_id"], secret_hash=digest(secret), name=name,
                                           gateway_id=gateway_id)
            repeated = False
        else:
            gateway = self._pair_again(code_hash, nonce, digest(secret), name) if nonce else None
            if gateway is None:
                self.throttle.failed("pairing", address=address)
                raise Unauthorized("unknown, used or expired pairing code")
            repeated = True
        serials = [unit.serial for unit in self.devices.for_patient(gateway.patient_id)]
        return Pairing(gateway.id, secret, gateway.patient_id, digest(gateway.patient_id)[:12], serials,
                       repeated=repeated)

    def _pair_again(self, code_hash: str, nonce: str, secret_hash: str, name: str) -> Gateway | None:
        """The gateway a used, live code made, given ``secret_hash``, if the code was claimed with ``nonce`` and the
        gateway has never fetched a token (else None)."""
        used = self.codes.claimed_live(code_hash)
        if used is None or not used.get("nonce_hash") \
                or not secrets.compare_digest(used["nonce_hash"], digest(nonce)) \
                or not self.gateways.replace_unused_secret(used["gateway_id"], used["patient_id"], secret_hash, name):
            return None
        return self.gateways.get(used["gateway_id"])

    def token(self, gateway_id: str, gateway_secret: str, *, address: str) -> dict:
        """A gateway's access token (15 minutes), from its id and secret. The first one ends the time its pairing
        may be answered again (:meth:`pair`)."""
        self.throttle.check("gateway_token", address=address, account=gateway_id)
        gateway = self.gateways.get(gateway_id)
        if not gateway or not secrets.compare_digest(gateway.secret_hash, digest(gateway_secret)) \
                or not self._heard(gateway) \
                or gateway.awaiting_first_token and not self.gateways.note_first_token(gateway.id, gateway.secret_hash):
            self.throttle.failed("gateway_token", address=address, account=gateway_id)
            raise Unauthorized("unknown or revoked gateway")
        return self.tokens.start_gateway_session(gateway.id)

    def _heard(self, gateway: Gateway | None) -> bool:
        """Whether a gateway is heard: it is not revoked and its patient's account is active. Unauthorized-worthy
        (False) if revoked, unknown, or the account is closed or gone; ServiceUnavailable while the account is
        deactivated: an admin may lift that, and until then the gateway keeps what it collects and asks again
        later (a refusal of its credentials would stop it for good)."""
        if gateway is None or gateway.revoked:
            return False
        patient = self.users.by_id(gateway.patient_id)
        if patient is not None and patient.status == DEACTIVATED:
            raise GatewayPaused("the patient's account is paused: keep the records and try again later",
                                     retry_after_s=PATIENT_PAUSED_RETRY_S)
        return patient is not None and patient.active

    def is_active(self, gateway_id: str) -> bool:
        """Whether a gateway's calls are heard (ServiceUnavailable while its patient's account is deactivated)."""
        return self._heard(self.gateways.get(gateway_id))

    def of_patient(self, patient_id: str) -> list[Gateway]:
        """The gateways paired with a patient, revoked ones included."""
        return self.gateways.for_patient(patient_id)

    def revoke(self, patient_id: str, gateway_id: str) -> None:
        """The patient (or their care team) revokes a paired gateway: its tokens stop working at once and it
        cannot get new ones. Its uploaded records stay. Revoking it again succeeds as the first did; NotFound only
        for a gateway that is not the patient's."""
        if not self.gateways.revoke(gateway_id, patient_id):
            gateway = self.gateways.get(gateway_id)
            if gateway is None or gateway.patient_id != patient_id:
                raise NotFound("no such gateway for this patient")
            # Revoked already (a retry after a lost answer): answered as the first was; its sessions are ended
            # again, in case the first stopped between the two writes.
        self.tokens.end_every_session(gateway_id, "gateway revoked")

    def patient_of(self, gateway_id: str) -> str:
        """The patient a gateway uploads for."""
        gateway = self.gateways.get(gateway_id)
        if gateway is None:
            raise Unauthorized("unknown or revoked gateway")
        return gateway.patient_id

    def paired_with(self, gateway_id: str) -> str | None:
        """The patient a gateway was paired with, revoked or not (None for an unknown one): whose data its
        refused calls were about."""
        gateway = self.gateways.get(gateway_id)
        return gateway.patient_id if gateway else None

    def units_of(self, patient_id: str) -> list[TensUnit]:
        """The TENS units bound to a patient, with their last known status."""
        return self.devices.for_patient(patient_id)

    def bind_unit(self, patient_id: str, serial: str, profile: str, *, bound_at: datetime | None = None) -> TensUnit:
        """Bind a unit to the patient by its serial (binding it again is harmless), from now, or from
        ``bound_at``: when the patient was given it, told to the app late (or history imported as it happened,
        e.g. the demo's); not in the future, nor before the unit's last binding ended. Binding it again with an
        earlier ``bound_at`` moves the binding's start back to it (the app was told late). The unit's stored
        records from then on are placed again (companion.services.sessions.TensSessions.place_after_handover):
        what the patient recorded with it before the app was told leaves the held sessions, or the previous
        wearer's figures, for theirs.

        The binding is written and the records placed under the unit's claim (``placing``), one after the other
        with an upload's placement: ServiceUnavailable, nothing written, while one holds it (send it again
        shortly). A binding whose placement was cut short (its process stopped) still owes it, and binding the
        unit again, with a time or without, finishes it (or else the worker does: :meth:`finish_handovers`); one
        that owes nothing is answered without claiming the unit."""
        self.profiles.patient(patient_id)
        at = self.clock()
        if bound_at is not None:
            ended = [b.end for b in self.devices.bindings_of([serial])[serial] if b.end is not None]
            self._check_handover(bound_at, at, max(ended, default=None))
        unit = self.devices.get(serial)
        if unit is not None and unit.patient_id != patient_id:
            raise Conflict("this unit is bound to someone else; it must be released first")
        if unit is not None and (bound_at is None or bound_at >= unit.bound_at) \
                and self.devices.placement_due(serial, patient_id) is None:
            return unit  # bound already from then on, and placed by it: nothing to change
        with self._handing_over(serial, at):
            unit, created = self.devices.bind(serial, patient_id, profile, bound_at or at)
            if not created and unit.patient_id != patient_id:
                raise Conflict("this unit is bound to someone else; it must be released first")
            if not created and bound_at is not None and self.devices.start_earlier(serial, patient_id, bound_at):
                unit = self.devices.get(serial) or unit
            self._place_what_is_due(serial)  # and the patient's panel row marked: it shows their units' last sync
        return unit

    def release_unit(self, patient_id: str, serial: str, *, released_at: datetime | None = None) -> None:
        """Release a unit from the patient; the interval it was bound for is kept (its sessions stay theirs). It
        ends now, or at ``released_at``: when the unit changed hands, told to the app late (not in the future,
        nor before the binding began). A release with no time says only that the unit has changed hands by now:
        sessions another patient's hub brings from after this patient's hub last had contact with the unit are
        then held for the care team rather than counted as theirs (companion.domain.sessions.relay_vouched).
        Releasing a unit released already with an earlier ``released_at`` moves the end of the patient's last
        binding of it back to then (the app was told late). The unit's stored records from
        ``UNPULLED_AT_HANDOVER`` before the end on are placed again (``TensSessions.place_after_handover``): those
        after it may be the next wearer's, and the backlog before it, brought by another patient's hub, is this
        patient's by a stated end. Otherwise a unit not bound to the patient is released already: a retried
        release succeeds as the first did (and says nothing of units bound to others).

        As a binding is (:meth:`bind_unit`), the release is written and placed under the unit's claim
        (ServiceUnavailable, nothing written, while an upload holds it), and one whose placement was cut short is
        finished by releasing the unit again, with a time or without, or else by the worker
        (:meth:`finish_handovers`)."""
        at = self.clock()
        unit = self.devices.get(serial)
        if unit is not None and unit.patient_id == patient_id:
            if released_at is not None:
                self._check_handover(released_at, at, unit.bound_at)
            end = released_at or at
            with self._handing_over(serial, at):
                self.devices.unbind(serial, patient_id, end, stated=released_at is not None,
                                    due_from=end - UNPULLED_AT_HANDOVER)
                self._place_what_is_due(serial)  # the patient's row marked, whether or not a session moves
            return
        interval = self.devices.last_released(serial, patient_id) if released_at is not None else None
        if interval is not None:
            if released_at > interval["released_at"]:
                problem = (f"the unit was released from this patient at {interval['released_at'].isoformat()}: "
                           "only earlier")
                raise Invalid(problem, errors={"handed_over_at": [problem]})
            self._check_handover(released_at, at, interval["bound_at"])
        elif self.devices.placement_due(serial, patient_id) is None:
            return  # released already, and placed by it
        with self._handing_over(serial, at):
            if interval is not None:
                self.devices.end_earlier(interval["_id"], released_at, released_at - UNPULLED_AT_HANDOVER)
            self._place_what_is_due(serial)

    @staticmethod
    def _check_handover(at: datetime, now: datetime, not_before: datetime | None) -> None:
        problem = handover_problem(at, now, not_before)
        if problem:
            raise Invalid(problem, errors={"handed_over_at": [problem]})

    def _handing_over(self, serial: str, at: datetime) -> AbstractContextManager[None]:
        # One placement of a unit's records at a time (companion.services.session_times.placing), the change of
        # its bindings included: written while an upload holds the unit, the change could not place the upload's
        # records (not stored yet, or placed by the bindings the upload read), and a retry finding it written
        # would leave them so. Claimed first, the change waits for the upload, or the upload for it (and reads
        # the bindings it wrote).
        return placing(self.stores, [serial], at,
                       "the unit's records are being placed right now (an upload of it): nothing was changed; "
                       "send this again shortly")

    def _place_what_is_due(self, serial: str) -> bool:
        """Under the unit's claim: place its stored records again from the earliest moment a change of its
        bindings owes (a binding's start; ``UNPULLED_AT_HANDOVER`` before a binding's end, which decides whose the
        backlog another patient's hub brings is: companion.domain.sessions.relay_vouched), and settle it. Whether
        anything was owed.

        The panel rows of the patients those bindings name are marked first, whether or not a session moves (a
        row's last sync and silent-unit reason come from the units bound to its patient), here rather than beside
        the binding's write: a change whose process stopped after that write is finished by its retry or by the
        worker (:meth:`finish_handovers`), which find the unit bound or released already, and only what is still
        owed says whose rows it changed. A stop after the mark leaves the change owed: the next attempt marks
        them again."""
        owed = self.devices.placement_owed_by(serial)
        if not owed:
            return False
        since = min(owed.values())
        self.stores.panel_row_marks.mark([p for p in owed if p != ERASED_WEARER], "unit handed over", self.clock())
        if self.sessions is not None:
            self.sessions.place_after_handover(serial, since)
        self.devices.placement_done(serial, since)
        return True

    def finish_handovers(self) -> dict[str, int]:
        """Every few minutes: finish the re-placements that hand-overs cut short still owe (a process stopped
        between a release's or a binding's write and the placement of the unit's records, and nobody sent it
        again): the unit's sessions would otherwise stay on the wrong patient's figures, or held, for good. Those
        noted longer than ``HANDOVER_LEFT_AFTER`` ago, each placed as the hand-over's retry places it (the same
        days and panel rows marked), under the same claim of the unit: one an upload or a hand-over holds is
        left for the next run. One unit that fails is logged by its serial and left owed; the others are
        finished."""
        failures, busy = ItemFailures(HANDOVERS_JOB), []

        def finish(serial: str) -> bool:
            try:
                with self._handing_over(serial, self.clock()):
                    return self._place_what_is_due(serial)
            except ServiceUnavailable:
                busy.append(serial)
                return False

        at = self.clock()
        finished = failures.each(self.devices.placements_owed(at - HANDOVER_LEFT_AFTER, at), finish)
        if finished:
            logger.warning("hand-overs cut short were finished", extra={"units": finished})
        return {"finished": finished, "busy": len(busy), "failed": len(failures)}

    def keep_dead_letters(self, gateway_id: str, patient_id: str, items: list[dict]) -> int:
        """Keep what a gateway reports it could not deliver as records (each once); returns how many were new."""
        at = self.clock()
        new = self.stores.gateway_dead_letters.keep([
            {**{k: v for k, v in item.items() if k != "id"}, "_id": f"{gateway_id}:{item['id']}",
             "gateway_id": gateway_id, "local_id": item["id"], "patient_id": patient_id, "reported_at": at}
            for item in items])
        self.telemetry.gateway_dead_letters(new)
        return new

    def dead_letters_of(self, patient_id: str) -> list[dict]:
        """What the patient's gateways reported they could not deliver, newest first."""
        return self.stores.gateway_dead_letters.for_patient(patient_id)
