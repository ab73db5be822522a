"""Who may do what to a patient's data.

The rule is decided here, from the caller's relationship to the patient; finding that
relationship (a database question) is the service layer's job. An unrelated caller is told
the object does not exist (404), never that it is forbidden, so IDs leak nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
    CLINICAL = "clinical"  # a care-team act that adds to the record: plans, notes, binding a unit
    SETTLE = "settle"      # a care-team act on what the record holds: acknowledging an alert, deciding a held
                           # session, discharging the patient from the team (allowed on a closed record too)
    EXPORT = "export"      # downloading the record in bulk (CSV, FHIR): the patient and their care team only,
                           # not an emergency grant (it reads what the emergency needs)
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
    session_started_at: datetime | None = None


_ALLOWED: dict[Relationship, frozenset[Operation]] = {
    Relationship.SELF: frozenset({Operation.READ, Operation.WRITE, Operation.MANAGE, Operation.EXPORT}),
    Relationship.CAREGIVER: frozenset({Operation.READ}),
    Relationship.CARE_TEAM: frozenset({Operation.READ, Operation.CLINICAL, Operation.SETTLE, Operation.EXPORT}),
    Relationship.EMERGENCY: frozenset({Operation.READ}),
    Relationship.BOUND_GATEWAY: frozenset({Operation.INGEST}),
    Relationship.NONE: frozenset(),
}


KEPT_RECORD = frozenset({Operation.READ, Operation.EXPORT, Operation.SETTLE})  # what a closed record still allows


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


@dataclass(frozen=True)
class CaregiverPermissions:
    """What a patient allowed one caregiver: to record on their behalf, which kinds of alert to hear of,
    and whether to read the patient's free-text notes."""

    write: bool = False
    alerts: frozenset[str] = frozenset()
    diary_notes: bool = False


@dataclass(frozen=True)
class Grant:
    """A caller's standing with one patient: the relationship and, for a caregiver, what the patient
    allowed; for an emergency grant, when it ends. Decided once per request and kept for it."""

    patient_id: str
    relationship: Relationship
    caregiver: CaregiverPermissions | None = None
    expires_at: datetime | None = None
    record_closed: bool = False  # the patient closed their account: their record is kept to be read, not added to

    def decide(self, operation: Operation) -> Decision:
        """Whether this grant allows ``operation`` (see :func:`decide`); of a closed record, only reading it and
        settling what it holds (nothing new is added to it)."""
        if self.record_closed and operation not in KEPT_RECORD and self.relationship is not Relationship.NONE:
            return Decision.FORBID
        return decide(self.relationship, operation,
                      caregiver_can_write=bool(self.caregiver and self.caregiver.write))


def no_access(patient_id: str) -> Grant:
    """The grant of a caller with no relationship to the patient."""
    return Grant(patient_id, Relationship.NONE)


def sees_free_text(grant: Grant) -> bool:
    """Everyone related to the patient reads the patient's own words (diary notes, reasons for skipping a
    reminder), except a caregiver the patient has not allowed to read them."""
    if grant.relationship is not Relationship.CAREGIVER:
        return grant.relationship is not Relationship.NONE
    return bool(grant.caregiver and grant.caregiver.diary_notes)


def visible_alert_kinds(grant: Grant) -> frozenset[str] | None:
    """The alert kinds (share kinds) the caller may see; None when every kind is visible."""
    if grant.relationship is Relationship.CAREGIVER:
        return grant.caregiver.alerts if grant.caregiver else frozenset()
    return None


def notifications_visible_to(grant: Grant, caller_id: str) -> str | None:
    """Whose notifications about the patient the caller may list: a caregiver only those sent to
    themselves (returns their id); everyone else all of them (None)."""
    return caller_id if grant.relationship is Relationship.CAREGIVER else None


