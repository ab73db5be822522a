"""Finding a caller's relationship to a patient, and enforcing the access rule for it."""

from __future__ import annotations

from pymongo.database import Database

from companion.domain.access import Actor, Decision, Operation, Relationship, Role, decide
from companion.domain.errors import Forbidden, NotFound
from companion.store.relationships import CareLinks, CareTeams, EmergencyGrants, Gateways

NOT_FOUND = "no such patient, or no access to them"


class AccessControl:
    def __init__(self, db: Database):
        self.db = db
        self.links = CareLinks(db)
        self.teams = CareTeams(db)
        self.grants = EmergencyGrants(db)
        self.gateways = Gateways(db)

    def relationship(self, actor: Actor, patient_id: str) -> tuple[Relationship, dict | None]:
        """The caller's relationship to the patient, read fresh on every request (revocation is immediate)."""
        if actor.role is Role.PATIENT:
            return (Relationship.SELF if actor.id == patient_id else Relationship.NONE), None
        if actor.role is Role.CAREGIVER:
            link = self.links.active(patient_id, actor.id)
            return (Relationship.CAREGIVER, link) if link else (Relationship.NONE, None)
        if actor.role is Role.CLINICIAN:
            if self.teams.is_on_team_of(actor.id, patient_id):
                return Relationship.CARE_TEAM, None
            grant = self.grants.active(actor.id, patient_id)
            return (Relationship.EMERGENCY, grant) if grant else (Relationship.NONE, None)
        if actor.role is Role.GATEWAY:
            gateway = self.gateways.get(actor.id)
            if gateway and not gateway["revoked"] and gateway["patient_id"] == patient_id:
                return Relationship.BOUND_GATEWAY, gateway
        return Relationship.NONE, None

    def require(self, actor: Actor, patient_id: str, operation: Operation) -> Relationship:
        """Raise NotFound (no relationship) or Forbidden (relationship, wrong act); else the relationship."""
        relationship, detail = self.relationship(actor, patient_id)
        can_write = bool(detail and detail.get("permissions", {}).get("write"))
        decision = decide(relationship, operation, caregiver_can_write=can_write)
        if decision is Decision.HIDE:
            raise NotFound(NOT_FOUND)
        if decision is Decision.FORBID:
            raise Forbidden(f"a {relationship.value} may not {operation.value} this")
        return relationship
