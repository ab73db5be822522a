"""Who may do what to a patient's data.

The rule is decided here, from the caller's relationship to the patient; finding that
relationship (a database question) is the service layer's job. An unrelated caller is told
the object does not exist (404), never that it is forbidden, so IDs leak nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    PATIENT = "patient"
    CAREGIVER = "caregiver"
    CLINICIAN = "clinician"
    ADMIN = "admin"
    GATEWAY = "gateway"


class Relationship(StrEnum):
    SELF = "self"
    CAREGIVER = "caregiver"
    CARE_TEAM = "care_team"
    EMERGENCY = "emergency"
    BOUND_GATEWAY = "bound_gateway"
    NONE = "none"


class Operation(StrEnum):
    READ = "read"
    WRITE = "write"        # the patient's own records: diary, reminders, practice
    CLINICAL = "clinical"  # a care-team act: plans, notes, acknowledging alerts
    MANAGE = "manage"      # consent and identity: caregiver links, pairing, devices
    INGEST = "ingest"      # device data arriving from a bound gateway


class Decision(StrEnum):
    ALLOW = "allow"
    FORBID = "forbid"  # answered 403: the caller knows the patient, the act is not theirs
    HIDE = "hide"      # answered 404: the caller has no relationship to the patient


@dataclass(frozen=True)
class Actor:
    """Whoever is calling: a user or a gateway, with its role."""

    id: str
    role: Role
    family: str | None = None


_ALLOWED: dict[Relationship, frozenset[Operation]] = {
    Relationship.SELF: frozenset({Operation.READ, Operation.WRITE, Operation.MANAGE}),
    Relationship.CAREGIVER: frozenset({Operation.READ}),
    Relationship.CARE_TEAM: frozenset({Operation.READ, Operation.CLINICAL}),
    Relationship.EMERGENCY: frozenset({Operation.READ}),
    Relationship.BOUND_GATEWAY: frozenset({Operation.INGEST}),
    Relationship.NONE: frozenset(),
}


def decide(relationship: Relationship, operation: Operation, *, caregiver_can_write: bool = False) -> Decision:
    """Decide whether a caller with this relationship may perform this operation.

    A caregiver is view-only unless the patient granted them write access, which then allows
    recording on the patient's behalf (diary, reminder check-offs), never managing consent.
    """
    if relationship is Relationship.NONE:
        return Decision.HIDE
    allowed = _ALLOWED[relationship]
    if relationship is Relationship.CAREGIVER and caregiver_can_write:
        allowed = allowed | {Operation.WRITE}
    return Decision.ALLOW if operation in allowed else Decision.FORBID