# Why a notification that was queued must not go out after all (the outbox item ends "withdrawn" with it).
RECIPIENT_INACTIVE = "recipient_inactive"  # the recipient's account was deactivated or closed
PATIENT_INACTIVE = "patient_inactive"  # the patient's account was deactivated or closed
CONSENT_REVOKED = "consent_revoked"  # the patient revoked the caregiver's access
NOT_SHARED = "alert_kind_not_shared"  # the caregiver's access no longer covers this kind of alert
ALERT_RESOLVED = "alert_resolved"  # the alert was resolved before it went out (later data: see its resolution)
ALERT_ACKNOWLEDGED = "alert_acknowledged"  # the care team acknowledged the alert before a caregiver's push went out
ALERT_ESCALATED = "alert_escalated"  # a fresh overload made the alert urgent: an urgent push replaces the routine one
INVITATION_SETTLED = "invitation_settled"  # the invitation it told of was answered or taken back before it went out
REMINDER_ANSWERED = "reminder_answered"  # the patient recorded the reminder done or skipped before it went out
REMINDER_SNOOZED = "reminder_snoozed"  # the patient snoozed it before it went out (the snooze reminds them again)
REMINDER_CALLED_OFF = "reminder_called_off"  # the reminder was stopped or moved (or its slot moved back by a move
# undone, for a push planned on the clock it left) before it went out


def delivery_refusal(*, recipient_active: bool, patient_active: bool, to_patient: bool,
                     caregiver: CaregiverPermissions | None, share_kind: str | None,
                     alert_resolved: bool = False, alert_acknowledged: bool = False,
                     reminder_settled: str | None = None, reminder_snoozed: bool = False) -> str | None:
    """Why a notification about a patient must not be delivered now, or None when it may go.

    Consent is checked at the moment of sending as well as at reading: a notification to the patient goes
    while both accounts are active; one to anyone else also needs the patient's caregiver link to be active
    now and, for an alert, to cover its kind (``share_kind``). Clinicians receive no pushes, so a lapsed
    emergency grant has nothing to stop here. A notification about an alert that has been resolved since it
    was queued (``alert_resolved``) goes to nobody: its resolution withdraws it, and this catches one that a
    crash between the resolution and the withdrawal left queued. A caregiver's notification about an alert the
    care team has acknowledged since it was queued (``alert_acknowledged``) does not go either: the care team has
    it in hand, so it is not worth a push (the caregiver still reads the alert in the app's list). The
    patient's own (the unit's troubles: a battery to charge, pads to place again) still goes: no acknowledgement
    does that for them. The acknowledgement withdraws it; this stops one that a crash between the two writes left
    queued, or that a sender had claimed just before. Nor does a reminder of an occurrence the patient has
    answered, or that was called off, meanwhile (``reminder_settled``: its status): the answer withdraws what is
    queued, and this stops one that was already being sent when the answer came. Nor, alike, one planned before a
    snooze whose time has not come (``reminder_snoozed``): the snooze reminds them then.
    """
    if not recipient_active:
        return RECIPIENT_INACTIVE
    if not patient_active:
        return PATIENT_INACTIVE
    if alert_resolved:
        return ALERT_RESOLVED
    if reminder_settled is not None:
        return REMINDER_CALLED_OFF if reminder_settled == "cancelled" else REMINDER_ANSWERED
    if reminder_snoozed:
        return REMINDER_SNOOZED
    if to_patient:
        return None
    if alert_acknowledged:
        return ALERT_ACKNOWLEDGED
    if caregiver is None:
        return CONSENT_REVOKED
    if share_kind is not None and share_kind not in caregiver.alerts:
        return NOT_SHARED
    return None


# A caregiver without the patient's leave to read free text sees none of it: the diary entry's note and the
# words the patient chose for where the pain is and what they were doing.
DIARY_FREE_TEXT = ("context.note", "context.location", "context.activity")


def without_free_text(record: dict, paths: tuple[str, ...]) -> dict:
    """A copy of ``record`` with the free text at each dotted path blanked (None), for a caller who may
    not read it. Missing paths are left alone."""
    copy = dict(record)
    for path in paths:
        head, _, rest = path.partition(".")
        if head not in copy:
            continue
        if rest:
            if isinstance(copy[head], dict):
                copy[head] = without_free_text(copy[head], (rest,))
        else:
            copy[head] = None
    return copy
