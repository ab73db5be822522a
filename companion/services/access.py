"""A caller's standing with a patient: found in the stores, decided by companion.domain.access."""

from __future__ import annotations

from dataclasses import replace

from companion.domain.access import (
    KEPT_RECORD,
    Actor,
    Decision,
    Grant,
    Operation,
    Relationship,
    Role,
    no_access,
)
from companion.domain.errors import Forbidden, NotFound
from companion.domain.people import CLOSED
from companion.store.stores import Stores

NOT_FOUND = "no such patient, or no access to them"


class AccessControl:
    def __init__(self, stores: Stores):
        self.links = stores.care_links
        self.teams = stores.care_teams
        self.grants = stores.emergency_grants
        self.gateways = stores.gateways
        self.users = stores.users

    def grant(self, actor: Actor, patient_id: str) -> Grant:
        """The caller's grant for the patient, read fresh (so a revocation takes effect on the next request)."""
        if actor.role is Role.PATIENT:
            return Grant(patient_id, Relationship.SELF) if actor.id == patient_id else no_access(patient_id)
        if actor.role is Role.CAREGIVER:
            link = self.links.active(patient_id, actor.id)
            return Grant(patient_id, Relationship.CAREGIVER, caregiver=link.permissions) if link \
                else no_access(patient_id)
        if actor.role is Role.CLINICIAN:
            if self.teams.is_on_team_of(actor.id, patient_id):
                return Grant(patient_id, Relationship.CARE_TEAM)
            emergency = self.grants.active(actor.id, patient_id)
            # Break-glass opens a patient's record, and no closed one: after closure only the patient's care team
            # reads it. A grant naming an id that is no patient's (nobody's, or a caregiver's or a clinician's
            # account) opens nothing: every read answers 404, as for any id.
            if emergency is None or not self._open_patient(patient_id):
                return no_access(patient_id)
            return Grant(patient_id, Relationship.EMERGENCY, expires_at=emergency.expires_at)
        if actor.role is Role.GATEWAY:
            gateway = self.gateways.get(actor.id)
            if gateway and not gateway.revoked and gateway.patient_id == patient_id:
                return Grant(patient_id, Relationship.BOUND_GATEWAY)
        return no_access(patient_id)

    def for_acting(self, grant: Grant, operation: Operation) -> Grant:
        """``grant`` as it stands for ``operation``: a care team's act that adds to a record its patient closed is
        not allowed (the closure kept the record to be read and what it holds settled; nothing new is added). Only
        the care team still holds a grant on a closed record, and only such acts need the patient's account read."""
        if operation in KEPT_RECORD or grant.relationship is not Relationship.CARE_TEAM:
            return grant
        patient = self.users.by_id(grant.patient_id)
        return replace(grant, record_closed=patient is not None and patient.status == CLOSED)

    def _open_patient(self, patient_id: str) -> bool:
        patient = self.users.by_id(patient_id)
        return patient is not None and patient.is_patient and patient.status != CLOSED

    def require(self, actor: Actor, patient_id: str, operation: Operation) -> Grant:
        """The grant if it allows ``operation``; NotFound (no relationship) or Forbidden (wrong act)."""
        grant = self.for_acting(self.grant(actor, patient_id), operation)
        decision = grant.decide(operation)
        if decision is Decision.HIDE:
            raise NotFound(NOT_FOUND)
        if decision is Decision.FORBID:
            raise Forbidden(refusal(grant, operation))
        return grant


def refusal(grant: Grant, operation: Operation) -> str:
    """Why ``grant`` does not allow ``operation``, in a sentence."""
    if grant.record_closed:
        return "the patient closed their account: their record is kept for the care team to read, nothing new is added"
    return f"a {grant.relationship.value} may not {operation.value} this"
